//! Quiver's own session settings, under `quiver.` (`SET quiver.adaptive = false`). They
//! concern the scheduler only: tasks never see them. Listed (`SHOW ALL`,
//! `information_schema.df_settings`, Flight's `GetSessionOptions`) by the names `SET`
//! takes, prefix included, which DataFusion's macro for such settings leaves out.

use std::any::Any;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};

/// The settings' values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuiverOptions {
    /// Re-plan each stage from what its input stages produced (adaptive execution).
    pub adaptive: bool,
    /// A stage whose hash-partitioned input is at most this many bytes runs as one task.
    pub adaptive_single_task_bytes: u64,
    /// A join's probe partition this many times the median partition is skewed...
    pub adaptive_skew_factor: u64,
    /// ... when it is also above this many bytes; it is then split into several tasks.
    pub adaptive_skew_bytes: u64,
    /// A partitioned join whose build side finished at most this many bytes, before its
    /// probe side's stage started, runs as a broadcast join (0: never).
    pub adaptive_broadcast_bytes: u64,
    /// Start a partitioned join's probe-side stage only once its build side has finished,
    /// so that a small build side always turns the join into a broadcast join.
    pub adaptive_build_side_first: bool,
    /// Let a client read a query's result while the final stage's tasks write it.
    pub stream_results: bool,
}

impl Default for QuiverOptions {
    fn default() -> Self {
        Self {
            adaptive: true,
            adaptive_single_task_bytes: 1024 * 1024,
            adaptive_skew_factor: 4,
            adaptive_skew_bytes: 64 * 1024 * 1024,
            adaptive_broadcast_bytes: 8 * 1024 * 1024,
            adaptive_build_side_first: false,
            stream_results: true,
        }
    }
}

/// Each setting's name after `quiver.`, and what `SHOW ALL` says of it.
const SETTINGS: [(&str, &str); 7] = [
    (
        "adaptive",
        "Re-plan each stage from what its input stages produced (adaptive execution)",
    ),
    (
        "adaptive_single_task_bytes",
        "A stage whose hash-partitioned input is at most this many bytes runs as one task",
    ),
    (
        "adaptive_skew_factor",
        "A join's probe partition this many times the median partition is skewed...",
    ),
    (
        "adaptive_skew_bytes",
        "... when it is also above this many bytes; it is then split into several tasks",
    ),
    (
        "adaptive_broadcast_bytes",
        "A partitioned join whose build side finished at most this many bytes, before its \
         probe side's stage started, runs as a broadcast join (0: never)",
    ),
    (
        "adaptive_build_side_first",
        "Start a partitioned join's probe-side stage only once its build side has finished, \
         so that a small build side always turns the join into a broadcast join",
    ),
    (
        "stream_results",
        "Let a client read a query's result while the final stage's tasks write it",
    ),
];

impl ConfigExtension for QuiverOptions {
    const PREFIX: &'static str = "quiver";
}

impl ExtensionOptions for QuiverOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "adaptive" => self.adaptive = parse(key, value)?,
            "adaptive_single_task_bytes" => self.adaptive_single_task_bytes = parse(key, value)?,
            "adaptive_skew_factor" => self.adaptive_skew_factor = parse(key, value)?,
            "adaptive_skew_bytes" => self.adaptive_skew_bytes = parse(key, value)?,
            "adaptive_broadcast_bytes" => self.adaptive_broadcast_bytes = parse(key, value)?,
            "adaptive_build_side_first" => self.adaptive_build_side_first = parse(key, value)?,
            "stream_results" => self.stream_results = parse(key, value)?,
            _ => {
                let known: Vec<String> = SETTINGS
                    .iter()
                    .map(|(name, _)| format!("quiver.{name}"))
                    .collect();
                return Err(DataFusionError::Configuration(format!(
                    "there is no setting quiver.{key}; Quiver's own are {}",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        let values = [
            self.adaptive.to_string(),
            self.adaptive_single_task_bytes.to_string(),
            self.adaptive_skew_factor.to_string(),
            self.adaptive_skew_bytes.to_string(),
            self.adaptive_broadcast_bytes.to_string(),
            self.adaptive_build_side_first.to_string(),
            self.stream_results.to_string(),
        ];
        SETTINGS
            .iter()
            .zip(values)
            .map(|((name, description), value)| ConfigEntry {
                key: format!("{}.{name}", Self::PREFIX),
                value: Some(value),
                description,
            })
            .collect()
    }
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value.trim().to_lowercase().parse().map_err(|error| {
        DataFusionError::Configuration(format!("quiver.{key} cannot be '{value}': {error}"))
    })
}

/// A session's Quiver settings (the defaults when it has none).
pub fn quiver_options(options: &ConfigOptions) -> QuiverOptions {
    options
        .extensions
        .get::<QuiverOptions>()
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_set_and_listed_by_the_names_set_takes() {
        let mut options = ConfigOptions::new().with_extensions({
            let mut extensions = datafusion::common::config::Extensions::new();
            extensions.insert(QuiverOptions::default());
            extensions
        });
        options.set("quiver.stream_results", "false").unwrap();
        options.set("quiver.adaptive_skew_factor", "7").unwrap();
        let quiver = quiver_options(&options);
        assert!(!quiver.stream_results);
        assert_eq!(quiver.adaptive_skew_factor, 7);
        let listed: Vec<(String, Option<String>)> = options
            .entries()
            .into_iter()
            .filter(|entry| entry.key.starts_with("quiver."))
            .map(|entry| (entry.key, entry.value))
            .collect();
        assert_eq!(listed.len(), SETTINGS.len());
        assert!(listed.contains(&("quiver.stream_results".to_string(), Some("false".into()))));
        // Every listed name is one SET takes.
        for (key, value) in listed {
            options.set(&key, value.as_deref().unwrap()).unwrap();
        }
        let refused = options.set("quiver.no_such_setting", "1").unwrap_err();
        assert!(
            refused.to_string().contains("quiver.stream_results"),
            "{refused}"
        );
        let refused = options.set("quiver.adaptive", "maybe").unwrap_err();
        assert!(refused.to_string().contains("quiver.adaptive"), "{refused}");
    }
}
