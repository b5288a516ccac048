//! The catalog store: table, view and schema definitions that outlive the scheduler.
//!
//! [`CatalogStore`] is the seam a shared store (PostgreSQL, etcd) would fill to serve
//! several schedulers; [`SqliteCatalogStore`] is the embedded default, one file in the
//! scheduler's state directory, readable by its owner only because stored storage options
//! are credentials.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use quiver_core::{QuiverError, Result};
use rusqlite::{Connection, OptionalExtension, params};

use crate::query_history::{QueryRecord, from_micros, micros};

/// What a catalog entry defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Schema,
    Table,
    View,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            EntryKind::Schema => "schema",
            EntryKind::Table => "table",
            EntryKind::View => "view",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "schema" => Ok(EntryKind::Schema),
            "table" => Ok(EntryKind::Table),
            "view" => Ok(EntryKind::View),
            other => Err(QuiverError::Config(format!(
                "catalog store: unknown entry kind '{other}'"
            ))),
        }
    }
}

/// One definition, under its fully qualified name (`datafusion.public.nation`).
#[derive(Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub name: String,
    pub kind: EntryKind,
    /// Where a table's files are (its first location).
    pub location: Option<String>,
    /// A table's file format (`parquet`, `csv`, ...).
    pub format: Option<String>,
    /// Who created it, when logins say so.
    pub owner: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// How to create it again: the `CREATE EXTERNAL TABLE` command encoded with
    /// datafusion-proto for tables; SQL text for views and schemas.
    pub definition: Vec<u8>,
    /// A table's storage options (credentials among them).
    pub storage_options: BTreeMap<String, String>,
}

impl std::fmt::Debug for CatalogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogEntry")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("location", &self.location)
            .field("format", &self.format)
            .field("storage_options", &self.storage_options.keys())
            .finish_non_exhaustive()
    }
}

/// Where catalog definitions persist.
pub trait CatalogStore: Send + Sync + std::fmt::Debug {
    /// Every entry, in the order the names were first defined.
    fn entries(&self) -> Result<Vec<CatalogEntry>>;
    /// Adds the entry, or replaces the one of the same name (which keeps its place).
    fn put(&self, entry: &CatalogEntry) -> Result<()>;
    /// Removes the entry `name` and everything inside it (a schema's tables and views);
    /// true when something was removed.
    fn remove(&self, name: &str) -> Result<bool>;
    /// Every access-control rule (roles, memberships, grants).
    fn access_rules(&self) -> Result<Vec<AccessRuleRow>>;
    /// Replaces every access-control rule with `rules`, at once.
    fn replace_access_rules(&self, rules: &[AccessRuleRow]) -> Result<()>;
    /// Adds or updates these statements of the query history, keeping the newest `keep`.
    fn save_queries(&self, records: &[QueryRecord], keep: usize) -> Result<()>;
    /// The newest `limit` statements of the query history, oldest first.
    fn recent_queries(&self, limit: usize) -> Result<Vec<QueryRecord>>;
}

/// One access-control rule as stored: what kind (`role`, `member`, `table`, `schema`,
/// `location`), on what, which privilege, to whom (`user:NAME`, `role:NAME`, `public`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRuleRow {
    pub kind: String,
    pub object: String,
    pub privilege: String,
    pub grantee: String,
}

/// The embedded catalog store: an SQLite database in one file (with its write-ahead log
/// beside it).
///
/// Catalog and access changes commit through one connection that syncs the log to disk
/// at every commit. The query history, written for every statement, goes through a
/// second connection that syncs only at checkpoints: a history row survives the
/// scheduler's crash, and only an operating-system crash or power loss can take the last
/// few, while statements stop paying a disk sync each.
#[derive(Debug)]
pub struct SqliteCatalogStore {
    path: PathBuf,
    connection: Mutex<Connection>,
    history: Mutex<Connection>,
}

