//! Webhooks: each endpoint of a tenant receives the tenant's event log as
//! signed POST requests, one event at a time and in log order.
//!
//! Delivery is at least once. An endpoint's cursor is saved in the store
//! after the events before it were delivered or put on the dead-letter
//! list, so a restart resends at most the events since the last save, and
//! receivers drop repeats by event id. Of the replicas serving a tenant,
//! the one holding the endpoint's lease in the store delivers, so events
//! reach the endpoint in one order.
//!
//! An event that fails `max_attempts` times, with waits that double from
//! `retry_initial_ms` up to a minute, goes to the endpoint's dead-letter
//! list and the next event follows. The list can be read, replayed and
//! cleared through the server API.

mod config;
mod delivery;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use config::{MAX_ENDPOINTS, WebhookConfig, WebhookSettings, validate};
pub use delivery::{Attempt, attempt_once, payload};

use crate::api::{self, SharedState};
use crate::chat::now_millis;
use crate::leases::{Failed, IDLE_WAIT, LEASE, Lease, holder_id};
use crate::store::{DeadLetter, Event, StoreError};
use crate::tenant::Tenant;

/// Events read from the log at once.
const PAGE: u32 = 100;
/// Maximum wait between two attempts at one event.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// Pause before the supervisor checks the configuration again.
const SUPERVISE_INTERVAL: Duration = Duration::from_secs(1);

/// Starting cursors of endpoints that never delivered, keyed by tenant and
/// endpoint name: the end of the event log when the endpoint was first
/// configured.
pub type Starts = HashMap<(String, String), String>;

/// Reads the end of the event log for every configured endpoint. Called
/// before the runtime accepts requests, so a new endpoint receives every
/// event written from then on.
pub async fn starting_cursors(state: &SharedState) -> Starts {
    let mut starts = Starts::new();
    for tenant in state.tenants.all() {
        for endpoint in &tenant.settings().webhooks {
            match tenant.store.event_log_end().await {
                Ok(end) => {
                    starts.insert((tenant.id.clone(), endpoint.name.clone()), end);
                }
                Err(error) => {
                    tracing::warn!(tenant = %tenant.id, endpoint = %endpoint.name, error = %crate::server::error_chain(&error), "Failed to read the end of the event log; a new endpoint starts where the log ends when it is first claimed")
                }
            }
        }
    }
    starts
}

