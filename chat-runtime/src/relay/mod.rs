//! Live events between runtime processes (replicas) that serve the same
//! tenants, through Redis pub/sub.
//!
//! A replica hands each event to its own sockets at once and publishes it
//! on the tenant's Redis channel, `<prefix>:db<database>:tenant:<tenant
//! id>`; the other replicas hand it to theirs. Tenant ids are DNS labels and
//! the prefix may not contain `:`, so two tenants, deployments or databases
//! never share a channel, whatever ids users choose for channels and users
//! (those travel inside the envelope, never in the channel name). Redis
//! pub/sub ignores the database number, hence its place in the name.
//!
//! Redis pub/sub delivers at most once, so the relay never sits on the
//! message path: a message is stored and acknowledged whether or not Redis
//! is up, and the store stays the source of truth. What the relay may have
//! lost is repaired by a resync, which makes sockets read what they missed
//! from the store:
//! - a publication this replica could not hand to Redis is remembered (per
//!   channel, with its sequence number), and once Redis answers again a
//!   resync for those channels is published to every replica;
//! - when this replica's own subscription drops (Redis restarted, or it
//!   closed a subscriber that fell behind its output-buffer limit), every
//!   local socket resyncs all of its channels after the subscription is back;
//! - a replica that starts announces a resync of every channel of each of
//!   its tenants, because an earlier process in its place may have stopped
//!   with losses it could not announce.
//!
//! While Redis is unreachable each replica still delivers to its own
//! sockets, `/readyz` stays ready with a degraded detail, and the
//! `parley_relay_*` metrics show the state.

mod config;
mod envelope;
mod publisher;
mod subscriber;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, mpsc};

pub use config::{RedisConfig, RelaySettings};
pub use envelope::Action;

use crate::api::SharedState;
use crate::metrics::Metrics;

/// Publications waiting for the publisher task. A message envelope is
/// typically under 1 KiB, so a full queue takes some MiB. Past it,
/// publications are dropped and announced as a resync, so senders never
/// wait for Redis.
pub const PUBLISH_QUEUE: usize = 8_192;

/// Channels with dropped messages remembered per tenant. Beyond it the
/// tenant's resync covers every channel, which costs one store read per
/// socket instead of one per affected channel.
const MAX_LOST_CHANNELS: usize = 4_096;

/// Socket closes (user deletions) remembered per tenant while Redis is
/// unreachable. Beyond it the resync covers every channel, and a resync of
/// every channel also closes the sockets of deleted users.
const MAX_LOST_CLOSES: usize = 1_024;

/// Bound on connecting to Redis and on each command, so a silent Redis
/// (a half-open connection, a paused server) is noticed in seconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// Waits between reconnection attempts: doubling from the first to the
/// last, each with up to half of it added at random so replicas do not
/// reconnect in step.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(100);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// One event on its way to Redis.
struct Publication {
    tenant: Arc<str>,
    channel: Arc<str>,
    payload: Arc<[u8]>,
    /// The tenant key that tagged `payload`, to tag the announcements that
    /// repair a loss of it.
    key: Arc<[u8]>,
    /// Repair a resync needs if the publication is dropped.
    loss: Loss,
}

#[derive(Debug, Clone)]
enum Loss {
    Message {
        channel_id: String,
        seq: u64,
    },
    CloseUser {
        envelope: Arc<[u8]>,
    },
    /// Membership changes and resyncs: every channel of the tenant.
    All,
    /// Typing indicators and read positions, which no client needs late, and
    /// presence, which the next refresh repairs.
    Nothing,
}

/// Channels, closes and key for a tenant's next resync announcement.
#[derive(Debug)]
struct Lost {
    channels: HashMap<String, u64>,
    all: bool,
    closes: Vec<Arc<[u8]>>,
    key: Arc<[u8]>,
}

/// Process-wide counters and gauges of the relay.
#[derive(Clone)]
pub struct RelayMetrics {
    pub published: Counter,
    pub received: Counter,
    /// Envelopes with a tag that matches no key of their tenant, or that
    /// could not be decoded.
    pub rejected: Counter,
    pub dropped: Counter,
    pub resyncs: Counter,
    pub subscription_losses: Counter,
    pub publisher_connected: Gauge,
    pub subscriber_connected: Gauge,
}

