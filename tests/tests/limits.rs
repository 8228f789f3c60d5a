//! Per-tenant limits: message size, frame size and format, send rate and
//! sockets per user. Rejected messages leave nothing behind.

mod common;

use std::time::Duration;

use common::{Runtime, TokenIn, User, Ws, config_yaml, error_code};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Limits block for acme with a 64-byte text limit.
const SMALL_TEXT: &str = "    limits:\n      max_message_bytes: 64\n";

/// A runtime with users alice and bob of acme and their direct channel.
struct Chat {
    _dir: TempDir,
    runtime: Runtime,
    alice: User,
    bob: User,
    channel: String,
}

async fn start_chat(acme_limits: &str) -> Chat {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(acme_limits));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    // Bob opens the channel, so alice's rate bucket is still full.
    let channel = bob.direct_with("alice", None).await;
    Chat {
        _dir: dir,
        runtime,
        alice,
        bob,
        channel,
    }
}

/// Sends a message with arbitrary content over REST.
async fn post_content(user: &User, channel: &str, client_id: &str, content: Value) -> (u16, Value) {
    user.post(
        &format!("/v1/channels/{channel}/messages"),
        json!({ "client_id": client_id, "content": content }),
    )
    .await
}

/// Sends a `send` frame with arbitrary content and `ref` equal to `client_id`.
async fn ws_send_content(socket: &mut Ws, channel: &str, client_id: &str, content: Value) {
    socket
        .send_json(json!({
            "type": "send", "ref": client_id, "channel_id": channel,
            "client_id": client_id, "content": content
        }))
        .await;
}

/// Returns the next `ack` or `error` frame, skipping deliveries and other
/// events.
async fn next_reply(socket: &mut Ws) -> Value {
    loop {
        let frame = socket.next_json().await;
        if frame["type"] == "ack" || frame["type"] == "error" {
            return frame;
        }
    }
}

/// Sends a short valid text and asserts that it is acked, which proves the
/// socket is still open and usable.
async fn assert_socket_usable(socket: &mut Ws, channel: &str, client_id: &str) {
    socket.send_text(channel, client_id, "still here").await;
    let reply = next_reply(socket).await;
    assert_eq!(reply["type"], "ack", "after a rejected frame: {reply}");
    assert_eq!(reply["client_id"], client_id, "{reply}");
}

#[tokio::test]
async fn oversized_text_over_rest_gets_413() {
    let chat = start_chat(SMALL_TEXT).await;
    let (status, body) = chat
        .alice
        .send_text(&chat.channel, "big", &"a".repeat(65))
        .await;

    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "message_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("64 bytes"),
        "message names no limit: {message}"
    );

    let (status, body) = chat
        .alice
        .send_text(&chat.channel, "fits", &"a".repeat(64))
        .await;
    assert_eq!(status, 201, "text of exactly the limit: {body}");

    // The limit is acme's: globex keeps the default of 4096 bytes.
    let globex = chat.runtime.api("globex");
    let gina = globex.user("gina").await;
    globex.user("hank").await;
    let globex_channel = gina.direct_with("hank", None).await;
    let (status, body) = gina
        .send_text(&globex_channel, "big", &"a".repeat(65))
        .await;
    assert_eq!(status, 201, "globex text over acme's limit: {body}");
}

#[tokio::test]
async fn oversized_text_over_websocket_keeps_socket_open() {
    let chat = start_chat(SMALL_TEXT).await;
    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;

    socket
        .send_text(&chat.channel, "big", &"a".repeat(65))
        .await;
    let error = next_reply(&mut socket).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "message_too_large", "{error}");
    assert_eq!(error["ref"], "big", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("64 bytes"),
        "message names no limit: {message}"
    );

    assert_socket_usable(&mut socket, &chat.channel, "after-big").await;
}

