//! How traffic reaches the runtime and what traffic the namespace allows:
//! the Service, the optional Ingress and the NetworkPolicies.
//!
//! The policies deny everything in the namespace and then allow two flows:
//! connections to the runtime's HTTP port, and DNS lookups. A tenant with a
//! pre-send hook or webhooks also gets egress to their ports. The policies
//! take effect only where the cluster's network plugin enforces
//! NetworkPolicy.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyEgressRule,
    NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};

use super::layout;
use super::object_meta;
use crate::naming;
use crate::validate::ValidTenant;

/// Port of the Service, which maps to the container's port 8080. Ingress
/// controllers and in-cluster clients connect to it.
pub const SERVICE_PORT: i32 = 80;

/// Label of the cluster DNS pods. kubeadm and the major managed
/// distributions put it on their CoreDNS pods, as they did on kube-dns.
const DNS_POD_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
/// Label the API server sets on every namespace to the namespace's name,
/// in Kubernetes 1.21 and later.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
const DNS_NAMESPACE: &str = "kube-system";
const DNS_PORT: i32 = 53;

/// Builds the ClusterIP Service in front of the runtime pods.
pub fn service(valid: &ValidTenant) -> Service {
    Service {
        metadata: object_meta(valid, naming::RUNTIME),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(naming::selector_labels(&valid.tenant_id)),
            ports: Some(vec![ServicePort {
                name: Some(layout::HTTP_PORT_NAME.to_owned()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String(layout::HTTP_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Builds the Ingress for the tenant's endpoint, or returns `None` when the
/// spec sets no endpoint, in which case an existing Ingress must be
/// deleted. TLS is configured only when the spec names a certificate Secret.
pub fn ingress(valid: &ValidTenant) -> Option<Ingress> {
    let endpoint = valid.endpoint.as_ref()?;
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: naming::RUNTIME.to_owned(),
            port: Some(ServiceBackendPort {
                name: Some(layout::HTTP_PORT_NAME.to_owned()),
                number: None,
            }),
        }),
        resource: None,
    };
    let rule = IngressRule {
        host: Some(endpoint.host.clone()),
        http: Some(HTTPIngressRuleValue {
            paths: vec![HTTPIngressPath {
                path: Some("/".to_owned()),
                path_type: "Prefix".to_owned(),
                backend,
            }],
        }),
    };
    let tls = endpoint.tls_secret_name.as_ref().map(|secret| {
        vec![IngressTLS {
            hosts: Some(vec![endpoint.host.clone()]),
            secret_name: Some(secret.clone()),
        }]
    });
    Some(Ingress {
        metadata: object_meta(valid, naming::RUNTIME),
        spec: Some(IngressSpec {
            ingress_class_name: endpoint.ingress_class_name.clone(),
            rules: Some(vec![rule]),
            tls,
            default_backend: None,
        }),
        ..Ingress::default()
    })
}

/// Builds the policy that selects every pod in the namespace and allows
/// nothing, so any flow not allowed by another policy is denied.
pub fn default_deny_policy(valid: &ValidTenant) -> NetworkPolicy {
    NetworkPolicy {
        metadata: object_meta(valid, naming::DEFAULT_DENY_POLICY),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: None,
            egress: None,
        }),
    }
}

/// Builds the policy that admits TCP connections to the runtime's HTTP port
/// from any source, because both the Ingress controller, whose namespace
/// varies by cluster, and the tenant's in-cluster backends call it.
pub fn allow_ingress_policy(valid: &ValidTenant) -> NetworkPolicy {
    NetworkPolicy {
        metadata: object_meta(valid, naming::ALLOW_INGRESS_POLICY),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(runtime_pods(valid)),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(vec![port("TCP", layout::HTTP_PORT)]),
            }]),
            egress: None,
        }),
    }
}

/// Builds the policy that lets every pod in the namespace query the cluster
/// DNS, over UDP and, for large answers, TCP.
pub fn allow_dns_policy(valid: &ValidTenant) -> NetworkPolicy {
    // Both selectors sit in one peer, so a pod must match both: the DNS
    // pods in kube-system, not pods labelled k8s-app=kube-dns elsewhere.
    let dns_pods = NetworkPolicyPeer {
        namespace_selector: Some(match_labels(NAMESPACE_NAME_LABEL, DNS_NAMESPACE)),
        pod_selector: Some(match_labels(DNS_POD_LABEL.0, DNS_POD_LABEL.1)),
        ip_block: None,
    };
    // Egress to ScyllaDB, to Redis and to the hook and webhooks has
    // policies of its own (scylla.rs, redis.rs, webhooks_egress_policy).
    NetworkPolicy {
        metadata: object_meta(valid, naming::ALLOW_DNS_POLICY),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Egress".to_owned()]),
            ingress: None,
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![dns_pods]),
                ports: Some(vec![port("UDP", DNS_PORT), port("TCP", DNS_PORT)]),
            }]),
        }),
    }
}

