//! Stage plans decoded once per executor, and the copies its tasks run.
//!
//! The scheduler sends a stage's plan bytes with the stage's first task here; the tasks
//! after it carry only the plan's id. Decoding is not free either: a scan's plan lists
//! every file range of every partition (with its statistics), so a stage of n tasks
//! would decode n times a plan that grows with n. The first task of a stage on an
//! executor decodes the plan and keeps its bytes; the tasks after it copy that decoded
//! plan, each operator made anew from its own parts. A task whose plan is not held here
//! (dropped while idle or after a failure) has the caller fetch the bytes.
//!
//! A copy keeps what DataFusion's operators keep when rebuilt with new children: a
//! broadcast join's build side (its `OnceAsync`) and its metrics set among them. The
//! tasks of a stage on one executor therefore fetch a broadcast build side and build its
//! hash table once between them, and each task reports only its own partition's
//! metrics (see `runner::operator_metrics`). Leaves (scans, exchange readers) are shared
//! as they are: each run opens its own streams.
//!
//! A decoded plan serves at most [`TASKS_PER_DECODE`] tasks (see there); the stage's plan
//! is then decoded again. A decoded plan is dropped when a task of its stage fails (a
//! failed build side would otherwise be shared by the retries), when the job ends, and
//! when no task of its stage has run here for [`IDLE_LIFETIME`] (checked when a task
//! starts and at every heartbeat). Plans holding per-run state outside those rules
//! (writes count their rows, recursive queries link a work table) are decoded per task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::error::Result;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::work_table::WorkTableExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use parking_lot::Mutex;
use quiver_core::write::WriteFilesExec;

/// How long a stage's decoded plan outlives its last task on this executor.
pub(crate) const IDLE_LIFETIME: Duration = Duration::from_millis(500);

/// Most decoded plans kept; past it, the longest idle go first.
const MAX_PLANS: usize = 256;

/// Tasks one decoded plan serves before the next task decodes the stage's plan anew.
/// Shared leaves keep every task's metrics in one set, which each task reads through
/// whole when it reports its own (DataFusion offers no other way): without a bound, a
/// stage of n tasks on one executor would read n * n / 2 task's worth of figures.
const TASKS_PER_DECODE: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StageKey {
    job_id: String,
    stage_id: u32,
}

struct DecodedPlan {
    /// Names the encoding (`TaskDefinition.plan_id`).
    plan_id: u64,
    /// Kept to decode again: the scheduler sends them with the stage's first task here.
    bytes: Arc<[u8]>,
    /// `None` when each task decodes its own (plans with per-run state).
    plan: Option<Arc<dyn ExecutionPlan>>,
    running: usize,
    /// Tasks this decoded plan has served.
    served: usize,
    last_used: Instant,
}

/// This executor's decoded stage plans.
#[derive(Default)]
pub(crate) struct StagePlans {
    decoded: Arc<Mutex<HashMap<StageKey, DecodedPlan>>>,
}

/// A task's hold on its stage's decoded plan: while any is held, the plan stays.
pub(crate) struct PlanLease {
    decoded: Arc<Mutex<HashMap<StageKey, DecodedPlan>>>,
    key: StageKey,
}

impl Drop for PlanLease {
    fn drop(&mut self) {
        if let Some(entry) = self.decoded.lock().get_mut(&self.key) {
            entry.running = entry.running.saturating_sub(1);
            entry.last_used = Instant::now();
        }
    }
}

