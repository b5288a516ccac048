//! From SQL text to a finished job: planning with the scheduler's DataFusion session,
//! catalog statements, `EXPLAIN`, and distributed execution through the engine.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::config::ConfigOptions;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Explain, LogicalPlan};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::FutureExt;
use quiver_core::config::SchedulerConfig;
use quiver_core::error::panic_message;
use quiver_core::proto::PartitionLocation;
use quiver_core::{JobId, QuiverError, StageId};

use crate::engine::Engine;
use crate::job::JobOutcome;
use crate::params::number_placeholders;
use crate::planner::plan_stages;

/// A finished query: where to read its result.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub job_id: JobId,
    /// The stage whose output is the result.
    pub final_stage: StageId,
    pub schema: SchemaRef,
    /// One location per result partition, in order.
    pub locations: Vec<PartitionLocation>,
    /// True when the partitions, read in order, give the rows in the query's order.
    pub ordered: bool,
    /// Time to plan the query (SQL to stages), and from arrival to a ready result.
    pub planning_time: Duration,
    pub total_time: Duration,
}

pub type QueryOutcome = Result<QueryResult, Arc<QuiverError>>;

/// Plans and runs SQL for every client of the scheduler. The catalog is shared: a table
/// created by one client is visible to the next.
pub struct QueryService {
    context: SessionContext,
    engine: Arc<Engine>,
    /// Cleared when the scheduler starts shutting down.
    admitting: AtomicBool,
}

impl QueryService {
    pub fn new(config: &SchedulerConfig, engine: Arc<Engine>) -> Self {
        let mut session = SessionConfig::new()
            .with_target_partitions(config.target_partitions.max(1))
            .with_information_schema(true);
        // Dynamic filters link operators in memory (a join updating a scan's filter);
        // across stages and processes that link does not exist.
        let options = session.options_mut();
        options.optimizer.enable_dynamic_filter_pushdown = false;
        // Uncorrelated scalar subqueries executed by `ScalarSubqueryExec` hand their value
        // to expressions elsewhere in the plan through memory; as joins they travel.
        options
            .optimizer
            .enable_physical_uncorrelated_scalar_subquery = false;
        // Each task runs one partition of a scan in isolation; partitions must not take
        // over their siblings' files.
        options.execution.enable_file_stream_work_stealing = false;
        let context = SessionContext::new_with_config(session);
        if let Err(error) = crate::system::register(&context, &engine) {
            tracing::warn!(%error, "could not add the system schema");
        }
        Self {
            context,
            engine,
            admitting: AtomicBool::new(true),
        }
    }

    /// The DataFusion session that holds the catalog (for embedding and tests).
    pub fn context(&self) -> &SessionContext {
        &self.context
    }

    /// Plans `sql`, runs it on the executors and waits until its result is ready.
    /// Refuses every later query; those already running go on.
    pub fn stop_admitting(&self) {
        self.admitting.store(false, Ordering::SeqCst);
    }

    pub async fn execute(&self, sql: &str) -> QueryOutcome {
        self.execute_as(JobId::new_random(), sql, None).await
    }

