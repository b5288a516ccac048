//! Distributed `EXPLAIN ANALYZE`: the query runs, then every stage's plan is shown with
//! each operator's metrics summed over the stage's tasks, and per stage the task count,
//! the task-time skew (slowest over median) and the bytes shuffled in and out.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, displayable};
use quiver_core::StageId;
use quiver_core::proto::OperatorMetrics;

use crate::engine::StageAnalysis;

/// How `EXPLAIN ANALYZE` shows each stage's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnalyzeFormat {
    /// One operator a line, indented by depth, its metrics on its line (the default).
    Indent,
    /// DataFusion's box-drawn tree, then the operators' metrics.
    Tree,
}

/// What `EXPLAIN ANALYZE [VERBOSE] [FORMAT f]` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AnalyzeOptions {
    pub(crate) format: AnalyzeFormat,
    /// Also each task's figures.
    pub(crate) verbose: bool,
}

impl AnalyzeOptions {
    /// The options of a parsed `EXPLAIN ANALYZE`, or why its format is not offered.
    pub(crate) fn of(
        format: &datafusion::common::format::ExplainFormat,
        verbose: bool,
    ) -> Result<Self, String> {
        use datafusion::common::format::ExplainFormat;
        let format = match format {
            ExplainFormat::Indent => AnalyzeFormat::Indent,
            ExplainFormat::Tree => AnalyzeFormat::Tree,
            other => {
                return Err(format!(
                    "EXPLAIN ANALYZE FORMAT {other} is not offered for distributed plans: \
                     use indent (the default) or tree"
                ));
            }
        };
        Ok(Self { format, verbose })
    }
}

/// Takes `FORMAT tree` off an `EXPLAIN ANALYZE` statement, which DataFusion's planner
/// refuses for its single-process analysis; returns whether it was there, so that the
/// planned `Analyze` can get it back ([`restore_tree_format`]).
pub(crate) fn take_tree_format(statement: &mut datafusion::sql::parser::Statement) -> bool {
    use datafusion::common::format::ExplainFormat;
    match statement {
        datafusion::sql::parser::Statement::Explain(explain)
            if explain.options.analyze
                && matches!(explain.options.format, Some(ExplainFormat::Tree)) =>
        {
            explain.options.format = None;
            true
        }
        _ => false,
    }
}

/// Gives a planned `EXPLAIN ANALYZE` its tree format back.
pub(crate) fn restore_tree_format(plan: &mut datafusion::logical_expr::LogicalPlan) {
    if let datafusion::logical_expr::LogicalPlan::Analyze(analyze) = plan {
        analyze.format = datafusion::common::format::ExplainFormat::Tree;
    }
}

