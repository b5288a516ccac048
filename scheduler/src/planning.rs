//! From SQL text to stages: parsing, the statement limits, DataFusion planning, catalog
//! statements, `EXPLAIN`, and the cut into stages. Everything here recurses over the
//! statement, so it runs on the planning threads ([`PlanningThreads`]), never on the
//! server's own workers.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::CatalogProviderList;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::ParamValues;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    CreateExternalTable, CreateMemoryTable, DdlStatement, Explain, LogicalPlan, Statement, WriteOp,
};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, displayable};
use datafusion::prelude::SessionContext;
use futures::FutureExt;
use quiver_core::config::StatementLimits;
use quiver_core::error::panic_message;
use quiver_core::proto::StoreOptions;
use quiver_core::storage::{StorageOptions, StoreRegistry};
use quiver_core::threads::DedicatedThreads;
use quiver_core::{JobId, QuiverError};

use crate::access_control::{AccessControl, qualified_name, qualified_schema};
use crate::access_sql::{self, AccessStatement};
use crate::client_session::protected_setting;
use crate::delta_create::{DeltaCreate, delta_create};
use crate::durable_catalog::{CatalogChange, SharedCatalogStore, change_of, record};
use crate::file_probe::first_problem_file;
use crate::limits;
use crate::locations::directory_location;
use crate::locations::{location_url, prepare_catalog_change, stores_for};
use crate::managed::{Warehouse, delete_files, managed_create, prepare_directory};
use crate::params::number_placeholders;
use crate::planner::{StageDag, plan_stages};
use crate::privileges::{
    FactsRecorder, StatementFacts, authorize, check_tables_exist, facts_of, tables_read,
};
use crate::query_history::SessionIdentity;
use crate::time_travel::rewrite_time_travel;
use crate::writes::{PlannedWrite, distribute_write};

type Outcome<T> = Result<T, Arc<QuiverError>>;

/// Stack of a planning thread. Planning recurses once per level of an expression (a 2 MiB
/// stack overflows near 2,000 levels); this holds many times
/// [`StatementLimits::max_expression_depth`]'s default. Only the pages a statement
/// touches are ever committed.
const PLANNING_STACK_BYTES: usize = 64 << 20;

/// The threads statements are planned on, with stacks deep enough for the limits.
pub(crate) struct PlanningThreads {
    threads: DedicatedThreads,
}

impl PlanningThreads {
    pub(crate) fn new() -> Result<Self, QuiverError> {
        // A statement near the limits plans for seconds: enough threads that a few such
        // statements do not hold up everyone else's planning.
        let count = (quiver_core::config::default_parallelism() * 2).clamp(4, 16);
        Ok(Self {
            threads: DedicatedThreads::new(count, "quiver-planning", PLANNING_STACK_BYTES)?,
        })
    }

    /// Runs `work` there and waits for it; a panic becomes an internal error naming
    /// `what`, and dropping the returned future stops the work.
    pub(crate) async fn run<T, W>(&self, what: &str, work: W) -> Outcome<T>
    where
        W: Future<Output = Outcome<T>> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self.threads.spawn(AssertUnwindSafe(work).catch_unwind());
        let _abort_on_drop = AbortOnDrop(handle.abort_handle());
        match handle.await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(panic)) => Err(Arc::new(QuiverError::Internal(format!(
                "planning `{}` panicked: {}",
                what.chars().take(200).collect::<String>(),
                panic_message(panic.as_ref())
            )))),
            Err(error) => Err(Arc::new(QuiverError::Internal(format!(
                "planning stopped: {error}"
            )))),
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A query planned and cut into stages.
pub(crate) struct PlannedJob {
    pub(crate) dag: StageDag,
    /// True when the result's partitions, read in order, give the rows in order.
    pub(crate) ordered: bool,
    /// Storage options the tasks need for the stores they read and write.
    pub(crate) stores: Vec<StoreOptions>,
    /// For a write, what committing it takes.
    pub(crate) write: Option<PlannedWrite>,
    /// `EXPLAIN ANALYZE`: run it collecting operator metrics, and answer with them.
    pub(crate) analyze: Option<crate::explain_analyze::AnalyzeOptions>,
}

