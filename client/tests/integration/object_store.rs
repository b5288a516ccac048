//! Tables on an S3-compatible server (moto, credentials enforced, on 127.0.0.1): TPC-H
//! read and written through Quiver against single-node DataFusion over the same objects,
//! credentials carried by table options only, and clear errors for wrong credentials, a
//! missing bucket and an unreachable endpoint.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::aws::AmazonS3Builder;
use quiver::ClientError;
use quiver::compare::canonical_rows;

use crate::common::{
    TEST_PARTITIONS, TPCH_TABLES, datafusion_rows, python, quiver_rows, session_settings,
    start_cluster, testdata, tpch_data_dir, tpch_query,
};
use crate::processes::{Processes, connect_with_deadline, free_port, quiver_binary};

const BUCKET: &str = "quiver-test";

/// The S3 server, serving until dropped.
struct S3Server {
    child: Child,
    endpoint: String,
    access_key_id: String,
    secret_access_key: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Starts it with the TPC-H tables under `tpch/<table>/` in the test bucket.
    fn start() -> Self {
        let mut child = Command::new(python())
            .arg(testdata().join("../scripts/s3-test-server.py"))
            .args(["--bucket", BUCKET, "--prefix", "tpch/", "--upload"])
            .arg(tpch_data_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the S3 test server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the S3 test server reports its address");
        let field = |name: &str| {
            let start = line
                .find(&format!("\"{name}\": \""))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                + name.len()
                + 5;
            line[start..start + line[start..].find('"').unwrap()].to_string()
        };
        Self {
            endpoint: field("endpoint"),
            access_key_id: field("access_key_id"),
            secret_access_key: field("secret_access_key"),
            child,
        }
    }

    fn options_with_secret(&self, secret: &str) -> String {
        format!(
            "OPTIONS ('aws.access_key_id' '{}', 'aws.secret_access_key' '{secret}', \
             'aws.region' 'us-east-1', 'aws.endpoint' '{}', 'aws.allow_http' 'true')",
            self.access_key_id, self.endpoint
        )
    }

    fn options(&self) -> String {
        self.options_with_secret(&self.secret_access_key)
    }

    fn table_statements(&self) -> Vec<String> {
        TPCH_TABLES
            .iter()
            .map(|table| {
                format!(
                    "CREATE EXTERNAL TABLE {table} STORED AS PARQUET \
                     LOCATION 's3://{BUCKET}/tpch/{table}/' {}",
                    self.options()
                )
            })
            .collect()
    }

    /// Single-node DataFusion reading the same objects.
    async fn oracle(&self) -> SessionContext {
        let context = SessionContext::new_with_config(
            SessionConfig::new().with_target_partitions(TEST_PARTITIONS),
        );
        let store = AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(&self.endpoint)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .with_allow_http(true)
            .build()
            .unwrap();
        context.register_object_store(
            &url::Url::parse(&format!("s3://{BUCKET}")).unwrap(),
            Arc::new(store),
        );
        for table in TPCH_TABLES {
            context
                .sql(&format!(
                    "CREATE EXTERNAL TABLE {table} STORED AS PARQUET \
                     LOCATION 's3://{BUCKET}/tpch/{table}/'"
                ))
                .await
                .unwrap();
        }
        context
    }
}

fn refusal(
    result: Result<Vec<datafusion::arrow::record_batch::RecordBatch>, ClientError>,
) -> (tonic::Code, String) {
    match result {
        Err(ClientError::Query { code, message }) => (code, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpch_on_s3_matches_datafusion_and_writes_commit_there() {
    let s3 = S3Server::start();
    let (cluster, client) = start_cluster().await;
    for statement in session_settings().iter().chain(&s3.table_statements()) {
        client.sql(statement).await.expect(statement);
    }
    let oracle = s3.oracle().await;
    for number in 1..=22 {
        let sql = tpch_query(number);
        assert_eq!(
            quiver_rows(&client, &sql).await,
            datafusion_rows(&oracle, &sql).await,
            "q{number} over s3://"
        );
    }

    // Secrets stay secret: not in the catalog's views, not in EXPLAIN.
    for sql in [
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM information_schema.views",
        "SELECT * FROM information_schema.df_settings",
        "EXPLAIN SELECT * FROM nation",
    ] {
        let shown = quiver_rows(&client, sql).await.join("\n");
        assert!(
            !shown.contains(&s3.secret_access_key),
            "{sql} shows the secret"
        );
    }

    // A distributed write: every task writes its files to the bucket, then one commit.
    let copied = client
        .sql(&format!(
            "COPY (SELECT * FROM lineitem) TO 's3://{BUCKET}/copies/lineitem/' \
             STORED AS PARQUET {}",
            s3.options()
        ))
        .await
        .expect("COPY to s3:// runs");
    let expected_rows = datafusion_rows(&oracle, "SELECT count(*) FROM lineitem").await;
    assert_eq!(canonical_rows(&copied, true).unwrap(), expected_rows);
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE lineitem_copy STORED AS PARQUET \
             LOCATION 's3://{BUCKET}/copies/lineitem/' {}",
            s3.options()
        ))
        .await
        .unwrap();
    let sum = "SELECT count(*), sum(l_extendedprice), min(l_shipdate) FROM lineitem";
    assert_eq!(
        quiver_rows(&client, &sum.replace("lineitem", "lineitem_copy")).await,
        datafusion_rows(&oracle, sum).await
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_credentials_a_missing_bucket_and_a_dead_endpoint_are_clear_errors() {
    let s3 = S3Server::start();
    let (cluster, client) = start_cluster().await;

    let (code, message) = refusal(
        client
            .sql(&format!(
                "CREATE EXTERNAL TABLE stolen STORED AS PARQUET \
                 LOCATION 's3://{BUCKET}/tpch/nation/' {}",
                s3.options_with_secret("not-the-secret")
            ))
            .await,
    );
    assert_ne!(code, tonic::Code::Internal, "{message}");
    assert!(
        message.contains(&format!("s3://{BUCKET}/tpch/nation/")),
        "{message}"
    );
    assert!(!message.contains("not-the-secret"), "{message}");

    let (code, message) = refusal(
        client
            .sql(&format!(
                "CREATE EXTERNAL TABLE ghost STORED AS PARQUET \
                 LOCATION 's3://no-such-bucket/t/' {}",
                s3.options()
            ))
            .await,
    );
    assert_ne!(code, tonic::Code::Internal, "{message}");
    assert!(message.contains("s3://no-such-bucket/t/"), "{message}");

    let dead = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let (code, message) = refusal(
        client
            .sql(&format!(
                "CREATE EXTERNAL TABLE unreachable STORED AS PARQUET \
                 LOCATION 's3://{BUCKET}/tpch/nation/' OPTIONS ('aws.endpoint' '{dead}', \
                 'aws.allow_http' 'true', 'aws.region' 'us-east-1', \
                 'aws.access_key_id' 'x', 'aws.secret_access_key' 'y')"
            ))
            .await,
    );
    assert_ne!(code, tonic::Code::Internal, "{message}");
    assert!(
        message.contains(&format!("s3://{BUCKET}/tpch/nation/")),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "an unreachable endpoint took {:?}",
        started.elapsed()
    );

    let alive = client
        .sql("SELECT 1")
        .await
        .expect("the cluster still serves");
    assert_eq!(canonical_rows(&alive, false).unwrap(), vec!["1"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_executor_without_credentials_reads_with_the_tables_options() {
    let s3 = S3Server::start();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let scrubbed = |mut command: Command| {
        for (key, _) in std::env::vars() {
            if key.starts_with("AWS_") {
                command.env_remove(key);
            }
        }
        command
    };
    let mut scheduler = scrubbed(quiver_binary());
    scheduler.args(["scheduler", "--bind", &format!("127.0.0.1:{port}")]);
    scheduler.args(["--target-partitions", "4"]);
    let mut executor = scrubbed(quiver_binary());
    executor.args(["executor", "--scheduler", &url, "--slots", "2"]);
    let _processes = Processes(vec![
        scheduler.spawn().expect("scheduler starts"),
        executor.spawn().expect("executor starts"),
    ]);
    let client = connect_with_deadline(&url, Duration::from_secs(30)).await;
    for statement in session_settings().iter().chain(&s3.table_statements()) {
        client.sql(statement).await.expect(statement);
    }
    let oracle = s3.oracle().await;
    for number in [3, 5, 18] {
        let sql = tpch_query(number);
        assert_eq!(
            quiver_rows(&client, &sql).await,
            datafusion_rows(&oracle, &sql).await,
            "q{number} through an executor without credentials of its own"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delta_table_on_s3_is_created_appended_to_and_read_back() {
    let s3 = S3Server::start();
    let (cluster, client) = start_cluster().await;
    for statement in session_settings().iter().chain(&s3.table_statements()) {
        client.sql(statement).await.expect(statement);
    }
    let oracle = s3.oracle().await;
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE nations (n_nationkey BIGINT, n_name VARCHAR, \
             n_regionkey BIGINT) STORED AS DELTA PARTITIONED BY (n_regionkey) \
             LOCATION 's3://{BUCKET}/delta/nations/' {}",
            s3.options()
        ))
        .await
        .expect("a Delta table is created on s3://");
    // Two appends: each commits with a conditional put of the next log entry.
    for _ in 0..2 {
        client
            .sql("INSERT INTO nations SELECT n_nationkey, n_name, n_regionkey FROM nation")
            .await
            .expect("INSERT into a Delta table on s3:// commits");
    }
    let sql = "SELECT n_regionkey, count(*), min(n_name) FROM nations GROUP BY n_regionkey";
    let mut expected = datafusion_rows(
        &oracle,
        "SELECT n_regionkey, 2 * count(*), min(n_name) FROM nation GROUP BY n_regionkey",
    )
    .await;
    expected.sort();
    assert_eq!(quiver_rows(&client, sql).await, expected);
    assert_eq!(
        quiver_rows(&client, "SELECT max(version) FROM delta_history('nations')").await,
        ["2"]
    );
    cluster.shutdown().await;
}
