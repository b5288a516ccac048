//! Typed configuration of the scheduler and the executors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::security::{ClusterSecret, TlsIdentity};

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Address for the Flight SQL front door and the executor control service.
    pub bind: SocketAddr,
    /// Default number of partitions per stage (DataFusion `target_partitions`).
    pub target_partitions: usize,
    /// Instead, a session opened while executors are registered gets their slots as its
    /// number of partitions (`quiver scheduler` without `--target-partitions`): stages as
    /// wide as the cluster, not as the scheduler's machine.
    pub stage_width_from_slots: bool,
    /// How often executors are asked to heartbeat.
    pub heartbeat_interval: Duration,
    /// An executor silent for this long is declared lost.
    pub executor_timeout: Duration,
    /// How long a query waits for any executor to register before it fails.
    pub no_executor_grace: Duration,
    /// How long a finished query's results stay readable on the executors.
    pub result_retention: Duration,
    /// A client session unused this long is closed, with its settings and prepared
    /// statements.
    pub session_idle_timeout: Duration,
    /// Attempts a task gets when its failures are retryable (I/O, lost executor, fetch).
    pub max_task_attempts: u32,
    /// Executors must present this to register; it also derives the ticket-signing key.
    pub cluster_secret: ClusterSecret,
    /// Client users and their passwords; when empty, clients need no credentials.
    pub users: Vec<UserCredentials>,
    /// Users from the users file, with password hashes; with `users`, who may log in.
    pub hashed_users: Vec<crate::users_file::HashedUser>,
    /// Users who may follow and stop any session's queries.
    pub admins: Vec<String>,
    /// How long a bearer token from the Flight handshake stays valid.
    pub token_lifetime: Duration,
    /// Serve the client port over TLS with this certificate.
    pub tls: Option<TlsIdentity>,
    /// Certificate authority (PEM) that signed the executors' certificates, for
    /// executors that serve TLS.
    pub executor_tls_ca: Option<Vec<u8>>,
    /// What one statement may ask of the cluster.
    pub limits: StatementLimits,
    /// Where the catalog store lives; without one, the catalog is lost at exit.
    pub state_dir: Option<PathBuf>,
    /// Where the audit log is appended (logins and statements, one JSON line each).
    pub audit_log: Option<PathBuf>,
    /// Where managed tables (`CREATE TABLE`) keep their files: a URL or a path.
    /// Default: `<state_dir>/warehouse`, or without a state directory a temporary
    /// directory deleted at shutdown.
    pub warehouse: Option<String>,
    /// Serve Prometheus `/metrics` over HTTP on this address (port 0 picks one).
    pub http: Option<SocketAddr>,
}

/// Bounds on one statement, checked before it can hurt the cluster. Each has a setting
/// (`quiver scheduler --max-...`) and a refusal that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLimits {
    /// Bytes of SQL text.
    pub max_sql_bytes: usize,
    /// Nesting of expressions (`1+1+...` nests once per term).
    pub max_expression_depth: usize,
    /// Operators in the physical plan (a UNION ALL adds one per branch).
    pub max_plan_nodes: usize,
    /// Stages a query is cut into.
    pub max_stages: usize,
    /// Tasks over all of a query's stages.
    pub max_tasks: usize,
    /// Bytes of one stage's encoded plan, as shipped to executors with every task.
    pub max_plan_bytes: usize,
    /// Bytes a query's finished tasks may have produced in all (shuffle output and
    /// results): a runaway cross join fails instead of filling the executors' disks.
    pub max_query_bytes: u64,
    /// Files under one table's location: creating a table over a directory of millions
    /// of files, or scanning one that grew past it, is refused instead of listing them all.
    pub max_table_files: usize,
    /// Seconds a statement may run before it is cancelled everywhere; 0: no limit.
    pub statement_timeout_secs: u64,
    /// Statements one user (one session, without logins) runs at once; those over it
    /// wait in line. 0: no limit.
    pub max_running_per_user: usize,
    /// Statements one user may have waiting in line; those over it are refused. 0: no
    /// limit.
    pub max_queued_per_user: usize,
    /// Bytes of memory one query's tasks may hold on each executor (within the
    /// executor's own limit); past it they spill or fail. 0: no limit of its own.
    pub max_query_memory_bytes: u64,
}

impl Default for StatementLimits {
    fn default() -> Self {
        Self {
            max_sql_bytes: 4 << 20,
            // DataFusion's planning cost grows with the square of the nesting (each
            // level re-derives its children's types and names): 2,000 levels plan in
            // about 8 s on one core, 4,000 in about 30 s.
            max_expression_depth: 2_000,
            // Each task of a wide UNION ALL carries every branch: the cost grows with the
            // square of the branches (1,000 run in under 2 s).
            max_plan_nodes: 2_000,
            max_stages: 500,
            max_tasks: 100_000,
            max_plan_bytes: 64 << 20,
            max_query_bytes: 32 << 30,
            max_table_files: 100_000,
            statement_timeout_secs: 0,
            max_running_per_user: 0,
            max_queued_per_user: 100,
            max_query_memory_bytes: 0,
        }
    }
}

