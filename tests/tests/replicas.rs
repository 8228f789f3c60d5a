//! Two runtime processes sharing one data directory and one Redis serve
//! one chat: live delivery across them, and recovery when Redis or a
//! subscription is lost.

mod common;

use std::path::Path;
use std::time::Duration;

use common::redis::RedisServer;
use common::{NO_RATE_LIMIT, Runtime, User, WAIT, Ws, config_yaml_with_server, poll_until};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Two replicas, A and B, with their Redis. The heartbeat is long because
/// one test pauses a replica with SIGSTOP.
struct Replicas {
    a: Runtime,
    b: Runtime,
    redis: RedisServer,
    _dir: tempfile::TempDir,
}

fn replica_config(data_dir: &Path, redis_url: &str) -> String {
    let server = format!(
        "  redis:\n    url: {redis_url}\n    channel_prefix: parley-test\n  max_replay: 5000\n"
    );
    config_yaml_with_server(&server, NO_RATE_LIMIT).replace(
        "  heartbeat_seconds: 2\n  data_dir: data\n",
        &format!(
            "  heartbeat_seconds: 30\n  data_dir: {}\n",
            data_dir.display()
        ),
    )
}

async fn start_replicas() -> Replicas {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let redis = RedisServer::start(dir.path());
    let mut runtimes = Vec::new();
    for name in ["a", "b"] {
        let replica_dir = dir.path().join(name);
        std::fs::create_dir_all(&replica_dir).unwrap();
        let runtime = Runtime::start(&replica_dir, &replica_config(&data, &redis.url()));
        runtimes.push(runtime);
    }
    let b = runtimes.pop().unwrap();
    let a = runtimes.pop().unwrap();
    for runtime in [&a, &b] {
        poll_until("both Redis connections are up", || relay_up(runtime)).await;
    }
    Replicas {
        a,
        b,
        redis,
        _dir: dir,
    }
}

/// True when `/readyz` reports ready without a degraded relay.
async fn relay_up(runtime: &Runtime) -> bool {
    readyz(runtime).await == (200, String::from("ready"))
}

