//! [`QuiverClient`]: runs SQL through a scheduler's Flight SQL front door and reads the
//! result partitions from the executors that hold them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{
    Action, CancelFlightInfoRequest, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, PollInfo,
};
use base64::Engine as _;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use parking_lot::RwLock;
use prost::Message;
use quiver_core::proto::QueryProgress;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::error::ClientError;

const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// How to reach and log in to a scheduler.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// User name and password, for servers that require a login.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Certificate authority (PEM) that signed an `https://` server's certificate.
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("user", &self.user)
            .field("tls", &self.tls_ca_pem.is_some())
            .finish()
    }
}

/// Adds the bearer token from the handshake to every call.
#[derive(Clone, Default)]
struct BearerToken(Arc<RwLock<Option<String>>>);

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = self.0.read().as_ref() {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| tonic::Status::internal("token is not valid header text"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

type AuthChannel = InterceptedService<Channel, BearerToken>;

/// A connection to a Quiver scheduler.
#[derive(Clone)]
pub struct QuiverClient {
    scheduler_url: String,
    scheduler: Channel,
    token: BearerToken,
    tls_ca_pem: Option<Arc<Vec<u8>>>,
    channels: Arc<ChannelCache>,
}

/// A query submitted with [`QuiverClient::submit`]: poll it for progress until it is
/// done, then read its result, or cancel it.
#[derive(Debug, Clone)]
pub struct RunningQuery {
    poll: PollInfo,
}

impl RunningQuery {
    /// True once the query has finished and its result can be read.
    pub fn is_done(&self) -> bool {
        self.poll.flight_descriptor.is_none()
    }

    /// The latest progress report, if the server sent one.
    pub fn progress(&self) -> Option<QueryProgress> {
        let info = self.poll.info.as_ref()?;
        QueryProgress::decode(info.app_metadata.clone()).ok()
    }

    /// Finished fraction of the query's tasks, 0..=1.
    pub fn fraction(&self) -> f64 {
        self.poll.progress.unwrap_or(0.0)
    }

    /// The final FlightInfo (where the result is), once done.
    pub fn flight_info(&self) -> Option<&FlightInfo> {
        self.is_done().then_some(self.poll.info.as_ref()).flatten()
    }
}

impl std::fmt::Debug for QuiverClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuiverClient")
            .field("scheduler_url", &self.scheduler_url)
            .finish()
    }
}

