//! Builds every object a tenant needs from a [`ValidTenant`]. Nothing here
//! calls the API server: the reconciler applies what [`desired`] returns,
//! and `parley-operator render` prints it.

pub mod config;
pub mod credentials;
pub mod layout;
pub mod namespace;
pub mod network;
pub mod quota;
pub mod redis;
pub mod scaling;
pub mod scylla;
pub mod signing;
pub mod workload;

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;

use self::credentials::Credentials;
use self::scylla::ScyllaAccess;
use self::signing::SigningSecrets;
use crate::naming;
use crate::validate::ValidTenant;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("failed to serialize the runtime configuration")]
    Config(#[source] serde_yaml::Error),
    /// The tenant asks for ScyllaDB storage, but no connection settings
    /// and role password were given.
    #[error("the tenant is stored in ScyllaDB, but no ScyllaDB connection settings were given")]
    MissingScyllaAccess,
    /// The tenant's Redis needs a password, but none was given.
    #[error("the tenant's Redis needs a password, but none was given")]
    MissingRedisPassword,
}

/// Every object of one tenant. The fields are in apply order: the
/// namespace first, then the quota and the network policies, so that no
/// pod runs unconstrained, and the workload last.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObjects {
    pub namespace: Namespace,
    pub quota: ResourceQuota,
    pub default_deny_policy: NetworkPolicy,
    pub allow_ingress_policy: NetworkPolicy,
    pub allow_dns_policy: NetworkPolicy,
    /// Egress to ScyllaDB, for ScyllaDB storage.
    pub allow_scylla_policy: Option<NetworkPolicy>,
    /// Egress to Redis, when the runtime relays events through one.
    pub allow_redis_policy: Option<NetworkPolicy>,
    /// Egress to the ports of the hook and webhook URLs, when the tenant
    /// has any.
    pub allow_webhooks_policy: Option<NetworkPolicy>,
    pub service_account: ServiceAccount,
    pub credentials: Secret,
    /// The tenant's CQL role and password, for ScyllaDB storage.
    pub scylla_secret: Option<Secret>,
    /// The Redis password, when Redis needs one.
    pub redis_secret: Option<Secret>,
    /// The signing secrets of the hook and the webhooks, when the tenant
    /// has any.
    pub signing_secret: Option<Secret>,
    pub config: ConfigMap,
    /// The embedded store's volume; `None` for ScyllaDB storage.
    pub data_claim: Option<PersistentVolumeClaim>,
    pub deployment: Deployment,
    pub service: Service,
    /// `None` with one replica and no autoscaler. A budget left from
    /// earlier must then be deleted.
    pub disruption_budget: Option<PodDisruptionBudget>,
    /// `None` without `spec.runtime.autoscaling`. An autoscaler left from
    /// earlier must then be deleted.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    /// `None` when the spec sets no endpoint. An Ingress left from an
    /// earlier endpoint must then be deleted.
    pub ingress: Option<Ingress>,
}

