//! The pre-send hook: an HTTP endpoint of the tenant that receives each
//! message after the rules and allows, rejects or rewrites it before it is
//! stored.
//!
//! Each call is a signed `POST` (see [`crate::signature`]) with a deadline.
//! A call that does not produce a valid answer in time is a failure, which
//! the tenant's `on_failure` turns into storing the message unchanged or
//! rejecting it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::signature;
use crate::store::Content;

/// Default deadline of a call, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 300;
/// Shortest and longest allowed `timeout_ms`.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=10_000;
/// Shortest accepted secret, as for API keys: a shorter HMAC key weakens
/// the signature.
pub const MIN_SECRET_BYTES: usize = 32;
/// Maximum calls to one tenant's hook under way at once in this process.
/// A slow hook holds a connection and a waiting request per message until
/// the timeout, so without a bound a burst of traffic piles up. Past this
/// many, further messages count as failed calls at once.
pub const MAX_CONCURRENT_CALLS: usize = 256;
/// Maximum length of the reason code a rejection passes on to the sender.
const MAX_REASON_BYTES: usize = 64;

/// The handling of a message when the hook could not decide on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Store the message as the rules left it.
    Open,
    /// Reject the message with `503 moderation_unavailable`.
    Closed,
}

/// The `moderation.hook` section as written.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// `http` or `https` URL the runtime posts each message to.
    pub url: String,
    /// Deadline of one call, connection included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    pub on_failure: OnFailure,
    /// The signing secret inline, for demos only, because the file then
    /// contains it.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file whose contents (trailing newline removed) are the secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable that contains the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl std::fmt::Debug for HookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookConfig")
            .field("url", &self.url)
            .field("timeout_ms", &self.timeout_ms)
            .field("on_failure", &self.on_failure)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .finish()
    }
}

/// A validated hook with its secret loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct Hook {
    pub url: reqwest::Url,
    pub timeout: Duration,
    pub on_failure: OnFailure,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .field("on_failure", &self.on_failure)
            .finish_non_exhaustive()
    }
}

impl Hook {
    /// Validates `config`, whose secret the caller loaded from the source
    /// the section names. An error names the field below `field`.
    pub fn new(config: &HookConfig, secret: String, field: &str) -> Result<Hook, (String, String)> {
        let url = parse_url(&config.url).map_err(|reason| (format!("{field}.url"), reason))?;
        if !TIMEOUT_MS_RANGE.contains(&config.timeout_ms) {
            return Err((
                format!("{field}.timeout_ms"),
                format!(
                    "{} is out of range: must be between {} and {}",
                    config.timeout_ms,
                    TIMEOUT_MS_RANGE.start(),
                    TIMEOUT_MS_RANGE.end()
                ),
            ));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err((
                field.to_owned(),
                format!("secret must be at least {MIN_SECRET_BYTES} bytes long"),
            ));
        }
        Ok(Hook {
            url,
            timeout: Duration::from_millis(config.timeout_ms),
            on_failure: config.on_failure,
            secret: secret.into_bytes(),
        })
    }

    /// Sends one message to the hook and returns its decision. `slots`
    /// bounds the tenant's calls under way, and `max_reply_bytes` the reply
    /// read into memory.
    pub async fn call(
        &self,
        slots: &Semaphore,
        request: &HookRequest<'_>,
        max_reply_bytes: usize,
    ) -> Result<Verdict, HookError> {
        let _slot = slots.try_acquire().map_err(|_| HookError::Busy)?;
        let client = client()?;
        let body =
            serde_json::to_vec(request).map_err(|error| HookError::Request(error.to_string()))?;
        let signed = signature::sign(&self.secret, signature::unix_now(), &body);
        let exchange = async {
            let mut response = client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(signature::HEADER, signed)
                .body(body)
                .send()
                .await
                .map_err(HookError::from_transport)?;
            let status = response.status();
            if !status.is_success() {
                return Err(HookError::Status(status.as_u16()));
            }
            let mut reply = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(HookError::from_transport)? {
                if reply.len() + chunk.len() > max_reply_bytes {
                    return Err(HookError::TooLarge);
                }
                reply.extend_from_slice(&chunk);
            }
            Ok(reply)
        };
        let reply = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HookError::Timeout)??;
        parse_reply(&reply)
    }
}

/// Accepts an absolute `http` or `https` URL with a host and without
/// credentials, which would end up in logs, or a fragment, which is
/// never sent.
fn parse_url(text: &str) -> Result<reqwest::Url, String> {
    let url =
        reqwest::Url::parse(text).map_err(|error| format!("{text:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?} contains credentials; the signature authenticates the runtime instead"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("{text:?} has a fragment, which is never sent"));
    }
    Ok(url)
}

