//! A Quiver executor: registers with the scheduler, runs the tasks it is sent, keeps their
//! shuffle output ([`store::ShuffleStore`]) and serves it to other executors and to clients
//! over Arrow Flight. Entry point: [`Executor::start`].
//!
//! It must not decide what runs where: placement belongs to the scheduler.

mod cancel;
mod control;
mod fetch;
mod file_blame;
mod flight;
mod idle_trim;
mod job_memory;
mod join_filters;
mod metrics;
mod result_tap;
mod runner;
mod server;
mod stage_plans;
pub mod store;
mod task_metrics;
mod work_dir;

pub use server::{Executor, ExecutorHandle};
