//! Measures acknowledged sends per second and ack latency against a running
//! runtime: each client sends over its own WebSocket and waits for the ack
//! before the next send, so the figure includes the store's fsync.
//!
//! Start the runtime on the demo config (see README.md), then:
//! `cargo run --release -p parley-tests --example send_load -- [CLIENTS] [SECONDS]`
//!
//! It creates users `load-0` .. `load-N` in tenant `acme`, one group channel
//! for all of them, and talks only to 127.0.0.1:8080.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const BASE: &str = "http://127.0.0.1:8080";
const KEY: &str = "acme-key-1";
const SECRET: &str = "acme-demo-secret-0123456789abcdef0123456789";

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).map(|v| v.parse()).transpose()?.unwrap_or(16);
    let seconds: u64 = args.get(2).map(|v| v.parse()).transpose()?.unwrap_or(10);

    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for index in 0..clients {
        let user = format!("load-{index}");
        let url = format!("{BASE}/v1/server/users/{user}");
        let request = http
            .put(&url)
            .header("x-parley-tenant", "acme")
            .basic_auth(KEY, Some(SECRET));
        request
            .json(&json!({"name": user}))
            .send()
            .await?
            .error_for_status()?;
        let url = format!("{BASE}/v1/server/users/{user}/tokens");
        let request = http
            .post(&url)
            .header("x-parley-tenant", "acme")
            .basic_auth(KEY, Some(SECRET));
        let body: Value = request.send().await?.error_for_status()?.json().await?;
        tokens.push(body["token"].as_str().unwrap_or_default().to_owned());
    }

    let members: Vec<String> = (1..clients).map(|index| format!("load-{index}")).collect();
    let request = http
        .post(format!("{BASE}/v1/channels/group"))
        .header("x-parley-tenant", "acme")
        .bearer_auth(&tokens[0])
        .json(&json!({"name": "load", "members": members}));
    let channel: Value = request.send().await?.error_for_status()?.json().await?;
    let channel_id = channel["id"].as_str().unwrap_or_default().to_owned();

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (index, token) in tokens.into_iter().enumerate() {
        tasks.push(tokio::spawn(run_client(
            index,
            token,
            channel_id.clone(),
            deadline,
        )));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }

    latencies.sort();
    let count = latencies.len();
    let percentile = |p: f64| {
        latencies
            .get(((count as f64 * p) as usize).min(count.saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!("clients: {clients}, duration: {seconds} s, acked sends: {count}");
    println!(
        "acked sends per second: {:.0}",
        count as f64 / seconds as f64
    );
    println!(
        "ack latency p50: {:?}, p99: {:?}, max: {:?}",
        percentile(0.50),
        percentile(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "deliveries: every member socket also receives each message ({} members)",
        clients
    );
    Ok(())
}

async fn run_client(
    index: usize,
    token: String,
    channel_id: String,
    deadline: Instant,
) -> Result<Vec<Duration>, Failure> {
    let mut request = "ws://127.0.0.1:8080/v1/ws?tenant=acme".into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
    let mut latencies = Vec::new();
    let mut sequence = 0u64;
    let run_id = std::process::id();
    while Instant::now() < deadline {
        sequence += 1;
        let client_id = format!("{run_id}-{index}-{sequence}");
        let frame = json!({"type": "send", "channel_id": channel_id, "client_id": client_id,
            "content": {"kind": "text", "text": "Giá bao nhiêu vậy bạn?"}});
        let started = Instant::now();
        socket.send(Message::text(frame.to_string())).await?;
        loop {
            let Some(message) = socket.next().await else {
                return Ok(latencies);
            };
            let Message::Text(text) = message? else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str())?;
            if value["type"] == "ack" && value["client_id"] == client_id.as_str() {
                latencies.push(started.elapsed());
                break;
            }
            if value["type"] == "error" {
                return Err(format!("error frame: {value}").into());
            }
        }
    }
    Ok(latencies)
}
