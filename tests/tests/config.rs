//! The YAML configuration: start-up validation, secrets from the
//! environment and from files, and reloading the tenant list while running.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{
    ACME_KEY, ACME_SECRET, GLOBEX_KEY, GLOBEX_SECRET, Runtime, ServerApi, Ws, error_code,
    poll_until, write_config,
};
use serde_json::{Value, json};

const INITECH_KEY: &str = "initech-key-1";
const INITECH_SECRET: &str = "initech-test-secret-0123456789abcdef012345";

/// Builds one entry of the `tenants:` list. `key_source` is the line that
/// gives the secret, such as `secret: ...` or `secret_env: NAME`.
fn tenant_yaml(id: &str, key: &str, key_source: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    display_name: {id}\n    api_keys:\n      - id: {key}\n        {key_source}\n{extra}"
    )
}

fn acme_yaml(extra: &str) -> String {
    tenant_yaml(
        "acme",
        ACME_KEY,
        &format!("secret: {ACME_SECRET}"),
        &format!("    allowed_origins: [\"https://app.acme.test\"]\n{extra}"),
    )
}

fn globex_yaml() -> String {
    tenant_yaml(
        "globex",
        GLOBEX_KEY,
        &format!("secret: {GLOBEX_SECRET}"),
        "",
    )
}

fn initech_yaml() -> String {
    tenant_yaml(
        "initech",
        INITECH_KEY,
        &format!("secret: {INITECH_SECRET}"),
        "",
    )
}

/// Builds a whole config file. The heartbeat is long, so sockets left idle
/// while a test waits for a reload are not closed as half-open.
fn config_of(tenants: &[String]) -> String {
    format!(
        "server:\n  heartbeat_seconds: 20\n  data_dir: data\ntenants:\n{}",
        tenants.concat()
    )
}

/// Runs the runtime on `config`, expecting it to refuse to start, and
/// returns its exit status and standard error. Fails the test if the
/// runtime is still running after [`common::WAIT`].
fn run_expecting_exit(dir: &Path, config: &str, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_parley-runtime-under-test"));
    command
        .arg("--config")
        .arg(&config_path)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();

    let deadline = std::time::Instant::now() + common::WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the runtime started with an invalid config:\n{config}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[tokio::test]
async fn valid_config_starts() {
    // Control for the start-up failures below: the same files without the
    // defect start and serve.
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_of(&[acme_yaml(""), globex_yaml()]));
    let response = reqwest::get(format!("{}/healthz", runtime.base_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn unknown_field_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_of(&[
        acme_yaml("    limits:\n      max_mesage_bytes: 64\n"),
        globex_yaml(),
    ]);
    let (status, stderr) = run_expecting_exit(dir.path(), &config, &[]);

    assert!(!status.success(), "exit status {status}, stderr: {stderr}");
    assert!(stderr.contains("tenants[0].limits"), "{stderr}");
    assert!(stderr.contains("max_mesage_bytes"), "{stderr}");
}

#[test]
fn invalid_tenant_id_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let bad = tenant_yaml(
        "Globex_Co",
        GLOBEX_KEY,
        &format!("secret: {GLOBEX_SECRET}"),
        "",
    );
    let config = config_of(&[acme_yaml(""), bad]);
    let (status, stderr) = run_expecting_exit(dir.path(), &config, &[]);

    assert!(!status.success(), "exit status {status}, stderr: {stderr}");
    assert!(stderr.contains("tenants[1].id"), "{stderr}");
    assert!(stderr.contains("Globex_Co"), "{stderr}");
}

#[test]
fn short_secret_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let short = "only-twenty-one-bytes";
    let config = config_of(&[
        tenant_yaml("acme", ACME_KEY, &format!("secret: {short}"), ""),
        globex_yaml(),
    ]);
    let (status, stderr) = run_expecting_exit(dir.path(), &config, &[]);

    assert!(!status.success(), "exit status {status}, stderr: {stderr}");
    assert!(stderr.contains("tenants[0].api_keys[0]"), "{stderr}");
    assert!(stderr.contains("32 bytes"), "{stderr}");
    assert!(
        !stderr.contains(short),
        "the error repeats the secret: {stderr}"
    );
}

