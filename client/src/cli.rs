//! Command-line arguments of the `quiver` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use quiver_core::config::{ExecutorConfig, StatementLimits, UserCredentials};

use crate::shell::render::Format;

/// Quiver: a distributed SQL query engine over Parquet, speaking Arrow Flight SQL.
///
/// With no subcommand, opens the SQL shell on an embedded standalone cluster (a scheduler
/// and executors inside this process), or on a running cluster with --connect. With -c,
/// -f, or SQL piped on standard input, runs it and exits (non-zero on any error).
///
/// In the shell, statements end with `;` and may span lines; \? lists the meta-commands
/// (\d, \dt, \d NAME, \i, \o, \format, \timing, \connect, \explain, \cluster, \set, \q).
/// Tab completes keywords, tables and columns. Ctrl-C cancels the running query, Ctrl-D
/// quits. History is kept in $QUIVER_HISTORY, else $XDG_DATA_HOME/quiver/history or
/// ~/.local/share/quiver/history. Long results go through $QUIVER_PAGER or $PAGER
/// (default `less -FRSX`; set it empty to turn paging off).
///
/// Examples:
///   quiver --init testdata/tpch/create_tables.sql      # shell over the bundled TPC-H data
///   quiver -c "SELECT 1" --format csv                  # one statement, CSV out
///   quiver -f setup.sql -f query.sql -o result.txt     # scripts in order
///   quiver --connect http://127.0.0.1:50050 -u alice   # a running cluster (QUIVER_PASSWORD)
///   quiver scheduler --help | quiver executor --help   # running a cluster by hand
#[derive(Parser, Debug)]
#[command(name = "quiver", version, about, long_about, verbatim_doc_comment)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    #[command(flatten)]
    pub(crate) run: RunArgs,

    /// How log lines (standard error; RUST_LOG filters them) are written: `text`, or
    /// `json` (one object per line, with the job, stage, task, attempt and user of the
    /// work they belong to).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Scheduler URL of a running cluster (e.g. http://127.0.0.1:50050, or https://...
    /// when it serves TLS); without it an embedded standalone cluster is started.
    #[arg(long, value_name = "URL")]
    pub(crate) connect: Option<String>,

    /// User name, for servers that require a login.
    #[arg(short = 'u', long, value_name = "USER", env = "QUIVER_USER")]
    pub(crate) user: Option<String>,

    /// Password for --user (better given in the environment).
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "QUIVER_PASSWORD",
        hide_env_values = true
    )]
    pub(crate) password: Option<String>,

    /// Certificate authority (PEM file) that signed the scheduler's TLS certificate.
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,

    /// SQL to run (meta-commands allowed); may be given several times, runs in order.
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub(crate) commands: Vec<String>,

    /// SQL file to run (meta-commands allowed); may be given several times, runs in
    /// order after -c.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,

    /// SQL file to run quietly first (e.g. to create tables), then go on to -c, -f or
    /// the shell; may be given several times.
    #[arg(long, value_name = "FILE")]
    pub(crate) init: Vec<PathBuf>,

    /// Result format: table, csv, tsv, json, ndjson or markdown.
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    pub(crate) format: Format,

    /// Write results to FILE instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    /// Show planning and execution time after each statement (always on in the shell
    /// unless turned off with \timing off).
    #[arg(long)]
    pub(crate) timing: bool,

    /// Never draw the live progress line (it is drawn only when stdout and stderr are
    /// a terminal).
    #[arg(long)]
    pub(crate) no_progress: bool,

    /// Executors in the embedded cluster.
    #[arg(long, default_value_t = 2)]
    pub(crate) executors: usize,

    /// Task slots per executor in the embedded cluster (default: cores / executors).
    #[arg(long)]
    pub(crate) slots: Option<usize>,

    /// Print nothing but results and errors.
    #[arg(short, long)]
    pub(crate) quiet: bool,

    #[command(flatten)]
    pub(crate) state: StateArgs,
}

/// Where the catalog (tables, views, schemas) persists between runs.
#[derive(Args, Debug)]
pub(crate) struct StateArgs {
    /// Directory for the catalog store [default: $XDG_DATA_HOME/quiver/<role>, else
    /// ~/.local/share/quiver/<role>, where <role> is `standalone` or `scheduler`].
    #[arg(long, value_name = "DIR", env = "QUIVER_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Keep nothing: the catalog lives in memory and is lost at exit (wins over
    /// --state-dir).
    #[arg(long, env = "QUIVER_EPHEMERAL")]
    pub(crate) ephemeral: bool,
}

