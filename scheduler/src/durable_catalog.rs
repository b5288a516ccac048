//! Keeps the session's catalog and the catalog store in step: each catalog statement that
//! succeeds is written to the store ([`CatalogChange`]), and a starting scheduler creates
//! every stored definition again ([`restore`]).
//!
//! Tables (external and managed), views and schemas persist; temporary objects do not.

use std::sync::Arc;

use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::{logical_plan_from_bytes, logical_plan_to_bytes};
use quiver_core::storage::{StorageOptions, StoreRegistry};
use quiver_core::ticket::now_ms;
use tracing::{info, warn};

use crate::access_control::{qualified_name, qualified_schema};
use crate::catalog_store::{CatalogEntry, CatalogStore, EntryKind};
use crate::locations::location_url;

/// What a catalog statement changes in the store, decided before it runs.
#[derive(Debug)]
pub(crate) enum CatalogChange {
    Put(Box<CatalogEntry>),
    Remove(String),
    Nothing,
}

/// What `plan` would change in the store. A `... IF NOT EXISTS` naming something that
/// already exists changes nothing.
pub(crate) fn change_of(
    plan: &LogicalPlan,
    storage: &StorageOptions,
    context: &SessionContext,
    owner: Option<&str>,
) -> Result<CatalogChange> {
    let owner = owner.map(str::to_string);
    let LogicalPlan::Ddl(ddl) = plan else {
        return Ok(CatalogChange::Nothing);
    };
    let exists = |name: &TableReference| context.table_exist(name.clone()).unwrap_or(false);
    let change = match ddl {
        DdlStatement::CreateExternalTable(create) => {
            if create.temporary || (create.if_not_exists && exists(&create.name)) {
                return Ok(CatalogChange::Nothing);
            }
            let mut stored = create.clone();
            // Restoring never collides with what it restores.
            stored.or_replace = false;
            stored.if_not_exists = true;
            let definition = logical_plan_to_bytes(&LogicalPlan::Ddl(
                DdlStatement::CreateExternalTable(stored),
            ))?;
            CatalogChange::Put(Box::new(CatalogEntry {
                name: qualified_name(&create.name, context),
                kind: EntryKind::Table,
                location: create.locations.first().cloned(),
                format: Some(create.file_type.to_lowercase()),
                owner,
                created_at_ms: now_ms() as i64,
                definition: definition.to_vec(),
                storage_options: storage.entries().clone(),
            }))
        }
        DdlStatement::CreateView(view) => {
            if view.temporary || exists(&view.name) && !view.or_replace {
                return Ok(CatalogChange::Nothing);
            }
            let Some(sql) = &view.definition else {
                warn!(view = %view.name, "a view without its SQL text cannot persist");
                return Ok(CatalogChange::Nothing);
            };
            CatalogChange::Put(Box::new(CatalogEntry {
                name: qualified_name(&view.name, context),
                kind: EntryKind::View,
                location: None,
                format: None,
                owner,
                created_at_ms: now_ms() as i64,
                definition: sql.clone().into_bytes(),
                storage_options: Default::default(),
            }))
        }
        DdlStatement::CreateCatalogSchema(schema) => {
            let name = qualified_schema(&schema.schema_name, context);
            CatalogChange::Put(Box::new(CatalogEntry {
                definition: format!("CREATE SCHEMA IF NOT EXISTS {}", schema.schema_name)
                    .into_bytes(),
                name,
                kind: EntryKind::Schema,
                location: None,
                format: None,
                owner: None,
                created_at_ms: now_ms() as i64,
                storage_options: Default::default(),
            }))
        }
        DdlStatement::DropTable(drop) => CatalogChange::Remove(qualified_name(&drop.name, context)),
        DdlStatement::DropView(drop) => CatalogChange::Remove(qualified_name(&drop.name, context)),
        DdlStatement::DropCatalogSchema(drop) => {
            CatalogChange::Remove(qualified_schema(&drop.name.to_string(), context))
        }
        _ => CatalogChange::Nothing,
    };
    Ok(change)
}

/// Writes a change that has taken effect in the session.
pub(crate) fn record(store: &dyn CatalogStore, change: CatalogChange) -> quiver_core::Result<()> {
    match change {
        CatalogChange::Put(entry) => store.put(&entry),
        CatalogChange::Remove(name) => store.remove(&name).map(|_| ()),
        CatalogChange::Nothing => Ok(()),
    }
}

/// Creates every stored definition again in `context`: schemas, then tables, then views
/// (a view is retried after the others when it names one defined after it). A
/// definition that cannot be restored (its files are gone, its store unreachable) is
/// reported and kept in the store for the next start. Returns how many were restored.
pub(crate) async fn restore(
    store: &dyn CatalogStore,
    context: &SessionContext,
    stores: &StoreRegistry,
) -> quiver_core::Result<usize> {
    let entries = store.entries()?;
    let mut restored = 0;
    for kind in [EntryKind::Schema, EntryKind::Table] {
        for entry in entries.iter().filter(|e| e.kind == kind) {
            match restore_one(entry, context, stores).await {
                Ok(()) => restored += 1,
                Err(error) => {
                    warn!(name = %entry.name, %error, "could not restore a catalog entry")
                }
            }
        }
    }
    let mut views: Vec<&CatalogEntry> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::View)
        .collect();
    while !views.is_empty() {
        let before = views.len();
        let mut failed = Vec::new();
        for entry in views {
            match restore_one(entry, context, stores).await {
                Ok(()) => restored += 1,
                Err(error) => failed.push((entry, error)),
            }
        }
        if failed.len() == before {
            for (entry, error) in &failed {
                warn!(name = %entry.name, %error, "could not restore a view");
            }
            break;
        }
        views = failed.into_iter().map(|(entry, _)| entry).collect();
    }
    info!(restored, stored = entries.len(), "catalog restored");
    Ok(restored)
}

async fn restore_one(
    entry: &CatalogEntry,
    context: &SessionContext,
    stores: &StoreRegistry,
) -> Result<()> {
    let plan = match entry.kind {
        EntryKind::Table => {
            let storage = StorageOptions::new(entry.storage_options.clone());
            if let Some(location) = &entry.location {
                stores.configure(&location_url(location)?, &storage)?;
            }
            logical_plan_from_bytes(&entry.definition, &context.task_ctx())?
        }
        EntryKind::Schema | EntryKind::View => {
            let sql = String::from_utf8(entry.definition.clone())
                .map_err(|e| DataFusionError::Plan(format!("stored SQL is not text: {e}")))?;
            context.state().create_logical_plan(&sql).await?
        }
    };
    context.execute_logical_plan(plan).await?.collect().await?;
    Ok(())
}

/// The store, when the scheduler has one.
pub(crate) type SharedCatalogStore = Option<Arc<dyn CatalogStore>>;
