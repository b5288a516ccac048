//! A scheduler and two executors as separate OS processes, driven by the real binary.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quiver::QuiverClient;
use quiver::compare::canonical_rows;

use crate::common::{
    datafusion_batches, datafusion_oracle, session_settings, tpch_data_dir, tpch_query,
    tpch_table_statements,
};

/// Kills the processes it holds when dropped, so a failing test leaves nothing behind.
pub(crate) struct Processes(pub(crate) Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn quiver_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
    command
        .env("QUIVER_EPHEMERAL", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects once the scheduler is up, and registers the TPC-H tables.
pub(crate) async fn connect_with_tpch(url: &str) -> QuiverClient {
    let client = connect_with_deadline(url, Duration::from_secs(30)).await;
    for statement in session_settings().iter().chain(&tpch_table_statements()) {
        client.sql(statement).await.expect(statement);
    }
    client
}

/// A scheduler and two executor processes that have both registered, and a client
/// with the TPC-H tables: the executors are `processes.0[1]` and `[2]`.
pub(crate) async fn scheduler_and_two_executors() -> (Processes, QuiverClient) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut processes = Processes(vec![spawn_scheduler(port, &[])]);
    for _ in 0..2 {
        processes.0.push(spawn_executor(&url));
    }
    let client = connect_with_tpch(&url).await;
    loop {
        let batches = client
            .sql("SELECT count(*) FROM system.executors")
            .await
            .expect("system.executors answers");
        if canonical_rows(&batches, true).unwrap() == ["2"] {
            return (processes, client);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `quiver scheduler` on 127.0.0.1:`port` with 4 partitions per stage, plus `extra` flags.
pub(crate) fn spawn_scheduler(port: u16, extra: &[&str]) -> Child {
    let bind = format!("127.0.0.1:{port}");
    quiver_binary()
        .args(["scheduler", "--bind", &bind, "--target-partitions", "4"])
        .args(extra)
        .spawn()
        .expect("scheduler starts")
}

pub(crate) fn spawn_executor(url: &str) -> Child {
    quiver_binary()
        .args(["executor", "--scheduler", url, "--slots", "2"])
        .spawn()
        .expect("executor starts")
}

/// A users file under `dir` with `users` (name, password), written by `quiver passwd`.
pub(crate) fn write_users_file(
    dir: &std::path::Path,
    users: &[(&str, &str)],
) -> std::path::PathBuf {
    let path = dir.join("users");
    for (user, password) in users {
        let status = quiver_binary()
            .args(["passwd", "--users-file"])
            .arg(&path)
            .arg(user)
            .env("QUIVER_PASSWORD", password)
            .status()
            .unwrap();
        assert!(status.success(), "quiver passwd {user}");
    }
    path
}

pub(crate) async fn connect_with_deadline(url: &str, deadline: Duration) -> QuiverClient {
    let started = Instant::now();
    loop {
        match QuiverClient::connect(url).await {
            Ok(client) => return client,
            Err(error) if started.elapsed() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("scheduler never came up: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_and_executors_as_separate_processes_run_a_multi_stage_query() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut processes = Processes(Vec::new());
    processes.0.push(spawn_scheduler(port, &[]));
    for _ in 0..2 {
        processes.0.push(spawn_executor(&url));
    }
    let client = connect_with_tpch(&url).await;

    // A join and an aggregation: at least three stages exchanging over Flight.
    let sql = "SELECT n_name, count(*) AS suppliers, sum(s_acctbal) AS balance \
               FROM supplier JOIN nation ON s_nationkey = n_nationkey \
               GROUP BY n_name ORDER BY n_name";
    let expected = datafusion_batches(sql).await;
    let actual = client.sql(sql).await.expect("query runs across processes");
    assert_eq!(
        canonical_rows(&actual, false).unwrap(),
        canonical_rows(&expected, false).unwrap()
    );
    assert_eq!(canonical_rows(&actual, false).unwrap().len(), 25);

    // The CLI against the same cluster prints the same numbers and exits 0.
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args([
            "--connect",
            &url,
            "-c",
            "SELECT count(*) AS n FROM supplier",
            "--format",
            "csv",
        ])
        .output()
        .expect("cli runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let supplier_rows = datafusion_batches("SELECT count(*) AS n FROM supplier").await;
    let expected_count = canonical_rows(&supplier_rows, false).unwrap()[0].clone();
    assert_eq!(stdout, format!("n\n{expected_count}\n"));

    // A failing statement makes the CLI exit non-zero with the cause on stderr.
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["--connect", &url, "-c", "SELECT * FROM missing_table"])
        .output()
        .expect("cli runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing_table"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_executors_are_replaced_and_a_cluster_without_any_fails_clearly() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut processes = Processes(Vec::new());
    processes
        .0
        .push(spawn_scheduler(port, &["--no-executor-grace-secs", "2"]));
    for _ in 0..3 {
        processes.0.push(spawn_executor(&url));
    }
    let client = connect_with_tpch(&url).await;
    let sql = tpch_query(5);
    let expected = datafusion_batches(&sql).await;
    let expected = canonical_rows(&expected, false).unwrap();
    // Wait until all three executors have registered and taken work.
    let started = Instant::now();
    loop {
        let actual = client.sql(&sql).await.expect("healthy cluster answers");
        assert_eq!(canonical_rows(&actual, false).unwrap(), expected);
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kill -9 one executor: its connection to the scheduler closes with it, and the
    // scheduler drops it at once — well before a heartbeat could be missed (5 s).
    let executors = || async {
        let batches = client
            .sql("SELECT count(*) FROM system.executors")
            .await
            .expect("system.executors answers");
        canonical_rows(&batches, false).unwrap()[0].clone()
    };
    assert_eq!(executors().await, "3");
    processes.0[1].kill().unwrap();
    processes.0[1].wait().unwrap();
    let killed_at = Instant::now();
    while executors().await != "2" {
        assert!(
            killed_at.elapsed() < Duration::from_secs(2),
            "a killed executor must be noticed when its connection drops"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("killed executor dropped after {:?}", killed_at.elapsed());
    for _ in 0..3 {
        let actual = client
            .sql(&sql)
            .await
            .expect("the query survives a dead executor");
        assert_eq!(canonical_rows(&actual, false).unwrap(), expected);
    }

    // With every executor gone the query fails within the grace period, naming the cause.
    for index in 2..4 {
        processes.0[index].kill().unwrap();
        processes.0[index].wait().unwrap();
    }
    let started = Instant::now();
    let error = client.sql(&sql).await.expect_err("no executor is left");
    assert!(started.elapsed() < Duration::from_secs(10), "failed fast");
    let message = error.to_string();
    assert!(message.contains("no executors available"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_an_executor_and_the_cluster_carries_on() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut processes = Processes(Vec::new());
    processes.0.push(spawn_scheduler(port, &[]));
    processes.0.push(spawn_executor(&url));
    let mut leaving = quiver_binary()
        .args(["executor", "--scheduler", &url, "--slots", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("executor starts");
    let client = connect_with_tpch(&url).await;
    let sql = tpch_query(3);
    let expected = datafusion_batches(&sql).await;
    let expected = canonical_rows(&expected, false).unwrap();
    assert_eq!(
        canonical_rows(&client.sql(&sql).await.unwrap(), false).unwrap(),
        expected
    );

    let status = Command::new("kill")
        .args(["-TERM", &leaving.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        loop {
            if let Some(status) = leaving.try_wait().unwrap() {
                break (status, leaving);
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = leaving.kill();
                panic!("the executor did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    let (status, mut leaving) = output;
    assert!(
        status.success(),
        "a drained executor exits cleanly: {status:?}"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(leaving.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("drained and stopped"), "{stderr}");

    // The scheduler knows it left: queries keep their answers, without launch failures.
    for _ in 0..3 {
        assert_eq!(
            canonical_rows(&client.sql(&sql).await.unwrap(), false).unwrap(),
            expected
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executors_rejoin_a_restarted_scheduler() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let bind = format!("127.0.0.1:{port}");
    let scheduler = |processes: &mut Processes| {
        processes.0.push(
            quiver_binary()
                .args(["scheduler", "--bind", &bind, "--target-partitions", "4"])
                .stderr(Stdio::piped())
                .spawn()
                .expect("scheduler starts"),
        );
    };
    let mut processes = Processes(Vec::new());
    scheduler(&mut processes);
    for _ in 0..2 {
        processes.0.push(spawn_executor(&url));
    }
    let client = connect_with_deadline(&url, Duration::from_secs(30)).await;
    client
        .sql("SELECT 1")
        .await
        .expect("first scheduler serves");

    // SIGTERM: the scheduler drains and exits cleanly.
    let mut first = processes.0.remove(0);
    let status = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let status = first.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(first.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "{exit:?}");
    assert!(exit.1.contains("drained and stopped"), "{}", exit.1);

    // A new scheduler on the same address: the executors register again by themselves.
    scheduler(&mut processes);
    let client = connect_with_tpch(&url).await;
    let sql = tpch_query(3);
    let expected = datafusion_batches(&sql).await;
    let actual = client.sql(&sql).await.expect("executors rejoined");
    assert_eq!(
        canonical_rows(&actual, false).unwrap(),
        canonical_rows(&expected, false).unwrap()
    );
}

/// How many executors the scheduler knows, and how many tasks they said they were
/// running at their last heartbeat.
async fn executors_and_running_tasks(client: &QuiverClient) -> (u64, u64) {
    let rows = client
        .sql("SELECT count(*), coalesce(sum(reported_tasks), 0) FROM system.executors")
        .await
        .expect("system.executors answers");
    let row = canonical_rows(&rows, false).unwrap()[0].clone();
    let (executors, running) = row.split_once('|').expect("two columns");
    (executors.parse().unwrap(), running.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_scheduler_fails_its_queries_and_its_orphaned_tasks_stop() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut processes = Processes(vec![spawn_scheduler(port, &[]), spawn_executor(&url)]);
    let client = connect_with_tpch(&url).await;

    // A join that computes for minutes on both slots.
    let heavy = client.clone();
    let query = tokio::spawn(async move {
        heavy
            .sql(
                "SELECT count(*) FROM lineitem a, lineitem b \
                 WHERE a.l_comment LIKE concat('%', b.l_shipmode, '%')",
            )
            .await
    });
    // Its scan stage takes milliseconds; tasks still running a second later are the join.
    let deadline = Instant::now() + Duration::from_secs(20);
    while executors_and_running_tasks(&client).await.1 == 0 {
        assert!(Instant::now() < deadline, "the join never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while executors_and_running_tasks(&client).await.1 < 2 {
        assert!(
            Instant::now() < deadline,
            "the join should be computing on both slots"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The scheduler dies: its client gets an error, not a hang.
    processes.0[0].kill().unwrap();
    processes.0[0].wait().unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the client of a dead scheduler must not hang")
        .unwrap();
    assert!(
        outcome.is_err(),
        "a query whose scheduler died cannot succeed"
    );

    // A new scheduler knows nothing of that query: the executor rejoins and stops the
    // tasks nobody waits for any more, freeing its slots.
    processes.0.push(spawn_scheduler(port, &[]));
    let client = connect_with_tpch(&url).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (executors, running) = executors_and_running_tasks(&client).await;
        if executors == 1 && running == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{running} orphaned tasks still run on {executors} rejoined executors"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sql = tpch_query(6);
    let expected = datafusion_batches(&sql).await;
    let actual = client
        .sql(&sql)
        .await
        .expect("the rejoined executor serves");
    assert_eq!(
        canonical_rows(&actual, false).unwrap(),
        canonical_rows(&expected, false).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_concurrent_clients_while_an_executor_is_killed_and_restarted() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let work = tempfile::tempdir().unwrap();
    let executor = |index: usize| {
        let dir = work.path().join(format!("executor-{index}"));
        quiver_binary()
            .args(["executor", "--scheduler", &url, "--slots", "2"])
            .args(["--work-dir", dir.to_str().unwrap()])
            // Spill everything past 1 MiB, so the soak also exercises shuffle files.
            .args(["--shuffle-memory-budget", "1048576"])
            .spawn()
            .expect("executor starts")
    };
    let mut processes = Processes(Vec::new());
    processes
        .0
        .push(spawn_scheduler(port, &["--result-retention-secs", "2"]));
    for index in 0..3 {
        processes.0.push(executor(index));
    }
    let setup = connect_with_tpch(&url).await;
    let oracle = datafusion_oracle().await;
    let mut expected = std::collections::HashMap::new();
    for number in [1, 3, 6, 12] {
        let batches = oracle
            .sql(&tpch_query(number))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        expected.insert(number, canonical_rows(&batches, false).unwrap());
    }
    let expected = std::sync::Arc::new(expected);

    // Four clients, bounded: 12 queries each.
    let mut clients = Vec::new();
    for client_index in 0..4usize {
        let url = url.clone();
        let expected = std::sync::Arc::clone(&expected);
        clients.push(tokio::spawn(async move {
            let client = QuiverClient::connect(&url).await.unwrap();
            let (mut ok, mut errors) = (0, Vec::new());
            for round in 0..12usize {
                let number = [1, 3, 6, 12][(client_index + round) % 4];
                match client.sql(&tpch_query(number)).await {
                    Ok(batches) => {
                        assert_eq!(
                            canonical_rows(&batches, false).unwrap(),
                            expected[&number],
                            "q{number}: a wrong answer is never acceptable"
                        );
                        ok += 1;
                    }
                    Err(error) => errors.push(error.to_string()),
                }
            }
            (ok, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    processes.0[1].kill().unwrap();
    processes.0[1].wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    processes.0.push(executor(3));

    let (mut ok, mut errors) = (0, Vec::new());
    for client in clients {
        let (client_ok, client_errors) = client.await.unwrap();
        ok += client_ok;
        errors.extend(client_errors);
    }
    // Retries and recomputation absorb the kill while a query runs. The one failure left
    // is a finished result that died with its executor before the client read it: the
    // client gets an error naming the executor it could not read from.
    for error in &errors {
        assert!(
            error.contains("reading results from"),
            "unexpected failure: {error}"
        );
    }
    assert!(ok >= 44, "{ok} of 48 succeeded; errors: {errors:?}");
    // The cluster still serves afterwards.
    let after = setup
        .sql(&tpch_query(6))
        .await
        .expect("cluster serves after the soak");
    assert_eq!(canonical_rows(&after, false).unwrap(), expected[&6]);

    // Afterwards nothing is left on any executor: no task, no operator memory, no shuffle
    // output. Every query's result is kept for the retention time (2 s here) in case it
    // is read again, this check's own included, so the check waits out the retention
    // and the next heartbeat between polls.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let held = setup
            .sql(
                "SELECT sum(running_tasks) AS tasks, sum(memory_reserved) AS reserved, \
                 sum(shuffle_memory) AS shuffle FROM system.executors",
            )
            .await
            .expect("system.executors answers");
        let held = canonical_rows(&held, false).unwrap()[0].clone();
        if held == "0|0|0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after the soak (tasks|reserved bytes|shuffle bytes): {held}"
        );
    }
    // The survivors' work directories hold no shuffle file.
    let survivors = [1, 2, 3].map(|index| work.path().join(format!("executor-{index}")));
    for dir in &survivors {
        assert_eq!(arrow_files_under(dir), Vec::<String>::new(), "in {dir:?}");
    }
    // The killed executor could not clean up (its directory and lock file are there,
    // with whatever it held); the next one started on the same base deletes them.
    let killed = work.path().join("executor-0");
    let left: Vec<std::path::PathBuf> = std::fs::read_dir(&killed)
        .expect("the killed executor's work directory")
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(
        left.iter().any(|path| path.is_dir()),
        "a killed executor leaves its directory: {left:?}"
    );
    processes.0.push(executor(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while left.iter().any(|path| path.exists()) {
        assert!(
            Instant::now() < deadline,
            "a new executor on the same work directory left the killed one's files: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Shuffle files (`*.arrow`) under `dir`, at any depth.
fn arrow_files_under(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                arrow_files_under(&path)
            } else if path.extension().is_some_and(|e| e == "arrow") {
                vec![path.display().to_string()]
            } else {
                Vec::new()
            }
        })
        .collect()
}

#[test]
fn a_scheduler_or_executor_reachable_from_other_machines_needs_a_cluster_secret() {
    for args in [
        vec!["scheduler", "--bind", "0.0.0.0:0"],
        vec![
            "executor",
            "--bind",
            "0.0.0.0:0",
            "--scheduler",
            "http://127.0.0.1:9",
        ],
    ] {
        let output = quiver_binary()
            .args(&args)
            .env_remove("QUIVER_CLUSTER_SECRET")
            .stderr(Stdio::piped())
            .output()
            .expect("quiver runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{args:?} started without a secret"
        );
        assert!(
            stderr.contains("needs a cluster secret") && stderr.contains("QUIVER_CLUSTER_SECRET"),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_log_has_every_login_and_statement() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log_arg = log.display().to_string();
    let _processes = Processes(vec![
        spawn_scheduler(
            port,
            &["--user", "alice:wonderland", "--audit-log", &log_arg],
        ),
        spawn_executor(&url),
    ]);
    let client = connect_with_deadline(&url, Duration::from_secs(30)).await;
    assert!(client.login("alice", "not her password").await.is_err());
    client.login("alice", "wonderland").await.unwrap();
    let statements = [
        "CREATE VIEW audited AS SELECT 1 AS x",
        "SELECT x FROM audited",
        "SELECT * FROM no_such_table",
        "CREATE ROLE auditors",
    ];
    for statement in statements {
        let _ = client.sql(statement).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("{\"time_ms\":") && l.ends_with('}')),
        "{text}"
    );
    let failed_login = lines
        .iter()
        .find(|l| l.contains("\"event\":\"login_failed\""))
        .unwrap_or_else(|| panic!("no failed login in:\n{text}"));
    assert!(
        failed_login.contains("\"user\":\"alice\""),
        "{failed_login}"
    );
    assert!(
        failed_login.contains("\"client\":\"127.0.0.1:"),
        "{failed_login}"
    );
    assert!(
        !text.contains("not her password") && !text.contains("wonderland"),
        "{text}"
    );
    assert!(text.contains("\"event\":\"login\""), "{text}");
    for statement in statements {
        let line = lines
            .iter()
            .filter(|l| l.contains("\"event\":\"statement\""))
            .find(|l| l.contains(&format!("\"statement\":\"{statement}\"")))
            .unwrap_or_else(|| panic!("no line for {statement}:\n{text}"));
        assert!(line.contains("\"user\":\"alice\""), "{line}");
        let failed = statement.contains("no_such_table");
        let outcome = if failed { "failed" } else { "succeeded" };
        assert!(
            line.contains(&format!("\"outcome\":\"{outcome}\"")),
            "{line}"
        );
    }
    // What each statement was, and which tables it read and wrote.
    for (statement, facts) in [
        (
            statements[0],
            "\"kind\":\"ddl\",\"tables_read\":[],\"tables_written\":[\"datafusion.public.audited\"]",
        ),
        (
            statements[1],
            "\"kind\":\"query\",\"tables_read\":[\"datafusion.public.audited\"],\"tables_written\":[]",
        ),
        (
            statements[3],
            "\"kind\":\"privilege\",\"tables_read\":[],\"tables_written\":[]",
        ),
    ] {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("\"statement\":\"{statement}\"")))
            .unwrap();
        assert!(line.contains(facts), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_file_logins_and_an_administrator_stops_another_users_query() {
    let dir = tempfile::tempdir().unwrap();
    let users = write_users_file(
        dir.path(),
        &[("alice", "alpha"), ("bob", "bravo"), ("root", "rooted")],
    );
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        text.contains("alice:$argon2id$") && !text.contains("alpha"),
        "{text}"
    );

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let users_arg = users.display().to_string();
    let _processes = Processes(vec![
        spawn_scheduler(port, &["--users-file", &users_arg, "--admin", "root"]),
        spawn_executor(&url),
    ]);
    let connect_as = |user: &'static str, password: &'static str| {
        let url = url.clone();
        async move {
            let client = connect_with_deadline(&url, Duration::from_secs(30)).await;
            client.login(user, password).await.unwrap();
            for statement in session_settings() {
                client.sql(&statement).await.expect(&statement);
            }
            client
        }
    };
    // The administrator defines the tables and lets every user read them.
    let root = connect_as("root", "rooted").await;
    for statement in tpch_table_statements() {
        root.sql(&statement).await.expect(&statement);
    }
    root.sql("GRANT SELECT ON SCHEMA public TO PUBLIC")
        .await
        .unwrap();
    let alice = connect_as("alice", "alpha").await;
    let bob = connect_as("bob", "bravo").await;
    let nobody = connect_with_deadline(&url, Duration::from_secs(5)).await;
    assert!(nobody.login("alice", "bravo").await.is_err());

    let long = "SELECT count(*) FROM lineitem a, lineitem b WHERE a.l_orderkey + b.l_orderkey > 5";
    let running = alice.submit(long).await.unwrap();
    match bob.cancel(&running).await {
        Err(quiver::ClientError::Query { code, .. }) => assert_eq!(code, tonic::Code::NotFound),
        other => panic!("bob cancelled alice's query: {other:?}"),
    }
    root.cancel(&running)
        .await
        .expect("an administrator stops any query");
    let outcome = alice.poll(&running).await;
    assert!(
        outcome.is_err() || outcome.is_ok_and(|r| r.is_done()),
        "alice's query should be stopped"
    );
    // The history: the administrator sees alice's query, bob does not.
    let history = "SELECT \"user\" FROM system.queries WHERE sql LIKE '%lineitem a, lineitem b%' \
                   AND sql NOT LIKE '%system.queries%'";
    let rows = canonical_rows(&root.sql(history).await.unwrap(), false).unwrap();
    assert_eq!(rows, vec!["alice"]);
    let rows = canonical_rows(&bob.sql(history).await.unwrap(), false).unwrap();
    assert!(rows.is_empty(), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_stage_width_stages_are_as_wide_as_the_executors_slots() {
    // No --target-partitions: a session opened once an executor with three slots has
    // registered plans stages three tasks wide (more than this machine's cores).
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let bind = format!("127.0.0.1:{port}");
    let _processes = Processes(vec![
        quiver_binary()
            .args(["scheduler", "--bind", &bind])
            .spawn()
            .expect("scheduler starts"),
        quiver_binary()
            .args(["executor", "--scheduler", &url, "--slots", "3"])
            .spawn()
            .expect("executor starts"),
    ]);
    let watcher = connect_with_deadline(&url, Duration::from_secs(30)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while canonical_rows(
        &watcher
            .sql("SELECT count(*) FROM system.executors")
            .await
            .unwrap(),
        false,
    )
    .unwrap()
        != ["1"]
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the executor registers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = connect_with_deadline(&url, Duration::from_secs(5)).await;
    let nation = tpch_data_dir().join("nation");
    client
        .sql(&format!(
            "CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION '{}/'",
            nation.display()
        ))
        .await
        .unwrap();
    let explain = |client: QuiverClient| async move {
        let sql = "EXPLAIN SELECT n_regionkey, count(*) FROM nation GROUP BY n_regionkey";
        canonical_rows(&client.sql(sql).await.unwrap(), false)
            .unwrap()
            .join("\n")
    };
    let plan = explain(client.clone()).await;
    assert!(plan.contains("Stage 1 (3 tasks"), "{plan}");
    // The session's own setting wins.
    client
        .sql("SET datafusion.execution.target_partitions = 1")
        .await
        .unwrap();
    let plan = explain(client).await;
    assert!(!plan.contains("(3 tasks"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stacked_broadcast_joins_across_processes_answer_like_datafusion() {
    // Five broadcast joins in one task, each build side read whole from both executors'
    // shuffle stores (over Flight from the other process): DataFusion starts fetching
    // every build side when the task's plan is executed, then reads them one by one.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _processes = Processes(vec![
        spawn_scheduler(port, &[]),
        spawn_executor(&url),
        spawn_executor(&url),
    ]);
    let client = connect_with_tpch(&url).await;
    let oracle = datafusion_oracle().await;
    // Written order is join order: each join's build side is one projection of lineitem,
    // its probe side the joins nested under it.
    let setting = "SET datafusion.optimizer.join_reordering = false";
    client.sql(setting).await.expect(setting);
    oracle.sql(setting).await.unwrap().collect().await.unwrap();
    let joins = 5;
    let mut sql = "lineitem".to_string();
    for n in 1..=joins {
        sql = format!(
            "(SELECT l_orderkey AS k{n}, l_linenumber AS n{n}, l_comment AS c{n} FROM lineitem) \
             JOIN ({sql}) ON k{n} = l_orderkey AND n{n} = l_linenumber"
        );
    }
    let lengths: Vec<String> = (1..=joins).map(|n| format!("length(c{n})")).collect();
    let sql = format!("SELECT count(*), sum({}) FROM {sql}", lengths.join(" + "));
    let plan = canonical_rows(&client.sql(&format!("EXPLAIN {sql}")).await.unwrap(), false)
        .unwrap()
        .join("\n");
    assert!(plan.matches("mode=CollectLeft").count() >= joins, "{plan}");
    let expected = oracle.sql(&sql).await.unwrap().collect().await.unwrap();
    let actual = tokio::time::timeout(Duration::from_secs(60), client.sql(&sql))
        .await
        .expect("the joins finish")
        .expect("the query answers");
    assert_eq!(
        canonical_rows(&actual, false).unwrap(),
        canonical_rows(&expected, false).unwrap()
    );
}
