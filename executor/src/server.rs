//! Starting and stopping an executor: its gRPC server (Flight data + control), its
//! registration with the scheduler and its heartbeat.

use quiver_core::http_endpoint::{HttpHandler, HttpResponse, serve_http};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use quiver_core::config::ExecutorConfig;
use quiver_core::exchange::ShuffleContext;
use quiver_core::proto::executor_control_server::ExecutorControlServer;
use quiver_core::proto::scheduler_control_client::SchedulerControlClient;
use quiver_core::proto::{
    AttachRequest, DrainExecutorRequest, ExecutorRegistration, HeartbeatRequest,
    RegisterExecutorRequest,
};
use quiver_core::security::{AttachClusterSecret, ControlChannel, RequireClusterSecret};
use quiver_core::ticket::{SharedTicketKey, TicketKey};
use quiver_core::transport::{endpoint, spawn_server};
use quiver_core::{QuiverError, Result, TaskAttempt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

use crate::control::ExecutorControlService;
use crate::fetch::{ExecutorShuffleIo, MAX_FLIGHT_MESSAGE_BYTES};
use crate::flight::ExecutorFlightService;
use crate::idle_trim::IdleTrim;
use crate::runner::TaskRunner;
use crate::stage_plans::StagePlans;
use crate::store::ShuffleStore;
use crate::work_dir::WorkDir;
use quiver_core::storage::StoreRegistry;
use quiver_core::threads::DedicatedThreads;

/// Stack of each task thread: decoding a plan and running its operators recurse once per
/// plan level, and a plan the scheduler accepted must not overflow here.
const TASK_STACK_BYTES: usize = 16 << 20;

/// Entry point: `Executor::start(config)`.
pub struct Executor;

/// A running executor; dropping it does not stop it, [`ExecutorHandle::shutdown`] does.
pub struct ExecutorHandle {
    executor_id: String,
    address: SocketAddr,
    store: Arc<ShuffleStore>,
    runner: Arc<TaskRunner>,
    registered: watch::Receiver<bool>,
    ticket_key: SharedTicketKey,
    stop_server: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    membership: JoinHandle<()>,
    /// Taken (and deleted) by a graceful shutdown.
    work_dir: Option<WorkDir>,
    /// The HTTP port (`/metrics`), when it serves one.
    http: Option<(SocketAddr, JoinHandle<()>)>,
}

impl Executor {
    /// Binds the executor's port, starts serving, and begins registering with the
    /// scheduler in the background (retrying until it answers).
    pub async fn start(config: ExecutorConfig) -> Result<ExecutorHandle> {
        if config.slots == 0 {
            return Err(QuiverError::Config(
                "executor slots must be at least 1".to_string(),
            ));
        }
        quiver_core::security::require_secret_off_loopback(
            config.bind,
            &config.cluster_secret,
            "executor",
        )?;
        let executor_id = format!("exec-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|e| QuiverError::Transport {
                    context: format!("binding executor to {}", config.bind),
                    source: Box::new(e),
                })?;
        let address = listener.local_addr()?;
        let base = config
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("quiver-executors"));
        let work_dir = WorkDir::claim(&base, &executor_id)?;
        // Shuffle output and results count against the memory limit, but take at most a
        // quarter of it: they cannot spill on demand, and operators need the rest.
        let shuffle_budget = match config.memory_limit {
            Some(limit) => config.shuffle_memory_budget.min(limit / 4),
            None => config.shuffle_memory_budget,
        };
        let store = ShuffleStore::compressing(
            &executor_id,
            work_dir.path().to_path_buf(),
            shuffle_budget,
            config.shuffle_compression,
        );
        let scheduler_channel =
            endpoint(&config.scheduler_url, config.tls_ca.as_deref())?.connect_lazy();
        let scheduler = SchedulerControlClient::new(InterceptedService::new(
            scheduler_channel,
            AttachClusterSecret::new(config.cluster_secret.clone()),
        ));
        // Replaced by the cluster's key when the scheduler accepts this executor.
        let ticket_key = SharedTicketKey::new(TicketKey::random());
        let shared_key = ticket_key.clone();
        let stores = Arc::new(StoreRegistry::new());
        let runtime = task_runtime(&config, work_dir.path(), &stores)?;
        store.account_in(&runtime.memory_pool);
        let runner = Arc::new(TaskRunner {
            executor_id: executor_id.clone(),
            shuffle: ShuffleContext {
                io: Arc::new(ExecutorShuffleIo {
                    store: Arc::clone(&store),
                    faults: config.faults.clone(),
                    ticket_key: ticket_key.clone(),
                    tls_ca: config.tls_ca.clone().map(Arc::from),
                }),
            },
            base_state: SessionStateBuilder::new()
                .with_default_features()
                .with_runtime_env(runtime)
                .build(),
            stores,
            store: Arc::clone(&store),
            slots: Arc::new(Semaphore::new(config.slots)),
            running: AtomicUsize::new(0),
            scheduler: scheduler.clone(),
            faults: config.faults.clone(),
            threads: DedicatedThreads::new(
                config.slots,
                &format!("{executor_id}-task"),
                TASK_STACK_BYTES,
            )?,
            control: tokio::runtime::Handle::current(),
            in_flight: parking_lot::Mutex::new(std::collections::HashMap::new()),
            stage_plans: StagePlans::default(),
            parsed_settings: Default::default(),
            job_memory: Default::default(),
            tasks_succeeded: Default::default(),
            tasks_failed: Default::default(),
            task_duration: Default::default(),
        });

        let calls = Arc::new(quiver_core::prometheus::CallCounts::default());
        let flight = FlightServiceServer::new(ExecutorFlightService {
            store: Arc::clone(&store),
            ticket_key: ticket_key.clone(),
            calls: Arc::clone(&calls),
        })
        .max_decoding_message_size(MAX_FLIGHT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_FLIGHT_MESSAGE_BYTES);
        let control = ExecutorControlServer::new(ExecutorControlService {
            runner: Arc::clone(&runner),
            store: Arc::clone(&store),
            calls: Arc::clone(&calls),
        })
        .max_decoding_message_size(MAX_FLIGHT_MESSAGE_BYTES);
        let control =
            InterceptedService::new(control, RequireClusterSecret(config.cluster_secret.clone()));
        let (stop_server, stopped) = oneshot::channel::<()>();
        let mut server = Server::builder().tcp_nodelay(true);
        if let Some(tls) = &config.tls {
            let identity = Identity::from_pem(&tls.certificate_pem, &tls.private_key_pem);
            server = server
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(|e| QuiverError::Transport {
                    context: "the executor's TLS certificate".to_string(),
                    source: Box::new(e),
                })?;
        }
        let router = server.add_service(flight).add_service(control);
        let server = spawn_server(router, listener, stopped, "executor");

        let http = match config.http {
            Some(bind) => {
                let (runner, store) = (Arc::clone(&runner), Arc::clone(&store));
                let handler: HttpHandler = Arc::new(move |request| match request.path {
                    "/metrics" => {
                        HttpResponse::prometheus(crate::metrics::render(&runner, &store, &calls))
                    }
                    _ => HttpResponse::text(404, "the executor serves /metrics\n"),
                });
                Some(serve_http(bind, handler).await?)
            }
            None => None,
        };
        let registration = ExecutorRegistration {
            executor_id: executor_id.clone(),
            host: config.advertise_host.clone(),
            port: u32::from(address.port()),
            slots: config.slots as u32,
            memory_limit: config.memory_limit.unwrap_or(0) as u64,
            tls: config.tls.is_some(),
        };
        let (registered_tx, registered) = watch::channel(false);
        let membership = tokio::spawn(keep_membership(
            scheduler,
            registration,
            Arc::clone(&runner),
            Arc::clone(&store),
            ticket_key,
            registered_tx,
        ));
        info!(%executor_id, %address, slots = config.slots, "executor started");
        Ok(ExecutorHandle {
            executor_id,
            address,
            store,
            runner,
            registered,
            ticket_key: shared_key,
            stop_server: Some(stop_server),
            server,
            membership,
            work_dir: Some(work_dir),
            http,
        })
    }
}

