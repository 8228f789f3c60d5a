//! Authentication: user tokens on REST and on the WebSocket upgrade, the
//! server API's HTTP Basic keys, tenant selection and browser origins.

mod common;

use common::{
    ACME_KEY, ACME_SECRET, GLOBEX_KEY, GLOBEX_SECRET, Runtime, TokenIn, User, Ws, config_yaml,
    error_code, sign_token, unix_now,
};
use serde_json::{Value, json};
use tempfile::TempDir;

const ALLOWED_ORIGIN: &str = "https://app.acme.test";
const OTHER_ORIGIN: &str = "https://evil.example";

/// Starts a runtime with tenants acme and globex, and user `alice` in acme.
async fn start_with_alice() -> (TempDir, Runtime, User) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_yaml(""));
    let alice = runtime.api("acme").user("alice").await;
    (dir, runtime, alice)
}

fn claims(sub: &str, aud: &str, exp: u64) -> Value {
    json!({ "sub": sub, "aud": aud, "exp": exp, "iat": unix_now() })
}

fn hs256_header(kid: &str) -> Value {
    json!({ "alg": "HS256", "typ": "JWT", "kid": kid })
}

/// Builds a REST client for tenant acme that sends `token` as its bearer
/// token.
fn acme_client(runtime: &Runtime, token: &str) -> User {
    User {
        http: reqwest::Client::new(),
        base: runtime.base_url(),
        tenant: String::from("acme"),
        id: String::from("unused"),
        token: token.to_owned(),
    }
}

/// Asserts that `token` gets HTTP 401 with error `code` from both
/// `GET /v1/channels` and the WebSocket upgrade of tenant acme.
async fn assert_rejected(runtime: &Runtime, token: &str, code: &str) {
    let (status, body) = acme_client(runtime, token).get("/v1/channels").await;
    assert_eq!(status, 401, "REST status, body {body}");
    assert_eq!(error_code(&body), code, "REST error code, body {body}");

    match Ws::try_connect(runtime, "acme", token, TokenIn::Header, None).await {
        Ok(_) => panic!("WebSocket upgrade accepted a token that REST rejects with {code}"),
        Err((status, body)) => {
            assert_eq!(status, 401, "upgrade status, body {body}");
            assert_eq!(
                error_code(&Value::String(body.clone())),
                code,
                "upgrade error code, body {body}"
            );
        }
    }
}

/// Asserts that `token` works on both REST and the WebSocket upgrade.
async fn assert_accepted(runtime: &Runtime, token: &str) {
    let (status, body) = acme_client(runtime, token).get("/v1/channels").await;
    assert_eq!(status, 200, "REST status, body {body}");
    if let Err((status, body)) =
        Ws::try_connect(runtime, "acme", token, TokenIn::Header, None).await
    {
        panic!("WebSocket upgrade rejected a valid token with {status}: {body}");
    }
}

#[tokio::test]
async fn hand_signed_token_is_accepted() {
    // Control for the rejection tests below: `sign_token` makes valid tokens,
    // so each rejection is caused by the one thing that test changes.
    let (_dir, runtime, _alice) = start_with_alice().await;
    let token = sign_token(
        &hs256_header(ACME_KEY),
        &claims("alice", "acme", unix_now() + 600),
        ACME_SECRET.as_bytes(),
    );
    assert_accepted(&runtime, &token).await;
}

#[tokio::test]
async fn alg_none_token_is_rejected() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let signed = sign_token(
        &json!({ "alg": "none", "typ": "JWT", "kid": ACME_KEY }),
        &claims("alice", "acme", unix_now() + 600),
        ACME_SECRET.as_bytes(),
    );
    // An unsecured JWT has an empty signature part.
    let (unsigned, _signature) = signed.rsplit_once('.').unwrap();
    let token = format!("{unsigned}.");
    assert_rejected(&runtime, &token, "token_invalid").await;
}

