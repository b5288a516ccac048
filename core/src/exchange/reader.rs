//! [`ShuffleReaderExec`]: the leaf where a stage reads what earlier stages wrote.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{AcrossPartitions, ConstExpr, EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;

use super::shuffle_io;
use crate::proto::PartitionLocation;

/// How a reader's partitions map onto the producers' outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Partition `p` is output partition `p` of every producer task (a hash exchange).
    Hash,
    /// Partition `i` is producer task `i`'s whole output (a gather or merge).
    PerProducer,
}

/// What one partition of a re-planned hash-mode reader reads: output partitions
/// `partitions` of the producer tasks `producers` (every producer when `None`).
/// Adaptive execution merges small partitions into one slice and splits a skewed one
/// into several slices over disjoint producers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSlice {
    pub partitions: Range<u32>,
    pub producers: Option<Range<u32>>,
}

impl ReadSlice {
    /// Output partitions `partitions` of every producer.
    pub fn of(partitions: Range<u32>) -> Self {
        Self {
            partitions,
            producers: None,
        }
    }
}

impl fmt::Display for ReadSlice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let Range { start, end } = self.partitions;
        match end.saturating_sub(start) {
            1 => write!(f, "{start}")?,
            _ => write!(f, "{start}-{}", end.saturating_sub(1))?,
        }
        match &self.producers {
            Some(producers) if producers.len() == 1 => {
                write!(f, " of producer {}", producers.start)
            }
            Some(producers) => write!(
                f,
                " of producers {}-{}",
                producers.start,
                producers.end.saturating_sub(1)
            ),
            None => Ok(()),
        }
    }
}

/// Reads the output of stage `stage_id` once it is written.
///
/// The scheduler plans it without `locations` and fills them in when the producing stage
/// has finished, just before the consuming stage's tasks are sent out.
#[derive(Debug, Clone)]
pub struct ShuffleReaderExec {
    job_id: String,
    stage_id: u32,
    schema: SchemaRef,
    mode: ReadMode,
    locations: Vec<PartitionLocation>,
    /// Columns with one value in every row, across all partitions.
    constant_columns: Vec<usize>,
    /// Pairs of columns equal in every row.
    equal_columns: Vec<(usize, usize)>,
    /// The columns the exchange it replaces hashed rows by (hash mode): partition `p`
    /// holds every row whose key hashes to `p`, as it did before the cut.
    hash_columns: Vec<usize>,
    /// Hash mode, re-planned by adaptive execution: partition `i` reads `slices[i]` of
    /// the `planned` output partitions.
    slices: Option<Arc<[ReadSlice]>>,
    /// The output partitions each producer writes (hash mode).
    planned: usize,
    properties: Arc<PlanProperties>,
}

