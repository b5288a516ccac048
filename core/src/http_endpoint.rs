//! The HTTP port (`--http ADDR`) of schedulers and executors: plain HTTP/1.1, one request
//! per connection, answered by a handler. It serves Prometheus scrapes, the scheduler's
//! JSON API, its web UI and the UI's login form; nothing here needs more of HTTP than
//! that.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::{QuiverError, Result};

/// What a handler answers.
pub struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    /// Further headers, such as `Location` and `Set-Cookie`.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl HttpResponse {
    fn new(status: u16, content_type: &'static str, body: String) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// A scrape's answer, in Prometheus' text format.
    pub fn prometheus(body: String) -> Self {
        Self::new(200, "text/plain; version=0.0.4; charset=utf-8", body)
    }

    pub fn json(status: u16, body: String) -> Self {
        Self::new(status, "application/json", body)
    }

    pub fn html(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, "text/html; charset=utf-8", body.into())
    }

    /// Sends the browser to `location` (303: it follows with a GET).
    pub fn redirect(location: &str) -> Self {
        Self::new(303, "text/plain; charset=utf-8", String::new()).with_header("Location", location)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request.
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The path, without the query string.
    pub path: &'a str,
    /// The `Authorization` header, if sent.
    pub authorization: Option<&'a str>,
    /// The `Cookie` header, if sent.
    pub cookies: Option<&'a str>,
    /// The body (forms), at most [`MAX_BODY_BYTES`].
    pub body: &'a [u8],
    /// Who connected.
    pub peer: Option<IpAddr>,
}

impl HttpRequest<'_> {
    /// The value of cookie `name`, if the request carries it.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies?
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// Field `name` of an `application/x-www-form-urlencoded` body.
    pub fn form_field(&self, name: &str) -> Option<String> {
        let body = std::str::from_utf8(self.body).ok()?;
        body.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| percent_decode(key) == name)
            .map(|(_, value)| percent_decode(value))
    }
}

/// Decodes a form value: `+` is a space, `%XX` a byte (a `%` not followed by two hex
/// digits stays as it is).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers a request.
pub type HttpHandler = Arc<dyn Fn(&HttpRequest<'_>) -> HttpResponse + Send + Sync>;

/// Most bytes of a request's head read before it is refused.
const MAX_REQUEST_BYTES: usize = 16 << 10;
/// Most bytes of a request's body (the login form is the largest).
pub const MAX_BODY_BYTES: usize = 16 << 10;

/// Binds `address` and answers requests with `handler` in the background; returns the
/// bound address.
pub async fn serve_http(
    address: SocketAddr,
    handler: HttpHandler,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| QuiverError::Transport {
            context: format!("binding the HTTP port to {address}"),
            source: Box::new(e),
        })?;
    let bound = listener.local_addr()?;
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let answered = answer(stream, peer.ip(), handler);
                let _ = tokio::time::timeout(Duration::from_secs(10), answered).await;
            });
        }
    });
    Ok((bound, server))
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    peer: IpAddr,
    handler: HttpHandler,
) -> std::io::Result<()> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        if received.len() > MAX_REQUEST_BYTES {
            let refusal = HttpResponse::text(431, "request head too large\n");
            return respond(&mut stream, &refusal).await;
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        received.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let header = |wanted: &str| {
        head.lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.trim())
    };
    let length: usize = header("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    if length > MAX_BODY_BYTES {
        let refusal = HttpResponse::text(413, "request body too large\n");
        return respond(&mut stream, &refusal).await;
    }
    while received.len() < head_end + length {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        received.extend_from_slice(&buffer[..read]);
    }
    let body = &received[head_end..(head_end + length).min(received.len())];
    let mut request_line = head.lines().next().unwrap_or_default().split_whitespace();
    let response = match (request_line.next(), request_line.next()) {
        (Some(method), Some(target)) => {
            let path = target.split('?').next().unwrap_or(target);
            handler(&HttpRequest {
                method,
                path,
                authorization: header("authorization"),
                cookies: header("cookie"),
                body,
                peer: Some(peer),
            })
        }
        _ => HttpResponse::text(400, "not an HTTP request\n"),
    };
    respond(&mut stream, &response).await
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    response: &HttpResponse,
) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(response.body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(body: &'a [u8], cookies: Option<&'a str>) -> HttpRequest<'a> {
        HttpRequest {
            method: "POST",
            path: "/login",
            authorization: None,
            cookies,
            body,
            peer: None,
        }
    }

    #[test]
    fn form_fields_are_decoded() {
        let form = request(b"user=ann+lee&password=p%40ss%3D1%&x=%zz", None);
        assert_eq!(form.form_field("user").as_deref(), Some("ann lee"));
        assert_eq!(form.form_field("password").as_deref(), Some("p@ss=1%"));
        assert_eq!(form.form_field("x").as_deref(), Some("%zz"));
        assert_eq!(form.form_field("missing"), None);
    }

    #[test]
    fn cookies_are_found_by_name() {
        let with = request(b"", Some("a=1; quiver_session=tok=en; b=2"));
        assert_eq!(with.cookie("quiver_session"), Some("tok=en"));
        assert_eq!(with.cookie("c"), None);
        assert_eq!(request(b"", None).cookie("a"), None);
    }
}