/// How long a connection waits for the other's write to finish.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS catalog_entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    location TEXT,
    format TEXT,
    owner TEXT,
    created_at_ms INTEGER NOT NULL,
    definition BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS storage_options (
    name TEXT NOT NULL REFERENCES catalog_entries(name) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, key)
);
CREATE TABLE IF NOT EXISTS query_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user TEXT,
    session TEXT NOT NULL,
    sql TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_us INTEGER NOT NULL,
    started_us INTEGER,
    finished_us INTEGER,
    duration_us INTEGER,
    rows_changed INTEGER,
    stages INTEGER,
    tasks INTEGER,
    rows INTEGER,
    bytes INTEGER,
    error TEXT
);
CREATE TABLE IF NOT EXISTS access_rules (
    kind TEXT NOT NULL,
    object TEXT NOT NULL,
    privilege TEXT NOT NULL,
    grantee TEXT NOT NULL,
    PRIMARY KEY (kind, object, privilege, grantee)
);
PRAGMA foreign_keys = ON;
";

impl SqliteCatalogStore {
    /// Opens (creating if needed) the store at `path`, readable and writable by this
    /// process's user only.
    pub fn open(path: &Path) -> Result<Self> {
        let failed = |what: &str, error: &dyn std::fmt::Display| {
            QuiverError::Config(format!(
                "catalog store {}: cannot {what}: {error}",
                path.display()
            ))
        };
        // Create the file with owner-only permissions before SQLite opens it, and
        // tighten an existing one.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| failed("create the file", &e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| failed("restrict its permissions", &e))?;
        let connection = Connection::open(path).map_err(|e| failed("open", &e))?;
        let journal: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| failed("use a write-ahead log", &e))?;
        tracing::debug!(%journal, "catalog store journal mode");
        connection
            .execute_batch(SCHEMA)
            .map_err(|e| failed("create its tables", &e))?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| failed("set a busy timeout", &e))?;
        let history = Connection::open(path).map_err(|e| failed("open", &e))?;
        history
            .execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(|e| failed("configure the history's connection", &e))?;
        history
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| failed("set a busy timeout", &e))?;
        Ok(Self {
            path: path.to_path_buf(),
            connection: Mutex::new(connection),
            history: Mutex::new(history),
        })
    }

    fn error(&self, what: &str, error: rusqlite::Error) -> QuiverError {
        QuiverError::Config(format!(
            "catalog store {}: {what}: {error}",
            self.path.display()
        ))
    }
}

