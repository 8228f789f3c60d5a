//! The tenant namespace, which contains every other object of the tenant.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::naming;
use crate::validate::ValidTenant;

/// Builds the tenant namespace, owned by the ChatTenant `owner`.
///
/// The owner reference lets the garbage collector delete the namespace,
/// and with it everything the tenant has, when the ChatTenant is deleted.
/// That is the `Delete` deletion policy. For `Retain`, the reconciler must
/// remove the reference before it lets the ChatTenant's deletion finish.
pub fn namespace(valid: &ValidTenant, owner: &OwnerReference) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(valid.namespace.clone()),
            labels: Some(naming::namespace_labels(&valid.tenant_id)),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::{owner, valid_tenant};

    #[test]
    fn namespace_is_named_after_tenant() {
        let namespace = namespace(&valid_tenant(), &owner());
        assert_eq!(namespace.metadata.name.as_deref(), Some("parley-chotot"));
        assert_eq!(namespace.metadata.namespace, None);
    }

    #[test]
    fn namespace_enforces_restricted_pods() {
        let namespace = namespace(&valid_tenant(), &owner());
        let labels = namespace.metadata.labels.unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(
            labels["pod-security.kubernetes.io/enforce-version"],
            "latest"
        );
        assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
        assert_eq!(labels["pod-security.kubernetes.io/audit"], "restricted");
        assert_eq!(labels["parley.dev/tenant-id"], "chotot");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "parley-operator");
    }

    #[test]
    fn namespace_is_owned_by_tenant() {
        let namespace = namespace(&valid_tenant(), &owner());
        let owners = namespace.metadata.owner_references.unwrap();
        assert_eq!(owners, vec![owner()]);
        assert_eq!(owners[0].kind, "ChatTenant");
        assert_eq!(owners[0].controller, Some(true));
    }
}
