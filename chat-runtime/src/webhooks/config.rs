//! A tenant's `webhooks` section as written in the runtime configuration,
//! and its validation.

use std::time::Duration;

use serde::Deserialize;

/// Maximum time of one attempt, in milliseconds: less than the lease of
/// the replica that delivers.
pub const MAX_TIMEOUT_MS: u64 = 8_000;

/// Maximum webhook endpoints per tenant: each has a delivery task.
pub const MAX_ENDPOINTS: usize = 16;

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name used in metrics, logs and the dead-letter API: 1 to 63
    /// lowercase letters, digits, `-` or `_`.
    pub name: String,
    /// `http://` or `https://` URL that receives each event as a POST.
    pub url: String,
    /// Key of the `Parley-Signature` header, at least 32 bytes, from
    /// exactly one of these.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Event types to send, such as `message.new`, or a prefix ending in
    /// `.*` such as `message.*`. Every type when empty.
    #[serde(default)]
    pub events: Vec<String>,
    /// Attempts per event before it goes to the dead-letter list.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the second attempt, in milliseconds. Each later wait
    /// doubles, up to a minute.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Time allowed for one attempt, in milliseconds, at most
    /// [`MAX_TIMEOUT_MS`].
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

fn default_max_attempts() -> u32 {
    8
}

fn default_retry_initial_ms() -> u64 {
    1000
}

fn default_timeout_ms() -> u64 {
    5000
}

/// A validated endpoint with its secret loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub name: String,
    pub url: String,
    pub secret: Vec<u8>,
    pub events: Vec<String>,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl WebhookSettings {
    /// Returns whether events of type `kind` go to this endpoint.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.is_empty()
            || self
                .events
                .iter()
                .any(|wanted| match wanted.strip_suffix('*') {
                    Some(prefix) => kind.starts_with(prefix),
                    None => kind == wanted,
                })
    }
}

/// Checks one endpoint, except its secret, which the caller loads. Returns
/// the name of the invalid field below the endpoint and the reason.
pub fn validate(
    config: &WebhookConfig,
    secret: Vec<u8>,
) -> Result<WebhookSettings, (&'static str, String)> {
    let name_valid = (1..=63).contains(&config.name.len())
        && config
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_valid {
        return Err((
            "name",
            "must be 1 to 63 lowercase letters, digits, '-' or '_'".to_owned(),
        ));
    }
    let url_valid = reqwest::Url::parse(&config.url)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some());
    if !url_valid {
        return Err((
            "url",
            format!(
                "{:?} is not an http:// or https:// URL with a host",
                config.url
            ),
        ));
    }
    for pattern in &config.events {
        let body = pattern.strip_suffix(".*").unwrap_or(pattern);
        let valid = !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_');
        if !valid {
            return Err((
                "events",
                format!(
                    "{pattern:?} is not an event type such as message.new or a prefix such as message.*"
                ),
            ));
        }
    }
    if !(1..=50).contains(&config.max_attempts) {
        return Err(("max_attempts", "must be between 1 and 50".to_owned()));
    }
    if !(10..=600_000).contains(&config.retry_initial_ms) {
        return Err((
            "retry_initial_ms",
            "must be between 10 and 600000".to_owned(),
        ));
    }
    // One attempt must end before the delivering replica's lease, which
    // is renewed before each attempt, runs out.
    if !(100..=MAX_TIMEOUT_MS).contains(&config.timeout_ms) {
        return Err((
            "timeout_ms",
            format!("must be between 100 and {MAX_TIMEOUT_MS}"),
        ));
    }
    Ok(WebhookSettings {
        name: config.name.clone(),
        url: config.url.clone(),
        secret,
        events: config.events.clone(),
        max_attempts: config.max_attempts,
        retry_initial: Duration::from_millis(config.retry_initial_ms),
        timeout: Duration::from_millis(config.timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> WebhookConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn settings(yaml: &str) -> Result<WebhookSettings, (&'static str, String)> {
        validate(&config(yaml), vec![0; 32])
    }

    #[test]
    fn event_filters_match_types_and_prefixes() {
        let all = settings("{name: a, url: 'http://127.0.0.1:9/x'}").unwrap();
        assert!(all.wants("user.deleted"));

        let some =
            settings("{name: a, url: 'http://127.0.0.1:9/x', events: [message.*, channel.read]}")
                .unwrap();
        assert!(some.wants("message.new"));
        assert!(some.wants("message.deleted"));
        assert!(some.wants("channel.read"));
        assert!(!some.wants("channel.created"));
        assert!(!some.wants("messages.x"));
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            ("{name: A, url: 'http://127.0.0.1:9/x'}", "name"),
            ("{name: a, url: 'ftp://127.0.0.1/x'}", "url"),
            ("{name: a, url: 'not a url'}", "url"),
            (
                "{name: a, url: 'http://127.0.0.1:9/x', events: ['Message.new']}",
                "events",
            ),
            (
                "{name: a, url: 'http://127.0.0.1:9/x', events: ['.*']}",
                "events",
            ),
            (
                "{name: a, url: 'http://127.0.0.1:9/x', max_attempts: 0}",
                "max_attempts",
            ),
            (
                "{name: a, url: 'http://127.0.0.1:9/x', retry_initial_ms: 1}",
                "retry_initial_ms",
            ),
            (
                "{name: a, url: 'http://127.0.0.1:9/x', timeout_ms: 99999}",
                "timeout_ms",
            ),
        ];
        for (yaml, field) in cases {
            let error = settings(yaml).unwrap_err();
            assert_eq!(error.0, field, "{yaml}: {error:?}");
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let parsed = config(
            "{name: a, url: 'http://127.0.0.1:9/x', secret: sekrit-sekrit-sekrit-sekrit-sekrit}",
        );
        assert!(!format!("{parsed:?}").contains("sekrit"));
        let validated = validate(&parsed, b"sekrit-sekrit-sekrit-sekrit-sekrit".to_vec()).unwrap();
        assert!(!format!("{validated:?}").contains("sekrit"));
    }
}
