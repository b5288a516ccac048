//! `--log-format json`: one JSON object per log line, for log collectors. Each line has
//! `timestamp` (RFC 3339, UTC), `level`, `target`, the event's fields (`message` among
//! them) and the fields of every span it happened in (a task's `job`, `stage`,
//! `partition`, `attempt` and `user`; a statement's `job`, `user` and `session`), the
//! innermost span's value winning when two share a name.

use std::fmt::Debug;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use quiver_core::json_text::push_json_string;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// A field's value as it goes into the line: numbers and booleans stay JSON numbers and
/// booleans, everything else becomes a string.
#[derive(Clone)]
enum Value {
    Text(String),
    Raw(String),
}

/// Fields recorded so far, in order.
#[derive(Default, Clone)]
struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    fn set(&mut self, name: &'static str, value: Value) {
        match self.0.iter_mut().find(|(key, _)| *key == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.set(field.name(), Value::Text(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), Value::Text(value.to_string()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), Value::Raw(value.to_string()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), Value::Raw(value.to_string()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), Value::Raw(value.to_string()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match value.is_finite() {
            true => self.set(field.name(), Value::Raw(value.to_string())),
            false => self.set(field.name(), Value::Text(value.to_string())),
        }
    }
}

/// Whether log lines are JSON (set once, at start).
static JSON_LINES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes each event as a JSON line to standard error.
pub(crate) struct JsonLines;

impl JsonLines {
    /// The layer, after which [`announce`] writes JSON lines too.
    pub(crate) fn install() -> Self {
        JSON_LINES.store(true, std::sync::atomic::Ordering::Relaxed);
        Self
    }
}

/// Tells the operator something on standard error, whatever `RUST_LOG` says (addresses
/// a server listens on, that it stopped): a plain line, or a JSON line among the logs.
pub(crate) fn announce(message: &str) {
    if !JSON_LINES.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{message}");
        return;
    }
    let fields = Fields(vec![("message", Value::Text(message.to_string()))]);
    write_line("INFO", "quiver", &fields);
}

/// Writes one JSON line to standard error: the time, `level`, `target`, then `fields`.
fn write_line(level: &str, target: &str, fields: &Fields) {
    let mut line = String::from("{\"timestamp\":");
    push_json_string(&mut line, &rfc3339(SystemTime::now()));
    line.push_str(",\"level\":");
    push_json_string(&mut line, level);
    line.push_str(",\"target\":");
    push_json_string(&mut line, target);
    for (name, value) in &fields.0 {
        if matches!(*name, "timestamp" | "level" | "target") {
            continue;
        }
        line.push(',');
        push_json_string(&mut line, name);
        line.push(':');
        match value {
            Value::Text(text) => push_json_string(&mut line, text),
            Value::Raw(raw) => line.push_str(raw),
        }
    }
    line.push_str("}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let mut fields = Fields::default();
        attributes.record(&mut fields);
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        if let Some(span) = context.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        let mut fields = Fields::default();
        if let Some(scope) = context.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<Fields>() {
                    for (name, value) in &span_fields.0 {
                        fields.set(name, value.clone());
                    }
                }
            }
        }
        event.record(&mut fields);
        let metadata = event.metadata();
        write_line(metadata.level().as_str(), metadata.target(), &fields);
    }
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2026-11-30T17:05:42.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3_600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        let at = |secs: u64, millis: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_796_058_342, 123), "2026-11-30T17:05:42.123Z");
        assert_eq!(at(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }
}