/// Signs a token with a real HMAC-SHA384 signature (RFC 2104 with the
/// 128-byte block of SHA-384), which `sign_token` cannot make.
fn sign_hs384(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::{Digest, Sha384};

    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut block = [0u8; 128];
    block[..secret.len()].copy_from_slice(secret);
    let inner_pad: Vec<u8> = block.iter().map(|byte| byte ^ 0x36).collect();
    let outer_pad: Vec<u8> = block.iter().map(|byte| byte ^ 0x5c).collect();
    let inner = Sha384::new()
        .chain_update(&inner_pad)
        .chain_update(input.as_bytes())
        .finalize();
    let signature = Sha384::new()
        .chain_update(&outer_pad)
        .chain_update(inner)
        .finalize();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test]
async fn hs384_token_is_rejected() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let header = json!({ "alg": "HS384", "typ": "JWT", "kid": ACME_KEY });
    let claims = claims("alice", "acme", unix_now() + 600);

    // A correct HS384 signature with acme's secret: only the algorithm is
    // wrong, so only an algorithm check rejects it.
    let token = sign_hs384(&header, &claims, ACME_SECRET.as_bytes());
    assert_rejected(&runtime, &token, "token_invalid").await;

    // The same header with an HMAC-SHA256 signature.
    let token = sign_token(&header, &claims, ACME_SECRET.as_bytes());
    assert_rejected(&runtime, &token, "token_invalid").await;
}

#[tokio::test]
async fn bad_signature_is_rejected() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let token = sign_token(
        &hs256_header(ACME_KEY),
        &claims("alice", "acme", unix_now() + 600),
        b"not-acme-secret-but-just-as-long-0123456789",
    );
    assert_rejected(&runtime, &token, "token_invalid").await;
}

#[tokio::test]
async fn token_expired_beyond_leeway_is_rejected() {
    // The default leeway is 30 seconds.
    let (_dir, runtime, _alice) = start_with_alice().await;
    let token = sign_token(
        &hs256_header(ACME_KEY),
        &claims("alice", "acme", unix_now() - 120),
        ACME_SECRET.as_bytes(),
    );
    assert_rejected(&runtime, &token, "token_expired").await;
}

#[tokio::test]
async fn token_expired_within_leeway_is_accepted() {
    // 10 seconds past `exp` is inside the default 30-second leeway.
    let (_dir, runtime, _alice) = start_with_alice().await;
    let token = sign_token(
        &hs256_header(ACME_KEY),
        &claims("alice", "acme", unix_now() - 10),
        ACME_SECRET.as_bytes(),
    );
    assert_accepted(&runtime, &token).await;
}

#[tokio::test]
async fn token_without_exp_is_rejected() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let token = sign_token(
        &hs256_header(ACME_KEY),
        &json!({ "sub": "alice", "aud": "acme", "iat": unix_now() }),
        ACME_SECRET.as_bytes(),
    );
    assert_rejected(&runtime, &token, "token_invalid").await;
}

#[tokio::test]
async fn token_without_kid_is_rejected() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let token = sign_token(
        &json!({ "alg": "HS256", "typ": "JWT" }),
        &claims("alice", "acme", unix_now() + 600),
        ACME_SECRET.as_bytes(),
    );
    assert_rejected(&runtime, &token, "token_invalid").await;
}

#[tokio::test]
async fn unknown_kid_is_rejected() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let token = sign_token(
        &hs256_header("acme-key-9"),
        &claims("alice", "acme", unix_now() + 600),
        ACME_SECRET.as_bytes(),
    );
    assert_rejected(&runtime, &token, "token_invalid").await;
}

#[tokio::test]
async fn other_tenant_user_token_is_rejected() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    // The same user id exists in both tenants, so only the tenant differs.
    let globex_alice = runtime.api("globex").user("alice").await;
    assert_rejected(&runtime, &globex_alice.token, "token_invalid").await;
}

#[tokio::test]
async fn other_tenant_audience_is_rejected() {
    // Signed with acme's own key: only the audience names another tenant.
    let (_dir, runtime, _alice) = start_with_alice().await;
    let token = sign_token(
        &hs256_header(ACME_KEY),
        &claims("alice", "globex", unix_now() + 600),
        ACME_SECRET.as_bytes(),
    );
    assert_rejected(&runtime, &token, "token_invalid").await;
}

