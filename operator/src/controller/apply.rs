//! Server-side apply under the operator's field manager, skipped when the
//! live object already has every field the operator sets.
//!
//! Skipping matters twice: a reconcile with nothing to change makes no
//! write, and a restarted operator does not rewrite every tenant. A field
//! that someone changed by hand no longer matches, so the next reconcile
//! applies again and puts it back.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::build::Manifest;
use crate::naming::FIELD_MANAGER;

/// Result of [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The live object already matched; nothing was written.
    Unchanged,
    /// The object was created or updated.
    Written,
}

/// Whether an unchanged object is written anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write only when a field differs.
    WhenChanged,
    /// Write even when every field matches, so fields the operator no
    /// longer sets are removed (server-side apply drops them).
    Always,
}

/// Applies one desired object.
pub async fn apply(
    client: &Client,
    manifest: Manifest<'_>,
    mode: Mode,
) -> Result<Applied, kube::Error> {
    match manifest {
        Manifest::Namespace(object) => apply_with(Api::all(client.clone()), object, mode).await,
        Manifest::ResourceQuota(object) => apply_namespaced(client, object, mode).await,
        Manifest::NetworkPolicy(object) => apply_namespaced(client, object, mode).await,
        Manifest::ServiceAccount(object) => apply_namespaced(client, object, mode).await,
        Manifest::Secret(object) => apply_namespaced(client, object, mode).await,
        Manifest::ConfigMap(object) => apply_namespaced(client, object, mode).await,
        Manifest::PersistentVolumeClaim(object) => apply_namespaced(client, object, mode).await,
        Manifest::Deployment(object) => apply_namespaced(client, object, mode).await,
        Manifest::Service(object) => apply_namespaced(client, object, mode).await,
        Manifest::PodDisruptionBudget(object) => apply_namespaced(client, object, mode).await,
        Manifest::HorizontalPodAutoscaler(object) => apply_namespaced(client, object, mode).await,
        Manifest::Ingress(object) => apply_namespaced(client, object, mode).await,
    }
}

async fn apply_namespaced<K>(
    client: &Client,
    object: &K,
    mode: Mode,
) -> Result<Applied, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let namespace = object.namespace().unwrap_or_default();
    apply_with(Api::namespaced(client.clone(), &namespace), object, mode).await
}

async fn apply_with<K>(api: Api<K>, object: &K, mode: Mode) -> Result<Applied, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object.name_any();
    if mode == Mode::WhenChanged
        && let Some(live) = api.get_opt(&name).await?
        && contains(&to_value(&live), &to_value(object))
    {
        return Ok(Applied::Unchanged);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(object)).await?;
    Ok(Applied::Written)
}

/// Deletes the object `name` of kind `K` in `namespace` when it exists, and
/// returns whether it did. The reconciler uses it for objects that the
/// spec no longer requests, such as the Ingress of a removed endpoint.
pub async fn delete_if_present<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    if api.get_opt(name).await?.is_none() {
        return Ok(false);
    }
    match api.delete(name, &kube::api::DeleteParams::default()).await {
        Ok(_) => Ok(true),
        // Deleted by someone else between the read and the delete.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

fn to_value<K: Serialize>(object: &K) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// True when every field of `desired` is in `live` with the same value.
/// Fields only `live` has (server defaults, other managers' fields) do not
/// matter; lists must match element by element.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            desired.iter().all(|(key, value)| match live.get(key) {
                Some(live_value) => contains(live_value, value),
                // The API server leaves out fields at their zero value (Go's
                // `omitempty`), so `false`, 0, "" and empty lists match absence.
                None => is_zero(value),
            })
        }
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| contains(l, d))
        }
        (Value::Number(live), Value::Number(desired)) => live.as_f64() == desired.as_f64(),
        _ => live == desired,
    }
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(flag) => !flag,
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_live_fields_still_match() {
        let live = json!({"metadata": {"name": "a", "uid": "1"}, "spec": {"replicas": 1, "paused": false}});
        let desired = json!({"metadata": {"name": "a"}, "spec": {"replicas": 1}});
        assert!(contains(&live, &desired));
    }

    #[test]
    fn changed_field_does_not_match() {
        let live = json!({"spec": {"replicas": 2}});
        let desired = json!({"spec": {"replicas": 1}});
        assert!(!contains(&live, &desired));
    }

    #[test]
    fn missing_field_does_not_match() {
        let live = json!({"metadata": {"labels": {"a": "1"}}});
        let desired = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        assert!(!contains(&live, &desired));
    }

    #[test]
    fn zero_values_match_absent_fields() {
        let live = json!({"volumeMounts": [{"name": "data"}]});
        assert!(contains(
            &live,
            &json!({"volumeMounts": [{"name": "data", "readOnly": false}]})
        ));
        assert!(!contains(
            &live,
            &json!({"volumeMounts": [{"name": "data", "readOnly": true}]})
        ));
    }

    #[test]
    fn lists_match_element_by_element() {
        let live = json!({"ports": [{"port": 80, "protocol": "TCP"}]});
        assert!(contains(&live, &json!({"ports": [{"port": 80}]})));
        assert!(!contains(
            &live,
            &json!({"ports": [{"port": 80}, {"port": 81}]})
        ));
    }
}
