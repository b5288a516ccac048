//! Quiver for Rust programs: connect to a cluster ([`QuiverClient`]) or start one inside
//! the process ([`StandaloneCluster`]), run SQL, get Arrow record batches back. Also home
//! of the `quiver` binary (shell, `scheduler` and `executor` subcommands).
//!
//! It must not hold query state that the scheduler owns: every query goes through the
//! scheduler's Flight SQL front door, also in standalone mode.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quiver::ClientError> {
//! use quiver::{StandaloneCluster, StandaloneConfig};
//!
//! let cluster = StandaloneCluster::start(StandaloneConfig::default()).await?;
//! let client = cluster.client().await?;
//! let batches = client.sql("SELECT 1 + 1 AS two").await?;
//! assert_eq!(batches[0].num_rows(), 1);
//! cluster.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod client;
pub mod compare;
mod error;
pub mod script;
mod standalone;

pub use client::{QueryOutput, QuiverClient};
pub use error::ClientError;
pub use standalone::{StandaloneCluster, StandaloneConfig};

/// The README's Rust snippets compile as doctests, so the front page stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// Re-exported so embedders use the same Arrow as Quiver.
pub use datafusion::arrow;
