//! Splitting SQL text into statements at top-level semicolons.

/// Splits `text` at semicolons that are outside strings, quoted identifiers and comments.
/// Blank statements are dropped; the remaining ones are trimmed.
pub fn split_statements(text: &str) -> Vec<String> {
    let (mut statements, rest) = split_terminated(text);
    push_statement(&mut statements, &rest);
    statements
}

/// Like [`split_statements`], for text typed line by line: the statements ended by a
/// semicolon, and the unfinished text after the last one (blank when there is none).
pub fn split_terminated(text: &str) -> (Vec<String>, String) {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                current.push(c);
                for inner in chars.by_ref() {
                    current.push(inner);
                    if inner == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for inner in chars.by_ref() {
                    if inner == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for inner in chars.by_ref() {
                    if previous == '*' && inner == '/' {
                        break;
                    }
                    previous = inner;
                }
                current.push(' ');
            }
            ';' => {
                push_statement(&mut statements, &current);
                current.clear();
            }
            _ => current.push(c),
        }
    }
    (statements, current)
}

fn push_statement(statements: &mut Vec<String>, text: &str) {
    let trimmed = text.trim();
    if !trimmed.is_empty() {
        statements.push(trimmed.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::{split_statements, split_terminated};

    #[test]
    fn unfinished_text_is_kept_apart() {
        let (done, rest) = split_terminated("select 1; select\n  2");
        assert_eq!(done, vec!["select 1"]);
        assert_eq!(rest.trim(), "select\n  2");
    }

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let text = "select 'a;b' as x; -- note; here\nselect \"c;d\" from t /* ; */;\n\n;";
        assert_eq!(
            split_statements(text),
            vec!["select 'a;b' as x", "select \"c;d\" from t"]
        );
    }

    #[test]
    fn keeps_a_final_statement_without_semicolon() {
        assert_eq!(split_statements("select 1"), vec!["select 1"]);
        assert!(split_statements("  -- only a comment\n").is_empty());
    }
}
