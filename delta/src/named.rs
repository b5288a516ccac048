//! What Delta's table functions (`delta_history`, `delta_at`) share: their arguments, and
//! the registered Delta table a name stands for.

use std::sync::Arc;

use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{ScalarValue, TableReference};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;

/// A table function's argument that must be a string literal.
pub(crate) fn string_argument(function: &str, what: &str, argument: &Expr) -> Result<String> {
    match argument {
        Expr::Literal(
            ScalarValue::Utf8(Some(text))
            | ScalarValue::Utf8View(Some(text))
            | ScalarValue::LargeUtf8(Some(text)),
            _,
        ) => Ok(text.clone()),
        other => Err(DataFusionError::Plan(format!(
            "{function} takes {what} as a string, not {other}"
        ))),
    }
}

/// The Delta table `name` as the session's catalog has it.
pub(crate) async fn delta_table_named(
    state: &dyn Session,
    name: &TableReference,
) -> Result<Arc<dyn TableProvider>> {
    let session = state
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| DataFusionError::Internal("a session without a catalog".into()))?;
    let provider = session
        .schema_for_ref(name.clone())?
        .table(name.table())
        .await?
        .ok_or_else(|| DataFusionError::Plan(format!("table '{name}' not found")))?;
    if !crate::table::is_delta(provider.as_ref()) {
        return Err(DataFusionError::Plan(format!(
            "table '{name}' is not a Delta table"
        )));
    }
    Ok(provider)
}
