//! Objects of a tenant that runs more than one runtime replica: the
//! PodDisruptionBudget and the HorizontalPodAutoscaler.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::object_meta;
use crate::naming;
use crate::validate::ValidTenant;

/// Builds the PodDisruptionBudget of a tenant with more than one replica or
/// with an autoscaler, and returns `None` otherwise: a budget for a single
/// pod would either block node drains or protect nothing.
///
/// It sets `maxUnavailable: 1` rather than `minAvailable: replicas - 1`.
/// Both allow one voluntary eviction at a time, but an autoscaler changes
/// the replica count without the operator, and a `minAvailable` computed
/// from the spec would then be wrong. `maxUnavailable` holds for any count.
pub fn disruption_budget(valid: &ValidTenant) -> Option<PodDisruptionBudget> {
    if valid.effective.replicas <= 1 && valid.autoscaling.is_none() {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: object_meta(valid, naming::RUNTIME),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(naming::selector_labels(&valid.tenant_id)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// Builds the HorizontalPodAutoscaler (autoscaling/v2) of the runtime
/// Deployment when the spec asks for autoscaling. It scales on the pods'
/// average CPU use relative to their CPU request.
pub fn autoscaler(valid: &ValidTenant) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = valid.autoscaling?;
    let cpu = MetricSpec {
        type_: "Resource".to_owned(),
        resource: Some(ResourceMetricSource {
            name: "cpu".to_owned(),
            target: MetricTarget {
                type_: "Utilization".to_owned(),
                average_utilization: Some(autoscaling.target_cpu_utilization_percentage),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    Some(HorizontalPodAutoscaler {
        metadata: object_meta(valid, naming::RUNTIME),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: naming::RUNTIME.to_owned(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![cpu]),
            behavior: None,
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::{SCYLLA_SPEC, valid_tenant, valid_tenant_from};

    const REDIS: &str = "redis: {url: 'redis://redis:6379'}";
    const STORAGE: &str = "storage: {scylla: {replication: {dc1: 3}}}";

    fn scylla_tenant(runtime: &str) -> ValidTenant {
        valid_tenant_from(&format!(
            "{{tenantId: chotot, runtime: {{{runtime}}}, {STORAGE}}}"
        ))
    }

    #[test]
    fn no_budget_for_one_replica() {
        assert_eq!(disruption_budget(&valid_tenant()), None);
        assert_eq!(disruption_budget(&valid_tenant_from(SCYLLA_SPEC)), None);
        let without_redis = scylla_tenant("replicas: 3");
        assert_eq!(without_redis.effective.replicas, 1);
        assert_eq!(disruption_budget(&without_redis), None);
        assert_eq!(
            disruption_budget(&scylla_tenant(&format!("replicas: 1, {REDIS}"))),
            None
        );
    }

    #[test]
    fn budget_allows_one_unavailable_pod() {
        let budget = disruption_budget(&scylla_tenant(&format!("replicas: 3, {REDIS}"))).unwrap();
        assert_eq!(budget.metadata.name.as_deref(), Some("chat-runtime"));
        assert_eq!(budget.metadata.namespace.as_deref(), Some("parley-chotot"));
        let spec = budget.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.selector.unwrap().match_labels,
            Some(naming::selector_labels("chotot"))
        );
    }

    #[test]
    fn budget_with_autoscaling_from_one() {
        let valid = scylla_tenant(&format!(
            "autoscaling: {{minReplicas: 1, maxReplicas: 4}}, {REDIS}"
        ));
        assert_eq!(valid.effective.replicas, 1);
        assert!(disruption_budget(&valid).is_some());
    }

    #[test]
    fn autoscaler_targets_deployment_cpu() {
        assert_eq!(
            autoscaler(&scylla_tenant(&format!("replicas: 3, {REDIS}"))),
            None
        );
        let valid = scylla_tenant(&format!(
            "autoscaling: {{minReplicas: 3, maxReplicas: 9, targetCPUUtilizationPercentage: 60}}, {REDIS}"
        ));
        let autoscaler = autoscaler(&valid).unwrap();
        assert_eq!(autoscaler.metadata.name.as_deref(), Some("chat-runtime"));
        let spec = autoscaler.spec.unwrap();
        assert_eq!(
            spec.scale_target_ref.api_version.as_deref(),
            Some("apps/v1")
        );
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "chat-runtime");
        assert_eq!(spec.min_replicas, Some(3));
        assert_eq!(spec.max_replicas, 9);
        let metrics = spec.metrics.unwrap();
        assert_eq!(metrics.len(), 1);
        assert_eq!(metrics[0].type_, "Resource");
        let resource = metrics[0].resource.as_ref().unwrap();
        assert_eq!(resource.name, "cpu");
        assert_eq!(resource.target.type_, "Utilization");
        assert_eq!(resource.target.average_utilization, Some(60));
    }
}
