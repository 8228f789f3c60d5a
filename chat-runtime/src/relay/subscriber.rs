//! The task that receives other replicas' events and hands them to this
//! process's sockets.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};

use super::envelope::{self, Action, Envelope};
use super::{Backoff, COMMAND_TIMEOUT, CONNECT_TIMEOUT, Relay};
use crate::api::{SharedState, shutdown_started};
use crate::chat::now_millis;
use crate::hub::{Outbound, Resync};
use crate::tenant::Tenant;
use crate::ws::protocol::close;

/// Interval of the pings that detect a silent Redis. Redis sends nothing on
/// an idle subscription, so without them a half-open connection would look
/// like a quiet one.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// How long a subscription must have lasted for the retry wait to start
/// again from its shortest after it fails.
const STABLE_SUBSCRIPTION: Duration = Duration::from_secs(30);

pub(super) async fn run(relay: Arc<Relay>, state: SharedState) {
    let mut shutdown = state.shutdown.clone();
    let mut backoff = Backoff::new();
    loop {
        let stopped = tokio::select! {
            stopped = subscribe_and_serve(&relay, &state, &mut backoff) => stopped,
            () = shutdown_started(&mut shutdown) => return,
        };
        relay.metrics.subscriber_connected.set(0);
        if let Err(error) = stopped {
            relay.record_error("the Redis subscription failed", &error);
            tracing::warn!(error = %error, "Redis subscription failed; reconnecting");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_wait()) => {}
            () = shutdown_started(&mut shutdown) => return,
        }
    }
}

/// Subscribes to every served tenant's channel, makes the local sockets
/// catch up on what they may have missed, and then delivers until the
/// subscription fails.
async fn subscribe_and_serve(
    relay: &Relay,
    state: &SharedState,
    backoff: &mut Backoff,
) -> redis::RedisResult<()> {
    let client = redis::Client::open(relay.settings.connection_info()?)?;
    let pubsub = timed(client.get_async_pubsub()).await?;
    let (mut sink, mut stream) = pubsub.split();
    let mut subscribed = HashSet::new();
    update_subscriptions(relay, state, &mut sink, &mut subscribed).await?;

    relay.metrics.subscriber_connected.set(1);
    let subscribed_at = Instant::now();
    tracing::info!(
        channels = subscribed.len(),
        "Relay subscriber connected to Redis"
    );
    // Anything published while this replica was not subscribed is lost to
    // its sockets, so each one reads what it missed from the store. The
    // other replicas' presence is asked for again for the same reason.
    resync_local_sockets(relay, state);
    for tenant in state.tenants.all() {
        tenant.query_presence();
        tenant.publish_presence_refresh();
    }

    let result = serve(relay, state, &mut sink, &mut stream, &mut subscribed).await;
    // A subscription that fails right after it started (a reply the client
    // cannot read, say) must not make the retries spin.
    if subscribed_at.elapsed() >= STABLE_SUBSCRIPTION {
        backoff.reset();
    }
    result
}

async fn serve(
    relay: &Relay,
    state: &SharedState,
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
    subscribed: &mut HashSet<String>,
) -> redis::RedisResult<()> {
    let first_ping = tokio::time::Instant::now() + PING_INTERVAL;
    let mut ping = tokio::time::interval_at(first_ping, PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    relay.metrics.subscription_losses.inc();
                    return Err(closed("Redis closed the subscription"));
                };
                relay.metrics.received.inc();
                deliver(relay, state, message.get_channel_name(), message.get_payload_bytes());
            }
            () = relay.tenants_changed.notified() => {
                update_subscriptions(relay, state, sink, subscribed).await?;
            }
            _ = ping.tick() => {
                // A subscribed RESP2 connection replies to PING with an array,
                // so any reply counts.
                if let Err(error) = timed(sink.ping::<redis::Value>()).await {
                    relay.metrics.subscription_losses.inc();
                    return Err(error);
                }
            }
        }
    }
}

/// Subscribes to the channels of tenants added since the last call and
/// unsubscribes from those of removed ones.
async fn update_subscriptions(
    relay: &Relay,
    state: &SharedState,
    sink: &mut PubSubSink,
    subscribed: &mut HashSet<String>,
) -> redis::RedisResult<()> {
    let wanted: HashSet<String> = state
        .tenants
        .all()
        .iter()
        .map(|tenant| relay.channel_name(&tenant.id))
        .collect();
    let added: Vec<&String> = wanted.difference(subscribed).collect();
    if !added.is_empty() {
        timed(sink.subscribe(&added)).await?;
    }
    let removed: Vec<&String> = subscribed.difference(&wanted).collect();
    if !removed.is_empty() {
        timed(sink.unsubscribe(&removed)).await?;
    }
    *subscribed = wanted;
    Ok(())
}

