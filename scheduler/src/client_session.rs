//! Client sessions: each connection's own settings (`SET`, `SHOW`, `RESET`), current
//! schema and prepared statements, over the catalog every session shares.
//!
//! A session is found by the `quiver_session` cookie the scheduler sets on a client's
//! first call (clients with cookie support, such as ADBC with its cookie middleware, keep
//! it across reconnects), or else by the client's connection: every call over one gRPC
//! connection belongs to one session. With logins, a session belongs to the login that
//! opened it; a cookie presented by another login opens a new session instead. Sessions
//! idle past the timeout are dropped with everything they held.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use parking_lot::Mutex;
use quiver_core::ticket::random_secret;
use tonic::Request;

use crate::access_control::Restricted;
use crate::auth::AuthenticatedUser;
use crate::planning::StatementPlanner;
use crate::query_history::SessionIdentity;
use crate::visible_catalog::visible_to;

/// Name of the cookie that carries a session id.
pub const SESSION_COOKIE: &str = "quiver_session";

/// Settings a client may not change: Quiver switches them off so that plans can be cut
/// into stages and run in separate processes. Each maps to the reason given.
const PROTECTED_SETTINGS: [(&str, &str); 2] = [
    (
        "datafusion.optimizer.enable_physical_uncorrelated_scalar_subquery",
        "such subqueries hand their value to other operators through memory; Quiver plans \
         them as joins, which travel between stages",
    ),
    (
        "datafusion.execution.enable_file_stream_work_stealing",
        "each task reads exactly its own partition's files; stealing a sibling's files \
         would read them twice across tasks",
    ),
];

/// Why `key` may not be set by a client, if it may not.
pub(crate) fn protected_setting(key: &str) -> Option<&'static str> {
    let key = key.trim().to_ascii_lowercase();
    let key = if key.starts_with("datafusion.") {
        key
    } else {
        format!("datafusion.{key}")
    };
    PROTECTED_SETTINGS
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, why)| *why)
}

