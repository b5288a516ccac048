//! Shared helpers: paths to test data, cluster start-up, and DataFusion as the oracle.

use std::path::PathBuf;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use quiver::{QuiverClient, StandaloneCluster, StandaloneConfig};
use quiver_core::config::{FaultInjection, FaultTarget};

/// Partitions per stage in tests: more than one, so every exchange really moves rows.
pub(crate) const TEST_PARTITIONS: usize = 4;

pub(crate) const TPCH_TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

pub(crate) fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// The test virtual environment's Python (ADBC, pyarrow, moto, fastavro).
pub(crate) fn python() -> PathBuf {
    let python = testdata().join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh (scripts/test.sh does)",
        python.display()
    );
    python
}

pub(crate) fn tpch_data_dir() -> PathBuf {
    testdata().join("tpch/sf0.01")
}

pub(crate) fn tpch_query(number: usize) -> String {
    let path = testdata().join(format!("tpch/queries/q{number}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Settings applied to Quiver and to the DataFusion oracle alike: small files still split
/// into several scan partitions.
/// Settings that make adaptive execution re-plan every stage it can: joins partitioned
/// (not broadcast), no input small, every partition above the median one skewed — so
/// that partitions merge and join partitions split all through a plan.
pub(crate) const REPLAN_EVERY_STAGE: [&str; 6] = [
    "SET quiver.adaptive = true",
    "SET quiver.adaptive_single_task_bytes = 0",
    "SET quiver.adaptive_skew_bytes = 0",
    "SET quiver.adaptive_skew_factor = 1",
    "SET datafusion.optimizer.hash_join_single_partition_threshold = 0",
    "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0",
];

/// Settings (after [`REPLAN_EVERY_STAGE`]) that make adaptive execution switch every
/// partitioned join it can to a broadcast join: each probe side's stage waits for its
/// build side, and any build side is small enough.
pub(crate) const BROADCAST_EVERY_JOIN: [&str; 2] = [
    "SET quiver.adaptive_build_side_first = true",
    "SET quiver.adaptive_broadcast_bytes = 1073741824",
];

pub(crate) fn session_settings() -> Vec<String> {
    vec![
        format!("SET datafusion.execution.target_partitions = {TEST_PARTITIONS}"),
        "SET datafusion.optimizer.repartition_file_min_size = 1024".to_string(),
    ]
}

pub(crate) fn tpch_table_statements() -> Vec<String> {
    parquet_table_statements(&tpch_data_dir(), &TPCH_TABLES)
}

/// `CREATE EXTERNAL TABLE` for each of `tables`, a directory of Parquet files under `dir`.
pub(crate) fn parquet_table_statements(
    dir: &std::path::Path,
    tables: &[impl AsRef<str>],
) -> Vec<String> {
    tables
        .iter()
        .map(|table| {
            let table = table.as_ref();
            format!(
                "CREATE EXTERNAL TABLE {table} STORED AS PARQUET LOCATION '{}/'",
                dir.join(table).display()
            )
        })
        .collect()
}

/// Two executors with two slots each.
pub(crate) fn test_cluster_config() -> StandaloneConfig {
    StandaloneConfig {
        executors: 2,
        slots_per_executor: 2,
        target_partitions: Some(TEST_PARTITIONS),
        ..StandaloneConfig::default()
    }
}

/// A standalone cluster shaped by `config`.
pub(crate) async fn start_cluster_with(
    config: StandaloneConfig,
) -> (StandaloneCluster, QuiverClient) {
    let cluster = StandaloneCluster::start(config)
        .await
        .expect("standalone cluster starts");
    let client = cluster.client().await.expect("client connects");
    (cluster, client)
}

/// A standalone cluster of two executors with two slots each.
pub(crate) async fn start_cluster() -> (StandaloneCluster, QuiverClient) {
    start_cluster_with(test_cluster_config()).await
}

/// A standalone cluster with the TPC-H tables registered.
pub(crate) async fn start_tpch_cluster() -> (StandaloneCluster, QuiverClient) {
    start_tpch_cluster_with(test_cluster_config()).await
}

/// A standalone cluster shaped by `config`, with the TPC-H tables registered.
pub(crate) async fn start_tpch_cluster_with(
    config: StandaloneConfig,
) -> (StandaloneCluster, QuiverClient) {
    let (cluster, client) = start_cluster_with(config).await;
    for statement in session_settings().iter().chain(&tpch_table_statements()) {
        client.sql(statement).await.expect(statement);
    }
    (cluster, client)
}

/// Producer outputs (shuffle data and results) held by the cluster's executors.
pub(crate) fn stored_outputs(cluster: &StandaloneCluster) -> usize {
    cluster
        .executors()
        .iter()
        .map(|e| e.store().output_count())
        .sum()
}

/// A TPC-H cluster where the first attempt of partition 0 of stage 1 stalls until it is
/// stopped (stage 1 exists only in multi-stage queries: set-up statements pass). The
/// fault is returned to check that it fired.
pub(crate) async fn start_tpch_cluster_with_a_stalled_task()
-> (StandaloneCluster, QuiverClient, FaultInjection) {
    let faults = FaultInjection::stall_task(FaultTarget {
        stage_id: 1,
        partition: 0,
        attempt: 0,
    });
    let (cluster, client) = start_tpch_cluster_with_faults(faults.clone()).await;
    (cluster, client, faults)
}

/// A TPC-H cluster whose executors inject `faults`.
pub(crate) async fn start_tpch_cluster_with_faults(
    faults: FaultInjection,
) -> (StandaloneCluster, QuiverClient) {
    start_tpch_cluster_with(StandaloneConfig {
        faults,
        ..test_cluster_config()
    })
    .await
}

/// Quiver's answer to `sql` as sorted canonical rows; a failure names the statement.
pub(crate) async fn quiver_rows(client: &QuiverClient, sql: &str) -> Vec<String> {
    let batches = client
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    quiver::compare::canonical_rows(&batches, true).unwrap()
}

/// `context`'s answer to `sql` as sorted canonical rows.
pub(crate) async fn datafusion_rows(context: &SessionContext, sql: &str) -> Vec<String> {
    let batches = context.sql(sql).await.unwrap().collect().await.unwrap();
    quiver::compare::canonical_rows(&batches, true).unwrap()
}

/// Single-node DataFusion's answer to `sql` over the same tables: the oracle's batches.
pub(crate) async fn datafusion_batches(sql: &str) -> Vec<RecordBatch> {
    datafusion_oracle()
        .await
        .sql(sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
}

/// Single-node DataFusion over the same tables with the same settings: the oracle.
pub(crate) async fn datafusion_oracle() -> SessionContext {
    let context = SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(TEST_PARTITIONS)
            .with_information_schema(true),
    );
    for statement in session_settings().iter().chain(&tpch_table_statements()) {
        context
            .sql(statement)
            .await
            .expect(statement)
            .collect()
            .await
            .expect(statement);
    }
    context
}

/// Files under `dir`, recursively (spill files; directories themselves do not count).
pub(crate) fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() { files_under(&path) } else { 1 }
        })
        .sum()
}

/// The `output_rows` figure of an `EXPLAIN ANALYZE` line.
pub(crate) fn analyzed_output_rows(line: &str) -> u64 {
    line.split("output_rows=")
        .nth(1)
        .and_then(|rest| rest.split([',', ']']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no output_rows in {line}"))
}

/// Rows stage `stage` wrote, from its `EXPLAIN ANALYZE` header
/// (`Stage N · ... out 2.1 KiB (M rows)`).
pub(crate) fn analyzed_stage_rows(text: &str, stage: u32) -> u64 {
    let header = text
        .lines()
        .find(|line| line.contains(&format!("Stage {stage} · ")))
        .unwrap_or_else(|| panic!("no stage {stage} in\n{text}"));
    header
        .split(" out ")
        .nth(1)
        .and_then(|rest| rest.split('(').nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row count in {header}"))
}

/// The stage a `ShuffleReaderExec` line of a plan reads.
pub(crate) fn reader_stage(line: &str) -> Option<u32> {
    line.trim_start()
        .strip_prefix("ShuffleReaderExec: stage=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
}
