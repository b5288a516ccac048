//! [`ExchangeFilterExec`]: where a join's dynamic filter stops at an exchange.
//!
//! In one process, DataFusion pushes a join's dynamic filter (the build side's key bounds
//! and set) down its probe side as far as a file scan, through any repartition on the way.
//! Cut into stages, the scan below an exchange runs in an earlier stage, in other tasks:
//! the join can never fill the scan's copy of the filter. The scheduler therefore plans
//! an `ExchangeFilterExec` over every exchange before DataFusion pushes dynamic filters,
//! and the node takes the filters that reach it; it stays on the consuming side of the
//! cut, over the exchange's reader, in the same task as the joins that fill them. There
//! it drops the rows the filters reject as batches arrive. Nodes no filter reached are
//! removed again before the plan is cut.
//!
//! A filter not filled yet is `true`: rows pass untouched until the join has built. A
//! join reads its whole build side before it reads a probe row, so filters of joins
//! above an exchange are filled before the exchange's rows are read.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::{and, filter_record_batch};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{DynamicFilterPhysicalExpr, Literal};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
    PushedDown,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

/// Applies the dynamic filters pushed to an exchange to the rows coming out of it.
#[derive(Debug)]
pub struct ExchangeFilterExec {
    input: Arc<dyn ExecutionPlan>,
    filters: Vec<Arc<dyn PhysicalExpr>>,
    metrics: ExecutionPlanMetricsSet,
}

impl ExchangeFilterExec {
    /// A node over `input` applying `filters` (dynamic filters in `input`'s schema).
    pub fn new(input: Arc<dyn ExecutionPlan>, filters: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        Self {
            input,
            filters,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The filters it applies.
    pub fn filters(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.filters
    }

    /// The node it filters.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl DisplayAs for ExchangeFilterExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let shown: Vec<String> = self.filters.iter().map(ToString::to_string).collect();
        write!(f, "ExchangeFilterExec: filters=[{}]", shown.join(", "))
    }
}

impl ExecutionPlan for ExchangeFilterExec {
    fn name(&self) -> &str {
        "ExchangeFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        visit: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for filter in &self.filters {
            if visit(filter)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.as_slice() {
            [input] => Ok(Arc::new(Self::new(Arc::clone(input), self.filters.clone()))),
            _ => Err(DataFusionError::Internal(
                "ExchangeFilterExec takes one child".to_string(),
            )),
        }
    }

    /// A run again (a recursive query's next iteration) resets the joins, which then
    /// fill no filter: the filters from the last run would be stale, so none are kept.
    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(Arc::clone(&self.input), Vec::new())))
    }

    fn gather_filters_for_pushdown(
        &self,
        phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        match phase {
            // Dynamic filters stop here: below is another stage.
            FilterPushdownPhase::Post => Ok(FilterDescription::all_unsupported(
                &parent_filters,
                &self.children(),
            )),
            FilterPushdownPhase::Pre => {
                FilterDescription::from_children(parent_filters, &self.children())
            }
        }
    }

    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        if phase == FilterPushdownPhase::Pre {
            return Ok(FilterPushdownPropagation::if_all(child_pushdown_result));
        }
        let mut taken = self.filters.clone();
        let mut pushed = Vec::new();
        for result in child_pushdown_result.parent_filters {
            if result.filter.is::<DynamicFilterPhysicalExpr>() {
                taken.push(result.filter);
                pushed.push(PushedDown::Yes);
            } else {
                pushed.push(PushedDown::No);
            }
        }
        let updated = (taken.len() > self.filters.len())
            .then(|| Arc::new(Self::new(Arc::clone(&self.input), taken)) as Arc<dyn ExecutionPlan>);
        Ok(FilterPushdownPropagation {
            filters: pushed,
            updated_node: updated,
        })
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let filters = self.filters.clone();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let filtered = input.filter_map(move |batch| {
            let outcome = batch.and_then(|batch| {
                let _timer = baseline.elapsed_compute().timer();
                apply_filters(&filters, batch)
            });
            let outcome = match outcome {
                Ok(batch) if batch.num_rows() == 0 => None,
                Ok(batch) => {
                    baseline.record_output(batch.num_rows());
                    Some(Ok(batch))
                }
                Err(error) => Some(Err(error)),
            };
            std::future::ready(outcome)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, filtered)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// `batch` without the rows some filter rejects; filters not filled yet pass every row.
fn apply_filters(filters: &[Arc<dyn PhysicalExpr>], batch: RecordBatch) -> Result<RecordBatch> {
    let mut keep: Option<BooleanArray> = None;
    for filter in filters {
        if is_unfilled(filter)? {
            continue;
        }
        let mask = match filter.evaluate(&batch)? {
            ColumnarValue::Array(array) => array
                .as_any()
                .downcast_ref::<BooleanArray>()
                .cloned()
                .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "dynamic filter {filter} gave {} values, not booleans",
                    array.data_type()
                ))
            })?,
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))) => continue,
            ColumnarValue::Scalar(ScalarValue::Boolean(_)) => {
                return Ok(batch.slice(0, 0));
            }
            ColumnarValue::Scalar(other) => {
                return Err(DataFusionError::Internal(format!(
                    "dynamic filter {filter} gave {other}, not a boolean"
                )));
            }
        };
        keep = Some(match keep {
            Some(previous) => and(&previous, &mask)?,
            None => mask,
        });
    }
    match keep {
        Some(mask) if mask.true_count() < batch.num_rows() => {
            Ok(filter_record_batch(&batch, &mask)?)
        }
        _ => Ok(batch),
    }
}

/// Whether `filter` is a dynamic filter still at its initial `true`.
fn is_unfilled(filter: &Arc<dyn PhysicalExpr>) -> Result<bool> {
    let Some(dynamic) = filter.downcast_ref::<DynamicFilterPhysicalExpr>() else {
        return Ok(false);
    };
    let current = dynamic.current()?;
    Ok(current
        .downcast_ref::<Literal>()
        .is_some_and(|literal| literal.value() == &ScalarValue::Boolean(Some(true))))
}
