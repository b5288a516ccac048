//! Time travel as Databricks spells it: `FROM t VERSION AS OF 3` and `FROM t TIMESTAMP AS
//! OF '2026-11-30T12:00:00Z'`. The SQL dialect does not parse these, so they become
//! `delta_at('t', 'version', '3') AS t` before parsing. The tables named inside Delta's
//! table functions count as read, so privileges and the audit log see them.

use std::ops::ControlFlow;

use datafusion::common::TableReference;
use datafusion::sql::parser::{CopyToSource, Statement as ParsedStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, TableFactor, Value, Visit, Visitor,
};
use datafusion::sql::sqlparser::keywords::{Keyword, RESERVED_FOR_TABLE_ALIAS};
use datafusion::sql::sqlparser::tokenizer::Token;
use quiver_delta::{DELTA_AT, DELTA_HISTORY};

use crate::sql_tokens::{StatementTokens, mentions};

/// `sql` with each `name VERSION AS OF n` / `name TIMESTAMP AS OF 'time'` written as a
/// `delta_at` call; `None` when it has none.
pub(crate) fn rewrite_time_travel(sql: &str) -> Result<Option<String>, String> {
    if !mentions(sql, "of") || !(mentions(sql, "version") || mentions(sql, "timestamp")) {
        return Ok(None);
    }
    let Some(mut tokens) = StatementTokens::new(sql) else {
        return Ok(None);
    };
    let mut changed = false;
    for at in 1..tokens.len() {
        let kind = match tokens.keyword(at) {
            Keyword::VERSION => "version",
            Keyword::TIMESTAMP => "timestamp",
            _ => continue,
        };
        if tokens.keyword(at + 1) != Keyword::AS || tokens.keyword(at + 2) != Keyword::OF {
            continue;
        }
        let value = match (kind, tokens.get(at + 3)) {
            ("version", Some(Token::Number(number, _))) if number.parse::<u64>().is_ok() => {
                number.clone()
            }
            ("timestamp", Some(Token::SingleQuotedString(time))) => time.clone(),
            ("version", _) => {
                return Err("VERSION AS OF takes a version number, such as VERSION AS OF 3".into());
            }
            _ => {
                return Err(
                    "TIMESTAMP AS OF takes a quoted time, such as TIMESTAMP AS OF \
                            '2026-11-30T12:00:00Z'"
                        .into(),
                );
            }
        };
        let Some(first) = name_start(&tokens, at - 1) else {
            return Err(format!(
                "{} AS OF follows the name of a Delta table",
                kind.to_uppercase()
            ));
        };
        let name = tokens.text_of(first, at - 1);
        // Columns keep the table's name as their qualifier unless the query gives an alias.
        let aliased = match tokens.get(at + 4) {
            Some(Token::Word(word)) => {
                word.quote_style.is_some() || !RESERVED_FOR_TABLE_ALIAS.contains(&word.keyword)
            }
            _ => false,
        };
        let alias = match aliased {
            true => String::new(),
            false => format!(" AS {}", tokens.text_of(at - 1, at - 1)),
        };
        tokens.replace(
            first,
            at + 3,
            format!(
                "{DELTA_AT}({}, '{kind}', {}){alias}",
                quoted(&name),
                quoted(&value)
            ),
        );
        changed = true;
    }
    Ok(changed.then(|| tokens.text()))
}

/// Where the dotted name ending at `last` begins.
fn name_start(tokens: &StatementTokens, last: usize) -> Option<usize> {
    let is_word = |at: usize| matches!(tokens.get(at), Some(Token::Word(_)));
    if !is_word(last) {
        return None;
    }
    let mut first = last;
    while first >= 2 && tokens.get(first - 1) == Some(&Token::Period) && is_word(first - 2) {
        first -= 2;
    }
    Some(first)
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The tables `statement` names as the first argument of `delta_at` or `delta_history`.
pub(crate) fn tables_in_delta_functions(statement: &ParsedStatement) -> Vec<TableReference> {
    let mut found = FunctionTables(Vec::new());
    match statement {
        ParsedStatement::Statement(inner) => {
            let _ = inner.visit(&mut found);
        }
        ParsedStatement::Explain(explain) => return tables_in_delta_functions(&explain.statement),
        ParsedStatement::CopyTo(copy) => {
            if let CopyToSource::Query(query) = &copy.source {
                let _ = query.visit(&mut found);
            }
        }
        _ => {}
    }
    found.0
}

struct FunctionTables(Vec<TableReference>);

impl Visitor for FunctionTables {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = factor
            && let [part] = name.0.as_slice()
            && let Some(function) = part.as_ident()
            && [DELTA_AT, DELTA_HISTORY].contains(&function.value.to_lowercase().as_str())
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(value)))) =
                args.args.first()
            && let Value::SingleQuotedString(table) = &value.value
        {
            self.0.push(TableReference::from(table.as_str()));
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        rewrite_time_travel(sql).unwrap().unwrap()
    }

    #[test]
    fn version_and_timestamp_as_of_become_delta_at_calls() {
        assert_eq!(
            rewritten("SELECT t.id FROM t VERSION AS OF 3 WHERE id > 1"),
            "SELECT t.id FROM delta_at('t', 'version', '3') AS t WHERE id > 1"
        );
        assert_eq!(
            rewritten(
                "select * from s.\"Events\" timestamp as of '2026-11-30 12:00' e \
                 join s.k version as of 0 on e.k = k.k"
            ),
            "select * from delta_at('s.\"Events\"', 'timestamp', '2026-11-30 12:00') e \
             join delta_at('s.k', 'version', '0') AS k on e.k = k.k"
        );
        assert_eq!(
            rewritten("SELECT * FROM t VERSION AS OF 1 AS old"),
            "SELECT * FROM delta_at('t', 'version', '1') AS old"
        );
    }

    #[test]
    fn other_statements_stay_as_they_are() {
        for sql in [
            "SELECT version FROM t",
            "SELECT 'VERSION AS OF 3' FROM t",
            "SELECT CAST(x AS TIMESTAMP) AS ts FROM t",
        ] {
            assert_eq!(rewrite_time_travel(sql).unwrap(), None, "{sql}");
        }
    }

    #[test]
    fn malformed_time_travel_is_named() {
        for (sql, expected) in [
            (
                "SELECT * FROM t VERSION AS OF 'x'",
                "takes a version number",
            ),
            ("SELECT * FROM t VERSION AS OF -1", "takes a version number"),
            ("SELECT * FROM t TIMESTAMP AS OF 3", "takes a quoted time"),
            (
                "SELECT * FROM (SELECT 1) VERSION AS OF 3",
                "follows the name of a Delta table",
            ),
        ] {
            let error = rewrite_time_travel(sql).unwrap_err();
            assert!(error.contains(expected), "{sql}: {error}");
        }
    }
}
