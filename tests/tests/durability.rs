//! Durability and process lifecycle: SIGKILL under traffic, two processes
//! on one data directory, SIGTERM, and sockets whose client stopped reading.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    NO_RATE_LIMIT, Runtime, User, WAIT, Ws, config_yaml, seqs_of, wait_for_connections,
    websocket_connections,
};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// How long a socket must stay quiet before a test takes it as drained.
const QUIET: Duration = Duration::from_millis(200);

/// A message whose `ack` the client received.
#[derive(Debug, Clone)]
struct Acked {
    channel: String,
    seq: u64,
    client_id: String,
    text: String,
}

/// Sends text messages over `ws`, alternating between `channels`, each
/// after the previous one was acknowledged, until the connection breaks.
/// Returns every acknowledged message. `count` is raised at each ack, so
/// the caller can watch progress.
async fn send_until_disconnected(
    mut ws: Ws,
    sender: String,
    channels: Vec<String>,
    count: Arc<AtomicUsize>,
) -> Vec<Acked> {
    let mut acked = Vec::new();
    for index in 0.. {
        let channel = &channels[index % channels.len()];
        let client_id = format!("{sender}-{index}");
        let text = format!("{sender} says {index}");
        let frame = json!({
            "type": "send", "ref": &client_id, "channel_id": channel, "client_id": &client_id,
            "content": {"kind": "text", "text": &text}
        });
        if ws
            .socket
            .send(Message::text(frame.to_string()))
            .await
            .is_err()
        {
            return acked;
        }
        loop {
            let Some(Message::Text(raw)) = ws.next_frame(WAIT).await else {
                return acked;
            };
            let frame: Value = serde_json::from_str(raw.as_str()).unwrap();
            if frame["type"] == "error" {
                panic!("{sender}: send {client_id} failed: {frame}");
            }
            if frame["type"] == "ack" && frame["ref"] == client_id.as_str() {
                assert_eq!(frame["duplicate"], false, "{frame}");
                acked.push(Acked {
                    channel: channel.clone(),
                    seq: frame["seq"].as_u64().unwrap(),
                    client_id,
                    text,
                });
                count.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread")]
async fn acked_messages_survive_kill() {
    const SENDERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut runtime = Runtime::start(dir.path(), &config_yaml(NO_RATE_LIMIT));
    let acme = runtime.api("acme");
    let mut users = Vec::new();
    for index in 0..SENDERS {
        users.push(acme.user(&format!("user{index}")).await);
    }
    let others: Vec<String> = users[1..].iter().map(|user| user.id.clone()).collect();
    let (status, group) = users[0]
        .post(
            "/v1/channels/group",
            json!({"name": "busy", "members": others}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let group = group["id"].as_str().unwrap().to_owned();

    // Each sender writes to the shared group and to its own direct channel.
    let count = Arc::new(AtomicUsize::new(0));
    let mut members_of: HashMap<String, User> = HashMap::new();
    members_of.insert(group.clone(), users[0].clone());
    let mut tasks = Vec::new();
    for (index, user) in users.iter().enumerate() {
        let peer = &users[(index + 1) % SENDERS];
        let direct = user.direct_with(&peer.id, Some("kill-test")).await;
        members_of.insert(direct.clone(), user.clone());
        let ws = Ws::connect(&runtime, "acme", &user.token).await;
        tasks.push(tokio::spawn(send_until_disconnected(
            ws,
            user.id.clone(),
            vec![group.clone(), direct],
            Arc::clone(&count),
        )));
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    while count.load(Ordering::SeqCst) < 400 {
        assert!(
            Instant::now() < deadline,
            "only {} acks before the deadline",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runtime.kill();
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    assert!(acked.len() >= 400, "{} acks", acked.len());

    let runtime = Runtime::start(dir.path(), "");
    for (channel, member) in &members_of {
        let history = member.at(&runtime).all_messages(channel).await;
        let seqs = seqs_of(&history);
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<u64>>(),
            "seqs of {channel} are not contiguous from 1"
        );
        let by_seq: HashMap<u64, &Value> = history
            .iter()
            .map(|message| (message["seq"].as_u64().unwrap(), message))
            .collect();
        for message in acked.iter().filter(|message| &message.channel == channel) {
            let stored = by_seq
                .get(&message.seq)
                .unwrap_or_else(|| panic!("acked {message:?} is missing after SIGKILL"));
            assert_eq!(
                stored["client_id"],
                message.client_id.as_str(),
                "{message:?}"
            );
            assert_eq!(
                stored["content"]["text"],
                message.text.as_str(),
                "{message:?}"
            );
        }
    }
}

/// Sends `count` messages over REST from `tasks` concurrent tasks and
/// returns the seq of each client id.
async fn send_concurrently(
    user: &User,
    channel: &str,
    tasks: usize,
    count: usize,
) -> HashMap<String, u64> {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let user = user.clone();
        let channel = channel.to_owned();
        handles.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for index in (task..count).step_by(tasks) {
                let client_id = format!("{}-{index}", user.id);
                let (status, body) = user.send_text(&channel, &client_id, &client_id).await;
                assert_eq!(status, 201, "{client_id}: {body}");
                assert_eq!(body["duplicate"], false, "{body}");
                sent.push((client_id, body["message"]["seq"].as_u64().unwrap()));
            }
            sent
        }));
    }
    let mut seqs = HashMap::new();
    for handle in handles {
        seqs.extend(handle.await.unwrap());
    }
    seqs
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_share_one_directory() {
    const EACH: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let config = config_yaml(NO_RATE_LIMIT);
    let first = Runtime::start(dir.path(), &config);
    let second = Runtime::start(dir.path(), &config);
    assert_ne!(first.address, second.address);

    let acme = first.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await.at(&second);
    let channel = alice.direct_with("bob", None).await;
    assert_eq!(
        bob.direct_with("alice", None).await,
        channel,
        "the second process finds the channel the first created"
    );

    let (from_alice, from_bob) = tokio::join!(
        send_concurrently(&alice, &channel, 4, EACH),
        send_concurrently(&bob, &channel, 4, EACH),
    );
    let all_seqs: HashSet<u64> = from_alice
        .values()
        .chain(from_bob.values())
        .copied()
        .collect();
    assert_eq!(
        all_seqs.len(),
        2 * EACH,
        "two sends were given the same seq"
    );

    for reader in [&alice, &bob] {
        let history = reader.all_messages(&channel).await;
        assert_eq!(
            seqs_of(&history),
            (1..=2 * EACH as u64).collect::<Vec<u64>>(),
            "history read through {}",
            reader.base
        );
        for message in &history {
            let client_id = message["client_id"].as_str().unwrap();
            let expected = from_alice.get(client_id).or(from_bob.get(client_id));
            assert_eq!(expected, message["seq"].as_u64().as_ref(), "{message}");
        }
    }

    // A retry through the other process finds the first send.
    let (status, retry) = alice
        .at(&second)
        .send_text(&channel, "alice-7", "alice-7")
        .await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["message"]["seq"], from_alice["alice-7"], "{retry}");
    let (status, retry) = bob.at(&first).send_text(&channel, "bob-0", "bob-0").await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["message"]["seq"], from_bob["bob-0"], "{retry}");
    assert_eq!(alice.all_messages(&channel).await.len(), 2 * EACH);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_sockets_and_keeps_messages() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let mut alice_ws = Ws::connect(&runtime, "acme", &alice.token).await;
    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;

    for index in 1..=5 {
        let client_id = format!("before-term-{index}");
        alice_ws.send_text(&channel, &client_id, &client_id).await;
        let ack = alice_ws.next_of("ack").await;
        assert_eq!(ack["seq"], index, "{ack}");
    }

    // NOTE: the server drops each connection right after its close frame
    // without waiting for the client's close, so a pong still pending at
    // that moment can make the client see a reset instead of the close
    // frame. Both clients reply to the pings they have before SIGTERM.
    alice_ws.frames_until_quiet(QUIET).await;
    loop {
        let frame = bob_ws.next_json().await;
        if frame["type"] == "message" && frame["message"]["seq"] == 5 {
            break;
        }
    }
    bob_ws.frames_until_quiet(QUIET).await;

    // The sockets are read while the process shuts down.
    let closes: Vec<_> = [alice_ws, bob_ws]
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { ws.expect_close().await }))
        .collect();
    let mut runtime = runtime;
    let (runtime, status) = tokio::task::spawn_blocking(move || {
        let status = runtime.terminate();
        (runtime, status)
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    for (name, close) in ["alice", "bob"].into_iter().zip(closes) {
        let (code, frames) = close.await.unwrap();
        assert_eq!(code, 1001, "{name}'s close code");
        let last = frames.last().unwrap_or_else(|| panic!("{name}: no frames"));
        assert_eq!(last["type"], "error", "{name}: {frames:?}");
        assert_eq!(last["code"], "shutting_down", "{name}: {frames:?}");
    }
    drop(runtime);

    let runtime = Runtime::start(dir.path(), "");
    let history = bob.at(&runtime).all_messages(&channel).await;
    assert_eq!(seqs_of(&history), [1, 2, 3, 4, 5]);
    assert_eq!(history[4]["content"]["text"], "before-term-5");
}

/// Reads `ws` until it closes, so the client replies to the server's pings.
async fn read_until_closed(mut ws: Ws) {
    while ws.next_frame(Duration::from_secs(60)).await.is_some() {}
}

#[tokio::test]
async fn half_open_socket_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    // config_yaml sets heartbeat_seconds to 2.
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;

    let healthy = Ws::connect(&runtime, "acme", &alice.token).await;
    let healthy = tokio::spawn(read_until_closed(healthy));
    // The upgrade completes and the ready frame is read. After that the
    // client never polls the stream again, so it never replies to a ping.
    let stalled = Ws::connect(&runtime, "acme", &bob.token).await;
    wait_for_connections(&runtime, "acme", 2, WAIT).await;
    let stalled_at = Instant::now();

    wait_for_connections(&runtime, "acme", 1, Duration::from_secs(15)).await;
    let elapsed = stalled_at.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3),
        "the stalled socket closed after {elapsed:?}, before its first ping was due"
    );
    assert!(
        !healthy.is_finished(),
        "a socket that replies to pings stays open"
    );
    assert_eq!(websocket_connections(&runtime, "acme").await, Some(1));
    healthy.abort();
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_reader_is_closed_under_traffic() {
    // Large messages fill the kernel buffers between the server and a client
    // that stopped reading, so the server's writes to that socket block.
    let limits = "    limits:\n      messages_per_second: 10000\n      message_burst: 100000\n      max_message_bytes: 65536\n      max_message_chars: 65536\n";
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(limits));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;

    let stalled = Ws::connect(&runtime, "acme", &bob.token).await;
    wait_for_connections(&runtime, "acme", 1, WAIT).await;
    // 200 messages of 60 KB are 12 MB. The server's send buffer is at most
    // 4 MiB (net.ipv4.tcp_wmem on this Linux host), and a client that never
    // reads keeps a small receive window, so the buffers fill well before.
    let text = "x".repeat(60_000);
    let mut senders = Vec::new();
    for task in 0..4 {
        let alice = alice.clone();
        let channel = channel.clone();
        let text = text.clone();
        senders.push(tokio::spawn(async move {
            for index in (task..200).step_by(4) {
                let client_id = format!("big-{index}");
                let (status, body) = alice.send_text(&channel, &client_id, &text).await;
                assert_eq!(status, 201, "{client_id}: {body}");
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }

    // The client has not replied to a ping since it connected, so the server
    // must close it within about two heartbeats (4 s) after the flood.
    wait_for_connections(&runtime, "acme", 0, Duration::from_secs(10)).await;
    drop(stalled);
}
