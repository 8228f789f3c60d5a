//! Message delivery: retries, resume, several devices, paging under writes,
//! group membership, read positions, typing, direct channels and deleted
//! senders.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{NO_RATE_LIMIT, Runtime, User, Ws, config_yaml, config_yaml_with_server, seqs_of};
use serde_json::{Value, json};

/// How long a socket must stay quiet for a test to conclude that nothing
/// more is coming.
const QUIET: Duration = Duration::from_millis(400);

fn frames_of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames
        .iter()
        .filter(|frame| frame["type"] == kind)
        .collect()
}

fn message_seqs(frames: &[Value]) -> Vec<u64> {
    frames_of_type(frames, "message")
        .iter()
        .map(|frame| frame["message"]["seq"].as_u64().unwrap())
        .collect()
}

/// Sends `count` text messages from `user` over REST with client ids
/// `{prefix}-{index}` and returns the assigned sequence numbers.
async fn send_many(user: &User, channel: &str, prefix: &str, count: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(count);
    for index in 0..count {
        let client_id = format!("{prefix}-{index}");
        let (status, body) = user
            .send_text(channel, &client_id, &format!("{prefix} message {index}"))
            .await;
        assert_eq!(status, 201, "send {client_id}: {body}");
        seqs.push(body["message"]["seq"].as_u64().unwrap());
    }
    seqs
}

/// Sends `count` messages from `user` over REST from `tasks` concurrent
/// tasks, with client ids `{prefix}-{index}`, and returns their seqs sorted.
async fn send_concurrently(
    user: &User,
    channel: &str,
    prefix: &str,
    tasks: usize,
    count: usize,
) -> Vec<u64> {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let user = user.clone();
        let channel = channel.to_owned();
        let prefix = prefix.to_owned();
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for index in (task..count).step_by(tasks) {
                let client_id = format!("{prefix}-{index}");
                let (status, body) = user.send_text(&channel, &client_id, &client_id).await;
                assert_eq!(status, 201, "send {client_id}: {body}");
                seqs.push(body["message"]["seq"].as_u64().unwrap());
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for handle in handles {
        seqs.extend(handle.await.unwrap());
    }
    seqs.sort_unstable();
    seqs
}

/// Reads `message` frames until one has sequence number `last`, and returns
/// every frame read on the way (of any type).
async fn frames_through_seq(ws: &mut Ws, channel: &str, last: u64) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = ws.next_json().await;
        let done = frame["type"] == "message"
            && frame["message"]["channel_id"] == channel
            && frame["message"]["seq"] == last;
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// Reads until the message with seq `last` of `channel` arrives, then until
/// the socket is quiet, and returns the seqs of every `message` frame read.
async fn message_seqs_through(ws: &mut Ws, channel: &str, last: u64) -> Vec<u64> {
    let mut frames = frames_through_seq(ws, channel, last).await;
    frames.extend(ws.frames_until_quiet(QUIET).await);
    message_seqs(&frames)
}

/// Waits until the server clock has passed `millis`, so the next message
/// gets a later `created_at` and the channel list order is unambiguous.
async fn wait_past_millisecond(millis: i64) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        if now > millis {
            return;
        }
        assert!(Instant::now() < deadline, "clock did not pass {millis}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn websocket_retry_is_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let mut alice_ws = Ws::connect(&runtime, "acme", &alice.token).await;
    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;

    alice_ws.send_text(&channel, "c-1", "hello").await;
    let first = alice_ws.next_of("ack").await;
    assert_eq!(first["seq"], 1, "{first}");
    assert_eq!(first["duplicate"], false, "{first}");
    alice_ws.send_text(&channel, "c-1", "hello").await;
    let retry = alice_ws.next_of("ack").await;
    assert_eq!(retry["ref"], "c-1", "{retry}");
    assert_eq!(retry["seq"], 1, "retry must return the stored seq: {retry}");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["created_at"], first["created_at"], "{retry}");

    assert_eq!(
        message_seqs_through(&mut bob_ws, &channel, 1).await,
        [1],
        "bob must get the message once"
    );

    alice_ws.send_text(&channel, "c-1", "different text").await;
    let conflict = alice_ws.next_of("error").await;
    assert_eq!(conflict["code"], "client_id_conflict", "{conflict}");
    assert_eq!(conflict["ref"], "c-1", "{conflict}");
    let bob_frames = bob_ws.frames_until_quiet(QUIET).await;
    assert!(
        message_seqs(&bob_frames).is_empty(),
        "a conflicting retry must deliver nothing: {bob_frames:?}"
    );

    let history = bob.all_messages(&channel).await;
    assert_eq!(seqs_of(&history), [1]);
    assert_eq!(history[0]["client_id"], "c-1");
    assert_eq!(history[0]["content"]["text"], "hello");
}

