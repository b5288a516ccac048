//! From SQL text to a finished job: the scheduler's DataFusion session, planning on the
//! planning threads ([`crate::planning`]), and distributed execution through the engine.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::config::ConfigOptions;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use quiver_core::config::SchedulerConfig;
use quiver_core::proto::PartitionLocation;
use quiver_core::storage::StoreRegistry;
use quiver_core::{JobId, QuiverError, StageId};
use tracing::Instrument;

use crate::access_control::AccessControl;
use crate::adaptive::AdaptivePolicy;
use crate::admission::{Admission, UserLimits};
use crate::audit::{AuditLog, AuditedStatement, StatementOutcome, redact_secrets};
use crate::catalog_store::CatalogStore;
use crate::client_session::{ClientSession, Sessions};
use crate::durable_catalog::restore;
use crate::engine::{Engine, JobProgress};
use crate::held_results::{HeldResults, run_here, runs_here};
use crate::job::{JobOutcome, JobOwner, TaskEnvironment};
use crate::managed::Warehouse;
pub use crate::planning::PreparedShape;
use crate::planning::{
    PlannedJob, PlannedUpdate, PlanningThreads, ReusablePlan, StatementPlanner, analysis_answer,
    count_answer,
};
use crate::privileges::FactsRecorder;
use crate::query_history::QueryHistory;
use crate::writes::{PlannedWrite, commit, discard};

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
    /// The rows themselves, when the scheduler computed them (a query reading only data
    /// carried in its plan); `locations` is then empty.
    pub rows: Option<Vec<RecordBatch>>,
    /// Set while the job still runs: its final tasks write the result as the client
    /// reads it. Tells how the job ends.
    pub completion: Option<tokio::sync::watch::Receiver<JobOutcome>>,
}

pub type QueryOutcome = Result<QueryResult, Arc<QuiverError>>;

/// Plans and runs SQL for every client of the scheduler. The catalog is shared: a table
/// created by one client is visible to the next.
pub struct QueryService {
    planner: StatementPlanner,
    /// Clients' sessions, each with its own settings over the shared catalog.
    sessions: Sessions,
    /// The session of callers inside the process ([`QueryService::execute`]).
    local: Arc<ClientSession>,
    /// Where every statement's outcome is recorded, if anywhere.
    audit: Option<Arc<AuditLog>>,
    /// Recent statements, for `system.queries`.
    history: Arc<QueryHistory>,
    /// Where statements are planned: threads with stacks deep enough for the limits.
    planning: PlanningThreads,
    engine: Arc<Engine>,
    /// Each user's running slots and line.
    admission: Arc<Admission>,
    /// What `/metrics` counts of statements.
    pub(crate) counters: Arc<StatementCounters>,
    /// What every user may run, unless a limit set for the user or a role says else.
    default_limits: UserLimits,
    /// Cleared when the scheduler starts shutting down.
    admitting: AtomicBool,
    /// Results computed here, waiting for their clients.
    held: HeldResults,
}

