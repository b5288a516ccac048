//! Runtimes of their own for work that must not share threads with a control plane.
//!
//! Executors run tasks on one: a task can hold its thread for a long time between yields
//! (a join over a large build side), and on a shared runtime `slots` such tasks would
//! starve heartbeats, job releases and the Flight service other executors fetch from.
//! The scheduler plans SQL on one: parsing, planning and optimising recurse once per
//! level of an expression, and a 4 KB statement (`1+1+...+1`) nests deeper than a
//! tokio worker's 2 MiB stack allows. Their threads get stacks sized for the statement
//! limits instead (stack memory is reserved, not touched, until used).

use std::future::Future;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

use crate::{QuiverError, Result};

/// A dedicated multi-threaded runtime; shut down in the background when dropped.
#[derive(Debug)]
pub struct DedicatedThreads {
    runtime: Option<Runtime>,
}

impl DedicatedThreads {
    /// `threads` worker threads named `name`, each with a stack of `stack_bytes`.
    pub fn new(threads: usize, name: &str, stack_bytes: usize) -> Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .thread_stack_size(stack_bytes)
            .enable_all()
            .build()
            .map_err(|e| QuiverError::Config(format!("starting the {name} threads: {e}")))?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .spawn(task)
    }
}

impl Drop for DedicatedThreads {
    fn drop(&mut self) {
        // Dropping a runtime blocks on its threads, which is not allowed inside another
        // runtime; tasks still running are abandoned at their next yield.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