#[tokio::test]
async fn rest_retry_is_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let other_channel = alice.direct_with("bob", Some("other")).await;

    let (status, first) = alice.send_text(&channel, "c-1", "hello").await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["duplicate"], false, "{first}");
    assert_eq!(first["message"]["seq"], 1, "{first}");

    let (status, retry) = alice.send_text(&channel, "c-1", "hello").await;
    assert_eq!(status, 200, "a duplicate is not created again: {retry}");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["message"], first["message"], "{retry}");

    let (status, conflict) = alice.send_text(&channel, "c-1", "changed").await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(
        conflict["error"]["code"], "client_id_conflict",
        "{conflict}"
    );
    let (status, conflict) = alice.send_text(&other_channel, "c-1", "hello").await;
    assert_eq!(status, 409, "same client id in another channel: {conflict}");
    assert_eq!(
        conflict["error"]["code"], "client_id_conflict",
        "{conflict}"
    );

    // The id is shared between transports: a WebSocket retry of a REST send
    // is a duplicate too.
    let mut alice_ws = Ws::connect(&runtime, "acme", &alice.token).await;
    alice_ws.send_text(&channel, "c-1", "hello").await;
    let ack = alice_ws.next_of("ack").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    assert_eq!(ack["duplicate"], true, "{ack}");

    let history = alice.all_messages(&channel).await;
    assert_eq!(seqs_of(&history), [1]);
    assert!(alice.all_messages(&other_channel).await.is_empty());
}

#[tokio::test]
async fn dedupe_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut runtime = Runtime::start(dir.path(), &config_yaml(""));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;

    let (status, before_term) = alice.send_text(&channel, "c-term", "one").await;
    assert_eq!(status, 201, "{before_term}");
    let status = runtime.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let mut runtime = Runtime::start(dir.path(), "");
    let alice = alice.at(&runtime);
    let (status, retry) = alice.send_text(&channel, "c-term", "one").await;
    assert_eq!(status, 200, "retry after SIGTERM: {retry}");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["message"]["seq"], before_term["message"]["seq"]);

    let (status, before_kill) = alice.send_text(&channel, "c-kill", "two").await;
    assert_eq!(status, 201, "{before_kill}");
    assert_eq!(before_kill["message"]["seq"], 2, "{before_kill}");
    runtime.kill();
    let runtime = Runtime::start(dir.path(), "");
    let alice = alice.at(&runtime);
    let (status, retry) = alice.send_text(&channel, "c-kill", "two").await;
    assert_eq!(status, 200, "retry after SIGKILL: {retry}");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["message"]["seq"], 2, "{retry}");
    let (status, conflict) = alice.send_text(&channel, "c-kill", "changed").await;
    assert_eq!(status, 409, "{conflict}");

    assert_eq!(seqs_of(&alice.all_messages(&channel).await), [1, 2]);
}

