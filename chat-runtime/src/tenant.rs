//! The tenants this process serves, and applying a changed tenant list
//! without touching the connections of tenants that did not change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Semaphore;

use crate::chat::now_millis;
use crate::config::{Config, StoreSettings, TenantSettings};
use crate::hub::{ConnectionId, Hub, Outbound};
use crate::limits::RateLimiter;
use crate::moderation;
use crate::presence::{Change, Presence};
use crate::relay::{Action, Relay, TenantLink};
use crate::store::scylla::ConnectingStore;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{Store, StoreError};
use crate::ws::protocol::ServerFrame;

/// One tenant's live state in this process.
pub struct Tenant {
    pub id: String,
    settings: RwLock<Arc<TenantSettings>>,
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    pub presence: Presence,
    pub rate: RateLimiter,
    /// Bounds the calls to the tenant's moderation hook under way in this
    /// process; see [`moderation::hook::MAX_CONCURRENT_CALLS`]. It outlives
    /// reloads, so changing the hook does not reset the count.
    pub hook_calls: Semaphore,
    /// Publishes events to the tenant's other replicas, when a Redis relay
    /// is configured.
    relay: Option<TenantLink>,
}

impl Tenant {
    /// Returns the current settings. A reload swaps them for later calls.
    pub fn settings(&self) -> Arc<TenantSettings> {
        Arc::clone(
            &self
                .settings
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Hands `event` to the sockets of `users` in this process, except the
    /// socket `skip`, and publishes it to the other replicas.
    pub fn deliver(&self, users: &[String], event: Outbound, skip: Option<ConnectionId>) {
        self.hub.send_to_users(users, &event, skip);
        if self.relay.is_none() {
            return;
        }
        let users = users.to_vec();
        let (action, frame) = match event {
            Outbound::Message {
                channel_id,
                seq,
                frame,
                ..
            } => {
                let channel_id = channel_id.to_string();
                let action = Action::Message {
                    users,
                    channel_id,
                    seq,
                };
                (action, frame)
            }
            Outbound::Event(frame) => (Action::Event { users }, frame),
            Outbound::Typing {
                channel_id,
                user_id,
                start,
                frame,
            } => {
                let action = Action::Typing {
                    users,
                    channel_id: channel_id.to_string(),
                    user: user_id.to_string(),
                    start,
                };
                (action, frame)
            }
            Outbound::Added {
                channel_id,
                last_seq,
                frame,
            } => {
                let channel_id = channel_id.to_string();
                let action = Action::Added {
                    users,
                    channel_id,
                    last_seq,
                };
                (action, frame)
            }
            Outbound::Removed { channel_id, frame } => {
                let channel_id = channel_id.to_string();
                (Action::Removed { users, channel_id }, frame)
            }
            Outbound::Revoked { not_before } => {
                (Action::Revoked { users, not_before }, Utf8Bytes::default())
            }
            // Closes of slow consumers and resyncs concern this process only.
            Outbound::Close { .. } | Outbound::Resync(_) => return,
        };
        self.publish(action, frame.as_str());
    }

    /// Closes every socket of `user`, in this process and in the others.
    pub fn close_user(&self, user: &str, close_code: u16, code: &'static str, message: &str) {
        self.hub.close_user(user, close_code, code, message);
        if self.relay.is_some() {
            let action = Action::CloseUser {
                user: user.to_owned(),
                code: code.to_owned(),
            };
            self.publish(action, message);
        }
    }

    /// Counts a newly opened socket of `user`, telling watchers and the
    /// other replicas when that changes what they know.
    pub fn socket_opened(&self, user: &str) {
        let (change, first_here) = self.presence.socket_opened(user, now_millis());
        if let Some(change) = change {
            self.tell_watchers(&change);
        }
        if first_here {
            self.publish_presence(user, true, None);
        }
    }

    /// Counts a closed socket of `user`, as [`Tenant::socket_opened`] does.
    pub fn socket_closed(&self, user: &str) {
        let now = now_millis();
        let (change, last_here) = self.presence.socket_closed(user, now);
        if let Some(change) = change {
            self.tell_watchers(&change);
        }
        if last_here {
            self.publish_presence(user, false, Some(now));
        }
    }

    /// Sends a `presence` frame about the changed user to its watchers in
    /// this process.
    pub fn tell_watchers(&self, change: &Change) {
        if change.watchers.is_empty() {
            return;
        }
        let frame = ServerFrame::Presence {
            user_id: &change.user,
            online: change.state.online,
            last_seen: change.state.last_seen,
        }
        .to_text();
        self.hub
            .send_to_connections(&change.watchers, &Outbound::Event(frame));
    }

    /// Stops the sockets of `blocker`, on every replica, from watching the
    /// presence of `blocked`.
    pub fn stop_watching(&self, blocker: &str, blocked: &str) {
        self.presence.stop_watching(blocker, blocked);
        let action = Action::StopWatching {
            watcher: blocker.to_owned(),
            user: blocked.to_owned(),
        };
        self.publish(action, "");
    }

    /// Publishes the users with a socket open in this process, so the other
    /// replicas renew their entries.
    pub fn publish_presence_refresh(&self) {
        if self.relay.is_some() {
            let users = self.presence.local_users();
            self.publish(Action::PresenceRefresh { users }, "");
        }
    }

    /// Asks the other replicas to publish their refreshes now.
    pub fn query_presence(&self) {
        self.publish(Action::PresenceQuery, "");
    }

    fn publish_presence(&self, user: &str, online: bool, last_seen: Option<i64>) {
        if self.relay.is_some() {
            let action = Action::Presence {
                user: user.to_owned(),
                online,
                last_seen,
            };
            self.publish(action, "");
        }
    }

    /// Publishes `action` to the other replicas, tagged with the tenant's
    /// current API key secret, when a relay is configured.
    fn publish(&self, action: Action, frame: &str) {
        let Some(relay) = &self.relay else {
            return;
        };
        let settings = self.settings();
        // Validation keeps at least one key in every tenant.
        let key = settings
            .api_keys
            .first()
            .map_or(&[][..], |key| key.secret.as_slice());
        relay.publish(action, frame, key);
    }

    /// Returns the secrets a relayed event of this tenant may be tagged with.
    pub fn relay_keys(&self) -> Vec<Vec<u8>> {
        self.settings()
            .api_keys
            .iter()
            .map(|key| key.secret.clone())
            .collect()
    }

    fn replace_settings(&self, settings: TenantSettings) {
        *self
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(settings);
    }
}

/// Changes made by a reload, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub updated: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("failed to create data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open the store of tenant {tenant}")]
    OpenStore {
        tenant: String,
        #[source]
        source: StoreError,
    },
}

pub struct Tenants {
    map: RwLock<HashMap<String, Arc<Tenant>>>,
    data_dir: PathBuf,
    relay: Option<Arc<Relay>>,
}

impl Tenants {
    /// Opens the store of every configured tenant. With `relay`, tenants
    /// publish their events to the other replicas through it.
    pub async fn open(config: &Config, relay: Option<Arc<Relay>>) -> Result<Tenants, TenantError> {
        let data_dir = config.server.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| TenantError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let mut map = HashMap::new();
        for settings in &config.tenants {
            let tenant = match open_tenant(&data_dir, settings.clone(), relay.as_ref()).await {
                Ok(tenant) => tenant,
                Err(error) => {
                    let opened: Vec<Arc<Tenant>> = map.into_values().collect();
                    close_stores(&opened).await;
                    return Err(error);
                }
            };
            map.insert(settings.id.clone(), tenant);
        }
        Ok(Tenants {
            map: RwLock::new(map),
            data_dir,
            relay,
        })
    }

    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.read().get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Tenant>> {
        self.read().values().cloned().collect()
    }

