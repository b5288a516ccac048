//! Differential SQL fuzzing: queries from [`crate::sqlgen`] run through a Quiver cluster
//! and through single-node DataFusion over the same TPC-H tables. A run passes when no
//! process dies, every query answers the same in both or fails in both, and nothing fails
//! in Quiver alone, with one exception: an arithmetic error (division by zero, overflow)
//! from rows DataFusion never evaluated. DataFusion skips a join's probe side once its
//! build side is empty; Quiver runs the probe side as its own stage, at the same time.
//! SQL leaves the order of evaluation open, so both are right; such queries are counted
//! apart. A clear refusal by Quiver alone (`InvalidArgument` naming a feature it does not
//! plan, never `Internal`) passes too, but is counted and shown in the summary.

use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use quiver::compare::{canonical_rows, same_rows};
use quiver::{ClientError, QuiverClient};

use crate::cluster::Deployment;
use crate::sqlgen::{CatalogColumn, CatalogTable, SqlGenerator, SqlType};
use crate::tpch::{BenchError, DataLocation, side_by_side};

/// Settings given to both engines before the first query: even the small test tables
/// split into several scan partitions, so every exchange moves rows.
const SETTINGS: [&str; 1] = ["SET datafusion.optimizer.repartition_file_min_size = 1024"];

#[derive(Debug, Clone)]
pub struct FuzzOptions {
    pub data: DataLocation,
    pub seed: u64,
    /// Index of the first query: with `queries: 1`, replays one query of an earlier run.
    pub first: u64,
    pub queries: u64,
    /// Deepest expression nesting; the depth grows from 1 to this over the run.
    pub max_depth: usize,
    pub deployment: Deployment,
    pub executors: usize,
    pub slots_per_executor: usize,
    /// Time single-node DataFusion gets per query; slower queries are skipped, not run
    /// through Quiver.
    pub datafusion_timeout: Duration,
}

/// How one generated query went when the engines disagreed.
#[derive(Debug, Clone)]
pub enum Disagreement {
    /// Both answered, differently.
    DifferentRows {
        quiver_rows: usize,
        datafusion_rows: usize,
        first_difference: String,
    },
    /// Quiver failed where DataFusion answered.
    QuiverOnlyFailure { code: String, message: String },
    /// Quiver answered where DataFusion failed.
    DataFusionOnlyFailure { message: String },
    /// The cluster no longer answered `SELECT 1` after this query.
    ClusterDown { message: String },
}

#[derive(Debug, Clone)]
pub struct FuzzFinding {
    pub index: u64,
    pub sql: String,
    pub disagreement: Disagreement,
}

#[derive(Debug, Clone, Default)]
pub struct FuzzReport {
    pub ran: u64,
    /// Both engines answered the same.
    pub agreed: u64,
    /// Both engines refused or failed the query.
    pub both_failed: u64,
    /// DataFusion took longer than the time allowed; Quiver was not asked.
    pub skipped_slow: u64,
    /// Quiver alone raised an arithmetic error, on rows DataFusion skipped (see the
    /// module documentation).
    pub evaluated_beyond_datafusion: u64,
    /// Quiver alone refused the query with a clear error naming what it does not support.
    pub quiver_refusals: Vec<(u64, String)>,
    pub findings: Vec<FuzzFinding>,
    pub elapsed: Duration,
}

