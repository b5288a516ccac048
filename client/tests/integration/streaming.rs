//! Results read while their tasks write them: a client gets its first rows before the
//! final stage has finished, and a task failing under a reader ends the read with an
//! error, never with rows sent twice.

use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use quiver::compare::canonical_rows;
use quiver_core::config::{FaultInjection, StreamedResultFault};

use crate::common::{
    datafusion_batches, quiver_rows, start_tpch_cluster_with_faults, stored_outputs,
};
use crate::faults::executor_client;

/// A scan whose result tasks each write several batches.
const SCAN: &str = "SELECT l_orderkey, l_linenumber, l_comment FROM lineitem";

/// Two result tasks at most: the four slots of the test cluster run them all at once,
/// which is when the scheduler answers a streamed query.
const TWO_TASKS: &str = "SET datafusion.execution.target_partitions = 2";

/// A cluster whose executors inject `faults`, with `sql` running as one result
/// partition, and a client's read of that partition opened straight at its executor.
async fn one_partition_read(
    faults: FaultInjection,
    sql: &str,
) -> (
    quiver::StandaloneCluster,
    quiver::QuiverClient,
    arrow_flight::decode::FlightRecordBatchStream,
) {
    let (cluster, client) = start_tpch_cluster_with_faults(faults).await;
    client
        .sql("SET datafusion.execution.target_partitions = 1")
        .await
        .unwrap();
    let info = client.flight_info(sql).await.expect("the query starts");
    assert_eq!(info.endpoint.len(), 1, "{info:?}");
    let endpoint = &info.endpoint[0];
    let stream = executor_client(endpoint)
        .await
        .do_get(endpoint.ticket.clone().unwrap())
        .await
        .expect("the executor serves the partition being written");
    (cluster, client, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_takes_the_first_rows_before_the_result_tasks_finish() {
    // Each result task writes one batch, then nothing more until its client has taken
    // a batch: a scheduler or executor that waited for the tasks to finish would wait
    // forever (the timeouts turn that into a failure).
    let faults = FaultInjection::streamed_result(StreamedResultFault::HoldUntilRead);
    let (cluster, client) = start_tpch_cluster_with_faults(faults).await;
    client.sql(TWO_TASKS).await.unwrap();
    let info = tokio::time::timeout(Duration::from_secs(60), client.flight_info(SCAN))
        .await
        .expect("the answer comes while the result tasks still run")
        .expect("the query runs");
    assert!(!info.endpoint.is_empty());
    assert_eq!(
        stored_outputs(&cluster),
        0,
        "no result task can have finished before its client read"
    );
    let mut batches: Vec<RecordBatch> = Vec::new();
    for endpoint in &info.endpoint {
        let mut stream = executor_client(endpoint)
            .await
            .do_get(endpoint.ticket.clone().unwrap())
            .await
            .expect("the executor serves the partition being written");
        let first = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the first batch comes while its task runs")
            .expect("a first batch")
            .expect("it reads");
        batches.push(first);
        batches.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    assert_eq!(
        canonical_rows(&batches, true).unwrap(),
        canonical_rows(&datafusion_batches(SCAN).await, true).unwrap(),
        "every row once, as DataFusion answers"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_task_failing_under_its_reader_ends_the_read_with_an_error() {
    // The first attempt of a result task fails once its client has taken a batch. The
    // client must get an error naming the failure after the rows it took, not a
    // silently short result and not the re-run's rows after the first attempt's.
    let faults = FaultInjection::streamed_result(StreamedResultFault::FailOnceRead);
    let (cluster, client, mut stream) = one_partition_read(faults.clone(), SCAN).await;
    let mut rows = 0;
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the read ends")
        {
            Some(Ok(batch)) => rows += batch.num_rows(),
            Some(Err(error)) => break error.to_string(),
            None => panic!("the read ended cleanly after {rows} rows though its task failed"),
        }
    };
    assert_eq!(faults.fired(), 1, "the fault fired once");
    assert!(error.contains("injected fault"), "{error}");
    assert!(error.contains("not retried"), "{error}");
    let total: usize = datafusion_batches(SCAN)
        .await
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert!(
        rows > 0 && rows < total,
        "{rows} of {total} rows before the error"
    );
    // The cluster keeps serving: the fault fires once, and the same query now answers
    // in full.
    assert_eq!(
        quiver_rows(&client, SCAN).await,
        canonical_rows(&datafusion_batches(SCAN).await, true).unwrap()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_task_failing_before_its_reader_took_anything_runs_again_under_it() {
    // The first attempt waits for its client, then fails (a retryable I/O error) before
    // the client took anything: the partition runs again on the same executor, and the
    // client's read goes on from the new attempt, every row once.
    let faults = FaultInjection::streamed_result(StreamedResultFault::FailOnceBeforeRead);
    let (cluster, _client, stream) = one_partition_read(faults.clone(), SCAN).await;
    let batches: Vec<RecordBatch> =
        tokio::time::timeout(Duration::from_secs(60), stream.try_collect())
            .await
            .expect("the read ends")
            .expect("the re-run is read in place of the failed attempt");
    assert_eq!(faults.fired(), 1, "the fault fired once");
    assert_eq!(
        canonical_rows(&batches, true).unwrap(),
        canonical_rows(&datafusion_batches(SCAN).await, true).unwrap()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_a_streamed_result_stops_its_query() {
    // The result task writes one batch, then waits for its client to take it; the
    // client takes it and goes away. Nobody can read the rest (a partition is read
    // once), so the query stops instead of running to the end for nobody. (The result is
    // far larger than what the connection's buffers take in: 1.5 million wide rows.)
    let faults = FaultInjection::streamed_result(StreamedResultFault::HoldUntilRead);
    let wide = "SELECT * FROM lineitem, nation";
    let (cluster, client, mut stream) = one_partition_read(faults, wide).await;
    let first = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("the first batch comes")
        .expect("a first batch");
    assert!(first.is_ok());
    drop(stream);
    // The statement ends as failed, saying why; nothing of it stays on the executors.
    let history = format!("SELECT state, error FROM system.queries WHERE sql = '{wide}'");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = quiver_rows(&client, &history).await;
        if rows.first().is_some_and(|row| row.starts_with("failed|")) {
            assert!(rows[0].contains("went away"), "{rows:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the query still runs without a reader: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while stored_outputs(&cluster) > 0 {
        assert!(std::time::Instant::now() < deadline, "outputs stay");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_setting_is_listed_by_the_name_set_takes() {
    let (cluster, client) = start_tpch_cluster_with_faults(FaultInjection::default()).await;
    let listed = "SELECT name, value FROM information_schema.df_settings \
                  WHERE name = 'quiver.stream_results'";
    assert_eq!(
        quiver_rows(&client, listed).await,
        ["quiver.stream_results|true"]
    );
    client
        .sql("SET quiver.stream_results = false")
        .await
        .unwrap();
    assert_eq!(
        quiver_rows(&client, listed).await,
        ["quiver.stream_results|false"]
    );
    cluster.shutdown().await;
}
