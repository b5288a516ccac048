//! Errors a Quiver client sees.

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The scheduler (or an executor holding results) could not be reached.
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },

    /// The server rejected or failed the query; `message` says why.
    #[error("{message}")]
    Query { code: tonic::Code, message: String },

    /// Reading a result partition failed.
    #[error("reading results from {location} failed: {message}")]
    Fetch { location: String, message: String },

    /// Starting an in-process cluster failed.
    #[error("starting the standalone cluster failed: {0}")]
    Cluster(#[from] quiver_core::QuiverError),

    /// A response could not be decoded.
    #[error("bad response from server: {0}")]
    Protocol(String),
}

impl ClientError {
    pub(crate) fn from_status(status: tonic::Status) -> Self {
        ClientError::Query {
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// The gRPC code of a server-side failure, if this is one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Query { code, .. } => Some(*code),
            _ => None,
        }
    }
}
