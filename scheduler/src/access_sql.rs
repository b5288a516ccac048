//! The access-control statements DataFusion does not parse: `CREATE ROLE`, `DROP ROLE`,
//! `GRANT` and `REVOKE` of table, schema, role and location privileges. Recognised from
//! their first words; every other statement is left to DataFusion.
//!
//! ```text
//! CREATE ROLE [IF NOT EXISTS] r          DROP ROLE [IF EXISTS] r
//! GRANT {SELECT | INSERT | ALL [PRIVILEGES]} [, ...] ON {[TABLE] t | SCHEMA s} TO grantee [, ...]
//! REVOKE ... FROM grantee [, ...]
//! GRANT ROLE r TO user [, ...]           REVOKE ROLE r FROM user [, ...]
//! GRANT LOCATION 'prefix' TO grantee     REVOKE LOCATION 'prefix' FROM grantee
//! ALTER {ROLE r | USER u} SET limit {= | TO} n       ALTER {ROLE r | USER u} RESET limit
//! grantee: [USER] name | ROLE name | PUBLIC
//! limit: max_running_statements | max_queued_statements | statement_timeout_secs
//!        | max_query_memory_bytes
//! ```

use datafusion::common::TableReference;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};

/// A privilege on a table (or on every table of a schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Privilege {
    /// Reading rows.
    Select,
    /// Changing rows: `INSERT`, and `DELETE`/`UPDATE` where a table supports them.
    Insert,
}

impl Privilege {
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "SELECT" => Some(Privilege::Select),
            "INSERT" => Some(Privilege::Insert),
            _ => None,
        }
    }
}

/// Who a privilege is granted to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grantee {
    User(String),
    Role(String),
    /// Every user.
    Public,
}

impl std::fmt::Display for Grantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grantee::User(name) => write!(f, "user {name}"),
            Grantee::Role(name) => write!(f, "role {name}"),
            Grantee::Public => write!(f, "PUBLIC"),
        }
    }
}

/// What a table privilege is granted on, as written (resolved against the session's
/// default catalog and schema when carried out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantTarget {
    Table(TableReference),
    /// `schema` or `catalog.schema`.
    Schema(Vec<String>),
}

/// A limit on what a user's statements may take, set for a user or a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    MaxRunningStatements,
    MaxQueuedStatements,
    StatementTimeoutSecs,
    MaxQueryMemoryBytes,
}

impl Limit {
    pub const ALL: [Limit; 4] = [
        Limit::MaxRunningStatements,
        Limit::MaxQueuedStatements,
        Limit::StatementTimeoutSecs,
        Limit::MaxQueryMemoryBytes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxRunningStatements => "max_running_statements",
            Limit::MaxQueuedStatements => "max_queued_statements",
            Limit::StatementTimeoutSecs => "statement_timeout_secs",
            Limit::MaxQueryMemoryBytes => "max_query_memory_bytes",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Limit::ALL
            .into_iter()
            .find(|limit| limit.as_str().eq_ignore_ascii_case(text))
    }
}

/// One parsed access-control statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessStatement {
    CreateRole {
        name: String,
        if_not_exists: bool,
    },
    DropRole {
        name: String,
        if_exists: bool,
    },
    /// `GRANT` (`revoke` false) or `REVOKE` of table privileges.
    Privileges {
        revoke: bool,
        privileges: Vec<Privilege>,
        on: GrantTarget,
        grantees: Vec<Grantee>,
    },
    /// `GRANT ROLE` or `REVOKE ROLE`.
    Membership {
        revoke: bool,
        role: String,
        users: Vec<String>,
    },
    /// `GRANT LOCATION` or `REVOKE LOCATION`: creating tables on, and writing to, the
    /// locations under `prefix`.
    Location {
        revoke: bool,
        prefix: String,
        grantees: Vec<Grantee>,
    },
    /// `ALTER ROLE|USER ... SET limit = value` (`value` 0: no limit), or `RESET limit`
    /// (`None`: the server's default again).
    SetLimit {
        of: Grantee,
        limit: Limit,
        value: Option<u64>,
    },
}

