//! The audit log (`quiver scheduler --audit-log PATH`): one JSON object per line, appended
//! and flushed before the client hears the outcome. Logins (accepted or refused, with the
//! client's address) and every statement (user, session, text, kind — query, write, ddl,
//! privilege or setting —, tables read and written, outcome, rows changed, duration) are
//! written; secrets are not: a statement's quoted values that follow an
//! option named like a secret are replaced by `***`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use quiver_core::QuiverError;

use crate::json::push_json_string;
use crate::privileges::StatementFacts;

/// Where audit events go.
#[derive(Debug)]
pub struct AuditLog {
    file: Mutex<File>,
}

/// Who ran which statement, and what it read and wrote.
pub struct AuditedStatement<'a> {
    pub user: Option<&'a str>,
    pub session: &'a str,
    pub sql: &'a str,
    pub facts: &'a StatementFacts,
}

/// How a statement ended, for the log.
pub enum StatementOutcome<'a> {
    /// Answered; with the rows it changed when it changed data.
    Succeeded {
        rows: Option<i64>,
    },
    Failed {
        error: &'a str,
    },
}

impl AuditLog {
    /// Opens (or creates, readable by its owner only) the log at `path` for appending.
    pub fn open(path: &Path) -> Result<Arc<Self>, QuiverError> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|e| {
            QuiverError::Config(format!("opening the audit log {}: {e}", path.display()))
        })?;
        Ok(Arc::new(Self {
            file: Mutex::new(file),
        }))
    }

    /// A login attempt with user name and password.
    pub fn login(&self, user: &str, client: Option<SocketAddr>, accepted: bool) {
        let event = if accepted { "login" } else { "login_failed" };
        let mut line = JsonLine::new(event);
        line.text("user", user);
        line.text("client", &client.map(|c| c.to_string()).unwrap_or_default());
        self.write(line);
    }

    /// A statement, once its outcome is known.
    pub fn statement(
        &self,
        statement: &AuditedStatement<'_>,
        outcome: StatementOutcome<'_>,
        duration: Duration,
    ) {
        let mut line = JsonLine::new("statement");
        line.text("user", statement.user.unwrap_or(""));
        line.text("session", statement.session);
        line.text("statement", &redact_secrets(statement.sql));
        if !statement.facts.kind.is_empty() {
            line.text("kind", statement.facts.kind);
        }
        line.texts("tables_read", &statement.facts.read);
        line.texts("tables_written", &statement.facts.written);
        match outcome {
            StatementOutcome::Succeeded { rows } => {
                line.text("outcome", "succeeded");
                if let Some(rows) = rows {
                    line.number("rows", rows as f64);
                }
            }
            StatementOutcome::Failed { error } => {
                line.text("outcome", "failed");
                line.text("error", &redact_secrets(error));
            }
        }
        line.number("duration_ms", duration.as_secs_f64() * 1e3);
        self.write(line);
    }

    fn write(&self, line: JsonLine) {
        let mut text = line.finish();
        text.push('\n');
        let mut file = self.file.lock();
        if let Err(error) = file.write_all(text.as_bytes()).and_then(|_| file.flush()) {
            tracing::error!(%error, "could not write to the audit log");
        }
    }
}

/// One JSON object, built field by field.
struct JsonLine(String);

impl JsonLine {
    fn new(event: &str) -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut line = Self(format!("{{\"time_ms\":{millis}"));
        line.text("event", event);
        line
    }

    fn text(&mut self, key: &str, value: &str) {
        self.0.push_str(&format!(",\"{key}\":"));
        push_json_string(&mut self.0, value);
    }

    fn texts(&mut self, key: &str, values: &[String]) {
        self.0.push_str(&format!(",\"{key}\":["));
        for (index, value) in values.iter().enumerate() {
            if index > 0 {
                self.0.push(',');
            }
            push_json_string(&mut self.0, &redact_secrets(value));
        }
        self.0.push(']');
    }

    fn number(&mut self, key: &str, value: f64) {
        self.0
            .push_str(&format!(",\"{key}\":{}", (value * 1e3).round() / 1e3));
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Words in an option's name that mark its value as a secret.
const SECRET_WORDS: [&str; 6] = [
    "secret",
    "password",
    "token",
    "access_key",
    "credential",
    "sas",
];

/// `sql` with the quoted value after each quoted option name that looks like a secret
/// (`'aws.secret_access_key' 'abc'`) replaced by `'***'`.
pub fn redact_secrets(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    let mut hide_next = false;
    while let Some(start) = rest.find('\'') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        // A quoted string ends at a quote not doubled.
        let mut end = None;
        let mut chars = after.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().is_some_and(|(_, next)| *next == '\'') {
                    chars.next();
                } else {
                    end = Some(i);
                    break;
                }
            }
        }
        let Some(end) = end else {
            out.push_str(&rest[start..]);
            return out;
        };
        let content = &after[..end];
        if hide_next {
            out.push_str("'***'");
            hide_next = false;
        } else {
            out.push('\'');
            out.push_str(content);
            out.push('\'');
            let lower = content.to_ascii_lowercase();
            hide_next = SECRET_WORDS.iter().any(|word| lower.contains(word));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_options_are_hidden_and_the_rest_kept() {
        let sql = "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://b/t/' OPTIONS \
                   ('aws.access_key_id' 'AKIA', 'aws.secret_access_key' 'it''s secret', \
                   'aws.region' 'eu')";
        let redacted = redact_secrets(sql);
        assert!(!redacted.contains("it''s secret"), "{redacted}");
        assert!(
            redacted.contains("'aws.secret_access_key' '***'"),
            "{redacted}"
        );
        assert!(redacted.contains("'aws.region' 'eu'"), "{redacted}");
        assert!(redacted.contains("LOCATION 's3://b/t/'"), "{redacted}");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a \"quoted\"\nline\\");
        assert_eq!(out, r#""a \"quoted\"\nline\\""#);
    }
}
