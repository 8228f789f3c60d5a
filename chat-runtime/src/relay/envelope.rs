//! The bytes of one relayed event on a Redis channel.
//!
//! An envelope is a 32-byte HMAC-SHA256 tag, a header of compact JSON, a
//! newline, and then the frame text exactly as the receiving replica writes
//! it to its sockets. JSON escapes every newline inside strings, so the
//! first newline after the tag always ends the header, and the frame is
//! never parsed or encoded twice.
//!
//! The tag is computed with the tenant's current API key secret, and a
//! replica accepts an envelope whose tag matches any of the tenant's keys.
//! Anyone who can publish to Redis could otherwise put arbitrary frames on
//! any user's sockets, and make sockets read channels their users are not
//! in.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Bytes of the tag in front of every envelope.
const TAG_BYTES: usize = 32;

/// Domain separation: the same secret also signs user tokens, so the tag
/// covers this prefix, which no JWT starts with.
const TAG_CONTEXT: &[u8] = b"parley relay envelope\n";

/// Version of the header layout. A replica ignores envelopes of another
/// version, so a rolling upgrade that changes the layout degrades to
/// resyncs instead of misread events.
pub const VERSION: u8 = 1;

/// Action the receiving replica takes with the frame.
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
    /// A typing indicator of `user` in the channel, for `users`.
    Typing {
        users: Vec<String>,
        channel_id: String,
        user: String,
        start: bool,
    },
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
    /// Close every socket of `user` after an error frame with `code`, which
    /// is one of the codes in [`crate::ws::protocol::close`]'s reasons that
    /// a replica may relay. The frame part is the error's message.
    CloseUser { user: String, code: String },
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
    /// `watcher` blocked `user`, so `watcher`'s sockets stop watching
    /// `user`'s presence.
    StopWatching { watcher: String, user: String },
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

/// Reason an envelope could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("the envelope's tag matches none of the tenant's keys")]
    Tag,
    #[error("the envelope has no newline after its header")]
    NoHeaderEnd,
    #[error("the envelope's header is invalid: {0}")]
    Header(String),
    #[error("the envelope has version {0}, and this build reads version {VERSION}")]
    Version(u8),
    #[error("the envelope's frame is not UTF-8")]
    Frame,
}

/// Encodes one event, tagged with `key`. Serialising these headers cannot
/// fail: every field is a string, a number or a list of them.
pub fn encode(origin: &str, action: Action, frame: &str, key: &[u8]) -> Arc<[u8]> {
    let header = Header {
        v: VERSION,
        origin: Cow::Borrowed(origin),
        action,
    };
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut bytes = Vec::with_capacity(TAG_BYTES + header.len() + 1 + frame.len());
    bytes.resize(TAG_BYTES, 0);
    bytes.extend_from_slice(&header);
    bytes.push(b'\n');
    bytes.extend_from_slice(frame.as_bytes());
    let tag = tagger(key).chain_update(&bytes[TAG_BYTES..]).finalize();
    bytes[..TAG_BYTES].copy_from_slice(&tag.into_bytes());
    Arc::from(bytes)
}

/// Checks the tag against each of `keys` and decodes the envelope.
pub fn decode<'k>(
    bytes: &[u8],
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Result<Envelope, DecodeError> {
    if bytes.len() < TAG_BYTES {
        return Err(DecodeError::Tag);
    }
    let (tag, bytes) = bytes.split_at(TAG_BYTES);
    let tagged_by = |key: &[u8]| tagger(key).chain_update(bytes).verify_slice(tag).is_ok();
    if !keys.into_iter().any(tagged_by) {
        return Err(DecodeError::Tag);
    }
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

fn tagger(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.chain_update(TAG_CONTEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OLD_KEY: &[u8] = b"fedcba9876543210fedcba9876543210";

    #[test]
    fn message_round_trips_with_newlines_in_frame_and_ids() {
        let action = Action::Message {
            users: vec![String::from("lan\nnguyễn"), String::from("bob")],
            channel_id: String::from("g:chợ\ntốt"),
            seq: 42,
        };
        let frame = "{\"type\":\"message\"}\n{\"second\":\"line\"}";
        let bytes = encode("replica-a", action.clone(), frame, KEY);
        let envelope = decode(&bytes, [KEY]).unwrap();
        assert_eq!(envelope.origin, "replica-a");
        assert_eq!(envelope.action, action);
        assert_eq!(envelope.frame.as_str(), frame);
    }

    #[test]
    fn any_listed_key_verifies() {
        let bytes = encode("a", Action::Resync { channels: None }, "", OLD_KEY);
        let envelope = decode(&bytes, [KEY, OLD_KEY]).unwrap();
        assert_eq!(envelope.action, Action::Resync { channels: None });
        assert_eq!(envelope.frame.as_str(), "");
    }

    #[test]
    fn forged_or_altered_envelope_is_rejected() {
        let bytes = encode("a", Action::Event { users: vec![] }, "{}", OLD_KEY);
        assert_eq!(decode(&bytes, [KEY]), Err(DecodeError::Tag));
        let mut altered = bytes.to_vec();
        *altered.last_mut().unwrap() = b']';
        assert_eq!(decode(&altered, [OLD_KEY]), Err(DecodeError::Tag));
        assert_eq!(decode(b"short", [KEY]), Err(DecodeError::Tag));
    }

    /// Builds an envelope with a valid tag around any payload.
    fn tagged(payload: &[u8]) -> Vec<u8> {
        let tag = tagger(KEY).chain_update(payload).finalize().into_bytes();
        [tag.as_slice(), payload].concat()
    }

    #[test]
    fn other_version_is_rejected() {
        let bytes = tagged(b"{\"v\":2,\"origin\":\"a\",\"kind\":\"event\",\"users\":[]}\n{}");
        assert_eq!(decode(&bytes, [KEY]), Err(DecodeError::Version(2)));
    }

    #[test]
    fn malformed_envelopes_are_rejected() {
        assert_eq!(
            decode(&tagged(b"no newline"), [KEY]),
            Err(DecodeError::NoHeaderEnd)
        );
        let header_only = decode(&tagged(b"{\"v\":1}\n"), [KEY]);
        assert!(matches!(header_only, Err(DecodeError::Header(_))));
        let mut invalid_frame =
            b"{\"v\":1,\"origin\":\"a\",\"kind\":\"event\",\"users\":[]}\n".to_vec();
        invalid_frame.push(0xff);
        assert_eq!(
            decode(&tagged(&invalid_frame), [KEY]),
            Err(DecodeError::Frame)
        );
    }
}