/// Starts and stops one delivery task per configured endpoint until
/// shutdown, following configuration reloads.
pub async fn supervise(state: SharedState, mut starts: Starts) {
    let client = match crate::http::client() {
        Ok(client) => client.clone(),
        Err(error) => {
            tracing::error!(error = %error, "Failed to build the HTTP client; webhooks are not delivered");
            return;
        }
    };
    let holder = holder_id();
    let mut shutdown = state.shutdown.clone();
    let mut running: HashMap<(String, String), (WebhookSettings, tokio::task::AbortHandle)> =
        HashMap::new();
    loop {
        let mut configured = HashMap::new();
        for tenant in state.tenants.all() {
            for endpoint in &tenant.settings().webhooks {
                let key = (tenant.id.clone(), endpoint.name.clone());
                configured.insert(key, (Arc::clone(&tenant), endpoint.clone()));
            }
        }

        running.retain(|key, (settings, task)| {
            let keep = configured
                .get(key)
                .is_some_and(|(_, configured)| configured == settings);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (tenant, settings)) in configured {
            if running.contains_key(&key) {
                continue;
            }
            if !starts.contains_key(&key)
                && let Ok(end) = tenant.store.event_log_end().await
            {
                starts.insert(key.clone(), end);
            }
            let endpoint = Endpoint {
                start: starts.get(&key).cloned(),
                tenant,
                settings: settings.clone(),
                client: client.clone(),
                holder: holder.clone(),
                metrics: Arc::clone(&state),
            };
            let task = tokio::spawn(endpoint.run());
            running.insert(key, (settings, task.abort_handle()));
        }

        tokio::select! {
            _ = tokio::time::sleep(SUPERVISE_INTERVAL) => {}
            _ = api::shutdown_started(&mut shutdown) => break,
        }
    }
    // Aborting loses nothing: an event whose delivery was cut short is sent
    // again from the last saved cursor.
    for (_, (_, task)) in running {
        task.abort();
    }
}

/// The delivery task of one endpoint.
struct Endpoint {
    /// Cursor to start from when the endpoint never delivered.
    start: Option<String>,
    tenant: Arc<Tenant>,
    settings: WebhookSettings,
    client: reqwest::Client,
    holder: String,
    metrics: SharedState,
}

impl Endpoint {
    async fn run(self) {
        loop {
            if let Err(failed) = self.deliver_while_holding().await {
                self.store_failed(failed.operation, &failed.error);
            }
            tokio::time::sleep(IDLE_WAIT).await;
        }
    }

    fn lease(&self) -> Lease<'_> {
        Lease {
            store: &*self.tenant.store,
            tenant: &self.tenant.id,
            name: &self.settings.name,
            holder: &self.holder,
        }
    }

    /// Claims the endpoint and delivers events until the claim is lost or
    /// the store fails. Returns at once when another replica has the lease.
    async fn deliver_while_holding(&self) -> Result<(), Failed> {
        let lease = self.lease();
        // A new endpoint receives the events written after it was
        // configured.
        let Some(start) = lease.claim(self.start.as_deref()).await? else {
            return Ok(());
        };
        let mut cursor = Some(start);

        loop {
            let page = lease.next_page(&mut cursor, PAGE).await?;
            for event in &page.events {
                if self.settings.wants(&event.kind) && !self.deliver(event, cursor.as_deref()).await
                {
                    return Ok(());
                }
                cursor = Some(event.cursor.clone());
            }
            if let Some(cursor) = &cursor
                && !lease.save(cursor).await?
            {
                return Ok(());
            }
            if page.events.is_empty() {
                tokio::time::sleep(IDLE_WAIT).await;
            }
        }
    }

    /// Delivers one event with retries, or puts it on the dead-letter
    /// list. Returns false when the lease was lost while waiting to retry.
    /// `cursor` is the position before the event, saved with each lease
    /// renewal so that progress is never recorded past an undelivered event.
    async fn deliver(&self, event: &Event, cursor: Option<&str>) -> bool {
        let body = payload(&self.tenant, event).await;
        let mut wait = self.settings.retry_initial;
        let mut last_error = String::new();
        for attempt in 1..=self.settings.max_attempts {
            if attempt > 1 && !self.wait_holding(wait, cursor).await {
                return false;
            }
            if attempt > 1 {
                wait = (wait * 2).min(MAX_RETRY_WAIT);
            }
            // Renewed before every attempt, which lasts less than the
            // lease, so no other replica takes over while this one sends.
            if !self.renew(cursor).await {
                return false;
            }
            match attempt_once(&self.client, &self.settings, event, &body).await {
                Attempt::Delivered => {
                    self.count("delivered");
                    return true;
                }
                Attempt::Failed(reason) => {
                    self.count("failed");
                    tracing::warn!(tenant = %self.tenant.id, endpoint = %self.settings.name, event = %event.id, attempt, error = %reason, "Webhook attempt failed");
                    last_error = reason;
                }
            }
        }

        let letter = DeadLetter {
            event: event.clone(),
            attempts: self.settings.max_attempts,
            last_error,
            failed_at: now_millis(),
        };
        match self
            .tenant
            .store
            .add_dead_letter(&self.settings.name, letter)
            .await
        {
            Ok(()) => {
                self.count("dead_lettered");
                true
            }
            Err(error) => {
                // Without the letter the event would be lost, so delivery
                // stops here and starts again from this event.
                self.store_failed("keep a dead letter", &error);
                false
            }
        }
    }

    /// Sleeps for `wait`, renewing the lease at least every third of it.
    /// Returns false when the lease was lost.
    async fn wait_holding(&self, wait: Duration, cursor: Option<&str>) -> bool {
        let step = LEASE / 3;
        let mut left = wait;
        while !left.is_zero() {
            let pause = left.min(step);
            tokio::time::sleep(pause).await;
            left -= pause;
            if !self.renew(cursor).await {
                return false;
            }
        }
        true
    }

    async fn renew(&self, cursor: Option<&str>) -> bool {
        let lease = self.lease();
        // Without a cursor nothing can be saved, so the claim is taken
        // again. That fails when another replica has the lease.
        let Some(cursor) = cursor else {
            return lease.reclaim().await;
        };
        match lease.save(cursor).await {
            Ok(held) => held,
            Err(failed) => {
                self.store_failed("renew the webhook lease", &failed.error);
                false
            }
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .metrics
            .webhook_deliveries
            .get_or_create(&crate::metrics::WebhookLabels {
                tenant: self.tenant.id.clone(),
                endpoint: self.settings.name.clone(),
                outcome,
            })
            .inc();
    }

    fn store_failed(&self, operation: &str, error: &StoreError) {
        tracing::error!(
            tenant = %self.tenant.id,
            endpoint = %self.settings.name,
            operation,
            error = %crate::server::error_chain(error),
            "Webhook delivery paused: the store failed"
        );
    }
}
