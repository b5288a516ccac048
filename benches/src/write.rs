//! The write benchmark: `CREATE TABLE lineitem_copy AS SELECT * FROM lineitem` through
//! Quiver (a write stage on the executors, then the commit) against single-node
//! DataFusion's `COPY (SELECT * FROM lineitem) TO '<dir>' STORED AS PARQUET`, with the
//! same total parallelism. Both copies are checked (row count, sum of a column) before
//! any time counts.

use std::path::PathBuf;
use std::time::Instant;

use quiver::compare::canonical_rows;

use crate::cluster::Deployment;
use crate::tpch::{BenchError, DataLocation, side_by_side};

#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub data: DataLocation,
    /// Where DataFusion writes its copies (Quiver writes into its warehouse).
    pub scratch_dir: PathBuf,
    pub iterations: usize,
    pub executors: usize,
    pub slots_per_executor: usize,
    pub deployment: Deployment,
}

/// Milliseconds per iteration for each engine.
#[derive(Debug, Clone)]
pub struct WriteRun {
    pub datafusion_ms: Vec<f64>,
    pub quiver_ms: Vec<f64>,
}

const CHECK: &str = "SELECT count(*), sum(l_extendedprice) FROM";

pub async fn run_write(options: &WriteOptions) -> Result<WriteRun, BenchError> {
    let (datafusion, cluster, quiver) = side_by_side(
        &options.data,
        options.deployment,
        options.executors,
        options.slots_per_executor,
        None,
    )
    .await?;
    let expected = canonical_rows(
        &datafusion
            .sql(&format!("{CHECK} lineitem"))
            .await?
            .collect()
            .await?,
        false,
    )?;
    let mut result = WriteRun {
        datafusion_ms: Vec::new(),
        quiver_ms: Vec::new(),
    };
    for iteration in 0..options.iterations.max(1) {
        let target = options.scratch_dir.join(format!("datafusion-{iteration}"));
        let started = Instant::now();
        datafusion
            .sql(&format!(
                "COPY (SELECT * FROM lineitem) TO '{}/' STORED AS PARQUET",
                target.display()
            ))
            .await?
            .collect()
            .await?;
        result
            .datafusion_ms
            .push(started.elapsed().as_secs_f64() * 1e3);
        let table = format!("lineitem_copy_{iteration}");
        let started = Instant::now();
        quiver
            .sql(&format!("CREATE TABLE {table} AS SELECT * FROM lineitem"))
            .await?;
        result.quiver_ms.push(started.elapsed().as_secs_f64() * 1e3);

        let copied = canonical_rows(&quiver.sql(&format!("{CHECK} {table}")).await?, false)?;
        if copied != expected {
            return Err(BenchError::WrongAnswer { query: 0 });
        }
        quiver.sql(&format!("DROP TABLE {table}")).await?;
        let _ = std::fs::remove_dir_all(&target);
        eprintln!(
            "copy {iteration}: datafusion {:>9.1} ms  quiver {:>9.1} ms",
            result.datafusion_ms[iteration], result.quiver_ms[iteration]
        );
    }
    cluster.shutdown().await;
    Ok(result)
}
