//! Shuffle throughput: bytes per second out of an executor's shuffle store, read in-process
//! (a consumer in the same process) and over Arrow Flight `do_get` on loopback.
//!
//! `cargo bench -p quiver-benches --bench shuffle`

use std::sync::Arc;

use arrow_flight::Ticket;
use arrow_flight::client::FlightClient;
use arrow_flight::flight_service_client::FlightServiceClient;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use quiver_core::config::ExecutorConfig;
use quiver_core::exchange::MapOutputKey;
use quiver_core::proto::ShuffleTicket;
use quiver_core::ticket::encode_ticket;
use quiver_executor::Executor;

const ROWS_PER_BATCH: usize = 8192;
const BATCHES: usize = 64;

fn batches() -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Int64, false),
        Field::new("comment", DataType::Utf8, false),
    ]));
    let batches = (0..BATCHES)
        .map(|b| {
            let start = (b * ROWS_PER_BATCH) as i64;
            let keys = Int64Array::from_iter_values(start..start + ROWS_PER_BATCH as i64);
            let values = Int64Array::from_iter_values((0..ROWS_PER_BATCH as i64).map(|v| v * 7));
            let comments = StringArray::from_iter_values(
                (0..ROWS_PER_BATCH).map(|v| format!("comment number {v}")),
            );
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(keys), Arc::new(values), Arc::new(comments)],
            )
            .expect("batch")
        })
        .collect();
    (schema, batches)
}

fn shuffle_throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Nothing listens at this scheduler address: the executor keeps retrying registration
    // in the background, which does not touch the store.
    let executor = runtime
        .block_on(Executor::start(ExecutorConfig {
            scheduler_url: "http://127.0.0.1:9".to_string(),
            slots: 1,
            ..ExecutorConfig::default()
        }))
        .expect("executor starts");
    let (schema, data) = batches();
    let key = MapOutputKey {
        job_id: "bench".to_string(),
        stage_id: 0,
        map_partition: 0,
    };
    let summary = executor
        .store()
        .put(key.clone(), schema, vec![data])
        .expect("store accepts output");
    let bytes = summary.bytes[0];
    let url = format!("http://{}", executor.address());

    let mut group = c.benchmark_group("shuffle read");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(20);
    group.bench_function("in-process", |b| {
        b.to_async(&runtime).iter(|| async {
            let (_, stream) = executor.store().read(&key, 0).expect("output present");
            let read: Vec<RecordBatch> = stream.try_collect().await.expect("read");
            assert_eq!(read.len(), BATCHES);
        })
    });
    let channel = runtime.block_on(async {
        tonic::transport::Endpoint::from_shared(url)
            .expect("url")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect")
    });
    let ticket = encode_ticket(
        &ShuffleTicket {
            job_id: key.job_id.clone(),
            stage_id: 0,
            map_partition: 0,
            output_partition: 0,
            expires_at_ms: 0,
        },
        &executor.ticket_key(),
    );
    group.bench_function("flight do_get on loopback", |b| {
        b.to_async(&runtime).iter(|| async {
            let inner =
                FlightServiceClient::new(channel.clone()).max_decoding_message_size(1 << 30);
            let mut client = FlightClient::new_from_inner(inner);
            let stream = client
                .do_get(Ticket::new(ticket.clone()))
                .await
                .expect("do_get");
            let read: Vec<RecordBatch> = stream.try_collect().await.expect("read");
            assert_eq!(
                read.iter().map(|b| b.num_rows()).sum::<usize>(),
                BATCHES * ROWS_PER_BATCH
            );
        })
    });
    group.finish();
    runtime.block_on(executor.shutdown());
}

criterion_group!(benches, shuffle_throughput);
criterion_main!(benches);
