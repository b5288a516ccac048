//! Distributed writes: [`WriteFilesExec`], the root of a write stage.
//!
//! Each task writes its own partition's rows, through the file sink DataFusion planned
//! (Parquet, CSV or JSON), into a directory of its own under the job's staging location:
//! `<staging>/p<partition>-a<attempt>/`. Nothing there is visible to readers of the
//! target. The scheduler commits the job by moving the files of each partition's
//! successful attempt into the target, and deletes the staging location whatever happens,
//! so retried, failed and cancelled attempts leave no rows behind.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt64Array};
use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::file_options::csv_writer::CsvWriterOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::file_format::json::JsonSink;
use datafusion::datasource::file_format::parquet::ParquetSink;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::{FileOutputMode, FileSink, FileSinkConfig};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

/// Session-config extension: the attempt number of the task being run, so that each
/// attempt writes into its own directory.
#[derive(Debug, Clone, Copy)]
pub struct TaskAttemptNumber(pub u32);

/// Name of the metric holding the rows a write task wrote.
pub const ROWS_WRITTEN: &str = "rows_written";

/// The directory attempt `attempt` of partition `partition` writes into.
pub fn attempt_directory(staging: &str, partition: usize, attempt: u32) -> String {
    format!("{}/p{partition}-a{attempt}/", staging.trim_end_matches('/'))
}

/// Runs partition `p` of the write's input into its own staging directory; answers
/// one row with the number of rows written.
#[derive(Debug)]
pub struct WriteFilesExec {
    /// The plan DataFusion made: a [`DataSinkExec`] over the rows to write. Only its sink
    /// and input are used; it travels as this node's child.
    sink_exec: Arc<dyn ExecutionPlan>,
    staging: String,
    single_file: bool,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl WriteFilesExec {
    /// `sink_exec` must be a [`DataSinkExec`] with a Parquet, CSV or JSON file sink.
    pub fn try_new(
        sink_exec: Arc<dyn ExecutionPlan>,
        staging: String,
        single_file: bool,
    ) -> Result<Self> {
        let input = data_sink_exec(&sink_exec)?.input();
        let partitions = input.output_partitioning().partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            sink_exec,
            staging,
            single_file,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn staging(&self) -> &str {
        &self.staging
    }

    pub fn single_file(&self) -> bool {
        self.single_file
    }

    /// Rows written so far by the partitions this node ran.
    pub fn rows_written(&self) -> u64 {
        self.metrics
            .clone_inner()
            .sum_by_name(ROWS_WRITTEN)
            .map(|value| value.as_usize() as u64)
            .unwrap_or(0)
    }
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

fn data_sink_exec(plan: &Arc<dyn ExecutionPlan>) -> Result<&DataSinkExec> {
    plan.downcast_ref::<DataSinkExec>().ok_or_else(|| {
        DataFusionError::Internal(format!(
            "a write stage needs a DataSinkExec, found {}",
            plan.name()
        ))
    })
}

/// The file sink of `sink`, writing to `url` instead of its own target.
fn retarget(sink: &dyn DataSink, url: &str, single_file: bool) -> Result<Arc<dyn DataSink>> {
    let any: &dyn Any = sink;
    let config = |config: &FileSinkConfig| -> Result<FileSinkConfig> {
        let mut config = config.clone();
        config.original_url = url.to_string();
        config.table_paths = vec![ListingTableUrl::parse(url)?];
        config.file_output_mode = if single_file {
            FileOutputMode::SingleFile
        } else {
            FileOutputMode::Directory
        };
        Ok(config)
    };
    if let Some(parquet) = any.downcast_ref::<ParquetSink>() {
        return Ok(Arc::new(ParquetSink::new(
            config(parquet.config())?,
            parquet.parquet_options().clone(),
        )));
    }
    if let Some(csv) = any.downcast_ref::<CsvSink>() {
        return Ok(Arc::new(CsvSink::new(
            config(csv.config())?,
            without_empty_formats(csv.writer_options()),
        )));
    }
    if let Some(json) = any.downcast_ref::<JsonSink>() {
        return Ok(Arc::new(JsonSink::new(
            config(json.config())?,
            json.writer_options().clone(),
        )));
    }
    Err(DataFusionError::NotImplemented(format!(
        "distributed writes take Parquet, CSV or JSON; this one writes with {sink:?}"
    )))
}

/// `options` with empty date and time formats unset. datafusion-proto decodes an unset
/// format as an empty one, and the CSV writer would then write every date as "".
fn without_empty_formats(options: &CsvWriterOptions) -> CsvWriterOptions {
    let given = &options.writer_options;
    let mut builder = WriterBuilder::new()
        .with_header(given.header())
        .with_delimiter(given.delimiter())
        .with_quote(given.quote())
        .with_escape(given.escape())
        .with_double_quote(given.double_quote())
        .with_null(given.null().to_string())
        .with_quote_style(given.quote_style())
        .with_ignore_leading_whitespace(given.ignore_leading_whitespace())
        .with_ignore_trailing_whitespace(given.ignore_trailing_whitespace())
        .with_line_terminator(given.line_terminator().clone());
    let set = |format: Option<&str>| format.filter(|f| !f.is_empty()).map(str::to_string);
    if let Some(format) = set(given.date_format()) {
        builder = builder.with_date_format(format);
    }
    if let Some(format) = set(given.datetime_format()) {
        builder = builder.with_datetime_format(format);
    }
    if let Some(format) = set(given.time_format()) {
        builder = builder.with_time_format(format);
    }
    if let Some(format) = set(given.timestamp_format()) {
        builder = builder.with_timestamp_format(format);
    }
    if let Some(format) = set(given.timestamp_tz_format()) {
        builder = builder.with_timestamp_tz_format(format);
    }
    CsvWriterOptions::new(builder, options.compression)
}

impl DisplayAs for WriteFilesExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "WriteFilesExec: staging={}{}",
            self.staging,
            if self.single_file {
                ", single_file"
            } else {
                ""
            }
        )
    }
}

