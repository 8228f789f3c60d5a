//! Health, readiness, metrics and error answers of the HTTP surface.

mod common;

use std::time::Duration;

use common::{Runtime, config_yaml, config_yaml_with_server};

async fn metrics_text(runtime: &Runtime) -> String {
    let url = format!("{}/metrics", runtime.base_url());
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn errors_are_counted_by_tenant_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let alice = runtime.api("acme").user("alice").await;

    let (status, _) = alice.get("/v1/channels/g_does_not_exist").await;
    assert_eq!(status, 404);
    let (status, _) = alice
        .post("/v1/channels/group", serde_json::json!({"name": ""}))
        .await;
    assert_eq!(status, 400);

    let text = metrics_text(&runtime).await;
    assert!(
        text.contains(r#"parley_errors_total{tenant="acme",code="not_found"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"parley_errors_total{tenant="acme",code="invalid_request"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_tenant_errors_use_one_label() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let client = reqwest::Client::new();
    for tenant in ["nope-1", "nope-2"] {
        let response = client
            .get(format!("{}/v1/channels", runtime.base_url()))
            .header("x-parley-tenant", tenant)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
    }

    let text = metrics_text(&runtime).await;
    assert!(
        text.contains(r#"parley_errors_total{tenant="unknown",code="tenant_not_found"} 2"#),
        "{text}"
    );
    assert!(!text.contains("nope-1"), "{text}");
}

#[tokio::test]
async fn wrong_method_answers_json_405() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let alice = runtime.api("acme").user("alice").await;

    let (status, body) = alice.delete("/v1/channels").await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
}

#[tokio::test]
async fn plain_get_on_websocket_route_answers_json() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let alice = runtime.api("acme").user("alice").await;

    let (status, body) = alice.get("/v1/ws").await;
    assert!(status == 400 || status == 426, "status {status}");
    assert_eq!(
        body["error"]["code"], "websocket_upgrade_required",
        "{body}"
    );
}

#[tokio::test]
async fn shutdown_delay_fails_readiness_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_yaml_with_server("  shutdown_delay_seconds: 3\n", "");
    let mut runtime = Runtime::start(dir.path(), &config);
    let ready_url = format!("{}/readyz", runtime.base_url());
    assert_eq!(reqwest::get(&ready_url).await.unwrap().status(), 200);

    let pid = runtime.pid().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());

    // During the delay the listener still answers, with readiness failing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut saw_not_ready = false;
    while tokio::time::Instant::now() < deadline {
        let response = reqwest::get(&ready_url).await.unwrap();
        if response.status() == 503 {
            saw_not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        saw_not_ready,
        "readiness never failed during the shutdown delay"
    );
    assert!(runtime.terminate().success());
}

fn store_reads(text: &str, tenant: &str) -> u64 {
    let prefix = format!("parley_store_reads{{tenant=\"{tenant}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no store reads for {tenant} in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn store_reads_count_each_read() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let alice = runtime.api("acme").user("alice").await;
    let before = store_reads(&metrics_text(&runtime).await, "acme");

    for _ in 0..3 {
        let (status, _) = alice.get("/v1/channels").await;
        assert_eq!(status, 200);
    }

    let after = store_reads(&metrics_text(&runtime).await, "acme");
    // Each request reads the user's token state and then the channel list.
    assert!(after >= before + 3, "before {before}, after {after}");
    let globex = store_reads(&metrics_text(&runtime).await, "globex");
    assert_eq!(globex, 0, "reads of acme counted for globex");
}
