//! [`ExecutorShuffleIo`]: how exchange nodes on this executor store and fetch shuffle data.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow_flight::Ticket;
use arrow_flight::client::FlightClient;
use arrow_flight::flight_service_client::FlightServiceClient;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use quiver_core::QuiverError;
use quiver_core::batch_bytes::data_bytes;
use quiver_core::config::{FaultInjection, StreamedResultFault};
use quiver_core::exchange::{MapOutputKey, MapOutputSink, MapOutputSummary, ShuffleIo};
use quiver_core::proto::{PartitionLocation, ShuffleTicket};
use quiver_core::ticket::{SharedTicketKey, encode_ticket};
use quiver_core::transport::lazy_channel;
use tonic::transport::Channel;

use crate::store::{ShuffleStore, local_store};

/// Largest Flight message accepted when fetching shuffle data.
pub(crate) const MAX_FLIGHT_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Connections to other executors, shared by every task in the process.
static CHANNELS: LazyLock<Mutex<HashMap<String, Channel>>> = LazyLock::new(Default::default);

/// A (lazily connecting) channel to `url`, reused across fetches.
pub(crate) fn channel_to(url: &str, tls_ca: Option<&[u8]>) -> Result<Channel, QuiverError> {
    let mut channels = CHANNELS.lock();
    if let Some(channel) = channels.get(url) {
        return Ok(channel.clone());
    }
    let channel = lazy_channel(url, tls_ca)?;
    channels.insert(url.to_string(), channel.clone());
    Ok(channel)
}

/// The executor's side of [`ShuffleIo`].
#[derive(Debug)]
pub(crate) struct ExecutorShuffleIo {
    pub(crate) store: Arc<ShuffleStore>,
    pub(crate) faults: FaultInjection,
    pub(crate) ticket_key: SharedTicketKey,
    /// Certificate authority of executors that serve TLS.
    pub(crate) tls_ca: Option<Arc<[u8]>>,
}

impl ShuffleIo for ExecutorShuffleIo {
    fn writer(
        &self,
        key: MapOutputKey,
        schema: SchemaRef,
        partitions: usize,
    ) -> Result<Box<dyn MapOutputSink>> {
        let tap = match self.faults.streamed_result_fault() {
            Some(fault) => self.store.result_tap(&key).map(|tap| (fault, tap)),
            None => None,
        };
        let writer = self.store.writer(key, schema, partitions);
        Ok(match tap {
            Some((fault, tap)) => Box::new(FaultyResult {
                writer,
                tap,
                fault,
                faults: self.faults.clone(),
                written: false,
            }),
            None => Box::new(writer),
        })
    }

    fn open(
        &self,
        job_id: &str,
        stage_id: u32,
        location: &PartitionLocation,
        output_partition: u32,
        schema: SchemaRef,
    ) -> Result<SendableRecordBatchStream> {
        let key = MapOutputKey {
            job_id: job_id.to_string(),
            stage_id,
            map_partition: location.map_partition,
        };
        if self.faults.should_fail_fetch(stage_id) {
            return Err(DataFusionError::External(Box::new(
                QuiverError::ShuffleOutputMissing {
                    job_id: key.job_id,
                    stage_id,
                    map_partition: key.map_partition,
                },
            )));
        }
        if let Some(store) = local_store(&location.executor_id) {
            let stream = store.read(&key, output_partition)?.1;
            return Ok(counting(stream, &self.store, false));
        }
        let ticket = ShuffleTicket {
            job_id: job_id.to_string(),
            stage_id,
            map_partition: location.map_partition,
            output_partition,
            expires_at_ms: 0,
        };
        let ticket = Ticket::new(encode_ticket(&ticket, &self.ticket_key.get()));
        let location = location.clone();
        let tls_ca = self.tls_ca.clone();
        let fetch = async move {
            let channel = channel_to(&location.flight_url, tls_ca.as_deref())?;
            let inner = FlightServiceClient::new(channel)
                .max_decoding_message_size(MAX_FLIGHT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_FLIGHT_MESSAGE_BYTES);
            let mut client = FlightClient::new_from_inner(inner);
            let stream = client
                .do_get(ticket)
                .await
                .map_err(|e| fetch_error(&location, e))?;
            Ok::<_, DataFusionError>(stream.map_err(move |e| fetch_error(&location, e)))
        };
        let stream = Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(fetch).try_flatten().boxed(),
        ));
        Ok(counting(stream, &self.store, true))
    }
}

