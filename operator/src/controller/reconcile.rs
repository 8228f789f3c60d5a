//! One reconcile of a ChatTenant, as a pipeline:
//! validate (pure) → fetch what exists → build (pure) → apply → status.
//!
//! For tenants with ScyllaDB storage, the keyspace, its role and its schema
//! are provisioned between fetch and build, so the runtime never starts on
//! a keyspace that is not ready.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::apply::{self, Applied, Mode};
use super::rotation;
use super::scylla_login;
use super::served;
use super::status::{self, Outcome};
use super::{Context, Error};
use crate::build::scylla::ScyllaAccess;
use crate::build::signing::{SigningPlan, SigningSecrets};
use crate::build::{self, credentials::Credentials};
use crate::crd::{ChatTenant, ChatTenantStatus, DeletionPolicy};
use crate::keyspace::KeyspaceError;
use crate::naming;
use crate::validate::{self, ValidTenant};

/// How often a healthy tenant is checked again without any event.
const RESYNC: Duration = Duration::from_secs(600);
/// How soon a tenant whose runtime is not available yet is checked again.
const PROGRESS_CHECK: Duration = Duration::from_secs(15);

/// Annotation on a retained namespace: the tenant it belonged to was
/// deleted with `deletionPolicy: Retain`.
pub const RETAINED_ANNOTATION: &str = "parley.dev/retained";

