//! Executors joining, attaching, heartbeating, draining and going away, and the periodic
//! upkeep that expires silent executors and finished jobs' results.

use super::*;

impl Engine {
    pub fn register_executor(
        self: &Arc<Self>,
        registration: ExecutorRegistration,
    ) -> Result<(), QuiverError> {
        let executor_id = registration.executor_id.clone();
        let count = {
            let mut state = self.state.lock();
            if state.registry.register(registration)? {
                info!(executor = %executor_id, "executor registered");
            }
            state.empty_since = None;
            state.registry.len()
        };
        self.executor_count.send_replace(count);
        self.schedule();
        Ok(())
    }

    /// An executor opened its `Attach` stream; returns the attachment's number, or `None`
    /// when the executor is not registered.
    pub fn attach(&self, executor_id: &str) -> Option<u64> {
        let mut state = self.state.lock();
        state.attachments += 1;
        let number = state.attachments;
        let entry = state.registry.get_mut(executor_id)?;
        entry.attachment = number;
        Some(number)
    }

    /// An executor's `Attach` stream closed: unless a newer one replaced it, the executor
    /// is gone (its process died or its connection broke), and is declared lost now.
    pub fn detached(self: &Arc<Self>, executor_id: &str, attachment: u64) {
        if *self.stopped.borrow() {
            return;
        }
        let current = self
            .state
            .lock()
            .registry
            .get(executor_id)
            .is_some_and(|entry| entry.attachment == attachment);
        if current {
            self.executor_lost(executor_id, Some("its connection closed".to_string()));
        }
    }

    /// An executor announced its shutdown: no new tasks go there.
    pub fn drain_executor(&self, executor_id: &str) {
        if let Some(entry) = self.state.lock().registry.get_mut(executor_id) {
            info!(executor = %executor_id, "executor draining");
            entry.draining = true;
        }
    }

    /// Records a heartbeat. Answers whether the executor must register again (the
    /// scheduler does not know it), which of the jobs it holds data for have ended here,
    /// and which of its running attempts nobody expects: a release or a stop it missed
    /// (it was away, the message was lost, or this scheduler restarted) would otherwise
    /// leave that data, or that computation, behind for good.
    pub fn heartbeat(&self, beat: &HeartbeatRequest) -> HeartbeatResponse {
        let mut state = self.state.lock();
        let known = state.registry.heartbeat(beat);
        let expected = state.registry.get(&beat.executor_id).map(|e| &e.running);
        let stray_tasks: Vec<TaskKey> = beat
            .running
            .iter()
            .filter(|key| {
                expected.is_none_or(|running| !running.contains(&TaskAttempt::from_proto(key)))
            })
            .cloned()
            .collect();
        if !stray_tasks.is_empty() {
            info!(executor = %beat.executor_id, tasks = stray_tasks.len(), "stopping tasks nobody waits for");
        }
        let ended = beat
            .held_jobs
            .iter()
            .filter(|job| !state.jobs.contains_key(&JobId::from(job.as_str())))
            .cloned()
            .collect::<Vec<_>>();
        if !ended.is_empty() {
            debug!(executor = %beat.executor_id, jobs = ended.len(), "executor holds data of ended jobs");
        }
        HeartbeatResponse {
            reregister: !known,
            release_jobs: ended,
            stray_tasks,
        }
    }

    /// Forgets an executor: what it ran or held is scheduled again elsewhere. Queries fail
    /// only if no executor is left for the grace period (see housekeeping).
    pub fn executor_lost(self: &Arc<Self>, executor_id: &str, reason: Option<String>) {
        self.counters.executors_lost.fetch_add(1, Ordering::Relaxed);
        self.forget_executor(executor_id, reason, false);
    }

    /// An executor that shut down gracefully and said so: forgotten like a lost one, but
    /// nothing went wrong.
    pub fn executor_left(self: &Arc<Self>, executor_id: &str) {
        self.forget_executor(executor_id, Some("it shut down".to_string()), true);
    }

    fn forget_executor(self: &Arc<Self>, executor_id: &str, reason: Option<String>, left: bool) {
        let mut effects = Effects::default();
        let count = {
            let mut state = self.state.lock();
            let Some(entry) = state.registry.remove(executor_id) else {
                return;
            };
            if left {
                info!(executor = %executor_id, "executor left the cluster");
            } else {
                warn!(executor = %executor_id, reason = ?reason, "executor lost");
            }
            let reason = reason.unwrap_or_else(|| "it stopped heartbeating".to_string());
            state.last_loss = Some(format!("{executor_id} at {}: {reason}", entry.url));
            if state.departed.len() >= DEPARTED_EXECUTORS_KEPT {
                state.departed.pop_front();
            }
            state.departed.push_back(DepartedExecutor {
                executor_id: executor_id.to_string(),
                url: entry.url.clone(),
                left,
                reason: reason.clone(),
                at: std::time::SystemTime::now(),
            });
            let mut rerunning = Vec::new();
            for job in state.jobs.values_mut() {
                // Its client may already have read part of a result partition there: a
                // re-run would send those rows again.
                if let Some(partition) = job.readable_result_on(executor_id) {
                    let error = QuiverError::TaskFailed {
                        stage_id: job.final_stage_id().0,
                        partition,
                        executor_id: executor_id.to_string(),
                        message: format!(
                            "executor {executor_id} was lost ({reason}) while the client could \
                             be reading this result partition from it; the query fails rather \
                             than send rows twice"
                        ),
                    };
                    fail_job(job, error, &mut effects);
                }
                if !job.is_finished() {
                    let rerun = job.forget_executor(executor_id);
                    if rerun > 0 {
                        info!(job = %job.job_id, tasks = rerun, "re-running tasks of a lost executor");
                        rerunning.push(job.job_id.clone());
                    }
                }
            }
            for job_id in &rerunning {
                state.wake(job_id);
            }
            if state.registry.is_empty() {
                state.empty_since = Some(Instant::now());
            }
            state.registry.len()
        };
        self.executor_count.send_replace(count);
        self.apply(effects);
        self.schedule();
    }

    /// Periodic upkeep: expires silent executors, fails jobs left without executors,
    /// and drops finished jobs' results after the retention time.
    pub fn spawn_housekeeping(self: &Arc<Self>) -> JoinHandle<()> {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let period = (engine.config.heartbeat_interval / 4)
                .clamp(Duration::from_millis(20), Duration::from_millis(250));
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                engine.housekeeping();
            }
        })
    }

    fn housekeeping(self: &Arc<Self>) {
        let expired = self
            .state
            .lock()
            .registry
            .expired(self.config.executor_timeout);
        for executor_id in expired {
            self.executor_lost(&executor_id, None);
        }
        let mut effects = Effects::default();
        {
            let mut state = self.state.lock();
            let starved = state
                .empty_since
                .is_some_and(|since| since.elapsed() >= self.config.no_executor_grace);
            let retention = self.config.result_retention;
            let mut expired_jobs = Vec::new();
            let last_loss = state.last_loss.clone();
            for job in state.jobs.values_mut() {
                if starved && !job.is_finished() {
                    let error = QuiverError::NoExecutors {
                        waited_secs: self.config.no_executor_grace.as_secs(),
                        last_loss: last_loss.clone(),
                    };
                    fail_job(job, error, &mut effects);
                }
                if job.finished_at.is_some_and(|at| at.elapsed() >= retention) {
                    expired_jobs.push(job.job_id.clone());
                }
            }
            for job_id in expired_jobs {
                if let Some(job) = state.retire(&job_id) {
                    release_everywhere(job, false, &mut effects);
                }
            }
        }
        self.apply(effects);
    }
}
