//! The `chat-runtime` command line: flags, logging and signals.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, StoreSettings};
use crate::server::{self, Options};
use crate::store::scylla;

#[derive(Parser)]
#[command(version, about = "Multi-tenant chat over REST and WebSocket")]
struct Cli {
    /// Without a command, the runtime serves its tenants.
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (YAML); changes to its tenants apply while running.
    #[arg(long, env = "PARLEY_CONFIG")]
    config: PathBuf,
    /// Listen address, overriding `server.listen`.
    #[arg(long, env = "PARLEY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory, overriding `server.data_dir`.
    #[arg(long, env = "PARLEY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "PARLEY_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the schema migrations to the keyspace of every tenant stored in
    /// ScyllaDB, then exit. Each keyspace must exist. The operator does this
    /// itself before it rolls out a runtime.
    Migrate,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARLEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // tungstenite logs frame payloads at trace level, and those carry message
    // bodies and tokens, so its logs stop at debug whatever PARLEY_LOG says.
    // The cap is added only when some directive reaches trace, because the
    // directive would otherwise raise tungstenite from the default level to
    // debug and log every socket close.
    let reaches_trace = filter
        .max_level_hint()
        .is_none_or(|level| level > tracing_subscriber::filter::LevelFilter::DEBUG);
    let filter = if reaches_trace {
        ["tungstenite=debug", "tokio_tungstenite=debug"]
            .into_iter()
            .filter_map(|directive| directive.parse().ok())
            .fold(filter, tracing_subscriber::EnvFilter::add_directive)
    } else {
        filter
    };
    // Colours only for a terminal, so log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "Failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "Failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Runs the command line: parses flags from the process arguments, serves
/// until SIGTERM or Ctrl-C (or runs the given command), and returns the exit
/// code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => match cli.command {
            Some(Command::Migrate) => runtime.block_on(migrate(cli.config)),
            None => runtime.block_on(serve(cli)),
        },
        Err(error) => {
            eprintln!("chat-runtime: failed to start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> ExitCode {
    let options = Options {
        config_path: cli.config,
        listen: cli.listen,
        data_dir: cli.data_dir,
    };
    match server::run(options, stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = server::error_chain(&error);
            tracing::error!(error = %message, "Failed to start");
            eprintln!("chat-runtime: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Applies the ScyllaDB migrations of every tenant in the configuration at
/// `path`, one tenant after another, and stops at the first failure.
async fn migrate(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("chat-runtime: {}", server::error_chain(&error));
            return ExitCode::FAILURE;
        }
    };
    let mut migrated = 0;
    for tenant in &config.tenants {
        let StoreSettings::Scylla { config, base } = &tenant.store else {
            continue;
        };
        let result = async {
            let session = config.connect(base).await?;
            let now = crate::chat::now_millis();
            let applied = scylla::apply_migrations(&session, &config.keyspace, now).await?;
            let version = scylla::check_schema(&session, &config.keyspace).await?;
            Ok::<_, Box<dyn std::error::Error>>((applied, version))
        }
        .await;
        match result {
            Ok((applied, version)) => {
                println!(
                    "{}: keyspace {} is at schema version {version}; applied now: {applied:?}",
                    tenant.id, config.keyspace
                );
                migrated += 1;
            }
            Err(error) => {
                eprintln!(
                    "chat-runtime: failed to migrate tenant {}: {}",
                    tenant.id,
                    server::error_chain(error.as_ref())
                );
                return ExitCode::FAILURE;
            }
        }
    }
    if migrated == 0 {
        println!("No tenant in {} is stored in ScyllaDB.", path.display());
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn migrate_takes_config_before_command() {
        let cli = Cli::try_parse_from(["chat-runtime", "--config", "c.yaml", "migrate"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Migrate)));
        assert_eq!(cli.config, PathBuf::from("c.yaml"));
        let serve = Cli::try_parse_from(["chat-runtime", "--config", "c.yaml"]).unwrap();
        assert!(serve.command.is_none());
    }
}
