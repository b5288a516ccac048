//! Delta Lake tables: TPC-H stored as Delta (one table partitioned) gives the answers the
//! Parquet tables give; time travel by version and by time; the commit history; appends
//! from several clients at once; a killed executor during an INSERT leaves exactly the
//! committed versions; `CREATE TABLE ... STORED AS DELTA [AS query]` is one commit or
//! nothing; tables using features this engine does not read are refused by
//! the feature's name.

use std::path::Path;
use std::time::{Duration, Instant};

use quiver::QuiverClient;

use crate::common::{
    TPCH_TABLES, datafusion_oracle, datafusion_rows, quiver_rows, start_tpch_cluster,
};
use crate::processes::scheduler_and_two_executors;
use crate::tpch_differential::tpch_differences;

/// The TPC-H table the Delta copy partitions, and by what.
const PARTITIONED: (&str, &str) = ("orders", "o_orderpriority");

/// `CREATE TABLE delta.<table> STORED AS DELTA ... AS SELECT` copying the Parquet table.
fn delta_copy_statement(table: &str, dir: &str) -> String {
    let partitioned = if table == PARTITIONED.0 {
        format!("PARTITIONED BY ({})", PARTITIONED.1)
    } else {
        String::new()
    };
    format!(
        "CREATE TABLE delta.{table} STORED AS DELTA {partitioned} LOCATION '{dir}/{table}/' \
         AS SELECT * FROM public.{table}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpch_stored_as_delta_matches_the_parquet_tables() {
    let (cluster, client) = start_tpch_cluster().await;
    let oracle = datafusion_oracle().await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    client.sql("CREATE SCHEMA delta").await.unwrap();
    for table in TPCH_TABLES {
        let statement = delta_copy_statement(table, &dir);
        client.sql(&statement).await.expect(&statement);
        assert_eq!(
            versions(&out.path().join(table)),
            ["00000000000000000000.json"],
            "{table}: the copy and its rows are version 0 of a Delta table"
        );
    }
    // The partitioned copy is laid out by partition, and a filter on the partition
    // column reads only its files.
    let urgent = out.path().join("orders/o_orderpriority=1-URGENT");
    assert!(
        urgent.is_dir(),
        "{} holds 1-URGENT orders",
        urgent.display()
    );
    let plan = quiver_rows(
        &client,
        "EXPLAIN SELECT count(*) FROM delta.orders WHERE o_orderpriority = '1-URGENT'",
    )
    .await
    .join("\n");
    assert!(
        plan.contains("1-URGENT") && !plan.contains("2-HIGH"),
        "only 1-URGENT files are scanned:\n{plan}"
    );
    // File statistics prune too: no file of lineitem holds order keys above the largest.
    let pruned = quiver_rows(
        &client,
        "EXPLAIN SELECT * FROM delta.lineitem WHERE l_orderkey > 100000000",
    )
    .await
    .join("\n");
    assert!(
        !pruned.contains(".parquet"),
        "statistics rule out every file:\n{pruned}"
    );

    client
        .sql("SET datafusion.catalog.default_schema = 'delta'")
        .await
        .unwrap();
    let scanned = quiver_rows(&client, "EXPLAIN SELECT * FROM lineitem")
        .await
        .join("\n");
    assert!(
        scanned.contains(&format!("{}/lineitem/", dir.trim_start_matches('/'))),
        "unqualified names now read the Delta copies:\n{scanned}"
    );
    // Answers the log's statistics could give without a scan are still right.
    let answered_by_statistics =
        "SELECT count(*), min(l_shipdate), max(l_orderkey), count(l_comment) FROM lineitem";
    assert_eq!(
        quiver_rows(&client, answered_by_statistics).await,
        datafusion_rows(&oracle, answered_by_statistics).await
    );
    let failures = tpch_differences(&client, &oracle, "over Delta").await;
    cluster.shutdown().await;
    assert!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_table_stored_as_delta_is_one_commit_or_nothing() {
    let (cluster, client) = start_tpch_cluster().await;
    let oracle = datafusion_oracle().await;
    let out = tempfile::tempdir().unwrap();
    // Under the warehouse, partitioned, from a query: the rows DataFusion reads.
    client
        .sql(
            "CREATE TABLE nations STORED AS DELTA PARTITIONED BY (n_regionkey) \
             AS SELECT * FROM nation WHERE n_nationkey > 2",
        )
        .await
        .unwrap();
    let all = "SELECT n_nationkey, n_name, n_regionkey, n_comment FROM {} ORDER BY n_nationkey";
    assert_eq!(
        quiver_rows(&client, &all.replace("{}", "nations")).await,
        datafusion_rows(&oracle, &all.replace("{}", "nation WHERE n_nationkey > 2")).await
    );
    assert_eq!(
        quiver_rows(
            &client,
            "SELECT version, operation FROM delta_history('nations')"
        )
        .await,
        ["0|CREATE TABLE AS SELECT"]
    );
    let definition = quiver_rows(
        &client,
        "SELECT definition FROM information_schema.views WHERE table_name = 'nations'",
    )
    .await;
    assert!(
        definition.len() == 1 && definition[0].contains("STORED AS DELTA"),
        "{definition:?}"
    );
    // Spark's spelling, with columns and no rows: version 0, then appends.
    client
        .sql("CREATE TABLE scores (player VARCHAR, points INT) USING DELTA")
        .await
        .unwrap();
    client
        .sql("INSERT INTO scores VALUES ('ann', 3), ('bob', 5)")
        .await
        .unwrap();
    assert_eq!(
        quiver_rows(&client, "SELECT player, points FROM scores ORDER BY player").await,
        ["ann|3", "bob|5"]
    );
    // A query that fails part-way leaves no table and no log at its location.
    let failed = out.path().join("failed");
    let failing = format!(
        "CREATE TABLE failed STORED AS DELTA LOCATION '{}/' \
         AS SELECT CAST(n_name AS INT) AS n FROM nation",
        failed.display()
    );
    let error = client.sql(&failing).await.unwrap_err();
    assert!(error.to_string().contains("Cannot cast"), "{error}");
    assert!(!failed.join("_delta_log").exists());
    assert!(
        client.sql("SELECT * FROM failed").await.is_err(),
        "no table 'failed'"
    );
    // The location is free for the next try; a table there is never written over.
    let good = failing.replace("CAST(n_name AS INT)", "n_nationkey");
    client.sql(&good).await.unwrap();
    assert_eq!(versions(&failed), ["00000000000000000000.json"]);
    let files_before = std::fs::read_dir(&failed).unwrap().count();
    let error = client
        .sql(&good.replace("TABLE failed", "TABLE again"))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("already holds a Delta table (version 0)"),
        "{error}"
    );
    assert_eq!(std::fs::read_dir(&failed).unwrap().count(), files_before);
    let error = client
        .sql("CREATE OR REPLACE TABLE nations STORED AS DELTA AS SELECT 1 AS one")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("INSERT OVERWRITE"), "{error}");
    let error = client
        .sql("CREATE TABLE t (a INT) STORED AS DELTA PARTITIONED BY a")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("PARTITIONED BY takes"),
        "{error}"
    );
    cluster.shutdown().await;
}

