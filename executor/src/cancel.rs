//! Stopping a running task promptly.
//!
//! Aborting a tokio task takes effect only when the task next yields, and some operators
//! can compute for a long time without yielding: a nested loop join whose filter rejects
//! almost every pair loops over the whole build side inside one poll, and an operator
//! that emits many batches (a cross join) feeds a consumer that never waits. Before a
//! task runs, its plan is adjusted so that cancellation is noticed within a batch:
//! nested loop join filters check the task's [`CancelFlag`] before each evaluation, and
//! joins are wrapped so that their output gives the task a chance to yield.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::datatypes::{FieldRef, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, NestedLoopJoinExecBuilder, SortMergeJoinExec,
};
use quiver_core::QuiverError;

/// Set when a task's job is stopped; checked by the task's long-running loops.
#[derive(Debug, Clone)]
pub(crate) struct CancelFlag {
    job_id: Arc<str>,
    cancelled: Arc<AtomicBool>,
}

impl CancelFlag {
    pub(crate) fn new(job_id: &str) -> Self {
        Self {
            job_id: job_id.into(),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    fn check(&self) -> Result<()> {
        if self.cancelled.load(Ordering::Acquire) {
            return Err(DataFusionError::External(Box::new(
                QuiverError::Cancelled {
                    job_id: self.job_id.to_string(),
                },
            )));
        }
        Ok(())
    }
}

/// `plan`, adjusted so that a cancelled task stops within a batch of work.
pub(crate) fn make_cancellable(
    plan: Arc<dyn ExecutionPlan>,
    flag: &CancelFlag,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let node = match node.downcast_ref::<NestedLoopJoinExec>() {
            Some(join) => match join.filter() {
                Some(filter) => {
                    let checked = JoinFilter::new(
                        Arc::new(CancellableExpr {
                            inner: Arc::clone(filter.expression()),
                            flag: flag.clone(),
                        }),
                        filter.column_indices().to_vec(),
                        Arc::clone(filter.schema()),
                    );
                    Arc::new(
                        NestedLoopJoinExecBuilder::from(join)
                            .with_filter(Some(checked))
                            .build()?,
                    ) as Arc<dyn ExecutionPlan>
                }
                None => node,
            },
            None => node,
        };
        let is_join = node.is::<NestedLoopJoinExec>()
            || node.is::<CrossJoinExec>()
            || node.is::<HashJoinExec>()
            || node.is::<SortMergeJoinExec>();
        if is_join {
            Ok(Transformed::yes(Arc::new(CooperativeExec::new(node))))
        } else {
            Ok(Transformed::no(node))
        }
    })
    .map(|transformed| transformed.data)
}

/// A join filter that fails once its task is cancelled.
#[derive(Debug)]
struct CancellableExpr {
    inner: Arc<dyn PhysicalExpr>,
    flag: CancelFlag,
}

impl PartialEq for CancellableExpr {
    fn eq(&self, other: &Self) -> bool {
        self.inner.eq(&other.inner) && Arc::ptr_eq(&self.flag.cancelled, &other.flag.cancelled)
    }
}

impl Eq for CancellableExpr {}

impl Hash for CancellableExpr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl fmt::Display for CancellableExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl PhysicalExpr for CancellableExpr {
    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        self.inner.return_field(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        self.flag.check()?;
        self.inner.evaluate(batch)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.inner]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        match (children.pop(), children.is_empty()) {
            (Some(inner), true) => Ok(Arc::new(Self {
                inner,
                flag: self.flag.clone(),
            })),
            _ => Err(DataFusionError::Internal(
                "a cancellable expression has exactly one child".to_string(),
            )),
        }
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_sql(f)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use datafusion::physical_plan::collect;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    use super::*;

    /// A nested loop join whose filter rejects nearly every pair computes for minutes
    /// without yielding; with the flag set it must stop within a second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_nested_loop_join_stops_within_a_second() {
        let context =
            SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let lineitem = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/tpch/sf0.01/lineitem/"
        );
        context
            .register_parquet("lineitem", lineitem, ParquetReadOptions::default())
            .await
            .unwrap();
        let plan = context
            .sql(
                "SELECT count(*) FROM lineitem a, lineitem b \
                 WHERE a.l_comment LIKE concat('%', b.l_shipmode, '%')",
            )
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let flag = CancelFlag::new("job-1");
        let plan = make_cancellable(plan, &flag).unwrap();
        let task_context = context.task_ctx();
        let running = tokio::spawn(async move { collect(plan, task_context).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!running.is_finished(), "the join should still be running");
        let cancelled_at = Instant::now();
        flag.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the task ends after its flag is set")
            .unwrap();
        let stopped_after = cancelled_at.elapsed();
        let error = outcome.expect_err("a cancelled task fails").to_string();
        assert!(error.contains("cancelled"), "{error}");
        assert!(stopped_after < Duration::from_secs(1), "{stopped_after:?}");
    }
}
