//! Starting tasks: which waiting job's tasks get the free slots, and where each runs.
//!
//! Scheduling is incremental: the engine keeps the jobs that may have a task to start
//! (`EngineState::waiting`). Every event marks the job it concerns (a submission, a
//! task's outcome, a lost executor's re-runs); a pass looks only at the marked jobs and
//! keeps those still waiting for a slot. A running job with nothing to start costs an
//! event about another job nothing.

use super::*;

impl EngineState {
    /// Job `job_id` may have tasks to start (it was submitted, or something happened
    /// to it): the next pass looks at it.
    pub(super) fn wake(&mut self, job_id: &JobId) {
        if !self.waiting.contains(job_id) {
            self.waiting.insert(job_id.clone());
        }
    }

    /// Starts what the waiting jobs can start on the free slots. Slots go round-robin
    /// between the users (sessions, without logins) with waiting work, each user's jobs
    /// in the order they came: one user's twenty queries do not hold back another's
    /// one. Once slots run out, later jobs' light stages (which need none) still start.
    pub(super) fn start_waiting_tasks(
        &mut self,
        config: &SchedulerConfig,
        counters: &EngineCounters,
    ) -> Effects {
        let mut effects = Effects::default();
        let max_query_bytes = config.limits.max_query_bytes;
        let waiting = self
            .waiting
            .iter()
            .filter_map(|job_id| self.jobs.get(job_id));
        let job_ids = fair_order(waiting.filter(|job| !job.is_finished()));
        counters.scheduling_passes.fetch_add(1, Ordering::Relaxed);
        counters
            .jobs_examined
            .fetch_add(job_ids.len() as u64, Ordering::Relaxed);
        let mut slots_left = true;
        'jobs: for job_id in job_ids {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            let held = match job.switch_joins_to_broadcast() {
                Ok(held) => held,
                Err(error) => {
                    let message = format!("cannot switch a join to broadcast: {error}");
                    fail_job(job, QuiverError::Internal(message), &mut effects);
                    continue 'jobs;
                }
            };
            for stage_id in job.runnable_stages() {
                if held.contains(&stage_id) {
                    continue;
                }
                if !slots_left && !job.stages[stage_id.0 as usize].light {
                    continue;
                }
                match job
                    .refit_stage(stage_id)
                    .and_then(|()| job.encode_stage(stage_id))
                {
                    Ok(()) => {}
                    Err(error) => {
                        fail_job(
                            job,
                            QuiverError::Internal(format!(
                                "cannot encode stage {stage_id} for executors: {error}"
                            )),
                            &mut effects,
                        );
                        continue 'jobs;
                    }
                };
                let stream_result =
                    job.environment.stream_result && stage_id == job.final_stage_id();
                let stage = &mut job.stages[stage_id.0 as usize];
                let stream_result = stream_result && !stage.light;
                let Some(shipped) = stage.encoded.as_mut() else {
                    continue; // encoded just above
                };
                let mut next = 0;
                while let Some(partition) = stage.tasks.next_pending(next) {
                    next = partition + 1;
                    let avoid = stage.failed_on[partition].as_deref();
                    // A result partition re-run while its client reads the job's
                    // result runs where the client was sent, or waits for a slot there.
                    let pinned = match stream_result {
                        true => job.result_pins.get(&(partition as u32)),
                        false => None,
                    };
                    let picked = match pinned {
                        Some(executor_id) => match self.registry.pick_exactly(executor_id) {
                            Some(picked) => Some(picked),
                            None => continue,
                        },
                        None if stage.light => self.registry.pick_least_busy(avoid),
                        None => self.registry.pick_free(avoid),
                    };
                    let Some(executor_id) = picked else {
                        if stage.light {
                            break 'jobs; // no executor at all
                        }
                        slots_left = false;
                        break;
                    };
                    let attempt = TaskAttempt {
                        job_id: job_id.clone(),
                        stage_id,
                        partition: partition as u32,
                        attempt: stage.attempts[partition],
                    };
                    stage.attempts[partition] += 1;
                    stage.touched.insert(executor_id.clone());
                    if let Some(entry) = self.registry.get_mut(&executor_id) {
                        entry.running.insert(attempt.clone());
                    }
                    stage.tasks.set(
                        partition,
                        TaskState::Running {
                            executor_id: executor_id.clone(),
                            attempt: attempt.attempt,
                        },
                    );
                    stage.attempt_log.push(AttemptRecord {
                        partition: attempt.partition,
                        attempt: attempt.attempt,
                        executor_id: executor_id.clone(),
                        started: Instant::now(),
                        ended: None,
                    });
                    if !job.launched {
                        job.launched = true;
                        counters
                            .scheduling_delay
                            .observe(job.submitted_at.elapsed());
                    }
                    let plan = shipped.bytes_for(&executor_id);
                    let plan_id = shipped.id;
                    effects
                        .launches
                        .entry(executor_id)
                        .or_default()
                        .push(TaskDefinition {
                            task: Some(attempt.to_proto()),
                            plan,
                            plan_id,
                            session_config: job.environment.settings.clone(),
                            light: stage.light,
                            stores: job.environment.stores.clone(),
                            // At least one byte: zero would mean no limit.
                            max_output_bytes: max_query_bytes
                                .saturating_sub(job.bytes_produced)
                                .max(1),
                            max_job_memory_bytes: job.environment.max_memory_bytes,
                            user: job.environment.owner.user.clone().unwrap_or_default(),
                            stream_result,
                        });
                }
            }
        }
        // A job stays waiting while it has a task that could start but found no slot.
        let jobs = &self.jobs;
        self.waiting.retain(|job_id| {
            jobs.get(job_id)
                .is_some_and(|job| !job.is_finished() && job.has_startable_tasks())
        });
        effects
    }
}

