//! The job state machine: how a task's outcome, a failure or a cancel changes a job, its
//! stages and tasks, and what the engine must then send executors ([`Effects`]). Nothing
//! here holds a lock, a clock of its own or a connection: the engine applies these under
//! its lock and carries out the effects after.

use std::collections::HashMap;
use std::sync::Arc;

use quiver_core::proto::{
    FailureKind, PartitionLocation, ReleaseJobRequest, TaskDefinition, TaskStatus, task_status,
};
use quiver_core::{QuiverError, StageId, TaskAttempt};
use tracing::{debug, info, warn};

use crate::job::{AttemptEnd, Job, JobOutcome, TaskState};

/// Fetch failures one task may see before its query fails.
const MAX_FETCH_FAILURES: u32 = 8;

/// Work to do after the state lock is released.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) launches: HashMap<String, Vec<TaskDefinition>>,
    pub(crate) releases: Vec<(String, ReleaseJobRequest)>,
    /// Executors a task could not read from, with the reason.
    pub(crate) suspects: Vec<(String, String)>,
    /// Task attempts of ended jobs that executors stop: their slots are free again.
    pub(crate) stopped: Vec<(String, TaskAttempt)>,
}

pub(crate) fn apply_outcome(
    job: &mut Job,
    attempt: &TaskAttempt,
    status: &TaskStatus,
    executor_url: Option<String>,
    max_attempts: u32,
    max_query_bytes: u64,
    effects: &mut Effects,
) {
    if job.is_finished() {
        return;
    }
    // Its client may be reading this result partition: a re-run could repeat rows.
    let streamed = attempt.stage_id == job.final_stage_id()
        && matches!(*job.outcome.borrow(), JobOutcome::Readable(_));
    let Some(stage) = job.stages.get_mut(attempt.stage_id.0 as usize) else {
        return;
    };
    let Some(task) = stage.tasks.get(attempt.partition as usize) else {
        return;
    };
    let current = matches!(task, TaskState::Running { executor_id, attempt: a }
        if *executor_id == status.executor_id && *a == attempt.attempt);
    if !current {
        return;
    }
    // What is logged of this outcome names the attempt it concerns.
    let _attempt = tracing::debug_span!(
        "task",
        job = %attempt.job_id,
        stage = attempt.stage_id.0,
        partition = attempt.partition,
        attempt = attempt.attempt,
        executor = %status.executor_id,
    )
    .entered();
    let end = match &status.outcome {
        Some(task_status::Outcome::Succeeded(metrics)) if executor_url.is_some() => {
            AttemptEnd::Succeeded(metrics.clone())
        }
        Some(task_status::Outcome::Succeeded(_)) => {
            AttemptEnd::Lost(format!("executor {} was lost", status.executor_id))
        }
        Some(task_status::Outcome::Failed(failure)) => AttemptEnd::Failed(failure.message.clone()),
        None => return,
    };
    stage.end_attempt(attempt.partition, attempt.attempt, end);
    let partition = attempt.partition as usize;
    match &status.outcome {
        Some(task_status::Outcome::Succeeded(metrics)) => {
            let Some(url) = executor_url else {
                // The executor was declared lost meanwhile: its output is gone with it.
                stage.tasks.set(partition, TaskState::Pending);
                return;
            };
            stage.operator_metrics[attempt.partition as usize] = status.operators.clone();
            let succeeded = TaskState::Succeeded {
                location: PartitionLocation {
                    map_partition: attempt.partition,
                    executor_id: status.executor_id.clone(),
                    flight_url: url,
                },
                metrics: metrics.clone(),
                attempt: attempt.attempt,
            };
            stage.tasks.set(partition, succeeded);
            job.bytes_produced += metrics.output_bytes;
            if let Some(locations) = job.result_locations() {
                let (rows, bytes) = job.totals();
                info!(
                    job = %job.job_id,
                    elapsed_ms = job.submitted_at.elapsed().as_millis() as u64,
                    rows_moved = rows,
                    bytes_moved = bytes,
                    "job succeeded"
                );
                let keep = job.final_stage_id();
                job.finish(JobOutcome::Succeeded(locations));
                release_everywhere_keeping(job, Some(keep), effects);
            }
        }
        Some(task_status::Outcome::Failed(failure)) => {
            let kind = FailureKind::try_from(failure.kind).unwrap_or(FailureKind::Unspecified);
            let retryable = matches!(kind, FailureKind::Fetch | FailureKind::Io);
            // A result partition its client has taken rows of is never re-run (the rows
            // would come twice); one it has not may run again, on the same executor,
            // where its client reads it.
            let rows_sent = streamed && failure.result_rows_sent;
            if streamed && !rows_sent {
                job.result_pins
                    .insert(attempt.partition, status.executor_id.clone());
            }
            if !failure.unreachable_executor_id.is_empty() {
                effects.suspects.push((
                    failure.unreachable_executor_id.clone(),
                    failure.message.clone(),
                ));
            }
            // A failed fetch means an input was lost with its executor: the input is being
            // recomputed, and the reader runs again once it is back.
            if kind == FailureKind::Fetch
                && stage.fetch_failures[partition] < MAX_FETCH_FAILURES
                && !rows_sent
            {
                stage.fetch_failures[partition] += 1;
                debug!("input fetch failed; retrying");
                stage.tasks.set(partition, TaskState::Pending);
                return;
            }
            // Attempts lost to fetch failures do not count against the task's own budget.
            let own_attempts = stage.attempts[partition] - stage.fetch_failures[partition];
            if retryable && own_attempts < max_attempts && !rows_sent {
                debug!(?kind, "task failed; retrying");
                stage.tasks.set(partition, TaskState::Pending);
                stage.failed_on[partition] = Some(status.executor_id.clone());
                return;
            }
            if kind == FailureKind::LimitExceeded {
                let error = QuiverError::LimitExceeded {
                    what: "the bytes the query's tasks have produced",
                    actual: job.bytes_produced.saturating_add(failure.output_bytes),
                    limit: max_query_bytes,
                    setting: "--max-query-bytes",
                };
                fail_job(job, error, effects);
                return;
            }
            let attempts = stage.attempts[partition];
            let message = if rows_sent && retryable {
                format!(
                    "{} (not retried: the client was reading this result partition as it was \
                     written)",
                    failure.message
                )
            } else if retryable {
                format!("{} (gave up after {attempts} attempts)", failure.message)
            } else {
                failure.message.clone()
            };
            let error = QuiverError::TaskFailed {
                stage_id: attempt.stage_id.0,
                partition: attempt.partition,
                executor_id: status.executor_id.clone(),
                message,
            };
            fail_job(job, error, effects);
        }
        None => {}
    }
}

