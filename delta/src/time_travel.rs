//! `SELECT * FROM delta_at('t', 'version', '3')` (or `'timestamp', '2026-11-30T12:00:00Z'`):
//! a registered Delta table read at an older snapshot. The scheduler turns Databricks'
//! `t VERSION AS OF 3` and `t TIMESTAMP AS OF '...'` into this call.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result};

use crate::factory::pinned_version;
use crate::named::{delta_table_named, string_argument};
use crate::table::DeltaTable;

/// The function's name in SQL.
pub const DELTA_AT: &str = "delta_at";

#[derive(Debug, Default)]
pub struct DeltaAtFunction;

impl TableFunctionImpl for DeltaAtFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [name, kind, value] = args.exprs() else {
            return Err(DataFusionError::Plan(format!(
                "{DELTA_AT} takes a table's name, 'version' or 'timestamp', and the version \
                 or time: {DELTA_AT}('t', 'version', '3')"
            )));
        };
        let name = TableReference::from(string_argument(DELTA_AT, "a table's name", name)?);
        let kind = string_argument(DELTA_AT, "'version' or 'timestamp'", kind)?;
        let value = string_argument(DELTA_AT, "the version or time", value)?;
        if kind != "version" && kind != "timestamp" {
            return Err(DataFusionError::Plan(format!(
                "{DELTA_AT} reads a table as of a 'version' or a 'timestamp', not '{kind}'"
            )));
        }
        let version = pinned_version(&HashMap::from([(kind, value)]))?;
        // The catalog answers at once: its tables are in memory.
        let provider = futures::executor::block_on(delta_table_named(args.session(), &name))?;
        let provider: &dyn Any = provider.as_ref();
        let table = provider
            .downcast_ref::<DeltaTable>()
            .ok_or_else(|| DataFusionError::Internal("not a Delta table".into()))?;
        Ok(Arc::new(table.pinned(version)))
    }
}