/// Builds the policy that lets the runtime pods open TCP connections to the
/// port of each hook and webhook URL, or returns `None` when the tenant has
/// neither. URLs usually name hosts, which can resolve to any address, so
/// the ports are allowed to every destination, as for ScyllaDB.
pub fn webhooks_egress_policy(valid: &ValidTenant) -> Option<NetworkPolicy> {
    let urls = valid
        .hook
        .iter()
        .map(|hook| hook.url.as_str())
        .chain(valid.webhooks.iter().map(|webhook| webhook.url.as_str()));
    let ports: BTreeSet<u16> = urls.filter_map(url_port).collect();
    if ports.is_empty() {
        return None;
    }
    Some(NetworkPolicy {
        metadata: object_meta(valid, naming::ALLOW_WEBHOOKS_POLICY),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(runtime_pods(valid)),
            policy_types: Some(vec!["Egress".to_owned()]),
            ingress: None,
            egress: Some(vec![NetworkPolicyEgressRule {
                to: None,
                ports: Some(
                    ports
                        .into_iter()
                        .map(|number| port("TCP", i32::from(number)))
                        .collect(),
                ),
            }]),
        }),
    })
}

/// Returns the TCP port of an `http` or `https` URL that the runtime
/// accepted: the port it names, or the scheme's default. It follows the
/// WHATWG URL syntax as far as the port goes: user info before `@` is
/// skipped, an IPv6 host is in brackets, and `\` ends the host like `/`.
fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '\\', '?', '#']).next()?;
    let host_and_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let named = match host_and_port.rsplit_once(':') {
        Some((_, port)) if !port.contains(']') && !port.is_empty() => Some(port),
        _ => None,
    };
    match named {
        Some(port) => port.parse().ok(),
        None if scheme.eq_ignore_ascii_case("https") => Some(443),
        None => Some(80),
    }
}

fn runtime_pods(valid: &ValidTenant) -> LabelSelector {
    LabelSelector {
        match_labels: Some(naming::selector_labels(&valid.tenant_id)),
        match_expressions: None,
    }
}

