//! Prometheus' text exposition format: counters and histograms kept in atomics where
//! events happen, gauges read at scrape time, written out by [`Exposition`].

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the duration histograms' buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 300.0,
];

/// A histogram of durations over [`DURATION_BUCKETS`].
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Observations at or under each bound (not cumulative; summed when written).
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl DurationHistogram {
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(index) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The text a scrape answers with, built metric by metric.
#[derive(Debug, Default)]
pub struct Exposition(String);

/// Label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    /// A counter (`name` ends in `_total`) with one sample per label set.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, u64)]) {
        self.header(name, help, "counter");
        for (labels, value) in samples {
            self.sample(name, labels, *value as f64);
        }
    }

    /// A counter of things that ended, `outcome="succeeded"` and `outcome="failed"`, each
    /// sample also labelled with `labels`.
    pub fn outcomes(
        &mut self,
        name: &str,
        help: &str,
        labels: Labels<'_>,
        succeeded: u64,
        failed: u64,
    ) {
        let with = |outcome| {
            let mut all = labels.to_vec();
            all.push(("outcome", outcome));
            all
        };
        let (ok, bad) = (with("succeeded"), with("failed"));
        self.counter(name, help, &[(&ok, succeeded), (&bad, failed)]);
    }

    /// A gauge with one sample per label set.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.sample(name, labels, *value);
        }
    }

    /// A histogram of durations (`name` ends in `_seconds`).
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &DurationHistogram) {
        self.header(name, help, "histogram");
        let mut cumulative = 0;
        for (bound, count) in DURATION_BUCKETS.iter().zip(&histogram.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let bound = bound.to_string();
            self.sample(
                &format!("{name}_bucket"),
                &[("le", &bound)],
                cumulative as f64,
            );
        }
        let count = histogram.count.load(Ordering::Relaxed);
        self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], count as f64);
        let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], count as f64);
    }

    pub fn finish(self) -> String {
        self.0
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (index, (key, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.0.push(',');
                }
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{key}=\"{escaped}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_and_histograms_read_as_prometheus_text() {
        let histogram = DurationHistogram::default();
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(2));
        let mut text = Exposition::default();
        text.counter("x_total", "Things.", &[(&[("outcome", "ok")], 3)]);
        text.gauge("y", "Level.", &[(&[], 1.5)]);
        text.histogram("z_seconds", "Time.", &histogram);
        let text = text.finish();
        assert!(text.contains("# TYPE x_total counter\nx_total{outcome=\"ok\"} 3\n"));
        assert!(text.contains("y 1.5\n"));
        assert!(text.contains("z_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("z_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("z_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("z_seconds_count 2\n"));
    }
}

/// gRPC calls answered, by method and status code. (Calls refused before they reach a
/// service, for want of a login or cluster secret, are not among them.)
#[derive(Debug, Default)]
pub struct CallCounts {
    counts: parking_lot::Mutex<std::collections::BTreeMap<(&'static str, i32), u64>>,
}

impl CallCounts {
    /// Counts one answer of `method`.
    pub fn record<T>(&self, method: &'static str, result: &Result<T, tonic::Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        *self.counts.lock().entry((method, code as i32)).or_insert(0) += 1;
    }

    /// Writes the counts as counter `name`, labelled `method` and `code` (and `extra`).
    pub fn write(&self, text: &mut Exposition, name: &str, help: &str, extra: Labels<'_>) {
        let calls: Vec<(&'static str, String, u64)> = self
            .counts
            .lock()
            .iter()
            .map(|((method, code), count)| {
                let code = format!("{:?}", tonic::Code::from_i32(*code));
                (*method, code, *count)
            })
            .collect();
        let labels: Vec<Vec<(&str, &str)>> = calls
            .iter()
            .map(|(method, code, _)| {
                let mut labels = extra.to_vec();
                labels.extend([("method", *method), ("code", code.as_str())]);
                labels
            })
            .collect();
        let samples: Vec<(Labels<'_>, u64)> = labels
            .iter()
            .zip(&calls)
            .map(|(labels, (_, _, count))| (labels.as_slice(), *count))
            .collect();
        text.counter(name, help, &samples);
    }
}