async fn readyz(runtime: &Runtime) -> (u16, String) {
    let response = reqwest::get(format!("{}/readyz", runtime.base_url()))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn metric(runtime: &Runtime, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", runtime.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// Reads frames until `count` messages of `channel` arrived and returns
/// their sequence numbers in arrival order. Fails when nothing arrives for
/// [`WAIT`], or on a frame that requests the client to page history.
async fn receive_messages(ws: &mut Ws, channel: &str, count: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(count);
    while seqs.len() < count {
        let frame: Value = match ws.next_frame(WAIT).await {
            Some(Message::Text(text)) => serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("after messages {seqs:?} the socket gave {other:?}"),
        };
        assert_ne!(frame["type"], "resync_required", "{frame}");
        if frame["type"] == "message" && frame["message"]["channel_id"] == channel {
            seqs.push(frame["message"]["seq"].as_u64().unwrap());
        }
    }
    seqs
}

/// Asserts that `seqs` is exactly 1, 2, ..., `count`.
fn assert_complete(who: &str, seqs: &[u64], count: u64) {
    let expected: Vec<u64> = (1..=count).collect();
    assert_eq!(seqs, expected.as_slice(), "messages received by {who}");
}

/// Alice and Bob of tenant acme, with their direct channel.
async fn alice_and_bob(replicas: &Replicas) -> (User, User, String) {
    let api = replicas.a.api("acme");
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let channel = alice.direct_with("bob", Some("bike-42")).await;
    (alice, bob, channel)
}

/// Sends `count` messages alternately as Alice through replica A and as
/// Bob through replica B, over REST, and checks that each was stored.
async fn send_alternately(alice: &User, bob: &User, channel: &str, from: usize, count: usize) {
    for index in from..from + count {
        let sender = if index % 2 == 0 { alice } else { bob };
        let (status, body) = sender
            .send_text(channel, &format!("m-{index}"), &format!("tin nhắn {index}"))
            .await;
        assert_eq!(status, 201, "send {index}: {body}");
    }
}

#[tokio::test]
async fn message_reaches_other_replica_in_order() {
    let replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let mut alice_on_a = Ws::connect(&replicas.a, "acme", &alice.token).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;
    // A second device of Bob on the sender's replica.
    let mut bob_on_a = Ws::connect(&replicas.a, "acme", &bob.token).await;

    for index in 0..30 {
        alice_on_a
            .send_text(&channel, &format!("c-{index}"), "xin chào")
            .await;
    }

    for (who, ws) in [
        ("Bob on B", &mut bob_on_b),
        ("Bob on A", &mut bob_on_a),
        ("Alice on A", &mut alice_on_a),
    ] {
        let seqs = receive_messages(ws, &channel, 30).await;
        assert_complete(who, &seqs, 30);
    }
    // Each socket got each message once: nothing more arrives.
    bob_on_b.expect_silence(Duration::from_millis(300)).await;
    bob_on_a.expect_silence(Duration::from_millis(300)).await;
}

/// The subscriber pings Redis every 5 seconds, and a failed ping counts as
/// a lost subscription. A misread reply would make every ping fail.
#[tokio::test]
async fn subscription_survives_its_pings() {
    let replicas = start_replicas().await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    for runtime in [&replicas.a, &replicas.b] {
        assert_eq!(
            metric(runtime, "parley_relay_subscription_losses_total").await,
            0.0
        );
        assert!(relay_up(runtime).await);
    }
}

#[tokio::test]
async fn senders_on_both_replicas_share_one_order() {
    let replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let mut alice_on_a = Ws::connect(&replicas.a, "acme", &alice.token).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;

    let bob_at_b = bob.at(&replicas.b);
    let send_all = |user: User, prefix: &'static str| {
        let channel = channel.clone();
        async move {
            for index in 0..40 {
                let client_id = format!("{prefix}-{index}");
                let (status, body) = user.send_text(&channel, &client_id, prefix).await;
                assert_eq!(status, 201, "{client_id}: {body}");
            }
        }
    };
    tokio::join!(send_all(alice.clone(), "a"), send_all(bob_at_b, "b"));

    let on_a = receive_messages(&mut alice_on_a, &channel, 80).await;
    assert_complete("Alice on A", &on_a, 80);
    let on_b = receive_messages(&mut bob_on_b, &channel, 80).await;
    assert_complete("Bob on B", &on_b, 80);
}

#[tokio::test]
async fn redis_killed_under_traffic_loses_nothing() {
    let mut replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let bob_at_b = bob.at(&replicas.b);
    let mut alice_on_a = Ws::connect(&replicas.a, "acme", &alice.token).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;

    send_alternately(&alice, &bob_at_b, &channel, 0, 20).await;
    replicas.redis.kill();
    // Both replicas keep storing while Redis is down, and stay ready.
    send_alternately(&alice, &bob_at_b, &channel, 20, 20).await;
    let a = &replicas.a;
    poll_until("replica A reports the relay degraded", || async {
        let (status, body) = readyz(a).await;
        status == 200 && body.contains("degraded")
    })
    .await;
    assert_eq!(metric(a, "parley_relay_publisher_connected").await, 0.0);

    replicas.redis.restart();
    send_alternately(&alice, &bob_at_b, &channel, 40, 20).await;

    let on_a = receive_messages(&mut alice_on_a, &channel, 60).await;
    assert_complete("Alice on A", &on_a, 60);
    let on_b = receive_messages(&mut bob_on_b, &channel, 60).await;
    assert_complete("Bob on B", &on_b, 60);
    alice_on_a.expect_silence(Duration::from_millis(300)).await;
    bob_on_b.expect_silence(Duration::from_millis(300)).await;
    poll_until("replica A's relay is up again", || relay_up(a)).await;
    assert!(metric(a, "parley_relay_dropped_total").await > 0.0);
}

#[tokio::test]
async fn silent_channel_catches_up_after_redis_restart() {
    let mut replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;

    replicas.redis.kill();
    // Stored while Redis is down, and nothing is sent after it is back:
    // only a resync can bring these to Bob's socket on B.
    for index in 0..5 {
        let (status, body) = alice
            .send_text(&channel, &format!("q-{index}"), "hỏi")
            .await;
        assert_eq!(status, 201, "{body}");
    }
    replicas.redis.restart();

    let seqs = receive_messages(&mut bob_on_b, &channel, 5).await;
    assert_complete("Bob on B", &seqs, 5);
}

#[tokio::test]
async fn killed_subscription_is_repaired() {
    let replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;

    send_alternately(&alice, &bob.at(&replicas.b), &channel, 0, 10).await;
    let killed = replicas
        .redis
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed, ":2", "both replicas had one subscription each");
    send_alternately(&alice, &bob.at(&replicas.b), &channel, 10, 10).await;

    let seqs = receive_messages(&mut bob_on_b, &channel, 20).await;
    assert_complete("Bob on B", &seqs, 20);
    let b = &replicas.b;
    poll_until("replica B counted the lost subscription", || async {
        metric(b, "parley_relay_subscription_losses_total").await >= 1.0
    })
    .await;
}

