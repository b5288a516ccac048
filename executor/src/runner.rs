//! Runs tasks: decodes a stage plan, executes one partition, reports the outcome.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::common::config::ConfigOptions;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionState;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::common::collect;
use datafusion::prelude::SessionConfig;
use futures::FutureExt;
use parking_lot::Mutex;
use quiver_core::QuiverError;
use quiver_core::TaskAttempt;
use quiver_core::codec::decode_plan;
use quiver_core::config::FaultInjection;
use quiver_core::error::panic_message;
use quiver_core::exchange::{MapOutputKey, ShuffleContext};
use quiver_core::proto::scheduler_control_client::SchedulerControlClient;
use quiver_core::proto::{
    FailureKind, OperatorMetrics, StagePlanRequest, TaskDefinition, TaskFailure, TaskKey,
    TaskMetrics, TaskStatus, task_status,
};
use quiver_core::security::ControlChannel;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tracing::{Instrument, debug, info_span, warn};

use crate::cancel::{CancelFlag, make_cancellable};
use crate::file_blame::{failing_file, is_data_error};
use crate::job_memory::JobMemoryPools;
use crate::join_filters::complete_join_filters_in_task;
use crate::stage_plans::StagePlans;
use crate::store::ShuffleStore;
use crate::task_metrics::operator_metrics;
use quiver_core::exchange::TaskOutputLimit;
use quiver_core::storage::{StorageOptions, StoreRegistry};
use quiver_core::threads::DedicatedThreads;
use quiver_core::write::{TaskAttemptNumber, rows_written_in};

/// What stops one running task: its flag (seen inside long operator loops) and its
/// tokio task (dropped at its next yield).
pub(crate) struct InFlightTask {
    cancel: CancelFlag,
    abort: AbortHandle,
}

/// Runs this executor's tasks, at most `slots` at once.
pub(crate) struct TaskRunner {
    pub(crate) executor_id: String,
    pub(crate) shuffle: ShuffleContext,
    pub(crate) base_state: SessionState,
    /// The object stores of `base_state`'s runtime; tasks bring their tables' options.
    pub(crate) stores: Arc<StoreRegistry>,
    /// Where results are kept; a streamed result's tap opens there at launch.
    pub(crate) store: Arc<ShuffleStore>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) running: AtomicUsize,
    pub(crate) scheduler: SchedulerControlClient<ControlChannel>,
    pub(crate) faults: FaultInjection,
    /// Where tasks compute: not on the runtime that serves control requests.
    pub(crate) threads: DedicatedThreads,
    /// The control plane's runtime, which carries task reports to the scheduler.
    pub(crate) control: tokio::runtime::Handle,
    /// Tasks in flight, so a cancelled job's tasks can be stopped.
    pub(crate) in_flight: Mutex<HashMap<TaskAttempt, InFlightTask>>,
    /// The memory caps of jobs whose queries have one.
    pub(crate) job_memory: JobMemoryPools,
    /// Stage plans decoded here, copied by each of their tasks.
    pub(crate) stage_plans: StagePlans,
    /// The last task settings seen, parsed: a job's tasks bring the same ones, and
    /// parsing visits every DataFusion option.
    pub(crate) parsed_settings: Mutex<Option<(HashMap<String, String>, ConfigOptions)>>,
    /// Tasks ended, by outcome, and how long the successful ones ran: for `/metrics`.
    pub(crate) tasks_succeeded: std::sync::atomic::AtomicU64,
    pub(crate) tasks_failed: std::sync::atomic::AtomicU64,
    pub(crate) task_duration: quiver_core::prometheus::DurationHistogram,
}

