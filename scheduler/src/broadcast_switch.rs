//! Adaptive execution's switch of a partitioned hash join to a broadcast one. Before the
//! stage feeding a partitioned join's probe side has started, if the join's build side
//! has finished below a size, the probe stage's shuffle is skipped: the join's stage
//! takes over the probe stage's work (its scan, say) and reads the whole build side in
//! each task (`CollectLeft`), as if the planner had chosen a broadcast join.
//!
//! Only joins whose output depends on each probe row alone qualify (inner, right, right
//! semi, right anti): unmatched build rows would need every task's view. The join's stage
//! must read nothing but the two sides, with only row-by-row operators between its writer
//! and the join and between the join and each side; the probe stage must read no other
//! stage (its work moves as it is).

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};
use quiver_core::exchange::{ReadMode, ReadSlice, ShuffleReaderExec, ShuffleWriterExec};

/// The build side's stage of the partitioned join in `consumer` whose probe side is
/// stage `probe` (planned as `probe_plan`), when the join could run as a broadcast join
/// over the probe stage's work.
pub(crate) fn broadcast_build_stage(
    consumer: &Arc<dyn ExecutionPlan>,
    probe: u32,
    probe_plan: &Arc<dyn ExecutionPlan>,
) -> Option<u32> {
    if readers(probe_plan) != 0 || probe_work(probe_plan).is_none() || readers(consumer) != 2 {
        return None;
    }
    let join = top_join(consumer)?;
    let per_probe_row = matches!(
        join.join_type(),
        JoinType::Inner | JoinType::Right | JoinType::RightSemi | JoinType::RightAnti
    );
    if *join.partition_mode() != PartitionMode::Partitioned || !per_probe_row {
        return None;
    }
    let build = side_reader(join.left())?;
    let probe_side = side_reader(join.right())?;
    let hash =
        |reader: &ShuffleReaderExec| reader.mode() == ReadMode::Hash && reader.slices().is_none();
    (probe_side.stage_id() == probe && build.stage_id() != probe && hash(build) && hash(probe_side))
        .then_some(build.stage_id())
}

/// `consumer` with its partitioned join (see [`broadcast_build_stage`]) turned into a
/// broadcast join: its build side read whole by each task, its probe side the work of
/// `probe_plan` in place of the shuffle reader. The stage then runs one task per
/// partition of that work.
pub(crate) fn fuse_probe_stage(
    consumer: &Arc<dyn ExecutionPlan>,
    probe_plan: &Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let work = probe_work(probe_plan)
        .ok_or_else(|| DataFusionError::Internal("the probe stage has no work to move".into()))?;
    broadcast_top_join(consumer, &work)
}

/// The probe stage's work: what its writer (and the writer's own repartitioning) hash.
fn probe_work(probe_plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    if !probe_plan.is::<ShuffleWriterExec>() {
        return None;
    }
    let mut work = Arc::clone(probe_plan.children().first()?);
    if let Some(repartition) = work.downcast_ref::<RepartitionExec>() {
        work = Arc::clone(repartition.input());
    }
    Some(work)
}

/// Operators that handle each row (or each partition's rows) on their own: a join's
/// rows may pass through them without changing which task must see which row.
pub(crate) fn row_by_row(node: &Arc<dyn ExecutionPlan>) -> bool {
    matches!(
        node.name(),
        "ProjectionExec"
            | "FilterExec"
            | "CoalesceBatchesExec"
            | "CooperativeExec"
            | "ExchangeFilterExec"
    ) || node
        .downcast_ref::<AggregateExec>()
        .is_some_and(|aggregate| *aggregate.mode() == AggregateMode::Partial)
}

/// The first hash join under the stage's writer, through row-by-row operators.
fn top_join(plan: &Arc<dyn ExecutionPlan>) -> Option<&HashJoinExec> {
    let mut node = plan;
    if node.is::<ShuffleWriterExec>() {
        node = node.children().into_iter().next()?;
        if node.is::<RepartitionExec>() {
            node = node.children().into_iter().next()?;
        }
    }
    first_through_row_by_row(node)
}

/// The reader one side of the join reads, through row-by-row operators.
fn side_reader(side: &Arc<dyn ExecutionPlan>) -> Option<&ShuffleReaderExec> {
    first_through_row_by_row(side)
}

/// The first `T` down from `node` through row-by-row operators.
fn first_through_row_by_row<T: ExecutionPlan + 'static>(
    mut node: &Arc<dyn ExecutionPlan>,
) -> Option<&T> {
    loop {
        if let Some(found) = node.downcast_ref::<T>() {
            return Some(found);
        }
        match node.children().as_slice() {
            [only] if row_by_row(node) => node = only,
            _ => return None,
        }
    }
}

fn readers(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let mut count = 0;
    let _ = plan.apply(|node: &Arc<dyn ExecutionPlan>| {
        count += usize::from(node.is::<ShuffleReaderExec>());
        Ok(TreeNodeRecursion::Continue)
    });
    count
}

