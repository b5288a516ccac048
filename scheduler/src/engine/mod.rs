//! The scheduling engine: accepts jobs, hands runnable tasks to executors with free slots,
//! follows task outcomes to job completion, and notices executors that go away.
//!
//! The job and stage state machine is `transitions`, the placement order `placement`;
//! here the engine holds them under one lock, and `starting` hands the waiting jobs'
//! tasks to free slots. Executors' membership and liveness are
//! `liveness`, the RPCs a state change calls for `dispatch`, and what the engine shows of
//! itself (progress, stage figures, executors) `views`.

mod dispatch;
mod liveness;
mod starting;
mod views;

pub use views::{ExecutorSummary, JobProgress, StageAnalysis};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quiver_core::config::SchedulerConfig;
use quiver_core::prometheus::DurationHistogram;
use quiver_core::proto::{
    ExecutorRegistration, HeartbeatRequest, HeartbeatResponse, LaunchTasksRequest, OperatorMetrics,
    TaskDefinition, TaskKey, TaskMetrics, TaskStatus, task_status,
};
use quiver_core::ticket::TicketKey;
use quiver_core::{JobId, QuiverError, StageId, TaskAttempt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::job::{AttemptRecord, Job, JobOutcome, TaskEnvironment, TaskState};
use crate::placement::fair_order;
use crate::planner::StageDag;
use crate::registry::ExecutorRegistry;
use crate::transitions::{Effects, apply_outcome, fail_job, release_everywhere, stop_running};

struct EngineState {
    jobs: HashMap<JobId, Job>,
    /// Jobs that may have a task to start (see `starting`).
    waiting: HashSet<JobId>,
    registry: ExecutorRegistry,
    /// Since when no executor has been registered (None while some are).
    empty_since: Option<Instant>,
    /// Which executor was lost last, and why.
    last_loss: Option<String>,
    /// `Attach` streams opened so far (numbers them).
    attachments: u64,
    /// The latest jobs whose results are gone, newest last, kept for the web UI.
    retired: std::collections::VecDeque<Job>,
    /// The latest executors lost or gone, newest last.
    departed: std::collections::VecDeque<DepartedExecutor>,
}

/// Executors remembered after they were lost or left.
const DEPARTED_EXECUTORS_KEPT: usize = 50;

/// An executor that is no longer part of the cluster.
#[derive(Debug, Clone)]
pub struct DepartedExecutor {
    pub executor_id: String,
    pub url: String,
    /// Whether it shut down and said so (otherwise it was lost).
    pub left: bool,
    pub reason: String,
    pub at: std::time::SystemTime,
}

/// Jobs kept for the web UI after their results are gone.
const RETIRED_JOBS_KEPT: usize = 200;

impl EngineState {
    fn new(registry: ExecutorRegistry) -> Self {
        Self {
            jobs: HashMap::new(),
            waiting: HashSet::new(),
            registry,
            empty_since: Some(Instant::now()),
            last_loss: None,
            attachments: 0,
            retired: std::collections::VecDeque::new(),
            departed: std::collections::VecDeque::new(),
        }
    }

    /// Applies a task's outcome reported by its executor; its job may have tasks to
    /// start now.
    fn record_status(
        &mut self,
        attempt: &TaskAttempt,
        status: &TaskStatus,
        config: &SchedulerConfig,
    ) -> Effects {
        let mut effects = Effects::default();
        if let Some(executor) = self.registry.get_mut(&status.executor_id) {
            executor.running.remove(attempt);
        }
        let url = self
            .registry
            .get(&status.executor_id)
            .map(|e| e.url.clone());
        self.wake(&attempt.job_id);
        if let Some(job) = self.jobs.get_mut(&attempt.job_id) {
            let limit = config.limits.max_query_bytes;
            apply_outcome(
                job,
                attempt,
                status,
                url,
                config.max_task_attempts,
                limit,
                &mut effects,
            );
            if !job.is_finished() && job.bytes_produced > limit {
                let error = QuiverError::LimitExceeded {
                    what: "the bytes the query's tasks have produced",
                    actual: job.bytes_produced,
                    limit,
                    setting: "--max-query-bytes",
                };
                fail_job(job, error, &mut effects);
            }
        }
        effects
    }

    /// Takes job `job_id` out of scheduling, keeping what the UI shows of it.
    fn retire(&mut self, job_id: &JobId) -> Option<&Job> {
        let mut job = self.jobs.remove(job_id)?;
        for stage in &mut job.stages {
            stage.encoded = None;
        }
        if self.retired.len() >= RETIRED_JOBS_KEPT {
            self.retired.pop_front();
        }
        self.retired.push_back(job);
        self.retired.back()
    }
}

pub struct Engine {
    config: SchedulerConfig,
    ticket_key: TicketKey,
    stopped: watch::Sender<bool>,
    state: Mutex<EngineState>,
    executor_count: watch::Sender<usize>,
    /// What `/metrics` counts.
    pub counters: EngineCounters,
}

/// Events the engine counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct EngineCounters {
    pub tasks_succeeded: AtomicU64,
    pub tasks_failed: AtomicU64,
    pub executors_lost: AtomicU64,
    /// How long tasks ran, on their executor.
    pub task_duration: DurationHistogram,
    /// From a job's submission to its first task's launch.
    pub scheduling_delay: DurationHistogram,
    /// Passes looking for tasks to start (one per event).
    pub scheduling_passes: AtomicU64,
    /// Jobs those passes looked at: only jobs an event concerned, or still short of a
    /// slot, not every running job.
    pub jobs_examined: AtomicU64,
}

