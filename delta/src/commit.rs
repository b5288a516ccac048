//! Commits: one new log entry, written with a conditional put (`PutMode::Create`), so of
//! two writers reaching for the same version exactly one wins. A losing append checks
//! what won and tries the next version; a losing overwrite fails with a conflict.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::datatypes::Schema;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutPayload};
use serde_json::{Value, json};

use crate::error::DeltaError;
use crate::log::{Action, Snapshot, commit_path, parse_actions, read_text};
use crate::schema::{has_timestamp_without_zone, schema_string};

/// How many newer commits an append steps over before giving up.
const MAX_COMMIT_ATTEMPTS: u64 = 100;

/// What a write replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Append,
    /// `INSERT OVERWRITE`: every file of the version read is removed.
    Overwrite,
}

/// A write planned against one version of a table, waiting for its files.
#[derive(Debug, Clone)]
pub struct PendingWrite {
    /// The table's root in its store.
    pub root: Path,
    /// The table's location, for messages.
    pub location: String,
    pub read_version: u64,
    pub mode: WriteMode,
    pub partition_columns: Vec<String>,
    /// For an overwrite: the log paths of the files it removes.
    pub removes: Vec<String>,
}

impl PendingWrite {
    pub fn of(snapshot: &Snapshot, root: Path, location: String, mode: WriteMode) -> Self {
        let removes = match mode {
            WriteMode::Append => Vec::new(),
            WriteMode::Overwrite => snapshot.files.iter().map(|f| f.path.clone()).collect(),
        };
        Self {
            root,
            location,
            read_version: snapshot.version,
            mode,
            partition_columns: snapshot.metadata.partition_columns.clone(),
            removes,
        }
    }
}

/// A data file a write put under the table's root.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub path: Path,
    pub size: u64,
    /// Delta statistics as JSON text.
    pub stats: Option<String>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Commits the write's files; answers the version it became.
pub async fn commit_write(
    store: &Arc<dyn ObjectStore>,
    pending: &PendingWrite,
    files: &[NewFile],
    rows: u64,
) -> Result<u64, DeltaError> {
    let now = now_ms();
    let mut lines = Vec::with_capacity(files.len() + pending.removes.len() + 1);
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let mode = match pending.mode {
        WriteMode::Append => "Append",
        WriteMode::Overwrite => "Overwrite",
    };
    lines.push(json!({"commitInfo": {
        "timestamp": now,
        "operation": "WRITE",
        "operationParameters": {
            "mode": mode,
            "partitionBy": serde_json::to_string(&pending.partition_columns).unwrap_or_default(),
        },
        "readVersion": pending.read_version,
        "isBlindAppend": pending.mode == WriteMode::Append,
        "operationMetrics": {
            "numFiles": files.len().to_string(),
            "numOutputRows": rows.to_string(),
            "numOutputBytes": bytes.to_string(),
            "numRemovedFiles": pending.removes.len().to_string(),
        },
        "engineInfo": concat!("Quiver/", env!("CARGO_PKG_VERSION")),
    }}));
    for path in &pending.removes {
        lines.push(json!({"remove": {
            "path": path,
            "deletionTimestamp": now,
            "dataChange": true,
        }}));
    }
    for file in files {
        let relative = relative_log_path(&pending.root, &file.path)?;
        let mut add = json!({
            "path": relative.log_path,
            "partitionValues": partition_values(&relative.segments, &pending.partition_columns),
            "size": file.size,
            "modificationTime": now,
            "dataChange": true,
        });
        if let Some(stats) = &file.stats {
            add["stats"] = Value::String(stats.clone());
        }
        lines.push(json!({ "add": add }));
    }
    let body = to_lines(&lines);
    let mut version = pending.read_version + 1;
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        match put_new(store, &commit_path(&pending.root, version), body.clone()).await {
            Ok(()) => return Ok(version),
            Err(DeltaError::Store(object_store::Error::AlreadyExists { .. })) => {
                let winner =
                    read_text(store.as_ref(), &commit_path(&pending.root, version)).await?;
                if let Some(reason) = conflict_with(pending.mode, &parse_actions(&winner)?) {
                    return Err(DeltaError::Conflict {
                        table: pending.location.clone(),
                        version,
                        read_version: pending.read_version,
                        reason,
                    });
                }
                version += 1;
            }
            Err(error) => return Err(error),
        }
    }
    Err(DeltaError::Conflict {
        table: pending.location.clone(),
        version,
        read_version: pending.read_version,
        reason: format!("{MAX_COMMIT_ATTEMPTS} newer commits in a row"),
    })
}

