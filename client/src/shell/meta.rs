//! Backslash meta-commands.

use std::path::PathBuf;

use super::render::Format;
use super::{Flow, Session};

pub(crate) const HELP: &str = "\
Statements end with `;` and may span lines. Ctrl-C cancels a running query, Ctrl-D quits.

  \\?                  this help
  \\q                  quit
  \\d                  list tables and views
  \\dt                 list tables and views
  \\d NAME             describe a table: columns, types, nullability
  \\i FILE             run the statements and meta-commands in FILE
  \\o [FILE]           write results to FILE; without FILE, back to the terminal
  \\format [NAME]      table, csv, tsv, json, ndjson or markdown (without NAME: show it)
  \\timing [on|off]    show planning and execution time after each query (default on)
  \\connect URL        connect to another scheduler (same credentials)
  \\explain SQL        the query's plans, including its stages across executors
  \\cluster            executors: address, slots, running tasks, memory
  \\ui                 where the web UI shows queries, stages and executors
  \\set [NAME VALUE]   change a session option (without arguments: list them)
";

impl Session {
    /// Runs one meta-command line (starting with `\`).
    pub(crate) async fn meta(&mut self, line: &str) -> Result<Flow, String> {
        let line = line.trim().trim_end_matches(';').trim();
        let (command, argument) = match line.split_once(char::is_whitespace) {
            Some((command, rest)) => (command, rest.trim()),
            None => (line, ""),
        };
        match command {
            "\\q" | "\\quit" => return Ok(Flow::Quit),
            "\\?" | "\\h" | "\\help" => print!("{HELP}"),
            "\\d" | "\\dt" if argument.is_empty() => {
                self.execute(
                    "SELECT table_schema AS schema, table_name AS name, table_type AS type \
                     FROM information_schema.tables \
                     WHERE table_schema NOT IN ('information_schema', 'system') \
                     ORDER BY table_schema, table_name",
                )
                .await?;
            }
            "\\d" => {
                let name = argument.replace('\'', "''");
                self.execute(&format!(
                    "SELECT column_name AS column, data_type AS type, is_nullable AS nullable \
                     FROM information_schema.columns WHERE table_name = '{name}' \
                     ORDER BY ordinal_position"
                ))
                .await?;
            }
            "\\i" | "\\include" => {
                if argument.is_empty() {
                    return Err("\\i needs a file name".to_string());
                }
                let text = std::fs::read_to_string(argument)
                    .map_err(|e| format!("cannot read {argument}: {e}"))?;
                return Box::pin(self.run_script(&text)).await;
            }
            "\\o" | "\\out" => {
                let path = (!argument.is_empty()).then(|| PathBuf::from(argument));
                self.set_output(path)?;
            }
            "\\format" | "\\f" => {
                if argument.is_empty() {
                    println!("format: {}", self.settings.format);
                } else {
                    self.settings.format = argument.parse::<Format>()?;
                }
            }
            "\\timing" => {
                self.settings.timing = match argument.to_ascii_lowercase().as_str() {
                    "" => !self.settings.timing,
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("\\timing takes on or off, not `{other}`")),
                };
                let state = if self.settings.timing { "on" } else { "off" };
                println!("Timing is {state}.");
            }
            "\\connect" | "\\c" => {
                if argument.is_empty() {
                    return Err("\\connect needs a scheduler URL".to_string());
                }
                self.reconnect(argument).await?;
                println!("Connected to {}.", self.url);
            }
            "\\explain" => {
                if argument.is_empty() {
                    return Err("\\explain needs a query".to_string());
                }
                self.execute(&format!("EXPLAIN {argument}")).await?;
            }
            "\\ui" => println!("{}", self.ui_line()),
            "\\cluster" => {
                self.execute("SELECT * FROM system.executors ORDER BY executor_id")
                    .await?;
            }
            "\\set" => {
                if argument.is_empty() {
                    self.execute(
                        "SELECT name, value FROM information_schema.df_settings ORDER BY name",
                    )
                    .await?;
                } else {
                    let (name, value) = argument
                        .split_once(char::is_whitespace)
                        .ok_or_else(|| "\\set takes NAME VALUE".to_string())?;
                    let value = value.trim().trim_start_matches('=').trim();
                    let quoted = if value.starts_with('\'') {
                        value.to_string()
                    } else {
                        format!("'{}'", value.replace('\'', "''"))
                    };
                    self.execute(&format!("SET {name} = {quoted}")).await?;
                }
            }
            other => {
                return Err(format!("unknown command `{other}`; \\? lists the commands"));
            }
        }
        Ok(Flow::Continue)
    }
}
