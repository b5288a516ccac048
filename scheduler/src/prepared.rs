//! Prepared statements: SQL kept on the scheduler under an opaque handle, with its plan
//! (for a query) and the parameter values a client bound to it.

use std::collections::HashMap;

use datafusion::common::ParamValues;
use parking_lot::Mutex;
use quiver_core::ticket::random_secret;

use crate::planning::ReusablePlan;

/// Most prepared statements kept at once; the least recently used go first past this.
const MAX_PREPARED: usize = 10_000;

#[derive(Debug, Clone)]
pub(crate) struct PreparedStatement {
    pub(crate) sql: String,
    /// The session that prepared it: no other may use or close it.
    session: String,
    /// Rows of parameter values from the last `DoPut`; a query runs with the first.
    pub(crate) params: Vec<ParamValues>,
    /// Its plan, for a query: executions reuse it while it is not stale.
    pub(crate) plan: Option<ReusablePlan>,
    last_used: u64,
}

#[derive(Default)]
pub(crate) struct PreparedStatements {
    statements: Mutex<(u64, HashMap<String, PreparedStatement>)>,
}

impl PreparedStatements {
    /// Stores `sql`; returns its handle.
    /// When the table is full, statements of sessions `is_open` no longer knows go
    /// first, then the least recently used.
    pub(crate) fn create(
        &self,
        sql: &str,
        plan: Option<ReusablePlan>,
        session: &str,
        is_open: impl Fn(&str) -> bool,
    ) -> String {
        let handle = random_secret();
        let mut guard = self.statements.lock();
        let (clock, statements) = &mut *guard;
        *clock += 1;
        if statements.len() >= MAX_PREPARED {
            statements.retain(|_, s| is_open(&s.session));
        }
        if statements.len() >= MAX_PREPARED {
            let oldest = statements
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(h, _)| h.clone());
            if let Some(oldest) = oldest {
                statements.remove(&oldest);
            }
        }
        statements.insert(
            handle.clone(),
            PreparedStatement {
                sql: sql.to_string(),
                session: session.to_string(),
                params: Vec::new(),
                plan,
                last_used: *clock,
            },
        );
        handle
    }

    pub(crate) fn get(&self, handle: &[u8], session: &str) -> Option<PreparedStatement> {
        let mut guard = self.statements.lock();
        let (clock, statements) = &mut *guard;
        *clock += 1;
        let statement = statements
            .get_mut(std::str::from_utf8(handle).ok()?)
            .filter(|statement| statement.session == session)?;
        statement.last_used = *clock;
        Some(statement.clone())
    }

    /// Binds parameter rows; false when the handle is unknown.
    pub(crate) fn bind(&self, handle: &[u8], session: &str, params: Vec<ParamValues>) -> bool {
        let mut guard = self.statements.lock();
        let Some(key) = std::str::from_utf8(handle).ok() else {
            return false;
        };
        match guard.1.get_mut(key).filter(|s| s.session == session) {
            Some(statement) => {
                statement.params = params;
                true
            }
            None => false,
        }
    }

    pub(crate) fn close(&self, handle: &[u8], session: &str) {
        if let Ok(key) = std::str::from_utf8(handle) {
            let mut guard = self.statements.lock();
            if guard.1.get(key).is_some_and(|s| s.session == session) {
                guard.1.remove(key);
            }
        }
    }
}
