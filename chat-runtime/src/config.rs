//! The runtime's YAML configuration: server settings and the tenant list.
//!
//! Parsing is strict: an unknown field or an invalid value stops start-up
//! (or, on reload, keeps the previous configuration) with a message that
//! names the field, such as `tenants[1].limits.max_message_bytes`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::extensions::ExtensionsConfig;
use crate::moderation::{Hook, HookConfig, ModerationConfig, Moderator};
use crate::relay::{RedisConfig, RelaySettings};
use crate::store::scylla::{ConnectError, ScyllaConfig};
use crate::templates::{MAX_TENANT_TEMPLATES, Template};
use crate::webhooks::{self, WebhookConfig, WebhookSettings};

/// Maximum event retention: one year.
const MAX_EVENT_RETENTION_HOURS: u32 = 366 * 24;

/// Shortest accepted API secret: HS256 keys shorter than the hash output
/// (32 bytes) weaken the signature.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole file as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub server: ServerConfig,
    pub tenants: Vec<TenantConfig>,
}

/// Settings read once at start-up; a reload that changes them is logged and
/// otherwise ignored until the next restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP and WebSocket listener.
    pub listen: SocketAddr,
    /// Directory holding one SQLite file per tenant. Relative paths are
    /// resolved against the config file's directory.
    pub data_dir: PathBuf,
    /// Interval between WebSocket pings. A socket that sends nothing within
    /// a few seconds after a ping is closed as half-open.
    pub heartbeat_seconds: u64,
    /// How long client message ids are remembered for dedupe.
    pub dedupe_retention_days: u64,
    /// Maximum messages replayed per channel on resume. Past that, the
    /// server requests that the client page history instead.
    pub max_replay: u32,
    /// Allowed clock difference, in seconds, when checking a user token's
    /// `exp`. Open sockets close this long after their token's `exp`.
    pub token_leeway_seconds: u64,
    /// Separate address for `/metrics`. When set, the main listener does not
    /// serve `/metrics`, so a public endpoint does not reveal the tenant list
    /// and traffic figures.
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds between SIGTERM and closing the listener, during which
    /// `/readyz` fails but requests are still served, so load balancers stop
    /// routing here before connections are refused.
    pub shutdown_delay_seconds: u64,
    /// Redis that relays live events between the processes serving the
    /// same tenants. Without it, a process delivers to its own sockets only.
    pub redis: Option<RedisConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            heartbeat_seconds: 20,
            dedupe_retention_days: 7,
            max_replay: 1000,
            token_leeway_seconds: 30,
            shutdown_delay_seconds: 0,
            metrics_listen: None,
            redis: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// DNS label (RFC 1123), also the JWT audience and the data file name.
    pub id: String,
    pub display_name: String,
    /// Keys for the server API and for signing user tokens. Two keys let a
    /// tenant rotate: tokens name their key in the JWT `kid` header.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Browser origins allowed for CORS and WebSocket upgrades, such as
    /// `https://app.example.com`. Requests without an `Origin` header
    /// (servers, native apps) are not affected.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    /// Hosts that `attachment` messages may link to: exact host names such
    /// as `cdn.example.com`, or `*.example.com` for subdomains. Empty by
    /// default, which rejects every attachment.
    #[serde(default)]
    pub attachment_hosts: Vec<String>,
    /// Storage of the tenant's chat. The default is the embedded store in
    /// `server.data_dir`.
    #[serde(default)]
    pub store: StoreConfig,
    /// Rules that check each message before it is stored.
    #[serde(default)]
    pub moderation: ModerationConfig,
    #[serde(default)]
    pub events: EventsConfig,
    /// Endpoints that receive the tenant's event log.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Quick replies every user of the tenant can send.
    #[serde(default)]
    pub templates: Vec<Template>,
    /// Features that react to the event log, each off unless configured.
    #[serde(default)]
    pub extensions: ExtensionsConfig,
}

/// A tenant's `events` section: how long the event log keeps events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Hours an event stays readable through the server API. Consumers
    /// that fall further behind than this miss events and get
    /// `cursor_expired`.
    pub retention_hours: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention_hours: 7 * 24,
        }
    }
}

