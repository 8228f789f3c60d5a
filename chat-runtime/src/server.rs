//! Start-up, configuration reload and graceful shutdown.
//!
//! Shutdown order: readiness turns false, and after
//! `server.shutdown_delay_seconds` the listener stops accepting;
//! every socket gets a close frame (each finishes the write it is doing
//! first); once all sockets are gone, or [`DRAIN_TIMEOUT`] passed, every
//! store finishes its queued writes and flushes; then the process exits.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState, SharedState};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::store::StoreResult;
use crate::tenant::{TenantError, Tenants};

/// How often the configuration file is checked for changes. Polling also
/// sees Kubernetes ConfigMap updates, which swap a symlink instead of
/// writing the file.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Maximum wait for sockets to close at shutdown before stores are flushed
/// regardless.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often old client message ids are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Options {
    pub config_path: PathBuf,
    /// Overrides `server.listen`.
    pub listen: Option<SocketAddr>,
    /// Overrides `server.data_dir`.
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tenants(#[from] TenantError),
    #[error("failed to listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Reads and parses the configuration file, returning the text it parsed
/// so the watcher compares later reads against exactly that text.
fn load(options: &Options) -> Result<(Config, String), ConfigError> {
    let text =
        std::fs::read_to_string(&options.config_path).map_err(|source| ConfigError::Read {
            path: options.config_path.clone(),
            source,
        })?;
    let config = parse(options, &text)?;
    Ok((config, text))
}

fn parse(options: &Options, text: &str) -> Result<Config, ConfigError> {
    let base = options.config_path.parent().unwrap_or(Path::new("."));
    let mut config = Config::parse(text, base)?;
    if let Some(listen) = options.listen {
        config.server.listen = listen;
    }
    if let Some(data_dir) = &options.data_dir {
        config.server.data_dir = data_dir.clone();
    }
    Ok(config)
}

/// Serves until `stop` completes, then shuts down gracefully.
pub async fn run(
    options: Options,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (config, config_text) = load(&options)?;
    let metrics = Metrics::default();
    let relay = config
        .relay
        .clone()
        .map(|settings| Relay::new(settings, &metrics));
    let tenants = Tenants::open(&config, relay.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| ServerError::Bind {
            address: config.server.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(ServerError::Serve)?;
    let metrics_listener = match config.server.metrics_listen {
        Some(metrics_address) => {
            let listener = tokio::net::TcpListener::bind(metrics_address)
                .await
                .map_err(|source| ServerError::Bind {
                    address: metrics_address,
                    source,
                })?;
            let bound = listener.local_addr().map_err(ServerError::Serve)?;
            tracing::info!(address = %bound, "Serving metrics");
            Some(listener)
        }
        None => None,
    };

    let (shutdown_sender, shutdown) = watch::channel(false);
    let state: SharedState = Arc::new(AppState {
        tenants,
        metrics,
        server: config.server.clone(),
        shutdown,
        connections: TaskTracker::new(),
        ready: Default::default(),
        relay: relay.clone(),
    });
    if let Some(relay) = &relay {
        relay.start(Arc::clone(&state));
    }

    tokio::spawn(watch_config(
        options.clone(),
        config.clone(),
        config_text,
        Arc::clone(&state),
    ));
    tokio::spawn(purge_expired(Arc::clone(&state)));
    let webhook_starts = crate::webhooks::starting_cursors(&state).await;
    tokio::spawn(crate::webhooks::supervise(
        Arc::clone(&state),
        webhook_starts,
    ));
    let extension_starts = crate::extensions::starting_cursors(&state).await;
    tokio::spawn(crate::extensions::supervise(
        Arc::clone(&state),
        extension_starts,
    ));

    let tenant_ids: Vec<&str> = config
        .tenants
        .iter()
        .map(|tenant| tenant.id.as_str())
        .collect();
    tracing::info!(%address, tenants = ?tenant_ids, data_dir = %config.server.data_dir.display(), "Listening");
    state.ready.store(true, Ordering::Release);

    let mut stopping = state.shutdown.clone();
    // Without TCP_NODELAY, an ack followed by the message frame waits for the
    // peer's delayed ACK (about 40 ms on Linux) before the second is sent.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(error = %error, "Failed to set TCP_NODELAY");
        }
    });
    let serve =
        axum::serve(listener, api::router(Arc::clone(&state))).with_graceful_shutdown(async move {
            api::shutdown_started(&mut stopping).await;
        });
    let server = tokio::spawn(async move { serve.await });
    if let Some(listener) = metrics_listener {
        let mut stopping = state.shutdown.clone();
        let serve = axum::serve(listener, api::metrics_router(Arc::clone(&state)))
            .with_graceful_shutdown(async move { api::shutdown_started(&mut stopping).await });
        tokio::spawn(async move {
            if let Err(error) = serve.await {
                tracing::error!(error = %error, "Metrics listener failed");
            }
        });
    }

    stop.await;
    tracing::info!("Shutting down");
    state.ready.store(false, Ordering::Release);
    let delay = Duration::from_secs(state.server.shutdown_delay_seconds);
    if !delay.is_zero() {
        tracing::info!(
            seconds = delay.as_secs(),
            "Not ready; serving until the shutdown delay ends"
        );
        tokio::time::sleep(delay).await;
    }
    let _ = shutdown_sender.send(true);

    state.connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, state.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = state.connections.len(),
            "Sockets still open after the drain timeout"
        );
    }
    // NOTE: the HTTP server sets no header-read timeout, so a client that
    // never finishes its request headers keeps a connection open, and this bound
    // keeps such a client from delaying shutdown past the drain timeout.
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(Err(error))) => tracing::error!(error = %error, "HTTP server failed"),
        Ok(_) => {}
        Err(_) => tracing::warn!("HTTP connections still open after the drain timeout"),
    }
    state.tenants.close_all().await;
    tracing::info!("Stopped");
    Ok(())
}

