//! Renders benchmark results: a Markdown table, JSON, and an SVG bar chart.

use std::fmt::Write;

use quiver_core::json_text::push_json_string;

use crate::tpch::{QueryTiming, median, min};

/// A table of min/median times and Quiver/DataFusion ratios, with totals.
pub fn render_report(timings: &[QueryTiming]) -> String {
    let mut out = String::from(
        "| query | DataFusion min ms | DataFusion median ms | Quiver min ms | Quiver median ms | ratio (min) |\n|---|---|---|---|---|---|\n",
    );
    let (mut df_total, mut q_total) = (0.0, 0.0);
    let mut incomplete = Vec::new();
    for t in timings {
        if !t.completed() {
            let side = |error: &Option<String>| match error {
                Some(error) => format!("failed ({})", error.replace(['|', '\n'], " ")),
                None => "answered".to_string(),
            };
            out.push_str(&format!(
                "| q{} | {} | | {} | | |\n",
                t.query,
                side(&t.datafusion_error),
                side(&t.quiver_error)
            ));
            incomplete.push(format!("q{}", t.query));
            continue;
        }
        let (df, q) = (min(&t.datafusion_ms), min(&t.quiver_ms));
        df_total += df;
        q_total += q;
        out.push_str(&format!(
            "| q{} | {df:.1} | {:.1} | {q:.1} | {:.1} | {:.2}x |\n",
            t.query,
            median(&t.datafusion_ms),
            median(&t.quiver_ms),
            q / df
        ));
    }
    let label = if incomplete.is_empty() {
        "total".to_string()
    } else {
        format!("total (without {})", incomplete.join(", "))
    };
    out.push_str(&format!(
        "| {label} | {df_total:.1} | | {q_total:.1} | | {:.2}x |\n",
        q_total / df_total
    ));
    out
}

/// The timings as JSON (written by hand: one small, stable shape).
pub fn render_json(timings: &[QueryTiming], label: &str) -> String {
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "{{\n  \"label\": \"{}\",\n  \"queries\": [\n",
        label.replace('"', "'")
    );
    for (index, t) in timings.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {{\"query\": {}, \"datafusion_ms\": [{}], \"quiver_ms\": [{}]{}{}}}{}",
            t.query,
            list(&t.datafusion_ms),
            list(&t.quiver_ms),
            error_field("datafusion_error", &t.datafusion_error),
            error_field("quiver_error", &t.quiver_error),
            if index + 1 < timings.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n}\n");
    out
}

/// `, "name": "message"` for a side that failed, nothing otherwise.
fn error_field(name: &str, error: &Option<String>) -> String {
    let mut out = String::new();
    if let Some(error) = error {
        out.push_str(&format!(", \"{name}\": "));
        push_json_string(&mut out, error);
    }
    out
}

/// The fastest time, or 0 for a side that never answered (drawn as no bar).
fn fastest(values: &[f64]) -> f64 {
    if values.is_empty() { 0.0 } else { min(values) }
}

/// A grouped bar chart of the minimum times per query, DataFusion next to Quiver.
pub fn render_svg(timings: &[QueryTiming]) -> String {
    let (width, height, margin) = (60.0 + 40.0 * timings.len() as f64, 360.0, 40.0);
    let top = timings
        .iter()
        .flat_map(|t| [fastest(&t.datafusion_ms), fastest(&t.quiver_ms)])
        .fold(1.0_f64, f64::max);
    let scale = (height - 2.0 * margin) / top;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"10\">\n\
         <text x=\"{margin}\" y=\"16\" font-size=\"13\">TPC-H minimum time per query (ms): DataFusion (grey) vs Quiver (blue)</text>\n"
    );
    let base = height - margin;
    for (index, t) in timings.iter().enumerate() {
        let x = margin + 40.0 * index as f64;
        for (offset, value, color) in [
            (0.0, fastest(&t.datafusion_ms), "#999999"),
            (15.0, fastest(&t.quiver_ms), "#2b6cb0"),
        ] {
            let h = value * scale;
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"14\" height=\"{h:.1}\" fill=\"{color}\"><title>{value:.1} ms</title></rect>",
                x + offset,
                base - h
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\">q{}</text>",
            x + 4.0,
            base + 14.0,
            t.query
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{margin}\" y1=\"{base}\" x2=\"{:.1}\" y2=\"{base}\" stroke=\"black\"/>",
        width - 10.0
    );
    out.push_str("</svg>\n");
    out
}
