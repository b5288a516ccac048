//! Hostile statements: each one is answered, or refused with an error that names the limit
//! and its setting. No process dies, and another client's queries are unharmed meanwhile.

use quiver::ClientError;
use quiver::StandaloneConfig;
use quiver::compare::canonical_rows;
use quiver_core::config::StatementLimits;

use crate::common::{
    datafusion_batches, start_cluster_with, start_tpch_cluster_with, test_cluster_config,
    tpch_query,
};

fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (tonic::Code, String) {
    match result {
        Err(ClientError::Query { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn terms(term: &str, count: usize, joiner: &str) -> String {
    vec![term; count].join(joiner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_statements_never_take_the_cluster_down() {
    let limits = StatementLimits {
        max_sql_bytes: 256 << 10,
        ..StatementLimits::default()
    };
    let (cluster, client) = start_tpch_cluster_with(StandaloneConfig {
        limits: limits.clone(),
        ..test_cluster_config()
    })
    .await;

    // Another client's real work runs all along, and must come out right.
    let bystander = cluster.client().await.unwrap();
    let heavy = [tpch_query(18), tpch_query(21), tpch_query(9)];
    let mut expected = Vec::new();
    for sql in &heavy {
        expected.push(canonical_rows(&datafusion_batches(sql).await, true).unwrap());
    }
    let work = tokio::spawn(async move {
        let mut answers = Vec::new();
        for round in 0..3 {
            for sql in &heavy {
                let batches = bystander
                    .sql(sql)
                    .await
                    .unwrap_or_else(|e| panic!("bystander query failed in round {round}: {e}"));
                answers.push(canonical_rows(&batches, true).unwrap());
            }
        }
        answers
    });

    // 4 KB of SQL that used to overflow the scheduler's stack: answered.
    let sum = client
        .sql(&format!("SELECT {} AS total", terms("1", 2000, "+")))
        .await
        .expect("a 2,000-term sum is answered");
    assert_eq!(canonical_rows(&sum, false).unwrap(), vec!["2000"]);
    let conjunction = client
        .sql(&format!(
            "SELECT 'kept' AS kept WHERE {}",
            terms("1=1", 1500, " AND ")
        ))
        .await
        .expect("a 1,500-term conjunction is answered");
    assert_eq!(canonical_rows(&conjunction, false).unwrap(), vec!["kept"]);

    // Past the limits: refused, naming the limit and its setting.
    let too_deep = format!(
        "SELECT {}",
        terms("1", limits.max_expression_depth + 10, "+")
    );
    let (code, message) = refusal(client.sql(&too_deep).await);
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("--max-expression-depth"), "{message}");

    let union = terms("SELECT 1 AS x", limits.max_plan_nodes, " UNION ALL ");
    let (code, message) = refusal(client.sql(&union).await);
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("--max-plan-nodes"), "{message}");

    let long_text = format!("SELECT 1 /* {} */", "x".repeat(limits.max_sql_bytes));
    let (code, message) = refusal(client.sql(&long_text).await);
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("--max-sql-bytes"), "{message}");

    // A deep expression over a column cannot be folded away: it must travel to the
    // executors. It is answered right or refused as the user's error, never a bug.
    let deep_column = format!(
        "SELECT sum({}) AS s FROM nation",
        terms("n_nationkey", 300, " + ")
    );
    match client.sql(&deep_column).await {
        Ok(batches) => {
            let expected =
                datafusion_batches("SELECT sum(n_nationkey) * 300 AS s FROM nation").await;
            assert_eq!(
                canonical_rows(&batches, false).unwrap(),
                canonical_rows(&expected, false).unwrap()
            );
        }
        Err(ClientError::Query { code, message }) => {
            assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
            assert!(message.contains("simplify"), "{message}");
        }
        Err(other) => panic!("unexpected failure: {other}"),
    }

    // A wide UNION ALL within the limit is planned and answered.
    let branches = 500;
    let wide = client
        .sql(&format!(
            "SELECT count(*) AS n FROM ({})",
            terms("SELECT 1 AS x", branches, " UNION ALL ")
        ))
        .await
        .expect("a 500-branch UNION ALL is answered");
    assert_eq!(
        canonical_rows(&wide, false).unwrap(),
        vec![branches.to_string()]
    );

    let answers = work.await.expect("the bystander's queries finish");
    for (index, answer) in answers.iter().enumerate() {
        assert_eq!(
            answer,
            &expected[index % expected.len()],
            "bystander answer {index} differs from DataFusion's"
        );
    }
    let alive = client.sql("SELECT 41 + 1").await.expect("still serving");
    assert_eq!(canonical_rows(&alive, false).unwrap(), vec!["42"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runaway_query_fails_at_its_byte_limit_and_others_run() {
    let limits = StatementLimits {
        max_query_bytes: 4 << 20,
        ..StatementLimits::default()
    };
    let (cluster, client) = start_tpch_cluster_with(StandaloneConfig {
        limits,
        ..test_cluster_config()
    })
    .await;
    let (code, message) = refusal(client.sql("SELECT * FROM lineitem CROSS JOIN nation").await);
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("--max-query-bytes"), "{message}");
    // Each task stops at what is left of the limit, not after its whole output (about
    // 75 MB here): the bytes held when the query failed stay near the limit.
    let produced: u64 = message
        .split(" is ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in: {message}"));
    assert!(
        produced < 4 * (4 << 20),
        "{produced} bytes produced: {message}"
    );
    let sql = tpch_query(6);
    let expected = canonical_rows(&datafusion_batches(&sql).await, true).unwrap();
    let batches = client.sql(&sql).await.expect("a small query still runs");
    assert_eq!(canonical_rows(&batches, true).unwrap(), expected);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tables_over_more_files_than_the_listing_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write_files = |range: std::ops::Range<usize>| {
        for i in range {
            std::fs::write(dir.path().join(format!("part-{i}.csv")), "a\n1\n").unwrap();
        }
    };
    write_files(0..12);
    let limits = StatementLimits {
        max_table_files: 10,
        ..StatementLimits::default()
    };
    let (cluster, client) = start_cluster_with(StandaloneConfig {
        limits,
        ..test_cluster_config()
    })
    .await;
    let create = format!(
        "CREATE EXTERNAL TABLE many (a INT) STORED AS CSV LOCATION '{}/' \
         OPTIONS ('format.has_header' 'true')",
        dir.path().display()
    );
    let (code, message) = refusal(client.sql(&create).await);
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("--max-table-files"), "{message}");

    // Under the limit the table is made; once its directory grows past it, scans of it
    // are refused, and the cluster still answers.
    for i in 9..12 {
        std::fs::remove_file(dir.path().join(format!("part-{i}.csv"))).unwrap();
    }
    client
        .sql(&create)
        .await
        .expect("nine files are under the limit");
    write_files(9..14);
    let (code, message) = refusal(client.sql("SELECT sum(a) FROM many").await);
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("--max-table-files"), "{message}");
    for i in 9..14 {
        std::fs::remove_file(dir.path().join(format!("part-{i}.csv"))).unwrap();
    }
    let rows = canonical_rows(
        &client.sql("SELECT count(*) FROM many").await.unwrap(),
        false,
    );
    assert_eq!(rows.unwrap(), vec!["9"]);
    // A file added later counts from the next query: listings are not cached.
    write_files(20..21);
    let rows = canonical_rows(
        &client.sql("SELECT count(*) FROM many").await.unwrap(),
        false,
    );
    assert_eq!(rows.unwrap(), vec!["10"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sort_past_the_spill_limit_fails_naming_it() {
    let (cluster, client) = start_tpch_cluster_with(StandaloneConfig {
        // Ample for everything but the sort, even with every slot's tasks at once.
        memory_limit: Some(256 << 20),
        max_spill_bytes: 256 << 10,
        ..test_cluster_config()
    })
    .await;
    client
        .sql("SET datafusion.execution.sort_spill_reservation_bytes = 1048576")
        .await
        .unwrap();
    // About 7.5 million rows to sort: far more than a task's share of the memory, which
    // is ample for everything else (the sort spills long before memory runs out).
    let (code, message) = refusal(
        client
            .sql(
                "SELECT l_comment, n_name, r_name FROM lineitem, nation, region \
                 ORDER BY l_comment, n_name, r_name",
            )
            .await,
    );
    assert_eq!(code, tonic::Code::Aborted, "{message}");
    assert!(message.contains("--max-spill-bytes"), "{message}");
    assert!(!message.contains("gave up after"), "not retried: {message}");
    let rows = canonical_rows(
        &client.sql("SELECT count(*) FROM nation").await.unwrap(),
        false,
    );
    assert_eq!(rows.unwrap(), vec!["25"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_past_its_time_limit_is_cancelled_everywhere() {
    let limits = StatementLimits {
        statement_timeout_secs: 2,
        ..StatementLimits::default()
    };
    let (cluster, client) = start_tpch_cluster_with(StandaloneConfig {
        limits,
        ..test_cluster_config()
    })
    .await;
    let started = std::time::Instant::now();
    let long = "SELECT count(*) FROM lineitem a, lineitem b WHERE a.l_orderkey + b.l_orderkey > 5";
    let (code, message) = refusal(client.sql(long).await);
    assert_eq!(code, tonic::Code::DeadlineExceeded, "{message}");
    assert!(message.contains("--statement-timeout-secs"), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // The limit holds while a result streams too: this join's rows are written by its
    // last stage, which the client reads while it runs (and which finds none).
    let started = std::time::Instant::now();
    let streamed = "SELECT a.l_orderkey FROM lineitem a, lineitem b                     WHERE a.l_orderkey + b.l_orderkey < 0";
    let (code, message) = refusal(client.sql(streamed).await);
    assert_eq!(code, tonic::Code::DeadlineExceeded, "{message}");
    assert!(message.contains("--statement-timeout-secs"), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Its tasks stop on the executors too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let running = canonical_rows(
            &client
                .sql("SELECT sum(running_tasks) FROM system.executors")
                .await
                .unwrap(),
            false,
        )
        .unwrap();
        if running == vec!["0"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tasks still running: {running:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let rows = canonical_rows(
        &client.sql("SELECT count(*) FROM region").await.unwrap(),
        false,
    );
    assert_eq!(rows.unwrap(), vec!["5"]);
    cluster.shutdown().await;
}
