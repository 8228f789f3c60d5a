//! Rules for running more than one runtime replica: the Redis that relays
//! live events between replicas, and the autoscaler. Only tenants with
//! ScyllaDB storage can run more than one replica.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{InvalidSpec, MAX_DNS_SUBDOMAIN_CHARS, MAX_REPLICAS, invalid, validate_object_name};
use crate::crd::{AutoscalingSpec, RedisSpec, SecretKeyReference};
use crate::settings::OperatorSettings;

/// Minimum pods of an autoscaled runtime when the spec names none. With one
/// pod, the PodDisruptionBudget would let a node drain evict the only pod.
pub const DEFAULT_MIN_REPLICAS: i32 = 2;
/// CPU target of the autoscaler when the spec names none, the default of
/// the HorizontalPodAutoscaler API.
pub const DEFAULT_TARGET_CPU_UTILIZATION: i32 = 80;
const MAX_TARGET_CPU_UTILIZATION: i32 = 100;
const MAX_REDIS_URL_CHARS: usize = 512;

/// A checked Redis for the relay between replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRedis {
    /// The URL as written, which the runtime's configuration gets.
    pub url: String,
    pub address: RedisAddress,
    /// Source of the password; `None` when Redis needs none.
    pub password: Option<RedisPassword>,
}

/// Host and port of a Redis URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAddress {
    /// A DNS name, an IPv4 address, or an IPv6 address in brackets.
    pub host: String,
    /// The host as an IP address, when it is one.
    pub ip: Option<IpAddr>,
    pub port: u16,
}

/// A Secret key with the Redis password, in the operator's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisPassword {
    pub namespace: String,
    pub name: String,
    pub key: String,
    /// True when the tenant's spec names the Secret. Such a Secret must
    /// carry [`REDIS_PASSWORD_LABEL`], so a tenant cannot have any other
    /// Secret of the operator's namespace copied into its own namespace.
    pub named_by_spec: bool,
}

/// Label, with the value `"true"`, that marks a Secret of the operator's
/// namespace as one a ChatTenant may name as its Redis password.
pub const REDIS_PASSWORD_LABEL: &str = "parley.dev/redis-password";

/// A checked autoscaler, with its defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidAutoscaling {
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub target_cpu_utilization_percentage: i32,
}

/// Returns the Redis of the tenant: the spec's, or the operator's default
/// for a tenant with ScyllaDB storage. Tenants with the embedded store run
/// one replica, which needs no relay, so they get none and may not name one.
pub fn validate_redis(
    spec: Option<&RedisSpec>,
    settings: &OperatorSettings,
    scylla: bool,
) -> Result<Option<ValidRedis>, InvalidSpec> {
    match (spec, &settings.redis) {
        (Some(_), _) if !scylla => Err(invalid(
            "spec.runtime.redis",
            "is only used with ScyllaDB storage: the embedded store runs one replica, which needs no relay",
        )),
        (Some(redis), _) => {
            let address = parse_redis_url(&redis.url)
                .map_err(|message| invalid("spec.runtime.redis.url", message))?;
            let password = match &redis.password_secret {
                Some(secret) => Some(validate_password_secret(secret, settings)?),
                None => None,
            };
            Ok(Some(ValidRedis {
                url: redis.url.clone(),
                address,
                password,
            }))
        }
        (None, Some(default)) if scylla => {
            let address = parse_redis_url(&default.url).map_err(|message| {
                invalid(
                    "spec.runtime.redis.url",
                    format!(
                        "is not set, and the operator's default (--redis-url) is invalid: {message}"
                    ),
                )
            })?;
            let password = default
                .password_secret
                .as_ref()
                .map(|secret| RedisPassword {
                    namespace: settings.operator_namespace.clone(),
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    named_by_spec: false,
                });
            Ok(Some(ValidRedis {
                url: default.url.clone(),
                address,
                password,
            }))
        }
        (None, _) => Ok(None),
    }
}

