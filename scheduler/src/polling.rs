//! Queries submitted with `PollFlightInfo`: they run in the background while the client
//! polls for progress, and can be cancelled meanwhile.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use arrow_flight::FlightInfo;
use parking_lot::Mutex;
use quiver_core::JobId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;

/// Prefix of the descriptor a client polls with.
const POLL_PREFIX: &[u8] = b"quiver-poll:";

/// A query nobody polls for this long is cancelled.
const ABANDONED_AFTER: Duration = Duration::from_secs(300);

type Finished = Option<Result<FlightInfo, Status>>;

struct Pending {
    job_id: JobId,
    /// The session that submitted it: no other may poll or cancel it.
    session: String,
    result: watch::Receiver<Finished>,
    task: JoinHandle<()>,
    last_polled: Instant,
}

/// Where a polled query stands.
pub(crate) enum PollState {
    Running(JobId),
    Finished(Result<FlightInfo, Status>),
}

/// Queries running on behalf of polling clients, by poll token.
#[derive(Default)]
pub(crate) struct PendingQueries {
    queries: Mutex<HashMap<String, Pending>>,
}

impl PendingQueries {
    /// Starts `run` in the background; returns the token to poll it with.
    pub(crate) fn submit(
        &self,
        job_id: JobId,
        session: &str,
        run: impl Future<Output = Result<FlightInfo, Status>> + Send + 'static,
    ) -> String {
        self.cancel_abandoned();
        let (sender, result) = watch::channel(None);
        let task = tokio::spawn(async move {
            let outcome = run.await;
            sender.send_replace(Some(outcome));
        });
        let token = job_id.to_string();
        self.queries.lock().insert(
            token.clone(),
            Pending {
                job_id,
                session: session.to_string(),
                result,
                task,
                last_polled: Instant::now(),
            },
        );
        token
    }

    /// Waits up to `wait` for the query to finish. A finished query is forgotten once
    /// its result is handed out.
    /// `session`: the caller's, or `None` for an administrator, who may reach any.
    pub(crate) async fn poll(
        &self,
        token: &str,
        session: Option<&str>,
        wait: Duration,
    ) -> Option<PollState> {
        let (job_id, mut result) = {
            let mut queries = self.queries.lock();
            let pending = queries
                .get_mut(token)
                .filter(|pending| session.is_none_or(|s| pending.session == s))?;
            pending.last_polled = Instant::now();
            (pending.job_id.clone(), pending.result.clone())
        };
        let _ = tokio::time::timeout(wait, result.wait_for(Option::is_some)).await;
        let finished = result.borrow().clone();
        match finished {
            Some(outcome) => {
                self.queries.lock().remove(token);
                Some(PollState::Finished(outcome))
            }
            None => Some(PollState::Running(job_id)),
        }
    }

    /// Stops a polled query; its job is cancelled as the future waiting on it is dropped.
    pub(crate) fn cancel(&self, token: &str, session: Option<&str>) -> Option<JobId> {
        let mut queries = self.queries.lock();
        if session.is_some_and(|s| queries.get(token).is_some_and(|p| p.session != s)) {
            return None;
        }
        let pending = queries.remove(token)?;
        drop(queries);
        pending.task.abort();
        Some(pending.job_id)
    }

    fn cancel_abandoned(&self) {
        let mut queries = self.queries.lock();
        queries.retain(|_, pending| {
            let keep = pending.last_polled.elapsed() < ABANDONED_AFTER;
            if !keep {
                pending.task.abort();
            }
            keep
        });
    }
}

/// The descriptor command a client polls with.
pub(crate) fn poll_command(token: &str) -> Vec<u8> {
    [POLL_PREFIX, token.as_bytes()].concat()
}

/// The poll token in a descriptor command, if it is one.
pub(crate) fn poll_token(command: &[u8]) -> Option<&str> {
    command
        .strip_prefix(POLL_PREFIX)
        .and_then(|token| std::str::from_utf8(token).ok())
}
