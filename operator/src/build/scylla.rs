//! Objects and settings that only tenants with ScyllaDB storage get: the
//! Secret with the tenant's CQL role, the egress policy to the cluster, and
//! the runtime's `store` section.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::{layout, object_meta};
use crate::naming;
use crate::settings::ScyllaSettings;
use crate::validate::{ValidScylla, ValidTenant};

/// Secret keys, and so file names under [`layout::SCYLLA_DIR`].
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
pub const CA_KEY: &str = "ca.pem";

/// CQL's native port, and ScyllaDB's shard-aware port, which the driver
/// uses to reach the shard that owns a partition directly.
const CQL_PORTS: [i32; 2] = [9042, 19042];
/// The same ports with TLS.
const CQL_TLS_PORTS: [i32; 2] = [9142, 19142];

/// Characters of a generated role password: 32 letters and digits are
/// about 190 bits, and need no quoting in CQL or YAML.
const PASSWORD_CHARS: usize = 32;

/// Generates a password for a tenant's CQL role.
pub fn generate_password() -> String {
    use rand::Rng as _;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(PASSWORD_CHARS)
        .map(char::from)
        .collect()
}

/// What a ScyllaDB tenant's runtime needs to connect: the operator's
/// cluster settings, and the tenant's role and password unless the
/// cluster has no authentication.
#[derive(Clone, Copy, Debug)]
pub struct ScyllaAccess<'a> {
    pub settings: &'a ScyllaSettings,
    pub login: Option<(&'a str, &'a str)>,
}

/// Builds the Secret with the tenant's CQL role, its password and the
/// certificate authorities of the nodes.
pub fn secret(valid: &ValidTenant, access: ScyllaAccess<'_>) -> Secret {
    let bytes = |text: &str| ByteString(text.as_bytes().to_vec());
    let mut data = BTreeMap::new();
    if let Some((role, password)) = access.login {
        data.insert(USERNAME_KEY.to_owned(), bytes(role));
        data.insert(PASSWORD_KEY.to_owned(), bytes(password));
    }
    if let Some(ca) = &access.settings.tls_ca_pem {
        data.insert(CA_KEY.to_owned(), bytes(ca));
    }
    Secret {
        metadata: object_meta(valid, naming::SCYLLA_SECRET),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Builds the NetworkPolicy that lets the runtime open CQL connections.
/// Contact points may be host names, and the driver connects to every node
/// it discovers, so the policy allows the CQL ports to any address: the
/// standard ones and any other port a contact point names.
pub fn egress_policy(valid: &ValidTenant, settings: &ScyllaSettings) -> NetworkPolicy {
    let named = settings
        .contact_points
        .iter()
        .filter_map(|point| point.rsplit_once(':'))
        .filter_map(|(_, port)| port.parse::<u16>().ok())
        .map(i32::from);
    let ports: std::collections::BTreeSet<i32> = CQL_PORTS
        .into_iter()
        .chain(CQL_TLS_PORTS)
        .chain(named)
        .collect();
    let ports = ports
        .into_iter()
        .map(|number| NetworkPolicyPort {
            protocol: Some("TCP".to_owned()),
            port: Some(IntOrString::Int(number)),
            end_port: None,
        })
        .collect();
    NetworkPolicy {
        metadata: object_meta(valid, naming::ALLOW_SCYLLA_POLICY),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(naming::selector_labels(&valid.tenant_id)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Egress".to_owned()]),
            ingress: None,
            egress: Some(vec![NetworkPolicyEgressRule {
                to: None,
                ports: Some(ports),
            }]),
        }),
    }
}

/// The `store` section of the runtime's configuration file.
#[derive(Serialize, Debug, PartialEq)]
pub struct StoreConfig {
    kind: &'static str,
    contact_points: Vec<String>,
    datacenter: String,
    keyspace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsConfig>,
}

#[derive(Serialize, Debug, PartialEq)]
struct TlsConfig {
    ca_file: String,
}

/// Returns the runtime's `store` section for `scylla`.
pub fn store_config(scylla: &ValidScylla, access: ScyllaAccess<'_>) -> StoreConfig {
    let file = |key: &str| format!("{}/{key}", layout::SCYLLA_DIR);
    let settings = access.settings;
    StoreConfig {
        kind: "scylla",
        contact_points: settings.contact_points.clone(),
        datacenter: settings.datacenter.clone(),
        keyspace: scylla.keyspace.clone(),
        username: access.login.map(|(role, _)| role.to_owned()),
        password_file: access.login.map(|_| file(PASSWORD_KEY)),
        tls: settings.tls_ca_pem.as_ref().map(|_| TlsConfig {
            ca_file: file(CA_KEY),
        }),
    }
}