/// A replica that stops reading its subscription is dropped by Redis once
/// the subscriber's output buffer passes its limit. SIGSTOP makes B stop
/// reading; after SIGCONT it must notice and catch its sockets up.
#[tokio::test]
async fn stalled_subscriber_dropped_by_redis_recovers() {
    let replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;
    let limit = replicas.redis.command(&[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 64kb 0 0",
    ]);
    assert_eq!(limit, "+OK");

    let pid = replicas.b.pid().to_string();
    signal("-STOP", &pid);
    // About 9 MB of envelopes for B, sent by four concurrent clients: far
    // past the 64 KiB limit and what the kernel's socket buffers absorb on
    // loopback (2.5 MB were absorbed whole in a trial). 500 repeats are
    // 2,000 characters, the default limit.
    let text = "chợ ".repeat(500);
    let send_all = |worker: usize| {
        let (alice, channel, text) = (alice.clone(), channel.clone(), text.clone());
        async move {
            for index in 0..750 {
                let client_id = format!("big-{worker}-{index}");
                let (status, body) = alice.send_text(&channel, &client_id, &text).await;
                assert_eq!(status, 201, "{client_id}: {body}");
            }
        }
    };
    tokio::join!(send_all(0), send_all(1), send_all(2), send_all(3));
    let subscribers = replicas.redis.subscribers("parley-test:db0:tenant:acme");
    signal("-CONT", &pid);
    assert_eq!(subscribers, 1, "only A is subscribed once Redis dropped B");

    let seqs = receive_messages(&mut bob_on_b, &channel, 3000).await;
    assert_complete("Bob on B", &seqs, 3000);
    let b = &replicas.b;
    poll_until("replica B counted the lost subscription", || async {
        metric(b, "parley_relay_subscription_losses_total").await >= 1.0
    })
    .await;
}

#[tokio::test]
async fn tenants_with_same_ids_stay_apart() {
    let replicas = start_replicas().await;
    let (alice, _bob, channel) = alice_and_bob(&replicas).await;
    let globex = replicas.b.api("globex");
    let other_alice = globex.user("alice").await;
    let other_bob = globex.user("bob").await;
    let other_channel = other_alice.direct_with("bob", Some("bike-42")).await;
    let mut other_bob_on_b = Ws::connect(&replicas.b, "globex", &other_bob.token).await;

    for index in 0..5 {
        let (status, _) = alice
            .send_text(&channel, &format!("x-{index}"), "acme")
            .await;
        assert_eq!(status, 201);
    }
    other_bob_on_b
        .expect_silence(Duration::from_millis(500))
        .await;
    let (status, _) = other_alice.send_text(&other_channel, "g-1", "globex").await;
    assert_eq!(status, 201);
    let seqs = receive_messages(&mut other_bob_on_b, &other_channel, 1).await;
    assert_eq!(seqs, [1]);
}

#[tokio::test]
async fn deleting_user_closes_sockets_on_every_replica() {
    let replicas = start_replicas().await;
    let (_alice, bob, _channel) = alice_and_bob(&replicas).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;

    assert_eq!(replicas.a.api("acme").delete_user("bob").await, 204);
    let (code, _) = bob_on_b.expect_close().await;
    assert_eq!(code, 4003);
}

/// Reads frames until a `presence` frame about `user` arrives, failing
/// after `wait`.
async fn presence_within(ws: &mut Ws, user: &str, wait: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame: Value = match ws.next_frame(left).await {
            Some(Message::Text(text)) => serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("no presence frame about {user} within {wait:?}: {other:?}"),
        };
        if frame["type"] == "presence" && frame["user_id"] == user {
            return frame;
        }
    }
}