/// Runs the fuzzer; findings are collected, not raised, so one run reports them all.
pub async fn run_fuzz(options: &FuzzOptions) -> Result<FuzzReport, BenchError> {
    let started = Instant::now();
    let (datafusion, cluster, quiver) = side_by_side(
        &options.data,
        options.deployment,
        options.executors,
        options.slots_per_executor,
        None,
    )
    .await?;
    for setting in SETTINGS {
        datafusion.sql(setting).await?.collect().await?;
        quiver.sql(setting).await?;
    }
    let catalog = walk_catalog(&datafusion).await?;
    let mut report = FuzzReport::default();
    for index in options.first..options.first + options.queries {
        let depth = depth_of(index, options.max_depth);
        let sql = SqlGenerator::new(catalog.clone(), options.seed, index, depth).query();
        report.ran += 1;
        match compare_one(&datafusion, &quiver, &sql, options, &mut report).await {
            None => {}
            Some(Disagreement::QuiverOnlyFailure { code, message })
                if code == "InvalidArgument" && message.contains("not implemented") =>
            {
                report.quiver_refusals.push((index, message));
            }
            Some(disagreement) => {
                eprintln!(
                    "fuzz seed {:#x} query {index}: {disagreement:?}\n  {sql}",
                    options.seed
                );
                report.findings.push(FuzzFinding {
                    index,
                    sql,
                    disagreement,
                });
            }
        }
        if let Err(error) = quiver.sql("SELECT 1").await {
            report.findings.push(FuzzFinding {
                index,
                sql: "SELECT 1".to_string(),
                disagreement: Disagreement::ClusterDown {
                    message: error.to_string(),
                },
            });
            break;
        }
    }
    cluster.shutdown().await;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Expression depth of query `index`: from 1 up to `max_depth` and again, a step every
/// hundred queries, so a query replays from its index alone.
fn depth_of(index: u64, max_depth: usize) -> usize {
    1 + (index / 100) as usize % max_depth.max(1)
}

async fn compare_one(
    datafusion: &SessionContext,
    quiver: &QuiverClient,
    sql: &str,
    options: &FuzzOptions,
    report: &mut FuzzReport,
) -> Option<Disagreement> {
    let expected = tokio::time::timeout(options.datafusion_timeout, async {
        datafusion.sql(sql).await?.collect().await
    })
    .await;
    let expected = match expected {
        Err(_elapsed) => {
            report.skipped_slow += 1;
            return None;
        }
        Ok(result) => result,
    };
    let actual = quiver.sql(sql).await;
    match (expected, actual) {
        (Ok(expected), Ok(actual)) => {
            let expected = canonical_rows(&expected, true).unwrap_or_default();
            let actual = canonical_rows(&actual, true).unwrap_or_default();
            if same_rows(&actual, &expected) {
                report.agreed += 1;
                None
            } else {
                let first_difference = actual
                    .iter()
                    .zip(&expected)
                    .find(|(a, e)| a != e)
                    .map(|(a, e)| format!("quiver {a:?}, datafusion {e:?}"))
                    .unwrap_or_else(|| "one answer is a prefix of the other".to_string());
                Some(Disagreement::DifferentRows {
                    quiver_rows: actual.len(),
                    datafusion_rows: expected.len(),
                    first_difference,
                })
            }
        }
        (Err(_), Err(_)) => {
            report.both_failed += 1;
            None
        }
        (Ok(_), Err(error)) if is_arithmetic_error(&error) => {
            report.evaluated_beyond_datafusion += 1;
            None
        }
        (Ok(_), Err(error)) => Some(Disagreement::QuiverOnlyFailure {
            code: match &error {
                ClientError::Query { code, .. } => format!("{code:?}"),
                other => format!("client: {other:?}").chars().take(40).collect(),
            },
            message: error.to_string(),
        }),
        (Err(error), Ok(_)) => Some(Disagreement::DataFusionOnlyFailure {
            message: error.to_string(),
        }),
    }
}

/// A clear error from evaluating an expression on a row, not from planning or the
/// cluster.
fn is_arithmetic_error(error: &ClientError) -> bool {
    let ClientError::Query { code, message } = error else {
        return false;
    };
    let message = message.to_lowercase();
    *code != tonic::Code::Internal
        && !message.contains("internal error")
        && [
            "divide by zero",
            "overflow",
            "too large to store",
            "too small to store",
        ]
        .iter()
        .any(|kind| message.contains(kind))
}

/// The tables of DataFusion's default schema with their row counts, their columns'
/// types, and which columns hold no duplicate value.
async fn walk_catalog(context: &SessionContext) -> Result<Vec<CatalogTable>, BenchError> {
    let mut tables = Vec::new();
    let mut names = context
        .catalog("datafusion")
        .and_then(|catalog| catalog.schema("public"))
        .map(|schema| schema.table_names())
        .unwrap_or_default();
    names.sort();
    for name in names {
        let schema = context.table(name.as_str()).await?.schema().clone();
        let rows = count(context, &format!("SELECT COUNT(*) FROM {name}")).await?;
        let mut columns = Vec::new();
        for field in schema.fields() {
            let Some(sql_type) = sql_type_of(field.data_type()) else {
                continue;
            };
            let column = field.name();
            let distinct = count(
                context,
                &format!("SELECT COUNT(DISTINCT {column}) FROM {name}"),
            )
            .await?;
            columns.push(CatalogColumn {
                name: column.clone(),
                sql_type,
                unique: distinct == rows,
            });
        }
        tables.push(CatalogTable {
            name,
            rows,
            columns,
        });
    }
    Ok(tables)
}

async fn count(context: &SessionContext, sql: &str) -> Result<usize, BenchError> {
    let batches = context.sql(sql).await?.collect().await?;
    let rows = canonical_rows(&batches, false)?;
    Ok(rows.first().and_then(|r| r.parse().ok()).unwrap_or(0))
}

fn sql_type_of(data_type: &DataType) -> Option<SqlType> {
    Some(match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => SqlType::Int,
        DataType::Float32 | DataType::Float64 => SqlType::Float,
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => SqlType::Decimal,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::Text,
        DataType::Date32 | DataType::Date64 => SqlType::Date,
        DataType::Boolean => SqlType::Bool,
        _ => return None,
    })
}

/// The findings as text, one block each, with what replays them.
pub fn render_findings(report: &FuzzReport, seed: u64, max_depth: usize) -> String {
    let mut text = format!(
        "{} queries in {:.1} s: {} agreed, {} failed in both, {} refused by Quiver alone, {} arithmetic errors on rows DataFusion skipped, {} skipped (slow in DataFusion), {} findings\n",
        report.ran,
        report.elapsed.as_secs_f64(),
        report.agreed,
        report.both_failed,
        report.quiver_refusals.len(),
        report.evaluated_beyond_datafusion,
        report.skipped_slow,
        report.findings.len()
    );
    if !report.quiver_refusals.is_empty() {
        text.push_str(&format!(
            "{} refused by Quiver alone, with a clear error:\n",
            report.quiver_refusals.len()
        ));
        for (index, message) in report.quiver_refusals.iter().take(5) {
            text.push_str(&format!("  query {index}: {message}\n"));
        }
    }
    for finding in &report.findings {
        text.push_str(&format!(
            "\n-- replay: quiver-benches fuzz --seed {seed:#x} --max-depth {max_depth} --first {} --queries 1\n{}\n-- {:?}\n",
            finding.index, finding.sql, finding.disagreement
        ));
    }
    text
}

/// One line naming the run, for its log: everything needed to replay it.
pub fn describe(options: &FuzzOptions) -> String {
    let deployment = match options.deployment {
        Deployment::Standalone => "standalone",
        Deployment::Processes => "processes",
    };
    format!(
        "seed {:#x}, queries {}..{}, depth up to {}, {deployment} {}x{}",
        options.seed,
        options.first,
        options.first + options.queries,
        options.max_depth,
        options.executors,
        options.slots_per_executor
    )
}
