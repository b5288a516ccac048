//! Access control against real processes: a scheduler with a users file and an
//! administrator, an executor, and three users. Owners, grants to users, roles and
//! PUBLIC, views with their definer's rights, location grants, metadata that shows only
//! what a user may see, and grants that outlive a `kill -9` of the scheduler.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use arrow_flight::sql::CommandGetTables;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use quiver::compare::canonical_rows;
use quiver::{ClientError, QuiverClient};
use tonic::transport::Endpoint;

use crate::catalog_persistence::spawn_scheduler_on;
use crate::common::{datafusion_batches, session_settings, tpch_table_statements};
use crate::processes::{
    Processes, connect_with_deadline, free_port, spawn_executor, write_users_file,
};

const USERS: [(&str, &str); 3] = [("root", "rooted"), ("alice", "alpha"), ("bob", "bravo")];

fn spawn_governed_scheduler(port: u16, state_dir: &Path, users: &Path) -> Child {
    let flags = ["--admin", "root", "--users-file"].map(OsStr::new);
    spawn_scheduler_on(
        port,
        state_dir,
        &[flags[0], flags[1], flags[2], users.as_os_str()],
    )
}

async fn connect_as(url: &str, user: &str) -> QuiverClient {
    let password = USERS.iter().find(|(name, _)| *name == user).unwrap().1;
    let client = connect_with_deadline(url, Duration::from_secs(60)).await;
    client.login(user, password).await.expect("login");
    for statement in session_settings() {
        client.sql(&statement).await.expect(&statement);
    }
    client
}

async fn rows(client: &QuiverClient, sql: &str) -> Vec<String> {
    let batches = client
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    canonical_rows(&batches, true).unwrap()
}

/// The gRPC code `sql` fails with, and its message.
async fn refusal(client: &QuiverClient, sql: &str) -> (tonic::Code, String) {
    match client.sql(sql).await {
        Err(ClientError::Query { code, message }) => (code, message),
        other => panic!("{sql} was not refused: {other:?}"),
    }
}