#[tokio::test]
async fn presence_crosses_replicas() {
    let replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let alice_on_a = Ws::connect(&replicas.a, "acme", &alice.token).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;

    // Alice opened her socket on A before Bob subscribed on B.
    bob_on_b
        .send_json(serde_json::json!({"type": "presence_subscribe", "channel_id": channel}))
        .await;
    let initial = presence_within(&mut bob_on_b, "alice", WAIT).await;
    assert_eq!(initial["online"], true, "{initial}");

    alice_on_a.close().await;
    let offline = presence_within(&mut bob_on_b, "alice", WAIT).await;
    assert_eq!(offline["online"], false);
    assert!(offline["last_seen"].as_i64().is_some(), "{offline}");

    let _alice_on_b = Ws::connect(&replicas.b, "acme", &alice.token).await;
    assert_eq!(
        presence_within(&mut bob_on_b, "alice", WAIT).await["online"],
        true
    );
}

/// A replica killed with SIGKILL announces nothing. Its users go offline
/// on the other replicas once its last announcement expires: 15 s after it,
/// and announcements come every 5 s.
#[tokio::test]
async fn users_of_killed_replica_go_offline() {
    let mut replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let _alice_on_a = Ws::connect(&replicas.a, "acme", &alice.token).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;
    bob_on_b
        .send_json(serde_json::json!({"type": "presence_subscribe", "channel_id": channel}))
        .await;
    assert_eq!(
        presence_within(&mut bob_on_b, "alice", WAIT).await["online"],
        true
    );

    replicas.a.kill();
    let killed = std::time::Instant::now();
    let offline = presence_within(&mut bob_on_b, "alice", Duration::from_secs(25)).await;
    assert_eq!(offline["online"], false);
    assert!(
        killed.elapsed() <= Duration::from_secs(21),
        "{:?}",
        killed.elapsed()
    );
}

