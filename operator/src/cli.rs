//! The `parley-operator` command line: `crd` prints the ChatTenant CRD,
//! `render` prints the objects the operator builds for a ChatTenant, and
//! `run` reconciles ChatTenants in a cluster. It is a library module so
//! that other executables, such as the benchmarks, can run the operator as
//! a process of their own.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::controller::leader::LeaderElector;
use crate::error_chain;
use crate::render::{self, RenderError};
use crate::settings::OperatorSettings;

/// Name of the leader election Lease.
const LEASE_NAME: &str = "parley-operator";

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
    /// Reconcile ChatTenants in the cluster of the in-cluster service
    /// account, or of KUBECONFIG, until SIGTERM or Ctrl-C.
    Run {
        /// Default runtime image for tenants that do not set one.
        #[arg(long, env = "PARLEY_RUNTIME_IMAGE")]
        runtime_image: Option<String>,
        /// Log format.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// Namespace of the leader election Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "parley-system")]
        lease_namespace: String,
        /// Identity in the Lease; the pod name in a cluster.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Address of `/healthz`, `/readyz` and `/metrics`.
        #[arg(long, env = "PARLEY_OPERATOR_LISTEN", default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        scylla: Box<ScyllaArgs>,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

/// The default Redis of tenants with ScyllaDB storage, which relays live
/// events between runtime replicas. Leaving out the URL leaves such
/// tenants at one replica unless their spec names a Redis.
#[derive(clap::Args)]
struct RedisArgs {
    /// Redis URL, `redis://host:port` with an optional `/database`, for
    /// ScyllaDB tenants whose spec names no Redis.
    #[arg(long, env = "PARLEY_REDIS_URL")]
    redis_url: Option<String>,
    /// Secret in the operator's namespace with the Redis password. The
    /// operator copies it into each tenant namespace that uses this Redis.
    #[arg(long, env = "PARLEY_REDIS_PASSWORD_SECRET")]
    redis_password_secret: Option<String>,
    /// Data key of the password in --redis-password-secret.
    #[arg(long, env = "PARLEY_REDIS_PASSWORD_KEY", default_value = "password")]
    redis_password_key: String,
}

impl RedisArgs {
    /// Returns the settings these flags describe, or `None` when no URL is
    /// given.
    fn settings(self) -> Result<Option<crate::settings::RedisSettings>, String> {
        let Some(url) = self.redis_url.filter(|url| !url.trim().is_empty()) else {
            if self.redis_password_secret.is_some() {
                return Err("--redis-password-secret needs --redis-url".to_owned());
            }
            return Ok(None);
        };
        crate::validate::parse_redis_url(&url)
            .map_err(|message| format!("invalid --redis-url: {message}"))?;
        let password_secret = match self.redis_password_secret {
            Some(name) => {
                crate::validate::check_secret_key(&self.redis_password_key)
                    .map_err(|message| format!("invalid --redis-password-key: {message}"))?;
                Some(crate::crd::SecretKeyReference {
                    name,
                    key: self.redis_password_key,
                })
            }
            None => None,
        };
        Ok(Some(crate::settings::RedisSettings {
            url,
            password_secret,
        }))
    }
}

/// The ScyllaDB cluster for tenants with ScyllaDB storage. Leaving out the
/// contact points turns ScyllaDB storage off.
#[derive(clap::Args)]
struct ScyllaArgs {
    /// ScyllaDB nodes to connect to first, as comma-separated `host:port`.
    #[arg(long, env = "PARLEY_SCYLLA_CONTACT_POINTS", value_delimiter = ',')]
    scylla_contact_points: Vec<String>,
    /// Datacenter of the operator and the runtimes.
    #[arg(long, env = "PARLEY_SCYLLA_DATACENTER")]
    scylla_datacenter: Option<String>,
    /// Secret in the operator's namespace with `username` and `password`
    /// keys for the operator's CQL role.
    #[arg(long, env = "PARLEY_SCYLLA_CREDENTIALS_SECRET")]
    scylla_credentials_secret: Option<String>,
    /// PEM file with the certificate authorities of the node certificates;
    /// turns TLS on for the operator and the runtimes.
    #[arg(long, env = "PARLEY_SCYLLA_TLS_CA_FILE")]
    scylla_tls_ca_file: Option<PathBuf>,
    /// Replication factor of the operator's own keyspace, `parley_operator`,
    /// in the datacenter.
    #[arg(long, env = "PARLEY_SCYLLA_OPERATOR_REPLICATION", default_value_t = 3)]
    scylla_operator_replication: u32,
}

impl ScyllaArgs {
    /// Returns the settings these flags describe, or `None` when no contact
    /// point is given.
    fn settings(
        self,
        operator_namespace: &str,
    ) -> Result<Option<crate::settings::ScyllaSettings>, String> {
        let contact_points: Vec<String> = self
            .scylla_contact_points
            .into_iter()
            .map(|point| point.trim().to_owned())
            .filter(|point| !point.is_empty())
            .collect();
        if contact_points.is_empty() {
            return Ok(None);
        }
        let Some(datacenter) = self.scylla_datacenter.filter(|dc| !dc.trim().is_empty()) else {
            return Err("--scylla-datacenter is required with --scylla-contact-points".to_owned());
        };
        if !(1..=10).contains(&self.scylla_operator_replication) {
            return Err("--scylla-operator-replication must be between 1 and 10".to_owned());
        }
        let tls_ca_pem = match self.scylla_tls_ca_file {
            Some(path) => Some(std::fs::read_to_string(&path).map_err(|error| {
                format!(
                    "failed to read --scylla-tls-ca-file {}: {error}",
                    path.display()
                )
            })?),
            None => None,
        };
        Ok(Some(crate::settings::ScyllaSettings {
            contact_points,
            datacenter,
            credentials_secret: self.scylla_credentials_secret,
            credentials_namespace: operator_namespace.to_owned(),
            tls_ca_pem,
            operator_replication_factor: self.scylla_operator_replication,
        }))
    }
}

/// Parses `std::env::args` and runs the subcommand it names.
pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crate::schema::chat_tenant_crd_yaml() {
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
        Command::Run {
            runtime_image,
            log_format,
            lease_namespace,
            identity,
            listen,
            scylla,
            redis,
        } => {
            let scylla = match scylla.settings(&lease_namespace) {
                Ok(scylla) => scylla,
                Err(message) => {
                    eprintln!("parley-operator: {message}");
                    return ExitCode::FAILURE;
                }
            };
            let redis = match redis.settings() {
                Ok(redis) => redis,
                Err(message) => {
                    eprintln!("parley-operator: {message}");
                    return ExitCode::FAILURE;
                }
            };
            let mut settings = OperatorSettings::default();
            if let Some(image) = runtime_image {
                settings.runtime_image = image;
            }
            settings.scylla = scylla;
            settings.redis = redis;
            settings.operator_namespace = lease_namespace.clone();
            run(settings, &log_format, &lease_namespace, identity, listen)
        }
    }
}

