//! Quiver's benchmarks: TPC-H data generation ([`datagen`]), the side-by-side run of the
//! 22 TPC-H queries through Quiver and single-node DataFusion ([`tpch`]), and a copy of
//! lineitem written by both ([`write`]).
//!
//! Nothing here is run by `cargo test`: use the `quiver-benches` binary.

pub mod cluster;
pub mod datagen;
pub mod latency;
pub mod report;
pub mod tpch;
pub mod write;
