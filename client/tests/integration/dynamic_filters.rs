//! Join dynamic filters across a distributed plan: a broadcast join fills its filter in
//! its own task (its probe scan prunes with it), and a filter that meets an exchange stops
//! there, dropping rows as the exchange's reader reads them. Answers stay DataFusion's
//! with the filters on and off.

use quiver::QuiverClient;
use quiver::compare::canonical_rows;

use crate::common::{
    analyzed_output_rows, analyzed_stage_rows, datafusion_oracle, reader_stage, start_tpch_cluster,
    tpch_query,
};
use crate::tpch_differential::tpch_differences;

/// Settings under which joins of more than a few thousand rows go through shuffles (the
/// TPC-H test data is small enough to broadcast every join otherwise).
const JOINS_THROUGH_SHUFFLES: [&str; 2] = [
    "SET datafusion.optimizer.hash_join_single_partition_threshold = 50000",
    "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 5000",
];

/// Orders of a dozen customers: orders (15,000 rows) and lineitem join through a
/// shuffle, and the customers' broadcast join above them filters orders by customer.
const ORDERS_OF_A_FEW_CUSTOMERS: &str = "SELECT count(*), sum(l_extendedprice) \
     FROM lineitem JOIN orders ON l_orderkey = o_orderkey \
     JOIN customer ON o_custkey = c_custkey \
     WHERE c_mktsegment = 'BUILDING' AND c_nationkey = 7";

async fn plan_text(client: &QuiverClient, sql: &str) -> String {
    let batches = client
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    canonical_rows(&batches, false).unwrap().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broadcast_joins_filter_drops_rows_where_an_exchange_is_read() {
    let (cluster, client) = start_tpch_cluster().await;
    for setting in JOINS_THROUGH_SHUFFLES {
        client.sql(setting).await.unwrap();
    }
    let analyzed = plan_text(
        &client,
        &format!("EXPLAIN ANALYZE {ORDERS_OF_A_FEW_CUSTOMERS}"),
    )
    .await;
    // Each filtered exchange: its rows against the rows its stage wrote.
    let lines: Vec<&str> = analyzed.lines().collect();
    let mut filtered = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if !line.trim_start().starts_with("ExchangeFilterExec") {
            continue;
        }
        let stage = reader_stage(lines[index + 1])
            .unwrap_or_else(|| panic!("no reader under {line}:\n{analyzed}"));
        filtered.push((
            analyzed_output_rows(line),
            analyzed_stage_rows(&analyzed, stage),
        ));
    }
    assert!(
        !filtered.is_empty(),
        "no exchange took a filter:\n{analyzed}"
    );
    assert!(
        filtered.iter().any(|(kept, read)| kept < read),
        "no filtered exchange dropped a row {filtered:?}:\n{analyzed}"
    );
    // The dozen customers keep well under a tenth of the 15,000 orders.
    assert!(
        filtered
            .iter()
            .any(|(kept, read)| *read == 15_000 && *kept < 1_500),
        "orders were not filtered by customer {filtered:?}:\n{analyzed}"
    );

    // The answer is DataFusion's, with the filters and without them.
    let oracle = datafusion_oracle().await;
    let expected = canonical_rows(
        &oracle
            .sql(ORDERS_OF_A_FEW_CUSTOMERS)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
        true,
    )
    .unwrap();
    let with_filters =
        canonical_rows(&client.sql(ORDERS_OF_A_FEW_CUSTOMERS).await.unwrap(), true).unwrap();
    assert_eq!(with_filters, expected);
    client
        .sql("SET datafusion.optimizer.enable_dynamic_filter_pushdown = false")
        .await
        .unwrap();
    let plain = plan_text(&client, &format!("EXPLAIN {ORDERS_OF_A_FEW_CUSTOMERS}")).await;
    assert!(!plain.contains("ExchangeFilterExec"), "{plain}");
    let without =
        canonical_rows(&client.sql(ORDERS_OF_A_FEW_CUSTOMERS).await.unwrap(), true).unwrap();
    assert_eq!(without, expected);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpch_answers_hold_with_shuffled_joins_and_dynamic_filters_on_and_off() {
    let (cluster, client) = start_tpch_cluster().await;
    for setting in JOINS_THROUGH_SHUFFLES {
        client.sql(setting).await.unwrap();
    }
    let oracle = datafusion_oracle().await;
    let mut failures = tpch_differences(&client, &oracle, "filters on").await;
    // The settings reached the plans: joins go through shuffles, and broadcast joins'
    // filters stop at exchanges.
    let mut partitioned = Vec::new();
    let mut filtered = Vec::new();
    for number in 1..=22 {
        let plan = plan_text(&client, &format!("EXPLAIN {}", tpch_query(number))).await;
        if plan.contains("mode=Partitioned") {
            partitioned.push(number);
        }
        if plan.contains("ExchangeFilterExec") {
            filtered.push(number);
        }
    }
    assert!(
        partitioned.len() >= 5,
        "partitioned joins in {partitioned:?}"
    );
    assert!(filtered.len() >= 3, "filtered exchanges in {filtered:?}");
    client
        .sql("SET datafusion.optimizer.enable_dynamic_filter_pushdown = false")
        .await
        .unwrap();
    failures.extend(tpch_differences(&client, &oracle, "filters off").await);
    cluster.shutdown().await;
    assert!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );
}