impl ExecutionPlan for WriteFilesExec {
    fn name(&self) -> &str {
        "WriteFilesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.sink_exec]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [sink_exec] = children.as_slice() else {
            return Err(DataFusionError::Internal(
                "WriteFilesExec takes one child".to_string(),
            ));
        };
        Ok(Arc::new(Self::try_new(
            Arc::clone(sink_exec),
            self.staging.clone(),
            self.single_file,
        )?))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn apply_expressions(
        &self,
        _visit: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let sink_exec = data_sink_exec(&self.sink_exec)?;
        let attempt = context
            .session_config()
            .get_extension::<TaskAttemptNumber>()
            .map(|number| number.0)
            .unwrap_or(0);
        let mut target = attempt_directory(&self.staging, partition, attempt);
        if self.single_file {
            target.push_str(&single_file_name(sink_exec.sink())?);
        }
        let sink = retarget(sink_exec.sink(), &target, self.single_file)?;
        let data = sink_exec.input().execute(partition, Arc::clone(&context))?;
        let written: Count = MetricBuilder::new(&self.metrics).counter(ROWS_WRITTEN, partition);
        let stream = futures::stream::once(async move {
            let rows = sink.write_all(data, &context).await?;
            written.add(rows as usize);
            let counts: ArrayRef = Arc::new(UInt64Array::from(vec![rows]));
            Ok(RecordBatch::try_new(count_schema(), vec![counts])?)
        })
        .boxed();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            stream,
        )))
    }
}

/// Rows written by the [`WriteFilesExec`] nodes of an executed plan.
pub fn rows_written_in(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let own = plan
        .downcast_ref::<WriteFilesExec>()
        .map(WriteFilesExec::rows_written)
        .unwrap_or(0);
    own + plan
        .children()
        .into_iter()
        .map(rows_written_in)
        .sum::<u64>()
}

/// The file name a single-file write targets (`out.parquet` of `.../out.parquet`).
fn single_file_name(sink: &dyn DataSink) -> Result<String> {
    let any: &dyn Any = sink;
    let original = if let Some(parquet) = any.downcast_ref::<ParquetSink>() {
        &parquet.config().original_url
    } else if let Some(csv) = any.downcast_ref::<CsvSink>() {
        &csv.config().original_url
    } else if let Some(json) = any.downcast_ref::<JsonSink>() {
        &json.config().original_url
    } else {
        return Err(DataFusionError::NotImplemented(
            "distributed writes take Parquet, CSV or JSON".to_string(),
        ));
    };
    Ok(original
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("part")
        .to_string())
}

/// The target a sink writes to as DataFusion planned it (a URL), whether it is one file,
/// and whether the write replaces what is there; `None` for sinks that are not files.
pub fn sink_target(plan: &Arc<dyn ExecutionPlan>) -> Option<(String, bool, bool)> {
    let sink = plan.downcast_ref::<DataSinkExec>()?.sink();
    let any: &dyn Any = sink;
    let config = if let Some(parquet) = any.downcast_ref::<ParquetSink>() {
        parquet.config()
    } else if let Some(csv) = any.downcast_ref::<CsvSink>() {
        csv.config()
    } else if let Some(json) = any.downcast_ref::<JsonSink>() {
        json.config()
    } else {
        return None;
    };
    let base = config.table_paths.first()?;
    let single = config.file_output_mode.single_file_output(base);
    let overwrite = matches!(
        config.insert_op,
        datafusion::logical_expr::dml::InsertOp::Overwrite
            | datafusion::logical_expr::dml::InsertOp::Replace
    );
    Some((base.as_str().to_string(), single, overwrite))
}
