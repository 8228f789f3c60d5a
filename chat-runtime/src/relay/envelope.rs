//! The bytes of one relayed event on a Redis channel.
//!
//! An envelope is a header of compact JSON, a newline, and then the frame
//! text exactly as the receiving replica writes it to its sockets. JSON
//! escapes every newline inside strings, so the first newline always ends
//! the header, and the frame is never parsed or encoded twice.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

/// Version of the header layout. A replica ignores envelopes of another
/// version, so a rolling upgrade that changes the layout degrades to
/// resyncs instead of misread events.
pub const VERSION: u8 = 1;

/// What the receiving replica does with the frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// A stored message for the members in `users`.
    Message {
        users: Vec<String>,
        channel_id: String,
        seq: u64,
    },
    /// Any other frame for the sockets of `users`.
    Event { users: Vec<String> },
    /// `users` joined the channel, whose newest message was `last_seq`.
    Added {
        users: Vec<String>,
        channel_id: String,
        last_seq: u64,
    },
    /// `users` left the channel or were removed from it.
    Removed {
        users: Vec<String>,
        channel_id: String,
    },
    /// Close every socket of `user` with `close_code` after an error frame
    /// with `code`. The frame part is the error's message.
    CloseUser {
        user: String,
        close_code: u16,
        code: String,
    },
    /// Tokens of `users` issued before `not_before` were revoked.
    Revoked { users: Vec<String>, not_before: i64 },
    /// `user` has a socket open on the publishing replica (`online`), or no
    /// longer has; `last_seen` is when the last one closed there, in
    /// milliseconds since the epoch.
    Presence {
        user: String,
        online: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<i64>,
    },
    /// Every user with a socket open on the publishing replica.
    PresenceRefresh { users: Vec<String> },
    /// Asks every replica to publish its `PresenceRefresh` now, sent by a
    /// replica that just subscribed.
    PresenceQuery,
    /// Live events of the tenant may have been lost: sockets catch up from
    /// the store. With `channels`, only those channels up to the given
    /// sequence numbers; without, every channel of every socket.
    Resync {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channels: Option<Vec<(String, u64)>>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Header<'a> {
    v: u8,
    /// Instance id of the replica that published the envelope.
    #[serde(borrow)]
    origin: Cow<'a, str>,
    #[serde(flatten)]
    action: Action,
}

/// A decoded envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope {
    pub origin: String,
    pub action: Action,
    pub frame: Utf8Bytes,
}

/// Why an envelope could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("the envelope has no newline after its header")]
    NoHeaderEnd,
    #[error("the envelope's header is invalid: {0}")]
    Header(String),
    #[error("the envelope has version {0}, and this build reads version {VERSION}")]
    Version(u8),
    #[error("the envelope's frame is not UTF-8")]
    Frame,
}

/// Encodes one event. Serialising these headers cannot fail: every field is
/// a string, a number or a list of them.
pub fn encode(origin: &str, action: Action, frame: &str) -> Arc<[u8]> {
    let header = Header {
        v: VERSION,
        origin: Cow::Borrowed(origin),
        action,
    };
    let mut bytes = serde_json::to_vec(&header).unwrap_or_default();
    bytes.reserve_exact(1 + frame.len());
    bytes.push(b'\n');
    bytes.extend_from_slice(frame.as_bytes());
    Arc::from(bytes)
}

pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(DecodeError::NoHeaderEnd)?;
    let header: Header<'_> = serde_json::from_slice(&bytes[..end])
        .map_err(|error| DecodeError::Header(error.to_string()))?;
    if header.v != VERSION {
        return Err(DecodeError::Version(header.v));
    }
    let frame = std::str::from_utf8(&bytes[end + 1..]).map_err(|_| DecodeError::Frame)?;
    Ok(Envelope {
        origin: header.origin.into_owned(),
        action: header.action,
        frame: Utf8Bytes::from(frame.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips_with_newlines_in_frame_and_ids() {
        let action = Action::Message {
            users: vec![String::from("lan\nnguyễn"), String::from("bob")],
            channel_id: String::from("g:chợ\ntốt"),
            seq: 42,
        };
        let frame = "{\"type\":\"message\"}\n{\"second\":\"line\"}";
        let bytes = encode("replica-a", action.clone(), frame);
        let envelope = decode(&bytes).unwrap();
        assert_eq!(envelope.origin, "replica-a");
        assert_eq!(envelope.action, action);
        assert_eq!(envelope.frame.as_str(), frame);
    }

    #[test]
    fn resync_without_channels_round_trips() {
        let bytes = encode("a", Action::Resync { channels: None }, "");
        let envelope = decode(&bytes).unwrap();
        assert_eq!(envelope.action, Action::Resync { channels: None });
        assert_eq!(envelope.frame.as_str(), "");
    }

    #[test]
    fn other_version_is_rejected() {
        let bytes = b"{\"v\":2,\"origin\":\"a\",\"kind\":\"event\",\"users\":[]}\n{}";
        assert_eq!(decode(bytes), Err(DecodeError::Version(2)));
    }

    #[test]
    fn malformed_envelopes_are_rejected() {
        assert_eq!(decode(b"no newline"), Err(DecodeError::NoHeaderEnd));
        assert!(matches!(
            decode(b"{\"v\":1}\n"),
            Err(DecodeError::Header(_))
        ));
        let mut invalid_frame =
            b"{\"v\":1,\"origin\":\"a\",\"kind\":\"event\",\"users\":[]}\n".to_vec();
        invalid_frame.push(0xff);
        assert_eq!(decode(&invalid_frame), Err(DecodeError::Frame));
    }
}