#[test]
fn missing_secret_env_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let variable = "PARLEY_TEST_SECRET_THAT_IS_NOT_SET";
    let config = config_of(&[
        tenant_yaml("acme", ACME_KEY, &format!("secret_env: {variable}"), ""),
        globex_yaml(),
    ]);
    let (status, stderr) = run_expecting_exit(dir.path(), &config, &[]);

    assert!(!status.success(), "exit status {status}, stderr: {stderr}");
    assert!(
        stderr.contains("tenants[0].api_keys[0].secret_env"),
        "{stderr}"
    );
    assert!(stderr.contains(variable), "{stderr}");
}

/// Creates user `alice` through acme's server API and checks that her token
/// opens REST and the WebSocket, which proves acme's secret was loaded.
async fn assert_acme_secret_works(runtime: &Runtime) {
    let alice = runtime.api("acme").user("alice").await;
    let (status, body) = alice.get("/v1/channels").await;
    assert_eq!(status, 200, "{body}");
    let mut socket = Ws::connect(runtime, "acme", &alice.token).await;
    socket
        .send_json(json!({ "type": "ping", "ref": "p1" }))
        .await;
    assert_eq!(socket.next_of("pong").await["ref"], "p1");
}

#[tokio::test]
async fn secret_from_env_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let variable = "PARLEY_TEST_ACME_SECRET";
    let config = config_of(&[
        tenant_yaml("acme", ACME_KEY, &format!("secret_env: {variable}"), ""),
        globex_yaml(),
    ]);
    assert!(!config.contains(ACME_SECRET));
    let (mut runtime, logs) =
        Runtime::start_with_env(dir.path(), &config, &[(variable, ACME_SECRET)]);

    assert_acme_secret_works(&runtime).await;

    let status = runtime.terminate();
    assert!(status.success(), "exit status {status}");
    logs.wait_for_end();
    for line in logs.lines() {
        assert!(
            !line.contains(ACME_SECRET),
            "log line contains the secret: {line}"
        );
    }
}

#[tokio::test]
async fn secret_from_file_is_used() {
    let dir = tempfile::tempdir().unwrap();
    // The path is relative to the config file's directory. The trailing
    // newline that editors add is not part of the secret.
    std::fs::write(dir.path().join("acme.secret"), format!("{ACME_SECRET}\n")).unwrap();
    let config = config_of(&[
        tenant_yaml("acme", ACME_KEY, "secret_file: acme.secret", ""),
        globex_yaml(),
    ]);
    let runtime = Runtime::start(dir.path(), &config);

    assert_acme_secret_works(&runtime).await;
}

