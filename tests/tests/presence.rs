//! Presence in one runtime process: online and offline as sockets open and
//! close, half-open sockets, deleted users, and who may watch whom.

mod common;

use std::time::{Duration, Instant};

use common::{Runtime, Ws, config_yaml};
use serde_json::{Value, json};

/// Reads frames until a `presence` frame about `user` arrives.
async fn next_presence(ws: &mut Ws, user: &str) -> Value {
    loop {
        let frame = ws.next_of("presence").await;
        if frame["user_id"] == user {
            return frame;
        }
    }
}

async fn subscribe(ws: &mut Ws, channel: &str) {
    ws.send_json(json!({"type": "presence_subscribe", "ref": "p", "channel_id": channel}))
        .await;
}

#[tokio::test]
async fn presence_follows_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let api = runtime.api("acme");
    let lan = api.user("lan").await;
    let minh = api.user("minh").await;
    let channel = lan.direct_with("minh", Some("xe-dap")).await;
    let mut minh_ws = Ws::connect(&runtime, "acme", &minh.token).await;

    subscribe(&mut minh_ws, &channel).await;
    let initial = next_presence(&mut minh_ws, "lan").await;
    assert_eq!(initial["online"], false);
    assert_eq!(initial["last_seen"], Value::Null);

    let lan_phone = Ws::connect(&runtime, "acme", &lan.token).await;
    let online = next_presence(&mut minh_ws, "lan").await;
    assert_eq!(online["online"], true);
    // A second device changes nothing.
    let lan_laptop = Ws::connect(&runtime, "acme", &lan.token).await;
    lan_phone.close().await;
    let (status, body) = minh.get(&format!("/v1/channels/{channel}/presence")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["presence"][0]["user_id"], "lan");
    assert_eq!(body["presence"][0]["online"], true);

    let before_close = common::unix_now() * 1000;
    lan_laptop.close().await;
    let offline = next_presence(&mut minh_ws, "lan").await;
    assert_eq!(offline["online"], false);
    let last_seen = offline["last_seen"].as_u64().unwrap();
    assert!(last_seen + 1000 >= before_close, "{offline}");
    let (_, body) = minh.get(&format!("/v1/channels/{channel}/presence")).await;
    assert_eq!(body["presence"][0]["online"], false);
    assert_eq!(body["presence"][0]["last_seen"], offline["last_seen"]);
}

/// A client that stops replying to pings goes offline once the server
/// closes its socket: two heartbeats (2 s each here) without a frame.
#[tokio::test]
async fn half_open_socket_goes_offline() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let api = runtime.api("acme");
    let lan = api.user("lan").await;
    let minh = api.user("minh").await;
    let channel = lan.direct_with("minh", None).await;
    let mut minh_ws = Ws::connect(&runtime, "acme", &minh.token).await;
    subscribe(&mut minh_ws, &channel).await;
    next_presence(&mut minh_ws, "lan").await;

    // This socket is never read again, so it never replies to a ping.
    let _silent_lan = Ws::connect(&runtime, "acme", &lan.token).await;
    let started = Instant::now();
    assert_eq!(next_presence(&mut minh_ws, "lan").await["online"], true);
    let offline = next_presence(&mut minh_ws, "lan").await;
    assert_eq!(offline["online"], false);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn deleted_user_goes_offline() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let api = runtime.api("acme");
    let lan = api.user("lan").await;
    let minh = api.user("minh").await;
    let channel = lan.direct_with("minh", None).await;
    let mut lan_ws = Ws::connect(&runtime, "acme", &lan.token).await;
    let mut minh_ws = Ws::connect(&runtime, "acme", &minh.token).await;
    subscribe(&mut minh_ws, &channel).await;
    assert_eq!(next_presence(&mut minh_ws, "lan").await["online"], true);

    assert_eq!(api.delete_user("lan").await, 204);
    let (code, _) = lan_ws.expect_close().await;
    assert_eq!(code, 4003);
    assert_eq!(next_presence(&mut minh_ws, "lan").await["online"], false);
    let (_, body) = minh.get(&format!("/v1/channels/{channel}/presence")).await;
    assert_eq!(body["presence"][0]["online"], false);
}

