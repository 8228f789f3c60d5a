//! The runtime's workload: its ServiceAccount, data volume claim and
//! Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, Secret, SecretVolumeSource, SecurityContext, ServiceAccount, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use super::layout;
use super::object_meta;
use crate::naming;
use crate::validate::ValidTenant;

/// Pod annotation with a digest of the runtime's configuration and
/// credentials, so that a change of either replaces the pod.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "parley.dev/config-checksum";

/// Seconds between SIGTERM and SIGKILL. The runtime needs the shutdown
/// delay (5 s), up to 10 s for WebSockets to close, and time to flush its
/// store.
const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// The readiness probe runs every 2 s and marks the pod unready after two
/// failures, within the runtime's 5 s shutdown delay.
const READINESS_PERIOD_SECONDS: i32 = 2;
const READINESS_FAILURE_THRESHOLD: i32 = 2;

/// File mode of the mounted secrets: readable by the owner and the pod's
/// `fsGroup`, which the runtime's user belongs to.
const SECRET_FILE_MODE: i32 = 0o440;

const CONFIG_VOLUME: &str = "config";
const SECRETS_VOLUME: &str = "secrets";
const DATA_VOLUME: &str = "data";
const TMP_VOLUME: &str = "tmp";
const SCYLLA_VOLUME: &str = "scylla";
const REDIS_VOLUME: &str = "redis";
const SIGNING_VOLUME: &str = "signing";

/// Builds the runtime's ServiceAccount. The runtime never calls the
/// Kubernetes API, so no token is mounted.
pub fn service_account(valid: &ValidTenant) -> ServiceAccount {
    ServiceAccount {
        metadata: object_meta(valid, naming::RUNTIME),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// Builds the claim of the embedded store's volume. The API server allows
/// only the size of a bound claim to change, and only upwards.
pub fn data_claim(valid: &ValidTenant) -> PersistentVolumeClaim {
    let size = Quantity(valid.storage_size.to_string());
    PersistentVolumeClaim {
        metadata: object_meta(valid, naming::DATA_CLAIM),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), size)])),
                limits: None,
            }),
            storage_class_name: valid.storage_class.clone(),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// Returns the hex SHA-256 of the ConfigMap's and the Secrets' data. Each