/// The text `EXPLAIN ANALYZE` answers with.
pub(crate) fn render(stages: &[StageAnalysis], options: AnalyzeOptions) -> String {
    let bytes_out: HashMap<StageId, u64> = stages
        .iter()
        .map(|stage| {
            let out = stage.tasks.iter().map(|task| task.output_bytes).sum();
            (stage.stage_id, out)
        })
        .collect();
    let mut text = String::new();
    for stage in stages {
        let mut times: Vec<u64> = stage.tasks.iter().map(|t| t.elapsed_micros).collect();
        times.sort_unstable();
        let median = times
            .get(times.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(0);
        let slowest = times.last().copied().unwrap_or(0);
        let skew = if median > 0 {
            slowest as f64 / median as f64
        } else {
            1.0
        };
        let bytes_in: u64 = stage.inputs.iter().filter_map(|i| bytes_out.get(i)).sum();
        let rows_out: u64 = stage.tasks.iter().map(|t| t.output_rows).sum();
        let _ = writeln!(
            text,
            "Stage {} · {} tasks · task time median {}, max {} (skew {skew:.2}x) · \
             shuffle in {}, out {} ({rows_out} rows){}",
            stage.stage_id,
            stage.tasks.len(),
            micros(median),
            micros(slowest),
            bytes(bytes_in),
            bytes(bytes_out.get(&stage.stage_id).copied().unwrap_or(0)),
            match stage.inputs.is_empty() {
                true => String::new(),
                false => format!(
                    " · reads stages {}",
                    stage
                        .inputs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        );
        for decision in stage.adaptive_decision.iter().flat_map(|d| d.lines()) {
            let _ = writeln!(text, "  {decision}");
        }
        match options.format {
            AnalyzeFormat::Indent => {
                operator_lines(&stage.plan, 1, &stage.operators, &mut 0, &mut text);
            }
            AnalyzeFormat::Tree => {
                let _ = writeln!(text, "{}", displayable(stage.plan.as_ref()).tree_render());
                let _ = writeln!(text, "  metrics, summed over the stage's tasks:");
                for operator in stage.operators.iter().filter(|m| m.measured) {
                    let _ = writeln!(text, "    {}: {}", operator.operator, figures(operator));
                }
            }
        }
        if options.verbose {
            for (index, task) in stage.tasks.iter().enumerate() {
                let _ = writeln!(
                    text,
                    "  task {index}: {} rows, {}, {} on its executor, spilled {}",
                    task.output_rows,
                    bytes(task.output_bytes),
                    micros(task.elapsed_micros),
                    bytes(task.spilled_bytes)
                );
            }
        }
    }
    text
}

/// An operator's summed metrics, as `EXPLAIN ANALYZE` shows them.
fn figures(m: &OperatorMetrics) -> String {
    format!(
        "output_rows={}, elapsed_compute={}, spill_count={}, spilled_bytes={}",
        m.output_rows,
        nanos(m.elapsed_compute_nanos),
        m.spill_count,
        m.spilled_bytes
    )
}

/// A stage's plan, one operator a line, with `operators`' metrics where measured.
pub(crate) fn operator_tree(
    plan: &Arc<dyn ExecutionPlan>,
    operators: &[OperatorMetrics],
) -> String {
    let mut text = String::new();
    operator_lines(plan, 0, operators, &mut 0, &mut text);
    text
}

/// Each operator's metrics summed over a stage's tasks (`per_task`: each task's, in
/// pre-order).
pub(crate) fn summed_operators(per_task: &[Vec<OperatorMetrics>]) -> Vec<OperatorMetrics> {
    let mut operators: Vec<OperatorMetrics> = Vec::new();
    for task in per_task {
        if operators.len() < task.len() {
            operators.resize(task.len(), OperatorMetrics::default());
        }
        for (sum, one) in operators.iter_mut().zip(task) {
            sum.operator.clone_from(&one.operator);
            sum.measured |= one.measured;
            sum.output_rows += one.output_rows;
            sum.elapsed_compute_nanos += one.elapsed_compute_nanos;
            sum.spill_count += one.spill_count;
            sum.spilled_bytes += one.spilled_bytes;
        }
    }
    operators
}

/// One line per operator, indented by depth, with its summed metrics.
fn operator_lines(
    plan: &Arc<dyn ExecutionPlan>,
    depth: usize,
    operators: &[OperatorMetrics],
    index: &mut usize,
    text: &mut String,
) {
    let line = displayable(plan.as_ref()).one_line().to_string();
    // Executors may have wrapped operators when decoding the plan (cooperative
    // scheduling): skip entries until this operator's own.
    let own = operators[(*index).min(operators.len())..]
        .iter()
        .position(|m| m.operator == plan.name());
    if let Some(skipped) = own {
        *index += skipped;
    }
    let metrics = match operators
        .get(*index)
        .filter(|m| own.is_some() && m.measured)
    {
        Some(m) => format!(", metrics=[{}]", figures(m)),
        None => String::new(),
    };
    let _ = writeln!(text, "{}{}{metrics}", "  ".repeat(depth), line.trim_end());
    if own.is_some() {
        *index += 1;
    }
    for child in plan.children() {
        operator_lines(child, depth + 1, operators, index, text);
    }
}

fn nanos(n: u64) -> String {
    match n {
        0..1_000 => format!("{n}ns"),
        1_000..1_000_000 => format!("{:.2}µs", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", n as f64 / 1e6),
        _ => format!("{:.2}s", n as f64 / 1e9),
    }
}

fn micros(us: u64) -> String {
    nanos(us.saturating_mul(1_000))
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}
