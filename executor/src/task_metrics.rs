//! The operator metrics a task reports: its own share of work, though its operators may
//! share metrics sets and a build side with the stage's other tasks here.
//!
//! A task's plan is a copy of its stage's decoded plan (`stage_plans`). Leaves (scans,
//! readers) are shared between the copies, and a hash join keeps its metrics set and its
//! build side when copied, so a set may hold figures of several tasks, each labelled with
//! the partition that produced it: a task counts only its own partition's. A broadcast
//! join's build side is the exception: it is built once, by whichever task gets there
//! first, in that task's copy of the build-side operators, labelled with the build side's
//! own partitions. That task reports the whole build side; the others report none of it.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::MetricsSet;
use quiver_core::proto::OperatorMetrics;

/// Which figures of an operator's metrics set belong to the task.
#[derive(Debug, Clone, Copy)]
enum Share {
    /// Those labelled with the task's partition (and unlabelled ones).
    Partition(usize),
    /// All of them: the task built this broadcast build side.
    Whole,
    /// None: another task built this broadcast build side.
    Nothing,
}

/// Each operator's metrics in `plan` for the task of `partition`, in pre-order (the
/// root first).
pub(crate) fn operator_metrics(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
) -> Vec<OperatorMetrics> {
    let mut collected = Vec::new();
    visit(plan, Share::Partition(partition), &mut collected);
    collected
}

fn visit(node: &Arc<dyn ExecutionPlan>, share: Share, collected: &mut Vec<OperatorMetrics>) {
    collected.push(figures(node, share));
    let broadcast = node
        .downcast_ref::<HashJoinExec>()
        .is_some_and(|join| *join.partition_mode() == PartitionMode::CollectLeft);
    for (index, child) in node.children().into_iter().enumerate() {
        // A build side with operators of its own: they are this task's copies, which
        // ran only if this task built. (A bare leaf is shared, and built under its
        // partition 0 labels like any other.)
        let share = match share {
            Share::Partition(_) if broadcast && index == 0 && !child.children().is_empty() => {
                match has_figures(child) {
                    true => Share::Whole,
                    false => Share::Nothing,
                }
            }
            other => other,
        };
        visit(child, share, collected);
    }
}

fn has_figures(node: &Arc<dyn ExecutionPlan>) -> bool {
    node.metrics()
        .is_some_and(|set| set.iter().next().is_some())
}

fn figures(node: &Arc<dyn ExecutionPlan>, share: Share) -> OperatorMetrics {
    let metrics = node.metrics().map(|set| {
        let mut own = MetricsSet::new();
        for metric in set.iter() {
            let counts = match share {
                Share::Partition(partition) => metric
                    .partition()
                    .is_none_or(|labelled| labelled == partition),
                Share::Whole => true,
                Share::Nothing => false,
            };
            if counts {
                own.push(Arc::clone(metric));
            }
        }
        own.aggregate_by_name()
    });
    let value = |read: &dyn Fn(&MetricsSet) -> Option<usize>| {
        metrics.as_ref().and_then(read).unwrap_or(0) as u64
    };
    OperatorMetrics {
        operator: node.name().to_string(),
        measured: metrics.is_some(),
        output_rows: value(&|m| m.output_rows()),
        elapsed_compute_nanos: value(&|m| m.elapsed_compute()),
        spill_count: value(&|m| m.spill_count()),
        spilled_bytes: value(&|m| m.spilled_bytes()),
    }
}