/// The top join of `consumer` in broadcast mode: its build side's reader reading every
/// partition in one, its probe side's reader replaced by `work`.
fn broadcast_top_join(
    consumer: &Arc<dyn ExecutionPlan>,
    work: &Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    replace_first::<HashJoinExec>(consumer, &|join| {
        let build = replace_first::<ShuffleReaderExec>(join.left(), &|reader| {
            let whole = ReadSlice::of(0..reader.planned_partitions() as u32);
            Ok(Arc::new(reader.clone().with_slices(vec![whole])))
        })?;
        let probe = replace_first::<ShuffleReaderExec>(join.right(), &|_| Ok(Arc::clone(work)))?;
        join.builder()
            .with_partition_mode(PartitionMode::CollectLeft)
            .with_new_children(vec![build, probe])?
            .build_exec()
    })
}

/// `node` with the first `T` on each path down replaced by what `replace` makes of it
/// (the nodes above rebuilt).
fn replace_first<T: ExecutionPlan + 'static>(
    node: &Arc<dyn ExecutionPlan>,
    replace: &dyn Fn(&T) -> Result<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(found) = node.downcast_ref::<T>() {
        return replace(found);
    }
    let children = node
        .children()
        .into_iter()
        .map(|child| replace_first(child, replace))
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(Arc::clone(node), children)
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::{ExecutionPlanProperties, displayable};

    use super::*;
    use crate::planner::tests::{dag_for, dag_with_partitioned_joins};

    const JOIN: &str = "SELECT a.k, b.v FROM (SELECT * FROM t WHERE v > 1) a \
                        {} JOIN (SELECT * FROM t WHERE k > 1) b ON a.k = b.v";

    #[tokio::test]
    async fn a_partitioned_inner_join_runs_over_its_probe_stage_reading_the_build_side_whole() {
        let dag = dag_with_partitioned_joins(&JOIN.replace("{}", "INNER")).await;
        let [build, probe, join] = &dag.stages[..] else {
            panic!("three stages expected:\n{}", dag.display());
        };
        let shown =
            |plan: &Arc<dyn ExecutionPlan>| displayable(plan.as_ref()).indent(false).to_string();
        assert!(
            shown(&join.plan).contains("mode=Partitioned"),
            "{}",
            shown(&join.plan)
        );
        let found = broadcast_build_stage(&join.plan, probe.stage_id.0, &probe.plan);
        assert_eq!(found, Some(build.stage_id.0));
        // The build stage's work reads nothing to move, but it is no probe side.
        assert_eq!(
            broadcast_build_stage(&join.plan, build.stage_id.0, &build.plan),
            None
        );

        let fused = fuse_probe_stage(&join.plan, &probe.plan).unwrap();
        let text = shown(&fused);
        assert!(text.contains("mode=CollectLeft"), "{text}");
        assert_eq!(readers(&fused), 1, "only the build side is read:\n{text}");
        assert!(
            text.contains("DataSourceExec"),
            "the probe stage's scan moved in:\n{text}"
        );
        let build_reader = side_reader(top_join(&fused).unwrap().left()).unwrap();
        assert_eq!(build_reader.partition_count(), 1, "{text}");
        // One task per partition of the probe stage's work.
        let work = probe_work(&probe.plan).unwrap();
        assert_eq!(
            fused.output_partitioning().partition_count(),
            work.output_partitioning().partition_count()
        );
    }

    #[tokio::test]
    async fn joins_that_need_every_build_row_in_one_place_stay_partitioned() {
        for kind in ["LEFT", "FULL"] {
            let dag = dag_with_partitioned_joins(&JOIN.replace("{}", kind)).await;
            let join = dag.stages.last().unwrap();
            for probe in &dag.stages[..dag.stages.len() - 1] {
                let found = broadcast_build_stage(&join.plan, probe.stage_id.0, &probe.plan);
                assert_eq!(found, None, "{kind} JOIN");
            }
        }
        // A join already broadcast has no probe stage to take in.
        let dag = dag_for(&JOIN.replace("{}", "INNER")).await;
        let join = dag.stages.last().unwrap();
        assert_eq!(
            broadcast_build_stage(&join.plan, 0, &dag.stages[0].plan),
            None
        );
    }

    #[tokio::test]
    async fn a_probe_stage_reading_another_stage_is_not_moved() {
        // The probe side is itself a join on another key: its stage reads the inner
        // join's two inputs and hashes the joined rows by `v` for the outer join.
        let sql = "SELECT a.k, bc.v FROM (SELECT * FROM t WHERE v > 1) a \
                   JOIN (SELECT b.k, c.v FROM t b JOIN t c ON b.k = c.k) bc ON a.k = bc.v";
        let dag = dag_with_partitioned_joins(sql).await;
        let join = dag.stages.last().unwrap();
        let probe = side_reader(top_join(&join.plan).unwrap().right())
            .unwrap()
            .stage_id();
        let probe = &dag.stages[probe as usize];
        assert!(readers(&probe.plan) > 0, "{}", dag.display());
        let found = broadcast_build_stage(&join.plan, probe.stage_id.0, &probe.plan);
        assert_eq!(found, None, "{}", dag.display());
    }
}