#[tokio::test]
async fn token_of_unknown_user_is_rejected() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let token = sign_token(
        &hs256_header(ACME_KEY),
        &claims("nobody", "acme", unix_now() + 600),
        ACME_SECRET.as_bytes(),
    );
    assert_rejected(&runtime, &token, "user_not_found").await;
}

#[tokio::test]
async fn deleted_user_token_is_rejected() {
    let (_dir, runtime, alice) = start_with_alice().await;
    assert_accepted(&runtime, &alice.token).await;

    let status = runtime.api("acme").delete_user("alice").await;
    assert_eq!(status, 204, "delete alice");
    assert_rejected(&runtime, &alice.token, "user_deleted").await;
}

#[tokio::test]
async fn deleting_user_closes_open_socket() {
    let (_dir, runtime, alice) = start_with_alice().await;
    let mut socket = Ws::connect(&runtime, "acme", &alice.token).await;

    let status = runtime.api("acme").delete_user("alice").await;
    assert_eq!(status, 204, "delete alice");

    let (code, frames) = socket.expect_close().await;
    assert_eq!(code, 4003, "close code, frames before it: {frames:?}");
    let last = frames.last().expect("an error frame before the close");
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["code"], "user_deleted", "{last}");
}

#[tokio::test]
async fn deleted_user_id_cannot_be_reused() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let api = runtime.api("acme");
    assert_eq!(api.delete_user("alice").await, 204);

    let response = api
        .http
        .put(format!("{}/v1/server/users/alice", api.base))
        .header("x-parley-tenant", "acme")
        .basic_auth(ACME_KEY, Some(ACME_SECRET))
        .json(&json!({ "name": "Alice again" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "user_deleted", "{body}");
}

#[tokio::test]
async fn websocket_accepts_token_in_header() {
    let (_dir, runtime, alice) = start_with_alice().await;
    let result = Ws::try_connect(&runtime, "acme", &alice.token, TokenIn::Header, None).await;
    let mut socket = result.unwrap_or_else(|(status, body)| panic!("{status}: {body}"));
    socket
        .send_json(json!({ "type": "ping", "ref": "p1" }))
        .await;
    let pong = socket.next_of("pong").await;
    assert_eq!(pong["ref"], "p1");
}

#[tokio::test]
async fn websocket_accepts_token_in_subprotocol() {
    let (_dir, runtime, alice) = start_with_alice().await;
    let (mut socket, selected) = Ws::connect_with_subprotocol(&runtime, "acme", &alice.token).await;
    assert_eq!(selected.as_deref(), Some("parley.v1"));
    socket
        .send_json(json!({ "type": "ping", "ref": "p1" }))
        .await;
    let pong = socket.next_of("pong").await;
    assert_eq!(pong["ref"], "p1");
}

#[tokio::test]
async fn websocket_accepts_token_in_query() {
    let (_dir, runtime, alice) = start_with_alice().await;
    let result = Ws::try_connect(&runtime, "acme", &alice.token, TokenIn::Query, None).await;
    let mut socket = result.unwrap_or_else(|(status, body)| panic!("{status}: {body}"));
    socket
        .send_json(json!({ "type": "ping", "ref": "p1" }))
        .await;
    let pong = socket.next_of("pong").await;
    assert_eq!(pong["ref"], "p1");
}

#[tokio::test]
async fn rest_ignores_token_in_query() {
    // Only the WebSocket upgrade takes `access_token`, because browsers
    // cannot set headers there. REST requires the Authorization header.
    let (_dir, runtime, alice) = start_with_alice().await;
    let response = reqwest::Client::new()
        .get(format!(
            "{}/v1/channels?tenant=acme&access_token={}",
            runtime.base_url(),
            alice.token
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "token_missing", "{body}");
}

#[tokio::test]
async fn query_token_never_appears_in_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut runtime, logs) = Runtime::start_capturing(dir.path(), &config_yaml(""));
    let alice = runtime.api("acme").user("alice").await;
    let bob = runtime.api("acme").user("bob").await;
    let channel = alice.direct_with("bob", None).await;

    // A session that sends, receives an error frame and is closed by the
    // client, so the runtime logs as much about it as it can.
    let result = Ws::try_connect(&runtime, "acme", &alice.token, TokenIn::Query, None).await;
    let mut socket = result.unwrap_or_else(|(status, body)| panic!("{status}: {body}"));
    socket.send_text(&channel, "m1", "hello").await;
    socket.next_of("ack").await;
    socket.send_json(json!({ "type": "nonsense" })).await;
    socket.next_of("error").await;
    socket.socket.close(None).await.unwrap();

    // Rejected upgrades: an expired token, and a valid token of a deleted user.
    let expired = sign_token(
        &hs256_header(ACME_KEY),
        &claims("alice", "acme", unix_now() - 120),
        ACME_SECRET.as_bytes(),
    );
    let result = Ws::try_connect(&runtime, "acme", &expired, TokenIn::Query, None).await;
    assert!(result.is_err(), "expired token was accepted");
    assert_eq!(runtime.api("acme").delete_user("bob").await, 204);
    let result = Ws::try_connect(&runtime, "acme", &bob.token, TokenIn::Query, None).await;
    assert!(result.is_err(), "deleted user's token was accepted");

    let status = runtime.terminate();
    assert!(status.success(), "runtime exit status: {status}");
    logs.wait_for_end();

    let lines = logs.lines();
    assert!(
        lines.iter().any(|line| line.contains("\"Stopped\"")),
        "the capture misses the runtime's last log line: {lines:#?}"
    );
    for token in [&alice.token, &expired, &bob.token] {
        // The signature alone is secret enough to leak a token's worth.
        let (_, signature) = token.rsplit_once('.').unwrap();
        for line in &lines {
            assert!(
                !line.contains(signature),
                "log line contains an access_token: {line}"
            );
        }
    }
}

