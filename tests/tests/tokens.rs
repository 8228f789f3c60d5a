//! Token refresh over an open socket, and revocation of a user's tokens.

mod common;

use std::time::Duration;

use common::{ACME_KEY, ACME_SECRET, Runtime, Ws, config_yaml_with_server, error_code};
use serde_json::{Value, json};

/// Starts a runtime without clock leeway, so a token's expiry closes its
/// socket at `exp` itself.
fn start() -> (tempfile::TempDir, Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_yaml_with_server("  token_leeway_seconds: 0\n", "");
    let runtime = Runtime::start(dir.path(), &config);
    (dir, runtime)
}

async fn revoke(runtime: &Runtime, user: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/server/users/{user}/revoke-tokens",
            runtime.base_url()
        ))
        .header("x-parley-tenant", "acme")
        .basic_auth(ACME_KEY, Some(ACME_SECRET))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn refresh_keeps_socket_past_old_expiry() {
    let (_dir, runtime) = start();
    let api = runtime.api("acme");
    api.upsert_user("lan", "Lan").await;
    let (short, _) = api.token_with_ttl("lan", 2).await;
    let mut ws = Ws::connect(&runtime, "acme", &short).await;

    let (long, long_expiry) = api.token_with_ttl("lan", 3600).await;
    ws.send_json(json!({"type": "refresh_token", "ref": "r1", "token": long}))
        .await;
    let refreshed = ws.next_of("token_refreshed").await;
    assert_eq!(refreshed["ref"], "r1");
    assert_eq!(refreshed["token_expires_at"], long_expiry);

    // Past the first token's expiry the socket still replies.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ws.send_json(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(ws.next_of("pong").await["ref"], "p");
}

#[tokio::test]
async fn unrefreshed_socket_closes_at_expiry() {
    let (_dir, runtime) = start();
    let api = runtime.api("acme");
    api.upsert_user("lan", "Lan").await;
    let (short, _) = api.token_with_ttl("lan", 2).await;
    let mut ws = Ws::connect(&runtime, "acme", &short).await;
    let (code, _) = ws.expect_close().await;
    assert_eq!(code, 4001);
}

#[tokio::test]
async fn refresh_rejects_bad_tokens_and_keeps_socket() {
    let (_dir, runtime) = start();
    let api = runtime.api("acme");
    let lan = api.user("lan").await;
    let minh = api.user("minh").await;
    let mut ws = Ws::connect(&runtime, "acme", &lan.token).await;

    ws.send_json(json!({"type": "refresh_token", "ref": "a", "token": minh.token}))
        .await;
    let error = ws.next_of("error").await;
    assert_eq!(error["code"], "token_user_mismatch");
    assert_eq!(error["ref"], "a");

    ws.send_json(json!({"type": "refresh_token", "ref": "b", "token": "not.a.token"}))
        .await;
    assert_eq!(ws.next_of("error").await["code"], "token_invalid");

    let other_tenant = runtime.api("globex").user("lan").await;
    ws.send_json(json!({"type": "refresh_token", "ref": "c", "token": other_tenant.token}))
        .await;
    assert_eq!(ws.next_of("error").await["code"], "token_invalid");

    ws.send_json(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(ws.next_of("pong").await["ref"], "p");
}

#[tokio::test]
async fn revocation_closes_sockets_and_rejects_old_tokens() {
    let (_dir, runtime) = start();
    let api = runtime.api("acme");
    let lan = api.user("lan").await;
    let mut phone = Ws::connect(&runtime, "acme", &lan.token).await;
    let mut laptop = Ws::connect(&runtime, "acme", &lan.token).await;

    let (status, body) = revoke(&runtime, "lan").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["not_before"].as_i64().is_some(), "{body}");
    for ws in [&mut phone, &mut laptop] {
        let (code, frames) = ws.expect_close().await;
        assert_eq!(code, 4005);
        assert_eq!(frames.last().unwrap()["code"], "token_revoked");
    }
    let (status, body) = lan.get("/v1/channels").await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "token_invalid");

    // A token minted right after the revocation, even within the same
    // second, works.
    let fresh = api.token("lan").await;
    let mut again = Ws::connect(&runtime, "acme", &fresh).await;
    again.send_json(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(again.next_of("pong").await["ref"], "p");
}

#[tokio::test]
async fn refresh_with_revoked_token_is_rejected() {
    let (_dir, runtime) = start();
    let api = runtime.api("acme");
    let lan = api.user("lan").await;
    let spare = api.token("lan").await;
    let (status, _) = revoke(&runtime, "lan").await;
    assert_eq!(status, 200);
    let fresh = api.token("lan").await;
    let mut ws = Ws::connect(&runtime, "acme", &fresh).await;

    // `spare` was minted before the revocation. The socket keeps `fresh`.
    ws.send_json(json!({"type": "refresh_token", "ref": "r", "token": spare}))
        .await;
    let error = ws.next_of("error").await;
    assert_eq!(error["code"], "token_invalid");
    assert_eq!(error["ref"], "r");
    ws.send_json(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(ws.next_of("pong").await["ref"], "p");
    let (status, _) = lan.get("/v1/channels").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn revoking_unknown_user_is_not_found() {
    let (_dir, runtime) = start();
    let (status, body) = revoke(&runtime, "nobody").await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "not_found");
}

#[tokio::test]
async fn second_revocation_rejects_tokens_minted_between() {
    let (_dir, runtime) = start();
    let api = runtime.api("acme");
    let lan = api.user("lan").await;
    let (status, first) = revoke(&runtime, "lan").await;
    assert_eq!(status, 200);
    let between = api.token("lan").await;
    let (status, second) = revoke(&runtime, "lan").await;
    assert_eq!(status, 200);
    assert!(
        second["not_before"].as_i64() > first["not_before"].as_i64(),
        "{first} then {second}"
    );
    let (status, body) = lan.at(&runtime).get("/v1/me").await;
    assert_eq!(status, 401, "{body}");
    let holder = common::User {
        token: between,
        ..lan.clone()
    };
    let (status, body) = holder.get("/v1/me").await;
    assert_eq!(status, 401, "token minted between the revocations: {body}");
}
