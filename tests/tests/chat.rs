//! Two users chat over WebSocket; others see nothing.

mod common;

use common::{Runtime, Ws, config_yaml};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn two_users_chat_and_others_see_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let acme = runtime.api("acme");
    let alice = acme.user("alice").await;
    let bob = acme.user("bob").await;
    let carol = acme.user("carol").await;
    let mallory = runtime.api("globex").user("mallory").await;

    let channel = alice.direct_with("bob", Some("listing-42")).await;
    let mut alice_ws = Ws::connect(&runtime, "acme", &alice.token).await;
    let mut bob_ws = Ws::connect(&runtime, "acme", &bob.token).await;
    let mut carol_ws = Ws::connect(&runtime, "acme", &carol.token).await;
    let mut mallory_ws = Ws::connect(&runtime, "globex", &mallory.token).await;

    alice_ws
        .send_text(&channel, "m1", "Xin chào! Còn hàng không?")
        .await;
    let ack = alice_ws.next_of("ack").await;
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["duplicate"], false);

    let received = bob_ws.next_of("message").await;
    assert_eq!(received["message"]["seq"], 1);
    assert_eq!(received["message"]["sender_id"], "alice");
    assert_eq!(
        received["message"]["content"]["text"],
        "Xin chào! Còn hàng không?"
    );

    bob_ws.send_text(&channel, "r1", "Còn bạn ơi").await;
    let bob_ack = bob_ws.next_of("ack").await;
    assert_eq!(bob_ack["seq"], 2, "{bob_ack}");
    // Every socket of every member gets each message, the sender's included.
    let echo = alice_ws.next_of("message").await;
    assert_eq!(echo["message"]["seq"], 1);
    let reply = alice_ws.next_of("message").await;
    assert_eq!(reply["message"]["seq"], 2);

    carol_ws.expect_silence(Duration::from_millis(300)).await;
    mallory_ws.expect_silence(Duration::from_millis(300)).await;

    let (status, _) = carol.get(&format!("/v1/channels/{channel}/messages")).await;
    assert_eq!(status, 404);
    let (status, _) = mallory
        .get(&format!("/v1/channels/{channel}/messages"))
        .await;
    assert_eq!(status, 404);
    let (status, body) = carol
        .post(
            &format!("/v1/channels/{channel}/messages"),
            json!({"client_id": "x", "content": {"kind": "text", "text": "hi"}}),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    let history = bob.all_messages(&channel).await;
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2]);
}
