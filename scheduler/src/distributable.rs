//! Rewrites that make a single-node plan safe to run one partition per task.
//!
//! Some operators coordinate their partitions through memory shared inside one process.
//! A `CollectLeft` hash join that must also emit unmatched build-side rows (left, full,
//! left semi/anti/mark joins) lets the last probe partition to finish emit them; run as
//! separate tasks, no partition is last. Such joins are turned into partitioned joins;
//! nested loop joins of those types run their probe side as a single partition.
//!
//! A rewrite changes a node's output partitioning, which its parent may have relied on
//! (a `CollectLeft` join needs one build partition; an aggregate, rows hashed on its
//! keys): after the rewrites, each parent gets the exchange it requires back.
//!
//! Plans also travel to executors as datafusion-proto bytes, which drop a compressed
//! file scan's compression (the scan is marked with [`CompressedScanExec`]) and a table
//! function's column projection (`count(*)` over `generate_series` projects no columns):
//! such a node is shipped unprojected under an explicit projection.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::PartitioningSatisfaction;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::memory::LazyMemoryExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    Distribution, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    replace_children_if_necessary,
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
        let (node, restored) = match restore_input_distribution(&node, partitions)? {
            Some(restored) => (restored, true),
            None => (node, false),
        };
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
        Ok(if restored {
            Transformed::yes(node)
        } else {
            Transformed::no(node)
        })
    })
    .map(|transformed| transformed.data)
}

/// `node` with an exchange under each child that no longer has the distribution `node`
/// requires (a rewrite below changed it): a coalesce (or an order-preserving merge) for a
/// single partition, a hash repartition for hashed rows. `None` when every child still
/// fits. The node's own rewrite (a `CollectLeft` join becoming partitioned) follows.
fn restore_input_distribution(
    node: &Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let requirements = node.input_distribution_requirements().into_per_child();
    let orderings = node.required_input_ordering();
    let mut changed = false;
    let mut children = Vec::new();
    for (index, child) in node.children().into_iter().enumerate() {
        let child = Arc::clone(child);
        let required = requirements
            .get(index)
            .cloned()
            .unwrap_or(Distribution::UnspecifiedDistribution);
        let partitioning = child.output_partitioning();
        let restored: Arc<dyn ExecutionPlan> = match &required {
            Distribution::SinglePartition if partitioning.partition_count() > 1 => {
                changed = true;
                let needs_order = orderings.get(index).is_some_and(Option::is_some);
                match child.output_ordering() {
                    Some(ordering) if needs_order => {
                        Arc::new(SortPreservingMergeExec::new(ordering.clone(), child))
                    }
                    _ => Arc::new(CoalescePartitionsExec::new(child)),
                }
            }
            Distribution::KeyPartitioned(keys)
                if partitioning.satisfaction(&required, child.equivalence_properties(), true)
                    == PartitioningSatisfaction::NotSatisfied =>
            {
                changed = true;
                Arc::new(RepartitionExec::try_new(
                    child,
                    Partitioning::Hash(keys.clone(), partitions),
                )?)
            }
            _ => child,
        };
        children.push(restored);
    }
    if !changed {
        return Ok(None);
    }
    replace_children_if_necessary(Arc::clone(node), children).map(Some)
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
    let partitioned = join
        .builder()
        .with_partition_mode(PartitionMode::Partitioned)
        .with_new_children(vec![build, probe])?
        .recompute_properties()
        .build_exec()?;
    // A limit pushed into a join of one output partition is the query's whole limit;
    // spread over partitions, each would keep that many rows.
    match join.fetch() {
        Some(fetch) if join.properties().partitioning.partition_count() == 1 && partitions > 1 => {
            Ok(Arc::new(
                CoalescePartitionsExec::new(partitioned).with_fetch(Some(fetch)),
            ))
        }
        _ => Ok(partitioned),
    }
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