#[tokio::test]
async fn expired_token_closes_open_socket() {
    let dir = tempfile::tempdir().unwrap();
    // No leeway, so the socket closes right at the token's `exp`.
    let runtime = Runtime::start(dir.path(), &config_without_leeway());
    let api = runtime.api("acme");
    api.upsert_user("alice", "Alice").await;
    let (token, expires_at) = api.token_with_ttl("alice", 2).await;

    let result = Ws::try_connect(&runtime, "acme", &token, TokenIn::Header, None).await;
    let mut socket = result.unwrap_or_else(|(status, body)| panic!("{status}: {body}"));
    let (code, frames) = socket.expect_close().await;
    let closed_at = unix_now();

    assert_eq!(code, 4001, "close code, frames before it: {frames:?}");
    let last = frames.last().expect("an error frame before the close");
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["code"], "token_expired", "{last}");
    assert!(
        closed_at >= expires_at,
        "closed at {closed_at}, before the token's exp {expires_at}"
    );
}

/// Builds a config whose server section sets `token_leeway_seconds: 0`. Its
/// heartbeat is 20 seconds, so no ping is in flight when a short-lived
/// token expires.
fn config_without_leeway() -> String {
    let config = config_yaml("").replace(
        "server:\n  heartbeat_seconds: 2\n",
        "server:\n  heartbeat_seconds: 20\n  token_leeway_seconds: 0\n",
    );
    assert!(config.contains("token_leeway_seconds: 0"), "{config}");
    config
}

