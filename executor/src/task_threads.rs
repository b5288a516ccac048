//! The threads tasks compute on, kept apart from the executor's control plane.
//!
//! A task can hold its thread for a long time between yields (a join over a large build
//! side). On a shared runtime, `slots` such tasks would occupy every worker thread and
//! starve what must stay responsive: heartbeats (the scheduler would declare the
//! executor lost), job releases (a cancel would wait for the computation it cancels) and
//! the Flight service other executors fetch shuffle output from. Tasks therefore run on
//! a runtime of their own with one worker thread per slot.

use std::future::Future;

use quiver_core::{QuiverError, Result};
use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// A dedicated multi-threaded runtime; shut down in the background when dropped.
#[derive(Debug)]
pub(crate) struct TaskThreads {
    runtime: Option<Runtime>,
}

impl TaskThreads {
    pub(crate) fn new(threads: usize, name: &str) -> Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|e| QuiverError::Config(format!("starting the task threads: {e}")))?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    pub(crate) fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
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

impl Drop for TaskThreads {
    fn drop(&mut self) {
        // Dropping a runtime blocks on its threads, which is not allowed inside another
        // runtime; tasks still running are abandoned at their next yield.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
