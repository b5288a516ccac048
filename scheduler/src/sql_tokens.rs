//! A statement's tokens, for the few clauses taken out of or rewritten in SQL before
//! DataFusion's parser sees it (`STORED AS DELTA` in `CREATE TABLE`, `VERSION AS OF`).
//! Positions count significant tokens only: whitespace and comments are skipped, and
//! kept as written in the text that comes back.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// Whether `sql` holds `word` in any case: a cheap test, without allocating, before
/// tokenizing a statement that could not hold the clause looked for.
pub(crate) fn mentions(sql: &str, word: &str) -> bool {
    sql.as_bytes()
        .windows(word.len())
        .any(|window| window.eq_ignore_ascii_case(word.as_bytes()))
}

pub(crate) struct StatementTokens {
    tokens: Vec<Token>,
    /// Where each significant token is in `tokens`.
    significant: Vec<usize>,
    /// Significant positions `first..=last` to be written as the text.
    edits: Vec<(usize, usize, String)>,
}

impl StatementTokens {
    /// `sql`'s tokens, or `None` when the tokenizer refuses it (the parser will say why).
    pub(crate) fn new(sql: &str) -> Option<Self> {
        let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
        let significant = (0..tokens.len())
            .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
            .collect();
        Some(Self {
            tokens,
            significant,
            edits: Vec::new(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.significant.len()
    }

    pub(crate) fn get(&self, at: usize) -> Option<&Token> {
        self.significant.get(at).map(|&i| &self.tokens[i])
    }

    /// The keyword at `at` when it is an unquoted word, else `NoKeyword`.
    pub(crate) fn keyword(&self, at: usize) -> Keyword {
        match self.get(at) {
            Some(Token::Word(word)) if word.quote_style.is_none() => word.keyword,
            _ => Keyword::NoKeyword,
        }
    }

    /// Whether `at` is the unquoted word `text`, in any case.
    pub(crate) fn is_word(&self, at: usize, text: &str) -> bool {
        matches!(
            self.get(at),
            Some(Token::Word(word))
                if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(text)
        )
    }

    /// The tokens `first..=last` as written, without the whitespace around them.
    pub(crate) fn text_of(&self, first: usize, last: usize) -> String {
        self.tokens[self.significant[first]..=self.significant[last]]
            .iter()
            .map(Token::to_string)
            .collect()
    }

    /// Writes `text` in place of the tokens `first..=last` (and the whitespace between).
    pub(crate) fn replace(&mut self, first: usize, last: usize, text: String) {
        self.edits.push((first, last, text));
    }

    /// The statement with its edits.
    pub(crate) fn text(&self) -> String {
        let mut edits: Vec<(usize, usize, &str)> = self
            .edits
            .iter()
            .map(|(first, last, text)| {
                (
                    self.significant[*first],
                    self.significant[*last],
                    text.as_str(),
                )
            })
            .collect();
        edits.sort_by_key(|edit| edit.0);
        let mut text = String::new();
        let mut next = 0;
        for (first, last, replacement) in edits {
            if first < next {
                continue;
            }
            for token in &self.tokens[next..first] {
                text.push_str(&token.to_string());
            }
            text.push_str(replacement);
            next = last + 1;
        }
        for token in &self.tokens[next..] {
            text.push_str(&token.to_string());
        }
        text
    }
}
