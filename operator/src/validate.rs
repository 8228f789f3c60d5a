//! Checks a ChatTenant and resolves its defaults into a [`ValidTenant`],
//! from which the object builders work.
//!
//! Every rule of the CRD schema is checked again here. API servers older
//! than a schema feature (CEL rules, for one) skip the rules that use it,
//! and a resource stored before a schema change was never checked against
//! the new schema. The rules the runtime applies to its configuration file are
//! checked too, so the operator never writes a configuration the runtime
//! rejects. The immutability of `tenantId` needs the previous object and is
//! left to the API server.

mod hooks;
mod moderation;
mod replicas;
mod templates;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use chat_runtime::moderation::ModerationConfig;
use chat_runtime::templates::Template;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::{
    ChatTenant, DeletionPolicy, EffectiveSettings, EndpointSpec, RuntimeSpec, ScyllaStorage,
    TenantLimits,
};
use crate::naming;
use crate::quantity::{self, StorageSize};
use crate::settings::OperatorSettings;

pub use self::hooks::{HookSection, WebhookSection};
pub use self::moderation::MAX_REGEX_CHARS;
pub use self::replicas::{
    DEFAULT_MIN_REPLICAS, DEFAULT_TARGET_CPU_UTILIZATION, REDIS_PASSWORD_LABEL, RedisAddress,
    RedisPassword, ValidAutoscaling, ValidRedis, check_secret_key, parse_redis_url,
};
pub use self::templates::{AutoReplySection, ExtensionsSection};

/// Maximum length of a tenant id, so that `parley-<tenantId>` stays a
/// valid namespace name with room to spare.
pub const MAX_TENANT_ID_CHARS: usize = 40;
const MAX_DISPLAY_NAME_CHARS: usize = 256;
const MAX_REPLICAS: i32 = 100;
const MAX_IMAGE_CHARS: usize = 512;
const MAX_ALLOWED_ORIGINS: usize = 32;
const MAX_DNS_SUBDOMAIN_CHARS: usize = 253;
const MAX_DNS_LABEL_CHARS: usize = 63;
/// Largest replication factor per datacenter. Ten copies of a row is far
/// beyond what any chat history needs, and a typo like 30 is caught.
const MAX_REPLICATION_FACTOR: u32 = 10;
const MAX_DATACENTER_CHARS: usize = 64;

/// Keyspace of the operator's own tables, which no tenant may use.
pub const OPERATOR_KEYSPACE: &str = "parley_operator";

/// Runtime defaults of the limits, written out in the runtime's
/// configuration and reported in `status.effective`.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 4096;
pub const DEFAULT_MAX_MESSAGE_CHARS: u32 = 2000;
pub const DEFAULT_MESSAGES_PER_SECOND: u32 = 10;
pub const DEFAULT_MESSAGE_BURST: u32 = 20;
pub const DEFAULT_MAX_SOCKETS_PER_USER: u32 = 10;

/// Resources the runtime container may request. Extended resources and
/// huge pages have rules of their own, and the runtime uses neither.
const SUPPORTED_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// A rule the ChatTenant breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    /// Path of the offending field, such as `spec.runtime.replicas`.
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field: field.into(),
        message: message.into(),
    }
}

/// Reads `section` back as the runtime's type `T`, the way the runtime
/// reads its configuration file, so that defaults are the runtime's and a
/// field it does not know fails here instead of in the runtime pod.
fn runtime_section<T: serde::de::DeserializeOwned>(
    section: &impl serde::Serialize,
    field: &str,
) -> Result<T, InvalidSpec> {
    serde_json::to_value(section)
        .and_then(serde_json::from_value)
        .map_err(|error| {
            invalid(
                field,
                format!("the runtime cannot read the section built from this field: {error}"),
            )
        })
}

/// A checked ChatTenant with every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTenant {
    /// `metadata.name` of the ChatTenant.
    pub name: String,
    pub tenant_id: String,
    /// The tenant namespace, `parley-<tenantId>`.
    pub namespace: String,
    pub display_name: String,
    /// Values in force, as reported in `status.effective`.
    pub effective: EffectiveSettings,
    pub storage_size: StorageSize,
    pub storage_class: Option<String>,
    pub endpoint: Option<EndpointSpec>,
    pub allowed_origins: Vec<String>,
    /// Requests and limits of the runtime container: the spec's when it
    /// sets any, otherwise the operator's default.
    pub resources: ResourceRequirements,
    /// `spec.runtime.replicas`, or 1. `effective.replicas` is what runs.
    pub requested_replicas: i32,
    /// The ScyllaDB keyspace, when the tenant is stored in ScyllaDB rather
    /// than in the embedded store.
    pub scylla: Option<ValidScylla>,
    /// The Redis that relays events between replicas: set only for
    /// ScyllaDB storage, from the spec or the operator's default.
    pub redis: Option<ValidRedis>,
    /// The autoscaler, which then owns the Deployment's replica count.
    pub autoscaling: Option<ValidAutoscaling>,
    /// The runtime's `moderation` section, checked by the runtime's own
    /// rule compiler, or `None` when the spec has none. Its `hook` is
    /// always `None`: the hook is in [`ValidTenant::hook`].
    pub moderation: Option<ModerationConfig>,
    /// The runtime's `moderation.hook` section, from
    /// `spec.moderation.hook`.
    pub hook: Option<HookSection>,
    /// The runtime's `webhooks` section, in the order of the spec.
    pub webhooks: Vec<WebhookSection>,
    /// The runtime's `templates` section, in the order of the spec.
    pub templates: Vec<Template>,
    /// The runtime's `extensions` section, or `None` when the spec has
    /// none.
    pub extensions: Option<ExtensionsSection>,
}

/// A tenant's checked ScyllaDB storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidScylla {
    pub keyspace: String,
    /// Replication factor per datacenter.
    pub replication: BTreeMap<String, u32>,
    pub deletion_policy: DeletionPolicy,
}

