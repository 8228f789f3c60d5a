//! Which of the kinds the operator manages the API server serves, checked
//! once at start. A kind the server lacks (an old or trimmed cluster) is
//! skipped and reported in each tenant's status instead of failing every
//! reconcile.

use std::collections::BTreeSet;

use kube::Client;

/// A kind by API version (`v1`, `apps/v1`) and resource plural.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManagedKind {
    pub api_version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
}

const fn managed(
    api_version: &'static str,
    plural: &'static str,
    kind: &'static str,
) -> ManagedKind {
    ManagedKind {
        api_version,
        plural,
        kind,
    }
}

/// Every kind the operator reads or writes. It uses policy/v1 and
/// autoscaling/v2 only, the versions that k8s-openapi's `v1_33` feature
/// provides: Kubernetes serves them from 1.21 and 1.23 on, and removed the
/// beta versions in 1.25 and 1.26.
pub const MANAGED_KINDS: [ManagedKind; 14] = [
    managed("v1", "namespaces", "Namespace"),
    managed("v1", "secrets", "Secret"),
    managed("v1", "configmaps", "ConfigMap"),
    managed("v1", "serviceaccounts", "ServiceAccount"),
    managed("v1", "services", "Service"),
    managed("v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    managed("v1", "resourcequotas", "ResourceQuota"),
    managed("apps/v1", "deployments", "Deployment"),
    managed("networking.k8s.io/v1", "ingresses", "Ingress"),
    managed("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy"),
    managed("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    managed(
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
    ),
    managed("coordination.k8s.io/v1", "leases", "Lease"),
    managed("v1", "events", "Event"),
];

/// Kinds whose absence stops a tenant: without them it cannot run at all.
pub const REQUIRED_KINDS: [&str; 7] = [
    "Namespace",
    "Secret",
    "ConfigMap",
    "ServiceAccount",
    "Service",
    "PersistentVolumeClaim",
    "Deployment",
];

/// Kinds that only tenants with more than one replica get. A server that
/// lacks one is reported only in the status of tenants that need it.
pub const REPLICA_KINDS: [&str; 2] = ["PodDisruptionBudget", "HorizontalPodAutoscaler"];

/// Returns the managed kinds missing from `served`, a set of
/// `(api_version, plural)` pairs.
pub fn missing_kinds(served: &BTreeSet<(String, String)>) -> Vec<ManagedKind> {
    MANAGED_KINDS
        .iter()
        .filter(|kind| !served.contains(&(kind.api_version.to_owned(), kind.plural.to_owned())))
        .copied()
        .collect()
}

/// Asks the API server which managed kinds it serves and returns the
/// missing ones.
pub async fn check(client: &Client) -> Result<Vec<ManagedKind>, kube::Error> {
    let api_versions: BTreeSet<&str> = MANAGED_KINDS.iter().map(|kind| kind.api_version).collect();
    let mut served = BTreeSet::new();
    for api_version in api_versions {
        let resources = if api_version.contains('/') {
            client.list_api_group_resources(api_version).await
        } else {
            client.list_core_api_resources(api_version).await
        };
        match resources {
            Ok(list) => served.extend(
                list.resources
                    .into_iter()
                    .map(|resource| (api_version.to_owned(), resource.name)),
            ),
            // The server returns 404 for a group version it does not serve.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(missing_kinds(&served))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_kinds_not_served() {
        let served: BTreeSet<(String, String)> = MANAGED_KINDS
            .iter()
            .filter(|kind| kind.kind != "Ingress")
            .map(|kind| (kind.api_version.to_owned(), kind.plural.to_owned()))
            .collect();
        let missing = missing_kinds(&served);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].kind, "Ingress");
    }

    #[test]
    fn nothing_missing_when_all_served() {
        let served: BTreeSet<(String, String)> = MANAGED_KINDS
            .iter()
            .map(|kind| (kind.api_version.to_owned(), kind.plural.to_owned()))
            .collect();
        assert!(missing_kinds(&served).is_empty());
    }
}
