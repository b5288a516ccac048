//! Naming the file behind a task's failure. A scan fails on a value of the wrong type
//! (a CSV line, a Parquet column that does not cast to the table's type) with the line or
//! the value, never the file. On that error path only, each file the task scanned is
//! read again alone; the first that fails is the one to name.

use std::sync::Arc;

use datafusion::arrow::error::ArrowError;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::StreamExt;
use quiver_core::file_scans::file_scans;

/// Whether `error` comes from the data itself as it is read (a value that does not parse
/// or cast, a malformed file), not from an expression over it (a division by zero) or
/// from the cluster: only then is a file to blame.
pub(crate) fn is_data_error(error: &DataFusionError) -> bool {
    match error.find_root() {
        DataFusionError::ArrowError(error, _) => matches!(
            error.as_ref(),
            ArrowError::ParseError(_)
                | ArrowError::CastError(_)
                | ArrowError::CsvError(_)
                | ArrowError::JsonError(_)
                | ArrowError::SchemaError(_)
                | ArrowError::IpcError(_)
                | ArrowError::ParquetError(_)
        ),
        DataFusionError::ParquetError(_) => true,
        _ => false,
    }
}

/// Files read again at most, so that a failure over a huge scan stays quick to report.
const MAX_FILES_PROBED: usize = 32;

/// The first file of `plan`'s scans (those task `partition` read, where that is known)
/// that fails when read alone.
pub(crate) async fn failing_file(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
    context: &Arc<TaskContext>,
) -> Option<String> {
    let task_partitions = plan.output_partitioning().partition_count();
    let mut probed = 0;
    for scan in file_scans(plan) {
        // A scan as wide as the stage feeds the task its own group; otherwise (under a
        // union or a coalesce) the task may have read any of them.
        let groups: Vec<&FileGroup> = if scan.file_groups.len() == task_partitions {
            scan.file_groups.get(partition).into_iter().collect()
        } else {
            scan.file_groups.iter().collect()
        };
        for file in groups.into_iter().flat_map(|group| group.iter()) {
            if probed == MAX_FILES_PROBED {
                return None;
            }
            probed += 1;
            let alone = FileScanConfigBuilder::from(scan.clone())
                .with_file_groups(vec![FileGroup::new(vec![file.clone()])])
                .build();
            if reads_to_the_end(DataSourceExec::from_data_source(alone), context)
                .await
                .is_err()
            {
                return Some(file_name(scan, file.object_meta.location.as_ref()));
            }
        }
    }
    None
}

async fn reads_to_the_end(
    scan: Arc<DataSourceExec>,
    context: &Arc<TaskContext>,
) -> datafusion::error::Result<()> {
    let mut stream = scan.execute(0, Arc::clone(context))?;
    while let Some(batch) = stream.next().await {
        batch?;
    }
    Ok(())
}

/// A path for a local file, the URL otherwise.
fn file_name(scan: &FileScanConfig, location: &str) -> String {
    let store = scan.object_store_url.as_str();
    if store.starts_with("file://") {
        format!("/{location}")
    } else {
        format!("{}/{location}", store.trim_end_matches('/'))
    }
}
