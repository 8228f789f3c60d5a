//! The pre-send moderation hook, against a hook server that the test runs
//! on loopback. The server checks each call's signature on its own and
//! replies as the test scripts it.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{
    CapturedLogs, Runtime, User, Ws, config_yaml, error_code, hmac_sha256, unix_now, write_config,
};
use serde_json::{Value, json};

const HOOK_SECRET: &str = "hook-test-secret-0123456789abcdef0123456789";
const OTHER_SECRET: &str = "another-secret-0123456789abcdef0123456789ab";
const HOOK_PATH: &str = "/parley/pre-send";
/// Rate limits out of the way, and a text limit low enough for a rewrite
/// to break it.
const LIMITS: &str = "    limits:\n      messages_per_second: 10000\n      message_burst: 100000\n      max_message_chars: 60\n";
/// Rules that run before the hook: contacts are masked and one term blocks.
const RULES: &str = "    moderation:\n      rules:\n        - name: contacts\n          action: mask\n          contacts: {kinds: [phone]}\n        - name: scams\n          action: block\n          terms:\n            list: [\"lừa đảo\"]\n";

/// What the hook server does with one call.
#[derive(Clone)]
enum Answer {
    Allow,
    Reject(&'static str),
    Rewrite(Value),
    /// Waits this long, then allows.
    Sleep(Duration),
    Status(u16),
    /// Replies 200 with this body.
    Raw(&'static str),
}

/// One call the hook server received.
#[derive(Clone, Debug)]
struct Received {
    signature: String,
    body: Vec<u8>,
    json: Value,
    /// True when the signature matched the body and `HOOK_SECRET`, as
    /// checked by [`signed_with`], which does not use the runtime's code.
    verified: bool,
}

type Script = Arc<dyn Fn(&Value) -> Answer + Send + Sync>;

#[derive(Clone)]
struct HookState {
    script: Script,
    received: Arc<Mutex<Vec<Received>>>,
}

struct HookServer {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl HookServer {
    async fn start(script: impl Fn(&Value) -> Answer + Send + Sync + 'static) -> HookServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = HookState {
            script: Arc::new(script),
            received: received.clone(),
        };
        let app = axum::Router::new()
            .route(HOOK_PATH, axum::routing::post(answer))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        HookServer {
            url: format!("http://{address}{HOOK_PATH}"),
            received,
        }
    }

    /// Returns every call received so far, and fails the test if one was
    /// not signed with the hook's secret.
    fn calls(&self) -> Vec<Received> {
        let calls = self.received.lock().unwrap().clone();
        for call in &calls {
            assert!(call.verified, "call with a bad signature: {call:?}");
        }
        calls
    }

    /// Returns the `hook:` section that points at this server.
    fn section(&self, timeout_ms: u64, on_failure: &str) -> String {
        format!(
            "      hook:\n        url: {}\n        timeout_ms: {timeout_ms}\n        on_failure: {on_failure}\n        secret: {HOOK_SECRET}\n",
            self.url
        )
    }
}

async fn answer(
    State(state): State<HookState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let signature = headers
        .get("parley-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let verified = signed_with(HOOK_SECRET.as_bytes(), &signature, &body);
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.received.lock().unwrap().push(Received {
        signature,
        body: body.to_vec(),
        json: json.clone(),
        verified,
    });
    if !verified {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    match (state.script)(&json) {
        Answer::Allow => axum::Json(json!({ "action": "allow" })).into_response(),
        Answer::Reject(reason) => {
            axum::Json(json!({ "action": "reject", "reason": reason })).into_response()
        }
        Answer::Rewrite(content) => {
            axum::Json(json!({ "action": "rewrite", "content": content })).into_response()
        }
        Answer::Sleep(wait) => {
            tokio::time::sleep(wait).await;
            axum::Json(json!({ "action": "allow" })).into_response()
        }
        Answer::Status(code) => {
            (StatusCode::from_u16(code).unwrap(), "hook failed").into_response()
        }
        Answer::Raw(text) => ([("content-type", "application/json")], text).into_response(),
    }
}

/// Checks a `Parley-Signature` header as a tenant's hook would, written
/// apart from the runtime's own code: `v1` must be the lowercase hex
/// HMAC-SHA256 of `<t>.<body>`, and `t` must be recent.
fn signed_with(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let Ok(timestamp) = t.parse::<u64>() else {
        return false;
    };
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    let expected: String = hmac_sha256(secret, &signed)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    v1 == expected && unix_now().abs_diff(timestamp) <= 300
}

struct Chat {
    runtime: Runtime,
    hook: HookServer,
    alice: User,
    bob: User,
    channel: String,
    _dir: tempfile::TempDir,
}

/// Starts a hook server with `script`, then a runtime whose acme tenant
/// has [`LIMITS`], [`RULES`] and the hook section `hook(server)`.
async fn start(
    script: impl Fn(&Value) -> Answer + Send + Sync + 'static,
    hook: impl FnOnce(&HookServer) -> String,
) -> Chat {
    let (chat, _) = start_with_logs(script, hook).await;
    chat
}

async fn start_with_logs(
    script: impl Fn(&Value) -> Answer + Send + Sync + 'static,
    hook: impl FnOnce(&HookServer) -> String,
) -> (Chat, CapturedLogs) {
    let server = HookServer::start(script).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{LIMITS}{RULES}{}", hook(&server));
    let (runtime, logs) = Runtime::start_with_env(dir.path(), &config_yaml(&extra), &[]);
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let chat = Chat {
        runtime,
        hook: server,
        alice,
        bob,
        channel,
        _dir: dir,
    };
    (chat, logs)
}

/// A generous timeout for hooks that are expected to reply, so a slow
/// machine does not turn a reply into a failure.
const PATIENT: u64 = 10_000;

fn text_of(call: &Received) -> &str {
    call.json["content"]["text"].as_str().unwrap_or_default()
}

async fn texts_in(user: &User, channel: &str) -> Vec<String> {
    user.all_messages(channel)
        .await
        .iter()
        .map(|message| {
            message["content"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Reads one sample of `parley_moderation_decisions_total` for the hook.
async fn hook_decisions(runtime: &Runtime, decision: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", runtime.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let labels = format!(
        "parley_moderation_decisions_total{{tenant=\"acme\",rule=\"hook\",decision=\"{decision}\",shadow=\"false\"}} "
    );
    text.lines()
        .find_map(|line| line.strip_prefix(&labels))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn allowed_message_follows_the_rules() {
    let chat = start(|_| Answer::Allow, |hook| hook.section(PATIENT, "closed")).await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;

    let (status, body) = chat
        .alice
        .send_text(&chat.channel, "a-1", "xe còn nhé")
        .await;
    assert_eq!(status, 201, "{body}");
    let delivered = bob_ws.next_of("message").await;
    assert_eq!(delivered["message"]["content"]["text"], "xe còn nhé");

    // A message a rule blocks never reaches the hook; one a rule masks
    // reaches it masked.
    let (status, body) = chat.alice.send_text(&chat.channel, "a-2", "lừa đảo").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_code(&body), "blocked_term");
    let (status, body) = chat
        .alice
        .send_text(&chat.channel, "a-3", "gọi 0912345678")
        .await;
    assert_eq!(status, 201, "{body}");

    let calls = chat.hook.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[0].json,
        json!({
            "tenant": "acme", "action": "send", "channel_id": chat.channel,
            "sender_id": "alice", "content": { "kind": "text", "text": "xe còn nhé" }
        })
    );
    assert_eq!(text_of(&calls[1]), "gọi ***");
    assert_eq!(hook_decisions(&chat.runtime, "allow").await, 2.0);

    let metrics = reqwest::get(format!("{}/metrics", chat.runtime.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "parley_moderation_rule_duration_seconds_count{tenant=\"acme\",rule=\"hook\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn rejected_message_is_not_stored() {
    let script = |request: &Value| match request["content"]["text"].as_str() {
        Some(text) if text.contains("spam") => Answer::Reject("spam_link"),
        Some(text) if text.contains("rude") => Answer::Reject("Rude words <b>here</b>"),
        _ => Answer::Allow,
    };
    let chat = start(script, |hook| hook.section(PATIENT, "open")).await;
    let mut alice_ws = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;

    let (status, body) = chat
        .alice
        .send_text(&chat.channel, "r-1", "spam here")
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_code(&body), "rejected_by_hook");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("spam_link"), "{body}");

    // A reason that is not a short code is not passed on.
    let (status, body) = chat.alice.send_text(&chat.channel, "r-2", "rude").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_code(&body), "rejected_by_hook");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("Rude") && !message.contains('<'),
        "{body}"
    );

    alice_ws.send_text(&chat.channel, "r-3", "more spam").await;
    let error = alice_ws.next_of("error").await;
    assert_eq!(error["code"], "rejected_by_hook", "{error}");
    assert_eq!(error["ref"], "r-3", "{error}");

    // The first frame Bob receives is the next allowed message, with seq 1.
    let (status, body) = chat.alice.send_text(&chat.channel, "r-4", "xin chào").await;
    assert_eq!(status, 201, "{body}");
    let delivered = bob_ws.next_json().await;
    assert_eq!(delivered["type"], "message", "{delivered}");
    assert_eq!(delivered["message"]["seq"], 1, "{delivered}");
    assert_eq!(texts_in(&chat.bob, &chat.channel).await, ["xin chào"]);
    assert_eq!(chat.hook.calls().len(), 4);
    assert_eq!(hook_decisions(&chat.runtime, "reject").await, 3.0);
}

#[tokio::test]
async fn rewrite_is_stored_and_delivered() {
    let script = |request: &Value| {
        let text = request["content"]["text"].as_str().unwrap_or_default();
        Answer::Rewrite(json!({ "kind": "text", "text": text.replace("zalo", "[app]") }))
    };
    let chat = start(script, |hook| hook.section(PATIENT, "closed")).await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;

    let (status, body) = chat
        .alice
        .send_text(&chat.channel, "w-1", "nhắn zalo nhé")
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["message"]["content"]["text"], "nhắn [app] nhé",
        "{body}"
    );
    let delivered = bob_ws.next_of("message").await;
    assert_eq!(
        delivered["message"]["content"]["text"], "nhắn [app] nhé",
        "{delivered}"
    );
    assert_eq!(texts_in(&chat.bob, &chat.channel).await, ["nhắn [app] nhé"]);
    assert_eq!(hook_decisions(&chat.runtime, "rewrite").await, 1.0);
}

#[tokio::test]
async fn retry_does_not_call_the_hook_again() {
    // The first call is rewritten and every later one rejected, so a
    // retry that reached the hook would fail.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let script = move |_: &Value| {
        if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Answer::Rewrite(json!({ "kind": "text", "text": "đã sửa" }))
        } else {
            Answer::Reject("hook_saw_a_retry")
        }
    };
    let chat = start(script, |hook| hook.section(PATIENT, "closed")).await;

    let (status, first) = chat
        .alice
        .send_text(&chat.channel, "r-1", "gọi 0912 345 678")
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["message"]["content"]["text"], "đã sửa", "{first}");
    let (status, retry) = chat
        .alice
        .send_text(&chat.channel, "r-1", "gọi 0912 345 678")
        .await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["message"], first["message"], "{retry}");

    // Other content under the same client id is a conflict, found before
    // the hook too.
    let (status, conflict) = chat.alice.send_text(&chat.channel, "r-1", "khác").await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(error_code(&conflict), "client_id_conflict");
    assert_eq!(chat.hook.calls().len(), 1);
    assert_eq!(texts_in(&chat.bob, &chat.channel).await, ["đã sửa"]);
}