/// Brings the cluster in line with `tenant` and records the result in its
/// status.
pub async fn apply_tenant(tenant: Arc<ChatTenant>, ctx: &Context) -> Result<Action, Error> {
    let valid = match validate::validate(&tenant, &ctx.settings) {
        Ok(valid) => valid,
        Err(invalid) => {
            let outcome = Outcome::Invalid {
                field: invalid.field.clone(),
                message: invalid.message.clone(),
            };
            write_status(&tenant, ctx, &outcome, None).await?;
            // The spec must change before anything can; its change is an
            // event, so no timed retry is needed.
            return Ok(Action::await_change());
        }
    };

    if let Some(reason) = namespace_conflict(&tenant, &valid, ctx).await? {
        let outcome = Outcome::Blocked {
            reason: String::from("NamespaceConflict"),
            message: reason,
        };
        write_status(&tenant, ctx, &outcome, Some(&valid)).await?;
        return Ok(Action::requeue(RESYNC));
    }

    // Older API servers ignore the CRD's immutability rule, so a changed
    // tenantId is caught here: following it would orphan the old namespace.
    let recorded = tenant
        .status
        .as_ref()
        .and_then(|status| status.namespace.as_deref());
    if let Some(recorded) = recorded.filter(|recorded| *recorded != valid.namespace) {
        let outcome = Outcome::Invalid {
            field: String::from("spec.tenantId"),
            message: format!("tenantId is immutable; this tenant lives in namespace {recorded}"),
        };
        write_status(&tenant, ctx, &outcome, None).await?;
        return Ok(Action::await_change());
    }

    let missing_required: Vec<&str> = ctx
        .missing_kinds
        .iter()
        .map(|kind| kind.kind)
        .filter(|kind| served::REQUIRED_KINDS.contains(kind))
        .collect();
    if !missing_required.is_empty() {
        let outcome = Outcome::Blocked {
            reason: String::from("KindNotServed"),
            message: format!(
                "the API server does not serve {}",
                missing_required.join(", ")
            ),
        };
        write_status(&tenant, ctx, &outcome, Some(&valid)).await?;
        return Ok(Action::await_change());
    }

    if let Some(message) = storage_change(&tenant, &valid, ctx).await? {
        let outcome = Outcome::Invalid {
            field: String::from("spec.storage"),
            message,
        };
        write_status(&tenant, ctx, &outcome, None).await?;
        return Ok(Action::await_change());
    }
    let mut keyspace = match provision_keyspace(&tenant, &valid, ctx).await? {
        KeyspaceStep::NotNeeded => None,
        KeyspaceStep::Ready(ready) => Some(ready),
        KeyspaceStep::Stopped(action) => return Ok(action),
    };

    let redis_password = match read_redis_password(&valid, ctx).await? {
        Ok(password) => password,
        Err(message) => {
            let outcome = Outcome::Blocked {
                reason: String::from("RedisPasswordNotFound"),
                message,
            };
            write_status(&tenant, ctx, &outcome, Some(&valid)).await?;
            // The operator does not watch the password's Secret, so it
            // checks again soon after someone creates or fixes it.
            return Ok(Action::requeue(PROGRESS_CHECK));
        }
    };

    let rotation = plan_credentials(&tenant, &valid, ctx).await?;
    let signing = plan_signing(&valid, ctx).await?;
    let owner = crate::render::owner_reference(&tenant, &tenant.name_any());
    let access = match (&keyspace, &ctx.keyspaces) {
        (Some(ready), Some(keyspaces)) => Some(ScyllaAccess {
            settings: keyspaces.settings(),
            login: ready
                .login
                .as_ref()
                .map(|login| (login.role.as_str(), login.password.as_str())),
        }),
        _ => None,
    };
    let mut desired = build::desired(
        &valid,
        &rotation.credentials,
        &signing.secrets,
        access,
        redis_password.as_deref(),
        &owner,
    )
    .map_err(Error::Build)?;
    let needed_kinds: Vec<&'static str> = desired.manifests().iter().map(|m| m.kind()).collect();
    if is_missing(ctx, "HorizontalPodAutoscaler") {
        desired.keep_replicas_without_autoscaler();
    }
    let mut dropped_role = false;
    if let Some(login) = keyspace.as_mut().and_then(|ready| ready.login.as_mut()) {
        dropped_role = finish_rotation(&tenant, &valid, login, &desired, ctx).await?;
        if let Some(secret) = desired.scylla_secret.as_mut()
            && !login.annotations.is_empty()
        {
            secret.metadata.annotations = Some(login.annotations.clone());
        }
    }
    if !rotation.annotations.is_empty() {
        desired.credentials.metadata.annotations = Some(rotation.annotations.clone());
    }

    let mut written = 0;
    for manifest in desired.manifests() {
        if ctx
            .missing_kinds
            .iter()
            .any(|kind| kind.kind == manifest.kind())
        {
            continue;
        }
        let mode = match manifest {
            build::Manifest::Secret(secret) if is_signing_secret(secret) => {
                if signing.drops_keys {
                    Mode::Always
                } else {
                    Mode::WhenChanged
                }
            }
            build::Manifest::Secret(_) if rotation.drops_keys || dropped_role => Mode::Always,
            _ => Mode::WhenChanged,
        };
        if apply::apply(&ctx.client, manifest, mode)
            .await
            .map_err(Error::Apply)?
            == Applied::Written
        {
            written += 1;
        }
    }
    delete_stale_objects(&valid, &desired, ctx).await?;
    if written > 0 {
        tracing::info!(tenant = %valid.tenant_id, objects = written, "Applied tenant objects");
        let rotating = rotation.recheck_in.is_some() || rotation.drops_keys;
        if is_drift(&tenant) && !rotating {
            let note =
                format!("Restored {written} object(s) changed or deleted outside the operator");
            publish(&tenant, ctx, EventType::Normal, "DriftCorrected", note).await;
        }
    }

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    let runtime_available = deployments
        .get_opt(naming::RUNTIME)
        .await
        .map_err(Error::Read)?
        .is_some_and(|deployment| status::deployment_available(&deployment));
    let skipped_kinds: Vec<String> = ctx
        .missing_kinds
        .iter()
        .map(|kind| kind.kind)
        .filter(|kind| !served::REPLICA_KINDS.contains(kind) || needed_kinds.contains(kind))
        .map(str::to_owned)
        .collect();
    let outcome = Outcome::Applied {
        runtime_available,
        has_ingress: desired.ingress.is_some()
            && !skipped_kinds.iter().any(|kind| kind == "Ingress"),
        skipped_kinds,
        keyspace: keyspace.map(|ready| ready.summary),
        requested_replicas: valid.requested_replicas,
        running_replicas: valid.effective.replicas,
    };
    write_status(&tenant, ctx, &outcome, Some(&valid)).await?;

    let next = if runtime_available {
        RESYNC
    } else {
        PROGRESS_CHECK
    };
    let next = rotation
        .recheck_in
        .map_or(next, |recheck| next.min(recheck));
    Ok(Action::requeue(next))
}

/// True when objects had to be written although the spec was already
/// handled: someone changed or deleted them by hand.
fn is_drift(tenant: &ChatTenant) -> bool {
    let Some(status) = tenant.status.as_ref() else {
        return false;
    };
    // A status written before anything was applied (a keyspace still being
    // provisioned, say) records the namespace too, so the namespace
    // condition shows whether objects were applied before.
    let applied_before = status
        .conditions
        .iter()
        .any(|condition| condition.type_ == status::NAMESPACE_READY && condition.status == "True");
    applied_before
        && status.namespace.is_some()
        && status.observed_generation == tenant.metadata.generation
}

