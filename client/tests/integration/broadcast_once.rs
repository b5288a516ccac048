//! A broadcast join's build side is fetched and built once per executor and stage, not
//! once per task: the stage's tasks on an executor copy one decoded plan, whose join
//! keeps the build between them.

use quiver::StandaloneConfig;
use quiver::compare::canonical_rows;

use crate::common::{TEST_PARTITIONS, datafusion_oracle, start_tpch_cluster_with};

const URGENT_ORDERS_LINES: &str = "SELECT count(*), sum(l_quantity) FROM lineitem \
     JOIN (SELECT o_orderkey FROM orders WHERE o_orderpriority = '1-URGENT') urgent \
     ON l_orderkey = o_orderkey";

/// The `output_rows` figure of an `EXPLAIN ANALYZE` line.
fn output_rows(line: &str) -> u64 {
    line.split("output_rows=")
        .nth(1)
        .and_then(|rest| rest.split([',', ']']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no output_rows in {line}"))
}

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
    let build_stage: u32 = lines[join + 2]
        .trim_start()
        .strip_prefix("ShuffleReaderExec: stage=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reader under the gather:\n{analyzed}"));
    let written: u64 = lines
        .iter()
        .find(|line| line.contains(&format!("Stage {build_stage} · ")))
        .and_then(|header| header.split(" out ").nth(1))
        .and_then(|rest| rest.split('(').nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rows for stage {build_stage}:\n{analyzed}"));
    assert!(written > 0, "{analyzed}");
    // Four tasks, one build: the gather read the orders once, not once per task.
    assert_eq!(output_rows(gather), written, "{analyzed}");

    let oracle = datafusion_oracle().await;
    let expected = canonical_rows(
        &oracle
            .sql(URGENT_ORDERS_LINES)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
        true,
    )
    .unwrap();
    let actual = canonical_rows(&client.sql(URGENT_ORDERS_LINES).await.unwrap(), true).unwrap();
    assert_eq!(actual, expected);
    cluster.shutdown().await;
}
