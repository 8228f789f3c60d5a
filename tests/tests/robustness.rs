//! Abuse a client can attempt on its own: aborted upgrades, huge groups,
//! absurd token lifetimes, heavily escaped frames and half-applied reloads.

mod common;

use std::io::Write;

use futures_util::SinkExt;
use std::net::TcpStream;
use std::time::Duration;

use common::{
    ACME_KEY, ACME_SECRET, Runtime, Ws, config_yaml, config_yaml_with_server, poll_until,
    sign_token, write_config,
};
use serde_json::{Value, json};

/// Sends a WebSocket upgrade request and resets the connection at once,
/// before the server can respond with 101.
fn abort_upgrade(runtime: &Runtime, token: &str) {
    let mut stream = TcpStream::connect(runtime.address).unwrap();
    let request = format!(
        "GET /v1/ws?tenant=acme HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n",
        runtime.address
    );
    stream.write_all(request.as_bytes()).unwrap();
    // A zero linger turns close into a TCP reset.
    socket_linger_zero(&stream);
    drop(stream);
}

fn socket_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        onoff: i32,
        linger: i32,
    }
    let linger = Linger {
        onoff: 1,
        linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<Linger>()` bytes from a valid
    // pointer to a live struct laid out as C's `struct linger`.
    let result = unsafe {
        libc_setsockopt(
            stream.as_raw_fd(),
            1,  // SOL_SOCKET
            13, // SO_LINGER
            &linger as *const Linger as *const std::ffi::c_void,
            std::mem::size_of::<Linger>() as u32,
        )
    };
    assert_eq!(result, 0, "setsockopt(SO_LINGER) failed");
}

unsafe extern "C" {
    #[link_name = "setsockopt"]
    fn libc_setsockopt(
        socket: i32,
        level: i32,
        name: i32,
        value: *const std::ffi::c_void,
        length: u32,
    ) -> i32;
}

#[tokio::test]
async fn aborted_upgrades_release_socket_slots() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(
        dir.path(),
        &config_yaml("    limits:\n      max_sockets_per_user: 1\n"),
    );
    let alice = runtime.api("acme").user("alice").await;

    for _ in 0..5 {
        abort_upgrade(&runtime, &alice.token);
    }

    // Each aborted upgrade may finish on the server a little later, so the
    // check polls until a socket can be opened again.
    poll_until("a socket can be opened after aborted upgrades", || {
        let runtime = &runtime;
        let token = alice.token.clone();
        async move {
            Ws::try_connect(runtime, "acme", &token, common::TokenIn::Header, None)
                .await
                .is_ok()
        }
    })
    .await;
}

#[tokio::test]
async fn group_creation_sends_one_frame_per_member() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(common::NO_RATE_LIMIT));
    let acme = runtime.api("acme");
    let mallory = acme.user("mallory").await;
    let bob = acme.user("bob").await;
    let mut members = vec![String::from("bob")];
    for index in 0..299 {
        let id = format!("u{index}");
        acme.upsert_user(&id, &id).await;
        members.push(id);
    }
    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;

    let (status, body) = mallory
        .post(
            "/v1/channels/group",
            json!({ "name": "spam", "members": members }),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let frames = bob_ws.frames_until_quiet(Duration::from_millis(500)).await;
    let added: Vec<&Value> = frames
        .iter()
        .filter(|frame| frame["type"] == "member_added")
        .collect();
    assert_eq!(added.len(), 1, "{frames:?}");
    assert_eq!(added[0]["user_id"], "bob");
    assert!(
        frames.iter().all(|frame| frame["type"] != "error"),
        "{frames:?}"
    );

    let channel = body["id"].as_str().unwrap();
    let (status, _) = mallory.send_text(channel, "hello", "xin chào").await;
    assert_eq!(status, 201);
    assert_eq!(bob_ws.next_of("message").await["message"]["seq"], 1);
}

#[tokio::test]
async fn far_future_exp_keeps_socket_and_slot_sound() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(
        dir.path(),
        &config_yaml("    limits:\n      max_sockets_per_user: 1\n"),
    );
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;

    for exp in [u64::MAX, 1u64 << 63] {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": ACME_KEY});
        let claims = json!({"sub": "alice", "aud": "acme", "exp": exp});
        let token = sign_token(&header, &claims, ACME_SECRET.as_bytes());
        let mut socket = Ws::connect(&runtime, "acme", &token).await;
        socket
            .send_text(&channel, &format!("far-{exp}"), "still here")
            .await;
        let ack = socket.next_of("ack").await;
        assert!(ack["seq"].as_u64().unwrap() >= 1, "{ack}");
        socket.close().await;
    }
}

#[tokio::test]
async fn escaped_text_at_the_limit_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    acme.user("bob").await;
    let channel = alice.direct_with("bob", None).await;
    let mut socket = Ws::connect(&runtime, "acme", &alice.token).await;

    // 1024 emoji are 4096 bytes of UTF-8, the default limit, and 12 bytes
    // each once escaped as JSON surrogate pairs.
    let escaped: String = std::iter::repeat_n("\\ud83d\\ude00", 1024).collect();
    let frame = format!(
        r#"{{"type":"send","ref":"e","channel_id":"{channel}","client_id":"e1","content":{{"kind":"text","text":"{escaped}"}}}}"#
    );
    socket
        .socket
        .send(tokio_tungstenite::tungstenite::Message::text(frame))
        .await
        .unwrap();
    let ack = socket.next_of("ack").await;
    assert_eq!(ack["seq"], 1, "{ack}");
}

#[tokio::test]
async fn failed_reload_changes_nothing_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_yaml("");
    let (runtime, logs) = Runtime::start_capturing(dir.path(), &config);
    let globex = runtime.api("globex");
    let gina = globex.user("gina").await;

    // The new tenant's data file path is a directory, so its store fails to
    // open; the same edit removes globex.
    std::fs::create_dir_all(dir.path().join("data/initech.sqlite3")).unwrap();
    let acme_only = config.split("  - id: globex").next().unwrap().to_owned();
    let with_initech = format!(
        "{acme_only}  - id: initech\n    display_name: Initech\n    api_keys:\n      - id: initech-key-1\n        secret: initech-test-secret-0123456789abcdef0123\n"
    );
    write_config(dir.path(), &with_initech);

    // Nothing of the edit applies: globex keeps serving.
    logs.wait_for("Configuration change failed to apply").await;
    let (status, body) = gina.get("/v1/channels").await;
    assert_eq!(
        status, 200,
        "globex must keep serving after a failed reload: {body}"
    );

    // Once the directory is gone, the same text applies on a later check.
    std::fs::remove_dir(dir.path().join("data/initech.sqlite3")).unwrap();
    let base = runtime.base_url();
    poll_until("initech is served and globex removed", || {
        let base = base.clone();
        async move {
            let client = reqwest::Client::new();
            let initech = client
                .get(format!("{base}/v1/server/users/nobody"))
                .header("x-parley-tenant", "initech")
                .basic_auth(
                    "initech-key-1",
                    Some("initech-test-secret-0123456789abcdef0123"),
                )
                .send()
                .await
                .unwrap()
                .status();
            let globex = client
                .get(format!("{base}/v1/channels"))
                .header("x-parley-tenant", "globex")
                .send()
                .await
                .unwrap()
                .status();
            initech == 404 && globex == 404
        }
    })
    .await;
}

#[tokio::test]
async fn metrics_listener_is_separate() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_yaml_with_server("  metrics_listen: 127.0.0.1:0\n", "");
    let (runtime, logs) = Runtime::start_capturing(dir.path(), &config);

    let response = reqwest::get(format!("{}/metrics", runtime.base_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let line = logs.wait_for("Serving metrics").await;
    let parsed: Value = serde_json::from_str(&line).unwrap();
    let address = parsed["address"].as_str().unwrap();
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("parley_websocket_connections"), "{text}");
}
