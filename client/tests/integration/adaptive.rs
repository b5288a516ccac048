//! Adaptive execution's re-planning of a stage from what its inputs produced answers as
//! single-node DataFusion does: a skewed join partition split by producer, small
//! partitions read together, work an empty input makes pointless left out.

use quiver::compare::canonical_rows;

use crate::common::{datafusion_oracle, datafusion_rows, quiver_rows, start_tpch_cluster};

/// Three of every four lineitem rows join order 1: one hash partition of the join's probe
/// side holds most of the rows. Grouped by another column (the join's stage aggregates
/// partially), and not grouped (the join's stage gives the result).
const SKEWED_JOINS: [&str; 2] = [
    "SELECT o.o_orderpriority, count(*) AS n, sum(o.o_totalprice) AS total \
     FROM (SELECT CASE WHEN l_linenumber > 1 THEN 1 ELSE l_orderkey END AS k FROM lineitem) s \
     JOIN orders o ON s.k = o.o_orderkey GROUP BY o.o_orderpriority",
    "SELECT s.k, s.l_quantity, o.o_orderdate \
     FROM (SELECT CASE WHEN l_linenumber > 1 THEN 1 ELSE l_orderkey END AS k, l_quantity \
     FROM lineitem) s JOIN orders o ON s.k = o.o_orderkey",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skewed_join_partition_is_split_by_producer_and_answers_alike() {
    let (cluster, client) = start_tpch_cluster().await;
    let oracle = datafusion_oracle().await;
    // A partitioned join (not a broadcast one), on both sides.
    for setting in [
        "SET datafusion.optimizer.hash_join_single_partition_threshold = 0",
        "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0",
    ] {
        client.sql(setting).await.unwrap();
        oracle.sql(setting).await.unwrap().collect().await.unwrap();
    }
    // This input is small: without these the join stage would run as one task.
    for setting in [
        "SET quiver.adaptive_single_task_bytes = 1024",
        "SET quiver.adaptive_skew_bytes = 1024",
    ] {
        client.sql(setting).await.unwrap();
    }
    for sql in SKEWED_JOINS {
        let expected = datafusion_rows(&oracle, sql).await;
        assert_eq!(quiver_rows(&client, sql).await, expected, "{sql}");
        let analyzed = client.sql(&format!("EXPLAIN ANALYZE {sql}")).await.unwrap();
        let analyzed = canonical_rows(&analyzed, false).unwrap().join("\n");
        assert!(
            analyzed.contains("the median) split in ") && analyzed.contains(" of producer"),
            "the join's big partition should be split:\n{analyzed}"
        );
    }
    client.sql("SET quiver.adaptive = false").await.unwrap();
    for sql in SKEWED_JOINS {
        let expected = datafusion_rows(&oracle, sql).await;
        assert_eq!(quiver_rows(&client, sql).await, expected, "{sql}");
    }
    cluster.shutdown().await;
}

/// Joins whose one side is filtered to nothing (no order is that old).
const EMPTY_SIDE_JOINS: [&str; 4] = [
    "SELECT l_orderkey, l_quantity, o_orderdate FROM lineitem \
     JOIN orders ON l_orderkey = o_orderkey WHERE o_orderdate < DATE '1900-01-01'",
    "SELECT o_orderpriority, count(*) AS n FROM lineitem \
     JOIN orders ON l_orderkey = o_orderkey WHERE o_orderdate < DATE '1900-01-01' \
     GROUP BY o_orderpriority",
    "SELECT count(*) AS n, sum(l_quantity) AS q FROM lineitem \
     JOIN orders ON l_orderkey = o_orderkey WHERE o_orderdate < DATE '1900-01-01'",
    "SELECT count(*) AS n, count(o_orderkey) AS matched FROM lineitem LEFT JOIN \
     (SELECT * FROM orders WHERE o_orderdate < DATE '1900-01-01') o ON l_orderkey = o_orderkey",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_an_empty_input_makes_pointless_is_not_run_and_answers_alike() {
    let (cluster, client) = start_tpch_cluster().await;
    let oracle = datafusion_oracle().await;
    for sql in EMPTY_SIDE_JOINS {
        let expected = datafusion_rows(&oracle, sql).await;
        assert_eq!(quiver_rows(&client, sql).await, expected, "{sql}");
    }
    // The inner joins' probe side (the lineitem scan) is not run; the left join's is.
    for (sql, cut) in EMPTY_SIDE_JOINS.iter().zip([true, true, true, false]) {
        let analyzed = client.sql(&format!("EXPLAIN ANALYZE {sql}")).await.unwrap();
        let analyzed = canonical_rows(&analyzed, false).unwrap().join("\n");
        let join_cut = analyzed
            .lines()
            .any(|line| line.contains("produced no rows") && line.contains("HashJoinExec"));
        assert_eq!(join_cut, cut, "{sql}:\n{analyzed}");
    }
    client.sql("SET quiver.adaptive = false").await.unwrap();
    for sql in EMPTY_SIDE_JOINS {
        let expected = datafusion_rows(&oracle, sql).await;
        assert_eq!(quiver_rows(&client, sql).await, expected, "{sql}");
        let analyzed = client.sql(&format!("EXPLAIN ANALYZE {sql}")).await.unwrap();
        let analyzed = canonical_rows(&analyzed, false).unwrap().join("\n");
        assert!(!analyzed.contains("produced no rows"), "{sql}:\n{analyzed}");
    }
    cluster.shutdown().await;
}
