//! The scheduler's HTTP port against real processes: the JSON API needs the same logins
//! as Flight SQL, and shows each user only their own statements (an administrator, all);
//! the web UI's pages need a login through its form, whose cookie also lets the owner of
//! a query (or an administrator) cancel it.

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
    let header = authorization.map(|value| format!("Authorization: {value}"));
    let (status, _, body) = http_request(port, "GET", path, header.as_deref(), "");
    (status, body)
}

/// `method path` to 127.0.0.1:`port` with one extra header line and a form body: the
/// status code, the response's head and its body.
fn http_request(
    port: u16,
    method: &str,
    path: &str,
    header: Option<&str>,
    form: &str,
) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let header = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{header}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (status, head.to_string(), body.to_string())
}

/// The value of JSON string field `field` in `object` (flat text search).
fn json_text<'a>(object: &'a str, field: &str) -> &'a str {
    let start = object.find(&format!("\"{field}\":\"")).unwrap() + field.len() + 4;
    let length = object[start..].find('"').unwrap();
    &object[start..start + length]
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

    // One query's detail: its job's stages and their task attempts, as they run.
    let endless_id = json_text(endless_entry, "id").to_string();
    let detail_path = format!("/api/queries/{endless_id}");
    let (status, detail) = http_get(http, &detail_path, Some(&roots));
    assert_eq!(status, 200, "{detail}");
    assert!(detail.contains("\"stages\":[{\"stage_id\":0"), "{detail}");
    assert!(detail.contains("\"attempts\":[{\"partition\":"), "{detail}");
    assert!(detail.contains("\"can_cancel\":true"), "{detail}");
    // Bob may neither see nor cancel root's query.
    let (status, _) = http_get(http, &detail_path, Some(&bobs));
    assert_eq!(status, 404);
    let cancel_path = format!("{detail_path}/cancel");
    let bobs_header = format!("Authorization: {bobs}");
    let (status, _, _) = http_request(http, "POST", &cancel_path, Some(&bobs_header), "");
    assert_eq!(status, 404);

    // The web UI: pages send strangers to the login form; a wrong password is refused
    // there; the right one gives a session cookie that opens pages and the API.
    let (status, head, _) = http_request(http, "GET", "/", None, "");
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("Location: /login"), "{head}");
    let (status, _, page) = http_request(http, "POST", "/login", None, "user=root&password=wrong");
    assert_eq!(status, 401);
    assert!(page.contains("invalid user name or password"), "{page}");
    let (status, head, _) = http_request(http, "POST", "/login", None, "user=root&password=rooted");
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|line| line.strip_prefix("Set-Cookie: "))
        .and_then(|value| value.split(';').next())
        .unwrap_or_else(|| panic!("{head}"))
        .to_string();
    assert!(cookie.starts_with("quiver_session="), "{cookie}");
    let cookie_header = format!("Cookie: {cookie}");
    let (status, _, page) = http_request(http, "GET", "/", Some(&cookie_header), "");
    assert_eq!(status, 200);
    assert!(page.contains("<title>Quiver</title>"), "{page}");
    assert!(
        page.contains(r#"id="who">root<"#),
        "the page names who is logged in"
    );

    // The owner's Cancel (the button's request) stops the query; its client hears why.
    let (status, _, body) = http_request(http, "POST", &cancel_path, Some(&cookie_header), "");
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        match root.poll(&running).await {
            Ok(progress) if !progress.is_done() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => break other,
        }
    };
    let error = match outcome {
        Err(error) => error.to_string(),
        // Its result was already readable (it streams): reading it says why it ended.
        Ok(readable) => root
            .fetch(&readable)
            .await
            .expect_err("a cancelled query fails")
            .to_string(),
    };
    assert!(error.contains("cancelled"), "{error}");
    let (_, detail) = http_get(http, &detail_path, Some(&roots));
    assert!(detail.contains("\"state\":\"cancelled\""), "{detail}");
    let (status, _, _) = http_request(http, "POST", &cancel_path, Some(&cookie_header), "");
    assert_eq!(status, 409, "a finished query cannot be cancelled again");
}
