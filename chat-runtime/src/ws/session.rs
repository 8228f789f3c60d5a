//! One WebSocket connection: reads client frames, writes what the hub hands
//! over, keeps per-channel order, and closes on expiry, silence or shutdown.
//!
//! # Ordering
//! The socket remembers, per channel, the highest sequence number it has
//! written (`positions`). A message at or below it is a duplicate and is
//! dropped. A message above the next expected one means that others are
//! still in flight or were written by another process, so the missing ones
//! are read from the store and written first. Every member socket therefore receives
//! each message once, in sequence order, without any cross-task lock on the
//! send path.
//!
//! Positions start at the channels' newest sequence numbers when the socket
//! opens: older messages are history, fetched over REST or through `resume`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use axum::http::StatusCode;
use futures_util::SinkExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::mpsc;
use tokio::time::{Instant as Deadline, sleep_until};
use tracing::Instrument;

use super::Registration;
use super::protocol::{ClientFrame, ServerFrame, TypingState, close, peek_ref};
use super::typing::{MIN_START_INTERVAL, TypingBudget};
use crate::api::{SharedState, UserAuth};
use crate::auth;
use crate::chat::{self, ChatError};
use crate::config::max_frame_bytes;
use crate::hub::{ConnectionId, Outbound, Queued, Resync};
use crate::metrics::Metrics;
use crate::store::{Deleter, Message, UserAuthState};
use crate::tenant::Tenant;

/// A typing indicator ends by itself this long after its last refresh.
const TYPING_TTL: Duration = Duration::from_secs(6);

/// Extra time a receiving socket waits for the sender's own stop before it
/// ends another user's indicator itself. The sender's replica normally
/// sends the stop at [`TYPING_TTL`]; the receiver acts only when that
/// replica stopped first.
const TYPING_STOP_GRACE: Duration = Duration::from_secs(2);

/// Longest wait for any frame after a ping before the socket counts as
/// half-open, and shorter when the heartbeat is. A client's WebSocket
/// library replies to a ping at once, so a few seconds leave room for a slow
/// mobile link, and a dead connection is noticed within the heartbeat
/// interval plus this wait.
const MAX_PONG_WAIT: Duration = Duration::from_secs(5);

/// Maximum timer set for a token's expiry: one year.
const MAX_EXPIRY_TIMER_SECONDS: u64 = 365 * 24 * 3600;

/// Maximum wait for one frame to be written. A healthy client reads a
/// frame of a few KiB within milliseconds; ten seconds leaves room for slow
/// mobile links.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum wait for the client's reply to the server's close frame.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Maximum queued events written before one flush. Under load a socket's
/// queue fills while other sockets are served, and writing what is waiting
/// with one flush costs one system call instead of one per frame. The cap
/// keeps one busy socket from holding the worker thread for long.
const MAX_WRITE_BATCH: usize = 64;

/// Deadlines the session loop's single timer serves, besides typing and
/// the token's expiry.
struct Timers {
    heartbeat: Duration,
    next_ping: Deadline,
    /// When the last ping went out, and when a frame must have arrived
    /// since then.
    ping_sent: Instant,
    pong_due: Option<Deadline>,
}

/// Reason the session loop ended.
enum Exit {
    /// The client closed or the connection broke.
    Gone,
    /// The server closes with this code, after an error frame.
    Close {
        code: u16,
        error: &'static str,
        message: String,
    },
}

struct Session {
    state: SharedState,
    tenant: Arc<Tenant>,
    user_id: String,
    connection_id: ConnectionId,
    socket: WebSocket,
    positions: HashMap<Arc<str>, u64>,
    /// Position of each channel when the socket started tracking it.
    starts: HashMap<Arc<str>, u64>,
    removed: HashSet<Arc<str>>,
    /// Channels the user is typing in, with the time each indicator ends.
    typing: HashMap<String, Deadline>,
    typing_budget: TypingBudget,
    /// Other users' indicators this socket showed as started, by channel
    /// and user, with the time the socket ends one that was not refreshed.
    shown_typing: HashMap<(Arc<str>, Arc<str>), Deadline>,
    last_received: Instant,
    /// When the socket's token expires, with the verification leeway added.
    /// A `refresh_token` frame moves it.
    token_expiry: Deadline,
    /// The `iat` of the socket's token, in seconds since the epoch (0 when
    /// the token has none). A revocation closes sockets whose token was
    /// issued before the revocation's bound.
    issued_at: i64,
    /// Frames fed to the socket since the last flush.
    unflushed: bool,
    /// The tenant's delivery metrics, looked up once per socket instead of
    /// once per delivery.
    deliveries: Counter,
    delivery_seconds: Histogram,
}

