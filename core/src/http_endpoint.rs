//! The HTTP port (`--http ADDR`) of schedulers and executors: plain HTTP/1.1 GET
//! requests, one per connection, answered by a handler. It serves Prometheus scrapes and
//! the scheduler's JSON API; nothing here needs more of HTTP than that.

use std::net::SocketAddr;
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
    pub body: String,
}

impl HttpResponse {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// A scrape's answer, in Prometheus' text format.
    pub fn prometheus(body: String) -> Self {
        Self {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body,
        }
    }

    pub fn json(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "application/json",
            body,
        }
    }
}

/// A GET request.
pub struct HttpRequest<'a> {
    /// The path, without the query string.
    pub path: &'a str,
    /// The `Authorization` header, if sent.
    pub authorization: Option<&'a str>,
}

/// Answers a request.
pub type HttpHandler = Arc<dyn Fn(&HttpRequest<'_>) -> HttpResponse + Send + Sync>;

/// Most bytes of a request's head read before it is refused.
const MAX_REQUEST_BYTES: usize = 16 << 10;

/// Binds `address` and answers GET requests with `handler` in the background; returns
/// the bound address.
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
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), answer(stream, handler)).await;
            });
        }
    });
    Ok((bound, server))
}

async fn answer(mut stream: tokio::net::TcpStream, handler: HttpHandler) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..read]);
        if head.len() > MAX_REQUEST_BYTES {
            return respond(
                &mut stream,
                &HttpResponse::text(431, "request head too large\n"),
            )
            .await;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let authorization = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.trim());
    let response = match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => {
            let path = target.split('?').next().unwrap_or(target);
            handler(&HttpRequest {
                path,
                authorization,
            })
        }
        (Some(_), Some(_)) => HttpResponse::text(405, "only GET is served here\n"),
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
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(response.body.as_bytes()).await?;
    stream.shutdown().await
}
