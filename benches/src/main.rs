//! `quiver-benches`: generate TPC-H data, and run Quiver against single-node DataFusion.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver_benches::cluster::Deployment;
use quiver_benches::datagen::{DataGenOptions, generate};
use quiver_benches::first_batch::{FIRST_BATCH_SQL, FirstBatchOptions, run_first_batch};
use quiver_benches::fuzz::{FuzzOptions, describe, render_findings, run_fuzz};
use quiver_benches::latency::{LatencyOptions, run_latency};
use quiver_benches::report::{render_json, render_report, render_svg};
use quiver_benches::tpch::{DataLocation, TpchOptions, run};
use quiver_benches::write::{WriteOptions, run_write};

#[derive(Parser, Debug)]
#[command(name = "quiver-benches", about = "Quiver benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate TPC-H data as Parquet: one directory per table.
    Gen {
        /// Scale factor (1 = about 1 GB of raw data).
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Files per table (nation and region always get one).
        #[arg(long, default_value_t = 1)]
        files: usize,
        /// Rows per Parquet row group.
        #[arg(long, default_value_t = 122_880)]
        row_group_rows: usize,
    },
    /// Run the 99 TPC-DS queries through Quiver and single-node DataFusion, compare every
    /// answer and report the times (data and queries from `scripts/gen-tpcds.py SF`).
    Tpcds {
        /// Directory of the TPC-DS tables, e.g. testdata/tpcds/sf1.
        #[arg(long)]
        data: PathBuf,
        /// Executors (in-process cluster, or processes with --deployment processes).
        #[arg(long, default_value_t = 2)]
        executors: usize,
        #[arg(long, value_enum, default_value_t = DeploymentArg::Standalone)]
        deployment: DeploymentArg,
        /// Slots per executor (default: cores / executors).
        #[arg(long)]
        slots: Option<usize>,
        /// Queries to run, e.g. 14,23 (default: all 99).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
    },
    /// Run the TPC-H queries through Quiver and single-node DataFusion and compare.
    Tpch {
        /// Directory made by `gen`, or an object store URL holding the same layout
        /// (`s3://bucket/tpch`, with --storage-option to reach it).
        #[arg(long)]
        data: String,
        /// A storage option for an object store URL, KEY=VALUE (`aws.endpoint=...`);
        /// may be given several times.
        #[arg(long = "storage-option", value_name = "KEY=VALUE")]
        storage_options: Vec<String>,
        #[arg(long, default_value_t = 3)]
        iterations: usize,
        /// Executor counts to run, e.g. 1,2,4 for a scaling run.
        #[arg(long, value_delimiter = ',', default_value = "2")]
        executors: Vec<usize>,
        /// In-process cluster, or separate scheduler/executor processes (needs the
        /// `quiver` binary built next to this one).
        #[arg(long, value_enum, default_value_t = DeploymentArg::Standalone)]
        deployment: DeploymentArg,
        /// Slots per executor (default: cores / executors).
        #[arg(long)]
        slots: Option<usize>,
        /// Queries to run, e.g. 1,3,5 (default: all 22).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
        /// Write the results as JSON here, and an SVG chart next to it.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Bytes of memory each executor's tasks may use.
        #[arg(long)]
        memory_limit: Option<usize>,
        /// With `--deployment processes`: kill -9 one executor this many milliseconds
        /// after the run starts.
        #[arg(long)]
        kill_executor_after_ms: Option<u64>,
        /// A statement run on Quiver's session before the queries (`SET ...`), for
        /// comparing settings; may be given several times.
        #[arg(long = "quiver-setup", value_name = "SQL")]
        quiver_setup: Vec<String>,
    },
    /// Copy lineitem: Quiver's CREATE TABLE AS (a write stage on the executors) against
    /// single-node DataFusion's COPY TO, both to local Parquet files.
    Write {
        /// Directory made by `gen`.
        #[arg(long)]
        data: PathBuf,
        /// Where DataFusion writes its copies (default: the system's temp directory).
        #[arg(long)]
        scratch: Option<PathBuf>,
        #[arg(long, default_value_t = 3)]
        iterations: usize,
        #[arg(long, default_value_t = 2)]
        executors: usize,
        /// Slots per executor (default: cores / executors).
        #[arg(long)]
        slots: Option<usize>,
        #[arg(long, value_enum, default_value_t = DeploymentArg::Standalone)]
        deployment: DeploymentArg,
    },
    /// Random SQL through Quiver and single-node DataFusion: every query must answer
    /// the same in both or fail in both. Prints the seed; a finding replays with
    /// `--first N --queries 1`.
    Fuzz {
        /// Directory made by `gen` (or testdata/tpch/sf0.01).
        #[arg(long)]
        data: PathBuf,
        /// Seed of the generator (default: from the clock, printed).
        #[arg(long, value_parser = parse_seed)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 0)]
        first: u64,
        #[arg(long, default_value_t = 2000)]
        queries: u64,
        /// Deepest expression nesting, reached at the end of the run.
        #[arg(long, default_value_t = 6)]
        max_depth: usize,
        #[arg(long, default_value_t = 2)]
        executors: usize,
        #[arg(long, default_value_t = 2)]
        slots: usize,
        #[arg(long, value_enum, default_value_t = DeploymentArg::Standalone)]
        deployment: DeploymentArg,
    },
    /// Measure round-trip latency of small queries (Quiver's client, ADBC from Python,
    /// single-node DataFusion in process) and the cost per task.
    Latency {
        /// Directory made by `gen` (only `nation` is used).
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 200)]
        runs: usize,
        #[command(flatten)]
        cluster: SmallCluster,
        /// Tasks of the stage that measures the cost per task.
        #[arg(long, default_value_t = 1000)]
        tasks: usize,
        #[command(flatten)]
        python: AdbcPython,
    },
    /// Time to the first batch of `SELECT * FROM lineitem` (and to its last row) through
    /// Quiver's client, streamed and with `quiver.stream_results` off, against
    /// single-node DataFusion streaming the same statement.
    FirstBatch {
        /// Directory made by `gen` (only `lineitem` is used).
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[command(flatten)]
        cluster: SmallCluster,
        #[command(flatten)]
        python: AdbcPython,
    },
}

