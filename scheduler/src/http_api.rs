//! The scheduler's HTTP port (`--http ADDR`): Prometheus `/metrics`, open to scrapers; a
//! JSON API and the web UI built on it, behind the same logins as Flight SQL (a bearer
//! token from the Flight handshake, basic auth, or the UI's session cookie from its login
//! form).
//!
//! API: `GET /api/queries` (the newest statements the caller may see, with live
//! progress), `GET /api/queries/{id}` (one statement with its job's stages and task
//! attempts), `POST /api/queries/{id}/cancel`, `GET /api/executors` (live and departed),
//! `GET /api/cluster` (an overview).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quiver_core::JobId;
use quiver_core::http_endpoint::{HttpRequest, HttpResponse};

use crate::auth::Authenticator;
use crate::engine::Engine;
use crate::job_report::{AttemptReport, JobReport, StageReport};
use crate::json::{JsonObject, array};
use crate::query_history::{QueryRecord, SessionIdentity, micros};
use crate::session::QueryService;

/// The cookie that carries a web UI login's token.
const SESSION_COOKIE: &str = "quiver_session";
/// Statements `/api/queries` lists.
const LISTED_QUERIES: usize = 200;

/// Answers the scheduler's HTTP requests.
pub(crate) struct HttpApi {
    pub(crate) engine: Arc<Engine>,
    pub(crate) queries: Arc<QueryService>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) admins: Vec<String>,
    pub(crate) calls: Arc<crate::metrics::SchedulerCalls>,
}

impl HttpApi {
    pub(crate) fn handle(&self, request: &HttpRequest<'_>) -> HttpResponse {
        match (request.method, request.path) {
            ("GET", "/metrics") => HttpResponse::prometheus(crate::metrics::render(
                &self.engine,
                &self.queries,
                &self.calls,
            )),
            ("GET", "/login") if !self.auth.required() => HttpResponse::redirect("/"),
            ("GET", "/login") => HttpResponse::html(200, crate::web_ui::login_page(None)),
            ("POST", "/login") => self.log_in(request),
            ("POST", "/logout") => {
                if let Some(token) = request.cookie(SESSION_COOKIE) {
                    self.auth.revoke(token);
                }
                HttpResponse::redirect("/login").with_header(
                    "Set-Cookie",
                    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
                )
            }
            ("GET", "/" | "/executors") => self.page(request),
            ("GET", path) if path.starts_with("/queries/") => self.page(request),
            (method, path) if path.starts_with("/api/") => match self.viewer(request) {
                Ok(viewer) => self.api(method, path, viewer.as_ref()),
                Err(why) => error_json(401, &why),
            },
            ("GET" | "POST", _) => HttpResponse::text(
                404,
                "the scheduler serves the web UI at /, its JSON API under /api/ and /metrics\n",
            ),
            _ => HttpResponse::text(405, "only GET and POST are served here\n"),
        }
    }

    fn page(&self, request: &HttpRequest<'_>) -> HttpResponse {
        match self.viewer(request) {
            Ok(viewer) => HttpResponse::html(200, crate::web_ui::app_page(viewer.as_ref())),
            Err(_) => HttpResponse::redirect("/login"),
        }
    }

    fn log_in(&self, request: &HttpRequest<'_>) -> HttpResponse {
        let user = request.form_field("user").unwrap_or_default();
        let password = request.form_field("password").unwrap_or_default();
        match self.auth.log_in(&user, &password, request.peer) {
            Ok(token) => HttpResponse::redirect("/").with_header(
                "Set-Cookie",
                format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
            ),
            Err(status) => {
                HttpResponse::html(401, crate::web_ui::login_page(Some(status.message())))
            }
        }
    }

