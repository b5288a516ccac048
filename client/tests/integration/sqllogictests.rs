//! SQL behaviour cases in `client/tests/slt/*.slt`, run against a standalone cluster.
//!
//! Each file gets a fresh cluster with the TPC-H tables registered. Expected results come
//! from single-node DataFusion: `QUIVER_SLT_COMPLETE=1 cargo test --test integration
//! sqllogictest` rewrites the files from DataFusion's answers (never from Quiver's).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use quiver::QuiverClient;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};

use crate::common::{datafusion_oracle, start_tpch_cluster};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

enum Engine {
    Quiver(QuiverClient),
    DataFusion(Arc<SessionContext>),
}

struct SltDb {
    engine: Engine,
}

#[async_trait]
impl AsyncDB for SltDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let (schema, batches) = match &self.engine {
            Engine::Quiver(client) => {
                let output = client
                    .query(sql)
                    .await
                    .map_err(|e| SltError(e.to_string()))?;
                (output.schema, output.batches)
            }
            Engine::DataFusion(context) => {
                let frame = context
                    .sql(sql)
                    .await
                    .map_err(|e| SltError(e.to_string()))?;
                let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
                let batches = frame.collect().await.map_err(|e| SltError(e.to_string()))?;
                (schema, batches)
            }
        };
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        Ok(DBOutput::Rows {
            types,
            rows: rows_as_text(&batches).map_err(SltError)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        match self.engine {
            Engine::Quiver(_) => "quiver",
            Engine::DataFusion(_) => "datafusion",
        }
    }

    async fn sleep(duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    match data_type {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating()
            || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
        {
            DefaultColumnType::FloatingPoint
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

fn rows_as_text(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| {
                        let text = f.value(row).to_string();
                        if text.is_empty() {
                            "(empty)".to_string()
                        } else {
                            text
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqllogictest_files_pass_against_a_standalone_cluster() {
    let complete = std::env::var_os("QUIVER_SLT_COMPLETE").is_some();
    let files = slt_files();
    assert!(files.len() >= 5, "expected the slt suite, found {files:?}");
    let mut failures = Vec::new();
    for file in files {
        if complete {
            let oracle = Arc::new(datafusion_oracle().await);
            let mut runner = Runner::new(move || {
                let context = Arc::clone(&oracle);
                async move {
                    Ok(SltDb {
                        engine: Engine::DataFusion(context),
                    })
                }
            });
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("completing {}: {e}", file.display()));
            continue;
        }
        let (cluster, client) = start_tpch_cluster().await;
        let mut runner = Runner::new(move || {
            let client = client.clone();
            async move {
                Ok(SltDb {
                    engine: Engine::Quiver(client),
                })
            }
        });
        if let Err(error) = runner.run_file_async(&file).await {
            failures.push(format!("{}: {error}", file.display()));
        }
        cluster.shutdown().await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
