//! The operator against a real API server: a ChatTenant becomes a tenant
//! namespace with its objects, reports Ready, and cleans up by policy.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use parley_operator::crd::ChatTenant;
use parley_operator::settings::OperatorSettings;
use parley_tests::cluster::Cluster;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Creates the ChatTenant CRD and waits until the server serves it.
async fn install_crd(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(
        &PostParams::default(),
        &parley_operator::schema::chat_tenant_crd(),
    )
    .await
    .unwrap();
    let established = await_condition(
        crds,
        "chattenants.parley.dev",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(WAIT, established)
        .await
        .unwrap()
        .unwrap();
}

/// Starts a control plane, installs the CRD and runs the operator in this
/// process until the returned sender is dropped.
async fn start() -> (Cluster, tokio::sync::oneshot::Sender<()>) {
    start_with(OperatorSettings::default()).await
}

async fn start_with(settings: OperatorSettings) -> (Cluster, tokio::sync::oneshot::Sender<()>) {
    let cluster = Cluster::start().await;
    install_crd(&cluster.client).await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = cluster.client.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        parley_operator::controller::run(client, settings, shutdown).await;
    });
    (cluster, stop)
}

fn tenant(name: &str, spec: serde_json::Value) -> ChatTenant {
    serde_json::from_value(json!({
        "apiVersion": "parley.dev/v1alpha1",
        "kind": "ChatTenant",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reasons of the Events recorded about the ChatTenant `name`. Events of
/// cluster-scoped objects live in the `default` namespace.
async fn event_reasons(client: &kube::Client, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| {
            event
                .regarding
                .as_ref()
                .and_then(|regarding| regarding.name.as_deref())
                == Some(name)
        })
        .filter_map(|event| event.reason)
        .collect()
}

async fn wait_for_event(client: &kube::Client, name: &str, reason: &str) {
    wait_for(&format!("a {reason} Event"), || async {
        event_reasons(client, name)
            .await
            .iter()
            .any(|r| r == reason)
            .then_some(())
    })
    .await;
}

fn condition(tenant: &ChatTenant, kind: &str) -> Option<String> {
    let status = tenant.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

/// Marks the runtime Deployment available, as a kubelet and the deployment
/// controller would; neither runs in the test cluster.
async fn make_available(client: &kube::Client, namespace: &str) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments.get("chat-runtime").await.unwrap();
    let status = DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(1),
        ready_replicas: Some(1),
        available_replicas: Some(1),
        updated_replicas: Some(1),
        conditions: Some(vec![DeploymentCondition {
            type_: "Available".into(),
            status: "True".into(),
            ..DeploymentCondition::default()
        }]),
        ..DeploymentStatus::default()
    };
    deployments
        .patch_status(
            "chat-runtime",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn tenant_becomes_ready_and_is_deleted() {
    let (cluster, _stop) = start().await;
    let client = cluster.client.clone();
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &tenant(
                "acme",
                json!({"tenantId": "acme", "deletionPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();

    // Every object appears in the tenant namespace.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = wait_for("the tenant namespace", || {
        let namespaces = namespaces.clone();
        async move { namespaces.get_opt("parley-acme").await.unwrap() }
    })
    .await;
    let labels = namespace.metadata.labels.unwrap();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["parley.dev/tenant-id"], "acme");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "parley-acme");
    let deployment = wait_for("the runtime Deployment", || {
        let deployments = deployments.clone();
        async move { deployments.get_opt("chat-runtime").await.unwrap() }
    })
    .await;
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    // The Service is applied after the Deployment, so it may land a moment
    // later.
    let name = "chat-runtime";
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "parley-acme");
    assert!(config_maps.get_opt(name).await.unwrap().is_some());
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), "parley-acme");
    assert!(accounts.get_opt(name).await.unwrap().is_some());
    let services = Api::<Service>::namespaced(client.clone(), "parley-acme");
    wait_for("the runtime Service", || {
        let services = services.clone();
        async move { services.get_opt(name).await.unwrap() }
    })
    .await;
    let secret = Api::<Secret>::namespaced(client.clone(), "parley-acme")
        .get("chat-runtime-credentials")
        .await
        .unwrap();
    let secret_data = secret.data.unwrap();
    assert!(secret_data["api-secret"].0.len() >= 32);

    // Not Ready until the Deployment reports an available pod.
    let pending = tenants.get("acme").await.unwrap();
    assert_ne!(condition(&pending, "Ready").as_deref(), Some("True"));
    make_available(&client, "parley-acme").await;
    let ready = wait_for("Ready=True", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("acme").await.unwrap();
            (condition(&tenant, "Ready").as_deref() == Some("True")).then_some(tenant)
        }
    })
    .await;
    assert_eq!(condition(&ready, "KindsServed").as_deref(), Some("True"));
    let served = parley_operator::controller::served::check(&client)
        .await
        .unwrap();
    // Kubernetes 1.20 lacks only policy/v1 and autoscaling/v2, which
    // tenants with one replica do not need, so KindsServed stays True.
    let missing: Vec<&str> = served.iter().map(|kind| kind.kind).collect();
    assert!(
        missing
            .iter()
            .all(|kind| parley_operator::controller::served::REPLICA_KINDS.contains(kind)),
        "kinds reported missing on a 1.20 server: {served:?}"
    );
    let status = ready.status.unwrap();
    assert_eq!(status.namespace.as_deref(), Some("parley-acme"));
    assert_eq!(status.observed_generation, ready.metadata.generation);

    wait_for_event(&client, "acme", "Created").await;
    wait_for_event(&client, "acme", "Ready").await;

    // The operator's metrics count the reconciles. Every test of this file
    // shares the process-wide metrics, so only lower bounds are checked.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, parley_operator::telemetry::router()).await });
    let text = reqwest::get(format!("http://{metrics_address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let reconciles = text
        .lines()
        .find_map(|line| line.strip_prefix("parley_operator_reconciles_total "))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(reconciles > 0, "{text}");
    assert!(
        text.contains("parley_operator_tenants{ready=\"True\"}"),
        "{text}"
    );

    // The credentials are generated once and kept.
    let again = Api::<Secret>::namespaced(client.clone(), "parley-acme")
        .get("chat-runtime-credentials")
        .await
        .unwrap();
    assert_eq!(again.data.unwrap()["api-secret"], secret_data["api-secret"]);

    // Delete policy: the namespace goes with the tenant.
    tenants
        .delete("acme", &DeleteParams::default())
        .await
        .unwrap();
    wait_for_event(&client, "acme", "Deleting").await;
    wait_for("the tenant namespace to be deleted", || {
        let namespaces = namespaces.clone();
        async move {
            namespaces
                .get_opt("parley-acme")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn invalid_spec_stalls_with_field_named() {
    let (cluster, _stop) = start().await;
    let tenants: Api<ChatTenant> = Api::all(cluster.client.clone());
    let spec = json!({"tenantId": "globex", "runtime": {"replicas": 3}});
    tenants
        .create(&PostParams::default(), &tenant("globex", spec))
        .await
        .unwrap();

    let stalled = wait_for("Stalled=True", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("globex").await.unwrap();
            (condition(&tenant, "Stalled").as_deref() == Some("True")).then_some(tenant)
        }
    })
    .await;
    let message = stalled
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap()
        .message;
    assert!(message.contains("spec.runtime.replicas"), "{message}");
    wait_for_event(&cluster.client, "globex", "Stalled").await;

    // Nothing was created for it.
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    assert!(namespaces.get_opt("parley-globex").await.unwrap().is_none());
}

#[tokio::test]
async fn retained_namespace_is_adopted_again() {
    let (cluster, _stop) = start().await;
    let client = cluster.client.clone();
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &tenant("initech", json!({"tenantId": "initech"})),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "parley-initech");
    let first = wait_for("the credentials Secret", || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("chat-runtime-credentials").await.unwrap() }
    })
    .await;

    tenants
        .delete("initech", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the ChatTenant to be gone", || {
        let tenants = tenants.clone();
        async move {
            tenants
                .get_opt("initech")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    let retained = namespaces.get("parley-initech").await.unwrap();
    assert!(retained.metadata.deletion_timestamp.is_none());
    assert!(
        retained
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        retained.metadata.annotations.unwrap()["parley.dev/retained"],
        "true"
    );

    // A new ChatTenant with the same tenant id adopts the namespace and
    // keeps its credentials.
    tenants
        .create(
            &PostParams::default(),
            &tenant("initech-2", json!({"tenantId": "initech"})),
        )
        .await
        .unwrap();
    let adopted = wait_for("the namespace to be adopted", || {
        let namespaces = namespaces.clone();
        async move {
            let namespace = namespaces.get("parley-initech").await.unwrap();
            let owners = namespace
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default();
            owners
                .iter()
                .any(|owner| owner.name == "initech-2")
                .then_some(namespace)
        }
    })
    .await;
    let annotations = adopted.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("parley.dev/retained"),
        "{annotations:?}"
    );
    let kept = secrets.get("chat-runtime-credentials").await.unwrap();
    assert_eq!(kept.data, first.data);
}

#[tokio::test]
async fn hand_edits_and_deletes_are_undone() {
    let (cluster, _stop) = start().await;
    let client = cluster.client.clone();
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &tenant("hooli", json!({"tenantId": "hooli"})),
        )
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "parley-hooli");
    let original = wait_for("the runtime ConfigMap", || {
        let config_maps = config_maps.clone();
        async move { config_maps.get_opt("chat-runtime").await.unwrap() }
    })
    .await;

    // A hand edit of an owned field is put back.
    let edit = json!({"data": {"config.yaml": "tenants: []\n"}});
    config_maps
        .patch(
            "chat-runtime",
            &PatchParams::default(),
            &Patch::Merge(&edit),
        )
        .await
        .unwrap();
    wait_for("the ConfigMap to be restored", || {
        let config_maps = config_maps.clone();
        let expected = original.data.clone();
        async move {
            let live = config_maps.get("chat-runtime").await.unwrap();
            (live.data == expected).then_some(())
        }
    })
    .await;

    wait_for_event(&client, "hooli", "DriftCorrected").await;

    // A deleted object is created again.
    let services: Api<Service> = Api::namespaced(client.clone(), "parley-hooli");
    let old_uid = services.get("chat-runtime").await.unwrap().metadata.uid;
    services
        .delete("chat-runtime", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the Service to be re-created", || {
        let services = services.clone();
        let old_uid = old_uid.clone();
        async move {
            let service = services.get_opt("chat-runtime").await.unwrap()?;
            (service.metadata.uid != old_uid).then_some(())
        }
    })
    .await;
}

