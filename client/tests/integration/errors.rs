//! Bad input gets a clear error naming the cause, and the cluster keeps serving.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quiver::{ClientError, QuiverClient};
use quiver_core::config::SchedulerConfig;
use quiver_core::proto::scheduler_control_client::SchedulerControlClient;
use quiver_core::proto::{ExecutorRegistration, RegisterExecutorRequest};
use quiver_core::security::{AttachClusterSecret, ClusterSecret};
use quiver_scheduler::Scheduler;

use quiver::compare::canonical_rows;

use crate::common::{start_cluster, start_tpch_cluster};

/// A query that runs as tasks on executors (a generated series is not carried in the
/// plan, unlike `SELECT 1`, which the scheduler answers itself).
const NEEDS_AN_EXECUTOR: &str = "SELECT count(*) FROM generate_series(1, 10)";

fn query_error(
    result: Result<Vec<datafusion::arrow::record_batch::RecordBatch>, ClientError>,
) -> (tonic::Code, String) {
    match result {
        Err(ClientError::Query { code, message }) => (code, message),
        other => panic!("expected a query error, got {other:?}"),
    }
}

async fn assert_still_serving(client: &QuiverClient) {
    let batches = client
        .sql("SELECT 41 + 1 AS answer")
        .await
        .expect("cluster still serves");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn planning_errors_name_their_cause() {
    let (cluster, client) = start_tpch_cluster().await;

    let (code, message) = query_error(client.sql("SELEC * FROM nation").await);
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("SELEC"), "{message}");

    let (code, message) = query_error(client.sql("SELECT * FROM no_such_table").await);
    assert_eq!(code, tonic::Code::NotFound, "{message}");
    assert!(message.contains("no_such_table"), "{message}");

    let (code, message) = query_error(client.sql("SELECT no_such_column FROM nation").await);
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("no_such_column"), "{message}");

    let (_, message) = query_error(
        client
            .sql("CREATE EXTERNAL TABLE ghost STORED AS PARQUET LOCATION '/definitely/not/here.parquet'")
            .await,
    );
    assert!(
        message.contains("/definitely/not/here.parquet"),
        "{message}"
    );

    assert_still_serving(&client).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runtime_errors_fail_the_query_with_the_executor_message() {
    let (cluster, client) = start_tpch_cluster().await;
    let (_, message) = query_error(
        client
            .sql("SELECT n_nationkey / (n_regionkey - n_regionkey) FROM nation")
            .await,
    );
    assert!(message.contains("Divide by zero"), "{message}");
    assert!(
        message.contains("stage"),
        "names the failing stage: {message}"
    );

    // A corrupt Parquet file: planning succeeds on the footer-less file only if it is
    // read at run time; either way the error names the file.
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.parquet");
    std::fs::write(&corrupt, b"PAR1 this is not parquet at all PAR1").unwrap();
    let (_, message) = query_error(
        client
            .sql(&format!(
                "CREATE EXTERNAL TABLE corrupt STORED AS PARQUET LOCATION '{}'",
                corrupt.display()
            ))
            .await,
    );
    assert!(message.to_lowercase().contains("parquet"), "{message}");

    assert_still_serving(&client).await;
    cluster.shutdown().await;
}