/// The relay of one process: a queue to the publisher task, the losses to
/// announce, and the state of both Redis connections.
pub struct Relay {
    /// Random id of this process, so a replica skips its own envelopes.
    instance: String,
    settings: RelaySettings,
    queue: mpsc::Sender<Publication>,
    queue_receiver: Mutex<Option<mpsc::Receiver<Publication>>>,
    lost: Mutex<HashMap<Arc<str>, Lost>>,
    has_lost: AtomicBool,
    last_error: Mutex<Option<String>>,
    tenants_changed: Notify,
    metrics: RelayMetrics,
}

/// A tenant's handle on the relay.
#[derive(Clone)]
pub struct TenantLink {
    relay: Arc<Relay>,
    tenant: Arc<str>,
    channel: Arc<str>,
}

impl Relay {
    pub fn new(settings: RelaySettings, metrics: &Metrics) -> Arc<Relay> {
        let (queue, receiver) = mpsc::channel(PUBLISH_QUEUE);
        let instance = format!("{:016x}", rand::random::<u64>());
        Arc::new(Relay {
            instance,
            settings,
            queue,
            queue_receiver: Mutex::new(Some(receiver)),
            lost: Mutex::new(HashMap::new()),
            has_lost: AtomicBool::new(false),
            last_error: Mutex::new(None),
            tenants_changed: Notify::new(),
            metrics: metrics.relay.clone(),
        })
    }

    /// Starts the publisher and subscriber tasks. They stop at shutdown.
    /// A second call does nothing.
    pub fn start(self: &Arc<Self>, state: SharedState) {
        let Some(receiver) = lock(&self.queue_receiver).take() else {
            return;
        };
        tracing::info!(url = %self.settings.redacted_url(), instance = %self.instance, "Relaying live events through Redis");
        tokio::spawn(publisher::run(
            Arc::clone(self),
            receiver,
            state.shutdown.clone(),
        ));
        tokio::spawn(refresh_presence(state.clone()));
        tokio::spawn(subscriber::run(Arc::clone(self), state));
    }

    /// Returns the tenant's handle, and queues the resync of every channel
    /// that a replica announces when it starts serving a tenant. `key` is
    /// the tenant's current API key secret.
    pub fn link(self: &Arc<Self>, tenant_id: &str, key: &[u8]) -> TenantLink {
        let tenant: Arc<str> = Arc::from(tenant_id);
        let mut lost = lock(&self.lost);
        let entry = lost
            .entry(Arc::clone(&tenant))
            .or_insert_with(|| Lost::new(key));
        entry.all = true;
        entry.channels.clear();
        self.has_lost.store(true, Ordering::Release);
        drop(lost);
        TenantLink {
            relay: Arc::clone(self),
            tenant,
            channel: Arc::from(self.channel_name(tenant_id)),
        }
    }

    /// Tells the subscriber that tenants were added or removed.
    pub fn tenants_changed(&self) {
        self.tenants_changed.notify_one();
    }

    /// Describes what is not working, or returns `None` when both Redis
    /// connections are up.
    pub fn degraded(&self) -> Option<String> {
        let publishing = self.metrics.publisher_connected.get() == 1;
        let subscribed = self.metrics.subscriber_connected.get() == 1;
        if publishing && subscribed {
            return None;
        }
        let error = lock(&self.last_error).clone().unwrap_or_default();
        Some(format!(
            "live events are not relayed between replicas (publishing: {}, subscribed: {}): {error}",
            up_or_down(publishing),
            up_or_down(subscribed),
        ))
    }

    fn channel_name(&self, tenant_id: &str) -> String {
        format!("{}{tenant_id}", self.channel_stem())
    }