/// What an update statement needs once planned.
pub(crate) enum PlannedUpdate {
    /// Carried out already (DDL, settings): the rows it changed.
    Done(i64),
    /// A write to run as a job.
    Job(Box<PlannedJob>),
}

/// The shape of a prepared statement.
#[derive(Debug, Clone)]
pub struct PreparedShape {
    pub dataset_schema: SchemaRef,
    pub parameter_schema: SchemaRef,
    /// False for DDL, DML and settings.
    pub is_query: bool,
}

/// Plans statements against the scheduler's session, within the statement limits.
/// Cheap to clone: the session is shared.
#[derive(Clone)]
pub(crate) struct StatementPlanner {
    pub(crate) context: SessionContext,
    /// Sessions opened from this planner take the live executors' slots as their number
    /// of partitions, when set.
    pub(crate) width_from: Option<Arc<crate::engine::Engine>>,
    pub(crate) limits: StatementLimits,
    /// The object stores of the session's runtime, configured by tables' options.
    pub(crate) stores: Arc<StoreRegistry>,
    /// Where catalog definitions persist, when they do.
    pub(crate) catalog: SharedCatalogStore,
    /// Where managed tables keep their files.
    pub(crate) warehouse: Warehouse,
    /// Roles, grants and owners.
    pub(crate) access: Arc<AccessControl>,
    /// Every catalog, tables hidden from this session's user included.
    pub(crate) shared_catalogs: Arc<dyn CatalogProviderList>,
    /// Where the statement being planned leaves its facts for the audit log, if
    /// anywhere.
    pub(crate) facts: Option<FactsRecorder>,
    /// Counts changes to what planning reads besides the SQL (catalog, grants,
    /// settings): a plan made at an older count may be stale.
    pub(crate) generation: Arc<AtomicU64>,
}

/// A prepared query's logical plan, kept to run again without planning from the SQL
/// while nothing it was planned against has changed.
#[derive(Debug, Clone)]
pub(crate) struct ReusablePlan {
    generation: u64,
    plan: LogicalPlan,
    facts: StatementFacts,
}