#[tokio::test]
async fn rewrite_past_the_limits_is_rejected() {
    // LIMITS allows 60 characters.
    let script = |_: &Value| Answer::Rewrite(json!({ "kind": "text", "text": "x".repeat(61) }));
    let chat = start(script, |hook| hook.section(PATIENT, "open")).await;

    let (status, body) = chat.alice.send_text(&chat.channel, "l-1", "ngắn").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_code(&body), "rejected_by_hook");
    assert!(texts_in(&chat.bob, &chat.channel).await.is_empty());
    assert_eq!(hook_decisions(&chat.runtime, "rewrite_invalid").await, 1.0);
}

#[tokio::test]
async fn rewrite_to_kinds_clients_cannot_send_is_rejected() {
    let script = |request: &Value| {
        if request["content"]["text"] == "một" {
            Answer::Rewrite(
                json!({ "kind": "automated", "extension": "auto_reply", "text": "giả" }),
            )
        } else {
            Answer::Rewrite(
                json!({ "kind": "template", "template_id": "none", "values": {}, "text": "giả" }),
            )
        }
    };
    let chat = start(script, |hook| hook.section(PATIENT, "open")).await;

    for (client_id, text) in [("k-1", "một"), ("k-2", "hai")] {
        let (status, body) = chat.alice.send_text(&chat.channel, client_id, text).await;
        assert_eq!(status, 422, "{text}: {body}");
        assert_eq!(error_code(&body), "rejected_by_hook", "{text}");
    }
    assert!(texts_in(&chat.bob, &chat.channel).await.is_empty());
    assert_eq!(hook_decisions(&chat.runtime, "rewrite_invalid").await, 2.0);
}

