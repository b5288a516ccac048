//! Join dynamic filters, completed inside one task.
//!
//! A hash join that reads its whole build side (`CollectLeft`, a broadcast join) can give
//! its probe side's scan a filter made from the build side's keys: DataFusion's dynamic
//! filter, with which the scan skips files and row groups no build row can match. The
//! scheduler plans these filters; the executor has to make them complete.
//!
//! DataFusion publishes a join's filter once every probe partition of the join has
//! reported its build side, and a Quiver task runs one of those partitions: the others run
//! in other tasks, often on other executors, so the filter would wait for ever. Every
//! partition of a `CollectLeft` join builds from the same rows, so the filter one task can
//! make is the one all of them would. Each such join is therefore given a probe side that
//! declares a single partition, which makes the task's own report the last one expected,
//! and is wrapped so that the operators above it still see the join's real partitioning
//! (both [`DeclaredPartitioning`]).
//!
//! The rewrite holds nothing of a task's own: it is made once, on a stage's decoded plan,
//! and the stage's tasks copy the result (`stage_plans`).
//!
//! A join in partitioned mode would need every partition's hash table, which live in other
//! tasks; its filter is dropped (the scan then reads as if there were none).

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};

/// `plan` with each hash join's dynamic filter either completable inside the task or
/// removed.
pub(crate) fn complete_join_filters_in_task(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(join) = node.downcast_ref::<HashJoinExec>() else {
            return Ok(Transformed::no(node));
        };
        if join.dynamic_expressions_produced().is_empty() {
            return Ok(Transformed::no(node));
        }
        match join.partition_mode() {
            PartitionMode::CollectLeft => {
                let kept = Arc::clone(node.properties());
                let probe: Arc<dyn ExecutionPlan> =
                    Arc::new(DeclaredPartitioning::one(Arc::clone(join.right())));
                let narrowed = Arc::clone(&node).replace_children(
                    vec![Arc::clone(join.left()), probe],
                    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                )?;
                Ok(Transformed::yes(Arc::new(DeclaredPartitioning {
                    input: narrowed,
                    properties: kept,
                    declared: Declared::Kept,
                })))
            }
            _ => Ok(Transformed::yes(node.reset_state()?)),
        }
    })
    .map(|transformed| transformed.data)
}

/// What a [`DeclaredPartitioning`] shows the operator above it.
#[derive(Debug, Clone, Copy)]
enum Declared {
    /// One partition, running whichever of its input's it is asked for: a join's probe
    /// side.
    One,
    /// The partitioning a narrowed join had before: the join itself.
    Kept,
}

/// Its input, run as it is, under a partitioning of its own.
#[derive(Debug)]
struct DeclaredPartitioning {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    declared: Declared,
}

impl DeclaredPartitioning {
    fn one(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::new(
            input
                .properties()
                .as_ref()
                .clone()
                .with_partitioning(Partitioning::UnknownPartitioning(1)),
        );
        Self {
            input,
            properties,
            declared: Declared::One,
        }
    }
}

impl DisplayAs for DeclaredPartitioning {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.name())
    }
}

impl ExecutionPlan for DeclaredPartitioning {
    fn name(&self) -> &str {
        match self.declared {
            Declared::One => "ProbeSidePartition",
            Declared::Kept => "PartitioningKept",
        }
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _visit: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = children.as_slice() else {
            return Err(DataFusionError::Internal(format!(
                "{} takes one child",
                self.name()
            )));
        };
        Ok(Arc::new(match self.declared {
            Declared::One => Self::one(Arc::clone(input)),
            Declared::Kept => Self {
                input: Arc::clone(input),
                properties: Arc::clone(&self.properties),
                declared: Declared::Kept,
            },
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
