//! The event log through the server API: every change once and in order,
//! long polling, moderation decisions, tenant separation, and an exact log
//! after SIGKILL under traffic.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{NO_RATE_LIMIT, Runtime, ServerApi, User, Ws, config_yaml, error_code};
use serde_json::{Value, json};

/// Reads every event after `after` through the server API.
async fn events_after(api: &ServerApi, after: Option<&str>) -> (Vec<Value>, String) {
    let mut events = Vec::new();
    let mut cursor = after.map(str::to_owned);
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/server/events?limit=50&after={cursor}"),
            None => "/v1/server/events?limit=50".to_owned(),
        };
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "{body}");
        let page = body["events"].as_array().unwrap().clone();
        let next = body["next_cursor"].as_str().unwrap().to_owned();
        if page.is_empty() {
            return (events, next);
        }
        cursor = Some(next);
        events.extend(page);
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn feed_lists_each_change_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let channel = alice.direct_with("bob", Some("xe-42")).await;

    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;
    let (status, _) = alice.send_text(&channel, "a-1", "Xe còn không ạ?").await;
    assert_eq!(status, 201);
    bob_ws.send_text(&channel, "b-1", "Còn bạn nhé").await;
    bob_ws.next_of("ack").await;
    let (status, _) = alice
        .post(&format!("/v1/channels/{channel}/read"), json!({ "seq": 2 }))
        .await;
    assert_eq!(status, 200);

    let (events, _) = events_after(&api, None).await;
    assert_eq!(
        kinds(&events),
        [
            "user.upserted",
            "user.upserted",
            "channel.created",
            "message.new",
            "message.new",
            "channel.read",
        ]
    );
    let first = &events[3];
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["channel_id"], channel.as_str());
    assert_eq!(
        first["data"]["message"]["content"]["text"],
        "Xe còn không ạ?"
    );
    assert_eq!(events[4]["data"]["message"]["sender_id"], "bob");
    assert!(
        first["id"].is_string() && first["cursor"].is_string(),
        "{first}"
    );
    assert!(first["created_at"].is_i64(), "{first}");

    // Another tenant's log has none of it.
    let (globex, _) = events_after(&runtime.api("globex"), None).await;
    assert!(globex.is_empty(), "{globex:?}");
}

#[tokio::test]
async fn long_poll_waits_for_next_event() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    api.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let (_, end) = events_after(&api, None).await;

    // Nothing new: an empty page after the wait, with the same cursor.
    let (status, body) = api
        .get(&format!("/v1/server/events?after={end}&wait=1"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], json!([]));
    assert_eq!(body["next_cursor"], end.as_str());

    let poll = {
        let path = format!("/v1/server/events?after={end}&wait=30");
        let api = runtime.api("acme");
        tokio::spawn(async move { api.get(&path).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = alice.send_text(&channel, "late", "đến muộn").await;
    assert_eq!(status, 201);
    let (status, body) = poll.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["type"], "message.new", "{body}");
    assert_eq!(body["events"][0]["data"]["message"]["client_id"], "late");
}

#[tokio::test]
async fn invalid_queries_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let api = runtime.api("acme");
    for (query, expected) in [
        ("after=abc", "invalid_request"),
        ("after=-1", "invalid_request"),
        ("limit=0", "invalid_request"),
        ("limit=1001", "invalid_request"),
        ("wait=51", "invalid_request"),
        ("colour=blue", "invalid_request"),
    ] {
        let (status, body) = api.get(&format!("/v1/server/events?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(error_code(&body), expected, "{query}: {body}");
    }
}

#[tokio::test]
async fn blocked_message_leaves_only_its_decision() {
    let rules = "    moderation:\n      rules:\n        - name: scams\n          action: block\n          terms:\n            list: [\"lừa đảo\"]\n            accent_insensitive: true\n        - name: contacts\n          action: mask\n          contacts: {}\n";
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(&format!("{NO_RATE_LIMIT}{rules}")));
    let api = runtime.api("acme");
    let alice = api.user("alice").await;
    api.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let (_, start) = events_after(&api, None).await;

    // A user outside the channel gets 404 and writes no event.
    let mallory = api.user("mallory").await;
    let (_, start) = events_after(&api, Some(&start)).await;
    let (status, body) = mallory.send_text(&channel, "x-1", "lua dao day").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = mallory.send_text("d_nonexistent", "x-2", "lua dao").await;
    assert_eq!(status, 404);

    let (status, _) = alice.send_text(&channel, "m-1", "lua dao day").await;
    assert_eq!(status, 422);
    let (status, _) = alice.send_text(&channel, "m-2", "gọi 0912345678").await;
    assert_eq!(status, 201);

    let (events, _) = events_after(&api, Some(&start)).await;
    assert_eq!(
        kinds(&events),
        ["moderation.decision", "message.new", "moderation.decision"]
    );
    let blocked = &events[0]["data"];
    assert_eq!(blocked["rule"], "scams");
    assert_eq!(blocked["action"], "block");
    assert_eq!(blocked["client_id"], "m-1");
    assert_eq!(blocked["seq"], Value::Null);
    assert_eq!(events[1]["data"]["message"]["content"]["text"], "gọi ***");
    assert_eq!(events[2]["data"]["action"], "mask");
    assert_eq!(events[2]["data"]["seq"], 1);
}

/// Sends messages over REST until a request fails, as they do once the
/// runtime is killed, and counts the ones stored.
async fn send_until_failure(user: User, channel: String, stored: Arc<AtomicUsize>) {
    for index in 0.. {
        let client_id = format!("{}-{index}", user.id);
        let response = user
            .http
            .post(format!("{}/v1/channels/{channel}/messages", user.base))
            .bearer_auth(&user.token)
            .header("x-parley-tenant", &user.tenant)
            .json(&json!({ "client_id": client_id, "content": { "kind": "text", "text": "tin" } }))
            .send()
            .await;
        match response {
            Ok(response) if response.status() == 201 => {
                stored.fetch_add(1, Ordering::SeqCst);
            }
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn log_matches_history_after_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let api = runtime.api("acme");
    let mut users = Vec::new();
    for id in ["an", "binh", "chi"] {
        users.push(api.user(id).await);
    }
    let (status, group) = users[0]
        .post(
            "/v1/channels/group",
            json!({ "name": "chợ", "members": ["binh", "chi"] }),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let group = group["id"].as_str().unwrap().to_owned();

    let stored = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = users
        .iter()
        .map(|user| {
            tokio::spawn(send_until_failure(
                user.clone(),
                group.clone(),
                Arc::clone(&stored),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored.load(Ordering::SeqCst) < 200 {
        assert!(Instant::now() < deadline, "too few messages stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    runtime.kill();
    for task in tasks {
        task.await.unwrap();
    }

    let runtime = Runtime::start(dir.path(), "");
    let history = users[0].at(&runtime).all_messages(&group).await;
    let (events, _) = events_after(&runtime.api("acme"), None).await;
    let logged: Vec<u64> = events
        .iter()
        .filter(|event| event["type"] == "message.new")
        .map(|event| event["data"]["message"]["seq"].as_u64().unwrap())
        .collect();
    let in_history: Vec<u64> = history
        .iter()
        .map(|message| message["seq"].as_u64().unwrap())
        .collect();
    // Each stored message has exactly one event, in the channel's order,
    // and no event names a message that is not stored.
    assert_eq!(logged, in_history);
    assert!(in_history.len() >= 200, "{} stored", in_history.len());
    let ids: HashSet<&str> = events
        .iter()
        .map(|event| event["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), events.len(), "event ids repeat");
}
