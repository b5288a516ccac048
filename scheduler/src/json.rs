//! JSON text for the audit log and the HTTP API, written by hand: a few flat objects do
//! not warrant a serialisation framework.

use std::fmt::Write;

pub(crate) use quiver_core::json_text::push_json_string;

/// One JSON object, built field by field.
#[derive(Default)]
pub(crate) struct JsonObject(String);

impl JsonObject {
    fn key(&mut self, key: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        push_json_string(&mut self.0, key);
        self.0.push(':');
    }

    pub(crate) fn text(mut self, key: &str, value: Option<&str>) -> Self {
        self.key(key);
        match value {
            Some(value) => push_json_string(&mut self.0, value),
            None => self.0.push_str("null"),
        }
        self
    }

    pub(crate) fn number(mut self, key: &str, value: Option<f64>) -> Self {
        self.key(key);
        match value {
            Some(value) if value.is_finite() => {
                let _ = write!(self.0, "{value}");
            }
            _ => self.0.push_str("null"),
        }
        self
    }

    pub(crate) fn boolean(mut self, key: &str, value: bool) -> Self {
        self.key(key);
        self.0.push_str(if value { "true" } else { "false" });
        self
    }

    /// A value that is already JSON text (an array or object).
    pub(crate) fn raw(mut self, key: &str, json: &str) -> Self {
        self.key(key);
        self.0.push_str(json);
        self
    }

    pub(crate) fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// A JSON array of already written values.
pub(crate) fn array(values: impl IntoIterator<Item = String>) -> String {
    let values: Vec<String> = values.into_iter().collect();
    format!("[{}]", values.join(","))
}
