//! The state of one job: its stages, their tasks, and where finished output lives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use quiver_core::codec::encode_plan;
use quiver_core::exchange::ShuffleReaderExec;
use quiver_core::proto::{PartitionLocation, TaskMetrics};
use quiver_core::{JobId, QuiverError, StageId, TaskAttempt};

use crate::adaptive::{AdaptivePolicy, StageOutput, refit_stage};
use crate::broadcast_switch::{broadcast_build_stage, fuse_probe_stage};
use crate::empty_inputs::runs_nothing;
use crate::planner::{StageDag, StagePlan};
use crate::stage_tasks::StageTasks;

/// Where a task stands.
#[derive(Debug, Clone)]
pub(crate) enum TaskState {
    Pending,
    Running {
        executor_id: String,
        attempt: u32,
    },
    Succeeded {
        location: PartitionLocation,
        metrics: TaskMetrics,
        /// The attempt that produced the output.
        attempt: u32,
    },
}

#[derive(Debug)]
pub(crate) struct Stage {
    pub(crate) plan: StagePlan,
    pub(crate) tasks: StageTasks,
    /// Attempts started so far, per partition.
    pub(crate) attempts: Vec<u32>,
    /// Where each partition's last attempt failed, to place the next one elsewhere.
    pub(crate) failed_on: Vec<Option<String>>,
    /// Fetch failures per partition: they mean lost input, not a faulty task, and are
    /// budgeted apart from attempts.
    pub(crate) fetch_failures: Vec<u32>,
    /// The plan with reader locations filled in, encoded once for all its tasks.
    pub(crate) encoded: Option<ShippedPlan>,
    /// Every executor an attempt of this stage was sent to: a superseded attempt may
    /// still leave output there, which the job's release must reach.
    pub(crate) touched: std::collections::BTreeSet<String>,
    /// Each partition's operator metrics, from its counted attempt (EXPLAIN ANALYZE and
    /// the web UI sum them per stage).
    pub(crate) operator_metrics: Vec<Vec<quiver_core::proto::OperatorMetrics>>,
    /// Runs without a slot: the job reads only data carried in its plans (constants,
    /// system tables), so its tasks finish at once, and such queries answer while every
    /// slot is busy with long work.
    pub(crate) light: bool,
    /// Every attempt launched, in launch order: what the web UI's timeline and retry
    /// list show.
    pub(crate) attempt_log: Vec<AttemptRecord>,
    /// Whether adaptive execution has fitted the stage to its inputs yet (once, before
    /// its first task).
    pub(crate) refitted: bool,
    /// What adaptive execution changed, and why.
    pub(crate) adaptive_decision: Option<String>,
    /// Whether the stage feeds a partitioned join that could run as a broadcast join over
    /// its work (`broadcast_switch`): worked out the first time the stage could start,
    /// since neither its plan nor its join's changes before one of them starts.
    broadcast_join: Option<Option<BroadcastJoin>>,
}

/// A partitioned join a stage feeds the probe side of, which could run as a broadcast
/// join over the stage's work.
#[derive(Debug, Clone, Copy)]
struct BroadcastJoin {
    /// The join's stage (index in the job's stages).
    consumer: usize,
    /// The stage of its build side.
    build: u32,
}

/// A stage's encoded plan, and the executors it has been sent to whole: its other tasks
/// there go without it (executors keep decoded plans, and ask for one they no longer
/// hold), so a stage of n tasks sends its plan once per executor rather than n times.
#[derive(Debug)]
pub(crate) struct ShippedPlan {
    pub(crate) bytes: Bytes,
    /// Names this encoding: a stage encoded anew (new input locations) gets a new id.
    pub(crate) id: u64,
    sent_to: std::collections::HashSet<String>,
}

