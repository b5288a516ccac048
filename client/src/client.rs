//! [`QuiverClient`]: runs SQL through a scheduler's Flight SQL front door and reads the
//! result partitions from the executors that hold them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use crate::error::ClientError;

const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// A connection to a Quiver scheduler.
#[derive(Clone)]
pub struct QuiverClient {
    scheduler_url: String,
    scheduler: Channel,
    channels: Arc<ChannelCache>,
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
        let url = normalize_url(url);
        let scheduler = connect_channel(&url).await?;
        Ok(Self {
            scheduler_url: url,
            scheduler,
            channels: Arc::new(ChannelCache::default()),
        })
    }

    pub fn scheduler_url(&self) -> &str {
        &self.scheduler_url
    }

    /// Runs one SQL statement and collects its result.
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>, ClientError> {
        Ok(self.query(query).await?.batches)
    }

    /// Runs one SQL statement; the result keeps its schema even when it has no rows.
    pub async fn query(&self, query: &str) -> Result<QueryOutput, ClientError> {
        let info = self.flight_info(query).await?;
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
        let command = CommandStatementQuery {
            query: query.to_string(),
            transaction_id: None,
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let mut client = FlightServiceClient::new(self.scheduler.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let response = client
            .get_flight_info(descriptor)
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
        let (location, channel) = match endpoint.location.first() {
            Some(location) => {
                let url = normalize_url(&location.uri);
                let channel = self.channels.get_or_connect(&url).await?;
                (url, channel)
            }
            None => (self.scheduler_url.clone(), self.scheduler.clone()),
        };
        let mut client = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let flight_data = client
            .do_get(ticket)
            .await
            .map_err(|status| ClientError::Fetch {
                location: location.clone(),
                message: status.message().to_string(),
            })?
            .into_inner()
            .map_err(|status| arrow_flight::error::FlightError::Tonic(Box::new(status)));
        Ok(
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(flight_data)
                .map_err(move |e| ClientError::Fetch {
                    location: location.clone(),
                    message: e.to_string(),
                })
                .boxed(),
        )
    }
}

/// Accepts `host:port`, `http://host:port` and Flight's `grpc+tcp://host:port`.
fn normalize_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("grpc+tcp://") {
        format!("http://{rest}")
    } else if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

async fn connect_channel(url: &str) -> Result<Channel, ClientError> {
    let connect_error = |reason: String| ClientError::Connect {
        url: url.to_string(),
        reason,
    };
    Endpoint::from_shared(url.to_string())
        .map_err(|e| connect_error(e.to_string()))?
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
    async fn get_or_connect(&self, url: &str) -> Result<Channel, ClientError> {
        let mut channels = self.channels.lock().await;
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let channel = connect_channel(url).await?;
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }
}
