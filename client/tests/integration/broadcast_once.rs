//! A broadcast join's build side is fetched and built once per executor and stage, not
//! once per task: the stage's tasks on an executor copy one decoded plan, whose join
//! keeps the build between them.

use quiver::StandaloneConfig;
use quiver::compare::canonical_rows;

use crate::common::{
    TEST_PARTITIONS, analyzed_output_rows, analyzed_stage_rows, datafusion_oracle, datafusion_rows,
    quiver_rows, reader_stage, start_tpch_cluster_with,
};

const URGENT_ORDERS_LINES: &str = "SELECT count(*), sum(l_quantity) FROM lineitem \
     JOIN (SELECT o_orderkey FROM orders WHERE o_orderpriority = '1-URGENT') urgent \
     ON l_orderkey = o_orderkey";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broadcast_build_side_is_read_once_per_executor() {
    // One executor, so every task of the join's stage runs on it.
    let (cluster, client) = start_tpch_cluster_with(StandaloneConfig {
        executors: 1,
        slots_per_executor: 2,
        target_partitions: Some(TEST_PARTITIONS),
        ..StandaloneConfig::default()
    })
    .await;
    let analyzed = canonical_rows(
        &client
            .sql(&format!("EXPLAIN ANALYZE {URGENT_ORDERS_LINES}"))
            .await
            .unwrap(),
        false,
    )
    .unwrap()
    .join("\n");
    let lines: Vec<&str> = analyzed.lines().collect();
    let join = lines
        .iter()
        .position(|line| line.contains("HashJoinExec: mode=CollectLeft"))
        .unwrap_or_else(|| panic!("no broadcast join:\n{analyzed}"));
    let stage_header = lines[..join]
        .iter()
        .rev()
        .find(|line| line.contains("Stage ") && line.contains(" tasks · "))
        .unwrap();
    assert!(
        stage_header.contains(&format!("· {TEST_PARTITIONS} tasks ·")),
        "{stage_header}"
    );
    // The build side: a gather over the reader of the orders stage.
    let gather = lines[join + 1];
    assert!(
        gather.trim_start().starts_with("CoalescePartitionsExec"),
        "{analyzed}"
    );
    let build_stage = reader_stage(lines[join + 2])
        .unwrap_or_else(|| panic!("no reader under the gather:\n{analyzed}"));
    let written = analyzed_stage_rows(&analyzed, build_stage);
    assert!(written > 0, "{analyzed}");
    // Four tasks, one build: the gather read the orders once, not once per task.
    assert_eq!(analyzed_output_rows(gather), written, "{analyzed}");

    let oracle = datafusion_oracle().await;
    assert_eq!(
        quiver_rows(&client, URGENT_ORDERS_LINES).await,
        datafusion_rows(&oracle, URGENT_ORDERS_LINES).await
    );
    cluster.shutdown().await;
}
