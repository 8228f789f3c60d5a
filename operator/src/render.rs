//! `parley-operator render`: prints every object the operator would create
//! for a ChatTenant, without a cluster, for review and for GitOps diffs.
//!
//! The output contains no real secret: credentials and signing secrets are
//! placeholders, and the namespace's owner reference carries a placeholder
//! uid unless the input has one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::build::credentials::Credentials;
use crate::build::scylla::ScyllaAccess;
use crate::build::signing::SigningSecrets;
use crate::build::{self, BuildError};
use crate::crd::ChatTenant;
use crate::settings::{OperatorSettings, ScyllaSettings};
use crate::validate::{self, InvalidSpec, ValidTenant};

/// Owner reference uid of a ChatTenant that has none yet, because only the
/// API server assigns it.
pub const UID_PLACEHOLDER: &str = "<assigned by the API server>";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("failed to parse the ChatTenant YAML")]
    Parse(#[source] serde_yaml::Error),
    #[error(
        "expected apiVersion {expected_api_version} and kind {expected_kind}, found {api_version:?} and {kind:?}"
    )]
    WrongKind {
        api_version: String,
        kind: String,
        expected_api_version: String,
        expected_kind: String,
    },
    #[error("invalid ChatTenant: {0}")]
    Invalid(#[from] InvalidSpec),
    #[error("failed to build the tenant's objects")]
    Build(#[from] BuildError),
    #[error("failed to serialize the {kind} as YAML")]
    Serialize {
        kind: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
}

/// Renders the ChatTenant in `yaml` as a multi-document YAML stream, one
/// document per object, in apply order.
pub fn render(yaml: &str, settings: &OperatorSettings) -> Result<String, RenderError> {
    let tenant = parse_tenant(yaml)?;
    let valid = validate::validate(&tenant, settings)?;
    let owner = owner_reference(&tenant, &valid.name);
    // A ScyllaDB tenant is rendered with the operator's ScyllaDB settings
    // when it has them, and with placeholders otherwise.
    let placeholder_settings = placeholder_scylla(&valid);
    let scylla_settings = settings.scylla.as_ref().or(placeholder_settings.as_ref());
    let role = valid.scylla.as_ref().map(crate::keyspace::role_name);
    let access = scylla_settings.map(|settings| ScyllaAccess {
        settings,
        login: settings
            .credentials_secret
            .as_ref()
            .and(role.as_deref())
            .map(|role| (role, PLACEHOLDER_PASSWORD)),
    });
    // The Redis password is copied from a Secret in the operator's
    // namespace, which a render without a cluster cannot read.
    let redis_password = valid
        .redis
        .as_ref()
        .and_then(|redis| redis.password.as_ref())
        .map(|_| PLACEHOLDER_REDIS_PASSWORD);
    let objects = build::desired(
        &valid,
        &Credentials::placeholder(),
        &SigningSecrets::placeholder(&valid),
        access,
        redis_password,
        &owner,
    )?;

    let mut stream = String::new();
    for manifest in objects.manifests() {
        let document =
            serde_yaml::to_string(&manifest).map_err(|source| RenderError::Serialize {
                kind: manifest.kind(),
                source,
            })?;
        stream.push_str("---\n");
        stream.push_str(&document);
    }
    Ok(stream)
}

/// Password shown in place of a tenant role's generated one.
const PLACEHOLDER_PASSWORD: &str = "generated-by-the-operator";
/// Password shown in place of the Redis password the operator copies.
const PLACEHOLDER_REDIS_PASSWORD: &str = "copied-by-the-operator";

/// Returns placeholder cluster settings for a ScyllaDB tenant: a contact
/// point that names what to replace, and the first datacenter of the
/// tenant's replication.
fn placeholder_scylla(valid: &ValidTenant) -> Option<ScyllaSettings> {
    let storage = valid.scylla.as_ref()?;
    let datacenter = storage.replication.keys().next()?.clone();
    Some(ScyllaSettings {
        contact_points: vec!["scylla-contact-point.example:9042".to_owned()],
        datacenter,
        credentials_secret: Some(String::from("scylla-operator-credentials")),
        credentials_namespace: String::new(),
        tls_ca_pem: None,
        operator_replication_factor: 3,
    })
}

/// Parses one ChatTenant. Deserializing alone would accept any kind with
/// a matching `spec`, so `apiVersion` and `kind` are checked first.
pub fn parse_tenant(yaml: &str) -> Result<ChatTenant, RenderError> {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(RenderError::Parse)?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let expected_api_version = ChatTenant::api_version(&()).into_owned();
    let expected_kind = ChatTenant::kind(&()).into_owned();
    if api_version != expected_api_version || kind != expected_kind {
        return Err(RenderError::WrongKind {
            api_version,
            kind,
            expected_api_version,
            expected_kind,
        });
    }
    serde_yaml::from_value(value).map_err(RenderError::Parse)
}

/// Returns the controller reference from the tenant namespace to `tenant`,
/// named `name`.
pub fn owner_reference(tenant: &ChatTenant, name: &str) -> OwnerReference {
    let uid = tenant.metadata.uid.as_deref().unwrap_or(UID_PLACEHOLDER);
    OwnerReference {
        api_version: ChatTenant::api_version(&()).into_owned(),
        kind: ChatTenant::kind(&()).into_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "apiVersion: parley.dev/v1alpha1
kind: ChatTenant
metadata:
  name: chotot
spec:
  tenantId: chotot
";

    fn documents(stream: &str) -> Vec<serde_yaml::Value> {
        serde_yaml::Deserializer::from_str(stream)
            .map(|document| serde::Deserialize::deserialize(document).unwrap())
            .collect()
    }

    #[test]
    fn render_starts_each_document_with_separator() {
        let stream = render(MINIMAL, &OperatorSettings::default()).unwrap();
        assert!(
            stream.starts_with("---\napiVersion: v1\nkind: Namespace\n"),
            "{stream}"
        );
        assert_eq!(stream.matches("---\n").count(), documents(&stream).len());
    }

    #[test]
    fn render_uses_placeholders() {
        let stream = render(MINIMAL, &OperatorSettings::default()).unwrap();
        let namespace = &documents(&stream)[0];
        let owner = &namespace["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], UID_PLACEHOLDER);
        assert_eq!(owner["name"], "chotot");
        assert_eq!(owner["kind"], "ChatTenant");
        assert_eq!(owner["apiVersion"], "parley.dev/v1alpha1");
        assert!(stream.contains("key.generated-by-the-operator"), "{stream}");
    }

    #[test]
    fn owner_reference_keeps_uid() {
        let mut tenant = parse_tenant(MINIMAL).unwrap();
        tenant.metadata.uid = Some("0b6f2a3c".to_owned());
        assert_eq!(owner_reference(&tenant, "chotot").uid, "0b6f2a3c");
    }

    #[test]
    fn render_rejects_other_kinds() {
        let yaml = MINIMAL.replace("kind: ChatTenant", "kind: Deployment");
        let error = render(&yaml, &OperatorSettings::default()).unwrap_err();
        assert!(matches!(error, RenderError::WrongKind { .. }), "{error}");
        let yaml = MINIMAL.replace("v1alpha1", "v1");
        let error = render(&yaml, &OperatorSettings::default()).unwrap_err();
        assert!(error.to_string().contains("\"parley.dev/v1\""), "{error}");
    }

    #[test]
    fn render_rejects_malformed_yaml() {
        let error = render("spec: [", &OperatorSettings::default()).unwrap_err();
        assert!(matches!(error, RenderError::Parse(_)), "{error}");
        let yaml = MINIMAL.replace("tenantId: chotot", "tenantId: [chotot]");
        let error = render(&yaml, &OperatorSettings::default()).unwrap_err();
        assert!(matches!(error, RenderError::Parse(_)), "{error}");
    }

    #[test]
    fn render_reports_invalid_field() {
        let yaml = format!("{MINIMAL}  runtime:\n    replicas: 2\n");
        let error = render(&yaml, &OperatorSettings::default()).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("invalid ChatTenant: spec.runtime.replicas: "),
            "{message}"
        );
    }
}
