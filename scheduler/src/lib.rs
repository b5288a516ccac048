//! The Quiver scheduler: holds the catalog and a DataFusion session, plans SQL, cuts the
//! physical plan into a DAG of stages ([`planner`]), tracks jobs, stages and tasks
//! ([`engine`]), places tasks on registered executors, and serves clients through Arrow
//! Flight SQL. Entry point: [`Scheduler::start`].
//!
//! It must not run query operators itself beyond planning: executors do the work.

pub mod access_control;
pub mod access_sql;
pub mod adaptive;
pub mod admission;
pub mod audit;
pub mod auth;
mod broadcast_switch;
pub mod catalog_store;
pub mod client_session;
mod control;
mod delta_create;
mod delta_tables;
mod distributable;
mod durable_catalog;
mod empty_inputs;
pub mod engine;
mod exchange_filters;
mod explain_analyze;
mod file_probe;
pub mod flight_sql;
mod front;
mod held_results;
mod http_api;
mod job;
pub mod job_report;
mod json;
mod limits;
mod locations;
mod managed;
pub mod metadata;
mod metrics;
mod params;
mod placement;
pub mod planner;
mod planning;
mod polling;
mod prepared;
mod privileges;
pub mod query_history;
pub mod quiver_options;
mod registry;
mod server;
pub mod session;
mod session_options;
mod sql_tokens;
mod stage_tasks;
mod state_dir;
mod system;
mod time_travel;
mod transitions;
mod visible_catalog;
mod web_ui;
mod writes;

pub use job::{JobOutcome, TaskEnvironment};
pub use server::{Scheduler, SchedulerHandle};
