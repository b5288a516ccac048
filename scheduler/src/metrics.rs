//! The scheduler's `/metrics`: statements, jobs, tasks, executors and slots in
//! Prometheus' text format. Counters and histograms are kept where events happen;
//! gauges are read from the engine at scrape time, so they are never stale.

use std::sync::atomic::Ordering;

use quiver_core::prometheus::Exposition;

use crate::engine::Engine;
use quiver_core::prometheus::CallCounts;

/// The scheduler's gRPC calls: the client port's Flight service and the control service.
#[derive(Debug, Default)]
pub(crate) struct SchedulerCalls {
    pub(crate) flight: CallCounts,
    pub(crate) control: CallCounts,
}
use crate::session::QueryService;

/// The text a scrape of the scheduler answers with.
pub(crate) fn render(engine: &Engine, queries: &QueryService, calls: &SchedulerCalls) -> String {
    let mut text = Exposition::default();
    let statements = &queries.counters;
    text.outcomes(
        "quiver_statements_total",
        "Statements ended, by outcome.",
        &[],
        statements.succeeded.load(Ordering::Relaxed),
        statements.failed.load(Ordering::Relaxed),
    );
    text.histogram(
        "quiver_statement_duration_seconds",
        "Time from a statement's arrival to its outcome.",
        &statements.duration,
    );
    text.gauge(
        "quiver_statements_queued",
        "Statements waiting in their users' lines for a running slot.",
        &[(&[], queries.queued_statements() as f64)],
    );
    text.gauge(
        "quiver_jobs_running",
        "Jobs (queries' distributed plans) not yet finished.",
        &[(&[], engine.active_jobs() as f64)],
    );
    let counters = &engine.counters;
    text.outcomes(
        "quiver_tasks_total",
        "Task attempts ended, by outcome.",
        &[],
        counters.tasks_succeeded.load(Ordering::Relaxed),
        counters.tasks_failed.load(Ordering::Relaxed),
    );
    text.histogram(
        "quiver_task_duration_seconds",
        "How long successful tasks ran on their executors.",
        &counters.task_duration,
    );
    text.histogram(
        "quiver_scheduling_delay_seconds",
        "From a job's submission to the launch of its first task.",
        &counters.scheduling_delay,
    );
    text.counter(
        "quiver_scheduling_passes_total",
        "Passes of the scheduler looking for tasks to start (one per event).",
        &[(&[], counters.scheduling_passes.load(Ordering::Relaxed))],
    );
    text.counter(
        "quiver_scheduling_jobs_examined_total",
        "Jobs those passes looked at: the jobs an event concerned and those waiting for a slot.",
        &[(&[], counters.jobs_examined.load(Ordering::Relaxed))],
    );
    let executors = engine.executors();
    let slots: u64 = executors.iter().map(|e| u64::from(e.slots)).sum();
    let running: usize = executors.iter().map(|e| e.running_tasks).sum();
    text.gauge(
        "quiver_executors_alive",
        "Executors registered and alive.",
        &[(&[], executors.len() as f64)],
    );
    text.counter(
        "quiver_executors_lost_total",
        "Executors declared lost (heartbeats stopped or the connection dropped).",
        &[(&[], counters.executors_lost.load(Ordering::Relaxed))],
    );
    text.gauge(
        "quiver_slots",
        "Task slots of the live executors, by state.",
        &[
            (&[("state", "total")], slots as f64),
            (&[("state", "used")], running as f64),
        ],
    );
    let labels: Vec<[(&str, &str); 1]> = executors
        .iter()
        .map(|e| [("executor", e.executor_id.as_str())])
        .collect();
    let reserved: Vec<(&[(&str, &str)], f64)> = labels
        .iter()
        .zip(&executors)
        .map(|(labels, e)| (labels.as_slice(), e.memory_reserved as f64))
        .collect();
    text.gauge(
        "quiver_executor_memory_reserved_bytes",
        "Memory the running tasks hold, per executor, at its last heartbeat.",
        &reserved,
    );
    calls.flight.write(
        &mut text,
        "quiver_flight_calls_total",
        "Flight (and Flight SQL) calls answered, by method and gRPC status code.",
        &[],
    );
    calls.control.write(
        &mut text,
        "quiver_control_calls_total",
        "Executors' calls to the scheduler's control service, by method and gRPC status code.",
        &[],
    );
    text.finish()
}
