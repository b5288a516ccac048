//! The transaction log: the actions of each commit (`_delta_log/<version>.json`, one JSON
//! object a line) and of checkpoints (`<version>.checkpoint.parquet`), replayed into the
//! state of the table at one version.

use std::collections::BTreeMap;

use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde_json::Value;
use std::sync::Arc;

use crate::error::DeltaError;

/// The log's directory under a table's root.
pub const LOG_DIRECTORY: &str = "_delta_log";

/// A data file of the table (an `add` action).
#[derive(Debug, Clone, PartialEq)]
pub struct AddFile {
    /// As the log has it: relative to the table's root and URL-encoded, or an absolute URL.
    pub path: String,
    pub partition_values: BTreeMap<String, Option<String>>,
    pub size: u64,
    pub modification_time: i64,
    /// The writer's statistics, JSON text (`numRecords`, `minValues`, ...), when it kept any.
    pub stats: Option<String>,
    /// Whether rows of the file are deleted through a deletion vector.
    pub has_deletion_vector: bool,
}

/// The table's `metaData` action.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub id: String,
    pub schema_string: String,
    pub partition_columns: Vec<String>,
    pub configuration: BTreeMap<String, String>,
    pub created_time: Option<i64>,
}

/// The table's `protocol` action: the versions and features a reader or writer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Protocol {
    pub min_reader_version: i64,
    pub min_writer_version: i64,
    pub reader_features: Vec<String>,
    pub writer_features: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Action {
    Add(AddFile),
    Remove {
        path: String,
    },
    Metadata(Metadata),
    Protocol(Protocol),
    CommitInfo(serde_json::Map<String, Value>),
    /// Actions that change nothing a reader sees (`txn`, `cdc`, `domainMetadata`, ...).
    Other,
}

/// Parses the actions of one commit file (or of a checkpoint turned into JSON lines).
pub(crate) fn parse_actions(text: &str) -> Result<Vec<Action>, DeltaError> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .map_err(|e| DeltaError::Log(format!("a line that is not JSON ({e}): {line}")))?;
            parse_action(&value)
        })
        .collect()
}

