//! What can go wrong with a Delta table, each case naming its cause.

use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The location holds no transaction log.
    #[error("no Delta table at '{0}': it has no _delta_log directory")]
    NotATable(String),
    /// The log is there but does not say what the protocol says it must.
    #[error("the Delta log is damaged: {0}")]
    Log(String),
    /// A table is already where a new one was to be created.
    #[error("{0}")]
    Exists(String),
    /// A version or time the log cannot answer.
    #[error("{0}")]
    NoSuchVersion(String),
    /// A protocol feature this engine does not implement: refused, never read wrongly.
    #[error("Delta table feature not supported: {0}")]
    Unsupported(String),
    /// Another writer committed first in a way this write cannot be merged with.
    #[error(
        "conflicting Delta commit on '{table}': version {version} was committed by another \
         writer since this write read version {read_version} ({reason}); nothing was committed, \
         run the statement again"
    )]
    Conflict {
        table: String,
        version: u64,
        read_version: u64,
        reason: String,
    },
    #[error("Delta table storage: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

impl From<DeltaError> for DataFusionError {
    fn from(error: DeltaError) -> Self {
        match error {
            DeltaError::DataFusion(inner) => inner,
            DeltaError::NotATable(_)
            | DeltaError::Exists(_)
            | DeltaError::NoSuchVersion(_)
            | DeltaError::Unsupported(_) => DataFusionError::Plan(error.to_string()),
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