/// Returns why the tenant namespace cannot be used, if it exists and is not
/// this tenant's: it lacks our tenant label, or another live ChatTenant
/// owns it. A namespace left by a deleted tenant of the same id (retained)
/// is adopted.
async fn namespace_conflict(
    tenant: &ChatTenant,
    valid: &ValidTenant,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let Some(existing) = namespaces
        .get_opt(&valid.namespace)
        .await
        .map_err(Error::Read)?
    else {
        return Ok(None);
    };
    let labelled = existing.labels().get(naming::TENANT_ID_LABEL) == Some(&valid.tenant_id);
    if !labelled {
        return Ok(Some(format!(
            "namespace {} already exists and is not labelled {}={}",
            valid.namespace,
            naming::TENANT_ID_LABEL,
            valid.tenant_id
        )));
    }

    let own_uid = tenant.uid().unwrap_or_default();
    let tenants: Api<ChatTenant> = Api::all(ctx.client.clone());
    for owner in existing
        .owner_references()
        .iter()
        .filter(|owner| owner.kind == "ChatTenant")
    {
        if owner.uid == own_uid {
            continue;
        }
        let live_owner = tenants.get_opt(&owner.name).await.map_err(Error::Read)?;
        if live_owner.is_some_and(|other| other.uid().as_deref() == Some(owner.uid.as_str())) {
            return Ok(Some(format!(
                "namespace {} belongs to ChatTenant {}",
                valid.namespace, owner.name
            )));
        }
    }
    Ok(None)
}

/// Reads the tenant's credentials, or generates them when the Secret does
/// not exist yet, and applies a requested rotation. Existing credentials
/// are never regenerated otherwise.
async fn plan_credentials(
    tenant: &ChatTenant,
    valid: &ValidTenant,
    ctx: &Context,
) -> Result<rotation::Plan, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    let existing = secrets
        .get_opt(naming::CREDENTIALS_SECRET)
        .await
        .map_err(Error::Read)?;
    let Some(secret) = existing else {
        let credentials = Credentials::generate(&valid.tenant_id).map_err(Error::Credentials)?;
        return Ok(rotation::Plan {
            credentials,
            annotations: Default::default(),
            recheck_in: None,
            drops_keys: false,
        });
    };

    let credentials = Credentials::from_secret(&secret).map_err(Error::Credentials)?;
    let record = secret.metadata.annotations.clone().unwrap_or_default();
    let request = tenant
        .annotations()
        .get(rotation::ROTATE_ANNOTATION)
        .map(String::as_str);
    let plan = rotation::plan(
        credentials,
        &record,
        request,
        ctx.settings.rotation_overlap,
        k8s_openapi::jiff::Timestamp::now(),
        || Credentials::generate(&valid.tenant_id),
    )
    .map_err(Error::Credentials)?;
    if plan.annotations.get(rotation::HANDLED_ANNOTATION)
        != record.get(rotation::HANDLED_ANNOTATION)
    {
        let note =
            String::from("Added a new API key; the old one stays valid for the overlap window");
        publish(tenant, ctx, EventType::Normal, "RotatingCredentials", note).await;
    }
    Ok(plan)
}

/// Reads the tenant's signing secrets and generates the missing ones. A
/// stored secret that the spec still needs is kept unless the runtime
/// would reject it.
async fn plan_signing(valid: &ValidTenant, ctx: &Context) -> Result<SigningPlan, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    let stored = secrets
        .get_opt(naming::SIGNING_SECRET)
        .await
        .map_err(Error::Read)?;
    SigningSecrets::plan(valid, stored.as_ref()).map_err(Error::Credentials)
}

fn is_signing_secret(secret: &Secret) -> bool {
    secret.metadata.name.as_deref() == Some(naming::SIGNING_SECRET)
}

fn is_missing(ctx: &Context, kind: &str) -> bool {
    ctx.missing_kinds.iter().any(|missing| missing.kind == kind)
}

