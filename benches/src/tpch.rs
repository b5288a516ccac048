//! Runs the 22 TPC-H queries through a Quiver standalone cluster and through single-node
//! DataFusion with the same total parallelism, checks that the answers agree, and reports
//! the times side by side.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use quiver::QuiverClient;
use quiver::compare::canonical_rows;
use quiver_core::storage::{StorageOptions, StoreRegistry};

use crate::cluster::{BenchCluster, Deployment, ProcessMemory};
use crate::datagen::TABLES;

/// Where the query texts live in the repository.
pub fn queries_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tpch/queries")
}

/// The text of TPC-H query `number` (1..=22).
pub fn query_sql(number: usize) -> Result<String, BenchError> {
    let path = queries_dir().join(format!("q{number}.sql"));
    std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Where the TPC-H tables are: a local directory made by `gen`, or an object store URL
/// (`s3://bucket/prefix`) with the storage options to reach it.
#[derive(Debug, Clone)]
pub struct DataLocation {
    base: String,
    /// Storage options (`aws.endpoint` ...): Quiver gets them as table options,
    /// single-node DataFusion as the configuration of its object store.
    options: Vec<(String, String)>,
}

impl DataLocation {
    pub fn local(dir: &Path) -> Self {
        Self {
            base: dir.display().to_string(),
            options: Vec::new(),
        }
    }

    pub fn new(base: &str, options: Vec<(String, String)>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            options,
        }
    }

    fn table(&self, table: &str) -> String {
        format!("{}/{table}/", self.base)
    }
}

/// `CREATE EXTERNAL TABLE` for every TPC-H table under `data/<table>/`, with the storage
/// options when `with_options`.
pub fn create_table_statements(data: &DataLocation, with_options: bool) -> Vec<String> {
    let options = if with_options && !data.options.is_empty() {
        let pairs: Vec<String> = data
            .options
            .iter()
            .map(|(key, value)| format!("'{key}' '{value}'"))
            .collect();
        format!(" OPTIONS ({})", pairs.join(", "))
    } else {
        String::new()
    };
    TABLES
        .iter()
        .map(|table| {
            format!(
                "CREATE EXTERNAL TABLE {table} STORED AS PARQUET LOCATION '{}'{options}",
                data.table(table)
            )
        })
        .collect()
}

