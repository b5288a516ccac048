//! Runs the 99 TPC-DS queries (texts and data from `scripts/gen-tpcds.py`) through a
//! Quiver cluster and through single-node DataFusion with the same total parallelism,
//! compares every answer, and reports the times side by side. Unlike the TPC-H run, a
//! query that fails or differs is reported and the run goes on: the count of agreeing
//! queries is the result.

use std::path::{Path, PathBuf};
use std::time::Instant;

use quiver::compare::{canonical_rows, same_rows};

use crate::cluster::{BenchCluster, Deployment, ProcessMemory};
use crate::tpch::{BenchError, DataLocation, datafusion_context};

/// What one query did.
#[derive(Debug, Clone)]
pub struct TpcdsOutcome {
    pub query: usize,
    pub datafusion_ms: Option<f64>,
    pub quiver_ms: Option<f64>,
    /// `None` when both answered alike; otherwise what went wrong.
    pub problem: Option<String>,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct TpcdsRun {
    pub outcomes: Vec<TpcdsOutcome>,
    /// The cluster's processes (separate-process runs only) once the tables are
    /// registered, before any query.
    pub memory_idle: Vec<ProcessMemory>,
    /// The same processes two seconds after the last query: peak during the run, and
    /// what they still hold.
    pub memory_after: Vec<ProcessMemory>,
}

/// Where `gen-tpcds.py` writes the query texts.
pub fn queries_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tpcds/queries")
}

/// The tables under `data` (one directory each).
fn tables(data: &Path) -> Result<Vec<String>, BenchError> {
    let entries = std::fs::read_dir(data).map_err(|source| BenchError::Io {
        path: data.display().to_string(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Runs `queries` over the TPC-DS tables in `data`.
pub async fn run_tpcds(
    data: &Path,
    deployment: Deployment,
    executors: usize,
    slots_per_executor: usize,
    queries: &[usize],
) -> Result<TpcdsRun, BenchError> {
    let datafusion = datafusion_context(
        executors * slots_per_executor,
        &DataLocation::local(data),
        None,
    )?;
    let cluster = BenchCluster::start(deployment, executors, slots_per_executor, None).await?;
    let quiver = cluster.client().await?;
    for table in tables(data)? {
        let statement = format!(
            "CREATE EXTERNAL TABLE {table} STORED AS PARQUET LOCATION '{}/'",
            data.join(&table).display()
        );
        datafusion.sql(&statement).await?.collect().await?;
        quiver.sql(&statement).await?;
    }
    let memory_idle = cluster.memory();
    let mut outcomes = Vec::new();
    for &number in queries {
        let path = queries_dir().join(format!("q{number}.sql"));
        let sql = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut outcome = TpcdsOutcome {
            query: number,
            datafusion_ms: None,
            quiver_ms: None,
            problem: None,
        };
        let started = Instant::now();
        let expected = match datafusion.sql(&sql).await {
            Ok(frame) => frame.collect().await,
            Err(error) => Err(error),
        };
        outcome.datafusion_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let actual = quiver.sql(&sql).await;
        outcome.quiver_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        outcome.problem = match (expected, actual) {
            (Err(error), _) => Some(format!("single-node DataFusion failed: {error}")),
            (_, Err(error)) => Some(format!("Quiver failed: {error}")),
            (Ok(expected), Ok(actual)) => {
                let in_order = |b| canonical_rows(b, false);
                let sorted = |b| canonical_rows(b, true);
                let agree = same_rows(&in_order(&actual)?, &in_order(&expected)?)
                    || same_rows(&sorted(&actual)?, &sorted(&expected)?);
                (!agree).then(|| "answers differ".to_string())
            }
        };
        eprintln!(
            "q{number:<2} datafusion {:>9.1} ms  quiver {:>9.1} ms  {}",
            outcome.datafusion_ms.unwrap_or_default(),
            outcome.quiver_ms.unwrap_or_default(),
            outcome.problem.as_deref().unwrap_or("same answer")
        );
        outcomes.push(outcome);
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let memory_after = cluster.memory();
    cluster.shutdown().await;
    Ok(TpcdsRun {
        outcomes,
        memory_idle,
        memory_after,
    })
}