/// Why a write of `mode` cannot follow a commit made since it read the table, if it cannot.
fn conflict_with(mode: WriteMode, winner: &[Action]) -> Option<String> {
    if mode == WriteMode::Overwrite {
        return Some("an overwrite must replace exactly the files it read".to_string());
    }
    winner.iter().find_map(|action| match action {
        Action::Metadata(_) => Some("it changed the table's schema or settings".to_string()),
        Action::Protocol(_) => Some("it changed the table's protocol".to_string()),
        _ => None,
    })
}

async fn put_new(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    body: String,
) -> Result<(), DeltaError> {
    let put = store
        .put_opts(path, PutPayload::from(body), PutMode::Create.into())
        .await;
    match put {
        Ok(_) => Ok(()),
        Err(object_store::Error::NotImplemented { .. }) => Err(DeltaError::Unsupported(format!(
            "committing to a store without conditional puts ({path}): two writers could \
             overwrite each other's commits"
        ))),
        Err(error) => Err(DeltaError::Store(error)),
    }
}

fn to_lines(values: &[Value]) -> String {
    let mut body = String::new();
    for value in values {
        body.push_str(&value.to_string());
        body.push('\n');
    }
    body
}

struct RelativePath {
    /// URL-encoded, `/`-separated, as the log records paths.
    log_path: String,
    /// The decoded directory and file names under the root.
    segments: Vec<String>,
}

fn relative_log_path(root: &Path, path: &Path) -> Result<RelativePath, DeltaError> {
    let parts = path.prefix_match(root).ok_or_else(|| {
        DeltaError::Log(format!("file {path} is not under the table's root {root}"))
    })?;
    let segments: Vec<String> = parts.map(|part| part.as_ref().to_string()).collect();
    let log_path = segments
        .iter()
        .map(|segment| encode_segment(segment))
        .collect::<Vec<_>>()
        .join("/");
    Ok(RelativePath { log_path, segments })
}

fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'=' => {
                encoded.push(byte as char)
            }
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    encoded
}

/// The partition values the Hive-style directories of a written file name.
fn partition_values(segments: &[String], partition_columns: &[String]) -> Value {
    let mut values: BTreeMap<&str, Value> = partition_columns
        .iter()
        .map(|c| (c.as_str(), Value::Null))
        .collect();
    for segment in segments {
        if let Some((column, value)) = segment.split_once('=')
            && let Some(slot) = values.get_mut(column)
        {
            let value = decode_segment(value);
            *slot = if value == "__HIVE_DEFAULT_PARTITION__" {
                Value::Null
            } else {
                Value::String(value)
            };
        }
    }
    json!(values)
}

fn decode_segment(segment: &str) -> String {
    Path::from_url_path(segment)
        .map(|p| p.to_string())
        .unwrap_or_else(|_| segment.to_string())
}

