//! The `quiver` SQL shell: runs statements and meta-commands, interactively (line editing,
//! history, completion, live progress, Ctrl-C cancels the query) or from scripts.

mod complete;
mod meta;
mod progress;
pub(crate) mod render;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use quiver::script::{split_statements, split_terminated};
use quiver::{ClientError, ConnectOptions, QueryOutput, QueryProgress, QuiverClient, RunningQuery};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};

use self::complete::{CatalogNames, ShellHelper};
use self::progress::{ProgressLine, human_duration};
use self::render::{Format, Rendered};

/// Where results go.
enum Output {
    Stdout,
    File { file: File, path: PathBuf },
}

/// What the shell does after a line.
pub(crate) enum Flow {
    Continue,
    Quit,
}

/// Shell settings that `\format`, `\timing` and `\o` change.
pub(crate) struct Settings {
    pub(crate) format: Format,
    pub(crate) timing: bool,
    pub(crate) progress: bool,
}

/// One connection and its output settings.
pub(crate) struct Session {
    client: QuiverClient,
    url: String,
    connect_options: ConnectOptions,
    settings: Settings,
    output: Output,
    names: CatalogNames,
    interactive: bool,
    /// Ctrl-C while a query runs; set up by the interactive shell.
    interrupts: Option<Interrupts>,
    /// The embedded cluster's web UI, when this shell started one.
    ui_url: Option<String>,
}

impl Session {
    pub(crate) fn new(
        client: QuiverClient,
        connect_options: ConnectOptions,
        settings: Settings,
        interactive: bool,
    ) -> Self {
        Self {
            url: client.scheduler_url().to_string(),
            client,
            connect_options,
            settings,
            output: Output::Stdout,
            names: CatalogNames::default(),
            interactive,
            interrupts: None,
            ui_url: None,
        }
    }

    pub(crate) fn set_ui_url(&mut self, url: Option<String>) {
        self.ui_url = url;
    }

    /// Where to watch queries run, or why there is no such place.
    pub(crate) fn ui_line(&self) -> String {
        match &self.ui_url {
            Some(url) => format!("Web UI: {url}"),
            None => "This shell serves no web UI: a scheduler serves one at its --http address."
                .to_string(),
        }
    }

    pub(crate) fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// Sends results to `path` (created or truncated); `None` goes back to stdout.
    pub(crate) fn set_output(&mut self, path: Option<PathBuf>) -> Result<(), String> {
        self.output = match path {
            None => Output::Stdout,
            Some(path) => {
                let file = File::create(&path)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Output::File { file, path }
            }
        };
        Ok(())
    }

    /// Runs SQL text and meta-commands (one per line, starting with `\`), in order;
    /// stops at the first error.
    pub(crate) async fn run_script(&mut self, text: &str) -> Result<Flow, String> {
        let mut sql = String::new();
        for line in text.lines() {
            if sql.trim().is_empty() && line.trim_start().starts_with('\\') {
                if let Flow::Quit = self.meta(line.trim()).await? {
                    return Ok(Flow::Quit);
                }
                continue;
            }
            sql.push_str(line);
            sql.push('\n');
            let (statements, rest) = split_terminated(&sql);
            for statement in statements {
                self.execute(&statement).await?;
            }
            sql = rest;
        }
        // A last statement without its `;`.
        for statement in split_statements(&sql) {
            self.execute(&statement).await?;
        }
        Ok(Flow::Continue)
    }

    /// Runs one SQL statement: live progress on a terminal, Ctrl-C cancels it when
    /// interactive, then the result in the chosen format.
    pub(crate) async fn execute(&mut self, sql: &str) -> Result<(), String> {
        if statement_is_blank(sql) {
            return Ok(());
        }
        let started = Instant::now();
        let failed = |e: ClientError| describe_error(sql, &e);
        // Ctrl-C before this query is forgotten; one during it (even between two polls)
        // cancels it.
        let mut interrupts = self.interrupts.take();
        if let Some(interrupts) = interrupts.as_mut() {
            interrupts.forget_pending();
        }
        let outcome = self.run_query(sql, started, interrupts.as_mut()).await;
        self.interrupts = interrupts;
        let (running, report) = outcome?;
        let fetch_started = Instant::now();
        let output = self.client.fetch(&running).await.map_err(failed)?;
        let fetch_time = fetch_started.elapsed();
        self.print(&output)?;
        if self.settings.timing {
            let planning = Duration::from_micros(report.planning_us);
            let execution =
                Duration::from_micros(report.elapsed_us.saturating_sub(report.planning_us));
            eprintln!(
                "Time: {} (planning {}, execution {}, fetch {})",
                human_duration(started.elapsed()),
                human_duration(planning),
                human_duration(execution),
                human_duration(fetch_time),
            );
        }
        if changes_catalog(sql) {
            self.refresh_names().await;
        }
        Ok(())
    }