pub async fn run(
    state: SharedState,
    socket: WebSocket,
    auth: UserAuth,
    registration: Registration,
    outbound: mpsc::Receiver<Queued>,
) {
    // A debug-level span: an enabled span costs each open socket about
    // 0.2 KiB in the subscriber's registry (B1 in `parley-bench`, 10,000
    // idle sockets), so at the default level sockets carry none. Logs from
    // inside a session then lack the tenant, user and connection fields
    // unless debug logging is on.
    let span = tracing::debug_span!("ws", tenant = %auth.tenant.id, user = %auth.user_id, connection = registration.id);
    serve_connection(state, socket, auth, registration, outbound)
        .instrument(span)
        .await;
}

async fn serve_connection(
    state: SharedState,
    socket: WebSocket,
    auth: UserAuth,
    registration: Registration,
    outbound: mpsc::Receiver<Queued>,
) {
    // Taken apart so that nothing of the token outlives the session's start.
    let UserAuth {
        tenant,
        user_id,
        token,
    } = auth;
    let connection_id = registration.id;
    tracing::debug!("WebSocket opened");

    let label = Metrics::tenant(&tenant.id);
    let deliveries = state.metrics.deliveries.get_or_create(&label).clone();
    let delivery_seconds = state.metrics.delivery_seconds.get_or_create(&label).clone();
    let mut session = Session {
        state: Arc::clone(&state),
        tenant: Arc::clone(&tenant),
        user_id,
        connection_id,
        socket,
        positions: HashMap::new(),
        starts: HashMap::new(),
        removed: HashSet::new(),
        typing: HashMap::new(),
        typing_budget: TypingBudget::new(Deadline::now()),
        shown_typing: HashMap::new(),
        last_received: Instant::now(),
        token_expiry: expiry_instant(token.expires_at, state.server.token_leeway_seconds),
        issued_at: token.issued_at.map_or(0, |iat| iat as i64),
        unflushed: false,
        deliveries,
        delivery_seconds,
    };
    let expires_at = token.expires_at;
    drop(token);
    let exit = session.serve(outbound, expires_at).await;
    session.finish(exit).await;

    drop(registration);
    tracing::debug!("WebSocket closed");
}

impl Session {
    async fn serve(&mut self, mut outbound: mpsc::Receiver<Queued>, token_expires_at: u64) -> Exit {
        if let Err(error) = self.load_positions().await {
            return Exit::Close {
                code: 1011,
                error: error.code,
                message: error.message,
            };
        }
        let ready = ServerFrame::Ready {
            user_id: &self.user_id,
            tenant_id: &self.tenant.id,
            heartbeat_seconds: self.state.server.heartbeat_seconds,
            token_expires_at,
        };
        if self
            .send_bounded(WsMessage::Text(ready.to_text()))
            .await
            .is_err()
        {
            return Exit::Gone;
        }

        let heartbeat = Duration::from_secs(self.state.server.heartbeat_seconds);
        let mut timers = Timers {
            heartbeat,
            next_ping: Deadline::now() + heartbeat,
            ping_sent: Instant::now(),
            pong_due: None,
        };
        // One timer serves the heartbeat, the token's expiry and the earliest
        // typing indicator to end, so an idle socket has a single timer entry
        // and wakes only when one of them is due.
        let deadline = sleep_until(timers.next_ping.min(self.token_expiry));
        tokio::pin!(deadline);
        let mut shutdown_signal = self.state.shutdown.clone();
        let shutdown = crate::api::shutdown_started(&mut shutdown_signal);
        tokio::pin!(shutdown);

        // The handlers are boxed, so an idle socket's task keeps only this
        // loop's state and no room for the largest handler's. That cut about
        // 3.5 KiB from every open socket (heaptrack, 2,000 idle sockets), for
        // one allocation per frame handled.
        loop {
            let step = tokio::select! {
                frame = self.socket.recv() => Box::pin(self.on_socket(frame)).await,
                event = outbound.recv() => match event {
                    Some(event) => Box::pin(self.on_outbound_batch(event, &mut outbound)).await,
                    None => Err(Exit::Gone),
                },
                () = deadline.as_mut() => Box::pin(self.on_deadline(&mut timers)).await,
                () = shutdown.as_mut() => Err(Exit::Close {
                    code: 1001,
                    error: "shutting_down",
                    message: String::from("the server is shutting down; reconnect and resume"),
                }),
            };
            if let Err(exit) = step {
                return exit;
            }
            if let Err(exit) = self.flush().await {
                return exit;
            }
            // A timer that fired stays elapsed until it is reset, even when
            // the next deadline is the same instant.
            let next = self.next_deadline(&timers);
            if next != deadline.deadline() || deadline.is_elapsed() {
                deadline.as_mut().reset(next);
            }
        }
    }

    /// Returns when the timer should fire next: the next heartbeat, the
    /// token's expiry or the end of a typing indicator, whichever is first.
    fn next_deadline(&self, timers: &Timers) -> Deadline {
        let mut first = timers.next_ping.min(self.token_expiry);
        if let Some(due) = timers.pong_due {
            first = first.min(due);
        }
        let first = self.typing.values().copied().fold(first, Deadline::min);
        self.shown_typing
            .values()
            .copied()
            .fold(first, Deadline::min)
    }