fn match_labels(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        match_expressions: None,
    }
}

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(number)),
        end_port: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::{valid_tenant, valid_tenant_from};

    fn ports(rules: &[NetworkPolicyPort]) -> Vec<(String, IntOrString)> {
        rules
            .iter()
            .map(|rule| (rule.protocol.clone().unwrap(), rule.port.clone().unwrap()))
            .collect()
    }

    #[test]
    fn service_maps_port_80_to_http() {
        let service = service(&valid_tenant());
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.selector, Some(naming::selector_labels("chotot")));
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.name.as_deref(), Some("http"));
        assert_eq!(port.port, 80);
        assert_eq!(
            port.target_port,
            Some(IntOrString::String("http".to_owned()))
        );
    }

    #[test]
    fn no_ingress_without_endpoint() {
        assert_eq!(ingress(&valid_tenant()), None);
    }

    #[test]
    fn ingress_routes_host_to_service() {
        let valid = valid_tenant_from(
            "{tenantId: chotot, endpoint: {host: chat.chotot.example, ingressClassName: nginx}}",
        );
        let ingress = ingress(&valid).unwrap();
        assert_eq!(ingress.metadata.namespace.as_deref(), Some("parley-chotot"));
        let spec = ingress.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rules = spec.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].host.as_deref(), Some("chat.chotot.example"));
        let path = &rules[0].http.as_ref().unwrap().paths[0];
        assert_eq!(path.path.as_deref(), Some("/"));
        assert_eq!(path.path_type, "Prefix");
        let backend = path.backend.service.as_ref().unwrap();
        assert_eq!(backend.name, "chat-runtime");
        assert_eq!(backend.port.as_ref().unwrap().name.as_deref(), Some("http"));
    }

    #[test]
    fn ingress_without_secret_has_no_tls() {
        let valid = valid_tenant_from("{tenantId: chotot, endpoint: {host: chat.chotot.example}}");
        let spec = ingress(&valid).unwrap().spec.unwrap();
        assert_eq!(spec.tls, None);
        assert_eq!(spec.ingress_class_name, None);
    }

    #[test]
    fn ingress_with_secret_has_tls() {
        let valid = valid_tenant_from(
            "{tenantId: chotot, endpoint: {host: chat.chotot.example, tlsSecretName: chat-tls}}",
        );
        let tls = ingress(&valid).unwrap().spec.unwrap().tls.unwrap();
        assert_eq!(tls.len(), 1);
        assert_eq!(tls[0].hosts, Some(vec!["chat.chotot.example".to_owned()]));
        assert_eq!(tls[0].secret_name.as_deref(), Some("chat-tls"));
    }

    #[test]
    fn default_deny_selects_all_pods_both_ways() {
        let policy = default_deny_policy(&valid_tenant());
        let spec = policy.spec.unwrap();
        assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
        );
        assert_eq!(spec.ingress, None);
        assert_eq!(spec.egress, None);
    }

    #[test]
    fn allow_ingress_admits_only_http_port() {
        let policy = allow_ingress_policy(&valid_tenant());
        let spec = policy.spec.unwrap();
        let selector = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selector, naming::selector_labels("chotot"));
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            ports(rules[0].ports.as_ref().unwrap()),
            [("TCP".to_owned(), IntOrString::Int(8080))]
        );
        assert_eq!(spec.egress, None);
    }

    #[test]
    fn allow_dns_reaches_only_cluster_dns() {
        let policy = allow_dns_policy(&valid_tenant());
        let spec = policy.spec.unwrap();
        assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
        assert_eq!(spec.policy_types, Some(vec!["Egress".to_owned()]));
        assert_eq!(spec.ingress, None);
        let rules = spec.egress.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            ports(rules[0].ports.as_ref().unwrap()),
            [
                ("UDP".to_owned(), IntOrString::Int(53)),
                ("TCP".to_owned(), IntOrString::Int(53)),
            ]
        );
        let peers = rules[0].to.as_ref().unwrap();
        assert_eq!(peers.len(), 1, "one peer, so both selectors must match");
        let namespaces = peers[0]
            .namespace_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        assert_eq!(namespaces["kubernetes.io/metadata.name"], "kube-system");
        let pods = peers[0].pod_selector.clone().unwrap().match_labels.unwrap();
        assert_eq!(pods["k8s-app"], "kube-dns");
        assert_eq!(peers[0].ip_block, None);
    }

    #[test]
    fn url_port_follows_scheme_and_authority() {
        let cases = [
            ("https://shop.example/x", Some(443)),
            ("HTTPS://shop.example", Some(443)),
            ("http://shop.example?q=1", Some(80)),
            ("http://shop.example:8080/x", Some(8080)),
            ("https://user:pw@shop.example/x", Some(443)),
            ("https://user:pw@shop.example:8443", Some(8443)),
            ("http://[::1]/x", Some(80)),
            ("http://[::1]:9000/x", Some(9000)),
            ("http://shop.example:/x", Some(80)),
            ("http://shop.example:81\\x", Some(81)),
            ("http://shop.example/a:99", Some(80)),
            ("http://shop.example#a:99", Some(80)),
        ];
        for (url, expected) in cases {
            assert_eq!(url_port(url), expected, "{url}");
        }
    }

    #[test]
    fn webhooks_policy_allows_each_port_once() {
        assert_eq!(webhooks_egress_policy(&valid_tenant()), None);
        let valid = valid_tenant_from(
            "{tenantId: chotot, moderation: {hook: {url: 'https://shop.example/check', onFailure: Open}}, webhooks: [{name: a, url: 'http://a.shop.svc:8080/e'}, {name: b, url: 'https://b.example/e'}]}",
        );
        let policy = webhooks_egress_policy(&valid).unwrap();
        assert_eq!(
            policy.metadata.name.as_deref(),
            Some("chat-runtime-allow-webhooks")
        );
        let spec = policy.spec.unwrap();
        let selector = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selector, naming::selector_labels("chotot"));
        assert_eq!(spec.policy_types, Some(vec!["Egress".to_owned()]));
        let rules = spec.egress.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].to, None);
        assert_eq!(
            ports(rules[0].ports.as_ref().unwrap()),
            [
                ("TCP".to_owned(), IntOrString::Int(443)),
                ("TCP".to_owned(), IntOrString::Int(8080)),
            ]
        );
    }

    #[test]
    fn policies_are_namespaced() {
        let valid = valid_tenant();
        for policy in [
            default_deny_policy(&valid),
            allow_ingress_policy(&valid),
            allow_dns_policy(&valid),
        ] {
            assert_eq!(policy.metadata.namespace.as_deref(), Some("parley-chotot"));
            assert_eq!(policy.metadata.labels, Some(naming::labels("chotot")));
        }
    }
}
