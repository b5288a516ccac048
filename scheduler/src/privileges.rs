//! Privileges enforced at planning: every table a statement reads needs `SELECT`, the
//! table it changes needs `INSERT`, dropping or replacing needs ownership, and creating
//! a table on a location or writing files to one needs a location grant.
//!
//! The tables a statement reads are those its text names (views included, but not the
//! tables inside a view: a view reads its tables with its definer's rights, as in the
//! SQL standard). Tables a user holds no privilege on are hidden before planning
//! ([`crate::visible_catalog`]), so naming one fails as "not found" and reveals nothing.

use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DataFusionResult;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, WriteOp};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as ParsedStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use parking_lot::Mutex;
use quiver_core::{QuiverError, Result};

use crate::access_control::{AccessControl, Restricted, qualified_name, qualified_schema};
use crate::access_sql::Privilege;
use crate::query_history::SessionIdentity;
use crate::visible_catalog::OPEN_SCHEMAS;

/// What the audit log says of a statement: its kind and the tables it read and wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementFacts {
    /// `query`, `write`, `ddl`, `privilege` or `setting`; empty when planning failed
    /// before it was known.
    pub kind: &'static str,
    /// Tables (and views) the statement's text reads, qualified.
    pub read: Vec<String>,
    /// The table, view or schema it changes, or the location it writes.
    pub written: Vec<String>,
}

/// Where planning leaves a statement's facts for the audit log.
pub(crate) type FactsRecorder = Arc<Mutex<StatementFacts>>;

/// The facts of `plan`, whose text reads `reads`.
pub(crate) fn facts_of(
    plan: &LogicalPlan,
    reads: &[TableReference],
    context: &SessionContext,
) -> StatementFacts {
    let name = |table: &TableReference| qualified_name(table, context);
    let schema = |schema: &str| qualified_schema(schema, context);
    let (kind, written) = match plan {
        LogicalPlan::Dml(dml) => ("write", vec![name(&dml.table_name)]),
        LogicalPlan::Copy(copy) => ("write", vec![copy.output_url.clone()]),
        LogicalPlan::Ddl(ddl) => {
            let written = match ddl {
                DdlStatement::CreateExternalTable(create) => vec![name(&create.name)],
                DdlStatement::CreateMemoryTable(create) => vec![name(&create.name)],
                DdlStatement::CreateView(view) => vec![name(&view.name)],
                DdlStatement::DropTable(drop) => vec![name(&drop.name)],
                DdlStatement::DropView(drop) => vec![name(&drop.name)],
                DdlStatement::CreateCatalogSchema(create) => vec![schema(&create.schema_name)],
                DdlStatement::DropCatalogSchema(drop) => vec![schema(&drop.name.to_string())],
                DdlStatement::CreateCatalog(create) => vec![create.catalog_name.clone()],
                _ => Vec::new(),
            };
            ("ddl", written)
        }
        LogicalPlan::Statement(_) => ("setting", Vec::new()),
        _ => ("query", Vec::new()),
    };
    StatementFacts {
        kind,
        read: reads.iter().map(name).collect(),
        written,
    }
}

/// The tables `statement` reads: every table its text names, except the target of an
/// `INSERT` (unless its query names it too), and the tables Delta's table functions read.
pub(crate) fn tables_read(
    state: &SessionState,
    statement: &ParsedStatement,
) -> DataFusionResult<Vec<TableReference>> {
    let mut reads = tables_named(state, statement)?;
    reads.extend(crate::time_travel::tables_in_delta_functions(statement));
    Ok(reads)
}