/// Checks `tenant` and resolves its defaults from `settings`. Returns the
/// first rule broken, in the order of the spec's fields.
pub fn validate(
    tenant: &ChatTenant,
    settings: &OperatorSettings,
) -> Result<ValidTenant, InvalidSpec> {
    let name = validate_name(tenant.metadata.name.as_deref())?;
    let spec = &tenant.spec;
    validate_tenant_id(&spec.tenant_id)?;
    let display_name = validate_display_name(spec.display_name.as_deref(), &spec.tenant_id)?;

    let scylla = match spec.storage.as_ref() {
        Some(storage) if storage.embedded.is_some() && storage.scylla.is_some() => {
            return Err(invalid(
                "spec.storage",
                "set either storage.embedded or storage.scylla, not both",
            ));
        }
        Some(storage) => storage
            .scylla
            .as_ref()
            .map(|scylla| validate_scylla(scylla, &spec.tenant_id))
            .transpose()?,
        None => None,
    };

    let runtime = spec.runtime.clone().unwrap_or_default();
    let requested_replicas = validate_replicas(runtime.replicas, scylla.is_some())?;
    let image = validate_image(runtime.image.as_deref(), settings)?;
    let resources = validate_resources(&runtime, settings)?;
    let limits = validate_limits(runtime.limits.unwrap_or_default())?;
    let redis = replicas::validate_redis(runtime.redis.as_ref(), settings, scylla.is_some())?;
    let autoscaling = replicas::validate_autoscaling(
        runtime.autoscaling,
        runtime.replicas.is_some(),
        scylla.is_some(),
        redis.is_some(),
    )?;
    // Without Redis a ScyllaDB tenant runs one replica even when more are
    // requested, because a message sent through one replica would not
    // reach sockets on another. The RuntimeReady condition states this.
    let replicas = match (&autoscaling, &redis) {
        (Some(autoscaling), _) => autoscaling.min_replicas,
        (None, Some(_)) => requested_replicas,
        (None, None) => 1,
    };

    let embedded = spec.storage.as_ref().and_then(|s| s.embedded.clone());
    let embedded = embedded.unwrap_or_default();
    let storage_size = validate_storage_size(embedded.size.as_deref(), settings)?;
    let storage_class = embedded.storage_class_name;
    if let Some(class) = &storage_class {
        validate_object_name("spec.storage.embedded.storageClassName", class)?;
    }

    if let Some(endpoint) = &spec.endpoint {
        validate_endpoint(endpoint)?;
    }
    validate_origins(&spec.allowed_origins)?;
    let moderation = spec
        .moderation
        .as_ref()
        .map(moderation::validate_moderation)
        .transpose()?;
    let hook = spec
        .moderation
        .as_ref()
        .and_then(|moderation| moderation.hook.as_ref())
        .map(hooks::validate_hook)
        .transpose()?;
    let webhooks = hooks::validate_webhooks(&spec.webhooks)?;
    let templates = templates::validate_templates(&spec.templates)?;
    let extensions = spec
        .extensions
        .as_ref()
        .map(templates::validate_extensions)
        .transpose()?;

    let effective = EffectiveSettings {
        deletion_policy: spec.deletion_policy.unwrap_or_default(),
        replicas,
        image,
        storage_size: storage_size.to_string(),
        keyspace: scylla.as_ref().map(|scylla| scylla.keyspace.clone()),
        redis_url: redis.as_ref().map(|redis| redis.url.clone()),
        ..effective_limits(&limits)
    };
    Ok(ValidTenant {
        name,
        tenant_id: spec.tenant_id.clone(),
        namespace: naming::namespace(&spec.tenant_id),
        display_name,
        effective,
        storage_size,
        storage_class,
        endpoint: spec.endpoint.clone(),
        allowed_origins: spec.allowed_origins.clone(),
        resources,
        requested_replicas,
        scylla,
        redis,
        autoscaling,
        moderation,
        hook,
        webhooks,
        templates,
        extensions,
    })
}

fn validate_name(name: Option<&str>) -> Result<String, InvalidSpec> {
    match name {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(invalid("metadata.name", "must be set")),
    }
}