#[cfg(test)]
mod tests {
    use quiver_core::proto::{TaskKey, TaskStatus, task_status};

    use super::*;
    use crate::job::TaskEnvironment;
    use crate::planner::tests::dag_for;

    /// An engine state with one executor of `slots` slots (never called: the tests
    /// look at what a pass would launch, not at launches).
    fn state(slots: u32) -> EngineState {
        let mut state = EngineState::new(ExecutorRegistry::default());
        state
            .registry
            .register(ExecutorRegistration {
                executor_id: "e1".into(),
                host: "127.0.0.1".into(),
                port: 1,
                slots,
                ..ExecutorRegistration::default()
            })
            .unwrap();
        state
    }

    /// Submits a two-stage job (a grouped count over a two-partition table) whose
    /// stages take slots.
    async fn submit(state: &mut EngineState, name: &str) -> JobId {
        let (outcome, _) = watch::channel(JobOutcome::Running);
        let dag = dag_for("SELECT k % 3, count(*) FROM t GROUP BY k % 3").await;
        let job_id = JobId::from(name);
        let mut job = Job::new(
            job_id.clone(),
            dag,
            Arc::new(TaskEnvironment::default()),
            outcome,
        );
        assert_eq!(job.stages.len(), 2);
        for stage in &mut job.stages {
            stage.light = false;
        }
        state.wake(&job_id);
        state.jobs.insert(job_id.clone(), job);
        job_id
    }

    /// One scheduling pass: the tasks it launches, and how many jobs it looked at.
    fn pass(state: &mut EngineState) -> (Vec<TaskKey>, u64) {
        let counters = EngineCounters::default();
        let effects = state.start_waiting_tasks(&SchedulerConfig::default(), &counters);
        let launched = effects
            .launches
            .into_values()
            .flatten()
            .filter_map(|task| task.task)
            .collect();
        (launched, counters.jobs_examined.load(Ordering::Relaxed))
    }

    fn succeed(state: &mut EngineState, task: &TaskKey) {
        let status = TaskStatus {
            task: Some(task.clone()),
            executor_id: "e1".into(),
            outcome: Some(task_status::Outcome::Succeeded(Default::default())),
            operators: Vec::new(),
        };
        let attempt = TaskAttempt::from_proto(task);
        state.record_status(&attempt, &status, &SchedulerConfig::default());
    }

    #[tokio::test]
    async fn an_event_looks_only_at_the_job_it_concerns() {
        let mut state = state(100);
        let mut jobs = Vec::new();
        for name in ["a", "b", "c", "d", "e"] {
            jobs.push(submit(&mut state, name).await);
        }
        let (launched, examined) = pass(&mut state);
        assert_eq!(examined, 5);
        assert_eq!(launched.len(), 10, "each job's two first-stage tasks");
        assert!(state.waiting.is_empty(), "nothing else can start yet");

        // Job c's first stage finishes: only c is looked at, and its second stage starts.
        let of_c: Vec<&TaskKey> = launched.iter().filter(|t| t.job_id == "c").collect();
        for task in &of_c {
            succeed(&mut state, task);
        }
        let (launched, examined) = pass(&mut state);
        assert_eq!(examined, 1);
        assert!(!launched.is_empty());
        assert!(launched.iter().all(|t| t.job_id == "c" && t.stage_id == 1));
        assert!(state.waiting.is_empty());
    }

    #[tokio::test]
    async fn a_job_short_of_slots_keeps_waiting_and_takes_the_next_free_one() {
        let mut state = state(2);
        let first = submit(&mut state, "first").await;
        let second = submit(&mut state, "second").await;
        let (launched, _) = pass(&mut state);
        assert_eq!(launched.len(), 2);
        assert!(launched.iter().all(|t| t.job_id == first.to_string()));
        assert!(state.waiting.contains(&second), "it found no slot");
        assert!(
            !state.waiting.contains(&first),
            "its next stage needs this one"
        );

        // The first job's task ends, freeing a slot the second job takes.
        succeed(&mut state, &launched[0]);
        let (next, _) = pass(&mut state);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].job_id, second.to_string());
        assert!(
            state.waiting.contains(&second),
            "one of its tasks still waits"
        );
    }
}
