//! Delta Lake tables for Quiver.
//!
//! The scheduler alone reads a table's transaction log: a scan becomes plain Parquet scan
//! tasks over the snapshot's live files ([`DeltaTable`]), so executors need nothing of
//! Delta. Writes run as ordinary distributed file writes into the table's root; the
//! scheduler then commits exactly the files of the successful task attempts as one new log
//! entry ([`commit_write`]), with a conditional put so concurrent writers never overwrite
//! each other's commits.
//!
//! Implemented here, from the protocol: reader versions 1–3 (deletion vectors and column
//! mapping refused by name when a table uses them), JSON commits and Parquet checkpoints,
//! partition values, file statistics for pruning, time travel by version or time, blind
//! appends that step over concurrent appends, overwrites that conflict with any
//! concurrent commit, and the commit history as a table function.

mod commit;
mod error;
mod factory;
mod history;
mod log;
mod named;
mod protocol;
mod schema;
mod stats;
mod table;
mod time_travel;

pub use commit::{NewFile, PendingWrite, WriteMode, commit_write};
pub use error::DeltaError;
pub use factory::{DELTA, DeltaTableFactory};
pub use history::{DELTA_HISTORY, DeltaHistoryFunction};
pub use log::{AddFile, LOG_DIRECTORY, Metadata, Protocol, Snapshot, VersionSpec, load_snapshot};
pub use schema::ViewTypes;
pub use stats::file_stats;
pub use table::{DeltaTable, is_delta};
pub use time_travel::{DELTA_AT, DeltaAtFunction};
