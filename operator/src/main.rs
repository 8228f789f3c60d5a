//! `parley-operator`: prints the ChatTenant CRD (`crd`) and the objects the
//! operator builds for a ChatTenant (`render`).

use std::error::Error;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use parley_operator::render::{self, RenderError};
use parley_operator::settings::OperatorSettings;

#[derive(Parser)]
#[command(version, about = "Kubernetes operator for Parley chat tenants")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ChatTenant CustomResourceDefinition as YAML.
    Crd,
    /// Print every object the operator creates for a ChatTenant, as a
    /// multi-document YAML stream, with placeholder credentials.
    Render {
        /// ChatTenant YAML file, or `-` for standard input.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match parley_operator::schema::chat_tenant_crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("parley-operator: failed to render the CRD: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Render { file } => render_file(&file),
    }
}

fn render_file(file: &PathBuf) -> ExitCode {
    let yaml = match read_input(file) {
        Ok(yaml) => yaml,
        Err(error) => {
            eprintln!(
                "parley-operator: failed to read {}: {error}",
                file.display()
            );
            return ExitCode::FAILURE;
        }
    };
    match render::render(&yaml, &OperatorSettings::default()) {
        Ok(stream) => {
            print!("{stream}");
            ExitCode::SUCCESS
        }
        // The message names the field, and an invalid spec has no cause to
        // append.
        Err(error @ RenderError::Invalid(_)) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("parley-operator: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

fn read_input(file: &PathBuf) -> std::io::Result<String> {
    if file.as_os_str() == "-" {
        let mut yaml = String::new();
        std::io::stdin().read_to_string(&mut yaml)?;
        Ok(yaml)
    } else {
        std::fs::read_to_string(file)
    }
}

/// Joins an error and its causes with ": ".
fn error_chain(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
