//! The shortest path for the smallest queries. A query planned as one stage that reads
//! only data carried in its plan (`SELECT 1`, `VALUES`, `EXPLAIN`, the answer of a
//! catalog statement, system tables) runs here on the scheduler instead of on an
//! executor, and its rows wait here until the client reads them: no task launch, no
//! status report, no connection to an executor. What dashboards and drivers send most
//! (`SELECT 1` to check a connection, metadata queries) answers in one round trip less.
//!
//! A result is read once, by the session that ran the query (or the same login), within
//! the result retention time; one larger than [`MAX_HELD_BYTES`] is not held here: the
//! query runs on the executors as any other. All held results together stay within
//! 256 MiB: past it, the oldest unread are dropped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::StreamExt;
use parking_lot::Mutex;
use quiver_core::exchange::ShuffleWriterExec;
use std::sync::Arc;

use crate::job::JobOwner;
use crate::planning::PlannedJob;

/// The type of the tickets of held results (an `Any` the Flight SQL service does not
/// know, so it reaches `do_get_fallback`).
pub(crate) const HELD_RESULT_TYPE: &str = "type.googleapis.com/quiver.HeldResult";

/// Bytes of rows (in memory) a held result may have.
pub(crate) const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;

/// Bytes all held results may have together; past it the oldest unread go first.
const MAX_HELD_TOTAL_BYTES: usize = 256 * 1024 * 1024;

/// Results computed on the scheduler, waiting to be read.
pub(crate) struct HeldResults {
    results: Mutex<HashMap<String, Held>>,
    retention: Duration,
}

struct Held {
    bytes: usize,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    owner: JobOwner,
    expires: Instant,
}

impl HeldResults {
    pub(crate) fn new(retention: Duration) -> Self {
        Self {
            results: Mutex::new(HashMap::new()),
            retention,
        }
    }

    /// Keeps the rows of job `job_id` for its owner to read.
    pub(crate) fn hold(
        &self,
        job_id: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        owner: JobOwner,
    ) {
        let now = Instant::now();
        let bytes = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        let mut results = self.results.lock();
        results.retain(|_, held| held.expires > now);
        let mut total: usize = results.values().map(|held| held.bytes).sum::<usize>() + bytes;
        while total > MAX_HELD_TOTAL_BYTES {
            let Some(oldest) = results
                .iter()
                .min_by_key(|(_, held)| held.expires)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            total -= results.remove(&oldest).map_or(0, |held| held.bytes);
        }
        results.insert(
            job_id.to_string(),
            Held {
                bytes,
                schema,
                batches,
                owner,
                expires: now + self.retention,
            },
        );
    }

    /// Drops the rows of job `job_id` unread (its client cancelled it).
    pub(crate) fn forget(&self, job_id: &str) {
        self.results.lock().remove(job_id);
    }

    /// The rows of job `job_id`, taken (a result is read once), if the caller in
    /// `session` as `user` may read them.
    pub(crate) fn take(
        &self,
        job_id: &str,
        session: &str,
        user: Option<&str>,
    ) -> Option<(SchemaRef, Vec<RecordBatch>)> {
        let mut results = self.results.lock();
        let readable = results
            .get(job_id)
            .is_some_and(|held| held.expires > Instant::now() && held.owner.admits(session, user));
        if !readable {
            return None;
        }
        results
            .remove(job_id)
            .map(|held| (held.schema, held.batches))
    }
}

/// The plan to run here when `planned` is a query of one stage reading only data
/// carried in its plan (no write, no `EXPLAIN ANALYZE`); `None` for every other job,
/// decided without running anything.
pub(crate) fn runs_here(planned: &PlannedJob) -> Option<Arc<dyn ExecutionPlan>> {
    if planned.write.is_some() || planned.analyze.is_some() {
        return None;
    }
    let [stage] = planned.dag.stages.as_slice() else {
        return None;
    };
    if !stage.inputs.is_empty() || !stage.is_light() {
        return None;
    }
    let writer = stage.plan.downcast_ref::<ShuffleWriterExec>()?;
    writer
        .repartition()
        .is_none()
        .then(|| Arc::clone(writer.child()))
}

/// Runs `plan` ([`runs_here`]'s) and answers its rows in partition order; `None` when
/// they outgrow [`MAX_HELD_BYTES`] (the caller then runs the query on the executors).
pub(crate) async fn run_here(
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> Result<Option<Vec<RecordBatch>>> {
    let mut batches = Vec::new();
    let mut bytes = 0;
    for partition in 0..plan.output_partitioning().partition_count() {
        let mut stream = plan.execute(partition, Arc::clone(&context))?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            bytes += batch.get_array_memory_size();
            if bytes > MAX_HELD_BYTES {
                return Ok(None);
            }
            batches.push(batch);
        }
    }
    Ok(Some(batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Schema;

    #[test]
    fn a_held_result_is_read_once_by_its_owner_within_its_time() {
        let schema = Arc::new(Schema::empty());
        let owner = JobOwner {
            user: Some("ann".to_string()),
            session: "s1".to_string(),
        };
        let held = HeldResults::new(Duration::from_secs(60));
        held.hold("j1", Arc::clone(&schema), Vec::new(), owner.clone());
        assert!(
            held.take("j1", "s2", Some("bob")).is_none(),
            "another user's"
        );
        assert!(
            held.take("j1", "s2", Some("ann")).is_some(),
            "the same login"
        );
        assert!(held.take("j1", "s1", Some("ann")).is_none(), "read once");
        let expired = HeldResults::new(Duration::ZERO);
        expired.hold("j2", schema, Vec::new(), owner);
        assert!(expired.take("j2", "s1", Some("ann")).is_none(), "expired");
    }
}
