//! Rows as the driver returns them, and their conversion to store types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::schema::BUCKET_SIZE;
use super::slow_mode::slow_mode_from_cql;
use crate::store::{
    Channel, ChannelKind, Content, MemberRole, Message, ModerationRecord, StoreError, User,
};

/// Builds the `Unavailable` error for stored rows that break an invariant
/// of this store.
pub(super) fn inconsistent(message: &'static str) -> StoreError {
    StoreError::Unavailable(message.into())
}

/// Converts a sequence number or position from the API to CQL's `bigint`.
/// Values above `i64::MAX` cannot be stored, so they clamp without changing
/// any comparison against stored values.
pub(super) fn seq_to_cql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn seq_from_cql(value: Option<i64>) -> Result<u64, StoreError> {
    u64::try_from(value.unwrap_or(0))
        .map_err(|_| inconsistent("stored sequence number is negative"))
}

/// Partition of the `messages` table that contains `seq`: messages 1 to 1000
/// are bucket 0, 1001 to 2000 bucket 1, and so on.
pub(super) fn bucket_of(seq: u64) -> i64 {
    seq_to_cql(seq.saturating_sub(1) / BUCKET_SIZE)
}

pub(super) fn role_to_cql(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Owner => "owner",
        MemberRole::Member => "member",
    }
}

pub(super) fn role_from_cql(role: Option<&str>) -> Result<MemberRole, StoreError> {
    match role {
        Some("owner") => Ok(MemberRole::Owner),
        Some("member") => Ok(MemberRole::Member),
        _ => Err(inconsistent("stored member role is not owner or member")),
    }
}

/// A message as the store keeps it: the API's message plus the sender's
/// incarnation, from which `sender_deleted` is computed at read time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct StoredMessage {
    pub channel_id: String,
    pub seq: u64,
    pub sender_id: String,
    pub sender_incarnation: i32,
    pub client_id: String,
    /// Always present in the channel row. `None` in a deleted `messages`
    /// row.
    pub content: Option<Content>,
    pub created_at: i64,
    /// Hex of the dedupe hash, kept so that the client id row can be
    /// written again from the channel row alone.
    pub content_hash: String,
    /// The channel's last activity once this message is stored: the later
    /// of its previous activity and `created_at`, since replicas' clocks
    /// may disagree.
    #[serde(default)]
    pub channel_activity: i64,
    /// Random number of the append call that claimed the number, so the
    /// call recognises its own claim after a lost reply.
    #[serde(default)]
    pub claim_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// Sorted user ids without repeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// Log position time of the message's `message.new` event, chosen
    /// before the claim so that every replica that completes the message
    /// writes the event to the same row. `None` in claims written before
    /// the event log existed, whose events are not written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_at: Option<i64>,
    /// Moderation decisions on the message, logged right after its event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moderation: Vec<ModerationRecord>,
    /// Set by edits and deletes, which only change the `messages` row, so
    /// the channel row never carries these three.
    #[serde(skip)]
    pub edited_at: Option<i64>,
    #[serde(skip)]
    pub deleted_at: Option<i64>,
    #[serde(skip)]
    pub edit_count: i32,
}

impl StoredMessage {
    /// Log position time of the last event the append writes: the
    /// message's, then one per moderation decision.
    pub(super) fn last_event_at(&self) -> Option<i64> {
        let decisions = i64::try_from(self.moderation.len()).unwrap_or(i64::MAX);
        self.event_at.map(|at| at.saturating_add(decisions))
    }

    /// Converts to the API message, without reactions. A deleted message
    /// shows no content and no mentions, whatever a racing write left in
    /// its row.
    pub(super) fn into_message(self, sender_deleted: bool) -> Message {
        let deleted = self.deleted_at.is_some();
        Message {
            channel_id: self.channel_id,
            seq: self.seq,
            sender_id: self.sender_id,
            sender_deleted,
            client_id: self.client_id,
            content: if deleted { None } else { self.content },
            reply_to: self.reply_to,
            mentions: if deleted { Vec::new() } else { self.mentions },
            reactions: BTreeMap::new(),
            own_reactions: Vec::new(),
            created_at: self.created_at,
            edited_at: self.edited_at,
            deleted_at: self.deleted_at,
        }
    }
}

/// Columns of `MESSAGE_COLUMNS` in `statements.rs`, in that order.
pub(super) type MessageRow = (
    String,
    i64,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<Vec<String>>,
    Option<i64>,
    Option<i64>,
    Option<i32>,
);

