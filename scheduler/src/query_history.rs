//! Query history: every statement's who, what, when and how, kept in memory (the newest
//! [`MAX_KEPT`]) and shown as `system.queries`, where a user sees their own statements
//! (without logins: their session's) and an administrator sees all. With a catalog store
//! the history persists: a writer thread saves each statement as it arrives and ends,
//! off the request's path, and a restarted scheduler shows the statements of its
//! predecessor, those it was running marked `interrupted`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::catalog_store::CatalogStore;
use crate::engine::JobProgress;

/// Statements kept; older ones are forgotten first.
pub const MAX_KEPT: usize = 10_000;

/// Who a session is, as its DataFusion session carries it (a config extension), so that
/// tables it scans can show it only what it may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIdentity {
    pub user: Option<String>,
    pub session: String,
    pub admin: bool,
    /// Whether grants govern what the session may read and change: a login that is not
    /// an administrator, on a server that names administrators.
    pub restricted: bool,
}

impl SessionIdentity {
    /// The identity `context`'s session carries, read in place (without copying the
    /// session's state).
    pub fn of(context: &datafusion::prelude::SessionContext) -> Option<std::sync::Arc<Self>> {
        context.state_ref().read().config().get_extension::<Self>()
    }

    /// Whether this session may see a statement of `user` in `session`.
    pub fn may_see(&self, user: Option<&str>, session: &str) -> bool {
        self.admin
            || match (&self.user, user) {
                (Some(mine), Some(theirs)) => mine == theirs,
                (None, _) => self.session == session,
                (Some(_), None) => false,
            }
    }
}

/// One statement in the history.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    pub id: String,
    pub user: Option<String>,
    pub session: String,
    pub sql: String,
    /// `queued`, `running`, `succeeded`, `failed`, or `interrupted` (its scheduler
    /// stopped first).
    pub state: &'static str,
    pub submitted: SystemTime,
    /// When it left its user's line and began to run.
    pub started: Option<SystemTime>,
    pub finished: Option<SystemTime>,
    pub duration: Option<Duration>,
    /// Rows a DML statement changed.
    pub rows_changed: Option<i64>,
    /// What the statement's job did, when it ran one.
    pub stages: Option<u64>,
    pub tasks: Option<u64>,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub error: Option<String>,
}

impl QueryRecord {
    /// The state of this name, as the store keeps it.
    pub(crate) fn state_named(name: &str) -> &'static str {
        match name {
            "queued" => "queued",
            "running" => "running",
            "succeeded" => "succeeded",
            "failed" => "failed",
            _ => "interrupted",
        }
    }
}

/// The newest statements, oldest first.
#[derive(Default)]
pub struct QueryHistory {
    records: Mutex<VecDeque<QueryRecord>>,
    /// Where statements are saved, when the scheduler has a store.
    saver: Option<Mutex<Sender<QueryRecord>>>,
}

impl QueryHistory {
    /// A history kept in `store` too, starting with the statements saved there (those
    /// still running when their scheduler stopped become `interrupted`).
    pub fn persisted(store: Arc<dyn CatalogStore>) -> quiver_core::Result<Self> {
        let mut records: VecDeque<QueryRecord> = store.recent_queries(MAX_KEPT)?.into();
        let mut interrupted = Vec::new();
        for record in records
            .iter_mut()
            .filter(|r| r.state == "running" || r.state == "queued")
        {
            record.state = "interrupted";
            record.error = Some("the scheduler stopped while the statement ran".to_string());
            interrupted.push(record.clone());
        }
        store.save_queries(&interrupted, MAX_KEPT)?;
        let (sender, receiver) = channel();
        std::thread::Builder::new()
            .name("quiver-history".to_string())
            .spawn(move || save_until_closed(receiver, store))?;
        Ok(Self {
            records: Mutex::new(records),
            saver: Some(Mutex::new(sender)),
        })
    }

    fn save(&self, record: &QueryRecord) {
        if let Some(saver) = &self.saver {
            let _ = saver.lock().send(record.clone());
        }
    }

    /// Records a statement that just arrived.
    pub fn begin(&self, id: &str, user: Option<&str>, session: &str, sql: &str) {
        let mut records = self.records.lock();
        if records.len() >= MAX_KEPT {
            records.pop_front();
        }
        records.push_back(QueryRecord {
            id: id.to_string(),
            user: user.map(str::to_string),
            session: session.to_string(),
            sql: sql.to_string(),
            state: "queued",
            submitted: SystemTime::now(),
            started: None,
            finished: None,
            duration: None,
            rows_changed: None,
            stages: None,
            tasks: None,
            rows: None,
            bytes: None,
            error: None,
        });
        if let Some(record) = records.back() {
            self.save(record);
        }
    }