/// A tenant's `store` section, selected by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreConfig {
    /// One SQLite file per tenant in `server.data_dir`, for one process.
    Embedded(EmbeddedStoreConfig),
    /// A keyspace in a ScyllaDB cluster, shared by every replica.
    Scylla(Box<ScyllaConfig>),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Embedded(EmbeddedStoreConfig {})
    }
}

/// The embedded store's section, which has no settings of its own; the
/// struct makes an unknown field an error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedStoreConfig {}

/// A tenant's validated store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    Embedded,
    Scylla {
        config: Box<ScyllaConfig>,
        /// Folder that relative paths in `config` resolve against: the
        /// config file's folder.
        base: PathBuf,
    },
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub id: String,
    /// The secret inline, for demos only, because the file then contains it.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file whose contents (trailing newline removed) are the secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable that contains the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
}

impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest text message, in bytes of UTF-8.
    pub max_message_bytes: usize,
    /// Maximum text message length, in user-visible characters (extended grapheme
    /// clusters): a family emoji or a letter with its tone marks is one.
    pub max_message_chars: usize,
    /// Largest `custom` message payload, in bytes of compact JSON.
    pub max_custom_bytes: usize,
    /// Sustained sends per second per user, across all of the user's sockets.
    pub messages_per_second: u32,
    /// Largest burst of sends: the size of the user's token bucket, which
    /// refills at `messages_per_second`.
    pub message_burst: u32,
    /// Open WebSockets per user.
    pub max_sockets_per_user: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4096,
            max_message_chars: 2000,
            max_custom_bytes: 2048,
            messages_per_second: 10,
            message_burst: 20,
            max_sockets_per_user: 10,
        }
    }
}

/// Largest WebSocket message and frame the server reads; larger frames close
/// the socket with code 1009. JSON may escape each byte of content as
/// `\u00XX`, six bytes, so the limit allows six times the largest content
/// plus the envelope.
pub fn max_frame_bytes(limits: &Limits) -> usize {
    limits.max_message_bytes.max(limits.max_custom_bytes) * 6 + 4096
}

/// A tenant's API key with its secret loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A validated tenant with its secrets loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSettings {
    pub id: String,
    pub display_name: String,
    pub api_keys: Vec<ApiKey>,
    pub allowed_origins: Vec<String>,
    pub limits: Limits,
    pub attachment_hosts: Vec<String>,
    pub store: StoreSettings,
    pub moderation: Arc<Moderator>,
    pub events: EventsConfig,
    /// The pre-send hook of `moderation.hook`, with its secret loaded.
    pub hook: Option<Arc<Hook>>,
    pub webhooks: Vec<WebhookSettings>,
    pub templates: Vec<Template>,
    pub extensions: ExtensionsConfig,
}

impl TenantSettings {
    pub fn api_key(&self, id: &str) -> Option<&ApiKey> {
        self.api_keys.iter().find(|key| key.id == id)
    }

    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|allowed| allowed == origin)
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub tenants: Vec<TenantSettings>,
    /// `server.redis`, validated, with its password loaded.
    pub relay: Option<RelaySettings>,
}

impl Config {
    /// Reads, parses and validates the file at `path`, loading secrets from
    /// files and environment variables.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
    }

    /// Parses and validates YAML text; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RuntimeConfig = serde_yaml::from_str(text)?;
        let mut server = raw.server;
        validate_server(&server)?;
        if server.data_dir.is_relative() {
            server.data_dir = base.join(&server.data_dir);
        }
        let relay = server
            .redis
            .as_ref()
            .map(|redis| redis.validate(base))
            .transpose()
            .map_err(|reason| invalid("server.redis", reason))?;

        let mut seen = HashSet::new();
        let mut tenants = Vec::with_capacity(raw.tenants.len());
        for (index, tenant) in raw.tenants.iter().enumerate() {
            let field = format!("tenants[{index}]");
            let settings = validate_tenant(tenant, &field, base)?;
            if !seen.insert(settings.id.clone()) {
                return Err(invalid(
                    format!("{field}.id"),
                    format!("duplicate tenant id {:?}", settings.id),
                ));
            }
            tenants.push(settings);
        }
        Ok(Config {
            server,
            tenants,
            relay,
        })
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.server.heartbeat_seconds)
    }
}