/// One user allowed to query the cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct UserCredentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserCredentials({}, ..)", self.user)
    }
}

impl std::str::FromStr for UserCredentials {
    type Err = String;

    /// Parses `user:password`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Self {
                user: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err(format!(
                "expected USER:PASSWORD with both parts non-empty, got `{}`",
                text.split(':').next().unwrap_or_default()
            )),
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 50050)),
            target_partitions: default_parallelism(),
            stage_width_from_slots: false,
            heartbeat_interval: Duration::from_secs(1),
            // A dead executor's running tasks are noticed only through this (or a failed
            // fetch or launch): it bounds recovery time.
            executor_timeout: Duration::from_secs(5),
            no_executor_grace: Duration::from_secs(10),
            result_retention: Duration::from_secs(600),
            session_idle_timeout: Duration::from_secs(3600),
            max_task_attempts: 4,
            cluster_secret: ClusterSecret::default(),
            users: Vec::new(),
            hashed_users: Vec::new(),
            admins: Vec::new(),
            token_lifetime: Duration::from_secs(12 * 3600),
            tls: None,
            executor_tls_ca: None,
            limits: StatementLimits::default(),
            state_dir: None,
            audit_log: None,
            warehouse: None,
            http: None,
        }
    }
}

/// How an executor runs.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The scheduler's URL, e.g. `http://127.0.0.1:50050`.
    pub scheduler_url: String,
    /// Address to serve Flight data and the control service on (port 0 picks one).
    pub bind: SocketAddr,
    /// Host name other processes use to reach this executor.
    pub advertise_host: String,
    /// How many tasks run at once.
    pub slots: usize,
    /// Base directory for spilled shuffle and operator files (`quiver-executors` under
    /// the system's temporary directory when `None`). Each executor works in its own
    /// subdirectory and deletes those of executors that died without cleaning up.
    pub work_dir: Option<PathBuf>,
    /// Shuffle output kept in memory before spilling to Arrow IPC files.
    pub shuffle_memory_budget: usize,
    /// Compression of shuffle spill files and of shuffle data sent to executors on other
    /// hosts (within a host it travels uncompressed).
    pub shuffle_compression: ShuffleCompression,
    /// Memory that running tasks may reserve (sorts, aggregations and joins spill or fail
    /// past it); unlimited when `None`.
    pub memory_limit: Option<usize>,
    /// Bytes of operator spill files (sorts, joins, aggregations past the memory limit)
    /// on disk at once; a task needing more fails instead of filling the disk.
    pub max_spill_bytes: u64,
    /// Deterministic faults for tests; none by default.
    pub faults: FaultInjection,
    /// Presented to the scheduler to register; must match the scheduler's.
    pub cluster_secret: ClusterSecret,
    /// Certificate authority (PEM) to verify an `https://` scheduler, and executors that
    /// serve TLS, against.
    pub tls_ca: Option<Vec<u8>>,
    /// Serve shuffle data, results and the control service over TLS with this
    /// certificate.
    pub tls: Option<TlsIdentity>,
    /// Serve Prometheus `/metrics` over HTTP on this address (port 0 picks one).
    pub http: Option<SocketAddr>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            scheduler_url: "http://127.0.0.1:50050".to_string(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_host: "127.0.0.1".to_string(),
            slots: default_parallelism(),
            work_dir: None,
            shuffle_memory_budget: 1 << 30,
            shuffle_compression: ShuffleCompression::default(),
            memory_limit: None,
            max_spill_bytes: 100 << 30,
            faults: FaultInjection::default(),
            cluster_secret: ClusterSecret::default(),
            tls_ca: None,
            tls: None,
            http: None,
        }
    }
}

/// The number of cores, at least 1.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// How shuffle data is compressed in spill files and between executors on different
/// hosts (Arrow IPC body compression). Within a host, and for results sent to clients
/// (not every Flight client reads compressed IPC), it is not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShuffleCompression {
    None,
    #[default]
    Lz4,
    Zstd,
}

impl ShuffleCompression {
    /// Arrow IPC writer options with this compression.
    pub fn ipc_options(self) -> datafusion::arrow::ipc::writer::IpcWriteOptions {
        use datafusion::arrow::ipc::CompressionType;
        let codec = match self {
            ShuffleCompression::None => None,
            ShuffleCompression::Lz4 => Some(CompressionType::LZ4_FRAME),
            ShuffleCompression::Zstd => Some(CompressionType::ZSTD),
        };
        datafusion::arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(codec)
            .unwrap_or_default()
    }
}

impl std::str::FromStr for ShuffleCompression {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "none" => Ok(ShuffleCompression::None),
            "lz4" => Ok(ShuffleCompression::Lz4),
            "zstd" => Ok(ShuffleCompression::Zstd),
            other => Err(format!(
                "unknown shuffle compression `{other}`: none, lz4 or zstd"
            )),
        }
    }
}