impl StagePlans {
    /// The plan a task of `job_id`'s stage `stage_id` runs: a copy of the stage's decoded
    /// plan `plan_id`, made by `decode` from `bytes` first if this executor has none for
    /// them. `bytes` may be empty when the plan is held here; `None` when it is not (the
    /// caller fetches the bytes and asks again).
    pub(crate) fn plan_for(
        &self,
        job_id: &str,
        stage_id: u32,
        plan_id: u64,
        bytes: &[u8],
        decode: impl Fn(&[u8]) -> Result<Arc<dyn ExecutionPlan>>,
    ) -> Result<Option<(Arc<dyn ExecutionPlan>, PlanLease)>> {
        let key = StageKey {
            job_id: job_id.to_string(),
            stage_id,
        };
        let mut decoded = self.decoded.lock();
        // Plans of stages whose tasks here are over hold their build sides' memory:
        // they go as soon as other work starts, not only at the next heartbeat.
        evict_idle(&mut decoded, IDLE_LIFETIME);
        let mut running = 0;
        let mut held: Option<Arc<[u8]>> = None;
        if let Some(entry) = decoded.get_mut(&key)
            && entry.plan_id == plan_id
        {
            match &entry.plan {
                Some(plan) if entry.served < TASKS_PER_DECODE => {
                    let copy = fresh_copy(plan)?;
                    entry.running += 1;
                    entry.served += 1;
                    entry.last_used = Instant::now();
                    return Ok(Some((copy, self.lease(key))));
                }
                None => {
                    let plan = decode(&entry.bytes)?;
                    entry.running += 1;
                    entry.last_used = Instant::now();
                    return Ok(Some((plan, self.lease(key))));
                }
                // Served its share: decoded anew below; the tasks still running keep
                // their copies, and their leases count against the new entry.
                Some(_) => {
                    running = entry.running;
                    held = Some(Arc::clone(&entry.bytes));
                }
            }
        }
        let bytes: Arc<[u8]> = match held {
            Some(held) => held,
            None if bytes.is_empty() => return Ok(None),
            None => Arc::from(bytes),
        };
        // Decoding happens under the lock: a stage's other tasks wait for it rather
        // than decode the same bytes beside it.
        let plan = decode(&bytes)?;
        let (task_plan, shared) = match shareable(&plan) {
            true => (fresh_copy(&plan)?, Some(plan)),
            false => (plan, None),
        };
        if decoded.len() >= MAX_PLANS {
            evict_idle(&mut decoded, Duration::ZERO);
        }
        decoded.insert(
            key.clone(),
            DecodedPlan {
                plan_id,
                bytes,
                plan: shared,
                running: running + 1,
                served: 1,
                last_used: Instant::now(),
            },
        );
        Ok(Some((task_plan, self.lease(key))))
    }

    fn lease(&self, key: StageKey) -> PlanLease {
        PlanLease {
            decoded: Arc::clone(&self.decoded),
            key,
        }
    }

    /// Drops the decoded plan of `job_id`'s stage `stage_id`: one of its tasks failed.
    pub(crate) fn forget_stage(&self, job_id: &str, stage_id: u32) {
        self.decoded.lock().remove(&StageKey {
            job_id: job_id.to_string(),
            stage_id,
        });
    }

    /// Drops every decoded plan of `job_id`: the job has ended.
    pub(crate) fn forget_job(&self, job_id: &str) {
        self.decoded.lock().retain(|key, _| key.job_id != job_id);
    }

    /// Drops the plans no task has used for [`IDLE_LIFETIME`].
    pub(crate) fn evict_idle(&self) {
        evict_idle(&mut self.decoded.lock(), IDLE_LIFETIME);
    }

    /// Decoded plans held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.decoded.lock().len()
    }
}

fn evict_idle(decoded: &mut HashMap<StageKey, DecodedPlan>, idle: Duration) {
    decoded.retain(|_, entry| entry.running > 0 || entry.last_used.elapsed() < idle);
}

/// Whether copies of `plan` may share what operators keep when rebuilt.
fn shareable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let own = !(plan.is::<WriteFilesExec>()
        || plan.is::<RecursiveQueryExec>()
        || plan.is::<WorkTableExec>());
    own && plan.children().into_iter().all(shareable)
}