fn validate_server(server: &ServerConfig) -> Result<(), ConfigError> {
    if !(1..=3600).contains(&server.heartbeat_seconds) {
        return Err(invalid(
            "server.heartbeat_seconds",
            "must be between 1 and 3600",
        ));
    }
    if server.dedupe_retention_days < 7 {
        return Err(invalid(
            "server.dedupe_retention_days",
            "must be at least 7, so client retries within a week stay deduplicated",
        ));
    }
    if server.shutdown_delay_seconds > 300 {
        return Err(invalid(
            "server.shutdown_delay_seconds",
            "must be at most 300",
        ));
    }
    if server.token_leeway_seconds > 300 {
        return Err(invalid(
            "server.token_leeway_seconds",
            "must be at most 300",
        ));
    }
    if !(1..=100_000).contains(&server.max_replay) {
        return Err(invalid("server.max_replay", "must be between 1 and 100000"));
    }
    Ok(())
}

fn validate_tenant(
    tenant: &TenantConfig,
    field: &str,
    base: &Path,
) -> Result<TenantSettings, ConfigError> {
    if !is_dns_label(&tenant.id) {
        return Err(invalid(
            format!("{field}.id"),
            format!(
                "{:?} is not a DNS label: use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit",
                tenant.id
            ),
        ));
    }
    if tenant.display_name.trim().is_empty() {
        return Err(invalid(
            format!("{field}.display_name"),
            "must not be empty",
        ));
    }
    if tenant.api_keys.is_empty() {
        return Err(invalid(
            format!("{field}.api_keys"),
            "must list at least one key",
        ));
    }

    let mut api_keys = Vec::with_capacity(tenant.api_keys.len());
    for (index, key) in tenant.api_keys.iter().enumerate() {
        let key_field = format!("{field}.api_keys[{index}]");
        let loaded = load_api_key(key, &key_field, base)?;
        if api_keys.iter().any(|k: &ApiKey| k.id == loaded.id) {
            return Err(invalid(
                format!("{key_field}.id"),
                format!("duplicate key id {:?}", loaded.id),
            ));
        }
        api_keys.push(loaded);
    }

    for (index, origin) in tenant.allowed_origins.iter().enumerate() {
        validate_origin(origin, &format!("{field}.allowed_origins[{index}]"))?;
    }
    validate_limits(&tenant.limits, &format!("{field}.limits"))?;
    for (index, host) in tenant.attachment_hosts.iter().enumerate() {
        if !crate::attachments::is_allowed_host_entry(host) {
            return Err(invalid(
                format!("{field}.attachment_hosts[{index}]"),
                format!(
                    "{host:?} is not a lowercase host name or *. followed by one, such as cdn.example.com"
                ),
            ));
        }
    }
    let store = match &tenant.store {
        StoreConfig::Embedded(_) => StoreSettings::Embedded,
        StoreConfig::Scylla(config) => {
            let store_error = |error: ConnectError| {
                invalid(format!("{field}.store"), crate::server::error_chain(&error))
            };
            config.validate().map_err(store_error)?;
            config.check_files(base).map_err(store_error)?;
            StoreSettings::Scylla {
                config: config.clone(),
                base: base.to_owned(),
            }
        }
    };

    if !(1..=MAX_EVENT_RETENTION_HOURS).contains(&tenant.events.retention_hours) {
        return Err(invalid(
            format!("{field}.events.retention_hours"),
            format!("must be between 1 and {MAX_EVENT_RETENTION_HOURS}"),
        ));
    }
    let moderation = Moderator::new(&tenant.moderation, &format!("{field}.moderation"))
        .map_err(|(field, reason)| invalid(field, reason))?;
    let hook = tenant
        .moderation
        .hook
        .as_ref()
        .map(|hook| load_hook(hook, &format!("{field}.moderation.hook"), base))
        .transpose()?
        .map(Arc::new);
    let webhooks = load_webhooks(&tenant.webhooks, &format!("{field}.webhooks"), base)?;
    validate_templates(
        &tenant.templates,
        tenant.limits.max_message_bytes,
        &format!("{field}.templates"),
    )?;
    tenant
        .extensions
        .validate()
        .map_err(|(name, reason)| invalid(format!("{field}.extensions.{name}"), reason))?;

    Ok(TenantSettings {
        id: tenant.id.clone(),
        display_name: tenant.display_name.clone(),
        api_keys,
        allowed_origins: tenant.allowed_origins.clone(),
        limits: tenant.limits,
        attachment_hosts: tenant.attachment_hosts.clone(),
        store,
        moderation: Arc::new(moderation),
        events: tenant.events,
        hook,
        webhooks,
        templates: tenant.templates.clone(),
        extensions: tenant.extensions.clone(),
    })
}

