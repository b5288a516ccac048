//! [`ShuffleWriterExec`]: the root of every stage.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt32Array, UInt64Array};
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::Time;
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;

use super::{MapOutputKey, MapOutputSummary, shuffle_io};
use crate::QuiverError;
use crate::batch_bytes::data_bytes;

/// Runs one partition of its input and stores the rows for the next stage.
///
/// With a [`RepartitionExec`] child the rows are routed by that node's partitioning (the
/// repartition itself never runs: its input does); otherwise each task's whole output
/// becomes a single output partition. Its own output is one summary row per output
/// partition: `(output_partition, rows, bytes)`.
#[derive(Debug)]
pub struct ShuffleWriterExec {
    job_id: String,
    stage_id: u32,
    child: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl ShuffleWriterExec {
    /// `child` is either a [`RepartitionExec`] (routed output) or any plan (one output
    /// partition per task).
    pub fn new(job_id: impl Into<String>, stage_id: u32, child: Arc<dyn ExecutionPlan>) -> Self {
        let tasks = Self::producing_plan(&child)
            .output_partitioning()
            .partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(write_summary_schema()),
            Partitioning::UnknownPartitioning(tasks),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            job_id: job_id.into(),
            stage_id,
            child,
            properties: Arc::new(properties),
        }
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    pub fn stage_id(&self) -> u32 {
        self.stage_id
    }

    /// The plan whose partitions this stage's tasks run.
    pub fn child(&self) -> &Arc<dyn ExecutionPlan> {
        &self.child
    }

    /// The routing node, when output is routed.
    pub fn repartition(&self) -> Option<&RepartitionExec> {
        self.child.downcast_ref::<RepartitionExec>()
    }

    /// The schema of the rows written (not of this node's summary output).
    pub fn data_schema(&self) -> SchemaRef {
        self.child.schema()
    }

    /// How many output partitions each task writes.
    pub fn output_partition_count(&self) -> usize {
        self.repartition()
            .map(|r| r.partitioning().partition_count())
            .unwrap_or(1)
    }

    fn producing_plan(child: &Arc<dyn ExecutionPlan>) -> &Arc<dyn ExecutionPlan> {
        match child.downcast_ref::<RepartitionExec>() {
            Some(repartition) => repartition.input(),
            None => child,
        }
    }
}

impl DisplayAs for ShuffleWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match self.repartition() {
            Some(r) => write!(
                f,
                "ShuffleWriterExec: stage={}, partitioning={}",
                self.stage_id,
                r.partitioning()
            ),
            None => write!(
                f,
                "ShuffleWriterExec: stage={}, per-task output",
                self.stage_id
            ),
        }
    }
}

impl ExecutionPlan for ShuffleWriterExec {
    fn name(&self) -> &'static str {
        "ShuffleWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.child]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "ShuffleWriterExec takes exactly one child".to_string(),
            ));
        }
        Ok(Arc::new(Self::new(
            self.job_id.clone(),
            self.stage_id,
            children.swap_remove(0),
        )))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let io = shuffle_io(&context)?;
        let producing = Self::producing_plan(&self.child);
        let task_count = producing.output_partitioning().partition_count();
        let routing = self.repartition().map(|r| r.partitioning().clone());
        let output_count = self.output_partition_count();
        let schema = self.data_schema();
        let batch_size = context.session_config().batch_size();
        let key = MapOutputKey {
            job_id: self.job_id.clone(),
            stage_id: self.stage_id,
            map_partition: partition as u32,
        };
        let output_limit = context
            .session_config()
            .get_extension::<TaskOutputLimit>()
            .map(|limit| limit.0);
        let mut input = producing.execute(partition, context)?;

        let write = async move {
            let mut sink = io.writer(key, Arc::clone(&schema), output_count)?;
            let mut coalescers: Vec<BatchCoalescer> = (0..output_count)
                .map(|_| BatchCoalescer::new(Arc::clone(&schema), batch_size))
                .collect();
            let mut partitioner = match routing {
                Some(partitioning) => Some(BatchPartitioner::try_new(
                    partitioning,
                    Time::new(),
                    partition,
                    task_count,
                )?),
                None => None,
            };
            let mut produced = 0u64;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                while let Some(room) = sink.room() {
                    room.await;
                }
                produced += data_bytes(&batch) as u64;
                if let Some(limit) = output_limit
                    && produced > limit
                {
                    return Err(DataFusionError::External(Box::new(
                        QuiverError::LimitExceeded {
                            what: "the bytes one task of the query produced",
                            actual: produced,
                            limit,
                            setting: "--max-query-bytes",
                        },
                    )));
                }
                // Each full batch goes into the store at once: the store holds it within
                // the executor's memory pool or spills it, not this task.
                match partitioner.as_mut() {
                    Some(p) => p.partition(batch, |out, part| {
                        coalescers[out].push_batch(part)?;
                        while let Some(done) = coalescers[out].next_completed_batch() {
                            sink.write(out, done)?;
                        }
                        Ok(())
                    })?,
                    None => {
                        coalescers[0].push_batch(batch)?;
                        while let Some(done) = coalescers[0].next_completed_batch() {
                            sink.write(0, done)?;
                        }
                    }
                }
            }
            for (out, coalescer) in coalescers.iter_mut().enumerate() {
                coalescer.finish_buffered_batch()?;
                while let Some(done) = coalescer.next_completed_batch() {
                    sink.write(out, done)?;
                }
            }
            let summary = sink.finish()?;
            summary_batch(&summary)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            write_summary_schema(),
            futures::stream::once(write),
        )))
    }
}

/// Session-config extension: bytes of output the running task may produce (what is left
/// of its query's byte limit); past it the task fails instead of filling memory or disk.
#[derive(Debug, Clone, Copy)]
pub struct TaskOutputLimit(pub u64);

/// Schema of a [`ShuffleWriterExec`]'s output: one row per output partition.
pub fn write_summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("output_partition", DataType::UInt32, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("spilled_bytes", DataType::UInt64, false),
    ]))
}

fn summary_batch(summary: &MapOutputSummary) -> Result<RecordBatch> {
    let count = summary.rows.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(0..count as u32)),
        Arc::new(UInt64Array::from(summary.rows.clone())),
        Arc::new(UInt64Array::from(summary.bytes.clone())),
        Arc::new(UInt64Array::from(vec![summary.spilled_bytes; count])),
    ];
    Ok(RecordBatch::try_new(write_summary_schema(), columns)?)
}
