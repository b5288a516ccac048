//! The `quiver` binary: the SQL shell (interactive, or running -c/-f/stdin) on an embedded
//! standalone cluster or a remote one; and the `scheduler` and `executor` subcommands.

mod cli;
mod json_log;
mod servers;
mod shell;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use quiver::{ClientError, ConnectOptions, QuiverClient, StandaloneCluster, StandaloneConfig};
use quiver_core::QuiverError;

use crate::cli::{Cli, Command, LogFormat, RunArgs};
use crate::servers::{read_file, run_executor, run_passwd, run_scheduler};
use crate::shell::{Flow, Session, Settings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Scheduler(args)) => run_scheduler(args).await,
            Some(Command::Executor(args)) => run_executor(args).await,
            Some(Command::Passwd(args)) => run_passwd(args),
            None => run_sql(cli.run).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines go to standard error, filtered by `RUST_LOG` (default: warnings), as text
/// or as JSON objects.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(json_log::JsonLines::install())
            .init(),
    }
}

async fn run_sql(args: RunArgs) -> Result<(), String> {
    let interactive =
        args.commands.is_empty() && args.files.is_empty() && std::io::stdin().is_terminal();
    let connect_options = ConnectOptions {
        user: args.user.clone(),
        password: args.password.clone(),
        tls_ca_pem: match &args.tls_ca {
            Some(path) => Some(read_file(path)?),
            None => None,
        },
    };
    let mut connect_options = connect_options;
    let (cluster, client) = match &args.connect {
        Some(url) => {
            let client = QuiverClient::connect_with(url, connect_options.clone())
                .await
                .map_err(|e| e.to_string())?;
            // The server asks for credentials: ask the person at the terminal.
            if connect_options.user.is_none()
                && client.requires_login().await.map_err(|e| e.to_string())?
            {
                if !interactive {
                    return Err(format!(
                        "{url} requires a login: give --user USER and the password in \
                         QUIVER_PASSWORD"
                    ));
                }
                let (user, password) = ask_credentials()?;
                client
                    .login(&user, &password)
                    .await
                    .map_err(|e| e.to_string())?;
                connect_options.user = Some(user);
                connect_options.password = Some(password);
            }
            (None, client)
        }
        None => {
            let mut config = StandaloneConfig {
                executors: args.executors,
                state_dir: args.state.directory("standalone"),
                // The interactive shell serves the web UI on a free loopback port.
                http: interactive.then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
                ..StandaloneConfig::default()
            };
            if let Some(slots) = args.slots {
                config.slots_per_executor = slots;
                config.memory_limit = quiver_core::config::default_memory_limit(slots);
            }
            let cluster = start_standalone(config).await?;
            let client = cluster.client().await.map_err(|e| e.to_string())?;
            (Some(cluster), client)
        }
    };
    let settings = Settings {
        format: args.format,
        timing: false,
        progress: !args.no_progress && !args.quiet,
    };
    let mut session = Session::new(client, connect_options, settings, interactive);
    session.set_ui_url(cluster.as_ref().and_then(StandaloneCluster::ui_url));
    let outcome = run_session(&mut session, &args, interactive).await;
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    outcome
}

/// Starts the embedded cluster; when another shell holds the catalog's state directory,
/// this one goes on with a catalog of its own that is lost at exit.
async fn start_standalone(config: StandaloneConfig) -> Result<StandaloneCluster, String> {
    match StandaloneCluster::start(config.clone()).await {
        Err(ClientError::Cluster(QuiverError::StateDirInUse(path))) => {
            eprintln!(
                "Warning: the catalog in {} is in use by another quiver shell; this \
                 session's tables last until it exits.",
                path.display()
            );
            StandaloneCluster::start(StandaloneConfig {
                state_dir: None,
                ..config
            })
            .await
            .map_err(|e| e.to_string())
        }
        started => started.map_err(|e| e.to_string()),
    }
}

/// Asks for a user name and a password (not echoed) on the terminal.
fn ask_credentials() -> Result<(String, String), String> {
    use std::io::Write;
    print!("User: ");
    let _ = std::io::stdout().flush();
    let mut user = String::new();
    std::io::stdin()
        .read_line(&mut user)
        .map_err(|e| format!("reading the user name: {e}"))?;
    let password = rpassword::prompt_password("Password: ")
        .map_err(|e| format!("reading the password: {e}"))?;
    Ok((user.trim().to_string(), password))
}

async fn run_session(
    session: &mut Session,
    args: &RunArgs,
    interactive: bool,
) -> Result<(), String> {
    for path in &args.init {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        session.set_output(Some(PathBuf::from("/dev/null")))?;
        let outcome = session.run_script(&text).await;
        session.set_output(None)?;
        outcome.map_err(|e| format!("{}: {e}", path.display()))?;
    }
    session.set_output(args.output.clone())?;
    session.settings_mut().timing = args.timing || (interactive && !args.quiet);
    if interactive {
        return session.interactive().await;
    }
    for command in &args.commands {
        if let Flow::Quit = session.run_script(command).await? {
            return Ok(());
        }
    }
    for file in &args.files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        if let Flow::Quit = session.run_script(&text).await? {
            return Ok(());
        }
    }
    if args.commands.is_empty() && args.files.is_empty() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        session.run_script(&text).await?;
    }
    Ok(())
}