/// One client's session.
pub struct ClientSession {
    id: String,
    user: Option<String>,
    /// An administrator's session may follow and stop every session's queries.
    admin: bool,
    /// Plans in this session's own DataFusion session (its settings), over the shared
    /// catalog.
    pub(crate) planner: StatementPlanner,
    last_used: Mutex<Instant>,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("id", &self.id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// A session of `user`; `governed` when the server names administrators, so that
    /// grants govern everyone else.
    fn new(
        id: String,
        user: Option<String>,
        admin: bool,
        governed: bool,
        base: &StatementPlanner,
    ) -> Self {
        // A copy of the shared session's state: its own settings, the same catalog list,
        // runtime and object stores.
        let mut state = base.context.state();
        let identity = SessionIdentity {
            user: user.clone(),
            session: id.clone(),
            admin,
            restricted: user.is_some() && !admin && governed,
        };
        // A restricted user's catalog leaves out what the user may not see.
        if let Some(caller) = Restricted::of(Some(&identity)) {
            let catalogs = visible_to(
                Arc::clone(state.catalog_list()),
                Arc::clone(&base.access),
                caller.user,
            );
            state = SessionStateBuilder::new_from_existing(state)
                .with_catalog_list(catalogs)
                .build();
        }
        state.config_mut().set_extension(Arc::new(identity));
        // As wide as the cluster is now (the session may still SET its own width).
        if let Some(engine) = &base.width_from {
            let slots = engine.live_slots();
            if slots > 0 {
                state.config_mut().options_mut().execution.target_partitions = slots;
            }
        }
        let context = SessionContext::new_with_state(state);
        Self {
            id,
            user,
            admin,
            planner: StatementPlanner {
                context,
                ..base.clone()
            },
            last_used: Mutex::new(Instant::now()),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The login the session belongs to (`None` on a server without logins).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether the session's login is an administrator.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// The session's DataFusion session: its settings and the shared catalog.
    pub fn context(&self) -> &SessionContext {
        &self.planner.context
    }

    fn touch(&self) {
        *self.last_used.lock() = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().elapsed()
    }
}

/// Every open session, by id, and which connection opened which.
pub struct Sessions {
    base: StatementPlanner,
    admins: Vec<String>,
    idle_timeout: Duration,
    open: Mutex<OpenSessions>,
}

#[derive(Default)]
struct OpenSessions {
    by_id: HashMap<String, Arc<ClientSession>>,
    by_connection: HashMap<SocketAddr, String>,
    last_sweep: Option<Instant>,
}

/// Most sessions kept at once; past it the longest idle go first.
const MAX_SESSIONS: usize = 10_000;

impl Sessions {
    pub(crate) fn new(base: StatementPlanner, idle_timeout: Duration, admins: Vec<String>) -> Self {
        Self {
            base,
            admins,
            idle_timeout,
            open: Mutex::new(OpenSessions::default()),
        }
    }

    /// A session of its own, for callers inside the process (the embedded API).
    pub fn open_local(&self) -> Arc<ClientSession> {
        Arc::new(ClientSession::new(
            random_secret(),
            None,
            false,
            false,
            &self.base,
        ))
    }

    /// The session `request` belongs to, opened if it has none; with the cookie to set
    /// when the client did not present this session's.
    pub fn resolve<T>(&self, request: &Request<T>) -> (Arc<ClientSession>, Option<String>) {
        let user = request
            .extensions()
            .get::<AuthenticatedUser>()
            .map(|u| u.0.clone());
        let cookie = session_cookie(request);
        let connection = request.remote_addr();
        let mut open = self.open.lock();
        self.sweep(&mut open);
        let known = |id: &str, open: &OpenSessions| {
            open.by_id
                .get(id)
                .filter(|session| session.user == user)
                .cloned()
        };
        let found = cookie
            .as_deref()
            .and_then(|id| known(id, &open))
            .or_else(|| {
                let id = connection.and_then(|c| open.by_connection.get(&c).cloned())?;
                known(&id, &open)
            });
        let session = match found {
            Some(session) => session,
            None => {
                let admin = user.as_ref().is_some_and(|u| self.admins.contains(u));
                let governed = !self.admins.is_empty();
                let session = Arc::new(ClientSession::new(
                    random_secret(),
                    user,
                    admin,
                    governed,
                    &self.base,
                ));
                if open.by_id.len() >= MAX_SESSIONS {
                    evict_longest_idle(&mut open);
                }
                open.by_id.insert(session.id.clone(), Arc::clone(&session));
                session
            }
        };
        if let Some(connection) = connection {
            open.by_connection.insert(connection, session.id.clone());
        }
        session.touch();
        let set_cookie = (cookie.as_deref() != Some(session.id.as_str()))
            .then(|| format!("{SESSION_COOKIE}={}; HttpOnly", session.id));
        (session, set_cookie)
    }

    /// Ends session `id` (Flight SQL `CloseSession`); whether it was open.
    pub fn close(&self, id: &str) -> bool {
        let mut open = self.open.lock();
        open.by_connection.retain(|_, session| session != id);
        open.by_id.remove(id).is_some()
    }

    /// Whether session `id` is still open.
    pub fn is_open(&self, id: &str) -> bool {
        self.open.lock().by_id.contains_key(id)
    }

    /// Drops sessions idle past the timeout, at most once a second.
    fn sweep(&self, open: &mut OpenSessions) {
        let now = Instant::now();
        if open
            .last_sweep
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            return;
        }
        open.last_sweep = Some(now);
        let timeout = self.idle_timeout;
        open.by_id.retain(|_, session| session.idle_for() < timeout);
        let OpenSessions {
            by_id,
            by_connection,
            ..
        } = open;
        by_connection.retain(|_, id| by_id.contains_key(id));
    }
}

fn evict_longest_idle(open: &mut OpenSessions) {
    let oldest = open
        .by_id
        .values()
        .max_by_key(|session| session.idle_for())
        .map(|session| session.id.clone());
    if let Some(id) = oldest {
        open.by_id.remove(&id);
    }
}

/// The `quiver_session` cookie of `request`, if it carries one.
fn session_cookie<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get_all("cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_settings_are_found_with_or_without_their_prefix() {
        assert!(
            protected_setting("datafusion.execution.enable_file_stream_work_stealing").is_some()
        );
        assert!(protected_setting("EXECUTION.enable_file_stream_work_stealing").is_some());
        assert!(protected_setting("datafusion.optimizer.enable_dynamic_filter_pushdown").is_none());
        assert!(protected_setting("datafusion.execution.batch_size").is_none());
    }

    #[test]
    fn the_session_cookie_is_read_among_others() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("cookie", "a=1; quiver_session=abc; b=2".parse().unwrap());
        assert_eq!(session_cookie(&request).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&Request::new(())), None);
    }
}