/// Creates a table at version 0: no files, the given schema and partition columns.
pub(crate) async fn create_table(
    store: &Arc<dyn ObjectStore>,
    root: &Path,
    schema: &Schema,
    partition_columns: &[String],
    location: &str,
) -> Result<(), DeltaError> {
    for column in partition_columns {
        if schema.field_with_name(column).is_err() {
            return Err(DeltaError::Log(format!(
                "partition column '{column}' is not a column of the table"
            )));
        }
    }
    let now = now_ms();
    let protocol = if has_timestamp_without_zone(schema) {
        json!({"protocol": {
            "minReaderVersion": 3,
            "minWriterVersion": 7,
            "readerFeatures": ["timestampNtz"],
            "writerFeatures": ["timestampNtz"],
        }})
    } else {
        json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})
    };
    let lines = [
        json!({"commitInfo": {
            "timestamp": now,
            "operation": "CREATE TABLE",
            "operationParameters": {
                "partitionBy": serde_json::to_string(partition_columns).unwrap_or_default(),
            },
            "engineInfo": concat!("Quiver/", env!("CARGO_PKG_VERSION")),
        }}),
        protocol,
        json!({"metaData": {
            "id": uuid::Uuid::new_v4().to_string(),
            "format": {"provider": "parquet", "options": {}},
            "schemaString": schema_string(schema)?,
            "partitionColumns": partition_columns,
            "configuration": {},
            "createdTime": now,
        }}),
    ];
    match put_new(store, &commit_path(root, 0), to_lines(&lines)).await {
        Err(DeltaError::Store(object_store::Error::AlreadyExists { .. })) => Err(DeltaError::Log(
            format!("a Delta table was created at '{location}' at the same time"),
        )),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{VersionSpec, load_snapshot};
    use datafusion::arrow::datatypes::{DataType, Field};

    #[tokio::test]
    async fn a_stale_append_steps_over_appends_and_a_stale_overwrite_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let root = Path::from("t");
        let schema = Schema::new(vec![Field::new("id", DataType::Int64, true)]);
        create_table(&store, &root, &schema, &[], "t")
            .await
            .unwrap();
        let read = load_snapshot(&store, &root, VersionSpec::Latest, "t")
            .await
            .unwrap();
        let file = |name: &str| NewFile {
            path: root.clone().join(name),
            size: 1,
            stats: None,
        };
        let append = PendingWrite::of(&read, root.clone(), "t".into(), WriteMode::Append);
        assert_eq!(
            commit_write(&store, &append, &[file("a.parquet")], 1)
                .await
                .unwrap(),
            1
        );
        // Still planned against version 0: lands after the other append.
        assert_eq!(
            commit_write(&store, &append, &[file("b.parquet")], 1)
                .await
                .unwrap(),
            2
        );
        let overwrite = PendingWrite::of(&read, root.clone(), "t".into(), WriteMode::Overwrite);
        let error = commit_write(&store, &overwrite, &[file("c.parquet")], 1)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                DeltaError::Conflict {
                    version: 1,
                    read_version: 0,
                    ..
                }
            ),
            "{error}"
        );
        let latest = load_snapshot(&store, &root, VersionSpec::Latest, "t")
            .await
            .unwrap();
        assert_eq!(latest.version, 2);
        let mut paths: Vec<_> = latest.files.iter().map(|f| f.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, ["a.parquet", "b.parquet"]);
        let error = create_table(&store, &root, &schema, &[], "t")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("same time"), "{error}");
    }

    #[test]
    fn written_paths_are_encoded_and_partition_values_read_back() {
        let root = Path::from("data/t");
        let file = Path::from_iter(["data", "t", "region=north west", "part-0.parquet"]);
        let relative = relative_log_path(&root, &file).unwrap();
        assert_eq!(relative.log_path, "region=north%20west/part-0.parquet");
        let values = partition_values(&relative.segments, &["region".to_string()]);
        assert_eq!(values, json!({"region": "north west"}));
        let none = partition_values(
            &["region=__HIVE_DEFAULT_PARTITION__".to_string()],
            &["region".to_string()],
        );
        assert_eq!(none, json!({"region": null}));
    }

    #[test]
    fn appends_step_over_appends_but_not_schema_changes() {
        assert_eq!(conflict_with(WriteMode::Append, &[Action::Other]), None);
        assert!(conflict_with(WriteMode::Overwrite, &[Action::Other]).is_some());
        let protocol = Action::Protocol(crate::log::Protocol {
            min_reader_version: 1,
            min_writer_version: 2,
            reader_features: Vec::new(),
            writer_features: Vec::new(),
        });
        assert!(conflict_with(WriteMode::Append, &[protocol]).is_some());
    }
}