#[tokio::test]
async fn template_text_rewrite_drops_values() {
    let script = |request: &Value| {
        let mut content = request["content"].clone();
        content["text"] = json!("Chào ***, xe vẫn còn ạ.");
        Answer::Rewrite(content)
    };
    let templates = "    templates:\n      - id: still-available\n        text: \"Chào {{ten}}, {{mon_hang}} vẫn còn ạ.\"\n";
    let chat = start(script, |hook| {
        format!("{}{templates}", hook.section(PATIENT, "closed"))
    })
    .await;

    let content = json!({
        "kind": "template",
        "template_id": "still-available",
        "values": { "ten": "Minh zalo minh_tran", "mon_hang": "xe" },
    });
    let (status, body) = chat
        .alice
        .post(
            &format!("/v1/channels/{}/messages", chat.channel),
            json!({ "client_id": "t-1", "content": content }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let stored = &body["message"]["content"];
    assert_eq!(stored["text"], "Chào ***, xe vẫn còn ạ.", "{body}");
    assert!(
        stored
            .get("values")
            .is_none_or(|values| values == &json!({})),
        "{body}"
    );
}

#[tokio::test]
async fn slow_hook_open_stores_unchanged() {
    let script = |_: &Value| Answer::Sleep(Duration::from_secs(30));
    let (chat, logs) = start_with_logs(script, |hook| hook.section(50, "open")).await;

    let (status, body) = chat
        .alice
        .send_text(&chat.channel, "o-1", "tin nhắn riêng tư")
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"]["content"]["text"], "tin nhắn riêng tư");
    assert_eq!(
        texts_in(&chat.bob, &chat.channel).await,
        ["tin nhắn riêng tư"]
    );
    assert_eq!(hook_decisions(&chat.runtime, "failed_open").await, 1.0);

    // The failure is logged with the tenant, the channel and the cause,
    // and without the message or the secret.
    let line = logs.wait_for("Moderation hook call failed").await;
    assert!(line.contains("\"tenant\":\"acme\""), "{line}");
    assert!(line.contains(&chat.channel), "{line}");
    assert!(line.contains("timeout"), "{line}");
    for line in logs.lines() {
        assert!(!line.contains("riêng tư"), "{line}");
        assert!(!line.contains(HOOK_SECRET), "{line}");
    }
}

#[tokio::test]
async fn slow_hook_closed_rejects() {
    let script = |_: &Value| Answer::Sleep(Duration::from_secs(30));
    let chat = start(script, |hook| hook.section(50, "closed")).await;
    let mut alice_ws = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;

    let (status, body) = chat.alice.send_text(&chat.channel, "c-1", "xin chào").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_code(&body), "moderation_unavailable");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("retry"),
        "{body}"
    );

    alice_ws.send_text(&chat.channel, "c-2", "xin chào").await;
    let error = alice_ws.next_of("error").await;
    assert_eq!(error["code"], "moderation_unavailable", "{error}");

    assert!(texts_in(&chat.bob, &chat.channel).await.is_empty());
    assert_eq!(hook_decisions(&chat.runtime, "failed_closed").await, 2.0);
}