fn parse_action(value: &Value) -> Result<Action, DeltaError> {
    if let Some(add) = value.get("add").filter(|v| !v.is_null()) {
        return Ok(Action::Add(AddFile {
            path: text_of(add, "path")?,
            partition_values: add
                .get("partitionValues")
                .and_then(Value::as_object)
                .map(|values| {
                    values
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                        .collect()
                })
                .unwrap_or_default(),
            size: add.get("size").and_then(Value::as_u64).unwrap_or(0),
            modification_time: add
                .get("modificationTime")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            stats: add.get("stats").and_then(Value::as_str).map(str::to_string),
            has_deletion_vector: add.get("deletionVector").is_some_and(|dv| !dv.is_null()),
        }));
    }
    if let Some(remove) = value.get("remove").filter(|v| !v.is_null()) {
        return Ok(Action::Remove {
            path: text_of(remove, "path")?,
        });
    }
    if let Some(metadata) = value.get("metaData").filter(|v| !v.is_null()) {
        return Ok(Action::Metadata(Metadata {
            id: metadata
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            schema_string: text_of(metadata, "schemaString")?,
            partition_columns: strings_of(metadata, "partitionColumns"),
            configuration: metadata
                .get("configuration")
                .and_then(Value::as_object)
                .map(|entries| {
                    entries
                        .iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            created_time: metadata.get("createdTime").and_then(Value::as_i64),
        }));
    }
    if let Some(protocol) = value.get("protocol").filter(|v| !v.is_null()) {
        return Ok(Action::Protocol(Protocol {
            min_reader_version: protocol
                .get("minReaderVersion")
                .and_then(Value::as_i64)
                .unwrap_or(1),
            min_writer_version: protocol
                .get("minWriterVersion")
                .and_then(Value::as_i64)
                .unwrap_or(2),
            reader_features: strings_of(protocol, "readerFeatures"),
            writer_features: strings_of(protocol, "writerFeatures"),
        }));
    }
    if let Some(Value::Object(info)) = value.get("commitInfo") {
        return Ok(Action::CommitInfo(info.clone()));
    }
    Ok(Action::Other)
}

/// The strings of the array `value[key]`; none when it is missing.
fn strings_of(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn text_of(value: &Value, key: &str) -> Result<String, DeltaError> {
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| DeltaError::Log(format!("an action without '{key}': {value}")))
}

/// The object path of commit `version`.
pub(crate) fn commit_path(root: &Path, version: u64) -> Path {
    root.clone()
        .join(LOG_DIRECTORY)
        .join(format!("{version:020}.json"))
}

/// Where a data file the log names lives in the table's store.
pub(crate) fn file_location(root: &Path, add_path: &str) -> Result<Path, DeltaError> {
    let relative = if add_path.contains("://") {
        let url = url::Url::parse(add_path)
            .map_err(|e| DeltaError::Log(format!("bad file URL '{add_path}': {e}")))?;
        return Path::from_url_path(url.path())
            .map_err(|e| DeltaError::Log(format!("bad file URL '{add_path}': {e}")));
    } else {
        Path::from_url_path(add_path)
            .map_err(|e| DeltaError::Log(format!("bad file path '{add_path}': {e}")))?
    };
    Ok(root.parts().chain(relative.parts()).collect())
}

/// The commits and checkpoints found in a table's log.
#[derive(Debug, Default)]
pub(crate) struct LogListing {
    pub commits: BTreeMap<u64, ObjectMeta>,
    /// Checkpoints by version; a multi-part checkpoint lists every part found.
    checkpoints: BTreeMap<u64, Checkpoint>,
}

#[derive(Debug, Default)]
struct Checkpoint {
    parts: Vec<ObjectMeta>,
    /// Parts the checkpoint's names say it has.
    expected_parts: usize,
}

impl LogListing {
    /// Lists `<root>/_delta_log/`; `location` names the table in errors.
    pub(crate) async fn read(
        store: &dyn ObjectStore,
        root: &Path,
        location: &str,
    ) -> Result<Self, DeltaError> {
        let prefix = root.clone().join(LOG_DIRECTORY);
        let objects: Vec<ObjectMeta> = store.list(Some(&prefix)).try_collect().await?;
        let mut listing = LogListing::default();
        for object in objects {
            let Some(name) = object.location.filename() else {
                continue;
            };
            let Some((version, rest)) = name.split_once('.') else {
                continue;
            };
            let Ok(version) = version.parse::<u64>() else {
                continue;
            };
            if rest == "json" {
                listing.commits.insert(version, object);
            } else if rest == "checkpoint.parquet" {
                let checkpoint = listing.checkpoints.entry(version).or_default();
                checkpoint.expected_parts = 1;
                checkpoint.parts.push(object);
            } else if let Some(multi) = rest
                .strip_prefix("checkpoint.")
                .and_then(|r| r.strip_suffix(".parquet"))
                && let Some((_, total)) = multi.split_once('.')
                && let Ok(total) = total.parse::<usize>()
            {
                let checkpoint = listing.checkpoints.entry(version).or_default();
                checkpoint.expected_parts = total;
                checkpoint.parts.push(object);
            }
        }
        if listing.commits.is_empty() && listing.checkpoints.is_empty() {
            return Err(DeltaError::NotATable(location.to_string()));
        }
        Ok(listing)
    }

    /// The table's newest version.
    pub(crate) fn latest_version(&self) -> u64 {
        let commits = self.commits.keys().next_back().copied().unwrap_or(0);
        let checkpoints = self.checkpoints.keys().next_back().copied().unwrap_or(0);
        commits.max(checkpoints)
    }

    /// The newest version committed at or before `timestamp_ms` (by the commit file's
    /// modification time, as the protocol defines commit times).
    pub(crate) fn version_at(&self, timestamp_ms: i64) -> Option<u64> {
        self.commits
            .iter()
            .filter(|(_, object)| object.last_modified.timestamp_millis() <= timestamp_ms)
            .map(|(version, _)| *version)
            .next_back()
    }

    /// Where replaying version `version` starts: a complete checkpoint at or before it
    /// whose later commits are all there, or version 0.
    fn replay_start(&self, version: u64) -> Result<Option<u64>, DeltaError> {
        let commits_from = |first: u64| (first..=version).all(|v| self.commits.contains_key(&v));
        let checkpoint = self
            .checkpoints
            .range(..=version)
            .rev()
            .find(|(_, c)| c.parts.len() == c.expected_parts && c.expected_parts > 0)
            .map(|(v, _)| *v);
        match checkpoint {
            Some(at) if at == version || commits_from(at + 1) => Ok(Some(at)),
            _ if commits_from(0) => Ok(None),
            _ => Err(DeltaError::NoSuchVersion(format!(
                "version {version} cannot be rebuilt: some of its commits were cleaned up and \
                 no checkpoint covers them"
            ))),
        }
    }
}

/// The table as of one version.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub protocol: Protocol,
    pub metadata: Metadata,
    /// The live data files, by decoded path.
    pub files: Vec<AddFile>,
}

/// Which version to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Version(u64),
    /// The newest version committed at or before this time (milliseconds since 1970).
    AsOf(i64),
}

