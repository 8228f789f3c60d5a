//! Status conditions of a ChatTenant, computed from what one reconcile saw.
//!
//! The shape follows what kstatus (Flux) and Argo CD read: `Ready` is the
//! summary, `Reconciling=True` means work is under way, `Stalled=True`
//! means the operator cannot make progress until the spec or the cluster
//! changes. A condition's `lastTransitionTime` moves only when its status
//! flips, so an unchanged tenant gets an unchanged status and no write.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const NAMESPACE_READY: &str = "NamespaceReady";
pub const CREDENTIALS_READY: &str = "CredentialsReady";
pub const KEYSPACE_READY: &str = "KeyspaceReady";
pub const RUNTIME_READY: &str = "RuntimeReady";
pub const ENDPOINT_READY: &str = "EndpointReady";
pub const KINDS_SERVED: &str = "KindsServed";

/// Result of a reconcile pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The spec breaks a rule; nothing was applied.
    Invalid { field: String, message: String },
    /// The objects cannot be created, for a reason outside the spec (for
    /// example a namespace of that name that belongs to someone else).
    Blocked { reason: String, message: String },
    /// The ScyllaDB keyspace could not be provisioned for a reason that
    /// may pass (the cluster is unreachable, a request timed out); it is
    /// tried again.
    KeyspacePending { message: String },
    /// Every object was applied.
    Applied {
        runtime_available: bool,
        has_ingress: bool,
        /// Kinds skipped because the API server does not serve them.
        skipped_kinds: Vec<String>,
        /// `KeyspaceReady` message of a ScyllaDB tenant; `None` for the
        /// embedded store.
        keyspace: Option<String>,
        /// Replicas the spec requests.
        requested_replicas: i32,
        /// Replicas that run: fewer than requested for a tenant without
        /// Redis.
        running_replicas: i32,
    },
}

/// One condition before timestamps are resolved.
struct DesiredCondition {
    kind: &'static str,
    status: bool,
    reason: String,
    message: String,
}

fn desired(
    kind: &'static str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
) -> DesiredCondition {
    DesiredCondition {
        kind,
        status,
        reason: reason.to_owned(),
        message: message.into(),
    }
}

/// Returns the conditions for `outcome`, keeping each previous condition's
/// `lastTransitionTime` when its status did not change.
pub fn conditions(
    previous: &[Condition],
    generation: Option<i64>,
    outcome: &Outcome,
    now: &Time,
) -> Vec<Condition> {
    desired_conditions(outcome)
        .into_iter()
        .map(|condition| resolve(previous, generation, condition, now))
        .collect()
}

fn desired_conditions(outcome: &Outcome) -> Vec<DesiredCondition> {
    match outcome {
        Outcome::Invalid { field, message } => {
            let text = format!("invalid spec: {field}: {message}");
            vec![
                desired(READY, false, "InvalidSpec", text.clone()),
                desired(
                    RECONCILING,
                    false,
                    "InvalidSpec",
                    "waiting for the spec to change",
                ),
                desired(STALLED, true, "InvalidSpec", text),
            ]
        }
        Outcome::Blocked { reason, message } => vec![
            desired(READY, false, reason, message.clone()),
            desired(
                RECONCILING,
                false,
                reason,
                "waiting for the cluster or the spec to change",
            ),
            desired(STALLED, true, reason, message.clone()),
        ],
        Outcome::KeyspacePending { message } => vec![
            desired(
                READY,
                false,
                "KeyspaceNotReady",
                "waiting for the ScyllaDB keyspace",
            ),
            desired(
                RECONCILING,
                true,
                "KeyspaceNotReady",
                "provisioning the ScyllaDB keyspace again after a failure",
            ),
            desired(
                STALLED,
                false,
                "KeyspaceNotReady",
                "the failure may pass, so it is retried",
            ),
            desired(KEYSPACE_READY, false, "ScyllaUnavailable", message.clone()),
        ],
        Outcome::Applied {
            runtime_available,
            has_ingress,
            skipped_kinds,
            keyspace,
            requested_replicas,
            running_replicas,
        } => {
            let mut conditions = applied_conditions(*runtime_available, *has_ingress);
            if let Some(message) = keyspace {
                conditions.push(desired(
                    KEYSPACE_READY,
                    true,
                    "Provisioned",
                    message.clone(),
                ));
            }
            // Only a missing Redis runs fewer replicas than requested.
            if requested_replicas > running_replicas
                && let Some(runtime) = conditions
                    .iter_mut()
                    .find(|condition| condition.kind == RUNTIME_READY)
            {
                runtime.message = format!(
                    "{}; {running_replicas} of {requested_replicas} requested replicas runs, because Redis is not configured to relay live events between replicas: set spec.runtime.redis, or start the operator with --redis-url",
                    runtime.message
                );
            }
            conditions.push(kinds_served(skipped_kinds));
            conditions
        }
    }
}