    /// Closes the socket when its token expired, or when nothing arrived in
    /// the wait after the last ping. Otherwise sends a ping when one is due
    /// and ends the typing indicators that were not refreshed in time.
    async fn on_deadline(&mut self, timers: &mut Timers) -> Result<(), Exit> {
        let now = Deadline::now();
        if now >= self.token_expiry {
            return Err(Exit::Close {
                code: close::TOKEN_EXPIRED,
                error: "token_expired",
                message: String::from("the user token expired; connect again with a new token"),
            });
        }
        if let Some(due) = timers.pong_due
            && now >= due
        {
            if self.last_received < timers.ping_sent {
                return Err(Exit::Close {
                    code: 1001,
                    error: "heartbeat_timeout",
                    message: String::from("no frame or pong arrived after a ping"),
                });
            }
            timers.pong_due = None;
        }
        if now >= timers.next_ping {
            timers.next_ping = now + timers.heartbeat;
            timers.ping_sent = Instant::now();
            timers.pong_due = Some(now + timers.heartbeat.min(MAX_PONG_WAIT));
            self.send_bounded(WsMessage::Ping(Default::default()))
                .await?;
        }
        self.expire_typing().await
    }

    /// Starts every channel of the user at its newest sequence number.
    async fn load_positions(&mut self) -> Result<(), ChatError> {
        let positions = self.tenant.store.channel_positions(&self.user_id).await?;
        for (channel_id, last_seq) in positions {
            let channel: Arc<str> = Arc::from(channel_id.as_str());
            self.positions.insert(Arc::clone(&channel), last_seq);
            self.starts.insert(channel, last_seq);
        }
        Ok(())
    }