/// resourceVersion of every object of the tenant, and of the ChatTenant.
async fn versions(
    client: &kube::Client,
    name: &str,
    namespace: &str,
) -> Vec<(String, Option<String>)> {
    let mut versions = Vec::new();
    let tenant = Api::<ChatTenant>::all(client.clone())
        .get(name)
        .await
        .unwrap();
    versions.push((String::from("ChatTenant"), tenant.metadata.resource_version));
    let ns = Api::<Namespace>::all(client.clone())
        .get(namespace)
        .await
        .unwrap();
    versions.push((String::from("Namespace"), ns.metadata.resource_version));
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get("chat-runtime")
        .await
        .unwrap();
    versions.push((
        String::from("Deployment"),
        deployment.metadata.resource_version,
    ));
    let config = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get("chat-runtime")
        .await
        .unwrap();
    versions.push((String::from("ConfigMap"), config.metadata.resource_version));
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get("chat-runtime-credentials")
        .await
        .unwrap();
    versions.push((String::from("Secret"), secret.metadata.resource_version));
    let service = Api::<Service>::namespaced(client.clone(), namespace)
        .get("chat-runtime")
        .await
        .unwrap();
    versions.push((String::from("Service"), service.metadata.resource_version));
    versions
}

#[tokio::test]
async fn restarted_operator_writes_nothing() {
    let (cluster, stop) = start().await;
    let client = cluster.client.clone();
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &tenant("umbrella", json!({"tenantId": "umbrella"})),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "parley-umbrella");
    wait_for("the runtime Deployment", || {
        let deployments = deployments.clone();
        async move { deployments.get_opt("chat-runtime").await.unwrap() }
    })
    .await;
    make_available(&client, "parley-umbrella").await;
    wait_for("Ready=True", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("umbrella").await.unwrap();
            (condition(&tenant, "Ready").as_deref() == Some("True")).then_some(())
        }
    })
    .await;
    drop(stop);
    let before = versions(&client, "umbrella", "parley-umbrella").await;

    // A new operator lists every tenant at start and reconciles it at once;
    // NOTE: a quiet window is the only way to observe "no write", so this
    // waits a fixed time for that first reconcile to finish.
    let (restart, stopped) = tokio::sync::oneshot::channel::<()>();
    let (operator_client, writes) = cluster.counting_client().await;
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        parley_operator::controller::run(operator_client, OperatorSettings::default(), shutdown)
            .await;
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = versions(&client, "umbrella", "parley-umbrella").await;
    assert_eq!(before, after);
    assert_eq!(
        writes.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "write requests after restart"
    );
    drop(restart);
}

#[tokio::test]
async fn only_the_leader_reconciles() {
    use parley_operator::controller::leader::LeaderElector;

    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    install_crd(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let system: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "parley-system"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &system)
        .await
        .unwrap();

    let mut replicas = Vec::new();
    for identity in ["replica-a", "replica-b"] {
        let (replica_client, writes) = cluster.counting_client().await;
        let elector = LeaderElector::new(
            replica_client.clone(),
            "parley-system",
            "parley-operator",
            identity,
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        tokio::spawn(parley_operator::controller::run_elected(
            replica_client,
            OperatorSettings::default(),
            elector,
            shutdown,
        ));
        replicas.push((identity, writes, stop));
    }

    let tenants: Api<ChatTenant> = Api::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &tenant("acme", json!({"tenantId": "acme"})),
        )
        .await
        .unwrap();
    wait_for("the tenant namespace", || {
        let namespaces = namespaces.clone();
        async move { namespaces.get_opt("parley-acme").await.unwrap() }
    })
    .await;

    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "parley-system");
    let lease = leases.get("parley-operator").await.unwrap();
    let leader = lease.spec.unwrap().holder_identity.unwrap();
    let counts: Vec<(&str, usize)> = replicas
        .iter()
        .map(|(identity, writes, _)| (*identity, writes.load(std::sync::atomic::Ordering::SeqCst)))
        .collect();
    for (identity, count) in &counts {
        if *identity == leader {
            assert!(
                *count > 0,
                "the leader {identity} wrote nothing: {counts:?}"
            );
        } else {
            assert_eq!(*count, 0, "the follower {identity} wrote: {counts:?}");
        }
    }

    // When the leader stops, the other replica takes over once the Lease
    // expires, and reconciles new tenants.
    let leader_index = replicas
        .iter()
        .position(|(identity, _, _)| *identity == leader)
        .unwrap();
    let (_, _, stop) = replicas.remove(leader_index);
    drop(stop);
    tenants
        .create(
            &PostParams::default(),
            &tenant("globex", json!({"tenantId": "globex"})),
        )
        .await
        .unwrap();
    wait_for("the follower to take over", || {
        let namespaces = namespaces.clone();
        async move { namespaces.get_opt("parley-globex").await.unwrap() }
    })
    .await;
    let successor = leases
        .get("parley-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    assert_eq!(successor, replicas[0].0);
}

