//! Adaptive execution at stage boundaries. A stage starts only once every stage it reads
//! has finished, so just before its first task is handed out, what those stages really
//! produced re-plans it. For a stage reading only hash-partitioned exchanges:
//!
//! - a small input (an aggregate's few groups, a filtered dimension table) runs as one
//!   task reading all of it, instead of one task per partition planned before anything
//!   ran; an empty input is the extreme case;
//! - neighbouring small partitions are read together by one task, up to the average
//!   partition's size, so empty and tiny partitions stop costing a task each;
//! - a skewed partition of a partitioned join's probe side (many times the median and
//!   above a floor) is split into several tasks, each reading the partition from some of
//!   its producers together with the whole matching build partition. Only joins whose
//!   output depends on each probe row alone qualify (inner, right, right semi, right
//!   anti), and only when nothing above the join in the stage gathers rows by key.
//!
//! - a partitioned join whose build side finished small, before its probe side's stage
//!   started, becomes a broadcast join running over the probe stage's work
//!   (`broadcast_switch`); work an empty input makes pointless is not run
//!   (`empty_inputs`).
//!
//! A stage gathering its input stage's outputs one partition per producer task reads as
//! many partitions as that stage ran tasks (which adaptive execution may have changed).
//!
//! Each decision and its reason are kept with the stage for `EXPLAIN ANALYZE`. `SET
//! quiver.adaptive = false` turns the re-planning off for a session's queries.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use quiver_core::exchange::{ReadMode, ReadSlice, ShuffleReaderExec, ShuffleWriterExec};

use crate::broadcast_switch::row_by_row;
use crate::empty_inputs::cut_empty_inputs;
use crate::quiver_options::{QuiverOptions, quiver_options};

/// What adaptive execution may do with one job's stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptivePolicy {
    pub enabled: bool,
    pub single_task_bytes: u64,
    pub skew_factor: u64,
    pub skew_bytes: u64,
    pub broadcast_bytes: u64,
    pub build_side_first: bool,
}

impl Default for AdaptivePolicy {
    fn default() -> Self {
        Self::of(&QuiverOptions::default())
    }
}

impl AdaptivePolicy {
    fn of(options: &QuiverOptions) -> Self {
        Self {
            enabled: options.adaptive,
            single_task_bytes: options.adaptive_single_task_bytes,
            skew_factor: options.adaptive_skew_factor.max(1),
            skew_bytes: options.adaptive_skew_bytes,
            broadcast_bytes: options.adaptive_broadcast_bytes,
            build_side_first: options.adaptive_build_side_first,
        }
    }

    /// The policy a session's settings choose.
    pub fn from_settings(options: &ConfigOptions) -> Self {
        Self::of(&quiver_options(options))
    }
}

/// What one finished input stage produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct StageOutput {
    /// Tasks it ran: its output partitions, for a reader taking one per producer.
    pub(crate) producers: usize,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    /// Bytes of each output partition over all its tasks; empty when not known.
    pub(crate) partition_bytes: Vec<u64>,
}

/// A stage's plan fitted to what its inputs produced.
pub(crate) struct Refit {
    pub(crate) plan: Arc<dyn ExecutionPlan>,
    /// Why the stage changed shape, for `EXPLAIN ANALYZE`; `None` when only its readers
    /// followed an input stage's new shape.
    pub(crate) decision: Option<String>,
}

/// How a stage's hash readers are to read their partitions, and why.
struct Layout {
    /// The slices every hash reader reads...
    shared: Vec<ReadSlice>,
    /// ... except the probe side of a split join, which reads these (same length).
    probe: Option<(u32, Vec<ReadSlice>)>,
    decision: String,
}

