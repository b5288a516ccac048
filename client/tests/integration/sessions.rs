//! Client sessions: each connection's settings are its own, the settings that keep plans
//! distributable cannot be turned back on, and the session cookie names a session across
//! connections.

use arrow_flight::FlightDescriptor;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use prost::Message;
use quiver::ClientError;
use quiver::compare::canonical_rows;
use tonic::Request;

use crate::common::start_cluster;

async fn column_names(client: &quiver::QuiverClient, sql: &str) -> Vec<String> {
    let batches = client
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_connection_has_its_own_settings() {
    let (cluster, first) = start_cluster().await;
    let second = cluster.client().await.unwrap();
    first
        .sql("SET datafusion.sql_parser.enable_ident_normalization = false")
        .await
        .unwrap();
    first
        .sql("SET datafusion.execution.batch_size = 1234")
        .await
        .unwrap();
    assert_eq!(
        column_names(&first, "SELECT 1 AS MixedCase").await,
        ["MixedCase"]
    );
    assert_eq!(
        column_names(&second, "SELECT 1 AS MixedCase").await,
        ["mixedcase"]
    );
    let show = "SHOW datafusion.execution.batch_size";
    let value = |rows: Vec<String>| rows.join("\n");
    let first_value = value(canonical_rows(&first.sql(show).await.unwrap(), false).unwrap());
    let second_value = value(canonical_rows(&second.sql(show).await.unwrap(), false).unwrap());
    assert!(first_value.contains("1234"), "{first_value}");
    assert!(second_value.contains("8192"), "{second_value}");

    // The catalog is shared: a table one session makes, the other reads.
    first
        .sql("CREATE VIEW shared_view AS SELECT 7 AS seven")
        .await
        .unwrap();
    let rows = canonical_rows(
        &second.sql("SELECT seven FROM shared_view").await.unwrap(),
        false,
    );
    assert_eq!(rows.unwrap(), vec!["7"]);

    // A setting Quiver keeps off cannot be turned on (or reset to DataFusion's default).
    for statement in [
        "SET datafusion.optimizer.enable_physical_uncorrelated_scalar_subquery = true",
        "RESET datafusion.optimizer.enable_physical_uncorrelated_scalar_subquery",
        "SET datafusion.execution.enable_file_stream_work_stealing = true",
    ] {
        match first.sql(statement).await {
            Err(ClientError::Query { code, message }) => {
                assert_eq!(code, tonic::Code::InvalidArgument, "{statement}: {message}");
                assert!(message.contains("stays false"), "{statement}: {message}");
            }
            other => panic!("{statement}: expected a refusal, got {other:?}"),
        }
    }
    first
        .sql("SET datafusion.execution.enable_file_stream_work_stealing = false")
        .await
        .expect("keeping it off is harmless");
    // RESET brings a setting back to its default, in this session only.
    first
        .sql("RESET datafusion.sql_parser.enable_ident_normalization")
        .await
        .unwrap();
    assert_eq!(
        column_names(&first, "SELECT 1 AS MixedCase").await,
        ["mixedcase"]
    );
    cluster.shutdown().await;
}

/// Sends `sql` as a Flight SQL query on a connection of its own, with `cookie` if given;
/// returns the `set-cookie` the scheduler answered with.
async fn set_cookie_for(url: &str, sql: &str, cookie: Option<&str>) -> Option<String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightServiceClient::new(channel);
    let command = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    let mut request = Request::new(descriptor);
    if let Some(cookie) = cookie {
        request
            .metadata_mut()
            .insert("cookie", cookie.parse().unwrap());
    }
    let response = client.get_flight_info(request).await.unwrap();
    response
        .metadata()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_session_cookie_names_a_session_across_connections() {
    let (cluster, _client) = start_cluster().await;
    let url = cluster.url();
    let set = set_cookie_for(&url, "SET datafusion.execution.batch_size = 99", None)
        .await
        .expect("a first call gets a session cookie");
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("quiver_session="), "{set}");
    // Another connection presenting the cookie is in the same session: no new cookie.
    assert_eq!(set_cookie_for(&url, "SELECT 1", Some(&cookie)).await, None);
    // Without it, a new connection gets a session (and a cookie) of its own.
    let other = set_cookie_for(&url, "SELECT 1", None).await.unwrap();
    assert_ne!(other.split(';').next().unwrap(), cookie);
    // An unknown or expired id opens a new session rather than failing.
    let fresh = set_cookie_for(&url, "SELECT 1", Some("quiver_session=nonsense")).await;
    assert!(fresh.is_some_and(|c| !c.contains("nonsense")));
    cluster.shutdown().await;
}

