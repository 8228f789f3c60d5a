//! The example tenants under `examples/tenants/` render, through the library
//! and through the `parley-operator render` binary.

use chat_runtime::moderation::{ModerationConfig, Moderator};
use chat_runtime::store::Content;
use parley_operator::render::render;
use parley_operator::settings::OperatorSettings;
use support::{EXAMPLES, documents, find, kinds, read_example, run_render};

// Clippy allows `unwrap` and `panic!` in tests only inside `#[test]`
// functions and `#[cfg(test)]` modules, so the helpers live in one.
#[cfg(test)]
mod support {
    use std::io::Write;
    use std::process::{Command, Output, Stdio};

    pub const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tenants");

    pub fn read_example(name: &str) -> String {
        std::fs::read_to_string(format!("{EXAMPLES}/{name}")).unwrap()
    }

    pub fn documents(stream: &str) -> Vec<serde_yaml::Value> {
        serde_yaml::Deserializer::from_str(stream)
            .map(|document| serde::Deserialize::deserialize(document).unwrap())
            .collect()
    }

    pub fn kinds(documents: &[serde_yaml::Value]) -> Vec<&str> {
        documents
            .iter()
            .map(|document| document["kind"].as_str().unwrap())
            .collect()
    }

    pub fn find<'a>(documents: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
        documents
            .iter()
            .find(|document| document["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in the output"))
    }

    /// Runs `parley-operator render ARG`, feeding `stdin` to it.
    pub fn run_render(arg: &str, stdin: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley-operator"))
            .args(["render", arg])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

const KINDS_WITHOUT_INGRESS: [&str; 11] = [
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
];

#[test]
fn marketplace_renders_every_kind() {
    let stream = render(
        &read_example("marketplace.yaml"),
        &OperatorSettings::default(),
    )
    .unwrap();
    let documents = documents(&stream);
    let mut expected = KINDS_WITHOUT_INGRESS.to_vec();
    expected.push("Ingress");
    assert_eq!(kinds(&documents), expected);

    let config = find(&documents, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert!(config.contains("display_name: Chợ Tốt"), "{config}");
    assert!(config.contains("max_message_chars: 1000"), "{config}");
    let claim = find(&documents, "PersistentVolumeClaim");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "20Gi");
}

#[test]
fn marketplace_rules_moderate_messages() {
    let stream = render(
        &read_example("marketplace.yaml"),
        &OperatorSettings::default(),
    )
    .unwrap();
    let documents = documents(&stream);
    let config: serde_yaml::Value = serde_yaml::from_str(
        find(&documents, "ConfigMap")["data"]["config.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let section: ModerationConfig =
        serde_yaml::from_value(config["tenants"][0]["moderation"].clone()).unwrap();
    let moderator = Moderator::new(&section, "moderation").unwrap();
    let text = |text: &str| Content::Text { text: text.into() };
    let text_of = |content: &Content| match content {
        Content::Text { text } => text.clone(),
        other => panic!("expected text, got {other:?}"),
    };

    // A scam phrase typed without tone marks is still blocked.
    let scam = moderator.moderate(text("Ban vua trung thuong, gui ma OTP de nhan"));
    assert_eq!(scam.blocked().unwrap().reason, "blocked_term");
    assert_eq!(scam.runs.len(), 1, "a block stops the rules after it");
    assert_eq!(scam.runs[0].rule.as_ref(), "scam-phrases");

    // A phone number, spaced out, and a link elsewhere are masked, and a
    // link to the marketplace stays.
    let moderated = moderator.moderate(text(
        "Xe còn nhé, gọi 0912 345 678 hoặc xem https://shop.example.com/xe, tin đăng ở https://www.chotot.example/xe",
    ));
    assert!(moderated.blocked().is_none());
    let masked = text_of(&moderated.content);
    assert!(!masked.contains("345"), "{masked}");
    assert!(!masked.contains("shop.example.com"), "{masked}");
    assert!(masked.contains("https://www.chotot.example/xe"), "{masked}");
    assert!(masked.contains("[đã ẩn]"), "{masked}");

    // The shadow rule matches but neither blocks nor changes the message.
    let prepay = moderator.moderate(text("Anh chuyen khoan truoc giup em nhe"));
    assert!(prepay.blocked().is_none());
    assert!(!prepay.masked);
    let matched: Vec<&str> = prepay
        .runs
        .iter()
        .filter(|run| run.matched.is_some_and(|decision| decision.shadow))
        .map(|run| run.rule.as_ref())
        .collect();
    assert_eq!(matched, ["prepayment"]);
}

#[test]
fn minimal_renders_without_ingress() {
    let stream = render(&read_example("minimal.yaml"), &OperatorSettings::default()).unwrap();
    let documents = documents(&stream);
    assert_eq!(kinds(&documents), KINDS_WITHOUT_INGRESS);
    let namespace = find(&documents, "Namespace");
    assert_eq!(namespace["metadata"]["name"], "parley-acme");
}

#[test]
fn render_binary_prints_ingress_with_tls() {
    let path = format!("{EXAMPLES}/marketplace.yaml");
    let output = run_render(&path, "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let stdout = String::from_utf8(output.stdout).unwrap();
    let documents = documents(&stdout);
    let ingress = find(&documents, "Ingress");
    assert_eq!(ingress["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    let tls = &ingress["spec"]["tls"][0];
    assert_eq!(tls["secretName"], "chat-chotot-tls");
    assert_eq!(tls["hosts"][0], "chat.chotot.example");
}

#[test]
fn render_binary_reads_stdin() {
    let output = run_render("-", &read_example("minimal.yaml"));
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(documents(&stdout).len(), KINDS_WITHOUT_INGRESS.len());
}

#[test]
fn render_binary_reports_invalid_field() {
    let tenant = read_example("minimal.yaml") + "  runtime:\n    replicas: 3\n";
    let output = run_render("-", &tenant);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("invalid ChatTenant: spec.runtime.replicas: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("embedded store allows one replica"),
        "{stderr}"
    );
}

#[test]
fn render_binary_reports_missing_file() {
    let output = run_render(&format!("{EXAMPLES}/missing.yaml"), "");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("failed to read"), "{stderr}");
    assert!(stderr.contains("missing.yaml"), "{stderr}");
}

#[test]
fn scylla_renders_without_volume_claim() {
    let stream = render(&read_example("scylla.yaml"), &OperatorSettings::default()).unwrap();
    let documents = documents(&stream);
    assert_eq!(
        kinds(&documents),
        [
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
            "Deployment",
            "Service",
        ]
    );
    let config = find(&documents, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert!(config.contains("kind: scylla"), "{config}");
    assert!(config.contains("keyspace: parley_batdongsan"), "{config}");
    let deployment = find(&documents, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
}

#[test]
fn autoscaled_scylla_renders_budget_and_autoscaler() {
    let stream = render(
        &read_example("scylla-autoscaled.yaml"),
        &OperatorSettings::default(),
    )
    .unwrap();
    let documents = documents(&stream);
    let kinds = kinds(&documents);
    assert_eq!(
        kinds
            .iter()
            .filter(|kind| **kind == "NetworkPolicy")
            .count(),
        5
    );
    assert_eq!(kinds.iter().filter(|kind| **kind == "Secret").count(), 3);
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["PodDisruptionBudget", "HorizontalPodAutoscaler"]
    );

    let deployment = find(&documents, "Deployment");
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the autoscaler owns replicas"
    );
    let autoscaler = find(&documents, "HorizontalPodAutoscaler");
    assert_eq!(autoscaler["apiVersion"], "autoscaling/v2");
    assert_eq!(autoscaler["spec"]["minReplicas"], 2);
    assert_eq!(autoscaler["spec"]["maxReplicas"], 6);
    let budget = find(&documents, "PodDisruptionBudget");
    assert_eq!(budget["apiVersion"], "policy/v1");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);

    let config = find(&documents, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert!(
        config.contains("url: redis://redis.parley-system:6379/0"),
        "{config}"
    );
    assert!(
        config.contains("password_file: /etc/parley/redis/password"),
        "{config}"
    );
    let redis_secret = documents
        .iter()
        .find(|document| document["metadata"]["name"] == "chat-runtime-redis")
        .unwrap();
    let placeholder = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "copied-by-the-operator",
    );
    assert_eq!(redis_secret["data"]["password"], placeholder.as_str());
}

#[test]
fn webhooks_example_renders_signing_objects() {
    let stream = render(&read_example("webhooks.yaml"), &OperatorSettings::default()).unwrap();
    let documents = documents(&stream);
    let kinds = kinds(&documents);
    assert_eq!(
        kinds
            .iter()
            .filter(|kind| **kind == "NetworkPolicy")
            .count(),
        4
    );
    let signing = documents
        .iter()
        .find(|document| document["metadata"]["name"] == "chat-runtime-signing")
        .expect("no signing Secret in the output");
    let data = signing["data"].as_mapping().unwrap();
    let keys: Vec<&str> = data.keys().map(|key| key.as_str().unwrap()).collect();
    assert_eq!(keys, ["hook", "webhook.analytics", "webhook.orders"]);

    let config: serde_yaml::Value = serde_yaml::from_str(
        find(&documents, "ConfigMap")["data"]["config.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let tenant = &config["tenants"][0];
    assert_eq!(
        tenant["moderation"]["hook"]["secret_file"],
        "/etc/parley/signing/hook"
    );
    assert_eq!(tenant["moderation"]["hook"]["on_failure"], "closed");
    assert_eq!(
        tenant["webhooks"][0]["secret_file"],
        "/etc/parley/signing/webhook.orders"
    );
    assert_eq!(tenant["templates"][1]["id"], "sold");
    assert_eq!(
        tenant["extensions"]["auto_reply"]["offline_after_seconds"],
        600
    );
}