impl StatementPlanner {
    /// Plans `sql` into stages for job `job_id`. Catalog statements and `EXPLAIN` are
    /// carried out here; their answer becomes a one-stage plan over its rows.
    pub(crate) async fn plan_job(
        &self,
        job_id: &JobId,
        sql: &str,
        params: Option<ParamValues>,
        prepared: Option<ReusablePlan>,
    ) -> Outcome<PlannedJob> {
        if let Some(reusable) = prepared.filter(|plan| plan.generation == self.generation()) {
            if let Some(facts) = &self.facts {
                *facts.lock() = reusable.facts;
            }
            let logical = match params {
                Some(params) => reusable
                    .plan
                    .with_param_values(params)
                    .map_err(planning_error)?,
                None => reusable.plan,
            };
            let physical = self.physical_plan(job_id, logical).await?;
            return self.plan_stages_of(job_id, physical, None).await;
        }
        if let Some(statement) = self.access_statement(sql)? {
            self.apply_access(&statement)?;
            let nothing = memory_plan(Vec::new(), Arc::new(Schema::empty()))?;
            return self.plan_stages_of(job_id, nothing, None).await;
        }
        let delta = delta_create(sql).map_err(invalid_query)?;
        let logical = self.bound_plan(sql, params).await?;
        if let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) = &logical
            && !create.temporary
        {
            return match self
                .plan_managed_create(job_id, create, delta.as_ref())
                .await?
            {
                PlannedUpdate::Job(job) => Ok(*job),
                PlannedUpdate::Done(_) => {
                    let nothing = memory_plan(Vec::new(), Arc::new(Schema::empty()))?;
                    self.plan_stages_of(job_id, nothing, None).await
                }
            };
        }
        if writes_files(&logical) {
            return self.plan_write(job_id, logical).await;
        }
        if let LogicalPlan::Analyze(analyze) = logical {
            let options =
                crate::explain_analyze::AnalyzeOptions::of(&analyze.format, analyze.verbose)
                    .map_err(|why| {
                        Arc::new(QuiverError::InvalidQuery(DataFusionError::Plan(why)))
                    })?;
            let query = Arc::unwrap_or_clone(analyze.input);
            if is_catalog_change(&query) {
                return Err(Arc::new(QuiverError::InvalidQuery(DataFusionError::Plan(
                    "EXPLAIN ANALYZE takes a query; it would carry out DDL, DML and settings"
                        .to_string(),
                ))));
            }
            let physical = self.physical_plan(job_id, query).await?;
            let mut job = self.plan_stages_of(job_id, physical, None).await?;
            job.analyze = Some(options);
            return Ok(job);
        }
        let physical = self.physical_plan(job_id, logical).await?;
        self.plan_stages_of(job_id, physical, None).await
    }

    /// `CREATE TABLE`: a Parquet table under the warehouse, or a Delta table (`STORED AS
    /// DELTA`, under the warehouse or at its `LOCATION`); its rows written by the
    /// executors (a job) or none (done here). A Delta table created with rows is one
    /// commit: the table and its files appear together or not at all.
    async fn plan_managed_create(
        &self,
        job_id: &JobId,
        create: &CreateMemoryTable,
        delta: Option<&DeltaCreate>,
    ) -> Outcome<PlannedUpdate> {
        let replacing = self
            .context
            .table_exist(create.name.clone())
            .unwrap_or(false);
        // A table this user may not see still owns its name and its files.
        if !replacing && self.exists_for_anyone(&create.name) {
            return Err(invalid_query(format!(
                "table '{}' already exists",
                create.name
            )));
        }
        if replacing {
            if create.if_not_exists {
                return Ok(PlannedUpdate::Done(0));
            }
            if !create.or_replace {
                return Err(invalid_query(format!(
                    "table '{}' already exists",
                    create.name
                )));
            }
            if delta.is_some() {
                return Err(invalid_query(format!(
                    "CREATE OR REPLACE of the Delta table '{}': a Delta table keeps its \
                     history, so replace its rows with INSERT OVERWRITE, or DROP TABLE it first",
                    create.name
                )));
            }
        }
        let location = match delta.and_then(|delta| delta.location.as_deref()) {
            Some(given) => directory_location(given).map_err(planning_error)?,
            None => self.warehouse.location_of(&create.name, &self.context),
        };
        let owned = self.warehouse.holds(&location);
        let partitions = delta.map(|delta| delta.partition_columns.as_slice());
        let mut managed =
            managed_create(create, location.clone(), partitions).map_err(planning_error)?;
        // A replaced table stays whole until the new rows commit over it: its files may
        // be what the new rows are read from (`CREATE OR REPLACE TABLE t AS ... FROM t`).
        managed.register.or_replace = replacing;
        managed.register.definition = delta.map(|delta| delta.statement.clone());
        if !replacing && owned {
            // Files left by a table of that name that did not finish are not this table's.
            delete_files(&location, &self.stores)
                .await
                .map_err(planning_error)?;
        }
        match managed.write {
            None => {
                if replacing {
                    delete_files(&location, &self.stores)
                        .await
                        .map_err(planning_error)?;
                }
                prepare_directory(&location).map_err(planning_error)?;
                let register = LogicalPlan::Ddl(DdlStatement::CreateExternalTable(Box::new(
                    managed.register,
                )));
                self.change_catalog(register, self.creator()).await?;
                Ok(PlannedUpdate::Done(0))
            }
            Some(copy) => {
                let mut job = self.plan_write(job_id, copy).await?;
                let pending = match delta {
                    Some(delta) => Some(
                        crate::delta_tables::prepare_create(
                            &location,
                            create.input.schema().as_arrow(),
                            delta.partition_columns.clone(),
                            &self.stores,
                        )
                        .await
                        .map_err(planning_error)?,
                    ),
                    None => None,
                };
                if let Some(write) = job.write.as_mut() {
                    write.overwrite = replacing;
                    write.register = Some(managed.register);
                    write.delta = pending;
                }
                Ok(PlannedUpdate::Job(Box::new(job)))
            }
        }
    }

    /// Whether table `name` exists, visible to this session's user or not.
    fn exists_for_anyone(&self, name: &datafusion::common::TableReference) -> bool {
        let state = self.context.state();
        let defaults = &state.config().options().catalog;
        let resolved = name
            .clone()
            .resolve(&defaults.default_catalog, &defaults.default_schema);
        self.shared_catalogs
            .catalog(&resolved.catalog)
            .and_then(|catalog| catalog.schema(&resolved.schema))
            .is_some_and(|schema| schema.table_exist(&resolved.table))
    }

    /// Registers a managed table whose files a committed write put in place.
    pub(crate) async fn register_managed(
        &self,
        register: CreateExternalTable,
        creator: Option<String>,
    ) -> Outcome<()> {
        let location = register.locations.first().cloned();
        let registered = self
            .change_catalog(
                LogicalPlan::Ddl(DdlStatement::CreateExternalTable(Box::new(register))),
                creator,
            )
            .await;
        // Only the warehouse's own files go with a table that could not be registered.
        if registered.is_err()
            && let Some(location) = location.filter(|location| self.warehouse.holds(location))
        {
            let _ = delete_files(&location, &self.stores).await;
        }
        registered.map(|_| ())
    }

    /// Plans a statement sent as an update: catalog changes and settings are carried out
    /// here; a file write becomes a job.
    pub(crate) async fn plan_update(
        &self,
        job_id: &JobId,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Outcome<PlannedUpdate> {
        if let Some(statement) = self.access_statement(sql)? {
            self.apply_access(&statement)?;
            return Ok(PlannedUpdate::Done(0));
        }
        let delta = delta_create(sql).map_err(invalid_query)?;
        let logical = self.bound_plan(sql, params).await?;
        if !is_catalog_change(&logical) {
            return Err(Arc::new(QuiverError::InvalidQuery(DataFusionError::Plan(
                "an update command takes DDL, DML or SET; send queries as queries".to_string(),
            ))));
        }
        if let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) = &logical
            && !create.temporary
        {
            return self
                .plan_managed_create(job_id, create, delta.as_ref())
                .await;
        }
        if writes_files(&logical) {
            return Ok(PlannedUpdate::Job(Box::new(
                self.plan_write(job_id, logical).await?,
            )));
        }
        let (batches, _) = self.change_catalog(logical, self.creator()).await?;
        Ok(PlannedUpdate::Done(changed_rows(&batches)))
    }

    /// `INSERT` into a file table or `COPY ... TO`: a job whose last stage writes.
    async fn plan_write(&self, job_id: &JobId, logical: LogicalPlan) -> Outcome<PlannedJob> {
        let (logical, _) = prepare_catalog_change(logical, &self.stores).map_err(planning_error)?;
        let delta = match crate::delta_tables::insert_target(&logical) {
            Some((table, overwrite)) => Some(
                crate::delta_tables::prepare_write(&table, overwrite, &self.stores)
                    .await
                    .map_err(planning_error)?,
            ),
            None => None,
        };
        let frame = self
            .context
            .execute_logical_plan(logical)
            .await
            .map_err(planning_error)?;
        let physical = frame.create_physical_plan().await.map_err(planning_error)?;
        let (physical, mut write) = distribute_write(physical, job_id).map_err(planning_error)?;
        if let Some(write) = write.as_mut() {
            write.delta = delta;
        }
        self.plan_stages_of(job_id, physical, write).await
    }

    /// A one-stage job whose result is `batch`: how a write (its `count`) and `EXPLAIN
    /// ANALYZE` (its plan with metrics) answer once their own job has run.
    pub(crate) async fn plan_answer(
        &self,
        job_id: &JobId,
        batch: RecordBatch,
    ) -> Outcome<PlannedJob> {
        let schema = batch.schema();
        let plan = memory_plan(vec![batch], schema)?;
        self.plan_stages_of(job_id, plan, None).await
    }

    async fn plan_stages_of(
        &self,
        job_id: &JobId,
        physical: Arc<dyn ExecutionPlan>,
        write: Option<PlannedWrite>,
    ) -> Outcome<PlannedJob> {
        limits::check_physical_plan(&physical, &self.limits).map_err(Arc::new)?;
        let ordered = physical.output_partitioning().partition_count() == 1;
        let mut dag = plan_stages(job_id, physical, self.context.task_ctx())
            .await
            .map_err(planning_error)?;
        limits::check_stages(&mut dag, &self.limits).map_err(Arc::new)?;
        let written: Vec<&str> = write.iter().map(|w| w.target.as_str()).collect();
        let stores = stores_for(&dag, &written, &self.stores);
        Ok(PlannedJob {
            dag,
            ordered,
            stores,
            write,
            analyze: None,
        })
    }

    async fn physical_plan(
        &self,
        job_id: &JobId,
        logical: LogicalPlan,
    ) -> Outcome<Arc<dyn ExecutionPlan>> {
        match logical {
            LogicalPlan::Explain(explain) => self.explain(job_id, &explain).await,
            LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::DescribeTable(_) => {
                let (batches, schema) = self.change_catalog(logical, self.creator()).await?;
                memory_plan(batches, schema)
            }
            logical => {
                let frame = self
                    .context
                    .execute_logical_plan(logical)
                    .await
                    .map_err(planning_error)?;
                frame.create_physical_plan().await.map_err(planning_error)
            }
        }
    }

    /// Parses and plans `sql` (without running it); `?` placeholders become `$1`, `$2`...
    pub(crate) async fn logical_plan(&self, sql: &str) -> Outcome<LogicalPlan> {
        limits::check_sql_size(sql, &self.limits).map_err(Arc::new)?;
        // `STORED AS DELTA` is taken out of `CREATE TABLE` (the parser knows no such
        // format there); the table is made a Delta table when it is created.
        let without_delta = delta_create(sql).ok().flatten().map(|delta| delta.sql);
        let sql = without_delta.as_deref().unwrap_or(sql);
        let travelled = rewrite_time_travel(sql).map_err(invalid_query)?;
        let sql = number_placeholders(travelled.as_deref().unwrap_or(sql));
        let state = self.context.state();
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state
            .sql_to_statement(&sql, &dialect)
            .map_err(planning_error)?;
        let analyzed_as_tree = crate::explain_analyze::take_tree_format(&mut statement);
        limits::check_expression_depth(&statement, &self.limits).map_err(Arc::new)?;
        let reads = tables_read(&state, &statement).map_err(planning_error)?;
        check_tables_exist(&state, &self.context, &statement, &reads).map_err(Arc::new)?;
        let mut plan = state
            .statement_to_plan(statement)
            .await
            .map_err(planning_error)?;
        if analyzed_as_tree {
            crate::explain_analyze::restore_tree_format(&mut plan);
        }
        limits::check_logical_plan(&plan, &self.limits).map_err(Arc::new)?;
        if let Some(facts) = &self.facts {
            *facts.lock() = facts_of(&plan, &reads, &self.context);
        }
        authorize(&plan, &reads, &self.context, &self.access)
            .await
            .map_err(Arc::new)?;
        Ok(plan)
    }

    /// This planner, leaving what it learns of its statements in `facts`.
    pub(crate) fn recording(&self, facts: &FactsRecorder) -> Self {
        Self {
            facts: Some(Arc::clone(facts)),
            ..self.clone()
        }
    }

    /// `sql` as an access-control statement (`GRANT`, `CREATE ROLE`, ...), if it is one.
    fn access_statement(&self, sql: &str) -> Outcome<Option<AccessStatement>> {
        limits::check_sql_size(sql, &self.limits).map_err(Arc::new)?;
        access_sql::parse(sql)
            .map_err(|message| Arc::new(QuiverError::InvalidQuery(DataFusionError::Plan(message))))
    }

    fn apply_access(&self, statement: &AccessStatement) -> Outcome<()> {
        let applied = self.apply_access_now(statement);
        self.generation.fetch_add(1, Ordering::SeqCst);
        applied
    }

    fn apply_access_now(&self, statement: &AccessStatement) -> Outcome<()> {
        if let Some(facts) = &self.facts {
            *facts.lock() = StatementFacts {
                kind: "privilege",
                ..StatementFacts::default()
            };
        }
        let identity = self.identity();
        self.access
            .apply(statement, identity.as_deref(), &self.context)
            .map_err(Arc::new)
    }

    /// Who this session is, when it is a client's.
    fn identity(&self) -> Option<Arc<SessionIdentity>> {
        SessionIdentity::of(&self.context)
    }

    /// The login that owns what this session creates.
    pub(crate) fn creator(&self) -> Option<String> {
        self.identity().and_then(|identity| identity.user.clone())
    }

    /// The options each store a `CREATE EXTERNAL TABLE` names has now.
    fn stores_options_of(&self, plan: &LogicalPlan) -> Vec<(url::Url, StorageOptions)> {
        let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) = plan else {
            return Vec::new();
        };
        create
            .locations
            .iter()
            .filter_map(|location| location_url(location).ok())
            .map(|url| {
                let options = self.stores.options_for(&url);
                (url, options)
            })
            .collect()
    }

    /// Carries out a catalog statement or setting in the scheduler's session, where the
    /// catalog lives, and returns its answer.
    /// The count of changes to the catalog, grants and settings so far.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Carries out a catalog statement or setting; plans made before it are stale after.
    async fn change_catalog(
        &self,
        logical: LogicalPlan,
        creator: Option<String>,
    ) -> Outcome<(Vec<RecordBatch>, SchemaRef)> {
        let changed = self.change_catalog_now(logical, creator).await;
        self.generation.fetch_add(1, Ordering::SeqCst);
        changed
    }

    async fn change_catalog_now(
        &self,
        logical: LogicalPlan,
        creator: Option<String>,
    ) -> Outcome<(Vec<RecordBatch>, SchemaRef)> {
        refuse_protected_setting(&logical)?;
        let previous = self.stores_options_of(&logical);
        let (logical, storage) =
            prepare_catalog_change(logical, &self.stores).map_err(planning_error)?;
        let change = match &self.catalog {
            Some(_) => change_of(&logical, &storage, &self.context, creator.as_deref())
                .map_err(planning_error)?,
            None => CatalogChange::Nothing,
        };
        let dropped_files = self.managed_location_dropped_by(&logical).await;
        let ownership = ownership_change(&logical, &self.context);
        let created = match &logical {
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) => {
                Some(create.as_ref().clone())
            }
            _ => None,
        };
        let location = created_location(&logical);
        let in_location = |error: DataFusionError| match &location {
            Some(location) => {
                DataFusionError::Context(format!("table location '{location}'"), Box::new(error))
            }
            None => error,
        };
        let executed = async {
            if let Some(create) = &created {
                limits::check_table_files(create, &self.context, &self.limits)
                    .await
                    .map_err(Arc::new)?;
            }
            let frame = self
                .context
                .execute_logical_plan(logical)
                .await
                .map_err(|e| planning_error(in_location(e)))?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let batches = frame
                .collect()
                .await
                .map_err(|e| Arc::new(QuiverError::DataFusion(in_location(e))))?;
            Ok::<_, Arc<QuiverError>>((batches, schema))
        }
        .await;
        let (batches, schema) = match executed {
            Ok(done) => done,
            Err(error) => {
                // A table that could not be created does not keep its options.
                let refused_by_limit = matches!(*error, QuiverError::LimitExceeded { .. });
                let unreadable = match &created {
                    Some(create) if !refused_by_limit => first_problem_file(create, &self.context)
                        .await
                        .map(|problem| problem.describe(&create.name.to_string())),
                    _ => None,
                };
                for (location, options) in previous {
                    let _ = self.stores.configure(&location, &options);
                }
                return Err(match unreadable {
                    Some(message) => {
                        Arc::new(QuiverError::InvalidQuery(DataFusionError::Plan(message)))
                    }
                    None => error,
                });
            }
        };
        if let Some(store) = &self.catalog {
            record(store.as_ref(), change).map_err(Arc::new)?;
        }
        match ownership {
            OwnershipChange::Created(name) => self.access.set_owner(&name, creator.as_deref()),
            OwnershipChange::Dropped(name) => self.access.forget(&name).map_err(Arc::new)?,
            OwnershipChange::Nothing => {}
        }
        if let Some(location) = dropped_files {
            delete_files(&location, &self.stores).await.map_err(|e| {
                planning_error(DataFusionError::Context(
                    format!("deleting the files of a dropped table at {location}"),
                    Box::new(e),
                ))
            })?;
        }
        Ok((batches, schema))
    }

    /// For a `DROP TABLE` of a managed table, its directory.
    async fn managed_location_dropped_by(&self, plan: &LogicalPlan) -> Option<String> {
        let LogicalPlan::Ddl(DdlStatement::DropTable(drop)) = plan else {
            return None;
        };
        let table = self.context.table_provider(drop.name.clone()).await.ok()?;
        let table: &dyn std::any::Any = table.as_ref();
        let listing = table.downcast_ref::<ListingTable>()?;
        let location = listing.table_paths().first()?.as_str().to_string();
        self.warehouse.holds(&location).then_some(location)
    }

    /// The logical plan of `sql` with its placeholders replaced by `params`.
    async fn bound_plan(&self, sql: &str, params: Option<ParamValues>) -> Outcome<LogicalPlan> {
        let logical = self.logical_plan(sql).await?;
        match params {
            Some(params) => logical.with_param_values(params).map_err(planning_error),
            None => Ok(logical),
        }
    }

    /// What a prepared statement returns and which parameters it takes.
    /// And the query's plan, kept to run it again without planning from the SQL.
    pub(crate) async fn prepare(
        &self,
        sql: &str,
    ) -> Outcome<(PreparedShape, Option<ReusablePlan>)> {
        if self.access_statement(sql)?.is_some() {
            let nothing = Arc::new(Schema::empty());
            let shape = PreparedShape {
                dataset_schema: Arc::clone(&nothing),
                parameter_schema: nothing,
                is_query: false,
            };
            return Ok((shape, None));
        }
        // Read before planning: a change made while planning makes the plan stale.
        let generation = self.generation();
        let facts: FactsRecorder = Arc::default();
        let plan = self.recording(&facts).logical_plan(sql).await?;
        let types = plan.get_parameter_types().map_err(planning_error)?;
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
        let shape = PreparedShape {
            dataset_schema: Arc::new(plan.schema().as_arrow().clone()),
            parameter_schema: Arc::new(Schema::new(fields)),
            is_query: !is_catalog_change(&plan),
        };
        // Queries only: catalog statements, writes and EXPLAIN ANALYZE plan anew each time.
        let reusable =
            (shape.is_query && !matches!(plan, LogicalPlan::Analyze(_))).then(|| ReusablePlan {
                generation,
                plan,
                facts: facts.lock().clone(),
            });
        Ok((shape, reusable))
    }

    /// `EXPLAIN`: the logical plan, DataFusion's physical plan, and Quiver's stages.
    async fn explain(&self, job_id: &JobId, explain: &Explain) -> Outcome<Arc<dyn ExecutionPlan>> {
        let state = self.context.state();
        let optimized = state.optimize(&explain.plan).map_err(planning_error)?;
        let physical = state
            .create_physical_plan(&explain.plan)
            .await
            .map_err(planning_error)?;
        limits::check_physical_plan(&physical, &self.limits).map_err(Arc::new)?;
        let physical_text = displayable(physical.as_ref()).indent(false).to_string();
        let dag = plan_stages(job_id, physical, self.context.task_ctx())
            .await
            .map_err(planning_error)?;
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
}

