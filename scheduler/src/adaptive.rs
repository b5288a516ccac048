//! Adaptive execution at stage boundaries. A stage starts only once every stage it reads
//! has finished, so just before its first task is handed out, what those stages really
//! produced re-plans it:
//!
//! - a stage whose hash-partitioned input turned out small (an aggregate's few groups,
//!   a filtered dimension table) runs as one task reading all of it, instead of one
//!   task per partition planned before anything ran; an empty input is the extreme case;
//! - a stage gathering its input stage's outputs one partition per producer task reads as
//!   many partitions as that stage ran tasks (which adaptive execution may have cut).
//!
//! The decision and its reason are kept with the stage for `EXPLAIN ANALYZE`. `SET
//! quiver.adaptive = false` turns the first kind off for a session's queries.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::config::{ConfigExtension, ConfigOptions};
use datafusion::common::extensions_options;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use quiver_core::exchange::{ReadMode, ShuffleReaderExec};

extensions_options! {
    /// Quiver's own session settings, under `quiver.` (`SET quiver.adaptive = false`).
    pub struct QuiverOptions {
        /// Re-plan each stage from what its input stages produced (adaptive execution).
        pub adaptive: bool, default = true
        /// A stage whose hash-partitioned input is at most this many bytes (in memory)
        /// runs as one task.
        pub adaptive_single_task_bytes: u64, default = 1024 * 1024
    }
}

impl ConfigExtension for QuiverOptions {
    const PREFIX: &'static str = "quiver";
}

/// What adaptive execution may do with one job's stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptivePolicy {
    pub enabled: bool,
    pub single_task_bytes: u64,
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
        }
    }

    /// The policy a session's settings choose.
    pub fn from_settings(options: &ConfigOptions) -> Self {
        options
            .extensions
            .get::<QuiverOptions>()
            .map(Self::of)
            .unwrap_or_default()
    }
}

/// What one finished input stage produced.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StageOutput {
    /// Tasks it ran: its output partitions, for a reader taking one per producer.
    pub(crate) producers: usize,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
}

/// A stage's plan fitted to what its inputs produced.
pub(crate) struct Refit {
    pub(crate) plan: Arc<dyn ExecutionPlan>,
    /// Why the stage changed shape, for `EXPLAIN ANALYZE`; `None` when only its readers
    /// followed an input stage's new shape.
    pub(crate) decision: Option<String>,
}

/// `plan` fitted to `inputs` (by stage id) under `policy`; `None` when it stays as it is.
pub(crate) fn refit_stage(
    plan: &Arc<dyn ExecutionPlan>,
    inputs: &HashMap<u32, StageOutput>,
    policy: AdaptivePolicy,
) -> Result<Option<Refit>> {
    let single_task = match hash_input_partitions(plan) {
        Some(partitions) if policy.enabled && partitions > 1 => {
            let read: Vec<StageOutput> = hash_inputs(plan)
                .iter()
                .map(|stage| inputs.get(stage).copied().unwrap_or_default())
                .collect();
            let bytes: u64 = read.iter().map(|output| output.bytes).sum();
            let rows: u64 = read.iter().map(|output| output.rows).sum();
            (bytes <= policy.single_task_bytes).then(|| {
                let input = match rows {
                    0 => "its input is empty".to_string(),
                    _ => format!("its input is {} ({rows} rows)", size(bytes)),
                };
                format!(
                    "adaptive: {partitions} tasks -> 1: {input}; at most {} runs as one \
                     task (quiver.adaptive_single_task_bytes)",
                    size(policy.single_task_bytes)
                )
            })
        }
        _ => None,
    };
    let refitted = Arc::clone(plan).transform_up(|node: Arc<dyn ExecutionPlan>| {
        let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
            return Ok(Transformed::no(node));
        };
        let fitted = match reader.mode() {
            ReadMode::Hash if single_task.is_some() => reader.clone().coalesced(),
            ReadMode::PerProducer => match inputs.get(&reader.stage_id()) {
                Some(output) if output.producers != reader.partition_count() => {
                    reader.clone().with_producers(output.producers)
                }
                _ => return Ok(Transformed::no(node)),
            },
            _ => return Ok(Transformed::no(node)),
        };
        Ok(Transformed::yes(Arc::new(fitted) as Arc<dyn ExecutionPlan>))
    })?;
    Ok(refitted.transformed.then(|| Refit {
        plan: refitted.data,
        decision: single_task,
    }))
}

/// The partition count every leaf of `plan` reads, when every leaf is a hash-mode
/// reader and they all read the same count: only then may the stage's partitions be
/// merged (its joins and unions pair partitions of their inputs).
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
                    && reader.coalesced_from().is_none()
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

fn size(bytes: u64) -> String {
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
        }
    }

    fn policy() -> AdaptivePolicy {
        AdaptivePolicy {
            enabled: true,
            single_task_bytes: 1000,
        }
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
