//! The RPC side of scheduling: sends the launches and releases a state change calls for.

use super::*;

impl Engine {
    /// Sends launches and releases; an executor that cannot be reached is declared lost.
    pub(super) fn apply(self: &Arc<Self>, effects: Effects) {
        if !effects.stopped.is_empty() {
            let mut state = self.state.lock();
            for (executor_id, attempt) in &effects.stopped {
                if let Some(entry) = state.registry.get_mut(executor_id) {
                    entry.running.remove(attempt);
                }
            }
        }
        for (executor_id, reason) in effects.suspects {
            self.executor_lost(&executor_id, Some(reason));
        }
        for (executor_id, tasks) in effects.launches {
            let Some(mut client) = self
                .state
                .lock()
                .registry
                .get(&executor_id)
                .map(|e| e.client.clone())
            else {
                continue;
            };
            let engine = Arc::clone(self);
            tokio::spawn(async move {
                debug!(executor = %executor_id, tasks = tasks.len(), "launching tasks");
                if let Err(status) = client.launch_tasks(LaunchTasksRequest { tasks }).await {
                    let reason = format!("launching tasks failed: {}", status.message());
                    engine.executor_lost(&executor_id, Some(reason));
                }
            });
        }
        for (executor_id, request) in effects.releases {
            let client = self
                .state
                .lock()
                .registry
                .get(&executor_id)
                .map(|e| e.client.clone());
            if let Some(mut client) = client {
                tokio::spawn(async move {
                    if let Err(status) = client.release_job(request).await {
                        debug!(executor = %executor_id, %status, "release failed");
                    }
                });
            }
        }
    }
}
