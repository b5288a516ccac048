//! Round-trip latency through the Flight SQL front door, and the scheduler's cost per task.

use std::path::Path;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use quiver::{QuiverClient, StandaloneCluster, StandaloneConfig};

use crate::tpch::BenchError;

/// Latency percentiles of one statement, in milliseconds.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    pub name: String,
    pub runs: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The same statement on single-node DataFusion in this process (p50).
    pub datafusion_p50_ms: f64,
}

/// Scheduling overhead measured with one stage of many near-empty tasks.
#[derive(Debug, Clone)]
pub struct TaskOverhead {
    pub tasks: usize,
    pub per_task_ms: f64,
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// Runs `statement` `runs` times; returns the sorted durations.
async fn time_runs<F, Fut>(runs: usize, mut statement: F) -> Result<Vec<Duration>, BenchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), BenchError>>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        statement().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

async fn time_quiver(
    client: &QuiverClient,
    sql: &str,
    runs: usize,
) -> Result<Vec<Duration>, BenchError> {
    time_runs(runs, || async {
        client.sql(sql).await?;
        Ok(())
    })
    .await
}

async fn time_datafusion(
    context: &SessionContext,
    sql: &str,
    runs: usize,
) -> Result<Vec<Duration>, BenchError> {
    time_runs(runs, || async {
        context.sql(sql).await?.collect().await?;
        Ok(())
    })
    .await
}

/// Measures `SELECT 1` and a small group-by over `nation` (from `data_dir`), `runs` times
/// each after a warm-up, on a standalone cluster of two executors.
pub async fn run_latency(
    data_dir: &Path,
    runs: usize,
) -> Result<(Vec<LatencyReport>, TaskOverhead), BenchError> {
    let cluster = StandaloneCluster::start(StandaloneConfig::default()).await?;
    let client = cluster.client().await?;
    let datafusion = SessionContext::new();
    let create = format!(
        "CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION '{}/'",
        data_dir.join("nation").display()
    );
    client.sql(&create).await?;
    datafusion.sql(&create).await?.collect().await?;

    let statements = [
        ("SELECT 1", "SELECT 1"),
        (
            "group-by over 25 rows",
            "SELECT n_regionkey, count(*) FROM nation GROUP BY n_regionkey",
        ),
    ];
    let mut reports = Vec::new();
    for (name, sql) in statements {
        time_quiver(&client, sql, 10).await?;
        time_datafusion(&datafusion, sql, 10).await?;
        let quiver = time_quiver(&client, sql, runs).await?;
        let baseline = time_datafusion(&datafusion, sql, runs).await?;
        reports.push(LatencyReport {
            name: name.to_string(),
            runs,
            p50_ms: percentile(&quiver, 0.5),
            p99_ms: percentile(&quiver, 0.99),
            datafusion_p50_ms: percentile(&baseline, 0.5),
        });
    }

    // One stage of many tasks that each read (almost) nothing: the time above a one-task
    // run is the scheduler's and executors' per-task cost.
    let tasks = 64;
    let scan = "SELECT n_nationkey FROM nation WHERE n_nationkey < 0";
    client
        .sql("SET datafusion.optimizer.repartition_file_min_size = 1")
        .await?;
    client
        .sql("SET datafusion.execution.target_partitions = 1")
        .await?;
    let one = percentile(&time_quiver(&client, scan, 20).await?, 0.5);
    client
        .sql(&format!(
            "SET datafusion.execution.target_partitions = {tasks}"
        ))
        .await?;
    let many = percentile(&time_quiver(&client, scan, 20).await?, 0.5);
    cluster.shutdown().await;
    Ok((
        reports,
        TaskOverhead {
            tasks,
            per_task_ms: (many - one).max(0.0) / (tasks - 1) as f64,
        },
    ))
}
