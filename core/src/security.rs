//! Who may talk to whom: the cluster secret executors and the scheduler present to each
//! other, and TLS settings for the client port.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// gRPC metadata key that carries the cluster secret on control calls.
pub const CLUSTER_SECRET_HEADER: &str = "x-quiver-cluster-secret";

/// The secret shared by a cluster's scheduler and executors; `None` leaves control calls
/// open (for clusters on a trusted network).
#[derive(Clone, Default)]
pub struct ClusterSecret(Option<Arc<str>>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(_) => f.write_str("ClusterSecret(set)"),
            None => f.write_str("ClusterSecret(none)"),
        }
    }
}

impl ClusterSecret {
    pub fn new(secret: Option<String>) -> Self {
        Self(secret.filter(|s| !s.is_empty()).map(Arc::from))
    }

    pub fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

/// Server side: refuses control calls that do not carry the cluster secret.
#[derive(Clone, Debug)]
pub struct RequireClusterSecret(pub ClusterSecret);

impl Interceptor for RequireClusterSecret {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = self.0.as_str() else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get(CLUSTER_SECRET_HEADER)
            .and_then(|v| v.to_str().ok());
        match presented {
            Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated(
                "wrong cluster secret: this node belongs to another cluster or its \
                 --cluster-secret differs from the scheduler's",
            )),
            None => Err(Status::unauthenticated(
                "this cluster requires a cluster secret (--cluster-secret or \
                 QUIVER_CLUSTER_SECRET) on scheduler and executors",
            )),
        }
    }
}

/// Client side: adds the cluster secret to every call.
#[derive(Clone, Debug)]
pub struct AttachClusterSecret(ClusterSecret);

impl AttachClusterSecret {
    pub fn new(secret: ClusterSecret) -> Self {
        Self(secret)
    }
}

impl Interceptor for AttachClusterSecret {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(secret) = self.0.as_str() {
            let value = MetadataValue::try_from(secret)
                .map_err(|_| Status::internal("cluster secret is not valid header text"))?;
            request.metadata_mut().insert(CLUSTER_SECRET_HEADER, value);
        }
        Ok(request)
    }
}

/// A channel whose calls carry the cluster secret.
pub type ControlChannel = InterceptedService<Channel, AttachClusterSecret>;

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A PEM certificate chain and private key for serving TLS.
#[derive(Clone)]
pub struct TlsIdentity {
    pub certificate_pem: Vec<u8>,
    pub private_key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(..)")
    }
}

/// A process reachable from other machines must not run without a cluster secret:
/// anyone who reaches its control port could register an executor (and receive the
/// ticket key) or launch tasks. On a loopback address only this machine can.
pub fn require_secret_off_loopback(
    bind: std::net::SocketAddr,
    secret: &ClusterSecret,
    role: &str,
) -> Result<(), crate::QuiverError> {
    if bind.ip().is_loopback() || secret.is_set() {
        return Ok(());
    }
    Err(crate::QuiverError::Config(format!(
        "a {role} bound to {bind} (not a loopback address) needs a cluster secret: set \
         QUIVER_CLUSTER_SECRET (or --cluster-secret) to the same random value on the \
         scheduler and every executor, e.g. `export QUIVER_CLUSTER_SECRET=$(openssl rand \
         -hex 32)`"
    )))
}