/// How a catalog statement changes who owns what.
enum OwnershipChange {
    /// A table or view of this qualified name was created (or replaced).
    Created(String),
    /// The table, view or schema of this qualified name was dropped.
    Dropped(String),
    Nothing,
}

fn ownership_change(plan: &LogicalPlan, context: &SessionContext) -> OwnershipChange {
    let LogicalPlan::Ddl(ddl) = plan else {
        return OwnershipChange::Nothing;
    };
    let name = |reference: &datafusion::common::TableReference| qualified_name(reference, context);
    // `IF NOT EXISTS` over an existing table changes nothing, its owner included.
    let created =
        |reference: &datafusion::common::TableReference, or_replace: bool| match or_replace
            || !context.table_exist(reference.clone()).unwrap_or(false)
        {
            true => OwnershipChange::Created(name(reference)),
            false => OwnershipChange::Nothing,
        };
    match ddl {
        DdlStatement::CreateExternalTable(create) => created(&create.name, create.or_replace),
        DdlStatement::CreateMemoryTable(create) => created(&create.name, create.or_replace),
        DdlStatement::CreateView(view) => created(&view.name, view.or_replace),
        DdlStatement::DropTable(drop) => OwnershipChange::Dropped(name(&drop.name)),
        DdlStatement::DropView(drop) => OwnershipChange::Dropped(name(&drop.name)),
        DdlStatement::DropCatalogSchema(drop) => {
            OwnershipChange::Dropped(qualified_schema(&drop.name.to_string(), context))
        }
        _ => OwnershipChange::Nothing,
    }
}