#[tokio::test]
async fn failing_hook_follows_policy() {
    let script = |request: &Value| match request["content"]["text"].as_str() {
        Some("status") => Answer::Status(500),
        Some("redirect") => Answer::Status(307),
        Some("garbage") => Answer::Raw("{\"action\":\"ban\"}"),
        _ => Answer::Raw("not json"),
    };
    let open = start(script, |hook| hook.section(PATIENT, "open")).await;
    for text in ["status", "redirect", "garbage", "other"] {
        let (status, body) = open.alice.send_text(&open.channel, text, text).await;
        assert_eq!(status, 201, "{text}: {body}");
        assert_eq!(body["message"]["content"]["text"], text, "{body}");
    }
    assert_eq!(hook_decisions(&open.runtime, "failed_open").await, 4.0);

    let closed = start(script, |hook| hook.section(PATIENT, "closed")).await;
    for text in ["status", "garbage"] {
        let (status, body) = closed.alice.send_text(&closed.channel, text, text).await;
        assert_eq!(status, 503, "{text}: {body}");
        assert_eq!(error_code(&body), "moderation_unavailable");
    }
    assert!(texts_in(&closed.bob, &closed.channel).await.is_empty());
}

#[tokio::test]
async fn signature_needs_the_hook_secret() {
    let chat = start(|_| Answer::Allow, |hook| hook.section(PATIENT, "closed")).await;
    let (status, body) = chat.alice.send_text(&chat.channel, "s-1", "xin chào").await;
    assert_eq!(status, 201, "{body}");

    let calls = chat.hook.calls();
    let call = &calls[0];
    assert!(signed_with(
        HOOK_SECRET.as_bytes(),
        &call.signature,
        &call.body
    ));
    assert!(!signed_with(
        OTHER_SECRET.as_bytes(),
        &call.signature,
        &call.body
    ));

    // The runtime's own verification, which webhooks will share, agrees.
    use chat_runtime::signature::{DEFAULT_TOLERANCE_SECONDS, SignatureError, verify};
    let now = unix_now();
    assert_eq!(
        verify(
            HOOK_SECRET.as_bytes(),
            &call.signature,
            &call.body,
            now,
            DEFAULT_TOLERANCE_SECONDS
        ),
        Ok(())
    );
    assert_eq!(
        verify(
            OTHER_SECRET.as_bytes(),
            &call.signature,
            &call.body,
            now,
            DEFAULT_TOLERANCE_SECONDS
        ),
        Err(SignatureError::Mismatch)
    );
    let mut altered = call.body.clone();
    altered.push(b' ');
    assert_eq!(
        verify(
            HOOK_SECRET.as_bytes(),
            &call.signature,
            &altered,
            now,
            DEFAULT_TOLERANCE_SECONDS
        ),
        Err(SignatureError::Mismatch)
    );
}