/// The runtime tasks run in: a fair, spilling memory pool when a limit is set, and spill
/// files under the executor's work directory.
/// Object stores come from `stores`, which tasks configure with their tables' options.
fn task_runtime(
    config: &ExecutorConfig,
    work_dir: &std::path::Path,
    stores: &Arc<StoreRegistry>,
) -> Result<Arc<RuntimeEnv>> {
    let mut builder = RuntimeEnvBuilder::new()
        .with_temp_file_path(work_dir.join("spill"))
        .with_max_temp_directory_size(config.max_spill_bytes)
        .with_object_store_registry(Arc::clone(stores) as _);
    if let Some(limit) = config.memory_limit {
        builder = builder.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    builder.build_arc().map_err(QuiverError::DataFusion)
}

impl ExecutorHandle {
    pub fn executor_id(&self) -> &str {
        &self.executor_id
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where `/metrics` is served, when it is.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(address, _)| *address)
    }

    pub fn store(&self) -> &Arc<ShuffleStore> {
        &self.store
    }

    pub fn running_tasks(&self) -> usize {
        self.runner.running_tasks()
    }

    /// The key this executor checks tickets with (the cluster's, once registered).
    pub fn ticket_key(&self) -> quiver_core::ticket::TicketKey {
        self.ticket_key.get()
    }

    /// Waits until the scheduler has accepted this executor, or `timeout` passes.
    pub async fn wait_registered(&self, timeout: Duration) -> Result<()> {
        let mut registered = self.registered.clone();
        tokio::time::timeout(timeout, registered.wait_for(|done| *done))
            .await
            .map_err(|_| {
                QuiverError::Config(format!(
                    "executor {} could not register with the scheduler within {timeout:?}",
                    self.executor_id
                ))
            })?
            .map_err(|_| QuiverError::Internal("registration loop ended".to_string()))?;
        Ok(())
    }

    /// Graceful shutdown: tells the scheduler to send nothing new, waits (at most
    /// `timeout`) for running tasks to finish, leaves the cluster, then stops.
    pub async fn drain_and_shutdown(self, timeout: Duration) {
        let mut scheduler = self.runner.scheduler.clone();
        let drain = |finished| DrainExecutorRequest {
            executor_id: self.executor_id.clone(),
            finished,
        };
        if let Err(status) = scheduler.drain_executor(drain(false)).await {
            warn!(%status, "could not tell the scheduler about the shutdown");
        }
        let started = Instant::now();
        while self.runner.running_tasks() > 0 && started.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(status) = scheduler.drain_executor(drain(true)).await {
            warn!(%status, "could not deregister from the scheduler");
        }
        info!(executor_id = %self.executor_id, "executor drained");
        self.shutdown().await;
    }

    /// Stops serving and heartbeating, and deletes the executor's own work directory.
    pub async fn shutdown(mut self) {
        self.membership.abort();
        if let Some((_, http)) = self.http.take() {
            http.abort();
        }
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        self.server.abort();
        // Their futures hold the runner, and with it the task threads.
        self.runner.abort_all();
        if let Some(dir) = self.work_dir.take() {
            dir.remove();
        }
    }
}