/// Single-node DataFusion with `parallelism` partitions, reaching `data` as Quiver does.
pub(crate) fn datafusion_context(
    parallelism: usize,
    data: &DataLocation,
    memory_limit: Option<usize>,
) -> Result<SessionContext, BenchError> {
    let config = SessionConfig::new().with_target_partitions(parallelism);
    let stores = Arc::new(StoreRegistry::new());
    if let Ok(url) = url::Url::parse(&data.base)
        && url.scheme().len() > 1
    {
        let options = StorageOptions::new(data.options.iter().cloned().collect());
        stores.configure(&url, &options)?;
    }
    let mut runtime = RuntimeEnvBuilder::new().with_object_store_registry(stores);
    if let Some(limit) = memory_limit {
        runtime = runtime.with_memory_limit(limit, 1.0);
    }
    let runtime = runtime.build_arc()?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("DataFusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("Quiver: {0}")]
    Quiver(#[from] quiver::ClientError),
    #[error("comparing results: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("q{query}: Quiver's answer differs from DataFusion's")]
    WrongAnswer { query: usize },
    #[error("the Quiver processes did not come up within 30 s")]
    ClusterStart,
    #[error("measuring: {0}")]
    Measurement(String),
}

#[derive(Debug, Clone)]
pub struct TpchOptions {
    pub data: DataLocation,
    pub iterations: usize,
    pub executors: usize,
    pub slots_per_executor: usize,
    pub queries: Vec<usize>,
    pub deployment: Deployment,
    /// Memory each executor's tasks may use.
    pub memory_limit: Option<usize>,
    /// Separate processes only: `kill -9` one executor this long after the first Quiver
    /// query starts (failure-recovery measurement).
    pub kill_executor_after: Option<std::time::Duration>,
    /// Statements run on Quiver's session before the queries (settings to compare).
    pub quiver_setup: Vec<String>,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct TpchRun {
    pub timings: Vec<QueryTiming>,
    /// Resident memory (peak, and at the end) of the cluster's processes (separate-process
    /// runs only) and of this process, which runs single-node DataFusion.
    pub memory: Vec<ProcessMemory>,
}

/// Times of one query, in milliseconds, one per iteration, and why a side did not
/// answer (a side that fails once is not run again for that query).
#[derive(Debug, Clone)]
pub struct QueryTiming {
    pub query: usize,
    pub datafusion_ms: Vec<f64>,
    pub quiver_ms: Vec<f64>,
    pub datafusion_error: Option<String>,
    pub quiver_error: Option<String>,
}

impl QueryTiming {
    /// Both sides answered (and, on the first iteration, alike).
    pub fn completed(&self) -> bool {
        self.datafusion_error.is_none()
            && self.quiver_error.is_none()
            && !self.datafusion_ms.is_empty()
            && !self.quiver_ms.is_empty()
    }
}

pub(crate) fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Single-node DataFusion with the cluster's total parallelism, and a Quiver cluster
/// with a client, both with the TPC-H tables of `data` registered.
pub(crate) async fn side_by_side(
    data: &DataLocation,
    deployment: Deployment,
    executors: usize,
    slots_per_executor: usize,
    memory_limit: Option<usize>,
) -> Result<(SessionContext, BenchCluster, QuiverClient), BenchError> {
    let datafusion = datafusion_context(
        executors * slots_per_executor,
        data,
        memory_limit.map(|limit| limit * executors),
    )?;
    let cluster =
        BenchCluster::start(deployment, executors, slots_per_executor, memory_limit).await?;
    let quiver = cluster.client().await?;
    for statement in create_table_statements(data, false) {
        datafusion.sql(&statement).await?.collect().await?;
    }
    for statement in create_table_statements(data, true) {
        quiver.sql(&statement).await?;
    }
    Ok((datafusion, cluster, quiver))
}

/// Runs the comparison; every answer is verified before any time counts.
pub async fn run(options: &TpchOptions) -> Result<TpchRun, BenchError> {
    let (datafusion, cluster, quiver) = side_by_side(
        &options.data,
        options.deployment,
        options.executors,
        options.slots_per_executor,
        options.memory_limit,
    )
    .await?;
    for statement in &options.quiver_setup {
        quiver.sql(statement).await?;
    }
    let mut kill_timer = None;
    let mut timings = Vec::new();
    for &number in &options.queries {
        let sql = query_sql(number)?;
        let ordered = sql.to_lowercase().contains("order by");
        let mut timing = QueryTiming {
            query: number,
            datafusion_ms: Vec::new(),
            quiver_ms: Vec::new(),
            datafusion_error: None,
            quiver_error: None,
        };
        for iteration in 0..options.iterations.max(1) {
            if let (None, Some(delay)) = (&kill_timer, options.kill_executor_after) {
                kill_timer = Some(cluster.kill_one_executor_after(delay));
            }
            let mut expected = None;
            if timing.datafusion_error.is_none() {
                let started = Instant::now();
                match datafusion.sql(&sql).await?.collect().await {
                    Ok(batches) => {
                        timing
                            .datafusion_ms
                            .push(started.elapsed().as_secs_f64() * 1e3);
                        expected = Some(batches);
                    }
                    Err(error) => timing.datafusion_error = Some(error.to_string()),
                }
            }
            if timing.quiver_error.is_none() {
                let started = Instant::now();
                match quiver.sql(&sql).await {
                    Ok(actual) => {
                        timing.quiver_ms.push(started.elapsed().as_secs_f64() * 1e3);
                        if let Some(expected) = expected.filter(|_| iteration == 0)
                            && canonical_rows(&expected, !ordered)?
                                != canonical_rows(&actual, !ordered)?
                        {
                            return Err(BenchError::WrongAnswer { query: number });
                        }
                    }
                    Err(error) => timing.quiver_error = Some(error.to_string()),
                }
            }
        }
        let shown = |ms: &[f64], error: &Option<String>| match error {
            Some(error) => format!("failed: {error}"),
            None => format!("{:>9.1} ms", min(ms)),
        };
        eprintln!(
            "q{number:<2} datafusion {}  quiver {}",
            shown(&timing.datafusion_ms, &timing.datafusion_error),
            shown(&timing.quiver_ms, &timing.quiver_error)
        );
        timings.push(timing);
    }
    let mut memory = cluster.memory();
    memory.extend(ProcessMemory::of(
        std::process::id(),
        "benchmark process (client + single-node DataFusion)".to_string(),
    ));
    cluster.shutdown().await;
    Ok(TpchRun { timings, memory })
}
