//! Time to the first batch of a large result: what a client waiting on `SELECT * FROM
//! lineitem` sees before its first rows, through Quiver against single-node DataFusion.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

use crate::cluster::{BenchCluster, Deployment};
use crate::tpch::BenchError;

/// How the first-batch benchmark runs.
#[derive(Debug, Clone)]
pub struct FirstBatchOptions {
    /// Directory made by `gen` (only `lineitem` is read).
    pub data: PathBuf,
    pub runs: usize,
    pub deployment: Deployment,
    pub executors: usize,
    pub slots: usize,
    /// A Python with `adbc-driver-flightsql` to measure through ADBC too; none: skipped.
    pub python: Option<PathBuf>,
}

/// The statement measured.
pub const FIRST_BATCH_SQL: &str = "SELECT * FROM lineitem";

/// One engine's fastest run: until its first batch, and until its last row.
#[derive(Debug, Clone)]
pub struct FirstBatchReport {
    pub engine: &'static str,
    pub first_batch_ms: f64,
    pub all_rows_ms: f64,
    pub rows: usize,
}

/// Reads [`FIRST_BATCH_SQL`]'s result `runs` times through Quiver's client, streamed
/// (the default) and with `quiver.stream_results` off (the client waits for the last
/// stage to finish), and on single-node DataFusion (with as many partitions as the
/// cluster has slots), timing the first batch and the whole result; the minimum of each.
pub async fn run_first_batch(
    options: &FirstBatchOptions,
) -> Result<Vec<FirstBatchReport>, BenchError> {
    let cluster =
        BenchCluster::start(options.deployment, options.executors, options.slots, None).await?;
    let outcome = measure(&cluster, options).await;
    cluster.shutdown().await;
    outcome
}

async fn measure(
    cluster: &BenchCluster,
    options: &FirstBatchOptions,
) -> Result<Vec<FirstBatchReport>, BenchError> {
    let client = cluster.client().await?;
    let unstreamed = cluster.client().await?;
    unstreamed.sql("SET quiver.stream_results = false").await?;
    let partitions = (options.executors * options.slots).max(1);
    let datafusion =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    let create = format!(
        "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/'",
        options.data.join("lineitem").display()
    );
    client.sql(&create).await?;
    datafusion.sql(&create).await?.collect().await?;

    let mut quiver = Vec::new();
    let mut whole = Vec::new();
    let mut baseline = Vec::new();
    for _ in 0..options.runs.max(1) {
        let started = Instant::now();
        let (_, stream) = client.sql_stream(FIRST_BATCH_SQL).await?;
        quiver.push(drain(started, stream.map(|batch| batch.map_err(BenchError::from))).await?);

        let started = Instant::now();
        let (_, stream) = unstreamed.sql_stream(FIRST_BATCH_SQL).await?;
        whole.push(drain(started, stream.map(|batch| batch.map_err(BenchError::from))).await?);

        let started = Instant::now();
        let stream: SendableRecordBatchStream = datafusion
            .sql(FIRST_BATCH_SQL)
            .await?
            .execute_stream()
            .await?;
        baseline.push(drain(started, stream.map(|batch| batch.map_err(BenchError::from))).await?);
    }
    let mut reports = vec![
        fastest("Quiver", &quiver)?,
        fastest("Quiver, stream_results off", &whole)?,
    ];
    if let Some(python) = &options.python {
        let adbc = time_adbc(python, &cluster.url(), options.runs.max(1))?;
        reports.push(fastest("Quiver through ADBC (Python)", &adbc)?);
    }
    reports.push(fastest("DataFusion", &baseline)?);
    Ok(reports)
}

/// Each run's (first batch, all rows, rows) through ADBC:
/// `benches/python/adbc_first_batch.py` run by `python` against the scheduler at `url`.
fn time_adbc(
    python: &std::path::Path,
    url: &str,
    runs: usize,
) -> Result<Vec<(Duration, Duration, usize)>, BenchError> {
    let (script, text) = crate::latency::run_adbc_script(
        python,
        "adbc_first_batch.py",
        url,
        runs,
        &[FIRST_BATCH_SQL],
    )?;
    let measured: Vec<(Duration, Duration, usize)> = text
        .lines()
        .filter_map(|line| {
            let mut figures = line.split_whitespace();
            let first = figures.next()?.parse::<f64>().ok()?;
            let all = figures.next()?.parse::<f64>().ok()?;
            let rows = figures.next()?.parse::<usize>().ok()?;
            Some((
                Duration::from_secs_f64(first / 1e3),
                Duration::from_secs_f64(all / 1e3),
                rows,
            ))
        })
        .collect();
    if measured.len() != runs {
        return Err(BenchError::Measurement(format!(
            "{} printed {text:?}",
            script.display()
        )));
    }
    Ok(measured)
}

/// Reads `stream` to its end: the time to its first batch, to its end, and its rows.
async fn drain(
    started: Instant,
    mut stream: impl futures::Stream<Item = Result<datafusion::arrow::array::RecordBatch, BenchError>>
    + Unpin,
) -> Result<(Duration, Duration, usize), BenchError> {
    let mut first = None;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if first.is_none() && batch.num_rows() > 0 {
            first = Some(started.elapsed());
        }
        rows += batch.num_rows();
    }
    let all = started.elapsed();
    Ok((first.unwrap_or(all), all, rows))
}

fn fastest(
    engine: &'static str,
    runs: &[(Duration, Duration, usize)],
) -> Result<FirstBatchReport, BenchError> {
    let first = runs.iter().map(|run| run.0).min();
    let all = runs.iter().map(|run| run.1).min();
    let rows = runs.first().map(|run| run.2);
    match (first, all, rows) {
        (Some(first), Some(all), Some(rows)) => Ok(FirstBatchReport {
            engine,
            first_batch_ms: first.as_secs_f64() * 1e3,
            all_rows_ms: all.as_secs_f64() * 1e3,
            rows,
        }),
        _ => Err(BenchError::Measurement(format!("{engine}: no run"))),
    }
}
