//! Adaptive execution's skip of work an empty input makes pointless: once a stage's
//! input stages have run, any part of its plan that can only yield nothing from their
//! empty output is replaced by an empty source, so it neither runs nor reads. An inner
//! join whose build side came back empty does not scan its probe side; a stage left
//! with nothing to read runs without a slot.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::error::Result;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec,
};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, replace_children_if_necessary,
};
use quiver_core::exchange::{ShuffleReaderExec, ShuffleWriterExec};

use crate::adaptive::StageOutput;

/// What was cut from a stage's plan because its input was empty.
#[derive(Debug)]
pub(crate) struct EmptyInputCut {
    pub(crate) plan: Arc<dyn ExecutionPlan>,
    /// For EXPLAIN ANALYZE: which inputs were empty and what does not run.
    pub(crate) decision: String,
}

/// `plan` with every part that can only yield nothing from the empty ones of `inputs`
/// replaced by an empty source; `None` when no input is empty or no work depends on one
/// alone.
pub(crate) fn cut_empty_inputs(
    plan: &Arc<dyn ExecutionPlan>,
    inputs: &HashMap<u32, StageOutput>,
) -> Result<Option<EmptyInputCut>> {
    let mut empty_stages: Vec<u32> = inputs
        .iter()
        .filter(|(_, output)| output.rows == 0)
        .map(|(stage, _)| *stage)
        .collect();
    if empty_stages.is_empty() {
        return Ok(None);
    }
    empty_stages.sort_unstable();
    let mut cutter = Cutter {
        empty_stages: &empty_stages,
        cuts: Vec::new(),
    };
    let cut_plan = cutter.visit(plan)?.plan;
    if cutter.cuts.is_empty() {
        return Ok(None);
    }
    let stages: Vec<String> = empty_stages.iter().map(|s| s.to_string()).collect();
    Ok(Some(EmptyInputCut {
        plan: cut_plan,
        decision: format!(
            "adaptive: stage {} produced no rows, so {} cannot yield any: not run",
            stages.join(", "),
            cutter.cuts.join(", ")
        ),
    }))
}

/// Whether a stage's plan was cut down to nothing: its writer writes an empty source.
pub(crate) fn runs_nothing(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<ShuffleWriterExec>()
        && plan
            .children()
            .first()
            .is_some_and(|child| child.is::<EmptyExec>())
}

struct Cutter<'a> {
    empty_stages: &'a [u32],
    /// The subtrees cut, named by their top operator.
    cuts: Vec<String>,
}

/// A node after its empty parts were cut.
struct Visited {
    plan: Arc<dyn ExecutionPlan>,
    /// It yields nothing: its parent cuts it whole.
    empty: bool,
    /// It reads something besides the empty inputs (a scan, a non-empty input): cutting
    /// it saves that reading.
    reads_more: bool,
}

impl Cutter<'_> {
    fn visit(&mut self, node: &Arc<dyn ExecutionPlan>) -> Result<Visited> {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            let empty = self.empty_stages.contains(&reader.stage_id());
            return Ok(Visited {
                plan: Arc::clone(node),
                empty,
                reads_more: !empty,
            });
        }
        let children = node.children();
        if children.is_empty() {
            let empty = node.is::<EmptyExec>();
            return Ok(Visited {
                plan: Arc::clone(node),
                empty,
                reads_more: !empty,
            });
        }
        let cuts_before = self.cuts.len();
        let visited = children
            .iter()
            .map(|child| self.visit(child))
            .collect::<Result<Vec<_>>>()?;
        let reads_more = visited.iter().any(|child| child.reads_more);
        let empty: Vec<bool> = visited.iter().map(|child| child.empty).collect();
        let whole_stage = node.is::<ShuffleWriterExec>();
        if !whole_stage && yields_nothing_from(node, &empty) {
            // Its parent cuts it whole, with whatever was cut inside it.
            self.cuts.truncate(cuts_before);
            return Ok(Visited {
                plan: Arc::clone(node),
                empty: true,
                reads_more,
            });
        }
        let mut rewritten = Vec::with_capacity(visited.len());
        for child in visited {
            // Cut where it saves reading something, or where the whole stage yields
            // nothing: it then runs without a slot.
            let plan = match child.empty && (whole_stage || child.reads_more) {
                true => {
                    self.cuts.push(describe_cut(&child.plan));
                    let partitions = child.plan.output_partitioning().partition_count();
                    Arc::new(EmptyExec::new(child.plan.schema()).with_partitions(partitions))
                }
                false => child.plan,
            };
            rewritten.push(plan);
        }
        Ok(Visited {
            plan: replace_children_if_necessary(Arc::clone(node), rewritten)?,
            empty: false,
            reads_more,
        })
    }
}