    /// Returns the tenant id in a channel name, when the name is one of ours.
    fn tenant_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(self.channel_stem().as_str())
    }

    fn channel_stem(&self) -> String {
        let settings = &self.settings;
        format!(
            "{}:db{}:tenant:",
            settings.channel_prefix, settings.database
        )
    }

    fn record_error(&self, what: &str, error: &dyn std::fmt::Display) {
        *lock(&self.last_error) = Some(format!("{what}: {error}"));
    }

    /// Remembers what a dropped publication must have repaired.
    fn record_lost(&self, publication: Publication) {
        self.metrics.dropped.inc();
        let mut lost = lock(&self.lost);
        let tenant = lost
            .entry(publication.tenant)
            .or_insert_with(|| Lost::new(&publication.key));
        tenant.key = publication.key;
        match publication.loss {
            Loss::Message { channel_id, seq } => {
                if tenant.all {
                    return;
                }
                let newest = tenant.channels.entry(channel_id).or_insert(seq);
                *newest = (*newest).max(seq);
                if tenant.channels.len() > MAX_LOST_CHANNELS {
                    tenant.all = true;
                    tenant.channels.clear();
                }
            }
            Loss::CloseUser { envelope } => {
                if tenant.closes.len() < MAX_LOST_CLOSES {
                    tenant.closes.push(envelope);
                } else {
                    tenant.all = true;
                    tenant.channels.clear();
                }
            }
            Loss::All => {
                tenant.all = true;
                tenant.channels.clear();
            }
            Loss::Nothing => {}
        }
        self.has_lost.store(true, Ordering::Release);
    }

    /// Takes the losses to announce, as publications: the closes first,
    /// then one resync per tenant.
    fn take_lost(&self) -> Vec<Publication> {
        if !self.has_lost.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        let lost = std::mem::take(&mut *lock(&self.lost));
        let mut announcements = Vec::new();
        for (tenant, lost) in lost {
            let channel: Arc<str> = Arc::from(self.channel_name(&tenant));
            for envelope in lost.closes {
                announcements.push(Publication {
                    tenant: Arc::clone(&tenant),
                    channel: Arc::clone(&channel),
                    payload: Arc::clone(&envelope),
                    key: Arc::clone(&lost.key),
                    loss: Loss::CloseUser { envelope },
                });
            }
            let channels = (!lost.all).then(|| lost.channels.into_iter().collect::<Vec<_>>());
            if channels.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            let action = Action::Resync { channels };
            let payload = envelope::encode(&self.instance, action, "", &lost.key);
            announcements.push(Publication {
                tenant,
                channel,
                payload,
                key: lost.key,
                loss: Loss::All,
            });
        }
        announcements
    }
}

impl Lost {
    fn new(key: &[u8]) -> Lost {
        Lost {
            channels: HashMap::new(),
            all: false,
            closes: Vec::new(),
            key: Arc::from(key),
        }
    }
}

impl RelaySettings {
    fn redacted_url(&self) -> String {
        config::redact_url(&self.url)
    }
}

impl TenantLink {
    /// Queues `action` with its frame for the other replicas, tagged with
    /// the tenant's current API key secret `key`. Never waits: when the
    /// queue is full the publication is dropped and a resync is announced
    /// later.
    pub fn publish(&self, action: Action, frame: &str, key: &[u8]) {
        let message = match &action {
            Action::Message {
                channel_id, seq, ..
            } => Some((channel_id.clone(), *seq)),
            _ => None,
        };
        // A lost revocation is repaired too: a resync of every channel also
        // checks each socket's token against the user's revocation bound.
        let membership = matches!(
            action,
            Action::Added { .. }
                | Action::Removed { .. }
                | Action::Resync { .. }
                | Action::Revoked { .. }
        );
        let close = matches!(action, Action::CloseUser { .. });
        let payload = envelope::encode(&self.relay.instance, action, frame, key);
        let loss = match message {
            Some((channel_id, seq)) => Loss::Message { channel_id, seq },
            None if close => Loss::CloseUser {
                envelope: Arc::clone(&payload),
            },
            None if membership => Loss::All,
            None => Loss::Nothing,
        };
        let publication = Publication {
            tenant: Arc::clone(&self.tenant),
            channel: Arc::clone(&self.channel),
            payload,
            key: Arc::from(key),
            loss,
        };
        if let Err(error) = self.relay.queue.try_send(publication) {
            let publication = match error {
                mpsc::error::TrySendError::Full(publication)
                | mpsc::error::TrySendError::Closed(publication) => publication,
            };
            self.relay.record_lost(publication);
        }
    }
}

/// Announces this replica's online users every
/// [`crate::presence::REFRESH_INTERVAL`], and expires the other replicas'
/// announcements that were not renewed, until shutdown.
async fn refresh_presence(state: SharedState) {
    let mut shutdown = state.shutdown.clone();
    let mut interval = tokio::time::interval(crate::presence::REFRESH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = crate::api::shutdown_started(&mut shutdown) => return,
        }
        let now = std::time::Instant::now();
        let now_ms = crate::chat::now_millis();
        for tenant in state.tenants.all() {
            tenant.publish_presence_refresh();
            for change in tenant.presence.expire(now, now_ms) {
                tenant.tell_watchers(&change);
            }
        }
    }
}