fn validate_templates(
    templates: &[Template],
    max_message_bytes: usize,
    field: &str,
) -> Result<(), ConfigError> {
    if templates.len() > MAX_TENANT_TEMPLATES {
        return Err(invalid(
            field,
            format!("at most {MAX_TENANT_TEMPLATES} templates"),
        ));
    }
    for (index, template) in templates.iter().enumerate() {
        if let Err((name, reason)) = crate::templates::validate(template) {
            return Err(invalid(format!("{field}[{index}].{name}"), reason));
        }
        if template.text.len() > max_message_bytes {
            return Err(invalid(
                format!("{field}[{index}].text"),
                format!("is over limits.max_message_bytes ({max_message_bytes} bytes)"),
            ));
        }
        if templates[..index]
            .iter()
            .any(|earlier| earlier.id == template.id)
        {
            return Err(invalid(
                format!("{field}[{index}].id"),
                format!("duplicate template id {:?}", template.id),
            ));
        }
    }
    Ok(())
}

fn load_api_key(key: &ApiKeyConfig, field: &str, base: &Path) -> Result<ApiKey, ConfigError> {
    if key.id.is_empty()
        || key.id.len() > 64
        || !key
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(invalid(
            format!("{field}.id"),
            "must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
        ));
    }

    let secret = load_secret(
        SecretSource {
            inline: key.secret.as_deref(),
            file: key.secret_file.as_deref(),
            env: key.secret_env.as_deref(),
        },
        field,
        base,
    )?;
    if secret.len() < MIN_SECRET_BYTES {
        return Err(invalid(
            field,
            format!("secret must be at least {MIN_SECRET_BYTES} bytes long"),
        ));
    }
    Ok(ApiKey {
        id: key.id.clone(),
        secret: secret.into_bytes(),
    })
}

/// Sources of a section's secret, of which exactly one must be set.
struct SecretSource<'a> {
    inline: Option<&'a str>,
    file: Option<&'a Path>,
    env: Option<&'a str>,
}