impl ShippedPlan {
    pub(crate) fn new(bytes: Bytes) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            bytes,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            sent_to: Default::default(),
        }
    }

    /// The bytes to send with a task for `executor_id`: the whole plan the first time,
    /// nothing after.
    pub(crate) fn bytes_for(&mut self, executor_id: &str) -> Vec<u8> {
        if self.sent_to.contains(executor_id) {
            return Vec::new();
        }
        self.sent_to.insert(executor_id.to_string());
        self.bytes.to_vec()
    }
}

/// One launched task attempt: where and when it ran, and how it ended.
#[derive(Debug, Clone)]
pub(crate) struct AttemptRecord {
    pub(crate) partition: u32,
    pub(crate) attempt: u32,
    pub(crate) executor_id: String,
    pub(crate) started: Instant,
    /// `None` while it runs.
    pub(crate) ended: Option<(Instant, AttemptEnd)>,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub(crate) enum AttemptEnd {
    Succeeded(TaskMetrics),
    /// The executor reported a failure, with its message.
    Failed(String),
    /// Its executor was lost (or left) while it ran.
    Lost(String),
    /// Its job ended first (failed elsewhere, or cancelled).
    Stopped,
}

impl AttemptEnd {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            AttemptEnd::Succeeded(_) => "succeeded",
            AttemptEnd::Failed(_) => "failed",
            AttemptEnd::Lost(_) => "lost",
            AttemptEnd::Stopped => "stopped",
        }
    }
}

impl Stage {
    /// Neither fitted by adaptive execution nor started yet: its plan may still change.
    fn is_unplanned(&self) -> bool {
        !self.refitted && self.attempts.iter().all(|&attempts| attempts == 0)
    }

    /// Its plan changed before any task ran: one pending task per partition of it.
    fn replan_tasks(&mut self) {
        self.replan_tasks_to(self.plan.task_count());
    }

    fn replan_tasks_to(&mut self, tasks: usize) {
        self.tasks = StageTasks::pending(tasks);
        self.attempts = vec![0; tasks];
        self.failed_on = vec![None; tasks];
        self.fetch_failures = vec![0; tasks];
        self.operator_metrics = vec![Vec::new(); tasks];
        self.encoded = None;
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.tasks.all_succeeded()
    }

    /// Rows and bytes written by the stage's finished tasks.
    pub(crate) fn output_totals(&self) -> (u64, u64) {
        self.tasks
            .iter()
            .filter_map(|task| match task {
                TaskState::Succeeded { metrics, .. } => {
                    Some((metrics.output_rows, metrics.output_bytes))
                }
                _ => None,
            })
            .fold((0, 0), |(r, b), (rows, bytes)| (r + rows, b + bytes))
    }

    /// Bytes of each output partition over the stage's finished tasks; empty unless
    /// every task reported them, alike in count.
    pub(crate) fn partition_bytes(&self) -> Vec<u64> {
        let mut totals: Vec<u64> = Vec::new();
        for task in &self.tasks {
            let TaskState::Succeeded { metrics, .. } = task else {
                return Vec::new();
            };
            if totals.is_empty() {
                totals = vec![0; metrics.partition_bytes.len()];
            }
            if metrics.partition_bytes.len() != totals.len() {
                return Vec::new();
            }
            for (total, bytes) in totals.iter_mut().zip(&metrics.partition_bytes) {
                *total += bytes;
            }
        }
        totals
    }

    /// Records how attempt `attempt` of `partition` ended, if it is still open.
    pub(crate) fn end_attempt(&mut self, partition: u32, attempt: u32, end: AttemptEnd) {
        end_open_attempt(&mut self.attempt_log, partition, attempt, end);
    }

    fn locations(&self) -> Vec<PartitionLocation> {
        self.tasks
            .iter()
            .filter_map(|t| match t {
                TaskState::Succeeded { location, .. } => Some(location.clone()),
                _ => None,
            })
            .collect()
    }
}