fn tables_named(
    state: &SessionState,
    statement: &ParsedStatement,
) -> DataFusionResult<Vec<TableReference>> {
    let query_of = |query: &Option<Box<datafusion::sql::sqlparser::ast::Query>>| match query {
        Some(query) => state.resolve_table_references(&ParsedStatement::Statement(Box::new(
            SqlStatement::Query(query.clone()),
        ))),
        None => Ok(Vec::new()),
    };
    match statement {
        ParsedStatement::Explain(explain) => tables_named(state, &explain.statement),
        // The table created is not read.
        ParsedStatement::CreateExternalTable(_) => Ok(Vec::new()),
        ParsedStatement::Statement(inner) => match inner.as_ref() {
            SqlStatement::Insert(insert) => query_of(&insert.source),
            SqlStatement::CreateTable(create) => query_of(&create.query),
            _ => state.resolve_table_references(statement),
        },
        _ => state.resolve_table_references(statement),
    }
}

/// Fails with `NotFound` when a table `statement` reads or inserts into is not there
/// (for a restricted user: not visible), before DataFusion plans it. `reads` are the
/// tables it reads ([`tables_read`]).
pub(crate) fn check_tables_exist(
    state: &SessionState,
    context: &SessionContext,
    statement: &ParsedStatement,
    reads: &[TableReference],
) -> Result<()> {
    let inserts = matches!(statement, ParsedStatement::Statement(inner)
        if matches!(inner.as_ref(), SqlStatement::Insert(_)));
    let named = match inserts {
        // Every table the statement names: the target and what its query reads.
        true => state
            .resolve_table_references(statement)
            .map_err(QuiverError::InvalidQuery)?,
        false => reads.to_vec(),
    };
    for table in &named {
        let table_function =
            table.schema().is_none() && state.table_functions().contains_key(table.table());
        if table_function || context.table_exist(table.clone()).unwrap_or(false) {
            continue;
        }
        return Err(QuiverError::NotFound(
            datafusion::error::DataFusionError::Plan(format!(
                "table '{}' not found",
                qualified_name(table, context)
            )),
        ));
    }
    Ok(())
}

/// Refuses `plan` when the session's user lacks a privilege it needs; `reads` are the
/// tables its text names ([`tables_read`]).
pub(crate) async fn authorize(
    plan: &LogicalPlan,
    reads: &[TableReference],
    context: &SessionContext,
    access: &AccessControl,
) -> Result<()> {
    let identity = SessionIdentity::of(context);
    let Some(caller) = Restricted::of(identity.as_deref()) else {
        return Ok(());
    };
    let check = Check {
        caller,
        context,
        access,
    };
    match plan {
        LogicalPlan::Dml(dml) => {
            check.holds(Privilege::Insert, &dml.table_name)?;
            if !matches!(dml.op, WriteOp::Insert(_)) {
                check.holds(Privilege::Select, &dml.table_name)?;
            }
        }
        LogicalPlan::Copy(copy) => check.location(&copy.output_url)?,
        LogicalPlan::Ddl(ddl) => check.ddl(ddl)?,
        _ => {}
    }
    for read in reads {
        check.holds(Privilege::Select, read)?;
        check.definer_still_reads(read).await?;
    }
    Ok(())
}

struct Check<'a> {
    caller: Restricted<'a>,
    context: &'a SessionContext,
    access: &'a AccessControl,
}