impl TaskRunner {
    pub(crate) fn running_tasks(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Stops every task of `job_id` on this executor; they report nothing.
    pub(crate) fn abort_job(&self, job_id: &str) -> usize {
        self.abort_where(|attempt| attempt.job_id.as_str() == job_id)
    }

    /// Stops these attempts, if they still run.
    pub(crate) fn abort_attempts(&self, attempts: &[TaskAttempt]) -> usize {
        self.abort_where(|attempt| attempts.contains(attempt))
    }

    /// The attempts running (or waiting for a slot) here.
    pub(crate) fn running_attempts(&self) -> Vec<TaskKey> {
        self.in_flight
            .lock()
            .keys()
            .map(TaskAttempt::to_proto)
            .collect()
    }

    /// Stops every task (the executor is going away).
    pub(crate) fn abort_all(&self) -> usize {
        self.abort_where(|_| true)
    }

    fn abort_where(&self, doomed: impl Fn(&TaskAttempt) -> bool) -> usize {
        let mut in_flight = self.in_flight.lock();
        let doomed: Vec<TaskAttempt> = in_flight
            .keys()
            .filter(|attempt| doomed(attempt))
            .cloned()
            .collect();
        for attempt in &doomed {
            if let Some(task) = in_flight.remove(attempt) {
                task.cancel.cancel();
                task.abort.abort();
            }
        }
        doomed.len()
    }

    /// Starts a task in the background; its outcome goes to the scheduler.
    pub(crate) fn launch(self: &Arc<Self>, definition: TaskDefinition) {
        let runner = Arc::clone(self);
        let Some(key) = definition.task.clone() else {
            warn!("task definition without a task key ignored");
            return;
        };
        let attempt = TaskAttempt::from_proto(&key);
        let span = info_span!(
            "task",
            user = if definition.user.is_empty() { "-" } else { definition.user.as_str() },
            job = %attempt.job_id,
            stage = attempt.stage_id.0,
            partition = attempt.partition,
            attempt = attempt.attempt
        );
        let tracked = attempt.clone();
        // Opened before the launch is answered: the client may ask for the partition as
        // soon as the scheduler knows the task is here. Closed when the task ends.
        let result_tap = definition.stream_result.then(|| {
            self.store.expect_result(MapOutputKey {
                job_id: attempt.job_id.to_string(),
                stage_id: attempt.stage_id.0,
                map_partition: attempt.partition,
            })
        });
        let cancel = CancelFlag::new(attempt.job_id.as_str());
        let task_cancel = cancel.clone();
        // Registered under the lock before the task can finish and deregister itself.
        let mut in_flight = self.in_flight.lock();
        let light = definition.light;
        let task = async move {
            // A light task (in-memory data only, done at once) takes no slot.
            let _permit = match definition.light {
                true => None,
                false => Some(runner.slots.acquire().await),
            };
            let _running = RunningGuard::enter(&runner.running);
            let started = Instant::now();
            // A panic inside an operator must still end as a reported failure, or
            // the query would wait for this task forever.
            let outcome = AssertUnwindSafe(runner.run(&attempt, &definition, &task_cancel))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    Err(failure(
                        FailureKind::Execution,
                        format!("task panicked: {}", panic_message(panic.as_ref())),
                    ))
                });
            drop(_running);
            let outcome = match (&result_tap, outcome) {
                (Some(tap), Err(mut failure)) => {
                    failure.result_rows_sent = tap.rows_sent();
                    tap.fail(&failure);
                    Err(failure)
                }
                (_, outcome) => outcome,
            };
            drop(result_tap);
            runner.in_flight.lock().remove(&attempt);
            let mut operators = Vec::new();
            let outcome = match outcome {
                Ok((mut metrics, collected)) => {
                    metrics.elapsed_micros = started.elapsed().as_micros() as u64;
                    runner.tasks_succeeded.fetch_add(1, Ordering::Relaxed);
                    runner.task_duration.observe(started.elapsed());
                    debug!(rows = metrics.output_rows, "task succeeded");
                    operators = collected;
                    task_status::Outcome::Succeeded(metrics)
                }
                Err(failure) => {
                    runner.tasks_failed.fetch_add(1, Ordering::Relaxed);
                    // Its stage's decoded plan may hold what failed (a build side).
                    runner
                        .stage_plans
                        .forget_stage(attempt.job_id.as_str(), attempt.stage_id.0);
                    debug!(error = %failure.message, "task failed");
                    task_status::Outcome::Failed(failure)
                }
            };
            let status = TaskStatus {
                task: Some(key),
                executor_id: runner.executor_id.clone(),
                outcome: Some(outcome),
                operators,
            };
            let reporter = Arc::clone(&runner);
            runner
                .control
                .spawn(async move { reporter.report(status).await }.in_current_span());
        }
        .instrument(span);
        // A light task runs beside the control plane, so it answers even while every
        // task thread is busy.
        let handle = match light {
            true => self.control.spawn(task),
            false => self.threads.spawn(task),
        };
        in_flight.insert(
            tracked,
            InFlightTask {
                cancel,
                abort: handle.abort_handle(),
            },
        );
    }

    async fn run(
        &self,
        attempt: &TaskAttempt,
        definition: &TaskDefinition,
        cancel: &CancelFlag,
    ) -> Result<(TaskMetrics, Vec<OperatorMetrics>), TaskFailure> {
        if self
            .faults
            .should_fail_task(attempt.stage_id.0, attempt.partition, attempt.attempt)
        {
            return Err(failure(
                FailureKind::Io,
                "injected fault: task failed (test hook)",
            ));
        }
        if self
            .faults
            .should_stall_task(attempt.stage_id.0, attempt.partition, attempt.attempt)
        {
            std::future::pending::<()>().await;
        }
        for store in &definition.stores {
            let options = StorageOptions::new(store.options.clone().into_iter().collect());
            let location = url::Url::parse(&store.location).map_err(|e| {
                failure(
                    FailureKind::PlanDecode,
                    format!("bad store location '{}': {e}", store.location),
                )
            })?;
            self.stores
                .configure(&location, &options)
                .map_err(|e| failure(FailureKind::PlanDecode, e))?;
        }
        let context = self
            .task_context(attempt, definition)
            .map_err(|e| failure(FailureKind::PlanDecode, e))?;
        let decode =
            |bytes: &[u8]| decode_plan(bytes, &context).and_then(complete_join_filters_in_task);
        let decoding_failed = |e: DataFusionError| {
            failure(
                FailureKind::PlanDecode,
                DataFusionError::Context("decoding the task's plan".to_string(), Box::new(e)),
            )
        };
        let (job_id, stage_id) = (attempt.job_id.as_str(), attempt.stage_id.0);
        let held = self
            .stage_plans
            .plan_for(
                job_id,
                stage_id,
                definition.plan_id,
                &definition.plan,
                decode,
            )
            .map_err(decoding_failed)?;
        let (plan, _lease) = match held {
            Some(held) => held,
            // Sent without its plan, which this executor no longer holds (idle, or
            // dropped after a failure): the scheduler has it.
            None => {
                let bytes = self.fetch_stage_plan(attempt, definition.plan_id).await?;
                self.stage_plans
                    .plan_for(job_id, stage_id, definition.plan_id, &bytes, decode)
                    .map_err(decoding_failed)?
                    .ok_or_else(|| failure(FailureKind::Io, "the stage's plan came back empty"))?
            }
        };
        let plan =
            make_cancellable(plan, cancel).map_err(|e| failure(FailureKind::PlanDecode, e))?;
        if tracing::enabled!(tracing::Level::TRACE) {
            let shown = datafusion::physical_plan::displayable(plan.as_ref()).indent(true);
            tracing::trace!("decoded plan:\n{shown}");
        }
        let partition = attempt.partition as usize;
        let stream = plan
            .execute(partition, Arc::clone(&context))
            .map_err(classify)?;
        let summary = match collect(stream).await {
            Ok(summary) => summary,
            Err(error) => {
                let from_data = is_data_error(&error);
                let mut failure = classify(error);
                if from_data
                    && failure.kind == FailureKind::Execution as i32
                    && let Some(file) = failing_file(&plan, partition, &context).await
                {
                    failure.message = format!("{} (reading file {file})", failure.message);
                }
                return Err(failure);
            }
        };
        if self.faults.should_fail_after_task(
            attempt.stage_id.0,
            attempt.partition,
            attempt.attempt,
        ) {
            return Err(failure(
                FailureKind::Io,
                "injected fault: task failed after running (test hook)",
            ));
        }
        let mut metrics = TaskMetrics {
            rows_written: rows_written_in(&plan),
            ..TaskMetrics::default()
        };
        for batch in &summary {
            metrics.output_rows += sum_column(batch, "rows");
            metrics.output_bytes += sum_column(batch, "bytes");
            metrics
                .partition_bytes
                .extend(column_values(batch, "bytes"));
            // Every summary row repeats the task's spilled total.
            metrics.spilled_bytes += column_max(batch, "spilled_bytes");
        }
        Ok((metrics, operator_metrics(&plan, partition)))
    }

    /// Asks the scheduler for the plan of `attempt`'s stage named `plan_id`.
    async fn fetch_stage_plan(
        &self,
        attempt: &TaskAttempt,
        plan_id: u64,
    ) -> Result<Vec<u8>, TaskFailure> {
        let request = StagePlanRequest {
            job_id: attempt.job_id.to_string(),
            stage_id: attempt.stage_id.0,
            plan_id,
        };
        let mut scheduler = self.scheduler.clone();
        match scheduler.get_stage_plan(request).await {
            Ok(response) => Ok(response.into_inner().plan),
            Err(status) => Err(failure(
                FailureKind::Io,
                format!(
                    "fetching the stage's plan from the scheduler: {}",
                    status.message()
                ),
            )),
        }
    }

    /// DataFusion's options with `settings` applied.
    fn options_for(
        &self,
        settings: &HashMap<String, String>,
    ) -> Result<ConfigOptions, DataFusionError> {
        let mut parsed = self.parsed_settings.lock();
        if let Some((seen, options)) = parsed.as_ref()
            && seen == settings
        {
            return Ok(options.clone());
        }
        let options = ConfigOptions::from_string_hash_map(settings)?;
        *parsed = Some((settings.clone(), options.clone()));
        Ok(options)
    }

    fn task_context(
        &self,
        attempt: &TaskAttempt,
        definition: &TaskDefinition,
    ) -> Result<Arc<TaskContext>, DataFusionError> {
        let max_output_bytes = definition.max_output_bytes;
        let mut config = SessionConfig::from(self.options_for(&definition.session_config)?)
            .with_extension(Arc::new(self.shuffle.clone()))
            .with_extension(Arc::new(TaskAttemptNumber(attempt.attempt)));
        if max_output_bytes > 0 {
            config = config.with_extension(Arc::new(TaskOutputLimit(max_output_bytes)));
        }
        // A task owns exactly one partition: scans must read only that partition's files,
        // whatever the client set.
        config
            .options_mut()
            .execution
            .enable_file_stream_work_stealing = false;
        let mut context = TaskContext::from(&self.base_state)
            .with_session_config(config)
            .with_task_id(attempt.to_string());
        if definition.max_job_memory_bytes > 0 {
            // The job's tasks share one cap, within the executor's pool.
            let base = self.base_state.runtime_env();
            let pool = self.job_memory.pool_of(
                attempt.job_id.as_str(),
                usize::try_from(definition.max_job_memory_bytes).unwrap_or(usize::MAX),
                &base.memory_pool,
            );
            let runtime = RuntimeEnvBuilder::from_runtime_env(base)
                .with_memory_pool(pool)
                .build_arc()?;
            context = context.with_runtime(runtime);
        }
        Ok(Arc::new(context))
    }

    /// Tells the scheduler how a task ended, retrying briefly if it is unreachable.
    async fn report(&self, status: TaskStatus) {
        let mut delay = Duration::from_millis(50);
        for _ in 0..6 {
            let mut scheduler = self.scheduler.clone();
            match scheduler.report_task_status(status.clone()).await {
                Ok(_) => return,
                Err(error) => {
                    warn!(%error, "reporting task status failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        warn!("gave up reporting task status to the scheduler");
    }
}

/// Counts a task as running for as long as it lives, aborted or not.
struct RunningGuard<'a>(&'a AtomicUsize);

impl<'a> RunningGuard<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn sum_column(batch: &datafusion::arrow::record_batch::RecordBatch, name: &str) -> u64 {
    column_values(batch, name).iter().sum()
}

/// A summary column's values, one per output partition (none when it is missing).
fn column_values(batch: &datafusion::arrow::record_batch::RecordBatch, name: &str) -> Vec<u64> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .map(|c| c.values().to_vec())
        .unwrap_or_default()
}

