//! Delta Lake tables in the scheduler: `STORED AS DELTA`, `delta_history('t')` and
//! `delta_at('t', ...)` (time travel) in every session, and the last step of a write into
//! a Delta table — one log commit naming exactly the files the write's successful task
//! attempts left in the table's root.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::TableProvider;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use quiver_core::storage::StoreRegistry;
use quiver_delta::{
    DELTA, DELTA_AT, DELTA_HISTORY, DeltaAtFunction, DeltaError, DeltaHistoryFunction, DeltaTable,
    DeltaTableFactory, NewFile, PendingWrite, commit_write, file_stats,
};

/// Footers read at once when a commit gathers its files' statistics.
const FOOTERS_AT_ONCE: usize = 8;

/// Makes `STORED AS DELTA` and `delta_history` known to the session (and to every
/// client session made from it).
pub(crate) fn register(context: &SessionContext) {
    context
        .state_ref()
        .write()
        .table_factories_mut()
        .insert(DELTA.to_string(), Arc::new(DeltaTableFactory));
    context.register_udtf(DELTA_HISTORY, Arc::new(DeltaHistoryFunction));
    context.register_udtf(DELTA_AT, Arc::new(DeltaAtFunction));
}

/// The Delta table an `INSERT` writes into, and whether it replaces the table's rows.
pub(crate) fn insert_target(plan: &LogicalPlan) -> Option<(Arc<dyn TableProvider>, bool)> {
    let LogicalPlan::Dml(dml) = plan else {
        return None;
    };
    let WriteOp::Insert(op) = dml.op else {
        return None;
    };
    let table = source_as_provider(&dml.target).ok()?;
    quiver_delta::is_delta(table.as_ref()).then_some((table, op != InsertOp::Append))
}

/// What committing a write into `table` will take, checked now, before any task runs.
pub(crate) async fn prepare_write(
    table: &Arc<dyn TableProvider>,
    overwrite: bool,
    stores: &StoreRegistry,
) -> Result<PendingWrite> {
    let table: &dyn std::any::Any = table.as_ref();
    let delta = table
        .downcast_ref::<DeltaTable>()
        .ok_or_else(|| DataFusionError::Internal("not a Delta table".to_string()))?;
    let store = stores.get_store(delta.url().as_ref())?;
    Ok(delta.prepare_write(&store, overwrite).await?)
}

/// What committing `CREATE TABLE ... STORED AS DELTA AS query` takes: the table and its
/// files become version 0 in one commit. Refused now if a table is already at `location`.
pub(crate) async fn prepare_create(
    location: &str,
    schema: &Schema,
    partition_columns: Vec<String>,
    stores: &StoreRegistry,
) -> Result<PendingWrite> {
    let url = ListingTableUrl::parse(location)?;
    let store = stores.get_store(url.as_ref())?;
    let root = url.prefix().clone();
    Ok(PendingWrite::create(
        &store,
        root,
        location.to_string(),
        schema,
        partition_columns,
    )
    .await?)
}

/// Commits the files a write moved into the table's root; a commit that is refused
/// deletes them again (nothing names them, so no reader ever saw them).
pub(crate) async fn commit_files(
    store: &Arc<dyn ObjectStore>,
    pending: &PendingWrite,
    moved: Vec<(Path, u64)>,
) -> Result<u64> {
    let files: Vec<(NewFile, u64)> = futures::stream::iter(moved.iter().cloned())
        .map(|(path, size)| async move {
            let (rows, stats) = file_stats(store, &path, size).await?;
            Ok::<_, DeltaError>((
                NewFile {
                    path,
                    size,
                    stats: Some(stats),
                },
                rows,
            ))
        })
        .buffered(FOOTERS_AT_ONCE)
        .try_collect()
        .await?;
    let rows = files.iter().map(|(_, rows)| rows).sum();
    let files: Vec<NewFile> = files.into_iter().map(|(file, _)| file).collect();
    match commit_write(store, pending, &files, rows).await {
        Ok(version) => {
            tracing::info!(table = %pending.location, version, files = files.len(), "Delta commit");
            Ok(version)
        }
        Err(error) => {
            if matches!(
                error,
                DeltaError::Conflict { .. } | DeltaError::Exists(_) | DeltaError::Unsupported(_)
            ) {
                for (path, _) in &moved {
                    let _ = store.delete(path).await;
                }
            }
            Err(error.into())
        }
    }
}