/// Key ids in the credentials Secret, current first.
async fn key_ids(secrets: &Api<Secret>) -> Vec<String> {
    let secret = secrets.get("chat-runtime-credentials").await.unwrap();
    let data = secret.data.unwrap();
    let current = String::from_utf8(data["api-key-id"].0.clone()).unwrap();
    let mut ids = vec![current.clone()];
    for key in data.keys().filter_map(|key| key.strip_prefix("key.")) {
        if key != current {
            ids.push(key.to_owned());
        }
    }
    ids
}

#[tokio::test]
async fn rotation_overlaps_then_drops_the_old_key() {
    let settings = OperatorSettings {
        rotation_overlap: Duration::from_secs(3),
        ..OperatorSettings::default()
    };
    let (cluster, _stop) = start_with(settings).await;
    let client = cluster.client.clone();
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &tenant("wayne", json!({"tenantId": "wayne"})),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "parley-wayne");
    wait_for("the credentials Secret", || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("chat-runtime-credentials").await.unwrap() }
    })
    .await;
    let original = key_ids(&secrets).await;
    assert_eq!(original.len(), 1);

    let request =
        json!({"metadata": {"annotations": {"parley.dev/rotate-credentials": "2026-12-04"}}});
    tenants
        .patch("wayne", &PatchParams::default(), &Patch::Merge(&request))
        .await
        .unwrap();
    let overlapping = wait_for("a second key", || {
        let secrets = secrets.clone();
        async move {
            let ids = key_ids(&secrets).await;
            (ids.len() == 2).then_some(ids)
        }
    })
    .await;
    assert_ne!(overlapping[0], original[0], "the new key signs");
    assert_eq!(overlapping[1], original[0], "the old key is still accepted");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "parley-wayne");
    wait_for("the runtime config to list both keys", || {
        let config_maps = config_maps.clone();
        let old = original[0].clone();
        let new = overlapping[0].clone();
        async move {
            let config =
                config_maps.get("chat-runtime").await.unwrap().data.unwrap()["config.yaml"].clone();
            (config.contains(&old) && config.contains(&new)).then_some(())
        }
    })
    .await;

    // After the overlap window only the new key is left.
    let after = wait_for("the old key to be dropped", || {
        let secrets = secrets.clone();
        async move {
            let ids = key_ids(&secrets).await;
            (ids.len() == 1).then_some(ids)
        }
    })
    .await;
    assert_eq!(after[0], overlapping[0]);
}

#[tokio::test]
async fn image_and_limit_changes_roll_out() {
    let (cluster, _stop) = start().await;
    let client = cluster.client.clone();
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &tenant("stark", json!({"tenantId": "stark"})),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "parley-stark");
    let before = wait_for("the runtime Deployment", || {
        let deployments = deployments.clone();
        async move { deployments.get_opt("chat-runtime").await.unwrap() }
    })
    .await;
    let checksum = |deployment: &Deployment| {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["parley.dev/config-checksum"]
            .clone()
    };
    let image = |deployment: &Deployment| {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap()
    };
    let old_checksum = checksum(&before);

    let change = json!({"spec": {"runtime": {"image": "registry.example/chat-runtime:2.0.0", "limits": {"maxMessageBytes": 2048}}}});
    tenants
        .patch("stark", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    let after = wait_for("the new image in the pod template", || {
        let deployments = deployments.clone();
        async move {
            let deployment = deployments.get("chat-runtime").await.unwrap();
            (image(&deployment) == "registry.example/chat-runtime:2.0.0").then_some(deployment)
        }
    })
    .await;
    assert_ne!(
        checksum(&after),
        old_checksum,
        "a config change must change the pod template"
    );
    let config = Api::<ConfigMap>::namespaced(client.clone(), "parley-stark")
        .get("chat-runtime")
        .await
        .unwrap();
    assert!(config.data.unwrap()["config.yaml"].contains("max_message_bytes: 2048"));
}

#[tokio::test]
async fn invalid_spec_makes_no_request_storm() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    install_crd(&client).await;
    let (operator_client, writes) = cluster.counting_client().await;
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        parley_operator::controller::run(operator_client, OperatorSettings::default(), shutdown)
            .await;
    });

    let tenants: Api<ChatTenant> = Api::all(client.clone());
    let spec = json!({"tenantId": "oscorp", "runtime": {"replicas": 2}});
    tenants
        .create(&PostParams::default(), &tenant("oscorp", spec))
        .await
        .unwrap();
    wait_for("Stalled=True", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("oscorp").await.unwrap();
            (condition(&tenant, "Stalled").as_deref() == Some("True")).then_some(())
        }
    })
    .await;
    let settled = writes.load(std::sync::atomic::Ordering::SeqCst);

    // NOTE: a request storm can only be seen over time, so this watches a
    // fixed window after the tenant stalled.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = writes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(settled <= 4, "writes until stalled: {settled}");
    assert_eq!(later, settled, "writes while the spec did not change");
}

/// Number of tenants in the scale test.
const MANY_TENANTS: usize = 200;

#[tokio::test]
async fn many_tenants_settle_into_a_quiet_state() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    install_crd(&client).await;
    let (operator_client, writes) = cluster.counting_client().await;
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        parley_operator::controller::run(operator_client, OperatorSettings::default(), shutdown)
            .await;
    });

    let started = std::time::Instant::now();
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    for index in 0..MANY_TENANTS {
        let id = format!("t{index:03}");
        tenants
            .create(
                &PostParams::default(),
                &tenant(&id, json!({"tenantId": id})),
            )
            .await
            .unwrap();
    }
    let long_wait = Duration::from_secs(600);
    let deadline = tokio::time::Instant::now() + long_wait;
    let mut made_available = std::collections::BTreeSet::new();
    loop {
        let deployments: Api<Deployment> = Api::all(client.clone());
        for deployment in deployments.list(&Default::default()).await.unwrap() {
            let namespace = deployment.metadata.namespace.clone().unwrap();
            if made_available.insert(namespace.clone()) {
                make_available(&client, &namespace).await;
            }
        }
        let ready = tenants
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|tenant| condition(tenant, "Ready").as_deref() == Some("True"))
            .count();
        if ready == MANY_TENANTS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {ready} of {MANY_TENANTS} tenants Ready"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let to_ready = started.elapsed();
    let writes_to_ready = writes.load(std::sync::atomic::Ordering::SeqCst);

    // NOTE: a quiet state can only be seen over time: this watches a fixed
    // window after every tenant became Ready.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let quiet_writes = writes.load(std::sync::atomic::Ordering::SeqCst) - writes_to_ready;
    // The operator runs inside this test process, so the process's resident
    // memory bounds the operator's from above.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let resident = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: unknown");
    eprintln!(
        "{MANY_TENANTS} tenants Ready in {:.1} s with {writes_to_ready} write requests; {quiet_writes} writes in the next 10 s; test process {resident}",
        to_ready.as_secs_f64()
    );
    assert_eq!(quiet_writes, 0, "writes in steady state");
}