    async fn on_socket(
        &mut self,
        frame: Option<Result<WsMessage, axum::Error>>,
    ) -> Result<(), Exit> {
        self.last_received = Instant::now();
        match frame {
            None => Err(Exit::Gone),
            Some(Err(error)) => Err(read_error_exit(&error)),
            Some(Ok(WsMessage::Text(text)))
                if text.len() > max_frame_bytes(&self.tenant.settings().limits) =>
            {
                Err(frame_too_large())
            }
            Some(Ok(WsMessage::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(WsMessage::Binary(_))) => Err(Exit::Close {
                code: 1003,
                error: "binary_not_supported",
                message: String::from("frames must be JSON text"),
            }),
            Some(Ok(WsMessage::Close(_))) => {
                // tungstenite queued the reply to the client's close frame;
                // it leaves only with a flush.
                let _ = bounded(self.socket.flush()).await;
                Err(Exit::Gone)
            }
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => Ok(()),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Exit> {
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(error) => {
                let reference = peek_ref(text);
                let message = format!("invalid frame: {error}");
                return self
                    .send_error(
                        reference.as_deref(),
                        &ChatError::new(StatusCode::BAD_REQUEST, "invalid_frame", message),
                    )
                    .await;
            }
        };
        match frame {
            ClientFrame::Send {
                r#ref,
                channel_id,
                client_id,
                content,
                reply_to,
                mentions,
            } => {
                let draft = chat::Draft {
                    channel_id,
                    client_id,
                    content,
                    reply_to,
                    mentions: mentions.unwrap_or_default(),
                };
                self.on_send(r#ref.as_deref(), draft).await
            }
            ClientFrame::Edit {
                r#ref,
                channel_id,
                seq,
                content,
                mentions,
            } => {
                // Boxed, because an edit may call the moderation hook, whose
                // large future would otherwise grow every socket's task.
                let result = Box::pin(chat::edit_message(
                    &self.tenant,
                    &self.state.metrics,
                    &self.user_id,
                    &channel_id,
                    seq,
                    content,
                    mentions,
                ))
                .await;
                self.report_failure(r#ref.as_deref(), result).await
            }
            ClientFrame::Delete {
                r#ref,
                channel_id,
                seq,
            } => {
                let deleter = Deleter::Member(&self.user_id);
                let result = chat::delete_message(&self.tenant, deleter, &channel_id, seq).await;
                self.report_failure(r#ref.as_deref(), result).await
            }
            ClientFrame::React {
                r#ref,
                channel_id,
                seq,
                reaction,
            } => {
                self.on_react(r#ref.as_deref(), &channel_id, seq, &reaction, true)
                    .await
            }
            ClientFrame::Unreact {
                r#ref,
                channel_id,
                seq,
                reaction,
            } => {
                self.on_react(r#ref.as_deref(), &channel_id, seq, &reaction, false)
                    .await
            }
            ClientFrame::Delivered {
                r#ref,
                channel_id,
                seq,
            } => {
                let result =
                    chat::mark_delivered(&self.tenant, &self.user_id, &channel_id, seq).await;
                self.report_failure(r#ref.as_deref(), result).await
            }
            ClientFrame::Typing {
                r#ref,
                channel_id,
                state,
            } => self.on_typing(r#ref.as_deref(), channel_id, state).await,
            ClientFrame::Read {
                r#ref,
                channel_id,
                seq,
            } => {
                let result = chat::mark_read(&self.tenant, &self.user_id, &channel_id, seq).await;
                self.report_failure(r#ref.as_deref(), result).await
            }
            ClientFrame::Resume { r#ref, positions } => {
                for (channel_id, seq) in positions {
                    self.resume_channel(r#ref.as_deref(), &channel_id, seq)
                        .await?;
                }
                Ok(())
            }
            ClientFrame::Ping { r#ref } => {
                self.write(
                    ServerFrame::Pong {
                        r#ref: r#ref.as_deref(),
                    }
                    .to_text(),
                )
                .await
            }
            ClientFrame::RefreshToken { r#ref, token } => {
                self.on_refresh_token(r#ref.as_deref(), &token).await
            }
            ClientFrame::PresenceSubscribe { r#ref, channel_id } => {
                self.on_presence(r#ref.as_deref(), &channel_id, true).await
            }
            ClientFrame::PresenceUnsubscribe { r#ref, channel_id } => {
                self.on_presence(r#ref.as_deref(), &channel_id, false).await
            }
        }
    }

    /// Replaces the socket's token with a newer one of the same user, so the
    /// client renews it without reconnecting. A rejected token leaves the
    /// socket on its current token.
    async fn on_refresh_token(&mut self, reference: Option<&str>, token: &str) -> Result<(), Exit> {
        let leeway = self.state.server.token_leeway_seconds;
        let verified = match auth::verify_user_token(&self.tenant.settings(), token, leeway) {
            Ok(verified) => verified,
            Err(error) => {
                let error =
                    ChatError::new(StatusCode::UNAUTHORIZED, error.code(), error.to_string());
                return self.send_error(reference, &error).await;
            }
        };
        if verified.user_id != self.user_id {
            let error = ChatError::new(
                StatusCode::FORBIDDEN,
                "token_user_mismatch",
                "the new token is for another user; a socket keeps its user",
            );
            return self.send_error(reference, &error).await;
        }
        let issued_at = verified.issued_at.map_or(0, |iat| iat as i64);
        let state = match self.tenant.store.user_auth_state(&self.user_id).await {
            Ok(state) => state,
            Err(error) => return self.send_error(reference, &error.into()).await,
        };
        match revoked_or_deleted(state, issued_at) {
            // The socket's own token stays valid, so only the refresh fails,
            // with the code REST gives for such a token.
            Some(Exit::Close { code, .. }) if code == close::TOKEN_REVOKED => {
                let error = ChatError::new(
                    StatusCode::UNAUTHORIZED,
                    "token_invalid",
                    "the new token was issued before the user's tokens were revoked",
                );
                return self.send_error(reference, &error).await;
            }
            Some(exit) => return Err(exit),
            None => {}
        }

        self.token_expiry = expiry_instant(verified.expires_at, leeway);
        self.issued_at = issued_at;
        let frame = ServerFrame::TokenRefreshed {
            r#ref: reference,
            token_expires_at: verified.expires_at,
        };
        self.write(frame.to_text()).await
    }

    /// Starts or stops watching the presence of the channel's other members.
    /// Only a member may watch, so presence never crosses tenants or
    /// reaches users who share no channel.
    async fn on_presence(
        &mut self,
        reference: Option<&str>,
        channel_id: &str,
        subscribe: bool,
    ) -> Result<(), Exit> {
        let watcher = (Arc::from(self.user_id.as_str()), self.connection_id);
        if !subscribe {
            self.tenant.presence.unwatch(&watcher, channel_id);
            return Ok(());
        }
        let store = &self.tenant.store;
        let members = match store.channel_for_member(channel_id, &self.user_id).await {
            Ok((_, members)) => members,
            Err(error) => return self.send_error(reference, &error.into()).await,
        };
        // Users this socket's user blocks are not watched, and a later block
        // stops the watching through `Tenant::stop_watching`.
        // NOTE: a block set between this read and `watch` below is missed,
        // and the blocked user stays watched until the next subscription.
        let blocked = store.blocked_users(&self.user_id).await.unwrap_or_default();
        let others: Vec<String> = members
            .into_iter()
            .map(|member| member.user_id)
            .filter(|user| *user != self.user_id && !blocked.contains(user))
            .collect();
        let states = match self.tenant.presence.watch(&watcher, channel_id, &others) {
            Ok(states) => states,
            Err(error) => {
                let error = ChatError::new(
                    StatusCode::BAD_REQUEST,
                    "too_many_presence_subscriptions",
                    error.to_string(),
                );
                return self.send_error(reference, &error).await;
            }
        };
        for (user, state) in states {
            let frame = ServerFrame::Presence {
                user_id: &user,
                online: state.online,
                last_seen: state.last_seen,
            };
            self.write(frame.to_text()).await?;
        }
        Ok(())
    }

    /// Sends an error frame for a failed request. A request that succeeded
    /// needs no frame of its own, because its event reaches this socket too.
    async fn report_failure<T>(
        &mut self,
        reference: Option<&str>,
        result: Result<T, ChatError>,
    ) -> Result<(), Exit> {
        match result {
            Ok(_) => Ok(()),
            Err(error) => self.send_error(reference, &error).await,
        }
    }

    async fn on_react(
        &mut self,
        reference: Option<&str>,
        channel_id: &str,
        seq: u64,
        reaction: &str,
        add: bool,
    ) -> Result<(), Exit> {
        let result = chat::react(&self.tenant, &self.user_id, channel_id, seq, reaction, add).await;
        self.report_failure(reference, result).await
    }

    async fn on_send(&mut self, reference: Option<&str>, draft: chat::Draft) -> Result<(), Exit> {
        let metrics = &self.state.metrics;
        // Boxed, because a send may call the moderation hook over HTTP, and
        // that future is large: held inline, it would grow the task of
        // every socket, idle ones included.
        let result = Box::pin(chat::send_message(
            &self.tenant,
            metrics,
            &self.user_id,
            draft,
        ))
        .await;
        match result {
            Ok(appended) => {
                let message = &appended.message;
                let ack = ServerFrame::Ack {
                    r#ref: reference,
                    channel_id: &message.channel_id,
                    client_id: &message.client_id,
                    seq: message.seq,
                    duplicate: appended.duplicate,
                    created_at: message.created_at,
                };
                self.write(ack.to_text()).await
            }
            Err(error) => self.send_error(reference, &error).await,
        }
    }

    async fn on_typing(
        &mut self,
        reference: Option<&str>,
        channel_id: String,
        state: TypingState,
    ) -> Result<(), Exit> {
        // A `start` shortly after the last one passed on, a `stop` for a
        // channel the user is not typing in, and indicators over the
        // socket's budget are dropped without an error, since an indicator
        // is only a hint.
        let now = Deadline::now();
        let repeated = match state {
            TypingState::Start => self
                .typing
                .get(&channel_id)
                .is_some_and(|until| *until - TYPING_TTL + MIN_START_INTERVAL > now),
            TypingState::Stop => !self.typing.contains_key(&channel_id),
        };
        if repeated || !self.typing_budget.take(now) {
            return Ok(());
        }
        let result = chat::typing(
            &self.tenant,
            &self.user_id,
            self.connection_id,
            &channel_id,
            state,
        )
        .await;
        if let Err(error) = result {
            return self.send_error(reference, &error).await;
        }
        match state {
            TypingState::Start => self.typing.insert(channel_id, now + TYPING_TTL),
            TypingState::Stop => self.typing.remove(&channel_id),
        };
        Ok(())
    }

    /// Ends typing indicators that were not refreshed in time: the user's
    /// own, for the other sockets, and other users' shown on this socket.
    async fn expire_typing(&mut self) -> Result<(), Exit> {
        let now = Deadline::now();
        let unrefreshed: Vec<(Arc<str>, Arc<str>)> = self
            .shown_typing
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for (channel_id, user_id) in unrefreshed {
            self.shown_typing
                .remove(&(Arc::clone(&channel_id), Arc::clone(&user_id)));
            let frame = ServerFrame::Typing {
                channel_id: &channel_id,
                user_id: &user_id,
                state: TypingState::Stop,
            };
            self.write(frame.to_text()).await?;
        }
        self.expire_own_typing().await
    }

    async fn expire_own_typing(&mut self) -> Result<(), Exit> {
        let now = Deadline::now();
        let expired: Vec<String> = self
            .typing
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(channel, _)| channel.clone())
            .collect();
        for channel_id in expired {
            self.typing.remove(&channel_id);
            self.stop_typing(&channel_id).await;
        }
        Ok(())
    }

    async fn stop_typing(&mut self, channel_id: &str) {
        let result = chat::typing(
            &self.tenant,
            &self.user_id,
            self.connection_id,
            channel_id,
            TypingState::Stop,
        )
        .await;
        if let Err(error) = result {
            tracing::debug!(
                channel = channel_id,
                code = error.code,
                "Failed to send typing stop"
            );
        }
    }

    /// Replays what the client missed in one channel, then leaves it live.
    async fn resume_channel(
        &mut self,
        reference: Option<&str>,
        channel_id: &str,
        last_seen: u64,
    ) -> Result<(), Exit> {
        let channel = match self
            .tenant
            .store
            .channel_for_member(channel_id, &self.user_id)
            .await
        {
            Ok((channel, _)) => channel,
            Err(error) => return self.send_error(reference, &error.into()).await,
        };
        let key: Arc<str> = Arc::from(channel_id);
        let start = self.starts.get(&key).copied().unwrap_or(0);
        let written = self.positions.get(&key).copied().unwrap_or(0);
        let latest = channel.last_seq.max(written);
        let wrote_live = written > start;

        // Once this socket wrote live messages of the channel, older missed
        // ones can no longer be written in order: the client pages them.
        if wrote_live && last_seen < start {
            let frame = ServerFrame::ResyncRequired {
                channel_id,
                after: last_seen,
                latest_seq: start,
            };
            self.write(frame.to_text()).await?;
        }
        let position = if wrote_live {
            written.max(last_seen.min(latest))
        } else {
            last_seen.min(latest)
        };
        self.positions.insert(Arc::clone(&key), position);
        self.catch_up(&key, latest).await?;
        let resumed = ServerFrame::Resumed {
            r#ref: reference,
            channel_id,
            seq: latest,
        };
        self.write(resumed.to_text()).await
    }

    /// Writes the channel's messages from the socket's position up to and
    /// including `up_to`, reading them from the store.
    async fn catch_up(&mut self, channel: &Arc<str>, up_to: u64) -> Result<(), Exit> {
        let from = self.positions.get(channel).copied().unwrap_or(0);
        if up_to <= from {
            return Ok(());
        }
        if up_to - from > u64::from(self.state.server.max_replay) {
            let frame = ServerFrame::ResyncRequired {
                channel_id: channel,
                after: from,
                latest_seq: up_to,
            };
            self.positions.insert(Arc::clone(channel), up_to);
            return self.write(frame.to_text()).await;
        }
        let missed = match self
            .tenant
            .store
            .messages_between(channel, &self.user_id, from, up_to)
            .await
        {
            Ok(messages) => messages,
            Err(error) => return Err(store_failure(error)),
        };
        for message in &missed {
            self.write_message(message_frame(message), channel, message.seq, None)
                .await?;
        }
        Ok(())
    }

    /// Writes `first` and whatever else is already queued, up to
    /// [`MAX_WRITE_BATCH`] events. The loop flushes them together.
    async fn on_outbound_batch(
        &mut self,
        first: Queued,
        outbound: &mut mpsc::Receiver<Queued>,
    ) -> Result<(), Exit> {
        self.on_outbound(first).await?;
        for _ in 1..MAX_WRITE_BATCH {
            let Ok(event) = outbound.try_recv() else {
                break;
            };
            self.on_outbound(event).await?;
        }
        Ok(())
    }

    async fn on_outbound(&mut self, event: Queued) -> Result<(), Exit> {
        // The fields are reference-counted, so taking them out of a shared
        // event copies no frame.
        match Arc::unwrap_or_clone(event) {
            Outbound::Message {
                channel_id,
                seq,
                frame,
                stored_at,
            } => {
                // A message of an untracked channel overtook the `Added`
                // event (events of several replicas interleave through the
                // relay), or the user joined while relayed events were lost.
                // The store records whether the user is a member and where the
                // join left the member's read position, which is where live
                // delivery starts.
                if !self.positions.contains_key(&channel_id) {
                    let Some(start) =
                        member_read_seq(&self.tenant, &self.user_id, &channel_id).await?
                    else {
                        return Ok(());
                    };
                    self.removed.remove(&channel_id);
                    self.starts.insert(Arc::clone(&channel_id), start);
                    self.positions.insert(Arc::clone(&channel_id), start);
                }
                let written = self.positions.get(&channel_id).copied().unwrap_or(0);
                if seq <= written {
                    return Ok(());
                }
                if seq > written + 1 {
                    self.catch_up(&channel_id, seq - 1).await?;
                }
                self.write_message(frame, &channel_id, seq, Some(stored_at))
                    .await
            }
            Outbound::Event(frame) => self.write(frame).await,
            Outbound::Typing {
                channel_id,
                user_id,
                start,
                frame,
            } => {
                let key = (channel_id, user_id);
                if start {
                    let until = Deadline::now() + TYPING_TTL + TYPING_STOP_GRACE;
                    self.shown_typing.insert(key, until);
                } else {
                    self.shown_typing.remove(&key);
                }
                self.write(frame).await
            }
            Outbound::Added {
                channel_id,
                last_seq,
                frame,
            } => {
                // Messages up to `last_seq` were stored before the user joined.
                // A channel the socket already tracks keeps its position, since
                // messages below `last_seq` may still be on their way to it.
                // Membership events of several replicas can arrive out of
                // order, so the store decides whether the user is a member.
                if !self.positions.contains_key(&channel_id)
                    && member_read_seq(&self.tenant, &self.user_id, &channel_id)
                        .await?
                        .is_some()
                {
                    self.removed.remove(&channel_id);
                    self.starts.insert(Arc::clone(&channel_id), last_seq);
                    self.positions.insert(channel_id, last_seq);
                }
                self.write(frame).await
            }
            Outbound::Removed { channel_id, frame } => {
                if member_read_seq(&self.tenant, &self.user_id, &channel_id)
                    .await?
                    .is_none()
                {
                    self.positions.remove(&channel_id);
                    self.starts.remove(&channel_id);
                    self.typing.remove(channel_id.as_ref());
                    self.shown_typing
                        .retain(|(channel, _), _| *channel != channel_id);
                    // A member who left no longer watches the others.
                    let watcher = (Arc::from(self.user_id.as_str()), self.connection_id);
                    self.tenant.presence.unwatch(&watcher, &channel_id);
                    self.removed.insert(channel_id);
                }
                self.write(frame).await
            }
            Outbound::Resync(resync) => self.resync(&resync).await,
            Outbound::Revoked { not_before } if self.issued_at < not_before => Err(token_revoked()),
            Outbound::Revoked { .. } => Ok(()),
            Outbound::Close {
                close_code,
                code,
                message,
            } => Err(Exit::Close {
                code: close_code,
                error: code,
                message,
            }),
        }
    }

    /// Catches up after live events from another replica may have been lost.
    async fn resync(&mut self, resync: &Resync) -> Result<(), Exit> {
        let Resync::Channels(channels) = resync else {
            return self.resync_all().await;
        };
        for (channel, seq) in channels {
            if self.positions.contains_key(channel) {
                self.catch_up(channel, *seq).await?;
            }
        }
        Ok(())
    }

    /// Catches up on every channel of the user, and closes the socket when
    /// the user was deleted or the socket's token revoked meanwhile.
    async fn resync_all(&mut self) -> Result<(), Exit> {
        let store = &self.tenant.store;
        let state = match store.user_auth_state(&self.user_id).await {
            Ok(state) => state,
            Err(error) => return Err(store_failure(error)),
        };
        if let Some(exit) = revoked_or_deleted(state, self.issued_at) {
            return Err(exit);
        }
        let positions = match store.channel_positions(&self.user_id).await {
            Ok(positions) => positions,
            Err(error) => return Err(store_failure(error)),
        };

        let mut current = HashSet::with_capacity(positions.len());
        for (channel_id, last_seq) in positions {
            let channel: Arc<str> = Arc::from(channel_id);
            current.insert(Arc::clone(&channel));
            if self.positions.contains_key(&channel) {
                self.catch_up(&channel, last_seq).await?;
                continue;
            }
            // Joined while events were lost: live from the newest message,
            // and what came before is history, as for a new socket.
            self.removed.remove(&channel);
            self.starts.insert(Arc::clone(&channel), last_seq);
            self.positions.insert(channel, last_seq);
        }
        let left: Vec<Arc<str>> = self
            .positions
            .keys()
            .filter(|channel| !current.contains(*channel))
            .cloned()
            .collect();
        for channel in left {
            self.positions.remove(&channel);
            self.starts.remove(&channel);
            self.removed.insert(channel);
        }
        Ok(())
    }

    async fn write_message(
        &mut self,
        frame: Utf8Bytes,
        channel: &Arc<str>,
        seq: u64,
        stored_at: Option<Instant>,
    ) -> Result<(), Exit> {
        self.write(frame).await?;
        self.positions.insert(Arc::clone(channel), seq);
        self.deliveries.inc();
        if let Some(stored_at) = stored_at {
            self.delivery_seconds
                .observe(stored_at.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn send_error(&mut self, reference: Option<&str>, error: &ChatError) -> Result<(), Exit> {
        self.state.metrics.error(&self.tenant.id, error.code);
        let frame = ServerFrame::Error {
            r#ref: reference,
            code: error.code,
            message: &error.message,
            retry_after_ms: error.retry_after.map(|wait| wait.as_millis() as u64),
        };
        self.write(frame.to_text()).await
    }

    /// Hands `frame` to the socket without flushing it. The session loop
    /// flushes once per step, so a batch of frames leaves together.
    async fn write(&mut self, frame: Utf8Bytes) -> Result<(), Exit> {
        self.unflushed = true;
        bounded(self.socket.feed(WsMessage::Text(frame))).await
    }

    /// Flushes the frames fed since the last flush.
    async fn flush(&mut self) -> Result<(), Exit> {
        if !std::mem::take(&mut self.unflushed) {
            return Ok(());
        }
        bounded(self.socket.flush()).await
    }

    /// Sends one WebSocket message and flushes it with what was fed before.
    async fn send_bounded(&mut self, message: WsMessage) -> Result<(), Exit> {
        self.unflushed = false;
        bounded(self.socket.send(message)).await
    }

    /// Clears typing indicators and closes the socket as `exit` requests.
    async fn finish(&mut self, exit: Exit) {
        let typing: Vec<String> = self.typing.drain().map(|(channel, _)| channel).collect();
        for channel_id in typing {
            self.stop_typing(&channel_id).await;
        }
        let Exit::Close {
            code,
            error,
            message,
        } = exit
        else {
            return;
        };
        tracing::debug!(close_code = code, code = error, "Closing WebSocket");
        let frame = ServerFrame::Error {
            r#ref: None,
            code: error,
            message: &message,
            retry_after_ms: None,
        };
        if self.write(frame.to_text()).await.is_err() {
            return;
        }
        let close_frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(error),
        };
        if self
            .send_bounded(WsMessage::Close(Some(close_frame)))
            .await
            .is_err()
        {
            return;
        }
        self.await_close_reply().await;
    }

    /// Reads until the client replies to the close frame, so the TCP
    /// connection ends only after close frames went both ways (RFC 6455,
    /// section 7.1.1). Without this, a client with a frame still in flight
    /// may see a connection reset instead of the close code.
    async fn await_close_reply(&mut self) {
        let deadline = tokio::time::Instant::now() + CLOSE_REPLY_TIMEOUT;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, self.socket.recv()).await
        {
            if let WsMessage::Close(_) = frame {
                return;
            }
        }
    }
}

/// Runs one write to the socket, giving up after [`WRITE_TIMEOUT`]. A
/// client that stops reading fills the TCP buffers and would otherwise block
/// the session loop forever, so heartbeat, shutdown and slow-consumer closes
/// could never run.
async fn bounded(write: impl Future<Output = Result<(), axum::Error>>) -> Result<(), Exit> {
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Exit::Gone),
        Err(_) => {
            tracing::debug!("WebSocket write timed out; dropping the connection");
            Err(Exit::Gone)
        }
    }
}

/// Returns the user's read position in the channel, or `None` when the user
/// is not a member.
async fn member_read_seq(
    tenant: &Tenant,
    user: &str,
    channel_id: &str,
) -> Result<Option<u64>, Exit> {
    match tenant.store.channel_for_member(channel_id, user).await {
        Ok((_, members)) => Ok(members
            .iter()
            .find(|member| member.user_id == user)
            .map(|member| member.read_seq)),
        Err(crate::store::StoreError::NotFound) => Ok(None),
        Err(error) => Err(store_failure(error)),
    }
}

/// Returns how to close a socket whose user is gone or whose token, issued
/// at `issued_at`, was revoked since.
fn revoked_or_deleted(state: Option<UserAuthState>, issued_at: i64) -> Option<Exit> {
    let Some(state) = state.filter(|state| !state.deleted) else {
        return Some(Exit::Close {
            code: close::USER_DELETED,
            error: "user_deleted",
            message: String::from("this user was deleted"),
        });
    };
    state
        .tokens_not_before
        .is_some_and(|not_before| issued_at < not_before)
        .then(token_revoked)
}

fn token_revoked() -> Exit {
    Exit::Close {
        code: close::TOKEN_REVOKED,
        error: "token_revoked",
        message: String::from("the user's tokens were revoked; connect again with a new token"),
    }
}

/// Closes a socket that cannot be brought up to date because a store read
/// failed. The client reconnects and resumes, so nothing is skipped.
fn store_failure(error: crate::store::StoreError) -> Exit {
    let error = ChatError::from(error);
    Exit::Close {
        code: 1011,
        error: error.code,
        message: error.message,
    }
}

fn message_frame(message: &Message) -> Utf8Bytes {
    ServerFrame::Message { message }.to_text()
}

/// Computes when an open socket's token expires: `exp` plus the same
/// leeway that verification allows.
fn expiry_instant(expires_at: u64, leeway: u64) -> tokio::time::Instant {
    let deadline = expires_at.saturating_add(leeway);
    let remaining = deadline.saturating_sub(crate::auth::unix_now());
    // A token may claim an `exp` centuries away; past a year the timer is
    // capped, which only matters to a socket open that long.
    tokio::time::Instant::now() + Duration::from_secs(remaining.min(MAX_EXPIRY_TIMER_SECONDS))
}

/// Maps a read error to a close: frames over tungstenite's own limit get
/// 1009, other protocol violations 1002.
fn read_error_exit(error: &axum::Error) -> Exit {
    let text = error.to_string();
    if text.contains("Space limit exceeded") {
        frame_too_large()
    } else {
        tracing::debug!(error = %text, "WebSocket read failed");
        Exit::Close {
            code: 1002,
            error: "protocol_error",
            message: String::from("the frame violates the WebSocket protocol"),
        }
    }
}

fn frame_too_large() -> Exit {
    Exit::Close {
        code: 1009,
        error: "frame_too_large",
        message: String::from("the frame exceeds the server's size limit"),
    }
}
