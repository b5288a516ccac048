//! `CREATE TABLE t (...) STORED AS DELTA [PARTITIONED BY (c, ...)] [LOCATION '...']
//! [AS query]` (Spark's `USING DELTA` too). The SQL parser knows no `DELTA` format for
//! `CREATE TABLE`, so the Delta clauses are taken out of the statement's tokens here and
//! the rest is planned as an ordinary `CREATE TABLE`.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::sql_tokens::{StatementTokens, mentions};

/// A `CREATE TABLE` whose table is a Delta table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeltaCreate {
    /// The statement as written: the table's definition in `information_schema`.
    pub(crate) statement: String,
    /// The statement without its Delta clauses: an ordinary `CREATE TABLE`.
    pub(crate) sql: String,
    pub(crate) partition_columns: Vec<String>,
    /// Where the table goes; under the warehouse when not given.
    pub(crate) location: Option<String>,
}

/// `sql` as a Delta `CREATE TABLE`, if it is one. Statements that are not, and those the
/// tokenizer refuses, are left to the SQL parser (`None`).
pub(crate) fn delta_create(sql: &str) -> Result<Option<DeltaCreate>, String> {
    // Cheap refusal of everything else before tokenizing.
    let head = sql.trim_start().get(..6).unwrap_or_default();
    if !head.eq_ignore_ascii_case("create") || !mentions(sql, "delta") {
        return Ok(None);
    }
    let Some(mut tokens) = StatementTokens::new(sql) else {
        return Ok(None);
    };
    if tokens.keyword(0) != Keyword::CREATE {
        return Ok(None);
    }
    let mut at = 1;
    if tokens.keyword(at) == Keyword::OR && tokens.keyword(at + 1) == Keyword::REPLACE {
        at += 2;
    }
    if tokens.keyword(at) != Keyword::TABLE {
        return Ok(None);
    }
    let mut is_delta = false;
    let mut partition_columns = Vec::new();
    let mut location = None;
    let mut depth = 0usize;
    while at < tokens.len() {
        let clause_end = match tokens.get(at) {
            Some(Token::LParen) => {
                depth += 1;
                None
            }
            Some(Token::RParen) => {
                depth = depth.saturating_sub(1);
                None
            }
            _ if depth > 0 => None,
            _ => match tokens.keyword(at) {
                Keyword::STORED
                    if tokens.keyword(at + 1) == Keyword::AS && tokens.is_word(at + 2, "delta") =>
                {
                    is_delta = true;
                    Some(at + 2)
                }
                Keyword::USING if tokens.is_word(at + 1, "delta") => {
                    is_delta = true;
                    Some(at + 1)
                }
                Keyword::PARTITIONED if tokens.keyword(at + 1) == Keyword::BY => {
                    let (columns, last) = column_list(&tokens, at + 2)?;
                    partition_columns = columns;
                    Some(last)
                }
                Keyword::LOCATION => match tokens.get(at + 1) {
                    Some(Token::SingleQuotedString(path)) => {
                        location = Some(path.clone());
                        Some(at + 1)
                    }
                    _ => return Err("LOCATION takes a quoted path or URL".to_string()),
                },
                // The query of `CREATE TABLE ... AS query` begins: no more table clauses.
                Keyword::AS => break,
                _ => None,
            },
        };
        if let Some(last) = clause_end {
            tokens.replace(at, last, String::new());
            at = last;
        }
        at += 1;
    }
    if !is_delta {
        return Ok(None);
    }
    Ok(Some(DeltaCreate {
        statement: sql.to_string(),
        sql: tokens.text(),
        partition_columns,
        location,
    }))
}

/// `( name, name, ... )` starting at `at`: the names, and where the list ends.
fn column_list(tokens: &StatementTokens, mut at: usize) -> Result<(Vec<String>, usize), String> {
    const EXPECTED: &str = "PARTITIONED BY takes a list of the table's column names, such as \
                            PARTITIONED BY (day, region)";
    if tokens.get(at) != Some(&Token::LParen) {
        return Err(EXPECTED.to_string());
    }
    let mut columns = Vec::new();
    loop {
        at += 1;
        match tokens.get(at) {
            Some(Token::Word(word)) => columns.push(match word.quote_style {
                Some(_) => word.value.clone(),
                None => word.value.to_lowercase(),
            }),
            _ => return Err(EXPECTED.to_string()),
        }
        at += 1;
        match tokens.get(at) {
            Some(Token::Comma) => {}
            Some(Token::RParen) => return Ok((columns, at)),
            _ => return Err(EXPECTED.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> DeltaCreate {
        delta_create(sql).unwrap().unwrap()
    }

    #[test]
    fn the_delta_clauses_come_out_and_the_rest_stays_as_written() {
        let create = parsed(
            "CREATE TABLE events (id BIGINT, \"Day\" DATE) STORED AS DELTA \
             PARTITIONED BY (\"Day\") LOCATION 's3://b/events/'",
        );
        assert_eq!(
            create.sql.split_whitespace().collect::<Vec<_>>(),
            [
                "CREATE", "TABLE", "events", "(id", "BIGINT,", "\"Day\"", "DATE)"
            ]
        );
        assert_eq!(create.partition_columns, ["Day"]);
        assert_eq!(create.location.as_deref(), Some("s3://b/events/"));

        let ctas = parsed(
            "create or replace table t using delta partitioned by (Region, kind) \
             as select 'stored as delta' as kind, region from r",
        );
        assert_eq!(
            ctas.sql.split_whitespace().collect::<Vec<_>>().join(" "),
            "create or replace table t as select 'stored as delta' as kind, region from r"
        );
        assert_eq!(ctas.partition_columns, ["region", "kind"]);
        assert_eq!(ctas.location, None);
    }

    #[test]
    fn other_statements_are_left_to_the_parser() {
        for sql in [
            "SELECT * FROM delta",
            "CREATE EXTERNAL TABLE t STORED AS DELTA LOCATION '/x'",
            "CREATE TABLE t STORED AS PARQUET AS SELECT 1",
            "CREATE TABLE delta AS SELECT 1 AS delta",
            "CREATE VIEW v AS SELECT 'stored as delta'",
            "CREATE TABLE t AS SELECT * FROM x WHERE kind = 'USING DELTA'",
            "CREATE TABLE 'unterminated delta",
        ] {
            assert_eq!(delta_create(sql).unwrap(), None, "{sql}");
        }
    }

    #[test]
    fn malformed_delta_clauses_are_named() {
        let error =
            delta_create("CREATE TABLE t (a INT) STORED AS DELTA PARTITIONED BY a").unwrap_err();
        assert!(error.contains("PARTITIONED BY takes"), "{error}");
        let error =
            delta_create("CREATE TABLE t (a INT) STORED AS DELTA LOCATION here").unwrap_err();
        assert!(error.contains("LOCATION takes"), "{error}");
    }
}