/// A query's result: its schema and batches, in the query's order.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QuiverClient {
    /// Connects to the scheduler at `url` (e.g. `http://127.0.0.1:50050`).
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with(url, ConnectOptions::default()).await
    }

    /// Connects with credentials and/or TLS settings; logs in when a user is given.
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Self, ClientError> {
        let url = normalize_url(url);
        let tls_ca_pem = options.tls_ca_pem.map(Arc::new);
        let scheduler = connect_channel(&url, tls_ca_pem.as_deref().map(Vec::as_slice)).await?;
        let client = Self {
            scheduler_url: url,
            scheduler,
            token: BearerToken::default(),
            tls_ca_pem,
            channels: Arc::new(ChannelCache::default()),
        };
        if let Some(user) = &options.user {
            client
                .login(user, options.password.as_deref().unwrap_or_default())
                .await?;
        }
        Ok(client)
    }

    /// The Flight handshake with basic auth; later calls carry the bearer token it returns.
    pub async fn login(&self, user: &str, password: &str) -> Result<(), ClientError> {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut request = tonic::Request::new(futures::stream::iter([HandshakeRequest::default()]));
        let header = MetadataValue::try_from(format!("Basic {basic}"))
            .map_err(|_| ClientError::Protocol("user name is not valid header text".into()))?;
        request.metadata_mut().insert("authorization", header);
        let response = FlightServiceClient::new(self.scheduler.clone())
            .handshake(request)
            .await
            .map_err(ClientError::from_status)?;
        let from_header = response
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let mut stream = response.into_inner();
        let from_payload = match stream.message().await.map_err(ClientError::from_status)? {
            Some(reply) if !reply.payload.is_empty() => {
                String::from_utf8(reply.payload.to_vec()).ok()
            }
            _ => None,
        };
        *self.token.0.write() = from_header.or(from_payload);
        Ok(())
    }

    /// Whether the server wants a login: a handshake without credentials is refused with
    /// `Unauthenticated` by a server that has users.
    pub async fn requires_login(&self) -> Result<bool, ClientError> {
        let request = tonic::Request::new(futures::stream::iter([HandshakeRequest::default()]));
        match FlightServiceClient::new(self.scheduler.clone())
            .handshake(request)
            .await
        {
            Ok(_) => Ok(false),
            Err(status) if status.code() == tonic::Code::Unauthenticated => Ok(true),
            Err(status) => Err(ClientError::from_status(status)),
        }
    }

    fn flight_client(&self) -> FlightServiceClient<AuthChannel> {
        FlightServiceClient::new(InterceptedService::new(
            self.scheduler.clone(),
            self.token.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Starts `query` without waiting for it; see [`RunningQuery`].
    pub async fn submit(&self, query: &str) -> Result<RunningQuery, ClientError> {
        let response = self
            .flight_client()
            .poll_flight_info(statement_descriptor(query))
            .await
            .map_err(ClientError::from_status)?;
        Ok(RunningQuery {
            poll: response.into_inner(),
        })
    }

    /// Asks for news of a running query (the server answers within about 100 ms).
    pub async fn poll(&self, running: &RunningQuery) -> Result<RunningQuery, ClientError> {
        let Some(descriptor) = running.poll.flight_descriptor.clone() else {
            return Ok(running.clone());
        };
        let response = self
            .flight_client()
            .poll_flight_info(descriptor)
            .await
            .map_err(ClientError::from_status)?;
        Ok(RunningQuery {
            poll: response.into_inner(),
        })
    }

    /// Stops a running query (its tasks stop and its data is deleted), or drops a
    /// finished query's result.
    pub async fn cancel(&self, running: &RunningQuery) -> Result<(), ClientError> {
        let Some(info) = running.poll.info.clone() else {
            return Ok(());
        };
        self.cancel_info(info).await
    }

    async fn cancel_info(&self, info: FlightInfo) -> Result<(), ClientError> {
        let request = CancelFlightInfoRequest { info: Some(info) };
        let action = Action {
            r#type: "CancelFlightInfo".to_string(),
            body: request.encode_to_vec().into(),
        };
        let mut results = self
            .flight_client()
            .do_action(action)
            .await
            .map_err(ClientError::from_status)?
            .into_inner();
        while results
            .message()
            .await
            .map_err(ClientError::from_status)?
            .is_some()
        {}
        Ok(())
    }

    /// Reads the whole result of a finished [`RunningQuery`].
    pub async fn fetch(&self, running: &RunningQuery) -> Result<QueryOutput, ClientError> {
        let info = running
            .flight_info()
            .ok_or_else(|| ClientError::Protocol("the query has not finished".to_string()))?;
        self.read_info(info.clone()).await
    }

    pub fn scheduler_url(&self) -> &str {
        &self.scheduler_url
    }

    /// Runs one SQL statement and collects its result.
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>, ClientError> {
        Ok(self.query(query).await?.batches)
    }

    /// Runs one SQL statement; the result keeps its schema even when it has no rows.
    /// Once it is read, the cluster is told it may drop it (in the background), instead
    /// of keeping it for the retention time in case it is read again.
    pub async fn query(&self, query: &str) -> Result<QueryOutput, ClientError> {
        let info = self.flight_info(query).await?;
        let output = self.read_info(info.clone()).await?;
        self.release_in_background(info);
        Ok(output)
    }

    /// Drops a result read in full on the executors holding it; a failure only means it
    /// stays until the retention time ends.
    fn release_in_background(&self, info: FlightInfo) {
        // Results the scheduler answered itself (no location) hold nothing to drop.
        if info.endpoint.iter().all(|e| e.location.is_empty()) {
            return;
        }
        let client = self.clone();
        tokio::spawn(async move {
            if let Err(error) = client.cancel_info(info).await {
                tracing::debug!(%error, "releasing a result that was read failed");
            }
        });
    }

    async fn read_info(&self, info: FlightInfo) -> Result<QueryOutput, ClientError> {
        let schema: SchemaRef = Arc::new(
            info.clone()
                .try_decode_schema()
                .map_err(|e| ClientError::Protocol(format!("result schema: {e}")))?,
        );
        let reads = info
            .endpoint
            .iter()
            .map(|endpoint| self.read_endpoint(endpoint));
        let partitions = futures::future::try_join_all(reads).await?;
        Ok(QueryOutput {
            schema,
            batches: partitions.into_iter().flatten().collect(),
        })
    }

    /// Runs one SQL statement and streams its result partition by partition, in order,
    /// without holding the whole result in memory.
    pub async fn sql_stream(
        &self,
        query: &str,
    ) -> Result<
        (
            SchemaRef,
            BoxStream<'static, Result<RecordBatch, ClientError>>,
        ),
        ClientError,
    > {
        let info = self.flight_info(query).await?;
        let schema: SchemaRef = Arc::new(
            info.clone()
                .try_decode_schema()
                .map_err(|e| ClientError::Protocol(format!("result schema: {e}")))?,
        );
        let client = self.clone();
        let batches = futures::stream::iter(info.endpoint)
            .then(move |endpoint| {
                let client = client.clone();
                async move { client.open_endpoint(&endpoint).await }
            })
            .try_flatten()
            .boxed();
        Ok((schema, batches))
    }

    /// Registers a Parquet file or directory as table `name` in the cluster's catalog.
    pub async fn register_parquet(&self, name: &str, path: &str) -> Result<(), ClientError> {
        let location = path.replace('\'', "''");
        self.sql(&format!(
            "CREATE EXTERNAL TABLE {name} STORED AS PARQUET LOCATION '{location}'"
        ))
        .await
        .map(|_| ())
    }

    /// Plans and runs `query`; returns where its result partitions are.
    pub async fn flight_info(&self, query: &str) -> Result<FlightInfo, ClientError> {
        let response = self
            .flight_client()
            .get_flight_info(statement_descriptor(query))
            .await
            .map_err(ClientError::from_status)?;
        Ok(response.into_inner())
    }

    async fn read_endpoint(
        &self,
        endpoint: &FlightEndpoint,
    ) -> Result<Vec<RecordBatch>, ClientError> {
        self.open_endpoint(endpoint).await?.try_collect().await
    }

    /// Starts reading one result partition from the executor that holds it.
    async fn open_endpoint(
        &self,
        endpoint: &FlightEndpoint,
    ) -> Result<BoxStream<'static, Result<RecordBatch, ClientError>>, ClientError> {
        let ticket = endpoint
            .ticket
            .clone()
            .ok_or_else(|| ClientError::Protocol("endpoint without a ticket".to_string()))?;
        // Executors check the signed ticket, not the user: the scheduler's bearer token
        // is sent to the scheduler only.
        let (location, channel, token) = match endpoint.location.first() {
            Some(location) => {
                let url = normalize_url(&location.uri);
                let ca = self.tls_ca_pem.as_deref().map(Vec::as_slice);
                let channel = self.channels.get_or_connect(&url, ca).await?;
                (url, channel, BearerToken::default())
            }
            None => (
                self.scheduler_url.clone(),
                self.scheduler.clone(),
                self.token.clone(),
            ),
        };
        let channel = InterceptedService::new(channel, token);
        let mut client = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let flight_data = client
            .do_get(ticket)
            .await
            .map_err(|status| read_failure(&location, status))?
            .into_inner()
            .map_err(|status| arrow_flight::error::FlightError::Tonic(Box::new(status)));
        Ok(
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(flight_data)
                .map_err(move |error| match error {
                    arrow_flight::error::FlightError::Tonic(status) => {
                        read_failure(&location, *status)
                    }
                    other => ClientError::Fetch {
                        location: location.clone(),
                        message: other.to_string(),
                    },
                })
                .boxed(),
        )
    }
}

/// A failed read of a result partition: the query's own error when the executor says
/// the query failed (a result read as it is written learns it there), else a failure to
/// fetch from `location`.
fn read_failure(location: &str, status: tonic::Status) -> ClientError {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::Cancelled
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::DeadlineExceeded => ClientError::Query {
            code: status.code(),
            message: status.message().to_string(),
        },
        _ => ClientError::Fetch {
            location: location.to_string(),
            message: status.message().to_string(),
        },
    }
}

