//! Distributed `EXPLAIN ANALYZE`: the query runs on the executors and every stage's plan
//! comes back with its operators' metrics summed over the stage's tasks.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::displayable;

use crate::common::{datafusion_oracle, start_tpch_cluster_with, test_cluster_config, tpch_query};

/// The `plan` column's text.
fn plan_text(batches: &[RecordBatch]) -> String {
    batches
        .iter()
        .flat_map(|batch| {
            let plans = batch
                .column_by_name("plan")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            (0..plans.len())
                .map(|i| plans.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The TPC-H table a scan's line reads.
fn table_of(line: &str) -> String {
    line.split("/sf0.01/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no table in {line}"))
        .to_string()
}

/// Rows each table's scans produced, summed over every scan line of `text`.
fn scanned_rows(text: &str) -> BTreeMap<String, u64> {
    let mut rows = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.trim_start().starts_with("DataSourceExec"))
    {
        let table = table_of(line);
        let count: u64 = line
            .split("output_rows=")
            .nth(1)
            .and_then(|rest| rest.split([',', ']']).next())
            .unwrap_or_else(|| panic!("no output_rows in {line}"))
            .parse()
            .unwrap_or_else(|_| panic!("unreadable output_rows in {line}"));
        *rows.entry(table).or_insert(0) += count;
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_analyze_sums_each_stages_operators_over_its_tasks() {
    let (cluster, client) = start_tpch_cluster_with(test_cluster_config()).await;
    let q3 = tpch_query(3);
    let analyzed = plan_text(&client.sql(&format!("EXPLAIN ANALYZE {q3}")).await.unwrap());
    let stages: Vec<&str> = analyzed
        .lines()
        .filter(|line| line.starts_with("Stage "))
        .collect();
    assert!(stages.len() >= 3, "{analyzed}");
    for stage in &stages {
        assert!(
            stage.contains(" tasks · task time median ") && stage.contains("(skew "),
            "{stage}"
        );
    }
    // The same query through single-node DataFusion (its dynamic filters off, as Quiver
    // keeps them): each table's scans produce the same rows, read from its plan's own
    // metrics (EXPLAIN ANALYZE's text rounds them).
    let oracle = datafusion_oracle().await;
    oracle
        .sql("SET datafusion.optimizer.enable_dynamic_filter_pushdown = false")
        .await
        .unwrap();
    let plan = oracle
        .sql(&q3)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    datafusion::physical_plan::collect(Arc::clone(&plan), oracle.task_ctx())
        .await
        .unwrap();
    let mut expected = BTreeMap::new();
    let mut pending = vec![plan];
    while let Some(node) = pending.pop() {
        if node.name() == "DataSourceExec" {
            let line = displayable(node.as_ref()).one_line().to_string();
            let rows = node.metrics().and_then(|m| m.output_rows()).unwrap() as u64;
            *expected.entry(table_of(&line)).or_insert(0) += rows;
        }
        pending.extend(node.children().into_iter().cloned());
    }
    let scanned = scanned_rows(&analyzed);
    assert_eq!(
        scanned.keys().collect::<Vec<_>>(),
        ["customer", "lineitem", "orders"]
    );
    assert_eq!(scanned, expected, "{analyzed}");
    assert!(scanned.values().all(|rows| *rows > 0));

    // FORMAT tree: DataFusion's boxes per stage, then the summed metrics, the scans'
    // rows the same; VERBOSE adds one line per task.
    let tree = plan_text(
        &client
            .sql(&format!("EXPLAIN ANALYZE FORMAT TREE {q3}"))
            .await
            .unwrap(),
    );
    let tree_stages = tree.lines().filter(|l| l.starts_with("Stage ")).count();
    assert_eq!(tree_stages, stages.len(), "{tree}");
    assert!(
        tree.contains("┌") && tree.contains("DataSourceExec"),
        "{tree}"
    );
    let tree_scanned: u64 = tree
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("DataSourceExec: output_rows="))
        .map(|rest| rest.split(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(tree_scanned, expected.values().sum::<u64>(), "{tree}");
    let verbose = plan_text(
        &client
            .sql(&format!("EXPLAIN ANALYZE VERBOSE {q3}"))
            .await
            .unwrap(),
    );
    let tasks: usize = verbose
        .lines()
        .filter(|l| l.starts_with("Stage "))
        .map(|l| {
            l.split(" · ")
                .nth(1)
                .unwrap()
                .trim_end_matches(" tasks")
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    let task_lines = verbose.lines().filter(|l| l.starts_with("  task ")).count();
    assert_eq!(task_lines, tasks, "{verbose}");
    let refused = client
        .sql(&format!("EXPLAIN ANALYZE FORMAT pgjson {q3}"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("use indent (the default) or tree"),
        "{refused}"
    );
    // Its result is gone, and statements that change things are refused.
    let refused = client
        .sql("EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("takes a query"), "{refused}");
    cluster.shutdown().await;
}