    /// The engine that runs this service's jobs.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Like [`QueryService::execute`], under a job id the caller chose (to follow or
    /// cancel it meanwhile), with values for `$n` placeholders.
    pub async fn execute_as(
        &self,
        job_id: JobId,
        sql: &str,
        params: Option<ParamValues>,
    ) -> QueryOutcome {
        if !self.admitting.load(Ordering::SeqCst) {
            return Err(Arc::new(QuiverError::ShuttingDown));
        }
        let started = Instant::now();
        // Planning reads files (schemas, footers); a panic in a third-party reader on a
        // corrupt file must become this query's error, not take the connection down.
        let planned = AssertUnwindSafe(self.physical_plan(&job_id, sql, params))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let shown: String = sql.chars().take(200).collect();
                Err(Arc::new(QuiverError::Internal(format!(
                    "planning `{shown}` panicked: {}",
                    panic_message(panic.as_ref())
                ))))
            });
        self.run(job_id, planned?, started).await
    }

    async fn physical_plan(
        &self,
        job_id: &JobId,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<Arc<dyn ExecutionPlan>, Arc<QuiverError>> {
        let planning = |e| Arc::new(QuiverError::from_planning(e));
        let logical = self.bound_plan(sql, params).await?;
        match logical {
            LogicalPlan::Explain(explain) => self.explain(job_id, &explain).await,
            LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::DescribeTable(_) => {
                // Catalog changes and settings live in the scheduler's session.
                let frame = self
                    .context
                    .execute_logical_plan(logical)
                    .await
                    .map_err(planning)?;
                let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
                let batches = frame
                    .collect()
                    .await
                    .map_err(|e| Arc::new(QuiverError::DataFusion(e)))?;
                memory_plan(batches, schema)
            }
            logical => {
                let frame = self
                    .context
                    .execute_logical_plan(logical)
                    .await
                    .map_err(planning)?;
                frame.create_physical_plan().await.map_err(planning)
            }
        }
    }

    /// Parses and plans `sql` (without running it); `?` placeholders become `$1`, `$2`...
    pub async fn logical_plan(&self, sql: &str) -> Result<LogicalPlan, Arc<QuiverError>> {
        let sql = number_placeholders(sql);
        self.context
            .state()
            .create_logical_plan(&sql)
            .await
            .map_err(|e| Arc::new(QuiverError::from_planning(e)))
    }

    /// Runs a statement that changes the catalog, data or settings (DDL, DML, `SET`) and
    /// returns how many rows it changed (0 for DDL).
    pub async fn execute_update(
        &self,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<i64, Arc<QuiverError>> {
        if !self.admitting.load(Ordering::SeqCst) {
            return Err(Arc::new(QuiverError::ShuttingDown));
        }
        let planning = |e| Arc::new(QuiverError::from_planning(e));
        let logical = self.bound_plan(sql, params).await?;
        if !is_catalog_change(&logical) {
            return Err(Arc::new(QuiverError::InvalidQuery(
                datafusion::error::DataFusionError::Plan(
                    "an update command takes DDL, DML or SET; send queries as queries".to_string(),
                ),
            )));
        }
        let frame = self
            .context
            .execute_logical_plan(logical)
            .await
            .map_err(planning)?;
        let batches = frame
            .collect()
            .await
            .map_err(|e| Arc::new(QuiverError::DataFusion(e)))?;
        Ok(changed_rows(&batches))
    }

    /// The logical plan of `sql` with its placeholders replaced by `params`.
    async fn bound_plan(
        &self,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<LogicalPlan, Arc<QuiverError>> {
        let logical = self.logical_plan(sql).await?;
        match params {
            Some(params) => logical
                .with_param_values(params)
                .map_err(|e| Arc::new(QuiverError::from_planning(e))),
            None => Ok(logical),
        }
    }

    /// What a prepared statement returns and which parameters it takes.
    pub async fn prepare(&self, sql: &str) -> Result<PreparedShape, Arc<QuiverError>> {
        let plan = self.logical_plan(sql).await?;
        let planning = |e| Arc::new(QuiverError::from_planning(e));
        let types = plan.get_parameter_types().map_err(planning)?;
        let mut names: Vec<&String> = types.keys().collect();
        // `$2` before `$10`.
        names.sort_by_key(|name| (name.len(), name.to_string()));
        let fields: Vec<Field> = names
            .into_iter()
            .map(|name| {
                let data_type = types[name].clone().unwrap_or(DataType::Null);
                Field::new(name.clone(), data_type, true)
            })
            .collect();
        Ok(PreparedShape {
            dataset_schema: Arc::new(plan.schema().as_arrow().clone()),
            parameter_schema: Arc::new(Schema::new(fields)),
            is_query: !is_catalog_change(&plan),
        })
    }

    /// `EXPLAIN`: the logical plan, DataFusion's physical plan, and Quiver's stages.
    async fn explain(
        &self,
        job_id: &JobId,
        explain: &Explain,
    ) -> Result<Arc<dyn ExecutionPlan>, Arc<QuiverError>> {
        let planning = |e| Arc::new(QuiverError::from_planning(e));
        let state = self.context.state();
        let optimized = state.optimize(&explain.plan).map_err(planning)?;
        let physical = state
            .create_physical_plan(&explain.plan)
            .await
            .map_err(planning)?;
        let physical_text = displayable(physical.as_ref()).indent(false).to_string();
        let dag = plan_stages(job_id, physical, self.context.task_ctx())
            .await
            .map_err(planning)?;
        let kinds = StringArray::from(vec!["logical_plan", "physical_plan", "distributed_plan"]);
        let texts = StringArray::from(vec![
            optimized.display_indent().to_string(),
            physical_text,
            dag.display(),
        ]);
        let schema = LogicalPlan::explain_schema();
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(kinds), Arc::new(texts)])
                .map_err(|e| Arc::new(QuiverError::DataFusion(e.into())))?;
        memory_plan(vec![batch], schema)
    }

    async fn run(
        &self,
        job_id: JobId,
        physical: Arc<dyn ExecutionPlan>,
        started: Instant,
    ) -> QueryOutcome {
        let ordered = physical.output_partitioning().partition_count() == 1;
        let dag = plan_stages(&job_id, physical, self.context.task_ctx())
            .await
            .map_err(|e| Arc::new(QuiverError::from_planning(e)))?;
        let planning_time = started.elapsed();
        let schema = Arc::clone(&dag.schema);
        let final_stage = dag.final_stage().stage_id;
        self.engine.wait_for_executors().await.map_err(Arc::new)?;
        let mut outcome = self
            .engine
            .submit(job_id.clone(), dag, Arc::new(self.task_settings()));
        // If the client goes away while waiting, this future is dropped: stop the job.
        let cancel_on_drop = CancelOnDrop {
            engine: Arc::clone(&self.engine),
            job_id: Some(job_id.clone()),
        };
        let finished = outcome
            .wait_for(JobOutcome::is_finished)
            .await
            .map_err(|_| Arc::new(QuiverError::Internal("job state dropped".to_string())))?
            .clone();
        cancel_on_drop.disarm();
        match finished {
            JobOutcome::Succeeded(locations) => Ok(QueryResult {
                job_id,
                final_stage,
                schema,
                locations,
                ordered,
                planning_time,
                total_time: started.elapsed(),
            }),
            JobOutcome::Failed(error) => Err(error),
            JobOutcome::Running => Err(Arc::new(QuiverError::Internal(
                "job reported finished while running".to_string(),
            ))),
        }
    }

    /// The session settings that differ from DataFusion's defaults, for the executors.
    fn task_settings(&self) -> HashMap<String, String> {
        let defaults = &*DEFAULT_SETTINGS;
        self.context
            .state()
            .config()
            .options()
            .entries()
            .into_iter()
            .filter(|e| defaults.get(&e.key) != Some(&e.value))
            .filter_map(|e| e.value.map(|v| (e.key, v)))
            .collect()
    }
}

