//! Chat operations shared by REST and WebSocket: each checks its input,
//! writes through the tenant's store, and then delivers the resulting events
//! to the sockets of this process and, through the relay, of the other
//! replicas. A write always completes before anything is delivered, so no
//! client ever sees a message that is not durable.

mod message_changes;
mod moderation;
mod receipts;
mod reports;
mod safety;
pub mod templates;

pub use message_changes::{delete_message, edit_message, react};
pub use receipts::{Receipts, mark_delivered, mark_read, receipts};
pub use reports::{file_report, resolve_report, set_slow_mode};
pub use safety::{lift, restrict, set_block};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::hub::{ConnectionId, Outbound};
use crate::limits::{self, ContentError};
use crate::metrics::Metrics;
use crate::store::{
    Appended, Channel, Content, MembershipChange, NewMessage, Restriction, RestrictionKind,
    StoreError,
};
use crate::tenant::Tenant;
use crate::ws::protocol::{ServerFrame, TypingState};

/// An error a client receives: a stable code, an HTTP status for REST and a
/// message that is safe to show.
#[derive(Debug, Clone)]
pub struct ChatError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ChatError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such channel, user or message",
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl From<StoreError> for ChatError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ChatError::not_found(),
            StoreError::Forbidden(reason) => {
                ChatError::new(StatusCode::FORBIDDEN, "forbidden", reason)
            }
            StoreError::ClientIdConflict => ChatError::new(
                StatusCode::CONFLICT,
                "client_id_conflict",
                "this client_id was already used for a different message",
            ),
            StoreError::Invalid(reason) => ChatError::invalid(reason),
            StoreError::Restricted(restriction) => restricted_error(&restriction),
            StoreError::CursorExpired => ChatError::new(
                StatusCode::GONE,
                "cursor_expired",
                "events after this cursor were deleted by retention; read again without `after` to start from the oldest event kept",
            ),
            StoreError::SlowMode { retry_after_ms } => {
                let mut error = ChatError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "slow_mode",
                    format!(
                        "this channel is in slow mode; send again in {} s",
                        retry_after_ms.div_ceil(1000)
                    ),
                );
                error.retry_after = Some(Duration::from_millis(retry_after_ms));
                error
            }
            StoreError::Unavailable(source) => {
                tracing::error!(error = %source, "Store failed");
                ChatError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the message store is unavailable; retry with the same client_id",
                )
            }
        }
    }
}

/// Builds the error for a request that a ban or mute stops: `banned` or `muted`,
/// with the end of the restriction when it has one.
pub(crate) fn restricted_error(restriction: &Restriction) -> ChatError {
    let scope = match &restriction.channel_id {
        Some(_) => "in this channel",
        None => "in this chat",
    };
    let until = match restriction.until {
        Some(until) => format!(" until {until} (milliseconds since the Unix epoch)"),
        None => String::new(),
    };
    let (code, verb) = match restriction.kind {
        RestrictionKind::Ban => ("banned", "banned"),
        RestrictionKind::Mute => ("muted", "muted"),
    };
    ChatError::new(
        StatusCode::FORBIDDEN,
        code,
        format!("user {} is {verb} {scope}{until}", restriction.user_id),
    )
}

impl From<ContentError> for ChatError {
    fn from(error: ContentError) -> Self {
        let status = if error.code == "message_too_large" {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ChatError::new(status, error.code, error.message)
    }
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// Takes one action from the user's rate bucket. Sends and channel changes
/// share the bucket, since each one makes the server write and notify
/// other users' sockets.
pub(crate) fn take_rate(tenant: &Tenant, user: &str) -> Result<(), ChatError> {
    let settings = tenant.settings();
    let Err(wait) = tenant
        .rate
        .try_acquire(user, &settings.limits, Instant::now())
    else {
        return Ok(());
    };
    let mut error = ChatError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "more than {} messages or channel changes per second; retry later",
            settings.limits.messages_per_second
        ),
    );
    error.retry_after = Some(wait);
    Err(error)
}

/// A message as a client sends it.
#[derive(Debug, Clone)]
pub struct Draft {
    pub channel_id: String,
    pub client_id: String,
    pub content: Content,
    pub reply_to: Option<u64>,
    pub mentions: Vec<String>,
}

