//! Deterministic faults prove each retry path: the fault must fire, and the query must
//! still return DataFusion's answer.

use quiver::compare::canonical_rows;
use quiver::{StandaloneCluster, StandaloneConfig};
use quiver_core::config::{FaultInjection, FaultTarget};

use crate::common::{
    TEST_PARTITIONS, datafusion_oracle, session_settings, tpch_query, tpch_table_statements,
};

async fn run_q3_with(faults: FaultInjection) {
    let cluster = StandaloneCluster::start(StandaloneConfig {
        executors: 2,
        slots_per_executor: 2,
        target_partitions: Some(TEST_PARTITIONS),
        faults: faults.clone(),
        ..StandaloneConfig::default()
    })
    .await
    .unwrap();
    let client = cluster.client().await.unwrap();
    for statement in session_settings().iter().chain(&tpch_table_statements()) {
        client.sql(statement).await.expect(statement);
    }
    let sql = tpch_query(3);
    let actual = client
        .sql(&sql)
        .await
        .expect("the query survives the fault");
    let oracle = datafusion_oracle().await;
    let expected = oracle.sql(&sql).await.unwrap().collect().await.unwrap();
    assert_eq!(
        canonical_rows(&actual, false).unwrap(),
        canonical_rows(&expected, false).unwrap()
    );
    assert_eq!(
        faults.fired(),
        1,
        "the injected fault must have fired exactly once"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_task_attempt_is_retried() {
    run_q3_with(FaultInjection::fail_task(FaultTarget {
        stage_id: 0,
        partition: 1,
        attempt: 0,
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_fetch_is_retried() {
    run_q3_with(FaultInjection::fail_fetch_of_stage(0)).await;
}
