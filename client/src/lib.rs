//! Quiver for Rust programs: connect to a cluster ([`QuiverClient`]) or start one inside
//! the process ([`StandaloneCluster`]), run SQL, get Arrow record batches back. Also home
//! of the `quiver` binary (run SQL; `scheduler` and `executor` subcommands).
//!
//! It must not hold query state that the scheduler owns: every query goes through the
//! scheduler's Flight SQL front door, also in standalone mode.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), quiver::ClientError> {
//! use futures::TryStreamExt;
//! use quiver::{StandaloneCluster, StandaloneConfig};
//!
//! let cluster = StandaloneCluster::start(StandaloneConfig::default()).await?;
//! let client = cluster.client().await?;
//! let batches = client.sql("SELECT 1 + 1 AS two").await?;
//! assert_eq!(batches[0].num_rows(), 1);
//!
//! // Or as a stream, partition by partition.
//! let (schema, stream) = client.sql_stream("SELECT * FROM (VALUES (1), (2), (3)) AS t(v)").await?;
//! assert_eq!(schema.field(0).name(), "v");
//! let rows: usize = stream.map_ok(|b| b.num_rows()).try_fold(0, |a, n| async move { Ok(a + n) }).await?;
//! assert_eq!(rows, 3);
//! cluster.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod client;
pub mod compare;
mod error;
pub mod script;
mod standalone;

pub use client::{ConnectOptions, QueryOutput, QuiverClient, RunningQuery};
pub use error::ClientError;
pub use quiver_core::proto::QueryProgress;
pub use standalone::{StandaloneCluster, StandaloneConfig};

/// The README's Rust snippets compile as doctests, so the front page stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// Re-exported so embedders use the same Arrow as Quiver.
pub use datafusion::arrow;
