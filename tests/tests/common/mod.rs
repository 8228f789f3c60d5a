//! Test harness: runs the chat runtime as a real process on loopback with
//! its own data directory, and talks to it over HTTP and WebSocket.
#![allow(dead_code)]

pub mod redis;

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

    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// Sends a request with the tenant's API key to a server API path and
    /// returns status and body, parsed as JSON when it is JSON.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-parley-tenant", &self.tenant)
            .basic_auth(&self.key, Some(&self.secret));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends a GET to a server API path and returns status and body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Sends a POST with a JSON body to a server API path and returns
    /// status and body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Sends a DELETE to a server API path and returns status and body.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Sends a PUT with a JSON body to a server API path and returns
    /// status and body.
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
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

    pub async fn put(&self, path: &str) -> (u16, Value) {
        let request = self.http.put(format!("{}{path}", self.base));
        self.send(request).await
    }

    pub async fn put_json(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self.http.put(format!("{}{path}", self.base)).json(&body);
        self.send(request).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self.http.patch(format!("{}{path}", self.base)).json(&body);
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

/// Log lines a runtime wrote to stdout, filled by the thread that drains
/// the pipe.
#[derive(Clone, Default)]
pub struct CapturedLogs {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CapturedLogs {
    /// Returns every line captured so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line containing `needle` was logged and returns it.
    /// Fails the test after [`WAIT`].
    pub async fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let found = self.lines().into_iter().find(|line| line.contains(needle));
            if let Some(line) = found {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line containing {needle:?} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the runtime closed its stdout, so every line is captured.
    pub fn wait_for_end(&self) {
        let deadline = std::time::Instant::now() + WAIT;
        while !self.ended.load(std::sync::atomic::Ordering::Acquire) {
            assert!(
                std::time::Instant::now() < deadline,
                "runtime stdout still open after {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Runtime {
    /// Like [`Runtime::start`], but logs at debug level and keeps every log
    /// line in the returned [`CapturedLogs`].
    pub fn start_capturing(dir: &Path, config: &str) -> (Runtime, CapturedLogs) {
        Runtime::start_with_env(dir, config, &[])
    }

    /// Like [`Runtime::start_capturing`], with extra environment variables
    /// for the runtime process (for example a `secret_env` variable).
    pub fn start_with_env(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> (Runtime, CapturedLogs) {
        Runtime::start_observing(dir, config, env, |_| {})
    }

    /// Like [`Runtime::start_with_env`], and calls `observer` with each log
    /// line as soon as it is read, on the thread that drains stdout. This
    /// lets a test act at a precise point of start-up.
    pub fn start_observing(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        mut observer: impl FnMut(&str) + Send + 'static,
    ) -> (Runtime, CapturedLogs) {
        let config_path = dir.join("config.yaml");
        if !config_path.exists() {
            std::fs::write(&config_path, config).unwrap();
        }

        let mut command = Command::new(env!("CARGO_BIN_EXE_parley-runtime-under-test"));
        command
            .arg("--config")
            .arg(&config_path)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("PARLEY_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();

        let stdout = child.stdout.take().unwrap();
        let logs = CapturedLogs::default();
        let captured = logs.clone();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                observer(&line);
                if !sent && line.contains("\"Listening\"") {
                    let parsed: Value = serde_json::from_str(&line).unwrap();
                    let address: SocketAddr = parsed["address"].as_str().unwrap().parse().unwrap();
                    let _ = sender.send(address);
                    sent = true;
                }
                if std::env::var_os("PARLEY_TEST_LOGS").is_some() {
                    eprintln!("{line}");
                }
                captured.lines.lock().unwrap().push(line);
            }
            captured
                .ended
                .store(true, std::sync::atomic::Ordering::Release);
        });

        let address = receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("runtime did not log its listen address");
        let runtime = Runtime {
            child,
            address,
            dir: dir.to_owned(),
        };
        (runtime, logs)
    }

    /// Returns the server API of any tenant, using the given key id and
    /// secret.
    pub fn api_with_key(&self, tenant: &str, key: &str, secret: &str) -> ServerApi {
        ServerApi {
            http: reqwest::Client::new(),
            base: self.base_url(),
            tenant: tenant.to_owned(),
            key: key.to_owned(),
            secret: secret.to_owned(),
        }
    }
}

impl ServerApi {
    /// Mints a token that lives `ttl_seconds` and returns it with its `exp`.
    pub async fn token_with_ttl(&self, user: &str, ttl_seconds: u64) -> (String, u64) {
        let response = self
            .http
            .post(format!("{}/v1/server/users/{user}/tokens", self.base))
            .header("x-parley-tenant", &self.tenant)
            .basic_auth(&self.key, Some(&self.secret))
            .json(&json!({ "ttl_seconds": ttl_seconds }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "token for {user}");
        let body: Value = response.json().await.unwrap();
        let token = body["token"].as_str().unwrap().to_owned();
        (token, body["expires_at"].as_u64().unwrap())
    }
}

impl Ws {
    /// Connects with the token in the `Sec-WebSocket-Protocol` header next to
    /// `parley.v1`, waits for `ready`, and returns the subprotocol the server
    /// selected.
    pub async fn connect_with_subprotocol(
        runtime: &Runtime,
        tenant: &str,
        token: &str,
    ) -> (Ws, Option<String>) {
        let url = format!("ws://{}/v1/ws?tenant={tenant}", runtime.address);
        let mut request = url.into_client_request().unwrap();
        let protocols = format!("parley.v1, bearer.{token}");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&protocols).unwrap(),
        );
        let (socket, response) = match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => connected,
            Err(error) => panic!("upgrade with the token in a subprotocol failed: {error}"),
        };
        let selected = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|value| value.to_str().unwrap().to_owned());
        let mut ws = Ws { socket };
        let ready = ws.next_json().await;
        assert_eq!(ready["type"], "ready", "first frame: {ready}");
        (ws, selected)
    }
}

/// Returns the `error.code` of a REST error body, or of an upgrade's error
/// body given as text.
pub fn error_code(body: &Value) -> String {
    let parsed = match body {
        Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        other => other.clone(),
    };
    parsed["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Replaces `dir/config.yaml` in one rename, so the runtime's reload never
/// reads a half-written file.
pub fn write_config(dir: &Path, config: &str) {
    let temporary = dir.join("config.yaml.new");
    std::fs::write(&temporary, config).unwrap();
    std::fs::rename(&temporary, dir.join("config.yaml")).unwrap();
}

/// Calls `check` every 50 ms until it returns true. Fails the test, naming
/// `condition`, when that takes longer than [`WAIT`].
pub async fn poll_until<F, Fut>(condition: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting until {condition}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `limits:` block for the acme tenant (pass it to [`config_yaml`]) that
/// lets tests send hundreds of messages per second without `rate_limited`.
pub const NO_RATE_LIMIT: &str =
    "    limits:\n      messages_per_second: 10000\n      message_burst: 100000\n";

/// Builds a config with the same tenants as [`config_yaml`], whose server
/// section also contains `server_extra` (lines indented by two spaces, such
/// as `"  max_replay: 5\n"`).
pub fn config_yaml_with_server(server_extra: &str, acme_extra: &str) -> String {
    format!(
        "server:\n  heartbeat_seconds: 2\n  data_dir: data\n{server_extra}tenants:\n  - id: acme\n    display_name: Acme\n    api_keys:\n      - id: {ACME_KEY}\n        secret: {ACME_SECRET}\n    allowed_origins: [\"https://app.acme.test\"]\n{acme_extra}  - id: globex\n    display_name: Globex\n    api_keys:\n      - id: {GLOBEX_KEY}\n        secret: {GLOBEX_SECRET}\n"
    )
}

/// Returns the `seq` of each message, in the order given.
pub fn seqs_of(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|message| message["seq"].as_u64().unwrap())
        .collect()
}

/// Reads the `parley_websocket_connections` gauge of `tenant` from GET
/// /metrics. Returns `None` when the tenant has no sample yet.
pub async fn websocket_connections(runtime: &Runtime, tenant: &str) -> Option<i64> {
    let text = reqwest::get(format!("{}/metrics", runtime.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("parley_websocket_connections{{tenant=\"{tenant}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().parse().unwrap())
}

/// Polls the connection gauge of `tenant` until it equals `expected`, and
/// fails the test with the last value read after `wait`.
pub async fn wait_for_connections(runtime: &Runtime, tenant: &str, expected: i64, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let current = websocket_connections(runtime, tenant).await;
        if current == Some(expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "parley_websocket_connections for {tenant} is {current:?} after {wait:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl User {
    /// Returns this user with the same token, sending its requests to
    /// `runtime` (another process, or the same data directory after a restart).
    pub fn at(&self, runtime: &Runtime) -> User {
        User {
            base: runtime.base_url(),
            ..self.clone()
        }
    }
}

impl Ws {
    /// Collects every text frame that arrives until none has come for `quiet`.
    pub async fn frames_until_quiet(&mut self, quiet: Duration) -> Vec<Value> {
        let mut frames = Vec::new();
        while let Some(Message::Text(text)) = self.next_frame(quiet).await {
            frames.push(serde_json::from_str(text.as_str()).unwrap());
        }
        frames
    }

    /// Sends a close frame and waits until the server ends the stream.
    pub async fn close(mut self) {
        self.socket.close(None).await.unwrap();
        while self.next_frame(WAIT).await.is_some() {}
    }
}