#[tokio::test]
async fn vietnamese_text_limit_counts_bytes() {
    let chat = start_chat(SMALL_TEXT).await;
    // Tone marks take two or three bytes of UTF-8 each.
    let text = "Tiếng Việt có dấu: chữ ế, ộ, ữ nặng hơn một byte";
    assert!(
        text.chars().count() < 64,
        "{} characters",
        text.chars().count()
    );
    assert!(text.len() > 64, "{} bytes", text.len());

    let (status, body) = chat.alice.send_text(&chat.channel, "vi-rest", text).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "message_too_large", "{body}");

    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    socket.send_text(&chat.channel, "vi-ws", text).await;
    let error = next_reply(&mut socket).await;
    assert_eq!(error["code"], "message_too_large", "{error}");

    let short = "Xin chào, còn hàng không?";
    assert!(short.len() <= 64, "{} bytes", short.len());
    let (status, body) = chat.alice.send_text(&chat.channel, "vi-short", short).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn frame_over_limit_closes_with_1009() {
    // The frame limit is max(max_message_bytes, max_custom_bytes) * 2 + 4096,
    // so 8192 bytes with a 64-byte text limit and the default 2048-byte
    // custom limit.
    let chat = start_chat(SMALL_TEXT).await;
    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;

    socket
        .send_text(&chat.channel, "huge", &"a".repeat(20_000))
        .await;
    let (code, frames) = socket.expect_close().await;
    assert_eq!(code, 1009, "close code, frames before it: {frames:?}");
}

#[tokio::test]
async fn frame_under_limit_keeps_socket_open() {
    // 6000 bytes of text fit in the 8192-byte frame limit but not in the
    // 64-byte text limit: a message error, not a protocol error.
    let chat = start_chat(SMALL_TEXT).await;
    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;

    socket
        .send_text(&chat.channel, "large", &"a".repeat(6000))
        .await;
    let error = next_reply(&mut socket).await;
    assert_eq!(error["code"], "message_too_large", "{error}");
    assert_socket_usable(&mut socket, &chat.channel, "after-large").await;
}

#[tokio::test]
async fn malformed_json_gets_invalid_frame() {
    let chat = start_chat("").await;
    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;

    socket
        .socket
        .send(Message::text("{\"type\": \"send\", \"channel_id\": "))
        .await
        .unwrap();
    let error = socket.next_of("error").await;
    assert_eq!(error["code"], "invalid_frame", "{error}");

    assert_socket_usable(&mut socket, &chat.channel, "after-malformed").await;
}

#[tokio::test]
async fn unknown_frame_type_gets_invalid_frame() {
    let chat = start_chat("").await;
    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;

    socket
        .send_json(json!({ "type": "shout", "ref": "r1", "text": "hi" }))
        .await;
    let error = socket.next_of("error").await;
    assert_eq!(error["code"], "invalid_frame", "{error}");
    assert_eq!(error["ref"], "r1", "the error names the request: {error}");

    assert_socket_usable(&mut socket, &chat.channel, "after-unknown").await;
}

#[tokio::test]
async fn binary_frame_closes_with_1003() {
    let chat = start_chat("").await;
    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;

    let frame = json!({ "type": "ping" }).to_string().into_bytes();
    socket.socket.send(Message::binary(frame)).await.unwrap();
    let (code, frames) = socket.expect_close().await;
    assert_eq!(code, 1003, "close code, frames before it: {frames:?}");
}

#[tokio::test]
async fn client_close_gets_close_reply() {
    let chat = start_chat("").await;
    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;

    socket
        .socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    let (code, frames) = socket.expect_close().await;
    assert_eq!(code, 1000, "close code, frames before it: {frames:?}");
}