impl QueryService {
    pub fn new(
        config: &SchedulerConfig,
        engine: Arc<Engine>,
        catalog: Option<Arc<dyn CatalogStore>>,
        warehouse: &str,
    ) -> Result<Self, QuiverError> {
        let warehouse = Warehouse::new(warehouse)
            .map_err(|e| QuiverError::Config(format!("warehouse '{warehouse}': {e}")))?;
        let mut session = SessionConfig::new()
            .with_target_partitions(config.target_partitions.max(1))
            .with_information_schema(true)
            .with_option_extension(crate::quiver_options::QuiverOptions::default());
        // Dynamic filters stay on: a broadcast join's filter reaches the scans of its own
        // task, where executors complete it (`join_filters.rs` in the executor crate).
        let options = session.options_mut();
        // Uncorrelated scalar subqueries executed by `ScalarSubqueryExec` hand their value
        // to expressions elsewhere in the plan through memory; as joins they travel.
        options
            .optimizer
            .enable_physical_uncorrelated_scalar_subquery = false;
        // A join through a shuffle costs far more here than in one process: every probe
        // row is written, sent and read again. A build side of up to 64 MiB (or 4 million
        // rows) is instead read whole by every task of the join, and the probe side stays
        // where it was scanned.
        options.optimizer.hash_join_single_partition_threshold = 64 << 20;
        options.optimizer.hash_join_single_partition_threshold_rows = 4_000_000;
        // Each task runs one partition of a scan in isolation; partitions must not take
        // over their siblings' files.
        options.execution.enable_file_stream_work_stealing = false;
        // Spreading a scan's few partitions round robin over the stage width is a
        // repartition within one process, but a whole shuffle stage here, whose every
        // task reads every producer.
        options.optimizer.enable_round_robin_repartition = false;
        let stores = Arc::new(StoreRegistry::new());
        // Tables are shared and outlive any one client: a file another program adds to
        // a table's directory counts from the next query on, and the listing limit
        // (`--max-table-files`) sees it. DataFusion would keep the first listing forever.
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .with_object_store_registry(Arc::clone(&stores) as _)
            .build_arc()
            .map_err(|e| QuiverError::Config(format!("setting up the session: {e}")))?;
        let state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rules(crate::exchange_filters::physical_optimizer_rules())
            .build();
        let context = SessionContext::new_with_state(state);
        crate::delta_tables::register(&context);
        let history = Arc::new(match &catalog {
            Some(store) => QueryHistory::persisted(Arc::clone(store))?,
            None => QueryHistory::default(),
        });
        if let Err(error) = crate::system::register(&context, &engine, &history) {
            tracing::warn!(%error, "could not add the system schema");
        }
        let access =
            Arc::new(AccessControl::load(catalog.clone())?.with_admins(config.admins.clone()));
        let shared_catalogs = Arc::clone(context.state().catalog_list());
        let planner = StatementPlanner {
            shared_catalogs,
            width_from: config.stage_width_from_slots.then(|| Arc::clone(&engine)),
            context,
            limits: config.limits.clone(),
            stores,
            catalog,
            warehouse,
            access,
            facts: None,
            generation: Arc::default(),
        };
        let sessions = Sessions::new(
            planner.clone(),
            config.session_idle_timeout,
            config.admins.clone(),
        );
        let local = sessions.open_local();
        let engine_retention = engine.config().result_retention;
        Ok(Self {
            planner,
            sessions,
            local,
            audit: None,
            history,
            planning: PlanningThreads::new()?,
            engine,
            admission: Arc::new(Admission::default()),
            counters: Arc::default(),
            default_limits: UserLimits {
                max_running: config.limits.max_running_per_user as u64,
                max_queued: config.limits.max_queued_per_user as u64,
                statement_timeout_secs: config.limits.statement_timeout_secs,
                max_query_memory_bytes: config.limits.max_query_memory_bytes,
            },
            admitting: AtomicBool::new(true),
            held: HeldResults::new(engine_retention),
        })
    }

    /// The DataFusion session that holds the catalog (for embedding and tests).
    pub fn context(&self) -> &SessionContext {
        &self.planner.context
    }

    /// Records every statement's outcome in `audit`.
    pub fn with_audit_log(mut self, audit: Option<Arc<AuditLog>>) -> Self {
        self.audit = audit;
        self
    }

