//! Objects and settings of a tenant whose runtime replicas share a Redis:
//! the Secret with the Redis password, the egress policy to Redis, and the
//! runtime's `server.redis` section.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::{layout, object_meta};
use crate::naming;
use crate::validate::{ValidRedis, ValidTenant};

/// Secret key, and so file name under [`layout::REDIS_DIR`], of the
/// password.
pub const PASSWORD_KEY: &str = "password";

/// The `server.redis` section of the runtime's configuration file. The
/// runtime's default channel prefix is kept, because each tenant has a
/// namespace and runtime of its own and the channel names contain the
/// tenant id.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_file: Option<String>,
}

/// Returns the runtime's `server.redis` section. The password is read from
/// the mounted Secret, so the ConfigMap contains none.
pub fn redis_config(redis: &ValidRedis) -> RedisConfig {
    RedisConfig {
        url: redis.url.clone(),
        password_file: redis
            .password
            .as_ref()
            .map(|_| format!("{}/{PASSWORD_KEY}", layout::REDIS_DIR)),
    }
}

/// Builds the Secret with the Redis password, which the operator copies
/// from the Secret named in the spec or in its settings, because a pod can
/// mount Secrets of its own namespace only.
pub fn secret(valid: &ValidTenant, password: &str) -> Secret {
    Secret {
        metadata: object_meta(valid, naming::REDIS_SECRET),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            PASSWORD_KEY.to_owned(),
            ByteString(password.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// Builds the NetworkPolicy that lets the runtime pods connect to the
/// Redis port. A host given as an IP address limits the rule to that
/// address. A DNS name can resolve to any address, so the rule then allows
/// the port to every destination, as the CQL rule does.
pub fn egress_policy(valid: &ValidTenant, redis: &ValidRedis) -> NetworkPolicy {
    let to = redis.address.ip.map(|ip| {
        let cidr = match ip {
            IpAddr::V4(ip) => format!("{ip}/32"),
            IpAddr::V6(ip) => format!("{ip}/128"),
        };
        vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr, except: None }),
            ..NetworkPolicyPeer::default()
        }]
    });
    NetworkPolicy {
        metadata: object_meta(valid, naming::ALLOW_REDIS_POLICY),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(naming::selector_labels(&valid.tenant_id)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Egress".to_owned()]),
            ingress: None,
            egress: Some(vec![NetworkPolicyEgressRule {
                to,
                ports: Some(vec![NetworkPolicyPort {
                    protocol: Some("TCP".to_owned()),
                    port: Some(IntOrString::Int(i32::from(redis.address.port))),
                    end_port: None,
                }]),
            }]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::valid_tenant_from;

    fn redis_tenant(url: &str, password: bool) -> ValidTenant {
        let secret = if password {
            ", passwordSecret: {name: redis, key: pw}"
        } else {
            ""
        };
        valid_tenant_from(&format!(
            "{{tenantId: chotot, runtime: {{replicas: 2, redis: {{url: '{url}'{secret}}}}}, storage: {{scylla: {{replication: {{dc1: 3}}}}}}}}"
        ))
    }

    fn rule(policy: &NetworkPolicy) -> NetworkPolicyEgressRule {
        let rules = policy.spec.clone().unwrap().egress.unwrap();
        assert_eq!(rules.len(), 1);
        rules[0].clone()
    }

    #[test]
    fn config_names_password_file() {
        let valid = redis_tenant("redis://redis.example:6379/1", true);
        let config = redis_config(valid.redis.as_ref().unwrap());
        assert_eq!(
            config,
            RedisConfig {
                url: "redis://redis.example:6379/1".to_owned(),
                password_file: Some("/etc/parley/redis/password".to_owned()),
            }
        );
        let valid = redis_tenant("redis://redis.example:6379", false);
        assert_eq!(
            redis_config(valid.redis.as_ref().unwrap()).password_file,
            None
        );
    }

    #[test]
    fn secret_holds_password() {
        let valid = redis_tenant("redis://redis.example:6379", true);
        let secret = secret(&valid, "s3cret");
        assert_eq!(secret.metadata.name.as_deref(), Some("chat-runtime-redis"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("parley-chotot"));
        let data = secret.data.unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data["password"].0, b"s3cret");
    }

    #[test]
    fn policy_allows_redis_port_from_runtime_pods() {
        let valid = redis_tenant("redis://redis.example:6380", false);
        let policy = egress_policy(&valid, valid.redis.as_ref().unwrap());
        assert_eq!(
            policy.metadata.name.as_deref(),
            Some("chat-runtime-allow-redis")
        );
        let spec = policy.spec.clone().unwrap();
        assert_eq!(spec.policy_types, Some(vec!["Egress".to_owned()]));
        assert_eq!(
            spec.pod_selector.unwrap().match_labels,
            Some(naming::selector_labels("chotot"))
        );
        let rule = rule(&policy);
        assert_eq!(rule.to, None, "a DNS name can resolve to any address");
        let ports = rule.ports.unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(ports[0].port, Some(IntOrString::Int(6380)));
    }

    #[test]
    fn policy_limits_ip_host_to_its_address() {
        for (url, cidr) in [
            ("redis://10.0.0.7:6379", "10.0.0.7/32"),
            ("redis://[fd00::7]:6379", "fd00::7/128"),
        ] {
            let valid = redis_tenant(url, false);
            let rule = rule(&egress_policy(&valid, valid.redis.as_ref().unwrap()));
            let peers = rule.to.unwrap();
            assert_eq!(peers.len(), 1, "{url}");
            assert_eq!(peers[0].ip_block.as_ref().unwrap().cidr, cidr, "{url}");
            assert_eq!(peers[0].pod_selector, None, "{url}");
        }
    }
}
