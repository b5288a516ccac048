//! Statement parameters: `?` placeholders numbered as DataFusion's `$n`, and parameter
//! rows sent by clients turned into values.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use quiver_core::QuiverError;

/// Rewrites each `?` placeholder as `$1`, `$2`, ... in order, leaving string literals,
/// quoted identifiers and comments alone. Text that does not tokenize is returned as is
/// (the planner reports its error).
pub(crate) fn number_placeholders(sql: &str) -> String {
    if !sql.contains('?') {
        return sql.to_string();
    }
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return sql.to_string();
    };
    let mut next = 0;
    tokens
        .into_iter()
        .map(|token| match token {
            Token::Placeholder(ref text) if text == "?" => {
                next += 1;
                format!("${next}")
            }
            other => other.to_string(),
        })
        .collect()
}

/// One set of parameter values per row of `batch`, by column position (`$1` is the
/// first column).
pub(crate) fn parameter_rows(batch: &RecordBatch) -> Result<Vec<ParamValues>, QuiverError> {
    (0..batch.num_rows())
        .map(|row| {
            let values = batch
                .columns()
                .iter()
                .map(|column| ScalarValue::try_from_array(column, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(QuiverError::InvalidQuery)?;
            Ok(ParamValues::List(
                values.into_iter().map(Into::into).collect(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(
            number_placeholders("SELECT a FROM t WHERE a = ? AND b > ?"),
            "SELECT a FROM t WHERE a = $1 AND b > $2"
        );
    }

    #[test]
    fn question_marks_in_literals_and_comments_stay() {
        assert_eq!(
            number_placeholders("SELECT '?', \"?\" FROM t -- ?\nWHERE x = ?"),
            "SELECT '?', \"?\" FROM t -- ?\nWHERE x = $1"
        );
    }
}
