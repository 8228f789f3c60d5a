//! Message templates and away messages, against one runtime process.

mod common;

use std::time::Duration;

use common::{NO_RATE_LIMIT, Runtime, User, Ws, config_yaml, error_code, poll_until};
use serde_json::{Value, json};

const TEMPLATES: &str = "    templates:
      - id: still-available
        title: Còn hàng
        text: \"Chào {{ten}}, {{mon_hang}} vẫn còn ạ.\"
      - id: thanks
        text: Cảm ơn bạn đã quan tâm!
    moderation:
      rules:
        - name: no-phone-numbers
          contacts: { kinds: [phone] }
          action: mask
";

fn auto_reply(period_seconds: u64) -> String {
    format!(
        "{NO_RATE_LIMIT}    extensions:\n      auto_reply:\n        offline_after_seconds: 0\n        period_seconds: {period_seconds}\n"
    )
}

async fn send(user: &User, channel: &str, client_id: &str, content: Value) -> (u16, Value) {
    user.post(
        &format!("/v1/channels/{channel}/messages"),
        json!({ "client_id": client_id, "content": content }),
    )
    .await
}

/// Reads how many events the auto-reply extension handled, from /metrics.
async fn handled_events(runtime: &Runtime) -> u64 {
    let text = reqwest::get(format!("{}/metrics", runtime.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = "parley_extension_events_total{tenant=\"acme\",extension=\"auto_reply\",outcome=\"handled\"} ";
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .map_or(0, |value| value.trim().parse().unwrap())
}

async fn automated_messages(user: &User, channel: &str) -> Vec<Value> {
    user.all_messages(channel)
        .await
        .into_iter()
        .filter(|message| message["content"]["kind"] == "automated")
        .collect()
}

#[tokio::test]
async fn template_renders_with_values() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(TEMPLATES));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let channel = alice.direct_with("bob", Some("listing-7")).await;
    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;

    let (status, body) = alice.get("/v1/me/templates").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"][0]["id"], "still-available");
    assert_eq!(body["tenant"][0]["title"], "Còn hàng");
    assert_eq!(body["own"], json!([]));

    let content = json!({
        "kind": "template",
        "template_id": "still-available",
        "values": { "ten": "Hương", "mon_hang": "xe đạp" },
    });
    let (status, body) = send(&alice, &channel, "t-1", content).await;
    assert_eq!(status, 201, "{body}");
    let expected = "Chào Hương, xe đạp vẫn còn ạ.";
    assert_eq!(body["message"]["content"]["text"], expected);
    let live = bob_ws.next_of("message").await;
    assert_eq!(live["message"]["content"]["kind"], "template");
    assert_eq!(live["message"]["content"]["template_id"], "still-available");
    assert_eq!(live["message"]["content"]["text"], expected);
    assert_eq!(live["message"]["content"]["values"]["ten"], "Hương");

    // Text a client sends along is replaced by the rendered template.
    let content = json!({ "kind": "template", "template_id": "thanks", "text": "forged" });
    let (status, body) = send(&alice, &channel, "t-2", content).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["message"]["content"]["text"],
        "Cảm ơn bạn đã quan tâm!"
    );
    // The client's text is ignored, so a retry with other text is the same send.
    let content = json!({ "kind": "template", "template_id": "thanks", "text": "other" });
    let (status, retry) = send(&alice, &channel, "t-2", content).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["message"], body["message"], "{retry}");

    // Sending over the WebSocket renders the same way.
    let mut alice_ws = Ws::connect(&runtime, "acme", &alice.token).await;
    alice_ws
        .send_json(json!({
            "type": "send", "ref": "t-3", "channel_id": channel, "client_id": "t-3",
            "content": { "kind": "template", "template_id": "still-available",
                         "values": { "ten": "An", "mon_hang": "tủ lạnh" } },
        }))
        .await;
    let ack = alice_ws.next_of("ack").await;
    assert_eq!(ack["seq"], 3, "{ack}");
    let live = bob_ws.next_of("message").await;
    assert_eq!(live["message"]["seq"], 2);
    let live = bob_ws.next_of("message").await;
    assert_eq!(
        live["message"]["content"]["text"],
        "Chào An, tủ lạnh vẫn còn ạ."
    );
}

