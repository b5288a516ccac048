//! All 99 TPC-DS queries through a standalone cluster must give the answers single-node
//! DataFusion gives over the same files, with adaptive execution on, off, and re-planning
//! every stage it can. The data (scale factor 0.01) and the query texts come from DuckDB's
//! tpcds extension: `scripts/gen-tpcds.py`, which `scripts/test.sh` runs first.

use datafusion::prelude::{SessionConfig, SessionContext};
use quiver::compare::{canonical_rows, same_rows};

use crate::common::{
    BROADCAST_EVERY_JOIN, REPLAN_EVERY_STAGE, TEST_PARTITIONS, parquet_table_statements,
    session_settings, start_cluster_with, test_cluster_config, testdata,
};

/// The tables DuckDB's dsdgen writes.
fn tpcds_table_statements() -> Vec<String> {
    let dir = testdata().join("tpcds/sf0.01");
    assert!(
        dir.join(".complete").exists(),
        "{} is missing: run .venv/bin/python scripts/gen-tpcds.py (scripts/test.sh does)",
        dir.display()
    );
    let mut tables: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    tables.sort();
    parquet_table_statements(&dir, &tables)
}

fn tpcds_query(number: usize) -> String {
    let path = testdata().join(format!("tpcds/queries/q{number}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Whether the query's outermost statement orders its rows.
fn ordered(sql: &str) -> bool {
    let tail = sql.to_lowercase();
    let last_paren = tail.rfind(')').unwrap_or(0);
    tail[last_paren..].contains("order by")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_99_tpcds_queries_match_single_node_datafusion() {
    let statements: Vec<String> = session_settings()
        .into_iter()
        .chain(tpcds_table_statements())
        .collect();
    let (cluster, client) = start_cluster_with(test_cluster_config()).await;
    let oracle = SessionContext::new_with_config(
        SessionConfig::new().with_target_partitions(TEST_PARTITIONS),
    );
    for statement in &statements {
        client.sql(statement).await.expect(statement);
        oracle
            .sql(statement)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
    }
    let only: Option<usize> = std::env::var("TPCDS_QUERY")
        .ok()
        .and_then(|q| q.parse().ok());
    let mut failures = Vec::new();
    let mut compared = 0;
    // Adaptive execution on (the default), off, then re-planning every stage it can
    // (joins partitioned, no input small, every partition above the median skewed, as in
    // the TPC-H test), and with that every join it can switched to broadcast: every query
    // four ways.
    let modes: [(&str, &[&str]); 4] = [
        ("on", &["SET quiver.adaptive = true"]),
        ("off", &["SET quiver.adaptive = false"]),
        ("re-planning every stage", &REPLAN_EVERY_STAGE),
        ("switching joins to broadcast", &BROADCAST_EVERY_JOIN),
    ];
    for (adaptive, settings) in modes {
        for setting in settings {
            client.sql(setting).await.unwrap();
        }
        for number in (1..=99).filter(|n| only.is_none_or(|q| q == *n)) {
            let sql = tpcds_query(number);
            let expected = match oracle.sql(&sql).await {
                Ok(frame) => frame.collect().await,
                Err(error) => Err(error),
            };
            let expected = match expected {
                Ok(batches) => batches,
                Err(error) => {
                    failures.push(format!(
                        "adaptive {adaptive}, q{number}: single-node DataFusion failed: {error}"
                    ));
                    continue;
                }
            };
            let actual = match client.sql(&sql).await {
                Ok(batches) => batches,
                Err(error) => {
                    failures.push(format!("adaptive {adaptive}, q{number}: {error}"));
                    continue;
                }
            };
            compared += 1;
            // Rows in a defined order are compared in it; rows the query leaves unordered,
            // or ties within its order, as sorted sets.
            let sorted = |batches| canonical_rows(batches, true).unwrap();
            let in_order = |batches| canonical_rows(batches, false).unwrap();
            let agree = (ordered(&sql) && same_rows(&in_order(&actual), &in_order(&expected)))
                || same_rows(&sorted(&actual), &sorted(&expected));
            if !agree {
                let (actual, expected) = (sorted(&actual), sorted(&expected));
                failures.push(format!(
                "adaptive {adaptive}, q{number}: {} rows from Quiver, {} from DataFusion; first difference: {:?}",
                actual.len(),
                expected.len(),
                actual.iter().zip(&expected).find(|(a, e)| a != e)
            ));
            }
        }
    }
    cluster.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} of {compared} compared queries differ or fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