/// `plan` fitted to `inputs` (by stage id) under `policy`; `None` when it stays as it is.
pub(crate) fn refit_stage(
    plan: &Arc<dyn ExecutionPlan>,
    inputs: &HashMap<u32, StageOutput>,
    policy: AdaptivePolicy,
) -> Result<Option<Refit>> {
    let layout = match hash_input_partitions(plan) {
        Some(partitions) if policy.enabled && partitions > 1 => {
            plan_layout(plan, partitions, inputs, policy)
        }
        _ => None,
    };
    let refitted = Arc::clone(plan).transform_up(|node: Arc<dyn ExecutionPlan>| {
        let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
            return Ok(Transformed::no(node));
        };
        let fitted = match (reader.mode(), &layout) {
            (ReadMode::Hash, Some(layout)) => {
                let slices = match &layout.probe {
                    Some((stage, slices)) if *stage == reader.stage_id() => slices,
                    _ => &layout.shared,
                };
                reader.clone().with_slices(slices.clone())
            }
            (ReadMode::PerProducer, _) => match inputs.get(&reader.stage_id()) {
                Some(output) if output.producers != reader.partition_count() => {
                    reader.clone().with_producers(output.producers)
                }
                _ => return Ok(Transformed::no(node)),
            },
            _ => return Ok(Transformed::no(node)),
        };
        Ok(Transformed::yes(Arc::new(fitted) as Arc<dyn ExecutionPlan>))
    })?;
    let mut decision = layout.map(|layout| layout.decision);
    let mut fitted = refitted.transformed.then_some(refitted.data);
    if policy.enabled {
        let plan = fitted.as_ref().unwrap_or(plan);
        if let Some(cut) = cut_empty_inputs(plan, inputs)? {
            decision = Some(match decision {
                Some(layout) => format!("{layout}\n{}", cut.decision),
                None => cut.decision,
            });
            fitted = Some(cut.plan);
        }
    }
    Ok(fitted.map(|plan| Refit { plan, decision }))
}

/// The layout of a stage reading `partitions` hash partitions from `inputs`; `None`
/// when one task per partition, as planned, is best.
fn plan_layout(
    plan: &Arc<dyn ExecutionPlan>,
    partitions: usize,
    inputs: &HashMap<u32, StageOutput>,
    policy: AdaptivePolicy,
) -> Option<Layout> {
    let read: Vec<(u32, &StageOutput)> = hash_inputs(plan)
        .into_iter()
        .filter_map(|stage| inputs.get(&stage).map(|output| (stage, output)))
        .collect();
    let bytes: u64 = read.iter().map(|(_, output)| output.bytes).sum();
    let rows: u64 = read.iter().map(|(_, output)| output.rows).sum();
    if bytes <= policy.single_task_bytes {
        let input = match rows {
            0 => "its input is empty".to_string(),
            _ => format!("its input is {} ({rows} rows)", size(bytes)),
        };
        return Some(Layout {
            shared: vec![ReadSlice::of(0..partitions as u32)],
            probe: None,
            decision: format!(
                "adaptive: {partitions} tasks -> 1: {input}; at most {} runs as one task \
                 (quiver.adaptive_single_task_bytes)",
                size(policy.single_task_bytes)
            ),
        });
    }
    // Per-partition sizes, summed over the stage's inputs; unknown sizes leave it be.
    let mut sizes = vec![0u64; partitions];
    for (_, output) in &read {
        if output.partition_bytes.len() != partitions {
            return None;
        }
        for (total, bytes) in sizes.iter_mut().zip(&output.partition_bytes) {
            *total += bytes;
        }
    }
    let target = (bytes / partitions as u64).max(policy.single_task_bytes);
    let probe = split_probe_stage(plan).and_then(|stage| {
        let output = read.iter().find(|(id, _)| *id == stage)?.1;
        Some((stage, output))
    });
    let median = probe.map_or(0, |(_, output)| lower_median(&output.partition_bytes));
    // A skewed partition of the probe side: its bytes, its producers, and into how many
    // tasks it splits (at least 2); `None` for a partition that stays whole.
    let split_of = |partition: usize| -> Option<(u64, u32, u32)> {
        let (_, output) = probe?;
        let bytes = output.partition_bytes[partition];
        let skewed = bytes > policy.skew_bytes && bytes > median.saturating_mul(policy.skew_factor);
        let pieces = bytes.div_ceil(target).min(output.producers as u64) as u32;
        (skewed && pieces > 1).then_some((bytes, output.producers as u32, pieces))
    };
    // Each task of the re-planned stage: the partitions it reads, and of which producers
    // of the probe side (every producer when `None`).
    let mut tasks: Vec<(std::ops::Range<u32>, Option<std::ops::Range<u32>>)> = Vec::new();
    let mut merged = 0usize;
    let mut splits = Vec::new();
    let mut group: Option<(u32, u64)> = None;
    for (index, &partition_size) in sizes.iter().enumerate() {
        let partition = index as u32;
        if let Some((bytes, producers, split)) = split_of(index) {
            if let Some((start, _)) = group.take() {
                tasks.push((start..partition, None));
            }
            for piece in 0..split {
                let from = producers * piece / split;
                let to = producers * (piece + 1) / split;
                tasks.push((partition..partition + 1, Some(from..to)));
            }
            splits.push(format!(
                "partition {index} ({}, {}x the median) split in {split} by producer",
                size(bytes),
                bytes / median.max(1)
            ));
            continue;
        }
        group = match group {
            Some((start, held)) if held + partition_size <= target => {
                merged += 1;
                Some((start, held + partition_size))
            }
            Some((start, _)) => {
                tasks.push((start..partition, None));
                Some((partition, partition_size))
            }
            None => Some((partition, partition_size)),
        };
    }
    if let Some((start, _)) = group {
        tasks.push((start..partitions as u32, None));
    }
    if merged == 0 && splits.is_empty() {
        return None;
    }
    let mut reasons = Vec::new();
    if merged > 0 {
        reasons.push(format!(
            "small partitions read together up to {} a task (the average partition)",
            size(target)
        ));
    }
    let split_any = !splits.is_empty();
    reasons.extend(splits);
    let decision = format!(
        "adaptive: {partitions} tasks -> {}: {}",
        tasks.len(),
        reasons.join("; ")
    );
    let shared = tasks
        .iter()
        .map(|(partitions, _)| ReadSlice::of(partitions.clone()))
        .collect();
    let probe = match split_any {
        false => None,
        true => probe.map(|(stage, _)| {
            let slices = tasks
                .into_iter()
                .map(|(partitions, producers)| ReadSlice {
                    partitions,
                    producers,
                })
                .collect();
            (stage, slices)
        }),
    };
    Some(Layout {
        shared,
        probe,
        decision,
    })
}

