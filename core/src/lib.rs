//! Quiver's shared vocabulary: ids, errors, typed config, the scheduler <-> executor
//! protocol, the exchange plan nodes ([`exchange::ShuffleWriterExec`],
//! [`exchange::ShuffleReaderExec`]) and the plan codec that ships them.
//!
//! This crate must not start servers or make scheduling decisions: it only defines what
//! the scheduler, the executors and the clients say to each other.

pub mod batch_bytes;
pub mod codec;
pub mod compressed_scan;
pub mod config;
pub mod error;
pub mod exchange;
pub mod exchange_filter;
pub mod file_scans;
pub mod http_endpoint;
pub mod ids;
pub mod json_text;
pub mod prometheus;
pub mod proto;
mod recursive_cte;
pub mod security;
pub mod storage;
pub mod threads;
pub mod ticket;
pub mod transport;
pub mod users_file;
pub mod write;

pub use error::{QuiverError, Result};
pub use ids::{JobId, StageId, TaskAttempt};