/// Applies changes to the configuration file until shutdown. An invalid
/// file is logged and the previous configuration stays in force.
async fn watch_config(
    options: Options,
    mut current: Config,
    mut last_text: String,
    state: SharedState,
) {
    let mut shutdown = state.shutdown.clone();
    let mut failed_text: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
            _ = api::shutdown_started(&mut shutdown) => return,
        }
        let text = match std::fs::read_to_string(&options.config_path) {
            Ok(text) => text,
            Err(error) => {
                tracing::warn!(error = %error, path = %options.config_path.display(), "Failed to read the configuration file; keeping the previous configuration");
                continue;
            }
        };
        if text == last_text {
            continue;
        }
        let next = match parse(&options, &text) {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "Configuration change rejected; keeping the previous configuration");
                last_text = text;
                continue;
            }
        };
        if next.server != current.server {
            tracing::warn!("Changes to the server section take effect only after a restart");
        }
        match state.tenants.apply(&next).await {
            Ok(summary) => {
                if let Some(relay) = &state.relay
                    && !(summary.added.is_empty() && summary.removed.is_empty())
                {
                    relay.tenants_changed();
                }
                tracing::info!(
                    added = ?summary.added,
                    removed = ?summary.removed,
                    updated = ?summary.updated,
                    "Configuration reloaded"
                );
                current = next;
                last_text = text;
                failed_text = None;
            }
            // The text stays unapplied, so the next check retries it (a
            // store may open once a disk problem is fixed). Each failing text
            // is logged once.
            Err(error) => {
                if failed_text.as_ref() != Some(&text) {
                    tracing::error!(error = %error_chain(&error), "Configuration change failed to apply; keeping the previous configuration and retrying");
                    failed_text = Some(text);
                }
            }
        }
    }
}

/// Formats an error with its sources, for one log field.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Some errors (serde_yaml's among them) repeat their source's text in
        // their own message.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Deletes, every [`PURGE_INTERVAL`], client message ids past the dedupe
/// window and events past each tenant's retention.
async fn purge_expired(state: SharedState) {
    let mut shutdown = state.shutdown.clone();
    let dedupe_ms = state.server.dedupe_retention_days as i64 * 24 * 3600 * 1000;
    loop {
        for tenant in state.tenants.all() {
            let now = crate::chat::now_millis();
            let client_ids = tenant.store.purge_client_ids(now - dedupe_ms).await;
            log_purge(&tenant.id, "client message ids", client_ids);
            let retention_ms = i64::from(tenant.settings().events.retention_hours) * 3600 * 1000;
            let events = tenant.store.purge_events(now - retention_ms).await;
            log_purge(&tenant.id, "events", events);
        }
        tokio::select! {
            _ = tokio::time::sleep(PURGE_INTERVAL) => {}
            _ = api::shutdown_started(&mut shutdown) => return,
        }
    }
}

fn log_purge(tenant: &str, rows: &str, result: StoreResult<u64>) {
    match result {
        Ok(purged) if purged > 0 => tracing::info!(tenant, rows, purged, "Purged expired rows"),
        Ok(_) => {}
        Err(error) => tracing::warn!(tenant, rows, error = %error, "Failed to purge expired rows"),
    }
}
