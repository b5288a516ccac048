//! The distributed planner: cuts a DataFusion physical plan into a DAG of stages.
//!
//! A cut is made at every exchange: a `RepartitionExec` (rows routed by hash or round
//! robin), and the input of a `CoalescePartitionsExec` or `SortPreservingMergeExec` (many
//! partitions gathered into one; this also covers the build side of a `CollectLeft` join,
//! which DataFusion feeds through a coalesce). The producing side becomes a stage rooted in
//! a [`ShuffleWriterExec`]; the consuming side reads it through a [`ShuffleReaderExec`].

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{AcrossPartitions, PhysicalExpr};
use datafusion::physical_plan::Partitioning;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, collect, displayable, replace_children_if_necessary,
};
use quiver_core::codec::encode_plan;

use crate::distributable::make_distributable;
use quiver_core::exchange::{ReadMode, ShuffleReaderExec, ShuffleWriterExec};
use quiver_core::{JobId, StageId};

fn writes_files(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<quiver_core::write::WriteFilesExec>() || plan.children().into_iter().any(writes_files)
}

/// Plan operators a light stage may have at most.
const LIGHT_STAGE_MAX_NODES: usize = 64;

/// One stage: a plan rooted in a [`ShuffleWriterExec`], run as one task per partition.
#[derive(Debug, Clone)]
pub struct StagePlan {
    pub stage_id: StageId,
    pub plan: Arc<dyn ExecutionPlan>,
    /// Stages whose output this stage reads.
    pub inputs: Vec<StageId>,
    /// The plan as executors get it, when planning already encoded it and nothing is
    /// left to fill in (a stage without inputs): launching reuses it.
    pub encoded: Option<bytes::Bytes>,
}

impl StagePlan {
    /// How many tasks the stage runs.
    pub fn task_count(&self) -> usize {
        self.plan.output_partitioning().partition_count()
    }

    /// Whether the stage may run beside the executors' control plane, without a slot:
    /// it reads nothing but data carried in its plan (constants, system tables) and its
    /// input stages' output, and its plan is small. (A UNION ALL of a thousand constant
    /// rows reads only memory too, but would hold the control plane for seconds.)
    pub fn is_light(&self) -> bool {
        self.reads_only_memory()
            && !writes_files(&self.plan)
            && crate::limits::count_nodes(&self.plan, LIGHT_STAGE_MAX_NODES + 1)
                <= LIGHT_STAGE_MAX_NODES
    }

    /// Whether the stage reads nothing but data carried in its plan (constants, system
    /// tables) and its input stages' output.
    pub fn reads_only_memory(&self) -> bool {
        fn leaves_in_memory(plan: &Arc<dyn ExecutionPlan>) -> bool {
            let children = plan.children();
            if children.is_empty() {
                return plan.is::<PlaceholderRowExec>()
                    || plan.is::<EmptyExec>()
                    || plan.is::<ShuffleReaderExec>()
                    || plan.downcast_ref::<DataSourceExec>().is_some_and(|scan| {
                        scan.data_source()
                            .downcast_ref::<MemorySourceConfig>()
                            .is_some()
                    });
            }
            children.into_iter().all(leaves_in_memory)
        }
        leaves_in_memory(&self.plan)
    }
}

/// A query cut into stages, in an order where every stage comes after its inputs.
#[derive(Debug, Clone)]
pub struct StageDag {
    pub stages: Vec<StagePlan>,
    /// The schema of the query's result.
    pub schema: SchemaRef,
}

impl StageDag {
    /// The stage whose output is the query's result.
    pub fn final_stage(&self) -> &StagePlan {
        self.stages
            .last()
            .expect("a stage DAG has at least one stage")
    }

