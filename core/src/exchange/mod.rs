//! The exchange: where a plan is cut into stages.
//!
//! A producing stage ends in a [`ShuffleWriterExec`], which runs one partition of its input
//! and hands the rows, routed to output partitions, to the executor's shuffle store. A
//! consuming stage starts from a [`ShuffleReaderExec`], which reads those outputs back, from
//! the local store or from another executor over Flight. Both reach the executor's storage
//! through [`ShuffleIo`], found in the task's session config as a [`ShuffleContext`].

mod reader;
mod writer;

use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;

pub use reader::{ReadMode, ReadSlice, ShuffleReaderExec};
pub use writer::{ShuffleWriterExec, TaskOutputLimit, write_summary_schema};

use crate::proto::PartitionLocation;

/// Names one producer task's output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapOutputKey {
    pub job_id: String,
    pub stage_id: u32,
    pub map_partition: u32,
}

/// Rows and bytes one producer task wrote to each output partition.
#[derive(Debug, Clone, Default)]
pub struct MapOutputSummary {
    pub rows: Vec<u64>,
    pub bytes: Vec<u64>,
    pub spilled_bytes: u64,
}

/// One producer task's output on its way into the store, a batch at a time.
pub trait MapOutputSink: Send {
    /// Adds `batch` to output partition `partition`.
    fn write(&mut self, partition: usize, batch: RecordBatch) -> Result<()>;

    /// The output is complete: it becomes readable. (Dropped unfinished, it leaves
    /// nothing behind.)
    fn finish(self: Box<Self>) -> Result<MapOutputSummary>;

    /// A wait before writing more (asked again after it): a client reading the output
    /// as it is written has not yet taken what it was given. `None`: write on.
    fn room(&mut self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        None
    }
}

/// Storage for shuffle output, as the executor provides it to the exchange nodes.
pub trait ShuffleIo: Debug + Send + Sync {
    /// Starts one producer task's output of `partitions` output partitions.
    fn writer(
        &self,
        key: MapOutputKey,
        schema: SchemaRef,
        partitions: usize,
    ) -> Result<Box<dyn MapOutputSink>>;

    /// Streams output partition `output_partition` of the producer at `location`,
    /// wherever it lives.
    fn open(
        &self,
        job_id: &str,
        stage_id: u32,
        location: &PartitionLocation,
        output_partition: u32,
        schema: SchemaRef,
    ) -> Result<SendableRecordBatchStream>;
}

/// Session-config extension that carries the executor's [`ShuffleIo`] into tasks.
#[derive(Debug, Clone)]
pub struct ShuffleContext {
    pub io: Arc<dyn ShuffleIo>,
}

pub(crate) fn shuffle_io(context: &TaskContext) -> Result<Arc<dyn ShuffleIo>> {
    context
        .session_config()
        .get_extension::<ShuffleContext>()
        .map(|ctx| Arc::clone(&ctx.io))
        .ok_or_else(|| {
            DataFusionError::Internal(
                "exchange node run outside a Quiver executor (no ShuffleContext)".to_string(),
            )
        })
}