/// Whether the hook sees a new message or an edit of a stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Send,
    Edit { seq: u64 },
}

/// The body of a call.
#[derive(Debug, Serialize)]
pub struct HookRequest<'a> {
    pub tenant: &'a str,
    pub action: &'static str,
    pub channel_id: &'a str,
    pub sender_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub content: &'a Content,
}

impl<'a> HookRequest<'a> {
    pub fn new(
        tenant: &'a str,
        change: Change,
        channel_id: &'a str,
        sender_id: &'a str,
        content: &'a Content,
    ) -> Self {
        let (action, seq) = match change {
            Change::Send => ("send", None),
            Change::Edit { seq } => ("edit", Some(seq)),
        };
        Self {
            tenant,
            action,
            channel_id,
            sender_id,
            seq,
            content,
        }
    }
}

/// The hook's decision on one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow,
    /// `reason` is the hook's code when it is short and made of `[a-z0-9_]`.
    /// Any other reason is dropped, so no text of the hook reaches senders.
    Reject {
        reason: Option<String>,
    },
    Rewrite(Content),
}

/// A call that produced no decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("{MAX_CONCURRENT_CALLS} calls to the hook are already under way")]
    Busy,
    #[error("no HTTP client: {0}")]
    Client(String),
    #[error("the request could not be encoded: {0}")]
    Request(String),
    #[error("no answer within the timeout")]
    Timeout,
    #[error("the request failed: {0}")]
    Transport(String),
    #[error("the hook answered with status {0}")]
    Status(u16),
    #[error("the reply is larger than the largest message allowed")]
    TooLarge,
    #[error("the reply is not a valid decision: {0}")]
    Malformed(String),
}

impl HookError {
    /// Short label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            HookError::Busy => "busy",
            HookError::Client(_) => "client",
            HookError::Request(_) => "request",
            HookError::Timeout => "timeout",
            HookError::Transport(_) => "transport",
            HookError::Status(_) => "status",
            HookError::TooLarge => "too_large",
            HookError::Malformed(_) => "malformed",
        }
    }

    fn from_transport(error: reqwest::Error) -> Self {
        // Only the source chain tells whether the connection was refused,
        // reset or failed TLS, so it is joined into the message.
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            source = inner.source();
        }
        HookError::Transport(text)
    }
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Reply {
    Allow,
    Reject {
        #[serde(default)]
        reason: Option<serde_json::Value>,
    },
    Rewrite {
        content: Content,
    },
}

/// Reads a reply body. Errors describe where the JSON went wrong but quote
/// none of it, since a reply may contain message text.
fn parse_reply(body: &[u8]) -> Result<Verdict, HookError> {
    let reply: Reply = serde_json::from_slice(body).map_err(|error| {
        HookError::Malformed(format!(
            "{:?} error at line {} column {}",
            error.classify(),
            error.line(),
            error.column()
        ))
    })?;
    Ok(match reply {
        Reply::Allow => Verdict::Allow,
        Reply::Reject { reason } => Verdict::Reject {
            reason: reason
                .as_ref()
                .and_then(serde_json::Value::as_str)
                .filter(|reason| is_reason_code(reason))
                .map(str::to_owned),
        },
        Reply::Rewrite { content } => Verdict::Rewrite(content),
    })
}

fn is_reason_code(reason: &str) -> bool {
    (1..=MAX_REASON_BYTES).contains(&reason.len())
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn client() -> Result<&'static reqwest::Client, HookError> {
    crate::http::client().map_err(HookError::Client)
}