#[tokio::test]
async fn resume_replays_missed_messages() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;

    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;
    send_many(&alice, &channel, "live", 3).await;
    let seen = frames_through_seq(&mut bob_ws, &channel, 3).await;
    assert_eq!(message_seqs(&seen), [1, 2, 3]);
    bob_ws.close().await;

    let missed = send_many(&alice, &channel, "missed", 10).await;
    assert_eq!(missed, (4..=13).collect::<Vec<u64>>());

    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;
    bob_ws
        .send_json(json!({"type": "resume", "ref": "r1", "positions": {&channel: 3}}))
        .await;
    let mut replayed = Vec::new();
    let resumed = loop {
        let frame = bob_ws.next_json().await;
        match frame["type"].as_str() {
            Some("message") => replayed.push(frame),
            Some("resumed") => break frame,
            _ => panic!("unexpected frame during replay: {frame}"),
        }
    };
    assert_eq!(message_seqs(&replayed), missed);
    assert_eq!(
        replayed[0]["message"]["content"]["text"],
        "missed message 0"
    );
    assert_eq!(resumed["ref"], "r1", "{resumed}");
    assert_eq!(resumed["channel_id"], channel.as_str(), "{resumed}");
    assert_eq!(resumed["seq"], 13, "{resumed}");
    let after = bob_ws.frames_until_quiet(QUIET).await;
    assert!(after.is_empty(), "nothing after resumed: {after:?}");

    send_many(&alice, &channel, "next", 1).await;
    let live = bob_ws.next_of("message").await;
    assert_eq!(live["message"]["seq"], 14, "{live}");
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_during_sends_has_no_gaps() {
    // A long replay (below the default max_replay of 1000) gives the
    // concurrent sends time to land while it is being written.
    const MISSED: usize = 800;
    const CONCURRENT: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;

    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;
    send_many(&alice, &channel, "live", 3).await;
    frames_through_seq(&mut bob_ws, &channel, 3).await;
    bob_ws.close().await;
    send_concurrently(&alice, &channel, "missed", 4, MISSED).await;

    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;
    bob_ws
        .send_json(json!({"type": "resume", "ref": "r1", "positions": {&channel: 3}}))
        .await;
    let sender = {
        let alice = alice.clone();
        let channel = channel.clone();
        tokio::spawn(
            async move { send_concurrently(&alice, &channel, "during", 4, CONCURRENT).await },
        )
    };

    let last = (3 + MISSED + CONCURRENT) as u64;
    let frames = frames_through_seq(&mut bob_ws, &channel, last).await;
    let sent_during = sender.await.unwrap();
    assert_eq!(sent_during.last(), Some(&last));

    let resync = frames_of_type(&frames, "resync_required");
    assert!(resync.is_empty(), "no resync within max_replay: {resync:?}");
    let seqs = message_seqs(&frames);
    assert_eq!(
        seqs,
        (4..=last).collect::<Vec<u64>>(),
        "every seq after the resume point once, in order"
    );
    let resumed_at = frames
        .iter()
        .position(|frame| frame["type"] == "resumed")
        .expect("a resumed frame");
    let resumed_seq = frames[resumed_at]["seq"].as_u64().unwrap();
    let replayed = message_seqs(&frames[..resumed_at]);
    assert_eq!(
        replayed.last(),
        Some(&resumed_seq),
        "resumed must follow the message it names"
    );
    let extra = bob_ws.frames_until_quiet(QUIET).await;
    assert!(message_seqs(&extra).is_empty(), "{extra:?}");
}

#[tokio::test]
async fn resume_past_max_replay_resyncs() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_yaml_with_server("  max_replay: 5\n", NO_RATE_LIMIT);
    let runtime = Runtime::start(dir.path(), &config);
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;

    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;
    send_many(&alice, &channel, "live", 2).await;
    frames_through_seq(&mut bob_ws, &channel, 2).await;
    bob_ws.close().await;
    send_many(&alice, &channel, "missed", 8).await;

    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;
    bob_ws
        .send_json(json!({"type": "resume", "ref": "r1", "positions": {&channel: 2}}))
        .await;
    let resync = bob_ws.next_json().await;
    assert_eq!(resync["type"], "resync_required", "{resync}");
    assert_eq!(resync["channel_id"], channel.as_str(), "{resync}");
    assert_eq!(resync["after"], 2, "{resync}");
    assert_eq!(resync["latest_seq"], 10, "{resync}");
    let resumed = bob_ws.next_json().await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["seq"], 10, "{resumed}");

    // The client pages what it missed; live delivery goes on after it.
    let (status, page) = bob
        .get(&format!(
            "/v1/channels/{channel}/messages?after=2&limit=200"
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    let paged: Vec<Value> = page["messages"].as_array().unwrap().clone();
    assert_eq!(seqs_of(&paged), (3..=10).collect::<Vec<u64>>());
    send_many(&alice, &channel, "after", 2).await;
    let frames = frames_through_seq(&mut bob_ws, &channel, 12).await;
    assert_eq!(message_seqs(&frames), [11, 12]);
}

#[tokio::test]
async fn each_device_gets_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let mut alice_phone = Ws::connect(&runtime, "acme", &alice.token).await;
    let mut alice_laptop = Ws::connect(&runtime, "acme", &alice.token).await;
    let mut bob_phone = Ws::connect(&runtime, "acme", &bob.token).await;
    let mut bob_laptop = Ws::connect(&runtime, "acme", &bob.token).await;

    // The sending phone gets acks and message frames interleaved, so every
    // frame read while waiting for an ack is kept.
    let mut phone_frames = Vec::new();
    for index in 0..5 {
        let client_id = format!("m-{index}");
        alice_phone.send_text(&channel, &client_id, "hi").await;
        let ack = loop {
            let frame = alice_phone.next_json().await;
            if frame["type"] == "ack" {
                break frame;
            }
            phone_frames.push(frame);
        };
        assert_eq!(ack["seq"], index + 1, "{ack}");
    }
    if !message_seqs(&phone_frames).contains(&5) {
        phone_frames.extend(frames_through_seq(&mut alice_phone, &channel, 5).await);
    }
    phone_frames.extend(alice_phone.frames_until_quiet(QUIET).await);

    let expected: Vec<u64> = (1..=5).collect();
    assert_eq!(
        message_seqs(&phone_frames),
        expected,
        "alice's phone: {phone_frames:?}"
    );
    for (name, ws) in [
        ("alice's laptop", &mut alice_laptop),
        ("bob's phone", &mut bob_phone),
        ("bob's laptop", &mut bob_laptop),
    ] {
        let seqs = message_seqs_through(ws, &channel, 5).await;
        assert_eq!(seqs, expected, "{name}");
    }
}

