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
