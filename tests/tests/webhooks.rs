//! Webhooks against a receiver on loopback: signed events in log order,
//! offline recipients, retries, the dead-letter list and its replay, and
//! delivery resumed after SIGKILL.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{NO_RATE_LIMIT, Runtime, ServerApi, User, Ws, config_yaml, error_code};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "webhook-test-secret-0123456789abcdef";

/// A request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    json: Value,
}

/// How the receiver replies: fail the first `fail_first` requests for an
/// event id, and always fail the events of the messages in `always_fail`.
#[derive(Default)]
struct Script {
    fail_first: u32,
    always_fail: Vec<u64>,
    attempts: HashMap<String, u32>,
    received: Vec<Received>,
}

type Shared = Arc<Mutex<Script>>;

async fn receive(State(script): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = header(&headers, "parley-event-id");
    let seq = json["data"]["message"]["seq"].as_u64();
    let mut script = script.lock().unwrap();
    let attempts = script.attempts.entry(id.clone()).or_default();
    *attempts += 1;
    let attempt = *attempts;
    script.received.push(Received {
        headers,
        body,
        json,
    });
    let always_fail = seq.is_some_and(|seq| script.always_fail.contains(&seq));
    if always_fail || attempt <= script.fail_first {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Starts a receiver on a free loopback port.
async fn receiver(script: Script) -> (SocketAddr, Shared) {
    let shared = Arc::new(Mutex::new(script));
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, shared)
}

fn webhook_yaml(address: SocketAddr, extra: &str) -> String {
    format!(
        "{NO_RATE_LIMIT}    webhooks:\n      - name: analytics\n        url: http://{address}/hook\n        secret: {SECRET}\n        retry_initial_ms: 20\n{extra}"
    )
}

/// Checks a `Parley-Signature` header independently of the runtime's code.
fn signature_valid(header: &str, body: &[u8], secret: &str) -> bool {
    let fields: HashMap<&str, &str> = header
        .split(',')
        .filter_map(|part| part.split_once('='))
        .collect();
    let (Some(timestamp), Some(signature)) = (fields.get("t"), fields.get("v1")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    expected == *signature
}

/// Waits until `check` holds for the received requests.
async fn wait_for(script: &Shared, what: &str, check: impl Fn(&[Received]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if check(&script.lock().unwrap().received) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn message_seqs(received: &[Received]) -> Vec<u64> {
    received
        .iter()
        .filter(|request| request.json["type"] == "message.new")
        .filter_map(|request| request.json["data"]["message"]["seq"].as_u64())
        .collect()
}

struct Setup {
    runtime: Runtime,
    api: ServerApi,
    alice: User,
    bob: User,
    channel: String,
    _dir: tempfile::TempDir,
}

async fn start(address: SocketAddr, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(&webhook_yaml(address, extra)));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let channel = alice.direct_with("bob", Some("xe-42")).await;
    Setup {
        runtime,
        api,
        alice,
        bob,
        channel,
        _dir: dir,
    }
}

async fn send(user: &User, channel: &str, client_id: &str) -> u64 {
    let (status, body) = user.send_text(channel, client_id, "xin chào").await;
    assert_eq!(status, 201, "{body}");
    body["message"]["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn events_arrive_signed_and_in_order() {
    let (address, script) = receiver(Script::default()).await;
    let setup = start(address, "        events: [message.*]\n").await;
    // Bob has a socket open until the first message was delivered.
    let bob_ws = Ws::connect(&setup.runtime, "acme", &setup.bob.token).await;
    send(&setup.alice, &setup.channel, "m-1").await;
    wait_for(&script, "message 1", |received| !received.is_empty()).await;
    bob_ws.close().await;
    for index in 2..=20 {
        send(&setup.alice, &setup.channel, &format!("m-{index}")).await;
    }

    wait_for(&script, "20 messages", |received| {
        message_seqs(received).len() >= 20
    })
    .await;
    let received = script.lock().unwrap().received.clone();
    assert_eq!(message_seqs(&received), (1..=20).collect::<Vec<u64>>());
    // The filter keeps users and channels out.
    assert!(
        received
            .iter()
            .all(|request| request.json["type"] == "message.new"),
        "{received:?}"
    );
    for request in &received {
        let signature = header(&request.headers, "parley-signature");
        assert!(
            signature_valid(&signature, &request.body, SECRET),
            "{signature}"
        );
        assert!(!signature_valid(
            &signature,
            &request.body,
            "another-secret-0123456789abcdef01"
        ));
        assert_eq!(header(&request.headers, "parley-event-type"), "message.new");
        assert_eq!(
            header(&request.headers, "parley-event-id"),
            request.json["id"].as_str().unwrap()
        );
        assert_eq!(request.json["tenant"], "acme");
    }
    // Tampering with the body breaks the signature.
    let first = &received[0];
    let mut tampered = first.body.to_vec();
    tampered.extend_from_slice(b" ");
    assert!(!signature_valid(
        &header(&first.headers, "parley-signature"),
        &tampered,
        SECRET
    ));

    // Bob had a socket for the first message, and none later.
    assert_eq!(received[0].json["offline_recipients"], json!([]));
    assert_eq!(received[19].json["offline_recipients"], json!(["bob"]));
}

#[tokio::test]
async fn blockers_are_not_offline_recipients() {
    let (address, script) = receiver(Script::default()).await;
    let setup = start(address, "        events: [message.new]\n").await;
    let (status, _) = setup.bob.put("/v1/me/blocks/alice").await;
    assert_eq!(status, 204);
    send(&setup.alice, &setup.channel, "m-1").await;
    send(&setup.bob, &setup.channel, "m-2").await;

    wait_for(&script, "both messages", |received| {
        message_seqs(received).len() >= 2
    })
    .await;
    let received = script.lock().unwrap().received.clone();
    // Bob blocks Alice, so her message is no push for him. Alice does not
    // block Bob, so his is one for her.
    assert_eq!(received[0].json["offline_recipients"], json!([]));
    assert_eq!(received[1].json["offline_recipients"], json!(["alice"]));
}

#[tokio::test]
async fn failed_attempts_are_retried() {
    let script = Script {
        fail_first: 2,
        ..Script::default()
    };
    let (address, script) = receiver(script).await;
    let setup = start(address, "        events: [message.new]\n").await;
    send(&setup.alice, &setup.channel, "m-1").await;
    send(&setup.alice, &setup.channel, "m-2").await;

    wait_for(&script, "both messages accepted", |received| {
        received.len() >= 6
    })
    .await;
    let received = script.lock().unwrap().received.clone();
    // Three attempts of the first event, then three of the second: the
    // order is kept through the retries.
    assert_eq!(message_seqs(&received), [1, 1, 1, 2, 2, 2]);
    let ids: Vec<String> = received
        .iter()
        .map(|request| header(&request.headers, "parley-event-id"))
        .collect();
    assert_eq!(ids[0], ids[2]);
    assert_ne!(ids[2], ids[3]);
}

#[tokio::test]
async fn dead_letters_can_be_replayed() {
    let (address, script) = receiver(Script::default()).await;
    let setup = start(
        address,
        "        events: [message.new]\n        max_attempts: 3\n",
    )
    .await;

    script.lock().unwrap().always_fail.push(2);
    send(&setup.alice, &setup.channel, "m-1").await;
    send(&setup.alice, &setup.channel, "m-2").await;
    send(&setup.alice, &setup.channel, "m-3").await;
    wait_for(&script, "message 3 after message 2 failed", |received| {
        message_seqs(received).contains(&3)
    })
    .await;
    assert_eq!(
        message_seqs(&script.lock().unwrap().received),
        [1, 2, 2, 2, 3]
    );

    let letters_path = "/v1/server/webhooks/analytics/dead-letters";
    let (status, body) = setup.api.get(letters_path).await;
    assert_eq!(status, 200, "{body}");
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{body}");
    assert_eq!(letters[0]["event"]["data"]["message"]["seq"], 2);
    assert_eq!(letters[0]["attempts"], 3);
    let next_id = letters[0]["event"]["id"].as_str().unwrap().to_owned();
    assert_eq!(letters[0]["last_error"], "HTTP 503");

    // Replaying while the receiver still fails keeps the letter.
    let replay = format!("{letters_path}/{next_id}/replay");
    let (status, body) = setup.api.post(&replay, json!({})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(error_code(&body), "webhook_failed");
    let (_, body) = setup.api.get(letters_path).await;
    assert_eq!(body["dead_letters"][0]["attempts"], 4);

    script.lock().unwrap().always_fail.clear();
    let (status, body) = setup.api.post(&replay, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["delivered"], true);
    let (_, body) = setup.api.get(letters_path).await;
    assert_eq!(body["dead_letters"], json!([]));
    assert_eq!(
        message_seqs(&script.lock().unwrap().received),
        [1, 2, 2, 2, 3, 2, 2]
    );

    let (status, _) = setup.api.delete(&format!("{letters_path}/{next_id}")).await;
    assert_eq!(status, 404);
    let (status, body) = setup
        .api
        .get("/v1/server/webhooks/unknown/dead-letters")
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_resumes_after_kill() {
    let (address, script) = receiver(Script::default()).await;
    let mut setup = start(address, "        events: [message.new]\n").await;
    for index in 1..=30 {
        send(&setup.alice, &setup.channel, &format!("m-{index}")).await;
    }
    wait_for(&script, "some deliveries", |received| {
        message_seqs(received).len() >= 10
    })
    .await;
    setup.runtime.kill();

    let runtime = Runtime::start(setup.runtime.dir.as_path(), "");
    let alice = setup.alice.at(&runtime);
    for index in 31..=40 {
        send(&alice, &setup.channel, &format!("m-{index}")).await;
    }
    wait_for(&script, "message 40", |received| {
        message_seqs(received).contains(&40)
    })
    .await;

    // Every message arrived, in order; a restart may repeat the events
    // after the last saved cursor, never skip one.
    let seqs = message_seqs(&script.lock().unwrap().received);
    let mut first_seen = Vec::new();
    for seq in &seqs {
        if !first_seen.contains(seq) {
            first_seen.push(*seq);
        }
    }
    assert_eq!(first_seen, (1..=40).collect::<Vec<u64>>(), "{seqs:?}");
    assert!(seqs.len() <= 40 + 30, "{seqs:?}");
}
