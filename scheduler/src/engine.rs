//! The scheduling engine: accepts jobs, hands runnable tasks to executors with free slots,
//! follows task outcomes to job completion, and notices executors that go away.

use std::collections::HashMap;
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
use crate::transitions::{Effects, apply_outcome, fail_job, release_everywhere};

/// How far a job has come, for progress displays.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JobProgress {
    pub stages_total: usize,
    pub stages_done: usize,
    pub tasks_total: usize,
    pub tasks_done: usize,
    pub tasks_running: usize,
    /// Rows and bytes written by finished tasks.
    pub rows: u64,
    pub bytes: u64,
    pub finished: bool,
}

impl JobProgress {
    /// Finished tasks over all tasks, 0..=1.
    pub fn fraction(&self) -> f64 {
        if self.finished {
            1.0
        } else if self.tasks_total == 0 {
            0.0
        } else {
            self.tasks_done as f64 / self.tasks_total as f64
        }
    }
}

/// What one stage of a finished job did.
#[derive(Debug, Clone)]
pub struct StageAnalysis {
    pub stage_id: StageId,
    pub plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    /// Stages whose output it read.
    pub inputs: Vec<StageId>,
    /// The figures of each task's counted attempt.
    pub tasks: Vec<TaskMetrics>,
    /// Each operator's metrics summed over the stage's tasks, in pre-order.
    pub operators: Vec<OperatorMetrics>,
    /// What adaptive execution changed in the stage, and why.
    pub adaptive_decision: Option<String>,
}

/// A snapshot of one executor, for `\cluster`-style listings.
#[derive(Debug, Clone)]
pub struct ExecutorSummary {
    pub executor_id: String,
    pub url: String,
    pub slots: u32,
    /// Tasks this scheduler has handed it that have not ended.
    pub running_tasks: usize,
    /// Tasks it said it was running at its last heartbeat: also those nobody tracks any
    /// more (until the heartbeat that stops them).
    pub reported_tasks: u32,
    /// Memory running tasks may reserve (`None`: unlimited), and what they hold now.
    pub memory_limit: Option<u64>,
    pub memory_reserved: u64,
    pub shuffle_memory_bytes: u64,
    pub shuffle_spilled_bytes: u64,
    pub draining: bool,
    /// Time since the executor last spoke.
    pub last_seen: Duration,
}

struct EngineState {
    jobs: HashMap<JobId, Job>,
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
            state: Mutex::new(EngineState {
                jobs: HashMap::new(),
                registry,
                empty_since: Some(Instant::now()),
                last_loss: None,
                attachments: 0,
                retired: std::collections::VecDeque::new(),
                departed: std::collections::VecDeque::new(),
            }),
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
        self.state.lock().jobs.insert(job_id, job);
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

    pub fn register_executor(
        self: &Arc<Self>,
        registration: ExecutorRegistration,
    ) -> Result<(), QuiverError> {
        let executor_id = registration.executor_id.clone();
        let count = {
            let mut state = self.state.lock();
            if state.registry.register(registration)? {
                info!(executor = %executor_id, "executor registered");
            }
            state.empty_since = None;
            state.registry.len()
        };
        self.executor_count.send_replace(count);
        self.schedule();
        Ok(())
    }

    /// An executor opened its `Attach` stream; returns the attachment's number, or `None`
    /// when the executor is not registered.
    pub fn attach(&self, executor_id: &str) -> Option<u64> {
        let mut state = self.state.lock();
        state.attachments += 1;
        let number = state.attachments;
        let entry = state.registry.get_mut(executor_id)?;
        entry.attachment = number;
        Some(number)
    }

