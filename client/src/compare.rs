//! A canonical text form of query results, for checking Quiver's answers against
//! single-node DataFusion's (differential testing and benchmark verification).

use datafusion::arrow::array::{Array, ArrayRef, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// Significant digits kept for floating point values: partial sums added in another
/// order differ in the last bits, not in the first ten digits.
pub const FLOAT_DIGITS: usize = 10;

/// Each row as one line of text, cells separated by `|`; floats rounded to
/// [`FLOAT_DIGITS`] significant digits. With `sort`, rows come back sorted, for queries
/// whose row order is not defined.
pub fn canonical_rows(batches: &[RecordBatch], sort: bool) -> Result<Vec<String>, ArrowError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let cells: Vec<Vec<String>> = batch
            .columns()
            .iter()
            .map(|column| format_column(column, &options))
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            let line: Vec<&str> = cells.iter().map(|column| column[row].as_str()).collect();
            rows.push(line.join("|"));
        }
    }
    if sort {
        rows.sort();
    }
    Ok(rows)
}

/// Whether two canonical answers agree, floats within a relative 1e-9: sums added in
/// another order can round to different tenth digits.
pub fn same_rows(actual: &[String], expected: &[String]) -> bool {
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(a, e)| a == e || same_cells(a, e))
}

/// Two canonical rows with the same cells, floats within a relative 1e-9.
fn same_cells(actual: &str, expected: &str) -> bool {
    let actual: Vec<&str> = actual.split('|').collect();
    let expected: Vec<&str> = expected.split('|').collect();
    actual.len() == expected.len()
        && actual.iter().zip(&expected).all(|(a, e)| {
            a == e
                || matches!((a.parse::<f64>(), e.parse::<f64>()),
                    (Ok(a), Ok(e)) if (a - e).abs() <= 1e-9 * a.abs().max(e.abs()))
        })
}

fn format_column(column: &ArrayRef, options: &FormatOptions) -> Result<Vec<String>, ArrowError> {
    if !column.data_type().is_floating() {
        let formatter = ArrayFormatter::try_new(column.as_ref(), options)?;
        return Ok((0..column.len())
            .map(|i| formatter.value(i).to_string())
            .collect());
    }
    let widened = cast(column, &DataType::Float64)?;
    let values = widened
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| {
            ArrowError::CastError("float column did not widen to Float64".to_string())
        })?;
    Ok((0..values.len())
        .map(|i| {
            if values.is_null(i) {
                "NULL".to_string()
            } else {
                format!("{:.prec$e}", values.value(i), prec = FLOAT_DIGITS - 1)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(ints: Vec<Option<i32>>, floats: Vec<f64>, names: Vec<&str>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("f", DataType::Float64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(ints)),
                Arc::new(Float64Array::from(floats)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn tolerates_float_noise_but_not_real_differences() {
        let a = batch(vec![Some(1)], vec![0.1 + 0.2], vec!["x"]);
        let b = batch(vec![Some(1)], vec![0.3], vec!["x"]);
        let c = batch(vec![Some(1)], vec![0.3001], vec!["x"]);
        assert_eq!(
            canonical_rows(std::slice::from_ref(&a), false).unwrap(),
            canonical_rows(&[b], false).unwrap()
        );
        assert_ne!(
            canonical_rows(&[a], false).unwrap(),
            canonical_rows(&[c], false).unwrap()
        );
    }

    #[test]
    fn sorting_makes_row_order_irrelevant() {
        let a = batch(vec![Some(2), None], vec![1.0, 2.0], vec!["b", "a"]);
        let b = batch(vec![None, Some(2)], vec![2.0, 1.0], vec!["a", "b"]);
        assert_ne!(
            canonical_rows(std::slice::from_ref(&a), false).unwrap(),
            canonical_rows(std::slice::from_ref(&b), false).unwrap()
        );
        assert_eq!(
            canonical_rows(&[a], true).unwrap(),
            canonical_rows(&[b], true).unwrap()
        );
    }
}