    /// True when any tenant allows `origin`. Used only for CORS preflights
    /// that do not say which tenant they are for; the actual request is then
    /// checked against its own tenant.
    pub fn any_allows_origin(&self, origin: &str) -> bool {
        self.read()
            .values()
            .any(|tenant| tenant.settings().origin_allowed(origin))
    }

    /// Brings the tenant list in line with `config`. Unchanged tenants keep
    /// their connections; updated ones keep them too and use the new
    /// settings from the next request on; removed ones have their sockets
    /// closed and their store flushed.
    pub async fn apply(&self, config: &Config) -> Result<ReloadSummary, TenantError> {
        // New stores open first: if one fails, nothing has changed yet and
        // the previous configuration stays in force as a whole.
        let mut summary = ReloadSummary::default();
        let mut opened = Vec::new();
        for settings in config
            .tenants
            .iter()
            .filter(|settings| self.get(&settings.id).is_none())
        {
            match open_tenant(&self.data_dir, settings.clone(), self.relay.as_ref()).await {
                Ok(tenant) => opened.push(tenant),
                Err(error) => {
                    close_stores(&opened).await;
                    return Err(error);
                }
            }
            summary.added.push(settings.id.clone());
        }

        for settings in &config.tenants {
            if let Some(tenant) = self.get(&settings.id)
                && *tenant.settings() != *settings
            {
                if tenant.settings().store != settings.store {
                    tracing::warn!(tenant = %settings.id, "The tenant's store settings changed and take effect at the next restart");
                }
                tenant.replace_settings(settings.clone());
                summary.updated.push(settings.id.clone());
            }
        }

        let removed: Vec<Arc<Tenant>> = {
            let mut map = self
                .map
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for tenant in opened {
                map.insert(tenant.id.clone(), tenant);
            }
            let gone: Vec<String> = map
                .keys()
                .filter(|id| !config.tenants.iter().any(|t| &t.id == *id))
                .cloned()
                .collect();
            gone.iter().filter_map(|id| map.remove(id)).collect()
        };
        for tenant in removed {
            tenant.hub.close_all(
                4004,
                "tenant_removed",
                "this tenant is no longer served here",
            );
            if let Err(error) = tenant.store.close().await {
                tracing::error!(tenant = %tenant.id, error = %error, "Failed to close the store of a removed tenant");
            }
            summary.removed.push(tenant.id.clone());
        }
        Ok(summary)
    }

