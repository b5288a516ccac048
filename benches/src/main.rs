//! `quiver-benches`: generate TPC-H data, and run Quiver against single-node DataFusion.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver_benches::datagen::{DataGenOptions, generate};
use quiver_benches::latency::run_latency;
use quiver_benches::report::{render_json, render_report, render_svg};
use quiver_benches::tpch::{TpchOptions, run};

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
    /// Run the TPC-H queries through Quiver and single-node DataFusion and compare.
    Tpch {
        /// Directory made by `gen`.
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 3)]
        iterations: usize,
        #[arg(long, default_value_t = 2)]
        executors: usize,
        /// Slots per executor (default: cores / executors).
        #[arg(long)]
        slots: Option<usize>,
        /// Queries to run, e.g. 1,3,5 (default: all 22).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
        /// Write the results as JSON here, and an SVG chart next to it.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Measure round-trip latency of small queries and the cost per task.
    Latency {
        /// Directory made by `gen` (only `nation` is used).
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 200)]
        runs: usize,
    },
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
                iterations,
                executors,
                slots,
                queries,
                json,
            } => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let options = TpchOptions {
                    data_dir: data,
                    iterations,
                    executors,
                    slots_per_executor: slots.unwrap_or((cores / executors.max(1)).max(1)),
                    queries: if queries.is_empty() {
                        (1..=22).collect()
                    } else {
                        queries
                    },
                };
                let timings = run(&options).await.map_err(|e| e.to_string())?;
                println!("{}", render_report(&timings));
                if let Some(path) = json {
                    let label = format!(
                        "{} executors x {} slots vs DataFusion target_partitions={}",
                        options.executors,
                        options.slots_per_executor,
                        options.executors * options.slots_per_executor
                    );
                    std::fs::write(&path, render_json(&timings, &label))
                        .and_then(|_| {
                            std::fs::write(path.with_extension("svg"), render_svg(&timings))
                        })
                        .map_err(|e| format!("writing {}: {e}", path.display()))?;
                }
                Ok(())
            }
            Command::Latency { data, runs } => {
                let (reports, overhead) = run_latency(&data, runs.max(1))
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "| statement | runs | Quiver p50 ms | Quiver p99 ms | DataFusion p50 ms |"
                );
                println!("|---|---|---|---|---|");
                for r in reports {
                    println!(
                        "| {} | {} | {:.2} | {:.2} | {:.2} |",
                        r.name, r.runs, r.p50_ms, r.p99_ms, r.datafusion_p50_ms
                    );
                }
                println!(
                    "\nscheduling: {:.3} ms per task (one stage of {} tasks vs one task)",
                    overhead.per_task_ms, overhead.tasks
                );
                Ok(())
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