fn end_open_attempt(log: &mut [AttemptRecord], partition: u32, attempt: u32, end: AttemptEnd) {
    if let Some(record) = log.iter_mut().rev().find(|record| {
        record.partition == partition && record.attempt == attempt && record.ended.is_none()
    }) {
        record.ended = Some((Instant::now(), end));
    }
}

/// How a job ended, or that it has not yet.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    Running,
    /// Still running, but every task of the final stage has been accepted by its
    /// executor (or has finished): a client may read the result as it is written, from
    /// these locations, one per final partition, in partition order.
    Readable(Vec<PartitionLocation>),
    /// The result: one location per final partition, in partition order.
    Succeeded(Vec<PartitionLocation>),
    Failed(Arc<QuiverError>),
}

impl JobOutcome {
    pub fn is_finished(&self) -> bool {
        !matches!(self, JobOutcome::Running | JobOutcome::Readable(_))
    }

    /// Whether a client may start reading the result.
    pub fn is_readable(&self) -> bool {
        !matches!(self, JobOutcome::Running)
    }
}

/// What every task of a job runs with besides its plan.
#[derive(Default)]
pub struct TaskEnvironment {
    /// DataFusion settings that differ from the defaults.
    pub settings: HashMap<String, String>,
    /// Who the job runs for.
    pub owner: JobOwner,
    /// Storage options for the object stores the job reads and writes (secrets).
    pub stores: Vec<quiver_core::proto::StoreOptions>,
    /// Bytes of memory the job's tasks may hold on each executor; 0: no limit of its own.
    pub max_memory_bytes: u64,
    /// What adaptive execution may change in the job's stages.
    pub adaptive: AdaptivePolicy,
    /// Whether the client may read the result while the final stage writes it.
    pub stream_result: bool,
}

/// Who a job runs for: the login (on a server with logins) and the client session that
/// submitted it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOwner {
    pub user: Option<String>,
    pub session: String,
}

impl JobOwner {
    /// Whether a caller in `session` as `user` may follow, read or stop the job: from
    /// the session that submitted it, or as the same login from another.
    pub fn admits(&self, session: &str, user: Option<&str>) -> bool {
        self.session == session || (self.user.is_some() && self.user.as_deref() == user)
    }
}

impl std::fmt::Debug for TaskEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEnvironment")
            .field("settings", &self.settings)
            .field("owner", &self.owner)
            .field("stores", &self.stores.len())
            .finish()
    }
}

#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) job_id: JobId,
    pub(crate) stages: Vec<Stage>,
    pub(crate) environment: Arc<TaskEnvironment>,
    /// Bytes of output its tasks have produced, re-runs included (kept as a running sum:
    /// it is checked against the query's limit at every task report).
    pub(crate) bytes_produced: u64,
    pub(crate) outcome: tokio::sync::watch::Sender<JobOutcome>,
    pub(crate) submitted_at: Instant,
    /// Whether a task of the job has been launched yet.
    pub(crate) launched: bool,
    pub(crate) finished_at: Option<Instant>,
    /// Result tasks whose executors accepted their launch: partition -> (attempt, the
    /// executor's Flight address).
    accepted_results: HashMap<u32, (u32, String)>,
    /// Result partitions re-run while the job is readable: each must run again on the
    /// executor its client was sent to (partition -> executor id).
    pub(crate) result_pins: HashMap<u32, String>,
}

impl Job {
    pub(crate) fn new(
        job_id: JobId,
        dag: StageDag,
        environment: Arc<TaskEnvironment>,
        outcome: tokio::sync::watch::Sender<JobOutcome>,
    ) -> Self {
        let light = dag.stages.iter().all(StagePlan::is_light);
        let stages = dag
            .stages
            .into_iter()
            .map(|plan| Stage {
                tasks: StageTasks::pending(plan.task_count()),
                attempts: vec![0; plan.task_count()],
                failed_on: vec![None; plan.task_count()],
                fetch_failures: vec![0; plan.task_count()],
                operator_metrics: vec![Vec::new(); plan.task_count()],
                light,
                encoded: plan.encoded.clone().map(ShippedPlan::new),
                plan,
                touched: std::collections::BTreeSet::new(),
                attempt_log: Vec::new(),
                refitted: false,
                adaptive_decision: None,
                broadcast_join: None,
            })
            .collect();
        Self {
            job_id,
            stages,
            environment,
            bytes_produced: 0,
            outcome,
            submitted_at: Instant::now(),
            launched: false,
            finished_at: None,
            accepted_results: HashMap::new(),
            result_pins: HashMap::new(),
        }
    }