/// Deletes the optional objects that `desired` no longer contains: the
/// Ingress of a removed endpoint, the PodDisruptionBudget and autoscaler
/// of a tenant back at one replica, the Redis policy and Secret of a
/// tenant without Redis, and the webhook policy and signing Secret of a
/// tenant without hook and webhooks. Kinds the API server does not serve
/// are skipped.
async fn delete_stale_objects(
    valid: &ValidTenant,
    desired: &build::DesiredObjects,
    ctx: &Context,
) -> Result<(), Error> {
    let namespace = valid.namespace.as_str();
    let client = &ctx.client;
    let mut deleted = Vec::new();
    if desired.ingress.is_none()
        && !is_missing(ctx, "Ingress")
        && apply::delete_if_present::<Ingress>(client, namespace, naming::RUNTIME)
            .await
            .map_err(Error::Apply)?
    {
        deleted.push("Ingress");
    }
    if desired.disruption_budget.is_none()
        && !is_missing(ctx, "PodDisruptionBudget")
        && apply::delete_if_present::<PodDisruptionBudget>(client, namespace, naming::RUNTIME)
            .await
            .map_err(Error::Apply)?
    {
        deleted.push("PodDisruptionBudget");
    }
    if desired.autoscaler.is_none()
        && !is_missing(ctx, "HorizontalPodAutoscaler")
        && apply::delete_if_present::<HorizontalPodAutoscaler>(client, namespace, naming::RUNTIME)
            .await
            .map_err(Error::Apply)?
    {
        deleted.push("HorizontalPodAutoscaler");
    }
    if desired.allow_redis_policy.is_none()
        && !is_missing(ctx, "NetworkPolicy")
        && apply::delete_if_present::<NetworkPolicy>(client, namespace, naming::ALLOW_REDIS_POLICY)
            .await
            .map_err(Error::Apply)?
    {
        deleted.push("NetworkPolicy");
    }
    if desired.redis_secret.is_none()
        && apply::delete_if_present::<Secret>(client, namespace, naming::REDIS_SECRET)
            .await
            .map_err(Error::Apply)?
    {
        deleted.push("Secret");
    }
    if desired.allow_webhooks_policy.is_none()
        && apply::delete_if_present::<NetworkPolicy>(
            client,
            namespace,
            naming::ALLOW_WEBHOOKS_POLICY,
        )
        .await
        .map_err(Error::Apply)?
    {
        deleted.push("NetworkPolicy");
    }
    // The signing secrets go with this Secret, so a hook or webhook added
    // later gets new ones.
    if desired.signing_secret.is_none()
        && apply::delete_if_present::<Secret>(client, namespace, naming::SIGNING_SECRET)
            .await
            .map_err(Error::Apply)?
    {
        deleted.push("Secret");
    }
    if !deleted.is_empty() {
        tracing::info!(tenant = %valid.tenant_id, kinds = ?deleted, "Deleted objects the spec no longer needs");
    }
    Ok(())
}

/// Reads the Redis password from the Secret that the spec or the operator's
/// settings name. Returns `Ok(None)` when Redis needs no password, and
/// `Err` with a status message when the Secret or its key is missing.
async fn read_redis_password(
    valid: &ValidTenant,
    ctx: &Context,
) -> Result<Result<Option<String>, String>, Error> {
    let Some(source) = valid
        .redis
        .as_ref()
        .and_then(|redis| redis.password.as_ref())
    else {
        return Ok(Ok(None));
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &source.namespace);
    let Some(secret) = secrets.get_opt(&source.name).await.map_err(Error::Read)? else {
        return Ok(Err(format!(
            "the Redis password Secret {}/{} does not exist: create it with the key {}",
            source.namespace, source.name, source.key
        )));
    };
    let label = crate::validate::REDIS_PASSWORD_LABEL;
    let marked = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(label))
        .is_some_and(|value| value == "true");
    if source.named_by_spec && !marked {
        return Ok(Err(format!(
            "the Redis password Secret {}/{} lacks the label {label}=true, which marks the Secrets a ChatTenant may name",
            source.namespace, source.name
        )));
    }
    let password = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&source.key))
        .and_then(|value| String::from_utf8(value.0.clone()).ok())
        .filter(|password| !password.is_empty());
    Ok(password.map(Some).ok_or_else(|| {
        format!(
            "the Redis password Secret {}/{} has no non-empty UTF-8 key {}",
            source.namespace, source.name, source.key
        )
    }))
}

/// Writes the status when it differs from the stored one, and records an
/// Event when `Ready` or `Stalled` flips.
/// A ScyllaDB tenant's keyspace, ready for the runtime.
struct KeyspaceReady {
    /// The runtime's role and password; `None` without authentication.
    login: Option<scylla_login::Login>,
    /// `KeyspaceReady` condition message.
    summary: String,
}

enum KeyspaceStep {
    /// The tenant uses the embedded store.
    NotNeeded,
    Ready(KeyspaceReady),
    /// The status is written, and the reconcile ends with this action.
    Stopped(Action),
}