impl Engine {
    pub fn new(config: SchedulerConfig) -> Arc<Self> {
        let registry = ExecutorRegistry::new(
            config.cluster_secret.clone(),
            config.executor_tls_ca.clone(),
        );
        // With a cluster secret the key survives scheduler restarts; without one, each
        // scheduler makes its own and hands it to executors when they register.
        let ticket_key = match config.cluster_secret.as_str() {
            Some(secret) => TicketKey::derive(secret),
            None => TicketKey::random(),
        };
        Arc::new(Self {
            config,
            ticket_key,
            stopped: watch::channel(false).0,
            state: Mutex::new(EngineState::new(registry)),
            executor_count: watch::channel(0).0,
            counters: EngineCounters::default(),
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The key that signs this cluster's shuffle and result tickets.
    pub fn ticket_key(&self) -> &TicketKey {
        &self.ticket_key
    }

    /// Starts a job; the receiver tells when it ends and where its result is.
    pub fn submit(
        self: &Arc<Self>,
        job_id: JobId,
        dag: StageDag,
        environment: Arc<TaskEnvironment>,
    ) -> watch::Receiver<JobOutcome> {
        let (outcome, receiver) = watch::channel(JobOutcome::Running);
        let job = Job::new(job_id.clone(), dag, environment, outcome);
        info!(job = %job_id, stages = job.stages.len(), "job submitted");
        {
            let mut state = self.state.lock();
            state.wake(&job_id);
            state.jobs.insert(job_id, job);
        }
        self.schedule();
        receiver
    }

    /// Waits until at least one executor is registered, or the grace period passes.
    pub async fn wait_for_executors(&self) -> Result<(), QuiverError> {
        let grace = self.config.no_executor_grace;
        let mut count = self.executor_count.subscribe();
        match tokio::time::timeout(grace, count.wait_for(|n| *n > 0)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(QuiverError::NoExecutors {
                waited_secs: grace.as_secs(),
                last_loss: self.state.lock().last_loss.clone(),
            }),
        }
    }

    /// The scheduler is stopping: open `Attach` streams end, and their closing means
    /// nothing about the executors.
    pub fn stop(&self) {
        self.stopped.send_replace(true);
    }

    /// Resolves when [`Engine::stop`] is called.
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// Ends a job that nobody waits for any more (cancelled, or its client went away):
    /// its tasks stop and its data is deleted on every executor.
    pub fn cancel(self: &Arc<Self>, job_id: &JobId) {
        let error = QuiverError::Cancelled {
            job_id: job_id.to_string(),
        };
        self.fail(job_id, error);
    }

    /// Ends a running job with `error`: its tasks stop, and clients reading its result
    /// are told `error`.
    pub fn fail(self: &Arc<Self>, job_id: &JobId, error: QuiverError) {
        let mut effects = Effects::default();
        if let Some(job) = self.state.lock().jobs.get_mut(job_id) {
            fail_job(job, error, &mut effects);
        }
        self.apply(effects);
        self.schedule();
    }

    pub fn release(self: &Arc<Self>, job_id: &JobId) {
        let mut effects = Effects::default();
        {
            let mut state = self.state.lock();
            if let Some(job) = state.jobs.get_mut(job_id) {
                let readable = match &*job.outcome.borrow() {
                    JobOutcome::Readable(locations) => Some(locations.clone()),
                    _ => None,
                };
                // Its client read what it wanted while the final tasks still ran: the
                // statement succeeded, and whatever still runs stops.
                if let Some(locations) = readable {
                    job.finish(JobOutcome::Succeeded(locations));
                    stop_running(job, &mut effects);
                }
            }
            let finished = state.jobs.get(job_id).is_some_and(Job::is_finished);
            if finished && let Some(job) = state.retire(job_id) {
                release_everywhere(job, false, &mut effects);
            }
        }
        self.apply(effects);
        self.cancel(job_id);
    }

    /// Number of jobs not yet finished.
    pub fn active_jobs(&self) -> usize {
        self.state
            .lock()
            .jobs
            .values()
            .filter(|j| !j.is_finished())
            .count()
    }

    /// The encoded plan of a running job's stage, when `plan_id` still names it: for an
    /// executor sent a task without its plan that no longer holds it.
    pub fn stage_plan(&self, job_id: &str, stage_id: u32, plan_id: u64) -> Option<bytes::Bytes> {
        let state = self.state.lock();
        state
            .jobs
            .get(&JobId::from(job_id))
            .filter(|job| !job.is_finished())?
            .stage_plan(stage_id, plan_id)
    }

    /// Applies a task's outcome reported by an executor.
    pub fn task_status(self: &Arc<Self>, status: TaskStatus) {
        let Some(key) = status.task.as_ref() else {
            return;
        };
        let attempt = TaskAttempt::from_proto(key);
        match &status.outcome {
            Some(task_status::Outcome::Succeeded(metrics)) => {
                self.counters
                    .tasks_succeeded
                    .fetch_add(1, Ordering::Relaxed);
                self.counters
                    .task_duration
                    .observe(Duration::from_micros(metrics.elapsed_micros));
            }
            Some(task_status::Outcome::Failed(_)) => {
                self.counters.tasks_failed.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        let effects = self
            .state
            .lock()
            .record_status(&attempt, &status, &self.config);
        self.apply(effects);
        self.schedule();
    }

    /// Hands runnable tasks of the jobs that wait for slots to executors with free ones.
    fn schedule(self: &Arc<Self>) {
        let effects = self
            .state
            .lock()
            .start_waiting_tasks(&self.config, &self.counters);
        self.apply(effects);
    }
}