/// entry is hashed with its key and both lengths, in key order, so the
/// digest changes exactly when some data changes. A missing Secret adds
/// nothing, so tenants without one keep the digest they had before the
/// ScyllaDB Secret existed. A tenant's storage never changes, so no Secret
/// comes or goes on a running tenant.
pub fn config_checksum<'a>(
    config: &ConfigMap,
    secrets: impl IntoIterator<Item = Option<&'a Secret>>,
) -> String {
    let mut hasher = Sha256::new();
    let mut add = |section: &str, key: &str, value: &[u8]| {
        for part in [section.as_bytes(), key.as_bytes(), value] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    };
    for (key, value) in config.data.iter().flatten() {
        add("configmap", key, value.as_bytes());
    }
    for secret in secrets.into_iter().flatten() {
        for (key, value) in secret.data.iter().flatten() {
            add("secret", key, &value.0);
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Builds the runtime's Deployment. `config_checksum` comes from
/// [`config_checksum`].
///
/// With an autoscaler the Deployment leaves `replicas` out, so that the
/// operator's server-side apply does not own the field and the autoscaler
/// sets it alone.
pub fn deployment(valid: &ValidTenant, config_checksum: &str) -> Deployment {
    let selector = naming::selector_labels(&valid.tenant_id);
    let annotations = BTreeMap::from([(
        CONFIG_CHECKSUM_ANNOTATION.to_owned(),
        config_checksum.to_owned(),
    )]);
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(naming::labels(&valid.tenant_id)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec(valid)),
    };
    Deployment {
        metadata: object_meta(valid, naming::RUNTIME),
        spec: Some(DeploymentSpec {
            replicas: valid
                .autoscaling
                .is_none()
                .then_some(valid.effective.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            strategy: Some(strategy(valid)),
            template,
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Returns how pods are replaced. The embedded store is one SQLite file on
/// a ReadWriteOnce volume, so its single pod is replaced with `Recreate`: a
/// rolling update would start the new pod while the old one still holds
/// the volume. The cost is a short outage on every change, during which
/// clients reconnect and resume. With ScyllaDB storage no pod holds a
/// volume, so pods are replaced one at a time, each new one ready before
/// an old one stops.
fn strategy(valid: &ValidTenant) -> DeploymentStrategy {
    if valid.scylla.is_none() {
        return DeploymentStrategy {
            type_: Some("Recreate".to_owned()),
            rolling_update: None,
        };
    }
    DeploymentStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

/// Returns whether the pod mounts the Secret with the Redis password.
fn mounts_redis_password(valid: &ValidTenant) -> bool {
    valid
        .redis
        .as_ref()
        .is_some_and(|redis| redis.password.is_some())
}

fn pod_spec(valid: &ValidTenant) -> PodSpec {
    PodSpec {
        service_account_name: Some(naming::RUNTIME.to_owned()),
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(layout::RUNTIME_USER),
            run_as_group: Some(layout::RUNTIME_USER),
            fs_group: Some(layout::RUNTIME_USER),
            // Skips the recursive ownership change of the data volume when
            // its root already has the group, which on a large volume would
            // delay every pod start.
            fs_group_change_policy: Some("OnRootMismatch".to_owned()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_PERIOD_SECONDS),
        containers: vec![container(valid)],
        volumes: Some(volumes(valid)),
        ..PodSpec::default()
    }
}

fn container(valid: &ValidTenant) -> Container {
    let args = ["--config", &layout::config_path(), "--log-format", "json"];
    Container {
        name: naming::RUNTIME.to_owned(),
        image: Some(valid.effective.image.clone()),
        args: Some(args.iter().map(|arg| (*arg).to_owned()).collect()),
        ports: Some(vec![ContainerPort {
            name: Some(layout::HTTP_PORT_NAME.to_owned()),
            container_port: layout::HTTP_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            period_seconds: Some(READINESS_PERIOD_SECONDS),
            failure_threshold: Some(READINESS_FAILURE_THRESHOLD),
            ..http_probe("/readyz")
        }),
        liveness_probe: Some(http_probe("/healthz")),
        resources: Some(valid.resources.clone()),
        security_context: Some(container_security_context()),
        volume_mounts: Some(volume_mounts(valid)),
        ..Container::default()
    }
}

fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(layout::HTTP_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    }
}

/// Returns a security context that meets the `restricted` Pod Security
/// Standard, with a read-only root filesystem on top.
fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

/// Returns the pod's volumes. With ScyllaDB storage the data directory is
/// an emptyDir, because the runtime creates it at start but writes nothing
/// there, and the tenant's CQL role is mounted from its Secret.
fn volumes(valid: &ValidTenant) -> Vec<Volume> {
    let secret_volume = |name: &str, secret: &str| Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            default_mode: Some(SECRET_FILE_MODE),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let data = if valid.scylla.is_some() {
        Volume {
            name: DATA_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }
    } else {
        Volume {
            name: DATA_VOLUME.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: naming::DATA_CLAIM.to_owned(),
                read_only: None,
            }),
            ..Volume::default()
        }
    };
    let mut volumes = vec![
        Volume {
            name: CONFIG_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: naming::RUNTIME.to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        secret_volume(SECRETS_VOLUME, naming::CREDENTIALS_SECRET),
        data,
        Volume {
            name: TMP_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    if valid.scylla.is_some() {
        volumes.push(secret_volume(SCYLLA_VOLUME, naming::SCYLLA_SECRET));
    }
    if mounts_redis_password(valid) {
        volumes.push(secret_volume(REDIS_VOLUME, naming::REDIS_SECRET));
    }
    if super::signing::is_needed(valid) {
        volumes.push(secret_volume(SIGNING_VOLUME, naming::SIGNING_SECRET));
    }
    volumes
}

fn volume_mounts(valid: &ValidTenant) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let mut mounts = vec![
        mount(CONFIG_VOLUME, layout::CONFIG_DIR, true),
        mount(SECRETS_VOLUME, layout::SECRETS_DIR, true),
        mount(DATA_VOLUME, layout::DATA_DIR, false),
        mount(TMP_VOLUME, layout::TMP_DIR, false),
    ];
    if valid.scylla.is_some() {
        mounts.push(mount(SCYLLA_VOLUME, layout::SCYLLA_DIR, true));
    }
    if mounts_redis_password(valid) {
        mounts.push(mount(REDIS_VOLUME, layout::REDIS_DIR, true));
    }
    if super::signing::is_needed(valid) {
        mounts.push(mount(SIGNING_VOLUME, layout::SIGNING_DIR, true));
    }
    mounts
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn checksum(config: &ConfigMap, secret: &Secret) -> String {
        config_checksum(config, [Some(secret)])
    }
    use crate::build::tests::{valid_tenant, valid_tenant_from};

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
    }

    fn runtime_container(deployment: &Deployment) -> &Container {
        &pod(deployment).containers[0]
    }

    fn config_map(yaml: &str) -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([(
                "config.yaml".to_owned(),
                yaml.to_owned(),
            )])),
            ..ConfigMap::default()
        }
    }

    fn secret(entries: &[(&str, &str)]) -> Secret {
        let data = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect();
        Secret {
            data: Some(data),
            ..Secret::default()
        }
    }

    #[test]
    fn service_account_mounts_no_token() {
        let account = service_account(&valid_tenant());
        assert_eq!(account.automount_service_account_token, Some(false));
        assert_eq!(account.metadata.name.as_deref(), Some("chat-runtime"));
        assert_eq!(account.metadata.namespace.as_deref(), Some("parley-chotot"));
    }

    #[test]
    fn data_claim_is_read_write_once() {
        let valid = valid_tenant_from(
            "{tenantId: chotot, storage: {embedded: {size: 20Gi, storageClassName: fast}}}",
        );
        let claim = data_claim(&valid);
        let spec = claim.spec.unwrap();
        assert_eq!(claim.metadata.name.as_deref(), Some("chat-runtime-data"));
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
        let requests = spec.resources.unwrap().requests.unwrap();
        assert_eq!(requests["storage"], Quantity("20Gi".to_owned()));
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    }

    #[test]
    fn data_claim_defaults_size_and_class() {
        let spec = data_claim(&valid_tenant()).spec.unwrap();
        let requests = spec.resources.unwrap().requests.unwrap();
        assert_eq!(requests["storage"], Quantity("1Gi".to_owned()));
        assert_eq!(spec.storage_class_name, None);
    }

    #[test]
    fn deployment_runs_one_replica_with_recreate() {
        let deployment = deployment(&valid_tenant(), "sum");
        let spec = deployment.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        let strategy = spec.strategy.as_ref().unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("Recreate"));
        assert_eq!(strategy.rolling_update, None);
    }

    #[test]
    fn deployment_selects_instance_labels() {
        let deployment = deployment(&valid_tenant(), "sum");
        let spec = deployment.spec.as_ref().unwrap();
        let selector = spec.selector.match_labels.clone().unwrap();
        assert_eq!(selector, naming::selector_labels("chotot"));
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        for (key, value) in &selector {
            assert_eq!(template_labels.get(key), Some(value), "{key}");
        }
    }

    #[test]
    fn pod_is_restricted() {
        let deployment = deployment(&valid_tenant(), "sum");
        let pod = pod(&deployment);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some("chat-runtime"));
        assert_eq!(pod.termination_grace_period_seconds, Some(30));
        let context = pod.security_context.as_ref().unwrap();
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(context.run_as_user, Some(65532));
        assert_eq!(context.run_as_group, Some(65532));
        assert_eq!(context.fs_group, Some(65532));
        assert_eq!(
            context.fs_group_change_policy.as_deref(),
            Some("OnRootMismatch")
        );
        let seccomp = context.seccomp_profile.as_ref().unwrap();
        assert_eq!(seccomp.type_, "RuntimeDefault");
    }

    #[test]
    fn container_is_restricted() {
        let deployment = deployment(&valid_tenant(), "sum");
        let context = runtime_container(&deployment)
            .security_context
            .clone()
            .unwrap();
        assert_eq!(context.allow_privilege_escalation, Some(false));
        assert_eq!(context.read_only_root_filesystem, Some(true));
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(context.privileged, None);
        let capabilities = context.capabilities.unwrap();
        assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(capabilities.add, None);
    }

    #[test]
    fn container_runs_runtime_with_config() {
        let valid = valid_tenant_from("{tenantId: chotot, runtime: {image: 'example.test/rt:1'}}");
        let deployment = deployment(&valid, "sum");
        let container = runtime_container(&deployment);
        assert_eq!(container.name, "chat-runtime");
        assert_eq!(container.image.as_deref(), Some("example.test/rt:1"));
        let args = container.args.clone().unwrap();
        assert_eq!(
            args,
            [
                "--config",
                "/etc/parley/config/config.yaml",
                "--log-format",
                "json"
            ]
        );
        let port = &container.ports.as_ref().unwrap()[0];
        assert_eq!(port.container_port, 8080);
        assert_eq!(port.name.as_deref(), Some("http"));
        assert_eq!(container.resources, Some(valid.resources.clone()));
    }

    #[test]
    fn probes_use_health_endpoints() {
        let deployment = deployment(&valid_tenant(), "sum");
        let container = runtime_container(&deployment);
        let path = |probe: &Option<Probe>| {
            let action = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(action.port, IntOrString::String("http".to_owned()));
            action.path.clone().unwrap()
        };
        assert_eq!(path(&container.readiness_probe), "/readyz");
        assert_eq!(path(&container.liveness_probe), "/healthz");
    }

    #[test]
    fn readiness_fails_within_shutdown_delay() {
        let deployment = deployment(&valid_tenant(), "sum");
        let probe = runtime_container(&deployment)
            .readiness_probe
            .clone()
            .unwrap();
        let seconds_to_unready = probe.period_seconds.unwrap() * probe.failure_threshold.unwrap();
        let delay = i32::try_from(crate::build::config::SHUTDOWN_DELAY_SECONDS).unwrap();
        assert!(seconds_to_unready < delay, "{seconds_to_unready} s");
    }

    #[test]
    fn mounts_match_layout() {
        let deployment = deployment(&valid_tenant(), "sum");
        let pod = pod(&deployment);
        let mounts = runtime_container(&deployment)
            .volume_mounts
            .clone()
            .unwrap();
        let mount = |path: &str| {
            mounts
                .iter()
                .find(|mount| mount.mount_path == path)
                .unwrap_or_else(|| panic!("no mount at {path}"))
        };
        let volume = |name: &str| {
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == name)
                .unwrap()
        };

        let config = mount("/etc/parley/config");
        assert_eq!(config.read_only, Some(true));
        assert_eq!(config.sub_path, None, "subPath mounts never update");
        let source = volume(&config.name).config_map.clone().unwrap();
        assert_eq!(source.name, "chat-runtime");

        let secrets = mount("/etc/parley/secrets");
        assert_eq!(secrets.read_only, Some(true));
        let source = volume(&secrets.name).secret.clone().unwrap();
        assert_eq!(
            source.secret_name.as_deref(),
            Some("chat-runtime-credentials")
        );
        assert_eq!(source.default_mode, Some(0o440));

        let data = mount("/var/lib/parley");
        assert_eq!(data.read_only, Some(false));
        let source = volume(&data.name).persistent_volume_claim.clone().unwrap();
        assert_eq!(source.claim_name, "chat-runtime-data");

        let tmp = mount("/tmp");
        assert!(volume(&tmp.name).empty_dir.is_some());
        assert_eq!(mounts.len(), 4);
    }

    #[test]
    fn checksum_is_annotated_on_pod() {
        let deployment = deployment(&valid_tenant(), "abc123");
        let template = &deployment.spec.as_ref().unwrap().template;
        let annotations = template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap();
        assert_eq!(annotations["parley.dev/config-checksum"], "abc123");
    }

    #[test]
    fn checksum_is_stable() {
        let first = checksum(&config_map("a: 1"), &secret(&[("k", "v"), ("x", "y")]));
        let second = checksum(&config_map("a: 1"), &secret(&[("x", "y"), ("k", "v")]));
        assert_eq!(first, second);
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn checksum_changes_with_config() {
        let secret = secret(&[("k", "v")]);
        let first = checksum(&config_map("a: 1"), &secret);
        let second = checksum(&config_map("a: 2"), &secret);
        assert_ne!(first, second);
    }

    #[test]
    fn checksum_changes_with_secret() {
        let config = config_map("a: 1");
        let first = checksum(&config, &secret(&[("k", "v")]));
        assert_ne!(first, checksum(&config, &secret(&[("k", "w")])));
        assert_ne!(first, checksum(&config, &secret(&[("k", "v"), ("l", "v")])));
    }

    #[test]
    fn checksum_separates_keys_from_values() {
        let config = config_map("a: 1");
        let first = checksum(&config, &secret(&[("ab", "c")]));
        let second = checksum(&config, &secret(&[("a", "bc")]));
        assert_ne!(first, second);
    }

    const REDIS_RUNTIME: &str =
        "redis: {url: 'redis://redis:6379', passwordSecret: {name: redis, key: pw}}";

    fn scylla_tenant(runtime: &str) -> ValidTenant {
        valid_tenant_from(&format!(
            "{{tenantId: chotot, runtime: {{{runtime}}}, storage: {{scylla: {{replication: {{dc1: 3}}}}}}}}"
        ))
    }

    #[test]
    fn scylla_deployment_rolls_one_pod_at_a_time() {
        let deployment = deployment(
            &scylla_tenant(&format!("replicas: 3, {REDIS_RUNTIME}")),
            "sum",
        );
        let spec = deployment.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let strategy = spec.strategy.as_ref().unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let rolling = strategy.rolling_update.as_ref().unwrap();
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    }

    #[test]
    fn scylla_without_redis_runs_one_replica() {
        let deployment = deployment(&scylla_tenant("replicas: 3"), "sum");
        assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(1));
    }

    #[test]
    fn autoscaled_deployment_has_no_replicas() {
        let valid = scylla_tenant(&format!("autoscaling: {{maxReplicas: 5}}, {REDIS_RUNTIME}"));
        let deployment = deployment(&valid, "sum");
        assert_eq!(deployment.spec.as_ref().unwrap().replicas, None);
    }

    #[test]
    fn redis_password_is_mounted() {
        let deployment = deployment(
            &scylla_tenant(&format!("replicas: 2, {REDIS_RUNTIME}")),
            "sum",
        );
        let mounts = runtime_container(&deployment)
            .volume_mounts
            .clone()
            .unwrap();
        let mount = mounts
            .iter()
            .find(|mount| mount.mount_path == "/etc/parley/redis")
            .expect("no mount at /etc/parley/redis");
        assert_eq!(mount.read_only, Some(true));
        let volume = pod(&deployment)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|volume| volume.name == mount.name)
            .unwrap();
        let source = volume.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("chat-runtime-redis"));
        assert_eq!(source.default_mode, Some(0o440));

        let without_password = deployment_without_password();
        let mounts = runtime_container(&without_password)
            .volume_mounts
            .clone()
            .unwrap();
        assert!(
            mounts
                .iter()
                .all(|mount| mount.mount_path != "/etc/parley/redis")
        );
    }

    #[test]
    fn signing_secret_is_mounted_only_when_needed() {
        let valid = valid_tenant_from(
            "{tenantId: chotot, webhooks: [{name: crm, url: 'https://crm.example/e'}]}",
        );
        let signed = deployment(&valid, "sum");
        let mounts = runtime_container(&signed).volume_mounts.clone().unwrap();
        let mount = mounts
            .iter()
            .find(|mount| mount.mount_path == "/etc/parley/signing")
            .expect("no mount at /etc/parley/signing");
        assert_eq!(mount.read_only, Some(true));
        let volume = pod(&signed)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|volume| volume.name == mount.name)
            .unwrap();
        let source = volume.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("chat-runtime-signing"));
        assert_eq!(source.default_mode, Some(0o440));

        let plain = deployment(&valid_tenant(), "sum");
        let volumes = pod(&plain).volumes.as_ref().unwrap();
        assert!(volumes.iter().all(|volume| volume.name != "signing"));
        let mounts = runtime_container(&plain).volume_mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .all(|mount| mount.mount_path != "/etc/parley/signing")
        );
    }

    fn deployment_without_password() -> Deployment {
        deployment(
            &scylla_tenant("replicas: 2, redis: {url: 'redis://redis:6379'}"),
            "sum",
        )
    }
}
