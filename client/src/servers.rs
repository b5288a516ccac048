//! The `scheduler` and `executor` subcommands: run one node until SIGTERM or Ctrl-C, then
//! drain it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quiver_core::config::{
    ExecutorConfig, SchedulerConfig, default_memory_limit, default_parallelism,
};
use quiver_core::security::{ClusterSecret, TlsIdentity};
use quiver_core::users_file::{HashedUser, read_users_file, write_user};
use quiver_executor::Executor;
use quiver_scheduler::Scheduler;

use crate::cli::{ExecutorArgs, PasswdArgs, SchedulerArgs};
use crate::json_log::announce;

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The certificate and key of `--tls-cert` and `--tls-key`, when given.
fn tls_identity(
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
) -> Result<Option<TlsIdentity>, String> {
    Ok(match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsIdentity {
            certificate_pem: read_file(cert)?,
            private_key_pem: read_file(key)?,
        }),
        _ => None,
    })
}

fn read_optional(path: Option<&PathBuf>) -> Result<Option<Vec<u8>>, String> {
    path.map(|path| read_file(path)).transpose()
}

pub(crate) async fn run_scheduler(args: SchedulerArgs) -> Result<(), String> {
    let tls = tls_identity(args.tls_cert.as_ref(), args.tls_key.as_ref())?;
    let config = SchedulerConfig {
        bind: args.bind,
        target_partitions: args.target_partitions.unwrap_or_else(default_parallelism),
        stage_width_from_slots: args.target_partitions.is_none(),
        no_executor_grace: Duration::from_secs(args.no_executor_grace_secs),
        executor_timeout: Duration::from_secs(args.executor_timeout_secs),
        result_retention: Duration::from_secs(args.result_retention_secs),
        users: args.users,
        hashed_users: match &args.users_file {
            Some(path) => read_users_file(path).map_err(|e| e.to_string())?,
            None => Vec::new(),
        },
        admins: args.admins,
        cluster_secret: ClusterSecret::new(args.cluster_secret),
        tls,
        executor_tls_ca: read_optional(args.tls_ca.as_ref())?,
        http: args.http,
        limits: args.limits.limits(),
        state_dir: args.state.directory("scheduler"),
        warehouse: args.warehouse,
        audit_log: args.audit_log,
        session_idle_timeout: Duration::from_secs(args.session_idle_minutes * 60),
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::start(config).await.map_err(|e| e.to_string())?;
    announce(&format!(
        "quiver scheduler listening on {}",
        scheduler.url()
    ));
    if let Some(http) = scheduler.http_address() {
        announce(&format!(
            "quiver scheduler web UI at http://{http}/ (metrics at /metrics)"
        ));
    }
    wait_for_shutdown_signal().await;
    // Refuse new queries, let running ones finish (bounded), then stop.
    scheduler.drain_and_shutdown(Duration::from_secs(30)).await;
    announce("quiver scheduler drained and stopped");
    Ok(())
}

/// `quiver passwd`: adds or changes one user of a users file.
pub(crate) fn run_passwd(args: PasswdArgs) -> Result<(), String> {
    let password = match std::env::var("QUIVER_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            let first = rpassword::prompt_password(format!("New password for {}: ", args.user))
                .map_err(|e| format!("reading the password: {e}"))?;
            let again = rpassword::prompt_password("Again: ")
                .map_err(|e| format!("reading the password: {e}"))?;
            if first != again {
                return Err("the passwords differ; nothing was written".to_string());
            }
            first
        }
    };
    if password.is_empty() {
        return Err("an empty password is refused".to_string());
    }
    let entry = HashedUser::new(&args.user, &password).map_err(|e| e.to_string())?;
    write_user(&args.users_file, &entry).map_err(|e| e.to_string())?;
    eprintln!("{} is in {}", args.user, args.users_file.display());
    Ok(())
}

pub(crate) async fn run_executor(args: ExecutorArgs) -> Result<(), String> {
    let defaults = ExecutorConfig::default();
    let slots = args.slots.unwrap_or_else(default_parallelism);
    let config = ExecutorConfig {
        scheduler_url: args.scheduler,
        bind: args.bind,
        advertise_host: args.advertise_host,
        slots,
        work_dir: args.work_dir,
        shuffle_memory_budget: args
            .shuffle_memory_budget
            .unwrap_or(defaults.shuffle_memory_budget),
        shuffle_compression: args.shuffle_compression,
        memory_limit: match args.memory_limit {
            Some(0) => None,
            Some(limit) => Some(limit),
            None => default_memory_limit(slots),
        },
        max_spill_bytes: args.max_spill_bytes,
        cluster_secret: ClusterSecret::new(args.cluster_secret),
        tls_ca: read_optional(args.tls_ca.as_ref())?,
        tls: tls_identity(args.tls_cert.as_ref(), args.tls_key.as_ref())?,
        http: args.http,
        ..defaults
    };
    let executor = Executor::start(config).await.map_err(|e| e.to_string())?;
    announce(&format!(
        "quiver executor {} listening on {}",
        executor.executor_id(),
        executor.address()
    ));
    if let Some(http) = executor.http_address() {
        announce(&format!("quiver executor metrics at http://{http}/metrics"));
    }
    wait_for_shutdown_signal().await;
    // Finish running tasks (bounded) and leave the cluster before stopping.
    let executor_id = executor.executor_id().to_string();
    executor.drain_and_shutdown(Duration::from_secs(30)).await;
    announce(&format!(
        "quiver executor {executor_id} drained and stopped"
    ));
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