/// Returns why the spec's storage cannot be used, when the tenant already
/// keeps chat history elsewhere: in a keyspace the operator provisioned
/// for it, or in the embedded store's volume. Chat history is not moved
/// between stores.
async fn storage_change(
    tenant: &ChatTenant,
    valid: &ValidTenant,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    let provisioned = tenant
        .status
        .as_ref()
        .and_then(|status| status.keyspace.as_deref());
    let requested = valid.scylla.as_ref().map(|scylla| scylla.keyspace.as_str());
    if let Some(provisioned) = provisioned {
        if requested == Some(provisioned) {
            return Ok(None);
        }
        let target = match requested {
            Some(keyspace) => format!("keyspace {keyspace}"),
            None => String::from("the embedded store"),
        };
        return Ok(Some(format!(
            "the tenant's chat history is in ScyllaDB keyspace {provisioned} and cannot move to {target}"
        )));
    }
    if requested.is_none() {
        return Ok(None);
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    let has_volume = claims
        .get_opt(naming::DATA_CLAIM)
        .await
        .map_err(Error::Read)?
        .is_some();
    Ok(has_volume.then(|| {
        format!(
            "the tenant's chat history is in the embedded store (PersistentVolumeClaim {}/{}) and cannot move to ScyllaDB",
            valid.namespace,
            naming::DATA_CLAIM
        )
    }))
}

/// Provisions the keyspace of a ScyllaDB tenant, or writes the status that
/// explains why it cannot be.
async fn provision_keyspace(
    tenant: &ChatTenant,
    valid: &ValidTenant,
    ctx: &Context,
) -> Result<KeyspaceStep, Error> {
    let Some(storage) = &valid.scylla else {
        return Ok(KeyspaceStep::NotNeeded);
    };
    let Some(keyspaces) = &ctx.keyspaces else {
        let outcome = Outcome::Blocked {
            reason: String::from("ScyllaNotConfigured"),
            message: String::from(
                "the tenant asks for ScyllaDB storage, but the operator was started without ScyllaDB contact points (--scylla-contact-points)",
            ),
        };
        write_status(tenant, ctx, &outcome, Some(valid)).await?;
        return Ok(KeyspaceStep::Stopped(Action::await_change()));
    };
    // Runtimes read and write in the operator's datacenter only, so the
    // keyspace needs replicas there.
    let datacenter = &keyspaces.settings().datacenter;
    if !storage.replication.contains_key(datacenter) {
        let outcome = Outcome::Invalid {
            field: String::from("spec.storage.scylla.replication"),
            message: format!(
                "must include datacenter {datacenter}, where the operator and the runtimes run"
            ),
        };
        write_status(tenant, ctx, &outcome, None).await?;
        return Ok(KeyspaceStep::Stopped(Action::await_change()));
    }

    let login = if keyspaces.uses_roles() {
        Some(plan_scylla_login(tenant, valid, storage, ctx).await?)
    } else {
        None
    };
    let credentials = login.as_ref().map(|login| {
        (
            login.role.as_str(),
            login.password.as_str(),
            login.password_is_new,
        )
    });
    match keyspaces
        .ensure(&valid.tenant_id, storage, credentials)
        .await
    {
        Ok(provisioned) => {
            if provisioned.altered_replication {
                let note = format!(
                    "Changed the replication of keyspace {}; run a repair so new replicas receive the existing rows",
                    storage.keyspace
                );
                publish(tenant, ctx, EventType::Normal, "ReplicationChanged", note).await;
            }
            let summary = match &provisioned.role {
                Some(role) => format!(
                    "keyspace {} with role {role} is at schema version {}",
                    storage.keyspace, provisioned.schema_version
                ),
                None => format!(
                    "keyspace {} is at schema version {}; the cluster has no authentication, so no role was created",
                    storage.keyspace, provisioned.schema_version
                ),
            };
            if let Some(login) = login.as_ref().filter(|login| login.rotating) {
                let note = format!(
                    "Rotating the ScyllaDB role: the runtime moves to role {}, and {} is dropped once no pod uses it",
                    login.role,
                    login.previous_role.as_deref().unwrap_or_default()
                );
                publish(tenant, ctx, EventType::Normal, "RotatingScyllaRole", note).await;
            }
            Ok(KeyspaceStep::Ready(KeyspaceReady { login, summary }))
        }
        Err(error) if !error.is_transient() => {
            let reason = match error {
                KeyspaceError::OwnedByOther { .. } | KeyspaceError::ExistsUnowned { .. } => {
                    "KeyspaceConflict"
                }
                _ => "ScyllaRejected",
            };
            let outcome = Outcome::Blocked {
                reason: String::from(reason),
                message: crate::error_chain(&error),
            };
            write_status(tenant, ctx, &outcome, Some(valid)).await?;
            Ok(KeyspaceStep::Stopped(Action::requeue(RESYNC)))
        }
        Err(error) => {
            let outcome = Outcome::KeyspacePending {
                message: crate::error_chain(&error),
            };
            write_status(tenant, ctx, &outcome, Some(valid)).await?;
            Err(Error::Keyspace(error))
        }
    }
}

/// Decides the tenant's CQL role and password from its Secret and the
/// ChatTenant's rotation request.
async fn plan_scylla_login(
    tenant: &ChatTenant,
    valid: &ValidTenant,
    storage: &validate::ValidScylla,
    ctx: &Context,
) -> Result<scylla_login::Login, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    let secret = secrets
        .get_opt(naming::SCYLLA_SECRET)
        .await
        .map_err(Error::Read)?;
    let text = |key: &str| {
        secret
            .as_ref()
            .and_then(|secret| secret.data.as_ref())
            .and_then(|data| data.get(key))
            .and_then(|value| String::from_utf8(value.0.clone()).ok())
            .filter(|text| !text.is_empty())
    };
    let recorded = scylla_login::Recorded {
        role: text(build::scylla::USERNAME_KEY),
        password: text(build::scylla::PASSWORD_KEY),
        annotations: secret
            .as_ref()
            .and_then(|secret| secret.metadata.annotations.clone())
            .unwrap_or_default(),
    };
    let request = tenant
        .annotations()
        .get(rotation::ROTATE_ANNOTATION)
        .map(String::as_str);
    let base = crate::keyspace::role_name(storage);
    Ok(scylla_login::plan(
        &base,
        &recorded,
        request,
        build::scylla::generate_password,
    ))
}

