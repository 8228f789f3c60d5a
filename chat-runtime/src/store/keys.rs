//! Values every backend derives the same way: channel ids, and the content
//! hash that client message id dedupe compares.

use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Content, StoreError};

/// Derives the id of the direct channel of a sorted user pair and a subject
/// (empty for none). The parts are length-prefixed, so ("ab", "c") and
/// ("a", "bc") give different ids. 24 hex digits are 96 bits of the hash.
pub(crate) fn direct_channel_id(user_low: &str, user_high: &str, subject: &str) -> String {
    let mut hasher = Sha256::new();
    hash_part(&mut hasher, user_low);
    hash_part(&mut hasher, user_high);
    hash_part(&mut hasher, subject);
    let digest = hasher.finalize();
    format!("d_{}", hex(&digest[..12]))
}

/// Generates a group id from 96 random bits.
pub(crate) fn random_group_id() -> String {
    let bytes: [u8; 12] = rand::random();
    format!("g_{}", hex(&bytes))
}

/// SHA-256 over the channel id, the canonical JSON of `content`, and the
/// reply and mentions when there are any. Object keys are sorted, so the
/// hash does not depend on how the client ordered them. A message without
/// reply and mentions hashes as it did before those existed, so retries
/// across an upgrade still match.
pub(crate) fn content_hash(
    channel_id: &str,
    content: &Content,
    reply_to: Option<u64>,
    mentions: &[String],
) -> Result<[u8; 32], serde_json::Error> {
    let mut canonical = String::new();
    write_canonical_json(&serde_json::to_value(content)?, &mut canonical)?;
    let mut hasher = Sha256::new();
    hash_part(&mut hasher, channel_id);
    hash_part(&mut hasher, &canonical);
    if let Some(reply_to) = reply_to {
        hash_part(&mut hasher, "reply_to");
        hash_part(&mut hasher, &reply_to.to_string());
    }
    for mention in mentions {
        hash_part(&mut hasher, "mention");
        hash_part(&mut hasher, mention);
    }
    Ok(hasher.finalize().into())
}

fn write_canonical_json(value: &Value, out: &mut String) -> Result<(), serde_json::Error> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|left, right| left.0.cmp(right.0));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key)?);
                out.push(':');
                write_canonical_json(item, out)?;
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical_json(item, out)?;
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar)?),
    }
    Ok(())
}

/// Rejects content that would not read back: serde_json writes a non-finite
/// float as `null`, which then fails to parse as a coordinate.
pub(crate) fn check_content(content: &Content) -> Result<(), StoreError> {
    if let Content::Location {
        latitude,
        longitude,
        ..
    } = content
        && !(latitude.is_finite() && longitude.is_finite())
    {
        return Err(StoreError::Invalid(
            "location coordinates must be finite numbers",
        ));
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Feeds `part` to `hasher` prefixed with its length, so that no two
/// different lists of parts hash the same bytes.
fn hash_part(hasher: &mut Sha256, part: &str) {
    hasher.update((part.len() as u64).to_be_bytes());
    hasher.update(part.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_channel_id_separates_parts() {
        assert_ne!(
            direct_channel_id("a", "bc", ""),
            direct_channel_id("ab", "c", "")
        );
        assert_ne!(
            direct_channel_id("a", "b", "c"),
            direct_channel_id("a", "bc", "")
        );
        assert_eq!(direct_channel_id("a", "b", "").len(), 2 + 24);
    }

    #[test]
    fn content_hash_covers_reply_and_mentions() {
        let content = Content::Text {
            text: "xin chào".to_owned(),
        };
        let plain = content_hash("c", &content, None, &[]).unwrap();
        let reply = content_hash("c", &content, Some(1), &[]).unwrap();
        let mention = content_hash("c", &content, None, &["bob".to_owned()]).unwrap();
        assert_ne!(plain, reply);
        assert_ne!(plain, mention);
        assert_ne!(reply, mention);
    }
}