/// Registers with the scheduler (retrying with backoff), then heartbeats; registers
/// again whenever the scheduler no longer knows this executor.
async fn keep_membership(
    scheduler: SchedulerControlClient<ControlChannel>,
    registration: ExecutorRegistration,
    runner: Arc<TaskRunner>,
    store: Arc<ShuffleStore>,
    ticket_key: SharedTicketKey,
    registered: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let mut client = scheduler.clone();
        let interval = match client
            .register_executor(RegisterExecutorRequest {
                executor: Some(registration.clone()),
            })
            .await
        {
            Ok(response) => {
                let response = response.into_inner();
                if !response.ticket_key.is_empty() {
                    ticket_key.set(TicketKey::from_bytes(&response.ticket_key));
                }
                backoff = Duration::from_millis(20);
                let _ = registered.send(true);
                Duration::from_millis(response.heartbeat_interval_ms.max(10))
            }
            Err(status) => {
                warn!(%status, "registering with the scheduler failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // Held open while this executor lives: the scheduler notices at once when the
        // connection drops, and this loop notices a scheduler that went away.
        let mut attachment = match client
            .attach(AttachRequest {
                executor_id: registration.executor_id.clone(),
            })
            .await
        {
            Ok(stream) => Some(stream.into_inner()),
            Err(status) => {
                warn!(%status, "could not attach to the scheduler; relying on heartbeats");
                None
            }
        };
        let mut beats: u64 = 0;
        let mut idle_trim = IdleTrim::default();
        loop {
            match attachment.as_mut() {
                Some(stream) => {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        ended = stream.message() => {
                            warn!(?ended, "the scheduler closed the attachment; registering again");
                            break;
                        }
                    }
                }
                None => tokio::time::sleep(interval).await,
            }
            let mut heartbeat = HeartbeatRequest {
                executor_id: registration.executor_id.clone(),
                running_tasks: runner.running_tasks() as u32,
                memory_reserved: runner.base_state.runtime_env().memory_pool.reserved() as u64,
                shuffle_memory_bytes: store.memory_used() as u64,
                shuffle_spilled_bytes: store.spilled_now() as u64,
                ..HeartbeatRequest::default()
            };
            // Every fifth beat (the first included): reconcile held data and running
            // tasks with what the scheduler knows.
            if beats.is_multiple_of(5) {
                heartbeat.held_jobs = store.job_ids();
                heartbeat.running = runner.running_attempts();
            }
            beats += 1;
            let tasks_ended = runner.tasks_succeeded.load(Ordering::Relaxed)
                + runner.tasks_failed.load(Ordering::Relaxed);
            runner.stage_plans.evict_idle();
            idle_trim.on_heartbeat(runner.running_tasks(), tasks_ended, store.memory_used());
            match client.heartbeat(heartbeat).await {
                Ok(response) => {
                    let response = response.into_inner();
                    for job_id in &response.release_jobs {
                        info!(job = %job_id, "dropping data of a job the scheduler has ended");
                        runner.abort_job(job_id);
                        runner.stage_plans.forget_job(job_id);
                        store.release_job(job_id, None);
                    }
                    let stray: Vec<TaskAttempt> = response
                        .stray_tasks
                        .iter()
                        .map(TaskAttempt::from_proto)
                        .collect();
                    let stopped = runner.abort_attempts(&stray);
                    if stopped > 0 {
                        info!(
                            tasks = stopped,
                            "stopped tasks the scheduler no longer expects"
                        );
                    }
                    if response.reregister {
                        break;
                    }
                }
                Err(status) => {
                    warn!(%status, "heartbeat failed");
                    break;
                }
            }
        }
    }
}