impl CatalogStore for SqliteCatalogStore {
    fn entries(&self) -> Result<Vec<CatalogEntry>> {
        let connection = self.connection.lock();
        let read = |connection: &Connection| -> rusqlite::Result<Vec<(CatalogEntry, String)>> {
            let mut statement = connection.prepare(
                "SELECT name, kind, location, format, owner, created_at_ms, definition
                 FROM catalog_entries ORDER BY seq",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((
                    CatalogEntry {
                        name: row.get(0)?,
                        kind: EntryKind::Table,
                        location: row.get(2)?,
                        format: row.get(3)?,
                        owner: row.get(4)?,
                        created_at_ms: row.get(5)?,
                        definition: row.get(6)?,
                        storage_options: BTreeMap::new(),
                    },
                    row.get::<_, String>(1)?,
                ))
            })?;
            let mut entries = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            let mut options =
                connection.prepare("SELECT key, value FROM storage_options WHERE name = ?1")?;
            for (entry, _) in &mut entries {
                entry.storage_options = options
                    .query_map([&entry.name], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
            }
            Ok(entries)
        };
        let rows = read(&connection).map_err(|e| self.error("reading entries", e))?;
        rows.into_iter()
            .map(|(mut entry, kind)| {
                entry.kind = EntryKind::parse(&kind)?;
                Ok(entry)
            })
            .collect()
    }

    fn put(&self, entry: &CatalogEntry) -> Result<()> {
        let mut connection = self.connection.lock();
        let write = |connection: &mut Connection| -> rusqlite::Result<()> {
            let transaction = connection.transaction()?;
            transaction.execute(
                "INSERT INTO catalog_entries
                     (name, kind, location, format, owner, created_at_ms, definition)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(name) DO UPDATE SET kind = excluded.kind,
                     location = excluded.location, format = excluded.format,
                     owner = excluded.owner, created_at_ms = excluded.created_at_ms,
                     definition = excluded.definition",
                params![
                    entry.name,
                    entry.kind.as_str(),
                    entry.location,
                    entry.format,
                    entry.owner,
                    entry.created_at_ms,
                    entry.definition
                ],
            )?;
            transaction.execute("DELETE FROM storage_options WHERE name = ?1", [&entry.name])?;
            for (key, value) in &entry.storage_options {
                transaction.execute(
                    "INSERT INTO storage_options (name, key, value) VALUES (?1, ?2, ?3)",
                    params![entry.name, key, value],
                )?;
            }
            transaction.commit()
        };
        write(&mut connection).map_err(|e| self.error(&format!("saving {}", entry.name), e))
    }

    fn remove(&self, name: &str) -> Result<bool> {
        let connection = self.connection.lock();
        let inside = format!("{}.%", name.replace('%', "\\%").replace('_', "\\_"));
        let exists = connection
            .query_row(
                "SELECT 1 FROM catalog_entries WHERE name = ?1",
                [name],
                |_| Ok(()),
            )
            .optional()
            .map_err(|e| self.error(&format!("looking up {name}"), e))?
            .is_some();
        let removed = connection
            .execute(
                "DELETE FROM catalog_entries WHERE name = ?1 OR name LIKE ?2 ESCAPE '\\'",
                params![name, inside],
            )
            .map_err(|e| self.error(&format!("removing {name}"), e))?;
        Ok(exists || removed > 0)
    }

    fn access_rules(&self) -> Result<Vec<AccessRuleRow>> {
        let connection = self.connection.lock();
        let read = |connection: &Connection| -> rusqlite::Result<Vec<AccessRuleRow>> {
            let mut statement = connection.prepare(
                "SELECT kind, object, privilege, grantee FROM access_rules ORDER BY rowid",
            )?;
            statement
                .query_map([], |row| {
                    Ok(AccessRuleRow {
                        kind: row.get(0)?,
                        object: row.get(1)?,
                        privilege: row.get(2)?,
                        grantee: row.get(3)?,
                    })
                })?
                .collect()
        };
        read(&connection).map_err(|e| self.error("reading access rules", e))
    }

    fn replace_access_rules(&self, rules: &[AccessRuleRow]) -> Result<()> {
        let mut connection = self.connection.lock();
        let write = |connection: &mut Connection| -> rusqlite::Result<()> {
            let transaction = connection.transaction()?;
            transaction.execute("DELETE FROM access_rules", [])?;
            for rule in rules {
                transaction.execute(
                    "INSERT INTO access_rules (kind, object, privilege, grantee)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![rule.kind, rule.object, rule.privilege, rule.grantee],
                )?;
            }
            transaction.commit()
        };
        write(&mut connection).map_err(|e| self.error("saving access rules", e))
    }

    fn save_queries(&self, records: &[QueryRecord], keep: usize) -> Result<()> {
        let mut connection = self.history.lock();
        let write = |connection: &mut Connection| -> rusqlite::Result<()> {
            let transaction = connection.transaction()?;
            for record in records {
                transaction
                    .prepare_cached(
                        "INSERT INTO query_history (id, user, session, sql, state, submitted_us,
                         finished_us, duration_us, rows_changed, stages, tasks, rows, bytes,
                         error, started_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                     ON CONFLICT(id) DO UPDATE SET state = excluded.state,
                         started_us = excluded.started_us,
                         finished_us = excluded.finished_us,
                         duration_us = excluded.duration_us,
                         rows_changed = excluded.rows_changed, stages = excluded.stages,
                         tasks = excluded.tasks, rows = excluded.rows,
                         bytes = excluded.bytes, error = excluded.error",
                    )?
                    .execute(params![
                        record.id,
                        record.user,
                        record.session,
                        record.sql,
                        record.state,
                        micros(record.submitted),
                        record.finished.map(micros),
                        record.duration.map(|d| d.as_micros() as i64),
                        record.rows_changed,
                        record.stages.map(|n| n as i64),
                        record.tasks.map(|n| n as i64),
                        record.rows.map(|n| n as i64),
                        record.bytes.map(|n| n as i64),
                        record.error,
                        record.started.map(micros),
                    ])?;
            }
            transaction
                .prepare_cached(
                    "DELETE FROM query_history
                     WHERE seq <= (SELECT max(seq) FROM query_history) - ?1",
                )?
                .execute([keep as i64])?;
            transaction.commit()
        };
        write(&mut connection).map_err(|e| self.error("saving the query history", e))
    }

    fn recent_queries(&self, limit: usize) -> Result<Vec<QueryRecord>> {
        let connection = self.connection.lock();
        let read = |connection: &Connection| -> rusqlite::Result<Vec<QueryRecord>> {
            let mut statement = connection.prepare(
                "SELECT id, user, session, sql, state, submitted_us, finished_us, duration_us,
                     rows_changed, stages, tasks, rows, bytes, error, started_us
                 FROM (SELECT * FROM query_history ORDER BY seq DESC LIMIT ?1)
                 ORDER BY seq",
            )?;
            let count = |value: Option<i64>| value.map(|n| n as u64);
            statement
                .query_map([limit as i64], |row| {
                    Ok(QueryRecord {
                        id: row.get(0)?,
                        user: row.get(1)?,
                        session: row.get(2)?,
                        sql: row.get(3)?,
                        state: QueryRecord::state_named(&row.get::<_, String>(4)?),
                        submitted: from_micros(row.get(5)?),
                        finished: row.get::<_, Option<i64>>(6)?.map(from_micros),
                        duration: row
                            .get::<_, Option<i64>>(7)?
                            .map(|us| std::time::Duration::from_micros(us.max(0) as u64)),
                        rows_changed: row.get(8)?,
                        stages: count(row.get(9)?),
                        tasks: count(row.get(10)?),
                        rows: count(row.get(11)?),
                        bytes: count(row.get(12)?),
                        error: row.get(13)?,
                        started: row.get::<_, Option<i64>>(14)?.map(from_micros),
                    })
                })?
                .collect()
        };
        read(&connection).map_err(|e| self.error("reading the query history", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: EntryKind) -> CatalogEntry {
        CatalogEntry {
            name: name.to_string(),
            kind,
            location: Some("/data/t/".to_string()),
            format: Some("parquet".to_string()),
            owner: None,
            created_at_ms: 1,
            definition: b"definition".to_vec(),
            storage_options: [("aws.secret_access_key".to_string(), "hunter2".to_string())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn entries_survive_reopening_in_creation_order_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        {
            let store = SqliteCatalogStore::open(&path).unwrap();
            store.put(&entry("d.s", EntryKind::Schema)).unwrap();
            store.put(&entry("d.s.b", EntryKind::Table)).unwrap();
            store.put(&entry("d.s.a", EntryKind::View)).unwrap();
            // Replacing keeps the place.
            let mut replaced = entry("d.s.b", EntryKind::Table);
            replaced.location = Some("/elsewhere/".to_string());
            store.put(&replaced).unwrap();
        }
        let store = SqliteCatalogStore::open(&path).unwrap();
        let entries = store.entries().unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["d.s", "d.s.b", "d.s.a"]);
        assert_eq!(entries[1].location.as_deref(), Some("/elsewhere/"));
        assert_eq!(
            entries[1].storage_options["aws.secret_access_key"],
            "hunter2"
        );
        assert_eq!(entries[2].kind, EntryKind::View);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{:?}", entries[1]).contains("hunter2"));
    }

    #[test]
    fn removing_a_schema_removes_what_is_inside_it_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteCatalogStore::open(&dir.path().join("c.sqlite")).unwrap();
        store.put(&entry("d.s", EntryKind::Schema)).unwrap();
        store.put(&entry("d.s.t", EntryKind::Table)).unwrap();
        store.put(&entry("d.s_other.t", EntryKind::Table)).unwrap();
        assert!(store.remove("d.s").unwrap());
        let names: Vec<String> = store
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["d.s_other.t"]);
        assert!(!store.remove("d.nothing").unwrap());
    }
}