/// `sql` as an access-control statement: `Ok(None)` when it is not one (DataFusion's to
/// plan), an error naming what is wrong when it is one, badly written.
pub fn parse(sql: &str) -> Result<Option<AccessStatement>, String> {
    let Some(first_words) = leading_words(sql, 2) else {
        return Ok(None);
    };
    let is_access = match first_words.as_slice() {
        [first, second] if first == "CREATE" || first == "DROP" => second == "ROLE",
        [first, second] if first == "ALTER" => second == "ROLE" || second == "USER",
        [first, ..] => first == "GRANT" || first == "REVOKE",
        _ => false,
    };
    if !is_access {
        return Ok(None);
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|token| !matches!(token, Token::Whitespace(_) | Token::EOF))
        .collect();
    let mut parser = Parser { tokens, at: 0 };
    let statement = parser.statement()?;
    parser.end()?;
    Ok(Some(statement))
}

/// The first `count` words of `sql` in upper case, skipping comments; `None` when it does
/// not tokenize (DataFusion then reports the error).
fn leading_words(sql: &str, count: usize) -> Option<Vec<String>> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    Some(
        tokens
            .into_iter()
            .filter(|token| !matches!(token, Token::Whitespace(_)))
            .take(count)
            .filter_map(|token| match token {
                Token::Word(Word {
                    value,
                    quote_style: None,
                    ..
                }) => Some(value.to_ascii_uppercase()),
                _ => None,
            })
            .collect(),
    )
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn statement(&mut self) -> Result<AccessStatement, String> {
        match self.keyword()?.as_str() {
            "CREATE" => {
                self.expect("ROLE")?;
                let if_not_exists = self.accept_all(&["IF", "NOT", "EXISTS"]);
                Ok(AccessStatement::CreateRole {
                    name: self.identifier()?,
                    if_not_exists,
                })
            }
            "DROP" => {
                self.expect("ROLE")?;
                let if_exists = self.accept_all(&["IF", "EXISTS"]);
                Ok(AccessStatement::DropRole {
                    name: self.identifier()?,
                    if_exists,
                })
            }
            "ALTER" => self.alter(),
            "GRANT" => self.grant_or_revoke(false),
            "REVOKE" => self.grant_or_revoke(true),
            other => Err(format!("unexpected '{other}'")),
        }
    }

    fn alter(&mut self) -> Result<AccessStatement, String> {
        let of = match self.keyword()?.as_str() {
            "ROLE" => Grantee::Role(self.identifier()?),
            _ => Grantee::User(self.identifier()?),
        };
        let set = match self.keyword()?.as_str() {
            "SET" => true,
            "RESET" => false,
            other => return Err(format!("expected SET or RESET, found '{other}'")),
        };
        let name = self.identifier()?;
        let limit = Limit::parse(&name).ok_or_else(|| {
            let known: Vec<&str> = Limit::ALL.iter().map(|limit| limit.as_str()).collect();
            format!("unknown limit '{name}': Quiver sets {}", known.join(", "))
        })?;
        let value = match set {
            false => None,
            true => {
                if !matches!(self.peek(), Some(Token::Eq)) {
                    self.expect("TO")?;
                } else {
                    self.at += 1;
                }
                match self.next() {
                    Some(Token::Number(text, _)) => Some(text.parse::<u64>().map_err(|_| {
                        format!("{name} takes a whole number of at least 0, not {text}")
                    })?),
                    Some(other) => return Err(format!("{name} takes a number, not '{other}'")),
                    None => return Err(format!("{name} takes a number")),
                }
            }
        };
        Ok(AccessStatement::SetLimit { of, limit, value })
    }

    fn grant_or_revoke(&mut self, revoke: bool) -> Result<AccessStatement, String> {
        let to = if revoke { "FROM" } else { "TO" };
        if self.accept("ROLE") {
            let role = self.identifier()?;
            self.expect(to)?;
            let users = self.list(|parser| {
                parser.accept("USER");
                parser.identifier()
            })?;
            return Ok(AccessStatement::Membership {
                revoke,
                role,
                users,
            });
        }
        if self.accept("LOCATION") {
            let prefix = self.string()?;
            self.expect(to)?;
            let grantees = self.list(Parser::grantee)?;
            return Ok(AccessStatement::Location {
                revoke,
                prefix,
                grantees,
            });
        }
        let privileges = self.privileges()?;
        self.expect("ON")?;
        let on = if self.accept("SCHEMA") {
            GrantTarget::Schema(self.dotted_name()?)
        } else {
            self.accept("TABLE");
            let parts = self.dotted_name()?;
            GrantTarget::Table(match parts.as_slice() {
                [table] => TableReference::bare(table.as_str()),
                [schema, table] => TableReference::partial(schema.as_str(), table.as_str()),
                [catalog, schema, table] => {
                    TableReference::full(catalog.as_str(), schema.as_str(), table.as_str())
                }
                _ => return Err(format!("'{}' is not a table name", parts.join("."))),
            })
        };
        if let GrantTarget::Schema(parts) = &on
            && parts.len() > 2
        {
            return Err(format!("'{}' is not a schema name", parts.join(".")));
        }
        self.expect(to)?;
        let grantees = self.list(Parser::grantee)?;
        Ok(AccessStatement::Privileges {
            revoke,
            privileges,
            on,
            grantees,
        })
    }

    fn privileges(&mut self) -> Result<Vec<Privilege>, String> {
        if self.accept("ALL") {
            self.accept("PRIVILEGES");
            return Ok(vec![Privilege::Select, Privilege::Insert]);
        }
        self.list(|parser| {
            let word = parser.keyword()?;
            Privilege::parse(&word).ok_or_else(|| {
                format!("unknown privilege '{word}': Quiver grants SELECT, INSERT or ALL")
            })
        })
    }

    fn grantee(&mut self) -> Result<Grantee, String> {
        if self.accept("ROLE") {
            return Ok(Grantee::Role(self.identifier()?));
        }
        if self.accept("USER") {
            return Ok(Grantee::User(self.identifier()?));
        }
        if self.accept("PUBLIC") {
            return Ok(Grantee::Public);
        }
        Ok(Grantee::User(self.identifier()?))
    }

    fn list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let mut items = vec![item(self)?];
        while matches!(self.peek(), Some(Token::Comma)) {
            self.at += 1;
            items.push(item(self)?);
        }
        Ok(items)
    }

    fn dotted_name(&mut self) -> Result<Vec<String>, String> {
        let mut parts = vec![self.identifier()?];
        while matches!(self.peek(), Some(Token::Period)) {
            self.at += 1;
            parts.push(self.identifier()?);
        }
        Ok(parts)
    }

    /// A name: unquoted ones fold to lower case, as DataFusion folds them.
    fn identifier(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(word)) => Ok(match word.quote_style {
                Some(_) => word.value,
                None => word.value.to_ascii_lowercase(),
            }),
            Some(other) => Err(format!("expected a name, found '{other}'")),
            None => Err("expected a name, found the end of the statement".to_string()),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::SingleQuotedString(text)) => Ok(text),
            Some(other) => Err(format!("expected a quoted location, found '{other}'")),
            None => Err("expected a quoted location".to_string()),
        }
    }

    /// The next token, an unquoted word, in upper case.
    fn keyword(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(Word {
                value,
                quote_style: None,
                ..
            })) => Ok(value.to_ascii_uppercase()),
            Some(other) => Err(format!("unexpected '{other}'")),
            None => Err("the statement ends too early".to_string()),
        }
    }

    fn accept(&mut self, keyword: &str) -> bool {
        let matches = matches!(self.peek(), Some(Token::Word(Word { value, quote_style: None, .. }))
            if value.eq_ignore_ascii_case(keyword));
        if matches {
            self.at += 1;
        }
        matches
    }

    fn accept_all(&mut self, keywords: &[&str]) -> bool {
        let start = self.at;
        if keywords.iter().all(|keyword| self.accept(keyword)) {
            return true;
        }
        self.at = start;
        false
    }

    fn expect(&mut self, keyword: &str) -> Result<(), String> {
        if self.accept(keyword) {
            return Ok(());
        }
        match self.peek() {
            Some(found) => Err(format!("expected {keyword}, found '{found}'")),
            None => Err(format!(
                "expected {keyword} before the end of the statement"
            )),
        }
    }

    fn end(&mut self) -> Result<(), String> {
        while matches!(self.peek(), Some(Token::SemiColon)) {
            self.at += 1;
        }
        match self.peek() {
            None => Ok(()),
            Some(extra) => Err(format!("unexpected '{extra}' after the statement")),
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> AccessStatement {
        parse(sql).unwrap().unwrap()
    }

    #[test]
    fn other_statements_are_left_to_datafusion() {
        assert_eq!(parse("SELECT 1").unwrap(), None);
        assert_eq!(parse("CREATE TABLE t (a INT)").unwrap(), None);
        assert_eq!(parse("DROP TABLE role").unwrap(), None);
        assert_eq!(parse("'unterminated").unwrap(), None);
    }

    #[test]
    fn table_and_schema_grants_with_every_grantee_form() {
        assert_eq!(
            parsed("GRANT SELECT, insert ON TABLE Sales.Orders TO bob, ROLE analysts, PUBLIC;"),
            AccessStatement::Privileges {
                revoke: false,
                privileges: vec![Privilege::Select, Privilege::Insert],
                on: GrantTarget::Table(TableReference::partial("sales", "orders")),
                grantees: vec![
                    Grantee::User("bob".into()),
                    Grantee::Role("analysts".into()),
                    Grantee::Public
                ],
            }
        );
        assert_eq!(
            parsed("revoke all privileges on schema public from user \"Carol\""),
            AccessStatement::Privileges {
                revoke: true,
                privileges: vec![Privilege::Select, Privilege::Insert],
                on: GrantTarget::Schema(vec!["public".into()]),
                grantees: vec![Grantee::User("Carol".into())],
            }
        );
    }

    #[test]
    fn roles_memberships_and_locations() {
        assert_eq!(
            parsed("CREATE ROLE IF NOT EXISTS analysts"),
            AccessStatement::CreateRole {
                name: "analysts".into(),
                if_not_exists: true
            }
        );
        assert_eq!(
            parsed("GRANT ROLE analysts TO bob, carol"),
            AccessStatement::Membership {
                revoke: false,
                role: "analysts".into(),
                users: vec!["bob".into(), "carol".into()],
            }
        );
        assert_eq!(
            parsed("REVOKE LOCATION 's3://lake/team/' FROM ROLE analysts"),
            AccessStatement::Location {
                revoke: true,
                prefix: "s3://lake/team/".into(),
                grantees: vec![Grantee::Role("analysts".into())],
            }
        );
    }

    #[test]
    fn limits_are_set_and_reset_for_roles_and_users() {
        assert_eq!(
            parsed("ALTER ROLE analysts SET max_running_statements = 2"),
            AccessStatement::SetLimit {
                of: Grantee::Role("analysts".into()),
                limit: Limit::MaxRunningStatements,
                value: Some(2),
            }
        );
        assert_eq!(
            parsed("alter user bob reset STATEMENT_TIMEOUT_SECS"),
            AccessStatement::SetLimit {
                of: Grantee::User("bob".into()),
                limit: Limit::StatementTimeoutSecs,
                value: None,
            }
        );
        assert!(
            parse("ALTER ROLE r SET max_cpus = 2")
                .unwrap_err()
                .contains("max_running")
        );
        assert!(parse("ALTER ROLE r SET statement_timeout_secs = -1").is_err());
        assert_eq!(parse("ALTER TABLE t ADD COLUMN c INT").unwrap(), None);
    }

    #[test]
    fn mistakes_are_named() {
        assert!(
            parse("GRANT DELETE ON t TO bob")
                .unwrap_err()
                .contains("DELETE")
        );
        assert!(parse("GRANT SELECT ON t").unwrap_err().contains("TO"));
        assert!(
            parse("GRANT SELECT ON t TO bob extra")
                .unwrap_err()
                .contains("extra")
        );
        assert!(parse("GRANT LOCATION /etc TO bob").is_err());
    }
}