/// The lower median of `sizes` (of two partitions, the smaller).
fn lower_median(sizes: &[u64]) -> u64 {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}

/// The stage whose partitions may be split by producer: the probe side of a partitioned
/// hash join whose output depends on each probe row alone, with only row-by-row
/// operators between the stage's root and the join and between the join and that
/// reader. `None` when the stage has no such join, or reads that stage more than once.
fn split_probe_stage(plan: &Arc<dyn ExecutionPlan>) -> Option<u32> {
    let mut node = Arc::clone(plan);
    if node.is::<ShuffleWriterExec>() {
        node = Arc::clone(node.children().first()?);
        // The writer's own repartitioning: it hashes every row anew, wherever it ran.
        if node.is::<RepartitionExec>() {
            node = Arc::clone(node.children().first()?);
        }
    }
    let mut below_join = false;
    loop {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            let stage = reader.stage_id();
            let mut readers_of_stage = 0;
            let _ = plan.apply(|node: &Arc<dyn ExecutionPlan>| {
                if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>()
                    && reader.stage_id() == stage
                {
                    readers_of_stage += 1;
                }
                Ok(TreeNodeRecursion::Continue)
            });
            return (below_join && readers_of_stage == 1).then_some(stage);
        }
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            let per_probe_row = matches!(
                join.join_type(),
                JoinType::Inner | JoinType::Right | JoinType::RightSemi | JoinType::RightAnti
            );
            if join.mode != PartitionMode::Partitioned || !per_probe_row {
                return None;
            }
            below_join = true;
            node = Arc::clone(join.right());
            continue;
        }
        match node.children().as_slice() {
            [only] if row_by_row(&node) => node = Arc::clone(only),
            _ => return None,
        }
    }
}

/// The partition count every leaf of `plan` reads, when every leaf is a hash-mode
/// reader and they all read the same count: only then may the stage's partitions be
/// re-planned (its joins and unions pair partitions of their inputs).
fn hash_input_partitions(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    let mut partitions = None;
    let mut alike = true;
    let _ = plan.apply(|node: &Arc<dyn ExecutionPlan>| {
        if !node.children().is_empty() {
            return Ok(TreeNodeRecursion::Continue);
        }
        match node.downcast_ref::<ShuffleReaderExec>() {
            Some(reader)
                if reader.mode() == ReadMode::Hash
                    && reader.slices().is_none()
                    && partitions.is_none_or(|count| count == reader.partition_count()) =>
            {
                partitions = Some(reader.partition_count());
                Ok(TreeNodeRecursion::Continue)
            }
            _ => {
                alike = false;
                Ok(TreeNodeRecursion::Stop)
            }
        }
    });
    partitions.filter(|_| alike)
}