#[tokio::test]
async fn paging_during_writes_is_contiguous() {
    const TOTAL: u64 = 300;
    const PAGE: usize = 17;
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let writing = std::sync::atomic::AtomicBool::new(true);

    let writer = async {
        let seqs = send_many(&alice, &channel, "page", TOTAL as usize).await;
        writing.store(false, std::sync::atomic::Ordering::SeqCst);
        seqs
    };

    // Rounds from the newest message back to seq 1 while the writer runs.
    let backward = async {
        let mut rounds = 0;
        loop {
            let still_writing = writing.load(std::sync::atomic::Ordering::SeqCst);
            let (status, body) = bob
                .get(&format!("/v1/channels/{channel}/messages?limit={PAGE}"))
                .await;
            assert_eq!(status, 200, "{body}");
            let mut read = seqs_of(body["messages"].as_array().unwrap());
            if let Some(&top) = read.last() {
                assert_eq!(
                    read,
                    (read[0]..=top).collect::<Vec<u64>>(),
                    "latest page is not contiguous"
                );
                let mut before = read[0];
                while before > 1 {
                    let (status, body) = bob
                        .get(&format!(
                            "/v1/channels/{channel}/messages?before={before}&limit={PAGE}"
                        ))
                        .await;
                    assert_eq!(status, 200, "{body}");
                    let page = seqs_of(body["messages"].as_array().unwrap());
                    let oldest = before.saturating_sub(PAGE as u64).max(1);
                    assert_eq!(
                        page,
                        (oldest..before).collect::<Vec<u64>>(),
                        "page before {before}"
                    );
                    before = oldest;
                    read.splice(0..0, page);
                }
                assert_eq!(
                    read,
                    (1..=top).collect::<Vec<u64>>(),
                    "backward round from {top}"
                );
                rounds += 1;
            }
            if !still_writing {
                return rounds;
            }
        }
    };

    let forward = async {
        let mut read: Vec<u64> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while read.len() < TOTAL as usize {
            let after = read.last().copied().unwrap_or(0);
            let (status, body) = bob
                .get(&format!(
                    "/v1/channels/{channel}/messages?after={after}&limit={PAGE}"
                ))
                .await;
            assert_eq!(status, 200, "{body}");
            let page = seqs_of(body["messages"].as_array().unwrap());
            if page.is_empty() {
                assert!(Instant::now() < deadline, "no message after {after}");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            assert!(page.len() <= PAGE, "page longer than the limit: {page:?}");
            assert_eq!(
                page,
                (after + 1..=after + page.len() as u64).collect::<Vec<u64>>(),
                "page after {after}"
            );
            read.extend(page);
        }
        read
    };

    let (written, rounds, forward_read) = tokio::join!(writer, backward, forward);
    assert_eq!(written, (1..=TOTAL).collect::<Vec<u64>>());
    assert!(rounds > 0, "the backward reader never saw a message");
    assert_eq!(forward_read, (1..=TOTAL).collect::<Vec<u64>>());
    let unique: HashSet<u64> = forward_read.iter().copied().collect();
    assert_eq!(unique.len(), TOTAL as usize);
    assert_eq!(
        seqs_of(&bob.all_messages(&channel).await),
        (1..=TOTAL).collect::<Vec<u64>>()
    );
}

#[tokio::test]
async fn group_membership_controls_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let carol = acme.user("carol").await;
    let dave = acme.user("dave").await;

    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;
    let mut carol_ws = Ws::connect(&runtime, "acme", &carol.token).await;
    let mut dave_ws = Ws::connect(&runtime, "acme", &dave.token).await;

    let (status, group) = alice
        .post(
            "/v1/channels/group",
            json!({"name": "team", "members": ["bob"]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let group = group["id"].as_str().unwrap().to_owned();
    let added = bob_ws.next_of("member_added").await;
    assert_eq!(added["channel_id"], group.as_str(), "{added}");
    send_many(&alice, &group, "before-carol", 2).await;
    assert_eq!(message_seqs_through(&mut bob_ws, &group, 2).await, [1, 2]);

    let (status, body) = bob
        .post(
            &format!("/v1/channels/{group}/members"),
            json!({"user_id": "carol"}),
        )
        .await;
    assert_eq!(status, 403, "only the owner adds: {body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let (status, body) = alice
        .post(
            &format!("/v1/channels/{group}/members"),
            json!({"user_id": "carol"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let added = carol_ws.next_json().await;
    assert_eq!(added["type"], "member_added", "{added}");
    assert_eq!(added["channel_id"], group.as_str(), "{added}");
    assert_eq!(added["user_id"], "carol", "{added}");
    let bob_added = bob_ws.next_of("member_added").await;
    assert_eq!(bob_added["user_id"], "carol", "{bob_added}");

    send_many(&alice, &group, "with-carol", 1).await;
    let live = carol_ws.next_json().await;
    assert_eq!(live["type"], "message", "{live}");
    assert_eq!(live["message"]["seq"], 3, "{live}");

    let (status, body) = bob
        .delete(&format!("/v1/channels/{group}/members/carol"))
        .await;
    assert_eq!(status, 403, "a member cannot remove others: {body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let (status, body) = alice
        .delete(&format!("/v1/channels/{group}/members/carol"))
        .await;
    assert_eq!(status, 204, "{body}");
    let removed = carol_ws.next_json().await;
    assert_eq!(removed["type"], "member_removed", "{removed}");
    assert_eq!(removed["channel_id"], group.as_str(), "{removed}");
    assert_eq!(removed["user_id"], "carol", "{removed}");

    send_many(&alice, &group, "after-carol", 4).await;
    carol_ws.expect_silence(QUIET).await;
    assert_eq!(
        message_seqs_through(&mut bob_ws, &group, 7).await,
        [3, 4, 5, 6, 7]
    );
    let (status, body) = carol.get(&format!("/v1/channels/{group}/messages")).await;
    assert_eq!(status, 404, "a removed member reads no history: {body}");
    let (status, body) = carol.send_text(&group, "late", "still here?").await;
    assert_eq!(status, 404, "a removed member cannot send: {body}");

    let (status, body) = bob
        .delete(&format!("/v1/channels/{group}/members/bob"))
        .await;
    assert_eq!(status, 204, "a member may leave: {body}");
    let left = bob_ws.next_of("member_removed").await;
    assert_eq!(left["user_id"], "bob", "{left}");
    let (status, body) = bob.get(&format!("/v1/channels/{group}/messages")).await;
    assert_eq!(status, 404, "{body}");

    dave_ws.expect_silence(QUIET).await;
    carol_ws.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn channel_list_tracks_activity_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let first = alice.direct_with("bob", Some("first")).await;
    let second = alice.direct_with("bob", Some("second")).await;
    let (status, group) = alice
        .post(
            "/v1/channels/group",
            json!({"name": "team", "members": ["bob"]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let group = group["id"].as_str().unwrap().to_owned();

    let mut last_created = 0;
    for (channel, client_id) in [
        (&first, "f-1"),
        (&second, "s-1"),
        (&group, "g-1"),
        (&first, "f-2"),
    ] {
        wait_past_millisecond(last_created).await;
        let (status, body) = alice.send_text(channel, client_id, client_id).await;
        assert_eq!(status, 201, "{body}");
        last_created = body["message"]["created_at"].as_i64().unwrap();
    }

    let (status, list) = bob.get("/v1/channels").await;
    assert_eq!(status, 200, "{list}");
    let entries = list["channels"].as_array().unwrap();
    let ids: Vec<&str> = entries
        .iter()
        .map(|entry| entry["channel"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&first, &group, &second], "most recent activity first");
    assert_eq!(entries[0]["last_message"]["seq"], 2);
    assert_eq!(entries[0]["last_message"]["content"]["text"], "f-2");
    assert_eq!(entries[0]["unread"], 2);
    assert_eq!(entries[1]["last_message"]["content"]["text"], "g-1");
    assert_eq!(entries[1]["unread"], 1);
    assert_eq!(entries[2]["unread"], 1);
    let (_, alice_list) = alice.get("/v1/channels").await;
    for entry in alice_list["channels"].as_array().unwrap() {
        assert_eq!(entry["unread"], 0, "a sender's own messages are read");
    }

    let (status, page) = bob.get("/v1/channels?limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["channels"].as_array().unwrap().len(), 2);
    let cursor = page["next"].as_str().expect("a next cursor").to_owned();
    let (status, rest) = bob
        .get(&format!("/v1/channels?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(status, 200, "{rest}");
    let rest = rest["channels"].as_array().unwrap();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["channel"]["id"], second.as_str());

    let (status, body) = bob
        .post(&format!("/v1/channels/{first}/read"), json!({"seq": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["read_seq"], 1);
    let unread = unread_of(&bob, &first).await;
    assert_eq!(unread, 1);

    let mut alice_ws = Ws::connect(&runtime, "acme", &alice.token).await;
    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;
    bob_ws
        .send_json(json!({"type": "read", "ref": "read-1", "channel_id": &first, "seq": 2}))
        .await;
    let read = alice_ws.next_of("read").await;
    assert_eq!(read["channel_id"], first.as_str(), "{read}");
    assert_eq!(read["user_id"], "bob", "{read}");
    assert_eq!(read["seq"], 2, "{read}");
    assert_eq!(unread_of(&bob, &first).await, 0);

    let (status, body) = bob
        .post(&format!("/v1/channels/{first}/read"), json!({"seq": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["read_seq"], 2, "the read position never moves back");

    let (status, body) = bob
        .post(&format!("/v1/channels/{second}/read"), json!({"seq": 100}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["read_seq"], 1, "the read position stops at last_seq");
    let (status, body) = alice.send_text(&second, "s-2", "s-2").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        unread_of(&bob, &second).await,
        1,
        "a new message after a capped read counts as unread"
    );
}

async fn unread_of(user: &User, channel: &str) -> u64 {
    let (status, list) = user.get("/v1/channels?limit=200").await;
    assert_eq!(status, 200, "{list}");
    let entry = list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["channel"]["id"] == channel)
        .unwrap_or_else(|| panic!("{channel} missing from {list}"))
        .clone();
    entry["unread"].as_u64().unwrap()
}

/// Reads `ws` until the stream ends, so the client replies to the server's
/// pings, and then fails the test, because the caller needs the socket open.
async fn keep_reading(ws: &mut Ws, name: &str) {
    while ws.next_frame(Duration::from_secs(60)).await.is_some() {}
    panic!("{name}'s socket closed");
}

#[tokio::test]
async fn typing_reaches_members_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let carol = acme.user("carol").await;
    let channel = alice.direct_with("bob", None).await;
    let mut alice_ws = Ws::connect(&runtime, "acme", &alice.token).await;
    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;
    let mut carol_ws = Ws::connect(&runtime, "acme", &carol.token).await;

    let typing = json!({"type": "typing", "channel_id": &channel, "state": "start"});
    alice_ws.send_json(typing.clone()).await;
    let started_at = Instant::now();
    let start = bob_ws.next_of("typing").await;
    assert_eq!(start["channel_id"], channel.as_str(), "{start}");
    assert_eq!(start["user_id"], "alice", "{start}");
    assert_eq!(start["state"], "start", "{start}");
    carol_ws.expect_silence(QUIET).await;
    drop(carol_ws);

    // Alice's client keeps replying to pings, so her socket stays open and
    // only the typing expiry can end her indicator.
    let stop = tokio::select! {
        stop = bob_ws.next_of("typing") => stop,
        _ = keep_reading(&mut alice_ws, "alice") => unreachable!(),
    };
    let elapsed = started_at.elapsed();
    assert_eq!(stop["state"], "stop", "{stop}");
    assert_eq!(stop["user_id"], "alice", "{stop}");
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed <= Duration::from_secs(9),
        "typing stop came {elapsed:?} after start, expected 6 to 8 s"
    );

    alice_ws.send_json(typing).await;
    let start = bob_ws.next_of("typing").await;
    assert_eq!(start["state"], "start", "{start}");
    let closed_at = Instant::now();
    alice_ws.close().await;
    let stop = bob_ws.next_of("typing").await;
    assert_eq!(stop["state"], "stop", "{stop}");
    assert!(
        closed_at.elapsed() < Duration::from_secs(2),
        "typing stop came {:?} after the socket closed",
        closed_at.elapsed()
    );
}

#[tokio::test]
async fn typing_floods_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let mut alice_ws = Ws::connect(&runtime, "acme", &alice.token).await;
    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;

    // Repeated starts pass on once, and alternating starts and stops pass
    // on only as far as the socket's budget allows.
    let started_at = Instant::now();
    for _ in 0..50 {
        alice_ws
            .send_json(json!({"type": "typing", "channel_id": &channel, "state": "start"}))
            .await;
    }
    for _ in 0..1000 {
        for state in ["stop", "start"] {
            alice_ws
                .send_json(json!({"type": "typing", "channel_id": &channel, "state": state}))
                .await;
        }
    }
    alice_ws.send_text(&channel, "after-typing", "xong").await;

    let mut typing_frames = 0;
    loop {
        let frame = bob_ws.next_json().await;
        if frame["type"] == "message" {
            break;
        }
        if frame["type"] == "typing" {
            typing_frames += 1;
        }
    }
    // A burst of 10, then 5 a second.
    let allowed = 10 + (started_at.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(typing_frames >= 1, "no typing frame passed on");
    assert!(
        typing_frames <= allowed,
        "{typing_frames} typing frames passed on, at most {allowed} allowed"
    );
}

#[tokio::test]
async fn direct_channel_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    acme.user("carol").await;

    let listing = alice.direct_with("bob", Some("listing-42")).await;
    assert_eq!(bob.direct_with("alice", Some("listing-42")).await, listing);
    assert_eq!(alice.direct_with("bob", Some("listing-42")).await, listing);
    let plain = alice.direct_with("bob", None).await;
    assert_eq!(bob.direct_with("alice", None).await, plain);
    let order = alice.direct_with("bob", Some("order-7")).await;
    let with_carol = alice.direct_with("carol", Some("listing-42")).await;
    let distinct: HashSet<&String> = [&listing, &plain, &order, &with_carol].into();
    assert_eq!(distinct.len(), 4, "{distinct:?}");

    let (status, body) = alice
        .post("/v1/channels/direct", json!({"user_id": "alice"}))
        .await;
    assert_eq!(status, 400, "direct channel with oneself: {body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
}

#[tokio::test]
async fn deleted_sender_stays_in_history() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    send_many(&alice, &channel, "from-alice", 2).await;
    let (status, body) = bob.send_text(&channel, "reply", "bye").await;
    assert_eq!(status, 201, "{body}");
    let mut alice_ws = Ws::connect(&runtime, "acme", &alice.token).await;
    // NOTE: the server drops the connection right after its close frame
    // without waiting for the client's close. A pong still pending from
    // the first ping then sometimes makes tokio-tungstenite report a reset
    // instead of the close frame, so the client replies to that ping first.
    alice_ws.expect_silence(QUIET).await;

    assert_eq!(acme.delete_user("alice").await, 204);
    let (code, _) = alice_ws.expect_close().await;
    assert_eq!(code, 4003, "a deleted user's socket closes");

    let history = bob.all_messages(&channel).await;
    assert_eq!(seqs_of(&history), [1, 2, 3]);
    for message in &history[..2] {
        assert_eq!(message["sender_id"], "alice", "{message}");
        assert_eq!(message["sender_deleted"], true, "{message}");
    }
    assert_eq!(history[0]["content"]["text"], "from-alice message 0");
    assert_eq!(history[2]["sender_deleted"], false, "{}", history[2]);
    let (status, list) = bob.get("/v1/channels").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list["channels"][0]["last_message"]["sender_deleted"], false,
        "{list}"
    );
    let (status, _) = alice.get(&format!("/v1/channels/{channel}/messages")).await;
    assert_eq!(status, 401, "a deleted user's token stops working");
}