impl ShuffleReaderExec {
    pub fn new(
        job_id: impl Into<String>,
        stage_id: u32,
        schema: SchemaRef,
        partitions: usize,
        mode: ReadMode,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            job_id: job_id.into(),
            stage_id,
            schema,
            mode,
            locations: Vec::new(),
            constant_columns: Vec::new(),
            equal_columns: Vec::new(),
            hash_columns: Vec::new(),
            slices: None,
            planned: partitions,
            properties: Arc::new(properties),
        }
    }

    /// The same hash-mode reader, promising the hash partitioning on `columns` of the
    /// exchange it replaces: operators above that were built on it (an `InterleaveExec`
    /// of a UNION ALL, whose inputs must be partitioned alike) stay valid. Ignored for
    /// other modes, or with an index past the schema.
    pub fn with_hash_columns(mut self, columns: Vec<usize>) -> Self {
        let width = self.schema.fields().len();
        if self.mode != ReadMode::Hash || columns.is_empty() || columns.iter().any(|&i| i >= width)
        {
            return self;
        }
        self.hash_columns = columns;
        let partitioning = Partitioning::Hash(
            self.hash_columns.iter().map(|&i| self.column(i)).collect(),
            self.properties.partitioning.partition_count(),
        );
        self.properties = Arc::new(PlanProperties::new(
            self.properties.equivalence_properties().clone(),
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        self
    }

    /// The same hash-mode reader with partition `i` reading `slices[i]` (adaptive
    /// execution). Readers of other modes, already sliced ones, and slices naming a
    /// partition past the planned ones come back as they are.
    pub fn with_slices(mut self, slices: Vec<ReadSlice>) -> Self {
        let planned = self.planned as u32;
        let valid = slices.iter().all(|slice| {
            slice.partitions.start < slice.partitions.end && slice.partitions.end <= planned
        });
        if self.mode != ReadMode::Hash || self.slices.is_some() || slices.is_empty() || !valid {
            return self;
        }
        self.set_partition_count(slices.len());
        self.slices = Some(slices.into());
        self
    }

    /// What each partition reads, when adaptive execution re-planned the reader.
    pub fn slices(&self) -> Option<&[ReadSlice]> {
        self.slices.as_deref()
    }

    /// The output partitions each producer writes (hash mode), whatever the slices.
    pub fn planned_partitions(&self) -> usize {
        self.planned
    }

    /// The same per-producer reader with one partition for each of `producers` tasks
    /// (the producing stage ran as fewer tasks than planned). Other modes come back as
    /// they are.
    pub fn with_producers(mut self, producers: usize) -> Self {
        if self.mode == ReadMode::PerProducer {
            self.set_partition_count(producers.max(1));
        }
        self
    }

    fn set_partition_count(&mut self, count: usize) {
        let partitioning = match &self.properties.partitioning {
            Partitioning::Hash(exprs, _) => Partitioning::Hash(exprs.clone(), count),
            _ => Partitioning::UnknownPartitioning(count),
        };
        self.properties = Arc::new(PlanProperties::new(
            self.properties.equivalence_properties().clone(),
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
    }

    pub fn hash_columns(&self) -> &[usize] {
        &self.hash_columns
    }

    /// The same reader, knowing that `columns` hold one value in every row of every
    /// partition (the exchange it replaces knew it, and the plan above relies on it: a
    /// window partitioned by a constant needs no sort). Indices past the schema are
    /// ignored.
    pub fn with_constant_columns(mut self, columns: Vec<usize>) -> Self {
        let width = self.schema.fields().len();
        self.constant_columns = columns.into_iter().filter(|&i| i < width).collect();
        self.refresh_equivalences();
        self
    }

    /// The same reader, knowing that the columns of each pair hold equal values in every
    /// row (the two keys of an inner join below the exchange): a sort on one column then
    /// orders the other, as the plan above was built to expect. Indices past the schema
    /// are ignored.
    pub fn with_equal_columns(mut self, pairs: Vec<(usize, usize)>) -> Self {
        let width = self.schema.fields().len();
        self.equal_columns = pairs
            .into_iter()
            .filter(|&(a, b)| a < width && b < width && a != b)
            .collect();
        self.refresh_equivalences();
        self
    }

    fn column(&self, index: usize) -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new(self.schema.field(index).name(), index))
    }

    fn refresh_equivalences(&mut self) {
        let mut equivalence = EquivalenceProperties::new(Arc::clone(&self.schema));
        let constants: Vec<ConstExpr> = self
            .constant_columns
            .iter()
            .map(|&index| ConstExpr::new(self.column(index), AcrossPartitions::Uniform(None)))
            .collect();
        // Facts added to a fresh equivalence set cannot conflict with anything there;
        // should DataFusion refuse one, the reader promises nothing.
        let mut known = equivalence.add_constants(constants).is_ok();
        for &(a, b) in &self.equal_columns {
            known &= equivalence
                .add_equal_conditions(self.column(a), self.column(b))
                .is_ok();
        }
        if !known {
            equivalence = EquivalenceProperties::new(Arc::clone(&self.schema));
        }
        self.properties = Arc::new(PlanProperties::new(
            equivalence,
            self.properties.partitioning.clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
    }

    pub fn equal_columns(&self) -> &[(usize, usize)] {
        &self.equal_columns
    }

    pub fn constant_columns(&self) -> &[usize] {
        &self.constant_columns
    }

    /// The same reader, now knowing where each producer task's output lives.
    pub fn with_locations(mut self, locations: Vec<PartitionLocation>) -> Self {
        self.locations = locations;
        self
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    pub fn stage_id(&self) -> u32 {
        self.stage_id
    }

    pub fn mode(&self) -> ReadMode {
        self.mode
    }

    pub fn locations(&self) -> &[PartitionLocation] {
        &self.locations
    }

    pub fn partition_count(&self) -> usize {
        self.properties.partitioning.partition_count()
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let mode = match self.mode {
            ReadMode::Hash => "hash",
            ReadMode::PerProducer => "per-producer",
        };
        write!(
            f,
            "ShuffleReaderExec: stage={}, partitions={}, mode={mode}",
            self.stage_id,
            self.partition_count()
        )?;
        match self.slices() {
            Some([only]) if only.producers.is_none() => {
                write!(f, " (coalesced from {})", only.partitions.len())
            }
            Some(slices) => {
                const SHOWN: usize = 8;
                let shown: Vec<String> = slices.iter().take(SHOWN).map(|s| s.to_string()).collect();
                let more = match slices.len() {
                    n if n > SHOWN => format!(", ... {} more", n - SHOWN),
                    _ => String::new(),
                };
                write!(
                    f,
                    " (slices of {}: {}{more})",
                    self.planned,
                    shown.join(", ")
                )
            }
            None => Ok(()),
        }
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &'static str {
        "ShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let io = shuffle_io(&context)?;
        let sources: Vec<(&PartitionLocation, u32)> = match self.mode {
            ReadMode::Hash => {
                let slice = match &self.slices {
                    Some(slices) => slices.get(partition).cloned().ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "partition {partition} of stage {}'s reader is past its {} slices",
                            self.stage_id,
                            slices.len()
                        ))
                    })?,
                    None => ReadSlice::of(partition as u32..partition as u32 + 1),
                };
                self.locations
                    .iter()
                    .filter(|location| {
                        slice
                            .producers
                            .as_ref()
                            .is_none_or(|producers| producers.contains(&location.map_partition))
                    })
                    .flat_map(|location| {
                        slice
                            .partitions
                            .clone()
                            .map(move |output| (location, output))
                    })
                    .collect()
            }
            ReadMode::PerProducer => self
                .locations
                .iter()
                .filter(|location| location.map_partition as usize == partition)
                .map(|location| (location, 0))
                .collect(),
        };
        if sources.is_empty() && self.mode == ReadMode::PerProducer {
            return Err(DataFusionError::Internal(format!(
                "no location known for partition {partition} of stage {}",
                self.stage_id
            )));
        }
        let mut streams = Vec::with_capacity(sources.len());
        for (location, output_partition) in sources {
            streams.push(io.open(
                &self.job_id,
                self.stage_id,
                location,
                output_partition,
                Arc::clone(&self.schema),
            )?);
        }
        // Producers are read concurrently: one slow fetch does not hold up the rest.
        let merged = futures::stream::select_all(streams);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            merged.boxed(),
        )))
    }
}