/// Waits before reconnecting, growing after each failure.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: FIRST_RETRY_WAIT,
        }
    }

    fn reset(&mut self) {
        self.next = FIRST_RETRY_WAIT;
    }

    fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX_RETRY_WAIT);
        let jitter_ms = rand::random_range(0..=base.as_millis() as u64 / 2);
        base + Duration::from_millis(jitter_ms)
    }
}

fn up_or_down(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn relay() -> Arc<Relay> {
        let settings = RedisConfig {
            url: String::from("redis://127.0.0.1:1/3"),
            password_file: None,
            password_env: None,
            channel_prefix: String::from("test"),
        }
        .validate(std::path::Path::new("."))
        .unwrap();
        Relay::new(settings, &Metrics::default())
    }

    fn lost_publication(loss: Loss) -> Publication {
        Publication {
            tenant: Arc::from("acme"),
            channel: Arc::from("test:db3:tenant:acme"),
            payload: Arc::from(&b""[..]),
            key: Arc::from(KEY),
            loss,
        }
    }

    fn resync_channels(publication: &Publication) -> Option<Vec<(String, u64)>> {
        match envelope::decode(&publication.payload, [KEY])
            .unwrap()
            .action
        {
            Action::Resync { channels } => channels,
            other => panic!("expected a resync, got {other:?}"),
        }
    }

    #[test]
    fn channel_names_map_back_to_tenants() {
        let relay = relay();
        let name = relay.channel_name("acme");
        assert_eq!(name, "test:db3:tenant:acme");
        assert_eq!(relay.tenant_of_channel(&name), Some("acme"));
        assert_eq!(relay.tenant_of_channel("test:db0:tenant:acme"), None);
        assert_eq!(relay.tenant_of_channel("other:db3:tenant:acme"), None);
    }

    #[test]
    fn new_link_announces_a_full_resync() {
        let relay = relay();
        let _link = relay.link("acme", KEY);
        let announcements = relay.take_lost();
        assert_eq!(announcements.len(), 1);
        assert_eq!(resync_channels(&announcements[0]), None);
        assert!(relay.take_lost().is_empty());
    }

    #[test]
    fn dropped_messages_become_one_resync_per_tenant() {
        let relay = relay();
        for seq in [3, 9, 5] {
            relay.record_lost(lost_publication(Loss::Message {
                channel_id: String::from("g:1"),
                seq,
            }));
        }
        let announcements = relay.take_lost();
        assert_eq!(announcements.len(), 1);
        assert_eq!(&*announcements[0].channel, "test:db3:tenant:acme");
        assert_eq!(
            resync_channels(&announcements[0]),
            Some(vec![(String::from("g:1"), 9)])
        );
        assert!(relay.take_lost().is_empty());
    }

    #[test]
    fn lost_membership_change_resyncs_every_channel() {
        let relay = relay();
        relay.record_lost(lost_publication(Loss::All));
        let announcements = relay.take_lost();
        assert_eq!(resync_channels(&announcements[0]), None);
    }

    #[test]
    fn lost_close_is_announced_again_before_the_resync() {
        let relay = relay();
        let action = Action::CloseUser {
            user: String::from("lan"),
            code: String::from("user_deleted"),
        };
        let close = envelope::encode(&relay.instance, action, "this user was deleted", KEY);
        relay.record_lost(lost_publication(Loss::CloseUser {
            envelope: Arc::clone(&close),
        }));
        let announcements = relay.take_lost();
        assert_eq!(announcements.len(), 1);
        assert_eq!(&*announcements[0].payload, &*close);
    }

    #[test]
    fn many_lost_channels_widen_to_all() {
        let relay = relay();
        for index in 0..=MAX_LOST_CHANNELS {
            relay.record_lost(lost_publication(Loss::Message {
                channel_id: format!("g:{index}"),
                seq: 1,
            }));
        }
        let announcements = relay.take_lost();
        assert_eq!(resync_channels(&announcements[0]), None);
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut backoff = Backoff::new();
        let first = backoff.next_wait();
        assert!(first >= FIRST_RETRY_WAIT);
        assert!(first <= FIRST_RETRY_WAIT * 3 / 2);
        for _ in 0..20 {
            let wait = backoff.next_wait();
            assert!(wait <= MAX_RETRY_WAIT * 3 / 2);
        }
        backoff.reset();
        assert!(backoff.next_wait() <= FIRST_RETRY_WAIT * 3 / 2);
    }
}