fn validate_password_secret(
    secret: &SecretKeyReference,
    settings: &OperatorSettings,
) -> Result<RedisPassword, InvalidSpec> {
    validate_object_name("spec.runtime.redis.passwordSecret.name", &secret.name)?;
    check_secret_key(&secret.key)
        .map_err(|message| invalid("spec.runtime.redis.passwordSecret.key", message))?;
    Ok(RedisPassword {
        namespace: settings.operator_namespace.clone(),
        name: secret.name.clone(),
        key: secret.key.clone(),
        named_by_spec: true,
    })
}

/// Checks a Secret data key against the API server's rule: 1 to 253
/// letters, digits, '-', '_' or '.'.
pub fn check_secret_key(key: &str) -> Result<(), String> {
    let valid = (1..=MAX_DNS_SUBDOMAIN_CHARS).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a valid Secret key: use 1 to {MAX_DNS_SUBDOMAIN_CHARS} letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Parses `redis://host:port[/db]`, the form the runtime accepts without
/// TLS. A user or password in the URL is rejected, because the URL is
/// written into the runtime's ConfigMap, which is no place for a secret.
pub fn parse_redis_url(url: &str) -> Result<RedisAddress, String> {
    let malformed = || {
        format!(
            "{url:?} is not a Redis URL: expected redis://host:port with an optional /database number, such as redis://redis.parley-system:6379/0"
        )
    };
    if url.chars().count() > MAX_REDIS_URL_CHARS {
        return Err(format!(
            "must be at most {MAX_REDIS_URL_CHARS} characters long"
        ));
    }

    let Some(rest) = url.strip_prefix("redis://") else {
        return Err(format!(
            "{url:?} must start with redis://, because the runtime supports neither TLS (rediss://) nor Unix sockets"
        ));
    };
    if rest.contains(['?', '#']) {
        return Err(malformed());
    }

    let (authority, database) = match rest.split_once('/') {
        Some((authority, database)) => (authority, Some(database)),
        None => (rest, None),
    };
    if authority.contains('@') {
        return Err(format!(
            "{url:?} contains a user or password, which would be written into the runtime's ConfigMap: put the password in a Secret and name it in passwordSecret"
        ));
    }
    if let Some(database) = database
        && (database.is_empty() || database.parse::<u32>().is_err() || !is_digits(database))
    {
        return Err(malformed());
    }

    let (host, port) = super::split_host_port(authority).ok_or_else(malformed)?;
    let Some(port) = port else {
        return Err(format!(
            "{url:?} names no port: add one, such as :6379, so that the NetworkPolicy can allow it"
        ));
    };
    let port = parse_port(port).ok_or_else(malformed)?;
    let ip = parse_host(host).ok_or_else(malformed)?;
    Ok(RedisAddress {
        host: host.to_owned(),
        ip,
        port,
    })
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn parse_port(port: &str) -> Option<u16> {
    if !is_digits(port) || port.starts_with('0') {
        return None;
    }
    port.parse::<u16>().ok().filter(|number| *number > 0)
}

/// Returns `Some(None)` for a DNS name, `Some(Some(ip))` for an IP
/// address, and `None` for anything else.
fn parse_host(host: &str) -> Option<Option<IpAddr>> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| Some(IpAddr::V6(ip)));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(Some(IpAddr::V4(ip)));
    }
    (host.len() <= MAX_DNS_SUBDOMAIN_CHARS && super::is_dns_name(host)).then_some(None)
}

