//! A job as the web UI shows it: each stage's state, task counts, rows and bytes in and
//! out, every task attempt (where and when it ran, how it ended) and the stage's operator
//! tree with metrics summed over its tasks. Built on request from the engine's live state,
//! or from the finished jobs it keeps for a while after their results are gone.

use std::time::{Duration, Instant};

use quiver_core::QuiverError;
use quiver_core::proto::TaskMetrics;

use crate::job::{AttemptEnd, Job, JobOutcome, Stage, TaskState};

/// One job, as the UI shows it.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub state: &'static str,
    pub error: Option<String>,
    /// From submission to the end (or to now, while it runs).
    pub elapsed: Duration,
    pub stages: Vec<StageReport>,
}

#[derive(Debug, Clone)]
pub struct StageReport {
    pub stage_id: u32,
    /// Stages whose output it reads.
    pub inputs: Vec<u32>,
    /// `waiting`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: &'static str,
    pub tasks_total: usize,
    pub tasks_done: usize,
    pub tasks_running: usize,
    /// Attempts that failed or were lost with their executor.
    pub attempts_failed: usize,
    pub rows_in: u64,
    pub bytes_in: u64,
    pub rows_out: u64,
    pub bytes_out: u64,
    pub spilled_bytes: u64,
    /// The stage's plan, one operator a line, with metrics summed over its tasks.
    pub operators: String,
    pub attempts: Vec<AttemptReport>,
}

#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub partition: u32,
    pub attempt: u32,
    pub executor_id: String,
    /// Milliseconds after the job's submission.
    pub start_ms: f64,
    pub end_ms: Option<f64>,
    /// `running`, `succeeded`, `failed`, `lost` or `stopped`.
    pub outcome: &'static str,
    /// Why it failed, was lost or stopped.
    pub reason: Option<String>,
    /// What a succeeded attempt produced.
    pub metrics: Option<TaskMetrics>,
}

/// The report of `job` now.
pub(crate) fn report(job: &Job) -> JobReport {
    let (state, error) = match &*job.outcome.borrow() {
        JobOutcome::Running | JobOutcome::Readable(_) => ("running", None),
        JobOutcome::Succeeded(_) => ("succeeded", None),
        JobOutcome::Failed(error) => match error.as_ref() {
            QuiverError::Cancelled { .. } => ("cancelled", Some(error.to_string())),
            _ => ("failed", Some(error.to_string())),
        },
    };
    let since = |at: Instant| at.saturating_duration_since(job.submitted_at).as_secs_f64() * 1e3;
    let outputs: Vec<(u64, u64)> = job.stages.iter().map(stage_output).collect();
    let stages = job
        .stages
        .iter()
        .zip(&outputs)
        .map(|(stage, &(rows_out, bytes_out))| {
            let (rows_in, bytes_in) = stage
                .plan
                .inputs
                .iter()
                .filter_map(|input| outputs.get(input.0 as usize))
                .fold((0, 0), |(r, b), (rows, bytes)| (r + rows, b + bytes));
            let tasks_done = count(stage, |t| matches!(t, TaskState::Succeeded { .. }));
            let tasks_running = count(stage, |t| matches!(t, TaskState::Running { .. }));
            let attempts: Vec<AttemptReport> = stage
                .attempt_log
                .iter()
                .map(|record| {
                    let (end_ms, outcome, reason, metrics) = match &record.ended {
                        None => (None, "running", None, None),
                        Some((at, end)) => {
                            let (reason, metrics) = match end {
                                AttemptEnd::Succeeded(metrics) => (None, Some(metrics.clone())),
                                AttemptEnd::Failed(why) | AttemptEnd::Lost(why) => {
                                    (Some(why.clone()), None)
                                }
                                AttemptEnd::Stopped => {
                                    (Some("its query ended first".to_string()), None)
                                }
                            };
                            (Some(since(*at)), end.name(), reason, metrics)
                        }
                    };
                    AttemptReport {
                        partition: record.partition,
                        attempt: record.attempt,
                        executor_id: record.executor_id.clone(),
                        start_ms: since(record.started),
                        end_ms,
                        outcome,
                        reason,
                        metrics,
                    }
                })
                .collect();
            let attempts_failed = attempts
                .iter()
                .filter(|a| matches!(a.outcome, "failed" | "lost"))
                .count();
            let stage_state = if stage.is_complete() {
                "succeeded"
            } else if matches!(state, "failed" | "cancelled") {
                state
            } else if tasks_running > 0 || !attempts.is_empty() {
                "running"
            } else {
                "waiting"
            };
            StageReport {
                stage_id: stage.plan.stage_id.0,
                inputs: stage.plan.inputs.iter().map(|s| s.0).collect(),
                state: stage_state,
                tasks_total: stage.tasks.len(),
                tasks_done,
                tasks_running,
                attempts_failed,
                rows_in,
                bytes_in,
                rows_out,
                bytes_out,
                spilled_bytes: stage
                    .tasks
                    .iter()
                    .filter_map(succeeded_metrics)
                    .map(|m| m.spilled_bytes)
                    .sum(),
                operators: crate::explain_analyze::operator_tree(
                    &stage.plan.plan,
                    &crate::explain_analyze::summed_operators(&stage.operator_metrics),
                ),
                attempts,
            }
        })
        .collect();
    JobReport {
        state,
        error,
        elapsed: job
            .finished_at
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(job.submitted_at),
        stages,
    }
}

fn succeeded_metrics(task: &TaskState) -> Option<&TaskMetrics> {
    match task {
        TaskState::Succeeded { metrics, .. } => Some(metrics),
        _ => None,
    }
}

fn stage_output(stage: &Stage) -> (u64, u64) {
    stage
        .tasks
        .iter()
        .filter_map(succeeded_metrics)
        .fold((0, 0), |(r, b), m| (r + m.output_rows, b + m.output_bytes))
}

fn count(stage: &Stage, which: impl Fn(&TaskState) -> bool) -> usize {
    stage.tasks.iter().filter(|t| which(t)).count()
}
