//! The file scans of a plan: what the scheduler counts against the listing limit and
//! what an executor rereads to name a file behind a failure.

use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;

/// Every file scan in `plan`, top-down.
pub fn file_scans(plan: &Arc<dyn ExecutionPlan>) -> Vec<&FileScanConfig> {
    let mut scans = Vec::new();
    collect(plan, &mut scans);
    scans
}

fn collect<'a>(plan: &'a Arc<dyn ExecutionPlan>, scans: &mut Vec<&'a FileScanConfig>) {
    if let Some(scan) = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|source| source.data_source().downcast_ref::<FileScanConfig>())
    {
        scans.push(scan);
    }
    for child in plan.children() {
        collect(child, scans);
    }
}
