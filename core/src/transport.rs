//! gRPC plumbing shared by the scheduler, the executors and their clients.

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Channel, Endpoint};
use tracing::warn;

use crate::error::QuiverError;

/// A channel to `url` that connects on first use and reconnects after failures.
pub fn lazy_channel(url: &str) -> Result<Channel, QuiverError> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| QuiverError::Transport {
            context: format!("bad address {url}"),
            source: Box::new(e),
        })?
        .tcp_nodelay(true)
        .connect_lazy())
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
