//! [`CompressedScanExec`]: carries a file scan's compression (gzip, bzip2, xz, zstd) to
//! the executors.
//!
//! datafusion-proto encodes a CSV or JSON scan without its compression, so an executor
//! would read `.csv.gz` bytes as text. The scheduler wraps such a scan in this node; its
//! encoding names the compression, and decoding gives back the scan itself with the
//! compression restored. It never runs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::common::parsers::CompressionTypeVariant;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

/// Marks a compressed file scan, its only child, for the trip to an executor.
#[derive(Debug)]
pub struct CompressedScanExec {
    scan: Arc<dyn ExecutionPlan>,
    compression: CompressionTypeVariant,
}

impl CompressedScanExec {
    /// Wraps `plan` when it is a compressed file scan; returns `None` otherwise.
    pub fn wrap(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
        let config = file_scan_config(plan)?;
        if !config.file_compression_type.is_compressed() {
            return None;
        }
        Some(Arc::new(Self {
            scan: Arc::clone(plan),
            compression: *config.file_compression_type.get_variant(),
        }))
    }

    /// The compression's name as encoded (`GZIP`, `ZSTD`, ...).
    pub fn compression(&self) -> String {
        self.compression.to_string()
    }

    /// The scan `decoded` (which lost its compression on the way) with `compression`.
    pub fn restore(
        decoded: &Arc<dyn ExecutionPlan>,
        compression: &str,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let config = file_scan_config(decoded).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "a compressed scan marker over {}, not a file scan",
                decoded.name()
            ))
        })?;
        let variant = CompressionTypeVariant::from_str(compression)?;
        let restored = FileScanConfigBuilder::from(config.clone())
            .with_file_compression_type(FileCompressionType::from(variant))
            .build();
        Ok(DataSourceExec::from_data_source(restored))
    }
}

fn file_scan_config(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

impl DisplayAs for CompressedScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CompressedScanExec: compression={}", self.compression)
    }
}

impl ExecutionPlan for CompressedScanExec {
    fn name(&self) -> &str {
        "CompressedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.scan.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.scan]
    }

    fn apply_expressions(
        &self,
        _visit: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [scan] = children.as_slice() else {
            return Err(DataFusionError::Internal(
                "CompressedScanExec takes one child".to_string(),
            ));
        };
        Ok(Arc::new(Self {
            scan: Arc::clone(scan),
            compression: self.compression,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // Only a plan that never travelled runs it: the scan still knows its compression.
        self.scan.execute(partition, context)
    }
}
