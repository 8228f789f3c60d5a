//! Edits, deletes, reactions, replies, mentions and receipts over REST and
//! WebSocket against one runtime process.

mod common;

use std::time::Duration;

use common::{NO_RATE_LIMIT, Runtime, User, Ws, config_yaml, error_code};
use serde_json::{Value, json};

struct Chat {
    runtime: Runtime,
    alice: User,
    bob: User,
    carol: User,
    _dir: tempfile::TempDir,
}

async fn start() -> Chat {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    Chat {
        runtime,
        alice,
        bob,
        carol,
        _dir: dir,
    }
}

/// Creates a group of Alice (owner), Bob and Carol.
async fn group(chat: &Chat) -> String {
    let (status, body) = chat
        .alice
        .post(
            "/v1/channels/group",
            json!({ "name": "nhóm", "members": ["bob", "carol"] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn send(user: &User, channel: &str, client_id: &str, text: &str) -> u64 {
    let (status, body) = user.send_text(channel, client_id, text).await;
    assert_eq!(status, 201, "{body}");
    body["message"]["seq"].as_u64().unwrap()
}

/// Returns the entry for `channel` in the channel list of `user`.
async fn summary(user: &User, channel: &str) -> Value {
    let (status, body) = user.get("/v1/channels").await;
    assert_eq!(status, 200, "{body}");
    body["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["channel"]["id"] == channel)
        .cloned()
        .unwrap_or_else(|| panic!("{channel} not in {body}"))
}

fn preview_text(summary: &Value) -> Option<&str> {
    summary["last_message"]["content"]["text"].as_str()
}

#[tokio::test]
async fn edit_and_delete_keep_unread_counts_right() {
    let chat = start().await;
    let channel = chat.alice.direct_with("bob", Some("xe-máy")).await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;
    for (index, text) in ["một", "hai", "ba"].iter().enumerate() {
        send(&chat.alice, &channel, &format!("m{index}"), text).await;
    }
    let entry = summary(&chat.bob, &channel).await;
    assert_eq!(entry["unread"], 3);
    assert_eq!(preview_text(&entry), Some("ba"));

    // An edit changes the preview and nothing else.
    let (status, body) = chat
        .alice
        .patch(
            &format!("/v1/channels/{channel}/messages/3"),
            json!({ "content": { "kind": "text", "text": "ba (đã sửa)" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["message"]["edited_at"].is_i64(), "{body}");
    let entry = summary(&chat.bob, &channel).await;
    assert_eq!(entry["unread"], 3);
    assert_eq!(preview_text(&entry), Some("ba (đã sửa)"));

    // Deleting the newest message moves the preview back and lowers unread.
    let (status, body) = chat
        .alice
        .delete(&format!("/v1/channels/{channel}/messages/3"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["message"]["content"].is_null(), "{body}");
    let entry = summary(&chat.bob, &channel).await;
    assert_eq!(entry["unread"], 2);
    assert_eq!(entry["channel"]["last_seq"], 3);
    assert_eq!(preview_text(&entry), Some("hai"));

    // The tenant's backend deletes a message in the middle.
    let (status, body) = chat
        .runtime
        .api("acme")
        .delete(&format!("/v1/server/channels/{channel}/messages/1"))
        .await;
    assert_eq!(status, 200, "{body}");
    let entry = summary(&chat.bob, &channel).await;
    assert_eq!(entry["unread"], 1);
    assert_eq!(preview_text(&entry), Some("hai"));

    // Bob's socket saw each change, in order.
    let edited = bob_ws.next_of("message_edited").await;
    assert_eq!(edited["message"]["content"]["text"], "ba (đã sửa)");
    let deleted = bob_ws.next_of("message_deleted").await;
    assert_eq!(deleted["message"]["seq"], 3);
    assert!(deleted["message"]["content"].is_null());
    let deleted = bob_ws.next_of("message_deleted").await;
    assert_eq!(deleted["message"]["seq"], 1);

    // History keeps every sequence number; deleted ones have no content.
    let messages = chat.bob.all_messages(&channel).await;
    assert_eq!(common::seqs_of(&messages), vec![1, 2, 3]);
    assert!(messages[0]["content"].is_null(), "{}", messages[0]);
    assert!(messages[0]["deleted_at"].is_i64(), "{}", messages[0]);
    assert_eq!(messages[1]["content"]["text"], "hai");

    // Reading past deleted messages, then a new one, counts right.
    let (status, _) = chat
        .bob
        .post(&format!("/v1/channels/{channel}/read"), json!({ "seq": 3 }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(summary(&chat.bob, &channel).await["unread"], 0);
    send(&chat.alice, &channel, "m4", "bốn").await;
    assert_eq!(summary(&chat.bob, &channel).await["unread"], 1);
}

#[tokio::test]
async fn only_sender_edits_or_deletes() {
    let chat = start().await;
    let channel = group(&chat).await;
    let seq = send(&chat.bob, &channel, "b1", "của Bob").await;
    let path = format!("/v1/channels/{channel}/messages/{seq}");
    let body = json!({ "content": { "kind": "text", "text": "không" } });

    let (status, reply) = chat.alice.patch(&path, body.clone()).await;
    assert_eq!((status, error_code(&reply).as_str()), (403, "forbidden"));
    let (status, reply) = chat.alice.delete(&path).await;
    assert_eq!((status, error_code(&reply).as_str()), (403, "forbidden"));

    let outsider = chat.runtime.api("acme").user("dave").await;
    let (status, reply) = outsider.patch(&path, body.clone()).await;
    assert_eq!((status, error_code(&reply).as_str()), (404, "not_found"));

    let (status, reply) = chat
        .bob
        .patch(
            &format!("/v1/channels/{channel}/messages/abc"),
            body.clone(),
        )
        .await;
    assert_eq!(
        (status, error_code(&reply).as_str()),
        (400, "invalid_request")
    );
    let (status, reply) = chat
        .bob
        .patch(
            &path,
            json!({ "content": { "kind": "text", "text": " \u{200B} " } }),
        )
        .await;
    assert_eq!(
        (status, error_code(&reply).as_str()),
        (400, "empty_message")
    );

    let (status, _) = chat.bob.delete(&path).await;
    assert_eq!(status, 200);
    let (status, reply) = chat.bob.patch(&path, body).await;
    assert_eq!(
        (status, error_code(&reply).as_str()),
        (400, "invalid_request")
    );
    let (status, message) = chat.carol.get(&path).await;
    assert_eq!(status, 200);
    assert!(message["content"].is_null(), "{message}");
}

#[tokio::test]
async fn edits_and_deletes_over_websocket() {
    let chat = start().await;
    let channel = group(&chat).await;
    let mut alice_ws = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    let mut carol_ws = Ws::connect(&chat.runtime, "acme", &chat.carol.token).await;
    let seq = send(&chat.alice, &channel, "a1", "chào").await;

    alice_ws
        .send_json(json!({
            "type": "edit", "ref": "e1", "channel_id": channel, "seq": seq,
            "content": { "kind": "text", "text": "chào cả nhà" },
        }))
        .await;
    let edited = carol_ws.next_of("message_edited").await;
    assert_eq!(edited["message"]["content"]["text"], "chào cả nhà");
    alice_ws.next_of("message_edited").await;

    carol_ws
        .send_json(json!({ "type": "delete", "ref": "d1", "channel_id": channel, "seq": seq }))
        .await;
    let error = carol_ws.next_of("error").await;
    assert_eq!(
        (error["ref"].as_str(), error["code"].as_str()),
        (Some("d1"), Some("forbidden"))
    );

    for kind in ["edit", "delete", "react"] {
        let mut frame = json!({
            "type": kind, "ref": kind, "channel_id": channel, "seq": 0,
            "content": { "kind": "text", "text": "x" }, "reaction": "👍",
        });
        if kind != "edit" {
            frame.as_object_mut().unwrap().remove("content");
        }
        if kind != "react" {
            frame.as_object_mut().unwrap().remove("reaction");
        }
        alice_ws.send_json(frame).await;
        let error = alice_ws.next_of("error").await;
        assert_eq!(error["ref"], kind);
        assert_eq!(error["code"], "invalid_request", "{kind}: {error}");
    }

    alice_ws
        .send_json(json!({ "type": "delete", "channel_id": channel, "seq": seq }))
        .await;
    let deleted = carol_ws.next_of("message_deleted").await;
    assert_eq!(deleted["message"]["seq"], seq);
    assert!(deleted["message"]["content"].is_null());
}

#[tokio::test]
async fn reactions_count_users_once() {
    let chat = start().await;
    let channel = group(&chat).await;
    let mut alice_ws = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    let seq = send(&chat.alice, &channel, "a1", "ảnh xe đây").await;
    let base = format!("/v1/channels/{channel}/messages/{seq}/reactions");

    // "thích" typed with a combining acute accent is stored in NFC form.
    let (status, body) = chat.bob.put(&format!("{base}/thi%CC%81ch")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "reaction": "thích", "count": 1, "changed": true })
    );
    let (_, body) = chat.bob.put(&format!("{base}/th%C3%ADch")).await;
    assert_eq!(body["changed"], false, "the same reaction in NFC form");
    let (_, body) = chat.carol.put(&format!("{base}/%F0%9F%91%8D")).await;
    assert_eq!(body["count"], 1);

    let frame = alice_ws.next_of("reaction").await;
    assert_eq!(frame["user_id"], "bob");
    assert_eq!(frame["reaction"], "thích");
    assert_eq!(frame["action"], "added");
    assert_eq!(frame["count"], 1);

    carol_ws_react(&chat, &channel, seq).await;
    let frame = alice_ws.next_of("reaction").await;
    assert_eq!(frame["user_id"], "carol");
    let frame = alice_ws.next_of("reaction").await;
    assert_eq!(
        (frame["reaction"].as_str(), frame["count"].as_u64()),
        (Some("thích"), Some(2))
    );

    let (_, listed) = chat.alice.get(&base).await;
    assert_eq!(listed["reactions"]["thích"], json!(["bob", "carol"]));
    assert_eq!(listed["reactions"]["👍"], json!(["carol"]));
    let (_, message) = chat
        .bob
        .get(&format!("/v1/channels/{channel}/messages/{seq}"))
        .await;
    assert_eq!(message["reactions"], json!({ "thích": 2, "👍": 1 }));
    assert_eq!(message["own_reactions"], json!(["thích"]));

    let (status, body) = chat.bob.delete(&format!("{base}/th%C3%ADch")).await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 1);
    let frame = alice_ws.next_of("reaction").await;
    assert_eq!(frame["action"], "removed");

    // A segment that is not UTF-8 gets the API's JSON error like the rest.
    let (status, body) = chat.bob.put(&format!("{base}/%FF")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_request", "{body}");

    for bad in ["%E2%80%8B", "a%20b", "%07"] {
        let (status, body) = chat.bob.put(&format!("{base}/{bad}")).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (400, "invalid_reaction"),
            "{bad}"
        );
    }
}

/// Carol adds 👍 (already there) and "thích" over her socket.
async fn carol_ws_react(chat: &Chat, channel: &str, seq: u64) {
    let mut carol_ws = Ws::connect(&chat.runtime, "acme", &chat.carol.token).await;
    for reaction in ["👍", "thích"] {
        carol_ws
            .send_json(json!({
                "type": "react", "channel_id": channel, "seq": seq, "reaction": reaction,
            }))
            .await;
    }
    carol_ws.next_of("reaction").await;
}

#[tokio::test]
async fn replies_and_mentions_count_apart() {
    let chat = start().await;
    let channel = group(&chat).await;
    let question = send(&chat.bob, &channel, "b1", "giá bao nhiêu?").await;

    let (status, body) = chat
        .alice
        .post(
            &format!("/v1/channels/{channel}/messages"),
            json!({
                "client_id": "a1",
                "content": { "kind": "text", "text": "@Bob 5 triệu" },
                "reply_to": question,
                "mentions": ["bob", "bob"],
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"]["reply_to"], question);
    assert_eq!(body["message"]["mentions"], json!(["bob"]));
    let bob = summary(&chat.bob, &channel).await;
    assert_eq!(
        (bob["unread"].as_u64(), bob["unread_mentions"].as_u64()),
        (Some(1), Some(1))
    );
    let carol = summary(&chat.carol, &channel).await;
    assert_eq!(
        (carol["unread"].as_u64(), carol["unread_mentions"].as_u64()),
        (Some(2), Some(0))
    );

    let cases = [
        (json!({ "reply_to": 99 }), "invalid_request"),
        (json!({ "reply_to": 0 }), "invalid_request"),
        (json!({ "mentions": ["dave"] }), "invalid_request"),
        (json!({ "mentions": [""] }), "invalid_mention"),
    ];
    for (index, (extra, code)) in cases.into_iter().enumerate() {
        let mut request = json!({
            "client_id": format!("bad{index}"),
            "content": { "kind": "text", "text": "x" },
        });
        for (key, value) in extra.as_object().unwrap() {
            request[key] = value.clone();
        }
        let (status, body) = chat
            .alice
            .post(&format!("/v1/channels/{channel}/messages"), request)
            .await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (400, code),
            "case {index}: {body}"
        );
    }
    let too_many: Vec<String> = (0..51).map(|index| format!("u{index}")).collect();
    let (status, body) = chat
        .alice
        .post(
            &format!("/v1/channels/{channel}/messages"),
            json!({ "client_id": "many", "content": { "kind": "text", "text": "x" }, "mentions": too_many }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "too_many_mentions")
    );
    // `null` counts as no mentions.
    let (status, body) = chat
        .alice
        .post(
            &format!("/v1/channels/{channel}/messages"),
            json!({
                "client_id": "a0",
                "content": { "kind": "text", "text": "không nhắc ai" },
                "reply_to": null,
                "mentions": null,
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body["message"]
            .get("mentions")
            .is_none_or(|mentions| mentions == &json!([])),
        "{body}"
    );
}

#[tokio::test]
async fn receipts_follow_delivery_and_read() {
    let chat = start().await;
    let channel = group(&chat).await;
    let mut alice_ws = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;
    let seq = send(&chat.alice, &channel, "a1", "có ai không?").await;
    let receipts_path = format!("/v1/channels/{channel}/messages/{seq}/receipts");

    // A member added later starts with the history read and delivered, so
    // it counts in both lists without an acknowledgement.
    chat.runtime.api("acme").user("dave").await;
    let (status, _) = chat
        .alice
        .post(
            &format!("/v1/channels/{channel}/members"),
            json!({ "user_id": "dave" }),
        )
        .await;
    assert_eq!(status, 201);

    let (_, receipts) = chat.alice.get(&receipts_path).await;
    assert_eq!(receipts["recipients"], 3);
    assert_eq!(receipts["read_by"], json!(["dave"]));
    assert_eq!(receipts["delivered_to"], json!(["dave"]));
    let (_, receipts) = chat.alice.get(&receipts_path).await;
    assert_eq!(receipts["delivered"], false);

    bob_ws.next_of("message").await;
    bob_ws
        .send_json(json!({ "type": "delivered", "channel_id": channel, "seq": seq }))
        .await;
    let frame = alice_ws.next_of("delivered").await;
    assert_eq!(
        (frame["user_id"].as_str(), frame["seq"].as_u64()),
        (Some("bob"), Some(seq))
    );
    let (_, receipts) = chat.alice.get(&receipts_path).await;
    assert_eq!(receipts["delivered_to"], json!(["bob", "dave"]));
    assert_eq!(receipts["read_by"], json!(["dave"]));

    // A repeated acknowledgement changes nothing and sends nothing.
    bob_ws
        .send_json(json!({ "type": "delivered", "channel_id": channel, "seq": seq }))
        .await;
    // Carol reads without a delivery acknowledgement: reading implies it.
    let (status, _) = chat
        .carol
        .post(
            &format!("/v1/channels/{channel}/read"),
            json!({ "seq": seq }),
        )
        .await;
    assert_eq!(status, 200);
    let frame = alice_ws.next_of("read").await;
    assert_eq!(frame["user_id"], "carol");
    let (_, receipts) = chat.alice.get(&receipts_path).await;
    assert_eq!(receipts["delivered_to"], json!(["bob", "carol", "dave"]));
    assert_eq!(receipts["read_by"], json!(["carol", "dave"]));
    assert_eq!(
        (receipts["delivered"].as_bool(), receipts["read"].as_bool()),
        (Some(true), Some(false))
    );

    let (status, body) = chat
        .bob
        .post(
            &format!("/v1/channels/{channel}/delivered"),
            json!({ "seq": 0 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["delivered_seq"], seq,
        "a lower position never moves it back"
    );
    let frames = alice_ws
        .frames_until_quiet(Duration::from_millis(300))
        .await;
    assert!(
        frames.iter().all(|frame| frame["type"] != "delivered"),
        "acknowledgements that move nothing send nothing: {frames:?}"
    );
}
