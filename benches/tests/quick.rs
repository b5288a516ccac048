//! The benchmark harness in quick mode (scale factor 0.01, one iteration), so it cannot rot:
//! both deployments run, answers are verified against DataFusion, reports render.

use std::path::PathBuf;

use quiver_benches::cluster::Deployment;
use quiver_benches::datagen::{DataGenOptions, TABLES, generate};
use quiver_benches::first_batch::{FirstBatchOptions, run_first_batch};
use quiver_benches::fuzz::{FuzzOptions, render_findings, run_fuzz};
use quiver_benches::latency::{LatencyOptions, run_latency};
use quiver_benches::report::{render_json, render_report, render_svg};
use quiver_benches::tpch::{DataLocation, TpchOptions, run};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/tpch/sf0.01")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn harness_runs_in_both_deployments_and_reports() {
    for deployment in [Deployment::Standalone, Deployment::Processes] {
        let result = run(&TpchOptions {
            data: DataLocation::local(&testdata()),
            iterations: 1,
            executors: 2,
            slots_per_executor: 1,
            queries: vec![1, 3, 13],
            deployment,
            memory_limit: None,
            kill_executor_after: None,
            quiver_setup: Vec::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{deployment:?}: {e}"));
        assert_eq!(result.timings.len(), 3);
        assert!(
            result
                .timings
                .iter()
                .all(|t| t.quiver_ms.len() == 1 && t.quiver_ms[0] > 0.0)
        );
        let table = render_report(&result.timings);
        assert!(
            table.contains("| q13 |") && table.contains("| total |"),
            "{table}"
        );
        let json = render_json(&result.timings, "quick");
        assert!(json.contains("\"query\": 13"), "{json}");
        assert!(render_svg(&result.timings).matches("<rect").count() == 6);
        if deployment == Deployment::Processes {
            // Scheduler, two executors and this process.
            assert_eq!(result.memory.len(), 4, "{:?}", result.memory);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latency_harness_measures_round_trips() {
    // Separate processes, through Quiver's client and (with the project's virtual
    // environment, which the test script makes) ADBC from Python.
    let mut options = LatencyOptions::new(&testdata(), 5, Deployment::Processes);
    options.tasks = 64;
    let measures_adbc = options.python.is_some();
    let (reports, overhead) = run_latency(&options).await.unwrap();
    assert_eq!(reports.len(), 2);
    assert!(
        reports
            .iter()
            .all(|r| r.p50_ms > 0.0 && r.p99_ms >= r.p50_ms)
    );
    for report in &reports {
        match (measures_adbc, report.adbc_ms) {
            (true, Some((p50, p99))) => assert!(p50 > 0.0 && p99 >= p50, "{report:?}"),
            (false, None) => {}
            (expected, measured) => panic!("ADBC expected {expected}, measured {measured:?}"),
        }
    }
    // The stage really ran that wide (nation's one file split into byte ranges).
    assert!(overhead.tasks > 32, "{overhead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_batch_harness_reads_the_whole_result_through_both_engines_and_both_ways() {
    let options = FirstBatchOptions {
        data: testdata(),
        runs: 1,
        deployment: Deployment::Standalone,
        executors: 2,
        slots: 1,
        python: quiver_benches::latency::project_python(),
    };
    let reports = run_first_batch(&options).await.unwrap();
    // Streamed, not streamed, through ADBC when the project's Python is there, and
    // DataFusion.
    let expected = 3 + usize::from(options.python.is_some());
    assert_eq!(reports.len(), expected, "{reports:?}");
    // All read every lineitem row; the first batch comes no later than the last row.
    assert!(reports[0].rows > 50_000, "{reports:?}");
    assert!(
        reports.iter().all(|r| r.rows == reports[0].rows),
        "{reports:?}"
    );
    assert!(
        reports
            .iter()
            .all(|r| r.first_batch_ms > 0.0 && r.first_batch_ms <= r.all_rows_ms),
        "{reports:?}"
    );
}

/// TPC-H at scale factor 0.1 stored as Delta tables (made by `CREATE TABLE ... STORED AS
/// DELTA AS SELECT`, orders partitioned), through separate processes: all 22 answers
/// are the answers single-node DataFusion gives over the generator's Parquet files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpch_sf01_stored_as_delta_agrees_with_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("parquet");
    generate(
        &parquet,
        &DataGenOptions {
            scale_factor: 0.1,
            files_per_table: 2,
            row_group_rows: 65_536,
        },
    )
    .unwrap();
    let delta = dir.path().join("delta");
    let mut setup = vec!["CREATE SCHEMA dlt".to_string()];
    for table in TABLES {
        let partitioned = match table {
            "orders" => "PARTITIONED BY (o_orderpriority)",
            _ => "",
        };
        setup.push(format!(
            "CREATE TABLE dlt.{table} STORED AS DELTA {partitioned} LOCATION '{}/{table}/' \
             AS SELECT * FROM public.{table}",
            delta.display()
        ));
    }
    setup.push("SET datafusion.catalog.default_schema = 'dlt'".to_string());
    let result = run(&TpchOptions {
        data: DataLocation::local(&parquet),
        iterations: 1,
        executors: 2,
        slots_per_executor: 1,
        queries: (1..=22).collect(),
        deployment: Deployment::Processes,
        memory_limit: None,
        kill_executor_after: None,
        quiver_setup: setup,
    })
    .await
    .unwrap();
    let failed: Vec<String> = result
        .timings
        .iter()
        .filter(|t| !t.completed())
        .map(|t| {
            format!(
                "q{}: {:?} {:?}",
                t.query, t.quiver_error, t.datafusion_error
            )
        })
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(result.timings.len(), 22);
    // The queries read the Delta copies: each table is version 0 of a Delta log.
    for table in TABLES {
        assert!(
            delta
                .join(table)
                .join("_delta_log/00000000000000000000.json")
                .exists(),
            "{table}"
        );
    }
}

/// The bounded run of the differential SQL fuzzer (fixed seed): no process dies, and
/// every generated query answers the same through Quiver and DataFusion or fails in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_sql_agrees_with_datafusion() {
    let seed = 0x5eed_2026;
    let options = FuzzOptions {
        data: DataLocation::local(&testdata()),
        seed,
        first: 0,
        queries: 250,
        max_depth: 5,
        deployment: Deployment::Standalone,
        executors: 2,
        slots_per_executor: 2,
        datafusion_timeout: std::time::Duration::from_secs(10),
    };
    let report = run_fuzz(&options).await.unwrap();
    let summary = render_findings(&report, seed, options.max_depth);
    eprintln!("{summary}");
    assert!(report.findings.is_empty(), "{summary}");
    assert_eq!(report.ran, 250);
    // The generator writes mostly valid SQL: a generator whose queries all fail would
    // pass the comparison and test nothing.
    assert!(report.agreed >= 150, "{summary}");
}
