//! The error type every Quiver crate returns, and its mapping to gRPC status codes.

use datafusion::error::DataFusionError;

pub type Result<T, E = QuiverError> = std::result::Result<T, E>;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum QuiverError {
    /// The SQL could not be parsed or planned (syntax, types, unknown columns).
    #[error("{0}")]
    InvalidQuery(DataFusionError),

    /// A statement asks more of the cluster than a configured limit allows.
    #[error(
        "statement refused: {what} is {actual}, over the limit of {limit} (raise it with `quiver scheduler {setting}`)"
    )]
    LimitExceeded {
        what: &'static str,
        actual: u64,
        limit: u64,
        /// The command-line option that sets the limit.
        setting: &'static str,
    },

    /// A table, view or file the query names does not exist.
    #[error("{0}")]
    NotFound(DataFusionError),

    /// The query failed while running on an executor.
    #[error(
        "query failed in stage {stage_id} (task {partition} on executor {executor_id}): {message}"
    )]
    TaskFailed {
        stage_id: u32,
        partition: u32,
        executor_id: String,
        message: String,
    },

    /// No executor is registered to run the query.
    #[error("no executors available: waited {waited_secs}s for one to register{}", last_loss.as_ref().map(|l| format!(" (last executor lost: {l})")).unwrap_or_default())]
    NoExecutors {
        waited_secs: u64,
        /// Why the last executor went away, if one did.
        last_loss: Option<String>,
    },

    /// An executor could not be reached.
    #[error("executor {executor_id} at {address} is unreachable: {reason}")]
    ExecutorUnreachable {
        executor_id: String,
        address: String,
        reason: String,
    },

    /// A ticket did not decode or names data that is not here.
    #[error("invalid ticket: {reason}")]
    BadTicket { reason: String },

    /// A result ticket used after its result's retention ended.
    #[error(
        "this result expired {secs_ago} s ago: results stay readable for \
         `quiver scheduler --result-retention-secs` after their query ends"
    )]
    ExpiredTicket { secs_ago: u64 },

    /// A result partition that was read to the end once and then dropped: Flight SQL
    /// clients read each endpoint once, and most never say that they are done.
    #[error(
        "result partition {output_partition} of task {map_partition} of query {job_id} was \
         read to the end and released; run the query again to read it again"
    )]
    ResultReleased {
        job_id: String,
        map_partition: u32,
        output_partition: u32,
    },

    /// A ticket whose signature does not match: guessed, altered, or from another cluster.
    #[error("ticket refused: its signature does not match this cluster's key")]
    ForgedTicket,

    /// Shuffle data that a ticket names is not held by this executor.
    #[error("shuffle output not found: job {job_id} stage {stage_id} partition {map_partition}")]
    ShuffleOutputMissing {
        job_id: String,
        stage_id: u32,
        map_partition: u32,
    },

    /// The caller may not do this: a privilege it lacks, or an administrator's statement.
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// A user's line of waiting statements is full (`--max-queued-per-user`).
    #[error(
        "statement refused: user {user} has {running} statements running and {queued} waiting,          the most allowed (raise it with `quiver scheduler --max-queued-per-user`)"
    )]
    QueueFull {
        user: String,
        running: usize,
        queued: usize,
    },

    /// The query was cancelled.
    #[error("query {job_id} was cancelled")]
    Cancelled { job_id: String },

    /// The statement ran past `--statement-timeout-secs` and was stopped everywhere.
    #[error(
        "the statement ran past its time limit of {seconds} s and was cancelled on every \
         executor (raise it with `quiver scheduler --statement-timeout-secs`)"
    )]
    StatementTimeout { seconds: u64 },

    /// The scheduler is shutting down and takes no new queries.
    #[error("the scheduler is shutting down and accepts no new queries")]
    ShuttingDown,

    /// Another running scheduler holds this state directory.
    #[error("state directory {} is in use by another running scheduler", .0.display())]
    StateDirInUse(std::path::PathBuf),

    /// A configuration value is not acceptable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Transport setup failed (bind, connect).
    #[error("{context}: {source}")]
    Transport {
        context: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// DataFusion failed at run time.
    #[error(transparent)]
    DataFusion(DataFusionError),

    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// A bug in Quiver.
    #[error("internal error: {0}")]
    Internal(String),
}

impl QuiverError {
    /// Classifies a DataFusion error raised while planning a query by its kind: missing
    /// files are `NotFound`; mistakes in the statement are `InvalidQuery`. (Unknown
    /// tables are found before DataFusion plans, and raised as `NotFound` there.)
    pub fn from_planning(error: DataFusionError) -> Self {
        let missing_file = match error.find_root() {
            DataFusionError::ObjectStore(source) => {
                matches!(**source, object_store::Error::NotFound { .. })
            }
            DataFusionError::IoError(source) => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        };
        match error.find_root() {
            _ if missing_file => QuiverError::NotFound(error),
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => QuiverError::InvalidQuery(error),
            _ => QuiverError::DataFusion(error),
        }
    }

    /// The gRPC status code that tells a remote caller what kind of failure this was.
    pub fn status_code(&self) -> tonic::Code {
        match self {
            QuiverError::InvalidQuery(_)
            | QuiverError::BadTicket { .. }
            | QuiverError::LimitExceeded { .. } => tonic::Code::InvalidArgument,
            QuiverError::NotFound(_)
            | QuiverError::ShuffleOutputMissing { .. }
            | QuiverError::ExpiredTicket { .. }
            | QuiverError::ResultReleased { .. } => tonic::Code::NotFound,
            QuiverError::TaskFailed { .. } | QuiverError::DataFusion(_) => tonic::Code::Aborted,
            QuiverError::NoExecutors { .. }
            | QuiverError::ExecutorUnreachable { .. }
            | QuiverError::ShuttingDown => tonic::Code::Unavailable,
            QuiverError::Cancelled { .. } => tonic::Code::Cancelled,
            QuiverError::QueueFull { .. } => tonic::Code::ResourceExhausted,
            QuiverError::StatementTimeout { .. } => tonic::Code::DeadlineExceeded,
            QuiverError::ForgedTicket | QuiverError::PermissionDenied(_) => {
                tonic::Code::PermissionDenied
            }
            QuiverError::Config(_) | QuiverError::StateDirInUse(_) => {
                tonic::Code::FailedPrecondition
            }
            QuiverError::Transport { .. } => tonic::Code::Unavailable,
            QuiverError::Io(_) => tonic::Code::Unavailable,
            QuiverError::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl From<QuiverError> for tonic::Status {
    fn from(error: QuiverError) -> Self {
        tonic::Status::new(error.status_code(), error.to_string())
    }
}

impl From<QuiverError> for DataFusionError {
    fn from(error: QuiverError) -> Self {
        match error {
            QuiverError::DataFusion(inner) => inner,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// The text of a caught panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_string()
    }
}
