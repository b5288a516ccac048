//! Writes run on the executors and commit whole: COPY in each format, PARTITIONED BY,
//! INSERT and INSERT OVERWRITE, CREATE TABLE AS (also replacing a table from itself), a
//! write task retried after writing its files, an executor process killed mid-write, a
//! failing write; and every file format on read (Parquet, gzip CSV, NDJSON, Arrow IPC,
//! Avro). Answers are single-node DataFusion's over the same
//! files, and no staging directory is ever left behind.

use std::path::Path;
use std::time::{Duration, Instant};

use quiver_core::config::{FaultInjection, FaultTarget};

use crate::common::{
    datafusion_oracle, datafusion_rows, files_under, python, quiver_rows, start_tpch_cluster,
    start_tpch_cluster_with_faults, testdata, tpch_data_dir,
};
use crate::processes::scheduler_and_two_executors;

/// Names under `dir` that are staging directories of writes.
fn staging_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|name| name.starts_with(".quiver-staging"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_inserts_and_partitioned_writes_commit_datafusions_rows() {
    let (cluster, client) = start_tpch_cluster().await;
    let oracle = datafusion_oracle().await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let truth = |sql: String| {
        let oracle = oracle.clone();
        async move { datafusion_rows(&oracle, &sql).await }
    };

    // Each format, written by every partition's task, read back whole.
    let check = "SELECT count(*), sum(l_quantity), min(l_shipdate), max(l_comment) FROM";
    let expected = truth(format!("{check} lineitem")).await;
    for (format, options) in [
        ("PARQUET", ""),
        ("CSV", "OPTIONS ('format.has_header' 'true')"),
        ("JSON", ""),
    ] {
        let target = format!("{dir}/lineitem_{}/", format.to_lowercase());
        let copied = quiver_rows(
            &client,
            &format!("COPY (SELECT * FROM lineitem) TO '{target}' STORED AS {format} {options}"),
        )
        .await;
        assert_eq!(
            copied,
            truth("SELECT count(*) FROM lineitem".to_string()).await,
            "{format}"
        );
        let files = files_under(Path::new(&target));
        assert!(
            files > 1,
            "{format}: the write ran as several tasks ({files} files)"
        );
        let table = format!("lineitem_{}", format.to_lowercase());
        let schema = "(l_orderkey BIGINT, l_partkey BIGINT, l_suppkey BIGINT, \
                      l_linenumber INT, l_quantity DECIMAL(15,2), l_extendedprice DECIMAL(15,2), \
                      l_discount DECIMAL(15,2), l_tax DECIMAL(15,2), l_returnflag VARCHAR, \
                      l_linestatus VARCHAR, l_shipdate DATE, l_commitdate DATE, \
                      l_receiptdate DATE, l_shipinstruct VARCHAR, l_shipmode VARCHAR, \
                      l_comment VARCHAR)";
        let declared = if format == "PARQUET" { "" } else { schema };
        client
            .sql(&format!(
                "CREATE EXTERNAL TABLE {table} {declared} STORED AS {format} LOCATION '{target}' {options}"
            ))
            .await
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(
            quiver_rows(&client, &format!("{check} {table}")).await,
            expected,
            "{format}"
        );
    }

    // Hive-style partitions: one directory per value, read back as a column.
    let sales = format!("{dir}/by_region/");
    client
        .sql(&format!(
            "COPY (SELECT n_name, n_nationkey, n_regionkey FROM nation) TO '{sales}' \
             STORED AS PARQUET PARTITIONED BY (n_regionkey)"
        ))
        .await
        .unwrap();
    for region in 0..5 {
        assert!(
            Path::new(&sales)
                .join(format!("n_regionkey={region}"))
                .is_dir(),
            "partition directory for region {region}"
        );
    }
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE by_region STORED AS PARQUET PARTITIONED BY (n_regionkey) \
             LOCATION '{sales}'"
        ))
        .await
        .unwrap();
    let per_region = "SELECT n_regionkey, count(*), min(n_name) FROM {} GROUP BY n_regionkey";
    assert_eq!(
        quiver_rows(&client, &per_region.replace("{}", "by_region")).await,
        truth(per_region.replace("{}", "nation")).await
    );

    // INSERT appends; INSERT OVERWRITE replaces.
    let log = format!("{dir}/log/");
    std::fs::create_dir_all(&log).unwrap();
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE log (k BIGINT, name VARCHAR) STORED AS PARQUET LOCATION '{log}'"
        ))
        .await
        .unwrap();
    for _ in 0..2 {
        let inserted = quiver_rows(
            &client,
            "INSERT INTO log SELECT n_nationkey, n_name FROM nation",
        )
        .await;
        assert_eq!(inserted, vec!["25"]);
    }
    assert_eq!(
        quiver_rows(&client, "SELECT count(*), count(DISTINCT k) FROM log").await,
        vec!["50|25"]
    );
    match client
        .sql("INSERT OVERWRITE log SELECT r_regionkey, r_name FROM region")
        .await
    {
        Ok(_) => assert_eq!(
            quiver_rows(&client, "SELECT count(*) FROM log").await,
            vec!["5"]
        ),
        // DataFusion may refuse to overwrite a listing table: then nothing changed.
        Err(error) => {
            assert!(
                error.to_string().to_lowercase().contains("overwrite"),
                "{error}"
            );
            assert_eq!(
                quiver_rows(&client, "SELECT count(*) FROM log").await,
                vec!["50"]
            );
        }
    }

    // A write that fails part-way leaves its target as it was.
    let before = files_under(Path::new(&log));
    let error = client
        .sql("INSERT INTO log SELECT n_nationkey / (n_nationkey - 7), n_name FROM nation")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("Divide by zero"), "{error}");
    assert_eq!(
        files_under(Path::new(&log)),
        before,
        "a failed write adds no file"
    );

    assert!(
        staging_left(out.path()).is_empty(),
        "{:?}",
        staging_left(out.path())
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_task_retried_after_writing_its_files_commits_them_once() {
    // Attempt 0 of partition 1 of the only stage writes all its files, then fails.
    let faults = FaultInjection::fail_after_task(FaultTarget {
        stage_id: 0,
        partition: 1,
        attempt: 0,
    });
    let (cluster, client) = start_tpch_cluster_with_faults(faults.clone()).await;
    let out = tempfile::tempdir().unwrap();
    let target = format!("{}/copy/", out.path().display());
    let copied = quiver_rows(
        &client,
        &format!("COPY (SELECT * FROM lineitem) TO '{target}' STORED AS PARQUET"),
    )
    .await;
    assert_eq!(faults.fired(), 1, "the injected fault must have fired");
    let oracle = datafusion_oracle().await;
    let sum = "SELECT count(*), sum(l_extendedprice), sum(l_orderkey) FROM";
    let expected = datafusion_rows(&oracle, &format!("{sum} lineitem")).await;
    assert_eq!(
        copied,
        quiver_rows(&client, "SELECT count(*) FROM lineitem").await
    );
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE copy STORED AS PARQUET LOCATION '{target}'"
        ))
        .await
        .unwrap();
    assert_eq!(
        quiver_rows(&client, &format!("{sum} copy")).await,
        expected,
        "no row twice, none missing"
    );
    assert!(staging_left(out.path()).is_empty());

    // CREATE TABLE AS, through the same retry: a managed table with DataFusion's rows.
    let created = client
        .sql("CREATE TABLE busy_nations AS SELECT n_nationkey, n_name FROM nation WHERE n_nationkey > 3")
        .await;
    assert!(created.is_ok(), "{created:?}");
    let expected = datafusion_rows(
        &oracle,
        "SELECT count(*), sum(n_nationkey) FROM nation WHERE n_nationkey > 3",
    )
    .await;
    let copied = "SELECT count(*), sum(n_nationkey) FROM busy_nations";
    assert_eq!(quiver_rows(&client, copied).await, expected);

    // Replacing a table from itself reads the old rows before they go.
    client
        .sql("CREATE OR REPLACE TABLE busy_nations AS SELECT * FROM busy_nations WHERE n_nationkey > 10")
        .await
        .expect("a table replaced from itself");
    let expected = datafusion_rows(
        &oracle,
        "SELECT count(*), sum(n_nationkey) FROM nation WHERE n_nationkey > 10",
    )
    .await;
    assert_eq!(quiver_rows(&client, copied).await, expected);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_format_reads_like_single_node_datafusion() {
    let (cluster, client) = start_tpch_cluster().await;
    let oracle = datafusion_oracle().await;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    // DataFusion writes each format; both engines read the same files.
    let formats = [
        (
            "csv_gz",
            "CSV",
            "OPTIONS ('format.has_header' 'true', 'format.compression' 'gzip')",
        ),
        ("ndjson", "JSON", ""),
        ("arrow", "ARROW", ""),
    ];
    for (name, format, options) in formats {
        oracle
            .sql(&format!(
                "COPY (SELECT * FROM orders) TO '{dir}/{name}/' STORED AS {format} {options}"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
    }
    // DataFusion cannot write Avro: a script writes the same rows with fastavro.
    std::fs::create_dir_all(format!("{dir}/avro")).unwrap();
    let written = std::process::Command::new(python())
        .arg(testdata().join("../client/tests/fixtures/write_avro.py"))
        .arg(tpch_data_dir().join("orders"))
        .arg(format!("{dir}/avro/orders.avro"))
        .status()
        .expect("the Avro writer runs");
    assert!(written.success());
    let query = "SELECT o_orderpriority, count(*), sum(o_totalprice), max(o_orderdate) \
                 FROM {} GROUP BY o_orderpriority";
    let formats = [formats[0], formats[1], formats[2], ("avro", "AVRO", "")];
    for (name, format, options) in formats {
        let create = format!(
            "CREATE EXTERNAL TABLE orders_{name} STORED AS {format} LOCATION '{dir}/{name}/' {options}"
        );
        client
            .sql(&create)
            .await
            .unwrap_or_else(|e| panic!("{create}: {e}"));
        oracle.sql(&create).await.unwrap();
        let sql = query.replace("{}", &format!("orders_{name}"));
        assert_eq!(
            quiver_rows(&client, &sql).await,
            datafusion_rows(&oracle, &sql).await,
            "{format} {options}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_executor_killed_during_a_write_leaves_exactly_the_rows_written() {
    // Both executors have registered before the write starts.
    let (mut processes, client) = scheduler_and_two_executors().await;
    let out = tempfile::tempdir().unwrap();
    let target = format!("{}/big/", out.path().display());
    let rows = "SELECT l.*, g.value AS copy FROM lineitem l CROSS JOIN generate_series(1, 40) g";
    let mut victim = processes.0.remove(1);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        let _ = victim.kill();
        let _ = victim.wait();
    });
    let started = Instant::now();
    let copied = quiver_rows(
        &client,
        &format!("COPY ({rows}) TO '{target}' STORED AS PARQUET"),
    )
    .await;
    let took = started.elapsed();
    killer.join().unwrap();
    assert!(
        took > Duration::from_millis(400),
        "the executor must die while the write runs (it took {took:?})"
    );
    let oracle = datafusion_oracle().await;
    let check = "SELECT count(*), sum(l_orderkey * copy), max(l_comment) FROM";
    assert_eq!(
        copied,
        datafusion_rows(&oracle, &format!("SELECT count(*) FROM ({rows})")).await
    );
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE big STORED AS PARQUET LOCATION '{target}'"
        ))
        .await
        .unwrap();
    assert_eq!(
        quiver_rows(&client, &format!("{check} big")).await,
        datafusion_rows(&oracle, &format!("{check} ({rows})")).await,
        "every row once, after a retry on the surviving executor"
    );
    assert!(staging_left(out.path()).is_empty());
}
