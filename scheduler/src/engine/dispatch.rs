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
            let Some((mut client, url)) = self
                .state
                .lock()
                .registry
                .get(&executor_id)
                .map(|e| (e.client.clone(), e.url.clone()))
            else {
                continue;
            };
            let results: Vec<TaskAttempt> = tasks
                .iter()
                .filter(|task| task.stream_result)
                .filter_map(|task| task.task.as_ref().map(TaskAttempt::from_proto))
                .collect();
            let engine = Arc::clone(self);
            tokio::spawn(async move {
                debug!(executor = %executor_id, tasks = tasks.len(), "launching tasks");
                match client.launch_tasks(LaunchTasksRequest { tasks }).await {
                    Ok(_) if !results.is_empty() => engine.results_accepted(&url, &results),
                    Ok(_) => {}
                    Err(status) => {
                        let reason = format!("launching tasks failed: {}", status.message());
                        engine.executor_lost(&executor_id, Some(reason));
                    }
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

    /// An executor at `flight_url` accepted these result tasks: their taps are open
    /// there, so the job's client may read once all of its result tasks are.
    fn results_accepted(&self, flight_url: &str, attempts: &[TaskAttempt]) {
        let mut state = self.state.lock();
        let mut jobs: Vec<&JobId> = Vec::new();
        for attempt in attempts {
            if let Some(job) = state.jobs.get_mut(&attempt.job_id) {
                job.accept_result_launch(attempt.partition, attempt.attempt, flight_url);
                jobs.push(&attempt.job_id);
            }
        }
        jobs.dedup();
        for job_id in jobs {
            if let Some(job) = state.jobs.get_mut(job_id) {
                job.publish_if_readable();
            }
        }
    }
}