/// The shape of a prepared statement.
#[derive(Debug, Clone)]
pub struct PreparedShape {
    pub dataset_schema: SchemaRef,
    pub parameter_schema: SchemaRef,
    /// False for DDL, DML and settings.
    pub is_query: bool,
}

/// The sum of DML's `count` column; 0 for statements that report none.
fn changed_rows(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .filter_map(|batch| batch.column_by_name("count"))
        .filter_map(|column| column.as_any().downcast_ref::<UInt64Array>())
        .flat_map(|counts| counts.iter().flatten())
        .map(|n| n as i64)
        .sum()
}

fn is_catalog_change(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Copy(_)
    )
}

/// DataFusion's default settings, computed once: every query compares against them.
static DEFAULT_SETTINGS: LazyLock<HashMap<String, Option<String>>> = LazyLock::new(|| {
    ConfigOptions::default()
        .entries()
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect()
});

/// Cancels a job when the request waiting for it is dropped before it finishes.
struct CancelOnDrop {
    engine: Arc<Engine>,
    job_id: Option<JobId>,
}

impl CancelOnDrop {
    fn disarm(mut self) {
        self.job_id = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(job_id) = self.job_id.take() {
            tracing::info!(job = %job_id, "client went away; cancelling the job");
            self.engine.cancel(&job_id);
        }
    }
}

fn memory_plan(
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
) -> Result<Arc<dyn ExecutionPlan>, Arc<QuiverError>> {
    let plan: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(&[batches], schema, None)
        .map_err(|e| Arc::new(QuiverError::DataFusion(e)))?;
    Ok(plan)
}
