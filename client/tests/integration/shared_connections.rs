//! Fetches between Quiver processes share one HTTP/2 connection per peer.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::Ticket;
use arrow_flight::client::FlightClient;
use arrow_flight::flight_service_client::FlightServiceClient;
use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use quiver_core::config::ExecutorConfig;
use quiver_core::exchange::MapOutputKey;
use quiver_core::proto::ShuffleTicket;
use quiver_core::ticket::encode_ticket;
use quiver_core::transport::lazy_channel;
use quiver_executor::Executor;

use crate::processes::free_port;

/// `megabytes` MB of hex digits from a mixing function, in 64 KiB batches.
fn output(megabytes: usize, seed: u64) -> Vec<RecordBatch> {
    (0..megabytes * 16).map(|b| batch(seed, b as u64)).collect()
}

/// 1024 rows of 64 hex digits.
fn batch(seed: u64, number: u64) -> RecordBatch {
    let text = StringArray::from_iter_values((0..1024u64).map(|i| {
        let i = number * 1024 + i;
        let mut x = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
        (0..4)
            .map(|_| {
                x ^= x >> 31;
                x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                format!("{x:016x}")
            })
            .collect::<String>()
    }));
    let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(text)]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fetch_read_to_the_end_is_not_starved_by_unread_fetches_on_its_connection() {
    // A task starts fetching every broadcast build side when its plan is executed, then
    // reads them one by one (TPC-DS q64 has eighteen). Here eight fetches from one peer
    // start on one connection; seven stay unread while the first is read to its end.
    // An executor on its own: its scheduler never answers, so nothing releases the
    // outputs put in its store below (a scheduler drops jobs it does not know).
    let executor = Executor::start(ExecutorConfig {
        scheduler_url: format!("http://127.0.0.1:{}", free_port()),
        slots: 1,
        ..ExecutorConfig::default()
    })
    .await
    .unwrap();
    let fetches = 8u32;
    for map_partition in 0..fetches {
        let batches = output(4, map_partition as u64);
        let key = MapOutputKey {
            job_id: "window-test".to_string(),
            stage_id: 0,
            map_partition,
        };
        let schema = batches[0].schema();
        executor.store().put(key, schema, vec![batches]).unwrap();
    }
    let channel = lazy_channel(&format!("http://{}", executor.address()), None).unwrap();
    let ticket_key = executor.ticket_key();
    let fetch = async move {
        let mut streams = Vec::new();
        for map_partition in 0..fetches {
            let ticket = ShuffleTicket {
                job_id: "window-test".to_string(),
                stage_id: 0,
                map_partition,
                output_partition: 0,
                expires_at_ms: 0,
            };
            let ticket = Ticket::new(encode_ticket(&ticket, &ticket_key));
            let inner =
                FlightServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
            let mut stream = FlightClient::new_from_inner(inner)
                .do_get(ticket)
                .await
                .unwrap();
            // Started: its first batch arrived; the rest comes as the windows allow.
            assert!(stream.next().await.is_some());
            streams.push(stream);
        }
        let mut first = streams.swap_remove(0);
        let mut batches = 1;
        while let Some(batch) = first.next().await {
            batch.unwrap();
            batches += 1;
        }
        batches
    };
    // With a connection window smaller than the unread streams' windows together, the
    // later fetches never get their first batch, nor the first one its last.
    let batches = tokio::time::timeout(Duration::from_secs(30), fetch)
        .await
        .expect("no fetch waits on the unread ones");
    assert_eq!(batches, 4 * 16);
    executor.shutdown().await;
}