fn run(
    settings: OperatorSettings,
    log_format: &str,
    lease_namespace: &str,
    identity: Option<String>,
    listen: std::net::SocketAddr,
) -> ExitCode {
    init_logging(log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("parley-operator: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "Failed to create a Kubernetes client");
                return ExitCode::FAILURE;
            }
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%listen, error = %error, "Failed to listen for health and metrics");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, crate::telemetry::router()).await {
                tracing::error!(error = %error, "Health and metrics listener failed");
            }
        });
        if let Err(error) = client.apiserver_version().await {
            tracing::error!(error = %error_chain(&error), "Failed to reach the Kubernetes API server");
            return ExitCode::FAILURE;
        }
        crate::telemetry::METRICS.set_ready();
        tracing::info!(%listen, "Serving health and metrics");

        let identity = identity.unwrap_or_else(|| format!("parley-operator-{}", std::process::id()));
        let elector = LeaderElector::new(client.clone(), lease_namespace, LEASE_NAME, &identity);
        tracing::info!(%identity, lease_namespace, "Starting the ChatTenant controller; waiting for the leader Lease");
        if crate::controller::run_elected(client, settings, elector, stop_signal()).await {
            tracing::error!("Lost the leader Lease; exiting so a fresh process can campaign again");
            return ExitCode::FAILURE;
        }
        tracing::info!("Stopped");
        ExitCode::SUCCESS
    })
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARLEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn stop_signal() {
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
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_args(url: Option<&str>, secret: Option<&str>, key: &str) -> RedisArgs {
        RedisArgs {
            redis_url: url.map(str::to_owned),
            redis_password_secret: secret.map(str::to_owned),
            redis_password_key: key.to_owned(),
        }
    }

    #[test]
    fn redis_flags_give_settings() {
        let settings = redis_args(Some("redis://redis:6379"), Some("redis"), "pw")
            .settings()
            .unwrap()
            .unwrap();
        assert_eq!(settings.url, "redis://redis:6379");
        let secret = settings.password_secret.unwrap();
        assert_eq!(secret.name, "redis");
        assert_eq!(secret.key, "pw");
        assert_eq!(redis_args(None, None, "password").settings(), Ok(None));
    }

    #[test]
    fn invalid_redis_flags_are_rejected() {
        let cases = [
            (
                redis_args(Some("rediss://redis:6379"), None, "password"),
                "--redis-url",
            ),
            (
                redis_args(None, Some("redis"), "password"),
                "needs --redis-url",
            ),
            (
                redis_args(Some("redis://redis:6379"), Some("redis"), "a/b"),
                "--redis-password-key",
            ),
        ];
        for (args, message) in cases {
            let error = args.settings().unwrap_err();
            assert!(error.contains(message), "{error}");
        }
    }
}