/// Checks the autoscaler. It replaces `replicas`, and like any replica
/// count above one it needs ScyllaDB storage and Redis.
pub fn validate_autoscaling(
    autoscaling: Option<AutoscalingSpec>,
    replicas_set: bool,
    scylla: bool,
    redis: bool,
) -> Result<Option<ValidAutoscaling>, InvalidSpec> {
    let Some(autoscaling) = autoscaling else {
        return Ok(None);
    };
    let field = "spec.runtime.autoscaling";
    if replicas_set {
        return Err(invalid(
            field,
            "set either spec.runtime.replicas or spec.runtime.autoscaling, not both: the autoscaler sets the number of replicas",
        ));
    }
    if !scylla {
        return Err(invalid(
            field,
            "is not supported: the embedded store allows one replica, because its SQLite file sits on a ReadWriteOnce volume that only one pod can write",
        ));
    }
    if !redis {
        return Err(invalid(
            field,
            "needs Redis to relay live events between replicas: set spec.runtime.redis, or start the operator with --redis-url",
        ));
    }

    let min_replicas = autoscaling.min_replicas.unwrap_or(DEFAULT_MIN_REPLICAS);
    check_range(&format!("{field}.minReplicas"), min_replicas, MAX_REPLICAS)?;
    let max_replicas = autoscaling.max_replicas;
    check_range(&format!("{field}.maxReplicas"), max_replicas, MAX_REPLICAS)?;
    if max_replicas < min_replicas {
        return Err(invalid(
            format!("{field}.maxReplicas"),
            format!("{max_replicas} is less than minReplicas ({min_replicas})"),
        ));
    }
    let target = autoscaling
        .target_cpu_utilization_percentage
        .unwrap_or(DEFAULT_TARGET_CPU_UTILIZATION);
    check_range(
        &format!("{field}.targetCPUUtilizationPercentage"),
        target,
        MAX_TARGET_CPU_UTILIZATION,
    )?;
    Ok(Some(ValidAutoscaling {
        min_replicas,
        max_replicas,
        target_cpu_utilization_percentage: target,
    }))
}

fn check_range(field: &str, value: i32, max: i32) -> Result<(), InvalidSpec> {
    if (1..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value} is out of range: must be between 1 and {max}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_accepts_host_port_and_database() {
        let cases = [
            (
                "redis://redis.parley-system:6379",
                "redis.parley-system",
                None,
                6379,
            ),
            (
                "redis://10.0.0.7:6380/2",
                "10.0.0.7",
                Some("10.0.0.7"),
                6380,
            ),
            (
                "redis://[fd00::7]:6379/0",
                "[fd00::7]",
                Some("fd00::7"),
                6379,
            ),
            ("redis://r:65535", "r", None, 65535),
        ];
        for (url, host, ip, port) in cases {
            let address = parse_redis_url(url).unwrap();
            assert_eq!(address.host, host, "{url}");
            assert_eq!(address.ip, ip.map(|ip| ip.parse().unwrap()), "{url}");
            assert_eq!(address.port, port, "{url}");
        }
    }

    #[test]
    fn redis_url_rejects_other_forms() {
        let cases = [
            ("rediss://redis:6379", "must start with redis://"),
            ("unix:///run/redis.sock", "must start with redis://"),
            ("redis:6379", "must start with redis://"),
            ("redis://redis", "names no port"),
            ("redis://:secret@redis:6379", "contains a user or password"),
            ("redis://user@redis:6379", "contains a user or password"),
            ("redis://redis:0", "not a Redis URL"),
            ("redis://redis:65536", "not a Redis URL"),
            ("redis://redis:06379", "not a Redis URL"),
            ("redis://redis:+80", "not a Redis URL"),
            ("redis://redis:", "not a Redis URL"),
            ("redis://:6379", "not a Redis URL"),
            ("redis://Redis:6379", "not a Redis URL"),
            ("redis://redis:6379/", "not a Redis URL"),
            ("redis://redis:6379/db", "not a Redis URL"),
            ("redis://redis:6379/0/1", "not a Redis URL"),
            ("redis://redis:6379?timeout=1", "not a Redis URL"),
            ("redis://[fd00::7:6379", "not a Redis URL"),
        ];
        for (url, message) in cases {
            let error = parse_redis_url(url).unwrap_err();
            assert!(error.contains(message), "{url}: {error}");
        }
        let long = format!("redis://{}:6379", "r".repeat(600));
        assert!(parse_redis_url(&long).unwrap_err().contains("at most 512"));
    }

    #[test]
    fn secret_key_rule() {
        assert!(check_secret_key("redis-password_1.txt").is_ok());
        assert!(check_secret_key("").is_err());
        assert!(check_secret_key("a/b").is_err());
        assert!(check_secret_key(&"k".repeat(254)).is_err());
    }
}