/// Whether `node` yields no rows when the children flagged in `empty` yield none. Only
/// operators known to make nothing from nothing count; an aggregate without grouping
/// makes a row from nothing.
fn yields_nothing_from(node: &Arc<dyn ExecutionPlan>, empty: &[bool]) -> bool {
    let left = empty.first().copied().unwrap_or(false);
    let right = empty.get(1).copied().unwrap_or(false);
    let all_empty = !empty.is_empty() && empty.iter().all(|&e| e);
    if let Some(join) = node.downcast_ref::<HashJoinExec>() {
        return join_yields_nothing(*join.join_type(), left, right);
    }
    if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() {
        return join_yields_nothing(*join.join_type(), left, right);
    }
    if let Some(join) = node.downcast_ref::<SortMergeJoinExec>() {
        return join_yields_nothing(join.join_type(), left, right);
    }
    if node.is::<CrossJoinExec>() {
        return left || right;
    }
    if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
        let grouped = aggregate.group_expr();
        return all_empty && !grouped.expr().is_empty() && grouped.is_single();
    }
    let passes_nothing_through = node.is::<FilterExec>()
        || node.is::<ProjectionExec>()
        || node.is::<CoalescePartitionsExec>()
        || node.is::<RepartitionExec>()
        || node.is::<SortExec>()
        || node.is::<SortPreservingMergeExec>()
        || node.is::<GlobalLimitExec>()
        || node.is::<LocalLimitExec>()
        || node.is::<UnionExec>()
        || node.is::<BoundedWindowAggExec>()
        || node.is::<WindowAggExec>()
        || node.name() == "CoalesceBatchesExec";
    passes_nothing_through && all_empty
}

/// Whether a join of this type yields nothing when its left or right input does.
fn join_yields_nothing(join_type: JoinType, left_empty: bool, right_empty: bool) -> bool {
    match join_type {
        JoinType::Inner => left_empty || right_empty,
        JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => left_empty,
        JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
            right_empty
        }
        JoinType::Full => left_empty && right_empty,
    }
}