    /// Who is asking (`None` on a server without logins: every statement is shown), or
    /// why they are refused.
    fn viewer(&self, request: &HttpRequest<'_>) -> Result<Option<SessionIdentity>, String> {
        let from_cookie = request
            .cookie(SESSION_COOKIE)
            .filter(|token| !token.is_empty())
            .map(|token| format!("Bearer {token}"));
        let authorization = request.authorization.or(from_cookie.as_deref());
        match self.auth.authenticate_from(authorization, request.peer) {
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

    fn api(&self, method: &str, path: &str, viewer: Option<&SessionIdentity>) -> HttpResponse {
        let query_id = path.strip_prefix("/api/queries/");
        match (method, path, query_id) {
            ("GET", "/api/queries", _) => HttpResponse::json(200, self.queries_json(viewer)),
            ("GET", "/api/executors", _) => HttpResponse::json(200, self.executors_json()),
            ("GET", "/api/cluster", _) => HttpResponse::json(200, self.cluster_json()),
            ("POST", _, Some(rest)) if rest.ends_with("/cancel") => {
                self.cancel(rest.trim_end_matches("/cancel"), viewer)
            }
            ("GET", _, Some(id)) => match self.visible_query(id, viewer) {
                Some(record) => HttpResponse::json(200, self.query_detail_json(&record, viewer)),
                None => error_json(404, &format!("no query {id} that you may see")),
            },
            _ => error_json(404, &format!("no API at {method} {path}")),
        }
    }

    fn visible_query(&self, id: &str, viewer: Option<&SessionIdentity>) -> Option<QueryRecord> {
        self.queries.history_record(id, viewer)
    }

    /// Whether `viewer` may stop `record`: its owner or an administrator (anyone on a
    /// server without logins).
    fn may_cancel(record: &QueryRecord, viewer: Option<&SessionIdentity>) -> bool {
        viewer.is_none_or(|v| v.admin || (v.user.is_some() && v.user == record.user))
    }

    fn cancel(&self, id: &str, viewer: Option<&SessionIdentity>) -> HttpResponse {
        let Some(record) = self.visible_query(id, viewer) else {
            return error_json(404, &format!("no query {id} that you may see"));
        };
        if !Self::may_cancel(&record, viewer) {
            return error_json(
                403,
                "only the query's owner or an administrator may cancel it",
            );
        }
        let job_id = JobId::from(id);
        match self.engine.progress(&job_id) {
            Some(progress) if !progress.finished => {
                tracing::info!(job = %job_id, "cancelled from the web UI");
                self.engine.cancel(&job_id);
                HttpResponse::json(
                    200,
                    JsonObject::default().boolean("cancelled", true).finish(),
                )
            }
            _ => error_json(409, &format!("query {id} is not running")),
        }
    }

    fn query_json(&self, record: &QueryRecord, viewer: Option<&SessionIdentity>) -> JsonObject {
        let progress = self.engine.progress(&JobId::from(record.id.as_str()));
        let running = progress.is_some_and(|p| !p.finished);
        JsonObject::default()
            .text("id", Some(&record.id))
            .text("user", record.user.as_deref())
            .text("sql", Some(&record.sql))
            .text("state", Some(record.state))
            .number("submitted_ms", Some(epoch_ms(record.submitted)))
            .number("started_ms", record.started.map(epoch_ms))
            .number("finished_ms", record.finished.map(epoch_ms))
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
            .boolean("can_cancel", running && Self::may_cancel(record, viewer))
    }

    fn queries_json(&self, viewer: Option<&SessionIdentity>) -> String {
        let records = self.queries.history_visible_to(viewer, LISTED_QUERIES);
        array(
            records
                .iter()
                .map(|record| self.query_json(record, viewer).finish()),
        )
    }

    fn query_detail_json(&self, record: &QueryRecord, viewer: Option<&SessionIdentity>) -> String {
        let report = self.engine.report(&JobId::from(record.id.as_str()));
        self.query_json(record, viewer)
            .raw(
                "job",
                &report.map_or_else(|| "null".to_string(), |r| job_json(&r)),
            )
            .finish()
    }

    fn executors_json(&self) -> String {
        let live = self.engine.executors().into_iter().map(|executor| {
            JsonObject::default()
                .text("id", Some(&executor.executor_id))
                .text("url", Some(&executor.url))
                .text(
                    "state",
                    Some(if executor.draining {
                        "draining"
                    } else {
                        "alive"
                    }),
                )
                .number("slots", Some(f64::from(executor.slots)))
                .number("running_tasks", Some(executor.running_tasks as f64))
                .number("memory_reserved", Some(executor.memory_reserved as f64))
                .number("memory_limit", executor.memory_limit.map(|m| m as f64))
                .number(
                    "shuffle_memory_bytes",
                    Some(executor.shuffle_memory_bytes as f64),
                )
                .number(
                    "shuffle_spilled_bytes",
                    Some(executor.shuffle_spilled_bytes as f64),
                )
                .number("last_seen_ms", Some(executor.last_seen.as_secs_f64() * 1e3))
                .boolean("draining", executor.draining)
                .finish()
        });
        let departed = self
            .engine
            .departed_executors()
            .into_iter()
            .map(|executor| {
                JsonObject::default()
                    .text("id", Some(&executor.executor_id))
                    .text("url", Some(&executor.url))
                    .text("state", Some(if executor.left { "left" } else { "lost" }))
                    .text("reason", Some(&executor.reason))
                    .number("departed_ms", Some(epoch_ms(executor.at)))
                    .finish()
            });
        array(live.chain(departed))
    }

    fn cluster_json(&self) -> String {
        let executors = self.engine.executors();
        let departed = self.engine.departed_executors();
        let minute_ago = SystemTime::now() - Duration::from_secs(60);
        JsonObject::default()
            .number("executors_alive", Some(executors.len() as f64))
            .number(
                "executors_lost",
                Some(departed.iter().filter(|e| !e.left).count() as f64),
            )
            .number(
                "slots_total",
                Some(executors.iter().map(|e| f64::from(e.slots)).sum()),
            )
            .number(
                "slots_used",
                Some(executors.iter().map(|e| e.running_tasks as f64).sum()),
            )
            .number("queries_running", Some(self.engine.active_jobs() as f64))
            .number(
                "queries_queued",
                Some(self.queries.queued_statements() as f64),
            )
            .number(
                "queries_last_minute",
                Some(self.queries.statements_since(minute_ago) as f64),
            )
            .number("now_ms", Some(epoch_ms(SystemTime::now())))
            .finish()
    }
}

fn error_json(status: u16, message: &str) -> HttpResponse {
    HttpResponse::json(
        status,
        JsonObject::default().text("error", Some(message)).finish(),
    )
}

fn epoch_ms(time: SystemTime) -> f64 {
    micros(time) as f64 / 1e3
}

fn job_json(report: &JobReport) -> String {
    JsonObject::default()
        .text("state", Some(report.state))
        .text("error", report.error.as_deref())
        .number("elapsed_ms", Some(report.elapsed.as_secs_f64() * 1e3))
        .raw("stages", &array(report.stages.iter().map(stage_json)))
        .finish()
}

fn stage_json(stage: &StageReport) -> String {
    let count = |n: usize| Some(n as f64);
    let figure = |n: u64| Some(n as f64);
    JsonObject::default()
        .number("stage_id", Some(f64::from(stage.stage_id)))
        .raw(
            "inputs",
            &array(stage.inputs.iter().map(|input| input.to_string())),
        )
        .text("state", Some(stage.state))
        .number("tasks_total", count(stage.tasks_total))
        .number("tasks_done", count(stage.tasks_done))
        .number("tasks_running", count(stage.tasks_running))
        .number("attempts_failed", count(stage.attempts_failed))
        .number("rows_in", figure(stage.rows_in))
        .number("bytes_in", figure(stage.bytes_in))
        .number("rows_out", figure(stage.rows_out))
        .number("bytes_out", figure(stage.bytes_out))
        .number("spilled_bytes", figure(stage.spilled_bytes))
        .text("operators", Some(&stage.operators))
        .raw("attempts", &array(stage.attempts.iter().map(attempt_json)))
        .finish()
}

fn attempt_json(attempt: &AttemptReport) -> String {
    let metric = |pick: fn(&quiver_core::proto::TaskMetrics) -> u64| {
        attempt.metrics.as_ref().map(|m| pick(m) as f64)
    };
    JsonObject::default()
        .number("partition", Some(f64::from(attempt.partition)))
        .number("attempt", Some(f64::from(attempt.attempt)))
        .text("executor", Some(&attempt.executor_id))
        .number("start_ms", Some(attempt.start_ms))
        .number("end_ms", attempt.end_ms)
        .text("outcome", Some(attempt.outcome))
        .text("reason", attempt.reason.as_deref())
        .number("rows", metric(|m| m.output_rows))
        .number("bytes", metric(|m| m.output_bytes))
        .number("task_ms", metric(|m| m.elapsed_micros).map(|us| us / 1e3))
        .finish()
}
