//! The tenant's event log: one entry per change the store makes, written
//! in the same durable write as the change, so the log never misses a
//! change and never shows one that did not happen.
//!
//! Both stores build entries with the constructors here, so an event reads
//! the same whichever store wrote it. Events of one channel are in the
//! order of the channel's changes.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Channel, Message, Millis, Report, Restriction, RestrictionKind, User};

/// An event as the log returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique within the tenant, so consumers can drop repeats.
    pub id: String,
    /// Position to resume after this event, opaque to clients.
    pub cursor: String,
    /// The kind of change, such as `message.new`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The channel the change belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    pub created_at: Millis,
    pub data: Value,
}

/// A page of events and the cursor to read the next page from.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// The last event's cursor, or the cursor passed in when the page is
    /// empty, so a consumer always has a position to resume from.
    pub next_cursor: String,
}

/// An event that a webhook endpoint did not accept after its last attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event: Event,
    pub attempts: u32,
    /// Reason the last attempt failed, such as `HTTP 500` or `timed out`.
    pub last_error: String,
    pub failed_at: Millis,
}

/// A process's claim on delivering to one webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookClaim {
    /// Cursor of the last event handled for the endpoint, `None` for an
    /// endpoint that never delivered.
    pub cursor: Option<String>,
}

/// An event to append, built by the constructors below.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: &'static str,
    pub channel_id: Option<String>,
    pub created_at: Millis,
    pub data: Value,
}

/// One moderation rule's decision on a message, recorded as a
/// `moderation.decision` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModerationRecord {
    pub rule: String,
    /// `block`, `mask` or `flag`.
    pub action: String,
    pub shadow: bool,
    /// The code of the rule's kind, such as `contact_details`.
    pub reason: String,
    pub user_id: String,
    pub channel_id: String,
    /// The sender's id for the message, when the decision was on a send.
    pub client_id: Option<String>,
}

impl NewEvent {
    fn new(kind: &'static str, channel_id: Option<&str>, created_at: Millis, data: Value) -> Self {
        Self {
            kind,
            channel_id: channel_id.map(str::to_owned),
            created_at,
            data,
        }
    }

    pub fn user_upserted(user: &User, now: Millis) -> Self {
        Self::new("user.upserted", None, now, json!({ "user": user }))
    }

    pub fn user_deleted(user_id: &str, now: Millis) -> Self {
        Self::new("user.deleted", None, now, json!({ "user_id": user_id }))
    }

    pub fn tokens_revoked(user_id: &str, not_before: i64, now: Millis) -> Self {
        let data = json!({ "user_id": user_id, "not_before": not_before });
        Self::new("user.tokens_revoked", None, now, data)
    }

    pub fn channel_created(channel: &Channel, members: &[String]) -> Self {
        let data = json!({ "channel": channel, "members": members });
        Self::new(
            "channel.created",
            Some(&channel.id),
            channel.created_at,
            data,
        )
    }

    pub fn member_added(channel_id: &str, user_id: &str, actor: &str, now: Millis) -> Self {
        let data = json!({ "user_id": user_id, "actor": actor });
        Self::new("member.added", Some(channel_id), now, data)
    }

    /// `actor` is the member who removed the user, or `None` when a channel
    /// ban through the server API did.
    pub fn member_removed(
        channel_id: &str,
        user_id: &str,
        actor: Option<&str>,
        now: Millis,
    ) -> Self {
        let data = json!({ "user_id": user_id, "actor": actor });
        Self::new("member.removed", Some(channel_id), now, data)
    }

    pub fn message_new(message: &Message) -> Self {
        let data = json!({ "message": message });
        Self::new(
            "message.new",
            Some(&message.channel_id),
            message.created_at,
            data,
        )
    }

    pub fn message_edited(message: &Message, now: Millis) -> Self {
        let data = json!({ "message": message });
        Self::new("message.edited", Some(&message.channel_id), now, data)
    }

    /// `deleted_by` is the member who deleted the message, or `None` when
    /// the tenant's backend did through the server API.
    pub fn message_deleted(
        channel_id: &str,
        seq: u64,
        deleted_by: Option<&str>,
        now: Millis,
    ) -> Self {
        let data = json!({ "seq": seq, "deleted_by": deleted_by });
        Self::new("message.deleted", Some(channel_id), now, data)
    }

    pub fn reaction(
        channel_id: &str,
        seq: u64,
        user_id: &str,
        reaction: &str,
        added: bool,
        now: Millis,
    ) -> Self {
        let kind = if added {
            "reaction.added"
        } else {
            "reaction.removed"
        };
        let data = json!({ "seq": seq, "user_id": user_id, "reaction": reaction });
        Self::new(kind, Some(channel_id), now, data)
    }

    pub fn channel_read(channel_id: &str, user_id: &str, read_seq: u64, now: Millis) -> Self {
        let data = json!({ "user_id": user_id, "read_seq": read_seq });
        Self::new("channel.read", Some(channel_id), now, data)
    }

    pub fn restricted(restriction: &Restriction) -> Self {
        let data = json!({ "restriction": restriction });
        Self::new(
            "moderation.restricted",
            restriction.channel_id.as_deref(),
            restriction.created_at,
            data,
        )
    }

    pub fn restriction_lifted(
        user_id: &str,
        channel_id: Option<&str>,
        kind: RestrictionKind,
        now: Millis,
    ) -> Self {
        let data = json!({ "user_id": user_id, "kind": kind });
        Self::new("moderation.lifted", channel_id, now, data)
    }

    pub fn block(blocker: &str, blocked: &str, block: bool, now: Millis) -> Self {
        let kind = if block {
            "user.blocked"
        } else {
            "user.unblocked"
        };
        let data = json!({ "user_id": blocker, "blocked_user_id": blocked });
        Self::new(kind, None, now, data)
    }

    /// `actor` is the owner who changed the channel's settings, or `None`
    /// when the server API did.
    pub fn channel_updated(channel: &Channel, actor: Option<&str>, now: Millis) -> Self {
        let data = json!({ "channel": channel, "actor": actor });
        Self::new("channel.updated", Some(&channel.id), now, data)
    }

    pub fn report_filed(report: &Report) -> Self {
        let data = json!({ "report": report });
        Self::new(
            "report.filed",
            report.channel_id.as_deref(),
            report.created_at,
            data,
        )
    }

    pub fn report_resolved(report: &Report, now: Millis) -> Self {
        let data = json!({ "report": report });
        Self::new("report.resolved", report.channel_id.as_deref(), now, data)
    }

    /// Builds a moderation decision. `seq` is the number of the stored message on
    /// a send, of the edited message on an edit, and `None` for a send that
    /// was blocked and not stored.
    pub fn moderation(record: &ModerationRecord, seq: Option<u64>, now: Millis) -> Self {
        let data = json!({
            "rule": record.rule,
            "action": record.action,
            "shadow": record.shadow,
            "reason": record.reason,
            "user_id": record.user_id,
            "client_id": record.client_id,
            "seq": seq,
        });
        Self::new("moderation.decision", Some(&record.channel_id), now, data)
    }
}
