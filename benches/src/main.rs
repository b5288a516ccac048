//! `quiver-benches`: generate TPC-H data, and run Quiver against single-node DataFusion.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver_benches::datagen::{DataGenOptions, generate};
use quiver_benches::tpch::{TpchOptions, render_report, run};

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
