//! Operator-wide defaults that apply to every tenant whose spec leaves a
//! value out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Runtime image of tenants that name none. An operator release pins the
/// runtime release it was tested with.
pub const DEFAULT_RUNTIME_IMAGE: &str = "ghcr.io/parley-dev/chat-runtime:0.1.0";

/// Size of the embedded store's volume when the spec names none.
pub const DEFAULT_STORAGE_SIZE: &str = "1Gi";

/// Defaults the operator was started with.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorSettings {
    /// Image of runtimes whose spec sets no `runtime.image`.
    pub runtime_image: String,
    /// Size of the data volume when the spec sets no
    /// `storage.embedded.size`. It must match the CRD's size pattern.
    pub storage_size: String,
    /// Requests and limits of runtimes whose spec sets no
    /// `runtime.resources`.
    pub runtime_resources: ResourceRequirements,
    /// How long both keys are accepted after a credential rotation starts.
    /// An hour covers the default lifetime of user tokens minted by the
    /// runtime's server API.
    pub rotation_overlap: std::time::Duration,
    /// The ScyllaDB cluster of tenants with ScyllaDB storage. Without it,
    /// such tenants are stalled with a condition that names the cause.
    pub scylla: Option<ScyllaSettings>,
    /// Redis of ScyllaDB tenants whose spec names none. Without it, and
    /// without `spec.runtime.redis`, such a tenant runs one replica.
    pub redis: Option<RedisSettings>,
    /// The operator's own namespace, where `spec.runtime.redis.passwordSecret`
    /// and the default Redis password Secret are looked up.
    pub operator_namespace: String,
}

/// The default Redis, which the runtimes of ScyllaDB tenants use to relay
/// live events between replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`, checked like `spec.runtime.redis.url`.
    pub url: String,
    /// Secret key in `operator_namespace` with the password; `None` when
    /// Redis needs none.
    pub password_secret: Option<crate::crd::SecretKeyReference>,
}

/// Namespace of the operator when none is given, the chart's default.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "parley-system";

/// The operator's connection to ScyllaDB, which runtimes share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaSettings {
    /// Nodes to connect to first, as `host:port`. Runtimes get the same list.
    pub contact_points: Vec<String>,
    /// The datacenter the operator and the runtimes run in.
    pub datacenter: String,
    /// Secret with `username` and `password` keys, for the operator's own
    /// CQL role. Without it the operator connects without authentication.
    pub credentials_secret: Option<String>,
    /// Namespace of `credentials_secret`: the operator's own.
    pub credentials_namespace: String,
    /// PEM certificate authorities of the node certificates. Without it the
    /// connections are plain TCP.
    pub tls_ca_pem: Option<String>,
    /// Replication factor of the operator's own keyspace in `datacenter`.
    pub operator_replication_factor: u32,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        Self {
            runtime_image: DEFAULT_RUNTIME_IMAGE.to_owned(),
            storage_size: DEFAULT_STORAGE_SIZE.to_owned(),
            runtime_resources: default_runtime_resources(),
            rotation_overlap: std::time::Duration::from_secs(3600),
            scylla: None,
            redis: None,
            operator_namespace: DEFAULT_OPERATOR_NAMESPACE.to_owned(),
        }
    }
}

/// Requests CPU and memory, and limits memory only. A CPU limit would
/// throttle the runtime during message bursts even on an idle node, while a
/// memory limit stops one tenant from exhausting the node.
fn default_runtime_resources() -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), Quantity((*value).to_owned())))
            .collect::<BTreeMap<_, _>>()
    };
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "100m"), ("memory", "128Mi")])),
        limits: Some(quantities(&[("memory", "512Mi")])),
        claims: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_image_is_pinned_release() {
        let settings = OperatorSettings::default();
        assert_eq!(
            settings.runtime_image,
            "ghcr.io/parley-dev/chat-runtime:0.1.0"
        );
    }

    #[test]
    fn default_storage_is_one_gibibyte() {
        assert_eq!(OperatorSettings::default().storage_size, "1Gi");
    }

    #[test]
    fn default_resources_limit_memory_only() {
        let resources = OperatorSettings::default().runtime_resources;
        let requests = resources.requests.unwrap();
        let limits = resources.limits.unwrap();
        assert_eq!(requests["cpu"], Quantity("100m".to_owned()));
        assert_eq!(requests["memory"], Quantity("128Mi".to_owned()));
        assert_eq!(limits["memory"], Quantity("512Mi".to_owned()));
        assert!(!limits.contains_key("cpu"));
    }
}
