//! Test harness: runs the chat runtime as a real process on loopback with
//! its own data directory, and talks to it over HTTP and WebSocket.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ACME_KEY: &str = "acme-key-1";
pub const ACME_SECRET: &str = "acme-test-secret-0123456789abcdef0123456789";
pub const GLOBEX_KEY: &str = "globex-key-1";
pub const GLOBEX_SECRET: &str = "globex-test-secret-0123456789abcdef01234567";

/// How long a test waits for a frame or the process before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A config with tenants `acme` and `globex`; `extra` is appended to the
/// acme tenant (for example a `limits:` block).
pub fn config_yaml(acme_extra: &str) -> String {
    format!(
        "server:\n  heartbeat_seconds: 2\n  data_dir: data\ntenants:\n  - id: acme\n    display_name: Acme\n    api_keys:\n      - id: {ACME_KEY}\n        secret: {ACME_SECRET}\n    allowed_origins: [\"https://app.acme.test\"]\n{acme_extra}  - id: globex\n    display_name: Globex\n    api_keys:\n      - id: {GLOBEX_KEY}\n        secret: {GLOBEX_SECRET}\n"
    )
}

/// A runtime process. Killed when dropped.
pub struct Runtime {
    child: Child,
    pub address: SocketAddr,
    pub dir: PathBuf,
}

impl Runtime {
    /// Writes `config` to `dir/config.yaml` (unless it exists) and starts a
    /// runtime on a free loopback port.
    pub fn start(dir: &Path, config: &str) -> Runtime {
        let config_path = dir.join("config.yaml");
        if !config_path.exists() {
            std::fs::write(&config_path, config).unwrap();
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley-runtime-under-test"))
            .arg("--config")
            .arg(&config_path)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("PARLEY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && line.contains("\"Listening\"") {
                    let parsed: Value = serde_json::from_str(&line).unwrap();
                    let address: SocketAddr = parsed["address"].as_str().unwrap().parse().unwrap();
                    let _ = sender.send(address);
                    sent = true;
                }
                // Keep draining so the process never blocks on a full pipe.
                if std::env::var_os("PARLEY_TEST_LOGS").is_some() {
                    eprintln!("{line}");
                }
            }
        });
        let address = receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("runtime did not log its listen address");
        Runtime {
            child,
            address,
            dir: dir.to_owned(),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn api(&self, tenant: &str) -> ServerApi {
        let (key, secret) = match tenant {
            "acme" => (ACME_KEY, ACME_SECRET),
            "globex" => (GLOBEX_KEY, GLOBEX_SECRET),
            other => panic!("no test key for tenant {other}"),
        };
        ServerApi {
            http: reqwest::Client::new(),
            base: self.base_url(),
            tenant: tenant.to_owned(),
            key: key.to_owned(),
            secret: secret.to_owned(),
        }
    }

    /// Sends SIGKILL and waits for the process to end.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "runtime did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server API of one tenant.
#[derive(Clone)]
pub struct ServerApi {
    pub http: reqwest::Client,
    pub base: String,
    pub tenant: String,
    key: String,
    secret: String,
}

impl ServerApi {
    pub async fn upsert_user(&self, id: &str, name: &str) -> Value {
        let response = self
            .http
            .put(format!("{}/v1/server/users/{id}", self.base))
            .header("x-parley-tenant", &self.tenant)
            .basic_auth(&self.key, Some(&self.secret))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "upsert {id}");
        response.json().await.unwrap()
    }

    pub async fn delete_user(&self, id: &str) -> u16 {
        let response = self
            .http
            .delete(format!("{}/v1/server/users/{id}", self.base))
            .header("x-parley-tenant", &self.tenant)
            .basic_auth(&self.key, Some(&self.secret))
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }

    pub async fn token(&self, user: &str) -> String {
        let response = self
            .http
            .post(format!("{}/v1/server/users/{user}/tokens", self.base))
            .header("x-parley-tenant", &self.tenant)
            .basic_auth(&self.key, Some(&self.secret))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "token for {user}");
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// Creates the user and returns a client acting as that user.
    pub async fn user(&self, id: &str) -> User {
        self.upsert_user(id, id).await;
        let token = self.token(id).await;
        User {
            http: self.http.clone(),
            base: self.base.clone(),
            tenant: self.tenant.clone(),
            id: id.to_owned(),
            token,
        }
    }
}

/// A user of one tenant, acting through REST with a user token.
#[derive(Clone)]
pub struct User {
    pub http: reqwest::Client,
    pub base: String,
    pub tenant: String,
    pub id: String,
    pub token: String,
}