#[tokio::test]
async fn third_quick_send_is_rate_limited() {
    let chat =
        start_chat("    limits:\n      messages_per_second: 1\n      message_burst: 2\n").await;
    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;

    for client_id in ["m1", "m2"] {
        socket.send_text(&chat.channel, client_id, "hi").await;
        let ack = next_reply(&mut socket).await;
        assert_eq!(
            ack["type"], "ack",
            "send {client_id} within the burst: {ack}"
        );
    }
    socket.send_text(&chat.channel, "m3", "hi").await;
    let error = next_reply(&mut socket).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert_eq!(error["ref"], "m3", "{error}");
    let retry_after_ms = error["retry_after_ms"].as_u64().unwrap_or(0);
    assert!(
        (1..=1000).contains(&retry_after_ms),
        "retry_after_ms at 1 message per second: {error}"
    );

    // The bucket is shared by REST and every socket of the user.
    let response = chat
        .alice
        .http
        .post(format!(
            "{}/v1/channels/{}/messages",
            chat.alice.base, chat.channel
        ))
        .header("x-parley-tenant", "acme")
        .bearer_auth(&chat.alice.token)
        .json(&json!({ "client_id": "m4", "content": { "kind": "text", "text": "hi" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned())
        .expect("a Retry-After header");
    let seconds: u64 = retry_after.parse().unwrap();
    assert_eq!(seconds, 1, "Retry-After at 1 message per second");
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "rate_limited", "{body}");
    assert!(body["error"]["retry_after_ms"].as_u64().is_some(), "{body}");

    // The bucket is alice's alone.
    let (status, body) = chat.bob.send_text(&chat.channel, "b1", "hi").await;
    assert_eq!(status, 201, "bob while alice is rate limited: {body}");

    // After waiting the `retry_after_ms` the server sent, the next send passes.
    let wait = body["error"]["retry_after_ms"].as_u64().unwrap_or(1000);
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    socket.send_text(&chat.channel, "m5", "hi").await;
    let ack = next_reply(&mut socket).await;
    assert_eq!(ack["type"], "ack", "send after retry_after_ms: {ack}");

    let history = chat.bob.all_messages(&chat.channel).await;
    let client_ids: Vec<&str> = history
        .iter()
        .map(|message| message["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(client_ids, ["m1", "m2", "b1", "m5"]);
}

#[tokio::test]
async fn third_socket_of_user_is_rejected() {
    let chat = start_chat("    limits:\n      max_sockets_per_user: 2\n").await;
    let runtime = &chat.runtime;
    let token = &chat.alice.token;

    let mut first = Ws::connect(runtime, "acme", token).await;
    let _second = Ws::connect(runtime, "acme", token).await;
    match Ws::try_connect(runtime, "acme", token, TokenIn::Header, None).await {
        Ok(_) => panic!("a third socket was accepted with max_sockets_per_user 2"),
        Err((status, body)) => {
            assert_eq!(status, 429, "{body}");
            assert_eq!(
                error_code(&Value::String(body.clone())),
                "too_many_connections",
                "{body}"
            );
        }
    }

    // The limit is per user.
    let _bob = Ws::connect(runtime, "acme", &chat.bob.token).await;

    // The server frees the slot once it has seen the close.
    first.socket.close(None).await.unwrap();
    let mut third = None;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while third.is_none() {
        match Ws::try_connect(runtime, "acme", token, TokenIn::Header, None).await {
            Ok(socket) => third = Some(socket),
            Err((429, _)) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the closed socket still counts after {:?}",
                    common::WAIT
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err((status, body)) => panic!("upgrade failed with {status}: {body}"),
        }
    }
    let mut third = third.unwrap();
    assert_socket_usable(&mut third, &chat.channel, "from-third").await;
}

#[tokio::test]
async fn rejected_messages_are_not_stored() {
    let limits = "    limits:\n      max_message_bytes: 64\n      max_custom_bytes: 32\n";
    let chat = start_chat(limits).await;
    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;

    let (status, body) = chat.alice.send_text(&chat.channel, "ok-1", "first").await;
    assert_eq!(status, 201, "{body}");

    let too_long = json!({ "kind": "text", "text": "a".repeat(65) });
    let empty = json!({ "kind": "text", "text": "   " });
    let far_away = json!({ "kind": "location", "latitude": 91.0, "longitude": 0.0 });
    let too_big = json!({ "kind": "custom", "data": { "offer": "x".repeat(64) } });
    let rejected = [
        ("bad-long", &too_long),
        ("bad-empty", &empty),
        ("bad-location", &far_away),
        ("bad-custom", &too_big),
    ];
    for (client_id, content) in rejected {
        let (status, body) =
            post_content(&chat.alice, &chat.channel, client_id, content.clone()).await;
        assert!(
            (400..500).contains(&status),
            "REST {client_id} was accepted: {status} {body}"
        );
        let ws_client_id = format!("{client_id}-ws");
        ws_send_content(&mut socket, &chat.channel, &ws_client_id, content.clone()).await;
        let reply = next_reply(&mut socket).await;
        assert_eq!(reply["type"], "error", "WebSocket {ws_client_id}: {reply}");
    }

    socket.send_text(&chat.channel, "ok-2", "second").await;
    let ack = next_reply(&mut socket).await;
    assert_eq!(
        ack["seq"], 2,
        "the next accepted message follows the first: {ack}"
    );

    // A client id of a rejected message is free: reusing it stores a new
    // message instead of returning a duplicate.
    let (status, body) = chat
        .alice
        .send_text(&chat.channel, "bad-long", "third")
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["duplicate"], false, "{body}");

    let history = chat.bob.all_messages(&chat.channel).await;
    let seqs: Vec<u64> = history
        .iter()
        .map(|message| message["seq"].as_u64().unwrap())
        .collect();
    let client_ids: Vec<&str> = history
        .iter()
        .map(|message| message["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(client_ids, ["ok-1", "ok-2", "bad-long"]);
}

#[tokio::test]
async fn oversized_custom_message_is_rejected() {
    let chat = start_chat("    limits:\n      max_custom_bytes: 32\n").await;
    let big = json!({ "kind": "custom", "data": { "offer": "x".repeat(40) } });

    let (status, body) = post_content(&chat.alice, &chat.channel, "big", big.clone()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "message_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("32 bytes"),
        "message names no limit: {message}"
    );

    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    ws_send_content(&mut socket, &chat.channel, "big-ws", big).await;
    let error = next_reply(&mut socket).await;
    assert_eq!(error["code"], "message_too_large", "{error}");

    // {"offer":"x"} is 13 bytes of compact JSON.
    let small = json!({ "kind": "custom", "data": { "offer": "x" } });
    let (status, body) = post_content(&chat.alice, &chat.channel, "small", small).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn deeply_nested_json_is_rejected() {
    let chat = start_chat("").await;
    let nested = |levels: usize| -> serde_json::Value {
        serde_json::from_str(&format!("{}1{}", "[".repeat(levels), "]".repeat(levels))).unwrap()
    };

    let deep = json!({ "kind": "custom", "data": nested(33) });
    let (status, body) = post_content(&chat.alice, &chat.channel, "deep", deep).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_custom_data", "{body}");
    let (status, body) = chat
        .runtime
        .api("acme")
        .put(
            "/v1/server/users/dana",
            json!({ "name": "Dana", "metadata": { "a": nested(32) } }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("levels deep"), "{body}");

    // Data at the limit is stored, and the event log still reads it.
    let shallow = json!({ "kind": "custom", "data": nested(32) });
    let (status, body) = post_content(&chat.alice, &chat.channel, "shallow", shallow).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = chat
        .runtime
        .api("acme")
        .get("/v1/server/events?limit=100")
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn location_out_of_range_is_rejected() {
    let chat = start_chat("").await;
    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    let cases = [
        ("north-of-pole", 90.5, 0.0),
        ("south-of-pole", -91.0, 0.0),
        ("east-of-dateline", 0.0, 180.5),
        ("west-of-dateline", 0.0, -181.0),
    ];
    for (client_id, latitude, longitude) in cases {
        let content = json!({ "kind": "location", "latitude": latitude, "longitude": longitude });

        let (status, body) =
            post_content(&chat.alice, &chat.channel, client_id, content.clone()).await;
        assert_eq!(status, 400, "REST {client_id}: {body}");
        assert_eq!(
            error_code(&body),
            "invalid_location",
            "REST {client_id}: {body}"
        );

        ws_send_content(&mut socket, &chat.channel, client_id, content).await;
        let error = next_reply(&mut socket).await;
        assert_eq!(
            error["code"], "invalid_location",
            "WebSocket {client_id}: {error}"
        );
    }

    let market = json!({
        "kind": "location", "latitude": 10.772, "longitude": 106.698, "label": "Chợ Bến Thành"
    });
    let (status, body) = post_content(&chat.alice, &chat.channel, "market", market).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn foreign_and_unknown_channels_answer_alike() {
    let chat = start_chat("").await;
    let globex = chat.runtime.api("globex");
    let gina = globex.user("gina").await;
    globex.user("hank").await;
    let globex_channel = gina.direct_with("hank", None).await;
    let (status, body) = gina.send_text(&globex_channel, "g1", "hello").await;
    assert_eq!(status, 201, "{body}");

    // An acme channel alice is not a member of.
    let carol = chat.runtime.api("acme").user("carol").await;
    let other_acme_channel = carol.direct_with("bob", None).await;

    let unknown_channel = "d_000000000000000000000000";
    let requests = [
        ("history", "GET", "messages"),
        ("channel", "GET", ""),
        ("send", "POST", "messages"),
    ];
    for (name, method, suffix) in requests {
        let answer = |channel: String| {
            let alice = chat.alice.clone();
            let path = if suffix.is_empty() {
                format!("/v1/channels/{channel}")
            } else {
                format!("/v1/channels/{channel}/{suffix}")
            };
            async move {
                if method == "GET" {
                    alice.get(&path).await
                } else {
                    let body = json!({ "client_id": "probe", "content": { "kind": "text", "text": "hi" } });
                    alice.post(&path, body).await
                }
            }
        };
        let unknown = answer(unknown_channel.to_owned()).await;
        let foreign = answer(globex_channel.clone()).await;
        let not_member = answer(other_acme_channel.clone()).await;

        assert_eq!(
            unknown.0, 404,
            "{name} of an unknown channel: {}",
            unknown.1
        );
        assert_eq!(error_code(&unknown.1), "not_found", "{name}: {}", unknown.1);
        assert_eq!(foreign, unknown, "{name} of globex's channel");
        assert_eq!(not_member, unknown, "{name} of a channel alice is not in");
    }

    let mut socket = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    socket.send_text(unknown_channel, "w1", "hi").await;
    let unknown = next_reply(&mut socket).await;
    socket.send_text(&globex_channel, "w1", "hi").await;
    let foreign = next_reply(&mut socket).await;
    assert_eq!(unknown["code"], "not_found", "{unknown}");
    assert_eq!(foreign, unknown, "WebSocket send to globex's channel");
}

#[tokio::test]
async fn channel_changes_share_the_rate_bucket() {
    let chat =
        start_chat("    limits:\n      messages_per_second: 1\n      message_burst: 2\n").await;
    let acme = chat.runtime.api("acme");
    for peer in ["p1", "p2", "p3"] {
        acme.upsert_user(peer, peer).await;
    }

    for peer in ["p1", "p2"] {
        let (status, body) = chat
            .alice
            .post("/v1/channels/direct", json!({ "user_id": peer }))
            .await;
        assert_eq!(status, 200, "open direct with {peer}: {body}");
    }
    let (status, body) = chat
        .alice
        .post("/v1/channels/direct", json!({ "user_id": "p3" }))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
}

#[tokio::test]
async fn attachments_need_an_allowed_host() {
    let hosts = "    attachment_hosts: [\"cdn.chotot.vn\", \"*.img.example.com\"]\n";
    let chat = start_chat(hosts).await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;
    let path = format!("/v1/channels/{}/messages", chat.channel);
    let image = json!({
        "kind": "attachment",
        "url": "https://cdn.chotot.vn/xe-dap.jpg",
        "content_type": "image/jpeg",
        "size": 183_204,
        "name": "xe đạp.jpg",
        "width": 1280,
        "height": 960,
        "thumbnail_url": "https://eu.img.example.com/xe-dap-thumb.jpg"
    });

    let (status, body) = chat
        .alice
        .post(&path, json!({"client_id": "img-1", "content": image}))
        .await;
    assert_eq!(status, 201, "{body}");
    let delivered = bob_ws.next_of("message").await;
    assert_eq!(delivered["message"]["content"], image);

    let mut elsewhere = image.clone();
    elsewhere["url"] = json!("https://evil.example/x.jpg");
    let (status, body) = chat
        .alice
        .post(&path, json!({"client_id": "img-2", "content": elsewhere}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "attachment_host_not_allowed");

    let mut plain_http = image.clone();
    plain_http["url"] = json!("http://cdn.chotot.vn/x.jpg");
    let (status, body) = chat
        .alice
        .post(&path, json!({"client_id": "img-3", "content": plain_http}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "invalid_attachment");

    let missing_size = json!({"kind": "attachment", "url": "https://cdn.chotot.vn/a.pdf", "content_type": "application/pdf"});
    let (status, body) = chat
        .alice
        .post(
            &path,
            json!({"client_id": "img-4", "content": missing_size}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Only the accepted attachment was stored.
    assert_eq!(chat.alice.all_messages(&chat.channel).await.len(), 1);
}

#[tokio::test]
async fn attachment_host_entries_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_yaml("    attachment_hosts: [\"https://cdn.example.com\"]\n");
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_parley-runtime-under-test"))
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tenants[0].attachment_hosts[0]"),
        "{stderr}"
    );
}