    /// A result partition a client may be reading from `executor_id` while the job
    /// runs (the job is [`JobOutcome::Readable`]).
    pub(crate) fn readable_result_on(&self, executor_id: &str) -> Option<u32> {
        match &*self.outcome.borrow() {
            JobOutcome::Readable(locations) => locations
                .iter()
                .find(|location| location.executor_id == executor_id)
                .map(|location| location.map_partition),
            _ => None,
        }
    }

    /// An executor at `flight_url` accepted attempt `attempt` of result partition
    /// `partition` (see [`Job::publish_if_readable`]).
    pub(crate) fn accept_result_launch(&mut self, partition: u32, attempt: u32, flight_url: &str) {
        self.accepted_results
            .insert(partition, (attempt, flight_url.to_string()));
    }

    /// Once every result task is accepted or done, the job becomes
    /// [`JobOutcome::Readable`]: its client may read while the tasks write. Asked once
    /// per batch of accepted launches.
    pub(crate) fn publish_if_readable(&mut self) {
        if !matches!(*self.outcome.borrow(), JobOutcome::Running) {
            return;
        }
        let Some(stage) = self.stages.last() else {
            return;
        };
        let mut locations = Vec::with_capacity(stage.tasks.len());
        for (partition, task) in stage.tasks.iter().enumerate() {
            let location = match task {
                TaskState::Succeeded { location, .. } => location.clone(),
                TaskState::Running {
                    executor_id,
                    attempt,
                } => match self.accepted_results.get(&(partition as u32)) {
                    Some((accepted, url)) if accepted == attempt => PartitionLocation {
                        map_partition: partition as u32,
                        executor_id: executor_id.clone(),
                        flight_url: url.clone(),
                    },
                    _ => return,
                },
                TaskState::Pending => return,
            };
            locations.push(location);
        }
        self.outcome.send_replace(JobOutcome::Readable(locations));
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.outcome.borrow().is_finished()
    }

    pub(crate) fn final_stage_id(&self) -> StageId {
        self.stages
            .last()
            .map(|s| s.plan.stage_id)
            .unwrap_or(StageId(0))
    }

    /// Stages whose inputs are all complete and which still have work to hand out.
    pub(crate) fn runnable_stages(&self) -> Vec<StageId> {
        self.stages
            .iter()
            .filter(|stage| self.is_runnable(stage))
            .map(|stage| stage.plan.stage_id)
            .collect()
    }

    /// Whether some stage has a task waiting to start and every input it reads.
    pub(crate) fn has_startable_tasks(&self) -> bool {
        self.stages.iter().any(|stage| self.is_runnable(stage))
    }

    fn is_runnable(&self, stage: &Stage) -> bool {
        stage.tasks.any_pending()
            && stage
                .plan
                .inputs
                .iter()
                .all(|input| self.stages[input.0 as usize].is_complete())
    }