fn applied_conditions(runtime_available: bool, has_ingress: bool) -> Vec<DesiredCondition> {
    let runtime = if runtime_available {
        desired(
            RUNTIME_READY,
            true,
            "Available",
            "the runtime Deployment is available",
        )
    } else {
        desired(
            RUNTIME_READY,
            false,
            "Progressing",
            "waiting for the runtime Deployment to become available",
        )
    };
    let endpoint = if has_ingress {
        desired(
            ENDPOINT_READY,
            true,
            "IngressApplied",
            "the Ingress for the endpoint host is applied",
        )
    } else {
        desired(
            ENDPOINT_READY,
            true,
            "ServiceOnly",
            "no endpoint host is set; the runtime is reachable through its Service",
        )
    };
    let (ready, reconciling) = if runtime_available {
        (
            desired(READY, true, "Ready", "the tenant is serving"),
            desired(RECONCILING, false, "Ready", "nothing is in progress"),
        )
    } else {
        (
            desired(
                READY,
                false,
                "Progressing",
                "waiting for the runtime Deployment to become available",
            ),
            desired(
                RECONCILING,
                true,
                "Progressing",
                "waiting for the runtime Deployment to become available",
            ),
        )
    };
    vec![
        ready,
        reconciling,
        desired(STALLED, false, "Progressing", "nothing blocks progress"),
        desired(
            NAMESPACE_READY,
            true,
            "Applied",
            "the tenant namespace is applied",
        ),
        desired(
            CREDENTIALS_READY,
            true,
            "Applied",
            "the credentials Secret is applied",
        ),
        runtime,
        endpoint,
    ]
}

fn kinds_served(skipped: &[String]) -> DesiredCondition {
    if skipped.is_empty() {
        desired(
            KINDS_SERVED,
            true,
            "AllServed",
            "the API server serves every kind the tenant needs",
        )
    } else {
        let message = format!(
            "the API server does not serve {}; those objects were skipped",
            skipped.join(", ")
        );
        desired(KINDS_SERVED, false, "KindNotServed", message)
    }
}

