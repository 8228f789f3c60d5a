//! The runtime's configuration file, in the ConfigMap the runtime mounts.
//!
//! The file lists one tenant and names its secrets by file path only, so the
//! ConfigMap contains no secret. Limits are written out in full, defaults
//! included, so that `status.effective` stays true even if a later runtime
//! release changes its defaults.

use std::collections::BTreeMap;

use chat_runtime::moderation::ModerationConfig;
use chat_runtime::templates::Template;
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;

use super::credentials::{self, Credentials};
use super::layout;
use super::object_meta;
use super::signing;
use crate::naming;
use crate::validate::{ExtensionsSection, HookSection, ValidTenant, WebhookSection};

/// Seconds the runtime keeps serving, with `/readyz` failing, between
/// SIGTERM and closing its listener, so that Services and Ingress
/// controllers stop routing to the pod before connections are refused.
pub const SHUTDOWN_DELAY_SECONDS: u64 = 5;

#[derive(Serialize)]
struct RuntimeConfig<'a> {
    server: ServerConfig,
    tenants: [TenantConfig<'a>; 1],
}

#[derive(Serialize)]
struct ServerConfig {
    listen: String,
    data_dir: &'static str,
    shutdown_delay_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<super::redis::RedisConfig>,
}

#[derive(Serialize)]
struct TenantConfig<'a> {
    id: &'a str,
    display_name: &'a str,
    api_keys: Vec<ApiKeyConfig<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    allowed_origins: &'a [String],
    limits: LimitsConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<super::scylla::StoreConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    moderation: Option<ModerationSection<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    webhooks: Vec<Signed<'a, WebhookSection>>,
    #[serde(skip_serializing_if = "<[Template]>::is_empty")]
    templates: &'a [Template],
    #[serde(skip_serializing_if = "Option::is_none")]
    extensions: Option<&'a ExtensionsSection>,
}

/// The `moderation` section: the checked rules, whose own `hook` is always
/// `None`, and the hook with its secret file.
#[derive(Serialize)]
struct ModerationSection<'a> {
    #[serde(flatten)]
    rules: &'a ModerationConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    hook: Option<Signed<'a, HookSection>>,
}

/// A section and the file its signing secret is mounted as.
#[derive(Serialize)]
struct Signed<'a, T> {
    #[serde(flatten)]
    section: &'a T,
    secret_file: String,
}

#[derive(Serialize)]
struct ApiKeyConfig<'a> {
    id: &'a str,
    secret_file: String,
}

#[derive(Serialize)]
struct LimitsConfig {
    max_message_bytes: u32,
    max_message_chars: u32,
    messages_per_second: u32,
    message_burst: u32,
    max_sockets_per_user: u32,
}

/// Renders the runtime's configuration file for the tenant. Keys appear in
/// the order of `credentials`, current key first, because the runtime signs
/// tokens with the first key it lists. `store` is the tenant's ScyllaDB
/// store; without it the runtime uses its embedded store. The tenant's
/// Redis, if any, goes into `server.redis`, which the runtime reads only at
/// start, so the configuration checksum restarts the pods when it changes.
pub fn config_yaml(
    valid: &ValidTenant,
    credentials: &Credentials,
    store: Option<super::scylla::StoreConfig>,
) -> Result<String, serde_yaml::Error> {
    let api_keys = credentials
        .keys()
        .map(|key| ApiKeyConfig {
            id: &key.id,
            secret_file: layout::secret_path(&credentials::data_key(&key.id)),
        })
        .collect();
    let effective = &valid.effective;
    let tenant = TenantConfig {
        id: &valid.tenant_id,
        display_name: &valid.display_name,
        api_keys,
        allowed_origins: &valid.allowed_origins,
        limits: LimitsConfig {
            max_message_bytes: effective.max_message_bytes,
            max_message_chars: effective
                .max_message_chars
                .unwrap_or(crate::validate::DEFAULT_MAX_MESSAGE_CHARS),
            messages_per_second: effective.messages_per_second,
            message_burst: effective.message_burst,
            max_sockets_per_user: effective.max_sockets_per_user,
        },
        store,
        moderation: moderation_section(valid),
        webhooks: valid
            .webhooks
            .iter()
            .map(|webhook| Signed {
                section: webhook,
                secret_file: signing::secret_path(&signing::webhook_key(&webhook.name)),
            })
            .collect(),
        templates: &valid.templates,
        extensions: valid.extensions.as_ref(),
    };
    // NOTE: 0.0.0.0 accepts IPv4 only, so on an IPv6-only cluster the
    // runtime is unreachable.
    let server = ServerConfig {
        listen: format!("0.0.0.0:{}", layout::HTTP_PORT),
        data_dir: layout::DATA_DIR,
        shutdown_delay_seconds: SHUTDOWN_DELAY_SECONDS,
        redis: valid.redis.as_ref().map(super::redis::redis_config),
    };
    serde_yaml::to_string(&RuntimeConfig {
        server,
        tenants: [tenant],
    })
}