/// Sends `PUT /v1/server/users/{user}` and returns the status and body.
async fn put_user(api: &ServerApi, key: &str, secret: &str, user: &str) -> (u16, Value) {
    let response = api
        .http
        .put(format!("{}/v1/server/users/{user}", api.base))
        .header("x-parley-tenant", &api.tenant)
        .basic_auth(key, Some(secret))
        .json(&json!({ "name": user }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Returns whether tenant initech's server API accepts its key.
async fn initech_answers(runtime: &Runtime) -> bool {
    let initech = runtime.api_with_key("initech", INITECH_KEY, INITECH_SECRET);
    let (status, _) = put_user(&initech, INITECH_KEY, INITECH_SECRET, "probe").await;
    status == 200
}

/// Writes `config` to the running runtime's config file and waits until
/// `applied` returns true, failing the test after [`common::WAIT`].
///
/// NOTE: the runtime ignores a change written before its config watcher took
/// its first copy of the file, which can be just after "Listening" (see
/// `change_during_startup_is_applied`). So that the other reload tests test
/// their own behaviour, the file is written again with a new comment line
/// every two reload intervals while the change has not shown.
async fn reload<F, Fut>(dir: &Path, config: &str, condition: &str, mut applied: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let mut revision = 0;
    loop {
        revision += 1;
        write_config(dir, &format!("{config}# revision {revision}\n"));
        let rewrite_at = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < rewrite_at {
            if applied().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {:?} waiting until {condition}",
                common::WAIT
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn change_during_startup_is_applied() {
    // Opening 30 tenant stores takes long enough that the rewrite lands
    // after the runtime loaded the file but before "Listening". The watcher
    // polls every second, so the change must show within a few seconds.
    let dir = tempfile::tempdir().unwrap();
    let mut tenants: Vec<String> = (0..30)
        .map(|index| {
            let id = format!("shop-{index}");
            tenant_yaml(&id, "shop-key", &format!("secret: {ACME_SECRET}"), "")
        })
        .collect();
    let initial = config_of(&tenants);
    tenants.push(initech_yaml());
    let changed = config_of(&tenants);

    let config_dir = dir.path().to_owned();
    let mut rewritten = false;
    let (runtime, logs) = Runtime::start_observing(dir.path(), &initial, &[], move |line| {
        if !rewritten && line.contains("opened SQLite store") {
            write_config(&config_dir, &changed);
            rewritten = true;
        }
    });
    let listening = logs.wait_for("\"Listening\"").await;
    assert!(
        !listening.contains("initech"),
        "the rewrite landed before the first load, so this test proves nothing: {listening}"
    );

    poll_until("tenant initech, written during start-up, answers", || {
        initech_answers(&runtime)
    })
    .await;
}

#[tokio::test]
async fn added_tenant_is_served_after_reload() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_of(&[acme_yaml(""), globex_yaml()]));
    let initech = runtime.api_with_key("initech", INITECH_KEY, INITECH_SECRET);
    let (status, body) = put_user(&initech, INITECH_KEY, INITECH_SECRET, "ian").await;
    assert_eq!(status, 404, "before the reload: {body}");
    assert_eq!(error_code(&body), "tenant_not_found", "{body}");

    let config = config_of(&[acme_yaml(""), globex_yaml(), initech_yaml()]);
    reload(dir.path(), &config, "tenant initech answers", || {
        initech_answers(&runtime)
    })
    .await;

    let ian = initech.user("ian").await;
    let (status, body) = ian.get("/v1/channels").await;
    assert_eq!(status, 200, "{body}");
    let mut socket = Ws::connect(&runtime, "initech", &ian.token).await;
    socket
        .send_json(json!({ "type": "ping", "ref": "p1" }))
        .await;
    assert_eq!(socket.next_of("pong").await["ref"], "p1");
    assert!(
        dir.path().join("data/initech.sqlite3").exists(),
        "the new tenant has its own data file"
    );
}

#[tokio::test]
async fn open_socket_survives_reload() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_of(&[acme_yaml(""), globex_yaml()]));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let mut alice_socket = Ws::connect(&runtime, "acme", &alice.token).await;
    let mut bob_socket = Ws::connect(&runtime, "acme", &bob.token).await;

    let config = config_of(&[acme_yaml(""), globex_yaml(), initech_yaml()]);
    reload(dir.path(), &config, "tenant initech answers", || {
        initech_answers(&runtime)
    })
    .await;

    alice_socket
        .send_text(&channel, "after-reload", "still connected")
        .await;
    let ack = alice_socket.next_of("ack").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    let delivered = bob_socket.next_of("message").await;
    assert_eq!(
        delivered["message"]["client_id"], "after-reload",
        "{delivered}"
    );
}

#[tokio::test]
async fn changed_limits_apply_to_open_socket() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_of(&[acme_yaml(""), globex_yaml()]));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let mut socket = Ws::connect(&runtime, "acme", &alice.token).await;

    let text = "a".repeat(100);
    socket.send_text(&channel, "before", &text).await;
    let ack = socket.next_of("ack").await;
    assert_eq!(
        ack["client_id"], "before",
        "100 bytes under the default limit: {ack}"
    );

    // Content is checked before the channel, so bob's 100-byte text to a
    // channel that does not exist gets 413 once the limit applies, and
    // stores nothing before that.
    let lowered = acme_yaml("    limits:\n      max_message_bytes: 64\n");
    let config = config_of(&[lowered, globex_yaml()]);
    reload(dir.path(), &config, "acme's text limit is 64 bytes", || {
        let bob = bob.clone();
        let text = text.clone();
        async move {
            let (status, _) = bob
                .send_text("d_000000000000000000000000", "probe", &text)
                .await;
            status == 413
        }
    })
    .await;

    socket.send_text(&channel, "after", &text).await;
    let error = socket.next_of("error").await;
    assert_eq!(error["code"], "message_too_large", "{error}");
    assert_eq!(error["ref"], "after", "{error}");
    socket
        .send_text(&channel, "short", "fits in 64 bytes")
        .await;
    let ack = socket.next_of("ack").await;
    assert_eq!(ack["client_id"], "short", "{ack}");
}