/// Reads a `messages` row. Rows do not repeat the content hash or the
/// channel's activity, which only messages read from the channel row carry.
pub(super) fn message_from_row(row: MessageRow) -> Result<StoredMessage, StoreError> {
    let (
        channel_id,
        seq,
        sender_id,
        sender_incarnation,
        client_id,
        content,
        created_at,
        reply_to,
        mentions,
        edited_at,
        deleted_at,
        edit_count,
    ) = row;
    let content = match (content, deleted_at) {
        (Some(text), _) => Some(
            serde_json::from_str::<Content>(&text)
                .map_err(|_| inconsistent("stored message content is not valid JSON"))?,
        ),
        (None, Some(_)) => None,
        (None, None) => return Err(inconsistent("stored message has no content")),
    };
    let reply_to = match reply_to {
        Some(seq) => Some(seq_from_cql(Some(seq))?),
        None => None,
    };
    Ok(StoredMessage {
        channel_id,
        seq: seq_from_cql(Some(seq))?,
        sender_id: sender_id.ok_or_else(|| inconsistent("stored message has no sender"))?,
        sender_incarnation: sender_incarnation.unwrap_or(1),
        client_id: client_id.unwrap_or_default(),
        content,
        created_at: created_at.unwrap_or(0),
        content_hash: String::new(),
        channel_activity: created_at.unwrap_or(0),
        claim_id: 0,
        reply_to,
        mentions: mentions.unwrap_or_default(),
        event_at: None,
        moderation: Vec::new(),
        edited_at,
        deleted_at,
        edit_count: edit_count.unwrap_or(0),
    })
}

pub(super) type UserRow = (
    String,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<i64>,
    Option<i32>,
    Option<i64>,
    Option<i64>,
);

/// A `users` row with the columns that writes are conditioned on.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct UserRecord {
    pub user: User,
    pub tokens_not_before: Option<i64>,
    pub incarnation: i32,
}

pub(super) fn user_from_row(row: UserRow) -> Result<UserRecord, StoreError> {
    let (id, name, metadata, deleted, tokens_not_before, incarnation, created_at, updated_at) = row;
    let metadata = match metadata {
        Some(text) => serde_json::from_str(&text)
            .map_err(|_| inconsistent("stored user metadata is not valid JSON"))?,
        None => serde_json::Value::Null,
    };
    Ok(UserRecord {
        user: User {
            id,
            name,
            metadata,
            deleted: deleted.unwrap_or(false),
            created_at: created_at.unwrap_or(0),
            updated_at: updated_at.unwrap_or(0),
        },
        tokens_not_before,
        incarnation: incarnation.unwrap_or(1),
    })
}

pub(super) type ChannelRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i32>,
);

/// A `channels` row: the channel and the message numbered `last_seq`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ChannelRecord {
    pub channel: Channel,
    pub newest: Option<StoredMessage>,
}

pub(super) fn channel_from_row(row: ChannelRow) -> Result<ChannelRecord, StoreError> {
    let (
        id,
        kind,
        name,
        subject,
        created_by,
        created_at,
        last_seq,
        last_activity,
        newest,
        slow_mode_seconds,
    ) = row;
    let kind = match kind.as_deref() {
        Some("direct") => ChannelKind::Direct,
        Some("group") => ChannelKind::Group,
        _ => return Err(inconsistent("stored channel kind is not direct or group")),
    };
    let newest = match newest {
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|_| inconsistent("stored newest message is not valid JSON"))?,
        ),
        None => None,
    };
    let created_at = created_at.unwrap_or(0);
    Ok(ChannelRecord {
        channel: Channel {
            id,
            kind,
            name,
            subject,
            created_by: created_by.unwrap_or_default(),
            created_at,
            last_seq: seq_from_cql(last_seq)?,
            last_activity: last_activity.unwrap_or(created_at),
            slow_mode_seconds: slow_mode_from_cql(slow_mode_seconds)?,
        },
        newest,
    })
}

