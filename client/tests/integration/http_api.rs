//! The scheduler's HTTP port against real processes: the JSON API needs the same logins
//! as Flight SQL, and shows each user only their own statements (an administrator, all).

use std::io::{Read, Write};
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use tonic::transport::Endpoint;

use crate::common::session_settings;
use crate::processes::{
    Processes, connect_with_deadline, free_port, spawn_executor, spawn_scheduler,
};

/// `GET path` from 127.0.0.1:`port` with an `Authorization` header when given: the
/// status code and the body.
fn http_get(port: u16, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let header = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n{header}\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

async fn bearer(url: &str, user: &str, password: &str) -> String {
    let channel = Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake(user, password).await.unwrap();
    format!("Bearer {}", client.token().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_json_api_needs_a_login_and_shows_each_user_their_own_statements() {
    let (port, http) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{port}");
    let http_arg = format!("127.0.0.1:{http}");
    let _processes = Processes(vec![
        spawn_scheduler(
            port,
            &[
                "--user",
                "root:rooted",
                "--user",
                "bob:bravo",
                "--admin",
                "root",
                "--http",
                &http_arg,
            ],
        ),
        spawn_executor(&url),
    ]);
    let root = connect_with_deadline(&url, Duration::from_secs(30)).await;
    root.login("root", "rooted").await.unwrap();
    let bob = connect_with_deadline(&url, Duration::from_secs(5)).await;
    bob.login("bob", "bravo").await.unwrap();
    for statement in session_settings() {
        bob.sql(&statement).await.unwrap();
    }
    bob.sql("SELECT 1 AS bobs_query").await.unwrap();
    let endless = "SELECT count(*) FROM (SELECT * FROM generate_series(1, 100000)) a, \
                   (SELECT * FROM generate_series(1, 100000)) b WHERE a.value + b.value > 5";
    let running = root.submit(endless).await.unwrap();

    let (status, body) = http_get(http, "/api/queries", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, _) = http_get(http, "/api/queries", Some("Bearer made-up"));
    assert_eq!(status, 401);

    let bobs = bearer(&url, "bob", "bravo").await;
    let (status, body) = http_get(http, "/api/queries", Some(&bobs));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with('[') && body.contains("bobs_query"),
        "{body}"
    );
    assert!(!body.contains("generate_series"), "{body}");

    // The administrator sees everyone's, the running one with its progress; basic auth
    // works too.
    let roots = bearer(&url, "root", "rooted").await;
    let (_, body) = http_get(http, "/api/queries", Some(&roots));
    assert!(body.contains("bobs_query"), "{body}");
    let endless_entry = body
        .split("},{")
        .find(|entry| entry.contains("generate_series"))
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        endless_entry.contains("\"state\":\"running\""),
        "{endless_entry}"
    );
    assert!(endless_entry.contains("\"progress\":"), "{endless_entry}");
    let basic = "Basic cm9vdDpyb290ZWQ="; // root:rooted
    let (status, body) = http_get(http, "/api/executors", Some(basic));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.matches("\"slots\":2").count(), 1, "{body}");
    let (status, _) = http_get(http, "/metrics", None);
    assert_eq!(status, 200);
    let (status, _) = http_get(http, "/nothing", None);
    assert_eq!(status, 404);
    root.cancel(&running).await.unwrap();
}
