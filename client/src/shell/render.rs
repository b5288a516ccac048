//! Result output formats: aligned tables (names and types in the header, a row count
//! footer, fitted to the terminal width), CSV, TSV, JSON, NDJSON and Markdown.

use std::fmt::Write as _;
use std::str::FromStr;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Table,
    Csv,
    Tsv,
    Json,
    Ndjson,
    Markdown,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "tsv" => Ok(Format::Tsv),
            "json" => Ok(Format::Json),
            "ndjson" | "jsonl" => Ok(Format::Ndjson),
            "markdown" | "md" => Ok(Format::Markdown),
            other => Err(format!(
                "unknown format `{other}`: use table, csv, tsv, json, ndjson or markdown"
            )),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Markdown => "markdown",
        };
        f.write_str(name)
    }
}

/// Widest a table cell gets before it is cut with `…`.
const MAX_CELL_WIDTH: usize = 48;

/// The result as text, cells formatted by Arrow, nulls as `NULL` (empty in CSV/TSV).
pub(crate) struct Rendered {
    pub(crate) names: Vec<String>,
    pub(crate) types: Vec<String>,
    /// Cell text, row by row; `None` is null.
    pub(crate) rows: Vec<Vec<Option<String>>>,
    /// Columns that hold numbers (right-aligned in tables, bare in JSON).
    numeric: Vec<bool>,
}