/// Builds every object of the tenant `valid`, with the API keys in
/// `credentials` and the signing secrets in `signing`, under a namespace
/// owned by `owner`. A tenant with ScyllaDB storage needs `scylla`, and
/// one whose Redis has a password needs `redis_password`.
pub fn desired(
    valid: &ValidTenant,
    credentials: &Credentials,
    signing: &SigningSecrets,
    scylla: Option<ScyllaAccess<'_>>,
    redis_password: Option<&str>,
    owner: &OwnerReference,
) -> Result<DesiredObjects, BuildError> {
    let scylla = match (&valid.scylla, scylla) {
        (Some(storage), Some(access)) => Some((storage, access)),
        (Some(_), None) => return Err(BuildError::MissingScyllaAccess),
        (None, _) => None,
    };
    let store = scylla.map(|(storage, access)| scylla::store_config(storage, access));
    let config_yaml = config::config_yaml(valid, credentials, store).map_err(BuildError::Config)?;
    let config_map = config::config_map(valid, config_yaml);
    let secret = credentials::secret(valid, credentials);
    let scylla_secret = scylla.map(|(_, access)| scylla::secret(valid, access));
    let redis_secret = match valid
        .redis
        .as_ref()
        .and_then(|redis| redis.password.as_ref())
    {
        Some(_) => {
            let password = redis_password.ok_or(BuildError::MissingRedisPassword)?;
            Some(redis::secret(valid, password))
        }
        None => None,
    };
    let signing_secret = signing::secret(valid, signing);
    let checksum = workload::config_checksum(
        &config_map,
        [
            Some(&secret),
            scylla_secret.as_ref(),
            redis_secret.as_ref(),
            signing_secret.as_ref(),
        ],
    );

    Ok(DesiredObjects {
        namespace: namespace::namespace(valid, owner),
        quota: quota::quota(valid),
        default_deny_policy: network::default_deny_policy(valid),
        allow_ingress_policy: network::allow_ingress_policy(valid),
        allow_dns_policy: network::allow_dns_policy(valid),
        allow_scylla_policy: scylla
            .map(|(_, access)| scylla::egress_policy(valid, access.settings)),
        allow_redis_policy: valid
            .redis
            .as_ref()
            .map(|redis| redis::egress_policy(valid, redis)),
        allow_webhooks_policy: network::webhooks_egress_policy(valid),
        service_account: workload::service_account(valid),
        credentials: secret,
        scylla_secret,
        redis_secret,
        signing_secret,
        config: config_map,
        data_claim: valid.scylla.is_none().then(|| workload::data_claim(valid)),
        deployment: workload::deployment(valid, &checksum),
        service: network::service(valid),
        disruption_budget: scaling::disruption_budget(valid),
        autoscaler: scaling::autoscaler(valid),
        ingress: network::ingress(valid),
    })
}

impl DesiredObjects {
    /// Drops the autoscaler and gives the Deployment the autoscaler's
    /// minimum as a fixed replica count, for an API server that does not
    /// serve autoscaling/v2. Without this the Deployment, which leaves its
    /// replica count to the autoscaler, would run one pod.
    pub fn keep_replicas_without_autoscaler(&mut self) {
        let Some(autoscaler) = self.autoscaler.take() else {
            return;
        };
        let min_replicas = autoscaler.spec.and_then(|spec| spec.min_replicas);
        if let Some(spec) = self.deployment.spec.as_mut() {
            spec.replicas = min_replicas;
        }
    }

    /// Returns every object in apply order.
    pub fn manifests<'a>(&'a self) -> Vec<Manifest<'a>> {
        let optional = |manifest: Option<Manifest<'a>>| manifest.into_iter();
        [
            Manifest::Namespace(&self.namespace),
            Manifest::ResourceQuota(&self.quota),
            Manifest::NetworkPolicy(&self.default_deny_policy),
            Manifest::NetworkPolicy(&self.allow_ingress_policy),
            Manifest::NetworkPolicy(&self.allow_dns_policy),
        ]
        .into_iter()
        .chain(optional(
            self.allow_scylla_policy
                .as_ref()
                .map(Manifest::NetworkPolicy),
        ))
        .chain(optional(
            self.allow_redis_policy
                .as_ref()
                .map(Manifest::NetworkPolicy),
        ))
        .chain(optional(
            self.allow_webhooks_policy
                .as_ref()
                .map(Manifest::NetworkPolicy),
        ))
        .chain([
            Manifest::ServiceAccount(&self.service_account),
            Manifest::Secret(&self.credentials),
        ])
        .chain(optional(self.scylla_secret.as_ref().map(Manifest::Secret)))
        .chain(optional(self.redis_secret.as_ref().map(Manifest::Secret)))
        .chain(optional(self.signing_secret.as_ref().map(Manifest::Secret)))
        .chain([Manifest::ConfigMap(&self.config)])
        .chain(optional(
            self.data_claim
                .as_ref()
                .map(Manifest::PersistentVolumeClaim),
        ))
        .chain([
            Manifest::Deployment(&self.deployment),
            Manifest::Service(&self.service),
        ])
        .chain(optional(
            self.disruption_budget
                .as_ref()
                .map(Manifest::PodDisruptionBudget),
        ))
        .chain(optional(
            self.autoscaler
                .as_ref()
                .map(Manifest::HorizontalPodAutoscaler),
        ))
        .chain(optional(self.ingress.as_ref().map(Manifest::Ingress)))
        .collect()
    }
}