#[tokio::test]
async fn template_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(TEMPLATES));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    api.user("bob").await;
    let channel = alice.direct_with("bob", None).await;

    let cases = [
        (
            json!({ "kind": "template", "template_id": "still-available", "values": { "ten": "An" } }),
            400,
            "template_value_missing",
        ),
        (
            json!({ "kind": "template", "template_id": "thanks", "values": { "ten": "An" } }),
            400,
            "invalid_template",
        ),
        (
            json!({ "kind": "template", "template_id": "nope" }),
            400,
            "unknown_template",
        ),
        (
            json!({ "kind": "template", "template_id": "Bad Id" }),
            400,
            "invalid_template",
        ),
        (
            json!({ "kind": "automated", "extension": "auto_reply", "text": "I am away" }),
            400,
            "invalid_request",
        ),
    ];
    for (index, (content, status, code)) in cases.into_iter().enumerate() {
        let (got, body) = send(&alice, &channel, &format!("bad-{index}"), content.clone()).await;
        assert_eq!(got, status, "{content}: {body}");
        assert_eq!(error_code(&body), code, "{content}: {body}");
    }
    assert!(alice.all_messages(&channel).await.is_empty());
}

#[tokio::test]
async fn template_values_are_moderated() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(TEMPLATES));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    api.user("bob").await;
    let channel = alice.direct_with("bob", None).await;

    let content = json!({
        "kind": "template",
        "template_id": "still-available",
        "values": { "ten": "Hương", "mon_hang": "gọi 0 9 1 2 3 4 5 6 7 8" },
    });
    let (status, body) = send(&alice, &channel, "t-1", content).await;
    assert_eq!(status, 201, "{body}");
    let stored = &body["message"]["content"];
    let text = stored["text"].as_str().unwrap();
    assert!(!text.contains("0 9 1 2"), "{text}");
    assert!(text.starts_with("Chào Hương, gọi "), "{text}");
    // A masked template keeps only its text, because a match can span
    // values and the template's own words.
    assert!(stored.get("values").is_none(), "{stored}");
    assert_eq!(stored["template_id"], "still-available");
}