/// Drops the role a rotation left behind once every runtime pod runs the
/// configuration `desired` has, and returns whether it did. Until then the
/// old role keeps working for the pods that still use it.
async fn finish_rotation(
    tenant: &ChatTenant,
    valid: &ValidTenant,
    login: &mut scylla_login::Login,
    desired: &build::DesiredObjects,
    ctx: &Context,
) -> Result<bool, Error> {
    let (Some(previous), Some(storage), Some(keyspaces)) =
        (login.previous_role.clone(), &valid.scylla, &ctx.keyspaces)
    else {
        return Ok(false);
    };
    let checksum = desired
        .deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.metadata.as_ref())
        .and_then(|metadata| metadata.annotations.as_ref())
        .and_then(|annotations| annotations.get(build::workload::CONFIG_CHECKSUM_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    let rolled_out = deployments
        .get_opt(naming::RUNTIME)
        .await
        .map_err(Error::Read)?
        .is_some_and(|deployment| status::rolled_out(&deployment, &checksum));
    if !rolled_out {
        return Ok(false);
    }
    keyspaces
        .drop_role(storage, &previous)
        .await
        .map_err(Error::Keyspace)?;
    login.previous_dropped();
    let note = format!(
        "Dropped ScyllaDB role {previous}: every runtime pod uses {}",
        login.role
    );
    publish(tenant, ctx, EventType::Normal, "DroppedScyllaRole", note).await;
    Ok(true)
}

async fn write_status(
    tenant: &ChatTenant,
    ctx: &Context,
    outcome: &Outcome,
    valid: Option<&ValidTenant>,
) -> Result<(), Error> {
    let previous = tenant.status.clone().unwrap_or_default();
    let generation = tenant.metadata.generation;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let conditions = status::conditions(&previous.conditions, generation, outcome, &now);

    let next = ChatTenantStatus {
        observed_generation: generation,
        conditions,
        // The namespace stays recorded while the spec is invalid, so a
        // changed tenantId is still recognised on the next pass.
        namespace: valid
            .map(|valid| valid.namespace.clone())
            .or(previous.namespace.clone()),
        endpoint: valid.map(endpoint_url),
        credentials_secret: valid.map(|_| naming::CREDENTIALS_SECRET.to_owned()),
        effective: valid.map(|valid| valid.effective.clone()),
        // Recorded once provisioning succeeded, and kept: it marks where the
        // tenant's chat history is, for the storage check and for deletion.
        keyspace: match outcome {
            Outcome::Applied {
                keyspace: Some(_), ..
            } => valid
                .and_then(|valid| valid.scylla.as_ref())
                .map(|scylla| scylla.keyspace.clone())
                .or(previous.keyspace.clone()),
            _ => previous.keyspace.clone(),
        },
    };
    if next == previous {
        return Ok(());
    }

    let tenants: Api<ChatTenant> = Api::all(ctx.client.clone());
    let patch = json!({ "status": next });
    tenants
        .patch_status(
            &tenant.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Status)?;
    publish_transitions(tenant, ctx, &previous, &next).await;
    Ok(())
}

fn endpoint_url(valid: &ValidTenant) -> String {
    match &valid.endpoint {
        Some(endpoint) if endpoint.tls_secret_name.is_some() => {
            format!("https://{}", endpoint.host)
        }
        Some(endpoint) => format!("http://{}", endpoint.host),
        None => format!("http://{}.{}.svc", naming::RUNTIME, valid.namespace),
    }
}

async fn publish_transitions(
    tenant: &ChatTenant,
    ctx: &Context,
    previous: &ChatTenantStatus,
    next: &ChatTenantStatus,
) {
    let flipped = |kind: &str| {
        let before = status::condition_status(&previous.conditions, kind);
        let after = status::condition_status(&next.conditions, kind);
        (before != after).then_some(after).flatten()
    };
    let message_of = |kind: &str| {
        next.conditions
            .iter()
            .find(|condition| condition.type_ == kind)
            .map(|condition| condition.message.clone())
            .unwrap_or_default()
    };

    let mut events = Vec::new();
    if previous.namespace.is_none() && next.namespace.is_some() {
        events.push((
            EventType::Normal,
            "Created",
            "Created the tenant's objects".to_owned(),
        ));
    }
    if flipped(status::READY) == Some("True") {
        events.push((
            EventType::Normal,
            "Ready",
            "The tenant is serving".to_owned(),
        ));
    }
    if flipped(status::STALLED) == Some("True") {
        events.push((EventType::Warning, "Stalled", message_of(status::STALLED)));
    }
    for (type_, reason, note) in events {
        publish(tenant, ctx, type_, reason, note).await;
    }
}

/// Records an Event about `tenant`. A failure is logged, never returned:
/// an Event is a notice, and the reconcile it describes already happened.
pub async fn publish(
    tenant: &ChatTenant,
    ctx: &Context,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = core_event(tenant, &ctx.reporting_instance, type_, reason, note);
    let events: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), EVENT_NAMESPACE);
    if let Err(error) = events.create(&PostParams::default(), &event).await {
        tracing::warn!(tenant = %tenant.name_any(), reason, error = %error, "Failed to record an Event");
    }
}

