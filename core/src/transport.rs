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

/// An endpoint for `url`; an `https://` URL is verified against `ca_pem`.
pub fn endpoint(url: &str, ca_pem: Option<&[u8]>) -> Result<Endpoint, QuiverError> {
    let transport = |context: String, e: tonic::transport::Error| QuiverError::Transport {
        context,
        source: Box::new(e),
    };
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| transport(format!("bad address {url}"), e))?
        .tcp_nodelay(true);
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