#[tokio::test]
async fn foreign_namespace_and_changed_tenant_id_stall() {
    let (cluster, _stop) = start().await;
    let client = cluster.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let foreign: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "parley-acme"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    let tenants: Api<ChatTenant> = Api::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &tenant("acme", json!({"tenantId": "acme"})),
        )
        .await
        .unwrap();
    let stalled = wait_for("Stalled=True for a foreign namespace", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("acme").await.unwrap();
            (condition(&tenant, "Stalled").as_deref() == Some("True")).then_some(tenant)
        }
    })
    .await;
    let message = &stalled
        .status
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap()
        .message
        .clone();
    assert!(message.contains("parley-acme"), "{message}");
    let untouched = namespaces.get("parley-acme").await.unwrap();
    assert!(
        untouched
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    // A changed tenantId is refused, since the 1.20 server ignores the
    // CRD's immutability rule.
    tenants
        .create(
            &PostParams::default(),
            &tenant("globex", json!({"tenantId": "globex"})),
        )
        .await
        .unwrap();
    wait_for("the globex namespace", || {
        let namespaces = namespaces.clone();
        async move { namespaces.get_opt("parley-globex").await.unwrap() }
    })
    .await;
    wait_for("globex status to name its namespace", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("globex").await.unwrap();
            tenant.status.and_then(|status| status.namespace)
        }
    })
    .await;
    let change = json!({"spec": {"tenantId": "initech"}});
    tenants
        .patch("globex", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    let refused = wait_for("Stalled=True for a changed tenantId", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("globex").await.unwrap();
            (condition(&tenant, "Stalled").as_deref() == Some("True")).then_some(tenant)
        }
    })
    .await;
    let message = refused
        .status
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap()
        .message
        .clone();
    assert!(message.contains("spec.tenantId"), "{message}");
    // NOTE: "never created" can only be watched over a window; the status
    // write above triggers another reconcile within it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        namespaces
            .get_opt("parley-initech")
            .await
            .unwrap()
            .is_none()
    );
}

/// Returns the condition of type `kind` with its reason and message.
fn full_condition(
    tenant: &ChatTenant,
    kind: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    tenant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .cloned()
}

#[tokio::test]
async fn scylla_tenant_without_cluster_settings_stalls() {
    let (cluster, _stop) = start().await;
    let tenants: Api<ChatTenant> = Api::all(cluster.client.clone());
    let spec = json!({"tenantId": "initech", "storage": {"scylla": {"replication": {"dc1": 3}}}});
    tenants
        .create(&PostParams::default(), &tenant("initech", spec))
        .await
        .unwrap();

    let stalled = wait_for("Stalled=True", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("initech").await.unwrap();
            (condition(&tenant, "Stalled").as_deref() == Some("True")).then_some(tenant)
        }
    })
    .await;
    let stalled_condition = full_condition(&stalled, "Stalled").unwrap();
    assert_eq!(stalled_condition.reason, "ScyllaNotConfigured");
    assert!(
        stalled_condition
            .message
            .contains("--scylla-contact-points"),
        "{}",
        stalled_condition.message
    );
    let effective = stalled.status.unwrap().effective.unwrap();
    assert_eq!(effective.keyspace.as_deref(), Some("parley_initech"));

    // Nothing was created, so no runtime starts without its keyspace.
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    assert!(
        namespaces
            .get_opt("parley-initech")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn unreachable_scylla_is_retried_not_stalled() {
    // Binding and dropping a listener leaves a loopback port with nothing
    // behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = OperatorSettings {
        scylla: Some(parley_operator::settings::ScyllaSettings {
            contact_points: vec![format!("127.0.0.1:{port}")],
            datacenter: "dc1".to_owned(),
            credentials_secret: None,
            credentials_namespace: "parley-system".to_owned(),
            tls_ca_pem: None,
            operator_replication_factor: 1,
        }),
        ..OperatorSettings::default()
    };
    let (cluster, _stop) = start_with(settings).await;
    let tenants: Api<ChatTenant> = Api::all(cluster.client.clone());
    let spec = json!({"tenantId": "hooli", "storage": {"scylla": {"replication": {"dc1": 1}}}});
    tenants
        .create(&PostParams::default(), &tenant("hooli", spec))
        .await
        .unwrap();

    let pending = wait_for("KeyspaceReady=False", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("hooli").await.unwrap();
            (condition(&tenant, "KeyspaceReady").as_deref() == Some("False")).then_some(tenant)
        }
    })
    .await;
    let keyspace = full_condition(&pending, "KeyspaceReady").unwrap();
    assert_eq!(keyspace.reason, "ScyllaUnavailable");
    assert!(
        keyspace.message.contains(&port.to_string()),
        "{}",
        keyspace.message
    );
    assert_eq!(condition(&pending, "Stalled").as_deref(), Some("False"));
    assert_eq!(condition(&pending, "Reconciling").as_deref(), Some("True"));
    assert_eq!(condition(&pending, "Ready").as_deref(), Some("False"));
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    assert!(namespaces.get_opt("parley-hooli").await.unwrap().is_none());
}

/// Stands in for a ScyllaDB cluster, which the test machine lacks: every
/// keyspace is ready at once, without authentication. The reconciler's
/// steps after provisioning, which the tests below cover, do not depend on
/// ScyllaDB.
struct ReadyKeyspaces {
    settings: parley_operator::settings::ScyllaSettings,
}

impl ReadyKeyspaces {
    fn shared() -> std::sync::Arc<dyn parley_operator::keyspace::Provisioner> {
        std::sync::Arc::new(Self {
            settings: parley_operator::settings::ScyllaSettings {
                contact_points: vec!["10.0.0.5:9042".to_owned()],
                datacenter: "dc1".to_owned(),
                credentials_secret: None,
                credentials_namespace: "parley-system".to_owned(),
                tls_ca_pem: None,
                operator_replication_factor: 1,
            },
        })
    }
}

impl parley_operator::keyspace::Provisioner for ReadyKeyspaces {
    fn settings(&self) -> &parley_operator::settings::ScyllaSettings {
        &self.settings
    }

    fn uses_roles(&self) -> bool {
        false
    }