async fn register_ghost_executor(scheduler_url: String, secret: &ClusterSecret) {
    // An executor that registers, then is gone: nothing listens on its port.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let channel = tonic::transport::Endpoint::from_shared(scheduler_url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut control =
        SchedulerControlClient::with_interceptor(channel, AttachClusterSecret::new(secret.clone()));
    control
        .register_executor(RegisterExecutorRequest {
            executor: Some(ExecutorRegistration {
                executor_id: "ghost-executor".to_string(),
                host: "127.0.0.1".to_string(),
                port: u32::from(closed_port),
                // The most free slots: the scheduler places the next tasks there.
                slots: 64,
                memory_limit: 0,
                tls: false,
            }),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_executor_is_dropped_and_its_tasks_run_elsewhere() {
    let (cluster, client) = start_cluster().await;
    register_ghost_executor(cluster.url(), cluster.cluster_secret()).await;
    let batches = client
        // Not a constant-only query: those run beside the control plane, on any executor.
        .sql("SELECT count(*) AS n FROM generate_series(1, 3)")
        .await
        .expect("tasks move to live executors");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert!(
        cluster
            .scheduler()
            .engine()
            .executors()
            .iter()
            .all(|e| e.executor_id != "ghost-executor"),
        "the unreachable executor is no longer used"
    );
    cluster.shutdown().await;
}

/// A scheduler alone on a free port, giving up on executors after `grace`.
async fn scheduler_without_executors(grace: Duration) -> quiver_scheduler::SchedulerHandle {
    Scheduler::start(SchedulerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        no_executor_grace: grace,
        ..SchedulerConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_only_an_unreachable_executor_the_query_fails_naming_it() {
    let grace = Duration::from_millis(500);
    let scheduler = scheduler_without_executors(grace).await;
    register_ghost_executor(scheduler.url(), &ClusterSecret::default()).await;
    let client = QuiverClient::connect(&scheduler.url()).await.unwrap();
    let (code, message) = query_error(client.sql(NEEDS_AN_EXECUTOR).await);
    assert_eq!(code, tonic::Code::Unavailable, "{message}");
    assert!(message.contains("no executors"), "{message}");
    assert!(message.contains("ghost-executor"), "{message}");
    assert!(message.contains("launching tasks failed"), "{message}");
    scheduler.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_without_executors_fails_within_the_grace_period() {
    let grace = Duration::from_millis(500);
    let scheduler = scheduler_without_executors(grace).await;
    let client = QuiverClient::connect(&scheduler.url()).await.unwrap();
    let started = Instant::now();
    let (code, message) = query_error(client.sql(NEEDS_AN_EXECUTOR).await);
    assert_eq!(code, tonic::Code::Unavailable, "{message}");
    assert!(message.contains("no executors"), "{message}");
    assert!(started.elapsed() < grace + Duration::from_secs(5));
    // A query reading only what its plan carries runs on the scheduler itself.
    let answer = client.sql("SELECT 41 + 1 AS answer").await.unwrap();
    assert_eq!(canonical_rows(&answer, false).unwrap(), ["42"]);
    scheduler.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_or_truncated_file_is_named_in_the_error_and_an_empty_one_is_skipped() {
    let (cluster, client) = start_tpch_cluster().await;
    let good = std::fs::read_dir(crate::common::tpch_data_dir().join("orders"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("garbage", b"not a parquet file at all, just words".to_vec()),
    ] {
        let table_dir = dir.path().join(name);
        std::fs::create_dir_all(&table_dir).unwrap();
        std::fs::write(table_dir.join("good.parquet"), &bytes).unwrap();
        std::fs::write(table_dir.join(format!("{name}.parquet")), &content).unwrap();
        let (code, message) = query_error(
            client
                .sql(&format!(
                    "CREATE EXTERNAL TABLE {name} STORED AS PARQUET LOCATION '{}/'",
                    table_dir.display()
                ))
                .await,
        );
        assert_eq!(code, tonic::Code::InvalidArgument, "{name}: {message}");
        assert!(
            message.contains(&format!("{name}.parquet")),
            "{name}: {message}"
        );
        assert!(!message.contains("good.parquet"), "{name}: {message}");
    }
    // An empty file holds no rows: it is skipped, as single-node DataFusion skips it.
    let with_empty = dir.path().join("with_empty");
    std::fs::create_dir_all(&with_empty).unwrap();
    std::fs::write(with_empty.join("good.parquet"), &bytes).unwrap();
    std::fs::write(with_empty.join("empty.parquet"), b"").unwrap();
    let create = format!(
        "CREATE EXTERNAL TABLE with_empty STORED AS PARQUET LOCATION '{}/'",
        with_empty.display()
    );
    client
        .sql(&create)
        .await
        .expect("an empty file is no error");
    let oracle = crate::common::datafusion_oracle().await;
    oracle.sql(&create).await.unwrap().collect().await.unwrap();
    let count = "SELECT count(*), sum(o_totalprice) FROM with_empty";
    assert_eq!(
        crate::common::quiver_rows(&client, count).await,
        crate::common::datafusion_rows(&oracle, count).await
    );
    assert_still_serving(&client).await;
    cluster.shutdown().await;
}

/// A one-column Parquet file: `x` as 64-bit integers or as strings.
fn write_parquet(path: &std::path::Path, column: datafusion::arrow::array::ArrayRef) {
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::parquet::arrow::ArrowWriter;
    let batch = RecordBatch::try_from_iter([("x", column)]).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mismatched_schemas_and_values_of_the_wrong_type_name_their_file() {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};

    let (cluster, client) = start_cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("parquet");
    std::fs::create_dir_all(&parquet).unwrap();
    write_parquet(
        &parquet.join("numbers.parquet"),
        Arc::new(Int64Array::from(vec![1, 2, 3])),
    );
    write_parquet(
        &parquet.join("words.parquet"),
        Arc::new(StringArray::from(vec!["u", "v"])),
    );
    // Inferring one schema from both files fails naming the file that disagrees.
    let (code, message) = query_error(
        client
            .sql(&format!(
                "CREATE EXTERNAL TABLE mixed STORED AS PARQUET LOCATION '{}/'",
                parquet.display()
            ))
            .await,
    );
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(
        message.contains("words.parquet") && message.contains("numbers.parquet"),
        "{message}"
    );
    assert!(message.contains("does not have the schema of"), "{message}");

    // With the schema given, the table is made; reading the file whose column does not
    // cast fails naming it.
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE typed (x BIGINT) STORED AS PARQUET LOCATION '{}/'",
            parquet.display()
        ))
        .await
        .unwrap();
    let (_, message) = query_error(client.sql("SELECT sum(x) FROM typed").await);
    assert!(
        message.contains("reading file") && message.contains("words.parquet"),
        "{message}"
    );
    assert!(!message.contains("numbers.parquet"), "{message}");

    // A CSV value of the wrong type: the line was named, now the file is too.
    let csv = dir.path().join("csv");
    std::fs::create_dir_all(&csv).unwrap();
    std::fs::write(csv.join("good.csv"), "x\n1\n2\n").unwrap();
    std::fs::write(csv.join("bad.csv"), "x\n3\nabc\n").unwrap();
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE numbers (x INT) STORED AS CSV LOCATION '{}/' \
             OPTIONS ('format.has_header' 'true')",
            csv.display()
        ))
        .await
        .unwrap();
    let (_, message) = query_error(client.sql("SELECT sum(x) FROM numbers").await);
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("bad.csv"), "{message}");
    assert!(!message.contains("good.csv"), "{message}");
    // An expression's own failure is no file's fault.
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE fine (x INT) STORED AS CSV LOCATION '{}' \
             OPTIONS ('format.has_header' 'true')",
            csv.join("good.csv").display()
        ))
        .await
        .unwrap();
    let (_, message) = query_error(client.sql("SELECT x / (x - x) FROM fine").await);
    assert!(message.contains("Divide by zero"), "{message}");
    assert!(!message.contains("reading file"), "{message}");
    assert_still_serving(&client).await;
    cluster.shutdown().await;
}