impl Check<'_> {
    /// The caller holds `privilege` on `table`, or the table is not there to hold it on
    /// (planning reports that).
    fn holds(&self, privilege: Privilege, table: &TableReference) -> Result<()> {
        if table
            .schema()
            .is_some_and(|schema| OPEN_SCHEMAS.contains(&schema))
            || !self.exists(table)
        {
            return Ok(());
        }
        let name = qualified_name(table, self.context);
        if self.access.holds(self.caller, privilege, &name) {
            return Ok(());
        }
        Err(QuiverError::PermissionDenied(format!(
            "user {} lacks the {} privilege on {name}; its owner or an administrator can \
             run `GRANT {} ON TABLE {name} TO {}`",
            self.caller.user,
            privilege.as_str(),
            privilege.as_str(),
            self.caller.user
        )))
    }

    /// For a view: its owner (unless an administrator) still holds SELECT on every table
    /// it reads, so that a view made while its owner could read a table does not keep
    /// that table readable after a REVOKE.
    async fn definer_still_reads(&self, table: &TableReference) -> Result<()> {
        let Ok(provider) = self.context.table_provider(table.clone()).await else {
            return Ok(());
        };
        let provider: &dyn std::any::Any = provider.as_ref();
        let Some(view) = provider.downcast_ref::<ViewTable>() else {
            return Ok(());
        };
        let name = qualified_name(table, self.context);
        let Some(owner) = self.access.owner_of(&name) else {
            return Ok(());
        };
        if self.access.is_admin(&owner) {
            return Ok(());
        }
        let definer = Restricted { user: &owner };
        let mut lost = None;
        let _ = view.logical_plan().apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let open = scan
                    .table_name
                    .schema()
                    .is_some_and(|schema| OPEN_SCHEMAS.contains(&schema));
                let scanned = qualified_name(&scan.table_name, self.context);
                if !open && !self.access.holds(definer, Privilege::Select, &scanned) {
                    lost = Some(scanned);
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        match lost {
            None => Ok(()),
            Some(scanned) => Err(QuiverError::PermissionDenied(format!(
                "view {name} reads {scanned}, on which its owner {owner} no longer holds \
                 the SELECT privilege"
            ))),
        }
    }

    fn exists(&self, table: &TableReference) -> bool {
        self.context.table_exist(table.clone()).unwrap_or(false)
    }

    /// The caller owns `table`, when it exists.
    fn owns(&self, table: &TableReference, doing: &str) -> Result<()> {
        if !self.exists(table) {
            return Ok(());
        }
        let name = qualified_name(table, self.context);
        if self.access.owner_of(&name).as_deref() == Some(self.caller.user) {
            return Ok(());
        }
        Err(QuiverError::PermissionDenied(format!(
            "only the owner of {name} or an administrator may {doing} it; user {} is neither",
            self.caller.user
        )))
    }

    fn location(&self, location: &str) -> Result<()> {
        if self.access.may_use_location(self.caller, location) {
            return Ok(());
        }
        Err(QuiverError::PermissionDenied(format!(
            "user {} may not use the location '{location}': tables on locations of their \
             own are for administrators and for users granted the location (`GRANT \
             LOCATION 'prefix' TO {}`); `CREATE TABLE` keeps a table in the warehouse \
             without one",
            self.caller.user, self.caller.user
        )))
    }

    fn administrators_only(&self, what: &str) -> Result<()> {
        Err(QuiverError::PermissionDenied(format!(
            "{what} is for administrators; user {} is not one",
            self.caller.user
        )))
    }

    fn ddl(&self, ddl: &DdlStatement) -> Result<()> {
        match ddl {
            DdlStatement::CreateExternalTable(create) => {
                for location in &create.locations {
                    self.location(location)?;
                }
                if create.or_replace {
                    self.owns(&create.name, "replace")?;
                }
                Ok(())
            }
            DdlStatement::CreateMemoryTable(create) if create.or_replace => {
                self.owns(&create.name, "replace")
            }
            DdlStatement::CreateView(view) if view.or_replace => self.owns(&view.name, "replace"),
            DdlStatement::DropTable(drop) => self.owns(&drop.name, "drop"),
            DdlStatement::DropView(drop) => self.owns(&drop.name, "drop"),
            DdlStatement::CreateCatalog(_) => self.administrators_only("CREATE DATABASE"),
            DdlStatement::CreateCatalogSchema(_) => self.administrators_only("CREATE SCHEMA"),
            DdlStatement::DropCatalogSchema(_) => self.administrators_only("DROP SCHEMA"),
            DdlStatement::CreateFunction(_) | DdlStatement::DropFunction(_) => {
                self.administrators_only("defining functions")
            }
            DdlStatement::CreateIndex(_) => self.administrators_only("CREATE INDEX"),
            DdlStatement::CreateMemoryTable(_) | DdlStatement::CreateView(_) => Ok(()),
        }
    }
}
