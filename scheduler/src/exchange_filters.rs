//! Dynamic filters that stop at exchanges, planned around DataFusion's last filter
//! pushdown (see [`ExchangeFilterExec`] for why).
//!
//! [`OfferFiltersAtExchanges`] runs just before DataFusion's `FilterPushdown(Post)` and
//! puts an [`ExchangeFilterExec`] over every exchange (repartition, coalesce, merge); the pushdown then leaves each
//! join's filter at the first exchange on its probe side. [`DropUnfilteredExchanges`] runs
//! just after and removes the nodes no filter reached.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use quiver_core::exchange_filter::ExchangeFilterExec;

/// DataFusion's physical optimizer rules with the two rules of this module around its
/// post-optimization filter pushdown.
pub(crate) fn physical_optimizer_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = Vec::new();
    for rule in PhysicalOptimizer::new().rules {
        let post_pushdown = rule.name() == "FilterPushdown(Post)";
        if post_pushdown {
            rules.push(Arc::new(OfferFiltersAtExchanges) as _);
        }
        rules.push(rule);
        if post_pushdown {
            rules.push(Arc::new(DropUnfilteredExchanges) as _);
        }
    }
    rules
}

/// Puts an empty [`ExchangeFilterExec`] over every exchange.
#[derive(Debug)]
pub(crate) struct OfferFiltersAtExchanges;

impl PhysicalOptimizerRule for OfferFiltersAtExchanges {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !config.optimizer.enable_join_dynamic_filter_pushdown
            && !config.optimizer.enable_topk_dynamic_filter_pushdown
            && !config.optimizer.enable_aggregate_dynamic_filter_pushdown
        {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            // Every node the stage cutter cuts at: repartitions, and gathers (the input of
            // a coalesce or an order-preserving merge runs in an earlier stage).
            let exchange = node.is::<RepartitionExec>()
                || node.is::<CoalescePartitionsExec>()
                || node.is::<SortPreservingMergeExec>();
            if exchange {
                let offered: Arc<dyn ExecutionPlan> =
                    Arc::new(ExchangeFilterExec::new(node, Vec::new()));
                return Ok(Transformed::yes(offered));
            }
            Ok(Transformed::no(node))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "OfferFiltersAtExchanges"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Removes each [`ExchangeFilterExec`] that took no filter.
#[derive(Debug)]
pub(crate) struct DropUnfilteredExchanges;

impl PhysicalOptimizerRule for DropUnfilteredExchanges {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match node.downcast_ref::<ExchangeFilterExec>() {
            Some(offered) if offered.filters().is_empty() => {
                Ok(Transformed::yes(Arc::clone(offered.input())))
            }
            _ => Ok(Transformed::no(node)),
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "DropUnfilteredExchanges"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    use quiver_core::JobId;

    use super::*;
    use crate::planner::plan_stages;

    /// Ids of the dynamic filters `plan`'s operators produce, and of those operators read
    /// that another operator produces.
    fn filters_of(plan: &Arc<dyn ExecutionPlan>) -> (HashSet<u64>, HashSet<u64>) {
        let (mut produced, mut consumed) = (HashSet::new(), HashSet::new());
        plan.apply(|node| {
            let own: HashSet<u64> = node
                .dynamic_expressions_produced()
                .iter()
                .filter_map(|expr| expr.expression_id())
                .collect();
            node.apply_expressions(&mut |root| {
                root.apply(|expr| {
                    if expr.downcast_ref::<DynamicFilterPhysicalExpr>().is_some()
                        && let Some(id) = expr.expression_id()
                        && !own.contains(&id)
                    {
                        consumed.insert(id);
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })?;
            produced.extend(own);
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        (produced, consumed)
    }

    /// Every dynamic filter a stage reads is one a join of that stage fills: none waits in
    /// a scan below an exchange for a join that runs in a later stage.
    #[tokio::test]
    async fn every_stage_reads_only_dynamic_filters_its_own_joins_fill() {
        let mut config = SessionConfig::new().with_target_partitions(4);
        let options = config.options_mut();
        options.optimizer.enable_round_robin_repartition = false;
        options.optimizer.repartition_file_min_size = 1024;
        options.optimizer.hash_join_single_partition_threshold = 50_000;
        options.optimizer.hash_join_single_partition_threshold_rows = 5_000;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rules(physical_optimizer_rules())
            .build();
        let context = SessionContext::new_with_state(state);
        for table in [
            "lineitem", "orders", "customer", "nation", "supplier", "region", "part",
        ] {
            let path = format!(
                "{}/../testdata/tpch/sf0.01/{table}/",
                env!("CARGO_MANIFEST_DIR")
            );
            context
                .register_parquet(table, &path, ParquetReadOptions::default())
                .await
                .unwrap();
        }
        let mut stages_read = 0;
        let mut offered = 0;
        for number in [3, 5, 7, 8, 10] {
            let path = format!(
                "{}/../testdata/tpch/queries/q{number}.sql",
                env!("CARGO_MANIFEST_DIR")
            );
            let sql = std::fs::read_to_string(path).unwrap();
            let physical = context
                .sql(&sql)
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            physical
                .apply(|node| {
                    offered += usize::from(node.is::<ExchangeFilterExec>());
                    Ok(TreeNodeRecursion::Continue)
                })
                .unwrap();
            let dag = plan_stages(&JobId::new_random(), physical, context.task_ctx())
                .await
                .unwrap();
            for stage in &dag.stages {
                let (produced, consumed) = filters_of(&stage.plan);
                stages_read += usize::from(!consumed.is_empty());
                assert!(
                    consumed.is_subset(&produced),
                    "q{number} stage {}: reads filters {consumed:?}, fills {produced:?}:\n{}",
                    stage.stage_id.0,
                    datafusion::physical_plan::displayable(stage.plan.as_ref()).indent(true)
                );
            }
        }
        // The check saw filters at work: read in stages, and stopped at exchanges.
        assert!(stages_read > 0 && offered > 0, "{stages_read} {offered}");
    }
}
