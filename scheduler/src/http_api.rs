//! The scheduler's HTTP port (`--http ADDR`): Prometheus `/metrics`, open to scrapers,
//! and a JSON API behind the same logins as Flight SQL (a bearer token from the Flight
//! handshake, or basic auth): `/api/queries` (the statements the caller may see, with
//! live progress) and `/api/executors`.

use std::sync::Arc;

use quiver_core::JobId;
use quiver_core::http_endpoint::{HttpRequest, HttpResponse};

use crate::auth::Authenticator;
use crate::engine::Engine;
use crate::json::{JsonObject, array};
use crate::query_history::{SessionIdentity, micros};
use crate::session::QueryService;

/// Answers the scheduler's HTTP requests.
pub(crate) struct HttpApi {
    pub(crate) engine: Arc<Engine>,
    pub(crate) queries: Arc<QueryService>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) admins: Vec<String>,
    pub(crate) calls: Arc<crate::front::CallCounts>,
}

impl HttpApi {
    pub(crate) fn handle(&self, request: &HttpRequest<'_>) -> HttpResponse {
        match request.path {
            "/metrics" => HttpResponse::prometheus(crate::metrics::render(
                &self.engine,
                &self.queries,
                &self.calls,
            )),
            "/api/queries" | "/api/executors" => match self.viewer(request.authorization) {
                Ok(viewer) if request.path == "/api/queries" => {
                    HttpResponse::json(200, self.queries_json(viewer.as_ref()))
                }
                Ok(_) => HttpResponse::json(200, self.executors_json()),
                Err(message) => HttpResponse::json(
                    401,
                    JsonObject::default().text("error", Some(&message)).finish(),
                ),
            },
            _ => HttpResponse::text(
                404,
                "the scheduler serves /metrics, /api/queries and /api/executors\n",
            ),
        }
    }

    /// Who is asking: `None` on a server without logins (every statement is shown).
    fn viewer(&self, authorization: Option<&str>) -> Result<Option<SessionIdentity>, String> {
        match self.auth.authenticate(authorization) {
            Ok(None) => Ok(None),
            Ok(Some(user)) => Ok(Some(SessionIdentity {
                admin: self.admins.contains(&user),
                user: Some(user),
                session: String::new(),
                restricted: false,
            })),
            Err(status) => Err(status.message().to_string()),
        }
    }

    fn queries_json(&self, viewer: Option<&SessionIdentity>) -> String {
        let records = self.queries.history_visible_to(viewer);
        array(records.iter().rev().map(|record| {
            let progress = self.engine.progress(&JobId::from(record.id.as_str()));
            let time = |at: Option<std::time::SystemTime>| at.map(|t| micros(t) as f64 / 1e3);
            JsonObject::default()
                .text("id", Some(&record.id))
                .text("user", record.user.as_deref())
                .text("sql", Some(&record.sql))
                .text("state", Some(record.state))
                .number("submitted_ms", time(Some(record.submitted)))
                .number("started_ms", time(record.started))
                .number("finished_ms", time(record.finished))
                .number(
                    "duration_ms",
                    record.duration.map(|d| d.as_secs_f64() * 1e3),
                )
                .number(
                    "progress",
                    progress.map(|p| p.fraction()).or(match record.state {
                        "succeeded" => Some(1.0),
                        _ => None,
                    }),
                )
                .number("tasks_running", progress.map(|p| p.tasks_running as f64))
                .number("rows", record.rows.map(|n| n as f64))
                .number("bytes", record.bytes.map(|n| n as f64))
                .text("error", record.error.as_deref())
                .finish()
        }))
    }

    fn executors_json(&self) -> String {
        array(self.engine.executors().iter().map(|executor| {
            JsonObject::default()
                .text("id", Some(&executor.executor_id))
                .text("url", Some(&executor.url))
                .number("slots", Some(f64::from(executor.slots)))
                .number("running_tasks", Some(executor.running_tasks as f64))
                .number("memory_reserved", Some(executor.memory_reserved as f64))
                .number("memory_limit", executor.memory_limit.map(|m| m as f64))
                .number(
                    "shuffle_memory_bytes",
                    Some(executor.shuffle_memory_bytes as f64),
                )
                .number("last_seen_ms", Some(executor.last_seen.as_secs_f64() * 1e3))
                .boolean("draining", executor.draining)
                .finish()
        }))
    }
}