/// True when `rewritten` may replace `original` in an edit: an edit keeps
/// the kind of content the sender chose.
pub fn same_kind(original: &Content, rewritten: &Content) -> bool {
    std::mem::discriminant(original) == std::mem::discriminant(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hook-secret-0123456789abcdef0123456789";

    fn config(url: &str, timeout_ms: u64) -> HookConfig {
        HookConfig {
            url: url.to_owned(),
            timeout_ms,
            on_failure: OnFailure::Open,
            secret: Some(SECRET.to_owned()),
            secret_file: None,
            secret_env: None,
        }
    }

    fn error_field(url: &str, timeout_ms: u64, secret: &str) -> String {
        match Hook::new(&config(url, timeout_ms), secret.to_owned(), "hook") {
            Ok(_) => "<valid>".to_owned(),
            Err((field, _)) => field,
        }
    }

    #[test]
    fn valid_hook_is_accepted() {
        let hook = Hook::new(
            &config("https://backend.example.com/parley/pre-send", 300),
            SECRET.to_owned(),
            "hook",
        )
        .unwrap();
        assert_eq!(hook.timeout, Duration::from_millis(300));
        assert_eq!(hook.url.path(), "/parley/pre-send");
    }

    #[test]
    fn invalid_values_name_their_field() {
        let ok = "http://127.0.0.1:9000/hook";
        assert_eq!(error_field("ftp://127.0.0.1/hook", 300, SECRET), "hook.url");
        assert_eq!(error_field("/relative", 300, SECRET), "hook.url");
        assert_eq!(
            error_field("https://user:pw@backend.example.com/", 300, SECRET),
            "hook.url"
        );
        assert_eq!(
            error_field("http://127.0.0.1/#part", 300, SECRET),
            "hook.url"
        );
        assert_eq!(error_field(ok, 9, SECRET), "hook.timeout_ms");
        assert_eq!(error_field(ok, 10_001, SECRET), "hook.timeout_ms");
        assert_eq!(error_field(ok, 10, SECRET), "<valid>");
        assert_eq!(error_field(ok, 10_000, SECRET), "<valid>");
        assert_eq!(error_field(ok, 300, "too-short"), "hook");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let written = config("http://127.0.0.1:9000/hook", 300);
        assert!(!format!("{written:?}").contains(SECRET));
        let hook = Hook::new(&written, SECRET.to_owned(), "hook").unwrap();
        assert!(!format!("{hook:?}").contains(SECRET));
    }

    #[test]
    fn request_body_names_the_change() {
        let content = Content::Text {
            text: "xin chào".to_owned(),
        };
        let send = HookRequest::new("acme", Change::Send, "d:a:b", "alice", &content);
        assert_eq!(
            serde_json::to_value(&send).unwrap(),
            serde_json::json!({
                "tenant": "acme", "action": "send", "channel_id": "d:a:b",
                "sender_id": "alice", "content": {"kind": "text", "text": "xin chào"}
            })
        );
        let edit = HookRequest::new("acme", Change::Edit { seq: 7 }, "d:a:b", "alice", &content);
        let edit = serde_json::to_value(&edit).unwrap();
        assert_eq!(edit["action"], "edit");
        assert_eq!(edit["seq"], 7);
    }

    #[test]
    fn replies_are_parsed() {
        assert_eq!(parse_reply(br#"{"action":"allow"}"#), Ok(Verdict::Allow));
        // Extra fields leave room for replies that grow later.
        assert_eq!(
            parse_reply(br#"{"action":"allow","score":0.1}"#),
            Ok(Verdict::Allow)
        );
        assert_eq!(
            parse_reply(br#"{"action":"reject","reason":"spam_link"}"#),
            Ok(Verdict::Reject {
                reason: Some("spam_link".to_owned())
            })
        );
        assert_eq!(
            parse_reply(br#"{"action":"rewrite","content":{"kind":"text","text":"ok"}}"#),
            Ok(Verdict::Rewrite(Content::Text {
                text: "ok".to_owned()
            }))
        );
    }

    #[test]
    fn only_short_codes_are_kept_as_reasons() {
        for reason in [
            r#""Spam!""#,
            r#""<script>""#,
            r#""with space""#,
            r#""""#,
            "42",
            "null",
        ] {
            let body = format!(r#"{{"action":"reject","reason":{reason}}}"#);
            assert_eq!(
                parse_reply(body.as_bytes()),
                Ok(Verdict::Reject { reason: None }),
                "{reason}"
            );
        }
        let long = format!(r#"{{"action":"reject","reason":"{}"}}"#, "a".repeat(65));
        assert_eq!(
            parse_reply(long.as_bytes()),
            Ok(Verdict::Reject { reason: None })
        );
        assert_eq!(
            parse_reply(br#"{"action":"reject"}"#),
            Ok(Verdict::Reject { reason: None })
        );
    }

    #[test]
    fn malformed_replies_are_errors_that_quote_nothing() {
        for body in [
            &br#"{"action":"ban"}"#[..],
            br#"{"action":"rewrite"}"#,
            br#"{"action":"rewrite","content":{"kind":"text","text":"secret words","x":1}}"#,
            br#"{"decision":"allow"}"#,
            b"allow",
            b"",
        ] {
            let error = parse_reply(body).unwrap_err();
            assert_eq!(error.kind(), "malformed", "{error}");
            let text = error.to_string();
            assert!(!text.contains("secret words"), "{text}");
            assert!(!text.contains("ban"), "{text}");
        }
    }

    #[test]
    fn edits_keep_their_kind() {
        let text = Content::Text {
            text: "a".to_owned(),
        };
        let other_text = Content::Text {
            text: "b".to_owned(),
        };
        let custom = Content::Custom {
            data: serde_json::json!({}),
        };
        assert!(same_kind(&text, &other_text));
        assert!(!same_kind(&text, &custom));
    }
}
