//! `parley-bench`: measures the chat runtime and the operator, each figure
//! beside the same work done by a bare floor in the same run.
//!
//! `parley-bench run --profile quick` keeps the harness working in CI;
//! `--profile full` is run by hand and its results are kept under
//! `bench/results/`. See `bench/README.md` for what each benchmark does.

mod client;
mod floor;
mod load;
mod markdown;
mod plot;
mod profile;
mod report;
mod scenarios;
mod servers;
mod system;
mod tenant;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::profile::{Profile, ProfileName};

#[derive(Parser)]
#[command(
    version,
    about = "Benchmarks of the Parley runtime and operator against bare floors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the benchmarks and writes report.json, report.md and SVG charts.
    Run {
        /// Sizes and durations: `quick` takes about 2½ minutes and only
        /// checks the harness; `full` takes about 50 minutes.
        #[arg(long, value_enum, default_value_t = ProfileName::Quick)]
        profile: ProfileName,
        /// Folder for the results; created if missing.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Benchmarks to run, such as `B2,B3` (B0 to B8, any case); all
        /// when left out.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Holds idle WebSocket connections for another benchmark process
    /// (used internally to spread clients over processes).
    #[command(hide = true)]
    Hold(client::HoldArgs),
}

fn main() -> ExitCode {
    match std::env::var(servers::ROLE_VARIABLE).as_deref() {
        Ok("runtime") => return chat_runtime::cli::main(),
        Ok("floor") => return floor::main(),
        Ok("operator") => return parley_operator::cli::main(),
        _ => {}
    }
    let cli = Cli::parse();
    // Before the async runtime starts its threads, so they inherit the CPU.
    let pinned = match system::pin_self(servers::LOAD_GENERATOR_CPU) {
        Ok(pinned) => pinned,
        Err(error) => {
            eprintln!("parley-bench: failed to pin the load generator: {error:#}");
            false
        }
    };
    // One thread, because the load generator has one CPU: two worker
    // threads on it preempt each other while one holds a histogram lock,
    // which showed up as several milliseconds of latency that no server
    // caused.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("parley-bench: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run { profile, out, only } => {
            runtime.block_on(scenarios::run_all(Profile::new(profile), out, only, pinned))
        }
        Command::Hold(args) => runtime.block_on(client::hold(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("parley-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
