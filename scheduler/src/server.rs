//! Starting and stopping the scheduler's gRPC server (Flight SQL + executor control).

use quiver_core::http_endpoint::{HttpHandler, serve_http};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use quiver_core::config::SchedulerConfig;
use quiver_core::proto::scheduler_control_server::SchedulerControlServer;
use quiver_core::security::RequireClusterSecret;
use quiver_core::security::require_secret_off_loopback;
use quiver_core::transport::spawn_server;
use quiver_core::{QuiverError, Result};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracing::info;

use crate::audit::AuditLog;
use crate::auth::{Authenticator, ClientAuth};
use crate::catalog_store::{CatalogStore, SqliteCatalogStore};
use crate::control::SchedulerControlService;
use crate::engine::Engine;
use crate::flight_sql::QuiverFlightSqlService;
use crate::front::QuiverFlightService;
use crate::registry::MAX_CONTROL_MESSAGE_BYTES;
use crate::session::QueryService;
use crate::state_dir::StateDir;

/// Entry point: `Scheduler::start(config)`.
pub struct Scheduler;

/// A running scheduler.
pub struct SchedulerHandle {
    address: SocketAddr,
    /// The HTTP port (`/metrics`), when it serves one.
    http: Option<(SocketAddr, JoinHandle<()>)>,
    tls: bool,
    engine: Arc<Engine>,
    queries: Arc<QueryService>,
    stop_server: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    housekeeping: JoinHandle<()>,
    /// Held while the scheduler runs (its lock keeps other schedulers out).
    _state_dir: Option<StateDir>,
    /// A warehouse made for this run only, deleted at shutdown.
    temporary_warehouse: Option<std::path::PathBuf>,
}

impl Scheduler {
    /// Binds `config.bind` (port 0 picks a free port) and starts serving.
    pub async fn start(config: SchedulerConfig) -> Result<SchedulerHandle> {
        require_secret_off_loopback(config.bind, &config.cluster_secret, "scheduler")?;
        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|e| QuiverError::Transport {
                    context: format!("binding scheduler to {}", config.bind),
                    source: Box::new(e),
                })?;
        let address = listener.local_addr()?;
        let engine = Engine::new(config.clone());
        let state_dir = config
            .state_dir
            .as_deref()
            .map(StateDir::claim)
            .transpose()?;
        let catalog =
            match &state_dir {
                Some(state) => Some(Arc::new(SqliteCatalogStore::open(&state.catalog_path())?)
                    as Arc<dyn CatalogStore>),
                None => None,
            };
        let (warehouse, temporary_warehouse) = match (&config.warehouse, &state_dir) {
            (Some(warehouse), _) => (warehouse.clone(), None),
            (None, Some(state)) => (state.warehouse_path().display().to_string() + "/", None),
            (None, None) => {
                let path = std::env::temp_dir().join(format!(
                    "quiver-warehouse-{}",
                    uuid::Uuid::new_v4().simple()
                ));
                (path.display().to_string() + "/", Some(path))
            }
        };
        let audit = config
            .audit_log
            .as_deref()
            .map(AuditLog::open)
            .transpose()?;
        let queries = Arc::new(
            QueryService::new(&config, Arc::clone(&engine), catalog, &warehouse)?
                .with_audit_log(audit.clone()),
        );
        queries
            .restore_catalog()
            .await
            .map_err(|e| QuiverError::Config(format!("restoring the catalog: {e}")))?;
        let auth = Authenticator::new(
            config.users.clone(),
            config.hashed_users.clone(),
            config.token_lifetime,
        );
        let http_auth = Arc::clone(&auth);
        let flight_sql = QuiverFlightSqlService::new(Arc::clone(&queries), Arc::clone(&auth));
        let calls = Arc::new(crate::metrics::SchedulerCalls::default());
        let flight =
            FlightServiceServer::new(QuiverFlightService::new(flight_sql, Arc::clone(&calls)))
                .max_decoding_message_size(MAX_CONTROL_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_CONTROL_MESSAGE_BYTES);
        let flight = InterceptedService::new(flight, ClientAuth { auth, audit });
        let control = SchedulerControlServer::new(SchedulerControlService {
            engine: Arc::clone(&engine),
            calls: Arc::clone(&calls),
        })
        .max_decoding_message_size(MAX_CONTROL_MESSAGE_BYTES);
        let control =
            InterceptedService::new(control, RequireClusterSecret(config.cluster_secret.clone()));
        let (stop_server, stopped) = oneshot::channel::<()>();
        let mut builder = Server::builder().tcp_nodelay(true);
        if let Some(tls) = &config.tls {
            let identity = Identity::from_pem(&tls.certificate_pem, &tls.private_key_pem);
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(|e| QuiverError::Transport {
                    context: "setting up TLS for the client port".to_string(),
                    source: Box::new(e),
                })?;
        }
        let router = builder.add_service(flight).add_service(control);
        let server = spawn_server(router, listener, stopped, "scheduler");
        let housekeeping = engine.spawn_housekeeping();
        let http = match config.http {
            Some(bind) => {
                let api = crate::http_api::HttpApi {
                    engine: Arc::clone(&engine),
                    queries: Arc::clone(&queries),
                    auth: Arc::clone(&http_auth),
                    admins: config.admins.clone(),
                    calls,
                };
                let handler: HttpHandler = Arc::new(move |request| api.handle(request));
                Some(serve_http(bind, handler).await?)
            }
            None => None,
        };
        info!(%address, "scheduler started");
        Ok(SchedulerHandle {
            address,
            http,
            tls: config.tls.is_some(),
            engine,
            queries,
            stop_server: Some(stop_server),
            server,
            housekeeping,
            _state_dir: state_dir,
            temporary_warehouse,
        })
    }
}

impl SchedulerHandle {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The URL clients and executors use, e.g. `http://127.0.0.1:50050` (`https://` when
    /// the client port serves TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Where `/metrics` is served, when it is.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(address, _)| *address)
    }

    pub fn queries(&self) -> &Arc<QueryService> {
        &self.queries
    }

    /// Graceful shutdown: new queries are refused, running ones get at most `timeout` to
    /// finish, then the server stops.
    pub async fn drain_and_shutdown(self, timeout: Duration) {
        self.queries.stop_admitting();
        let started = std::time::Instant::now();
        while self.engine.active_jobs() > 0 && started.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!(unfinished = self.engine.active_jobs(), "scheduler drained");
        self.shutdown().await;
    }

    /// Stops serving; running queries' clients get an error.
    pub async fn shutdown(mut self) {
        if let Some(warehouse) = self.temporary_warehouse.take() {
            let _ = std::fs::remove_dir_all(warehouse);
        }
        self.engine.stop();
        self.housekeeping.abort();
        if let Some((_, http)) = self.http.take() {
            http.abort();
        }
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
    }
}