/// Runs Flight action `kind` with `body` on a connection of its own, in the session of
/// `cookie`; returns the action's one result body and any `set-cookie` answered.
async fn action(url: &str, cookie: &str, kind: &str, body: Vec<u8>) -> (Vec<u8>, Option<String>) {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightServiceClient::new(channel);
    let mut request = Request::new(arrow_flight::Action {
        r#type: kind.to_string(),
        body: body.into(),
    });
    request
        .metadata_mut()
        .insert("cookie", cookie.parse().unwrap());
    let response = client
        .do_action(request)
        .await
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
    let set_cookie = response
        .metadata()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let mut results = response.into_inner();
    let first = futures::StreamExt::next(&mut results)
        .await
        .expect("one result")
        .unwrap();
    (first.body.to_vec(), set_cookie)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flight_session_options_set_get_and_close_the_session() {
    use quiver_core::proto::session_option_value::OptionValue;
    use quiver_core::proto::{
        CloseSessionResult, GetSessionOptionsResult, SessionOptionValue, SetSessionOptionsRequest,
        SetSessionOptionsResult,
    };

    let (cluster, _client) = start_cluster().await;
    let url = cluster.url();
    let set = set_cookie_for(&url, "SELECT 1", None).await.unwrap();
    let cookie = set.split(';').next().unwrap().to_string();
    let option = |value: OptionValue| SessionOptionValue {
        option_value: Some(value),
    };
    let request = SetSessionOptionsRequest {
        session_options: [
            (
                "datafusion.execution.batch_size".to_string(),
                option(OptionValue::Int64Value(555)),
            ),
            (
                "datafusion.execution.enable_file_stream_work_stealing".to_string(),
                option(OptionValue::BoolValue(true)),
            ),
            (
                "no.such.setting".to_string(),
                option(OptionValue::BoolValue(true)),
            ),
            // Quiver's own settings too.
            (
                "quiver.adaptive".to_string(),
                option(OptionValue::BoolValue(false)),
            ),
        ]
        .into_iter()
        .collect(),
    };
    let (body, _) = action(&url, &cookie, "SetSessionOptions", request.encode_to_vec()).await;
    let result = SetSessionOptionsResult::decode(body.as_slice()).unwrap();
    let mut refused: Vec<&String> = result.errors.keys().collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            "datafusion.execution.enable_file_stream_work_stealing",
            "no.such.setting"
        ]
    );

    let (body, _) = action(&url, &cookie, "GetSessionOptions", Vec::new()).await;
    let options = GetSessionOptionsResult::decode(body.as_slice()).unwrap();
    let value = |key: &str| match options
        .session_options
        .get(key)
        .and_then(|v| v.option_value.clone())
    {
        Some(OptionValue::StringValue(text)) => text,
        other => panic!("{key}: {other:?}"),
    };
    assert_eq!(value("datafusion.execution.batch_size"), "555");
    assert_eq!(value("quiver.adaptive"), "false");
    assert_eq!(
        value("datafusion.execution.enable_file_stream_work_stealing"),
        "false"
    );

    let (body, _) = action(&url, &cookie, "CloseSession", Vec::new()).await;
    assert_eq!(
        CloseSessionResult::decode(body.as_slice()).unwrap().status,
        1
    );
    // The closed session's cookie now opens a fresh session with default settings.
    let (body, set_cookie) = action(&url, &cookie, "GetSessionOptions", Vec::new()).await;
    assert!(set_cookie.is_some_and(|c| !c.starts_with(&cookie)));
    let options = GetSessionOptionsResult::decode(body.as_slice()).unwrap();
    assert!(matches!(
        options.session_options["datafusion.execution.batch_size"].option_value,
        Some(OptionValue::StringValue(ref v)) if v == "8192"
    ));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_session_can_neither_follow_nor_cancel_a_query() {
    let (cluster, owner) = crate::common::start_tpch_cluster().await;
    let other = cluster.client().await.unwrap();
    let long = "SELECT count(*) FROM lineitem a, lineitem b WHERE a.l_orderkey + b.l_orderkey > 5";
    let running = owner.submit(long).await.unwrap();
    for (what, result) in [
        ("cancel", other.cancel(&running).await.map(|_| ())),
        ("poll", other.poll(&running).await.map(|_| ())),
    ] {
        match result {
            Err(ClientError::Query { code, .. }) => {
                assert_eq!(code, tonic::Code::NotFound, "{what}")
            }
            other => panic!("{what} from another session: {other:?}"),
        }
    }
    // Its owner still follows it, and stops it.
    let polled = owner.poll(&running).await.unwrap();
    assert!(!polled.is_done(), "the query should still run");
    owner.cancel(&running).await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn system_queries_shows_a_session_its_own_statements() {
    let (cluster, first) = start_cluster().await;
    let second = cluster.client().await.unwrap();
    first.sql("SELECT 42 AS answer").await.unwrap();
    assert!(first.sql("SELECT * FROM no_such_table").await.is_err());
    second.sql("SELECT 43 AS other").await.unwrap();
    let history = "SELECT sql, state, error IS NOT NULL, tasks FROM system.queries \
                   WHERE sql NOT LIKE '%system.queries%'";
    let rows = canonical_rows(&first.sql(history).await.unwrap(), true).unwrap();
    assert_eq!(
        rows,
        vec![
            "SELECT * FROM no_such_table|failed|true|NULL",
            "SELECT 42 AS answer|succeeded|false|0",
        ]
    );
    // (Constants are computed on the scheduler: no task ran.)
    let rows = canonical_rows(&second.sql(history).await.unwrap(), true).unwrap();
    assert_eq!(rows, vec!["SELECT 43 AS other|succeeded|false|0"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn free_slots_go_round_robin_between_sessions() {
    let (cluster, heavy) = crate::common::start_tpch_cluster_with(quiver::StandaloneConfig {
        executors: 1,
        slots_per_executor: 2,
        ..crate::common::test_cluster_config()
    })
    .await;
    let light = cluster.client().await.unwrap();
    // Eight multi-stage queries from one session, then one small query from another.
    let mut running = Vec::new();
    // Each joins about 36 million row pairs: seconds of work in several stages.
    let long = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey \
                WHERE a.l_quantity + b.l_quantity > 10";
    // Many tasks per stage: the heavy session always has more waiting tasks than slots.
    heavy
        .sql("SET datafusion.execution.target_partitions = 32")
        .await
        .unwrap();
    for _ in 0..8 {
        running.push(heavy.submit(long).await.unwrap());
    }
    let started = std::time::Instant::now();
    let small = light
        .sql("SELECT count(*) FROM nation WHERE n_regionkey = 1")
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(canonical_rows(&small, false).unwrap(), vec!["5"]);
    // The history shows the heavy session's statements that are still running.
    let still_running = "SELECT count(*) FROM system.queries \
                         WHERE state = 'running' AND sql NOT LIKE '%system.queries%'";
    let unfinished: usize = canonical_rows(&heavy.sql(still_running).await.unwrap(), false)
        .unwrap()[0]
        .parse()
        .unwrap();
    // First come, first served, the small query waited for all eight (4.5 s, none left
    // running, when this was measured); round-robin, for one task (0.7 s, 6 left).
    assert!(
        unfinished >= 2,
        "only {unfinished} of the 8 queries were still running when the small one \
         finished after {waited:?}"
    );
    for query in &running {
        let _ = heavy.cancel(query).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_over_a_users_running_limit_wait_in_line_and_show_their_place() {
    let (cluster, busy) = crate::common::start_tpch_cluster_with(quiver::StandaloneConfig {
        limits: quiver_core::config::StatementLimits {
            max_running_per_user: 1,
            max_queued_per_user: 1,
            ..Default::default()
        },
        ..crate::common::test_cluster_config()
    })
    .await;
    let other = cluster.client().await.unwrap();
    let long = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey \
                WHERE a.l_quantity + b.l_quantity > 10";
    let first = busy.submit(long).await.unwrap();
    let small = "SELECT count(*) FROM nation WHERE n_regionkey = 1";
    let second = busy.submit(small).await.unwrap();
    let waiting = busy.poll(&second).await.unwrap();
    assert!(!waiting.is_done());
    assert_eq!(waiting.progress().unwrap().queue_position, 1);
    // The line holds one: a third statement is refused, saying which limit.
    match busy.sql(small).await {
        Err(quiver::ClientError::Query { code, message }) => {
            assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
            assert!(message.contains("--max-queued-per-user"), "{message}");
        }
        other => panic!("a third statement was not refused: {other:?}"),
    }
    // Another session's line is its own.
    let answer = other.sql(small).await.unwrap();
    assert_eq!(canonical_rows(&answer, false).unwrap(), vec!["5"]);
    // Once the first ends, the second runs.
    busy.cancel(&first).await.unwrap();
    let mut second = second;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !second.is_done() {
        assert!(std::time::Instant::now() < deadline, "the second never ran");
        second = busy.poll(&second).await.unwrap();
    }
    let answer = busy.fetch(&second).await.unwrap();
    assert_eq!(canonical_rows(&answer.batches, false).unwrap(), vec!["5"]);
    cluster.shutdown().await;
}