    /// Records that statement `id` left its line and runs.
    pub fn started(&self, id: &str) {
        let mut records = self.records.lock();
        if let Some(record) = records.iter_mut().rev().find(|r| r.id == id) {
            record.state = "running";
            record.started = Some(SystemTime::now());
            self.save(record);
        }
    }

    /// Records how statement `id` ended.
    pub fn finish(
        &self,
        id: &str,
        outcome: Result<Option<i64>, String>,
        progress: Option<JobProgress>,
    ) {
        let mut records = self.records.lock();
        let Some(record) = records.iter_mut().rev().find(|r| r.id == id) else {
            return;
        };
        let now = SystemTime::now();
        record.finished = Some(now);
        record.duration = now.duration_since(record.submitted).ok();
        match outcome {
            Ok(rows_changed) => {
                record.state = "succeeded";
                record.rows_changed = rows_changed;
            }
            Err(error) => {
                record.state = "failed";
                record.error = Some(error);
            }
        }
        if let Some(progress) = progress {
            record.stages = Some(progress.stages_total as u64);
            record.tasks = Some(progress.tasks_total as u64);
            record.rows = Some(progress.rows);
            record.bytes = Some(progress.bytes);
        }
        self.save(record);
    }

    /// The statements `viewer` may see (all of them without a viewer: the process's own
    /// session).
    pub fn visible_to(&self, viewer: Option<&SessionIdentity>) -> Vec<QueryRecord> {
        self.records
            .lock()
            .iter()
            .filter(|r| viewer.is_none_or(|v| v.may_see(r.user.as_deref(), &r.session)))
            .cloned()
            .collect()
    }

    /// Statement `id`, if `viewer` may see it.
    pub fn find_visible(&self, id: &str, viewer: Option<&SessionIdentity>) -> Option<QueryRecord> {
        self.records
            .lock()
            .iter()
            .rev()
            .find(|r| r.id == id)
            .filter(|r| viewer.is_none_or(|v| v.may_see(r.user.as_deref(), &r.session)))
            .cloned()
    }

    /// How many statements arrived at or after `since`.
    pub fn submitted_since(&self, since: SystemTime) -> usize {
        self.records
            .lock()
            .iter()
            .rev()
            .take_while(|r| r.submitted >= since)
            .count()
    }

    /// The newest `limit` statements `viewer` may see, newest first.
    pub fn latest_visible_to(
        &self,
        viewer: Option<&SessionIdentity>,
        limit: usize,
    ) -> Vec<QueryRecord> {
        self.records
            .lock()
            .iter()
            .rev()
            .filter(|r| viewer.is_none_or(|v| v.may_see(r.user.as_deref(), &r.session)))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// Saves what arrives on `records`, a batch at a time, until the history is dropped.
fn save_until_closed(records: Receiver<QueryRecord>, store: Arc<dyn CatalogStore>) {
    while let Ok(first) = records.recv() {
        let mut batch = vec![first];
        batch.extend(records.try_iter().take(999));
        if let Err(error) = store.save_queries(&batch, MAX_KEPT) {
            tracing::warn!(%error, "could not save the query history");
        }
    }
}

/// The time `us` microseconds after the Unix epoch.
pub fn from_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

/// Microseconds since the Unix epoch, for timestamp columns.
pub fn micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_see_their_own_statements_and_administrators_all() {
        let history = QueryHistory::default();
        history.begin("1", Some("alice"), "s1", "SELECT 1");
        history.begin("2", Some("bob"), "s2", "SELECT 2");
        history.finish("1", Ok(None), None);
        let alice = SessionIdentity {
            user: Some("alice".into()),
            session: "s9".into(),
            admin: false,
            restricted: false,
        };
        let seen = history.visible_to(Some(&alice));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].state, "succeeded");
        assert!(history.find_visible("1", Some(&alice)).is_some());
        assert!(history.find_visible("2", Some(&alice)).is_none(), "bob's");
        let a_minute_ago = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(history.submitted_since(a_minute_ago), 2);
        assert_eq!(
            history.submitted_since(SystemTime::now() + Duration::from_secs(1)),
            0
        );
        let admin = SessionIdentity {
            admin: true,
            ..alice
        };
        assert_eq!(history.visible_to(Some(&admin)).len(), 2);
    }
}
