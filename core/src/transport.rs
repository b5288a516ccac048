//! gRPC plumbing shared by the scheduler, the executors and their clients.

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::warn;

use crate::error::QuiverError;

/// A channel to `url` that connects on first use and reconnects after failures; an
/// `https://` URL is verified against `ca_pem`.
pub fn lazy_channel(url: &str, ca_pem: Option<&[u8]>) -> Result<Channel, QuiverError> {
    Ok(endpoint(url, ca_pem)?.connect_lazy())
}

/// Bytes a peer may send on one stream before it is read.
const STREAM_WINDOW_BYTES: u32 = 2 << 20;
/// Bytes a peer may send on one connection before any of it is read: HTTP/2's largest.
const CONNECTION_WINDOW_BYTES: u32 = (1 << 31) - 1;

/// An endpoint for `url`; an `https://` URL is verified against `ca_pem`.
pub fn endpoint(url: &str, ca_pem: Option<&[u8]>) -> Result<Endpoint, QuiverError> {
    let transport = |context: String, e: tonic::transport::Error| QuiverError::Transport {
        context,
        source: Box::new(e),
    };
    // One connection to a peer carries many streams at once, and a task may hold some
    // unread for a long time (DataFusion starts every broadcast join's build-side fetch
    // when the plan is executed, then reads them one after the other). Each stream may
    // buffer its own window (2 MiB) unread; the connection's window must not run out
    // before theirs do, or the stream being read would wait on the unread ones forever.
    // (With hyper's 5 MiB connection window, TPC-DS q64 through two executor processes
    // hung that way: seventeen broadcast build sides in one task, fetched from one peer.)
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| transport(format!("bad address {url}"), e))?
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
    if url.starts_with("https://") {
        let ca = ca_pem.ok_or_else(|| {
            QuiverError::Config(format!(
                "{url} uses TLS: give the certificate authority that signed its certificate \
                 (--tls-ca FILE)"
            ))
        })?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| transport(format!("TLS settings for {url}"), e))?;
    }
    Ok(endpoint)
}

/// Serves `router` on `listener` until `stop` fires, in the background.
pub fn spawn_server(
    router: Router,
    listener: TcpListener,
    stop: oneshot::Receiver<()>,
    role: &'static str,
) -> JoinHandle<()> {
    // Accepted connections need no-delay too: small responses must not wait for Nagle's
    // algorithm (a 40 ms stall per round trip otherwise).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stop.await;
        };
        if let Err(error) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            warn!(%error, role, "server stopped with an error");
        }
    })
}