    /// Submits `sql` and polls it to the end, drawing progress; returns the finished
    /// query and its last report.
    async fn run_query(
        &self,
        sql: &str,
        started: Instant,
        mut interrupts: Option<&mut Interrupts>,
    ) -> Result<(RunningQuery, QueryProgress), String> {
        let failed = |e: ClientError| describe_error(sql, &e);
        let mut running = self.client.submit(sql).await.map_err(failed)?;
        let mut progress = ProgressLine::new(self.settings.progress && self.progress_allowed());
        while !running.is_done() {
            if let Some(report) = running.progress() {
                progress.update(&report, started.elapsed());
            }
            if let Some(interrupts) = interrupts.as_deref_mut() {
                tokio::select! {
                    next = self.client.poll(&running) => running = next.map_err(failed)?,
                    _ = interrupts.next() => {
                        progress.clear();
                        let _ = self.client.cancel(&running).await;
                        return Err("query cancelled".to_string());
                    }
                }
            } else {
                running = self.client.poll(&running).await.map_err(failed)?;
            }
        }
        progress.clear();
        let report = running.progress().unwrap_or_default();
        Ok((running, report))
    }

    /// Draw progress only where a person watches: both stdout and stderr a terminal.
    fn progress_allowed(&self) -> bool {
        matches!(self.output, Output::Stdout)
            && std::io::stdout().is_terminal()
            && std::io::stderr().is_terminal()
    }

    fn print(&mut self, output: &QueryOutput) -> Result<(), String> {
        if output.schema.fields().is_empty() {
            return Ok(());
        }
        let rendered = Rendered::new(&output.schema, &output.batches)?;
        match &mut self.output {
            Output::File { file, path } => {
                let text = rendered.write(self.settings.format, None);
                file.write_all(text.as_bytes())
                    .map_err(|e| format!("writing {}: {e}", path.display()))
            }
            Output::Stdout => {
                let terminal = std::io::stdout().is_terminal();
                let size = terminal_size::terminal_size();
                let width = size
                    .filter(|_| terminal)
                    .map(|(w, _)| usize::from(w.0))
                    .filter(|w| *w >= 20);
                let text = rendered.write(self.settings.format, width);
                let height = size.map_or(usize::MAX, |(_, h)| usize::from(h.0));
                if self.interactive
                    && terminal
                    && text.lines().count() + 2 > height
                    && let Some(pager) = pager_command()
                {
                    return page(&pager, &text);
                }
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())
                    .and_then(|_| out.flush())
                    .map_err(|e| format!("writing results: {e}"))
            }
        }
    }

    /// Reloads table and column names for completion.
    pub(crate) async fn refresh_names(&self) {
        let sql = "SELECT table_name, column_name FROM information_schema.columns \
                   WHERE table_schema <> 'information_schema'";
        let Ok(output) = self.client.query(sql).await else {
            return;
        };
        let Ok(rendered) = Rendered::new(&output.schema, &output.batches) else {
            return;
        };
        let mut tables = BTreeSet::new();
        let mut columns = BTreeSet::new();
        for row in rendered.rows {
            if let [Some(table), Some(column)] = row.as_slice() {
                tables.insert(table.clone());
                columns.insert(column.clone());
            }
        }
        self.names.replace(tables, columns);
    }

    /// Reads lines from the terminal until `\q` or Ctrl-D.
    pub(crate) async fn interactive(&mut self) -> Result<(), String> {
        let config = Config::builder()
            .auto_add_history(false)
            .completion_type(CompletionType::List)
            .max_history_size(10_000)
            .map_err(|e| e.to_string())?
            .build();
        let mut editor: Editor<ShellHelper, FileHistory> =
            Editor::with_config(config).map_err(|e| format!("cannot open the terminal: {e}"))?;
        editor.set_helper(Some(ShellHelper {
            names: self.names.clone(),
        }));
        // After the editor: its own SIGINT handler is installed when it is created, and
        // ours must come later to see Ctrl-C while a query runs.
        self.interrupts = Some(Interrupts::listen()?);
        let history = history_path();
        if let Some(path) = &history {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = editor.load_history(path);
        }
        self.refresh_names().await;
        println!(
            "Connected to {} — type \\? for help, \\q or Ctrl-D to quit.",
            self.url
        );
        if self.ui_url.is_some() {
            println!("{}", self.ui_line());
        }
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.trim().is_empty() {
                "quiver> "
            } else {
                "     -> "
            };
            let line = match editor.readline(prompt) {
                Ok(line) => line,
                Err(ReadlineError::Interrupted) => {
                    // Ctrl-C at the prompt drops the statement being typed.
                    buffer.clear();
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(error) => return Err(format!("reading input: {error}")),
            };
            if buffer.trim().is_empty() && line.trim_start().starts_with('\\') {
                remember(&mut editor, history.as_ref(), line.trim());
                match self.meta(line.trim()).await {
                    Ok(Flow::Quit) => break,
                    Ok(Flow::Continue) => {}
                    Err(message) => eprintln!("Error: {message}"),
                }
                continue;
            }
            buffer.push_str(&line);
            buffer.push('\n');
            let (statements, rest) = split_terminated(&buffer);
            if statements.is_empty() && !buffer.trim_end().ends_with(';') {
                continue;
            }
            remember(&mut editor, history.as_ref(), buffer.trim());
            buffer = rest;
            for statement in statements {
                if let Err(message) = self.execute(&statement).await {
                    eprintln!("Error: {message}");
                    break;
                }
            }
        }
        Ok(())
    }

    /// Connects to another scheduler, keeping the credentials.
    pub(crate) async fn reconnect(&mut self, url: &str) -> Result<(), String> {
        let client = QuiverClient::connect_with(url, self.connect_options.clone())
            .await
            .map_err(|e| e.to_string())?;
        self.url = client.scheduler_url().to_string();
        self.client = client;
        self.refresh_names().await;
        Ok(())
    }
}