/// `plan` with every operator above the leaves made anew, its properties kept.
fn fresh_copy(plan: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let children = plan.children();
    if children.is_empty() {
        return Ok(Arc::clone(plan));
    }
    let copies = children
        .into_iter()
        .map(fresh_copy)
        .collect::<Result<Vec<_>>>()?;
    Arc::clone(plan).replace_children(
        copies,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::execution::TaskContext;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    use quiver_core::codec::{decode_plan, encode_plan};

    use super::*;

    async fn encoded_join() -> (Vec<u8>, Arc<TaskContext>) {
        let context =
            SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        for table in ["nation", "region"] {
            let path = format!(
                "{}/../testdata/tpch/sf0.01/{table}/",
                env!("CARGO_MANIFEST_DIR")
            );
            context
                .register_parquet(table, &path, ParquetReadOptions::default())
                .await
                .unwrap();
        }
        let plan = context
            .sql("SELECT n_name, r_name FROM nation JOIN region ON n_regionkey = r_regionkey")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        (encode_plan(plan).unwrap().to_vec(), context.task_ctx())
    }

    fn leaves(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn ExecutionPlan>> {
        match plan.children() {
            children if children.is_empty() => vec![Arc::clone(plan)],
            children => children.into_iter().flat_map(leaves).collect(),
        }
    }

    #[tokio::test]
    async fn a_stages_tasks_copy_one_decoded_plan() {
        let (bytes, context) = encoded_join().await;
        let decode = |bytes: &[u8]| decode_plan(bytes, &context);
        let plans = StagePlans::default();
        let (first, first_lease) = plans
            .plan_for("job-1", 3, 1, &bytes, decode)
            .unwrap()
            .unwrap();
        let (second, second_lease) = plans
            .plan_for("job-1", 3, 1, &bytes, decode)
            .unwrap()
            .unwrap();
        assert_eq!(plans.len(), 1);
        // Operators are each task's own; the leaves are shared.
        assert!(!Arc::ptr_eq(&first, &second));
        let (first_leaves, second_leaves) = (leaves(&first), leaves(&second));
        assert_eq!(first_leaves.len(), second_leaves.len());
        assert!(
            first_leaves
                .iter()
                .zip(&second_leaves)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        );
        // Another stage decodes anew.
        plans
            .plan_for("job-1", 4, 1, &bytes, decode)
            .unwrap()
            .unwrap();
        assert_eq!(plans.len(), 2);

        // Held plans outlive idleness; released ones go once idle, and a job's end
        // drops its plans at once.
        drop(first_lease);
        plans.evict_idle();
        assert_eq!(plans.len(), 2);
        drop(second_lease);
        evict_idle(&mut plans.decoded.lock(), Duration::ZERO);
        assert_eq!(plans.len(), 0);
        let (_plan, _lease) = plans
            .plan_for("job-1", 3, 1, &bytes, decode)
            .unwrap()
            .unwrap();
        plans.forget_job("job-1");
        assert_eq!(plans.len(), 0);
    }

    #[tokio::test]
    async fn a_named_plan_is_sent_once_and_asked_for_when_no_longer_held() {
        let (bytes, context) = encoded_join().await;
        let decode = |bytes: &[u8]| decode_plan(bytes, &context);
        let plans = StagePlans::default();
        // Without the bytes and not held: the caller must fetch them.
        assert!(
            plans
                .plan_for("job-1", 3, 7, &[], decode)
                .unwrap()
                .is_none()
        );
        let (first, first_lease) = plans
            .plan_for("job-1", 3, 7, &bytes, decode)
            .unwrap()
            .unwrap();
        // The stage's next task comes without the bytes and shares the decoded plan.
        let (second, _lease) = plans.plan_for("job-1", 3, 7, &[], decode).unwrap().unwrap();
        assert!(Arc::ptr_eq(&leaves(&first)[0], &leaves(&second)[0]));
        // Another encoding of the stage (new input locations) is not the held one.
        assert!(
            plans
                .plan_for("job-1", 3, 8, &[], decode)
                .unwrap()
                .is_none()
        );
        // A failed task's stage is dropped: its next task asks for the plan.
        drop(first_lease);
        plans.forget_stage("job-1", 3);
        assert!(
            plans
                .plan_for("job-1", 3, 7, &[], decode)
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_decoded_plan_serves_a_bounded_number_of_tasks() {
        let (bytes, context) = encoded_join().await;
        let decode = |bytes: &[u8]| decode_plan(bytes, &context);
        let plans = StagePlans::default();
        let mut leases = Vec::new();
        let (first, lease) = plans
            .plan_for("job-1", 3, 1, &bytes, decode)
            .unwrap()
            .unwrap();
        leases.push(lease);
        for _ in 1..TASKS_PER_DECODE {
            let (plan, lease) = plans
                .plan_for("job-1", 3, 1, &bytes, decode)
                .unwrap()
                .unwrap();
            assert!(Arc::ptr_eq(&leaves(&first)[0], &leaves(&plan)[0]));
            leases.push(lease);
        }
        // The next task gets leaves (and metrics sets) of a new decoding.
        let (next, lease) = plans
            .plan_for("job-1", 3, 1, &bytes, decode)
            .unwrap()
            .unwrap();
        assert!(!Arc::ptr_eq(&leaves(&first)[0], &leaves(&next)[0]));
        leases.push(lease);
        assert_eq!(plans.len(), 1);
        // Every task still running holds the new entry: it stays until all are done.
        leases.truncate(1);
        evict_idle(&mut plans.decoded.lock(), Duration::ZERO);
        assert_eq!(plans.len(), 1);
        leases.clear();
        evict_idle(&mut plans.decoded.lock(), Duration::ZERO);
        assert_eq!(plans.len(), 0);
    }

    #[tokio::test]
    async fn a_failed_tasks_stage_is_decoded_again() {
        let (bytes, context) = encoded_join().await;
        let decode = |bytes: &[u8]| decode_plan(bytes, &context);
        let plans = StagePlans::default();
        let (first, _lease) = plans
            .plan_for("job-1", 0, 1, &bytes, decode)
            .unwrap()
            .unwrap();
        plans.forget_stage("job-1", 0);
        assert_eq!(plans.len(), 0);
        let (again, _lease) = plans
            .plan_for("job-1", 0, 1, &bytes, decode)
            .unwrap()
            .unwrap();
        assert!(!Arc::ptr_eq(&leaves(&first)[0], &leaves(&again)[0]));
    }
}