    /// Records statement `id` of `session` as arrived, in the history.
    fn statement_began<'a>(
        &self,
        id: String,
        session: &'a ClientSession,
        sql: &'a str,
    ) -> ArrivedStatement<'a> {
        self.history
            .begin(&id, session.user(), session.id(), &redact_secrets(sql));
        ArrivedStatement {
            id,
            session,
            sql,
            started: Instant::now(),
            facts: FactsRecorder::default(),
        }
    }

    /// Records how `statement` ended (with the rows it changed, for DML, and what its
    /// job did, when it ran one) in the audit log and the history.
    fn statement_ended(
        &self,
        statement: &ArrivedStatement<'_>,
        outcome: Result<Option<i64>, &QuiverError>,
        progress: Option<JobProgress>,
    ) {
        self.ending_of(statement).record(outcome, progress);
    }

    /// A statement whose result streams ends when its job does: until then it keeps
    /// the user's running `slot` and stays within its time limit (past it the job fails
    /// with the timeout, which its reader is told); then its end is recorded.
    fn end_with_job(
        &self,
        statement: &ArrivedStatement<'_>,
        limits: &UserLimits,
        job_id: JobId,
        mut completion: tokio::sync::watch::Receiver<JobOutcome>,
        slot: Option<crate::admission::Admitted>,
    ) {
        let ending = self.ending_of(statement).detached();
        let engine = Arc::clone(&self.engine);
        let time_left = match limits.statement_timeout_secs {
            0 => None,
            seconds => Some((
                seconds,
                Duration::from_secs(seconds).saturating_sub(statement.started.elapsed()),
            )),
        };
        tokio::spawn(async move {
            let finished = completion.wait_for(JobOutcome::is_finished);
            let ended = match time_left {
                None => finished.await.map(|outcome| outcome.clone()),
                Some((seconds, left)) => match tokio::time::timeout(left, finished).await {
                    Ok(ended) => ended.map(|outcome| outcome.clone()),
                    Err(_) => {
                        engine.fail(&job_id, QuiverError::StatementTimeout { seconds });
                        Ok(JobOutcome::Failed(Arc::new(
                            QuiverError::StatementTimeout { seconds },
                        )))
                    }
                },
            };
            drop(slot);
            let failure = match ended {
                Ok(JobOutcome::Failed(error)) => Some(error),
                Ok(_) => None,
                Err(_) => Some(Arc::new(QuiverError::Internal(
                    "job state dropped".to_string(),
                ))),
            };
            let outcome = match &failure {
                Some(error) => Err(error.as_ref()),
                None => Ok(None),
            };
            ending.record(outcome, engine.progress(&job_id));
        });
    }

    /// What records `statement`'s end (borrowing it; [`StatementEnding::detached`] for a
    /// streamed result's statement, which ends after its answer was sent).
    fn ending_of<'a>(&'a self, statement: &'a ArrivedStatement<'_>) -> StatementEnding<'a> {
        StatementEnding {
            id: Cow::Borrowed(&statement.id),
            user: statement.session.user().map(Cow::Borrowed),
            session: Cow::Borrowed(statement.session.id()),
            sql: Cow::Borrowed(statement.sql),
            started: statement.started,
            facts: Cow::Borrowed(&statement.facts),
            audit: self.audit.as_ref().map(Cow::Borrowed),
            history: Cow::Borrowed(&self.history),
            counters: Cow::Borrowed(&self.counters),
        }
    }

    /// The session of callers inside the process.
    pub fn local_session(&self) -> Arc<ClientSession> {
        Arc::clone(&self.local)
    }

    /// Clients' sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Creates again every definition of the catalog store (at start-up); returns how
    /// many were restored.
    pub async fn restore_catalog(&self) -> Result<usize, Arc<QuiverError>> {
        let Some(store) = self.planner.catalog.clone() else {
            return Ok(0);
        };
        let planner = self.planner.clone();
        self.planning
            .run("restoring the catalog", async move {
                restore(store.as_ref(), &planner.context, &planner.stores)
                    .await
                    .map_err(Arc::new)
            })
            .await
    }

    /// Refuses every later query; those already running go on.
    pub fn stop_admitting(&self) {
        self.admitting.store(false, Ordering::SeqCst);
    }

    /// Plans `sql`, runs it on the executors and waits until its result is ready.
    pub async fn execute(&self, sql: &str) -> QueryOutcome {
        let local = Arc::clone(&self.local);
        self.execute_as(&local, JobId::new_random(), sql, None)
            .await
    }

    /// The newest `limit` statements of the history `viewer` may see (all of them
    /// without a viewer), newest first.
    pub fn history_visible_to(
        &self,
        viewer: Option<&crate::query_history::SessionIdentity>,
        limit: usize,
    ) -> Vec<crate::query_history::QueryRecord> {
        self.history.latest_visible_to(viewer, limit)
    }

    /// Statement `id` of the history, if `viewer` may see it.
    pub fn history_record(
        &self,
        id: &str,
        viewer: Option<&crate::query_history::SessionIdentity>,
    ) -> Option<crate::query_history::QueryRecord> {
        self.history.find_visible(id, viewer)
    }

    /// Statements of the history that arrived at or after `since`.
    pub fn statements_since(&self, since: std::time::SystemTime) -> usize {
        self.history.submitted_since(since)
    }

    /// Statements waiting in their users' lines.
    pub fn queued_statements(&self) -> usize {
        self.admission.waiting()
    }

    /// Where statement `job_id` waits in its user's line (1 is next), if it waits.
    pub fn queue_position(&self, job_id: &JobId) -> Option<usize> {
        self.admission.position(job_id)
    }

    /// The engine that runs this service's jobs.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Results computed on the scheduler, waiting to be read.
    pub(crate) fn held(&self) -> &HeldResults {
        &self.held
    }

    /// Like [`QueryService::execute`], in `session` (under its settings, as its user),
    /// under a job id the caller chose (to follow or cancel it meanwhile), with values
    /// for `$n` placeholders. The outcome is in the audit log before it is returned.
    pub async fn execute_as(
        &self,
        session: &ClientSession,
        job_id: JobId,
        sql: &str,
        params: Option<ParamValues>,
    ) -> QueryOutcome {
        self.execute_prepared_as(session, job_id, sql, params, None)
            .await
    }

    /// Like [`QueryService::execute_as`], reusing the plan the statement was prepared
    /// with while nothing it was planned against has changed.
    pub(crate) async fn execute_prepared_as(
        &self,
        session: &ClientSession,
        job_id: JobId,
        sql: &str,
        params: Option<ParamValues>,
        prepared: Option<ReusablePlan>,
    ) -> QueryOutcome {
        let statement = self.statement_began(job_id.to_string(), session, sql);
        let limits = self.limits_of(session);
        let running = async {
            let slot = self
                .admission
                .admit(line_of(session), &job_id, &limits)
                .await
                .map_err(Arc::new)?;
            self.history.started(&statement.id);
            let result = self
                .execute_unaudited(
                    session,
                    &limits,
                    &statement.facts,
                    job_id.clone(),
                    sql,
                    Bound { params, prepared },
                )
                .await?;
            Ok((result, slot))
        };
        let (outcome, slot) = match within_timeout(&limits, running).await {
            Ok((result, slot)) => (Ok(result), Some(slot)),
            Err(error) => (Err(error), None),
        };
        // A result read while it is written: the statement ends with its job, which
        // keeps the user's running slot meanwhile.
        if let Ok(result) = &outcome
            && let Some(completion) = result.completion.clone()
        {
            self.end_with_job(&statement, &limits, job_id, completion, slot);
            return outcome;
        }
        // A result computed on the scheduler ran no task.
        let progress = match &outcome {
            Ok(result) if result.rows.is_some() => Some(JobProgress::default()),
            _ => self.engine.progress(&job_id),
        };
        self.statement_ended(
            &statement,
            outcome.as_ref().map(|_| None).map_err(|e| e.as_ref()),
            progress,
        );
        outcome
    }

    /// What `session`'s statements may take.
    fn limits_of(&self, session: &ClientSession) -> UserLimits {
        self.planner
            .access
            .limits_for(session.user(), self.default_limits)
    }

    async fn execute_unaudited(
        &self,
        session: &ClientSession,
        limits: &UserLimits,
        facts: &FactsRecorder,
        job_id: JobId,
        sql: &str,
        bound: Bound,
    ) -> QueryOutcome {
        self.check_admitting()?;
        let started = Instant::now();
        // Planning also reads files (schemas, footers): a panic in a third-party reader
        // on a corrupt file becomes this query's error, not the connection's end.
        let planner = session.planner.recording(facts);
        let (job, text) = (job_id.clone(), sql.to_string());
        let planned = self
            .planning
            .run(sql, async move {
                planner
                    .plan_job(&job, &text, bound.params, bound.prepared)
                    .await
            })
            .await?;
        if let Some(plan) = runs_here(&planned) {
            let planning_time = started.elapsed();
            let context = session.context().task_ctx();
            let computed = self
                .planning
                .run(sql, async move {
                    run_here(plan, context)
                        .await
                        .map_err(|e| Arc::new(QuiverError::DataFusion(e)))
                })
                .await?;
            if let Some(rows) = computed {
                return Ok(QueryResult {
                    job_id,
                    final_stage: planned.dag.final_stage().stage_id,
                    schema: Arc::clone(&planned.dag.schema),
                    locations: Vec::new(),
                    ordered: planned.ordered,
                    planning_time,
                    total_time: started.elapsed(),
                    rows: Some(rows),
                    completion: None,
                });
            }
        }
        let run_as = RunAs::of(session, limits);
        let span = query_span(session, &job_id);
        self.run(job_id, planned, run_as, started)
            .instrument(span)
            .await
    }

    /// Parses and plans `sql` (without running it); `?` placeholders become `$1`, `$2`...
    pub async fn logical_plan(
        &self,
        session: &ClientSession,
        sql: &str,
    ) -> Result<LogicalPlan, Arc<QuiverError>> {
        let planner = session.planner.clone();
        let text = sql.to_string();
        self.planning
            .run(sql, async move { planner.logical_plan(&text).await })
            .await
    }

    /// Runs a statement that changes the catalog, data or settings (DDL, DML, `SET`) and
    /// returns how many rows it changed (0 for DDL).
    pub async fn execute_update(
        &self,
        session: &ClientSession,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<i64, Arc<QuiverError>> {
        let statement = self.statement_began(JobId::new_random().to_string(), session, sql);
        let limits = self.limits_of(session);
        self.history.started(&statement.id);
        let outcome = within_timeout(
            &limits,
            self.update_unaudited(session, &limits, &statement.facts, sql, params),
        )
        .await;
        self.statement_ended(
            &statement,
            outcome
                .as_ref()
                .map(|rows| Some(*rows))
                .map_err(|e| e.as_ref()),
            None,
        );
        outcome
    }

    async fn update_unaudited(
        &self,
        session: &ClientSession,
        limits: &UserLimits,
        facts: &FactsRecorder,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<i64, Arc<QuiverError>> {
        self.check_admitting()?;
        let started = Instant::now();
        let job_id = JobId::new_random();
        let planner = session.planner.recording(facts);
        let (job, text) = (job_id.clone(), sql.to_string());
        let planned = self
            .planning
            .run(sql, async move {
                planner.plan_update(&job, &text, params).await
            })
            .await?;
        match planned {
            PlannedUpdate::Done(rows) => Ok(rows),
            PlannedUpdate::Job(planned) => {
                let _slot = self
                    .admission
                    .admit(line_of(session), &job_id, limits)
                    .await
                    .map_err(Arc::new)?;
                let span = query_span(session, &job_id);
                let rows = self
                    .run_write(job_id, *planned, RunAs::of(session, limits), started)
                    .instrument(span)
                    .await?;
                Ok(rows as i64)
            }
        }
    }

    /// What a prepared statement returns and which parameters it takes.
    pub(crate) async fn prepare(
        &self,
        session: &ClientSession,
        sql: &str,
    ) -> Result<(PreparedShape, Option<ReusablePlan>), Arc<QuiverError>> {
        let planner = session.planner.clone();
        let text = sql.to_string();
        self.planning
            .run(sql, async move { planner.prepare(&text).await })
            .await
    }

    fn check_admitting(&self) -> Result<(), Arc<QuiverError>> {
        if self.admitting.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Arc::new(QuiverError::ShuttingDown))
        }
    }

    /// Runs a planned job; a write is committed and answered with its row count.
    async fn run(
        &self,
        job_id: JobId,
        planned: PlannedJob,
        run_as: RunAs,
        started: Instant,
    ) -> QueryOutcome {
        if let Some(options) = planned.analyze {
            return self
                .run_analyzed(job_id, planned, options, run_as, started)
                .await;
        }
        if planned.write.is_none() {
            return self.run_job(job_id, planned, run_as, started, true).await;
        }
        let rows = self
            .run_write(job_id, planned, run_as.clone(), started)
            .await?;
        // The answer is one row, `count`, read like any result.
        self.answer("the count of a write", count_answer(rows)?, run_as, started)
            .await
    }

    /// Runs a one-stage job whose result is `batch`, under `run_as`.
    async fn answer(
        &self,
        what: &str,
        batch: RecordBatch,
        run_as: RunAs,
        started: Instant,
    ) -> QueryOutcome {
        let planner = self.planner.clone();
        let answer_id = JobId::new_random();
        let job = answer_id.clone();
        let answer = self
            .planning
            .run(what, async move { planner.plan_answer(&job, batch).await })
            .await?;
        self.run_job(answer_id, answer, run_as, started, true).await
    }

    /// `EXPLAIN ANALYZE`: runs the job with its tasks reporting their operators'
    /// metrics, drops its result, and answers with every stage's plan and metrics.
    async fn run_analyzed(
        &self,
        job_id: JobId,
        planned: PlannedJob,
        options: crate::explain_analyze::AnalyzeOptions,
        run_as: RunAs,
        started: Instant,
    ) -> QueryOutcome {
        self.run_job(job_id.clone(), planned, run_as.clone(), started, false)
            .await?;
        let stages = self.engine.analysis(&job_id).ok_or_else(|| {
            Arc::new(QuiverError::Internal(format!(
                "job {job_id} was released before its metrics were read"
            )))
        })?;
        self.engine.release(&job_id);
        let text = crate::explain_analyze::render(&stages, options);
        self.answer(
            "the answer of EXPLAIN ANALYZE",
            analysis_answer(text)?,
            run_as,
            started,
        )
        .await
    }

    /// Runs a write job and commits it; returns the rows written. A write that fails or
    /// whose client goes away leaves nothing in the target.
    async fn run_write(
        &self,
        job_id: JobId,
        planned: PlannedJob,
        run_as: RunAs,
        started: Instant,
    ) -> Result<u64, Arc<QuiverError>> {
        let write = planned.write.clone().ok_or_else(|| {
            Arc::new(QuiverError::Internal(
                "a write job without a write".to_string(),
            ))
        })?;
        let discard_on_drop = DiscardOnDrop {
            write: Some(write.clone()),
            stores: Arc::clone(&self.planner.stores),
        };
        let creator = run_as.owner.user.clone();
        let ran = self
            .run_job(job_id.clone(), planned, run_as, started, false)
            .await;
        let mut committed = match ran {
            Ok(_) => self.commit(&job_id, &write).await,
            Err(error) => Err(error),
        };
        if committed.is_ok()
            && let Some(register) = write.register.clone()
        {
            let planner = self.planner.clone();
            if let Err(error) = self
                .planning
                .run("registering a new table", async move {
                    planner.register_managed(register, creator).await
                })
                .await
            {
                committed = Err(error);
            }
        }
        discard_on_drop.disarm();
        if committed.is_err()
            && let Err(error) = discard(&write, &self.planner.stores).await
        {
            tracing::warn!(job = %job_id, %error, "could not delete a failed write's staging files");
        }
        committed
    }

    /// Moves the files of the write's successful attempts into its target.
    async fn commit(&self, job_id: &JobId, write: &PlannedWrite) -> Result<u64, Arc<QuiverError>> {
        let (attempts, rows) = self.engine.final_attempts(job_id).ok_or_else(|| {
            Arc::new(QuiverError::Internal(format!(
                "job {job_id} finished without an attempt for every write task"
            )))
        })?;
        // The tasks' own answers (row counts) are not read by anyone.
        self.engine.release(job_id);
        commit(write, &attempts, &self.planner.stores)
            .await
            .map_err(|e| {
                Arc::new(QuiverError::DataFusion(DataFusionError::Context(
                    format!("committing the write to {}", write.target),
                    Box::new(e),
                )))
            })?;
        tracing::info!(job = %job_id, rows, target = %write.target, "write committed");
        Ok(rows)
    }

    /// Runs a planned job. With `stream`, and the session's leave, the answer comes as
    /// soon as the client can read the result while the final stage writes it.
    async fn run_job(
        &self,
        job_id: JobId,
        planned: PlannedJob,
        run_as: RunAs,
        started: Instant,
        stream: bool,
    ) -> QueryOutcome {
        let PlannedJob {
            dag,
            ordered,
            stores,
            write: _,
            analyze: _,
        } = planned;
        let planning_time = started.elapsed();
        let schema = Arc::clone(&dag.schema);
        let final_stage = dag.final_stage().stage_id;
        self.engine.wait_for_executors().await.map_err(Arc::new)?;
        let environment = TaskEnvironment {
            settings: run_as.settings,
            owner: run_as.owner,
            stores,
            max_memory_bytes: run_as.max_memory_bytes,
            adaptive: run_as.adaptive,
            stream_result: stream && run_as.stream_results,
        };
        let mut outcome = self
            .engine
            .submit(job_id.clone(), dag, Arc::new(environment));
        // If the client goes away while waiting, this future is dropped: stop the job.
        let cancel_on_drop = CancelOnDrop {
            engine: Arc::clone(&self.engine),
            job_id: Some(job_id.clone()),
        };
        let finished = outcome
            .wait_for(JobOutcome::is_readable)
            .await
            .map_err(|_| Arc::new(QuiverError::Internal("job state dropped".to_string())))?
            .clone();
        cancel_on_drop.disarm();
        let (locations, completion) = match finished {
            JobOutcome::Succeeded(locations) => (locations, None),
            JobOutcome::Readable(locations) => (locations, Some(outcome)),
            JobOutcome::Failed(error) => return Err(error),
            JobOutcome::Running => {
                return Err(Arc::new(QuiverError::Internal(
                    "job reported finished while running".to_string(),
                )));
            }
        };
        Ok(QueryResult {
            job_id,
            final_stage,
            schema,
            locations,
            ordered,
            planning_time,
            total_time: started.elapsed(),
            rows: None,
            completion,
        })
    }
}