#[tokio::test]
async fn edits_go_through_the_hook() {
    let script = |request: &Value| {
        if request["action"] != "edit" {
            return Answer::Allow;
        }
        match request["content"]["text"].as_str() {
            Some("reject me") => Answer::Reject("edit_refused"),
            Some("to location") => Answer::Rewrite(
                json!({ "kind": "location", "latitude": 10.77, "longitude": 106.7 }),
            ),
            Some(text) => Answer::Rewrite(json!({ "kind": "text", "text": text.to_uppercase() })),
            None => Answer::Allow,
        }
    };
    let chat = start(script, |hook| hook.section(PATIENT, "open")).await;
    let (status, body) = chat.alice.send_text(&chat.channel, "e-1", "xe còn").await;
    assert_eq!(status, 201, "{body}");
    let seq = body["message"]["seq"].as_u64().unwrap();
    let path = format!("/v1/channels/{}/messages/{seq}", chat.channel);
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;

    let (status, body) = chat
        .alice
        .patch(
            &path,
            json!({ "content": { "kind": "text", "text": "xe đã bán" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["content"]["text"], "XE ĐÃ BÁN", "{body}");
    let edited = bob_ws.next_of("message_edited").await;
    assert_eq!(
        edited["message"]["content"]["text"], "XE ĐÃ BÁN",
        "{edited}"
    );

    let (status, body) = chat
        .alice
        .patch(
            &path,
            json!({ "content": { "kind": "text", "text": "reject me" } }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_code(&body), "rejected_by_hook");

    // An edit keeps the kind the sender chose.
    let (status, body) = chat
        .alice
        .patch(
            &path,
            json!({ "content": { "kind": "text", "text": "to location" } }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_code(&body), "rejected_by_hook");
    assert_eq!(texts_in(&chat.bob, &chat.channel).await, ["XE ĐÃ BÁN"]);

    let calls = chat.hook.calls();
    let edit = &calls[1];
    assert_eq!(edit.json["action"], "edit", "{:?}", edit.json);
    assert_eq!(edit.json["seq"], seq, "{:?}", edit.json);
    assert_eq!(edit.json["sender_id"], "alice", "{:?}", edit.json);
    assert_eq!(edit.json["channel_id"], chat.channel.as_str());
}

/// Writes `config` until the runtime applies it, as `applied` tells: a
/// change written before the runtime's watcher took its first copy of the
/// file is not seen, so the file is written again, with a new comment,
/// every two seconds.
async fn reload_until<F, Fut>(dir: &std::path::Path, config: &str, condition: &str, mut applied: F)
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
                "timed out waiting until {condition}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn reload_changes_the_hook() {
    let rejecting = HookServer::start(|_| Answer::Reject("closed_for_today")).await;
    let chat = start(|_| Answer::Allow, |hook| hook.section(PATIENT, "open")).await;
    let (status, body) = chat.alice.send_text(&chat.channel, "h-1", "một").await;
    assert_eq!(status, 201, "{body}");

    let sent = std::cell::Cell::new(1);
    let send_status = |text: &'static str| {
        sent.set(sent.get() + 1);
        let alice = chat.alice.clone();
        let channel = chat.channel.clone();
        let client_id = format!("h-{}", sent.get());
        async move { alice.send_text(&channel, &client_id, text).await.0 }
    };

    let extra = format!("{LIMITS}{RULES}{}", rejecting.section(PATIENT, "open"));
    reload_until(
        &chat.runtime.dir,
        &config_yaml(&extra),
        "the new hook answers",
        || {
            let status = send_status("hai");
            async move { status.await == 422 }
        },
    )
    .await;
    assert!(!rejecting.calls().is_empty());

    // Without a hook section, nothing is called any more.
    let extra = format!("{LIMITS}{RULES}");
    reload_until(
        &chat.runtime.dir,
        &config_yaml(&extra),
        "the hook is gone",
        || {
            let status = send_status("ba");
            async move { status.await == 201 }
        },
    )
    .await;
    let calls = rejecting.calls().len();
    assert_eq!(send_status("bốn").await, 201);
    assert_eq!(rejecting.calls().len(), calls);
}

/// Messages the store would refuse (from a non-member, an edit of someone
/// else's message, a muted sender) never reach the hook, and keep their
/// own error codes.
#[tokio::test]
async fn refused_messages_never_reach_the_hook() {
    let chat = start(|_| Answer::Allow, |hook| hook.section(PATIENT, "closed")).await;
    let api = chat.runtime.api("acme");
    let carol = api.user("carol").await;

    let (status, body) = carol.send_text(&chat.channel, "c-1", "xin chào").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = carol.send_text("d_nonexistent", "c-2", "xin chào").await;
    assert_eq!(status, 404);

    let (status, body) = chat.alice.send_text(&chat.channel, "a-1", "xe còn").await;
    assert_eq!(status, 201, "{body}");
    let path = format!("/v1/channels/{}/messages/1", chat.channel);
    let (status, body) = chat
        .bob
        .patch(
            &path,
            json!({ "content": { "kind": "text", "text": "của tôi" } }),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    let (status, _) = api
        .post(
            "/v1/server/users/bob/restrictions",
            json!({ "kind": "mute" }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = chat.bob.send_text(&chat.channel, "b-1", "mua").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "muted");

    // Only Alice's message reached the hook.
    let calls = chat.hook.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(text_of(&calls[0]), "xe còn");
}
