//! Moderation rules in the send and edit paths of one runtime process:
//! blocked messages are neither stored nor delivered, masks change what is
//! stored, shadow rules only record, and every decision shows in metrics.

mod common;

use common::{NO_RATE_LIMIT, Runtime, User, Ws, config_yaml, error_code};
use serde_json::json;

const RULES: &str = r#"    moderation:
      mask: "[đã ẩn]"
      rules:
        - name: scams
          action: block
          terms:
            list: ["lừa đảo", "scam*"]
            accent_insensitive: true
        - name: contacts
          action: mask
          contacts: {}
        - name: links
          action: block
          links:
            allowed_domains: [cho.example.vn]
        - name: new-words
          action: block
          shadow: true
          terms:
            list: ["hàng giả"]
"#;

/// Returns the rules above, with rate limits high enough for any test.
fn rules() -> String {
    format!("{NO_RATE_LIMIT}{RULES}")
}

struct Chat {
    runtime: Runtime,
    alice: User,
    bob: User,
    channel: String,
    _dir: tempfile::TempDir,
}

async fn start(extra: &str) -> Chat {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(extra));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let channel = alice.direct_with("bob", Some("xe-42")).await;
    Chat {
        runtime,
        alice,
        bob,
        channel,
        _dir: dir,
    }
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

/// Reads one sample of the `parley_moderation_decisions_total` counter.
async fn decisions(runtime: &Runtime, rule: &str, decision: &str, shadow: bool) -> f64 {
    let text = reqwest::get(format!("{}/metrics", runtime.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let labels = format!(
        "parley_moderation_decisions_total{{tenant=\"acme\",rule=\"{rule}\",decision=\"{decision}\",shadow=\"{shadow}\"}} "
    );
    text.lines()
        .find_map(|line| line.strip_prefix(&labels))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn blocked_message_is_neither_stored_nor_delivered() {
    let chat = start(&rules()).await;
    let mut alice_ws = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;

    // Without tone marks, in capitals, over REST.
    let (status, body) = chat
        .alice
        .send_text(&chat.channel, "rest-1", "Cẩn thận LUA DAO nhé")
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_code(&body), "blocked_term");

    // With a zero-width space inside, over WebSocket.
    alice_ws
        .send_text(&chat.channel, "ws-1", "đây là scam\u{200B}mer")
        .await;
    let error = alice_ws.next_of("error").await;
    assert_eq!(error["code"], "blocked_term", "{error}");
    assert_eq!(error["ref"], "ws-1", "{error}");

    // A link outside the allowed domain.
    let (status, body) = chat
        .alice
        .send_text(&chat.channel, "rest-2", "xem ảnh ở bit.ly/xe42")
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_code(&body), "link_not_allowed");

    // The next accepted message is the first one Bob receives, with seq 1.
    alice_ws
        .send_text(&chat.channel, "ws-2", "xem https://cho.example.vn/xe/42")
        .await;
    let ack = alice_ws.next_of("ack").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    let delivered = bob_ws.next_of("message").await;
    assert_eq!(delivered["message"]["client_id"], "ws-2", "{delivered}");
    assert_eq!(
        texts_in(&chat.bob, &chat.channel).await,
        ["xem https://cho.example.vn/xe/42"]
    );

    assert_eq!(decisions(&chat.runtime, "scams", "block", false).await, 2.0);
    assert_eq!(decisions(&chat.runtime, "links", "block", false).await, 1.0);
    // The accepted message passed every rule.
    assert_eq!(decisions(&chat.runtime, "scams", "pass", false).await, 2.0);
}

#[tokio::test]
async fn contact_details_are_masked_before_storing() {
    let chat = start(&rules()).await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;

    let (status, body) = chat
        .alice
        .send_text(
            &chat.channel,
            "c-1",
            "Gọi em 0 9 1 2 . 3 4 5 . 6 7 8 hoặc zalo: minh_tran nhé",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let masked = "Gọi em [đã ẩn] hoặc [đã ẩn] nhé";
    assert_eq!(body["message"]["content"]["text"], masked, "{body}");

    let delivered = bob_ws.next_of("message").await;
    assert_eq!(
        delivered["message"]["content"]["text"], masked,
        "{delivered}"
    );
    assert_eq!(texts_in(&chat.bob, &chat.channel).await, [masked]);

    // Number words in Vietnamese, without tone marks.
    let (status, body) = chat
        .alice
        .send_text(
            &chat.channel,
            "c-2",
            "so em khong chin mot hai ba bon nam sau bay tam",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"]["content"]["text"], "so em [đã ẩn]");

    // A price is not a phone number.
    let price = "giá 1.200.000.000 đ, thương lượng";
    let (_, body) = chat.alice.send_text(&chat.channel, "c-3", price).await;
    assert_eq!(body["message"]["content"]["text"], price);

    assert_eq!(
        decisions(&chat.runtime, "contacts", "mask", false).await,
        2.0
    );
    assert_eq!(
        decisions(&chat.runtime, "contacts", "pass", false).await,
        1.0
    );
}

#[tokio::test]
async fn shadow_rule_records_without_acting() {
    let chat = start(&rules()).await;
    let text = "không bán hàng giả";
    let (status, body) = chat.alice.send_text(&chat.channel, "s-1", text).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"]["content"]["text"], text);
    assert_eq!(
        decisions(&chat.runtime, "new-words", "block", true).await,
        1.0
    );
    assert_eq!(
        decisions(&chat.runtime, "new-words", "block", false).await,
        0.0
    );

    // The rule's latency is measured too.
    let metrics = reqwest::get(format!("{}/metrics", chat.runtime.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "parley_moderation_rule_duration_seconds_count{tenant=\"acme\",rule=\"new-words\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn edits_are_moderated() {
    let chat = start(&rules()).await;
    let (_, body) = chat
        .alice
        .send_text(&chat.channel, "e-1", "xe còn mới")
        .await;
    let seq = body["message"]["seq"].as_u64().unwrap();
    let path = format!("/v1/channels/{}/messages/{seq}", chat.channel);

    let (status, body) = chat
        .alice
        .patch(
            &path,
            json!({ "content": { "kind": "text", "text": "lừa đảo" } }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_code(&body), "blocked_term");

    let (status, body) = chat
        .alice
        .patch(
            &path,
            json!({ "content": { "kind": "text", "text": "mail an@example.com" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["content"]["text"], "mail [đã ẩn]");
    assert_eq!(texts_in(&chat.bob, &chat.channel).await, ["mail [đã ẩn]"]);
}

#[tokio::test]
async fn location_label_is_masked() {
    let chat = start(&rules()).await;
    let (status, body) = chat
        .alice
        .post(
            &format!("/v1/channels/{}/messages", chat.channel),
            json!({
                "client_id": "l-1",
                "content": {
                    "kind": "location", "latitude": 10.776, "longitude": 106.700,
                    "label": "Gặp ở cổng, gọi 0912345678"
                }
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["message"]["content"]["label"],
        "Gặp ở cổng, gọi [đã ẩn]"
    );
}

#[tokio::test]
async fn text_limit_counts_user_visible_characters() {
    let chat = start("    limits:\n      max_message_chars: 3\n").await;
    // A family emoji, a thumbs up with a skin tone, and "ệ" written with two
    // combining marks: three characters in 38 bytes.
    let three = "👨‍👩‍👧‍👦👍🏽e\u{0302}\u{0323}";
    let (status, body) = chat.alice.send_text(&chat.channel, "g-1", three).await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = chat
        .alice
        .send_text(&chat.channel, "g-2", &format!("{three}!"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "message_too_long");
}
