//! The Flight SQL front door through arrow-flight's own `FlightSqlServiceClient`: every
//! command, authentication, signed tickets, prepared statements, metadata, polling and
//! cancellation, and TLS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandStatementQuery, ProstMessageExt, SqlInfo,
};
use arrow_flight::{FlightClient, FlightInfo, Ticket};
use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use prost::Message;
use quiver::compare::canonical_rows;
use quiver::{ConnectOptions, QuiverClient, StandaloneConfig};
use quiver_core::config::{ExecutorConfig, SchedulerConfig};
use quiver_core::security::{ClusterSecret, TlsIdentity};
use quiver_executor::Executor;
use quiver_scheduler::Scheduler;
use tonic::transport::{Channel, Endpoint};

use crate::common::{
    datafusion_batches, datafusion_oracle, start_cluster_with,
    start_tpch_cluster_with_a_stalled_task, stored_outputs, test_cluster_config, tpch_query,
    tpch_table_statements,
};

const USER: &str = "alice";
const PASSWORD: &str = "wonderland";

async fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .expect("scheduler reachable")
}

/// Reads every endpoint of `info`: from the executor in its location, or from the
/// scheduler when it has none (with the session's bearer token).
async fn read_info(sql: &FlightSqlServiceClient<Channel>, info: &FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in &info.endpoint {
        let mut client = match endpoint.location.first() {
            Some(location) => {
                FlightClient::new(channel(&location.uri.replace("grpc+tcp://", "http://")).await)
            }
            None => FlightClient::new_from_inner(sql.inner().clone()),
        };
        let ticket = endpoint.ticket.clone().expect("endpoint has a ticket");
        if let Some(token) = sql.token() {
            client
                .add_header("authorization", &format!("Bearer {token}"))
                .unwrap();
        }
        let stream = client.do_get(ticket).await.expect("do_get starts");
        batches.extend(stream.try_collect::<Vec<_>>().await.expect("do_get reads"));
    }
    batches
}

