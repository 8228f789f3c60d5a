//! The `chat-runtime` command line: flags, logging and signals.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use crate::server::{self, Options};

#[derive(Parser)]
#[command(version, about = "Multi-tenant chat over REST and WebSocket")]
struct Cli {
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
/// until SIGTERM or Ctrl-C, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(serve(cli)),
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
