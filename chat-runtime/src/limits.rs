//! Per-user send rate and content limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use unicode_segmentation::UnicodeSegmentation;

use crate::attachments;
use crate::config::Limits;
use crate::store::Content;

/// Rejection of content, with the code and message clients receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentError {
    pub code: &'static str,
    pub message: String,
}

impl ContentError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Maximum nesting of JSON that clients store, in `custom` message data
/// and user metadata. The event log wraps stored JSON in a few more levels,
/// and its readers, this runtime among them, parse at most 128 levels.
pub const MAX_JSON_DEPTH: usize = 32;

/// Returns how many arrays and objects nest in `value` at its deepest: 0
/// for a scalar, 1 for `[1]` or `{}`.
pub fn json_depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0)];
    while let Some((value, around)) = pending.pop() {
        match value {
            serde_json::Value::Array(items) => {
                deepest = deepest.max(around + 1);
                pending.extend(items.iter().map(|item| (item, around + 1)));
            }
            serde_json::Value::Object(fields) => {
                deepest = deepest.max(around + 1);
                pending.extend(fields.values().map(|field| (field, around + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Maximum location label, in bytes.
const MAX_LABEL_BYTES: usize = 256;
/// Maximum client message id, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// Maximum reaction, in UTF-8 bytes after NFC normalisation: room for a
/// skin-toned family emoji (25 bytes) or a short name such as `thích`.
pub const MAX_REACTION_BYTES: usize = 64;
/// Maximum mentioned users per message.
pub const MAX_MENTIONS: usize = 50;

pub fn check_client_id(client_id: &str) -> Result<(), ContentError> {
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(ContentError::new(
            "invalid_client_id",
            format!("client_id must be 1 to {MAX_CLIENT_ID_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Checks a message's content against the tenant's limits and, for an
/// attachment, its allowed hosts.
pub fn check_content(
    content: &Content,
    limits: &Limits,
    attachment_hosts: &[String],
) -> Result<(), ContentError> {
    match content {
        Content::Attachment {
            url,
            content_type,
            size,
            name,
            width,
            height,
            thumbnail_url,
            ..
        } => {
            let attachment = attachments::Attachment {
                url,
                content_type,
                size: *size,
                name: name.as_deref(),
                width: *width,
                height: *height,
                thumbnail_url: thumbnail_url.as_deref(),
            };
            attachments::check(&attachment, attachment_hosts)?;
        }
        Content::Text { text } | Content::Automated { text, .. } => check_text(text, limits)?,
        Content::Template {
            template_id,
            values,
            text,
        } => {
            crate::templates::check_values(template_id, values)?;
            check_text(text, limits)?;
        }
        Content::Location {
            latitude,
            longitude,
            label,
        } => {
            if !(-90.0..=90.0).contains(latitude) || !(-180.0..=180.0).contains(longitude) {
                return Err(ContentError::new(
                    "invalid_location",
                    "latitude must be within -90..90 and longitude within -180..180",
                ));
            }
            if label
                .as_ref()
                .is_some_and(|label| label.len() > MAX_LABEL_BYTES)
            {
                return Err(ContentError::new(
                    "message_too_large",
                    format!("label is longer than {MAX_LABEL_BYTES} bytes"),
                ));
            }
        }
        Content::Custom { data } => {
            let depth = json_depth(data);
            if depth > MAX_JSON_DEPTH {
                return Err(ContentError::new(
                    "invalid_custom_data",
                    format!("custom data nests {depth} levels deep; the limit is {MAX_JSON_DEPTH}"),
                ));
            }
            let size = serde_json::to_string(data)
                .map(|text| text.len())
                .unwrap_or(usize::MAX);
            if size > limits.max_custom_bytes {
                return Err(ContentError::new(
                    "message_too_large",
                    format!(
                        "custom data is {size} bytes as compact JSON; the limit is {} bytes",
                        limits.max_custom_bytes
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Checks the text of a message: visible, without control characters, and
/// within the byte and character limits.
fn check_text(text: &str, limits: &Limits) -> Result<(), ContentError> {
    if !has_visible_char(text) {
        return Err(ContentError::new(
            "empty_message",
            "text must contain a visible character",
        ));
    }
    if has_control_char(text) {
        return Err(ContentError::new(
            "invalid_text",
            "text must not contain control characters other than tab and line breaks",
        ));
    }
    if text.len() > limits.max_message_bytes {
        return Err(ContentError::new(
            "message_too_large",
            format!(
                "text is {} bytes of UTF-8; the limit is {} bytes",
                text.len(),
                limits.max_message_bytes
            ),
        ));
    }
    let chars = text.graphemes(true).count();
    if chars > limits.max_message_chars {
        return Err(ContentError::new(
            "message_too_long",
            format!(
                "text is {chars} characters; the limit is {} characters, counting each emoji and each letter with its marks as one",
                limits.max_message_chars
            ),
        ));
    }
    Ok(())
}

/// True for characters that render as nothing: zero-width spaces and
/// joiners, bidirectional controls, the byte order mark and the soft hyphen.
/// They can hide inside ids and make a message look empty.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// True for the common blocks of combining marks, which attach to the
/// character before them and show nothing on their own.
fn is_combining_mark(c: char) -> bool {
    matches!(
        c,
        '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}'
    )
}

/// True for the characters emoji sequences are built with: the zero-width
/// joiner, variation selectors, and the tag characters of subdivision flags.
fn is_emoji_joiner(c: char) -> bool {
    matches!(c, '\u{200D}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0020}'..='\u{E007F}')
}

/// True when `text` has a character that is neither white space, a control
/// character nor invisible.
pub fn has_visible_char(text: &str) -> bool {
    text.chars()
        .any(|c| !c.is_whitespace() && !c.is_control() && !is_invisible(c))
}

/// True when `text` has a control character other than tab, CR or LF.
pub fn has_control_char(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// Checks a reaction and returns its NFC form, so that a reaction typed
/// with precomposed Vietnamese letters and one typed with combining tone
/// marks count as the same reaction.
///
/// The characters that emoji sequences need (the zero-width joiner,
/// variation selectors, tags) are allowed after a first character that
/// shows. Other invisible characters, white space and control characters
/// are not.
pub fn check_reaction(reaction: &str) -> Result<String, ContentError> {
    use unicode_normalization::UnicodeNormalization;

    let normalized: String = reaction.nfc().collect();
    let allowed =
        |c: char| !c.is_whitespace() && !c.is_control() && (is_emoji_joiner(c) || !is_invisible(c));
    let starts_visible = normalized
        .chars()
        .next()
        .is_some_and(|first| !is_emoji_joiner(first) && !is_combining_mark(first));
    if normalized.len() > MAX_REACTION_BYTES || !starts_visible || !normalized.chars().all(allowed)
    {
        return Err(ContentError::new(
            "invalid_reaction",
            format!(
                "a reaction must be 1 to {MAX_REACTION_BYTES} bytes without spaces, control or invisible characters"
            ),
        ));
    }
    Ok(normalized)
}

/// Checks the users a message mentions and returns them sorted and without
/// repeats, the form the store expects.
pub fn check_mentions(mentions: Vec<String>) -> Result<Vec<String>, ContentError> {
    let mut mentions = mentions;
    mentions.sort();
    mentions.dedup();
    if mentions.len() > MAX_MENTIONS {
        return Err(ContentError::new(
            "too_many_mentions",
            format!("a message may mention at most {MAX_MENTIONS} users"),
        ));
    }
    if mentions.iter().any(|user| user.is_empty()) {
        return Err(ContentError::new(
            "invalid_mention",
            "a mentioned user id must not be empty",
        ));
    }
    Ok(mentions)
}

/// Token buckets per user, shared by all of the user's sockets in this
/// process.
///
/// NOTE: the limit is per process. A user whose sockets land on several
/// runtime processes can send up to that many times the configured rate.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets idle this long are full again and can be forgotten.
const IDLE_BUCKET: Duration = Duration::from_secs(60);

impl RateLimiter {
    /// Takes one send from `user`'s bucket. On refusal returns how long to
    /// wait before the next send is allowed.
    pub fn try_acquire(&self, user: &str, limits: &Limits, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(limits.messages_per_second);
        let capacity = f64::from(limits.message_burst.max(1));
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 10_000 {
            buckets.retain(|_, bucket| now.duration_since(bucket.updated) < IDLE_BUCKET);
        }

        let bucket = buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_limit_counts_user_visible_characters() {
        let limits = Limits {
            max_message_chars: 3,
            ..Limits::default()
        };
        // A family emoji (seven code points), a thumbs up with a skin tone,
        // and "ệ" typed as e + circumflex + dot below: three characters.
        let three = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466}\u{1F44D}\u{1F3FD}e\u{0302}\u{0323}";
        let fits = Content::Text { text: three.into() };
        assert!(check_content(&fits, &limits, &[]).is_ok());

        let four = Content::Text {
            text: format!("{three}a"),
        };
        let error = check_content(&four, &limits, &[]).unwrap_err();
        assert_eq!(error.code, "message_too_long");
        assert!(error.message.contains("4 characters"), "{}", error.message);
    }

    #[test]
    fn text_limit_counts_utf8_bytes() {
        let limits = Limits {
            max_message_bytes: 10,
            ..Limits::default()
        };
        // "Tiếng Việt" is 10 characters but 14 bytes of UTF-8.
        let text = Content::Text {
            text: "Tiếng Việt".into(),
        };
        let error = check_content(&text, &limits, &[]).unwrap_err();
        assert_eq!(error.code, "message_too_large");
        assert!(
            error.message.contains("limit is 10 bytes"),
            "{}",
            error.message
        );

        let fits = Content::Text {
            text: "xin chao".into(),
        };
        assert!(check_content(&fits, &limits, &[]).is_ok());
    }

    #[test]
    fn empty_text_is_rejected() {
        let empty = Content::Text { text: "  ".into() };
        assert_eq!(
            check_content(&empty, &Limits::default(), &[])
                .unwrap_err()
                .code,
            "empty_message"
        );
    }

    #[test]
    fn invisible_text_is_empty() {
        for text in [
            "\u{200B}",
            " \u{FEFF}\u{200D} ",
            "\u{202E}",
            "\u{061C}",
            "\u{3164}\u{115F}\u{FFA0}",
            "\u{2800}",
            "\u{034F}",
            "\u{E0041}",
            "\u{1D173}",
        ] {
            let content = Content::Text { text: text.into() };
            let error = check_content(&content, &Limits::default(), &[]).unwrap_err();
            assert_eq!(error.code, "empty_message", "{text:?}");
        }
        let family = Content::Text {
            text: "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}".into(),
        };
        assert!(check_content(&family, &Limits::default(), &[]).is_ok());
    }

    #[test]
    fn control_characters_are_rejected() {
        let content = Content::Text {
            text: "a\u{0000}b".into(),
        };
        assert_eq!(
            check_content(&content, &Limits::default(), &[])
                .unwrap_err()
                .code,
            "invalid_text"
        );
        let lines = Content::Text {
            text: "Xin chào\nbạn\tơi".into(),
        };
        assert!(check_content(&lines, &Limits::default(), &[]).is_ok());
    }

    #[test]
    fn location_range_is_checked() {
        let bad = Content::Location {
            latitude: 91.0,
            longitude: 0.0,
            label: None,
        };
        assert_eq!(
            check_content(&bad, &Limits::default(), &[])
                .unwrap_err()
                .code,
            "invalid_location"
        );
        let good = Content::Location {
            latitude: 10.77,
            longitude: 106.70,
            label: Some("Chợ Bến Thành".into()),
        };
        assert!(check_content(&good, &Limits::default(), &[]).is_ok());
    }

    #[test]
    fn custom_size_is_checked() {
        let limits = Limits {
            max_custom_bytes: 16,
            ..Limits::default()
        };
        let big = Content::Custom {
            data: serde_json::json!({"offer": "0123456789"}),
        };
        assert_eq!(
            check_content(&big, &limits, &[]).unwrap_err().code,
            "message_too_large"
        );
    }

    #[test]
    fn custom_nesting_is_checked() {
        let nested = |levels: usize| {
            let text = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
            Content::Custom {
                data: serde_json::from_str(&text).unwrap(),
            }
        };
        let limits = Limits::default();
        assert!(check_content(&nested(MAX_JSON_DEPTH), &limits, &[]).is_ok());
        let deep = check_content(&nested(MAX_JSON_DEPTH + 1), &limits, &[]).unwrap_err();
        assert_eq!(deep.code, "invalid_custom_data");
    }

    #[test]
    fn json_depth_counts_levels() {
        assert_eq!(json_depth(&serde_json::json!(1)), 0);
        assert_eq!(json_depth(&serde_json::json!({})), 1);
        assert_eq!(json_depth(&serde_json::json!([1])), 1);
        assert_eq!(json_depth(&serde_json::json!({"a": [1, {"b": []}]})), 4);
    }

    #[test]
    fn reactions_are_normalized_to_nfc() {
        let precomposed = check_reaction("th\u{00ED}ch").unwrap();
        let combining = check_reaction("thi\u{0301}ch").unwrap();
        assert_eq!(precomposed, combining);
        assert_eq!(precomposed, "thích");
    }

    #[test]
    fn emoji_sequences_are_valid_reactions() {
        for reaction in [
            "👍",
            "👍🏽",
            "❤️",
            "👨\u{200D}👩\u{200D}👧\u{200D}👦",
            "😂",
            "🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
        ] {
            assert_eq!(check_reaction(reaction).unwrap(), reaction);
        }
    }

    #[test]
    fn invalid_reactions_are_rejected() {
        for reaction in [
            "",
            " ",
            "a b",
            "\u{200B}",
            "\u{200D}",
            "\u{FE0F}",
            "like\u{202E}",
            "\u{0007}",
            "\u{0301}",
            "\u{061C}",
            "\u{3164}",
            "\u{115F}",
            "\u{FFA0}",
            "\u{2800}",
            "\u{034F}",
            "\u{E0041}",
            "\u{1D173}",
        ] {
            assert_eq!(
                check_reaction(reaction).unwrap_err().code,
                "invalid_reaction",
                "{reaction:?}"
            );
        }
        let long = "👍".repeat(MAX_REACTION_BYTES / 4 + 1);
        assert!(check_reaction(&long).is_err());
    }

    #[test]
    fn mentions_are_sorted_and_capped() {
        let mentions = check_mentions(vec!["bob".into(), "an".into(), "bob".into()]).unwrap();
        assert_eq!(mentions, vec!["an".to_owned(), "bob".to_owned()]);
        let many = (0..=MAX_MENTIONS)
            .map(|index| format!("u{index}"))
            .collect();
        assert_eq!(check_mentions(many).unwrap_err().code, "too_many_mentions");
        assert_eq!(
            check_mentions(vec![String::new()]).unwrap_err().code,
            "invalid_mention"
        );
    }

    #[test]
    fn bucket_allows_burst_then_refills() {
        let limits = Limits {
            messages_per_second: 2,
            message_burst: 3,
            ..Limits::default()
        };
        let limiter = RateLimiter::default();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.try_acquire("alice", &limits, start).is_ok());
        }
        let wait = limiter.try_acquire("alice", &limits, start).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(limiter.try_acquire("bob", &limits, start).is_ok());
        assert!(
            limiter
                .try_acquire("alice", &limits, start + Duration::from_millis(500))
                .is_ok()
        );
    }
}