/// Returns the `moderation` section, or `None` when the spec has neither
/// rules nor a hook.
fn moderation_section(valid: &ValidTenant) -> Option<ModerationSection<'_>> {
    let rules = valid.moderation.as_ref()?;
    let hook = valid.hook.as_ref().map(|hook| Signed {
        section: hook,
        secret_file: signing::secret_path(signing::HOOK_KEY),
    });
    Some(ModerationSection { rules, hook })
}

/// Builds the ConfigMap that contains the configuration file `config_yaml`.
pub fn config_map(valid: &ValidTenant, config_yaml: String) -> ConfigMap {
    ConfigMap {
        metadata: object_meta(valid, naming::RUNTIME),
        data: Some(BTreeMap::from([(
            layout::CONFIG_FILE.to_owned(),
            config_yaml,
        )])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use chat_runtime::config::Config;

    use super::*;
    use crate::build::credentials::ApiKey;
    use crate::build::tests::{valid_tenant, valid_tenant_from};

    /// A directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("parley-operator-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn credentials() -> Credentials {
        Credentials::from_keys(vec![
            ApiKey {
                id: "chotot-new".to_owned(),
                secret: "n".repeat(43),
            },
            ApiKey {
                id: "chotot-old".to_owned(),
                secret: "o".repeat(43),
            },
        ])
        .unwrap()
    }

    /// Writes each key's secret where the config expects it, below `root`
    /// in place of the secrets directory, and parses the config as the
    /// runtime does.
    fn parse_with_secrets(yaml: &str, credentials: &Credentials, root: &Path) -> Config {
        for key in credentials.keys() {
            let file = root.join(credentials::data_key(&key.id));
            std::fs::write(file, format!("{}\n", key.secret)).unwrap();
        }
        let relocated = yaml.replace(layout::SECRETS_DIR, &root.display().to_string());
        assert_ne!(relocated, yaml, "config names no secret file");
        Config::parse(&relocated, root).unwrap()
    }

    #[test]
    fn runtime_accepts_scylla_config() {
        let dir = TempDir::new("scylla-config");
        let credentials = Credentials::generate("chotot").unwrap();
        let valid = valid_tenant_from(crate::build::tests::SCYLLA_SPEC);
        let mut settings = crate::build::tests::scylla_settings();
        let with_tls = super::super::scylla::ScyllaAccess {
            settings: &settings,
            login: Some(("parley_chotot_runtime", "p4ssw0rd")),
        };
        let tls_store =
            super::super::scylla::store_config(valid.scylla.as_ref().unwrap(), with_tls);
        let tls_yaml = config_yaml(&valid, &credentials, Some(tls_store)).unwrap();
        assert!(
            tls_yaml.contains("ca_file: /etc/parley/scylla/ca.pem"),
            "{tls_yaml}"
        );
        // The runtime reads the CA file when it loads the config, and the
        // test has no real certificate, so the parsed config has no TLS.
        settings.tls_ca_pem = None;
        let access = super::super::scylla::ScyllaAccess {
            settings: &settings,
            login: Some(("parley_chotot_runtime", "p4ssw0rd")),
        };
        let store = super::super::scylla::store_config(valid.scylla.as_ref().unwrap(), access);
        let yaml = config_yaml(&valid, &credentials, Some(store)).unwrap();
        // The runtime reads the role's password when it loads the file, so
        // the test writes it where the relocated path points.
        let scylla_dir = dir.0.join("scylla");
        std::fs::create_dir_all(&scylla_dir).unwrap();
        std::fs::write(scylla_dir.join("password"), "p4ssw0rd\n").unwrap();
        let yaml = yaml.replace(layout::SCYLLA_DIR, &scylla_dir.display().to_string());
        let config = parse_with_secrets(&yaml, &credentials, &dir.0);

        let chat_runtime::config::StoreSettings::Scylla { config: scylla, .. } =
            &config.tenants[0].store
        else {
            panic!("expected a ScyllaDB store in:\n{yaml}");
        };
        assert_eq!(scylla.keyspace, "parley_chotot");
        assert_eq!(scylla.datacenter, "dc1");
        assert_eq!(scylla.contact_points, vec!["10.0.0.5:9042".to_owned()]);
        assert_eq!(scylla.username.as_deref(), Some("parley_chotot_runtime"));
        assert_eq!(scylla.password_file, Some(scylla_dir.join("password")));
        assert_eq!(scylla.tls, None);
    }

    #[test]
    fn runtime_accepts_minimal_config() {
        let dir = TempDir::new("minimal-config");
        let credentials = Credentials::generate("chotot").unwrap();
        let yaml = config_yaml(&valid_tenant(), &credentials, None).unwrap();
        let config = parse_with_secrets(&yaml, &credentials, &dir.0);

        assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.server.data_dir, PathBuf::from("/var/lib/parley"));
        assert_eq!(config.server.shutdown_delay_seconds, 5);
        let tenant = &config.tenants[0];
        assert_eq!(config.tenants.len(), 1);
        assert_eq!(tenant.id, "chotot");
        assert_eq!(tenant.display_name, "chotot");
        assert_eq!(tenant.api_keys[0].id, credentials.current().id);
        assert_eq!(
            tenant.api_keys[0].secret,
            credentials.current().secret.as_bytes()
        );
        assert!(tenant.allowed_origins.is_empty());
        assert_eq!(tenant.limits, chat_runtime::config::Limits::default());
    }

    #[test]
    fn runtime_accepts_full_config() {
        let dir = TempDir::new("full-config");
        let valid = valid_tenant_from(
            "tenantId: chotot
displayName: \"Chợ Tốt: mua bán # 1\"
runtime:
  limits: {maxMessageBytes: 8192, maxMessageChars: 1000, messagesPerSecond: 5, messageBurst: 30, maxSocketsPerUser: 4}
allowedOrigins: ['https://www.chotot.example', 'http://localhost:3000']
",
        );
        let credentials = credentials();
        let yaml = config_yaml(&valid, &credentials, None).unwrap();
        let config = parse_with_secrets(&yaml, &credentials, &dir.0);

        let tenant = &config.tenants[0];
        assert_eq!(tenant.display_name, "Chợ Tốt: mua bán # 1");
        let ids: Vec<&str> = tenant.api_keys.iter().map(|key| key.id.as_str()).collect();
        assert_eq!(ids, ["chotot-new", "chotot-old"]);
        assert_eq!(tenant.api_keys[1].secret, "o".repeat(43).as_bytes());
        assert_eq!(
            tenant.allowed_origins,
            ["https://www.chotot.example", "http://localhost:3000"]
        );
        assert_eq!(tenant.limits.max_message_bytes, 8192);
        assert_eq!(tenant.limits.max_message_chars, 1000);
        assert_eq!(tenant.limits.messages_per_second, 5);
        assert_eq!(tenant.limits.message_burst, 30);
        assert_eq!(tenant.limits.max_sockets_per_user, 4);
    }

    #[test]
    fn secret_files_are_under_secrets_dir() {
        let yaml = config_yaml(&valid_tenant(), &credentials(), None).unwrap();
        assert!(
            yaml.contains("secret_file: /etc/parley/secrets/key.chotot-new"),
            "{yaml}"
        );
        assert!(
            yaml.contains("secret_file: /etc/parley/secrets/key.chotot-old"),
            "{yaml}"
        );
        assert!(!yaml.contains(&"n".repeat(43)), "config contains a secret");
    }

    #[test]
    fn config_map_has_config_key() {
        let valid = valid_tenant();
        let yaml = config_yaml(&valid, &credentials(), None).unwrap();
        let config_map = config_map(&valid, yaml.clone());
        assert_eq!(config_map.metadata.name.as_deref(), Some("chat-runtime"));
        assert_eq!(
            config_map.metadata.namespace.as_deref(),
            Some("parley-chotot")
        );
        assert_eq!(config_map.metadata.labels, Some(naming::labels("chotot")));
        assert_eq!(config_map.data.unwrap()["config.yaml"], yaml);
    }

    #[test]
    fn runtime_accepts_redis_config() {
        let dir = TempDir::new("redis-config");
        let credentials = Credentials::generate("chotot").unwrap();
        let valid = valid_tenant_from(
            "{tenantId: chotot, runtime: {replicas: 2, redis: {url: 'redis://10.0.0.7:6379/3', passwordSecret: {name: redis, key: pw}}}, storage: {scylla: {replication: {dc1: 3}}}}",
        );
        let mut settings = crate::build::tests::scylla_settings();
        settings.tls_ca_pem = None;
        let access = super::super::scylla::ScyllaAccess {
            settings: &settings,
            login: None,
        };
        let store = super::super::scylla::store_config(valid.scylla.as_ref().unwrap(), access);
        let yaml = config_yaml(&valid, &credentials, Some(store)).unwrap();
        assert!(
            yaml.contains("password_file: /etc/parley/redis/password"),
            "{yaml}"
        );
        // The runtime reads the password when it loads the file, so the
        // test writes it where the relocated path points.
        let redis_dir = dir.0.join("redis");
        std::fs::create_dir_all(&redis_dir).unwrap();
        std::fs::write(redis_dir.join("password"), "s3cret\n").unwrap();
        let yaml = yaml.replace(layout::REDIS_DIR, &redis_dir.display().to_string());
        let config = parse_with_secrets(&yaml, &credentials, &dir.0);

        let redis = config.relay.as_ref().expect("server.redis");
        assert_eq!(redis.url, "redis://10.0.0.7:6379/3");
        assert_eq!(redis.password.as_deref(), Some("s3cret"));
        assert_eq!(redis.channel_prefix, "parley");
        assert_eq!(redis.database, 3);
    }

    #[test]
    fn runtime_loads_moderation_rules() {
        let dir = TempDir::new("moderation-config");
        let valid = valid_tenant_from(
            r#"tenantId: chotot
moderation:
  mask: "[ẩn]"
  rules:
    - name: contacts
      action: Mask
      contacts: {kinds: [Phone, Email], minPhoneDigits: 10}
    - name: scams
      action: Block
      shadow: true
      terms: {list: ["lừa đảo", "chuyển khoản trước"], accentInsensitive: true}
    - name: links
      action: Flag
      links: {allowedDomains: [chotot.example]}
    - name: cards
      action: Flag
      regex: '\b[0-9]{16}\b'
"#,
        );
        let credentials = credentials();
        let yaml = config_yaml(&valid, &credentials, None).unwrap();
        for line in [
            "mask: '[ẩn]'",
            "min_phone_digits: 10",
            "accent_insensitive: true",
            "allowed_domains:",
            "shadow: true",
        ] {
            assert!(yaml.contains(line), "{line:?} missing from:\n{yaml}");
        }
        let config = parse_with_secrets(&yaml, &credentials, &dir.0);

        let expected: chat_runtime::moderation::ModerationConfig = serde_yaml::from_str(
            r#"
mask: "[ẩn]"
rules:
  - {name: contacts, action: mask, contacts: {kinds: [phone, email], min_phone_digits: 10}}
  - {name: scams, action: block, shadow: true, terms: {list: ["lừa đảo", "chuyển khoản trước"], accent_insensitive: true}}
  - {name: links, action: flag, links: {allowed_domains: [chotot.example]}}
  - {name: cards, action: flag, regex: '\b[0-9]{16}\b'}
"#,
        )
        .unwrap();
        let expected = chat_runtime::moderation::Moderator::new(&expected, "moderation").unwrap();
        // Moderators compare by the section they were compiled from.
        assert_eq!(*config.tenants[0].moderation, expected);
        let moderated = config.tenants[0]
            .moderation
            .moderate(chat_runtime::store::Content::Text {
                text: "gọi 0912 345 678 nhé".into(),
            });
        assert!(moderated.blocked().is_none());
        assert!(moderated.masked);
        let chat_runtime::store::Content::Text { text } = &moderated.content else {
            panic!("expected text, got {:?}", moderated.content);
        };
        assert!(!text.contains("345") && text.contains("[ẩn]"), "{text}");
    }

    #[test]
    fn runtime_loads_hook_webhooks_templates_and_extensions() {
        let dir = TempDir::new("signed-config");
        let valid = valid_tenant_from(
            r#"tenantId: chotot
moderation:
  hook: {url: 'https://shop.example/pre-send', timeoutMs: 800, onFailure: Closed}
webhooks:
  - {name: crm, url: 'https://crm.example/events', events: [message.*], maxAttempts: 3, retryInitialMs: 250, timeoutMs: 2000}
  - {name: push, url: 'http://push.shop.svc:8080/events'}
templates:
  - {id: still-available, title: Còn hàng, text: 'Chào {{ten}}, xe vẫn còn nhé.'}
extensions:
  autoReply: {periodSeconds: 3600}
"#,
        );
        let credentials = credentials();
        let yaml = config_yaml(&valid, &credentials, None).unwrap();
        for line in [
            "secret_file: /etc/parley/signing/hook",
            "secret_file: /etc/parley/signing/webhook.crm",
            "secret_file: /etc/parley/signing/webhook.push",
            "on_failure: closed",
        ] {
            assert!(yaml.contains(line), "{line:?} missing from:\n{yaml}");
        }
        // The runtime reads each signing secret when it loads the file, so
        // the test writes them where the relocated paths point.
        let signing_dir = dir.0.join("signing");
        std::fs::create_dir_all(&signing_dir).unwrap();
        let secret_of = |key: &str| format!("{key}-{}", "s".repeat(32));
        for key in ["hook", "webhook.crm", "webhook.push"] {
            std::fs::write(signing_dir.join(key), format!("{}\n", secret_of(key))).unwrap();
        }
        let yaml = yaml.replace(layout::SIGNING_DIR, &signing_dir.display().to_string());
        let config = parse_with_secrets(&yaml, &credentials, &dir.0);
        let tenant = &config.tenants[0];

        let hook_config: chat_runtime::moderation::HookConfig = serde_yaml::from_str(
            "{url: 'https://shop.example/pre-send', timeout_ms: 800, on_failure: closed, secret: x}",
        )
        .unwrap();
        let expected_hook =
            chat_runtime::moderation::Hook::new(&hook_config, secret_of("hook"), "hook").unwrap();
        assert_eq!(tenant.hook.as_deref(), Some(&expected_hook));
        assert!(tenant.moderation.is_empty());

        let crm = &tenant.webhooks[0];
        assert_eq!(tenant.webhooks.len(), 2);
        assert_eq!(crm.name, "crm");
        assert_eq!(crm.url, "https://crm.example/events");
        assert_eq!(crm.secret, secret_of("webhook.crm").as_bytes());
        assert_eq!(crm.events, ["message.*"]);
        assert_eq!(crm.max_attempts, 3);
        assert_eq!(crm.retry_initial, std::time::Duration::from_millis(250));
        assert_eq!(crm.timeout, std::time::Duration::from_millis(2000));
        let push = &tenant.webhooks[1];
        assert_eq!(push.secret, secret_of("webhook.push").as_bytes());
        assert!(push.events.is_empty());
        assert_eq!(push.max_attempts, 8, "the runtime's default");

        assert_eq!(tenant.templates.len(), 1);
        assert_eq!(tenant.templates[0].id, "still-available");
        assert_eq!(tenant.templates[0].title.as_deref(), Some("Còn hàng"));
        let auto_reply = tenant.extensions.auto_reply.unwrap();
        assert_eq!(auto_reply.period_seconds, 3600);
        assert_eq!(
            auto_reply.offline_after_seconds, 300,
            "the runtime's default"
        );
    }

    #[test]
    fn config_without_extras_has_no_sections() {
        let yaml = config_yaml(&valid_tenant(), &credentials(), None).unwrap();
        for section in ["webhooks", "templates", "extensions", "hook", "signing"] {
            assert!(!yaml.contains(section), "{section:?} in:\n{yaml}");
        }
    }

    #[test]
    fn config_without_moderation_has_no_section() {
        let yaml = config_yaml(&valid_tenant(), &credentials(), None).unwrap();
        assert!(!yaml.contains("moderation"), "{yaml}");
        assert!(yaml.contains("max_message_chars: 2000"), "{yaml}");
    }

    #[test]
    fn config_without_redis_has_no_section() {
        let yaml = config_yaml(&valid_tenant(), &credentials(), None).unwrap();
        assert!(!yaml.contains("redis"), "{yaml}");
    }
}
