//! The report queue and slow mode, against one runtime process.

mod common;

use std::time::Duration;

use common::{NO_RATE_LIMIT, Runtime, ServerApi, User, Ws, config_yaml, error_code};
use serde_json::{Value, json};

const FLAG_RULE: &str = "    moderation:
      rules:
        - name: scam-words
          terms:
            list: [\"chuyển khoản trước\"]
            accent_insensitive: true
          action: flag
";

struct Chat {
    runtime: Runtime,
    api: ServerApi,
    alice: User,
    bob: User,
    carol: User,
    group: String,
    _dir: tempfile::TempDir,
}

async fn start(extra: &str) -> Chat {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(&format!("{NO_RATE_LIMIT}{extra}")));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    api.user("dave").await;
    let (status, body) = alice
        .post(
            "/v1/channels/group",
            json!({ "name": "Chợ đồ cũ", "members": ["bob", "carol"] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let group = body["id"].as_str().unwrap().to_owned();
    Chat {
        runtime,
        api,
        alice,
        bob,
        carol,
        group,
        _dir: dir,
    }
}

async fn events_of(api: &ServerApi, kind: &str) -> Vec<Value> {
    let (status, body) = api.get("/v1/server/events?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == kind)
        .cloned()
        .collect()
}

#[tokio::test]
async fn member_reports_reach_the_queue() {
    let chat = start("").await;
    let (status, body) = chat
        .bob
        .send_text(&chat.group, "b-1", "Mua đi, rẻ lắm")
        .await;
    assert_eq!(status, 201, "{body}");

    let report =
        json!({ "channel_id": chat.group, "seq": 1, "reason": "spam", "note": "quảng cáo" });
    let (status, body) = chat.carol.post("/v1/reports", report.clone()).await;
    assert_eq!(status, 201, "{body}");
    let filed = body["report"].clone();
    assert_eq!(filed["status"], "open");
    assert_eq!(filed["user_id"], "bob");
    assert_eq!(filed["reporter"], "carol");
    assert_eq!(filed["reason"], "spam");
    assert_eq!(filed["content"]["text"], "Mua đi, rẻ lắm");

    // Reporting again returns the open report.
    let (status, body) = chat.carol.post("/v1/reports", report).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["id"], filed["id"]);

    // The content stays in the report after the message is deleted.
    let (status, _) = chat
        .bob
        .delete(&format!("/v1/channels/{}/messages/1", chat.group))
        .await;
    assert_eq!(status, 200);
    let id = filed["id"].as_str().unwrap();
    let (status, body) = chat.api.get(&format!("/v1/server/reports/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["content"]["text"], "Mua đi, rẻ lắm");

    let (status, body) = chat
        .alice
        .post("/v1/reports", json!({ "user_id": "bob", "reason": "scam" }))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["report"].get("seq").is_none(), "{body}");

    let (status, body) = chat.api.get("/v1/server/reports").await;
    assert_eq!(status, 200, "{body}");
    let reports = body["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 2, "{body}");
    assert_eq!(reports[0]["id"], filed["id"]);
    assert_eq!(events_of(&chat.api, "report.filed").await.len(), 2);
}

#[tokio::test]
async fn report_requests_are_checked() {
    let chat = start("").await;
    let (status, _) = chat.bob.send_text(&chat.group, "b-1", "Xin chào").await;
    assert_eq!(status, 201);
    let dave = chat.api.user("dave").await;

    let cases = [
        (
            &chat.carol,
            json!({ "channel_id": chat.group, "seq": 1, "reason": "ugly" }),
            400,
        ),
        (
            &chat.carol,
            json!({ "channel_id": chat.group, "seq": 0, "reason": "spam" }),
            400,
        ),
        (
            &chat.carol,
            json!({ "channel_id": chat.group, "seq": 9, "reason": "spam" }),
            404,
        ),
        (
            &chat.carol,
            json!({ "channel_id": chat.group, "reason": "spam" }),
            400,
        ),
        (
            &chat.carol,
            json!({ "channel_id": chat.group, "seq": 1, "user_id": "bob", "reason": "spam" }),
            400,
        ),
        (
            &chat.carol,
            json!({ "user_id": "nobody", "reason": "spam" }),
            404,
        ),
        (
            &chat.bob,
            json!({ "channel_id": chat.group, "seq": 1, "reason": "spam" }),
            400,
        ),
        (
            &chat.bob,
            json!({ "user_id": "bob", "reason": "spam" }),
            400,
        ),
        // Users outside the channel cannot report its messages.
        (
            &dave,
            json!({ "channel_id": chat.group, "seq": 1, "reason": "spam" }),
            404,
        ),
        (
            &chat.carol,
            json!({ "user_id": "bob", "reason": "spam", "note": "x".repeat(1001) }),
            400,
        ),
    ];
    for (user, body, expected) in cases {
        let (status, answer) = user.post("/v1/reports", body.clone()).await;
        assert_eq!(status, expected, "{} {body}: {answer}", user.id);
    }
    let (_, body) = chat.api.get("/v1/server/reports").await;
    assert_eq!(body["reports"], json!([]));

    // A deleted message has nothing left to review, and a message the
    // reporter's own block hides is not there for them.
    let (status, _) = chat.bob.send_text(&chat.group, "b-2", "Xoá sau").await;
    assert_eq!(status, 201);
    let (status, _) = chat
        .bob
        .delete(&format!("/v1/channels/{}/messages/2", chat.group))
        .await;
    assert_eq!(status, 200);
    let (status, body) = chat
        .carol
        .post(
            "/v1/reports",
            json!({ "channel_id": chat.group, "seq": 2, "reason": "spam" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = chat.carol.put("/v1/me/blocks/bob").await;
    assert_eq!(status, 204);
    let (status, body) = chat
        .carol
        .post(
            "/v1/reports",
            json!({ "channel_id": chat.group, "seq": 1, "reason": "spam" }),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn flag_rule_files_a_report() {
    let chat = start(FLAG_RULE).await;
    let (status, body) = chat
        .bob
        .send_text(&chat.group, "b-1", "Chuyen khoan truoc nhé")
        .await;
    assert_eq!(status, 201, "{body}");
    // A flagged message is stored and delivered unchanged.
    assert_eq!(body["message"]["content"]["text"], "Chuyen khoan truoc nhé");

    let (_, body) = chat.api.get("/v1/server/reports?status=open").await;
    let reports = body["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "{body}");
    let report = &reports[0];
    assert_eq!(report["reporter"], Value::Null);
    assert_eq!(report["rule"], "scam-words");
    assert_eq!(report["user_id"], "bob");
    assert_eq!(report["seq"], 1);
    assert_eq!(report["channel_id"], chat.group.as_str());

    // An edit that matches files another report on the same message.
    let (status, body) = chat
        .bob
        .patch(
            &format!("/v1/channels/{}/messages/1", chat.group),
            json!({ "content": { "kind": "text", "text": "Chuyển khoản trước 50%" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = chat.api.get("/v1/server/reports").await;
    assert_eq!(body["reports"].as_array().unwrap().len(), 2, "{body}");
}

#[tokio::test]
async fn resolving_closes_reports() {
    let chat = start("").await;
    let (status, _) = chat.bob.send_text(&chat.group, "b-1", "Hàng giả đây").await;
    assert_eq!(status, 201);
    let (_, body) = chat
        .carol
        .post(
            "/v1/reports",
            json!({ "channel_id": chat.group, "seq": 1, "reason": "scam" }),
        )
        .await;
    let id = body["report"]["id"].as_str().unwrap().to_owned();

    let path = format!("/v1/server/reports/{id}/resolve");
    let (status, body) = chat.api.post(&path, json!({ "outcome": "maybe" })).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = chat
        .api
        .post(
            &path,
            json!({ "outcome": "actioned", "note": "đã khoá", "resolved_by": "mod-7" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["status"], "resolved");
    assert_eq!(body["report"]["resolution"]["outcome"], "actioned");
    assert_eq!(body["report"]["resolution"]["resolved_by"], "mod-7");
    let resolved_at = body["report"]["resolution"]["resolved_at"].clone();

    // A second resolution changes nothing.
    let (status, body) = chat
        .api
        .post(&path, json!({ "outcome": "dismissed" }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["resolution"]["outcome"], "actioned");
    assert_eq!(body["report"]["resolution"]["resolved_at"], resolved_at);

    let (_, body) = chat.api.get("/v1/server/reports").await;
    assert_eq!(body["reports"], json!([]));
    let (_, body) = chat.api.get("/v1/server/reports?status=resolved").await;
    assert_eq!(body["reports"].as_array().unwrap().len(), 1);
    assert_eq!(events_of(&chat.api, "report.resolved").await.len(), 1);

    // A resolved report does not stop a new one on the same message.
    let (status, body) = chat
        .carol
        .post(
            "/v1/reports",
            json!({ "channel_id": chat.group, "seq": 1, "reason": "scam" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_ne!(body["report"]["id"], id.as_str());

    let (status, _) = chat
        .api
        .post(
            "/v1/server/reports/999999/resolve",
            json!({ "outcome": "dismissed" }),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = chat.api.get("/v1/server/reports/not-a-report").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn report_list_pages_with_after() {
    let chat = start("").await;
    for user in ["dave", "bob"] {
        let (status, body) = chat
            .carol
            .post("/v1/reports", json!({ "user_id": user, "reason": "other" }))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = chat
        .alice
        .post(
            "/v1/reports",
            json!({ "user_id": "bob", "reason": "harassment" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let (_, first) = chat.api.get("/v1/server/reports?limit=2").await;
    assert_eq!(first["reports"].as_array().unwrap().len(), 2);
    let after = first["next_after"].as_str().unwrap();
    let (_, second) = chat
        .api
        .get(&format!("/v1/server/reports?limit=2&after={after}"))
        .await;
    let second = second["reports"].as_array().unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["reporter"], "alice");
    let (status, _) = chat.api.get("/v1/server/reports?limit=0").await;
    assert_eq!(status, 400);
    let (status, _) = chat.api.get("/v1/server/reports?after=zzz").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn slow_mode_spaces_member_messages() {
    let chat = start("").await;
    let mut carol_ws = Ws::connect(&chat.runtime, "acme", &chat.carol.token).await;
    let path = format!("/v1/channels/{}/slow-mode", chat.group);

    let (status, body) = chat.bob.put_json(&path, json!({ "seconds": 5 })).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = chat.alice.put_json(&path, json!({ "seconds": 2 })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel"]["slow_mode_seconds"], 2);
    let update = carol_ws.next_of("channel_updated").await;
    assert_eq!(update["channel_id"], chat.group.as_str(), "{update}");
    assert_eq!(update["slow_mode_seconds"], 2, "{update}");
    assert!(update.get("channel").is_none(), "{update}");

    let (status, _) = chat.bob.send_text(&chat.group, "b-1", "Một").await;
    assert_eq!(status, 201);
    let started = std::time::Instant::now();
    let (status, body) = chat.bob.send_text(&chat.group, "b-2", "Hai").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_code(&body), "slow_mode");
    let retry_after_ms = body["error"]["retry_after_ms"].as_u64().unwrap();
    assert!((1..=2000).contains(&retry_after_ms), "{body}");
    // A retry of the stored message is not a new message.
    let (status, _) = chat.bob.send_text(&chat.group, "b-1", "Một").await;
    assert_eq!(status, 200);

    // The owner is exempt, and other members have their own interval.
    for index in 0..3 {
        let (status, body) = chat
            .alice
            .send_text(&chat.group, &format!("a-{index}"), "Chủ nhóm")
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) = chat.carol.send_text(&chat.group, "c-1", "Ba").await;
    assert_eq!(status, 201);

    // The WebSocket gets the same error.
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;
    bob_ws.send_text(&chat.group, "b-3", "Bốn").await;
    let error = bob_ws.next_of("error").await;
    assert_eq!(error["code"], "slow_mode", "{error}");

    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed())).await;
    let (status, body) = chat.bob.send_text(&chat.group, "b-4", "Năm").await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = chat.alice.put_json(&path, json!({ "seconds": 0 })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["channel"].get("slow_mode_seconds").is_none(), "{body}");
    let (status, _) = chat.bob.send_text(&chat.group, "b-5", "Sáu").await;
    assert_eq!(status, 201);
    assert_eq!(events_of(&chat.api, "channel.updated").await.len(), 2);
}

#[tokio::test]
async fn slow_mode_requests_are_checked() {
    let chat = start("").await;
    let direct = chat.alice.direct_with("bob", None).await;
    let (status, body) = chat
        .alice
        .put_json(
            &format!("/v1/channels/{direct}/slow-mode"),
            json!({ "seconds": 5 }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let path = format!("/v1/channels/{}/slow-mode", chat.group);
    let (status, _) = chat
        .alice
        .put_json(&path, json!({ "seconds": 86_401 }))
        .await;
    assert_eq!(status, 400);
    let (status, _) = chat.alice.put_json(&path, json!({ "seconds": -1 })).await;
    assert_eq!(status, 400);
    let dave = chat.api.user("dave").await;
    let (status, _) = dave.put_json(&path, json!({ "seconds": 5 })).await;
    assert_eq!(status, 404);

    // The server API sets slow mode on any group.
    let (status, body) = chat
        .api
        .put(
            &format!("/v1/server/channels/{}/slow-mode", chat.group),
            json!({ "seconds": 60 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = chat
        .carol
        .get(&format!("/v1/channels/{}", chat.group))
        .await;
    assert_eq!(body["channel"]["slow_mode_seconds"], 60, "{body}");
    let (status, _) = chat
        .api
        .put(
            "/v1/server/channels/nope/slow-mode",
            json!({ "seconds": 60 }),
        )
        .await;
    assert_eq!(status, 404);
}
