//! The executor's Arrow Flight service: `do_get` on shuffle and result tickets.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::{Stream, StreamExt, TryStreamExt};
use quiver_core::config::ShuffleCompression;
use quiver_core::exchange::MapOutputKey;
use quiver_core::prometheus::CallCounts;
use quiver_core::ticket::{SharedTicketKey, decode_ticket, is_result_ticket};
use tonic::{Request, Response, Status, Streaming};

use crate::store::ShuffleStore;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Serves this executor's shuffle store over Flight.
pub(crate) struct ExecutorFlightService {
    pub(crate) store: Arc<ShuffleStore>,
    pub(crate) ticket_key: SharedTicketKey,
    /// Where its calls are counted, for `/metrics`.
    pub(crate) calls: Arc<CallCounts>,
}

fn unsupported<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not served by a Quiver executor; send queries to the scheduler"
    )))
}

#[tonic::async_trait]
impl FlightService for ExecutorFlightService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let result = self.fetch(request).await;
        self.calls.record("DoGet", &result);
        result
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unsupported("handshake")
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported("list_flights")
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unsupported("get_flight_info")
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unsupported("poll_flight_info")
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unsupported("get_schema")
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unsupported("do_put")
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unsupported("do_action")
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported("list_actions")
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unsupported("do_exchange")
    }
}

impl ExecutorFlightService {
    /// A shuffle or result partition, streamed from the store.
    async fn fetch(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let same_host = from_same_host(&request);
        let ticket = decode_ticket(&request.into_inner().ticket, &self.ticket_key.get())?;
        let result = is_result_ticket(&ticket);
        let key = MapOutputKey {
            job_id: ticket.job_id,
            stage_id: ticket.stage_id,
            map_partition: ticket.map_partition,
        };
        // A result may still be being written: its client takes the batches as they come.
        let read = match result {
            true => self.store.read_result(&key, ticket.output_partition).await,
            false => self.store.read(&key, ticket.output_partition),
        };
        let (schema, batches) = read.map_err(|error| match status_inside(&error) {
            Some(status) => status,
            None => Status::not_found(error.to_string()),
        })?;
        // A result is released once read to the end, and travels uncompressed (not every
        // Flight client reads compressed IPC); shuffle data for executors on other hosts
        // is compressed. Within a host there is no bandwidth to save: compressing would
        // only spend both sides' CPU.
        let (batches, options) = match result {
            true => {
                let release = Some((Arc::clone(&self.store), key, ticket.output_partition));
                let batches: SendableRecordBatchStream = Box::pin(ReleaseWhenRead {
                    inner: batches,
                    release,
                });
                (batches, ShuffleCompression::None.ipc_options())
            }
            false if same_host => (batches, ShuffleCompression::None.ipc_options()),
            false => (batches, self.store.compression().ipc_options()),
        };
        let flight = FlightDataEncoderBuilder::new()
            .with_options(options)
            .with_schema(schema)
            .build(batches.map_err(|error| match status_inside(&error) {
                // A failed query's own error, with its code.
                Some(status) => FlightError::Tonic(Box::new(status)),
                None => FlightError::ExternalError(Box::new(error)),
            }))
            .map_err(Status::from);
        Ok(Response::new(flight.boxed()))
    }
}

/// Whether `request` came from this executor's own host: over loopback, or from the
/// address it was received on.
fn from_same_host<T>(request: &Request<T>) -> bool {
    match (request.local_addr(), request.remote_addr()) {
        (_, Some(remote)) if remote.ip().is_loopback() => true,
        (Some(local), Some(remote)) => local.ip() == remote.ip(),
        _ => false,
    }
}

/// A result partition's batches; once they have all been taken, it is released.
struct ReleaseWhenRead {
    inner: SendableRecordBatchStream,
    /// What to release at the end; `None` once released, or after an error.
    release: Option<(Arc<ShuffleStore>, MapOutputKey, u32)>,
}

impl Stream for ReleaseWhenRead {
    type Item = datafusion::error::Result<datafusion::arrow::record_batch::RecordBatch>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            std::task::Poll::Ready(None) => {
                if let Some((store, key, partition)) = self.release.take() {
                    store.result_read(&key, partition);
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => self.release = None,
            _ => {}
        }
        polled
    }
}

impl datafusion::physical_plan::RecordBatchStream for ReleaseWhenRead {
    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        self.inner.schema()
    }
}

/// The gRPC status a read error carries (a failed query's error, from the scheduler).
fn status_inside(error: &datafusion::error::DataFusionError) -> Option<Status> {
    match error {
        datafusion::error::DataFusionError::External(inner) => inner
            .downcast_ref::<Status>()
            .map(|status| Status::new(status.code(), status.message())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tonic::transport::server::TcpConnectInfo;

    use super::*;

    fn request(local: Option<&str>, remote: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        let parse = |addr: Option<&str>| addr.map(|a| a.parse::<SocketAddr>().unwrap());
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: parse(local),
            remote_addr: parse(remote),
        });
        request
    }

    #[test]
    fn shuffle_data_goes_uncompressed_only_within_a_host() {
        let same = [
            request(Some("127.0.0.1:5000"), Some("127.0.0.1:6000")),
            request(None, Some("[::1]:6000")),
            request(Some("10.0.0.5:5000"), Some("10.0.0.5:6000")),
        ];
        assert!(same.iter().all(from_same_host));
        let other = [
            request(Some("10.0.0.5:5000"), Some("10.0.0.6:6000")),
            request(Some("10.0.0.5:5000"), None),
            Request::new(()),
        ];
        assert!(!other.iter().any(from_same_host));
    }
}