/// What a query runs with besides its SQL.
struct Bound {
    /// Values of its placeholders.
    params: Option<ParamValues>,
    /// The plan it was prepared with, if it was.
    prepared: Option<ReusablePlan>,
}

/// Statements counted for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct StatementCounters {
    pub(crate) succeeded: std::sync::atomic::AtomicU64,
    pub(crate) failed: std::sync::atomic::AtomicU64,
    /// From arrival to outcome.
    pub(crate) duration: quiver_core::prometheus::DurationHistogram,
}

/// A statement from its arrival on: what the history and the audit log record of it.
struct ArrivedStatement<'a> {
    id: String,
    session: &'a ClientSession,
    sql: &'a str,
    started: Instant,
    /// What planning learnt of it.
    facts: FactsRecorder,
}

/// Where a statement's end is recorded: the counters, the audit log and the history.
struct StatementEnding<'a> {
    id: Cow<'a, str>,
    user: Option<Cow<'a, str>>,
    session: Cow<'a, str>,
    sql: Cow<'a, str>,
    started: Instant,
    facts: Cow<'a, FactsRecorder>,
    audit: Option<Cow<'a, Arc<AuditLog>>>,
    history: Cow<'a, Arc<QueryHistory>>,
    counters: Cow<'a, Arc<StatementCounters>>,
}

