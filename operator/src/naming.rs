//! Names and labels of everything the operator creates for a tenant.
//!
//! Each tenant gets its own namespace, `parley-<tenantId>`. A tenant id is a
//! DNS label of at most 40 characters, so the name stays within the
//! 63-character limit of namespace names. The id alone identifies the
//! namespace, so a new ChatTenant with the tenantId of a retained namespace
//! takes that namespace over. Inside the namespace, object names are fixed,
//! because each namespace contains exactly one runtime.

use std::collections::BTreeMap;

/// Prefix of every tenant namespace.
pub const NAMESPACE_PREFIX: &str = "parley-";

/// Field manager of the operator's server-side apply requests.
pub const FIELD_MANAGER: &str = "parley-operator";

/// Name of the ServiceAccount, ConfigMap, Deployment, Service, Ingress,
/// PodDisruptionBudget and HorizontalPodAutoscaler, and of the runtime
/// container.
pub const RUNTIME: &str = "chat-runtime";
/// Secret with the tenant's API keys.
pub const CREDENTIALS_SECRET: &str = "chat-runtime-credentials";
/// PersistentVolumeClaim of the embedded store.
pub const DATA_CLAIM: &str = "chat-runtime-data";
/// NetworkPolicy that denies all ingress and egress in the namespace.
pub const DEFAULT_DENY_POLICY: &str = "chat-runtime-default-deny";
/// NetworkPolicy that admits traffic to the runtime's HTTP port.
pub const ALLOW_INGRESS_POLICY: &str = "chat-runtime-allow-ingress";
/// NetworkPolicy that lets pods resolve names through the cluster DNS.
pub const ALLOW_DNS_POLICY: &str = "chat-runtime-allow-dns";
/// Secret with the tenant's CQL role and password, for ScyllaDB storage.
pub const SCYLLA_SECRET: &str = "chat-runtime-scylla";
/// NetworkPolicy that lets the runtime reach ScyllaDB.
pub const ALLOW_SCYLLA_POLICY: &str = "chat-runtime-allow-scylla";
/// Secret with the Redis password, copied from the operator's namespace.
pub const REDIS_SECRET: &str = "chat-runtime-redis";
/// NetworkPolicy that lets the runtime reach Redis.
pub const ALLOW_REDIS_POLICY: &str = "chat-runtime-allow-redis";
/// ResourceQuota of the tenant namespace.
pub const QUOTA: &str = "chat-tenant-quota";

pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const TENANT_ID_LABEL: &str = "parley.dev/tenant-id";

/// Pod Security Standard enforced in tenant namespaces. `restricted` is
/// the strictest level, and the runtime needs nothing that it forbids.
const POD_SECURITY_LEVEL: &str = "restricted";
const POD_SECURITY_MODES: [&str; 3] = ["enforce", "warn", "audit"];

/// Returns the namespace of the tenant `tenant_id`.
pub fn namespace(tenant_id: &str) -> String {
    format!("{NAMESPACE_PREFIX}{tenant_id}")
}

/// Returns the labels that select the tenant's runtime pods. They never
/// change for a tenant, because a Deployment's selector is immutable.
pub fn selector_labels(tenant_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), RUNTIME.to_owned()),
        (INSTANCE_LABEL.to_owned(), tenant_id.to_owned()),
    ])
}

/// Returns the labels of every object the operator creates for a tenant.
pub fn labels(tenant_id: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(tenant_id);
    labels.insert(MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned());
    labels.insert(TENANT_ID_LABEL.to_owned(), tenant_id.to_owned());
    labels
}

/// Returns the labels of the tenant namespace: the common labels plus the
/// Pod Security admission labels, which check pods against the policy
/// version of the running Kubernetes release.
pub fn namespace_labels(tenant_id: &str) -> BTreeMap<String, String> {
    let mut labels = labels(tenant_id);
    for mode in POD_SECURITY_MODES {
        let key = format!("pod-security.kubernetes.io/{mode}");
        labels.insert(format!("{key}-version"), "latest".to_owned());
        labels.insert(key, POD_SECURITY_LEVEL.to_owned());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_has_prefix() {
        assert_eq!(namespace("chotot"), "parley-chotot");
    }

    #[test]
    fn longest_namespace_fits_limit() {
        let longest_tenant_id = "a".repeat(40);
        assert!(namespace(&longest_tenant_id).len() <= 63);
    }

    #[test]
    fn labels_name_tenant_and_manager() {
        let labels = labels("chotot");
        assert_eq!(labels[NAME_LABEL], "chat-runtime");
        assert_eq!(labels[INSTANCE_LABEL], "chotot");
        assert_eq!(labels[MANAGED_BY_LABEL], "parley-operator");
        assert_eq!(labels[TENANT_ID_LABEL], "chotot");
        assert_eq!(labels.len(), 4);
    }

    #[test]
    fn selector_is_subset_of_labels() {
        let labels = labels("chotot");
        for (key, value) in selector_labels("chotot") {
            assert_eq!(labels.get(&key), Some(&value), "{key}");
        }
    }

    #[test]
    fn namespace_labels_enforce_restricted() {
        let labels = namespace_labels("chotot");
        for mode in ["enforce", "warn", "audit"] {
            let key = format!("pod-security.kubernetes.io/{mode}");
            assert_eq!(labels[&key], "restricted", "{key}");
            assert_eq!(labels[&format!("{key}-version")], "latest", "{key}");
        }
        assert_eq!(labels[TENANT_ID_LABEL], "chotot");
    }
}