#[tokio::test]
async fn own_templates_shadow_tenant_ones() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(TEMPLATES));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let channel = alice.direct_with("bob", None).await;

    let (status, body) = alice
        .put_json(
            "/v1/me/templates/thanks",
            json!({ "title": "Cảm ơn", "text": "Cảm ơn {{ten}} nhiều!" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = alice
        .put_json(
            "/v1/me/templates/thanks",
            json!({ "text": "Cảm ơn {{ten}} rất nhiều!" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = alice.get("/v1/me/templates").await;
    assert_eq!(body["own"][0]["text"], "Cảm ơn {{ten}} rất nhiều!");

    let content =
        json!({ "kind": "template", "template_id": "thanks", "values": { "ten": "Bình" } });
    let (status, body) = send(&alice, &channel, "t-1", content.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"]["content"]["text"], "Cảm ơn Bình rất nhiều!");

    // Bob has no template of his own, so he gets the tenant's, which takes
    // no values.
    let (status, body) = send(&bob, &channel, "b-1", content).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_template");

    let (status, _) = alice.delete("/v1/me/templates/thanks").await;
    assert_eq!(status, 204);
    let (status, _) = alice.delete("/v1/me/templates/thanks").await;
    assert_eq!(status, 404);
    let (_, body) = alice.get("/v1/me/templates").await;
    assert_eq!(body["own"], json!([]));

    let (status, body) = alice
        .put_json("/v1/me/templates/x", json!({ "text": "Hi {{name" }))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_template");
}

#[tokio::test]
async fn user_template_count_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let alice = runtime.api("acme").user("alice").await;
    for index in 0..50 {
        let (status, body) = alice
            .put_json(
                &format!("/v1/me/templates/t{index}"),
                json!({ "text": format!("mẫu {index}") }),
            )
            .await;
        assert_eq!(status, 201, "{index}: {body}");
    }
    let (status, body) = alice
        .put_json("/v1/me/templates/t50", json!({ "text": "one more" }))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(error_code(&body), "too_many_templates");
    // Replacing an existing one still works at the cap.
    let (status, _) = alice
        .put_json("/v1/me/templates/t0", json!({ "text": "mẫu mới" }))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn away_message_answers_once_per_period() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(&auto_reply(3)));
    let api = runtime.api("acme");
    let buyer = api.user("buyer").await;
    let seller = api.user("seller").await;
    let channel = buyer.direct_with("seller", Some("listing-42")).await;

    let away = "Mình đang bận, sẽ trả lời sau 18h nhé.";
    let (status, body) = seller
        .put_json("/v1/me/away-message", json!({ "text": away }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["away_message"]["enabled"], true);
    let mut buyer_ws = Ws::connect(&runtime, "acme", &buyer.token).await;

    let (status, _) = buyer.send_text(&channel, "b-1", "Còn hàng không?").await;
    assert_eq!(status, 201);
    // The buyer's socket gets the buyer's own message first.
    let reply = loop {
        let frame = buyer_ws.next_of("message").await;
        if frame["message"]["sender_id"] != "buyer" {
            break frame;
        }
    };
    let reply = &reply["message"];
    assert_eq!(reply["sender_id"], "seller");
    assert_eq!(
        reply["content"],
        json!({ "kind": "automated", "extension": "auto_reply", "text": away })
    );
    let first_reply_at = std::time::Instant::now();
    // The away message leaves the buyer's message unread for the seller.
    let (_, body) = seller.get("/v1/channels").await;
    let summary = &body["channels"][0];
    assert_eq!(summary["read_seq"], 0, "{body}");
    assert_eq!(summary["unread"], 2, "{body}");

    // A second message within the period is handled but gets no reply.
    let (status, _) = buyer.send_text(&channel, "b-2", "Alo?").await;
    assert_eq!(status, 201);
    poll_until("the extension handled both messages", || async {
        handled_events(&runtime).await >= 3
    })
    .await;
    assert_eq!(automated_messages(&buyer, &channel).await.len(), 1);

    // After the period, the next message gets a reply again.
    let period = Duration::from_secs(3);
    tokio::time::sleep(period.saturating_sub(first_reply_at.elapsed())).await;
    let (status, _) = buyer.send_text(&channel, "b-3", "Bạn ơi?").await;
    assert_eq!(status, 201);
    poll_until("a second away message", || async {
        automated_messages(&buyer, &channel).await.len() == 2
    })
    .await;
}

#[tokio::test]
async fn away_message_waits_for_offline_users() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(&auto_reply(3600)));
    let api = runtime.api("acme");
    let buyer = api.user("buyer").await;
    let seller = api.user("seller").await;
    let channel = buyer.direct_with("seller", None).await;
    let (status, _) = seller
        .put_json("/v1/me/away-message", json!({ "text": "Đang vắng" }))
        .await;
    assert_eq!(status, 200);

    // Online: no away message.
    let seller_ws = Ws::connect(&runtime, "acme", &seller.token).await;
    let (status, _) = buyer.send_text(&channel, "b-1", "Còn không?").await;
    assert_eq!(status, 201);
    poll_until("the extension handled the message", || async {
        handled_events(&runtime).await >= 1
    })
    .await;
    assert!(automated_messages(&buyer, &channel).await.is_empty());

    // Paused: no away message either.
    let (status, _) = seller
        .put_json(
            "/v1/me/away-message",
            json!({ "text": "Đang vắng", "enabled": false }),
        )
        .await;
    assert_eq!(status, 200);
    seller_ws.close().await;
    let (status, _) = buyer.send_text(&channel, "b-2", "Còn không?").await;
    assert_eq!(status, 201);
    poll_until("the extension handled both messages", || async {
        handled_events(&runtime).await >= 2
    })
    .await;
    assert!(automated_messages(&buyer, &channel).await.is_empty());

    let (status, body) = seller.get("/v1/me/away-message").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["away_message"]["enabled"], false);
    let (status, _) = seller.delete("/v1/me/away-message").await;
    assert_eq!(status, 204);
    let (status, _) = seller.get("/v1/me/away-message").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn away_message_text_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}    moderation:\n      rules:\n        - name: no-contacts\n          contacts: {{ kinds: [phone] }}\n          action: block\n",
        auto_reply(60)
    );
    let runtime = Runtime::start(dir.path(), &config_yaml(&extra));
    let seller = runtime.api("acme").user("seller").await;

    let (status, body) = seller
        .put_json(
            "/v1/me/away-message",
            json!({ "text": "Gọi mình: 0912 345 678" }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_code(&body), "contact_details");
    let (status, body) = seller
        .put_json("/v1/me/away-message", json!({ "text": " \u{200b} " }))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = seller.get("/v1/me/away-message").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn away_message_survives_kill_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut runtime = Runtime::start(dir.path(), &config_yaml(&auto_reply(3600)));
    let api = runtime.api("acme");
    let buyer = api.user("buyer").await;
    let seller = api.user("seller").await;
    let first = buyer.direct_with("seller", Some("listing-1")).await;
    let (status, _) = seller
        .put_json("/v1/me/away-message", json!({ "text": "Đang vắng" }))
        .await;
    assert_eq!(status, 200);
    for index in 1..=5 {
        let (status, _) = buyer
            .send_text(&first, &format!("b-{index}"), "Còn hàng không?")
            .await;
        assert_eq!(status, 201);
    }
    poll_until("the first away message", || async {
        automated_messages(&buyer, &first).await.len() == 1
    })
    .await;
    runtime.kill();

    // The restarted runtime handles again the events after the last saved
    // cursor. A message in a second channel shows when it has reached the
    // end, because events are handled in log order.
    let runtime = Runtime::start(dir.path(), "");
    let buyer = buyer.at(&runtime);
    let second = buyer.direct_with("seller", Some("listing-2")).await;
    let (status, _) = buyer.send_text(&second, "b-6", "Còn không ạ?").await;
    assert_eq!(status, 201);
    // The killed process's lease on the extension lasts up to 10 s more.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while automated_messages(&buyer, &second).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no away message in the second channel after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(automated_messages(&buyer, &second).await.len(), 1);
    assert_eq!(automated_messages(&buyer, &first).await.len(), 1);
}

#[tokio::test]
async fn away_message_passes_current_rules() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}    moderation:\n      rules:\n        - name: outside-links\n          action: flag\n          links: {{ allowed_domains: [cho.example.vn] }}\n",
        auto_reply(3600)
    );
    let runtime = Runtime::start(dir.path(), &config_yaml(&extra));
    let api = runtime.api("acme");
    let buyer = api.user("buyer").await;
    let seller = api.user("seller").await;
    let channel = buyer.direct_with("seller", None).await;
    let (status, _) = seller
        .put_json(
            "/v1/me/away-message",
            json!({ "text": "Xem thêm ở evil.example.com/shop" }),
        )
        .await;
    assert_eq!(status, 200);

    let (status, _) = buyer.send_text(&channel, "b-1", "Còn hàng không?").await;
    assert_eq!(status, 201);
    poll_until("the away message", || async {
        automated_messages(&buyer, &channel).await.len() == 1
    })
    .await;
    // The flag rule filed a report on the away message when it was sent.
    let (status, body) = api.get("/v1/server/reports").await;
    assert_eq!(status, 200, "{body}");
    let reports = body["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "{body}");
    assert_eq!(reports[0]["rule"], "outside-links");
    assert_eq!(reports[0]["user_id"], "seller");
    assert_eq!(reports[0]["seq"], 2);
}

#[tokio::test]
async fn template_size_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    api.user("bob").await;
    let channel = alice.direct_with("bob", None).await;

    // A template's text may not exceed a message.
    let (status, body) = alice
        .put_json(
            "/v1/me/templates/big",
            json!({ "text": "{{a}}".repeat(2000) }),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "message_too_large");

    // Filling stops at the limit instead of building the whole text.
    let (status, _) = alice
        .put_json(
            "/v1/me/templates/many",
            json!({ "text": "{{a}}".repeat(400) }),
        )
        .await;
    assert_eq!(status, 201);
    let content = json!({
        "kind": "template", "template_id": "many",
        "values": { "a": "ạ".repeat(200) },
    });
    let (status, body) = send(&alice, &channel, "m-1", content).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "message_too_large");
}
