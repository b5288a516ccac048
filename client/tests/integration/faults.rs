//! Deterministic faults prove each retry path: the fault must fire, and the query must
//! still return DataFusion's answer.

use quiver::compare::canonical_rows;
use quiver::{StandaloneCluster, StandaloneConfig};
use quiver_core::config::{FaultInjection, FaultTarget};

use crate::common::{
    datafusion_batches, start_tpch_cluster_with, start_tpch_cluster_with_a_stalled_task,
    stored_outputs, test_cluster_config, tpch_query,
};

async fn run_q3_with(faults: FaultInjection) {
    run_q3_on(StandaloneConfig {
        faults,
        ..test_cluster_config()
    })
    .await;
}

/// Runs q3 on a cluster shaped by `config`, whose fault must fire once.
async fn run_q3_on(config: StandaloneConfig) {
    let faults = config.faults.clone();
    let (cluster, client) = start_tpch_cluster_with(config).await;
    let sql = tpch_query(3);
    let actual = client
        .sql(&sql)
        .await
        .expect("the query survives the fault");
    let expected = datafusion_batches(&sql).await;
    assert_eq!(
        canonical_rows(&actual, false).unwrap(),
        canonical_rows(&expected, false).unwrap()
    );
    assert_eq!(
        faults.fired(),
        1,
        "the injected fault must have fired exactly once"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_task_attempt_is_retried() {
    run_q3_with(FaultInjection::fail_task(FaultTarget {
        stage_id: 0,
        partition: 1,
        attempt: 0,
    }))
    .await;
}

/// The scheduler sends a stage's plan to an executor once, with the first task there.
/// With one executor, that first task fails before decoding it (the injected fault), so
/// the retry and the stage's later tasks come without the plan, and the executor must
/// ask the scheduler for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_on_the_same_executor_fetches_the_plan_it_dropped() {
    run_q3_on(StandaloneConfig {
        executors: 1,
        slots_per_executor: 1,
        faults: FaultInjection::fail_task(FaultTarget {
            stage_id: 0,
            partition: 0,
            attempt: 0,
        }),
        ..test_cluster_config()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_fetch_is_retried() {
    run_q3_with(FaultInjection::fail_fetch_of_stage(0)).await;
}

async fn memory_limited_cluster(limit: usize) -> (StandaloneCluster, quiver::QuiverClient) {
    start_tpch_cluster_with(StandaloneConfig {
        memory_limit: Some(limit),
        ..test_cluster_config()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_high_cardinality_aggregation_completes_under_a_memory_limit() {
    let (cluster, client) = memory_limited_cluster(8 * 1024 * 1024).await;
    // The default 10 MiB merge reservation alone exceeds the limit.
    client
        .sql("SET datafusion.execution.sort_spill_reservation_bytes = 65536")
        .await
        .unwrap();
    let sql = "SELECT l_orderkey, l_partkey, count(*), max(l_comment) FROM lineitem GROUP BY l_orderkey, l_partkey";
    let actual = client
        .sql(sql)
        .await
        .expect("the aggregation completes within the limit");
    let expected = datafusion_batches(sql).await;
    assert_eq!(
        canonical_rows(&actual, true).unwrap(),
        canonical_rows(&expected, true).unwrap()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_that_cannot_fit_fails_with_a_resources_error() {
    let (cluster, client) = memory_limited_cluster(16 * 1024).await;
    let error = client
        .sql("SELECT o_custkey, count(*) FROM orders JOIN lineitem ON o_orderkey = l_orderkey GROUP BY o_custkey")
        .await
        .expect_err("16 KiB cannot hold a hash join's build side");
    let message = error.to_string();
    assert!(message.contains("Resources exhausted"), "{message}");
    // The cluster keeps serving.
    client.sql("SELECT 1").await.expect("still serving");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_goes_away_cancels_its_query_everywhere() {
    // Stage 1 exists only in multi-stage queries: the set-up statements are not affected.
    let (cluster, client, faults) = start_tpch_cluster_with_a_stalled_task().await;
    let stored = || stored_outputs(&cluster);
    // The set-up statements' results are dropped once read, in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while stored() > 0 {
        assert!(std::time::Instant::now() < deadline, "set-up results kept");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The stalled task keeps the query running until the client gives up.
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        client.sql(&tpch_query(1)),
    )
    .await;
    assert!(gave_up.is_err(), "the query should still be running");
    assert_eq!(faults.fired(), 1, "the stall fault must have fired");

    let cancelled_at = std::time::Instant::now();
    let idle = || {
        cluster.scheduler().engine().active_jobs() == 0
            && stored() == 0
            && cluster.executors().iter().all(|e| e.running_tasks() == 0)
    };
    while !idle() && cancelled_at.elapsed() < std::time::Duration::from_secs(1) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        idle(),
        "tasks stopped and shuffle data deleted within a second"
    );

    // Slots are free again: the next query runs.
    client
        .sql("SELECT count(*) FROM nation")
        .await
        .expect("cluster serves on");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_queries_leave_nothing_behind() {
    // Every shuffle output spills to a file (no memory budget), and results are kept for
    // one second: the work directories must stay small while queries run, and be empty
    // (as must the stores and memory) once the last result has expired.
    let retention = std::time::Duration::from_secs(1);
    let (cluster, client) = start_tpch_cluster_with(StandaloneConfig {
        shuffle_memory_budget: 0,
        result_retention: retention,
        ..test_cluster_config()
    })
    .await;
    let oracle = crate::common::datafusion_oracle().await;
    let sql = "SELECT n_regionkey, count(*) AS n FROM nation GROUP BY n_regionkey";
    let expected = quiver::compare::canonical_rows(
        &oracle.sql(sql).await.unwrap().collect().await.unwrap(),
        true,
    )
    .unwrap();
    let work_files = || -> usize {
        cluster
            .executors()
            .iter()
            .map(|e| crate::common::files_under(e.store().work_dir()))
            .sum()
    };
    // A result's tickets expire with it.
    let info = client.flight_info(sql).await.expect("query runs");
    let endpoint = info.endpoint[0].clone();
    let expires = endpoint
        .expiration_time
        .expect("result tickets carry their expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (expires.seconds - now - retention.as_secs() as i64).abs() <= 1,
        "expires at {expires:?}, now {now}"
    );
    let mut most_files = 0;
    for round in 0..1000 {
        let batches = client.sql(sql).await.expect("query runs");
        if round % 100 == 0 {
            assert_eq!(
                quiver::compare::canonical_rows(&batches, true).unwrap(),
                expected
            );
        }
        most_files = most_files.max(work_files());
    }
    // While running, only results younger than the retention time stay on disk.
    assert!(most_files > 0, "outputs must have spilled to files");
    assert!(
        most_files < 1000,
        "work directories grew to {most_files} files"
    );
    eprintln!("at most {most_files} files in the work directories");

    let deadline = std::time::Instant::now() + retention + std::time::Duration::from_secs(5);
    loop {
        let outputs = stored_outputs(&cluster);
        let memory: usize = cluster
            .executors()
            .iter()
            .map(|e| e.store().memory_used())
            .sum();
        let files = work_files();
        if outputs == 0 && memory == 0 && files == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind after retention: {outputs} outputs, {memory} bytes, {files} files"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(cluster.scheduler().engine().active_jobs(), 0);
    assert!(cluster.executors().iter().all(|e| e.running_tasks() == 0));
    let refused = refusal_of(&endpoint).await;
    assert!(refused.contains("expired"), "{refused}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cpu_heavy_query_stops_within_a_second_of_its_client_leaving() {
    let (cluster, client) = start_tpch_cluster_with(test_cluster_config()).await;
    // A nested loop join whose filter rejects nearly every pair: each task computes for
    // minutes inside single polls, on every slot of the cluster at once.
    let sql = "SELECT a.l_comment, count(*) FROM lineitem a, lineitem b \
               WHERE a.l_comment LIKE concat('%', b.l_shipmode, '%') \
               GROUP BY 1 ORDER BY 2 DESC LIMIT 3";
    let running = || -> usize { cluster.executors().iter().map(|e| e.running_tasks()).sum() };
    {
        // The client waits until the tasks compute (seconds on a loaded machine), then
        // goes away: the query's future is dropped at the end of this block.
        let query = client.sql(sql);
        tokio::pin!(query);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while running() == 0 {
            tokio::select! {
                outcome = &mut query => panic!("the query should still be running: {outcome:?}"),
                _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
            }
            assert!(
                std::time::Instant::now() < deadline,
                "its tasks should be computing"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(running() > 0, "its tasks should be computing");
    }

    let left_at = std::time::Instant::now();
    while running() > 0 && left_at.elapsed() < std::time::Duration::from_secs(1) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        running(),
        0,
        "tasks still computing a second after the client left"
    );
    assert_eq!(cluster.scheduler().engine().active_jobs(), 0);
    client
        .sql("SELECT count(*) FROM nation")
        .await
        .expect("cluster serves on");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_the_scheduler_no_longer_expects_is_stopped() {
    // The first attempt of a join task stalls forever, as if its executor had gone
    // quiet; the scheduler then gives that executor up, while its process lives on.
    let (cluster, client, faults) = start_tpch_cluster_with_a_stalled_task().await;
    let query = tokio::spawn({
        let client = client.clone();
        async move { client.sql(&tpch_query(3)).await }
    });
    // Once the fault fired, the query's other tasks finish and the stalled one is left
    // running alone: that is its executor (seen alone on several looks in a row).
    let mut alone_on: Option<(String, u32)> = None;
    let stalled_on = loop {
        let busy: Vec<&quiver_executor::ExecutorHandle> = cluster
            .executors()
            .iter()
            .filter(|e| e.running_tasks() > 0)
            .collect();
        alone_on = match busy.as_slice() {
            [only] if faults.fired() == 1 && only.running_tasks() == 1 => {
                let id = only.executor_id().to_string();
                match alone_on {
                    Some((seen, looks)) if seen == id => Some((seen, looks + 1)),
                    _ => Some((id, 1)),
                }
            }
            _ => None,
        };
        if let Some((id, looks)) = &alone_on
            && *looks >= 5
        {
            break id.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    cluster
        .scheduler()
        .engine()
        .executor_lost(&stalled_on, Some("declared lost by the test".to_string()));

    // The query finishes elsewhere (the retry is attempt 1, which does not stall) with
    // DataFusion's answer.
    let actual = tokio::time::timeout(std::time::Duration::from_secs(60), query)
        .await
        .expect("the query finishes without the stalled attempt")
        .unwrap()
        .expect("the query survives");
    let expected = datafusion_batches(&tpch_query(3)).await;
    assert_eq!(
        canonical_rows(&actual, false).unwrap(),
        canonical_rows(&expected, false).unwrap()
    );
    // The executor rejoins, and its first heartbeat lists the stalled attempt, which
    // nobody waits for: it is stopped.
    let executor = cluster
        .executors()
        .iter()
        .find(|e| e.executor_id() == stalled_on)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while executor.running_tasks() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled attempt still runs on {stalled_on}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_read_in_full_is_dropped_at_once() {
    // Quiver's own client says when it has read a result (which frees it even when it
    // read only part of it); otherwise results stay for the retention time (600 s by
    // default) unless read to the end (see the next test).
    let (cluster, client) = start_tpch_cluster_with(test_cluster_config()).await;
    let stored = || stored_outputs(&cluster);
    let batches = client.sql(&tpch_query(3)).await.unwrap();
    assert!(!batches.is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while stored() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} outputs still kept after the result was read",
            stored()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    cluster.shutdown().await;
}

/// Every endpoint of `info` read to the end straight from its executor, as a Flight SQL
/// client does (without saying it is done): the batches.
async fn read_endpoints(
    info: &arrow_flight::FlightInfo,
) -> Vec<datafusion::arrow::record_batch::RecordBatch> {
    use futures::TryStreamExt;
    let mut batches = Vec::new();
    for endpoint in &info.endpoint {
        let stream = executor_client(endpoint)
            .await
            .do_get(endpoint.ticket.clone().unwrap())
            .await
            .unwrap();
        batches.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    batches
}

/// Why reading `endpoint` straight from its executor fails (it must).
async fn refusal_of(endpoint: &arrow_flight::FlightEndpoint) -> String {
    use futures::TryStreamExt;
    let read = executor_client(endpoint)
        .await
        .do_get(endpoint.ticket.clone().unwrap())
        .await;
    match read {
        Err(error) => error.to_string(),
        Ok(stream) => stream
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err()
            .to_string(),
    }
}

pub(crate) async fn executor_client(
    endpoint: &arrow_flight::FlightEndpoint,
) -> arrow_flight::FlightClient {
    let executor = endpoint.location[0].uri.replace("grpc+tcp://", "http://");
    let channel = tonic::transport::Endpoint::from_shared(executor)
        .unwrap()
        .connect()
        .await
        .unwrap();
    arrow_flight::FlightClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_read_to_the_end_is_released_at_once() {
    // Results stay ten minutes by default; one read to the end frees each partition at
    // once, and the executors hold nothing of the query once every endpoint was read.
    let (cluster, client) = start_tpch_cluster_with(test_cluster_config()).await;
    // Several result partitions, as planned (adaptive execution would run this small
    // aggregate as one task).
    client.sql("SET quiver.adaptive = false").await.unwrap();
    let sql = "SELECT o_orderpriority, count(*) AS n FROM orders GROUP BY o_orderpriority";
    let info = client.flight_info(sql).await.expect("query runs");
    assert!(info.endpoint.len() > 1, "{info:?}");
    assert!(stored_outputs(&cluster) > 0, "the result waits to be read");
    let batches = read_endpoints(&info).await;
    assert_eq!(
        canonical_rows(&batches, true).unwrap(),
        canonical_rows(&datafusion_batches(sql).await, true).unwrap()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let held = || -> (usize, usize) {
        let memory = cluster
            .executors()
            .iter()
            .map(|e| e.store().memory_used())
            .sum();
        (stored_outputs(&cluster), memory)
    };
    while held() != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "still held after every endpoint was read: {:?}",
            held()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A second read of an endpoint says why it finds nothing.
    let refused = refusal_of(&info.endpoint[0]).await;
    assert!(
        refused.contains("read to the end and released"),
        "{refused}"
    );
    cluster.shutdown().await;
}
