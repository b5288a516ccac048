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
use crate::log::{
    Action, Snapshot, VersionSpec, commit_path, load_snapshot, parse_actions, read_text,
};
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
    /// For a write that creates its table (`CREATE TABLE ... AS`): the protocol and
    /// metadata actions, committed with the files as version 0.
    creates: Option<Vec<Value>>,
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
            creates: None,
        }
    }

    /// A write that creates a new table at `root` with its files: one commit, version 0,
    /// so readers see the table whole or not at all. Refused when a table is there.
    pub async fn create(
        store: &Arc<dyn ObjectStore>,
        root: Path,
        location: String,
        schema: &Schema,
        partition_columns: Vec<String>,
    ) -> Result<Self, DeltaError> {
        match load_snapshot(store, &root, VersionSpec::Latest, &location).await {
            Err(DeltaError::NotATable(_)) => {}
            Ok(existing) => {
                return Err(DeltaError::Exists(format!(
                    "'{location}' already holds a Delta table (version {}): open it with \
                     CREATE EXTERNAL TABLE ... STORED AS DELTA and INSERT INTO it",
                    existing.version
                )));
            }
            Err(error) => return Err(error),
        }
        let creates = table_start(schema, &partition_columns)?;
        Ok(Self {
            root,
            location,
            read_version: 0,
            mode: WriteMode::Append,
            partition_columns,
            removes: Vec::new(),
            creates: Some(creates),
        })
    }

    /// The version this write's commit tries first.
    fn first_version(&self) -> u64 {
        match self.creates {
            Some(_) => 0,
            None => self.read_version + 1,
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
    let mut commit_info = json!({
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
    });
    if let Some(start) = &pending.creates {
        commit_info["operation"] = json!("CREATE TABLE AS SELECT");
        commit_info["operationParameters"]["mode"] = json!("ErrorIfExists");
        if let Some(info) = commit_info.as_object_mut() {
            info.remove("readVersion");
        }
        lines.push(json!({ "commitInfo": commit_info }));
        lines.extend(start.iter().cloned());
    } else {
        lines.push(json!({ "commitInfo": commit_info }));
    }
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
    let mut version = pending.first_version();
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        match put_new(store, &commit_path(&pending.root, version), body.clone()).await {
            Ok(()) => return Ok(version),
            Err(DeltaError::Store(object_store::Error::AlreadyExists { .. }))
                if pending.creates.is_some() =>
            {
                return Err(created_meanwhile(&pending.location));
            }
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

/// The error when another writer created a table at `location` first.
fn created_meanwhile(location: &str) -> DeltaError {
    DeltaError::Exists(format!(
        "another writer created a Delta table at '{location}' at the same time; nothing \
         was committed"
    ))
}

/// The protocol and metadata actions that start a table with `schema`.
fn table_start(schema: &Schema, partition_columns: &[String]) -> Result<Vec<Value>, DeltaError> {
    for column in partition_columns {
        if schema.field_with_name(column).is_err() {
            return Err(DeltaError::Log(format!(
                "partition column '{column}' is not a column of the table"
            )));
        }
    }
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
    let metadata = json!({"metaData": {
        "id": uuid::Uuid::new_v4().to_string(),
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema_string(schema)?,
        "partitionColumns": partition_columns,
        "configuration": {},
        "createdTime": now_ms(),
    }});
    Ok(vec![protocol, metadata])
}

/// Creates a table at version 0: no files, the given schema and partition columns.
pub(crate) async fn create_table(
    store: &Arc<dyn ObjectStore>,
    root: &Path,
    schema: &Schema,
    partition_columns: &[String],
    location: &str,
) -> Result<(), DeltaError> {
    let mut lines = vec![json!({"commitInfo": {
        "timestamp": now_ms(),
        "operation": "CREATE TABLE",
        "operationParameters": {
            "partitionBy": serde_json::to_string(partition_columns).unwrap_or_default(),
        },
        "engineInfo": concat!("Quiver/", env!("CARGO_PKG_VERSION")),
    }})];
    lines.extend(table_start(schema, partition_columns)?);
    match put_new(store, &commit_path(root, 0), to_lines(&lines)).await {
        Err(DeltaError::Store(object_store::Error::AlreadyExists { .. })) => {
            Err(created_meanwhile(location))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let error = PendingWrite::create(&store, root.clone(), "t".into(), &schema, Vec::new())
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("already holds a Delta table (version 2)"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_created_table_and_its_files_are_one_commit_that_only_one_writer_makes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let root = Path::from("t");
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("day", DataType::Utf8, true),
        ]);
        let refused =
            PendingWrite::create(&store, root.clone(), "t".into(), &schema, vec!["x".into()])
                .await
                .unwrap_err();
        assert!(refused.to_string().contains("'x'"), "{refused}");
        let create = |store| {
            PendingWrite::create(store, root.clone(), "t".into(), &schema, vec!["day".into()])
        };
        let first = create(&store).await.unwrap();
        let second = create(&store).await.unwrap();
        let file = NewFile {
            path: root.clone().join("day=d1").join("a.parquet"),
            size: 1,
            stats: None,
        };
        assert_eq!(
            commit_write(&store, &first, std::slice::from_ref(&file), 1)
                .await
                .unwrap(),
            0
        );
        let error = commit_write(&store, &second, &[file], 1).await.unwrap_err();
        assert!(error.to_string().contains("same time"), "{error}");
        let table = load_snapshot(&store, &root, VersionSpec::Latest, "t")
            .await
            .unwrap();
        assert_eq!(table.version, 0);
        assert_eq!(table.metadata.partition_columns, ["day"]);
        assert_eq!(table.files.len(), 1);
        assert_eq!(table.files[0].path, "day=d1/a.parquet");
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
