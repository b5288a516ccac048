//! Rewrites that make a single-node plan safe to run one partition per task.
//!
//! Some operators coordinate their partitions through memory shared inside one process.
//! A `CollectLeft` hash join that must also emit unmatched build-side rows (left, full,
//! left semi/anti/mark joins) lets the last probe partition to finish emit them; run as
//! separate tasks, no partition is last. Such joins are turned into partitioned joins;
//! nested loop joins of those types run their probe side as a single partition.
//!
//! Plans also travel to executors as datafusion-proto bytes, which drop a compressed
//! file scan's compression (the scan is marked with [`CompressedScanExec`]) and a table
//! function's column projection (`count(*)` over `generate_series` projects no columns):
//! such a node is shipped unprojected under an explicit projection.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::memory::LazyMemoryExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, replace_children_if_necessary,
};
use quiver_core::compressed_scan::CompressedScanExec;

/// Join types whose output includes build-side rows decided only after all probing.
fn emits_unmatched_build_rows(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Left
            | JoinType::LeftAnti
            | JoinType::LeftSemi
            | JoinType::LeftMark
            | JoinType::Full
    )
}

/// Applies the rewrites to every node of `plan`; `partitions` is the stage width.
pub(crate) fn make_distributable(
    plan: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node: Arc<dyn ExecutionPlan>| {
        if let Some(marked) = CompressedScanExec::wrap(&node) {
            return Ok(Transformed::yes(marked));
        }
        if let Some(generated) = node.downcast_ref::<LazyMemoryExec>()
            && let Some(shippable) = unprojected_generator(generated)?
        {
            return Ok(Transformed::yes(shippable));
        }
        if let Some(join) = node.downcast_ref::<HashJoinExec>()
            && *join.partition_mode() == PartitionMode::CollectLeft
            && emits_unmatched_build_rows(*join.join_type())
        {
            return partitioned_hash_join(join, partitions).map(Transformed::yes);
        }
        if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() {
            let probe = Arc::clone(join.right());
            if emits_unmatched_build_rows(*join.join_type())
                && probe.output_partitioning().partition_count() > 1
            {
                let left = Arc::clone(join.left());
                let single: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(probe));
                return replace_children_if_necessary(Arc::clone(&node), vec![left, single])
                    .map(Transformed::yes);
            }
        }
        Ok(Transformed::no(node))
    })
    .map(|transformed| transformed.data)
}

fn partitioned_hash_join(join: &HashJoinExec, partitions: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let build = match join.left().downcast_ref::<CoalescePartitionsExec>() {
        Some(coalesce) => Arc::clone(coalesce.input()),
        None => Arc::clone(join.left()),
    };
    let (build_keys, probe_keys): (Vec<_>, Vec<_>) = join
        .on()
        .iter()
        .map(|(l, r)| (Arc::clone(l), Arc::clone(r)))
        .unzip();
    let build: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        build,
        Partitioning::Hash(build_keys, partitions),
    )?);
    let probe: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        Arc::clone(join.right()),
        Partitioning::Hash(probe_keys, partitions),
    )?);
    join.builder()
        .with_partition_mode(PartitionMode::Partitioned)
        .with_new_children(vec![build, probe])?
        .recompute_properties()
        .build_exec()
}

/// For a generator node whose output omits some of its generators' columns: the same
/// generators with every column, under a projection that keeps what the node kept.
/// `None` when nothing is omitted (or nothing is generated).
fn unprojected_generator(node: &LazyMemoryExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    // A fresh copy of a generator shows its columns without advancing the original.
    let mut generated = None;
    for generator in node.generators() {
        let fresh = generator.read().reset_state();
        let batch = fresh.write().generate_next_batch()?;
        if let Some(batch) = batch {
            generated = Some(batch.schema());
            break;
        }
    }
    let kept = node.schema();
    let Some(generated) = generated else {
        return Ok(None);
    };
    if generated.fields().len() == kept.fields().len() {
        return Ok(None);
    }
    let projection = kept
        .fields()
        .iter()
        .map(|field| {
            let index = generated.index_of(field.name())?;
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), index));
            Ok((column, field.name().clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut all_columns = LazyMemoryExec::try_new(generated, node.generators().clone())?;
    all_columns.try_set_partitioning(node.properties().partitioning.clone())?;
    Ok(Some(Arc::new(ProjectionExec::try_new(
        projection,
        Arc::new(all_columns),
    )?)))
}