/// Waits until the wall clock enters a new second and returns it, so the
/// caller has most of that second before `unix_now()` changes again.
fn start_of_next_second() -> u64 {
    let current = unix_now();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let now = unix_now();
        if now != current {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "the clock stopped");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[tokio::test]
async fn token_at_its_exp_is_rejected() {
    // RFC 7519 section 4.1.4: `exp` is the time on or after which the token
    // must not be accepted. With no leeway, a token whose `exp` is the
    // current second is expired, as the socket's own expiry already treats it.
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(dir.path(), &config_without_leeway());
    runtime.api("acme").upsert_user("alice", "Alice").await;

    let now = start_of_next_second();
    let token = sign_token(
        &hs256_header(ACME_KEY),
        &claims("alice", "acme", now),
        ACME_SECRET.as_bytes(),
    );
    assert_rejected(&runtime, &token, "token_expired").await;
}

/// Sends `GET /v1/server/users/alice` with the given tenant header and
/// Basic credentials, and returns the status and body.
async fn server_get(
    runtime: &Runtime,
    tenant: Option<&str>,
    credentials: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut request =
        reqwest::Client::new().get(format!("{}/v1/server/users/alice", runtime.base_url()));
    if let Some(tenant) = tenant {
        request = request.header("x-parley-tenant", tenant);
    }
    if let Some((key, secret)) = credentials {
        request = request.basic_auth(key, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

#[tokio::test]
async fn server_api_accepts_own_key() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let (status, body) = server_get(&runtime, Some("acme"), Some((ACME_KEY, ACME_SECRET))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "alice", "{body}");
}

#[tokio::test]
async fn server_api_rejects_wrong_secret() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let wrong = ACME_SECRET.replace('0', "1");
    let (status, body) = server_get(&runtime, Some("acme"), Some((ACME_KEY, &wrong))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_code(&body), "api_key_invalid", "{body}");
}

#[tokio::test]
async fn server_api_rejects_wrong_key_id() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let (status, body) =
        server_get(&runtime, Some("acme"), Some(("acme-key-9", ACME_SECRET))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_code(&body), "api_key_invalid", "{body}");
}

#[tokio::test]
async fn server_api_rejects_missing_basic_header() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let (status, body) = server_get(&runtime, Some("acme"), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_code(&body), "api_key_invalid", "{body}");
}

#[tokio::test]
async fn server_api_rejects_other_tenant_key() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let (status, body) =
        server_get(&runtime, Some("acme"), Some((GLOBEX_KEY, GLOBEX_SECRET))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_code(&body), "api_key_invalid", "{body}");
}

#[tokio::test]
async fn server_api_requires_tenant() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let (status, body) = server_get(&runtime, None, Some((ACME_KEY, ACME_SECRET))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "tenant_missing", "{body}");
}

#[tokio::test]
async fn server_api_rejects_unknown_tenant() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let (status, body) = server_get(&runtime, Some("initech"), Some((ACME_KEY, ACME_SECRET))).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "tenant_not_found", "{body}");
}

#[tokio::test]
async fn user_api_takes_tenant_from_query() {
    let (_dir, runtime, alice) = start_with_alice().await;
    let response = reqwest::Client::new()
        .get(format!("{}/v1/channels?tenant=acme", runtime.base_url()))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn user_api_requires_tenant() {
    let (_dir, runtime, alice) = start_with_alice().await;
    let response = reqwest::Client::new()
        .get(format!("{}/v1/channels", runtime.base_url()))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "tenant_missing", "{body}");
}

/// Sends `GET /v1/channels` as alice with the given `Origin`.
async fn get_channels_from(runtime: &Runtime, alice: &User, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/v1/channels", runtime.base_url()))
        .header("x-parley-tenant", "acme")
        .header("origin", origin)
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn allowed_origin_gets_cors_headers() {
    let (_dir, runtime, alice) = start_with_alice().await;
    let response = get_channels_from(&runtime, &alice, ALLOWED_ORIGIN).await;
    assert_eq!(response.status(), 200);
    let allowed = response.headers().get("access-control-allow-origin");
    assert_eq!(
        allowed.map(|value| value.to_str().unwrap()),
        Some(ALLOWED_ORIGIN)
    );
}

#[tokio::test]
async fn error_responses_carry_cors_headers() {
    // A browser lets a script read the 401 body only when the error
    // response carries the CORS headers too.
    let (_dir, runtime, _alice) = start_with_alice().await;
    let response = reqwest::Client::new()
        .get(format!("{}/v1/channels", runtime.base_url()))
        .header("x-parley-tenant", "acme")
        .header("origin", ALLOWED_ORIGIN)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let allowed = response.headers().get("access-control-allow-origin");
    assert_eq!(
        allowed.map(|value| value.to_str().unwrap()),
        Some(ALLOWED_ORIGIN)
    );
}

#[tokio::test]
async fn other_origin_is_rejected() {
    let (_dir, runtime, alice) = start_with_alice().await;
    let response = get_channels_from(&runtime, &alice, OTHER_ORIGIN).await;
    assert_eq!(response.status(), 403);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "CORS headers for a rejected origin: {:?}",
        response.headers()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "origin_not_allowed", "{body}");
}