/// Accepts `host:port`, `http://host:port` and Flight's `grpc+tcp://host:port`.
fn normalize_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("grpc+tcp://") {
        format!("http://{rest}")
    } else if let Some(rest) = url.strip_prefix("grpc+tls://") {
        format!("https://{rest}")
    } else if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

fn statement_descriptor(query: &str) -> FlightDescriptor {
    let command = CommandStatementQuery {
        query: query.to_string(),
        transaction_id: None,
    };
    FlightDescriptor::new_cmd(command.as_any().encode_to_vec())
}

async fn connect_channel(url: &str, tls_ca_pem: Option<&[u8]>) -> Result<Channel, ClientError> {
    let connect_error = |reason: String| ClientError::Connect {
        url: url.to_string(),
        reason,
    };
    let mut endpoint =
        Endpoint::from_shared(url.to_string()).map_err(|e| connect_error(e.to_string()))?;
    if url.starts_with("https://") {
        let ca = tls_ca_pem.ok_or_else(|| {
            connect_error("the server uses TLS: give its certificate authority (--tls-ca)".into())
        })?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| connect_error(e.to_string()))?;
    }
    endpoint
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| connect_error(format!("{e} ({})", source_chain(&e))))
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(inner) = source {
        parts.push(inner.to_string());
        source = inner.source();
    }
    parts.join(": ")
}

/// Channels to the executors that hold results, opened once and reused.
#[derive(Default)]
struct ChannelCache {
    channels: tokio::sync::Mutex<HashMap<String, Channel>>,
}

impl ChannelCache {
    async fn get_or_connect(
        &self,
        url: &str,
        tls_ca_pem: Option<&[u8]>,
    ) -> Result<Channel, ClientError> {
        let mut channels = self.channels.lock().await;
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let channel = connect_channel(url, tls_ca_pem).await?;
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }
}