/// The first location a `CREATE EXTERNAL TABLE` or `COPY` names, to put in its errors.
fn created_location(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) => {
            create.locations.first().cloned()
        }
        LogicalPlan::Copy(copy) => Some(copy.output_url.clone()),
        _ => None,
    }
}

/// A `SET` or `RESET` of a setting Quiver keeps off to distribute plans is refused,
/// saying why; setting it to `false` (what it is) is harmless.
fn refuse_protected_setting(plan: &LogicalPlan) -> Outcome<()> {
    let (variable, keeps_it_off) = match plan {
        LogicalPlan::Statement(Statement::SetVariable(set)) => (
            &set.variable,
            set.value
                .trim()
                .trim_matches('\'')
                .eq_ignore_ascii_case("false"),
        ),
        LogicalPlan::Statement(Statement::ResetVariable(reset)) => (&reset.variable, false),
        _ => return Ok(()),
    };
    match protected_setting(variable) {
        Some(why) if !keeps_it_off => {
            Err(Arc::new(QuiverError::InvalidQuery(DataFusionError::Plan(
                format!("`{variable}` stays false in Quiver and cannot be changed: {why}"),
            ))))
        }
        _ => Ok(()),
    }
}

/// A statement refused before planning, with `message` saying why.
fn invalid_query(message: impl Into<String>) -> Arc<QuiverError> {
    Arc::new(QuiverError::InvalidQuery(DataFusionError::Plan(
        message.into(),
    )))
}

