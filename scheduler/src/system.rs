//! The `system` schema: the cluster described as tables (`system.executors`), so every
//! client — the shell's `\cluster`, Flight SQL tools, Python — can query it with SQL.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::engine::Engine;
use crate::query_history::{QueryHistory, SessionIdentity, micros};

/// Adds the `system` schema to the session's default catalog.
pub(crate) fn register(
    context: &SessionContext,
    engine: &Arc<Engine>,
    history: &Arc<QueryHistory>,
) -> Result<()> {
    let schema = Arc::new(MemorySchemaProvider::new());
    schema.register_table(
        "executors".to_string(),
        Arc::new(ExecutorsTable {
            engine: Arc::clone(engine),
        }),
    )?;
    schema.register_table(
        "queries".to_string(),
        Arc::new(QueriesTable {
            history: Arc::clone(history),
        }),
    )?;
    let catalog_name = context
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    if let Some(catalog) = context.catalog(&catalog_name) {
        catalog.register_schema("system", schema)?;
    }
    Ok(())
}

/// One row per live executor, read at scan time.
struct ExecutorsTable {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for ExecutorsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecutorsTable")
    }
}

fn executors_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("executor_id", DataType::Utf8, false),
        Field::new("address", DataType::Utf8, false),
        Field::new("slots", DataType::UInt32, false),
        Field::new("running_tasks", DataType::UInt64, false),
        Field::new("reported_tasks", DataType::UInt32, false),
        Field::new("memory_limit", DataType::UInt64, true),
        Field::new("memory_reserved", DataType::UInt64, false),
        Field::new("shuffle_memory", DataType::UInt64, false),
        Field::new("shuffle_spilled", DataType::UInt64, false),
        Field::new("draining", DataType::Boolean, false),
        Field::new("last_heartbeat_secs", DataType::Float64, false),
    ]))
}

#[async_trait]
impl TableProvider for ExecutorsTable {
    fn schema(&self) -> SchemaRef {
        executors_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let executors = self.engine.executors();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                executors.iter().map(|e| e.executor_id.clone()),
            )),
            Arc::new(StringArray::from_iter_values(
                executors.iter().map(|e| e.url.clone()),
            )),
            Arc::new(UInt32Array::from_iter_values(
                executors.iter().map(|e| e.slots),
            )),
            Arc::new(UInt64Array::from_iter_values(
                executors.iter().map(|e| e.running_tasks as u64),
            )),
            Arc::new(UInt32Array::from_iter_values(
                executors.iter().map(|e| e.reported_tasks),
            )),
            Arc::new(UInt64Array::from_iter(
                executors.iter().map(|e| e.memory_limit),
            )),
            Arc::new(UInt64Array::from_iter_values(
                executors.iter().map(|e| e.memory_reserved),
            )),
            Arc::new(UInt64Array::from_iter_values(
                executors.iter().map(|e| e.shuffle_memory_bytes),
            )),
            Arc::new(UInt64Array::from_iter_values(
                executors.iter().map(|e| e.shuffle_spilled_bytes),
            )),
            Arc::new(BooleanArray::from_iter(
                executors.iter().map(|e| Some(e.draining)),
            )),
            Arc::new(Float64Array::from_iter_values(
                executors.iter().map(|e| e.last_seen.as_secs_f64()),
            )),
        ];
        let batch = RecordBatch::try_new(executors_schema(), columns)?;
        let plan: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            executors_schema(),
            projection.cloned(),
        )?;
        Ok(plan)
    }
}

/// The statement history (`system.queries`): a user's own statements (without logins,
/// the session's), all of them for an administrator.
struct QueriesTable {
    history: Arc<QueryHistory>,
}

impl std::fmt::Debug for QueriesTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueriesTable")
    }
}

fn queries_schema() -> SchemaRef {
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("user", DataType::Utf8, true),
        Field::new("session", DataType::Utf8, false),
        Field::new("sql", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("submitted", timestamp.clone(), false),
        Field::new("started", timestamp.clone(), true),
        Field::new("finished", timestamp, true),
        Field::new("duration_ms", DataType::Float64, true),
        Field::new("rows_changed", DataType::Int64, true),
        Field::new("stages", DataType::UInt64, true),
        Field::new("tasks", DataType::UInt64, true),
        Field::new("rows", DataType::UInt64, true),
        Field::new("bytes", DataType::UInt64, true),
        Field::new("error", DataType::Utf8, true),
    ]))
}

#[async_trait]
impl TableProvider for QueriesTable {
    fn schema(&self) -> SchemaRef {
        queries_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let viewer = state.config().get_extension::<SessionIdentity>();
        let records = self.history.visible_to(viewer.as_deref());
        let timestamps = |values: Vec<Option<i64>>| {
            Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC")) as ArrayRef
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.id.clone()),
            )),
            Arc::new(StringArray::from_iter(
                records.iter().map(|r| r.user.clone()),
            )),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.session.clone()),
            )),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.sql.clone()),
            )),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.state),
            )),
            timestamps(records.iter().map(|r| Some(micros(r.submitted))).collect()),
            timestamps(records.iter().map(|r| r.started.map(micros)).collect()),
            timestamps(records.iter().map(|r| r.finished.map(micros)).collect()),
            Arc::new(Float64Array::from_iter(
                records
                    .iter()
                    .map(|r| r.duration.map(|d| d.as_secs_f64() * 1e3)),
            )),
            Arc::new(Int64Array::from_iter(
                records.iter().map(|r| r.rows_changed),
            )),
            Arc::new(UInt64Array::from_iter(records.iter().map(|r| r.stages))),
            Arc::new(UInt64Array::from_iter(records.iter().map(|r| r.tasks))),
            Arc::new(UInt64Array::from_iter(records.iter().map(|r| r.rows))),
            Arc::new(UInt64Array::from_iter(records.iter().map(|r| r.bytes))),
            Arc::new(StringArray::from_iter(
                records.iter().map(|r| r.error.clone()),
            )),
        ];
        let batch = RecordBatch::try_new(queries_schema(), columns)?;
        let plan: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            queries_schema(),
            projection.cloned(),
        )?;
        Ok(plan)
    }
}