    fn ensure<'a>(
        &'a self,
        _tenant_id: &'a str,
        _scylla: &'a parley_operator::validate::ValidScylla,
        _login: Option<(&'a str, &'a str, bool)>,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<parley_operator::keyspace::Provisioned, parley_operator::keyspace::KeyspaceError>,
    > {
        Box::pin(async {
            Ok(parley_operator::keyspace::Provisioned {
                role: None,
                schema_version: 1,
                altered_replication: false,
            })
        })
    }

    fn drop_role<'a>(
        &'a self,
        _scylla: &'a parley_operator::validate::ValidScylla,
        _role: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), parley_operator::keyspace::KeyspaceError>>
    {
        Box::pin(async { Ok(()) })
    }

    fn drop_tenant<'a>(
        &'a self,
        _tenant_id: &'a str,
        _scylla: &'a parley_operator::validate::ValidScylla,
    ) -> futures_util::future::BoxFuture<'a, Result<bool, parley_operator::keyspace::KeyspaceError>>
    {
        Box::pin(async { Ok(true) })
    }
}

/// Starts a control plane and the operator with ScyllaDB tenants served by
/// [`ReadyKeyspaces`], and creates the operator's namespace, where Redis
/// password Secrets live.
async fn start_with_keyspaces(
    settings: OperatorSettings,
) -> (Cluster, tokio::sync::oneshot::Sender<()>) {
    let cluster = Cluster::start().await;
    install_crd(&cluster.client).await;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let mut operator_namespace = Namespace::default();
    operator_namespace.metadata.name = Some(settings.operator_namespace.clone());
    namespaces
        .create(&PostParams::default(), &operator_namespace)
        .await
        .unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = cluster.client.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        parley_operator::controller::run_with_keyspaces(
            client,
            settings,
            Some(ReadyKeyspaces::shared()),
            shutdown,
        )
        .await;
    });
    (cluster, stop)
}

/// Returns whether the API server serves `plural` in `api_version`, such
/// as policy/v1 PodDisruptionBudgets, which Kubernetes 1.20 lacks.
async fn serves(client: &kube::Client, api_version: &str, plural: &str) -> bool {
    match client.list_api_group_resources(api_version).await {
        Ok(list) => list
            .resources
            .iter()
            .any(|resource| resource.name == plural),
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(error) => panic!("failed to list {api_version}: {error}"),
    }
}

async fn create_redis_secret(client: &kube::Client, name: &str, password: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": "parley-system",
            "labels": {"parley.dev/redis-password": "true"},
        },
        "stringData": {"password": password},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "parley-system")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// Waits until the runtime Deployment of `namespace` satisfies `check`.
async fn wait_for_deployment(
    client: &kube::Client,
    namespace: &str,
    what: &str,
    check: impl Fn(&Deployment) -> bool,
) -> Deployment {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let check = &check;
    wait_for(what, || {
        let deployments = deployments.clone();
        async move {
            deployments
                .get_opt("chat-runtime")
                .await
                .unwrap()
                .filter(|deployment| check(deployment))
        }
    })
    .await
}

fn replicas(deployment: &Deployment) -> Option<i32> {
    deployment.spec.as_ref().and_then(|spec| spec.replicas)
}

async fn runtime_config(client: &kube::Client, namespace: &str) -> String {
    let config = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get("chat-runtime")
        .await
        .unwrap();
    config.data.unwrap()["config.yaml"].clone()
}

/// Returns the message of the tenant's KindsServed condition, once the
/// operator has written it.
async fn kinds_served_message(tenants: &Api<ChatTenant>, name: &str) -> Option<String> {
    let tenant = tenants.get(name).await.unwrap();
    full_condition(&tenant, "KindsServed").map(|condition| condition.message)
}

#[tokio::test]
async fn scylla_replicas_follow_redis() {
    let (cluster, _stop) = start_with_keyspaces(OperatorSettings::default()).await;
    let client = cluster.client.clone();
    let budgets_served = serves(&client, "policy/v1", "poddisruptionbudgets").await;
    create_redis_secret(&client, "redis-umbrella", "s3cret").await;
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    let spec = json!({
        "tenantId": "umbrella",
        "runtime": {"replicas": 3},
        "storage": {"scylla": {"replication": {"dc1": 1}}},
    });
    tenants
        .create(&PostParams::default(), &tenant("umbrella", spec))
        .await
        .unwrap();

    // Without Redis one replica runs, and RuntimeReady states why.
    let deployment =
        wait_for_deployment(&client, "parley-umbrella", "the runtime Deployment", |_| {
            true
        })
        .await;
    assert_eq!(replicas(&deployment), Some(1));
    let without_redis = wait_for("RuntimeReady with the replica note", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("umbrella").await.unwrap();
            full_condition(&tenant, "RuntimeReady")
                .filter(|condition| condition.message.contains("requested replicas"))
        }
    })
    .await;
    assert!(
        without_redis
            .message
            .contains("1 of 3 requested replicas runs"),
        "{}",
        without_redis.message
    );
    assert!(
        without_redis.message.contains("Redis is not configured"),
        "{}",
        without_redis.message
    );

    // With Redis every requested replica runs.
    let redis = json!({
        "url": "redis://10.0.0.7:6379",
        "passwordSecret": {"name": "redis-umbrella", "key": "password"},
    });
    tenants
        .patch(
            "umbrella",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"runtime": {"redis": redis}}})),
        )
        .await
        .unwrap();
    let deployment = wait_for_deployment(&client, "parley-umbrella", "3 replicas", |deployment| {
        replicas(deployment) == Some(3)
    })
    .await;
    let strategy = deployment.spec.unwrap().strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));

    let config = runtime_config(&client, "parley-umbrella").await;
    assert!(config.contains("url: redis://10.0.0.7:6379"), "{config}");
    assert!(
        config.contains("password_file: /etc/parley/redis/password"),
        "{config}"
    );
    assert!(
        !config.contains("s3cret"),
        "the ConfigMap contains the password"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "parley-umbrella");
    let copy = secrets.get("chat-runtime-redis").await.unwrap();
    assert_eq!(copy.data.unwrap()["password"].0, b"s3cret");

    let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        Api::namespaced(client.clone(), "parley-umbrella");
    let policy = policies.get("chat-runtime-allow-redis").await.unwrap();
    let rule = &policy.spec.unwrap().egress.unwrap()[0];
    let peers = rule.to.as_ref().unwrap();
    assert_eq!(peers[0].ip_block.as_ref().unwrap().cidr, "10.0.0.7/32");
    let ports = rule.ports.as_ref().unwrap();
    assert_eq!(
        ports[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(6379))
    );

    let budgets: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client.clone(), "parley-umbrella");
    if budgets_served {
        let budget = wait_for("the PodDisruptionBudget", || {
            let budgets = budgets.clone();
            async move { budgets.get_opt("chat-runtime").await.unwrap() }
        })
        .await;
        assert_eq!(
            budget.spec.unwrap().max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
    } else {
        // Kubernetes 1.20 serves PodDisruptionBudgets in policy/v1beta1
        // only, which the operator does not use.
        let message = wait_for("KindsServed naming PodDisruptionBudget", || {
            let tenants = tenants.clone();
            async move {
                kinds_served_message(&tenants, "umbrella")
                    .await
                    .filter(|message| message.contains("PodDisruptionBudget"))
            }
        })
        .await;
        assert!(!message.contains("HorizontalPodAutoscaler"), "{message}");
    }

    // Without Redis again, the relay's objects go and one replica runs.
    tenants
        .patch(
            "umbrella",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"runtime": {"redis": null}}})),
        )
        .await
        .unwrap();
    wait_for_deployment(&client, "parley-umbrella", "1 replica", |deployment| {
        replicas(deployment) == Some(1)
    })
    .await;
    wait_for("the Redis objects to be deleted", || {
        let (secrets, policies, budgets) = (secrets.clone(), policies.clone(), budgets.clone());
        async move {
            let secret = secrets.get_opt("chat-runtime-redis").await.unwrap();
            let policy = policies.get_opt("chat-runtime-allow-redis").await.unwrap();
            let budget = if budgets_served {
                budgets.get_opt("chat-runtime").await.unwrap()
            } else {
                None
            };
            (secret.is_none() && policy.is_none() && budget.is_none()).then_some(())
        }
    })
    .await;
    let config = runtime_config(&client, "parley-umbrella").await;
    assert!(!config.contains("redis"), "{config}");
}