pub(crate) fn fail_job(job: &mut Job, error: QuiverError, effects: &mut Effects) {
    if job.is_finished() {
        return;
    }
    if matches!(error, QuiverError::Cancelled { .. }) {
        info!(job = %job.job_id, "job cancelled");
    } else {
        warn!(job = %job.job_id, %error, "job failed");
    }
    job.finish(JobOutcome::Failed(Arc::new(error)));
    stop_running(job, effects);
    release_everywhere(job, false, effects);
}

/// A job ended while some of its tasks ran: they are stopped, and no longer hold slots.
pub(crate) fn stop_running(job: &mut Job, effects: &mut Effects) {
    let running = job.running_attempts();
    for (_, attempt) in &running {
        job.stages[attempt.stage_id.0 as usize].end_attempt(
            attempt.partition,
            attempt.attempt,
            AttemptEnd::Stopped,
        );
    }
    effects.stopped.extend(running);
}

pub(crate) fn release_everywhere(job: &Job, keep_results: bool, effects: &mut Effects) {
    let keep = keep_results.then(|| job.final_stage_id());
    release_everywhere_keeping(job, keep, effects);
}

pub(crate) fn release_everywhere_keeping(job: &Job, keep: Option<StageId>, effects: &mut Effects) {
    let (failure_code, failure_message) = match &*job.outcome.borrow() {
        JobOutcome::Failed(error) => (error.status_code() as i32, error.to_string()),
        _ => (0, String::new()),
    };
    for executor_id in job.executors_involved() {
        effects.releases.push((
            executor_id,
            ReleaseJobRequest {
                job_id: job.job_id.to_string(),
                keep_results: keep.is_some(),
                result_stage_id: keep.map(|s| s.0).unwrap_or(0),
                failure_code,
                failure_message: failure_message.clone(),
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::TaskEnvironment;
    use crate::planner::tests::dag_for;
    use quiver_core::JobId;
    use quiver_core::proto::{TaskFailure, TaskMetrics};

    async fn job(sql: &str) -> Job {
        let (outcome, _) = tokio::sync::watch::channel(JobOutcome::Running);
        Job::new(
            JobId::from("j"),
            dag_for(sql).await,
            Arc::new(TaskEnvironment::default()),
            outcome,
        )
    }

    /// Starts attempt `attempt` of a task on executor `e1`, as the engine would.
    fn launch(job: &mut Job, stage: u32, partition: u32) -> TaskAttempt {
        let tasks = &mut job.stages[stage as usize];
        let attempt = tasks.attempts[partition as usize];
        tasks.attempts[partition as usize] += 1;
        tasks.tasks.set(
            partition as usize,
            TaskState::Running {
                executor_id: "e1".to_string(),
                attempt,
            },
        );
        TaskAttempt {
            job_id: job.job_id.clone(),
            stage_id: StageId(stage),
            partition,
            attempt,
        }
    }

    fn status(attempt: &TaskAttempt, outcome: task_status::Outcome) -> TaskStatus {
        TaskStatus {
            task: Some(attempt.to_proto()),
            executor_id: "e1".to_string(),
            outcome: Some(outcome),
            operators: Vec::new(),
        }
    }

    fn report(job: &mut Job, attempt: &TaskAttempt, outcome: task_status::Outcome) -> Effects {
        let mut effects = Effects::default();
        let url = Some("http://e1".to_string());
        apply_outcome(
            job,
            attempt,
            &status(attempt, outcome),
            url,
            2,
            u64::MAX,
            &mut effects,
        );
        effects
    }

    fn succeeded() -> task_status::Outcome {
        task_status::Outcome::Succeeded(TaskMetrics {
            output_rows: 1,
            output_bytes: 8,
            ..TaskMetrics::default()
        })
    }

    fn failed(kind: FailureKind) -> task_status::Outcome {
        task_status::Outcome::Failed(TaskFailure {
            message: "boom".to_string(),
            kind: kind as i32,
            ..TaskFailure::default()
        })
    }

    #[tokio::test]
    async fn every_task_succeeding_finishes_the_job_keeping_only_its_result() {
        let mut job = job("SELECT k % 3 AS g, count(*) FROM t GROUP BY k % 3").await;
        assert!(job.stages.len() >= 2, "an aggregate cuts at its exchange");
        for stage in 0..job.stages.len() as u32 {
            assert_eq!(job.runnable_stages(), [StageId(stage)]);
            for partition in 0..job.stages[stage as usize].tasks.len() as u32 {
                let attempt = launch(&mut job, stage, partition);
                // A report of an attempt that is not the current one changes nothing.
                let stale = TaskAttempt {
                    attempt: attempt.attempt + 1,
                    ..attempt.clone()
                };
                report(&mut job, &stale, succeeded());
                assert!(matches!(
                    job.stages[stage as usize].tasks[partition as usize],
                    TaskState::Running { .. }
                ));
                let effects = report(&mut job, &attempt, succeeded());
                let last = stage as usize + 1 == job.stages.len()
                    && job.stages[stage as usize].is_complete();
                assert_eq!(job.is_finished(), last);
                if last {
                    // Executors are told to drop everything but the result.
                    assert!(!effects.releases.is_empty());
                    assert!(
                        effects.releases.iter().all(|(_, r)| r.keep_results),
                        "{:?}",
                        effects.releases
                    );
                }
            }
        }
        assert!(matches!(
            *job.outcome.borrow(),
            JobOutcome::Succeeded(ref locations) if !locations.is_empty()
        ));
    }

    #[tokio::test]
    async fn an_io_failure_is_retried_within_the_budget_and_an_execution_error_fails_the_job() {
        let mut job = job("SELECT k FROM t").await;
        let first = launch(&mut job, 0, 0);
        report(&mut job, &first, failed(FailureKind::Io));
        assert!(matches!(job.stages[0].tasks[0], TaskState::Pending));
        assert_eq!(job.stages[0].failed_on[0].as_deref(), Some("e1"));
        assert!(!job.is_finished());
        let second = launch(&mut job, 0, 0);
        let effects = report(&mut job, &second, failed(FailureKind::Io));
        assert!(job.is_finished(), "two attempts were the budget");
        assert!(!effects.releases.is_empty());

        let mut job = job_with_running_sibling().await;
        let attempt = TaskAttempt {
            partition: 0,
            ..job.1.clone()
        };
        let effects = report(&mut job.0, &attempt, failed(FailureKind::Execution));
        assert!(matches!(*job.0.outcome.borrow(), JobOutcome::Failed(_)));
        // The sibling still running is stopped: its slot is free again.
        assert!(
            effects.stopped.iter().any(|(_, a)| a.partition == 1),
            "{:?}",
            effects.stopped
        );
    }

    /// A job with both partitions of its first stage running; answers partition 1's.
    async fn job_with_running_sibling() -> (Job, TaskAttempt) {
        let mut job = job("SELECT k FROM t").await;
        assert!(job.stages[0].tasks.len() >= 2);
        launch(&mut job, 0, 0);
        let sibling = launch(&mut job, 0, 1);
        (job, sibling)
    }

    #[tokio::test]
    async fn a_job_is_readable_once_every_result_task_is_accepted_and_then_never_retries_one() {
        let mut job = job("SELECT k FROM t").await;
        let last = job.stages.len() as u32 - 1;
        for stage in 0..last {
            for partition in 0..job.stages[stage as usize].tasks.len() as u32 {
                let attempt = launch(&mut job, stage, partition);
                report(&mut job, &attempt, succeeded());
            }
        }
        let width = job.stages[last as usize].tasks.len() as u32;
        let attempts: Vec<TaskAttempt> = (0..width).map(|p| launch(&mut job, last, p)).collect();
        for attempt in &attempts[..attempts.len() - 1] {
            job.accept_result_launch(attempt.partition, attempt.attempt, "http://e1");
            job.publish_if_readable();
            assert!(
                !job.outcome.borrow().is_readable(),
                "not before every result task is accepted"
            );
        }
        let final_attempt = attempts.last().unwrap();
        job.accept_result_launch(final_attempt.partition, final_attempt.attempt, "http://e1");
        job.publish_if_readable();
        match &*job.outcome.borrow() {
            JobOutcome::Readable(locations) => {
                assert_eq!(locations.len(), width as usize);
                assert!(locations.iter().all(|l| l.flight_url == "http://e1"));
            }
            other => panic!("expected a readable job, got {other:?}"),
        }
        // A retryable failure before the client took rows: the partition runs again on
        // the executor the client reads from.
        report(&mut job, &attempts[0], failed(FailureKind::Io));
        assert!(!job.is_finished());
        assert!(matches!(
            job.stages[last as usize].tasks[0],
            TaskState::Pending
        ));
        assert_eq!(job.result_pins.get(&0).map(String::as_str), Some("e1"));
        let again = launch(&mut job, last, 0);
        // Once the client has taken rows, a retryable failure fails the query, saying
        // why: a re-run would send them twice.
        let rows_sent = task_status::Outcome::Failed(TaskFailure {
            message: "boom".to_string(),
            kind: FailureKind::Io as i32,
            result_rows_sent: true,
            ..TaskFailure::default()
        });
        let effects = report(&mut job, &again, rows_sent);
        assert!(job.is_finished());
        let message = match &*job.outcome.borrow() {
            JobOutcome::Failed(error) => error.to_string(),
            other => panic!("expected a failed job, got {other:?}"),
        };
        assert!(message.contains("not retried"), "{message}");
        // The executors hear why, for the client still reading.
        assert!(!effects.releases.is_empty());
        assert!(
            effects
                .releases
                .iter()
                .all(|(_, release)| release.failure_message.contains("boom")
                    && release.failure_code != 0),
            "{:?}",
            effects.releases
        );
    }
}