impl Rendered {
    pub(crate) fn new(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Self, String> {
        let options = FormatOptions::default().with_null("\u{0}");
        let mut rows = Vec::new();
        for batch in batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("formatting results: {e}"))?;
            for row in 0..batch.num_rows() {
                let cells = batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(column, formatter)| {
                        (!column.is_null(row)).then(|| formatter.value(row).to_string())
                    })
                    .collect();
                rows.push(cells);
            }
        }
        Ok(Self {
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            types: schema
                .fields()
                .iter()
                .map(|f| short_type_name(f.data_type()))
                .collect(),
            numeric: schema
                .fields()
                .iter()
                .map(|f| f.data_type().is_numeric())
                .collect(),
            rows,
        })
    }

    pub(crate) fn write(&self, format: Format, max_width: Option<usize>) -> String {
        match format {
            Format::Table if self.is_plan() => self.plans(),
            Format::Table => self.table(max_width),
            Format::Csv => self.delimited(',', true),
            Format::Tsv => self.delimited('\t', false),
            Format::Json => self.json(false),
            Format::Ndjson => self.json(true),
            Format::Markdown => self.markdown(),
        }
    }

    /// Whether this is an `EXPLAIN` answer: plan texts, which a table would cut.
    fn is_plan(&self) -> bool {
        self.names == ["plan_type", "plan"]
    }

    /// An `EXPLAIN` answer: each plan's name, then its text as the server wrote it.
    fn plans(&self) -> String {
        let mut text = String::new();
        for row in &self.rows {
            let name = row[0].as_deref().unwrap_or("NULL");
            let plan = row[1].as_deref().unwrap_or("NULL");
            text.push_str(&format!("{name}:\n{}\n\n", plan.trim_end()));
        }
        text
    }

    fn table(&self, max_width: Option<usize>) -> String {
        let columns = self.names.len();
        let cell = |row: &[Option<String>], c: usize| -> String {
            row[c]
                .as_deref()
                .map(|text| text.replace('\n', "\\n"))
                .unwrap_or_else(|| "NULL".to_string())
        };
        let mut widths: Vec<usize> = (0..columns)
            .map(|c| {
                let data = self.rows.iter().map(|r| width(&cell(r, c)));
                data.chain([width(&self.names[c]), width(&self.types[c])])
                    .max()
                    .unwrap_or(0)
                    .min(MAX_CELL_WIDTH)
            })
            .collect();
        let mut shown: Vec<Option<usize>> = (0..columns).map(Some).collect();
        if let Some(limit) = max_width {
            shown = fit_columns(&widths, limit);
            // Still too wide (few, very wide columns): narrow the widest.
            while table_width(&shown, &widths) > limit {
                let Some((widest, _)) = widths.iter().enumerate().max_by_key(|(_, w)| **w) else {
                    break;
                };
                if widths[widest] <= 4 {
                    break;
                }
                widths[widest] -= 1;
            }
        }
        let line = |left: &str, mid: &str, right: &str| -> String {
            let parts: Vec<String> = shown
                .iter()
                .map(|c| "─".repeat(c.map_or(1, |c| widths[c]) + 2))
                .collect();
            format!("{left}{}{right}\n", parts.join(mid))
        };
        let row_text = |values: Vec<(String, bool)>| -> String {
            let mut out = String::from("│");
            for (c, (text, right)) in shown.iter().zip(values) {
                let w = c.map_or(1, |c| widths[c]);
                let text = fit(&text, w);
                let pad = w - width(&text);
                if right {
                    let _ = write!(out, " {}{text} │", " ".repeat(pad));
                } else {
                    let _ = write!(out, " {text}{} │", " ".repeat(pad));
                }
            }
            out.push('\n');
            out
        };
        let pick = |f: &dyn Fn(usize) -> (String, bool)| -> Vec<(String, bool)> {
            shown
                .iter()
                .map(|c| match c {
                    Some(c) => f(*c),
                    None => ("…".to_string(), false),
                })
                .collect()
        };
        let mut out = line("┌", "┬", "┐");
        out += &row_text(pick(&|c| (self.names[c].clone(), false)));
        out += &row_text(pick(&|c| (self.types[c].clone(), false)));
        out += &line("├", "┼", "┤");
        for row in &self.rows {
            out += &row_text(pick(&|c| (cell(row, c), self.numeric[c])));
        }
        out += &line("└", "┴", "┘");
        let noun = if self.rows.len() == 1 { "row" } else { "rows" };
        let visible = shown.iter().filter(|c| c.is_some()).count();
        if visible < columns {
            let _ = writeln!(
                out,
                "({} {noun}, {columns} columns, {visible} shown)",
                self.rows.len()
            );
        } else {
            let _ = writeln!(out, "({} {noun})", self.rows.len());
        }
        out
    }

    fn delimited(&self, separator: char, quote: bool) -> String {
        let escape = |text: &str| -> String {
            if quote
                && (text.contains(separator)
                    || text.contains('"')
                    || text.contains('\n')
                    || text.contains('\r'))
            {
                format!("\"{}\"", text.replace('"', "\"\""))
            } else if !quote {
                text.replace(['\t', '\n'], " ")
            } else {
                text.to_string()
            }
        };
        let sep = separator.to_string();
        let mut out = String::new();
        let header: Vec<String> = self.names.iter().map(|n| escape(n)).collect();
        let _ = writeln!(out, "{}", header.join(&sep));
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|v| v.as_deref().map(escape).unwrap_or_default())
                .collect();
            let _ = writeln!(out, "{}", cells.join(&sep));
        }
        out
    }

    fn json(&self, one_per_line: bool) -> String {
        let objects: Vec<String> = self
            .rows
            .iter()
            .map(|row| {
                let fields: Vec<String> = row
                    .iter()
                    .enumerate()
                    .map(|(c, value)| {
                        let value = match value {
                            None => "null".to_string(),
                            Some(text) if self.numeric[c] && is_json_number(text) => text.clone(),
                            Some(text) if self.types[c] == "boolean" => text.clone(),
                            Some(text) => json_string(text),
                        };
                        format!("{}:{value}", json_string(&self.names[c]))
                    })
                    .collect();
                format!("{{{}}}", fields.join(","))
            })
            .collect();
        if one_per_line {
            objects.iter().map(|o| format!("{o}\n")).collect()
        } else {
            format!("[{}]\n", objects.join(",\n "))
        }
    }

    fn markdown(&self) -> String {
        let escape = |text: &str| text.replace('|', "\\|").replace('\n', " ");
        let mut out = String::new();
        let header: Vec<String> = self.names.iter().map(|n| escape(n)).collect();
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let rule: Vec<&str> = self
            .numeric
            .iter()
            .map(|n| if *n { "---:" } else { "---" })
            .collect();
        let _ = writeln!(out, "| {} |", rule.join(" | "));
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|v| v.as_deref().map(escape).unwrap_or_else(|| "NULL".into()))
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

/// Characters a table with these columns takes (`None` is the one-wide `…` column).
fn table_width(shown: &[Option<usize>], widths: &[usize]) -> usize {
    shown
        .iter()
        .map(|c| c.map_or(1, |c| widths[c]) + 3)
        .sum::<usize>()
        + 1
}