/// Checks, stores and delivers one message.
pub async fn send_message(
    tenant: &Tenant,
    metrics: &Metrics,
    sender: &str,
    draft: Draft,
) -> Result<Appended, ChatError> {
    let settings = tenant.settings();
    limits::check_client_id(&draft.client_id)?;
    let mut submitted = draft.content.clone();
    // The server renders a template's text, so retries are compared on the
    // template and its values only.
    if let Content::Template { text, .. } = &mut submitted {
        text.clear();
    }
    let content = templates::prepare(tenant, sender, draft.content).await?;
    limits::check_content(&content, &settings.limits, &settings.attachment_hosts)?;
    let mentions = limits::check_mentions(draft.mentions)?;
    if draft.reply_to == Some(0) {
        return Err(ChatError::invalid(
            "reply_to must be the sequence number of a message, starting at 1",
        ));
    }
    take_rate(tenant, sender)?;
    let mut message = NewMessage {
        channel_id: draft.channel_id,
        sender_id: sender.to_owned(),
        client_id: draft.client_id,
        content,
        submitted: Some(submitted),
        reply_to: draft.reply_to,
        mentions,
        created_at: now_millis(),
        moderation: Vec::new(),
    };

    // A retry of a stored send gets the stored message without a second
    // call to the tenant's hook, which may decide differently this time.
    if settings.hook.is_some()
        && let Some(stored) = tenant.store.find_retry(&message).await?
    {
        return Ok(stored);
    }
    let subject = moderation::Subject {
        sender,
        channel_id: &message.channel_id,
        client_id: Some(&message.client_id),
        seq: None,
    };
    let checked = moderation::moderate(tenant, metrics, subject, message.content).await?;
    message.content = checked.content;
    message.moderation = checked.records;

    let appended = tenant.store.append_message(message).await?;
    publish_new(tenant, metrics, &appended);
    Ok(appended)
}

/// A message that an extension sends on a user's behalf.
pub struct Automated<'a> {
    pub sender: &'a str,
    pub channel_id: &'a str,
    /// Derived from the event the extension handles, so handling the event
    /// again after a restart returns the stored message instead of sending
    /// a second one.
    pub client_id: String,
    pub extension: &'static str,
    pub text: String,
}

/// Stores and delivers an `automated` message. It skips the sender's rate
/// limit, which counts what the user does, and the moderation hook, but
/// passes the moderation rules again, since they may have changed since
/// the user saved the text. Bans, mutes and membership apply in the store.
pub async fn send_automated(
    tenant: &Tenant,
    metrics: &Metrics,
    automated: Automated<'_>,
) -> Result<Appended, ChatError> {
    let settings = tenant.settings();
    let content = Content::Automated {
        extension: automated.extension.to_owned(),
        text: automated.text,
    };
    limits::check_client_id(&automated.client_id)?;
    limits::check_content(&content, &settings.limits, &settings.attachment_hosts)?;
    let subject = moderation::Subject {
        sender: automated.sender,
        channel_id: automated.channel_id,
        client_id: Some(&automated.client_id),
        seq: None,
    };
    let checked = moderation::moderate_automated(tenant, metrics, subject, content).await?;
    let appended = tenant
        .store
        .append_message(NewMessage {
            channel_id: automated.channel_id.to_owned(),
            sender_id: automated.sender.to_owned(),
            client_id: automated.client_id,
            content: checked.content,
            submitted: None,
            reply_to: None,
            mentions: Vec::new(),
            created_at: now_millis(),
            moderation: checked.records,
        })
        .await?;
    publish_new(tenant, metrics, &appended);
    Ok(appended)
}

/// Counts and delivers a message the store just stored. A retry that
/// returned the stored message was counted and delivered the first time.
fn publish_new(tenant: &Tenant, metrics: &Metrics, appended: &Appended) {
    if appended.duplicate {
        return;
    }
    metrics
        .messages_stored
        .get_or_create(&Metrics::tenant(&tenant.id))
        .inc();
    publish_message(tenant, appended);
}

fn publish_message(tenant: &Tenant, appended: &Appended) {
    let message = &appended.message;
    let event = Outbound::Message {
        channel_id: Arc::from(message.channel_id.as_str()),
        seq: message.seq,
        frame: ServerFrame::Message { message }.to_text(),
        stored_at: Instant::now(),
    };
    tenant.deliver(&appended.members, event, None);
}

/// Creates (or returns) a direct channel and notifies both users' sockets.
pub async fn open_direct(
    tenant: &Tenant,
    user: &str,
    peer: &str,
    subject: Option<&str>,
) -> Result<Channel, ChatError> {
    take_rate(tenant, user)?;
    let now = now_millis();
    let (channel, members) = tenant.store.open_direct(user, peer, subject, now).await?;
    // The store stamps a new channel with `now`, so an older stamp means the
    // channel already existed and no member was added.
    if channel.created_at == now {
        announce_added(tenant, &channel, &members, &members);
    }
    Ok(channel)
}