impl StatementEnding<'_> {
    /// The same, owning what it records (to outlive the request).
    fn detached(self) -> StatementEnding<'static> {
        StatementEnding {
            id: Cow::Owned(self.id.into_owned()),
            user: self.user.map(|user| Cow::Owned(user.into_owned())),
            session: Cow::Owned(self.session.into_owned()),
            sql: Cow::Owned(self.sql.into_owned()),
            started: self.started,
            facts: Cow::Owned(self.facts.into_owned()),
            audit: self.audit.map(|audit| Cow::Owned(audit.into_owned())),
            history: Cow::Owned(self.history.into_owned()),
            counters: Cow::Owned(self.counters.into_owned()),
        }
    }

    fn record(&self, outcome: Result<Option<i64>, &QuiverError>, progress: Option<JobProgress>) {
        let error = outcome.err().map(ToString::to_string);
        let ended = match error {
            None => &self.counters.succeeded,
            Some(_) => &self.counters.failed,
        };
        ended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.counters.duration.observe(self.started.elapsed());
        if let Some(audit) = &self.audit {
            let audited = match (&error, outcome) {
                (Some(error), _) => StatementOutcome::Failed { error },
                (None, rows) => StatementOutcome::Succeeded {
                    rows: rows.ok().flatten(),
                },
            };
            audit.statement(
                &AuditedStatement {
                    user: self.user.as_deref(),
                    session: &self.session,
                    sql: &self.sql,
                    facts: &self.facts.lock(),
                },
                audited,
                self.started.elapsed(),
            );
        }
        let recorded = match error {
            Some(error) => Err(error),
            None => Ok(outcome.ok().flatten()),
        };
        self.history.finish(&self.id, recorded, progress);
    }
}