#[tokio::test]
async fn only_members_may_watch() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let api = runtime.api("acme");
    let lan = api.user("lan").await;
    api.user("minh").await;
    let stranger = api.user("stranger").await;
    let channel = lan.direct_with("minh", None).await;

    let mut stranger_ws = Ws::connect(&runtime, "acme", &stranger.token).await;
    subscribe(&mut stranger_ws, &channel).await;
    let error = stranger_ws.next_of("error").await;
    assert_eq!(error["code"], "not_found");
    assert_eq!(error["ref"], "p");
    let (status, _) = stranger
        .get(&format!("/v1/channels/{channel}/presence"))
        .await;
    assert_eq!(status, 404);

    // A user of another tenant with the same id cannot watch either.
    let other_minh = runtime.api("globex").user("minh").await;
    let mut other_ws = Ws::connect(&runtime, "globex", &other_minh.token).await;
    subscribe(&mut other_ws, &channel).await;
    assert_eq!(other_ws.next_of("error").await["code"], "not_found");
}

#[tokio::test]
async fn unsubscribe_stops_presence_frames() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let api = runtime.api("acme");
    let lan = api.user("lan").await;
    let minh = api.user("minh").await;
    let channel = lan.direct_with("minh", None).await;
    let mut minh_ws = Ws::connect(&runtime, "acme", &minh.token).await;
    subscribe(&mut minh_ws, &channel).await;
    next_presence(&mut minh_ws, "lan").await;

    minh_ws
        .send_json(json!({"type": "presence_unsubscribe", "channel_id": channel}))
        .await;
    // A ping round trip orders the unsubscribe before Lan connects.
    minh_ws.send_json(json!({"type": "ping", "ref": "x"})).await;
    minh_ws.next_of("pong").await;
    let _lan_ws = Ws::connect(&runtime, "acme", &lan.token).await;
    minh_ws.expect_silence(Duration::from_millis(400)).await;
}

#[tokio::test]
async fn subscriptions_count_per_channel() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let api = runtime.api("acme");
    let lan = api.user("lan").await;
    let minh = api.user("minh").await;
    api.user("thu").await;
    let group = |members: Value| {
        let lan = lan.clone();
        async move {
            let (status, body) = lan
                .post(
                    "/v1/channels/group",
                    json!({"name": "nhóm", "members": members}),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    };
    let both = group(json!(["minh", "thu"])).await;
    let pair = group(json!(["minh"])).await;
    let mut minh_ws = Ws::connect(&runtime, "acme", &minh.token).await;
    subscribe(&mut minh_ws, &both).await;
    subscribe(&mut minh_ws, &pair).await;
    minh_ws
        .send_json(json!({"type": "presence_unsubscribe", "channel_id": both}))
        .await;
    minh_ws.send_json(json!({"type": "ping", "ref": "x"})).await;
    minh_ws.next_of("pong").await;

    // Lan is still watched through the other group.
    let lan_ws = Ws::connect(&runtime, "acme", &lan.token).await;
    let online = next_presence(&mut minh_ws, "lan").await;
    assert_eq!(online["online"], true);
    assert_eq!(online["last_seen"], Value::Null);
    lan_ws.close().await;
    assert_eq!(next_presence(&mut minh_ws, "lan").await["online"], false);
    // Back online: last_seen is null again while online.
    let _lan_again = Ws::connect(&runtime, "acme", &lan.token).await;
    let again = next_presence(&mut minh_ws, "lan").await;
    assert_eq!(again["online"], true);
    assert_eq!(again["last_seen"], Value::Null);
}

#[tokio::test]
async fn removed_member_stops_watching() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let api = runtime.api("acme");
    let lan = api.user("lan").await;
    let minh = api.user("minh").await;
    let (status, body) = lan
        .post(
            "/v1/channels/group",
            json!({"name": "nhóm", "members": ["minh"]}),
        )
        .await;
    assert_eq!(status, 201);
    let group = body["id"].as_str().unwrap().to_owned();
    let mut minh_ws = Ws::connect(&runtime, "acme", &minh.token).await;
    subscribe(&mut minh_ws, &group).await;
    next_presence(&mut minh_ws, "lan").await;

    let (status, _) = lan
        .delete(&format!("/v1/channels/{group}/members/minh"))
        .await;
    assert_eq!(status, 204);
    minh_ws.next_of("member_removed").await;
    let _lan_ws = Ws::connect(&runtime, "acme", &lan.token).await;
    minh_ws.expect_silence(Duration::from_millis(400)).await;
}
