//! The statement limits ([`StatementLimits`]): each check refuses a statement, with an
//! error naming the limit and its setting, before it can take the cluster's memory,
//! stack or time. They run on the planning threads, whose stacks are sized for them.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::logical_expr::{CreateExternalTable, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{CopyToSource, Statement};
use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::StreamExt;
use prost::Message;
use quiver_core::QuiverError;
use quiver_core::codec::encode_plan;
use quiver_core::config::StatementLimits;
use quiver_core::file_scans::file_scans;

use crate::planner::StageDag;

fn exceeded(what: &'static str, actual: usize, limit: usize, setting: &'static str) -> QuiverError {
    QuiverError::LimitExceeded {
        what,
        actual: actual as u64,
        limit: limit as u64,
        setting,
    }
}

/// The SQL text's size.
pub(crate) fn check_sql_size(sql: &str, limits: &StatementLimits) -> Result<(), QuiverError> {
    if sql.len() > limits.max_sql_bytes {
        return Err(exceeded(
            "the SQL text's size in bytes",
            sql.len(),
            limits.max_sql_bytes,
            "--max-sql-bytes",
        ));
    }
    Ok(())
}

/// How deeply the statement's expressions nest. Measured on the parsed text, before
/// anything recurses over it once per level.
pub(crate) fn check_expression_depth(
    statement: &Statement,
    limits: &StatementLimits,
) -> Result<(), QuiverError> {
    let mut meter = DepthMeter {
        depth: 0,
        limit: limits.max_expression_depth,
    };
    let refused = match statement {
        Statement::Statement(inner) => inner.visit(&mut meter).is_break(),
        Statement::Explain(explain) => {
            return check_expression_depth(&explain.statement, limits);
        }
        Statement::CopyTo(copy) => match &copy.source {
            CopyToSource::Query(query) => query.visit(&mut meter).is_break(),
            CopyToSource::Relation(_) => false,
        },
        _ => false,
    };
    if refused {
        return Err(QuiverError::LimitExceeded {
            what: "the expression nesting depth",
            actual: meter.depth as u64,
            limit: limits.max_expression_depth as u64,
            setting: "--max-expression-depth",
        });
    }
    Ok(())
}

/// Tracks the current expression depth and stops the walk past the limit (the depth
/// reported is then the first one over it).
struct DepthMeter {
    depth: usize,
    limit: usize,
}

