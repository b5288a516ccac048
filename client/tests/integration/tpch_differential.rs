//! All 22 TPC-H queries through a standalone cluster must give the answers single-node
//! DataFusion gives over the same files, with adaptive execution on, off, and re-planning
//! every stage it can.

use datafusion::prelude::SessionContext;
use quiver::QuiverClient;
use quiver::compare::canonical_rows;

use crate::common::{
    BROADCAST_EVERY_JOIN, REPLAN_EVERY_STAGE, datafusion_oracle, start_tpch_cluster, tpch_query,
};

/// Runs the 22 queries through `client` and `oracle`; one line per query answered
/// differently (or not at all), each starting with `label`.
pub(crate) async fn tpch_differences(
    client: &QuiverClient,
    oracle: &SessionContext,
    label: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    for number in 1..=22 {
        let sql = tpch_query(number);
        let ordered = sql.to_lowercase().contains("order by");
        let expected = oracle.sql(&sql).await.unwrap().collect().await.unwrap();
        let expected = canonical_rows(&expected, !ordered).unwrap();
        match client.sql(&sql).await {
            Ok(actual) => {
                let actual = canonical_rows(&actual, !ordered).unwrap();
                if actual != expected {
                    failures.push(format!(
                        "{label} q{number}: {} rows from Quiver, {} from DataFusion; first difference: {:?}",
                        actual.len(),
                        expected.len(),
                        actual.iter().zip(&expected).find(|(a, e)| a != e)
                    ));
                }
            }
            Err(error) => failures.push(format!("{label} q{number}: {error}")),
        }
    }
    failures
}

/// `EXPLAIN ANALYZE` of TPC-H query `number`, as text.
async fn analyzed(client: &QuiverClient, number: usize) -> String {
    let sql = format!("EXPLAIN ANALYZE {}", tpch_query(number));
    canonical_rows(&client.sql(&sql).await.unwrap(), false)
        .unwrap()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_22_tpch_queries_match_single_node_datafusion() {
    let (cluster, client) = start_tpch_cluster().await;
    let oracle = datafusion_oracle().await;
    // Adaptive execution on (the default: these inputs are small, so most stages after
    // the scans run as one task), then off (every stage as wide as planned).
    let mut failures = tpch_differences(&client, &oracle, "adaptive execution on").await;
    let adaptive = analyzed(&client, 5).await;
    assert!(
        adaptive.contains(" tasks -> 1: its input is ") && adaptive.contains("(coalesced from "),
        "small stages of q5 run as one task:\n{adaptive}"
    );
    client.sql("SET quiver.adaptive = false").await.unwrap();
    failures.extend(tpch_differences(&client, &oracle, "adaptive execution off").await);
    let planned = analyzed(&client, 5).await;
    assert!(
        !planned.contains("adaptive:") && !planned.contains("coalesced"),
        "{planned}"
    );
    for setting in REPLAN_EVERY_STAGE {
        client.sql(setting).await.unwrap();
    }
    failures.extend(tpch_differences(&client, &oracle, "every stage re-planned").await);
    let replanned = analyzed(&client, 5).await;
    assert!(
        replanned.contains("by producer") && replanned.contains(" of producer"),
        "q5's partitioned joins should be split:\n{replanned}"
    );
    for setting in BROADCAST_EVERY_JOIN {
        client.sql(setting).await.unwrap();
    }
    failures.extend(tpch_differences(&client, &oracle, "joins switched to broadcast").await);
    let switched = analyzed(&client, 5).await;
    assert!(
        switched.contains("adaptive: broadcast join: stage "),
        "q5's partitioned joins should become broadcast joins:\n{switched}"
    );
    // Every query ran as several stages across both executors.
    let explain = client
        .sql(&format!("EXPLAIN {}", tpch_query(5)))
        .await
        .unwrap();
    let text = canonical_rows(&explain, false).unwrap().join("\n");
    assert!(
        text.contains("Stage 3"),
        "q5 should cut into several stages:\n{text}"
    );
    cluster.shutdown().await;
    assert!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );
}