#[tokio::test]
async fn revocation_closes_sockets_on_every_replica() {
    let replicas = start_replicas().await;
    let (_alice, bob, _channel) = alice_and_bob(&replicas).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;

    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/server/users/bob/revoke-tokens",
            replicas.a.base_url()
        ))
        .header("x-parley-tenant", "acme")
        .basic_auth(common::ACME_KEY, Some(common::ACME_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (code, _) = bob_on_b.expect_close().await;
    assert_eq!(code, 4005);
}

/// Alice's group with Bob and Carol, created through replica A.
async fn group_with_carol(replicas: &Replicas, alice: &User) -> (User, String) {
    let carol = replicas.a.api("acme").user("carol").await;
    let (status, body) = alice
        .post(
            "/v1/channels/group",
            json!({"name": "xe đạp", "members": ["bob", "carol"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (carol, body["id"].as_str().unwrap().to_owned())
}

/// Events of two replicas can reach a third socket out of order while
/// Redis is paused: here Carol's removal (published by A) arrives after her
/// joining again (delivered at once by B). The store decides, so her
/// socket on B keeps the group.
#[tokio::test]
async fn reordered_membership_events_keep_member() {
    let replicas = start_replicas().await;
    let (alice, _bob, _channel) = alice_and_bob(&replicas).await;
    let (carol, group) = group_with_carol(&replicas, &alice).await;
    let mut carol_on_b = Ws::connect(&replicas.b, "acme", &carol.token).await;
    let alice_at_b = alice.at(&replicas.b);

    let redis_pid = replicas.redis.pid().to_string();
    signal("-STOP", &redis_pid);
    let (status, _) = alice
        .delete(&format!("/v1/channels/{group}/members/carol"))
        .await;
    assert_eq!(status, 204);
    let (status, _) = alice_at_b
        .post(
            &format!("/v1/channels/{group}/members"),
            json!({"user_id": "carol"}),
        )
        .await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal("-CONT", &redis_pid);

    send_alternately(&alice, &alice_at_b, &group, 0, 4).await;
    let seqs = receive_messages(&mut carol_on_b, &group, 4).await;
    assert_complete("Carol on B", &seqs, 4);
}

/// A message that overtakes the `member_added` of a new member starts the
/// member's live delivery at the join, not at the group's first message.
#[tokio::test]
async fn overtaken_join_replays_no_history() {
    let replicas = start_replicas().await;
    let (alice, _bob, _channel) = alice_and_bob(&replicas).await;
    let (_carol, group) = group_with_carol(&replicas, &alice).await;
    send_alternately(&alice, &alice, &group, 0, 5).await;
    let dave = replicas.a.api("acme").user("dave").await;
    let mut dave_on_b = Ws::connect(&replicas.b, "acme", &dave.token).await;

    let redis_pid = replicas.redis.pid().to_string();
    signal("-STOP", &redis_pid);
    let (status, _) = alice
        .post(
            &format!("/v1/channels/{group}/members"),
            json!({"user_id": "dave"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = alice
        .at(&replicas.b)
        .send_text(&group, "after-join", "chào Dave")
        .await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal("-CONT", &redis_pid);

    let seqs = receive_messages(&mut dave_on_b, &group, 1).await;
    assert_eq!(seqs, [6], "Dave's first live message");
    let later: Vec<Value> = dave_on_b
        .frames_until_quiet(Duration::from_millis(500))
        .await;
    assert!(
        later.iter().all(|frame| frame["type"] != "message"),
        "{later:?}"
    );
}

/// A replica that stored a message and deleted a user while it could not
/// reach Redis, and was then restarted, announces a full resync when it
/// starts, so the other replica's sockets still catch up.
#[tokio::test]
async fn restarted_replica_repairs_what_it_could_not_publish() {
    let replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let carol = replicas.a.api("acme").user("carol").await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;
    let mut carol_on_b = Ws::connect(&replicas.b, "acme", &carol.token).await;

    // Replica C shares the data directory, but its Redis is unreachable.
    let dir = tempfile::tempdir().unwrap();
    let data = replicas.a.dir.parent().unwrap().join("data");
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("redis://{}", unreachable.local_addr().unwrap());
    drop(unreachable);
    let mut cut_off = Runtime::start(dir.path(), &replica_config(&data, &dead_url));
    let (status, _) = alice
        .at(&cut_off)
        .send_text(&channel, "cut-off", "alo")
        .await;
    assert_eq!(status, 201);
    assert_eq!(cut_off.api("acme").delete_user("carol").await, 204);
    cut_off.terminate();

    common::write_config(dir.path(), &replica_config(&data, &replicas.redis.url()));
    let _restarted = Runtime::start(dir.path(), "");
    let seqs = receive_messages(&mut bob_on_b, &channel, 1).await;
    assert_eq!(seqs, [1]);
    let (code, _) = carol_on_b.expect_close().await;
    assert_eq!(code, 4003);
}

/// Redis that accepts connections but rejects PUBLISH must not make the
/// publisher reconnect in a tight loop.
#[tokio::test]
async fn rejected_publish_backs_off() {
    let replicas = start_replicas().await;
    let (alice, _bob, channel) = alice_and_bob(&replicas).await;
    let denied = replicas
        .redis
        .command(&["ACL", "SETUSER", "default", "-publish"]);
    assert_eq!(denied, "+OK");
    let before = replicas.redis.connections_received();
    for index in 0..5 {
        let (status, _) = alice.send_text(&channel, &format!("d-{index}"), "x").await;
        assert_eq!(status, 201);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let made = replicas.redis.connections_received() - before;
    // Backing off from 100 ms doubles to 5 s: a handful of attempts per
    // replica in 3 s, where a tight loop made thousands.
    assert!(made < 40, "{made} connections in 3 s");
}

/// An envelope without a valid tag, published by anyone who can reach
/// Redis, reaches no socket.
#[tokio::test]
async fn forged_envelope_is_ignored() {
    let replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;

    let tag = "0".repeat(32);
    let forged = format!(
        "{tag}{{\"v\":1,\"origin\":\"x\",\"kind\":\"event\",\"users\":[\"bob\"]}}\n{{\"type\":\"message\",\"text\":\"forged\"}}"
    );
    let forged_message = format!(
        "{tag}{{\"v\":1,\"origin\":\"x\",\"kind\":\"message\",\"users\":[\"bob\"],\"channel_id\":\"{channel}\",\"seq\":9}}\n{{}}"
    );
    for payload in [&forged, &forged_message] {
        let receivers =
            replicas
                .redis
                .command(&["PUBLISH", "parley-test:db0:tenant:acme", payload]);
        assert_eq!(receivers, ":2");
    }
    // A genuine message sent after the forged ones is the first message
    // Bob's socket sees. Events left over from creating the channel may
    // still arrive first, so those are skipped rather than counted.
    let (status, body) = alice.send_text(&channel, "real", "tin thật").await;
    assert_eq!(status, 201, "{body}");
    loop {
        let frame = bob_on_b.next_json().await;
        assert!(!frame.to_string().contains("forged"), "{frame}");
        if frame["type"] == "message" {
            assert_eq!(frame["message"]["seq"], 1, "{frame}");
            assert_eq!(frame["message"]["content"]["text"], "tin thật", "{frame}");
            break;
        }
    }
    assert_eq!(
        metric(&replicas.b, "parley_relay_rejected_total").await,
        2.0
    );
}

/// A typing indicator shown on B ends even when the typist's replica is
/// killed before it could send the stop: B's socket ends it 2 s after the
/// 6 s the typist's replica would have waited.
#[tokio::test]
async fn typing_ends_when_typists_replica_dies() {
    let mut replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let mut alice_on_a = Ws::connect(&replicas.a, "acme", &alice.token).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;

    alice_on_a
        .send_json(json!({"type": "typing", "channel_id": channel, "state": "start"}))
        .await;
    let start = bob_on_b.next_of("typing").await;
    assert_eq!(start["state"], "start");
    assert_eq!(start["user_id"], "alice");
    replicas.a.kill();
    let killed = std::time::Instant::now();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    let stop = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match bob_on_b.next_frame(left).await {
            Some(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                if frame["type"] == "typing" {
                    break frame;
                }
            }
            other => panic!("no typing stop within 12 s: {other:?}"),
        }
    };
    assert_eq!(stop["state"], "stop");
    assert_eq!(stop["user_id"], "alice");
    assert_eq!(stop["channel_id"], channel);
    assert!(
        killed.elapsed() <= Duration::from_secs(9),
        "{:?}",
        killed.elapsed()
    );
}

fn signal(signal: &str, pid: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Reads frames until `count` messages of `channel` from `peer` arrived,
/// acknowledging each as delivered and then read, and returns every
/// `delivered` and `read` frame about `peer`'s reader seen on the way.
async fn receive_and_acknowledge(
    ws: &mut Ws,
    channel: &str,
    peer: &str,
    count: usize,
) -> Vec<Value> {
    let mut received = 0;
    let mut receipts = Vec::new();
    while received < count {
        let frame: Value = match ws.next_frame(WAIT).await {
            Some(Message::Text(text)) => serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("after {received} messages the socket gave {other:?}"),
        };
        assert_ne!(frame["type"], "error", "{frame}");
        if matches!(frame["type"].as_str(), Some("delivered" | "read")) {
            receipts.push(frame.clone());
        }
        if frame["type"] != "message" || frame["message"]["sender_id"] != peer {
            continue;
        }
        let seq = frame["message"]["seq"].as_u64().unwrap();
        for kind in ["delivered", "read"] {
            ws.send_json(json!({ "type": kind, "channel_id": channel, "seq": seq }))
                .await;
        }
        received += 1;
    }
    receipts
}

/// Each user's `delivered` and `read` positions as a socket saw them must
/// never go back.
fn assert_positions_rise(who: &str, frames: &[Value]) {
    let mut last = std::collections::HashMap::new();
    for frame in frames {
        let key = (
            frame["user_id"].as_str().unwrap().to_owned(),
            frame["type"].as_str().unwrap().to_owned(),
        );
        let seq = frame["seq"].as_u64().unwrap();
        let previous = last.insert(key.clone(), seq).unwrap_or(0);
        assert!(
            seq > previous,
            "{who} saw {key:?} go from {previous} to {seq}"
        );
    }
}

#[tokio::test]
async fn receipts_hold_under_concurrent_traffic() {
    let replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let mut alice_on_a = Ws::connect(&replicas.a, "acme", &alice.token).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;
    const EACH: usize = 40;

    // Both send as fast as they can while acknowledging each other's
    // messages on their sockets, through different replicas.
    let send_all = |user: User, prefix: &'static str| {
        let channel = channel.clone();
        async move {
            for index in 0..EACH {
                let client_id = format!("{prefix}-{index}");
                let (status, body) = user.send_text(&channel, &client_id, "nhanh").await;
                assert_eq!(status, 201, "{client_id}: {body}");
            }
        }
    };
    let bob_at_b = bob.at(&replicas.b);
    let (_, _, alice_saw, bob_saw) = tokio::join!(
        send_all(alice.clone(), "a"),
        send_all(bob_at_b.clone(), "b"),
        receive_and_acknowledge(&mut alice_on_a, &channel, "bob", EACH),
        receive_and_acknowledge(&mut bob_on_b, &channel, "alice", EACH),
    );
    assert_positions_rise("Alice", &alice_saw);
    assert_positions_rise("Bob", &bob_saw);

    // Once the last acknowledgements are stored, every message reports
    // delivery and reading by its one recipient, whichever replica serves the request.
    let total = 2 * EACH as u64;
    poll_until("the last acknowledgements are stored", || async {
        let (_, body) = alice
            .get(&format!("/v1/channels/{channel}/messages/{total}/receipts"))
            .await;
        body["read"] == true
    })
    .await;
    for seq in 1..=total {
        let (status, receipts) = bob_at_b
            .get(&format!("/v1/channels/{channel}/messages/{seq}/receipts"))
            .await;
        assert_eq!(status, 200, "{receipts}");
        let recipient = if receipts["sender_id"] == "alice" {
            "bob"
        } else {
            "alice"
        };
        assert_eq!(
            receipts["delivered_to"],
            json!([recipient]),
            "{seq}: {receipts}"
        );
        assert_eq!(receipts["read_by"], json!([recipient]), "{seq}: {receipts}");
    }
    for user in [&alice, &bob_at_b] {
        let (_, list) = user.get("/v1/channels").await;
        assert_eq!(list["channels"][0]["unread"], 0, "{list}");
    }
}

#[tokio::test]
async fn edits_deletes_and_reactions_cross_replicas() {
    let replicas = start_replicas().await;
    let (alice, bob, channel) = alice_and_bob(&replicas).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;
    let (status, body) = alice.send_text(&channel, "a1", "giá 5 triệu").await;
    assert_eq!(status, 201, "{body}");
    bob_on_b.next_of("message").await;

    let path = format!("/v1/channels/{channel}/messages/1");
    let (status, body) = alice
        .patch(
            &path,
            json!({ "content": { "kind": "text", "text": "giá 4 triệu" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let edited = bob_on_b.next_of("message_edited").await;
    assert_eq!(edited["message"]["content"]["text"], "giá 4 triệu");

    let (status, _) = alice.put(&format!("{path}/reactions/%F0%9F%91%8D")).await;
    assert_eq!(status, 200);
    let reaction = bob_on_b.next_of("reaction").await;
    assert_eq!(
        (reaction["user_id"].as_str(), reaction["count"].as_u64()),
        (Some("alice"), Some(1))
    );

    let (status, _) = alice.delete(&path).await;
    assert_eq!(status, 200);
    let deleted = bob_on_b.next_of("message_deleted").await;
    assert!(deleted["message"]["content"].is_null(), "{deleted}");
    let (_, list) = bob.at(&replicas.b).get("/v1/channels").await;
    assert_eq!(list["channels"][0]["unread"], 0, "{list}");
    assert!(list["channels"][0]["last_message"].is_null(), "{list}");
}

/// Returns the next presence frame of `ws`, skipping frames of other types.
async fn next_presence(ws: &mut Ws) -> Value {
    loop {
        let frame: Value = match ws.next_frame(WAIT).await {
            Some(Message::Text(text)) => serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("no presence frame within {WAIT:?}: {other:?}"),
        };
        if frame["type"] == "presence" {
            return frame;
        }
    }
}

#[tokio::test]
async fn block_ends_presence_on_every_replica() {
    let replicas = start_replicas().await;
    let (alice, bob, _) = alice_and_bob(&replicas).await;
    let (carol, group) = group_with_carol(&replicas, &alice).await;
    let mut bob_on_b = Ws::connect(&replicas.b, "acme", &bob.token).await;
    bob_on_b
        .send_json(json!({"type": "presence_subscribe", "channel_id": group}))
        .await;
    let mut initial = Vec::new();
    for _ in 0..2 {
        let frame = next_presence(&mut bob_on_b).await;
        initial.push(frame["user_id"].as_str().unwrap().to_owned());
    }
    initial.sort();
    assert_eq!(initial, ["alice", "carol"]);

    // Bob blocks Alice through replica A. A relays the block before Alice's
    // and Carol's sockets open there, so Bob's next frame is Carol's.
    let (status, body) = bob.put("/v1/me/blocks/alice").await;
    assert_eq!(status, 204, "{body}");
    let _alice_on_a = Ws::connect(&replicas.a, "acme", &alice.token).await;
    let _carol_on_a = Ws::connect(&replicas.a, "acme", &carol.token).await;
    let presence = next_presence(&mut bob_on_b).await;
    assert_eq!(presence["user_id"], "carol", "{presence}");
    assert_eq!(presence["online"], true, "{presence}");
}