fn planning_error(error: DataFusionError) -> Arc<QuiverError> {
    Arc::new(QuiverError::from_planning(error))
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

/// Whether `plan` writes files (`INSERT` into a file table, `COPY`): such writes run on
/// the executors. Writes into tables held in memory stay in the scheduler's session.
fn writes_files(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Copy(_) => true,
        LogicalPlan::Dml(dml) => {
            matches!(dml.op, WriteOp::Insert(_))
                && source_as_provider(&dml.target).is_ok_and(|table| {
                    let delta = quiver_delta::is_delta(table.as_ref());
                    let table: &dyn std::any::Any = table.as_ref();
                    table.is::<ListingTable>() || delta
                })
        }
        _ => false,
    }
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

/// A write's answer: one row, `count` = `rows`.
pub(crate) fn count_answer(rows: u64) -> Outcome<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![rows]))])
        .map_err(|e| Arc::new(QuiverError::DataFusion(e.into())))
}

/// `EXPLAIN ANALYZE`'s answer: one "Plan with Metrics" row of `text`.
pub(crate) fn analysis_answer(text: String) -> Outcome<RecordBatch> {
    RecordBatch::try_new(
        LogicalPlan::explain_schema(),
        vec![
            Arc::new(StringArray::from(vec!["Plan with Metrics"])),
            Arc::new(StringArray::from(vec![text])),
        ],
    )
    .map_err(|e| Arc::new(QuiverError::DataFusion(e.into())))
}

fn memory_plan(batches: Vec<RecordBatch>, schema: SchemaRef) -> Outcome<Arc<dyn ExecutionPlan>> {
    let plan: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(&[batches], schema, None)
        .map_err(|e| Arc::new(QuiverError::DataFusion(e)))?;
    Ok(plan)
}