    /// Fits a stage about to start to what its input stages produced (adaptive
    /// execution), once, before any of its tasks has run.
    pub(crate) fn refit_stage(&mut self, stage_id: StageId) -> Result<()> {
        let stage = &self.stages[stage_id.0 as usize];
        if !stage.is_unplanned() {
            return Ok(());
        }
        let inputs: HashMap<u32, StageOutput> = stage
            .plan
            .inputs
            .iter()
            .map(|input| {
                let producer = &self.stages[input.0 as usize];
                let (rows, bytes) = producer.output_totals();
                let output = StageOutput {
                    producers: producer.tasks.len(),
                    rows,
                    bytes,
                    partition_bytes: producer.partition_bytes(),
                };
                (input.0, output)
            })
            .collect();
        let refit = refit_stage(&stage.plan.plan, &inputs, self.environment.adaptive)?;
        let stage = &mut self.stages[stage_id.0 as usize];
        stage.refitted = true;
        if let Some(refit) = refit {
            stage.plan.plan = refit.plan;
            stage.adaptive_decision = refit.decision;
            // Left with nothing to run (its input was empty), it needs no slot.
            stage.light |= runs_nothing(&stage.plan.plan);
            stage.replan_tasks();
        }
        Ok(())
    }

    /// Adaptive execution's broadcast switch (`broadcast_switch`) for the stages about to
    /// start: a stage feeding a partitioned join's probe side whose build side finished
    /// small moves into the join's stage, which becomes a broadcast join. Returns the
    /// stages held back until their join's build side has finished
    /// (`quiver.adaptive_build_side_first`).
    pub(crate) fn switch_joins_to_broadcast(&mut self) -> Result<Vec<StageId>> {
        let policy = self.environment.adaptive;
        let mut held = Vec::new();
        if !policy.enabled || policy.broadcast_bytes == 0 {
            return Ok(held);
        }
        for probe in self.runnable_stages() {
            if !self.stages[probe.0 as usize].is_unplanned() || probe == self.final_stage_id() {
                continue;
            }
            let Some(BroadcastJoin { consumer, build }) = self.broadcast_join_of(probe) else {
                continue;
            };
            if !self.stages[consumer].is_unplanned() {
                continue;
            }
            let build_stage = &self.stages[build as usize];
            if !build_stage.is_complete() {
                if policy.build_side_first {
                    held.push(probe);
                }
                continue;
            }
            let (rows, bytes) = build_stage.output_totals();
            if bytes > policy.broadcast_bytes {
                continue;
            }
            let probe_plan = &self.stages[probe.0 as usize].plan.plan;
            let consumer_stage = &self.stages[consumer];
            let fused = fuse_probe_stage(&consumer_stage.plan.plan, probe_plan)?;
            let consumer_id = consumer_stage.plan.stage_id;
            let stage = &mut self.stages[consumer];
            stage.plan.plan = fused;
            stage.plan.inputs.retain(|input| *input != probe);
            stage.refitted = true;
            stage.adaptive_decision = Some(format!(
                "adaptive: broadcast join: stage {build} produced {} ({rows} rows), at most {} \
                 (quiver.adaptive_broadcast_bytes), before stage {probe} started: each task \
                 reads it whole and runs stage {probe}'s work, which is not shuffled",
                crate::adaptive::size(bytes),
                crate::adaptive::size(policy.broadcast_bytes),
            ));
            stage.replan_tasks();
            let stage = &mut self.stages[probe.0 as usize];
            stage.refitted = true;
            stage.adaptive_decision = Some(format!(
                "adaptive: runs inside stage {consumer_id} (a broadcast join): not run on its own"
            ));
            stage.replan_tasks_to(0);
        }
        Ok(held)
    }

    /// The partitioned join stage `probe` feeds that could run as a broadcast join over
    /// its work, worked out once.
    fn broadcast_join_of(&mut self, probe: StageId) -> Option<BroadcastJoin> {
        if let Some(known) = self.stages[probe.0 as usize].broadcast_join {
            return known;
        }
        let consumers: Vec<usize> = (0..self.stages.len())
            .filter(|&s| self.stages[s].plan.inputs.contains(&probe))
            .collect();
        let found = match consumers.as_slice() {
            [consumer] => broadcast_build_stage(
                &self.stages[*consumer].plan.plan,
                probe.0,
                &self.stages[probe.0 as usize].plan.plan,
            )
            .map(|build| BroadcastJoin {
                consumer: *consumer,
                build,
            }),
            _ => None,
        };
        self.stages[probe.0 as usize].broadcast_join = Some(found);
        found
    }