impl Visitor for DepthMeter {
    type Break = ();

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth > self.limit {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Operators in the logical plan (before optimisation multiplies the work).
pub(crate) fn check_logical_plan(
    plan: &LogicalPlan,
    limits: &StatementLimits,
) -> Result<(), QuiverError> {
    let mut nodes = 0usize;
    let walked = plan.apply(|_| {
        nodes += 1;
        Ok(if nodes > limits.max_plan_nodes {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    if walked.is_ok() && nodes > limits.max_plan_nodes {
        return Err(plan_nodes_exceeded(nodes, limits));
    }
    Ok(())
}

/// Operators in the physical plan.
pub(crate) fn check_physical_plan(
    plan: &Arc<dyn ExecutionPlan>,
    limits: &StatementLimits,
) -> Result<(), QuiverError> {
    let nodes = count_nodes(plan, limits.max_plan_nodes + 1);
    if nodes > limits.max_plan_nodes {
        return Err(plan_nodes_exceeded(nodes, limits));
    }
    if let Some(files) = file_scans(plan)
        .iter()
        .map(|scan| {
            scan.file_groups
                .iter()
                .map(|group| group.len())
                .sum::<usize>()
        })
        .find(|&files| files > limits.max_table_files)
    {
        return Err(table_files_exceeded(files, limits));
    }
    Ok(())
}

fn table_files_exceeded(files: usize, limits: &StatementLimits) -> QuiverError {
    exceeded(
        "the number of files under one table's location (at least)",
        files,
        limits.max_table_files,
        "--max-table-files",
    )
}

/// Lists `create`'s locations, counting no further than the limit: a table over a
/// directory of millions of files is refused before DataFusion lists and reads them all.
pub(crate) async fn check_table_files(
    create: &CreateExternalTable,
    context: &SessionContext,
    limits: &StatementLimits,
) -> Result<(), QuiverError> {
    let state = context.state();
    let mut files = 0;
    for location in &create.locations {
        let Ok(url) = ListingTableUrl::parse(location) else {
            // DataFusion names a bad location better.
            return Ok(());
        };
        let Ok(store) = state.runtime_env().object_store(url.object_store()) else {
            return Ok(());
        };
        if !url.is_collection() {
            files += 1;
            continue;
        }
        // Straight from the store, not through DataFusion's listing cache, which would
        // list (and keep) every file first.
        let mut listing = store.list(Some(url.prefix()));
        while let Some(Ok(_)) = listing.next().await {
            files += 1;
            if files > limits.max_table_files {
                return Err(table_files_exceeded(files, limits));
            }
        }
    }
    Ok(())
}

fn plan_nodes_exceeded(nodes: usize, limits: &StatementLimits) -> QuiverError {
    exceeded(
        "the number of plan operators (at least)",
        nodes,
        limits.max_plan_nodes,
        "--max-plan-nodes",
    )
}

/// Nodes of `plan`, counting no further than `stop_at`.
pub(crate) fn count_nodes(plan: &Arc<dyn ExecutionPlan>, stop_at: usize) -> usize {
    let mut count = 0;
    let mut pending = vec![plan];
    while let Some(node) = pending.pop() {
        count += 1;
        if count >= stop_at {
            break;
        }
        pending.extend(node.children());
    }
    count
}

/// The stages a query is cut into: how many, how many tasks, and each stage's plan as
/// executors get it — within the size limit, and decodable (protobuf decoders refuse
/// messages nested more than 100 deep; refusing here beats a task failing there). A stage
/// without inputs keeps its encoding, so launching it does not encode it again.
pub(crate) fn check_stages(
    dag: &mut StageDag,
    limits: &StatementLimits,
) -> Result<(), QuiverError> {
    if dag.stages.len() > limits.max_stages {
        return Err(exceeded(
            "the number of stages",
            dag.stages.len(),
            limits.max_stages,
            "--max-stages",
        ));
    }
    let tasks: usize = dag.stages.iter().map(|stage| stage.task_count()).sum();
    if tasks > limits.max_tasks {
        return Err(exceeded(
            "the number of tasks",
            tasks,
            limits.max_tasks,
            "--max-tasks",
        ));
    }
    for stage in &mut dag.stages {
        let bytes = encode_plan(Arc::clone(&stage.plan)).map_err(QuiverError::InvalidQuery)?;
        if bytes.len() > limits.max_plan_bytes {
            return Err(exceeded(
                "the size in bytes of a stage's plan",
                bytes.len(),
                limits.max_plan_bytes,
                "--max-plan-bytes",
            ));
        }
        if let Err(error) = PhysicalPlanNode::decode(bytes.as_ref()) {
            return Err(QuiverError::InvalidQuery(
                datafusion::error::DataFusionError::Plan(format!(
                    "stage {} cannot be shipped to executors: its plan nests too deeply to \
                     decode ({error}); simplify the deepest expression",
                    stage.stage_id
                )),
            ));
        }
        if stage.inputs.is_empty() {
            stage.encoded = Some(bytes);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn limits() -> StatementLimits {
        StatementLimits {
            max_expression_depth: 50,
            max_plan_nodes: 20,
            ..StatementLimits::default()
        }
    }

    fn parse(sql: &str) -> Statement {
        let state = SessionContext::new().state();
        let dialect = state.config().options().sql_parser.dialect;
        state.sql_to_statement(sql, &dialect).unwrap()
    }

    fn sum_of_ones(terms: usize) -> String {
        format!("SELECT {}", vec!["1"; terms].join("+"))
    }

    #[test]
    fn sql_over_the_size_limit_is_refused_with_the_setting_named() {
        let limits = StatementLimits {
            max_sql_bytes: 10,
            ..StatementLimits::default()
        };
        assert!(check_sql_size("SELECT 1", &limits).is_ok());
        let error = check_sql_size("SELECT 1, 2, 3", &limits).unwrap_err();
        assert!(error.to_string().contains("--max-sql-bytes"), "{error}");
        assert_eq!(error.status_code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn expression_depth_counts_nesting_not_width() {
        assert!(check_expression_depth(&parse(&sum_of_ones(40)), &limits()).is_ok());
        let error = check_expression_depth(&parse(&sum_of_ones(60)), &limits()).unwrap_err();
        assert!(
            error.to_string().contains("expression nesting depth is 51"),
            "{error}"
        );
        // 200 items side by side nest only once.
        let wide = format!("SELECT 1 IN ({})", vec!["1"; 200].join(","));
        assert!(check_expression_depth(&parse(&wide), &limits()).is_ok());
        // EXPLAIN and COPY look at the statement inside.
        let explained = parse(&format!("EXPLAIN {}", sum_of_ones(60)));
        assert!(check_expression_depth(&explained, &limits()).is_err());
    }

    #[tokio::test]
    async fn union_branches_count_as_plan_nodes() {
        let context = SessionContext::new();
        let union = vec!["SELECT 1"; 30].join(" UNION ALL ");
        let plan = context.state().create_logical_plan(&union).await.unwrap();
        let error = check_logical_plan(&plan, &limits()).unwrap_err();
        assert!(error.to_string().contains("--max-plan-nodes"), "{error}");
        let small = context
            .state()
            .create_logical_plan("SELECT 1")
            .await
            .unwrap();
        assert!(check_logical_plan(&small, &limits()).is_ok());
    }
}
