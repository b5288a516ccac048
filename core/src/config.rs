//! Typed configuration of the scheduler and the executors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Address for the Flight SQL front door and the executor control service.
    pub bind: SocketAddr,
    /// Default number of partitions per stage (DataFusion `target_partitions`).
    pub target_partitions: usize,
    /// How often executors are asked to heartbeat.
    pub heartbeat_interval: Duration,
    /// An executor silent for this long is declared lost.
    pub executor_timeout: Duration,
    /// How long a query waits for any executor to register before it fails.
    pub no_executor_grace: Duration,
    /// How long a finished query's results stay readable on the executors.
    pub result_retention: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 50050)),
            target_partitions: default_parallelism(),
            heartbeat_interval: Duration::from_secs(2),
            executor_timeout: Duration::from_secs(20),
            no_executor_grace: Duration::from_secs(10),
            result_retention: Duration::from_secs(600),
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
    /// Where spilled shuffle files go; a fresh temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// Shuffle output kept in memory before spilling to Arrow IPC files.
    pub shuffle_memory_budget: usize,
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
        }
    }
}

/// The number of cores, at least 1.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