/// Namespace of Events about ChatTenants, which are cluster-scoped.
const EVENT_NAMESPACE: &str = "default";

/// Builds a core/v1 Event. The events.k8s.io/v1 API of older servers (1.20)
/// rejects Events about cluster-scoped objects, while core/v1 accepts them
/// in the `default` namespace on every supported version.
fn core_event(
    tenant: &ChatTenant,
    instance: &str,
    type_: EventType,
    reason: &str,
    note: String,
) -> CoreEvent {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let suffix = now.0.as_nanosecond();
    CoreEvent {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{}.{suffix:x}", tenant.name_any())),
            namespace: Some(EVENT_NAMESPACE.to_owned()),
            ..Default::default()
        },
        involved_object: tenant.object_ref(&()),
        reason: Some(reason.to_owned()),
        message: Some(note),
        type_: Some(match type_ {
            EventType::Normal => String::from("Normal"),
            EventType::Warning => String::from("Warning"),
        }),
        action: Some(reason.to_owned()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        reporting_component: Some(naming::FIELD_MANAGER.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some(naming::FIELD_MANAGER.to_owned()),
            host: None,
        }),
        ..CoreEvent::default()
    }
}

/// Cleans up before the ChatTenant goes, according to its deletion policy.
pub async fn cleanup_tenant(tenant: Arc<ChatTenant>, ctx: &Context) -> Result<Action, Error> {
    let tenant_id = tenant.spec.tenant_id.clone();
    let namespace = naming::namespace(&tenant_id);
    let policy = tenant.spec.deletion_policy.unwrap_or_default();
    publish(
        &tenant,
        ctx,
        EventType::Normal,
        "Deleting",
        format!("Deleting with policy {policy:?}"),
    )
    .await;

    drop_keyspace(&tenant, ctx).await?;

    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let Some(existing) = namespaces.get_opt(&namespace).await.map_err(Error::Read)? else {
        return Ok(Action::await_change());
    };
    let own_uid = tenant.uid().unwrap_or_default();
    let owned = existing
        .owner_references()
        .iter()
        .any(|owner| owner.uid == own_uid);
    if !owned {
        // Someone else's namespace, or one this tenant never adopted.
        return Ok(Action::await_change());
    }

    match policy {
        DeletionPolicy::Delete => {
            namespaces
                .delete(&namespace, &DeleteParams::default())
                .await
                .map_err(Error::Apply)?;
            tracing::info!(tenant = %tenant_id, %namespace, "Deleted the tenant namespace");
        }
        DeletionPolicy::Retain => {
            retain_namespace(&namespace, &tenant_id, ctx).await?;
            tracing::info!(tenant = %tenant_id, %namespace, "Retained the tenant namespace");
        }
    }
    Ok(Action::await_change())
}

