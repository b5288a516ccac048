//! Round-trip latency through the Flight SQL front door, and the scheduler's cost per task.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use quiver::QuiverClient;

use crate::cluster::{BenchCluster, Deployment};
use crate::tpch::BenchError;

/// How the latency benchmark runs.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    /// Directory made by `gen` (only `nation` is read).
    pub data: PathBuf,
    pub runs: usize,
    pub deployment: Deployment,
    pub executors: usize,
    pub slots: usize,
    /// Tasks of the stage that measures the cost per task.
    pub tasks: usize,
    /// A Python with `adbc-driver-flightsql` to measure through ADBC too; none: skipped.
    pub python: Option<PathBuf>,
}

impl LatencyOptions {
    /// `runs` of each statement on `deployment` (2 executors x 1 slot), a stage of 1,000
    /// tasks, and ADBC through the project's virtual environment when it exists.
    pub fn new(data: &Path, runs: usize, deployment: Deployment) -> Self {
        Self {
            data: data.to_path_buf(),
            runs,
            deployment,
            executors: 2,
            slots: 1,
            tasks: 1000,
            python: project_python(),
        }
    }
}

/// Runs `benches/python/<name>` with `python` against the scheduler at `url` (as a
/// Flight SQL URI), `runs` and `statements` as its arguments: the script's path and
/// what it printed.
pub(crate) fn run_adbc_script(
    python: &Path,
    name: &str,
    url: &str,
    runs: usize,
    statements: &[&str],
) -> Result<(PathBuf, String), BenchError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name);
    let output = Command::new(python)
        .arg(&script)
        .arg(url.replacen("http://", "grpc://", 1))
        .arg(runs.to_string())
        .args(statements)
        .output()
        .map_err(|source| BenchError::Io {
            path: python.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(BenchError::Measurement(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    Ok((script, text))
}

/// The project's virtual environment's Python (with the ADBC driver), when
/// `scripts/python-env.sh` has made it.
pub fn project_python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    venv.is_file().then_some(venv)
}

/// Latency percentiles of one statement, in milliseconds.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    pub name: String,
    pub runs: usize,
    /// Through Quiver's own Rust client.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Through ADBC from Python (p50, p99), when measured.
    pub adbc_ms: Option<(f64, f64)>,
    /// The same statement on single-node DataFusion in this process (p50).
    pub datafusion_p50_ms: f64,
}

/// Scheduling overhead measured with one stage of many near-empty tasks.
#[derive(Debug, Clone)]
pub struct TaskOverhead {
    /// Tasks the stage ran.
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

/// The statements measured: a name and the SQL.
const STATEMENTS: [(&str, &str); 2] = [
    ("SELECT 1", "SELECT 1"),
    (
        "group-by over 25 rows",
        "SELECT n_regionkey, count(*) FROM nation GROUP BY n_regionkey",
    ),
];

/// Measures `SELECT 1` and a small group-by over `nation`, `runs` times each after a
/// warm-up, through Quiver's client, through ADBC and on single-node DataFusion; then the
/// cost per task of one stage of `tasks` tasks.
pub async fn run_latency(
    options: &LatencyOptions,
) -> Result<(Vec<LatencyReport>, TaskOverhead), BenchError> {
    let runs = options.runs.max(1);
    let cluster =
        BenchCluster::start(options.deployment, options.executors, options.slots, None).await?;
    let outcome = measure(&cluster, options, runs).await;
    cluster.shutdown().await;
    outcome
}

async fn measure(
    cluster: &BenchCluster,
    options: &LatencyOptions,
    runs: usize,
) -> Result<(Vec<LatencyReport>, TaskOverhead), BenchError> {
    let client = cluster.client().await?;
    let datafusion = SessionContext::new();
    let create = format!(
        "CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION '{}/'",
        options.data.join("nation").display()
    );
    client.sql(&create).await?;
    datafusion.sql(&create).await?.collect().await?;

    let adbc = match &options.python {
        Some(python) => Some(time_adbc(python, &cluster.url(), runs)?),
        None => None,
    };
    let mut reports = Vec::new();
    for (index, (name, sql)) in STATEMENTS.into_iter().enumerate() {
        time_quiver(&client, sql, 10).await?;
        time_datafusion(&datafusion, sql, 10).await?;
        let quiver = time_quiver(&client, sql, runs).await?;
        let baseline = time_datafusion(&datafusion, sql, runs).await?;
        reports.push(LatencyReport {
            name: name.to_string(),
            runs,
            p50_ms: percentile(&quiver, 0.5),
            p99_ms: percentile(&quiver, 0.99),
            adbc_ms: adbc.as_ref().map(|measured| measured[index]),
            datafusion_p50_ms: percentile(&baseline, 0.5),
        });
    }

    // One stage of many tasks that each read (almost) nothing: the time above a one-task
    // run is the scheduler's and executors' per-task cost.
    let scan = "SELECT n_nationkey FROM nation WHERE n_nationkey < 0";
    client
        .sql("SET datafusion.optimizer.repartition_file_min_size = 1")
        .await?;
    // Without it DataFusion spreads the scan's ranges round robin over the target width
    // when they are fewer: a second stage whose every task reads every producer.
    client
        .sql("SET datafusion.optimizer.enable_round_robin_repartition = false")
        .await?;
    client
        .sql("SET datafusion.execution.target_partitions = 1")
        .await?;
    let one = percentile(&time_quiver(&client, scan, 20).await?, 0.5);
    client
        .sql(&format!(
            "SET datafusion.execution.target_partitions = {}",
            options.tasks
        ))
        .await?;
    let tasks = single_stage_tasks(&client, scan).await?;
    let many = percentile(&time_quiver(&client, scan, 5).await?, 0.5);
    Ok((
        reports,
        TaskOverhead {
            tasks,
            per_task_ms: (many - one).max(0.0) / tasks.saturating_sub(1).max(1) as f64,
        },
    ))
}

/// The tasks of `sql`'s one stage, read from `EXPLAIN` (`Stage 0 (N tasks)`); an error
/// when the plan has more stages than one.
async fn single_stage_tasks(client: &QuiverClient, sql: &str) -> Result<usize, BenchError> {
    let batches = client.sql(&format!("EXPLAIN {sql}")).await?;
    let text = quiver::compare::canonical_rows(&batches, false)?.join("\n");
    if text.contains("Stage 1 (") {
        return Err(BenchError::Measurement(format!(
            "`{sql}` should run as one stage:\n{text}"
        )));
    }
    text.split("Stage 0 (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| BenchError::Measurement(format!("no task count in EXPLAIN:\n{text}")))
}

/// Each statement's (p50, p99) through ADBC: `benches/python/adbc_latency.py` run by
/// `python` against the scheduler at `url`.
fn time_adbc(python: &Path, url: &str, runs: usize) -> Result<Vec<(f64, f64)>, BenchError> {
    let statements: Vec<&str> = STATEMENTS.iter().map(|(_, sql)| *sql).collect();
    let (script, text) = run_adbc_script(python, "adbc_latency.py", url, runs, &statements)?;
    let measured: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|line| {
            let mut figures = line.split_whitespace().map(str::parse::<f64>);
            match (figures.next(), figures.next()) {
                (Some(Ok(p50)), Some(Ok(p99))) => Some((p50, p99)),
                _ => None,
            }
        })
        .collect();
    if measured.len() != STATEMENTS.len() {
        return Err(BenchError::Measurement(format!(
            "{} printed {text:?}",
            script.display()
        )));
    }
    Ok(measured)
}
