//! `spec.moderation.hook` and `spec.webhooks`: translation into the
//! runtime's sections, checked by the runtime's own validation.
//!
//! The sections leave out the source of the signing secret, which the
//! builder adds, because the operator generates every secret itself. The
//! runtime's checks run with a stand-in secret of the minimum length.

use chat_runtime::moderation::{Hook, HookConfig, OnFailure};
use chat_runtime::webhooks::{self, MAX_ENDPOINTS, WebhookConfig};
use serde::Serialize;

use super::moderation::camel_case_path;
use super::{InvalidSpec, invalid, runtime_section};
use crate::crd::{HookFailureAction, ModerationHook, WebhookSpec};

const HOOK_FIELD: &str = "spec.moderation.hook";
const WEBHOOKS_FIELD: &str = "spec.webhooks";

/// Shortest signing secret the runtime accepts. Generated secrets are
/// longer, so the checks below use a stand-in of exactly this length.
const MIN_SECRET_BYTES: usize = chat_runtime::moderation::hook::MIN_SECRET_BYTES;

/// The runtime's `moderation.hook` section without its secret source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookSection {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    pub on_failure: OnFailure,
}

/// One entry of the runtime's `webhooks` section without its secret
/// source. Fields the spec leaves out take the runtime's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookSection {
    pub name: String,
    pub url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_initial_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Checks `spec.moderation.hook` with the runtime's hook constructor and
/// returns the runtime's section for it.
pub fn validate_hook(spec: &ModerationHook) -> Result<HookSection, InvalidSpec> {
    let section = HookSection {
        url: spec.url.clone(),
        timeout_ms: spec.timeout_ms,
        on_failure: match spec.on_failure {
            HookFailureAction::Open => OnFailure::Open,
            HookFailureAction::Closed => OnFailure::Closed,
        },
    };
    let config: HookConfig = runtime_section(&section, HOOK_FIELD)?;
    Hook::new(&config, "s".repeat(MIN_SECRET_BYTES), HOOK_FIELD)
        .map_err(|(field, message)| invalid(camel_case_path(&field), message))?;
    Ok(section)
}

