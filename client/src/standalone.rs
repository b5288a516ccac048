//! [`StandaloneCluster`]: a scheduler and N executors inside this process, talking over
//! real gRPC/Flight on 127.0.0.1 ports, exactly as separate processes would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quiver_core::config::{
    ExecutorConfig, FaultInjection, SchedulerConfig, StatementLimits, UserCredentials,
    default_memory_limit, default_parallelism,
};
use quiver_core::security::ClusterSecret;
use quiver_core::ticket::random_secret;
use quiver_executor::{Executor, ExecutorHandle};
use quiver_scheduler::{Scheduler, SchedulerHandle};

use crate::client::QuiverClient;
use crate::error::ClientError;

/// Shape of an in-process cluster.
#[derive(Debug, Clone)]
pub struct StandaloneConfig {
    /// Number of executors (default 2).
    pub executors: usize,
    /// Task slots per executor (default: cores / executors, at least 1).
    pub slots_per_executor: usize,
    /// Partitions per stage (default: executors x slots).
    pub target_partitions: Option<usize>,
    /// Shuffle output each executor keeps in memory before spilling.
    pub shuffle_memory_budget: usize,
    /// Port for the scheduler (0 picks a free one).
    pub scheduler_port: u16,
    /// Memory each executor's tasks, shuffle output and results may hold (unlimited when
    /// `None`; by default its share of the host's, as for `quiver executor`).
    pub memory_limit: Option<usize>,
    /// Bytes of operator spill files each executor may hold on disk at once.
    pub max_spill_bytes: u64,
    /// Deterministic faults for tests, shared by every executor.
    pub faults: FaultInjection,
    /// Users clients must log in as; anyone may query when empty.
    pub users: Vec<UserCredentials>,
    /// How long finished queries' results stay on the executors.
    pub result_retention: Duration,
    /// What one statement may ask of the cluster.
    pub limits: StatementLimits,
    /// Where the catalog persists (`None`: it is lost at exit).
    pub state_dir: Option<PathBuf>,
    /// Where the scheduler serves its web UI, JSON API and metrics (`None`: nowhere).
    pub http: Option<SocketAddr>,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        let executors = 2;
        let slots_per_executor = (default_parallelism() / executors).max(1);
        Self {
            executors,
            slots_per_executor,
            target_partitions: None,
            shuffle_memory_budget: ExecutorConfig::default().shuffle_memory_budget,
            scheduler_port: 0,
            memory_limit: default_memory_limit(slots_per_executor),
            max_spill_bytes: ExecutorConfig::default().max_spill_bytes,
            faults: FaultInjection::default(),
            users: Vec::new(),
            result_retention: SchedulerConfig::default().result_retention,
            limits: StatementLimits::default(),
            state_dir: None,
            http: None,
        }
    }
}

/// A running in-process cluster.
pub struct StandaloneCluster {
    scheduler: SchedulerHandle,
    executors: Vec<ExecutorHandle>,
    cluster_secret: ClusterSecret,
}

impl StandaloneCluster {
    /// Starts the scheduler, then the executors, and waits until all have registered.
    pub async fn start(config: StandaloneConfig) -> Result<Self, ClientError> {
        if config.executors == 0 {
            return Err(ClientError::Cluster(quiver_core::QuiverError::Config(
                "a standalone cluster needs at least one executor".to_string(),
            )));
        }
        let slots = config.slots_per_executor.max(1);
        // Only this process's executors may join: other local users cannot register one
        // and receive the cluster's tasks.
        let cluster_secret = ClusterSecret::new(Some(random_secret()));
        let scheduler = Scheduler::start(SchedulerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], config.scheduler_port)),
            target_partitions: config.target_partitions.unwrap_or(config.executors * slots),
            cluster_secret: cluster_secret.clone(),
            users: config.users.clone(),
            result_retention: config.result_retention,
            limits: config.limits.clone(),
            state_dir: config.state_dir.clone(),
            http: config.http,
            ..SchedulerConfig::default()
        })
        .await?;
        let mut executors = Vec::with_capacity(config.executors);
        for _ in 0..config.executors {
            let executor = Executor::start(ExecutorConfig {
                scheduler_url: scheduler.url(),
                slots,
                shuffle_memory_budget: config.shuffle_memory_budget,
                faults: config.faults.clone(),
                memory_limit: config.memory_limit,
                max_spill_bytes: config.max_spill_bytes,
                cluster_secret: cluster_secret.clone(),
                ..ExecutorConfig::default()
            })
            .await?;
            executors.push(executor);
        }
        for executor in &executors {
            executor.wait_registered(Duration::from_secs(10)).await?;
        }
        Ok(Self {
            scheduler,
            executors,
            cluster_secret,
        })
    }

    /// Where the web UI is served, when it is.
    pub fn ui_url(&self) -> Option<String> {
        self.scheduler
            .http_address()
            .map(|address| format!("http://{address}/"))
    }

    /// The scheduler's URL, for clients in this or other processes.
    pub fn url(&self) -> String {
        self.scheduler.url()
    }

    /// A client connected to this cluster.
    pub async fn client(&self) -> Result<QuiverClient, ClientError> {
        QuiverClient::connect(&self.url()).await
    }

    pub fn scheduler(&self) -> &SchedulerHandle {
        &self.scheduler
    }

    pub fn executors(&self) -> &[ExecutorHandle] {
        &self.executors
    }

    /// The secret this cluster's executors register with (random per cluster).
    pub fn cluster_secret(&self) -> &ClusterSecret {
        &self.cluster_secret
    }

    /// Stops the executors, then the scheduler.
    pub async fn shutdown(self) {
        // Each leaves the cluster before it stops, so the scheduler does not take the
        // shutdown for a failure; running tasks are not waited for.
        for executor in self.executors {
            executor.drain_and_shutdown(Duration::ZERO).await;
        }
        self.scheduler.shutdown().await;
    }
}