#[tokio::test]
async fn autoscaled_tenant_leaves_replicas_to_autoscaler() {
    let settings = OperatorSettings {
        redis: Some(parley_operator::settings::RedisSettings {
            url: "redis://redis.parley-system:6379".to_owned(),
            password_secret: None,
        }),
        ..OperatorSettings::default()
    };
    let (cluster, _stop) = start_with_keyspaces(settings).await;
    let client = cluster.client.clone();
    let autoscalers_served = serves(&client, "autoscaling/v2", "horizontalpodautoscalers").await;
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    let spec = json!({
        "tenantId": "cyberdyne",
        "runtime": {"autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}},
        "storage": {"scylla": {"replication": {"dc1": 1}}},
    });
    tenants
        .create(&PostParams::default(), &tenant("cyberdyne", spec))
        .await
        .unwrap();

    let deployment = wait_for_deployment(
        &client,
        "parley-cyberdyne",
        "the runtime Deployment",
        |_| true,
    )
    .await;
    let config = runtime_config(&client, "parley-cyberdyne").await;
    assert!(
        config.contains("url: redis://redis.parley-system:6379"),
        "the operator's default Redis is used: {config}"
    );
    assert!(!config.contains("password_file"), "{config}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "parley-cyberdyne");
    assert!(
        secrets
            .get_opt("chat-runtime-redis")
            .await
            .unwrap()
            .is_none()
    );
    let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        Api::namespaced(client.clone(), "parley-cyberdyne");
    let policy = policies.get("chat-runtime-allow-redis").await.unwrap();
    let rule = &policy.spec.unwrap().egress.unwrap()[0];
    assert_eq!(rule.to, None, "a DNS name can resolve to any address");

    let owned_by_operator: Vec<String> = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some("parley-operator"))
        .filter_map(|entry| entry.fields_v1.as_ref())
        .map(|fields| fields.0.to_string())
        .collect();
    if autoscalers_served {
        // The operator's apply leaves replicas out, so the autoscaler is
        // the only one that sets it.
        assert!(!owned_by_operator.is_empty());
        for fields in &owned_by_operator {
            assert!(!fields.contains("f:replicas"), "{fields}");
        }
        let autoscalers: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
            Api::namespaced(client.clone(), "parley-cyberdyne");
        let autoscaler = wait_for("the HorizontalPodAutoscaler", || {
            let autoscalers = autoscalers.clone();
            async move { autoscalers.get_opt("chat-runtime").await.unwrap() }
        })
        .await;
        let spec = autoscaler.spec.unwrap();
        assert_eq!(spec.scale_target_ref.name, "chat-runtime");
        assert_eq!(spec.min_replicas, Some(2));
        assert_eq!(spec.max_replicas, 5);
    } else {
        // Kubernetes 1.20 lacks autoscaling/v2, so the operator keeps the
        // autoscaler's minimum as a fixed count and reports the kind.
        assert_eq!(replicas(&deployment), Some(2));
        let message = wait_for("KindsServed naming HorizontalPodAutoscaler", || {
            let tenants = tenants.clone();
            async move {
                kinds_served_message(&tenants, "cyberdyne")
                    .await
                    .filter(|message| message.contains("HorizontalPodAutoscaler"))
            }
        })
        .await;
        assert!(message.contains("PodDisruptionBudget"), "{message}");
    }
    let effective = tenants
        .get("cyberdyne")
        .await
        .unwrap()
        .status
        .unwrap()
        .effective
        .unwrap();
    assert_eq!(effective.replicas, 2);
    assert_eq!(
        effective.redis_url.as_deref(),
        Some("redis://redis.parley-system:6379")
    );

    // Back to a fixed count, the autoscaler goes and the operator sets
    // replicas again.
    tenants
        .patch(
            "cyberdyne",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"runtime": {"autoscaling": null, "replicas": 4}}})),
        )
        .await
        .unwrap();
    wait_for_deployment(&client, "parley-cyberdyne", "4 replicas", |deployment| {
        replicas(deployment) == Some(4)
    })
    .await;
    if autoscalers_served {
        let autoscalers: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
            Api::namespaced(client.clone(), "parley-cyberdyne");
        wait_for("the HorizontalPodAutoscaler to be deleted", || {
            let autoscalers = autoscalers.clone();
            async move {
                autoscalers
                    .get_opt("chat-runtime")
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            }
        })
        .await;
    }
}

#[tokio::test]
async fn missing_redis_password_stalls_until_created() {
    let (cluster, _stop) = start_with_keyspaces(OperatorSettings::default()).await;
    let client = cluster.client.clone();
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    let spec = json!({
        "tenantId": "tyrell",
        "runtime": {
            "replicas": 2,
            "redis": {"url": "redis://redis:6379", "passwordSecret": {"name": "redis-tyrell", "key": "password"}},
        },
        "storage": {"scylla": {"replication": {"dc1": 1}}},
    });
    tenants
        .create(&PostParams::default(), &tenant("tyrell", spec))
        .await
        .unwrap();

    let stalled = wait_for("Stalled=True", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("tyrell").await.unwrap();
            full_condition(&tenant, "Stalled").filter(|condition| condition.status == "True")
        }
    })
    .await;
    assert_eq!(stalled.reason, "RedisPasswordNotFound");
    assert!(
        stalled.message.contains("parley-system/redis-tyrell"),
        "{}",
        stalled.message
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt("parley-tyrell").await.unwrap().is_none());

    // A Secret without the label that allows tenants to name it is refused,
    // so a tenant cannot copy other Secrets of the operator's namespace.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "parley-system");
    let unmarked: Secret = serde_json::from_value(json!({
        "metadata": {"name": "redis-tyrell", "namespace": "parley-system"},
        "stringData": {"password": "s3cret"},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &unmarked)
        .await
        .unwrap();
    wait_for("the unlabelled Secret to be refused", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("tyrell").await.unwrap();
            full_condition(&tenant, "Stalled")
                .filter(|condition| condition.message.contains("lacks the label"))
        }
    })
    .await;
    secrets
        .delete("redis-tyrell", &Default::default())
        .await
        .unwrap();

    // The operator checks again on its own, without a change to the tenant.
    create_redis_secret(&client, "redis-tyrell", "s3cret").await;
    let deployment = wait_for_deployment(&client, "parley-tyrell", "2 replicas", |deployment| {
        replicas(deployment) == Some(2)
    })
    .await;
    assert_eq!(replicas(&deployment), Some(2));
}