fn resolve(
    previous: &[Condition],
    generation: Option<i64>,
    desired: DesiredCondition,
    now: &Time,
) -> Condition {
    let status = if desired.status { "True" } else { "False" };
    let earlier = previous
        .iter()
        .find(|condition| condition.type_ == desired.kind);
    let last_transition_time = match earlier {
        Some(condition) if condition.status == status => condition.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: desired.kind.to_owned(),
        status: status.to_owned(),
        reason: desired.reason,
        message: desired.message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// True when the Deployment's newest generation has an available pod.
pub fn deployment_available(deployment: &Deployment) -> bool {
    let Some(status) = deployment.status.as_ref() else {
        return false;
    };
    let generation = deployment.metadata.generation.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= generation;
    let available_pods = status.available_replicas.unwrap_or(0) >= 1;
    let available = status
        .conditions
        .iter()
        .flatten()
        .any(|condition| condition.type_ == "Available" && condition.status == "True");
    observed && available_pods && available
}

/// Returns whether every pod of `deployment` runs the pod template whose
/// configuration checksum is `checksum`: the template has it, the
/// controller saw the latest spec, and no pod of an older template is left.
pub fn rolled_out(deployment: &Deployment, checksum: &str) -> bool {
    let template_checksum = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.metadata.as_ref())
        .and_then(|metadata| metadata.annotations.as_ref())
        .and_then(|annotations| {
            annotations.get(crate::build::workload::CONFIG_CHECKSUM_ANNOTATION)
        });
    if template_checksum.map(String::as_str) != Some(checksum) {
        return false;
    }
    let Some(status) = deployment.status.as_ref() else {
        return false;
    };
    let desired_replicas = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let observed =
        status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    observed
        && status.updated_replicas.unwrap_or(0) == desired_replicas
        && status.replicas.unwrap_or(0) == desired_replicas
}

/// Returns the status of condition `kind`, if present.
pub fn condition_status<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|condition| condition.type_ == kind)
        .map(|condition| condition.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn deployment(
        checksum: &str,
        generation: i64,
        observed: i64,
        updated: i32,
        pods: i32,
    ) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "chat-runtime", "generation": generation},
            "spec": {
                "replicas": 1,
                "selector": {},
                "template": {"metadata": {"annotations": {"parley.dev/config-checksum": checksum}}}
            },
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": pods}
        }))
        .unwrap()
    }

    #[test]
    fn rolled_out_needs_new_template_everywhere() {
        assert!(rolled_out(&deployment("new", 2, 2, 1, 1), "new"));
        assert!(
            !rolled_out(&deployment("old", 2, 2, 1, 1), "new"),
            "old template"
        );
        assert!(
            !rolled_out(&deployment("new", 3, 2, 1, 1), "new"),
            "spec not observed"
        );
        assert!(
            !rolled_out(&deployment("new", 2, 2, 0, 1), "new"),
            "pod not updated"
        );
        assert!(
            !rolled_out(&deployment("new", 2, 2, 1, 2), "new"),
            "old pod left"
        );
    }

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn applied(available: bool) -> Outcome {
        Outcome::Applied {
            runtime_available: available,
            has_ingress: false,
            skipped_kinds: Vec::new(),
            keyspace: None,
            requested_replicas: 1,
            running_replicas: 1,
        }
    }

    fn condition<'a>(conditions: &'a [Condition], kind: &str) -> &'a Condition {
        conditions
            .iter()
            .find(|condition| condition.type_ == kind)
            .unwrap()
    }

    #[test]
    fn keyspace_condition_only_for_scylla() {
        let embedded = conditions(&[], Some(1), &applied(true), &time(10));
        assert_eq!(condition_status(&embedded, KEYSPACE_READY), None);

        let scylla = Outcome::Applied {
            runtime_available: true,
            has_ingress: false,
            skipped_kinds: Vec::new(),
            keyspace: Some(String::from("keyspace parley_acme is at schema version 1")),
            requested_replicas: 3,
            running_replicas: 1,
        };
        let result = conditions(&[], Some(1), &scylla, &time(10));
        assert_eq!(condition_status(&result, KEYSPACE_READY), Some("True"));
        assert_eq!(condition_status(&result, READY), Some("True"));
        let runtime = condition(&result, RUNTIME_READY);
        assert!(
            runtime.message.contains("1 of 3 requested replicas runs"),
            "{}",
            runtime.message
        );
        assert!(
            runtime.message.contains("Redis is not configured"),
            "{}",
            runtime.message
        );
    }

    #[test]
    fn requested_replicas_running_need_no_note() {
        let outcome = Outcome::Applied {
            runtime_available: true,
            has_ingress: false,
            skipped_kinds: Vec::new(),
            keyspace: Some(String::from("keyspace parley_acme is at schema version 1")),
            requested_replicas: 3,
            running_replicas: 3,
        };
        let result = conditions(&[], Some(1), &outcome, &time(10));
        let runtime = condition(&result, RUNTIME_READY);
        assert_eq!(runtime.message, "the runtime Deployment is available");
    }

    #[test]
    fn keyspace_failure_retries_without_stalling() {
        let outcome = Outcome::KeyspacePending {
            message: String::from("failed to connect to ScyllaDB"),
        };
        let result = conditions(&[], Some(1), &outcome, &time(10));
        assert_eq!(condition_status(&result, READY), Some("False"));
        assert_eq!(condition_status(&result, RECONCILING), Some("True"));
        assert_eq!(condition_status(&result, STALLED), Some("False"));
        let keyspace = condition(&result, KEYSPACE_READY);
        assert_eq!(keyspace.status, "False");
        assert_eq!(keyspace.reason, "ScyllaUnavailable");
        assert!(keyspace.message.contains("failed to connect"));
    }

    #[test]
    fn ready_only_when_runtime_is_available() {
        let progressing = conditions(&[], Some(1), &applied(false), &time(10));
        assert_eq!(condition_status(&progressing, READY), Some("False"));
        assert_eq!(condition_status(&progressing, RECONCILING), Some("True"));
        let ready = conditions(&progressing, Some(1), &applied(true), &time(20));
        assert_eq!(condition_status(&ready, READY), Some("True"));
        assert_eq!(condition_status(&ready, RECONCILING), Some("False"));
        assert_eq!(condition_status(&ready, STALLED), Some("False"));
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let first = conditions(&[], Some(1), &applied(false), &time(10));
        let again = conditions(&first, Some(1), &applied(false), &time(20));
        assert_eq!(first, again);
        let flipped = conditions(&again, Some(1), &applied(true), &time(30));
        let ready = flipped.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.last_transition_time, time(30));
        let namespace = flipped.iter().find(|c| c.type_ == NAMESPACE_READY).unwrap();
        assert_eq!(namespace.last_transition_time, time(10));
    }

    #[test]
    fn invalid_spec_stalls_and_names_field() {
        let outcome = Outcome::Invalid {
            field: "spec.runtime.replicas".into(),
            message: "the embedded store allows one replica".into(),
        };
        let result = conditions(&[], Some(3), &outcome, &time(10));
        assert_eq!(condition_status(&result, STALLED), Some("True"));
        assert_eq!(condition_status(&result, READY), Some("False"));
        let stalled = result.iter().find(|c| c.type_ == STALLED).unwrap();
        assert!(stalled.message.contains("spec.runtime.replicas"));
        assert_eq!(stalled.observed_generation, Some(3));
    }

    #[test]
    fn skipped_kinds_are_reported() {
        let outcome = Outcome::Applied {
            runtime_available: true,
            has_ingress: false,
            skipped_kinds: vec![String::from("NetworkPolicy")],
            keyspace: None,
            requested_replicas: 1,
            running_replicas: 1,
        };
        let result = conditions(&[], Some(1), &outcome, &time(10));
        assert_eq!(condition_status(&result, KINDS_SERVED), Some("False"));
        let served = result.iter().find(|c| c.type_ == KINDS_SERVED).unwrap();
        assert!(served.message.contains("NetworkPolicy"));
    }

    #[test]
    fn deployment_without_status_is_not_available() {
        assert!(!deployment_available(&Deployment::default()));
    }
}
