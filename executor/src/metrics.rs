//! The executor's `/metrics`: its tasks, memory and shuffle store in Prometheus' text
//! format, every sample labelled with the executor's id.

use std::sync::atomic::Ordering;

use quiver_core::prometheus::{CallCounts, Exposition};

use crate::runner::TaskRunner;
use crate::store::ShuffleStore;

/// The text a scrape of this executor answers with.
pub(crate) fn render(runner: &TaskRunner, store: &ShuffleStore, calls: &CallCounts) -> String {
    let id = [("executor", runner.executor_id.as_str())];
    let labelled = |value: f64| [(id.as_slice(), value)];
    let mut text = Exposition::default();
    text.gauge(
        "quiver_executor_tasks_running",
        "Tasks running on this executor.",
        &labelled(runner.running_tasks() as f64),
    );
    text.outcomes(
        "quiver_executor_tasks_total",
        "Tasks ended on this executor, by outcome.",
        &id,
        runner.tasks_succeeded.load(Ordering::Relaxed),
        runner.tasks_failed.load(Ordering::Relaxed),
    );
    text.histogram(
        "quiver_executor_task_duration_seconds",
        "How long successful tasks ran on this executor.",
        &runner.task_duration,
    );
    text.gauge(
        "quiver_executor_memory_pool_reserved_bytes",
        "Memory running tasks hold in the executor's pool.",
        &labelled(runner.base_state.runtime_env().memory_pool.reserved() as f64),
    );
    text.gauge(
        "quiver_executor_shuffle_memory_bytes",
        "Shuffle output and results held in memory (the rest is spilled to files).",
        &labelled(store.memory_used() as f64),
    );
    text.gauge(
        "quiver_executor_shuffle_spilled_bytes",
        "Shuffle output and results held in spill files.",
        &labelled(store.spilled_now() as f64),
    );
    let counters = &store.counters;
    text.counter(
        "quiver_executor_shuffle_spilled_bytes_total",
        "Bytes of shuffle output spilled to files.",
        &[(
            id.as_slice(),
            counters.spilled_bytes.load(Ordering::Relaxed),
        )],
    );
    let source = |source: &'static str| [("executor", id[0].1), ("source", source)];
    let (local, remote) = (source("local"), source("remote"));
    text.counter(
        "quiver_executor_shuffle_fetched_bytes_total",
        "Bytes of shuffle input this executor's tasks read, from a store in this process \
         (local) or from other executors over Flight (remote).",
        &[
            (
                local.as_slice(),
                counters.fetched_local_bytes.load(Ordering::Relaxed),
            ),
            (
                remote.as_slice(),
                counters.fetched_remote_bytes.load(Ordering::Relaxed),
            ),
        ],
    );
    calls.write(
        &mut text,
        "quiver_executor_calls_total",
        "Calls this executor answered (shuffle and result fetches over Flight, the \
         scheduler's control calls), by method and gRPC status code.",
        &id,
    );
    text.finish()
}