/// Loads the secret of the section at `field`; a file path is relative to
/// `base` and loses its trailing newline.
fn load_secret(source: SecretSource<'_>, field: &str, base: &Path) -> Result<String, ConfigError> {
    match (source.inline, source.file, source.env) {
        (Some(secret), None, None) => Ok(secret.to_owned()),
        (None, Some(path), None) => {
            let path = base.join(path);
            let text = std::fs::read_to_string(&path).map_err(|error| {
                invalid(
                    format!("{field}.secret_file"),
                    format!("failed to read {}: {error}", path.display()),
                )
            })?;
            Ok(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        (None, None, Some(name)) => std::env::var(name).map_err(|_| {
            invalid(
                format!("{field}.secret_env"),
                format!("environment variable {name} is not set or not UTF-8"),
            )
        }),
        _ => Err(invalid(
            field,
            "set exactly one of secret, secret_file or secret_env",
        )),
    }
}

/// Validates a tenant's `moderation.hook` section and loads its secret.
fn load_hook(config: &HookConfig, field: &str, base: &Path) -> Result<Hook, ConfigError> {
    let secret = load_secret(
        SecretSource {
            inline: config.secret.as_deref(),
            file: config.secret_file.as_deref(),
            env: config.secret_env.as_deref(),
        },
        field,
        base,
    )?;
    Hook::new(config, secret, field).map_err(|(field, reason)| invalid(field, reason))
}

/// Validates a tenant's `webhooks` section and loads the secrets.
fn load_webhooks(
    configs: &[WebhookConfig],
    field: &str,
    base: &Path,
) -> Result<Vec<WebhookSettings>, ConfigError> {
    if configs.len() > webhooks::MAX_ENDPOINTS {
        return Err(invalid(
            field,
            format!("at most {} endpoints are allowed", webhooks::MAX_ENDPOINTS),
        ));
    }
    let mut loaded: Vec<WebhookSettings> = Vec::with_capacity(configs.len());
    for (index, config) in configs.iter().enumerate() {
        let endpoint_field = format!("{field}[{index}]");
        let source = SecretSource {
            inline: config.secret.as_deref(),
            file: config.secret_file.as_deref(),
            env: config.secret_env.as_deref(),
        };
        let secret = load_secret(source, &endpoint_field, base)?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(invalid(
                endpoint_field,
                format!("secret must be at least {MIN_SECRET_BYTES} bytes long"),
            ));
        }
        let settings = webhooks::validate(config, secret.into_bytes())
            .map_err(|(name, reason)| invalid(format!("{endpoint_field}.{name}"), reason))?;
        if loaded.iter().any(|other| other.name == settings.name) {
            return Err(invalid(
                format!("{endpoint_field}.name"),
                format!("duplicate endpoint name {:?}", settings.name),
            ));
        }
        loaded.push(settings);
    }
    Ok(loaded)
}

fn validate_origin(origin: &str, field: &str) -> Result<(), ConfigError> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let valid = match rest {
        Some(host) => {
            !host.is_empty() && !host.contains('/') && !host.contains(char::is_whitespace)
        }
        None => false,
    };
    if !valid {
        return Err(invalid(
            field,
            format!(
                "{origin:?} is not an origin: expected scheme://host[:port] with no path, such as https://app.example.com"
            ),
        ));
    }
    Ok(())
}

fn validate_limits(limits: &Limits, field: &str) -> Result<(), ConfigError> {
    let checks: [(&str, usize, usize, usize); 6] = [
        ("max_message_bytes", limits.max_message_bytes, 1, 1 << 20),
        ("max_message_chars", limits.max_message_chars, 1, 1 << 20),
        ("max_custom_bytes", limits.max_custom_bytes, 2, 1 << 20),
        (
            "messages_per_second",
            limits.messages_per_second as usize,
            1,
            10_000,
        ),
        ("message_burst", limits.message_burst as usize, 1, 100_000),
        (
            "max_sockets_per_user",
            limits.max_sockets_per_user as usize,
            1,
            1_000,
        ),
    ];
    for (name, value, min, max) in checks {
        if !(min..=max).contains(&value) {
            return Err(invalid(
                format!("{field}.{name}"),
                format!("{value} is out of range: must be between {min} and {max}"),
            ));
        }
    }
    Ok(())
}