impl StateArgs {
    /// The state directory to use, `None` when ephemeral.
    pub(crate) fn directory(&self, role: &str) -> Option<PathBuf> {
        if self.ephemeral {
            return None;
        }
        if let Some(dir) = &self.state_dir {
            return Some(dir.clone());
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
        Some(data.join("quiver").join(role))
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run a scheduler: the Flight SQL front door and the executors' coordinator.
    Scheduler(SchedulerArgs),
    /// Run an executor that registers with a scheduler and runs its tasks.
    Executor(ExecutorArgs),
    /// Add or change a user of a users file (for `quiver scheduler --users-file`): the
    /// password is read from QUIVER_PASSWORD or asked for, and only its Argon2id hash is
    /// written.
    Passwd(PasswdArgs),
}

#[derive(Args, Debug)]
pub(crate) struct PasswdArgs {
    /// The users file to write (created readable by its owner only).
    #[arg(long, value_name = "FILE")]
    pub(crate) users_file: PathBuf,
    /// The user to add or change.
    pub(crate) user: String,
}

#[derive(Args, Debug)]
pub(crate) struct SchedulerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub(crate) bind: SocketAddr,
    /// Partitions per stage. Default: a session opened while executors are registered
    /// gets their slots (stages as wide as the cluster); before any, the number of cores.
    #[arg(long)]
    pub(crate) target_partitions: Option<usize>,
    /// Seconds a query waits for any executor before failing.
    #[arg(long, default_value_t = 10)]
    pub(crate) no_executor_grace_secs: u64,
    /// Seconds without a heartbeat after which an executor is declared lost (one whose
    /// connection drops is declared lost at once).
    #[arg(long, default_value_t = 5)]
    pub(crate) executor_timeout_secs: u64,
    /// Seconds a finished query's result stays readable on the executors.
    #[arg(long, default_value_t = 600)]
    pub(crate) result_retention_secs: u64,
    /// A client user as USER:PASSWORD; may be given several times. With any, clients
    /// must log in (Flight handshake with basic auth, then a bearer token).
    /// (For tests and trials: `ps` shows it. Use --users-file otherwise.)
    #[arg(long = "user", value_name = "USER:PASSWORD")]
    pub(crate) users: Vec<UserCredentials>,
    /// Users who may log in, with password hashes: written by `quiver passwd`.
    #[arg(long, value_name = "FILE")]
    pub(crate) users_file: Option<PathBuf>,
    /// An administrator: may do everything (read every table, create tables on any
    /// location, manage roles and grants, follow and stop every session's queries); may
    /// be given several times. Naming any puts every other user under grants; with
    /// none, every user may do everything.
    #[arg(long = "admin", value_name = "USER")]
    pub(crate) admins: Vec<String>,
    /// Secret executors must present to register; it also derives the key that signs
    /// result and shuffle tickets. Give the same one to every executor.
    #[arg(long, env = "QUIVER_CLUSTER_SECRET", hide_env_values = true)]
    pub(crate) cluster_secret: Option<String>,
    /// Serve the client port over TLS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Certificate authority (PEM) that signed the certificates of executors serving
    /// TLS (`quiver executor --tls-cert`).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Serve the web UI (ADDR/), its JSON API (ADDR/api/...) and Prometheus metrics
    /// (ADDR/metrics) over HTTP (e.g. 127.0.0.1:9090).
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
    #[command(flatten)]
    pub(crate) state: StateArgs,
    /// Where managed tables (CREATE TABLE, CREATE TABLE AS) keep their Parquet files: a
    /// path or a URL such as s3://bucket/warehouse/ [default: <state dir>/warehouse].
    #[arg(long, value_name = "URL")]
    pub(crate) warehouse: Option<String>,
    /// Append an audit log here: one JSON object per line for every login (accepted or
    /// refused) and every statement, written before the client hears the outcome.
    #[arg(long, value_name = "FILE")]
    pub(crate) audit_log: Option<PathBuf>,
    /// Minutes a client session may stay unused before it is closed.
    #[arg(long, value_name = "MINUTES", default_value_t = 60)]
    pub(crate) session_idle_minutes: u64,
}

/// What one statement may ask of the cluster; past a limit it is refused with an error
/// naming the option that raises it.
#[derive(Args, Debug)]
pub(crate) struct LimitArgs {
    /// Bytes of SQL text in one statement.
    #[arg(long, value_name = "BYTES", default_value_t = StatementLimits::default().max_sql_bytes)]
    pub(crate) max_sql_bytes: usize,
    /// Nesting depth of expressions (`1+1+1` nests 3 deep).
    #[arg(long, value_name = "N", default_value_t = StatementLimits::default().max_expression_depth)]
    pub(crate) max_expression_depth: usize,
    /// Operators in a statement's plan (a UNION ALL adds one per branch).
    #[arg(long, value_name = "N", default_value_t = StatementLimits::default().max_plan_nodes)]
    pub(crate) max_plan_nodes: usize,
    /// Stages a query may be cut into.
    #[arg(long, value_name = "N", default_value_t = StatementLimits::default().max_stages)]
    pub(crate) max_stages: usize,
    /// Tasks a query may run over all its stages.
    #[arg(long, value_name = "N", default_value_t = StatementLimits::default().max_tasks)]
    pub(crate) max_tasks: usize,
    /// Bytes of one stage's encoded plan, shipped with each task.
    #[arg(long, value_name = "BYTES", default_value_t = StatementLimits::default().max_plan_bytes)]
    pub(crate) max_plan_bytes: usize,
    /// Bytes a query's tasks may produce in all (shuffle output and results).
    #[arg(long, value_name = "BYTES", default_value_t = StatementLimits::default().max_query_bytes)]
    pub(crate) max_query_bytes: u64,
    /// Files under one table's location (listing a bigger directory is refused).
    #[arg(long, value_name = "N", default_value_t = StatementLimits::default().max_table_files)]
    pub(crate) max_table_files: usize,
    /// Seconds a statement may run before it is cancelled on every executor (0: none).
    #[arg(long, value_name = "SECONDS", default_value_t = StatementLimits::default().statement_timeout_secs)]
    pub(crate) statement_timeout_secs: u64,
    /// Statements one user (one session, without logins) runs at once; more wait in
    /// line, their place shown in progress reports (0: no limit).
    #[arg(long, value_name = "N", default_value_t = StatementLimits::default().max_running_per_user)]
    pub(crate) max_running_per_user: usize,
    /// Statements one user may have waiting in line; more are refused (0: no limit).
    #[arg(long, value_name = "N", default_value_t = StatementLimits::default().max_queued_per_user)]
    pub(crate) max_queued_per_user: usize,
    /// Bytes of memory one query's tasks may hold on each executor; past it they spill
    /// or fail with an error naming the limit (0: only the executor's own limit).
    #[arg(long, value_name = "BYTES", default_value_t = StatementLimits::default().max_query_memory_bytes)]
    pub(crate) max_query_memory_bytes: u64,
}

impl LimitArgs {
    pub(crate) fn limits(&self) -> StatementLimits {
        StatementLimits {
            max_sql_bytes: self.max_sql_bytes,
            max_expression_depth: self.max_expression_depth,
            max_plan_nodes: self.max_plan_nodes,
            max_stages: self.max_stages,
            max_tasks: self.max_tasks,
            max_plan_bytes: self.max_plan_bytes,
            max_query_bytes: self.max_query_bytes,
            max_table_files: self.max_table_files,
            statement_timeout_secs: self.statement_timeout_secs,
            max_running_per_user: self.max_running_per_user,
            max_queued_per_user: self.max_queued_per_user,
            max_query_memory_bytes: self.max_query_memory_bytes,
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct ExecutorArgs {
    /// The scheduler's URL.
    #[arg(long, default_value = "http://127.0.0.1:50050")]
    pub(crate) scheduler: String,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) bind: SocketAddr,
    /// Host name other processes use to reach this executor.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) advertise_host: String,
    /// Tasks run at once (default: number of cores).
    #[arg(long)]
    pub(crate) slots: Option<usize>,
    /// Base directory for spill files; the executor works in its own subdirectory and
    /// deletes those left by killed executors (default: quiver-executors in the temp dir).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    /// Bytes of shuffle output kept in memory before spilling.
    #[arg(long)]
    pub(crate) shuffle_memory_budget: Option<usize>,
    /// Compression of shuffle spill files and of shuffle data sent to executors on other
    /// hosts: none, lz4 or zstd (data sent within a host, and results sent to clients,
    /// are not compressed).
    #[arg(long, default_value = "lz4")]
    pub(crate) shuffle_compression: quiver_core::config::ShuffleCompression,
    /// Bytes of memory this executor's tasks, shuffle output and results may hold: sorts,
    /// aggregations and shuffle output spill past it, a join's build side fails naming it.
    /// Default: three quarters of the host's memory (or its cgroup's limit) times
    /// slots / cores, so executors sharing a host split it. 0: unlimited.
    #[arg(long)]
    pub(crate) memory_limit: Option<usize>,
    /// Bytes the spill files of running tasks' sorts, joins and aggregations may take
    /// on disk; a task that needs more fails with an error naming this option.
    #[arg(long, value_name = "BYTES", default_value_t = ExecutorConfig::default().max_spill_bytes)]
    pub(crate) max_spill_bytes: u64,
    /// The scheduler's cluster secret.
    #[arg(long, env = "QUIVER_CLUSTER_SECRET", hide_env_values = true)]
    pub(crate) cluster_secret: Option<String>,
    /// Certificate authority (PEM) of an https:// scheduler and of other executors
    /// serving TLS.
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Serve shuffle data, results and the control service over TLS with this
    /// certificate chain (PEM); the scheduler, clients and other executors then need
    /// its certificate authority.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at ADDR/metrics (e.g. 127.0.0.1:9091).
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<std::net::SocketAddr>,
}