pub async fn create_group(
    tenant: &Tenant,
    creator: &str,
    name: &str,
    members: &[String],
) -> Result<Channel, ChatError> {
    take_rate(tenant, creator)?;
    let (channel, members) = tenant
        .store
        .create_group(creator, name, members, now_millis())
        .await?;
    announce_added(tenant, &channel, &members, &members);
    Ok(channel)
}

pub async fn add_member(
    tenant: &Tenant,
    actor: &str,
    channel_id: &str,
    user: &str,
) -> Result<MembershipChange, ChatError> {
    take_rate(tenant, actor)?;
    let change = tenant
        .store
        .add_member(channel_id, actor, user, now_millis())
        .await?;
    if change.changed {
        announce_added(tenant, &change.channel, &[user.to_owned()], &change.members);
    }
    Ok(change)
}

/// Removes a member. The removed user's sockets are notified first and
/// drop the channel, so nothing stored after the removal reaches them.
pub async fn remove_member(
    tenant: &Tenant,
    actor: &str,
    channel_id: &str,
    user: &str,
) -> Result<MembershipChange, ChatError> {
    let change = tenant
        .store
        .remove_member(channel_id, actor, user, now_millis())
        .await?;
    if change.changed {
        let frame = ServerFrame::MemberRemoved {
            channel_id,
            user_id: user,
        }
        .to_text();
        let removed = Outbound::Removed {
            channel_id: Arc::from(channel_id),
            frame: frame.clone(),
        };
        tenant.deliver(&[user.to_owned()], removed, None);
        tenant.deliver(&change.members, Outbound::Event(frame), None);
    }
    Ok(change)
}

/// Tells `members` that each of `added` joined `channel`; the added users'
/// own sockets start tracking the channel from its current last message.
fn announce_added(tenant: &Tenant, channel: &Channel, added: &[String], members: &[String]) {
    let channel_id = channel.id.as_str();
    // Each added user hears of its own joining only, and members from before
    // hear of each added user. At creation every member is new, so one
    // request costs one frame per member instead of one per pair.
    let added_set: HashSet<&String> = added.iter().collect();
    let earlier: Vec<String> = members
        .iter()
        .filter(|member| !added_set.contains(member))
        .cloned()
        .collect();
    for user in added {
        let frame = ServerFrame::MemberAdded {
            channel_id,
            user_id: user,
        }
        .to_text();
        let to_added = Outbound::Added {
            channel_id: Arc::from(channel_id),
            last_seq: channel.last_seq,
            frame: frame.clone(),
        };
        tenant.deliver(std::slice::from_ref(user), to_added, None);
        tenant.deliver(&earlier, Outbound::Event(frame), None);
    }
}

/// Sends a typing indicator to the channel's other sockets. Nothing is stored.
pub async fn typing(
    tenant: &Tenant,
    user: &str,
    origin: ConnectionId,
    channel_id: &str,
    state: TypingState,
) -> Result<(), ChatError> {
    let mut members = tenant.store.member_ids(channel_id).await?;
    if !members.iter().any(|member| member == user) {
        return Err(ChatError::not_found());
    }
    // Users who block the typist do not see them type. A typing indicator
    // is a hint, so a failed read of the blockers leaves no one out rather
    // than failing the request.
    let blockers = tenant.store.blockers(user).await.unwrap_or_default();
    members.retain(|member| !blockers.contains(member));
    let frame = ServerFrame::Typing {
        channel_id,
        user_id: user,
        state,
    }
    .to_text();
    let event = Outbound::Typing {
        channel_id: Arc::from(channel_id),
        user_id: Arc::from(user),
        start: state == TypingState::Start,
        frame,
    };
    tenant.deliver(&members, event, Some(origin));
    Ok(())
}

/// Rejects the user's tokens issued so far, and closes the open sockets
/// that use one of them, on every replica. Returns the new bound: tokens
/// with an `iat` before it are rejected.
///
/// `iat` has a resolution of one second, so the bound is at least the next
/// second: a token minted earlier in the current second is rejected too.
pub async fn revoke_tokens(tenant: &Tenant, user: &str) -> Result<i64, ChatError> {
    let now = now_millis();
    let not_before = tenant
        .store
        .revoke_tokens(user, now / 1000 + 1, now)
        .await?;
    tenant.deliver(&[user.to_owned()], Outbound::Revoked { not_before }, None);
    Ok(not_before)
}

/// Deletes a user and closes the user's open sockets.
pub async fn delete_user(tenant: &Tenant, user: &str) -> Result<(), ChatError> {
    tenant.store.delete_user(user, now_millis()).await?;
    tenant.close_user(
        user,
        crate::ws::protocol::close::USER_DELETED,
        "user_deleted",
        "this user was deleted",
    );
    Ok(())
}
