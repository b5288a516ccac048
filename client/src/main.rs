//! The `quiver` binary: run SQL on an embedded standalone cluster or a remote one, or run
//! a scheduler or an executor process.

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use datafusion::arrow::util::pretty::pretty_format_batches;
use quiver::script::split_statements;
use quiver::{ClientError, QuiverClient, StandaloneCluster, StandaloneConfig};
use quiver_core::config::{ExecutorConfig, SchedulerConfig, default_parallelism};
use quiver_executor::Executor;
use quiver_scheduler::Scheduler;

/// Quiver: a distributed SQL query engine over Parquet, speaking Arrow Flight SQL.
///
/// With no subcommand, runs SQL (from -c, -f, or standard input) on an embedded
/// standalone cluster, or on a running cluster with --connect.
#[derive(Parser, Debug)]
#[command(name = "quiver", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Scheduler URL of a running cluster (e.g. http://127.0.0.1:50050); without it an
    /// embedded standalone cluster is started.
    #[arg(long)]
    connect: Option<String>,

    /// SQL to run; may be given several times, runs in order.
    #[arg(short = 'c', long = "command")]
    commands: Vec<String>,

    /// SQL file to run; may be given several times, runs in order after -c.
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,

    /// Executors in the embedded cluster.
    #[arg(long, default_value_t = 2)]
    executors: usize,

    /// Task slots per executor in the embedded cluster (default: cores / executors).
    #[arg(long)]
    slots: Option<usize>,

    /// Print nothing but results and errors.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scheduler: the Flight SQL front door and the executors' coordinator.
    Scheduler {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
        /// Partitions per stage (default: number of cores).
        #[arg(long)]
        target_partitions: Option<usize>,
        /// Seconds a query waits for any executor before failing.
        #[arg(long, default_value_t = 10)]
        no_executor_grace_secs: u64,
        /// Seconds without a heartbeat after which an executor is declared lost.
        #[arg(long, default_value_t = 5)]
        executor_timeout_secs: u64,
    },
    /// Run an executor that registers with a scheduler and runs its tasks.
    Executor {
        /// The scheduler's URL.
        #[arg(long, default_value = "http://127.0.0.1:50050")]
        scheduler: String,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
        /// Host name other processes use to reach this executor.
        #[arg(long, default_value = "127.0.0.1")]
        advertise_host: String,
        /// Tasks run at once (default: number of cores).
        #[arg(long)]
        slots: Option<usize>,
        /// Directory for spilled shuffle files (default: a fresh temporary directory).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Bytes of shuffle output kept in memory before spilling.
        #[arg(long)]
        shuffle_memory_budget: Option<usize>,
        /// Bytes of memory running tasks may use; sorts and aggregations spill past it.
        #[arg(long)]
        memory_limit: Option<usize>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Scheduler {
                bind,
                target_partitions,
                no_executor_grace_secs,
                executor_timeout_secs,
            }) => {
                let config = SchedulerConfig {
                    bind,
                    target_partitions: target_partitions.unwrap_or_else(default_parallelism),
                    no_executor_grace: Duration::from_secs(no_executor_grace_secs),
                    executor_timeout: Duration::from_secs(executor_timeout_secs),
                    ..SchedulerConfig::default()
                };
                run_scheduler(config).await
            }
            Some(Command::Executor {
                scheduler,
                bind,
                advertise_host,
                slots,
                work_dir,
                shuffle_memory_budget,
                memory_limit,
            }) => {
                let defaults = ExecutorConfig::default();
                let config = ExecutorConfig {
                    scheduler_url: scheduler,
                    bind,
                    advertise_host,
                    slots: slots.unwrap_or_else(default_parallelism),
                    work_dir,
                    shuffle_memory_budget: shuffle_memory_budget
                        .unwrap_or(defaults.shuffle_memory_budget),
                    memory_limit,
                    ..defaults
                };
                run_executor(config).await
            }
            None => run_sql(cli.run).await,
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

async fn run_scheduler(config: SchedulerConfig) -> Result<(), String> {
    let scheduler = Scheduler::start(config).await.map_err(|e| e.to_string())?;
    eprintln!("quiver scheduler listening on {}", scheduler.url());
    wait_for_shutdown_signal().await;
    // Refuse new queries, let running ones finish (bounded), then stop.
    scheduler.drain_and_shutdown(Duration::from_secs(30)).await;
    eprintln!("quiver scheduler drained and stopped");
    Ok(())
}

async fn run_executor(config: ExecutorConfig) -> Result<(), String> {
    let executor = Executor::start(config).await.map_err(|e| e.to_string())?;
    eprintln!(
        "quiver executor {} listening on {}",
        executor.executor_id(),
        executor.address()
    );
    wait_for_shutdown_signal().await;
    // Finish running tasks (bounded) and leave the cluster before stopping.
    let executor_id = executor.executor_id().to_string();
    executor.drain_and_shutdown(Duration::from_secs(30)).await;
    eprintln!("quiver executor {executor_id} drained and stopped");
    Ok(())
}

async fn wait_for_shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run_sql(args: RunArgs) -> Result<(), String> {
    let mut statements: Vec<String> = Vec::new();
    for command in &args.commands {
        statements.extend(split_statements(command));
    }
    for file in &args.files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        statements.extend(split_statements(&text));
    }
    if args.commands.is_empty() && args.files.is_empty() {
        if std::io::stdin().is_terminal() {
            return Err(
                "no SQL given: use -c SQL, -f FILE, or pipe SQL on standard input (see --help)"
                    .to_string(),
            );
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        statements.extend(split_statements(&text));
    }

    let (cluster, client) = match &args.connect {
        Some(url) => (
            None,
            QuiverClient::connect(url)
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => {
            let mut config = StandaloneConfig {
                executors: args.executors,
                ..StandaloneConfig::default()
            };
            if let Some(slots) = args.slots {
                config.slots_per_executor = slots;
            }
            let cluster = StandaloneCluster::start(config)
                .await
                .map_err(|e| e.to_string())?;
            let client = cluster.client().await.map_err(|e| e.to_string())?;
            (Some(cluster), client)
        }
    };
    let outcome = run_statements(&client, &statements, args.quiet).await;
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    outcome.map_err(|e| e.to_string())
}

async fn run_statements(
    client: &QuiverClient,
    statements: &[String],
    quiet: bool,
) -> Result<(), ClientError> {
    for statement in statements {
        let started = Instant::now();
        let output = client.query(statement).await?;
        let rows: usize = output.batches.iter().map(|b| b.num_rows()).sum();
        if !output.schema.fields().is_empty() && (rows > 0 || !output.schema.fields().is_empty()) {
            let table = if output.batches.is_empty() {
                pretty_format_batches(&[datafusion::arrow::record_batch::RecordBatch::new_empty(
                    output.schema.clone(),
                )])
            } else {
                pretty_format_batches(&output.batches)
            }
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
            println!("{table}");
        }
        if !quiet {
            let noun = if rows == 1 { "row" } else { "rows" };
            println!(
                "{rows} {noun} in set. Query took {:.3} seconds.\n",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