    /// An executor's `Attach` stream closed: unless a newer one replaced it, the executor
    /// is gone (its process died or its connection broke), and is declared lost now.
    pub fn detached(self: &Arc<Self>, executor_id: &str, attachment: u64) {
        if *self.stopped.borrow() {
            return;
        }
        let current = self
            .state
            .lock()
            .registry
            .get(executor_id)
            .is_some_and(|entry| entry.attachment == attachment);
        if current {
            self.executor_lost(executor_id, Some("its connection closed".to_string()));
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

    /// An executor announced its shutdown: no new tasks go there.
    pub fn drain_executor(&self, executor_id: &str) {
        if let Some(entry) = self.state.lock().registry.get_mut(executor_id) {
            info!(executor = %executor_id, "executor draining");
            entry.draining = true;
        }
    }

    /// Records a heartbeat. Answers whether the executor must register again (the
    /// scheduler does not know it), which of the jobs it holds data for have ended here,
    /// and which of its running attempts nobody expects: a release or a stop it missed
    /// (it was away, the message was lost, or this scheduler restarted) would otherwise
    /// leave that data, or that computation, behind for good.
    pub fn heartbeat(&self, beat: &HeartbeatRequest) -> HeartbeatResponse {
        let mut state = self.state.lock();
        let known = state.registry.heartbeat(beat);
        let expected = state.registry.get(&beat.executor_id).map(|e| &e.running);
        let stray_tasks: Vec<TaskKey> = beat
            .running
            .iter()
            .filter(|key| {
                expected.is_none_or(|running| !running.contains(&TaskAttempt::from_proto(key)))
            })
            .cloned()
            .collect();
        if !stray_tasks.is_empty() {
            info!(executor = %beat.executor_id, tasks = stray_tasks.len(), "stopping tasks nobody waits for");
        }
        let ended = beat
            .held_jobs
            .iter()
            .filter(|job| !state.jobs.contains_key(&JobId::from(job.as_str())))
            .cloned()
            .collect::<Vec<_>>();
        if !ended.is_empty() {
            debug!(executor = %beat.executor_id, jobs = ended.len(), "executor holds data of ended jobs");
        }
        HeartbeatResponse {
            reregister: !known,
            release_jobs: ended,
            stray_tasks,
        }
    }

    pub fn executors(&self) -> Vec<ExecutorSummary> {
        self.state
            .lock()
            .registry
            .iter()
            .map(|e| ExecutorSummary {
                executor_id: e.registration.executor_id.clone(),
                url: e.url.clone(),
                slots: e.registration.slots,
                running_tasks: e.running.len(),
                memory_limit: Some(e.registration.memory_limit).filter(|m| *m > 0),
                reported_tasks: e.reported_tasks,
                memory_reserved: e.memory_reserved,
                shuffle_memory_bytes: e.shuffle_memory_bytes,
                shuffle_spilled_bytes: e.shuffle_spilled_bytes,
                draining: e.draining,
                last_seen: e.last_seen.elapsed(),
            })
            .collect()
    }

    /// Task slots of the registered executors that are not draining.
    pub fn live_slots(&self) -> usize {
        self.state
            .lock()
            .registry
            .iter()
            .filter(|e| !e.draining)
            .map(|e| e.registration.slots as usize)
            .sum()
    }

    /// Executors lost or gone lately, newest first.
    pub fn departed_executors(&self) -> Vec<DepartedExecutor> {
        self.state.lock().departed.iter().rev().cloned().collect()
    }

    /// Ends a job that nobody waits for any more (cancelled, or its client went away):
    /// its tasks stop and its data is deleted on every executor.
    pub fn cancel(self: &Arc<Self>, job_id: &JobId) {
        let mut effects = Effects::default();
        if let Some(job) = self.state.lock().jobs.get_mut(job_id) {
            let error = QuiverError::Cancelled {
                job_id: job_id.to_string(),
            };
            fail_job(job, error, &mut effects);
        }
        self.apply(effects);
        self.schedule();
    }

    /// Where job `job_id` stands; `None` when the scheduler does not know it (not yet
    /// planned, or its results were released).
    pub fn progress(&self, job_id: &JobId) -> Option<JobProgress> {
        let state = self.state.lock();
        let job = state.jobs.get(job_id)?;
        let (rows, bytes) = job.totals();
        let mut progress = JobProgress {
            stages_total: job.stages.len(),
            rows,
            bytes,
            finished: job.is_finished(),
            ..JobProgress::default()
        };
        for stage in &job.stages {
            progress.stages_done += usize::from(stage.is_complete());
            progress.tasks_total += stage.tasks.len();
            for task in &stage.tasks {
                match task {
                    TaskState::Succeeded { .. } => progress.tasks_done += 1,
                    TaskState::Running { .. } => progress.tasks_running += 1,
                    TaskState::Pending => {}
                }
            }
        }
        Some(progress)
    }

    /// What each stage of job `job_id` did, for `EXPLAIN ANALYZE`: its plan, its tasks'
    /// figures and its operators' metrics summed over its tasks. `None` once released.
    pub fn analysis(&self, job_id: &JobId) -> Option<Vec<StageAnalysis>> {
        let state = self.state.lock();
        let job = state.jobs.get(job_id)?;
        let stages = job
            .stages
            .iter()
            .map(|stage| {
                let tasks = stage
                    .tasks
                    .iter()
                    .filter_map(|task| match task {
                        TaskState::Succeeded { metrics, .. } => Some(metrics.clone()),
                        _ => None,
                    })
                    .collect();
                let operators = crate::explain_analyze::summed_operators(&stage.operator_metrics);
                StageAnalysis {
                    stage_id: stage.plan.stage_id,
                    plan: Arc::clone(&stage.plan.plan),
                    inputs: stage.plan.inputs.clone(),
                    tasks,
                    operators,
                    adaptive_decision: stage.adaptive_decision.clone(),
                }
            })
            .collect();
        Some(stages)
    }

    /// Job `job_id` as the web UI shows it: while it runs, and for a while after its
    /// results are gone.
    pub fn report(&self, job_id: &JobId) -> Option<crate::job_report::JobReport> {
        let state = self.state.lock();
        let job = state
            .jobs
            .get(job_id)
            .or_else(|| state.retired.iter().rev().find(|job| job.job_id == *job_id))?;
        Some(crate::job_report::report(job))
    }

    /// For a succeeded job's final stage: the attempt whose output counts, per partition,
    /// and the rows those attempts wrote to files. `None` while it runs or once released.
    pub fn final_attempts(&self, job_id: &JobId) -> Option<(Vec<u32>, u64)> {
        let state = self.state.lock();
        let job = state.jobs.get(job_id)?;
        let stage = job.stages.last()?;
        let mut attempts = Vec::with_capacity(stage.tasks.len());
        let mut rows_written = 0;
        for task in &stage.tasks {
            let TaskState::Succeeded {
                attempt, metrics, ..
            } = task
            else {
                return None;
            };
            attempts.push(*attempt);
            rows_written += metrics.rows_written;
        }
        Some((attempts, rows_written))
    }

    /// Drops a finished job's results now (the client will not read them), or cancels it
    /// if it is still running.
    /// Who job `job_id` runs for, while the engine knows the job.
    pub fn owner_of(&self, job_id: &JobId) -> Option<crate::job::JobOwner> {
        let state = self.state.lock();
        Some(state.jobs.get(job_id)?.environment.owner.clone())
    }

    pub fn release(self: &Arc<Self>, job_id: &JobId) {
        let mut effects = Effects::default();
        {
            let mut state = self.state.lock();
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
        let mut effects = Effects::default();
        {
            let mut state = self.state.lock();
            if let Some(executor) = state.registry.get_mut(&status.executor_id) {
                executor.running.remove(&attempt);
            }
            let url = state
                .registry
                .get(&status.executor_id)
                .map(|e| e.url.clone());
            if let Some(job) = state.jobs.get_mut(&attempt.job_id) {
                apply_outcome(
                    job,
                    &attempt,
                    &status,
                    url,
                    self.config.max_task_attempts,
                    self.config.limits.max_query_bytes,
                    &mut effects,
                );
                let limit = self.config.limits.max_query_bytes;
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
        }
        self.apply(effects);
        self.schedule();
    }

    /// Hands runnable tasks to executors with free slots.
    fn schedule(self: &Arc<Self>) {
        let mut effects = Effects::default();
        {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let max_query_bytes = self.config.limits.max_query_bytes;
            let job_ids = fair_order(state.jobs.values().filter(|j| !j.is_finished()));
            // Slots go round-robin between the users (sessions, without logins) with
            // waiting work, each user's jobs in the order they came: one user's twenty
            // queries do not hold back another's one. Once slots run out, later jobs'
            // light stages (which need none) still start.
            let mut slots_left = true;
            'jobs: for job_id in job_ids {
                let Some(job) = state.jobs.get_mut(&job_id) else {
                    continue;
                };
                for stage_id in job.runnable_stages() {
                    if !slots_left && !job.stages[stage_id.0 as usize].light {
                        continue;
                    }
                    match job
                        .refit_stage(stage_id)
                        .and_then(|()| job.encode_stage(stage_id))
                    {
                        Ok(()) => {}
                        Err(error) => {
                            fail_job(
                                job,
                                QuiverError::Internal(format!(
                                    "cannot encode stage {stage_id} for executors: {error}"
                                )),
                                &mut effects,
                            );
                            continue 'jobs;
                        }
                    };
                    let stage = &mut job.stages[stage_id.0 as usize];
                    let Some(shipped) = stage.encoded.as_mut() else {
                        continue; // encoded just above
                    };
                    for (partition, task) in stage.tasks.iter_mut().enumerate() {
                        if !matches!(task, TaskState::Pending) {
                            continue;
                        }
                        let avoid = stage.failed_on[partition].as_deref();
                        let picked = if stage.light {
                            state.registry.pick_least_busy(avoid)
                        } else {
                            state.registry.pick_free(avoid)
                        };
                        let Some(executor_id) = picked else {
                            if stage.light {
                                break 'jobs; // no executor at all
                            }
                            slots_left = false;
                            break;
                        };
                        let attempt = TaskAttempt {
                            job_id: job_id.clone(),
                            stage_id,
                            partition: partition as u32,
                            attempt: stage.attempts[partition],
                        };
                        stage.attempts[partition] += 1;
                        stage.touched.insert(executor_id.clone());
                        if let Some(entry) = state.registry.get_mut(&executor_id) {
                            entry.running.insert(attempt.clone());
                        }
                        *task = TaskState::Running {
                            executor_id: executor_id.clone(),
                            attempt: attempt.attempt,
                        };
                        stage.attempt_log.push(AttemptRecord {
                            partition: attempt.partition,
                            attempt: attempt.attempt,
                            executor_id: executor_id.clone(),
                            started: Instant::now(),
                            ended: None,
                        });
                        if !job.launched {
                            job.launched = true;
                            self.counters
                                .scheduling_delay
                                .observe(job.submitted_at.elapsed());
                        }
                        let plan = shipped.bytes_for(&executor_id);
                        let plan_id = shipped.id;
                        effects
                            .launches
                            .entry(executor_id)
                            .or_default()
                            .push(TaskDefinition {
                                task: Some(attempt.to_proto()),
                                plan,
                                plan_id,
                                session_config: job.environment.settings.clone(),
                                light: stage.light,
                                stores: job.environment.stores.clone(),
                                // At least one byte: zero would mean no limit.
                                max_output_bytes: max_query_bytes
                                    .saturating_sub(job.bytes_produced)
                                    .max(1),
                                max_job_memory_bytes: job.environment.max_memory_bytes,
                                user: job.environment.owner.user.clone().unwrap_or_default(),
                            });
                    }
                }
            }
        }
        self.apply(effects);
    }

    /// Sends launches and releases; an executor that cannot be reached is declared lost.
    fn apply(self: &Arc<Self>, effects: Effects) {
        if !effects.stopped.is_empty() {
            let mut state = self.state.lock();
            for (executor_id, attempt) in &effects.stopped {
                if let Some(entry) = state.registry.get_mut(executor_id) {
                    entry.running.remove(attempt);
                }
            }
        }
        for (executor_id, reason) in effects.suspects {
            self.executor_lost(&executor_id, Some(reason));
        }
        for (executor_id, tasks) in effects.launches {
            let Some(mut client) = self
                .state
                .lock()
                .registry
                .get(&executor_id)
                .map(|e| e.client.clone())
            else {
                continue;
            };
            let engine = Arc::clone(self);
            tokio::spawn(async move {
                debug!(executor = %executor_id, tasks = tasks.len(), "launching tasks");
                if let Err(status) = client.launch_tasks(LaunchTasksRequest { tasks }).await {
                    let reason = format!("launching tasks failed: {}", status.message());
                    engine.executor_lost(&executor_id, Some(reason));
                }
            });
        }
        for (executor_id, request) in effects.releases {
            let client = self
                .state
                .lock()
                .registry
                .get(&executor_id)
                .map(|e| e.client.clone());
            if let Some(mut client) = client {
                tokio::spawn(async move {
                    if let Err(status) = client.release_job(request).await {
                        debug!(executor = %executor_id, %status, "release failed");
                    }
                });
            }
        }
    }

    /// Forgets an executor: what it ran or held is scheduled again elsewhere. Queries fail
    /// only if no executor is left for the grace period (see housekeeping).
    pub fn executor_lost(self: &Arc<Self>, executor_id: &str, reason: Option<String>) {
        self.counters.executors_lost.fetch_add(1, Ordering::Relaxed);
        self.forget_executor(executor_id, reason, false);
    }

    /// An executor that shut down gracefully and said so: forgotten like a lost one, but
    /// nothing went wrong.
    pub fn executor_left(self: &Arc<Self>, executor_id: &str) {
        self.forget_executor(executor_id, Some("it shut down".to_string()), true);
    }

    fn forget_executor(self: &Arc<Self>, executor_id: &str, reason: Option<String>, left: bool) {
        let count = {
            let mut state = self.state.lock();
            let Some(entry) = state.registry.remove(executor_id) else {
                return;
            };
            if left {
                info!(executor = %executor_id, "executor left the cluster");
            } else {
                warn!(executor = %executor_id, reason = ?reason, "executor lost");
            }
            let reason = reason.unwrap_or_else(|| "it stopped heartbeating".to_string());
            state.last_loss = Some(format!("{executor_id} at {}: {reason}", entry.url));
            if state.departed.len() >= DEPARTED_EXECUTORS_KEPT {
                state.departed.pop_front();
            }
            state.departed.push_back(DepartedExecutor {
                executor_id: executor_id.to_string(),
                url: entry.url.clone(),
                left,
                reason,
                at: std::time::SystemTime::now(),
            });
            for job in state.jobs.values_mut() {
                if !job.is_finished() {
                    let rerun = job.forget_executor(executor_id);
                    if rerun > 0 {
                        info!(job = %job.job_id, tasks = rerun, "re-running tasks of a lost executor");
                    }
                }
            }
            if state.registry.is_empty() {
                state.empty_since = Some(Instant::now());
            }
            state.registry.len()
        };
        self.executor_count.send_replace(count);
        self.schedule();
    }

    /// Periodic upkeep: expires silent executors, fails jobs left without executors,
    /// and drops finished jobs' results after the retention time.
    pub fn spawn_housekeeping(self: &Arc<Self>) -> JoinHandle<()> {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let period = (engine.config.heartbeat_interval / 4)
                .clamp(Duration::from_millis(20), Duration::from_millis(250));
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                engine.housekeeping();
            }
        })
    }

    fn housekeeping(self: &Arc<Self>) {
        let expired = self
            .state
            .lock()
            .registry
            .expired(self.config.executor_timeout);
        for executor_id in expired {
            self.executor_lost(&executor_id, None);
        }
        let mut effects = Effects::default();
        {
            let mut state = self.state.lock();
            let starved = state
                .empty_since
                .is_some_and(|since| since.elapsed() >= self.config.no_executor_grace);
            let retention = self.config.result_retention;
            let mut expired_jobs = Vec::new();
            let last_loss = state.last_loss.clone();
            for job in state.jobs.values_mut() {
                if starved && !job.is_finished() {
                    let error = QuiverError::NoExecutors {
                        waited_secs: self.config.no_executor_grace.as_secs(),
                        last_loss: last_loss.clone(),
                    };
                    fail_job(job, error, &mut effects);
                }
                if job.finished_at.is_some_and(|at| at.elapsed() >= retention) {
                    expired_jobs.push(job.job_id.clone());
                }
            }
            for job_id in expired_jobs {
                if let Some(job) = state.retire(&job_id) {
                    release_everywhere(job, false, &mut effects);
                }
            }
        }
        self.apply(effects);
    }
}