/// What a session's jobs run with: its settings, and who they run for.
#[derive(Debug, Clone)]
struct RunAs {
    settings: HashMap<String, String>,
    owner: JobOwner,
    /// Bytes of memory the job's tasks may hold on each executor (0: no limit).
    max_memory_bytes: u64,
    adaptive: AdaptivePolicy,
    /// Whether the session lets clients read results as they are written.
    stream_results: bool,
}

impl RunAs {
    fn of(session: &ClientSession, limits: &UserLimits) -> Self {
        let (adaptive, stream_results) = {
            let state = session.context().state_ref();
            let state = state.read();
            let options = state.config().options();
            (
                AdaptivePolicy::from_settings(options),
                crate::quiver_options::quiver_options(options).stream_results,
            )
        };
        Self {
            settings: task_settings(session.context()),
            owner: JobOwner {
                user: session.user().map(str::to_string),
                session: session.id().to_string(),
            },
            max_memory_bytes: limits.max_query_memory_bytes,
            adaptive,
            stream_results,
        }
    }
}

/// Runs `statement` within the statement timeout of `limits`. Past it the statement's
/// future is dropped, which cancels its job on every executor.
async fn within_timeout<T>(
    limits: &UserLimits,
    statement: impl Future<Output = Result<T, Arc<QuiverError>>>,
) -> Result<T, Arc<QuiverError>> {
    match limits.statement_timeout_secs {
        0 => statement.await,
        seconds => tokio::time::timeout(Duration::from_secs(seconds), statement)
            .await
            .unwrap_or_else(|_| Err(Arc::new(QuiverError::StatementTimeout { seconds }))),
    }
}