/// Checks `spec.webhooks` with the runtime's endpoint validation and
/// returns the runtime's section for it.
pub fn validate_webhooks(specs: &[WebhookSpec]) -> Result<Vec<WebhookSection>, InvalidSpec> {
    if specs.len() > MAX_ENDPOINTS {
        return Err(invalid(
            WEBHOOKS_FIELD,
            format!(
                "lists {} webhooks, but the runtime allows at most {MAX_ENDPOINTS}",
                specs.len()
            ),
        ));
    }
    let mut sections: Vec<WebhookSection> = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let field = format!("{WEBHOOKS_FIELD}[{index}]");
        let section = WebhookSection {
            name: spec.name.clone(),
            url: spec.url.clone(),
            events: spec.events.clone(),
            max_attempts: spec.max_attempts,
            retry_initial_ms: spec.retry_initial_ms,
            timeout_ms: spec.timeout_ms,
        };
        let config: WebhookConfig = runtime_section(&section, &field)?;
        webhooks::validate(&config, vec![0; MIN_SECRET_BYTES]).map_err(|(name, message)| {
            invalid(format!("{field}.{}", camel_case_path(name)), message)
        })?;
        if sections.iter().any(|earlier| earlier.name == section.name) {
            return Err(invalid(
                format!("{field}.name"),
                format!("duplicate webhook name {:?}", section.name),
            ));
        }
        sections.push(section);
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(yaml: &str) -> Result<HookSection, InvalidSpec> {
        validate_hook(&serde_yaml::from_str(yaml).unwrap())
    }

    fn webhooks(yaml: &str) -> Result<Vec<WebhookSection>, InvalidSpec> {
        let specs: Vec<WebhookSpec> = serde_yaml::from_str(yaml).unwrap();
        validate_webhooks(&specs)
    }

    #[test]
    fn hook_fields_are_translated() {
        let section =
            hook("{url: 'https://shop.example/pre-send', timeoutMs: 500, onFailure: Closed}")
                .unwrap();
        assert_eq!(section.url, "https://shop.example/pre-send");
        assert_eq!(section.timeout_ms, Some(500));
        assert_eq!(section.on_failure, OnFailure::Closed);

        let section = hook("{url: 'http://backend.shop.svc:8080/check', onFailure: Open}").unwrap();
        assert_eq!(section.timeout_ms, None);
        assert_eq!(section.on_failure, OnFailure::Open);
    }

    #[test]
    fn hook_errors_name_their_field() {
        let cases = [
            (
                "{url: 'ftp://shop.example/x', onFailure: Open}",
                "spec.moderation.hook.url",
                "http or https",
            ),
            (
                "{url: 'not a url', onFailure: Open}",
                "spec.moderation.hook.url",
                "not a URL",
            ),
            (
                "{url: 'https://user:pw@shop.example/x', onFailure: Open}",
                "spec.moderation.hook.url",
                "credentials",
            ),
            (
                "{url: 'https://shop.example/x#top', onFailure: Open}",
                "spec.moderation.hook.url",
                "fragment",
            ),
            (
                "{url: 'https://shop.example/x', timeoutMs: 9, onFailure: Open}",
                "spec.moderation.hook.timeoutMs",
                "between 10 and 10000",
            ),
            (
                "{url: 'https://shop.example/x', timeoutMs: 10001, onFailure: Open}",
                "spec.moderation.hook.timeoutMs",
                "between 10 and 10000",
            ),
        ];
        for (yaml, field, message) in cases {
            let error = hook(yaml).unwrap_err();
            assert_eq!(error.field, field, "{yaml}: {}", error.message);
            assert!(
                error.message.contains(message),
                "{yaml}: {:?} does not contain {message:?}",
                error.message
            );
        }
    }

    #[test]
    fn hook_timeout_bounds_are_valid() {
        for timeout in [10, 10000] {
            let yaml =
                format!("{{url: 'https://shop.example/x', timeoutMs: {timeout}, onFailure: Open}}");
            assert!(hook(&yaml).is_ok(), "{yaml}");
        }
    }

    #[test]
    fn webhook_fields_are_translated() {
        let sections = webhooks(
            "[{name: crm, url: 'https://crm.example/events', events: [message.*, channel.read], maxAttempts: 3, retryInitialMs: 250, timeoutMs: 2000}, {name: push, url: 'http://push.shop.svc/hook'}]",
        )
        .unwrap();
        assert_eq!(
            sections[0],
            WebhookSection {
                name: "crm".to_owned(),
                url: "https://crm.example/events".to_owned(),
                events: vec!["message.*".to_owned(), "channel.read".to_owned()],
                max_attempts: Some(3),
                retry_initial_ms: Some(250),
                timeout_ms: Some(2000),
            }
        );
        assert_eq!(sections[1].events, Vec::<String>::new());
        assert_eq!(sections[1].max_attempts, None);
    }

    #[test]
    fn webhook_errors_name_their_field() {
        let ok = "{name: ok, url: 'https://ok.example/x'}";
        let many = vec![ok; MAX_ENDPOINTS + 1].join(", ");
        let cases: Vec<(String, &str, &str)> = vec![
            (format!("[{many}]"), "spec.webhooks", "at most 16"),
            (
                format!("[{ok}, {{name: b, url: 'ftp://b.example/x'}}]"),
                "spec.webhooks[1].url",
                "http:// or https://",
            ),
            (
                format!("[{ok}, {{name: b, url: 'b.example/x'}}]"),
                "spec.webhooks[1].url",
                "http:// or https://",
            ),
            (
                "[{name: Crm, url: 'https://b.example/x'}]".into(),
                "spec.webhooks[0].name",
                "lowercase",
            ),
            (
                "[{name: b, url: 'https://b.example/x', events: [Message.new]}]".into(),
                "spec.webhooks[0].events",
                "not an event type",
            ),
            (
                "[{name: b, url: 'https://b.example/x', maxAttempts: 0}]".into(),
                "spec.webhooks[0].maxAttempts",
                "between 1 and 50",
            ),
            (
                "[{name: b, url: 'https://b.example/x', maxAttempts: 51}]".into(),
                "spec.webhooks[0].maxAttempts",
                "between 1 and 50",
            ),
            (
                "[{name: b, url: 'https://b.example/x', retryInitialMs: 9}]".into(),
                "spec.webhooks[0].retryInitialMs",
                "between 10 and 600000",
            ),
            (
                "[{name: b, url: 'https://b.example/x', timeoutMs: 8001}]".into(),
                "spec.webhooks[0].timeoutMs",
                "between 100 and 8000",
            ),
            (
                format!("[{ok}, {ok}]"),
                "spec.webhooks[1].name",
                "duplicate webhook name",
            ),
        ];
        for (yaml, field, message) in cases {
            let error = webhooks(&yaml).unwrap_err();
            assert_eq!(error.field, field, "{yaml}: {}", error.message);
            assert!(
                error.message.contains(message),
                "{yaml}: {:?} does not contain {message:?}",
                error.message
            );
        }
    }

    #[test]
    fn webhook_bounds_are_valid() {
        let names: Vec<String> = (0..MAX_ENDPOINTS)
            .map(|i| format!("{{name: w{i}, url: 'https://w.example/{i}'}}"))
            .collect();
        let cases = [
            format!("[{}]", names.join(", ")),
            format!("[{{name: {}, url: 'https://w.example/x', maxAttempts: 50, retryInitialMs: 600000, timeoutMs: 8000}}]", "a".repeat(63)),
            "[{name: a, url: 'https://w.example/x', maxAttempts: 1, retryInitialMs: 10, timeoutMs: 100}]".to_owned(),
        ];
        for yaml in cases {
            let result = webhooks(&yaml);
            assert!(result.is_ok(), "{yaml}: {result:?}");
        }
    }
}
