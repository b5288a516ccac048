//! Shipping recursive CTEs (`WITH RECURSIVE`) to executors. datafusion-proto carries
//! neither `RecursiveQueryExec` nor the `WorkTableExec` scans in its recursive term.
//!
//! A work table scan may read a subset of the table's columns, and DataFusion does not
//! expose which: the scan travels with the columns it produces, and they are found by name
//! among the recursive query's output (the rows its work table holds) when the query is
//! decoded. Decoding the query also links every scan of its recursive term to the query's
//! own, new work table, as DataFusion does when it builds the query.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::work_table::WorkTableExec;
use datafusion_proto::protobuf;
use prost::Message;

use crate::proto as wire;

pub(crate) fn encode_recursive_query(
    query: &RecursiveQueryExec,
) -> Result<wire::RecursiveQueryNode> {
    Ok(wire::RecursiveQueryNode {
        name: query.name().to_string(),
        is_distinct: query.is_distinct(),
        schema: schema_bytes(&query.schema())?,
    })
}

pub(crate) fn encode_work_table(scan: &WorkTableExec) -> Result<wire::WorkTableNode> {
    Ok(wire::WorkTableNode {
        name: scan.name().to_string(),
        schema: schema_bytes(&scan.schema())?,
    })
}

/// A scan producing the columns it was encoded with; [`decode_recursive_query`] gives it
/// its real shape and work table.
pub(crate) fn decode_work_table(node: wire::WorkTableNode) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = schema_from_bytes(&node.schema)?;
    Ok(Arc::new(WorkTableExec::new(node.name, schema, None)?))
}

pub(crate) fn decode_recursive_query(
    node: wire::RecursiveQueryNode,
    inputs: &[Arc<dyn ExecutionPlan>],
) -> Result<Arc<dyn ExecutionPlan>> {
    let [static_term, recursive_term] = inputs else {
        return Err(DataFusionError::Internal(
            "RecursiveQueryExec needs a static and a recursive term".to_string(),
        ));
    };
    let output = schema_from_bytes(&node.schema)?;
    let recursive_term = Arc::clone(recursive_term)
        .transform_down(|plan| {
            let Some(scan) = plan.downcast_ref::<WorkTableExec>() else {
                return Ok(Transformed::no(plan));
            };
            if scan.name() != node.name {
                return Ok(Transformed::no(plan));
            }
            let projection = columns_by_name(&scan.schema(), &output)?;
            let scan = WorkTableExec::new(node.name.clone(), Arc::clone(&output), projection)?;
            Ok(Transformed::yes(Arc::new(scan) as Arc<dyn ExecutionPlan>))
        })?
        .data;
    Ok(Arc::new(RecursiveQueryExec::try_new(
        node.name,
        output,
        Arc::clone(static_term),
        recursive_term,
        node.is_distinct,
    )?))
}

/// Where each column of `scanned` sits in `table`; `None` when it is the whole table.
fn columns_by_name(scanned: &Schema, table: &Schema) -> Result<Option<Vec<usize>>> {
    let indices = scanned
        .fields()
        .iter()
        .map(|field| {
            table.index_of(field.name()).map_err(|_| {
                DataFusionError::Internal(format!(
                    "work table scan column {} is not among the recursive query's columns",
                    field.name()
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let whole =
        indices.len() == table.fields().len() && indices.iter().enumerate().all(|(i, &c)| i == c);
    Ok((!whole).then_some(indices))
}

fn schema_bytes(schema: &Schema) -> Result<Vec<u8>> {
    let schema: protobuf::Schema = schema.try_into()?;
    Ok(schema.encode_to_vec())
}

fn schema_from_bytes(bytes: &[u8]) -> Result<SchemaRef> {
    let schema = protobuf::Schema::decode(bytes)
        .map_err(|e| DataFusionError::Internal(format!("bad schema in a plan node: {e}")))?;
    Ok(Arc::new(Schema::try_from(&schema)?))
}