/// Replays the log up to the version `spec` names.
pub async fn load_snapshot(
    store: &Arc<dyn ObjectStore>,
    root: &Path,
    spec: VersionSpec,
    location: &str,
) -> Result<Snapshot, DeltaError> {
    let listing = LogListing::read(store.as_ref(), root, location).await?;
    let latest = listing.latest_version();
    let version = match spec {
        VersionSpec::Latest => latest,
        VersionSpec::Version(version) if version <= latest => version,
        VersionSpec::Version(version) => {
            return Err(DeltaError::NoSuchVersion(format!(
                "table '{location}' has no version {version}; its latest is {latest}"
            )));
        }
        VersionSpec::AsOf(timestamp) => listing.version_at(timestamp).ok_or_else(|| {
            DeltaError::NoSuchVersion(format!(
                "table '{location}' has no version committed at or before {timestamp} ms \
                 since 1970"
            ))
        })?,
    };
    let start = listing.replay_start(version)?;
    let mut replay = Replay::default();
    if let Some(checkpoint) = start {
        for part in &listing.checkpoints[&checkpoint].parts {
            let text = checkpoint_as_json_lines(store, part).await?;
            for action in parse_actions(&text)? {
                // A checkpoint's `remove` rows are tombstones of files it no longer lists.
                if !matches!(action, Action::Remove { .. }) {
                    replay.apply(action)?;
                }
            }
        }
    }
    let first_commit = start.map_or(0, |c| c + 1);
    for commit in first_commit..=version {
        let text = read_text(store.as_ref(), &listing.commits[&commit].location).await?;
        for action in parse_actions(&text)? {
            replay.apply(action)?;
        }
    }
    let protocol = replay
        .protocol
        .ok_or_else(|| DeltaError::Log(format!("version {version} has no protocol action")))?;
    let metadata = replay
        .metadata
        .ok_or_else(|| DeltaError::Log(format!("version {version} has no metaData action")))?;
    Ok(Snapshot {
        version,
        protocol,
        metadata,
        files: replay.files.into_values().collect(),
    })
}

#[derive(Default)]
struct Replay {
    protocol: Option<Protocol>,
    metadata: Option<Metadata>,
    files: BTreeMap<String, AddFile>,
}

impl Replay {
    fn apply(&mut self, action: Action) -> Result<(), DeltaError> {
        match action {
            Action::Add(add) => {
                self.files.insert(decoded(&add.path)?, add);
            }
            Action::Remove { path } => {
                self.files.remove(&decoded(&path)?);
            }
            Action::Metadata(metadata) => self.metadata = Some(metadata),
            Action::Protocol(protocol) => self.protocol = Some(protocol),
            Action::CommitInfo(_) | Action::Other => {}
        }
        Ok(())
    }
}

/// A log path compared as the protocol says: after URL decoding.
fn decoded(path: &str) -> Result<String, DeltaError> {
    Path::from_url_path(path)
        .map(|p| p.to_string())
        .map_err(|e| DeltaError::Log(format!("bad file path '{path}': {e}")))
}

pub(crate) async fn read_text(store: &dyn ObjectStore, path: &Path) -> Result<String, DeltaError> {
    let bytes = store.get(path).await?.bytes().await?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| DeltaError::Log(format!("commit file {path} is not UTF-8")))
}

/// A Parquet checkpoint's rows as JSON lines, so one parser reads commits and checkpoints.
async fn checkpoint_as_json_lines(
    store: &Arc<dyn ObjectStore>,
    part: &ObjectMeta,
) -> Result<String, DeltaError> {
    let bytes = store.get(&part.location).await?.bytes().await?;
    let parquet = |e: datafusion::parquet::errors::ParquetError| {
        DeltaError::Log(format!("checkpoint {}: {e}", part.location))
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(parquet)?
        .build()
        .map_err(parquet)?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DeltaError::Log(format!("checkpoint {}: {e}", part.location)))?;
    let mut writer = LineDelimitedWriter::new(Vec::new());
    for batch in &batches {
        writer
            .write(batch)
            .map_err(|e| DeltaError::Log(format!("checkpoint {}: {e}", part.location)))?;
    }
    writer
        .finish()
        .map_err(|e| DeltaError::Log(format!("checkpoint {}: {e}", part.location)))?;
    String::from_utf8(writer.into_inner())
        .map_err(|_| DeltaError::Log(format!("checkpoint {} is not UTF-8", part.location)))
}