/// True for an RFC 1123 label: 1 to 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (1..=63).contains(&bytes.len())
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn yaml(tenant_extra: &str) -> String {
        format!(
            "tenants:\n  - id: acme\n    display_name: Acme\n    api_keys:\n      - id: k1\n        secret: {SECRET}\n{tenant_extra}"
        )
    }

    fn error_of(text: &str) -> String {
        match Config::parse(text, Path::new("/tmp")) {
            Ok(_) => String::from("<parsed>"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn redis_section_is_validated_with_its_field() {
        let without = Config::parse(&yaml(""), Path::new("/srv")).unwrap();
        assert_eq!(without.relay, None);

        let with = format!(
            "server:\n  redis:\n    url: redis://127.0.0.1:6379\n{}",
            yaml("")
        );
        let relay = Config::parse(&with, Path::new("/srv"))
            .unwrap()
            .relay
            .unwrap();
        assert_eq!(relay.channel_prefix, "parley");

        let tls = format!(
            "server:\n  redis:\n    url: rediss://cache:6380\n{}",
            yaml("")
        );
        let error = error_of(&tls);
        assert!(error.contains("server.redis"), "{error}");
        let unknown = format!(
            "server:\n  redis:\n    url: redis://a\n    db: 2\n{}",
            yaml("")
        );
        assert!(
            error_of(&unknown).contains("unknown field"),
            "{}",
            error_of(&unknown)
        );
    }

    #[test]
    fn store_defaults_to_embedded() {
        let config = Config::parse(&yaml(""), Path::new("/srv")).unwrap();
        assert_eq!(config.tenants[0].store, StoreSettings::Embedded);
        let explicit =
            Config::parse(&yaml("    store: {kind: embedded}\n"), Path::new("/srv")).unwrap();
        assert_eq!(explicit.tenants[0].store, StoreSettings::Embedded);
    }

    #[test]
    fn scylla_store_parses_with_base() {
        let store = "    store:\n      kind: scylla\n      contact_points: [\"10.0.0.5:9042\"]\n      datacenter: dc1\n      keyspace: acme_chat\n      username: acme\n      password_file: secrets/scylla\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/scylla"), "s3cret\n").unwrap();
        let config = Config::parse(&yaml(store), dir.path()).unwrap();
        let StoreSettings::Scylla {
            config: scylla,
            base,
        } = &config.tenants[0].store
        else {
            panic!(
                "expected a ScyllaDB store, got {:?}",
                config.tenants[0].store
            );
        };
        assert_eq!(scylla.keyspace, "acme_chat");
        assert_eq!(scylla.contact_points, vec!["10.0.0.5:9042".to_owned()]);
        assert_eq!(base, dir.path());
    }

    #[test]
    fn store_files_are_checked_at_load() {
        let base =
            "    store: {kind: scylla, contact_points: [\"a:1\"], datacenter: dc1, keyspace: acme";
        let unset = error_of(&yaml(&format!(
            "{base}, username: acme, password_env: PARLEY_TEST_UNSET_PASSWORD}}\n"
        )));
        assert!(unset.contains("tenants[0].store"), "{unset}");
        assert!(unset.contains("PARLEY_TEST_UNSET_PASSWORD"), "{unset}");
        let missing_ca = error_of(&yaml(&format!(
            "{base}, tls: {{ca_file: /nonexistent/ca.pem}}}}\n"
        )));
        assert!(missing_ca.contains("tenants[0].store"), "{missing_ca}");
        assert!(missing_ca.contains("/nonexistent/ca.pem"), "{missing_ca}");
        let embedded = error_of(&yaml("    store: {kind: embedded, path: /tmp/x}\n"));
        assert!(embedded.contains("path"), "{embedded}");
    }

    #[test]
    fn invalid_store_names_its_field() {
        let reserved = "    store: {kind: scylla, contact_points: [\"a:1\"], datacenter: dc1, keyspace: system}\n";
        let error = error_of(&yaml(reserved));
        assert!(error.contains("tenants[0].store"), "{error}");
        assert!(error.contains("reserved"), "{error}");

        let unknown_kind = error_of(&yaml("    store: {kind: cassandra}\n"));
        assert!(unknown_kind.contains("cassandra"), "{unknown_kind}");
        let unknown_field = error_of(&yaml(
            "    store: {kind: scylla, contact_points: [\"a:1\"], datacenter: dc1, keyspace: acme, replicas: 3}\n",
        ));
        assert!(unknown_field.contains("replicas"), "{unknown_field}");
    }

    #[test]
    fn minimal_config_uses_defaults() {
        let config = Config::parse(&yaml(""), Path::new("/srv")).unwrap();
        assert_eq!(config.tenants.len(), 1);
        assert_eq!(config.tenants[0].limits, Limits::default());
        assert_eq!(config.server.data_dir, PathBuf::from("/srv/data"));
        assert_eq!(
            config.tenants[0].api_key("k1").unwrap().secret,
            SECRET.as_bytes()
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let message = error_of(&yaml("    limits:\n      max_mesage_bytes: 10\n"));
        assert!(message.contains("max_mesage_bytes"), "{message}");
        assert!(message.contains("tenants[0].limits"), "{message}");
    }

    #[test]
    fn templates_and_extensions_are_loaded() {
        let config = Config::parse(
            &yaml(
                "    templates:\n      - id: hi\n        text: \"Chào {{ten}}\"\n    extensions:\n      auto_reply: {}\n",
            ),
            Path::new("/srv"),
        )
        .unwrap();
        let tenant = &config.tenants[0];
        assert_eq!(tenant.templates[0].text, "Chào {{ten}}");
        let auto_reply = tenant.extensions.auto_reply.unwrap();
        assert_eq!(auto_reply.offline_after_seconds, 300);
        assert_eq!(auto_reply.period_seconds, 86_400);
    }

    #[test]
    fn invalid_templates_and_extensions_are_named() {
        let cases = [
            (
                "    templates:\n      - id: Hi\n        text: x\n",
                "tenants[0].templates[0].id",
            ),
            (
                "    templates:\n      - id: hi\n        text: \"{{ten\"\n",
                "tenants[0].templates[0].text",
            ),
            (
                "    templates:\n      - id: hi\n        text: a\n      - id: hi\n        text: b\n",
                "tenants[0].templates[1].id",
            ),
            (
                "    extensions:\n      auto_reply: {period_seconds: 0}\n",
                "tenants[0].extensions.auto_reply.period_seconds",
            ),
            ("    extensions:\n      away: {}\n", "away"),
        ];
        for (extra, field) in cases {
            let message = error_of(&yaml(extra));
            assert!(message.contains(field), "{extra}: {message}");
        }
    }

    #[test]
    fn invalid_tenant_id_is_named() {
        let message = error_of(&yaml("").replace("id: acme", "id: Acme_Co"));
        assert!(message.contains("tenants[0].id"), "{message}");
    }

    #[test]
    fn out_of_range_limit_is_named() {
        let message = error_of(&yaml("    limits:\n      max_message_bytes: 0\n"));
        assert!(
            message.contains("tenants[0].limits.max_message_bytes"),
            "{message}"
        );
    }

    #[test]
    fn demo_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/runtime/local.yaml");
        let config = Config::load(&path).unwrap();
        let chotot = config
            .tenants
            .iter()
            .find(|tenant| tenant.id == "chotot")
            .unwrap();
        assert!(!chotot.moderation.is_empty());
    }

    #[test]
    fn invalid_moderation_rule_is_named() {
        let message = error_of(&yaml(
            "    moderation:\n      rules:\n        - name: cards\n          action: block\n          regex: '[0-9'\n",
        ));
        assert!(
            message.contains("tenants[0].moderation.rules[0].regex"),
            "{message}"
        );

        let message = error_of(&yaml(
            "    moderation:\n      rules:\n        - name: x\n          action: ban\n          regex: a\n",
        ));
        assert!(message.contains("unknown variant `ban`"), "{message}");
    }

    const HOOK_SECRET: &str = "hook-secret-0123456789abcdef0123456789";

    fn hook_yaml(lines: &str) -> String {
        yaml(&format!(
            "    moderation:\n      hook:\n        url: http://127.0.0.1:9000/parley/pre-send\n{lines}"
        ))
    }

    #[test]
    fn hook_is_loaded_with_defaults() {
        let text = hook_yaml(&format!(
            "        on_failure: open\n        secret: {HOOK_SECRET}\n"
        ));
        let config = Config::parse(&text, Path::new("/srv")).unwrap();
        let hook = config.tenants[0].hook.as_ref().unwrap();
        assert_eq!(hook.timeout, Duration::from_millis(300));
        assert_eq!(hook.on_failure, crate::moderation::OnFailure::Open);
        assert_eq!(hook.url.as_str(), "http://127.0.0.1:9000/parley/pre-send");
        assert!(
            Config::parse(&yaml(""), Path::new("/srv")).unwrap().tenants[0]
                .hook
                .is_none()
        );
    }

    #[test]
    fn invalid_hook_names_its_field() {
        let timeout = error_of(&hook_yaml(&format!(
            "        timeout_ms: 5\n        on_failure: open\n        secret: {HOOK_SECRET}\n"
        )));
        assert!(
            timeout.contains("tenants[0].moderation.hook.timeout_ms"),
            "{timeout}"
        );
        let url = error_of(
            &hook_yaml(&format!(
                "        on_failure: open\n        secret: {HOOK_SECRET}\n"
            ))
            .replace("http://127.0.0.1", "ftp://127.0.0.1"),
        );
        assert!(url.contains("tenants[0].moderation.hook.url"), "{url}");
        let short = error_of(&hook_yaml(
            "        on_failure: closed\n        secret: short\n",
        ));
        assert!(short.contains("tenants[0].moderation.hook"), "{short}");
        assert!(short.contains("at least 32 bytes"), "{short}");
        let unset = error_of(&hook_yaml(
            "        on_failure: closed\n        secret_env: PARLEY_TEST_UNSET_HOOK_SECRET\n",
        ));
        assert!(
            unset.contains("tenants[0].moderation.hook.secret_env"),
            "{unset}"
        );
        let none = error_of(&hook_yaml("        on_failure: closed\n"));
        assert!(none.contains("exactly one"), "{none}");
        let no_policy = error_of(&hook_yaml(&format!("        secret: {HOOK_SECRET}\n")));
        assert!(no_policy.contains("on_failure"), "{no_policy}");
        let bad_policy = error_of(&hook_yaml(&format!(
            "        on_failure: maybe\n        secret: {HOOK_SECRET}\n"
        )));
        assert!(
            bad_policy.contains("unknown variant `maybe`"),
            "{bad_policy}"
        );
    }

    #[test]
    fn hook_secret_file_is_read_and_hidden() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook"), format!("{HOOK_SECRET}\n")).unwrap();
        let text = hook_yaml("        on_failure: open\n        secret_file: hook\n");
        let config = Config::parse(&text, dir.path()).unwrap();
        assert!(config.tenants[0].hook.is_some());
        let inline = hook_yaml(&format!(
            "        on_failure: open\n        secret: {HOOK_SECRET}\n"
        ));
        let raw: RuntimeConfig = serde_yaml::from_str(&inline).unwrap();
        for printed in [
            format!("{config:?}"),
            format!("{:?}", Config::parse(&inline, dir.path()).unwrap()),
            format!("{raw:?}"),
        ] {
            assert!(!printed.contains(HOOK_SECRET), "{printed}");
        }
    }

    #[test]
    fn rule_may_not_take_the_hook_name() {
        let message = error_of(&yaml(
            "    moderation:\n      rules:\n        - name: hook\n          action: block\n          regex: a\n",
        ));
        assert!(
            message.contains("tenants[0].moderation.rules[0].name"),
            "{message}"
        );
    }

    #[test]
    fn short_secret_is_rejected() {
        let message = error_of(&yaml("").replace(SECRET, "short"));
        assert!(message.contains("tenants[0].api_keys[0]"), "{message}");
        assert!(message.contains("at least 32 bytes"), "{message}");
    }

    #[test]
    fn two_secret_sources_are_rejected() {
        let text = yaml("").replace(
            &format!("secret: {SECRET}"),
            &format!("secret: {SECRET}\n        secret_env: PARLEY_UNUSED"),
        );
        assert!(error_of(&text).contains("exactly one"));
    }

    #[test]
    fn duplicate_tenant_is_rejected() {
        let one = yaml("");
        let tenant = one.trim_start_matches("tenants:\n");
        let message = error_of(&format!("{one}{tenant}"));
        assert!(message.contains("tenants[1].id"), "{message}");
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), format!("{SECRET}\n")).unwrap();
        let text = yaml("").replace(&format!("secret: {SECRET}"), "secret_file: key");
        let config = Config::parse(&text, dir.path()).unwrap();
        assert_eq!(config.tenants[0].api_keys[0].secret, SECRET.as_bytes());
    }

    #[test]
    fn origin_with_path_is_rejected() {
        let message = error_of(&yaml("    allowed_origins: [\"https://a.example/x\"]\n"));
        assert!(
            message.contains("tenants[0].allowed_origins[0]"),
            "{message}"
        );
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("a"));
        assert!(is_dns_label("shop-1"));
        assert!(!is_dns_label("-shop"));
        assert!(!is_dns_label("shop-"));
        assert!(!is_dns_label("Shop"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(!is_dns_label(""));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = Config::parse(&yaml(""), Path::new("/srv")).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains(SECRET));
    }
}
