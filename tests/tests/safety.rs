//! Blocks between users, and bans and mutes set through the server API,
//! against one runtime process.

mod common;

use common::{NO_RATE_LIMIT, Runtime, ServerApi, TokenIn, User, Ws, config_yaml, error_code};
use serde_json::{Value, json};

struct Chat {
    runtime: Runtime,
    api: ServerApi,
    alice: User,
    bob: User,
    carol: User,
    group: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Chat {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    let (status, body) = alice
        .post(
            "/v1/channels/group",
            json!({ "name": "chợ xe", "members": ["bob", "carol"] }),
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

async fn restrict(chat: &Chat, user: &str, body: Value) -> (u16, Value) {
    chat.api
        .post(&format!("/v1/server/users/{user}/restrictions"), body)
        .await
}

#[tokio::test]
async fn blocked_user_reaches_blocker_no_more() {
    let chat = start().await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;
    let mut carol_ws = Ws::connect(&chat.runtime, "acme", &chat.carol.token).await;

    let (status, body) = chat.bob.put("/v1/me/blocks/alice").await;
    assert_eq!(status, 204, "{body}");
    let (_, body) = chat.bob.get("/v1/me/blocks").await;
    assert_eq!(body["blocked_users"], json!(["alice"]));

    // Alice cannot open a direct channel with Bob, nor Bob with Alice.
    let (status, body) = chat
        .alice
        .post("/v1/channels/direct", json!({ "user_id": "bob" }))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = chat
        .bob
        .post("/v1/channels/direct", json!({ "user_id": "alice" }))
        .await;
    assert_eq!(status, 403);

    // In the group, Carol gets Alice's message and Bob does not.
    let (status, _) = chat.alice.send_text(&chat.group, "a-1", "Ai mua xe?").await;
    assert_eq!(status, 201);
    let (status, _) = chat.carol.send_text(&chat.group, "c-1", "Em mua").await;
    assert_eq!(status, 201);
    let to_carol = carol_ws.next_of("message").await;
    assert_eq!(to_carol["message"]["client_id"], "a-1");
    let to_bob = bob_ws.next_of("message").await;
    assert_eq!(to_bob["message"]["client_id"], "c-1", "{to_bob}");
    let history: Vec<Value> = chat.bob.all_messages(&chat.group).await;
    let client_ids: Vec<&str> = history
        .iter()
        .map(|message| message["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(client_ids, ["c-1"]);

    // Bob cannot list the reactions of Alice's hidden message, and the
    // reactors of Carol's message leave Alice out.
    let reactions = |seq: u64| format!("/v1/channels/{}/messages/{seq}/reactions", chat.group);
    let (status, body) = chat.bob.get(&reactions(1)).await;
    assert_eq!(status, 404, "{body}");
    for user in [&chat.alice, &chat.carol] {
        let (status, body) = user.put(&format!("{}/👍", reactions(2))).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, body) = chat.bob.get(&reactions(2)).await;
    assert_eq!(body["reactions"], json!({"👍": ["carol"]}), "{body}");
    let (_, body) = chat.carol.get(&reactions(2)).await;
    assert_eq!(
        body["reactions"],
        json!({"👍": ["alice", "carol"]}),
        "{body}"
    );

    let (status, _) = chat.bob.delete("/v1/me/blocks/alice").await;
    assert_eq!(status, 204);
    let (status, _) = chat.alice.send_text(&chat.group, "a-2", "Còn xe").await;
    assert_eq!(status, 201);
    let to_bob = bob_ws.next_of("message").await;
    assert_eq!(to_bob["message"]["client_id"], "a-2", "{to_bob}");

    let (status, _) = chat.bob.put("/v1/me/blocks/nobody").await;
    assert_eq!(status, 404);
    let (status, body) = chat.bob.put("/v1/me/blocks/bob").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn mutes_stop_sending_until_lifted() {
    let chat = start().await;
    let (status, body) = restrict(
        &chat,
        "bob",
        json!({ "kind": "mute", "channel_id": chat.group, "reason": "spam" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restriction"]["kind"], "mute");

    let (status, body) = chat.bob.send_text(&chat.group, "b-1", "mua không").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "muted");
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;
    bob_ws.send_text(&chat.group, "b-2", "mua không").await;
    let error = bob_ws.next_of("error").await;
    assert_eq!(error["code"], "muted", "{error}");
    assert_eq!(error["ref"], "b-2", "{error}");

    // Bob still reads the group.
    let (status, _) = chat.alice.send_text(&chat.group, "a-1", "xe đẹp").await;
    assert_eq!(status, 201);
    assert_eq!(
        bob_ws.next_of("message").await["message"]["client_id"],
        "a-1"
    );

    let (_, body) = chat.api.get("/v1/server/users/bob/restrictions").await;
    assert_eq!(body["restrictions"].as_array().unwrap().len(), 1, "{body}");
    let lift = format!(
        "/v1/server/users/bob/restrictions/mute?channel_id={}",
        chat.group
    );
    let (status, _) = chat.api.delete(&lift).await;
    assert_eq!(status, 204);
    let (status, _) = chat.api.delete(&lift).await;
    assert_eq!(status, 404);
    let (status, body) = chat.bob.send_text(&chat.group, "b-3", "mua không").await;
    assert_eq!(status, 201, "{body}");

    // A mute of the whole tenant that ends by itself.
    let (status, _) = restrict(
        &chat,
        "bob",
        json!({ "kind": "mute", "duration_seconds": 1 }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = chat.bob.send_text(&chat.group, "b-4", "còn không").await;
    assert_eq!(status, 403);
    let bob = chat.bob.clone();
    let group = chat.group.clone();
    common::poll_until("the mute ended", || {
        let (bob, group) = (bob.clone(), group.clone());
        async move {
            let client_id = format!("b-5-{}", rand_suffix());
            bob.send_text(&group, &client_id, "hết mute").await.0 == 201
        }
    })
    .await;
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn tenant_ban_closes_sockets_and_keeps_user_out() {
    let chat = start().await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;
    let mut alice_ws = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    alice_ws
        .send_json(json!({ "type": "presence_subscribe", "ref": "p", "channel_id": chat.group }))
        .await;

    let (status, body) =
        restrict(&chat, "bob", json!({ "kind": "ban", "reason": "lừa đảo" })).await;
    assert_eq!(status, 200, "{body}");
    let (code, _) = bob_ws.expect_close().await;
    assert_eq!(code, 4006);
    loop {
        let frame = alice_ws.next_of("presence").await;
        if frame["user_id"] == "bob" && frame["online"] == false {
            break;
        }
    }

    let (status, body) = chat.bob.get("/v1/channels").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "user_banned");
    let rejected = Ws::try_connect(
        &chat.runtime,
        "acme",
        &chat.bob.token,
        TokenIn::Header,
        None,
    )
    .await;
    assert!(matches!(rejected, Err((403, _))), "{:?}", rejected.err());

    let (status, _) = chat
        .api
        .delete("/v1/server/users/bob/restrictions/ban")
        .await;
    assert_eq!(status, 204);
    let (status, _) = chat.bob.get("/v1/channels").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn channel_ban_removes_member() {
    let chat = start().await;
    let mut carol_ws = Ws::connect(&chat.runtime, "acme", &chat.carol.token).await;
    let (status, body) = restrict(
        &chat,
        "bob",
        json!({ "kind": "ban", "channel_id": chat.group, "duration_seconds": 3600 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let removed = carol_ws.next_of("member_removed").await;
    assert_eq!(removed["user_id"], "bob");

    let (status, body) = chat.bob.send_text(&chat.group, "b-1", "còn đó không").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = chat
        .alice
        .post(
            &format!("/v1/channels/{}/members", chat.group),
            json!({ "user_id": "bob" }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "banned");

    // The log has the ban and the removal.
    let (_, events) = chat.api.get("/v1/server/events?limit=1000").await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    let tail = &kinds[kinds.len() - 2..];
    assert_eq!(tail, ["moderation.restricted", "member.removed"]);
}

#[tokio::test]
async fn invalid_restrictions_are_rejected() {
    let chat = start().await;
    for (user, body, status) in [
        ("bob", json!({ "kind": "exile" }), 400),
        ("bob", json!({ "kind": "mute", "duration_seconds": 0 }), 400),
        (
            "bob",
            json!({ "kind": "mute", "reason": "x".repeat(600) }),
            400,
        ),
        ("nobody", json!({ "kind": "mute" }), 404),
    ] {
        let (got, response) = restrict(&chat, user, body.clone()).await;
        assert_eq!(got, status, "{body}: {response}");
    }
    let (status, _) = chat
        .api
        .delete("/v1/server/users/bob/restrictions/exile")
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn blocker_sees_no_typing_or_presence() {
    let chat = start().await;
    let (status, _) = chat.bob.put("/v1/me/blocks/alice").await;
    assert_eq!(status, 204);
    let mut alice_ws = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;
    let mut carol_ws = Ws::connect(&chat.runtime, "acme", &chat.carol.token).await;

    // Bob's presence subscription leaves Alice out, over WebSocket and REST.
    bob_ws
        .send_json(json!({"type": "presence_subscribe", "ref": "p", "channel_id": chat.group}))
        .await;
    let presence = bob_ws.next_of("presence").await;
    assert_eq!(presence["user_id"], "carol", "{presence}");
    let (status, body) = chat
        .bob
        .get(&format!("/v1/channels/{}/presence", chat.group))
        .await;
    assert_eq!(status, 200, "{body}");
    let users: Vec<&str> = body["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["carol"]);

    // Alice's typing reaches Carol, not Bob: Bob's first typing frame is
    // Carol's, which she starts after Alice.
    let typing = |user_channel: &str| json!({"type": "typing", "channel_id": user_channel, "state": "start"});
    alice_ws.send_json(typing(&chat.group)).await;
    let to_carol = carol_ws.next_of("typing").await;
    assert_eq!(to_carol["user_id"], "alice");
    carol_ws.send_json(typing(&chat.group)).await;
    let to_bob = bob_ws.next_of("typing").await;
    assert_eq!(to_bob["user_id"], "carol", "{to_bob}");
}

#[tokio::test]
async fn block_ends_presence_subscription() {
    let chat = start().await;
    let mut bob_ws = Ws::connect(&chat.runtime, "acme", &chat.bob.token).await;
    bob_ws
        .send_json(json!({"type": "presence_subscribe", "ref": "p", "channel_id": chat.group}))
        .await;
    let mut initial: Vec<String> = Vec::new();
    for _ in 0..2 {
        let frame = bob_ws.next_of("presence").await;
        initial.push(frame["user_id"].as_str().unwrap().to_owned());
    }
    initial.sort();
    assert_eq!(initial, ["alice", "carol"]);

    // Blocked after the subscription, Alice no longer shows up for Bob:
    // his next presence frame is Carol's, who connects after Alice.
    let (status, _) = chat.bob.put("/v1/me/blocks/alice").await;
    assert_eq!(status, 204);
    let _alice_ws = Ws::connect(&chat.runtime, "acme", &chat.alice.token).await;
    let _carol_ws = Ws::connect(&chat.runtime, "acme", &chat.carol.token).await;
    let presence = bob_ws.next_of("presence").await;
    assert_eq!(presence["user_id"], "carol", "{presence}");
    assert_eq!(presence["online"], true, "{presence}");
}

#[tokio::test]
async fn blocked_user_moves_no_channel_for_blocker() {
    let chat = start().await;
    let (status, _) = chat.bob.put("/v1/me/blocks/alice").await;
    assert_eq!(status, 204);
    let (status, from_carol) = chat.carol.send_text(&chat.group, "c-1", "Chào").await;
    assert_eq!(status, 201, "{from_carol}");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, from_alice) = chat.alice.send_text(&chat.group, "a-1", "Chào").await;
    assert_eq!(status, 201, "{from_alice}");
    assert!(
        from_alice["message"]["created_at"].as_i64() > from_carol["message"]["created_at"].as_i64()
    );

    // Bob's single read and his list both show Carol's message as the
    // newest activity; Carol's show Alice's.
    let path = format!("/v1/channels/{}", chat.group);
    let (status, for_bob) = chat.bob.get(&path).await;
    assert_eq!(status, 200, "{for_bob}");
    assert_eq!(
        for_bob["channel"]["last_activity"], from_carol["message"]["created_at"],
        "{for_bob}"
    );
    let (_, bobs_list) = chat.bob.get("/v1/channels").await;
    assert_eq!(
        bobs_list["channels"][0]["channel"]["last_activity"], from_carol["message"]["created_at"],
        "{bobs_list}"
    );
    let (_, for_carol) = chat.carol.get(&path).await;
    assert_eq!(
        for_carol["channel"]["last_activity"], from_alice["message"]["created_at"],
        "{for_carol}"
    );
}