    /// Closes every tenant's sockets and stores, for shutdown.
    pub async fn close_all(&self) {
        for tenant in self.all() {
            if let Err(error) = tenant.store.close().await {
                tracing::error!(tenant = %tenant.id, error = %error, "Failed to close store");
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Tenant>>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn close_stores(tenants: &[Arc<Tenant>]) {
    for tenant in tenants {
        if let Err(error) = tenant.store.close().await {
            tracing::warn!(tenant = %tenant.id, error = %error, "Failed to close a store opened for a rejected reload");
        }
    }
}

/// The data file of a tenant. The tenant id is a DNS label, so it is a safe
/// file name with no path separators.
pub fn tenant_data_file(data_dir: &Path, tenant_id: &str) -> PathBuf {
    data_dir.join(format!("{tenant_id}.sqlite3"))
}

async fn open_tenant(
    data_dir: &Path,
    settings: TenantSettings,
    relay: Option<&Arc<Relay>>,
) -> Result<Arc<Tenant>, TenantError> {
    let store: Arc<dyn Store> = match &settings.store {
        StoreSettings::Embedded => {
            let path = tenant_data_file(data_dir, &settings.id);
            let store = SqliteStore::open(&path, SqliteOptions::default()).map_err(|source| {
                TenantError::OpenStore {
                    tenant: settings.id.clone(),
                    source,
                }
            })?;
            Arc::new(store)
        }
        // The cluster may be unreachable now, so the store connects in the
        // background and reports not ready until it has.
        StoreSettings::Scylla { config, base } => Arc::new(ConnectingStore::start(
            config.as_ref().clone(),
            base.clone(),
        )),
    };
    let key = settings
        .api_keys
        .first()
        .map_or(&[][..], |key| key.secret.as_slice());
    let relay = relay.map(|relay| relay.link(&settings.id, key));
    Ok(Arc::new(Tenant {
        id: settings.id.clone(),
        settings: RwLock::new(Arc::new(settings)),
        store,
        hub: Hub::default(),
        presence: Presence::default(),
        rate: RateLimiter::default(),
        hook_calls: Semaphore::new(moderation::hook::MAX_CONCURRENT_CALLS),
        relay,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ScyllaDB tenant whose cluster cannot be reached does not stop the
    /// other tenants: it is opened, reports not ready, and refuses writes.
    #[tokio::test]
    async fn unreachable_scylla_tenant_is_not_ready() {
        // Binding and dropping a listener leaves a loopback port with
        // nothing behind it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let key = "      - id: k1\n        secret: 0123456789abcdef0123456789abcdef\n";
        let text = format!(
            "server:\n  data_dir: data\ntenants:\n  - id: acme\n    display_name: Acme\n    api_keys:\n{key}  - id: chotot\n    display_name: Chợ Tốt\n    api_keys:\n{key}    store:\n      kind: scylla\n      contact_points: [\"127.0.0.1:{port}\"]\n      datacenter: dc1\n      keyspace: chotot_chat\n      connect_timeout_ms: 500\n"
        );
        let config = Config::parse(&text, dir.path()).unwrap();

        let tenants = Tenants::open(&config, None).await.unwrap();
        let embedded = tenants.get("acme").unwrap();
        assert!(embedded.store.is_ready());
        let scylla = tenants.get("chotot").unwrap();
        assert!(!scylla.store.is_ready());
        let user = scylla
            .store
            .upsert_user("lan", "Lan", serde_json::json!({}), 1)
            .await;
        assert!(matches!(user, Err(StoreError::Unavailable(_))), "{user:?}");
        embedded
            .store
            .upsert_user("lan", "Lan", serde_json::json!({}), 1)
            .await
            .unwrap();
        tenants.close_all().await;
    }
}