    /// A readable rendering of every stage, for `EXPLAIN`.
    pub fn display(&self) -> String {
        let mut out = String::new();
        for stage in &self.stages {
            let inputs: Vec<String> = stage.inputs.iter().map(|s| s.to_string()).collect();
            out.push_str(&format!(
                "Stage {} ({} tasks{}):\n",
                stage.stage_id,
                stage.task_count(),
                if inputs.is_empty() {
                    String::new()
                } else {
                    format!(", reads stages {}", inputs.join(", "))
                }
            ));
            for line in displayable(stage.plan.as_ref())
                .indent(false)
                .to_string()
                .lines()
            {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// Cuts `plan` into stages for job `job_id`.
///
/// Leaves that cannot travel to executors (such as `information_schema` tables, which
/// list the scheduler's catalog) are evaluated here first and shipped as in-memory data.
pub async fn plan_stages(
    job_id: &JobId,
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> Result<StageDag> {
    let partitions = context.session_config().target_partitions().max(1);
    let plan = make_distributable(plan, partitions)?;
    let plan = materialize_local_leaves(plan, &context).await?;
    let schema = plan.schema();
    let mut cutter = StageCutter {
        job_id: job_id.to_string(),
        stages: Vec::new(),
    };
    let (root, inputs) = cutter.cut(plan)?;
    cutter.add_stage(root, inputs);
    Ok(StageDag {
        stages: cutter.stages,
        schema,
    })
}

struct StageCutter {
    job_id: String,
    stages: Vec<StagePlan>,
}

impl StageCutter {
    /// Returns the plan with its exchanges replaced by readers, and the stages it reads.
    fn cut(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> Result<(Arc<dyn ExecutionPlan>, Vec<StageId>)> {
        let mut inputs = Vec::new();
        let mut children = Vec::new();
        // A recursive CTE's recursive term reads the work table its query fills in this
        // task's memory, iteration after iteration: it runs whole, inside the query's task.
        let recursive = plan.is::<RecursiveQueryExec>();
        for (index, child) in plan.children().into_iter().enumerate() {
            if recursive && index == 1 {
                children.push(Arc::clone(child));
                continue;
            }
            let (child, child_inputs) = self.cut(Arc::clone(child))?;
            inputs.extend(child_inputs);
            children.push(child);
        }
        let plan = if children.is_empty() {
            plan
        } else {
            replace_children_if_necessary(plan, children)?
        };

        if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
            let partitions = repartition.partitioning().partition_count();
            let preserve_order = repartition.preserve_order();
            let ordering = plan.output_ordering().cloned();
            let hashed_by = hash_columns(repartition.partitioning());
            let stage_id = self.add_stage(Arc::clone(&plan), inputs);
            let mut reader: Arc<dyn ExecutionPlan> = Arc::new(
                self.reader_of(stage_id, &plan, partitions, ReadMode::Hash)
                    .with_hash_columns(hashed_by),
            );
            if let (true, Some(ordering)) = (preserve_order, ordering) {
                // Rows from several producers arrive interleaved: restore the order the
                // repartition promised within each partition.
                reader = Arc::new(SortExec::new(ordering, reader).with_preserve_partitioning(true));
            }
            return Ok((reader, vec![stage_id]));
        }

        let gathers = plan.is::<CoalescePartitionsExec>() || plan.is::<SortPreservingMergeExec>();
        if gathers {
            let child = Arc::clone(plan.children()[0]);
            let partitions = child.output_partitioning().partition_count();
            // A gather straight over a reader needs no stage of its own: the one task
            // that gathers reads every partition itself.
            if partitions > 1 && !child.is::<ShuffleReaderExec>() {
                let stage_id = self.add_stage(Arc::clone(&child), inputs);
                let reader: Arc<dyn ExecutionPlan> =
                    Arc::new(self.reader_of(stage_id, &child, partitions, ReadMode::PerProducer));
                let plan = replace_children_if_necessary(plan, vec![reader])?;
                return Ok((plan, vec![stage_id]));
            }
        }
        Ok((plan, inputs))
    }

    /// A reader of stage `stage_id`, whose rows `producing` makes, promising the facts
    /// about them that an exchange keeps: uniform constant columns and equal columns
    /// (nothing below grouping sets, see [`has_grouping_sets`]).
    fn reader_of(
        &self,
        stage_id: StageId,
        producing: &Arc<dyn ExecutionPlan>,
        partitions: usize,
        mode: ReadMode,
    ) -> ShuffleReaderExec {
        let reader = ShuffleReaderExec::new(
            self.job_id.clone(),
            stage_id.0,
            producing.schema(),
            partitions,
            mode,
        );
        if has_grouping_sets(producing) {
            return reader;
        }
        reader
            .with_constant_columns(uniform_constant_columns(producing))
            .with_equal_columns(equal_column_pairs(producing))
    }

    fn add_stage(&mut self, producing: Arc<dyn ExecutionPlan>, inputs: Vec<StageId>) -> StageId {
        let stage_id = StageId(self.stages.len() as u32);
        let writer = ShuffleWriterExec::new(self.job_id.clone(), stage_id.0, producing);
        self.stages.push(StagePlan {
            stage_id,
            plan: Arc::new(writer),
            inputs,
            encoded: None,
        });
        stage_id
    }
}

/// Whether `plan` aggregates grouping sets within its stage. DataFusion calls a constant
/// grouping key constant, though the rows of the sets without it hold NULL there; a
/// reader gathering several producers' rows would then feed a final aggregate that
/// believes its input sorted on that key, and emits a group more than once. Below such an
/// aggregate a reader promises nothing.
fn has_grouping_sets(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if plan.is::<ShuffleReaderExec>() {
        return false;
    }
    plan.downcast_ref::<AggregateExec>()
        .is_some_and(|aggregate| !aggregate.group_expr().is_single())
        || plan.children().into_iter().any(has_grouping_sets)
}

/// The columns a hash exchange hashes rows by, when its keys are plain columns (a reader
/// can then promise the same partitioning); none otherwise.
fn hash_columns(partitioning: &Partitioning) -> Vec<usize> {
    let Partitioning::Hash(exprs, _) = partitioning else {
        return Vec::new();
    };
    let columns: Vec<usize> = exprs
        .iter()
        .filter_map(|expr| expr.downcast_ref::<Column>().map(Column::index))
        .collect();
    match columns.len() == exprs.len() {
        true => columns,
        false => Vec::new(),
    }
}

/// Pairs of output columns of `plan` that hold equal values in every row (each column
/// paired with the first of its equivalence class): equal before an exchange, equal
/// after it.
fn equal_column_pairs(plan: &Arc<dyn ExecutionPlan>) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for class in plan.equivalence_properties().eq_group().iter() {
        let columns: Vec<usize> = class
            .iter()
            .filter_map(|expr| expr.downcast_ref::<Column>().map(Column::index))
            .collect();
        if let Some((&first, rest)) = columns.split_first() {
            pairs.extend(rest.iter().map(|&other| (first, other)));
        }
    }
    pairs
}

/// Columns of `plan`'s output that hold one value in every row of every partition: they
/// stay constant however an exchange regroups the rows, so its reader may promise it.
fn uniform_constant_columns(plan: &Arc<dyn ExecutionPlan>) -> Vec<usize> {
    let equivalence = plan.equivalence_properties();
    plan.schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(index, field)| {
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), *index));
            matches!(
                equivalence.is_expr_constant(&column),
                Some(AcrossPartitions::Uniform(_))
            )
        })
        .map(|(index, _)| index)
        .collect()
}

