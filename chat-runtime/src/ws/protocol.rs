//! WebSocket frames: JSON text messages with a `type` field. The full
//! protocol, with every frame and error code, is in `docs/api.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::{Content, Message};

/// Subprotocol the server selects. Clients that authenticate through
/// `Sec-WebSocket-Protocol` offer it beside `bearer.<token>`.
pub const SUBPROTOCOL: &str = "parley.v1";
/// Prefix of the subprotocol entry that carries the user token.
pub const BEARER_PREFIX: &str = "bearer.";

/// WebSocket close codes the server uses besides the standard ones.
pub mod close {
    /// The user token expired while the socket was open.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The user was deleted.
    pub const USER_DELETED: u16 = 4003;
    /// The tenant was removed from the configuration.
    pub const TENANT_REMOVED: u16 = 4004;
    /// The user's tokens were revoked through the server API.
    pub const TOKEN_REVOKED: u16 = 4005;
    /// The user was banned from the tenant.
    pub const USER_BANNED: u16 = 4006;
    /// The socket's outbound queue filled up.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// Frames a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Send {
        #[serde(default)]
        r#ref: Option<String>,
        channel_id: String,
        client_id: String,
        content: Content,
        #[serde(default)]
        reply_to: Option<u64>,
        /// `null` counts as leaving it out, as in an edit.
        #[serde(default)]
        mentions: Option<Vec<String>>,
    },
    /// Replace the content of one of the user's messages, and its mentions
    /// when given.
    Edit {
        #[serde(default)]
        r#ref: Option<String>,
        channel_id: String,
        seq: u64,
        content: Content,
        #[serde(default)]
        mentions: Option<Vec<String>>,
    },
    /// Delete one of the user's messages.
    Delete {
        #[serde(default)]
        r#ref: Option<String>,
        channel_id: String,
        seq: u64,
    },
    React {
        #[serde(default)]
        r#ref: Option<String>,
        channel_id: String,
        seq: u64,
        reaction: String,
    },
    Unreact {
        #[serde(default)]
        r#ref: Option<String>,
        channel_id: String,
        seq: u64,
        reaction: String,
    },
    /// Every message of the channel up to `seq` reached this device.
    Delivered {
        #[serde(default)]
        r#ref: Option<String>,
        channel_id: String,
        seq: u64,
    },
    Typing {
        #[serde(default)]
        r#ref: Option<String>,
        channel_id: String,
        state: TypingState,
    },
    Read {
        #[serde(default)]
        r#ref: Option<String>,
        channel_id: String,
        seq: u64,
    },
    /// Last sequence number the client has seen, per channel.
    Resume {
        #[serde(default)]
        r#ref: Option<String>,
        positions: BTreeMap<String, u64>,
    },
    Ping {
        #[serde(default)]
        r#ref: Option<String>,
    },
    /// Replace the socket's token with a newer one of the same user.
    RefreshToken {
        #[serde(default)]
        r#ref: Option<String>,
        token: String,
    },
    /// Watch the presence of the channel's other members.
    PresenceSubscribe {
        #[serde(default)]
        r#ref: Option<String>,
        channel_id: String,
    },
    /// Stop watching the presence of the channel's current members.
    PresenceUnsubscribe {
        #[serde(default)]
        r#ref: Option<String>,
        channel_id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypingState {
    Start,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReactionAction {
    Added,
    Removed,
}

/// Frames the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Ready {
        user_id: &'a str,
        tenant_id: &'a str,
        heartbeat_seconds: u64,
        token_expires_at: u64,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a str>,
        channel_id: &'a str,
        client_id: &'a str,
        seq: u64,
        duplicate: bool,
        created_at: i64,
    },
    Message {
        message: &'a Message,
    },
    Typing {
        channel_id: &'a str,
        user_id: &'a str,
        state: TypingState,
    },
    Read {
        channel_id: &'a str,
        user_id: &'a str,
        seq: u64,
    },
    /// Every message up to `seq` reached at least one of the user's devices.
    Delivered {
        channel_id: &'a str,
        user_id: &'a str,
        seq: u64,
    },
    /// A message after an edit, without `own_reactions`.
    MessageEdited {
        message: &'a Message,
    },
    /// A message after its deletion: no content, and `deleted_at` set.
    MessageDeleted {
        message: &'a Message,
    },
    /// A reaction was added or removed; `count` is the number of users with
    /// that reaction afterwards.
    Reaction {
        channel_id: &'a str,
        seq: u64,
        user_id: &'a str,
        reaction: &'a str,
        action: ReactionAction,
        count: u64,
    },
    MemberAdded {
        channel_id: &'a str,
        user_id: &'a str,
    },
    MemberRemoved {
        channel_id: &'a str,
        user_id: &'a str,
    },
    /// The channel's settings changed. It carries the settings only, since
    /// the channel's activity differs between members who block someone.
    ChannelUpdated {
        channel_id: &'a str,
        slow_mode_seconds: u32,
    },
    /// Every missed message of the channel up to `seq` was sent; what follows
    /// is live.
    Resumed {
        #[serde(skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a str>,
        channel_id: &'a str,
        seq: u64,
    },
    /// Too many messages were missed to replay: the client pages history
    /// over REST for `after < seq <= latest_seq`; live messages continue
    /// after `latest_seq`.
    ResyncRequired {
        channel_id: &'a str,
        after: u64,
        latest_seq: u64,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a str>,
    },
    /// The socket now uses the token of a `refresh_token` frame.
    TokenRefreshed {
        #[serde(skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a str>,
        token_expires_at: u64,
    },
    /// A watched user's presence: sent for each member on
    /// `presence_subscribe`, and then whenever it changes. `last_seen` is
    /// in milliseconds since the epoch, or null when unknown.
    Presence {
        user_id: &'a str,
        online: bool,
        last_seen: Option<i64>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a str>,
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerFrame<'_> {
    pub fn to_text(&self) -> axum::extract::ws::Utf8Bytes {
        // Serialising these frames cannot fail: every field is a string, a
        // number or a `Message`, whose JSON `data` was itself parsed from JSON.
        let text = serde_json::to_string(self).unwrap_or_else(|_| {
            String::from(
                r#"{"type":"error","code":"internal","message":"failed to encode a frame"}"#,
            )
        });
        axum::extract::ws::Utf8Bytes::from(text)
    }
}

/// The `ref` of a frame, when it could be parsed that far, so an error about
/// a malformed frame can still name the request.
pub fn peek_ref(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct RefOnly {
        r#ref: Option<String>,
    }
    serde_json::from_str::<RefOnly>(text)
        .ok()
        .and_then(|frame| frame.r#ref)
}