#[tokio::test]
async fn invalid_config_keeps_previous_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, logs) =
        Runtime::start_capturing(dir.path(), &config_of(&[acme_yaml(""), globex_yaml()]));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let mut socket = Ws::connect(&runtime, "acme", &alice.token).await;

    // Had this file been applied, globex would be gone and initech added.
    let invalid = config_of(&[
        acme_yaml("    limits:\n      max_mesage_bytes: 64\n"),
        initech_yaml(),
    ]);
    let rejected_logs = logs.clone();
    reload(
        dir.path(),
        &invalid,
        "the runtime logs the rejection",
        || {
            let logs = rejected_logs.clone();
            async move {
                logs.lines()
                    .iter()
                    .any(|line| line.contains("Configuration change rejected"))
            }
        },
    )
    .await;
    let rejected = logs.wait_for("Configuration change rejected").await;
    assert!(rejected.contains("max_mesage_bytes"), "{rejected}");

    let (status, body) = put_user(&runtime.api("globex"), GLOBEX_KEY, GLOBEX_SECRET, "gina").await;
    assert_eq!(status, 200, "globex after the rejected change: {body}");
    let initech = runtime.api_with_key("initech", INITECH_KEY, INITECH_SECRET);
    let (status, body) = put_user(&initech, INITECH_KEY, INITECH_SECRET, "ian").await;
    assert_eq!(status, 404, "initech after the rejected change: {body}");
    socket.send_text(&channel, "m1", "hello").await;
    let ack = socket.next_of("ack").await;
    assert_eq!(ack["client_id"], "m1", "{ack}");

    // The watcher still applies the next valid file.
    let config = config_of(&[acme_yaml(""), globex_yaml(), initech_yaml()]);
    reload(dir.path(), &config, "tenant initech answers", || {
        initech_answers(&runtime)
    })
    .await;
}

/// Returns whether the server API of globex responds with 404
/// `tenant_not_found`.
async fn globex_is_gone(globex: ServerApi) -> bool {
    let (status, body) = put_user(&globex, GLOBEX_KEY, GLOBEX_SECRET, "probe").await;
    status == 404 && error_code(&body) == "tenant_not_found"
}

#[tokio::test]
async fn removed_tenant_closes_its_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_of(&[acme_yaml(""), globex_yaml()]));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let globex = runtime.api("globex");
    let gina = globex.user("gina").await;
    let mut acme_socket = Ws::connect(&runtime, "acme", &alice.token).await;
    let mut globex_socket = Ws::connect(&runtime, "globex", &gina.token).await;

    reload(
        dir.path(),
        &config_of(&[acme_yaml("")]),
        "globex is removed",
        || globex_is_gone(globex.clone()),
    )
    .await;

    let (code, frames) = globex_socket.expect_close().await;
    assert_eq!(code, 4004, "close code, frames before it: {frames:?}");
    let last = frames.last().expect("an error frame before the close");
    assert_eq!(last["code"], "tenant_removed", "{last}");

    let (status, body) = gina.get("/v1/channels").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "tenant_not_found", "{body}");

    acme_socket
        .send_text(&channel, "m1", "acme is still served")
        .await;
    let ack = acme_socket.next_of("ack").await;
    assert_eq!(ack["client_id"], "m1", "{ack}");
}

#[tokio::test]
async fn readded_tenant_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_of(&[acme_yaml(""), globex_yaml()]));
    let globex = runtime.api("globex");
    let gina = globex.user("gina").await;
    globex.user("hank").await;
    let channel = gina.direct_with("hank", None).await;
    let (status, body) = gina.send_text(&channel, "g1", "before removal").await;
    assert_eq!(status, 201, "{body}");

    reload(
        dir.path(),
        &config_of(&[acme_yaml("")]),
        "globex is removed",
        || globex_is_gone(globex.clone()),
    )
    .await;
    let config = config_of(&[acme_yaml(""), globex_yaml()]);
    reload(dir.path(), &config, "globex is served again", || {
        let globex = globex.clone();
        async move {
            let (status, _) = put_user(&globex, GLOBEX_KEY, GLOBEX_SECRET, "probe").await;
            status == 200
        }
    })
    .await;

    let history = gina.all_messages(&channel).await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["client_id"], "g1");
}