/// The tables of schema `public` that Flight SQL `GetTables` shows `user`.
async fn tables_listed_for(url: &str, user: &str) -> Vec<String> {
    let password = USERS.iter().find(|(name, _)| *name == user).unwrap().1;
    let channel = Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut sql = FlightSqlServiceClient::new(channel);
    sql.handshake(user, password).await.unwrap();
    let info = sql
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".to_string()),
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: false,
        })
        .await
        .unwrap();
    let mut batches: Vec<RecordBatch> = Vec::new();
    for endpoint in info.endpoint {
        let stream = sql.do_get(endpoint.ticket.unwrap()).await.unwrap();
        batches.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    canonical_rows(&batches, true)
        .unwrap()
        .into_iter()
        .map(|row| row.split('|').nth(2).unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grants_decide_what_each_user_reads_writes_sees_and_creates() {
    let dir = tempfile::tempdir().unwrap();
    let users = write_users_file(dir.path(), &USERS);
    let state = dir.path().join("state");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut processes = Processes(vec![
        spawn_governed_scheduler(port, &state, &users),
        spawn_executor(&url),
    ]);
    let root = connect_as(&url, "root").await;
    for statement in tpch_table_statements() {
        root.sql(&statement).await.expect(&statement);
    }
    let alice = connect_as(&url, "alice").await;
    let bob = connect_as(&url, "bob").await;

    // Nothing is readable, or even visible, before it is granted.
    let (code, message) = refusal(&alice, "SELECT count(*) FROM nation").await;
    assert_eq!(code, tonic::Code::NotFound, "{message}");
    assert!(tables_listed_for(&url, "alice").await.is_empty());

    // Alice may read nation once granted, and owns the table she makes from it.
    root.sql("GRANT SELECT ON TABLE nation TO alice")
        .await
        .unwrap();
    let mine = "SELECT n_nationkey, n_name FROM nation WHERE n_regionkey = 1";
    alice
        .sql(&format!("CREATE TABLE mine AS {mine}"))
        .await
        .expect("a user creates a table in the warehouse");
    let expected = canonical_rows(&datafusion_batches(mine).await, true).unwrap();
    assert_eq!(rows(&alice, "SELECT * FROM mine").await, expected);
    assert_eq!(tables_listed_for(&url, "alice").await, ["mine", "nation"]);

    // Bob sees none of it, through SQL or metadata, until alice grants it.
    let (code, message) = refusal(&bob, "SELECT * FROM mine").await;
    assert_eq!(code, tonic::Code::NotFound, "{message}");
    assert!(tables_listed_for(&url, "bob").await.is_empty());
    let catalog_for_bob = rows(
        &bob,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .await;
    assert!(catalog_for_bob.is_empty(), "{catalog_for_bob:?}");
    let (code, _) = refusal(&bob, "GRANT SELECT ON mine TO bob").await;
    assert_eq!(code, tonic::Code::NotFound);
    // A hidden table keeps its name and its files.
    let (_, message) = refusal(&bob, "CREATE TABLE mine AS SELECT 1 AS mine").await;
    assert!(message.contains("already exists"), "{message}");
    assert_eq!(rows(&alice, "SELECT * FROM mine").await, expected);
    alice.sql("GRANT SELECT ON mine TO bob").await.unwrap();
    assert_eq!(rows(&bob, "SELECT * FROM mine").await, expected);
    assert_eq!(tables_listed_for(&url, "bob").await, ["mine"]);

    // Reading is not changing, and only the owner drops or grants.
    for (statement, says) in [
        (
            "INSERT INTO mine VALUES (99, 'ATLANTIS')",
            "INSERT privilege",
        ),
        ("DROP TABLE mine", "only the owner"),
        ("GRANT SELECT ON mine TO carol", "only the owner"),
        ("CREATE ROLE sneaky", "administrators"),
        ("SELECT count(*) FROM mine, nation", ""),
    ] {
        let (code, message) = refusal(&bob, statement).await;
        let expected_code = match says {
            "" => tonic::Code::NotFound,
            _ => tonic::Code::PermissionDenied,
        };
        assert_eq!(code, expected_code, "{statement}: {message}");
        assert!(message.contains(says), "{statement}: {message}");
    }
    alice
        .sql("INSERT INTO mine VALUES (99, 'ATLANTIS')")
        .await
        .expect("the owner writes");

    // Delta's table functions and time travel read the table they name: SELECT is needed
    // there as on the table itself.
    alice
        .sql("CREATE TABLE ledger STORED AS DELTA AS SELECT n_nationkey FROM nation")
        .await
        .expect("a user creates a Delta table in the warehouse");
    alice.sql("GRANT INSERT ON ledger TO bob").await.unwrap();
    bob.sql("INSERT INTO ledger VALUES (100)")
        .await
        .expect("bob may append");
    for statement in [
        "SELECT * FROM ledger",
        "SELECT * FROM ledger VERSION AS OF 0",
        "SELECT * FROM delta_history('ledger')",
    ] {
        let (code, message) = refusal(&bob, statement).await;
        assert_eq!(
            code,
            tonic::Code::PermissionDenied,
            "{statement}: {message}"
        );
        assert!(message.contains("SELECT"), "{statement}: {message}");
    }
    let nations = canonical_rows(
        &datafusion_batches("SELECT count(*) FROM nation").await,
        true,
    )
    .unwrap();
    assert_eq!(
        rows(&alice, "SELECT count(*) FROM ledger VERSION AS OF 0").await,
        nations
    );

    // A view reads its tables with its definer's rights.
    root.sql("CREATE VIEW region_names AS SELECT r_name FROM region")
        .await
        .unwrap();
    root.sql("GRANT SELECT ON region_names TO bob")
        .await
        .unwrap();
    let expected_regions =
        canonical_rows(&datafusion_batches("SELECT r_name FROM region").await, true).unwrap();
    assert_eq!(
        rows(&bob, "SELECT * FROM region_names").await,
        expected_regions
    );
    let (code, _) = refusal(&bob, "SELECT * FROM region").await;
    assert_eq!(code, tonic::Code::NotFound);

    // A view does not keep a table readable after its owner loses it.
    alice
        .sql("CREATE VIEW alices_nations AS SELECT n_name FROM nation")
        .await
        .unwrap();
    alice
        .sql("GRANT SELECT ON alices_nations TO bob")
        .await
        .unwrap();
    assert_eq!(
        rows(&bob, "SELECT count(*) FROM alices_nations").await,
        ["25"]
    );
    root.sql("REVOKE SELECT ON TABLE nation FROM alice")
        .await
        .unwrap();
    for (user, client) in [("alice", &alice), ("bob", &bob)] {
        let (code, message) = refusal(client, "SELECT count(*) FROM alices_nations").await;
        assert_eq!(code, tonic::Code::PermissionDenied, "{user}: {message}");
        assert!(message.contains("no longer holds"), "{message}");
    }
    root.sql("GRANT SELECT ON TABLE nation TO alice")
        .await
        .unwrap();

    // Roles: a schema grant to a role reaches its members, and leaves with the role.
    root.sql("CREATE ROLE analysts").await.unwrap();
    root.sql("GRANT SELECT ON SCHEMA public TO ROLE analysts")
        .await
        .unwrap();
    root.sql("GRANT ROLE analysts TO bob").await.unwrap();
    assert_eq!(rows(&bob, "SELECT count(*) FROM region").await, ["5"]);
    root.sql("REVOKE ROLE analysts FROM bob").await.unwrap();
    let (code, _) = refusal(&bob, "SELECT count(*) FROM region").await;
    assert_eq!(code, tonic::Code::NotFound);

    // Locations: a user creates tables only under a prefix granted to them.
    let (code, message) = refusal(
        &bob,
        "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
    )
    .await;
    assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
    assert!(message.contains("/etc/passwd"), "{message}");
    let bobs = dir.path().join("bobs");
    std::fs::create_dir_all(&bobs).unwrap();
    std::fs::write(bobs.join("notes.csv"), "note\nfirst\nsecond\n").unwrap();
    root.sql(&format!("GRANT LOCATION '{}' TO bob", bobs.display()))
        .await
        .unwrap();
    bob.sql(&format!(
        "CREATE EXTERNAL TABLE notes (note VARCHAR) STORED AS CSV LOCATION '{}/' \
         OPTIONS ('format.has_header' 'true')",
        bobs.display()
    ))
    .await
    .expect("a granted location");
    assert_eq!(
        rows(&bob, "SELECT note FROM notes").await,
        ["first", "second"]
    );
    for outside in [
        format!("{}/../state/", bobs.display()),
        format!("{}-other/", bobs.display()),
    ] {
        let (code, message) = refusal(
            &bob,
            &format!(
                "CREATE EXTERNAL TABLE escape (line VARCHAR) STORED AS CSV LOCATION '{outside}'"
            ),
        )
        .await;
        assert_eq!(code, tonic::Code::PermissionDenied, "{outside}: {message}");
    }
    let (code, _) = refusal(&bob, "COPY (SELECT 1) TO '/tmp/quiver-bob-copy.csv'").await;
    assert_eq!(code, tonic::Code::PermissionDenied);

    // Grants and owners outlive the scheduler, and so does the history.
    let endless =
        "SELECT count(*) FROM lineitem a, lineitem b WHERE a.l_orderkey + b.l_orderkey > 5";
    let mut running = root.submit(endless).await.unwrap();
    // Killed once its tasks run: by then its arrival is long in the history's store (a
    // writer thread saves it; killed at once, the record could still be on its way).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running.progress().is_none_or(|p| p.tasks_running == 0)
        && std::time::Instant::now() < deadline
    {
        running = root.poll(&running).await.unwrap();
    }
    let _ = processes.0[0].kill();
    let _ = processes.0[0].wait();
    processes.0[0] = spawn_governed_scheduler(port, &state, &users);
    let alice = connect_as(&url, "alice").await;
    let bob = connect_as(&url, "bob").await;
    let root = connect_as(&url, "root").await;
    let history = |statement: &str| {
        format!(
            "SELECT \"user\", state FROM system.queries WHERE sql = '{}'",
            statement.replace('\'', "''")
        )
    };
    assert_eq!(
        rows(&root, &history("CREATE ROLE analysts")).await,
        ["root|succeeded"]
    );
    assert_eq!(rows(&root, &history(endless)).await, ["root|interrupted"]);
    assert!(rows(&bob, &history(endless)).await.is_empty());
    let mut with_atlantis = expected.clone();
    with_atlantis.push("99|ATLANTIS".to_string());
    with_atlantis.sort();
    assert_eq!(rows(&bob, "SELECT * FROM mine").await, with_atlantis);
    assert_eq!(
        rows(&bob, "SELECT note FROM notes").await,
        ["first", "second"]
    );
    let (code, _) = refusal(&bob, "SELECT count(*) FROM region").await;
    assert_eq!(code, tonic::Code::NotFound);

    // A dropped table takes its grants along: a new one of that name starts with none.
    alice.sql("REVOKE SELECT ON mine FROM bob").await.unwrap();
    let (code, _) = refusal(&bob, "SELECT * FROM mine").await;
    assert_eq!(code, tonic::Code::NotFound);
    alice.sql("GRANT SELECT ON mine TO bob").await.unwrap();
    alice.sql("DROP TABLE mine").await.expect("the owner drops");
    alice
        .sql("CREATE TABLE mine AS SELECT 1 AS secret")
        .await
        .unwrap();
    let (code, _) = refusal(&bob, "SELECT * FROM mine").await;
    assert_eq!(code, tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_set_for_roles_and_users_hold_their_statements() {
    let dir = tempfile::tempdir().unwrap();
    let users = write_users_file(dir.path(), &USERS);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _processes = Processes(vec![
        spawn_governed_scheduler(port, &dir.path().join("state"), &users),
        spawn_executor(&url),
    ]);
    let root = connect_as(&url, "root").await;
    for statement in tpch_table_statements() {
        root.sql(&statement).await.expect(&statement);
    }
    for statement in [
        "GRANT SELECT ON SCHEMA public TO PUBLIC",
        "CREATE ROLE small",
        "ALTER ROLE small SET max_running_statements = 1",
        "ALTER ROLE small SET max_queued_statements = 1",
        "GRANT ROLE small TO bob",
        "ALTER USER alice SET statement_timeout_secs = 1",
    ] {
        root.sql(statement).await.expect(statement);
    }
    let (code, message) = refusal(
        &connect_as(&url, "bob").await,
        "ALTER USER bob SET max_running_statements = 0",
    )
    .await;
    assert_eq!(code, tonic::Code::PermissionDenied, "{message}");

    // Bob's role runs one statement at a time, with one more in line.
    let bob = connect_as(&url, "bob").await;
    // Billions of row pairs: minutes of work, far longer than this test.
    let endless =
        "SELECT count(*) FROM lineitem a, lineitem b WHERE a.l_orderkey + b.l_orderkey > 5";
    let first = bob.submit(endless).await.unwrap();
    let small = "SELECT count(*) FROM nation";
    let second = bob.submit(small).await.unwrap();
    let waiting = bob.poll(&second).await.unwrap();
    assert_eq!(waiting.progress().unwrap().queue_position, 1);
    let (code, message) = refusal(&bob, small).await;
    assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
    // Others are not held: root has no such limit.
    assert_eq!(rows(&root, small).await, ["25"]);
    // The history shows the one in line as queued, not started.
    let bobs = "SELECT state, started IS NULL FROM system.queries \
                WHERE \"user\" = 'bob' AND sql = 'SELECT count(*) FROM nation'";
    assert_eq!(rows(&root, bobs).await, ["failed|true", "queued|true"]);
    bob.cancel(&first).await.unwrap();
    let _ = bob.cancel(&second).await;

    // A join's build side cannot spill: over the role's memory cap it fails, naming it;
    // the same query runs for a user without the cap.
    root.sql("ALTER ROLE small SET max_query_memory_bytes = 100000")
        .await
        .unwrap();
    let join = "SELECT count(*) FROM orders JOIN lineitem ON o_orderkey = l_orderkey \
                WHERE o_comment LIKE '%e%'";
    let (code, message) = refusal(&bob, join).await;
    assert!(
        message.contains("max_query_memory_bytes"),
        "{code:?} {message}"
    );
    let expected = canonical_rows(&datafusion_batches(join).await, true).unwrap();
    assert_eq!(rows(&root, join).await, expected);

    // Alice's statements stop after one second, everywhere.
    let alice = connect_as(&url, "alice").await;
    let (code, message) = refusal(&alice, endless).await;
    assert_eq!(code, tonic::Code::DeadlineExceeded, "{message}");
    assert!(message.contains("1 s"), "{message}");
}