/// One object of [`DesiredObjects`], of any kind. It serializes as the
/// object itself, and k8s-openapi 0.29 writes `apiVersion` and `kind` for
/// every top-level resource type.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Manifest<'a> {
    Namespace(&'a Namespace),
    ResourceQuota(&'a ResourceQuota),
    NetworkPolicy(&'a NetworkPolicy),
    ServiceAccount(&'a ServiceAccount),
    Secret(&'a Secret),
    ConfigMap(&'a ConfigMap),
    PersistentVolumeClaim(&'a PersistentVolumeClaim),
    Deployment(&'a Deployment),
    Service(&'a Service),
    PodDisruptionBudget(&'a PodDisruptionBudget),
    HorizontalPodAutoscaler(&'a HorizontalPodAutoscaler),
    Ingress(&'a Ingress),
}

impl Manifest<'_> {
    /// Returns the object's `kind`, such as `Deployment`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Namespace(_) => Namespace::KIND,
            Self::ResourceQuota(_) => ResourceQuota::KIND,
            Self::NetworkPolicy(_) => NetworkPolicy::KIND,
            Self::ServiceAccount(_) => ServiceAccount::KIND,
            Self::Secret(_) => Secret::KIND,
            Self::ConfigMap(_) => ConfigMap::KIND,
            Self::PersistentVolumeClaim(_) => PersistentVolumeClaim::KIND,
            Self::Deployment(_) => Deployment::KIND,
            Self::Service(_) => Service::KIND,
            Self::PodDisruptionBudget(_) => PodDisruptionBudget::KIND,
            Self::HorizontalPodAutoscaler(_) => HorizontalPodAutoscaler::KIND,
            Self::Ingress(_) => Ingress::KIND,
        }
    }
}

/// Returns the metadata of a namespaced object of the tenant.
fn object_meta(valid: &ValidTenant, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(valid.namespace.clone()),
        labels: Some(naming::labels(&valid.tenant_id)),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::crd::{ChatTenant, ChatTenantSpec};
    use crate::settings::OperatorSettings;
    use crate::validate::validate;

    /// Returns the tenant whose spec is the YAML `spec`.
    pub(crate) fn valid_tenant_from(spec: &str) -> ValidTenant {
        let spec: ChatTenantSpec = serde_yaml::from_str(spec).unwrap();
        validate(
            &ChatTenant::new("chotot", spec),
            &OperatorSettings::default(),
        )
        .unwrap()
    }

    /// Returns the tenant `chotot` with every default.
    pub(crate) fn valid_tenant() -> ValidTenant {
        valid_tenant_from("{tenantId: chotot}")
    }

    pub(crate) fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "parley.dev/v1alpha1".to_owned(),
            kind: "ChatTenant".to_owned(),
            name: "chotot".to_owned(),
            uid: "4f6b1c9e-0000-4000-8000-000000000001".to_owned(),
            controller: Some(true),
            block_owner_deletion: None,
        }
    }

    fn objects(spec: &str) -> DesiredObjects {
        desired(
            &valid_tenant_from(spec),
            &Credentials::placeholder(),
            &SigningSecrets::default(),
            None,
            None,
            &owner(),
        )
        .unwrap()
    }

    fn kinds(objects: &DesiredObjects) -> Vec<&'static str> {
        objects.manifests().iter().map(Manifest::kind).collect()
    }

    fn json(objects: &DesiredObjects) -> Vec<serde_json::Value> {
        let manifests = objects.manifests();
        manifests
            .iter()
            .map(|manifest| serde_json::to_value(manifest).unwrap())
            .collect()
    }

    pub(crate) fn scylla_settings() -> crate::settings::ScyllaSettings {
        crate::settings::ScyllaSettings {
            contact_points: vec!["10.0.0.5:9042".to_owned()],
            datacenter: "dc1".to_owned(),
            credentials_secret: Some("scylla-operator".to_owned()),
            credentials_namespace: "parley-system".to_owned(),
            tls_ca_pem: Some("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_owned()),
            operator_replication_factor: 3,
        }
    }

    pub(crate) const SCYLLA_SPEC: &str =
        "{tenantId: chotot, storage: {scylla: {replication: {dc1: 3}}}}";

    fn scylla_objects() -> DesiredObjects {
        let settings = scylla_settings();
        let access = ScyllaAccess {
            settings: &settings,
            login: Some(("parley_chotot_runtime", "p4ssw0rd")),
        };
        desired(
            &valid_tenant_from(SCYLLA_SPEC),
            &Credentials::placeholder(),
            &SigningSecrets::default(),
            Some(access),
            None,
            &owner(),
        )
        .unwrap()
    }

    #[test]
    fn scylla_tenant_has_no_volume_claim() {
        let objects = scylla_objects();
        assert!(objects.data_claim.is_none());
        let kinds = kinds(&objects);
        assert!(!kinds.contains(&"PersistentVolumeClaim"), "{kinds:?}");
        assert_eq!(kinds.iter().filter(|kind| **kind == "Secret").count(), 2);
        assert_eq!(
            kinds
                .iter()
                .filter(|kind| **kind == "NetworkPolicy")
                .count(),
            4
        );
        let names: Vec<String> = json(&objects)
            .iter()
            .map(|object| object["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            names.contains(&naming::SCYLLA_SECRET.to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&naming::ALLOW_SCYLLA_POLICY.to_owned()),
            "{names:?}"
        );
    }

    #[test]
    fn scylla_secret_holds_role_and_ca() {
        let objects = scylla_objects();
        let data = objects.scylla_secret.unwrap().data.unwrap();
        assert_eq!(data[scylla::USERNAME_KEY].0, b"parley_chotot_runtime");
        assert_eq!(data[scylla::PASSWORD_KEY].0, b"p4ssw0rd");
        assert!(data.contains_key(scylla::CA_KEY));
    }

    #[test]
    fn scylla_without_authentication_has_no_login() {
        let mut settings = scylla_settings();
        settings.credentials_secret = None;
        settings.tls_ca_pem = None;
        let access = ScyllaAccess {
            settings: &settings,
            login: None,
        };
        let objects = desired(
            &valid_tenant_from(SCYLLA_SPEC),
            &Credentials::placeholder(),
            &SigningSecrets::default(),
            Some(access),
            None,
            &owner(),
        )
        .unwrap();
        let data = objects.scylla_secret.unwrap().data.unwrap();
        assert!(data.is_empty(), "{:?}", data.keys().collect::<Vec<_>>());
        let config = &objects.config.data.unwrap()[layout::CONFIG_FILE];
        assert!(config.contains("kind: scylla"), "{config}");
        assert!(!config.contains("username"), "{config}");
        assert!(!config.contains("password_file"), "{config}");
        assert!(!config.contains("ca_file"), "{config}");
    }

    #[test]
    fn scylla_policy_allows_named_ports() {
        let mut settings = scylla_settings();
        settings.contact_points = vec!["scylla.example:9500".to_owned(), "10.0.0.5".to_owned()];
        let policy = scylla::egress_policy(&valid_tenant_from(SCYLLA_SPEC), &settings);
        let ports: Vec<i32> = policy.spec.unwrap().egress.unwrap()[0]
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|port| match port.port {
                Some(IntOrString::Int(number)) => number,
                _ => 0,
            })
            .collect();
        assert_eq!(ports, vec![9042, 9142, 9500, 19042, 19142]);
    }

    #[test]
    fn scylla_tenant_needs_access() {
        let error = desired(
            &valid_tenant_from(SCYLLA_SPEC),
            &Credentials::placeholder(),
            &SigningSecrets::default(),
            None,
            None,
            &owner(),
        )
        .unwrap_err();
        assert!(matches!(error, BuildError::MissingScyllaAccess));
    }

    #[test]
    fn password_change_restarts_pods() {
        let settings = scylla_settings();
        let valid = valid_tenant_from(SCYLLA_SPEC);
        let build = |password: &str| {
            let access = ScyllaAccess {
                settings: &settings,
                login: Some(("parley_chotot_runtime", password)),
            };
            desired(
                &valid,
                &Credentials::placeholder(),
                &SigningSecrets::default(),
                Some(access),
                None,
                &owner(),
            )
            .unwrap()
        };
        let annotation = |objects: &DesiredObjects| {
            objects
                .deployment
                .spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[workload::CONFIG_CHECKSUM_ANNOTATION]
                .clone()
        };
        assert_ne!(annotation(&build("first")), annotation(&build("second")));
        assert_eq!(annotation(&build("first")), annotation(&build("first")));
    }

    #[test]
    fn manifests_in_apply_order() {
        let objects = objects("{tenantId: chotot, endpoint: {host: chat.chotot.example}}");
        let expected = [
            "Namespace",
            "ResourceQuota",
            "NetworkPolicy",
            "NetworkPolicy",
            "NetworkPolicy",
            "ServiceAccount",
            "Secret",
            "ConfigMap",
            "PersistentVolumeClaim",
            "Deployment",
            "Service",
            "Ingress",
        ];
        assert_eq!(kinds(&objects), expected);
    }

    const SIGNED_SPEC: &str = "{tenantId: chotot, moderation: {hook: {url: 'https://shop.example/check', onFailure: Open}}, webhooks: [{name: crm, url: 'https://crm.example/e'}]}";

    fn signed_objects(signing: &SigningSecrets) -> DesiredObjects {
        desired(
            &valid_tenant_from(SIGNED_SPEC),
            &Credentials::placeholder(),
            signing,
            None,
            None,
            &owner(),
        )
        .unwrap()
    }

    #[test]
    fn signed_tenant_gets_secret_and_policy() {
        let valid = valid_tenant_from(SIGNED_SPEC);
        let objects = signed_objects(&SigningSecrets::placeholder(&valid));
        let expected = [
            "Namespace",
            "ResourceQuota",
            "NetworkPolicy",
            "NetworkPolicy",
            "NetworkPolicy",
            "NetworkPolicy",
            "ServiceAccount",
            "Secret",
            "Secret",
            "ConfigMap",
            "PersistentVolumeClaim",
            "Deployment",
            "Service",
        ];
        assert_eq!(kinds(&objects), expected);
        let secret = objects.signing_secret.as_ref().unwrap();
        let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
        assert_eq!(keys, ["hook", "webhook.crm"]);
        let policy = objects.allow_webhooks_policy.as_ref().unwrap();
        assert_eq!(
            policy.metadata.name.as_deref(),
            Some(naming::ALLOW_WEBHOOKS_POLICY)
        );
        let config = &objects.config.data.as_ref().unwrap()[layout::CONFIG_FILE];
        assert!(
            !config.contains(signing::PLACEHOLDER_SECRET),
            "the ConfigMap contains a signing secret"
        );
    }

    #[test]
    fn signing_secret_change_restarts_pods() {
        let valid = valid_tenant_from(SIGNED_SPEC);
        let first = SigningSecrets::plan(&valid, None).unwrap().secrets;
        let second = SigningSecrets::plan(&valid, None).unwrap().secrets;
        assert_ne!(
            template_checksum(&signed_objects(&first)),
            template_checksum(&signed_objects(&second))
        );
        assert_eq!(
            template_checksum(&signed_objects(&first)),
            template_checksum(&signed_objects(&first))
        );
    }

    #[test]
    fn manifests_without_endpoint_lack_ingress() {
        let objects = objects("{tenantId: chotot}");
        assert_eq!(objects.ingress, None);
        assert!(!kinds(&objects).contains(&"Ingress"));
    }

    #[test]
    fn manifests_serialize_kind() {
        let objects = objects("{tenantId: chotot, endpoint: {host: h}}");
        let serialized: Vec<serde_json::Value> = json(&objects)
            .iter()
            .map(|manifest| manifest["kind"].clone())
            .collect();
        assert_eq!(serialized, kinds(&objects));
    }

    #[test]
    fn manifests_have_api_version() {
        let manifests = json(&objects("{tenantId: chotot, endpoint: {host: h}}"));
        let versions: Vec<&str> = manifests
            .iter()
            .map(|manifest| manifest["apiVersion"].as_str().unwrap())
            .collect();
        assert_eq!(
            versions,
            [
                "v1",
                "v1",
                "networking.k8s.io/v1",
                "networking.k8s.io/v1",
                "networking.k8s.io/v1",
                "v1",
                "v1",
                "v1",
                "v1",
                "apps/v1",
                "v1",
                "networking.k8s.io/v1",
            ]
        );
    }

    #[test]
    fn namespaced_objects_carry_namespace_and_labels() {
        let manifests = json(&objects("{tenantId: chotot, endpoint: {host: h}}"));
        let labels = serde_json::to_value(naming::labels("chotot")).unwrap();
        for manifest in &manifests[1..] {
            let metadata = &manifest["metadata"];
            assert_eq!(
                metadata["namespace"], "parley-chotot",
                "{}",
                manifest["kind"]
            );
            assert_eq!(metadata["labels"], labels, "{}", manifest["kind"]);
        }
    }

    #[test]
    fn object_names_come_from_naming() {
        let objects = objects("{tenantId: chotot, endpoint: {host: h}}");
        let name = |meta: &ObjectMeta| meta.name.clone().unwrap();
        assert_eq!(name(&objects.quota.metadata), naming::QUOTA);
        assert_eq!(
            name(&objects.default_deny_policy.metadata),
            naming::DEFAULT_DENY_POLICY
        );
        assert_eq!(
            name(&objects.allow_ingress_policy.metadata),
            naming::ALLOW_INGRESS_POLICY
        );
        assert_eq!(
            name(&objects.allow_dns_policy.metadata),
            naming::ALLOW_DNS_POLICY
        );
        assert_eq!(name(&objects.service_account.metadata), naming::RUNTIME);
        assert_eq!(
            name(&objects.credentials.metadata),
            naming::CREDENTIALS_SECRET
        );
        assert_eq!(name(&objects.config.metadata), naming::RUNTIME);
        assert_eq!(
            name(&objects.data_claim.as_ref().unwrap().metadata),
            naming::DATA_CLAIM
        );
        assert_eq!(name(&objects.deployment.metadata), naming::RUNTIME);
        assert_eq!(name(&objects.service.metadata), naming::RUNTIME);
        assert_eq!(name(&objects.ingress.unwrap().metadata), naming::RUNTIME);
    }

    #[test]
    fn deployment_checksum_covers_config_and_secret() {
        let objects = objects("{tenantId: chotot}");
        let annotations = objects
            .deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap();
        assert_eq!(
            annotations[workload::CONFIG_CHECKSUM_ANNOTATION],
            workload::config_checksum(
                &objects.config,
                [Some(&objects.credentials), None, None, None]
            )
        );
    }

    const REDIS_SPEC: &str = "{tenantId: chotot, runtime: {replicas: 3, redis: {url: 'redis://10.0.0.7:6379', passwordSecret: {name: redis, key: pw}}}, storage: {scylla: {replication: {dc1: 3}}}}";
    const AUTOSCALED_SPEC: &str = "{tenantId: chotot, runtime: {autoscaling: {minReplicas: 3, maxReplicas: 6}, redis: {url: 'redis://redis:6379'}}, storage: {scylla: {replication: {dc1: 3}}}}";

    fn redis_objects(spec: &str, password: Option<&str>) -> Result<DesiredObjects, BuildError> {
        let settings = scylla_settings();
        let access = ScyllaAccess {
            settings: &settings,
            login: Some(("parley_chotot_runtime", "p4ssw0rd")),
        };
        desired(
            &valid_tenant_from(spec),
            &Credentials::placeholder(),
            &SigningSecrets::default(),
            Some(access),
            password,
            &owner(),
        )
    }

    fn template_checksum(objects: &DesiredObjects) -> String {
        objects
            .deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[workload::CONFIG_CHECKSUM_ANNOTATION]
            .clone()
    }

    #[test]
    fn redis_tenant_gets_relay_objects() {
        let objects = redis_objects(REDIS_SPEC, Some("s3cret")).unwrap();
        assert_eq!(objects.deployment.spec.as_ref().unwrap().replicas, Some(3));
        assert!(objects.allow_redis_policy.is_some());
        assert!(objects.redis_secret.is_some());
        assert!(objects.disruption_budget.is_some());
        assert!(objects.autoscaler.is_none());
        let kinds = kinds(&objects);
        assert_eq!(
            kinds
                .iter()
                .filter(|kind| **kind == "NetworkPolicy")
                .count(),
            5
        );
        assert_eq!(kinds.iter().filter(|kind| **kind == "Secret").count(), 3);
        assert_eq!(kinds.last(), Some(&"PodDisruptionBudget"));
        let config = &objects.config.data.as_ref().unwrap()[layout::CONFIG_FILE];
        assert!(config.contains("url: redis://10.0.0.7:6379"), "{config}");
        assert!(
            !config.contains("s3cret"),
            "the ConfigMap contains the password"
        );
    }

    #[test]
    fn redis_password_is_required() {
        let error = redis_objects(REDIS_SPEC, None).unwrap_err();
        assert!(matches!(error, BuildError::MissingRedisPassword), "{error}");
    }

    #[test]
    fn redis_password_change_restarts_pods() {
        let first = redis_objects(REDIS_SPEC, Some("first")).unwrap();
        let second = redis_objects(REDIS_SPEC, Some("second")).unwrap();
        assert_ne!(template_checksum(&first), template_checksum(&second));
        let again = redis_objects(REDIS_SPEC, Some("first")).unwrap();
        assert_eq!(template_checksum(&first), template_checksum(&again));
    }

    #[test]
    fn autoscaled_tenant_leaves_replicas_out() {
        let objects = redis_objects(AUTOSCALED_SPEC, None).unwrap();
        let deployment = serde_json::to_value(&objects.deployment).unwrap();
        assert!(
            deployment["spec"].get("replicas").is_none(),
            "{}",
            deployment["spec"]
        );
        assert!(objects.redis_secret.is_none(), "Redis has no password");
        let kinds = kinds(&objects);
        assert_eq!(
            &kinds[kinds.len() - 2..],
            ["PodDisruptionBudget", "HorizontalPodAutoscaler"]
        );
        let versions: Vec<serde_json::Value> = json(&objects)
            .iter()
            .map(|manifest| manifest["apiVersion"].clone())
            .collect();
        assert!(versions.contains(&"policy/v1".into()), "{versions:?}");
        assert!(versions.contains(&"autoscaling/v2".into()), "{versions:?}");
    }

    #[test]
    fn missing_autoscaler_api_keeps_minimum() {
        let mut objects = redis_objects(AUTOSCALED_SPEC, None).unwrap();
        objects.keep_replicas_without_autoscaler();
        assert!(objects.autoscaler.is_none());
        assert_eq!(objects.deployment.spec.as_ref().unwrap().replicas, Some(3));
        assert!(objects.disruption_budget.is_some());

        let mut fixed = redis_objects(REDIS_SPEC, Some("s3cret")).unwrap();
        let before = fixed.clone();
        fixed.keep_replicas_without_autoscaler();
        assert_eq!(fixed, before, "a tenant without autoscaler is unchanged");
    }
}