/// Whose line a session's statements wait in: its login's, or (without logins) its own.
fn line_of(session: &ClientSession) -> &str {
    session.user().unwrap_or(session.id())
}

/// The span a session's statement runs in: its logs carry the user and session.
fn query_span(session: &ClientSession, job_id: &JobId) -> tracing::Span {
    tracing::info_span!(
        "statement",
        job = %job_id,
        user = session.user().unwrap_or("-"),
        session = %&session.id()[..8.min(session.id().len())],
    )
}

/// The settings of `context` that differ from DataFusion's defaults: what tasks run
/// under. Quiver's own (`quiver.`, listed by DataFusion without the prefix) concern the
/// scheduler only.
fn task_settings(context: &SessionContext) -> HashMap<String, String> {
    let defaults = &*DEFAULT_SETTINGS;
    context
        .state_ref()
        .read()
        .config()
        .options()
        .entries()
        .into_iter()
        .filter(|e| e.key.starts_with("datafusion."))
        .filter(|e| defaults.get(&e.key) != Some(&e.value))
        .filter_map(|e| e.value.map(|v| (e.key, v)))
        .collect()
}

/// DataFusion's default settings, computed once: every query compares against them.
static DEFAULT_SETTINGS: LazyLock<HashMap<String, Option<String>>> = LazyLock::new(|| {
    ConfigOptions::default()
        .entries()
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect()
});

/// Deletes a write's staging files when the request running it is dropped first.
struct DiscardOnDrop {
    write: Option<PlannedWrite>,
    stores: Arc<StoreRegistry>,
}

impl DiscardOnDrop {
    fn disarm(mut self) {
        self.write = None;
    }
}

impl Drop for DiscardOnDrop {
    fn drop(&mut self) {
        let Some(write) = self.write.take() else {
            return;
        };
        let stores = Arc::clone(&self.stores);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // Let the cancelled tasks stop before their directories go.
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(error) = discard(&write, &stores).await {
                    tracing::warn!(%error, staging = %write.staging, "could not delete an abandoned write's staging files");
                }
            });
        }
    }
}

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
