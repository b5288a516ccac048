//! What the engine shows of itself: jobs' progress and stage figures, executors.

use super::*;

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

impl Engine {
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
}