#[tokio::test]
async fn origin_of_other_tenant_is_rejected() {
    // globex allows no browser origin, so acme's origin is foreign to it.
    let (_dir, runtime, _alice) = start_with_alice().await;
    let gina = runtime.api("globex").user("gina").await;
    let response = reqwest::Client::new()
        .get(format!("{}/v1/channels", runtime.base_url()))
        .header("x-parley-tenant", "globex")
        .header("origin", ALLOWED_ORIGIN)
        .bearer_auth(&gina.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "origin_not_allowed", "{body}");
}

/// Sends a CORS preflight for `GET path` from `origin`.
async fn preflight(runtime: &Runtime, path: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}{path}", runtime.base_url()),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization, x-parley-tenant",
        )
        .send()
        .await
        .unwrap()
}

fn header_text(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_ascii_lowercase())
        .unwrap_or_default()
}

#[tokio::test]
async fn preflight_from_allowed_origin_gets_cors() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let response = preflight(&runtime, "/v1/channels", ALLOWED_ORIGIN).await;

    assert!(
        response.status().is_success(),
        "preflight status {}",
        response.status()
    );
    assert_eq!(
        header_text(&response, "access-control-allow-origin"),
        ALLOWED_ORIGIN
    );
    let methods = header_text(&response, "access-control-allow-methods");
    assert!(methods.contains("get"), "allow-methods: {methods}");
    // Editing a message is a PATCH, so browsers need it allowed.
    assert!(methods.contains("patch"), "allow-methods: {methods}");
    let headers = header_text(&response, "access-control-allow-headers");
    assert!(
        headers.contains("authorization"),
        "allow-headers: {headers}"
    );
    assert!(
        headers.contains("x-parley-tenant"),
        "allow-headers: {headers}"
    );
}

#[tokio::test]
async fn preflight_from_other_origin_gets_no_cors() {
    let (_dir, runtime, _alice) = start_with_alice().await;
    let response = preflight(&runtime, "/v1/channels", OTHER_ORIGIN).await;
    assert_eq!(
        header_text(&response, "access-control-allow-origin"),
        "",
        "headers: {:?}",
        response.headers()
    );
}

#[tokio::test]
async fn preflight_naming_globex_gets_no_cors() {
    // The preflight names globex in the query, and globex allows no origin.
    let (_dir, runtime, _alice) = start_with_alice().await;
    let response = preflight(&runtime, "/v1/channels?tenant=globex", ALLOWED_ORIGIN).await;
    assert_eq!(
        header_text(&response, "access-control-allow-origin"),
        "",
        "headers: {:?}",
        response.headers()
    );
}

#[tokio::test]
async fn websocket_with_other_origin_is_rejected() {
    let (_dir, runtime, alice) = start_with_alice().await;
    let result = Ws::try_connect(
        &runtime,
        "acme",
        &alice.token,
        TokenIn::Query,
        Some(OTHER_ORIGIN),
    )
    .await;
    match result {
        Ok(_) => panic!("upgrade from {OTHER_ORIGIN} was accepted"),
        Err((status, body)) => {
            assert_eq!(status, 403, "{body}");
            assert_eq!(
                error_code(&Value::String(body.clone())),
                "origin_not_allowed"
            );
        }
    }
}

#[tokio::test]
async fn websocket_with_allowed_origin_is_accepted() {
    let (_dir, runtime, alice) = start_with_alice().await;
    let result = Ws::try_connect(
        &runtime,
        "acme",
        &alice.token,
        TokenIn::Query,
        Some(ALLOWED_ORIGIN),
    )
    .await;
    if let Err((status, body)) = result {
        panic!("upgrade from {ALLOWED_ORIGIN} was rejected with {status}: {body}");
    }
}
