//! The ResourceQuota of the tenant namespace.
//!
//! It bounds what the tenant namespace can hold if something other than
//! the operator creates objects there, such as a person with access to the
//! namespace or a compromised pod with API access. The operator's own
//! objects use a quarter of the pods, half of the claims and storage, and
//! one Service.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::object_meta;
use crate::naming;
use crate::validate::ValidTenant;

/// Claims the namespace may hold: the data claim and one more of the same
/// size, such as a copy being restored from a backup.
const MAX_CLAIMS: u32 = 2;

/// Builds the namespace's ResourceQuota. Storage requests are capped at
/// [`MAX_CLAIMS`] times the data claim's size, so both claims fit. The
/// quota follows the spec's size, so growing the data volume also grows
/// the cap.
pub fn quota(valid: &ValidTenant) -> ResourceQuota {
    let storage = valid.storage_size.times(MAX_CLAIMS);
    let hard = [
        // The runtime uses one pod, because Recreate never runs two. The
        // rest leaves room for a debugging pod or a backup job.
        ("pods", "4".to_owned()),
        ("persistentvolumeclaims", MAX_CLAIMS.to_string()),
        ("requests.storage", storage),
        ("services", "4".to_owned()),
        // The Ingress is the only way in from outside the cluster.
        ("services.loadbalancers", "0".to_owned()),
        ("services.nodeports", "0".to_owned()),
    ];
    let hard: BTreeMap<String, Quantity> = hard
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Quantity(value)))
        .collect();
    ResourceQuota {
        metadata: object_meta(valid, naming::QUOTA),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::{valid_tenant, valid_tenant_from};

    fn hard(quota: &ResourceQuota) -> BTreeMap<String, String> {
        let hard = quota.spec.as_ref().unwrap().hard.as_ref().unwrap();
        hard.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()
    }

    #[test]
    fn quota_caps_objects() {
        let quota = quota(&valid_tenant());
        let hard = hard(&quota);
        assert_eq!(hard["pods"], "4");
        assert_eq!(hard["persistentvolumeclaims"], "2");
        assert_eq!(hard["services"], "4");
        assert_eq!(hard["services.loadbalancers"], "0");
        assert_eq!(hard["services.nodeports"], "0");
        assert_eq!(hard.len(), 6);
    }

    #[test]
    fn quota_storage_is_twice_claim() {
        assert_eq!(hard(&quota(&valid_tenant()))["requests.storage"], "2Gi");
        let valid = valid_tenant_from("{tenantId: chotot, storage: {embedded: {size: 7.5Gi}}}");
        assert_eq!(hard(&quota(&valid))["requests.storage"], "15Gi");
    }

    #[test]
    fn quota_metadata() {
        let quota = quota(&valid_tenant());
        assert_eq!(quota.metadata.name.as_deref(), Some("chat-tenant-quota"));
        assert_eq!(quota.metadata.namespace.as_deref(), Some("parley-chotot"));
        assert_eq!(quota.metadata.labels, Some(naming::labels("chotot")));
    }
}