/// Replaces leaves that executors cannot decode with their data, computed here.
async fn materialize_local_leaves(
    plan: Arc<dyn ExecutionPlan>,
    context: &Arc<TaskContext>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let children = plan.children();
    if children.is_empty() {
        if encode_plan(Arc::clone(&plan)).is_ok() {
            return Ok(plan);
        }
        let schema = plan.schema();
        let batches = collect(plan, Arc::clone(context)).await?;
        let memory: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[batches], schema, None)?;
        return Ok(memory);
    }
    let mut new_children = Vec::with_capacity(children.len());
    for child in children {
        new_children.push(Box::pin(materialize_local_leaves(Arc::clone(child), context)).await?);
    }
    replace_children_if_necessary(plan, new_children)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// `sql` over a two-partition table `t (k, v)`, cut into stages.
    pub(crate) async fn dag_for(sql: &str) -> StageDag {
        dag_with(sql, false).await
    }

    /// [`dag_for`], with every hash join partitioned (none broadcast).
    pub(crate) async fn dag_with_partitioned_joins(sql: &str) -> StageDag {
        dag_with(sql, true).await
    }

    async fn dag_with(sql: &str, partitioned_joins: bool) -> StageDag {
        let mut config = SessionConfig::new().with_target_partitions(4);
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.enable_round_robin_repartition = false;
        if partitioned_joins {
            optimizer.hash_join_single_partition_threshold = 0;
            optimizer.hash_join_single_partition_threshold_rows = 0;
        }
        let context = SessionContext::new_with_config(config);
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = |start: i64| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from_iter_values(start..start + 100)),
                    Arc::new(Int64Array::from_iter_values(
                        (start..start + 100).map(|v| v % 7),
                    )),
                ],
            )
            .unwrap()
        };
        let table =
            MemTable::try_new(Arc::clone(&schema), vec![vec![batch(0)], vec![batch(100)]]).unwrap();
        context.register_table("t", Arc::new(table)).unwrap();
        let plan = context
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        plan_stages(&JobId::from("test"), plan, context.task_ctx())
            .await
            .unwrap()
    }

    fn readers_of(plan: &Arc<dyn ExecutionPlan>) -> Vec<u32> {
        let mut found = Vec::new();
        plan.apply(|node| {
            if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
                found.push(reader.stage_id());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found
    }

    #[tokio::test]
    async fn an_aggregation_is_cut_at_its_exchanges() {
        let dag = dag_for("SELECT v, count(*) FROM t GROUP BY v ORDER BY v").await;
        assert!(dag.stages.len() >= 2, "{}", dag.display());
        for (index, stage) in dag.stages.iter().enumerate() {
            assert_eq!(stage.stage_id.0 as usize, index);
            assert!(stage.plan.is::<ShuffleWriterExec>());
            let mut read: Vec<u32> = readers_of(&stage.plan);
            read.sort();
            read.dedup();
            let mut inputs: Vec<u32> = stage.inputs.iter().map(|s| s.0).collect();
            inputs.sort();
            assert_eq!(read, inputs, "stage {index} reads exactly its inputs");
            assert!(inputs.iter().all(|&input| (input as usize) < index));
            // No exchange is left inside a stage.
            stage
                .plan
                .apply(|node| {
                    assert!(
                        !node.is::<RepartitionExec>()
                            || Arc::ptr_eq(node, stage.plan.children()[0])
                    );
                    Ok(TreeNodeRecursion::Continue)
                })
                .unwrap();
        }
        // ORDER BY gathers into one sorted partition.
        assert_eq!(dag.final_stage().task_count(), 1);
        assert!(dag.display().contains("SortPreservingMergeExec"));
    }

    #[tokio::test]
    async fn a_plan_without_exchanges_is_one_stage() {
        let dag = dag_for("SELECT k + 1 FROM t WHERE v = 3").await;
        assert_eq!(dag.stages.len(), 1, "{}", dag.display());
        assert_eq!(dag.final_stage().task_count(), 2);
        assert!(dag.final_stage().inputs.is_empty());
    }
}