/// The columns that fit in `limit` characters, taken from both ends inwards (first,
/// last, second, second to last...), with a `…` column (`None`) where the rest were.
fn fit_columns(widths: &[usize], limit: usize) -> Vec<Option<usize>> {
    let all: Vec<Option<usize>> = (0..widths.len()).map(Some).collect();
    if table_width(&all, widths) <= limit {
        return all;
    }
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let (mut low, mut high) = (0, widths.len());
    while low < high {
        let take_left = left.len() <= right.len();
        let candidate = if take_left { low } else { high - 1 };
        let mut trial: Vec<Option<usize>> = left.iter().copied().map(Some).collect();
        if take_left {
            trial.push(Some(candidate));
        }
        trial.push(None);
        if !take_left {
            trial.push(Some(candidate));
        }
        trial.extend(right.iter().rev().copied().map(Some));
        let at_least_two = left.len() + right.len() < 2;
        if table_width(&trial, widths) > limit && !at_least_two {
            break;
        }
        if take_left {
            left.push(candidate);
            low += 1;
        } else {
            right.push(candidate);
            high -= 1;
        }
    }
    let mut shown: Vec<Option<usize>> = left.into_iter().map(Some).collect();
    shown.push(None);
    shown.extend(right.into_iter().rev().map(Some));
    shown
}

/// Type names people read: `bigint`, `varchar`, `decimal(15,2)`, `date`...
pub(crate) fn short_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::UInt8 => "tinyint unsigned".into(),
        DataType::UInt16 => "smallint unsigned".into(),
        DataType::UInt32 => "int unsigned".into(),
        DataType::UInt64 => "bigint unsigned".into(),
        DataType::Float16 => "half".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "varchar".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Null => "null".into(),
        other => other.to_string().to_ascii_lowercase(),
    }
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// Cuts `text` to `max` characters, ending in `…` when cut.
fn fit(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

fn is_json_number(text: &str) -> bool {
    !text.is_empty()
        && text.parse::<f64>().is_ok_and(f64::is_finite)
        && !text.starts_with('+')
        && !text.starts_with('.')
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn sample() -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("a,\"b\""), Some("x")])),
            ],
        )
        .unwrap();
        (schema, vec![batch])
    }

    #[test]
    fn plans_are_shown_whole() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("plan_type", DataType::Utf8, false),
            Field::new("plan", DataType::Utf8, false),
        ]));
        let long = format!(
            "Stage 0 · {}\n  ProjectionExec: expr=[1]\n",
            "x".repeat(200)
        );
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["Plan with Metrics"])),
                Arc::new(StringArray::from(vec![long.as_str()])),
            ],
        )
        .unwrap();
        let text = Rendered::new(&schema, &[batch])
            .unwrap()
            .write(Format::Table, Some(60));
        assert_eq!(text, format!("Plan with Metrics:\n{}\n\n", long.trim_end()));
    }

    #[test]
    fn table_has_names_types_and_count() {
        let (schema, batches) = sample();
        let text = Rendered::new(&schema, &batches)
            .unwrap()
            .write(Format::Table, None);
        assert!(text.contains("│ id     │ name    │"), "{text}");
        assert!(text.contains("│ bigint │ varchar │"), "{text}");
        assert!(text.contains("NULL"), "{text}");
        assert!(text.ends_with("(2 rows)\n"), "{text}");
    }

    #[test]
    fn narrow_terminals_drop_middle_columns() {
        let schema = Arc::new(Schema::new(
            (0..12)
                .map(|i| Field::new(format!("column_{i}"), DataType::Int64, false))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            (0..12)
                .map(|i| Arc::new(Int64Array::from(vec![i])) as _)
                .collect(),
        )
        .unwrap();
        let text = Rendered::new(&schema, &[batch])
            .unwrap()
            .write(Format::Table, Some(60));
        assert!(text.lines().all(|l| l.chars().count() <= 60), "{text}");
        assert!(text.contains('…'), "{text}");
        assert!(
            text.contains("column_0") && text.contains("column_11"),
            "{text}"
        );
        assert!(text.contains("12 columns"), "{text}");
    }

    #[test]
    fn csv_quotes_and_json_types() {
        let (schema, batches) = sample();
        let rendered = Rendered::new(&schema, &batches).unwrap();
        assert_eq!(
            rendered.write(Format::Csv, None),
            "id,name\n1,\"a,\"\"b\"\"\"\n,x\n"
        );
        assert_eq!(
            rendered.write(Format::Ndjson, None),
            "{\"id\":1,\"name\":\"a,\\\"b\\\"\"}\n{\"id\":null,\"name\":\"x\"}\n"
        );
        assert!(
            rendered
                .write(Format::Markdown, None)
                .starts_with("| id | name |\n| ---: | --- |")
        );
    }
}