/// Ctrl-C (SIGINT) while a query runs. Signals that arrived before [`Interrupts::listen`]
/// are not seen.
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn listen() -> Result<Self, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::interrupt())
                .map_err(|e| format!("cannot listen for Ctrl-C: {e}"))?;
            Ok(Self { signal })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Drops signals that arrived while no query ran.
    fn forget_pending(&mut self) {
        #[cfg(unix)]
        {
            let mut context = std::task::Context::from_waker(futures::task::noop_waker_ref());
            while let std::task::Poll::Ready(Some(())) = self.signal.poll_recv(&mut context) {}
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn remember(editor: &mut Editor<ShellHelper, FileHistory>, path: Option<&PathBuf>, entry: &str) {
    let _ = editor.add_history_entry(entry);
    if let Some(path) = path {
        // Saved at once, so history survives a crash or a kill.
        let _ = editor.save_history(path);
    }
}

/// `$QUIVER_HISTORY`, else `$XDG_DATA_HOME/quiver/history`, else
/// `~/.local/share/quiver/history`.
fn history_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("QUIVER_HISTORY") {
        return (!path.is_empty()).then(|| PathBuf::from(path));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("quiver").join("history"))
}

/// `$QUIVER_PAGER`, else `$PAGER`, else `less -FRSX`; empty turns paging off.
fn pager_command() -> Option<String> {
    let pager = std::env::var("QUIVER_PAGER")
        .or_else(|_| std::env::var("PAGER"))
        .unwrap_or_else(|_| "less -FRSX".to_string());
    (!pager.trim().is_empty()).then_some(pager)
}

fn page(pager: &str, text: &str) -> Result<(), String> {
    let child = std::process::Command::new("sh")
        .args(["-c", pager])
        .stdin(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        print!("{text}");
        return Ok(());
    };
    if let Some(mut stdin) = child.stdin.take() {
        // The pager may quit before reading everything (q pressed): not an error.
        let _ = stdin.write_all(text.as_bytes());
    }
    child
        .wait()
        .map(|_| ())
        .map_err(|e| format!("pager `{pager}`: {e}"))
}

fn statement_is_blank(sql: &str) -> bool {
    sql.trim().trim_end_matches(';').trim().is_empty()
}

fn changes_catalog(sql: &str) -> bool {
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    matches!(first.as_str(), "CREATE" | "DROP" | "ALTER")
}

/// The error for a person: the server's message and, for a syntax error that names a
/// position, the offending line with a caret under the spot.
pub(crate) fn describe_error(sql: &str, error: &ClientError) -> String {
    let message = error.to_string();
    match syntax_error_position(&message) {
        Some((line, column)) => match sql.lines().nth(line.saturating_sub(1)) {
            Some(text) => format!(
                "{message}\n  {text}\n  {}^",
                " ".repeat(column.saturating_sub(1))
            ),
            None => message,
        },
        None => message,
    }
}

/// `Line: 1, Column: 8` in a parser error.
fn syntax_error_position(message: &str) -> Option<(usize, usize)> {
    let at = message.find("Line: ")?;
    let rest = &message[at + "Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_get_a_caret() {
        let error = ClientError::Query {
            code: tonic::Code::InvalidArgument,
            message: "SQL error: ParserError(\"Expected: end of statement, found: FORM at Line: 1, Column: 10\")".to_string(),
        };
        let text = describe_error("SELECT 1 FORM t", &error);
        assert!(
            text.ends_with("\n  SELECT 1 FORM t\n           ^"),
            "{text}"
        );
    }
}