/// The cluster a latency measurement runs on: 2 executor processes x 1 slot unless
/// told otherwise.
#[derive(Debug, clap::Args)]
struct SmallCluster {
    #[arg(long, value_enum, default_value_t = DeploymentArg::Processes)]
    deployment: DeploymentArg,
    #[arg(long, default_value_t = 2)]
    executors: usize,
    #[arg(long, default_value_t = 1)]
    slots: usize,
}

/// Which Python measures through ADBC.
#[derive(Debug, clap::Args)]
struct AdbcPython {
    /// Python with `adbc-driver-flightsql` (default: the project's `.venv`, when made by
    /// `scripts/python-env.sh`); `none` skips the ADBC figures.
    #[arg(long)]
    python: Option<String>,
}

impl AdbcPython {
    fn resolve(&self) -> Option<PathBuf> {
        match self.python.as_deref() {
            Some("none") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => quiver_benches::latency::project_python(),
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum DeploymentArg {
    Standalone,
    Processes,
}

impl From<DeploymentArg> for Deployment {
    fn from(deployment: DeploymentArg) -> Self {
        match deployment {
            DeploymentArg::Standalone => Deployment::Standalone,
            DeploymentArg::Processes => Deployment::Processes,
        }
    }
}

/// A seed in decimal or `0x` hexadecimal.
fn parse_seed(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("`{text}` is not a seed: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result: Result<(), String> = runtime.block_on(async {
        match cli.command {
            Command::Gen {
                sf,
                out,
                files,
                row_group_rows,
            } => generate(
                &out,
                &DataGenOptions {
                    scale_factor: sf,
                    files_per_table: files,
                    row_group_rows,
                },
            )
            .map_err(|e| e.to_string()),
            Command::Tpch {
                data,
                storage_options,
                iterations,
                executors,
                deployment,
                slots,
                queries,
                json,
                memory_limit,
                kill_executor_after_ms,
                quiver_setup,
            } => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let deployment = Deployment::from(deployment);
                let options: Vec<(String, String)> = storage_options
                    .iter()
                    .map(|pair| match pair.split_once('=') {
                        Some((key, value)) => Ok((key.to_string(), value.to_string())),
                        None => Err(format!("--storage-option takes KEY=VALUE, not `{pair}`")),
                    })
                    .collect::<Result<_, _>>()?;
                let data = if data.contains("://") {
                    DataLocation::new(&data, options)
                } else {
                    DataLocation::local(Path::new(&data))
                };
                let mut totals = Vec::new();
                for &count in &executors {
                    let count = count.max(1);
                    let options = TpchOptions {
                        data: data.clone(),
                        iterations,
                        executors: count,
                        slots_per_executor: slots.unwrap_or((cores / count).max(1)),
                        queries: if queries.is_empty() { (1..=22).collect() } else { queries.clone() },
                        deployment,
                        memory_limit,
                        kill_executor_after: kill_executor_after_ms
                            .map(std::time::Duration::from_millis),
                        quiver_setup: quiver_setup.clone(),
                    };
                    let result = run(&options).await.map_err(|e| e.to_string())?;
                    let label = format!(
                        "{deployment:?}, {} executors x {} slots vs DataFusion target_partitions={}",
                        options.executors,
                        options.slots_per_executor,
                        options.executors * options.slots_per_executor
                    );
                    println!("## {label}\n\n{}", render_report(&result.timings));
                    for process in &result.memory {
                        println!("memory: {process}");
                    }
                    if let Some(path) = &json {
                        let path = if executors.len() > 1 {
                            path.with_file_name(format!(
                                "{}-e{count}.json",
                                path.file_stem().and_then(|s| s.to_str()).unwrap_or("tpch")
                            ))
                        } else {
                            path.clone()
                        };
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent)
                                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                        }
                        std::fs::write(&path, render_json(&result.timings, &label))
                            .and_then(|_| {
                                std::fs::write(path.with_extension("svg"), render_svg(&result.timings))
                            })
                            .map_err(|e| format!("writing {}: {e}", path.display()))?;
                    }
                    let completed = || result.timings.iter().filter(|t| t.completed());
                    let quiver: f64 = completed().map(|t| min_of(&t.quiver_ms)).sum();
                    let datafusion: f64 = completed().map(|t| min_of(&t.datafusion_ms)).sum();
                    totals.push((count, quiver, datafusion));
                }
                if totals.len() > 1 {
                    println!("\n| executors | Quiver total ms | DataFusion total ms | ratio |\n|---|---|---|---|");
                    for (count, quiver, datafusion) in totals {
                        println!("| {count} | {quiver:.1} | {datafusion:.1} | {:.2}x |", quiver / datafusion);
                    }
                }
                Ok(())
            }
            Command::Write {
                data,
                scratch,
                iterations,
                executors,
                slots,
                deployment,
            } => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let executors = executors.max(1);
                let options = WriteOptions {
                    data: DataLocation::local(&data),
                    scratch_dir: scratch.unwrap_or_else(std::env::temp_dir),
                    iterations,
                    executors,
                    slots_per_executor: slots.unwrap_or((cores / executors).max(1)),
                    deployment: Deployment::from(deployment),
                };
                let result = run_write(&options).await.map_err(|e| e.to_string())?;
                let (quiver, datafusion) = (min_of(&result.quiver_ms), min_of(&result.datafusion_ms));
                println!("| copy of lineitem | DataFusion COPY ms | Quiver CREATE TABLE AS ms | ratio |");
                println!("|---|---|---|---|");
                println!(
                    "| {:?}, {} executors x {} slots (min of {}) | {datafusion:.1} | {quiver:.1} | {:.2}x |",
                    options.deployment,
                    options.executors,
                    options.slots_per_executor,
                    options.iterations.max(1),
                    quiver / datafusion
                );
                Ok(())
            }
            Command::Tpcds {
                data,
                executors,
                deployment,
                slots,
                queries,
            } => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let deployment = Deployment::from(deployment);
                let executors = executors.max(1);
                let slots = slots.unwrap_or((cores / executors).max(1));
                let queries: Vec<usize> = match queries.is_empty() {
                    true => (1..=99).collect(),
                    false => queries,
                };
                let run = quiver_benches::tpcds::run_tpcds(
                    &data, deployment, executors, slots, &queries,
                )
                .await
                .map_err(|e| e.to_string())?;
                let outcomes = &run.outcomes;
                let agreed = outcomes.iter().filter(|o| o.problem.is_none()).count();
                let total = |pick: fn(&quiver_benches::tpcds::TpcdsOutcome) -> Option<f64>| {
                    outcomes
                        .iter()
                        .filter(|o| o.problem.is_none())
                        .filter_map(pick)
                        .sum::<f64>()
                };
                let (datafusion_ms, quiver_ms) =
                    (total(|o| o.datafusion_ms), total(|o| o.quiver_ms));
                println!(
                    "TPC-DS {}: {agreed} of {} queries answered alike; over those, \
                     DataFusion {:.1} s, Quiver {:.1} s ({:.2}x)",
                    data.display(),
                    outcomes.len(),
                    datafusion_ms / 1e3,
                    quiver_ms / 1e3,
                    quiver_ms / datafusion_ms.max(1e-9)
                );
                for outcome in outcomes.iter().filter(|o| o.problem.is_some()) {
                    println!("q{}: {}", outcome.query, outcome.problem.as_deref().unwrap_or(""));
                }
                for process in &run.memory_idle {
                    println!("memory before the queries: {process}");
                }
                for process in &run.memory_after {
                    println!("memory 2 s after the last query: {process}");
                }
                Ok(())
            }
            Command::Latency {
                data,
                runs,
                cluster,
                tasks,
                python,
            } => {
                let deployment = Deployment::from(cluster.deployment);
                let mut options = LatencyOptions::new(&data, runs.max(1), deployment);
                options.executors = cluster.executors.max(1);
                options.slots = cluster.slots.max(1);
                options.tasks = tasks.max(2);
                options.python = python.resolve();
                let (reports, overhead) =
                    run_latency(&options).await.map_err(|e| e.to_string())?;
                println!(
                    "| statement | runs | Quiver client p50 ms | p99 ms | ADBC p50 ms | p99 ms | DataFusion in process p50 ms | ADBC / DataFusion |"
                );
                println!("|---|---|---|---|---|---|---|---|");
                for r in reports {
                    let (adbc_p50, adbc_p99, ratio) = match r.adbc_ms {
                        Some((p50, p99)) => (
                            format!("{p50:.2}"),
                            format!("{p99:.2}"),
                            format!("{:.1}x", p50 / r.datafusion_p50_ms),
                        ),
                        None => ("-".to_string(), "-".to_string(), "-".to_string()),
                    };
                    println!(
                        "| {} | {} | {:.2} | {:.2} | {adbc_p50} | {adbc_p99} | {:.2} | {ratio} |",
                        r.name, r.runs, r.p50_ms, r.p99_ms, r.datafusion_p50_ms
                    );
                }
                println!(
                    "\nscheduling: {:.3} ms per task (one stage of {} tasks vs one task)",
                    overhead.per_task_ms, overhead.tasks
                );
                Ok(())
            }
            Command::FirstBatch {
                data,
                runs,
                cluster,
                python,
            } => {
                let options = FirstBatchOptions {
                    data,
                    runs: runs.max(1),
                    deployment: Deployment::from(cluster.deployment),
                    executors: cluster.executors.max(1),
                    slots: cluster.slots.max(1),
                    python: python.resolve(),
                };
                let reports = run_first_batch(&options)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("`{FIRST_BATCH_SQL}`, fastest of {} runs", options.runs);
                println!("| engine | first batch ms | all rows ms | rows |");
                println!("|---|---|---|---|");
                for r in reports {
                    println!(
                        "| {} | {:.1} | {:.1} | {} |",
                        r.engine, r.first_batch_ms, r.all_rows_ms, r.rows
                    );
                }
                Ok(())
            }
            Command::Fuzz {
                data,
                seed,
                first,
                queries,
                max_depth,
                executors,
                slots,
                deployment,
            } => {
                let seed = seed.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64)
                });
                let options = FuzzOptions {
                    data: DataLocation::local(&data),
                    seed,
                    first,
                    queries,
                    max_depth,
                    deployment: Deployment::from(deployment),
                    executors,
                    slots_per_executor: slots,
                    datafusion_timeout: std::time::Duration::from_secs(10),
                };
                println!("fuzz: {}", describe(&options));
                let report = run_fuzz(&options).await.map_err(|e| e.to_string())?;
                println!("{}", render_findings(&report, seed, max_depth));
                if report.findings.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} findings (seed {seed:#x})", report.findings.len()))
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn min_of(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}