pub(super) fn kind_to_cql(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Direct => "direct",
        ChannelKind::Group => "group",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_a_thousand_messages() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(1_000), 0);
        assert_eq!(bucket_of(1_001), 1);
        assert_eq!(bucket_of(2_000), 1);
        assert_eq!(bucket_of(u64::MAX), 18_446_744_073_709_551);
    }

    #[test]
    fn seq_conversion_clamps_and_rejects_negative() {
        assert_eq!(seq_to_cql(u64::MAX), i64::MAX);
        assert_eq!(seq_from_cql(Some(7)).unwrap(), 7);
        assert_eq!(seq_from_cql(None).unwrap(), 0);
        assert!(seq_from_cql(Some(-1)).is_err());
    }

    #[test]
    fn newest_message_round_trips_through_json() {
        let stored = StoredMessage {
            channel_id: "g_1".to_owned(),
            seq: 42,
            sender_id: "ann".to_owned(),
            sender_incarnation: 2,
            client_id: "c-1".to_owned(),
            content: Some(Content::Text {
                text: "Chào bạn, hàng còn không?".to_owned(),
            }),
            created_at: 1_700_000_000_000,
            content_hash: "ab".repeat(32),
            channel_activity: 1_700_000_000_000,
            claim_id: 7,
            reply_to: Some(41),
            mentions: vec!["bob".to_owned()],
            event_at: Some(1_700_000_000_000_003),
            moderation: vec![ModerationRecord {
                rule: "contacts".to_owned(),
                action: "mask".to_owned(),
                shadow: false,
                reason: "contact_details".to_owned(),
                user_id: "ann".to_owned(),
                channel_id: "g_1".to_owned(),
                client_id: Some("c-1".to_owned()),
            }],
            edited_at: None,
            deleted_at: None,
            edit_count: 0,
        };
        assert_eq!(stored.last_event_at(), Some(1_700_000_000_000_004));
        let row: ChannelRow = (
            "g_1".to_owned(),
            Some("group".to_owned()),
            Some("team".to_owned()),
            None,
            Some("ann".to_owned()),
            Some(5),
            Some(42),
            Some(9),
            Some(serde_json::to_string(&stored).unwrap()),
            Some(30),
        );
        let record = channel_from_row(row).unwrap();
        assert_eq!(record.channel.last_seq, 42);
        assert_eq!(record.channel.kind, ChannelKind::Group);
        assert_eq!(record.channel.slow_mode_seconds, 30);
        assert_eq!(record.newest, Some(stored));
    }

    #[test]
    fn claims_from_before_the_event_log_still_read() {
        let old = r#"{"channel_id":"g_1","seq":3,"sender_id":"ann","sender_incarnation":1,
            "client_id":"c","content":{"kind":"text","text":"hi"},"created_at":5,
            "content_hash":"ab"}"#;
        let stored: StoredMessage = serde_json::from_str(old).unwrap();
        assert_eq!(stored.event_at, None);
        assert!(stored.moderation.is_empty());
        assert_eq!(stored.last_event_at(), None);
    }

    #[test]
    fn invalid_rows_are_unavailable() {
        let row: ChannelRow = (
            "x".to_owned(),
            Some("broadcast".to_owned()),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        );
        assert!(matches!(
            channel_from_row(row),
            Err(StoreError::Unavailable(_))
        ));
        assert!(role_from_cql(Some("admin")).is_err());
        assert_eq!(role_from_cql(Some("owner")).unwrap(), MemberRole::Owner);
        let mut message = message_row(Some("{"), None);
        assert!(message_from_row(message.clone()).is_err());
        message.5 = None;
        assert!(message_from_row(message).is_err());
    }

    fn message_row(content: Option<&str>, deleted_at: Option<i64>) -> MessageRow {
        (
            "c".to_owned(),
            3,
            Some("a".to_owned()),
            None,
            None,
            content.map(str::to_owned),
            Some(10),
            Some(2),
            Some(vec!["bob".to_owned()]),
            Some(11),
            deleted_at,
            Some(1),
        )
    }

    #[test]
    fn message_row_reads_new_columns() {
        let stored = message_row(Some(r#"{"kind":"text","text":"sửa rồi"}"#), None);
        let stored = message_from_row(stored).unwrap();
        assert_eq!(stored.reply_to, Some(2));
        assert_eq!(stored.mentions, ["bob"]);
        assert_eq!(stored.edited_at, Some(11));
        assert_eq!(stored.edit_count, 1);
        let message = stored.into_message(false);
        assert!(message.content.is_some());
        assert_eq!(message.mentions, ["bob"]);
    }

    #[test]
    fn deleted_message_row_hides_content() {
        let deleted = message_from_row(message_row(None, Some(12))).unwrap();
        assert_eq!(deleted.into_message(false).content, None);

        // Content that a racing write left in a deleted row stays hidden.
        let raced = message_row(Some(r#"{"kind":"text","text":"x"}"#), Some(12));
        let message = message_from_row(raced).unwrap().into_message(false);
        assert_eq!(message.content, None);
        assert!(message.mentions.is_empty());
        assert_eq!(message.deleted_at, Some(12));
        assert_eq!(message.reply_to, Some(2));
    }

    #[test]
    fn newest_json_without_new_fields_reads() {
        let old = r#"{"channel_id":"g","seq":1,"sender_id":"a","sender_incarnation":1,
            "client_id":"c","content":{"kind":"text","text":"hi"},"created_at":1,
            "content_hash":"00"}"#;
        let stored: StoredMessage = serde_json::from_str(old).unwrap();
        assert_eq!(stored.reply_to, None);
        assert!(stored.mentions.is_empty());
        assert!(stored.content.is_some());
    }
}
