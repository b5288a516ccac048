//! Integration tests through Quiver's public API, against real clusters: in-process
//! standalone clusters over loopback gRPC/Flight, and separate OS processes.
//!
//! One test binary, so DataFusion is linked once.

mod access_control;
mod adaptive;
mod broadcast_once;
mod catalog_persistence;
mod common;
mod delta;
mod dynamic_filters;
mod errors;
mod explain_analyze;
mod faults;
mod flight_sql;
mod garbage;
mod hostile;
mod http_api;
mod object_store;
mod processes;
mod sessions;
mod shared_connections;
mod shell;
mod sqllogictests;
mod streaming;
mod tpcds_differential;
mod tpch_differential;
mod writes;