async fn ids(client: &QuiverClient, table: &str) -> Vec<String> {
    quiver_rows(client, &format!("SELECT id FROM {table}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn time_travel_history_overwrite_and_concurrent_appends() {
    let (cluster, client) = start_tpch_cluster().await;
    let out = tempfile::tempdir().unwrap();
    let location = format!("{}/t/", out.path().display());
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE t (id BIGINT, name VARCHAR) STORED AS DELTA LOCATION '{location}'"
        ))
        .await
        .unwrap();
    assert!(ids(&client, "t").await.is_empty(), "a new table is empty");
    client
        .sql("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    client.sql("INSERT INTO t VALUES (3, 'c')").await.unwrap();
    client
        .sql("INSERT OVERWRITE t VALUES (10, 'z')")
        .await
        .unwrap();
    assert_eq!(ids(&client, "t").await, ["10"]);

    // Every commit, newest first, with what it did.
    let history = quiver_rows(
        &client,
        "SELECT version, operation, files_added > 0, files_removed FROM delta_history('t') \
         ORDER BY version",
    )
    .await;
    assert_eq!(history.len(), 4, "{history:?}");
    assert!(
        history[0].starts_with("0|CREATE TABLE|false|0"),
        "{history:?}"
    );
    assert!(history[1].starts_with("1|WRITE|true|0"), "{history:?}");
    assert!(history[3].starts_with("3|WRITE|true|"), "{history:?}");
    assert!(
        !history[3].ends_with("|0"),
        "the overwrite removed files: {history:?}"
    );

    // Older versions, by number and by time.
    for (version, expected) in [("1", vec!["1", "2"]), ("2", vec!["1", "2", "3"])] {
        client
            .sql(&format!(
                "CREATE EXTERNAL TABLE t_v{version} STORED AS DELTA LOCATION '{location}' \
                 OPTIONS ('version' '{version}')"
            ))
            .await
            .unwrap();
        assert_eq!(ids(&client, &format!("t_v{version}")).await, expected);
    }
    let committed = quiver_rows(
        &client,
        "SELECT CAST(timestamp AS VARCHAR) FROM delta_history('t') WHERE version = 2",
    )
    .await;
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE t_then STORED AS DELTA LOCATION '{location}' \
             OPTIONS ('timestamp' '{}')",
            committed[0]
        ))
        .await
        .unwrap();
    assert_eq!(ids(&client, "t_then").await, ["1", "2", "3"]);
    // The same in Databricks' syntax, beside the latest version in one query.
    assert_eq!(ids(&client, "t VERSION AS OF 1").await, ["1", "2"]);
    assert_eq!(
        ids(&client, &format!("t TIMESTAMP AS OF '{}'", committed[0])).await,
        ["1", "2", "3"]
    );
    assert_eq!(
        quiver_rows(
            &client,
            "SELECT old.id, t.id FROM t VERSION AS OF 2 AS old FULL JOIN t ON old.id = t.id \
             ORDER BY old.id"
        )
        .await,
        ["1|NULL", "2|NULL", "3|NULL", "NULL|10"]
    );
    let refused = client
        .sql("SELECT * FROM t VERSION AS OF 9")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("no version 9; its latest is 3"),
        "{refused}"
    );
    let refused = client
        .sql("INSERT INTO t_v1 VALUES (4, 'd')")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("pinned"), "{refused}");
    let refused = client
        .sql(&format!(
            "CREATE EXTERNAL TABLE t_future STORED AS DELTA LOCATION '{location}' \
             OPTIONS ('version' '9')"
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("no version 9"), "{refused}");

    // Appends from four clients at once all land, each as its own version.
    let mut appends = Vec::new();
    for writer in 0..4 {
        let client = cluster.client().await.unwrap();
        appends.push(tokio::spawn(async move {
            client
                .sql(&format!(
                    "INSERT INTO t SELECT value, 'w' FROM generate_series({0}, {0} + 99)",
                    100 * (writer + 1)
                ))
                .await
        }));
    }
    for append in appends {
        append
            .await
            .unwrap()
            .expect("concurrent appends all commit");
    }
    assert_eq!(
        quiver_rows(&client, "SELECT count(*), count(DISTINCT id) FROM t").await,
        ["401|401"]
    );
    assert_eq!(
        quiver_rows(&client, "SELECT max(version) FROM delta_history('t')").await,
        ["7"]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tables_using_features_not_implemented_are_refused_by_name() {
    let (cluster, client) = start_tpch_cluster().await;
    let out = tempfile::tempdir().unwrap();
    let schema = r#"{\"type\":\"struct\",\"fields\":[{\"name\":\"id\",\"type\":\"long\",\"nullable\":true,\"metadata\":{}}]}"#;
    let write_log = |name: &str, protocol: &str, configuration: &str, add: &str| {
        let log = out.path().join(name).join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        let metadata = format!(
            r#"{{"metaData":{{"id":"x","format":{{"provider":"parquet","options":{{}}}},"schemaString":"{schema}","partitionColumns":[],"configuration":{configuration},"createdTime":0}}}}"#
        );
        std::fs::write(
            log.join("00000000000000000000.json"),
            format!("{protocol}\n{metadata}\n{add}\n"),
        )
        .unwrap();
    };
    write_log(
        "dv",
        r#"{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["deletionVectors"],"writerFeatures":["deletionVectors"]}}"#,
        "{}",
        r#"{"add":{"path":"a.parquet","partitionValues":{},"size":1,"modificationTime":0,"dataChange":true,"deletionVector":{"storageType":"u","pathOrInlineDv":"ab","offset":1,"sizeInBytes":36,"cardinality":2}}}"#,
    );
    write_log(
        "mapped",
        r#"{"protocol":{"minReaderVersion":2,"minWriterVersion":5}}"#,
        r#"{"delta.columnMapping.mode":"name"}"#,
        "",
    );
    write_log(
        "variant",
        r#"{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["variantType"],"writerFeatures":["variantType"]}}"#,
        "{}",
        "",
    );
    for (name, named) in [
        ("dv", "deletion vectors"),
        ("mapped", "column mapping"),
        ("variant", "'variantType'"),
    ] {
        let error = client
            .sql(&format!(
                "CREATE EXTERNAL TABLE {name} STORED AS DELTA LOCATION '{}/{name}/'",
                out.path().display()
            ))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(named), "{name}: {error}");
    }
    let empty = out.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let error = client
        .sql(&format!(
            "CREATE EXTERNAL TABLE e STORED AS DELTA LOCATION '{}'",
            empty.display()
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("no Delta table"), "{error}");
    // The cluster still serves.
    assert_eq!(
        quiver_rows(&client, "SELECT count(*) FROM nation").await,
        ["25"]
    );
    cluster.shutdown().await;
}

/// Versions in a table's log directory.
fn versions(table: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_executor_killed_during_an_insert_leaves_exactly_the_committed_versions() {
    // Both executors have registered before the write starts.
    let (mut processes, client) = scheduler_and_two_executors().await;
    let out = tempfile::tempdir().unwrap();
    let table = out.path().join("big");
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE big (l_orderkey BIGINT, l_comment VARCHAR, copy BIGINT) \
             STORED AS DELTA LOCATION '{}/'",
            table.display()
        ))
        .await
        .unwrap();
    let rows = "SELECT l.l_orderkey, l.l_comment, g.value AS copy FROM lineitem l \
                CROSS JOIN generate_series(1, 40) g";
    let mut victim = processes.0.remove(1);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        let _ = victim.kill();
        let _ = victim.wait();
    });
    let started = Instant::now();
    let inserted = client.sql(&format!("INSERT INTO big {rows}")).await;
    let took = started.elapsed();
    killer.join().unwrap();
    assert!(
        took > Duration::from_millis(400),
        "the executor must die while the write runs (it took {took:?})"
    );
    let oracle = datafusion_oracle().await;
    let check = "SELECT count(*), sum(l_orderkey * copy), max(l_comment) FROM";
    let now = quiver_rows(&client, &format!("{check} big")).await;
    match inserted {
        // Retried on the survivor: version 1 holds every row once.
        Ok(_) => {
            assert_eq!(versions(&table).len(), 2, "{:?}", versions(&table));
            assert_eq!(
                now,
                datafusion_rows(&oracle, &format!("{check} ({rows})")).await,
                "every row once"
            );
        }
        // Or the INSERT failed, and nothing of it is visible.
        Err(error) => {
            assert_eq!(versions(&table).len(), 1, "{error}");
            assert_eq!(now, ["0||"], "{error}");
        }
    }
}
