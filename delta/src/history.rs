//! `SELECT * FROM delta_history('t')`: the commits of a Delta table, newest first: version,
//! time, operation and its parameters, files added and removed, bytes added, and the
//! engine that wrote it.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use serde_json::Value;

use crate::log::{Action, LogListing, parse_actions, read_text};
use crate::named::{delta_table_named, string_argument};
use crate::table::DeltaTable;

/// The function's name in SQL.
pub const DELTA_HISTORY: &str = "delta_history";

#[derive(Debug, Default)]
pub struct DeltaHistoryFunction;

impl TableFunctionImpl for DeltaHistoryFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [name] = args.exprs() else {
            return Err(DataFusionError::Plan(format!(
                "{DELTA_HISTORY} takes one argument, a table's name: {DELTA_HISTORY}('t')"
            )));
        };
        Ok(Arc::new(HistoryTable {
            table: TableReference::from(string_argument(DELTA_HISTORY, "a table's name", name)?),
        }))
    }
}

#[derive(Debug)]
struct HistoryTable {
    table: TableReference,
}

fn history_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("operation", DataType::Utf8, true),
        Field::new("parameters", DataType::Utf8, true),
        Field::new("files_added", DataType::Int64, false),
        Field::new("files_removed", DataType::Int64, false),
        Field::new("bytes_added", DataType::Int64, false),
        Field::new("engine", DataType::Utf8, true),
    ]))
}

#[derive(Default)]
struct Commit {
    version: i64,
    timestamp: i64,
    operation: Option<String>,
    parameters: Option<String>,
    added: i64,
    removed: i64,
    bytes: i64,
    engine: Option<String>,
}

impl HistoryTable {
    async fn commits(&self, state: &dyn Session) -> Result<Vec<Commit>> {
        let provider = delta_table_named(state, &self.table).await?;
        let provider: &dyn Any = provider.as_ref();
        let table = provider
            .downcast_ref::<DeltaTable>()
            .ok_or_else(|| DataFusionError::Internal("not a Delta table".into()))?;
        let store = state
            .runtime_env()
            .object_store(table.url().object_store())?;
        let listing = LogListing::read(store.as_ref(), table.root(), table.location()).await?;
        let mut commits = Vec::with_capacity(listing.commits.len());
        for (version, object) in listing.commits.iter().rev() {
            // The commit's time as the protocol and time travel read it: its file's
            // modification time. (commitInfo's own `timestamp` is taken before the file
            // is written: `TIMESTAMP AS OF` it could miss the commit.)
            let mut commit = Commit {
                version: *version as i64,
                timestamp: object.last_modified.timestamp_millis(),
                ..Commit::default()
            };
            for action in parse_actions(&read_text(store.as_ref(), &object.location).await?)? {
                match action {
                    Action::Add(add) => {
                        commit.added += 1;
                        commit.bytes += add.size as i64;
                    }
                    Action::Remove { .. } => commit.removed += 1,
                    Action::CommitInfo(info) => {
                        let text =
                            |key: &str| info.get(key).and_then(Value::as_str).map(str::to_string);
                        commit.operation = text("operation");
                        commit.engine = text("engineInfo");
                        commit.parameters = info.get("operationParameters").map(Value::to_string);
                    }
                    _ => {}
                }
            }
            commits.push(commit);
        }
        Ok(commits)
    }
}

#[async_trait]
impl TableProvider for HistoryTable {
    fn schema(&self) -> SchemaRef {
        history_schema()
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
        let commits = self.commits(state).await?;
        let column = |f: &dyn Fn(&Commit) -> i64| -> ArrayRef {
            Arc::new(commits.iter().map(f).collect::<Int64Array>())
        };
        let text = |f: &dyn Fn(&Commit) -> Option<String>| -> ArrayRef {
            Arc::new(commits.iter().map(f).collect::<StringArray>())
        };
        let batch = RecordBatch::try_new(
            history_schema(),
            vec![
                column(&|c| c.version),
                Arc::new(
                    TimestampMillisecondArray::from(
                        commits.iter().map(|c| c.timestamp).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                text(&|c| c.operation.clone()),
                text(&|c| c.parameters.clone()),
                column(&|c| c.added),
                column(&|c| c.removed),
                column(&|c| c.bytes),
                text(&|c| c.engine.clone()),
            ],
        )?;
        MemorySourceConfig::try_new_exec(&[vec![batch]], history_schema(), projection.cloned())
            .map(|exec| exec as Arc<dyn ExecutionPlan>)
    }
}
