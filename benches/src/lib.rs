//! Quiver's benchmarks: TPC-H data generation ([`datagen`]), the side-by-side run of the
//! 22 TPC-H queries through Quiver and single-node DataFusion ([`tpch`]), and a copy of
//! lineitem written by both ([`write`]), and a differential SQL fuzzer ([`fuzz`], with
//! its generator in [`sqlgen`]).
//!
//! `cargo test` runs each in quick mode (`tests/quick.rs`); full runs use the
//! `quiver-benches` binary.

pub mod cluster;
pub mod datagen;
pub mod first_batch;
pub mod fuzz;
pub mod latency;
pub mod report;
pub mod sqlgen;
pub mod tpcds;
pub mod tpch;
pub mod write;