fn validate_tenant_id(tenant_id: &str) -> Result<(), InvalidSpec> {
    if tenant_id.len() > MAX_TENANT_ID_CHARS || !is_dns_label(tenant_id) {
        return Err(invalid(
            "spec.tenantId",
            format!(
                "{tenant_id:?} is not a valid tenant id: use 1 to {MAX_TENANT_ID_CHARS} lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// Returns the display name, or the tenant id when none is set. The runtime
/// rejects a name that is only whitespace, although the schema allows it.
fn validate_display_name(
    display_name: Option<&str>,
    tenant_id: &str,
) -> Result<String, InvalidSpec> {
    let Some(display_name) = display_name else {
        return Ok(tenant_id.to_owned());
    };
    let chars = display_name.chars().count();
    if !(1..=MAX_DISPLAY_NAME_CHARS).contains(&chars) {
        return Err(invalid(
            "spec.displayName",
            format!("must be 1 to {MAX_DISPLAY_NAME_CHARS} characters long, not {chars}"),
        ));
    }
    if display_name.trim().is_empty() {
        return Err(invalid(
            "spec.displayName",
            "must contain a character other than whitespace",
        ));
    }
    Ok(display_name.to_owned())
}

/// Returns the requested replica count. The embedded store rejects more
/// than one, and ScyllaDB storage accepts it.
fn validate_replicas(replicas: Option<i32>, scylla: bool) -> Result<i32, InvalidSpec> {
    let replicas = replicas.unwrap_or(1);
    if !(1..=MAX_REPLICAS).contains(&replicas) {
        return Err(invalid(
            "spec.runtime.replicas",
            format!("{replicas} is out of range: must be between 1 and {MAX_REPLICAS}"),
        ));
    }
    if replicas > 1 && !scylla {
        return Err(invalid(
            "spec.runtime.replicas",
            format!(
                "{replicas} is not supported: the embedded store allows one replica, because its SQLite file sits on a ReadWriteOnce volume that only one pod can write"
            ),
        ));
    }
    Ok(replicas)
}

/// Returns the ScyllaDB storage of `spec` as far as deleting it needs: the
/// keyspace (the default one when none is named) and the deletion policy.
/// Unlike [`validate`], it works on a spec that breaks other rules.
pub fn scylla_storage(spec: &crate::crd::ChatTenantSpec) -> Option<ValidScylla> {
    let storage = spec.storage.as_ref()?.scylla.as_ref()?;
    Some(ValidScylla {
        keyspace: storage
            .keyspace
            .clone()
            .unwrap_or_else(|| default_keyspace(&spec.tenant_id)),
        replication: storage.replication.clone(),
        deletion_policy: storage.deletion_policy.unwrap_or_default(),
    })
}

/// Returns the default keyspace of a tenant: `parley_` and the tenant id
/// with '-' replaced by '_'. A tenant id of at most 40 characters keeps it
/// within CQL's 48.
pub fn default_keyspace(tenant_id: &str) -> String {
    format!("parley_{}", tenant_id.replace('-', "_"))
}

fn validate_scylla(scylla: &ScyllaStorage, tenant_id: &str) -> Result<ValidScylla, InvalidSpec> {
    let keyspace = scylla
        .keyspace
        .clone()
        .unwrap_or_else(|| default_keyspace(tenant_id));
    chat_runtime::store::scylla::check_keyspace_name(&keyspace)
        .map_err(|message| invalid("spec.storage.scylla.keyspace", message))?;
    if keyspace == OPERATOR_KEYSPACE {
        return Err(invalid(
            "spec.storage.scylla.keyspace",
            format!("keyspace {keyspace:?} is reserved for the operator's own tables"),
        ));
    }

    if scylla.replication.is_empty() {
        return Err(invalid(
            "spec.storage.scylla.replication",
            "must name at least one datacenter",
        ));
    }
    for (datacenter, factor) in &scylla.replication {
        let field = format!("spec.storage.scylla.replication.{datacenter}");
        // Datacenter names are written into CQL as string literals, so only
        // characters that need no quoting are allowed.
        let name_valid = (1..=MAX_DATACENTER_CHARS).contains(&datacenter.len())
            && datacenter
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_valid {
            return Err(invalid(
                field,
                format!(
                    "{datacenter:?} is not a datacenter name: use 1 to {MAX_DATACENTER_CHARS} letters, digits, '-', '_' or '.'"
                ),
            ));
        }
        if !(1..=MAX_REPLICATION_FACTOR).contains(factor) {
            return Err(invalid(
                field,
                format!("{factor} is out of range: must be between 1 and {MAX_REPLICATION_FACTOR}"),
            ));
        }
    }
    Ok(ValidScylla {
        keyspace,
        replication: scylla.replication.clone(),
        deletion_policy: scylla.deletion_policy.unwrap_or_default(),
    })
}

fn validate_image(image: Option<&str>, settings: &OperatorSettings) -> Result<String, InvalidSpec> {
    let Some(image) = image else {
        return Ok(settings.runtime_image.clone());
    };
    let chars = image.chars().count();
    if !(1..=MAX_IMAGE_CHARS).contains(&chars) {
        return Err(invalid(
            "spec.runtime.image",
            format!("must be 1 to {MAX_IMAGE_CHARS} characters long, not {chars}"),
        ));
    }
    if image.contains(char::is_whitespace) {
        return Err(invalid(
            "spec.runtime.image",
            format!("{image:?} is not an image reference: it contains whitespace"),
        ));
    }
    Ok(image.to_owned())
}

/// Returns the spec's resources when it sets the field, and the operator's
/// default otherwise. The two are never merged, so a spec can drop a
/// default limit by leaving it out.
fn validate_resources(
    runtime: &RuntimeSpec,
    settings: &OperatorSettings,
) -> Result<ResourceRequirements, InvalidSpec> {
    let Some(resources) = &runtime.resources else {
        return Ok(settings.runtime_resources.clone());
    };
    if resources
        .claims
        .as_ref()
        .is_some_and(|claims| !claims.is_empty())
    {
        return Err(invalid(
            "spec.runtime.resources.claims",
            "is not supported: the runtime pod declares no resource claims",
        ));
    }
    let requests = quantities("requests", resources.requests.as_ref())?;
    let limits = quantities("limits", resources.limits.as_ref())?;

    for (name, request) in &requests {
        if let Some(limit) = limits.get(name)
            && request > limit
        {
            return Err(invalid(
                format!("spec.runtime.resources.requests.{name}"),
                "must be less than or equal to the limit of the same resource",
            ));
        }
    }
    Ok(resources.clone())
}

/// Checks one map of `resources` and returns its values in thousandths.
fn quantities(
    kind: &str,
    values: Option<&BTreeMap<String, Quantity>>,
) -> Result<BTreeMap<String, u128>, InvalidSpec> {
    let mut parsed = BTreeMap::new();
    for (name, value) in values.into_iter().flatten() {
        let field = format!("spec.runtime.resources.{kind}.{name}");
        if !SUPPORTED_RESOURCES.contains(&name.as_str()) {
            return Err(invalid(
                field,
                format!(
                    "is not supported: set only {}",
                    SUPPORTED_RESOURCES.join(", ")
                ),
            ));
        }
        let milli = quantity::milli_units(&value.0).map_err(|error| {
            invalid(
                &field,
                format!("{:?} is not a valid quantity: {error}", value.0),
            )
        })?;
        parsed.insert(name.clone(), milli);
    }
    Ok(parsed)
}

/// Checks the limits against the ranges the runtime's configuration
/// accepts.
fn validate_limits(limits: TenantLimits) -> Result<TenantLimits, InvalidSpec> {
    let checks = [
        ("maxMessageBytes", limits.max_message_bytes, 1_048_576),
        ("maxMessageChars", limits.max_message_chars, 1_048_576),
        ("messagesPerSecond", limits.messages_per_second, 10_000),
        ("messageBurst", limits.message_burst, 100_000),
        ("maxSocketsPerUser", limits.max_sockets_per_user, 1_000),
    ];
    for (name, value, max) in checks {
        if let Some(value) = value
            && !(1..=max).contains(&value)
        {
            return Err(invalid(
                format!("spec.runtime.limits.{name}"),
                format!("{value} is out of range: must be between 1 and {max}"),
            ));
        }
    }
    Ok(limits)
}

/// Returns settings with the limits in force filled in, and every other
/// field left at its default for the caller to set.
fn effective_limits(limits: &TenantLimits) -> EffectiveSettings {
    let or_default = |value: Option<u32>, default: u32| value.unwrap_or(default);
    EffectiveSettings {
        max_message_bytes: or_default(limits.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES),
        max_message_chars: Some(or_default(
            limits.max_message_chars,
            DEFAULT_MAX_MESSAGE_CHARS,
        )),
        messages_per_second: or_default(limits.messages_per_second, DEFAULT_MESSAGES_PER_SECOND),
        message_burst: or_default(limits.message_burst, DEFAULT_MESSAGE_BURST),
        max_sockets_per_user: or_default(limits.max_sockets_per_user, DEFAULT_MAX_SOCKETS_PER_USER),
        ..EffectiveSettings::default()
    }
}

fn validate_storage_size(
    size: Option<&str>,
    settings: &OperatorSettings,
) -> Result<StorageSize, InvalidSpec> {
    let field = "spec.storage.embedded.size";
    match size {
        Some(size) => StorageSize::parse(size)
            .map_err(|error| invalid(field, format!("{size:?} is not a valid size: {error}"))),
        None => StorageSize::parse(&settings.storage_size).map_err(|error| {
            invalid(
                field,
                format!(
                    "is not set, and the operator's default {:?} is not a valid size: {error}",
                    settings.storage_size
                ),
            )
        }),
    }
}

fn validate_endpoint(endpoint: &EndpointSpec) -> Result<(), InvalidSpec> {
    let host = &endpoint.host;
    if host.len() > MAX_DNS_SUBDOMAIN_CHARS || !is_dns_name(host) {
        return Err(invalid(
            "spec.endpoint.host",
            format!(
                "{host:?} is not a DNS name: use lowercase labels of letters, digits and '-', separated by '.', such as chat.example.com"
            ),
        ));
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Err(invalid(
            "spec.endpoint.host",
            format!("{host:?} is an IP address, and an Ingress host must be a DNS name"),
        ));
    }
    if let Some(class) = &endpoint.ingress_class_name {
        validate_object_name("spec.endpoint.ingressClassName", class)?;
    }
    if let Some(secret) = &endpoint.tls_secret_name {
        validate_object_name("spec.endpoint.tlsSecretName", secret)?;
    }
    Ok(())
}

/// Checks a reference to another object by name. The schema only bounds
/// the length, but the API server accepts only DNS subdomain names, which,
/// unlike host names, may have labels longer than 63 characters.
fn validate_object_name(field: &str, name: &str) -> Result<(), InvalidSpec> {
    if name.len() > MAX_DNS_SUBDOMAIN_CHARS || !name.split('.').all(has_label_chars) {
        return Err(invalid(
            field,
            format!(
                "{name:?} is not a valid object name: use at most {MAX_DNS_SUBDOMAIN_CHARS} lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

fn validate_origins(origins: &[String]) -> Result<(), InvalidSpec> {
    if origins.len() > MAX_ALLOWED_ORIGINS {
        return Err(invalid(
            "spec.allowedOrigins",
            format!(
                "lists {} origins, more than the maximum of {MAX_ALLOWED_ORIGINS}",
                origins.len()
            ),
        ));
    }
    for (index, origin) in origins.iter().enumerate() {
        check_origin(origin)
            .map_err(|message| invalid(format!("spec.allowedOrigins[{index}]"), message))?;
    }
    Ok(())
}

/// Checks that `origin` has the form browsers send in the `Origin` header,
/// which the runtime compares byte for byte: `scheme://host[:port]` with a
/// lowercase host and no default port.
fn check_origin(origin: &str) -> Result<(), String> {
    let malformed = || {
        format!(
            "{origin:?} is not an origin: expected http:// or https://, a lowercase host, an optional port and no path, such as https://app.example.com"
        )
    };
    let (scheme, authority) = origin.split_once("://").ok_or_else(malformed)?;
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return Err(malformed()),
    };

    let (host, port) = split_host_port(authority).ok_or_else(malformed)?;
    if !is_origin_host(host) {
        return Err(malformed());
    }
    if let Some(port) = port {
        let digits_only = port.bytes().all(|b| b.is_ascii_digit());
        let in_range = port.parse::<u16>().is_ok_and(|number| number > 0);
        if !digits_only || !in_range || port.starts_with('0') {
            return Err(malformed());
        }
        if port == default_port {
            return Err(format!(
                "{origin:?} names the default port of {scheme}, which browsers leave out of the Origin header: remove :{port}"
            ));
        }
    }
    Ok(())
}

/// Splits `host:port`, keeping the brackets of an IPv6 host.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest {
            "" => Some((host, None)),
            _ => rest.strip_prefix(':').map(|port| (host, Some(port))),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

fn is_origin_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    host.parse::<Ipv4Addr>().is_ok() || (host.len() <= MAX_DNS_SUBDOMAIN_CHARS && is_dns_name(host))
}

/// True for a DNS label of RFC 1123: 1 to 63 lowercase letters, digits or
/// '-', starting and ending with a letter or digit.
fn is_dns_label(value: &str) -> bool {
    value.len() <= MAX_DNS_LABEL_CHARS && has_label_chars(value)
}

/// True for a non-empty run of lowercase letters, digits or '-' that starts
/// and ends with a letter or digit.
fn has_label_chars(value: &str) -> bool {
    let bytes = value.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge(bytes.first())
        && edge(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// True for DNS labels joined by '.', the host pattern of the schema.
fn is_dns_name(value: &str) -> bool {
    value.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ChatTenantSpec, DeletionPolicy};

    /// Parses a spec written as YAML into a ChatTenant named `test`.
    fn tenant(spec: &str) -> ChatTenant {
        let spec: ChatTenantSpec = serde_yaml::from_str(spec).unwrap();
        ChatTenant::new("test", spec)
    }

    fn check(spec: &str) -> Result<ValidTenant, InvalidSpec> {
        validate(&tenant(spec), &OperatorSettings::default())
    }

    fn origins(count: usize) -> String {
        let list: Vec<String> = (0..count)
            .map(|i| format!("https://app{i}.example.com"))
            .collect();
        format!(
            "{{tenantId: chotot, allowedOrigins: [{}]}}",
            list.join(", ")
        )
    }

    #[test]
    fn scylla_storage_defaults_keyspace_and_policy() {
        let valid =
            check("{tenantId: cho-tot, storage: {scylla: {replication: {dc1: 3}}}}").unwrap();
        let scylla = valid.scylla.unwrap();
        assert_eq!(scylla.keyspace, "parley_cho_tot");
        assert_eq!(scylla.replication, BTreeMap::from([("dc1".to_owned(), 3)]));
        assert_eq!(scylla.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(valid.effective.keyspace.as_deref(), Some("parley_cho_tot"));
        assert_eq!(
            default_keyspace(&"a".repeat(MAX_TENANT_ID_CHARS)).len(),
            47,
            "the longest tenant id keeps the keyspace within CQL's 48 characters"
        );
    }

    #[test]
    fn scylla_storage_allows_requested_replicas() {
        let valid = check(
            "{tenantId: chotot, runtime: {replicas: 3}, storage: {scylla: {replication: {dc1: 3}}}}",
        )
        .unwrap();
        assert_eq!(valid.requested_replicas, 3);
        assert_eq!(valid.effective.replicas, 1, "no Redis is configured");
        assert_eq!(valid.redis, None);
        let embedded = check("{tenantId: chotot, runtime: {replicas: 3}}").unwrap_err();
        assert_eq!(embedded.field, "spec.runtime.replicas");
    }

    fn settings_with_redis() -> OperatorSettings {
        OperatorSettings {
            redis: Some(crate::settings::RedisSettings {
                url: "redis://redis.parley-system:6379".to_owned(),
                password_secret: Some(crate::crd::SecretKeyReference {
                    name: "redis".to_owned(),
                    key: "password".to_owned(),
                }),
            }),
            ..OperatorSettings::default()
        }
    }

    #[test]
    fn spec_redis_runs_requested_replicas() {
        let valid = check(
            "{tenantId: chotot, runtime: {replicas: 3, redis: {url: 'redis://10.0.0.7:6379/1', passwordSecret: {name: chotot-redis, key: pw}}}, storage: {scylla: {replication: {dc1: 3}}}}",
        )
        .unwrap();
        assert_eq!(valid.effective.replicas, 3);
        assert_eq!(
            valid.effective.redis_url.as_deref(),
            Some("redis://10.0.0.7:6379/1")
        );
        let redis = valid.redis.unwrap();
        assert_eq!(redis.address.port, 6379);
        let password = redis.password.unwrap();
        assert_eq!(password.namespace, "parley-system");
        assert_eq!(password.name, "chotot-redis");
        assert_eq!(password.key, "pw");
    }

    #[test]
    fn operator_redis_applies_to_scylla_only() {
        let settings = settings_with_redis();
        let scylla = tenant(
            "{tenantId: chotot, runtime: {replicas: 2}, storage: {scylla: {replication: {dc1: 3}}}}",
        );
        let valid = validate(&scylla, &settings).unwrap();
        assert_eq!(valid.effective.replicas, 2);
        let redis = valid.redis.unwrap();
        assert_eq!(redis.url, "redis://redis.parley-system:6379");
        assert_eq!(redis.password.unwrap().name, "redis");

        let embedded = validate(&tenant("{tenantId: chotot}"), &settings).unwrap();
        assert_eq!(embedded.redis, None);
        assert_eq!(embedded.effective.redis_url, None);
        assert_eq!(embedded.effective.replicas, 1);
    }

    #[test]
    fn spec_redis_overrides_operator_default() {
        let valid = validate(
            &tenant(
                "{tenantId: chotot, runtime: {redis: {url: 'redis://own:7000'}}, storage: {scylla: {replication: {dc1: 3}}}}",
            ),
            &settings_with_redis(),
        )
        .unwrap();
        let redis = valid.redis.unwrap();
        assert_eq!(redis.url, "redis://own:7000");
        assert_eq!(
            redis.password, None,
            "the default's password is not mixed in"
        );
    }

    #[test]
    fn invalid_operator_redis_is_reported() {
        let settings = OperatorSettings {
            redis: Some(crate::settings::RedisSettings {
                url: "rediss://redis:6379".to_owned(),
                password_secret: None,
            }),
            ..OperatorSettings::default()
        };
        let error = validate(
            &tenant("{tenantId: a, storage: {scylla: {replication: {dc1: 1}}}}"),
            &settings,
        )
        .unwrap_err();
        assert_eq!(error.field, "spec.runtime.redis.url");
        assert!(error.message.contains("--redis-url"), "{}", error.message);
    }

    #[test]
    fn autoscaling_takes_defaults() {
        let valid = check(
            "{tenantId: chotot, runtime: {autoscaling: {maxReplicas: 6}, redis: {url: 'redis://r:6379'}}, storage: {scylla: {replication: {dc1: 3}}}}",
        )
        .unwrap();
        let autoscaling = valid.autoscaling.unwrap();
        assert_eq!(autoscaling.min_replicas, 2);
        assert_eq!(autoscaling.max_replicas, 6);
        assert_eq!(autoscaling.target_cpu_utilization_percentage, 80);
        assert_eq!(valid.effective.replicas, 2);
    }

    #[test]
    fn autoscaling_keeps_spec_values() {
        let valid = check(
            "{tenantId: chotot, runtime: {autoscaling: {minReplicas: 1, maxReplicas: 1, targetCPUUtilizationPercentage: 100}, redis: {url: 'redis://r:6379'}}, storage: {scylla: {replication: {dc1: 3}}}}",
        )
        .unwrap();
        let autoscaling = valid.autoscaling.unwrap();
        assert_eq!(autoscaling.min_replicas, 1);
        assert_eq!(autoscaling.max_replicas, 1);
        assert_eq!(autoscaling.target_cpu_utilization_percentage, 100);
    }

    #[test]
    fn replica_rules_name_their_field() {
        const SCYLLA: &str = "storage: {scylla: {replication: {dc1: 3}}}";
        const REDIS: &str = "redis: {url: 'redis://r:6379'}";
        let cases: Vec<(String, &str, &str)> = vec![
            (
                "{tenantId: a, runtime: {redis: {url: 'redis://r:6379'}}}".into(),
                "spec.runtime.redis",
                "only used with ScyllaDB",
            ),
            (
                format!(
                    "{{tenantId: a, runtime: {{redis: {{url: 'rediss://r:6379'}}}}, {SCYLLA}}}"
                ),
                "spec.runtime.redis.url",
                "must start with redis://",
            ),
            (
                format!("{{tenantId: a, runtime: {{redis: {{url: 'redis://r'}}}}, {SCYLLA}}}"),
                "spec.runtime.redis.url",
                "names no port",
            ),
            (
                format!(
                    "{{tenantId: a, runtime: {{redis: {{url: 'redis://:pw@r:6379'}}}}, {SCYLLA}}}"
                ),
                "spec.runtime.redis.url",
                "passwordSecret",
            ),
            (
                format!(
                    "{{tenantId: a, runtime: {{redis: {{url: 'redis://r:6379', passwordSecret: {{name: Redis, key: pw}}}}}}, {SCYLLA}}}"
                ),
                "spec.runtime.redis.passwordSecret.name",
                "not a valid object name",
            ),
            (
                format!(
                    "{{tenantId: a, runtime: {{redis: {{url: 'redis://r:6379', passwordSecret: {{name: redis, key: 'p w'}}}}}}, {SCYLLA}}}"
                ),
                "spec.runtime.redis.passwordSecret.key",
                "not a valid Secret key",
            ),
            (
                "{tenantId: a, runtime: {autoscaling: {maxReplicas: 3}}}".into(),
                "spec.runtime.autoscaling",
                "embedded store allows one replica",
            ),
            (
                format!("{{tenantId: a, runtime: {{autoscaling: {{maxReplicas: 3}}}}, {SCYLLA}}}"),
                "spec.runtime.autoscaling",
                "--redis-url",
            ),
            (
                format!(
                    "{{tenantId: a, runtime: {{replicas: 2, autoscaling: {{maxReplicas: 3}}, {REDIS}}}, {SCYLLA}}}"
                ),
                "spec.runtime.autoscaling",
                "not both",
            ),
            (
                format!(
                    "{{tenantId: a, runtime: {{autoscaling: {{minReplicas: 0, maxReplicas: 3}}, {REDIS}}}, {SCYLLA}}}"
                ),
                "spec.runtime.autoscaling.minReplicas",
                "between 1 and 100",
            ),
            (
                format!(
                    "{{tenantId: a, runtime: {{autoscaling: {{maxReplicas: 101}}, {REDIS}}}, {SCYLLA}}}"
                ),
                "spec.runtime.autoscaling.maxReplicas",
                "between 1 and 100",
            ),
            (
                format!(
                    "{{tenantId: a, runtime: {{autoscaling: {{minReplicas: 4, maxReplicas: 3}}, {REDIS}}}, {SCYLLA}}}"
                ),
                "spec.runtime.autoscaling.maxReplicas",
                "less than minReplicas (4)",
            ),
            (
                format!(
                    "{{tenantId: a, runtime: {{autoscaling: {{maxReplicas: 1}}, {REDIS}}}, {SCYLLA}}}"
                ),
                "spec.runtime.autoscaling.maxReplicas",
                "less than minReplicas (2)",
            ),
            (
                format!(
                    "{{tenantId: a, runtime: {{autoscaling: {{maxReplicas: 3, targetCPUUtilizationPercentage: 0}}, {REDIS}}}, {SCYLLA}}}"
                ),
                "spec.runtime.autoscaling.targetCPUUtilizationPercentage",
                "between 1 and 100",
            ),
            (
                format!(
                    "{{tenantId: a, runtime: {{autoscaling: {{maxReplicas: 3, targetCPUUtilizationPercentage: 101}}, {REDIS}}}, {SCYLLA}}}"
                ),
                "spec.runtime.autoscaling.targetCPUUtilizationPercentage",
                "between 1 and 100",
            ),
        ];
        for (spec, field, message) in cases {
            let error = check(&spec).unwrap_err();
            assert_eq!(error.field, field, "{spec}");
            assert!(
                error.message.contains(message),
                "{spec}: {:?} does not contain {message:?}",
                error.message
            );
        }
    }

    #[test]
    fn scylla_storage_rules() {
        let cases = [
            (
                "{tenantId: chotot, storage: {embedded: {}, scylla: {replication: {dc1: 1}}}}",
                "spec.storage",
                "not both",
            ),
            (
                "{tenantId: chotot, storage: {scylla: {replication: {}}}}",
                "spec.storage.scylla.replication",
                "at least one",
            ),
            (
                "{tenantId: chotot, storage: {scylla: {replication: {dc1: 0}}}}",
                "spec.storage.scylla.replication.dc1",
                "out of range",
            ),
            (
                "{tenantId: chotot, storage: {scylla: {replication: {dc1: 11}}}}",
                "spec.storage.scylla.replication.dc1",
                "out of range",
            ),
            (
                "{tenantId: chotot, storage: {scylla: {replication: {\"dc'1\": 3}}}}",
                "spec.storage.scylla.replication.dc'1",
                "datacenter name",
            ),
            (
                "{tenantId: chotot, storage: {scylla: {replication: {dc1: 3}, keyspace: system_auth}}}",
                "spec.storage.scylla.keyspace",
                "reserved",
            ),
            (
                "{tenantId: chotot, storage: {scylla: {replication: {dc1: 3}, keyspace: parley_operator}}}",
                "spec.storage.scylla.keyspace",
                "operator",
            ),
            (
                "{tenantId: chotot, storage: {scylla: {replication: {dc1: 3}, keyspace: Chat}}}",
                "spec.storage.scylla.keyspace",
                "lowercase",
            ),
        ];
        for (spec, field, message) in cases {
            let error = check(spec).unwrap_err();
            assert_eq!(error.field, field, "{spec}");
            assert!(error.message.contains(message), "{spec}: {}", error.message);
        }
    }

    #[test]
    fn scylla_storage_for_deletion_ignores_other_rules() {
        let spec: ChatTenantSpec = serde_yaml::from_str(
            "{tenantId: chotot, displayName: \" \", storage: {scylla: {replication: {dc1: 3}, deletionPolicy: Delete}}}",
        )
        .unwrap();
        let storage = scylla_storage(&spec).unwrap();
        assert_eq!(storage.keyspace, "parley_chotot");
        assert_eq!(storage.deletion_policy, DeletionPolicy::Delete);
        let embedded: ChatTenantSpec = serde_yaml::from_str("{tenantId: chotot}").unwrap();
        assert_eq!(scylla_storage(&embedded), None);
    }

    #[test]
    fn minimal_spec_takes_defaults() {
        let valid = check("{tenantId: chotot}").unwrap();
        assert_eq!(valid.name, "test");
        assert_eq!(valid.tenant_id, "chotot");
        assert_eq!(valid.namespace, "parley-chotot");
        assert_eq!(valid.display_name, "chotot");
        assert_eq!(valid.effective.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(valid.effective.replicas, 1);
        assert_eq!(
            valid.effective.image,
            crate::settings::DEFAULT_RUNTIME_IMAGE
        );
        assert_eq!(valid.effective.storage_size, "1Gi");
        assert_eq!(valid.effective.max_message_bytes, 4096);
        assert_eq!(valid.effective.max_message_chars, Some(2000));
        assert_eq!(valid.effective.messages_per_second, 10);
        assert_eq!(valid.effective.message_burst, 20);
        assert_eq!(valid.effective.max_sockets_per_user, 10);
        assert_eq!(valid.storage_class, None);
        assert_eq!(valid.endpoint, None);
        assert!(valid.allowed_origins.is_empty());
        assert_eq!(valid.moderation, None);
        assert_eq!(valid.hook, None);
        assert!(valid.webhooks.is_empty());
        assert!(valid.templates.is_empty());
        assert_eq!(valid.extensions, None);
        assert_eq!(
            valid.resources,
            OperatorSettings::default().runtime_resources
        );
    }

    #[test]
    fn default_limits_match_runtime() {
        let runtime = chat_runtime::config::Limits::default();
        assert_eq!(
            DEFAULT_MAX_MESSAGE_BYTES as usize,
            runtime.max_message_bytes
        );
        assert_eq!(
            DEFAULT_MAX_MESSAGE_CHARS as usize,
            runtime.max_message_chars
        );
        assert_eq!(DEFAULT_MESSAGES_PER_SECOND, runtime.messages_per_second);
        assert_eq!(DEFAULT_MESSAGE_BURST, runtime.message_burst);
        assert_eq!(DEFAULT_MAX_SOCKETS_PER_USER, runtime.max_sockets_per_user);
    }

    #[test]
    fn full_spec_is_kept() {
        let valid = check(
            "tenantId: chotot
displayName: Chợ Tốt
runtime:
  replicas: 1
  image: registry.example/chat-runtime:0.2.0
  resources:
    requests: {cpu: 250m, memory: 256Mi}
    limits: {cpu: '1', memory: 1Gi}
  limits: {maxMessageBytes: 8192, maxMessageChars: 1000, messagesPerSecond: 5, messageBurst: 30, maxSocketsPerUser: 4}
storage:
  embedded: {size: 20Gi, storageClassName: fast-ssd}
endpoint: {host: chat.chotot.example, ingressClassName: nginx, tlsSecretName: chat-tls}
allowedOrigins: ['https://www.chotot.example', 'http://localhost:3000']
moderation:
  rules: [{name: phones, action: Mask, contacts: {}}]
  hook: {url: 'https://www.chotot.example/pre-send', onFailure: Open}
webhooks: [{name: crm, url: 'https://crm.chotot.example/events'}]
templates: [{id: thanks, text: Cảm ơn!}]
extensions: {autoReply: {}}
deletionPolicy: Delete
",
        )
        .unwrap();
        assert_eq!(valid.display_name, "Chợ Tốt");
        assert_eq!(valid.effective.image, "registry.example/chat-runtime:0.2.0");
        assert_eq!(valid.effective.deletion_policy, DeletionPolicy::Delete);
        assert_eq!(valid.effective.storage_size, "20Gi");
        assert_eq!(valid.storage_size.as_str(), "20Gi");
        assert_eq!(valid.storage_class.as_deref(), Some("fast-ssd"));
        assert_eq!(valid.effective.max_message_bytes, 8192);
        assert_eq!(valid.effective.max_message_chars, Some(1000));
        assert_eq!(valid.effective.messages_per_second, 5);
        assert_eq!(valid.effective.message_burst, 30);
        assert_eq!(valid.effective.max_sockets_per_user, 4);
        assert_eq!(valid.endpoint.unwrap().host, "chat.chotot.example");
        assert_eq!(valid.allowed_origins.len(), 2);
        let moderation = valid.moderation.unwrap();
        assert_eq!(moderation.mask, "***");
        assert_eq!(moderation.rules[0].name, "phones");
        assert_eq!(moderation.hook, None, "the hook is kept on its own");
        assert_eq!(
            valid.hook.unwrap().url,
            "https://www.chotot.example/pre-send"
        );
        assert_eq!(valid.webhooks[0].name, "crm");
        assert_eq!(valid.templates[0].id, "thanks");
        let auto_reply = valid.extensions.unwrap().auto_reply.unwrap();
        assert_eq!(auto_reply.period_seconds, None);
        let requests = valid.resources.requests.unwrap();
        assert_eq!(requests["cpu"], Quantity("250m".to_owned()));
    }

    #[test]
    fn spec_resources_replace_defaults() {
        let valid =
            check("{tenantId: chotot, runtime: {resources: {limits: {memory: 2Gi}}}}").unwrap();
        assert_eq!(valid.resources.requests, None);
        let limits = valid.resources.limits.unwrap();
        assert_eq!(limits.len(), 1);
        assert_eq!(limits["memory"], Quantity("2Gi".to_owned()));
    }

    #[test]
    fn boundary_values_are_valid() {
        let cases = [
            format!("{{tenantId: {}}}", "a".repeat(40)),
            "{tenantId: a}".to_owned(),
            "{tenantId: 1-a-2}".to_owned(),
            format!("{{tenantId: a, displayName: {}}}", "ồ".repeat(256)),
            format!("{{tenantId: a, runtime: {{image: {}}}}}", "i".repeat(512)),
            "{tenantId: a, runtime: {limits: {maxMessageBytes: 1048576, maxMessageChars: 1048576, messagesPerSecond: 10000, messageBurst: 100000, maxSocketsPerUser: 1000}}}".to_owned(),
            "{tenantId: a, runtime: {limits: {maxMessageBytes: 1, maxMessageChars: 1, messagesPerSecond: 1, messageBurst: 1, maxSocketsPerUser: 1}}}".to_owned(),
            "{tenantId: a, runtime: {resources: {requests: {cpu: 1}, limits: {cpu: 1000m}}}}".to_owned(),
            origins(32),
            "{tenantId: a, allowedOrigins: ['https://[::1]:8443', 'http://127.0.0.1:65535']}".to_owned(),
            format!("{{tenantId: a, endpoint: {{host: {}.example}}}}", "h".repeat(63)),
            format!("{{tenantId: a, endpoint: {{host: h, tlsSecretName: {}}}}}", "s".repeat(253)),
            "{tenantId: a, storage: {embedded: {size: '0.5Gi'}}}".to_owned(),
        ];
        for spec in cases {
            assert!(check(&spec).is_ok(), "{spec}: {:?}", check(&spec));
        }
    }

    #[test]
    fn each_rule_names_its_field() {
        let long_name = "a".repeat(254);
        let long_label = "h".repeat(64);
        let cases: Vec<(String, &str, &str)> = vec![
            // Tenant id: a DNS label of at most 40 characters.
            ("{tenantId: ''}".into(), "spec.tenantId", "not a valid tenant id"),
            (format!("{{tenantId: {}}}", "a".repeat(41)), "spec.tenantId", "1 to 40"),
            ("{tenantId: Chotot}".into(), "spec.tenantId", "lowercase"),
            ("{tenantId: -chotot}".into(), "spec.tenantId", "starting and ending"),
            ("{tenantId: chotot-}".into(), "spec.tenantId", "starting and ending"),
            ("{tenantId: cho.tot}".into(), "spec.tenantId", "not a valid tenant id"),
            ("{tenantId: chợ}".into(), "spec.tenantId", "not a valid tenant id"),
            // Display name.
            ("{tenantId: a, displayName: ''}".into(), "spec.displayName", "1 to 256"),
            (format!("{{tenantId: a, displayName: {}}}", "ồ".repeat(257)), "spec.displayName", "not 257"),
            ("{tenantId: a, displayName: '   '}".into(), "spec.displayName", "whitespace"),
            // Replicas.
            ("{tenantId: a, runtime: {replicas: 0}}".into(), "spec.runtime.replicas", "between 1 and 100"),
            ("{tenantId: a, runtime: {replicas: 101}}".into(), "spec.runtime.replicas", "between 1 and 100"),
            ("{tenantId: a, runtime: {replicas: 2}}".into(), "spec.runtime.replicas", "embedded store allows one replica"),
            // Image.
            ("{tenantId: a, runtime: {image: ''}}".into(), "spec.runtime.image", "1 to 512"),
            (format!("{{tenantId: a, runtime: {{image: {}}}}}", "i".repeat(513)), "spec.runtime.image", "not 513"),
            ("{tenantId: a, runtime: {image: 'chat runtime'}}".into(), "spec.runtime.image", "whitespace"),
            // Resources.
            ("{tenantId: a, runtime: {resources: {claims: [{name: gpu}]}}}".into(), "spec.runtime.resources.claims", "not supported"),
            ("{tenantId: a, runtime: {resources: {requests: {cpu: lots}}}}".into(), "spec.runtime.resources.requests.cpu", "not a valid quantity"),
            ("{tenantId: a, runtime: {resources: {limits: {memory: '-1Gi'}}}}".into(), "spec.runtime.resources.limits.memory", "negative"),
            ("{tenantId: a, runtime: {resources: {limits: {nvidia.com/gpu: 1}}}}".into(), "spec.runtime.resources.limits.nvidia.com/gpu", "not supported"),
            ("{tenantId: a, runtime: {resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}}}".into(), "spec.runtime.resources.requests.memory", "less than or equal to the limit"),
            // Limits, with the ranges of the runtime's configuration.
            ("{tenantId: a, runtime: {limits: {maxMessageBytes: 0}}}".into(), "spec.runtime.limits.maxMessageBytes", "between 1 and 1048576"),
            ("{tenantId: a, runtime: {limits: {maxMessageBytes: 1048577}}}".into(), "spec.runtime.limits.maxMessageBytes", "between 1 and 1048576"),
            ("{tenantId: a, runtime: {limits: {maxMessageChars: 0}}}".into(), "spec.runtime.limits.maxMessageChars", "between 1 and 1048576"),
            ("{tenantId: a, runtime: {limits: {maxMessageChars: 1048577}}}".into(), "spec.runtime.limits.maxMessageChars", "between 1 and 1048576"),
            ("{tenantId: a, runtime: {limits: {messagesPerSecond: 0}}}".into(), "spec.runtime.limits.messagesPerSecond", "between 1 and 10000"),
            ("{tenantId: a, runtime: {limits: {messagesPerSecond: 10001}}}".into(), "spec.runtime.limits.messagesPerSecond", "between 1 and 10000"),
            ("{tenantId: a, runtime: {limits: {messageBurst: 0}}}".into(), "spec.runtime.limits.messageBurst", "between 1 and 100000"),
            ("{tenantId: a, runtime: {limits: {messageBurst: 100001}}}".into(), "spec.runtime.limits.messageBurst", "between 1 and 100000"),
            ("{tenantId: a, runtime: {limits: {maxSocketsPerUser: 0}}}".into(), "spec.runtime.limits.maxSocketsPerUser", "between 1 and 1000"),
            ("{tenantId: a, runtime: {limits: {maxSocketsPerUser: 1001}}}".into(), "spec.runtime.limits.maxSocketsPerUser", "between 1 and 1000"),
            // Storage.
            ("{tenantId: a, storage: {embedded: {size: 10GB}}}".into(), "spec.storage.embedded.size", "not a valid size"),
            ("{tenantId: a, storage: {embedded: {size: 500m}}}".into(), "spec.storage.embedded.size", "not a valid size"),
            ("{tenantId: a, storage: {embedded: {size: '0'}}}".into(), "spec.storage.embedded.size", "greater than zero"),
            ("{tenantId: a, storage: {embedded: {storageClassName: ''}}}".into(), "spec.storage.embedded.storageClassName", "not a valid object name"),
            ("{tenantId: a, storage: {embedded: {storageClassName: Fast_SSD}}}".into(), "spec.storage.embedded.storageClassName", "not a valid object name"),
            (format!("{{tenantId: a, storage: {{embedded: {{storageClassName: {long_name}}}}}}}"), "spec.storage.embedded.storageClassName", "at most 253"),
            // Endpoint.
            ("{tenantId: a, endpoint: {host: ''}}".into(), "spec.endpoint.host", "not a DNS name"),
            ("{tenantId: a, endpoint: {host: Chat.example}}".into(), "spec.endpoint.host", "not a DNS name"),
            ("{tenantId: a, endpoint: {host: '*.example'}}".into(), "spec.endpoint.host", "not a DNS name"),
            ("{tenantId: a, endpoint: {host: chat..example}}".into(), "spec.endpoint.host", "not a DNS name"),
            (format!("{{tenantId: a, endpoint: {{host: {long_label}.example}}}}"), "spec.endpoint.host", "not a DNS name"),
            (format!("{{tenantId: a, endpoint: {{host: {}}}}}", vec!["a"; 128].join(".")), "spec.endpoint.host", "not a DNS name"),
            ("{tenantId: a, endpoint: {host: 10.0.0.1}}".into(), "spec.endpoint.host", "IP address"),
            ("{tenantId: a, endpoint: {host: h, ingressClassName: ''}}".into(), "spec.endpoint.ingressClassName", "not a valid object name"),
            ("{tenantId: a, endpoint: {host: h, tlsSecretName: chat_tls}}".into(), "spec.endpoint.tlsSecretName", "not a valid object name"),
            (format!("{{tenantId: a, endpoint: {{host: h, tlsSecretName: {long_name}}}}}"), "spec.endpoint.tlsSecretName", "at most 253"),
            // Allowed origins.
            (origins(33), "spec.allowedOrigins", "maximum of 32"),
            ("{tenantId: a, allowedOrigins: ['app.example.com']}".into(), "spec.allowedOrigins[0]", "not an origin"),
            ("{tenantId: a, allowedOrigins: ['ftp://app.example.com']}".into(), "spec.allowedOrigins[0]", "not an origin"),
            ("{tenantId: a, allowedOrigins: ['https://ok.example', 'https://app.example.com/']}".into(), "spec.allowedOrigins[1]", "no path"),
            ("{tenantId: a, allowedOrigins: ['https://app.example.com/chat']}".into(), "spec.allowedOrigins[0]", "no path"),
            ("{tenantId: a, allowedOrigins: ['https://App.example.com']}".into(), "spec.allowedOrigins[0]", "lowercase host"),
            ("{tenantId: a, allowedOrigins: ['https://']}".into(), "spec.allowedOrigins[0]", "not an origin"),
            ("{tenantId: a, allowedOrigins: ['https://user@app.example.com']}".into(), "spec.allowedOrigins[0]", "not an origin"),
            ("{tenantId: a, allowedOrigins: ['https://app.example.com:0']}".into(), "spec.allowedOrigins[0]", "not an origin"),
            ("{tenantId: a, allowedOrigins: ['https://app.example.com:65536']}".into(), "spec.allowedOrigins[0]", "not an origin"),
            ("{tenantId: a, allowedOrigins: ['https://app.example.com:+80']}".into(), "spec.allowedOrigins[0]", "not an origin"),
            ("{tenantId: a, allowedOrigins: ['https://app.example.com:']}".into(), "spec.allowedOrigins[0]", "not an origin"),
            ("{tenantId: a, allowedOrigins: ['https://[::1']}".into(), "spec.allowedOrigins[0]", "not an origin"),
            ("{tenantId: a, allowedOrigins: ['https://app.example.com:443']}".into(), "spec.allowedOrigins[0]", "default port"),
            ("{tenantId: a, allowedOrigins: ['http://app.example.com:80']}".into(), "spec.allowedOrigins[0]", "default port"),
            // Moderation rules, which the runtime's compiler checks. The
            // tests of validate::moderation cover each rule.
            ("{tenantId: a, moderation: {rules: [{name: cards, action: Block, regex: '[0-9'}]}}".into(), "spec.moderation.rules[0].regex", "unclosed"),
            ("{tenantId: a, moderation: {rules: [{name: l, action: Block, links: {allowedDomains: [chotot.example, a_b.example]}}]}}".into(), "spec.moderation.rules[0].links.allowedDomains[1]", "lowercase domain"),
            // Hook, webhooks, templates and extensions, which the runtime's
            // own validation checks. The tests of validate::hooks and
            // validate::templates cover each rule.
            ("{tenantId: a, moderation: {hook: {url: 'ftp://a.example', onFailure: Open}}}".into(), "spec.moderation.hook.url", "http or https"),
            ("{tenantId: a, webhooks: [{name: a, url: 'https://a.example'}, {name: b, url: 'a.example'}]}".into(), "spec.webhooks[1].url", "http:// or https://"),
            ("{tenantId: a, templates: [{id: a, text: 'Hi {{x'}]}".into(), "spec.templates[0].text", "not closed"),
            ("{tenantId: a, extensions: {autoReply: {periodSeconds: 0}}}".into(), "spec.extensions.autoReply.periodSeconds", "between 1 and"),
        ];
        for (spec, field, message) in cases {
            let error = check(&spec).unwrap_err();
            assert_eq!(error.field, field, "{spec}");
            assert!(
                error.message.contains(message),
                "{spec}: {:?} does not contain {message:?}",
                error.message
            );
        }
    }

    #[test]
    fn missing_name_is_invalid() {
        let mut tenant = tenant("{tenantId: a}");
        tenant.metadata.name = None;
        let error = validate(&tenant, &OperatorSettings::default()).unwrap_err();
        assert_eq!(error.field, "metadata.name");
    }

    #[test]
    fn invalid_default_size_is_reported() {
        let settings = OperatorSettings {
            storage_size: "1 GiB".to_owned(),
            ..OperatorSettings::default()
        };
        let error = validate(&tenant("{tenantId: a}"), &settings).unwrap_err();
        assert_eq!(error.field, "spec.storage.embedded.size");
        assert!(
            error.message.contains("operator's default"),
            "{}",
            error.message
        );
    }

    #[test]
    fn error_display_names_field() {
        let error = check("{tenantId: a, runtime: {replicas: 3}}").unwrap_err();
        assert!(error.to_string().starts_with("spec.runtime.replicas: "));
    }
}