/// The stages `plan` reads in hash mode.
fn hash_inputs(plan: &Arc<dyn ExecutionPlan>) -> Vec<u32> {
    let mut stages = Vec::new();
    let _ = plan.apply(|node: &Arc<dyn ExecutionPlan>| {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>()
            && reader.mode() == ReadMode::Hash
            && !stages.contains(&reader.stage_id())
        {
            stages.push(reader.stage_id());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    stages
}

pub(crate) fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::NullEquality;
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::ExecutionPlanProperties;
    use datafusion::physical_plan::union::UnionExec;

    fn reader(stage: u32, partitions: usize, mode: ReadMode) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        Arc::new(ShuffleReaderExec::new(
            "job", stage, schema, partitions, mode,
        ))
    }

    fn output(producers: usize, bytes: u64) -> StageOutput {
        StageOutput {
            producers,
            rows: bytes / 8,
            bytes,
            partition_bytes: Vec::new(),
        }
    }

    /// A stage's output with these partition sizes.
    fn sized(producers: usize, partition_bytes: &[u64]) -> StageOutput {
        StageOutput {
            partition_bytes: partition_bytes.to_vec(),
            ..output(producers, partition_bytes.iter().sum())
        }
    }

    fn policy() -> AdaptivePolicy {
        AdaptivePolicy {
            enabled: true,
            single_task_bytes: 1000,
            skew_factor: 4,
            skew_bytes: 5000,
            broadcast_bytes: 0,
            build_side_first: false,
        }
    }

    fn join(
        build: u32,
        probe: u32,
        partitions: usize,
        join_type: JoinType,
    ) -> Arc<dyn ExecutionPlan> {
        let left = reader(build, partitions, ReadMode::Hash);
        let right = reader(probe, partitions, ReadMode::Hash);
        let on = vec![(
            Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>,
            Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>,
        )];
        Arc::new(
            HashJoinExec::try_new(
                left,
                right,
                on,
                None,
                &join_type,
                None,
                PartitionMode::Partitioned,
                NullEquality::NullEqualsNothing,
                false,
            )
            .unwrap(),
        )
    }

    fn slices_of(plan: &Arc<dyn ExecutionPlan>, stage: u32) -> Vec<ReadSlice> {
        let mut found = Vec::new();
        let _ = plan.apply(|node: &Arc<dyn ExecutionPlan>| {
            if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>()
                && reader.stage_id() == stage
            {
                found = reader.slices().unwrap_or_default().to_vec();
            }
            Ok(TreeNodeRecursion::Continue)
        });
        found
    }

    #[test]
    fn small_neighbouring_partitions_are_read_together_up_to_the_average() {
        let plan = UnionExec::try_new(vec![
            reader(1, 6, ReadMode::Hash),
            reader(2, 6, ReadMode::Hash),
        ])
        .unwrap();
        // Partition sizes over both inputs: 10, 10, 4000, 10, 10, 3960 (average 1333).
        let inputs = HashMap::from([
            (1, sized(2, &[5, 5, 2000, 5, 5, 1980])),
            (2, sized(2, &[5, 5, 2000, 5, 5, 1980])),
        ]);
        let refit = refit_stage(&plan, &inputs, policy()).unwrap().unwrap();
        let expected = vec![
            ReadSlice::of(0..2),
            ReadSlice::of(2..3),
            ReadSlice::of(3..5),
            ReadSlice::of(5..6),
        ];
        assert_eq!(slices_of(&refit.plan, 1), expected);
        assert_eq!(slices_of(&refit.plan, 2), expected);
        let decision = refit.decision.unwrap();
        assert!(decision.contains("6 tasks -> 4"), "{decision}");

        // Partitions alike in size stay one task each.
        let even = HashMap::from([
            (1, sized(2, &[700, 700, 700, 700, 700, 700])),
            (2, sized(2, &[700, 700, 700, 700, 700, 700])),
        ]);
        assert!(refit_stage(&plan, &even, policy()).unwrap().is_none());
        // Sizes not known: as planned.
        let unknown = HashMap::from([(1, output(2, 9000)), (2, output(2, 9000))]);
        assert!(refit_stage(&plan, &unknown, policy()).unwrap().is_none());
    }

    #[test]
    fn a_skewed_probe_partition_is_split_by_producer_beside_its_whole_build_partition() {
        let plan = join(1, 2, 3, JoinType::Inner);
        // Probe partition 1 is 40,000 bytes against a median of 1,000 (4x and over 5,000).
        let inputs = HashMap::from([
            (1, sized(4, &[800, 800, 800])),
            (2, sized(4, &[1000, 40_000, 1000])),
        ]);
        let refit = refit_stage(&plan, &inputs, policy()).unwrap().unwrap();
        let build = slices_of(&refit.plan, 1);
        let probe = slices_of(&refit.plan, 2);
        // Average partition: 44,400 / 3 = 14,800 bytes: the 40,000 go in 3 pieces.
        assert_eq!(build.len(), 5, "{build:?}");
        assert_eq!(
            build,
            vec![
                ReadSlice::of(0..1),
                ReadSlice::of(1..2),
                ReadSlice::of(1..2),
                ReadSlice::of(1..2),
                ReadSlice::of(2..3),
            ]
        );
        let split: Vec<Option<std::ops::Range<u32>>> =
            probe.iter().map(|slice| slice.producers.clone()).collect();
        assert_eq!(split, vec![None, Some(0..1), Some(1..2), Some(2..4), None]);
        assert!(
            probe
                .iter()
                .zip(&build)
                .all(|(p, b)| p.partitions == b.partitions)
        );
        let decision = refit.decision.unwrap();
        assert!(decision.contains("3 tasks -> 5"), "{decision}");
        assert!(
            decision.contains("partition 1 (39.1 KiB, 40x the median) split in 3"),
            "{decision}"
        );

        // Below the floor, or not many times the median: no split.
        let floor = AdaptivePolicy {
            skew_bytes: 50_000,
            ..policy()
        };
        assert!(refit_stage(&plan, &inputs, floor).unwrap().is_none());
        let mild = HashMap::from([
            (1, sized(4, &[800, 800, 800])),
            (2, sized(4, &[3000, 9000, 3000])),
        ]);
        assert!(refit_stage(&plan, &mild, policy()).unwrap().is_none());
    }

    #[test]
    fn joins_that_track_build_rows_are_not_split() {
        let inputs = HashMap::from([
            (1, sized(4, &[800, 800, 800])),
            (2, sized(4, &[1000, 40_000, 1000])),
        ]);
        for join_type in [
            JoinType::Left,
            JoinType::Full,
            JoinType::LeftSemi,
            JoinType::LeftAnti,
        ] {
            let plan = join(1, 2, 3, join_type);
            assert!(
                refit_stage(&plan, &inputs, policy()).unwrap().is_none(),
                "{join_type:?}"
            );
        }
        // A skewed build side is not split either: its rows must meet every probe row.
        let build_skewed = HashMap::from([
            (1, sized(4, &[1000, 40_000, 1000])),
            (2, sized(4, &[800, 800, 800])),
        ]);
        let plan = join(1, 2, 3, JoinType::Inner);
        assert!(
            refit_stage(&plan, &build_skewed, policy())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_small_hash_input_runs_as_one_task_and_a_large_one_as_planned() {
        let plan = UnionExec::try_new(vec![
            reader(1, 4, ReadMode::Hash),
            reader(2, 4, ReadMode::Hash),
        ])
        .unwrap();
        let small = HashMap::from([(1, output(3, 400)), (2, output(3, 600))]);
        let refit = refit_stage(&plan, &small, policy()).unwrap().unwrap();
        assert_eq!(refit.plan.output_partitioning().partition_count(), 2);
        let decision = refit.decision.unwrap();
        assert!(decision.contains("4 tasks -> 1"), "{decision}");
        assert!(decision.contains("1000 B (125 rows)"), "{decision}");

        let large = HashMap::from([(1, output(3, 400)), (2, output(3, 601))]);
        assert!(refit_stage(&plan, &large, policy()).unwrap().is_none());
        let off = AdaptivePolicy {
            enabled: false,
            ..policy()
        };
        assert!(refit_stage(&plan, &small, off).unwrap().is_none());
    }

    #[test]
    fn stages_with_other_leaves_keep_their_partitions() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let mixed = UnionExec::try_new(vec![
            reader(1, 4, ReadMode::Hash),
            Arc::new(datafusion::physical_plan::empty::EmptyExec::new(schema)),
        ])
        .unwrap();
        let inputs = HashMap::from([(1, output(2, 0))]);
        assert!(refit_stage(&mixed, &inputs, policy()).unwrap().is_none());
        let uneven = UnionExec::try_new(vec![
            reader(1, 4, ReadMode::Hash),
            reader(2, 2, ReadMode::Hash),
        ])
        .unwrap();
        let inputs = HashMap::from([(1, output(2, 0)), (2, output(2, 0))]);
        assert!(refit_stage(&uneven, &inputs, policy()).unwrap().is_none());
    }

    #[test]
    fn a_per_producer_reader_follows_its_producers_task_count() {
        let plan = reader(1, 4, ReadMode::PerProducer);
        let inputs = HashMap::from([(1, output(1, 1 << 30))]);
        let refit = refit_stage(&plan, &inputs, policy()).unwrap().unwrap();
        assert_eq!(refit.plan.output_partitioning().partition_count(), 1);
        assert!(refit.decision.is_none());
        let unchanged = HashMap::from([(1, output(4, 1 << 30))]);
        assert!(refit_stage(&plan, &unchanged, policy()).unwrap().is_none());
    }
}