impl User {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self.http.post(format!("{}{path}", self.base)).json(&body);
        self.send(request).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let request = self.http.delete(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request
            .header("x-parley-tenant", &self.tenant)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// Opens (or finds) the direct channel with `peer` and returns its id.
    pub async fn direct_with(&self, peer: &str, subject: Option<&str>) -> String {
        let (status, body) = self
            .post(
                "/v1/channels/direct",
                json!({ "user_id": peer, "subject": subject }),
            )
            .await;
        assert_eq!(status, 200, "open direct: {body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn send_text(&self, channel: &str, client_id: &str, text: &str) -> (u16, Value) {
        self.post(
            &format!("/v1/channels/{channel}/messages"),
            json!({ "client_id": client_id, "content": { "kind": "text", "text": text } }),
        )
        .await
    }

    /// Every message of a channel, read page by page with `after`.
    pub async fn all_messages(&self, channel: &str) -> Vec<Value> {
        let mut after = 0;
        let mut all = Vec::new();
        loop {
            let (status, body) = self
                .get(&format!(
                    "/v1/channels/{channel}/messages?after={after}&limit=200"
                ))
                .await;
            assert_eq!(status, 200, "history: {body}");
            let page = body["messages"].as_array().unwrap().clone();
            if page.is_empty() {
                return all;
            }
            after = page.last().unwrap()["seq"].as_u64().unwrap();
            all.extend(page);
        }
    }
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking JSON frames.
pub struct Ws {
    pub socket: Socket,
}

/// How the token reaches the upgrade.
pub enum TokenIn {
    Header,
    Subprotocol,
    Query,
}

impl Ws {
    pub async fn connect(runtime: &Runtime, tenant: &str, token: &str) -> Ws {
        match Ws::try_connect(runtime, tenant, token, TokenIn::Header, None).await {
            Ok(ws) => ws,
            Err((status, body)) => panic!("upgrade failed with {status}: {body}"),
        }
    }

    /// Connects and waits for the `ready` frame. On an HTTP error returns the
    /// status and body.
    pub async fn try_connect(
        runtime: &Runtime,
        tenant: &str,
        token: &str,
        token_in: TokenIn,
        origin: Option<&str>,
    ) -> Result<Ws, (u16, String)> {
        let mut url = format!("ws://{}/v1/ws?tenant={tenant}", runtime.address);
        if let TokenIn::Query = token_in {
            url.push_str(&format!("&access_token={token}"));
        }
        let mut request = url.into_client_request().unwrap();
        let headers = request.headers_mut();
        match token_in {
            TokenIn::Header => {
                headers.insert(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
                );
            }
            TokenIn::Subprotocol => {
                let protocols = format!("parley.v1, bearer.{token}");
                headers.insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_str(&protocols).unwrap(),
                );
            }
            TokenIn::Query => {}
        }
        if let Some(origin) = origin {
            headers.insert("origin", HeaderValue::from_str(origin).unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => {
                let mut ws = Ws { socket };
                let ready = ws.next_json().await;
                assert_eq!(ready["type"], "ready", "first frame: {ready}");
                Ok(ws)
            }
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                    .unwrap_or_default();
                Err((status, body))
            }
            Err(other) => panic!("connect failed: {other}"),
        }
    }

    pub async fn send_json(&mut self, frame: Value) {
        self.socket
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, channel: &str, client_id: &str, text: &str) {
        self.send_json(json!({
            "type": "send", "ref": client_id, "channel_id": channel, "client_id": client_id,
            "content": { "kind": "text", "text": text }
        }))
        .await;
    }

    /// The next JSON frame; fails the test after [`WAIT`].
    pub async fn next_json(&mut self) -> Value {
        match self.next_frame(WAIT).await {
            Some(Message::Text(text)) => serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    /// The next frame of type `kind`, skipping frames of other types.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next_json().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// The next frame (text, close, ...), skipping pings and pongs, or
    /// `None` when nothing arrives within `wait` or the stream ended.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match next {
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(message) => return Some(message),
                Err(_) => return None,
            }
        }
    }

    /// Waits for a close frame and returns its code, passing over any text
    /// frames before it (they are returned too).
    pub async fn expect_close(&mut self) -> (u16, Vec<Value>) {
        let mut frames = Vec::new();
        loop {
            match self.next_frame(WAIT).await {
                Some(Message::Text(text)) => {
                    frames.push(serde_json::from_str(text.as_str()).unwrap())
                }
                Some(Message::Close(Some(CloseFrame { code, .. }))) => {
                    return (u16::from(code), frames);
                }
                other => panic!("expected a close frame, got {other:?} after {frames:?}"),
            }
        }
    }

    /// Asserts that no text frame arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(Message::Text(text)) = self.next_frame(wait).await {
            panic!("expected no frame, got {text}");
        }
    }
}

/// Signs a token by hand, for the rejection tests.
pub fn sign_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let head = URL_SAFE_NO_PAD.encode(header.to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{head}.{body}");
    let signature = hmac_sha256(secret, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// HMAC-SHA256 (RFC 2104), so tests can sign tokens with headers that a
/// JWT library would refuse to produce.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner_pad: Vec<u8> = block.iter().map(|byte| byte ^ 0x36).collect();
    let outer_pad: Vec<u8> = block.iter().map(|byte| byte ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer_pad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