/// `node` by name, with the kinds of operator under it (`RepartitionExec over
/// HashJoinExec, DataSourceExec`).
fn describe_cut(node: &Arc<dyn ExecutionPlan>) -> String {
    fn collect(node: &Arc<dyn ExecutionPlan>, names: &mut Vec<String>) {
        for child in node.children() {
            let name = child.name().to_string();
            if !names.contains(&name) {
                names.push(name);
            }
            collect(child, names);
        }
    }
    let mut under = Vec::new();
    collect(node, &mut under);
    match under.is_empty() {
        true => node.name().to_string(),
        false => format!("{} over {}", node.name(), under.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::displayable;

    use super::*;
    use crate::planner::tests::dag_for;

    /// The plan of `sql`'s last stage, and what its inputs produced: the stages in
    /// `empty` nothing, the others some rows.
    async fn last_stage(
        sql: &str,
        empty: &[u32],
    ) -> (Arc<dyn ExecutionPlan>, HashMap<u32, StageOutput>) {
        let dag = dag_for(sql).await;
        let stage = dag.stages.last().unwrap();
        let inputs = stage
            .inputs
            .iter()
            .map(|input| {
                let rows = if empty.contains(&input.0) { 0 } else { 10 };
                let output = StageOutput {
                    producers: 2,
                    rows,
                    bytes: rows * 8,
                    partition_bytes: Vec::new(),
                };
                (input.0, output)
            })
            .collect();
        (Arc::clone(&stage.plan), inputs)
    }

    fn readers(plan: &Arc<dyn ExecutionPlan>) -> usize {
        usize::from(plan.is::<ShuffleReaderExec>())
            + plan.children().iter().map(|c| readers(c)).sum::<usize>()
    }

    const JOIN: &str = "SELECT a.k, b.v FROM (SELECT * FROM t WHERE v > 1) a \
                        {} JOIN (SELECT * FROM t WHERE k > 1) b ON a.k = b.v";

    fn scans(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let children = plan.children();
        let own = children.is_empty() && !plan.is::<EmptyExec>() && !plan.is::<ShuffleReaderExec>();
        usize::from(own) + children.iter().map(|c| scans(c)).sum::<usize>()
    }

    #[tokio::test]
    async fn an_inner_join_with_an_empty_build_side_does_not_scan_its_probe_side() {
        let (plan, inputs) = last_stage(&JOIN.replace("{}", "INNER"), &[0]).await;
        let shown = displayable(plan.as_ref()).indent(false).to_string();
        assert!(
            shown.contains("CollectLeft") && scans(&plan) == 1,
            "{shown}"
        );
        let cut = cut_empty_inputs(&plan, &inputs).unwrap().expect("cut");
        assert_eq!(
            scans(&cut.plan) + readers(&cut.plan),
            0,
            "nothing is read any more"
        );
        assert!(
            cut.decision.contains("stage 0 produced no rows"),
            "{}",
            cut.decision
        );
        assert!(cut.decision.contains("HashJoinExec"), "{}", cut.decision);
        // The writer still writes the partitions it did.
        assert_eq!(
            cut.plan.children()[0]
                .output_partitioning()
                .partition_count(),
            plan.children()[0].output_partitioning().partition_count()
        );
    }

    #[tokio::test]
    async fn an_outer_join_keeps_its_preserved_side() {
        // The build side is empty, but a right join keeps every probe row.
        let (plan, inputs) = last_stage(&JOIN.replace("{}", "RIGHT"), &[0]).await;
        assert!(cut_empty_inputs(&plan, &inputs).unwrap().is_none());
        // A partitioned left join: nothing from an empty right side, all from a left one.
        let left = JOIN.replace("{}", "LEFT");
        let (plan, inputs) = last_stage(&left, &[1]).await;
        assert_eq!(readers(&plan), 2);
        assert!(cut_empty_inputs(&plan, &inputs).unwrap().is_none());
        let (plan, inputs) = last_stage(&left, &[0]).await;
        let cut = cut_empty_inputs(&plan, &inputs).unwrap().expect("cut");
        assert_eq!(readers(&cut.plan), 0, "the whole stage yields nothing");
        // A full join yields nothing only if both sides are empty.
        let full = JOIN.replace("{}", "FULL");
        let (plan, inputs) = last_stage(&full, &[0]).await;
        assert!(cut_empty_inputs(&plan, &inputs).unwrap().is_none());
        let (plan, inputs) = last_stage(&full, &[0, 1]).await;
        assert!(cut_empty_inputs(&plan, &inputs).unwrap().is_some());
    }

    #[tokio::test]
    async fn an_aggregate_without_grouping_still_answers_its_row() {
        let (plan, inputs) = last_stage("SELECT count(*), sum(v) FROM t WHERE v > 100", &[0]).await;
        let cut = cut_empty_inputs(&plan, &inputs).unwrap();
        assert!(
            cut.is_none(),
            "{}\n{cut:?}",
            displayable(plan.as_ref()).indent(false)
        );
        // Grouped, it yields nothing: the whole stage is cut.
        let grouped = "SELECT k % 3, count(*) FROM t WHERE v > 100 GROUP BY k % 3";
        let (plan, inputs) = last_stage(grouped, &[0]).await;
        let cut = cut_empty_inputs(&plan, &inputs).unwrap().expect("cut");
        assert_eq!(readers(&cut.plan), 0, "{}", cut.decision);
    }

    #[tokio::test]
    async fn nothing_is_cut_while_every_input_has_rows() {
        let (plan, inputs) = last_stage(&JOIN.replace("{}", "INNER"), &[]).await;
        assert!(cut_empty_inputs(&plan, &inputs).unwrap().is_none());
    }
}