/// Drops the keyspace and role the operator provisioned for `tenant`, when
/// its keyspace policy is `Delete`. Only the keyspace recorded in the
/// status is dropped, only when the ownership record names this tenant,
/// and only while no other ChatTenant owns the tenant namespace. Every
/// keyspace is kept when the operator has no ScyllaDB connection, since
/// the deletion would otherwise wait for one forever. A failure is
/// retried, and each one is published as an Event that explains how to stop
/// waiting.
async fn drop_keyspace(tenant: &ChatTenant, ctx: &Context) -> Result<(), Error> {
    let Some(keyspace) = tenant
        .status
        .as_ref()
        .and_then(|status| status.keyspace.clone())
    else {
        return Ok(());
    };
    let Some(mut storage) = validate::scylla_storage(&tenant.spec) else {
        return Ok(());
    };
    if storage.deletion_policy != DeletionPolicy::Delete {
        return Ok(());
    }
    storage.keyspace = keyspace;
    let tenant_id = &tenant.spec.tenant_id;
    if !holds_namespace(tenant, ctx).await? {
        return Ok(());
    }
    let Some(keyspaces) = &ctx.keyspaces else {
        let note = format!(
            "Kept keyspace {}: the operator has no ScyllaDB connection to drop it",
            storage.keyspace
        );
        publish(tenant, ctx, EventType::Warning, "KeyspaceKept", note).await;
        return Ok(());
    };
    match keyspaces.drop_tenant(tenant_id, &storage).await {
        Ok(true) => {
            tracing::info!(tenant = %tenant_id, keyspace = %storage.keyspace, "Dropped the tenant keyspace and role");
            let note = format!("Dropped keyspace {} and its role", storage.keyspace);
            publish(tenant, ctx, EventType::Normal, "KeyspaceDropped", note).await;
            Ok(())
        }
        Ok(false) => {
            let note = format!(
                "Kept keyspace {}: no ownership record names this tenant",
                storage.keyspace
            );
            publish(tenant, ctx, EventType::Warning, "KeyspaceKept", note).await;
            Ok(())
        }
        Err(error) if !error.is_transient() => {
            let note = format!("Kept keyspace {}: {error}", storage.keyspace);
            publish(tenant, ctx, EventType::Warning, "KeyspaceKept", note).await;
            Ok(())
        }
        Err(error) => {
            let note = format!(
                "Failed to drop keyspace {}, retrying: {}. Set spec.storage.scylla.deletionPolicy to Retain to delete the ChatTenant without dropping it",
                storage.keyspace,
                crate::error_chain(&error)
            );
            publish(tenant, ctx, EventType::Warning, "KeyspaceDropFailed", note).await;
            Err(Error::Keyspace(error))
        }
    }
}

/// Returns whether no other ChatTenant owns the tenant namespace: it is
/// missing, or owned by `tenant`. A ChatTenant that repeats another's
/// tenantId never owns the namespace.
async fn holds_namespace(tenant: &ChatTenant, ctx: &Context) -> Result<bool, Error> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let namespace = naming::namespace(&tenant.spec.tenant_id);
    let Some(existing) = namespaces.get_opt(&namespace).await.map_err(Error::Read)? else {
        return Ok(true);
    };
    let own_uid = tenant.uid().unwrap_or_default();
    Ok(existing
        .owner_references()
        .iter()
        .any(|owner| owner.uid == own_uid))
}

/// Drops the namespace's owner reference, so the garbage collector keeps
/// it, and marks it retained. Applying the namespace without the reference
/// removes it, because the operator's field manager owned it.
async fn retain_namespace(namespace: &str, tenant_id: &str, ctx: &Context) -> Result<(), Error> {
    let mut object = Namespace::default();
    object.metadata.name = Some(namespace.to_owned());
    object.metadata.labels = Some(naming::namespace_labels(tenant_id));
    object.metadata.annotations =
        Some([(RETAINED_ANNOTATION.to_owned(), "true".to_owned())].into());
    apply::apply(
        &ctx.client,
        build::Manifest::Namespace(&object),
        Mode::Always,
    )
    .await
    .map_err(Error::Apply)?;
    Ok(())
}
