//! Extensions: features built on the tenant's event log instead of inside
//! the message path. An extension reads events after they are stored and
//! may send messages of the `automated` kind on a user's behalf, so adding
//! one changes nothing in how messages are checked, stored or delivered.
//!
//! Each enabled extension of a tenant runs as one task on the replica that
//! holds the extension's lease in the store, the same lease webhooks use,
//! named `extension:<name>`. The task saves its cursor after each page of
//! events. A restart therefore hands the events since the last save to the
//! extension again, and an extension must make repeats harmless, for
//! example by deriving the `client_id` of what it sends from the event id.

mod auto_reply;
mod config;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use auto_reply::{AWAY_MESSAGE_KEY, AutoReply, AwayMessage, away_message};
pub use config::{AutoReplyConfig, ExtensionsConfig};

use crate::api::{self, SharedState};
use crate::chat::ChatError;
use crate::leases::{Failed, IDLE_WAIT, LEASE, Lease, holder_id};
use crate::metrics::{ExtensionLabels, Metrics};
use crate::store::{Event, StoreError};
use crate::tenant::Tenant;

/// Events read from the log at once. Small enough that handling a page
/// takes far less than the lease.
const PAGE: u32 = 50;
/// Pause before the supervisor checks the configuration again.
const SUPERVISE_INTERVAL: Duration = Duration::from_secs(1);

/// A feature that reacts to the tenant's events.
#[async_trait::async_trait]
pub trait Extension: Send + Sync + 'static {
    /// Name in leases, metrics and logs, and in the `extension` field of
    /// the messages it sends.
    fn name(&self) -> &'static str;

    /// Returns whether the extension handles events of type `kind`.
    fn wants(&self, kind: &str) -> bool;

    /// Handles one event. An error is logged and counted, and the
    /// extension goes on with the next event.
    async fn handle(
        &self,
        tenant: &Tenant,
        metrics: &Metrics,
        event: &Event,
    ) -> Result<(), ChatError>;
}

/// Builds the extensions that a tenant's settings enable.
fn enabled(config: &ExtensionsConfig) -> Vec<Arc<dyn Extension>> {
    let mut extensions: Vec<Arc<dyn Extension>> = Vec::new();
    if let Some(auto_reply) = &config.auto_reply {
        extensions.push(Arc::new(AutoReply::new(auto_reply)));
    }
    extensions
}

/// Starting cursors keyed by tenant: the end of each tenant's event log
/// when the runtime started, where an extension that never ran begins.
pub type Starts = HashMap<String, String>;

/// Reads the end of every tenant's event log. Called before the runtime
/// accepts requests, so a new extension gets every event from then on.
pub async fn starting_cursors(state: &SharedState) -> Starts {
    let mut starts = Starts::new();
    for tenant in state.tenants.all() {
        if enabled(&tenant.settings().extensions).is_empty() {
            continue;
        }
        match tenant.store.event_log_end().await {
            Ok(end) => {
                starts.insert(tenant.id.clone(), end);
            }
            Err(error) => {
                tracing::warn!(tenant = %tenant.id, error = %crate::server::error_chain(&error), "Failed to read the end of the event log; a new extension starts where the log ends when it first runs")
            }
        }
    }
    starts
}

/// Starts and stops one task per enabled extension until shutdown,
/// following configuration reloads.
pub async fn supervise(state: SharedState, starts: Starts) {
    let holder = holder_id();
    let mut shutdown = state.shutdown.clone();
    let mut running: HashMap<(String, &'static str), (ExtensionsConfig, tokio::task::AbortHandle)> =
        HashMap::new();
    loop {
        let mut configured = HashMap::new();
        for tenant in state.tenants.all() {
            let config = tenant.settings().extensions.clone();
            for extension in enabled(&config) {
                let key = (tenant.id.clone(), extension.name());
                configured.insert(key, (Arc::clone(&tenant), config.clone(), extension));
            }
        }

        running.retain(|key, (config, task)| {
            let keep = configured
                .get(key)
                .is_some_and(|(_, configured, _)| configured == config);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (tenant, config, extension)) in configured {
            if running.contains_key(&key) {
                continue;
            }
            let runner = Runner {
                start: starts.get(&tenant.id).cloned(),
                lease_name: format!("extension:{}", extension.name()),
                tenant,
                extension,
                holder: holder.clone(),
                state: Arc::clone(&state),
            };
            let task = tokio::spawn(runner.run());
            running.insert(key, (config, task.abort_handle()));
        }

        tokio::select! {
            _ = tokio::time::sleep(SUPERVISE_INTERVAL) => {}
            _ = api::shutdown_started(&mut shutdown) => break,
        }
    }
    // Events whose handling was cut short are handled again from the last
    // saved cursor.
    for (_, (_, task)) in running {
        task.abort();
    }
}

/// The task of one extension of one tenant.
struct Runner {
    /// Cursor to start from when the extension never ran.
    start: Option<String>,
    lease_name: String,
    tenant: Arc<Tenant>,
    extension: Arc<dyn Extension>,
    holder: String,
    state: SharedState,
}

impl Runner {
    async fn run(self) {
        loop {
            if let Err(failed) = self.run_while_holding().await {
                self.store_failed(failed.operation, &failed.error);
            }
            tokio::time::sleep(IDLE_WAIT).await;
        }
    }

    /// Claims the extension's lease and hands it events until the claim is
    /// lost or the store fails.
    async fn run_while_holding(&self) -> Result<(), Failed> {
        let lease = Lease {
            store: &*self.tenant.store,
            tenant: &self.tenant.id,
            name: &self.lease_name,
            holder: &self.holder,
        };
        let Some(start) = lease.claim(self.start.as_deref()).await? else {
            return Ok(());
        };
        let mut cursor = Some(start);

        let mut renewed = Instant::now();
        loop {
            let page = lease.next_page(&mut cursor, PAGE).await?;
            for event in &page.events {
                if self.extension.wants(&event.kind) {
                    self.handle(event).await;
                }
            }
            cursor = Some(page.next_cursor.clone());
            // An idle extension saves only to renew its lease, so it does
            // not make the store flush a write twice a second.
            if page.events.is_empty() && renewed.elapsed() < LEASE / 3 {
                tokio::time::sleep(IDLE_WAIT).await;
                continue;
            }
            renewed = Instant::now();
            if !lease.save(&page.next_cursor).await? {
                return Ok(());
            }
            if page.events.is_empty() {
                tokio::time::sleep(IDLE_WAIT).await;
            }
        }
    }

    async fn handle(&self, event: &Event) {
        let outcome = match self
            .extension
            .handle(&self.tenant, &self.state.metrics, event)
            .await
        {
            Ok(()) => "handled",
            Err(error) => {
                tracing::warn!(
                    tenant = %self.tenant.id,
                    extension = self.extension.name(),
                    event = %event.id,
                    code = error.code,
                    error = %error.message,
                    "Extension failed to handle an event; skipping it"
                );
                "failed"
            }
        };
        self.state
            .metrics
            .extension_events
            .get_or_create(&ExtensionLabels {
                tenant: self.tenant.id.clone(),
                extension: self.extension.name(),
                outcome,
            })
            .inc();
    }

    fn store_failed(&self, operation: &str, error: &StoreError) {
        tracing::error!(
            tenant = %self.tenant.id,
            extension = self.extension.name(),
            operation,
            error = %crate::server::error_chain(error),
            "Extension paused: the store failed"
        );
    }
}
