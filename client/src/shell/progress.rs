//! The live progress line drawn on the terminal while a query runs.

use std::io::Write;
use std::time::Duration;

use quiver::QueryProgress;

/// One line on standard error, redrawn in place and erased when the query ends.
pub(crate) struct ProgressLine {
    enabled: bool,
    drawn: bool,
}

impl ProgressLine {
    /// Draws nothing unless `enabled` (both output streams are a terminal).
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            drawn: false,
        }
    }

    pub(crate) fn update(&mut self, progress: &QueryProgress, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let text = describe(progress, elapsed);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
        self.drawn = true;
    }

    pub(crate) fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `stages 1/3 · tasks 5/12 (2 running) · 1.2M rows · 34.0 MiB · 2.1s`
pub(crate) fn describe(progress: &QueryProgress, elapsed: Duration) -> String {
    if progress.queue_position > 0 {
        return format!(
            "queued: position {} in line (over your running limit) · {:.1}s",
            progress.queue_position,
            elapsed.as_secs_f64()
        );
    }
    format!(
        "stages {}/{} · tasks {}/{} ({} running) · {} rows · {} · {:.1}s",
        progress.stages_done,
        progress.stages_total,
        progress.tasks_done,
        progress.tasks_total,
        progress.tasks_running,
        human_count(progress.rows),
        human_bytes(progress.bytes),
        elapsed.as_secs_f64()
    )
}

pub(crate) fn human_count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `12.3 ms` or `4.56 s`.
pub(crate) fn human_duration(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_well() {
        let progress = QueryProgress {
            stages_total: 3,
            stages_done: 1,
            tasks_total: 12,
            tasks_done: 5,
            tasks_running: 2,
            rows: 1_234_567,
            bytes: 35_651_584,
            ..QueryProgress::default()
        };
        assert_eq!(
            describe(&progress, Duration::from_millis(2100)),
            "stages 1/3 · tasks 5/12 (2 running) · 1.2M rows · 34.0 MiB · 2.1s"
        );
        let queued = QueryProgress {
            queue_position: 2,
            ..QueryProgress::default()
        };
        assert_eq!(
            describe(&queued, Duration::from_millis(500)),
            "queued: position 2 in line (over your running limit) · 0.5s"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_duration(Duration::from_micros(12_340)), "12.3 ms");
    }
}
