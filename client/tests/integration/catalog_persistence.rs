//! The catalog survives the scheduler: killed with `kill -9` and started again on the same
//! state directory, it has every table and view back (external, partitioned, CSV,
//! managed, made by CREATE TABLE AS, in a schema), with the same answers.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use quiver::QuiverClient;
use quiver::compare::canonical_rows;

use crate::common::{datafusion_oracle, session_settings, tpch_table_statements};
use crate::processes::{Processes, connect_with_deadline, free_port, spawn_executor};

/// `quiver scheduler` on 127.0.0.1:`port` keeping its state in `state_dir`, plus `extra`.
pub(crate) fn spawn_scheduler_on(
    port: u16,
    state_dir: &std::path::Path,
    extra: &[&std::ffi::OsStr],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["scheduler", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--target-partitions", "4", "--state-dir"])
        .arg(state_dir)
        .args(extra)
        .env_remove("QUIVER_EPHEMERAL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("scheduler starts")
}

/// The statements that define the catalog, and the queries whose answers must survive.
fn definitions(data: &std::path::Path) -> Vec<String> {
    let mut statements: Vec<String> = tpch_table_statements();
    statements.extend([
        format!(
            "CREATE EXTERNAL TABLE sales STORED AS PARQUET PARTITIONED BY (region) \
             LOCATION '{}/sales/'",
            data.display()
        ),
        format!(
            "CREATE EXTERNAL TABLE nation_csv STORED AS CSV LOCATION '{}/nation.csv' \
             OPTIONS ('format.has_header' 'true')",
            data.display()
        ),
        "CREATE VIEW big_nations AS SELECT n_name, n_regionkey FROM nation WHERE n_nationkey > 10"
            .to_string(),
        "CREATE VIEW big_nation_count AS SELECT count(*) AS n FROM big_nations".to_string(),
        "CREATE TABLE scores (player VARCHAR, points INT)".to_string(),
        "INSERT INTO scores VALUES ('ada', 3), ('bob', 5), ('cy', 8)".to_string(),
        "CREATE TABLE top_nations AS SELECT n_name, n_nationkey FROM nation \
         WHERE n_nationkey < 7"
            .to_string(),
        "CREATE SCHEMA archive".to_string(),
        format!(
            "CREATE EXTERNAL TABLE archive.old_regions STORED AS PARQUET LOCATION '{}/'",
            crate::common::tpch_data_dir().join("region").display()
        ),
    ]);
    statements
}

const QUERIES: [&str; 8] = [
    "SELECT player, points FROM scores ORDER BY player",
    "SELECT * FROM top_nations ORDER BY n_nationkey",
    "SELECT region, sum(amount) AS total FROM sales GROUP BY region ORDER BY region",
    "SELECT count(*) AS n, sum(n_regionkey) AS s FROM nation_csv",
    "SELECT * FROM big_nations ORDER BY n_name",
    "SELECT n FROM big_nation_count",
    "SELECT r_name FROM archive.old_regions ORDER BY r_name",
    "SELECT count(*) FROM lineitem JOIN orders ON l_orderkey = o_orderkey",
];

/// Writes the partitioned and CSV tables' files with single-node DataFusion.
async fn write_data(data: &std::path::Path) {
    let oracle = datafusion_oracle().await;
    for statement in [
        format!(
            "COPY (SELECT CASE WHEN n_regionkey < 2 THEN 'west' ELSE 'east' END AS region, \
             n_nationkey * 10 AS amount FROM nation) TO '{}/sales/' STORED AS PARQUET \
             PARTITIONED BY (region)",
            data.display()
        ),
        format!(
            "COPY (SELECT * FROM nation) TO '{}/nation.csv' STORED AS CSV \
             OPTIONS ('format.has_header' 'true')",
            data.display()
        ),
    ] {
        oracle
            .sql(&statement)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
    }
}

async fn answers(client: &QuiverClient) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for sql in QUERIES {
        let batches = client
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        all.push(canonical_rows(&batches, true).unwrap());
    }
    all
}

fn kill_9(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_killed_and_restarted_on_its_state_dir_has_its_catalog_back() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write_data(data.path()).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut processes = Processes(vec![spawn_scheduler_on(port, state.path(), &[])]);
    processes.0.push(spawn_executor(&url));
    let client = connect_with_deadline(&url, Duration::from_secs(30)).await;
    for statement in session_settings().iter().chain(&definitions(data.path())) {
        client.sql(statement).await.expect(statement);
    }
    let before = answers(&client).await;
    // The answers are DataFusion's over the same files.
    let oracle = datafusion_oracle().await;
    for statement in &definitions(data.path())[tpch_table_statements().len()..] {
        oracle
            .sql(statement)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
    }
    for (sql, answer) in QUERIES.iter().zip(&before) {
        let expected = oracle.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(answer, &canonical_rows(&expected, true).unwrap(), "{sql}");
    }
    let mode = std::fs::metadata(state.path().join("catalog.sqlite"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600,
        "the catalog file holds credentials: owner only"
    );

    kill_9(&mut processes.0[0]);
    processes.0[0] = spawn_scheduler_on(port, state.path(), &[]);
    let client = connect_with_deadline(&url, Duration::from_secs(30)).await;
    for setting in session_settings() {
        client.sql(&setting).await.unwrap();
    }
    assert_eq!(answers(&client).await, before, "answers after a kill -9");

    // Dropped definitions stay dropped; re-running the set-up script is harmless.
    client.sql("DROP VIEW big_nation_count").await.unwrap();
    client.sql("DROP TABLE scores").await.unwrap();
    let warehouse = state.path().join("warehouse/public");
    assert!(
        !warehouse.join("scores").exists(),
        "a dropped managed table's files are deleted"
    );
    assert!(warehouse.join("top_nations").exists());
    client.sql("DROP SCHEMA archive CASCADE").await.unwrap();
    for statement in tpch_table_statements() {
        let again = statement.replace("EXTERNAL TABLE", "EXTERNAL TABLE IF NOT EXISTS");
        client.sql(&again).await.expect(&again);
    }
    kill_9(&mut processes.0[0]);
    processes.0[0] = spawn_scheduler_on(port, state.path(), &[]);
    let client = connect_with_deadline(&url, Duration::from_secs(30)).await;
    let error = client
        .sql("SELECT * FROM big_nation_count")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("big_nation_count"), "{error}");
    let error = client.sql("SELECT * FROM scores").await.unwrap_err();
    assert!(error.to_string().contains("scores"), "{error}");
    let error = client
        .sql("SELECT * FROM archive.old_regions")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("old_regions"), "{error}");
    let tables = client.sql("SHOW TABLES").await.unwrap();
    let listed = canonical_rows(&tables, true).unwrap().join("\n");
    assert!(
        listed.contains("big_nations") && listed.contains("lineitem"),
        "{listed}"
    );
}