    /// Encodes the stage's plan, with the locations of its inputs filled in, unless
    /// done already.
    pub(crate) fn encode_stage(&mut self, stage_id: StageId) -> Result<()> {
        if self.stages[stage_id.0 as usize].encoded.is_some() {
            return Ok(());
        }
        let locations: HashMap<u32, Vec<PartitionLocation>> = self.stages[stage_id.0 as usize]
            .plan
            .inputs
            .iter()
            .map(|input| (input.0, self.stages[input.0 as usize].locations()))
            .collect();
        let plan = Arc::clone(&self.stages[stage_id.0 as usize].plan.plan);
        let resolved = plan
            .transform_up(|node: Arc<dyn ExecutionPlan>| {
                let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
                    return Ok(Transformed::no(node));
                };
                let found = locations
                    .get(&reader.stage_id())
                    .cloned()
                    .unwrap_or_default();
                let resolved: Arc<dyn ExecutionPlan> =
                    Arc::new(reader.clone().with_locations(found));
                Ok(Transformed::yes(resolved))
            })?
            .data;
        let bytes = encode_plan(resolved)?;
        self.stages[stage_id.0 as usize].encoded = Some(ShippedPlan::new(bytes));
        Ok(())
    }

    /// The encoded plan of stage `stage_id` when `plan_id` still names it.
    pub(crate) fn stage_plan(&self, stage_id: u32, plan_id: u64) -> Option<Bytes> {
        let shipped = self.stages.get(stage_id as usize)?.encoded.as_ref()?;
        (shipped.id == plan_id).then(|| shipped.bytes.clone())
    }

    /// The result's locations, once the final stage is complete.
    pub(crate) fn result_locations(&self) -> Option<Vec<PartitionLocation>> {
        let last = self.stages.last()?;
        last.is_complete().then(|| last.locations())
    }

    pub(crate) fn finish(&mut self, outcome: JobOutcome) {
        self.finished_at = Some(Instant::now());
        self.outcome.send_replace(outcome);
    }

    /// Rows and bytes written by all finished tasks of the job.
    pub(crate) fn totals(&self) -> (u64, u64) {
        self.stages
            .iter()
            .map(Stage::output_totals)
            .fold((0, 0), |(r, b), (rows, bytes)| (r + rows, b + bytes))
    }

    /// The attempts now running, with their executors.
    pub(crate) fn running_attempts(&self) -> Vec<(String, TaskAttempt)> {
        self.stages
            .iter()
            .flat_map(|stage| {
                stage
                    .tasks
                    .iter()
                    .enumerate()
                    .filter_map(move |(partition, task)| match task {
                        TaskState::Running {
                            executor_id,
                            attempt,
                        } => Some((
                            executor_id.clone(),
                            TaskAttempt {
                                job_id: self.job_id.clone(),
                                stage_id: stage.plan.stage_id,
                                partition: partition as u32,
                                attempt: *attempt,
                            },
                        )),
                        _ => None,
                    })
            })
            .collect()
    }

    /// Executors that hold or produce any of this job's data.
    pub(crate) fn executors_involved(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .stages
            .iter()
            .flat_map(|s| s.tasks.iter())
            .filter_map(|t| match t {
                TaskState::Running { executor_id, .. } => Some(executor_id.clone()),
                TaskState::Succeeded { location, .. } => Some(location.executor_id.clone()),
                TaskState::Pending => None,
            })
            .chain(self.stages.iter().flat_map(|s| s.touched.iter().cloned()))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Forgets everything executor `executor_id` ran or holds: its running tasks and the
    /// outputs it kept go back to pending, and stages reading those outputs get their
    /// input locations recomputed. Returns how many tasks must run again.
    pub(crate) fn forget_executor(&mut self, executor_id: &str) -> usize {
        let mut reset = 0;
        let mut lost_outputs: Vec<StageId> = Vec::new();
        // Resetting a finished stage makes it need its own inputs again: repeat until no
        // more outputs on the lost executor are needed.
        loop {
            let reset_before = reset;
            // An output is needed while a stage reading it is unfinished; the final stage's
            // output is the result, needed until the job ends.
            let final_stage = self.final_stage_id();
            let needed: Vec<StageId> = self
                .stages
                .iter()
                .filter(|stage| !stage.is_complete())
                .flat_map(|stage| stage.plan.inputs.iter().copied())
                .chain(std::iter::once(final_stage))
                .collect();
            for stage in &mut self.stages {
                let output_needed = needed.contains(&stage.plan.stage_id);
                for partition in 0..stage.tasks.len() {
                    let task = &stage.tasks[partition];
                    let (on_lost, held_output) = match task {
                        TaskState::Running {
                            executor_id: id, ..
                        } => (id == executor_id, false),
                        TaskState::Succeeded { location, .. } => {
                            (location.executor_id == executor_id && output_needed, true)
                        }
                        TaskState::Pending => (false, false),
                    };
                    if on_lost {
                        if let TaskState::Running { attempt, .. } = task {
                            let reason = format!("executor {executor_id} was lost");
                            end_open_attempt(
                                &mut stage.attempt_log,
                                partition as u32,
                                *attempt,
                                AttemptEnd::Lost(reason),
                            );
                        }
                        stage.tasks.set(partition, TaskState::Pending);
                        stage.failed_on[partition] = Some(executor_id.to_string());
                        reset += 1;
                        if held_output {
                            lost_outputs.push(stage.plan.stage_id);
                        }
                    }
                }
            }
            if reset == reset_before {
                break;
            }
        }
        for stage in &mut self.stages {
            if stage
                .plan
                .inputs
                .iter()
                .any(|input| lost_outputs.contains(input))
            {
                stage.encoded = None;
            }
        }
        reset
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::tests::dag_with_partitioned_joins;

    /// A job of a partitioned inner join: stages 0 (build), 1 (probe), 2 (the join).
    async fn join_job(adaptive: AdaptivePolicy) -> Job {
        let sql = "SELECT a.k, b.v FROM (SELECT * FROM t WHERE v > 1) a \
                   JOIN (SELECT * FROM t WHERE k > 1) b ON a.k = b.v";
        let environment = TaskEnvironment {
            adaptive,
            ..TaskEnvironment::default()
        };
        let (outcome, _) = tokio::sync::watch::channel(JobOutcome::Running);
        let job = Job::new(
            JobId::from("j"),
            dag_with_partitioned_joins(sql).await,
            Arc::new(environment),
            outcome,
        );
        assert_eq!(job.stages.len(), 3);
        assert_eq!(job.stages[2].plan.inputs, [StageId(0), StageId(1)]);
        job
    }

    fn finish_stage(job: &mut Job, stage: usize, bytes_per_task: u64) {
        let tasks = &mut job.stages[stage].tasks;
        for partition in 0..tasks.len() {
            let metrics = TaskMetrics {
                output_rows: bytes_per_task.div_ceil(10),
                output_bytes: bytes_per_task,
                ..TaskMetrics::default()
            };
            let location = PartitionLocation {
                map_partition: partition as u32,
                executor_id: "e1".into(),
                flight_url: "http://e1".into(),
            };
            let done = TaskState::Succeeded {
                location,
                metrics,
                attempt: 0,
            };
            tasks.set(partition, done);
        }
    }

    #[tokio::test]
    async fn a_small_finished_build_side_takes_the_probe_stage_into_a_broadcast_join() {
        let mut job = join_job(AdaptivePolicy::default()).await;
        // Both scans may start: nothing is known of the build side yet.
        assert!(job.switch_joins_to_broadcast().unwrap().is_empty());
        assert_eq!(job.stages[1].tasks.len(), 2);

        finish_stage(&mut job, 0, 100);
        assert!(job.switch_joins_to_broadcast().unwrap().is_empty());
        assert_eq!(
            job.stages[1].tasks.len(),
            0,
            "the probe stage runs inside the join's"
        );
        assert!(job.stages[1].is_complete());
        let join = &job.stages[2];
        assert_eq!(join.plan.inputs, [StageId(0)]);
        assert!(!join.tasks.is_empty() && join.tasks.any_pending());
        let decision = join.adaptive_decision.as_deref().unwrap();
        assert!(
            decision.contains("broadcast join: stage 0 produced"),
            "{decision}"
        );
        assert_eq!(job.runnable_stages(), [StageId(2)]);
    }

    #[tokio::test]
    async fn a_large_build_side_or_a_started_probe_stage_keeps_the_join_partitioned() {
        let mut job = join_job(AdaptivePolicy::default()).await;
        finish_stage(&mut job, 0, 64 * 1024 * 1024);
        job.switch_joins_to_broadcast().unwrap();
        assert_eq!(job.stages[1].tasks.len(), 2, "too big to broadcast");

        let mut job = join_job(AdaptivePolicy::default()).await;
        job.stages[1].attempts[0] = 1;
        finish_stage(&mut job, 0, 100);
        job.switch_joins_to_broadcast().unwrap();
        assert_eq!(job.stages[1].tasks.len(), 2, "the probe stage had started");

        let off = AdaptivePolicy {
            enabled: false,
            ..AdaptivePolicy::default()
        };
        let mut job = join_job(off).await;
        finish_stage(&mut job, 0, 100);
        job.switch_joins_to_broadcast().unwrap();
        assert_eq!(job.stages[1].tasks.len(), 2, "adaptive execution is off");
    }

    #[tokio::test]
    async fn only_a_stage_cut_down_to_nothing_runs_without_a_slot() {
        for (bytes, light) in [(100, false), (0, true)] {
            let (outcome, _) = tokio::sync::watch::channel(JobOutcome::Running);
            let dag = dag_with_partitioned_joins("SELECT k % 3, count(*) FROM t GROUP BY k % 3");
            let mut job = Job::new(
                JobId::from("j"),
                dag.await,
                Arc::new(TaskEnvironment::default()),
                outcome,
            );
            for stage in &mut job.stages {
                stage.light = false;
            }
            finish_stage(&mut job, 0, bytes);
            job.refit_stage(StageId(1)).unwrap();
            let stage = &job.stages[1];
            assert!(
                stage.adaptive_decision.is_some(),
                "the stage was re-planned"
            );
            assert_eq!(stage.light, light, "input of {bytes} bytes");
        }
    }

    #[tokio::test]
    async fn the_probe_stage_may_wait_for_its_build_side() {
        let first = AdaptivePolicy {
            build_side_first: true,
            ..AdaptivePolicy::default()
        };
        let mut job = join_job(first).await;
        assert_eq!(job.switch_joins_to_broadcast().unwrap(), [StageId(1)]);
        finish_stage(&mut job, 0, 100);
        assert!(job.switch_joins_to_broadcast().unwrap().is_empty());
        assert_eq!(job.stages[1].tasks.len(), 0);
    }

    #[test]
    fn a_plan_goes_whole_to_each_executor_once_and_each_encoding_has_its_own_id() {
        let mut shipped = ShippedPlan::new(Bytes::from_static(b"plan"));
        assert_eq!(shipped.bytes_for("a"), b"plan".to_vec());
        assert!(shipped.bytes_for("a").is_empty());
        assert_eq!(shipped.bytes_for("b"), b"plan".to_vec());
        let again = ShippedPlan::new(Bytes::from_static(b"plan"));
        assert_ne!(again.id, shipped.id);
    }
}
