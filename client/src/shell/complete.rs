//! Tab completion: SQL keywords, meta-commands, and table and column names from the live
//! catalog.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::RwLock;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "OUTER",
    "CROSS",
    "ON",
    "USING",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "EXISTS",
    "BETWEEN",
    "LIKE",
    "ILIKE",
    "IS",
    "NULL",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "DISTINCT",
    "UNION",
    "ALL",
    "INTERSECT",
    "EXCEPT",
    "WITH",
    "ASC",
    "DESC",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "CAST",
    "EXTRACT",
    "INTERVAL",
    "DATE",
    "CREATE",
    "EXTERNAL",
    "TABLE",
    "VIEW",
    "STORED",
    "PARQUET",
    "CSV",
    "LOCATION",
    "DROP",
    "INSERT",
    "INTO",
    "VALUES",
    "EXPLAIN",
    "ANALYZE",
    "SHOW",
    "TABLES",
    "COLUMNS",
    "SET",
    "TRUE",
    "FALSE",
    "OVER",
    "PARTITION",
    "ROWS",
    "WINDOW",
    "IF",
];

const META_COMMANDS: &[&str] = &[
    "\\?",
    "\\q",
    "\\d",
    "\\dt",
    "\\i",
    "\\o",
    "\\format",
    "\\timing",
    "\\connect",
    "\\explain",
    "\\cluster",
    "\\set",
];

/// Names from the catalog, refreshed by the shell after statements that may change it.
#[derive(Debug, Default, Clone)]
pub(crate) struct CatalogNames(Arc<RwLock<(BTreeSet<String>, BTreeSet<String>)>>);

impl CatalogNames {
    pub(crate) fn replace(&self, tables: BTreeSet<String>, columns: BTreeSet<String>) {
        *self.0.write() = (tables, columns);
    }
}

/// The shell's line-editing helper.
pub(crate) struct ShellHelper {
    pub(crate) names: CatalogNames,
}

fn word_start(line: &str, pos: usize) -> usize {
    line[..pos]
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '\\' || *c == '.'))
        .map_or(0, |(i, c)| i + c.len_utf8())
}

/// Candidates for `prefix`: table names right after FROM/JOIN/INTO/TABLE, otherwise
/// tables, columns and keywords (keywords in the case the user typed).
pub(crate) fn candidates(names: &CatalogNames, before: &str, prefix: &str) -> Vec<String> {
    if prefix.starts_with('\\') {
        return META_COMMANDS
            .iter()
            .filter(|m| m.starts_with(prefix))
            .map(|m| m.to_string())
            .collect();
    }
    let previous = before
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let wants_table = matches!(
        previous.as_str(),
        "FROM" | "JOIN" | "INTO" | "TABLE" | "\\D" | "DESCRIBE" | "UPDATE"
    );
    let lower = prefix.to_ascii_lowercase();
    let (tables, columns) = names.0.read().clone();
    let mut found: Vec<String> = tables
        .iter()
        .filter(|t| t.starts_with(&lower))
        .cloned()
        .collect();
    if !wants_table {
        found.extend(columns.iter().filter(|c| c.starts_with(&lower)).cloned());
        let upper = prefix.chars().next().is_some_and(char::is_uppercase);
        found.extend(
            KEYWORDS
                .iter()
                .filter(|k| !prefix.is_empty() && k.starts_with(&prefix.to_ascii_uppercase()))
                .map(|k| {
                    if upper {
                        k.to_string()
                    } else {
                        k.to_ascii_lowercase()
                    }
                }),
        );
    }
    found.dedup();
    found
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = word_start(line, pos);
        let found = candidates(&self.names, &line[..start], &line[start..pos]);
        Ok((
            start,
            found
                .into_iter()
                .map(|word| Pair {
                    display: word.clone(),
                    replacement: word,
                })
                .collect(),
        ))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> CatalogNames {
        let names = CatalogNames::default();
        names.replace(
            ["nation".to_string(), "region".to_string()].into(),
            ["n_name".to_string(), "r_name".to_string()].into(),
        );
        names
    }

    #[test]
    fn tables_after_from() {
        assert_eq!(candidates(&names(), "SELECT * FROM ", "na"), vec!["nation"]);
        assert!(candidates(&names(), "SELECT * FROM ", "n_").is_empty());
    }

    #[test]
    fn columns_and_keywords_elsewhere() {
        assert_eq!(candidates(&names(), "SELECT ", "n_"), vec!["n_name"]);
        assert_eq!(candidates(&names(), "", "SEL"), vec!["SELECT"]);
        assert_eq!(candidates(&names(), "", "sel"), vec!["select"]);
        assert_eq!(candidates(&names(), "", "\\ti"), vec!["\\timing"]);
    }
}