fn resync_local_sockets(relay: &Relay, state: &SharedState) {
    let resync = Arc::new(Resync::All);
    let mut sockets = 0;
    for tenant in state.tenants.all() {
        sockets += tenant.hub.connection_count();
        tenant.hub.resync(&resync);
    }
    relay.metrics.resyncs.inc();
    if sockets > 0 {
        tracing::info!(
            sockets,
            "Sockets catch up from the store on events missed while unsubscribed"
        );
    }
}

/// Hands one received envelope to the sockets of its tenant in this
/// process. Envelopes this replica published itself were delivered here
/// when they were sent.
fn deliver(relay: &Relay, state: &SharedState, channel: &str, payload: &[u8]) {
    let Some(tenant) = relay
        .tenant_of_channel(channel)
        .and_then(|id| state.tenants.get(id))
    else {
        return;
    };
    let keys = tenant.relay_keys();
    let envelope = match envelope::decode(payload, keys.iter().map(Vec::as_slice)) {
        Ok(envelope) => envelope,
        Err(error) => {
            relay.metrics.rejected.inc();
            tracing::debug!(tenant = %tenant.id, error = %error, "Ignoring an invalid relayed event");
            return;
        }
    };
    if envelope.origin == relay.instance {
        return;
    }
    if matches!(envelope.action, Action::Resync { .. }) {
        relay.metrics.resyncs.inc();
    }
    hand_to_hub(&tenant, envelope);
}

fn hand_to_hub(tenant: &Tenant, envelope: Envelope) {
    let Envelope {
        origin,
        action,
        frame,
    } = envelope;
    let hub = &tenant.hub;
    match action {
        Action::Presence {
            user,
            online,
            last_seen,
        } => {
            let presence = &tenant.presence;
            let change = presence.remote_report(
                &origin,
                &user,
                online,
                last_seen,
                Instant::now(),
                now_millis(),
            );
            if let Some(change) = change {
                tenant.tell_watchers(&change);
            }
        }
        Action::StopWatching { watcher, user } => {
            tenant.presence.stop_watching(&watcher, &user);
        }
        Action::PresenceRefresh { users } => {
            let changes =
                tenant
                    .presence
                    .remote_refresh(&origin, &users, Instant::now(), now_millis());
            for change in changes {
                tenant.tell_watchers(&change);
            }
        }
        Action::PresenceQuery => tenant.publish_presence_refresh(),
        Action::Revoked { users, not_before } => {
            hub.send_to_users(&users, &Outbound::Revoked { not_before }, None);
        }
        Action::Message {
            users,
            channel_id,
            seq,
        } => {
            let event = Outbound::Message {
                channel_id: Arc::from(channel_id),
                seq,
                frame,
                stored_at: Instant::now(),
            };
            hub.send_to_users(&users, &event, None);
        }
        Action::Event { users } => {
            hub.send_to_users(&users, &Outbound::Event(frame), None);
        }
        Action::Typing {
            users,
            channel_id,
            user,
            start,
        } => {
            let event = Outbound::Typing {
                channel_id: Arc::from(channel_id),
                user_id: Arc::from(user),
                start,
                frame,
            };
            hub.send_to_users(&users, &event, None);
        }
        Action::Added {
            users,
            channel_id,
            last_seq,
        } => {
            let event = Outbound::Added {
                channel_id: Arc::from(channel_id),
                last_seq,
                frame,
            };
            hub.send_to_users(&users, &event, None);
        }
        Action::Removed { users, channel_id } => {
            let event = Outbound::Removed {
                channel_id: Arc::from(channel_id),
                frame,
            };
            hub.send_to_users(&users, &event, None);
        }
        Action::CloseUser { user, code } => {
            // Only closes this build sends are relayed, each with its own
            // close code.
            match code.as_str() {
                "user_deleted" => {
                    hub.close_user(&user, close::USER_DELETED, "user_deleted", frame.as_str());
                }
                "user_banned" => {
                    hub.close_user(&user, close::USER_BANNED, "user_banned", frame.as_str());
                }
                _ => {}
            }
        }
        Action::Resync { channels } => {
            let resync = match channels {
                Some(channels) => Resync::Channels(
                    channels
                        .into_iter()
                        .map(|(channel, seq)| (Arc::from(channel), seq))
                        .collect(),
                ),
                None => Resync::All,
            };
            hub.resync(&Arc::new(resync));
        }
    }
}

async fn timed<T>(command: impl Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT.max(CONNECT_TIMEOUT), command).await {
        Ok(result) => result,
        Err(_) => Err(closed("Redis did not answer in time")),
    }
}

fn closed(reason: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, reason))
}
