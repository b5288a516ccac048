//! The Quiver cluster under test: in-process (standalone) or separate OS processes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quiver::{QuiverClient, StandaloneCluster, StandaloneConfig};

use crate::tpch::BenchError;

/// How Quiver runs during a benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// Scheduler and executors inside the benchmark process.
    Standalone,
    /// `quiver scheduler` and `quiver executor` as separate processes.
    Processes,
}

pub enum BenchCluster {
    Standalone(StandaloneCluster),
    Processes { url: String, children: Vec<Child> },
}

/// Resident memory of one process, in MiB: its peak so far and what it holds now.
#[derive(Debug, Clone)]
pub struct ProcessMemory {
    pub process: String,
    pub peak_mib: f64,
    pub now_mib: f64,
}

impl ProcessMemory {
    /// `pid`'s figures, named `process`; `None` once it has exited.
    pub fn of(pid: u32, process: String) -> Option<ProcessMemory> {
        Some(ProcessMemory {
            process,
            peak_mib: status_mib(pid, "VmHWM:")?,
            now_mib: status_mib(pid, "VmRSS:")?,
        })
    }
}

impl std::fmt::Display for ProcessMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: peak {:.0} MiB, now {:.0} MiB",
            self.process, self.peak_mib, self.now_mib
        )
    }
}

impl BenchCluster {
    pub async fn start(
        deployment: Deployment,
        executors: usize,
        slots: usize,
        memory_limit: Option<usize>,
    ) -> Result<Self, BenchError> {
        match deployment {
            Deployment::Standalone => Ok(BenchCluster::Standalone(
                StandaloneCluster::start(StandaloneConfig {
                    executors,
                    slots_per_executor: slots,
                    target_partitions: Some(executors * slots),
                    memory_limit,
                    ..StandaloneConfig::default()
                })
                .await?,
            )),
            Deployment::Processes => start_processes(executors, slots, memory_limit).await,
        }
    }

    /// `kill -9` the first executor process after `delay` (separate processes only).
    pub fn kill_one_executor_after(&self, delay: Duration) -> std::thread::JoinHandle<()> {
        let pid = match self {
            BenchCluster::Processes { children, .. } => children.get(1).map(Child::id),
            BenchCluster::Standalone(_) => None,
        };
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            if let Some(pid) = pid {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                eprintln!("killed executor process {pid} after {delay:?}");
            }
        })
    }

    /// The scheduler's Flight SQL address (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        match self {
            BenchCluster::Standalone(cluster) => cluster.url(),
            BenchCluster::Processes { url, .. } => url.clone(),
        }
    }

    pub async fn client(&self) -> Result<QuiverClient, BenchError> {
        Ok(match self {
            BenchCluster::Standalone(cluster) => cluster.client().await?,
            BenchCluster::Processes { url, .. } => QuiverClient::connect(url).await?,
        })
    }

    /// Peak resident memory of the cluster's own processes (Linux only).
    pub fn memory(&self) -> Vec<ProcessMemory> {
        match self {
            BenchCluster::Standalone(_) => Vec::new(),
            BenchCluster::Processes { children, .. } => children
                .iter()
                .enumerate()
                .filter_map(|(index, child)| {
                    let name = if index == 0 {
                        "scheduler".to_string()
                    } else {
                        format!("executor {index}")
                    };
                    ProcessMemory::of(child.id(), name)
                })
                .collect(),
        }
    }

    pub async fn shutdown(self) {
        match self {
            BenchCluster::Standalone(cluster) => cluster.shutdown().await,
            BenchCluster::Processes { mut children, .. } => {
                for child in &mut children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

/// A `/proc/PID/status` memory figure (`VmHWM:`, `VmRSS:`) in MiB.
fn status_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The `quiver` binary built next to this one (or one directory up, for test binaries).
fn quiver_binary() -> Result<PathBuf, BenchError> {
    let current = std::env::current_exe().map_err(|source| BenchError::Io {
        path: "current executable".to_string(),
        source,
    })?;
    let candidates: Vec<PathBuf> = current
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("quiver"))
        .collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| BenchError::Io {
            path: candidates[0].display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "build it first: cargo build --release -p quiver",
            ),
        })
}

async fn start_processes(
    executors: usize,
    slots: usize,
    memory_limit: Option<usize>,
) -> Result<BenchCluster, BenchError> {
    let binary = quiver_binary()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|source| BenchError::Io {
            path: "a free port".to_string(),
            source,
        })?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let spawn = |args: Vec<String>| {
        Command::new(&binary)
            .args(args)
            .env("QUIVER_EPHEMERAL", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| BenchError::Io {
                path: binary.display().to_string(),
                source,
            })
    };
    let mut children = vec![spawn(vec![
        "scheduler".into(),
        "--bind".into(),
        format!("127.0.0.1:{port}"),
        "--target-partitions".into(),
        (executors * slots).to_string(),
    ])?];
    for _ in 0..executors {
        let mut args = vec![
            "executor".into(),
            "--scheduler".into(),
            url.clone(),
            "--slots".into(),
            slots.to_string(),
        ];
        if let Some(limit) = memory_limit {
            args.extend(["--memory-limit".to_string(), limit.to_string()]);
        }
        children.push(spawn(args)?);
    }
    let cluster = BenchCluster::Processes { url, children };
    // The scheduler answers once it is listening; executors register right after.
    let started = Instant::now();
    loop {
        match cluster.client().await {
            Ok(client) if client.sql("SELECT 1").await.is_ok() => break,
            _ if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(_) | Err(_) => {
                cluster.shutdown().await;
                return Err(BenchError::ClusterStart);
            }
        }
    }
    Ok(cluster)
}