/// Whether an arrow-flight error carries this gRPC status code.
fn has_code(error: &dyn std::fmt::Display, code: tonic::Code) -> bool {
    error.to_string().contains(code.description())
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

async fn secured_cluster() -> (quiver::StandaloneCluster, QuiverClient) {
    let config = StandaloneConfig {
        users: vec![format!("{USER}:{PASSWORD}").parse().unwrap()],
        ..test_cluster_config()
    };
    let (cluster, _) = start_cluster_with(config).await;
    let client = QuiverClient::connect_with(
        &cluster.url(),
        ConnectOptions {
            user: Some(USER.to_string()),
            password: Some(PASSWORD.to_string()),
            tls_ca_pem: None,
        },
    )
    .await
    .expect("login works");
    for statement in tpch_table_statements() {
        client.sql(&statement).await.expect(&statement);
    }
    (cluster, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authentication_and_signed_tickets() {
    let (cluster, _) = secured_cluster().await;
    let scheduler = channel(&cluster.url()).await;
    let mut sql = FlightSqlServiceClient::new(scheduler.clone());

    // Nothing works before logging in, and a wrong password is refused.
    let refused = sql.execute("SELECT 1".to_string(), None).await.unwrap_err();
    assert!(
        has_code(&refused, tonic::Code::Unauthenticated),
        "{refused}"
    );
    let refused = sql.get_catalogs().await.unwrap_err();
    assert!(
        refused.to_string().contains("requires a user name"),
        "{refused}"
    );
    let wrong = sql.handshake(USER, "not the password").await.unwrap_err();
    assert!(
        wrong.to_string().contains("invalid user name or password"),
        "{wrong}"
    );
    let mut forged = FlightSqlServiceClient::new(scheduler.clone());
    forged.set_token("made-up-token".to_string());
    let refused = forged
        .execute("SELECT 1".to_string(), None)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("unknown or expired"),
        "{refused}"
    );

    // The handshake returns a bearer token that later calls carry.
    sql.handshake(USER, PASSWORD).await.expect("login");
    assert!(sql.token().is_some());
    let info = sql
        .execute(
            "SELECT count(*) AS n FROM nation WHERE n_regionkey >= 0".to_string(),
            None,
        )
        .await
        .expect("query runs");
    let batches = read_info(&sql, &info).await;
    assert_eq!(canonical_rows(&batches, false).unwrap(), vec!["25"]);

    // A query reading only what its plan carries runs on the scheduler: one endpoint
    // without a location, read there, once.
    let constant = sql
        .execute("SELECT 41 + 1 AS answer".to_string(), None)
        .await
        .expect("query runs");
    assert_eq!(constant.endpoint.len(), 1);
    assert!(constant.endpoint[0].location.is_empty(), "{constant:?}");
    let batches = read_info(&sql, &constant).await;
    assert_eq!(canonical_rows(&batches, false).unwrap(), vec!["42"]);
    let mut again = FlightClient::new_from_inner(sql.inner().clone());
    again
        .add_header("authorization", &format!("Bearer {}", sql.token().unwrap()))
        .unwrap();
    let ticket = constant.endpoint[0].ticket.clone().unwrap();
    let second_read = async {
        let stream = again.do_get(ticket).await?;
        stream.try_collect::<Vec<_>>().await
    };
    let error = second_read.await.expect_err("a held result is read once");
    assert!(has_code(&error, tonic::Code::NotFound), "{error}");
    assert!(error.to_string().contains("read already"), "{error}");

    // An altered ticket and a guessed (unsigned) one read nothing.
    let endpoint = &info.endpoint[0];
    let location = endpoint.location[0].uri.replace("grpc+tcp://", "http://");
    let mut altered = endpoint.ticket.clone().unwrap().ticket.to_vec();
    altered[2] ^= 0x01;
    let mut executor = FlightClient::new(channel(&location).await);
    let error = executor
        .do_get(Ticket::new(altered))
        .await
        .expect_err("altered ticket refused");
    assert!(has_code(&error, tonic::Code::PermissionDenied), "{error}");
    let guessed = quiver_core::proto::ShuffleTicket {
        job_id: "job".into(),
        stage_id: 0,
        map_partition: 0,
        output_partition: 0,
        expires_at_ms: 0,
    };
    let error = executor
        .do_get(Ticket::new(prost::Message::encode_to_vec(&guessed)))
        .await
        .expect_err("guessed ticket refused");
    assert!(error.to_string().contains("signature"), "{error}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_flight_sql_command() {
    let (cluster, _) = secured_cluster().await;
    let scheduler = channel(&cluster.url()).await;
    let mut sql = FlightSqlServiceClient::new(scheduler.clone());
    sql.handshake(USER, PASSWORD).await.expect("login");
    let oracle = datafusion_oracle().await;

    // A TPC-H query, checked against single-node DataFusion.
    let q3 = tpch_query(3);
    let info = sql.execute(q3.clone(), None).await.expect("q3 runs");
    let expected = oracle.sql(&q3).await.unwrap().collect().await.unwrap();
    assert_eq!(
        canonical_rows(&read_info(&sql, &info).await, true).unwrap(),
        canonical_rows(&expected, true).unwrap()
    );

    // An empty result keeps its schema.
    let info = sql
        .execute("SELECT * FROM nation WHERE false".to_string(), None)
        .await
        .unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    assert_eq!(schema.fields().len(), 4);
    assert_eq!(rows(&read_info(&sql, &info).await), 0);

    // Prepared statements with `$1` and `?` placeholders, parameters bound with DoPut.
    for text in [
        "SELECT n_name FROM nation WHERE n_nationkey = $1",
        "SELECT n_name FROM nation WHERE n_nationkey = ?",
    ] {
        let mut prepared = sql.prepare(text.to_string(), None).await.expect(text);
        assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 1);
        assert_eq!(prepared.dataset_schema().unwrap().field(0).name(), "n_name");
        let parameter_schema =
            Arc::new(Schema::new(vec![Field::new("p1", DataType::Int64, false)]));
        for key in [7_i64, 13] {
            let parameters = RecordBatch::try_new(
                Arc::clone(&parameter_schema),
                vec![Arc::new(Int64Array::from(vec![key]))],
            )
            .unwrap();
            prepared.set_parameters(parameters).unwrap();
            let info = prepared.execute().await.expect("prepared query runs");
            let expected = oracle
                .sql(&format!(
                    "SELECT n_name FROM nation WHERE n_nationkey = {key}"
                ))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            assert_eq!(
                canonical_rows(&read_info(&sql, &info).await, false).unwrap(),
                canonical_rows(&expected, false).unwrap()
            );
        }
        prepared.close().await.expect("close");
    }

    // Updates: DDL and DML through CommandStatementUpdate and prepared updates.
    assert_eq!(
        sql.execute_update(
            "CREATE TABLE scratch (id BIGINT, label VARCHAR)".to_string(),
            None
        )
        .await
        .expect("create table"),
        0
    );
    let inserted = sql
        .execute_update(
            "INSERT INTO scratch VALUES (1, 'one'), (2, 'two')".to_string(),
            None,
        )
        .await
        .expect("insert");
    assert_eq!(inserted, 2);
    let mut insert = sql
        .prepare("INSERT INTO scratch VALUES ($1, $2)".to_string(), None)
        .await
        .expect("prepare insert");
    let parameters = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![3, 4, 5])),
            Arc::new(StringArray::from(vec!["three", "four", "five"])),
        ],
    )
    .unwrap();
    insert.set_parameters(parameters).unwrap();
    assert_eq!(insert.execute_update().await.expect("prepared insert"), 3);
    let info = sql
        .execute("SELECT count(*) FROM scratch".to_string(), None)
        .await
        .unwrap();
    assert_eq!(
        canonical_rows(&read_info(&sql, &info).await, false).unwrap(),
        vec!["5"]
    );
    // A prepared query runs with the plan it was prepared with while nothing it was
    // planned against changed, and is planned again after: a replaced view's rows.
    sql.execute_update("CREATE VIEW answer AS SELECT 1 AS x".to_string(), None)
        .await
        .unwrap();
    let mut prepared = sql
        .prepare("SELECT x FROM answer".to_string(), None)
        .await
        .unwrap();
    for _ in 0..2 {
        let info = prepared.execute().await.unwrap();
        assert_eq!(
            canonical_rows(&read_info(&sql, &info).await, false).unwrap(),
            ["1"]
        );
    }
    sql.execute_update(
        "CREATE OR REPLACE VIEW answer AS SELECT 2 AS x".to_string(),
        None,
    )
    .await
    .unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(
        canonical_rows(&read_info(&sql, &info).await, false).unwrap(),
        ["2"]
    );
    prepared.close().await.unwrap();
    sql.execute_update(
        "CREATE VIEW big_nations AS SELECT n_name FROM nation WHERE n_nationkey > 20".to_string(),
        None,
    )
    .await
    .expect("create view");
    let refused = sql
        .execute_update("SELECT 1".to_string(), None)
        .await
        .unwrap_err();
    assert!(
        has_code(&refused, tonic::Code::InvalidArgument),
        "{refused}"
    );

    // Metadata.
    let info = sql.get_catalogs().await.unwrap();
    let catalogs = read_info(&sql, &info).await;
    assert!(
        canonical_rows(&catalogs, false)
            .unwrap()
            .contains(&"datafusion".to_string())
    );
    let info = sql
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("pub%".to_string()),
        })
        .await
        .unwrap();
    let schemas = canonical_rows(&read_info(&sql, &info).await, false).unwrap();
    assert_eq!(schemas, vec!["datafusion|public"]);
    let info = sql
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".to_string()),
            table_name_filter_pattern: Some("%nation%".to_string()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = read_info(&sql, &info).await;
    let names: Vec<String> = canonical_rows(&tables, false)
        .unwrap()
        .into_iter()
        .map(|row| row.split('|').take(4).collect::<Vec<_>>().join("|"))
        .collect();
    assert_eq!(
        names,
        vec![
            "datafusion|public|big_nations|VIEW",
            "datafusion|public|nation|BASE TABLE"
        ]
    );
    let info = sql
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec!["VIEW".to_string()],
            include_schema: false,
        })
        .await
        .unwrap();
    let views = canonical_rows(&read_info(&sql, &info).await, false).unwrap();
    assert!(views.iter().any(|v| v.contains("big_nations")), "{views:?}");
    assert!(views.iter().all(|v| v.ends_with("VIEW")), "{views:?}");
    let info = sql.get_table_types().await.unwrap();
    let types = canonical_rows(&read_info(&sql, &info).await, false).unwrap();
    assert_eq!(types, vec!["BASE TABLE", "LOCAL TEMPORARY", "VIEW"]);
    let info = sql
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::SqlIdentifierQuoteChar,
        ])
        .await
        .unwrap();
    let facts = canonical_rows(&read_info(&sql, &info).await, false).unwrap();
    assert!(facts.iter().any(|f| f.contains("Quiver")), "{facts:?}");
    assert!(facts.iter().any(|f| f.contains('"')), "{facts:?}");
    let info = sql
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let types = read_info(&sql, &info).await;
    assert!(rows(&types) >= 10);
    let table = |name: &str| {
        (
            Some("datafusion".to_string()),
            Some("public".to_string()),
            name.to_string(),
        )
    };
    let (catalog, db_schema, name) = table("nation");
    let keys = [
        sql.get_primary_keys(CommandGetPrimaryKeys {
            catalog: catalog.clone(),
            db_schema: db_schema.clone(),
            table: name.clone(),
        })
        .await
        .unwrap(),
        sql.get_exported_keys(CommandGetExportedKeys {
            catalog: catalog.clone(),
            db_schema: db_schema.clone(),
            table: name.clone(),
        })
        .await
        .unwrap(),
        sql.get_imported_keys(CommandGetImportedKeys {
            catalog,
            db_schema,
            table: name,
        })
        .await
        .unwrap(),
    ];
    for info in keys {
        assert!(info.clone().try_decode_schema().unwrap().fields().len() >= 6);
        assert_eq!(rows(&read_info(&sql, &info).await), 0);
    }

    // GetSchema answers with a query's schema without running it.
    let command = CommandStatementQuery {
        query: "SELECT n_name, n_nationkey FROM nation".to_string(),
        transaction_id: None,
    };
    let mut request = tonic::Request::new(arrow_flight::FlightDescriptor::new_cmd(
        command.as_any().encode_to_vec(),
    ));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", sql.token().unwrap()).parse().unwrap(),
    );
    let result = sql
        .inner()
        .clone()
        .get_schema(request)
        .await
        .expect("get_schema")
        .into_inner();
    let schema = Schema::try_from(&result).expect("schema decodes");
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    assert_eq!(names, ["n_name", "n_nationkey"]);

    // Errors carry proper codes.
    let bad = sql.execute("SELEC 1".to_string(), None).await.unwrap_err();
    assert!(has_code(&bad, tonic::Code::InvalidArgument), "{bad}");
    let missing = sql
        .execute("SELECT * FROM no_such_table".to_string(), None)
        .await
        .unwrap_err();
    assert!(has_code(&missing, tonic::Code::NotFound), "{missing}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poll_reports_progress_and_cancel_frees_everything() {
    let (cluster, client) = secured_cluster().await;
    // The report of a finished query is checked: a streamed result is answered before
    // its last stage has finished.
    client
        .sql("SET quiver.stream_results = false")
        .await
        .unwrap();

    // A quick query: polled to completion, progress never goes backwards.
    let mut running = client.submit(&tpch_query(5)).await.expect("submit");
    let mut last = 0.0;
    while !running.is_done() {
        let fraction = running.fraction();
        assert!((last..=1.0).contains(&fraction), "{last} then {fraction}");
        last = fraction;
        running = client.poll(&running).await.expect("poll");
    }
    let report = running.progress().expect("final report");
    assert!(report.finished && report.stages_total >= 2);
    assert_eq!(report.tasks_done, report.tasks_total);
    let output = client.fetch(&running).await.expect("result");
    let expected = datafusion_batches(&tpch_query(5)).await;
    assert_eq!(
        canonical_rows(&output.batches, false).unwrap(),
        canonical_rows(&expected, false).unwrap()
    );

    // Cancelling a finished query's FlightInfo drops its result (the executors are told
    // right away; allow them a second).
    let running = client.submit("SELECT 42 AS answer").await.unwrap();
    let running = if running.is_done() {
        running
    } else {
        client.poll(&running).await.unwrap()
    };
    assert!(running.is_done());
    client.cancel(&running).await.expect("release result");
    let deadline = Instant::now() + Duration::from_secs(1);
    let error = loop {
        match client.fetch(&running).await {
            Err(error) => break error,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(_) => panic!("the result is still readable a second after its release"),
        }
    };
    // (A read that beat the release to an executor took the partition with it: then the
    // next read hears that it was read and released.)
    let error = error.to_string();
    assert!(
        error.contains("not found") || error.contains("read to the end and released"),
        "{error}"
    );
    // A long query: progress is reported while it runs; cancel stops it everywhere.
    // (A task of stage 1 stalls until cancelled: the query runs until it is stopped, on
    // any machine load.)
    cluster.shutdown().await;
    let (cluster, client, stall) = start_tpch_cluster_with_a_stalled_task().await;
    let stored = || stored_outputs(&cluster);
    let stored_before = stored();
    let mut running = client
        .submit(&tpch_query(3))
        .await
        .expect("submit long query");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(800) {
        running = client.poll(&running).await.expect("poll");
        assert!(
            !running.is_done(),
            "the long query finished too soon to cancel"
        );
    }
    assert_eq!(stall.fired(), 1, "the stall fault must have fired");
    let report = running.progress().expect("running query reports progress");
    assert!(report.tasks_total > 0 && !report.finished, "{report:?}");
    client.cancel(&running).await.expect("cancel");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let busy: usize = cluster.executors().iter().map(|e| e.running_tasks()).sum();
        let stored = stored();
        if busy == 0 && cluster.scheduler().engine().active_jobs() == 0 && stored <= stored_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after cancel: {busy} tasks running, {stored} outputs kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = client.poll(&running).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::NotFound), "{error}");

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_on_every_port_and_cluster_secret() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let certificate_pem = certified.cert.pem().into_bytes();
    let identity = TlsIdentity {
        certificate_pem: certificate_pem.clone(),
        private_key_pem: certified.signing_key.serialize_pem().into_bytes(),
    };
    let secret = ClusterSecret::new(Some("s3cret-for-tests".to_string()));
    let scheduler = Scheduler::start(SchedulerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        target_partitions: 2,
        cluster_secret: secret.clone(),
        tls: Some(identity.clone()),
        executor_tls_ca: Some(certificate_pem.clone()),
        ..SchedulerConfig::default()
    })
    .await
    .expect("TLS scheduler starts");
    assert!(scheduler.url().starts_with("https://"));

    // An executor with the wrong secret is refused; the right one joins.
    let intruder = Executor::start(ExecutorConfig {
        scheduler_url: scheduler.url(),
        cluster_secret: ClusterSecret::new(Some("guess".to_string())),
        tls_ca: Some(certificate_pem.clone()),
        slots: 1,
        ..ExecutorConfig::default()
    })
    .await
    .unwrap();
    assert!(
        intruder
            .wait_registered(Duration::from_millis(700))
            .await
            .is_err()
    );
    assert_eq!(scheduler.engine().executors().len(), 0);
    intruder.shutdown().await;
    // Two executors serving TLS: shuffle data moves between them encrypted.
    let mut executors = Vec::new();
    for _ in 0..2 {
        let executor = Executor::start(ExecutorConfig {
            scheduler_url: scheduler.url(),
            cluster_secret: secret.clone(),
            tls_ca: Some(certificate_pem.clone()),
            tls: Some(identity.clone()),
            slots: 2,
            ..ExecutorConfig::default()
        })
        .await
        .unwrap();
        executor
            .wait_registered(Duration::from_secs(10))
            .await
            .expect("executor with the secret joins over TLS");
        executors.push(executor);
    }

    let client = QuiverClient::connect_with(
        &scheduler.url(),
        ConnectOptions {
            tls_ca_pem: Some(certificate_pem),
            ..ConnectOptions::default()
        },
    )
    .await
    .expect("TLS client connects");
    let batches = client
        .sql("SELECT count(*) FROM (VALUES (1), (2), (3)) AS t(v)")
        .await
        .unwrap();
    let counts = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(counts.value(0), 3);
    assert!(counts.len() == 1);
    for statement in tpch_table_statements() {
        client.sql(&statement).await.unwrap();
    }
    let grouped = "SELECT n_regionkey, count(*) AS n FROM nation GROUP BY n_regionkey";
    let info = client.flight_info(grouped).await.unwrap();
    assert!(
        info.endpoint
            .iter()
            .all(|e| e.location[0].uri.starts_with("grpc+tls://")),
        "{info:?}"
    );
    assert_eq!(
        canonical_rows(&client.sql(grouped).await.unwrap(), true).unwrap(),
        canonical_rows(&datafusion_batches(grouped).await, true).unwrap()
    );
    // Plain text reaches no executor either.
    let executor_url = format!("http://{}", executors[0].address());
    let mut plain = FlightClient::new(Endpoint::from_shared(executor_url).unwrap().connect_lazy());
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let refused = match plain.do_get(ticket).await {
        Err(error) => error.to_string(),
        Ok(stream) => match stream.try_collect::<Vec<_>>().await {
            Err(error) => error.to_string(),
            Ok(_) => panic!("an executor serving TLS answered in plain text"),
        },
    };
    assert!(!refused.is_empty());

    // Plain-text clients cannot talk to the TLS port.
    let plain = QuiverClient::connect(&scheduler.url().replace("https://", "http://")).await;
    let failed = match plain {
        Err(_) => true,
        Ok(client) => client.sql("SELECT 1").await.is_err(),
    };
    assert!(failed, "plain text must not reach a TLS port");
    for executor in executors {
        executor.shutdown().await;
    }
    scheduler.shutdown().await;
}