fn column_max(batch: &datafusion::arrow::record_batch::RecordBatch, name: &str) -> u64 {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .filter(|c| !c.is_empty())
        .map(|c| c.values().iter().copied().max().unwrap_or(0))
        .unwrap_or(0)
}

fn failure(kind: FailureKind, error: impl std::fmt::Display) -> TaskFailure {
    TaskFailure {
        message: error.to_string(),
        kind: kind as i32,
        ..TaskFailure::default()
    }
}

/// The setting DataFusion's spill-limit error names.
const SPILL_LIMIT_SETTING: &str = "max_temp_directory_size";

/// Sorts a run-time error into what the scheduler needs to know: retry or give up.
fn classify(error: DataFusionError) -> TaskFailure {
    let mut unreachable = String::new();
    let mut output_bytes = 0;
    // DataFusion's disk manager reports its spill limit as a plain I/O error (wrapped
    // in Arrow's, or not), with no type of its own; retrying would fill the disk again.
    let spill_limit = error.to_string().contains(SPILL_LIMIT_SETTING);
    let kind = match error.find_root() {
        _ if spill_limit => FailureKind::Resources,
        DataFusionError::External(inner) => match inner.downcast_ref::<QuiverError>() {
            Some(QuiverError::ExecutorUnreachable { executor_id, .. }) => {
                unreachable = executor_id.clone();
                FailureKind::Fetch
            }
            Some(QuiverError::ShuffleOutputMissing { .. }) => FailureKind::Fetch,
            Some(QuiverError::LimitExceeded { actual, .. }) => {
                output_bytes = *actual;
                FailureKind::LimitExceeded
            }
            _ => FailureKind::Execution,
        },
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => FailureKind::Io,
        DataFusionError::ResourcesExhausted(_) => FailureKind::Resources,
        _ => FailureKind::Execution,
    };
    let mut failure = failure(kind, error);
    if spill_limit {
        failure.message = format!(
            "{} (on this executor the limit is set with `quiver executor --max-spill-bytes`)",
            failure.message
        );
    }
    TaskFailure {
        unreachable_executor_id: unreachable,
        output_bytes,
        ..failure
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use quiver_core::exchange::ShuffleContext;

    use super::*;
    use crate::fetch::ExecutorShuffleIo;
    use crate::store::ShuffleStore;

    fn runner() -> TaskRunner {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let store = ShuffleStore::new("runner-test", PathBuf::from("/nonexistent"), 0);
        TaskRunner {
            executor_id: "runner-test".to_string(),
            store: Arc::clone(&store),
            shuffle: ShuffleContext {
                io: Arc::new(ExecutorShuffleIo {
                    store,
                    faults: FaultInjection::default(),
                    ticket_key: quiver_core::ticket::SharedTicketKey::new(
                        quiver_core::ticket::TicketKey::random(),
                    ),
                    tls_ca: None,
                }),
            },
            base_state: datafusion::execution::session_state::SessionStateBuilder::new()
                .with_default_features()
                .build(),
            stores: Arc::new(StoreRegistry::new()),
            slots: Arc::new(Semaphore::new(1)),
            running: AtomicUsize::new(0),
            scheduler: SchedulerControlClient::new(
                tonic::service::interceptor::InterceptedService::new(
                    channel,
                    quiver_core::security::AttachClusterSecret::new(Default::default()),
                ),
            ),
            faults: FaultInjection::default(),
            threads: DedicatedThreads::new(1, "runner-test", 2 << 20).unwrap(),
            control: tokio::runtime::Handle::current(),
            in_flight: Mutex::new(HashMap::new()),
            stage_plans: StagePlans::default(),
            parsed_settings: Mutex::new(None),
            job_memory: JobMemoryPools::default(),
            tasks_succeeded: Default::default(),
            tasks_failed: Default::default(),
            task_duration: Default::default(),
        }
    }

    #[tokio::test]
    async fn each_tasks_settings_apply_though_parsed_settings_are_reused() {
        let runner = runner();
        let settings = |partitions: &str| {
            HashMap::from([(
                "datafusion.execution.target_partitions".to_string(),
                partitions.to_string(),
            )])
        };
        let first = runner.options_for(&settings("3")).unwrap();
        assert_eq!(first.execution.target_partitions, 3);
        assert_eq!(
            runner
                .options_for(&settings("3"))
                .unwrap()
                .execution
                .target_partitions,
            3
        );
        assert_eq!(
            runner
                .options_for(&settings("5"))
                .unwrap()
                .execution
                .target_partitions,
            5
        );
        assert!(runner.options_for(&settings("many")).is_err());
    }

    #[tokio::test]
    async fn a_plan_that_does_not_decode_is_a_plan_decode_failure() {
        let attempt = TaskAttempt {
            job_id: "job".into(),
            stage_id: quiver_core::StageId(0),
            partition: 0,
            attempt: 0,
        };
        let definition = TaskDefinition {
            task: Some(attempt.to_proto()),
            plan: b"definitely not a plan".to_vec(),
            session_config: HashMap::new(),
            light: false,
            stores: Vec::new(),
            max_output_bytes: 0,
            max_job_memory_bytes: 0,
            user: String::new(),
            plan_id: 0,
            stream_result: false,
        };
        let failure = runner()
            .run(&attempt, &definition, &CancelFlag::new("job"))
            .await
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::PlanDecode as i32);
        assert!(
            failure.message.contains("decoding the task's plan"),
            "{}",
            failure.message
        );
    }
}