/// Memory this machine gives the process: the smaller of its physical memory and its
/// cgroup's limit (v2 or v1), when they can be read.
pub fn host_memory_bytes() -> Option<u64> {
    let physical = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map(|kib| kib * 1024);
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .filter_map(|text| text.trim().parse::<u64>().ok())
    .min();
    match (physical, cgroup) {
        (Some(physical), Some(limit)) => Some(physical.min(limit)),
        (physical, limit) => physical.or(limit),
    }
}

/// The memory an executor with `slots` slots may hold when not told: three quarters of
/// the host's memory, in proportion to the cores its slots use, so that executors sharing
/// a host split it rather than each assuming it has all of it. `None` (unlimited) when
/// the host's memory cannot be read.
pub fn default_memory_limit(slots: usize) -> Option<usize> {
    let host = host_memory_bytes()?;
    let cores = default_parallelism() as u64;
    let share = host / 4 * 3 * (slots.clamp(1, cores as usize) as u64) / cores;
    Some(share.max(256 << 20) as usize)
}

/// A test-only hook that makes chosen work fail once, deterministically, and counts how
/// often it fired so a test can prove the fault really happened. Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct FaultInjection {
    fail_task: Option<FaultTarget>,
    fail_fetch_of_stage: Option<u32>,
    stall_task: Option<FaultTarget>,
    fail_after_task: Option<FaultTarget>,
    streamed_result: Option<StreamedResultFault>,
    fired: Arc<AtomicUsize>,
}

/// What happens to a result partition read while it is written, once its client has
/// taken the first batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamedResultFault {
    /// Its task writes nothing more until the client has taken a batch: a client that
    /// waited for the task to finish would wait forever.
    HoldUntilRead,
    /// Its task's first attempt fails after the client took a batch.
    FailOnceRead,
    /// Its task's first attempt fails once the client is reading, before it took
    /// anything (the attempt waits for its client first).
    FailOnceBeforeRead,
}

/// One task attempt: stage, partition and attempt number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultTarget {
    pub stage_id: u32,
    pub partition: u32,
    pub attempt: u32,
}

impl FaultInjection {
    /// Fails this task attempt with a retryable I/O error.
    pub fn fail_task(target: FaultTarget) -> Self {
        Self {
            fail_task: Some(target),
            ..Self::default()
        }
    }

    /// Fails this task attempt with a retryable I/O error after it has run (a write
    /// task's files are then written, as when an executor dies just before reporting).
    pub fn fail_after_task(target: FaultTarget) -> Self {
        Self {
            fail_after_task: Some(target),
            ..Self::default()
        }
    }

    /// Makes this task attempt hang until it is cancelled.
    pub fn stall_task(target: FaultTarget) -> Self {
        Self {
            stall_task: Some(target),
            ..Self::default()
        }
    }

    /// Makes result tasks whose client reads as they write behave as `fault` says.
    pub fn streamed_result(fault: StreamedResultFault) -> Self {
        Self {
            streamed_result: Some(fault),
            ..Self::default()
        }
    }

    /// What to do to results read while they are written.
    pub fn streamed_result_fault(&self) -> Option<StreamedResultFault> {
        self.streamed_result
    }

    /// Records that a fault fired; true the first time only.
    pub fn fire_once(&self) -> bool {
        self.fired
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Fails the first read of `stage_id`'s output with a fetch error.
    pub fn fail_fetch_of_stage(stage_id: u32) -> Self {
        Self {
            fail_fetch_of_stage: Some(stage_id),
            ..Self::default()
        }
    }

    /// Whether this attempt must fail (and records that the fault fired).
    pub fn should_fail_task(&self, stage_id: u32, partition: u32, attempt: u32) -> bool {
        self.hits(self.fail_task, stage_id, partition, attempt)
    }

    /// Whether this attempt must fail once it has run (and records that the fault fired).
    pub fn should_fail_after_task(&self, stage_id: u32, partition: u32, attempt: u32) -> bool {
        self.hits(self.fail_after_task, stage_id, partition, attempt)
    }

    /// Whether this attempt must hang (and records that the fault fired).
    pub fn should_stall_task(&self, stage_id: u32, partition: u32, attempt: u32) -> bool {
        self.hits(self.stall_task, stage_id, partition, attempt)
    }

    /// Whether this read of `stage_id`'s output must fail; only the first one does.
    pub fn should_fail_fetch(&self, stage_id: u32) -> bool {
        self.fail_fetch_of_stage == Some(stage_id) && self.fire_once()
    }

    /// How many times a fault fired.
    pub fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }

    fn hits(
        &self,
        target: Option<FaultTarget>,
        stage_id: u32,
        partition: u32,
        attempt: u32,
    ) -> bool {
        let hit = target
            == Some(FaultTarget {
                stage_id,
                partition,
                attempt,
            });
        if hit {
            self.fired.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }
}