/// Returns the runtime ConfigMap's configuration once it contains `text`.
async fn wait_for_config_containing(client: &kube::Client, namespace: &str, text: &str) -> String {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    wait_for(&format!("{text:?} in the runtime config"), || {
        let config_maps = config_maps.clone();
        async move {
            let config = config_maps.get_opt("chat-runtime").await.unwrap()?;
            let yaml = config.data?.remove("config.yaml")?;
            yaml.contains(text).then_some(yaml)
        }
    })
    .await
}

fn template_checksum(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("parley.dev/config-checksum")
        .cloned()
}

#[tokio::test]
async fn moderation_rules_reach_config_and_roll_out() {
    let (cluster, _stop) = start().await;
    let client = cluster.client.clone();
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    let spec = json!({
        "tenantId": "cho",
        "runtime": {"limits": {"maxMessageChars": 500}},
        "moderation": {
            "mask": "[đã ẩn]",
            "rules": [
                {"name": "scams", "action": "Block",
                 "terms": {"list": ["lừa đảo"], "accentInsensitive": true}},
                {"name": "contacts", "action": "Mask",
                 "contacts": {"kinds": ["Phone"], "minPhoneDigits": 10}},
                {"name": "links", "action": "Mask",
                 "links": {"allowedDomains": ["cho.example.vn"]}},
            ],
        },
    });
    tenants
        .create(&PostParams::default(), &tenant("cho", spec))
        .await
        .unwrap();

    let yaml = wait_for_config_containing(&client, "parley-cho", "moderation:").await;
    let config: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let section = &config["tenants"][0]["moderation"];
    let runtime: chat_runtime::moderation::ModerationConfig =
        serde_yaml::from_value(section.clone()).unwrap();
    let expected: chat_runtime::moderation::ModerationConfig = serde_yaml::from_str(
        r#"
mask: "[đã ẩn]"
rules:
  - {name: scams, action: block, terms: {list: ["lừa đảo"], accent_insensitive: true}}
  - {name: contacts, action: mask, contacts: {kinds: [phone], min_phone_digits: 10}}
  - {name: links, action: mask, links: {allowed_domains: [cho.example.vn]}}
"#,
    )
    .unwrap();
    assert_eq!(runtime, expected, "{yaml}");
    assert_eq!(config["tenants"][0]["limits"]["max_message_chars"], 500);
    wait_for("maxMessageChars in status.effective", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("cho").await.unwrap();
            let effective = tenant.status?.effective?;
            (effective.max_message_chars == Some(500)).then_some(())
        }
    })
    .await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "parley-cho");
    let before = wait_for("the runtime Deployment", || {
        let deployments = deployments.clone();
        async move { deployments.get_opt("chat-runtime").await.unwrap() }
    })
    .await;
    let old_checksum = template_checksum(&before).unwrap();

    // A merge patch replaces the whole list, which suits rules that run in
    // order.
    let change = json!({"spec": {"moderation": {"rules": [
        {"name": "scams", "action": "Block", "shadow": true,
         "terms": {"list": ["lừa đảo", "chuyển khoản trước"], "accentInsensitive": true}},
    ]}}});
    tenants
        .patch("cho", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    let yaml = wait_for_config_containing(&client, "parley-cho", "chuyển khoản trước").await;
    assert!(yaml.contains("shadow: true"), "{yaml}");
    assert!(!yaml.contains("contacts"), "{yaml}");
    wait_for("a new checksum in the pod template", || {
        let deployments = deployments.clone();
        let old_checksum = old_checksum.clone();
        async move {
            let deployment = deployments.get("chat-runtime").await.unwrap();
            (template_checksum(&deployment)? != old_checksum).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn invalid_moderation_rule_stalls_with_field_named() {
    let (cluster, _stop) = start().await;
    let tenants: Api<ChatTenant> = Api::all(cluster.client.clone());
    let spec = json!({
        "tenantId": "initech",
        "moderation": {"rules": [
            {"name": "cards", "action": "Block", "regex": "[0-9"},
        ]},
    });
    tenants
        .create(&PostParams::default(), &tenant("initech", spec))
        .await
        .unwrap();

    let stalled = wait_for("Stalled=True", || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get("initech").await.unwrap();
            full_condition(&tenant, "Stalled").filter(|condition| condition.status == "True")
        }
    })
    .await;
    assert!(
        stalled.message.contains("spec.moderation.rules[0].regex"),
        "{}",
        stalled.message
    );
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    assert!(
        namespaces
            .get_opt("parley-initech")
            .await
            .unwrap()
            .is_none()
    );

    // Fixing the pattern lets the tenant proceed.
    let fix = json!({"spec": {"moderation": {"rules": [
        {"name": "cards", "action": "Block", "regex": "[0-9]{16}"},
    ]}}});
    tenants
        .patch("initech", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    wait_for_config_containing(&cluster.client, "parley-initech", "[0-9]{16}").await;
}

/// Returns the data of the tenant's signing Secret, once it exists and
/// `check` accepts it.
async fn wait_for_signing_data(
    client: &kube::Client,
    namespace: &str,
    what: &str,
    check: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let check = &check;
    wait_for(what, || {
        let secrets = secrets.clone();
        async move {
            let secret = secrets.get_opt("chat-runtime-signing").await.unwrap()?;
            let data: BTreeMap<String, String> = secret
                .data?
                .into_iter()
                .map(|(key, value)| (key, String::from_utf8(value.0).unwrap()))
                .collect();
            check(&data).then_some(data)
        }
    })
    .await
}

#[tokio::test]
async fn hook_and_webhooks_get_signing_secrets_once() {
    let (cluster, _stop) = start().await;
    let client = cluster.client.clone();
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    let spec = json!({
        "tenantId": "hooked",
        "moderation": {"hook": {
            "url": "https://shop.example/pre-send", "timeoutMs": 800, "onFailure": "Closed",
        }},
        "webhooks": [
            {"name": "crm", "url": "https://crm.example/events",
             "events": ["message.*"], "maxAttempts": 3, "retryInitialMs": 250, "timeoutMs": 2000},
            {"name": "push", "url": "http://push.shop.svc:8080/events"},
        ],
        "templates": [
            {"id": "still-available", "title": "Còn hàng", "text": "Chào {{ten}}, xe vẫn còn nhé."},
        ],
        "extensions": {"autoReply": {"periodSeconds": 3600}},
    });
    tenants
        .create(&PostParams::default(), &tenant("hooked", spec))
        .await
        .unwrap();

    // Each section is in the runtime's configuration, in a form the
    // runtime's own types read.
    let yaml = wait_for_config_containing(&client, "parley-hooked", "webhooks:").await;
    let config: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let section = &config["tenants"][0];
    let hook: chat_runtime::moderation::HookConfig =
        serde_yaml::from_value(section["moderation"]["hook"].clone()).unwrap();
    assert_eq!(hook.url, "https://shop.example/pre-send");
    assert_eq!(hook.timeout_ms, 800);
    assert_eq!(hook.on_failure, chat_runtime::moderation::OnFailure::Closed);
    assert_eq!(
        hook.secret_file.as_deref(),
        Some(std::path::Path::new("/etc/parley/signing/hook"))
    );
    let webhooks: Vec<chat_runtime::webhooks::WebhookConfig> =
        serde_yaml::from_value(section["webhooks"].clone()).unwrap();
    assert_eq!(webhooks.len(), 2);
    assert_eq!(webhooks[0].name, "crm");
    assert_eq!(webhooks[0].events, ["message.*"]);
    assert_eq!(webhooks[0].max_attempts, 3);
    assert_eq!(webhooks[0].retry_initial_ms, 250);
    assert_eq!(webhooks[0].timeout_ms, 2000);
    assert_eq!(
        webhooks[0].secret_file.as_deref(),
        Some(std::path::Path::new("/etc/parley/signing/webhook.crm"))
    );
    assert_eq!(
        webhooks[1].secret_file.as_deref(),
        Some(std::path::Path::new("/etc/parley/signing/webhook.push"))
    );
    let templates: Vec<chat_runtime::templates::Template> =
        serde_yaml::from_value(section["templates"].clone()).unwrap();
    assert_eq!(templates[0].id, "still-available");
    assert_eq!(templates[0].title.as_deref(), Some("Còn hàng"));
    let extensions: chat_runtime::extensions::ExtensionsConfig =
        serde_yaml::from_value(section["extensions"].clone()).unwrap();
    assert_eq!(extensions.auto_reply.unwrap().period_seconds, 3600);

    // One generated secret per hook and webhook, long enough for the
    // runtime, and none of them in the ConfigMap.
    let first = wait_for_signing_data(&client, "parley-hooked", "the signing Secret", |data| {
        data.len() == 3
    })
    .await;
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(keys, ["hook", "webhook.crm", "webhook.push"]);
    for (key, value) in &first {
        assert_eq!(value.len(), 43, "{key}");
        assert!(!yaml.contains(value.as_str()), "{key} is in the ConfigMap");
    }
    assert_ne!(first["hook"], first["webhook.crm"]);

    let deployment =
        wait_for_deployment(&client, "parley-hooked", "the runtime Deployment", |_| true).await;
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let mounted = pod.volumes.unwrap().into_iter().any(|volume| {
        volume
            .secret
            .and_then(|source| source.secret_name)
            .as_deref()
            == Some("chat-runtime-signing")
    });
    assert!(mounted, "the runtime pod does not mount the signing Secret");

    let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        Api::namespaced(client.clone(), "parley-hooked");
    let policy = wait_for("the webhooks egress policy", || {
        let policies = policies.clone();
        async move {
            policies
                .get_opt("chat-runtime-allow-webhooks")
                .await
                .unwrap()
        }
    })
    .await;
    let ports: Vec<String> = policy.spec.unwrap().egress.unwrap()[0]
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|port| format!("{:?}", port.port.unwrap()))
        .collect();
    assert_eq!(ports, ["Int(443)", "Int(8080)"]);

    // A later reconcile keeps the secrets: a new template changes the
    // configuration but none of them.
    let change = json!({"spec": {"templates": [
        {"id": "still-available", "text": "Xe vẫn còn nhé."},
        {"id": "sold", "text": "Xe đã bán rồi ạ."},
    ]}});
    tenants
        .patch("hooked", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    wait_for_config_containing(&client, "parley-hooked", "id: sold").await;
    let after_change =
        wait_for_signing_data(&client, "parley-hooked", "the signing Secret", |_| true).await;
    assert_eq!(
        after_change, first,
        "a reconcile regenerated a signing secret"
    );

    // A removed webhook loses its key, and the others stay as they were.
    let change = json!({"spec": {"webhooks": [
        {"name": "crm", "url": "https://crm.example/events"},
    ]}});
    tenants
        .patch("hooked", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    let without_push = wait_for_signing_data(
        &client,
        "parley-hooked",
        "the push key to be dropped",
        |data| !data.contains_key("webhook.push"),
    )
    .await;
    assert_eq!(without_push.len(), 2);
    assert_eq!(without_push["hook"], first["hook"]);
    assert_eq!(without_push["webhook.crm"], first["webhook.crm"]);

    // Without hook and webhooks the Secret and the policy go.
    let change = json!({"spec": {"moderation": null, "webhooks": null}});
    tenants
        .patch("hooked", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "parley-hooked");
    wait_for("the signing Secret to be deleted", || {
        let secrets = secrets.clone();
        async move {
            let deleted = secrets
                .get_opt("chat-runtime-signing")
                .await
                .unwrap()
                .is_none();
            deleted.then_some(())
        }
    })
    .await;
    assert!(
        policies
            .get_opt("chat-runtime-allow-webhooks")
            .await
            .unwrap()
            .is_none()
    );
    let yaml = runtime_config(&client, "parley-hooked").await;
    assert!(!yaml.contains("signing"), "{yaml}");
}

/// Returns the tenant's Stalled condition once its message contains
/// `field`.
async fn wait_for_stalled_on(tenants: &Api<ChatTenant>, name: &str, field: &str) -> String {
    wait_for(&format!("Stalled=True naming {field}"), || {
        let tenants = tenants.clone();
        async move {
            let tenant = tenants.get(name).await.unwrap();
            full_condition(&tenant, "Stalled")
                .filter(|condition| condition.status == "True")
                .map(|condition| condition.message)
                .filter(|message| message.contains(field))
        }
    })
    .await
}

#[tokio::test]
async fn invalid_webhook_and_hook_stall_with_field_named() {
    let (cluster, _stop) = start().await;
    let tenants: Api<ChatTenant> = Api::all(cluster.client.clone());
    let spec = json!({
        "tenantId": "badhook",
        "webhooks": [
            {"name": "crm", "url": "https://crm.example/events"},
            {"name": "push", "url": "push.example/events"},
        ],
    });
    tenants
        .create(&PostParams::default(), &tenant("badhook", spec))
        .await
        .unwrap();

    let message = wait_for_stalled_on(&tenants, "badhook", "spec.webhooks[1].url").await;
    assert!(message.contains("push.example/events"), "{message}");
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    assert!(
        namespaces
            .get_opt("parley-badhook")
            .await
            .unwrap()
            .is_none(),
        "objects were applied for an invalid spec"
    );

    // The runtime rejects credentials in a hook URL, and so does the
    // operator.
    let change = json!({"spec": {
        "webhooks": [{"name": "push", "url": "https://push.example/events"}],
        "moderation": {"hook": {"url": "https://user:pw@shop.example/check", "onFailure": "Open"}},
    }});
    tenants
        .patch("badhook", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    let message = wait_for_stalled_on(&tenants, "badhook", "spec.moderation.hook.url").await;
    assert!(message.contains("credentials"), "{message}");
    assert!(
        namespaces
            .get_opt("parley-badhook")
            .await
            .unwrap()
            .is_none()
    );

    let fix = json!({"spec": {"moderation": {"hook": {"url": "https://shop.example/check"}}}});
    tenants
        .patch("badhook", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    wait_for_config_containing(
        &cluster.client,
        "parley-badhook",
        "https://shop.example/check",
    )
    .await;
}