/// `stream`, adding the bytes of its batches to the store's fetch counters as they pass.
fn counting(
    stream: SendableRecordBatchStream,
    store: &Arc<ShuffleStore>,
    remote: bool,
) -> SendableRecordBatchStream {
    let store = Arc::clone(store);
    let schema = stream.schema();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        stream.inspect_ok(move |batch| {
            let counter = match remote {
                true => &store.counters.fetched_remote_bytes,
                false => &store.counters.fetched_local_bytes,
            };
            counter.fetch_add(
                data_bytes(batch) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }),
    ))
}

fn fetch_error(location: &PartitionLocation, error: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::External(Box::new(QuiverError::ExecutorUnreachable {
        executor_id: location.executor_id.clone(),
        address: location.flight_url.clone(),
        reason: format!("fetching shuffle data failed: {error}"),
    }))
}

impl MapOutputSink for crate::store::MapOutputWriter {
    fn write(&mut self, partition: usize, batch: RecordBatch) -> Result<()> {
        crate::store::MapOutputWriter::write(self, partition, batch)
    }

    fn finish(self: Box<Self>) -> Result<MapOutputSummary> {
        crate::store::MapOutputWriter::finish(*self)
    }

    fn room(&mut self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        crate::store::MapOutputWriter::room(self)
    }
}

/// A result writer that misbehaves once its client has taken a batch (test hook, see
/// [`StreamedResultFault`]).
struct FaultyResult {
    writer: crate::store::MapOutputWriter,
    tap: Arc<crate::result_tap::ResultTap>,
    fault: StreamedResultFault,
    faults: FaultInjection,
    written: bool,
}

impl MapOutputSink for FaultyResult {
    fn write(&mut self, partition: usize, batch: RecordBatch) -> Result<()> {
        let fail = match self.fault {
            StreamedResultFault::HoldUntilRead => false,
            StreamedResultFault::FailOnceRead => self.tap.taken() > 0,
            StreamedResultFault::FailOnceBeforeRead => {
                self.tap.is_claimed() && self.tap.taken() == 0
            }
        };
        if fail && self.faults.fire_once() {
            // An I/O error: retryable, were the client not reading.
            return Err(DataFusionError::IoError(std::io::Error::other(
                "injected fault: result task failed under its client (test hook)",
            )));
        }
        self.written = true;
        self.writer.write(partition, batch)
    }

    fn finish(self: Box<Self>) -> Result<MapOutputSummary> {
        self.writer.finish()
    }

    fn room(&mut self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        let wait = self.writer.room();
        if self.fault == StreamedResultFault::FailOnceBeforeRead {
            // The first attempt waits for its client before it writes (and fails).
            if self.faults.fired() > 0 || self.tap.is_claimed() || self.tap.has_ended() {
                return wait;
            }
            return Some(wait_until(&self.tap, |tap| {
                tap.is_claimed() || tap.has_ended()
            }));
        }
        if !self.written || self.tap.taken() > 0 || self.tap.has_ended() {
            return wait;
        }
        // Write nothing more until the client has taken a batch: wait for it to claim
        // the result (asked again then, the writer hands over what it holds), then for
        // it to take a batch.
        let claimed = self.tap.is_claimed();
        Some(wait_until(&self.tap, move |tap| {
            tap.taken() > 0 || tap.has_ended() || tap.is_claimed() != claimed
        }))
    }
}

/// Resolves once `ready` holds for `tap`, looking every 5 ms (test hook).
fn wait_until(
    tap: &Arc<crate::result_tap::ResultTap>,
    ready: impl Fn(&crate::result_tap::ResultTap) -> bool + Send + 'static,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    let tap = Arc::clone(tap);
    Box::pin(async move {
        while !ready(&tap) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
}
