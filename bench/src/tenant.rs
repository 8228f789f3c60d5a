//! A benchmark tenant on a runtime process: its configuration, users, user
//! tokens signed here with the tenant's key, and group channels.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::servers::Server;

pub const TENANT: &str = "bench";
const KEY_ID: &str = "bench-key";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
/// Requests in flight while users are created and members added.
const SETUP_CONCURRENCY: usize = 64;
/// Largest member list the runtime takes when it creates a group.
const MAX_GROUP_CREATE: usize = 1000;

/// Writes a runtime configuration with one tenant, `bench`, whose limits
/// let one user send and connect as fast as the benchmarks need.
pub fn write_config(folder: &Path, listen: SocketAddr) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(folder.join("data"))?;
    let config = format!(
        "server:\n  listen: {listen}\n  data_dir: data\n\
         tenants:\n  - id: {TENANT}\n    display_name: Benchmark\n    api_keys:\n      - id: {KEY_ID}\n        secret: {SECRET}\n\
         \x20   limits:\n      messages_per_second: 10000\n      message_burst: 100000\n\
         \x20     max_sockets_per_user: 1000\n"
    );
    let path = folder.join("runtime.yaml");
    std::fs::write(&path, config).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}

/// Starts a runtime serving the `bench` tenant from its own folder.
pub async fn start_runtime(folder: &Path) -> anyhow::Result<Server> {
    let listen = crate::servers::free_address()?;
    let config = write_config(folder, listen)?;
    Server::runtime(&config, listen, folder.join("runtime.log")).await
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
}

/// Signs a user token valid for a day, as a tenant backend would.
pub fn token(user: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(KEY_ID.to_owned());
    let claims = Claims {
        sub: user,
        aud: TENANT,
        exp: now + 86_400,
        iat: now,
    };
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())?;
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// HTTP access to one runtime as the `bench` tenant.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        Api {
            base: server.http_url(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Creates users `{prefix}{index}` for every index in `range`.
    pub async fn create_users(
        &self,
        prefix: &str,
        range: std::ops::Range<usize>,
    ) -> anyhow::Result<()> {
        let api = Arc::new(self.clone());
        let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(range)
            .map(|index| {
                let api = api.clone();
                let user = format!("{prefix}{index}");
                async move { api.create_user(&user).await }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn create_user(&self, user: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!("{}/v1/server/users/{user}", self.base))
            .header("x-parley-tenant", TENANT)
            .basic_auth(KEY_ID, Some(SECRET))
            .json(&json!({"name": user}))
            .send()
            .await?;
        check(response, "create user").await.map(|_| ())
    }

    /// Creates a group owned by `members[0]` with every user of `members`,
    /// adding those past the first thousand one request at a time.
    pub async fn create_group(&self, name: &str, members: &[String]) -> anyhow::Result<String> {
        let Some((owner, rest)) = members.split_first() else {
            bail!("a group needs at least one member");
        };
        let owner_token = token(owner)?;
        let first: Vec<&String> = rest.iter().take(MAX_GROUP_CREATE).collect();
        let response = self
            .http
            .post(format!("{}/v1/channels/group", self.base))
            .header("x-parley-tenant", TENANT)
            .bearer_auth(&owner_token)
            .json(&json!({"name": name, "members": first}))
            .send()
            .await?;
        let channel = check(response, "create group").await?;
        let Some(channel_id) = channel["id"].as_str().map(str::to_owned) else {
            bail!("create group returned no id: {channel}");
        };

        let results: Vec<anyhow::Result<()>> =
            futures_util::stream::iter(rest.iter().skip(MAX_GROUP_CREATE))
                .map(|user| self.add_member(&channel_id, &owner_token, user))
                .buffer_unordered(SETUP_CONCURRENCY)
                .collect()
                .await;
        results.into_iter().collect::<anyhow::Result<()>>()?;
        Ok(channel_id)
    }

    async fn add_member(
        &self,
        channel_id: &str,
        owner_token: &str,
        user: &str,
    ) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/v1/channels/{channel_id}/members", self.base))
            .header("x-parley-tenant", TENANT)
            .bearer_auth(owner_token)
            .json(&json!({"user_id": user}))
            .send()
            .await?;
        check(response, "add member").await.map(|_| ())
    }

    /// Sends a text message to `channel` as `user` over REST and returns
    /// its seq.
    pub async fn send_text(
        &self,
        user: &str,
        channel: &str,
        client_id: &str,
        text: &str,
    ) -> anyhow::Result<u64> {
        let response = self
            .http
            .post(format!("{}/v1/channels/{channel}/messages", self.base))
            .header("x-parley-tenant", TENANT)
            .bearer_auth(token(user)?)
            .json(&json!({"client_id": client_id, "content": {"kind": "text", "text": text}}))
            .send()
            .await?;
        let body = check(response, "send message").await?;
        match body["message"]["seq"].as_u64() {
            Some(seq) => Ok(seq),
            None => bail!("send message returned no seq: {body}"),
        }
    }

    /// Reads a counter or gauge from `/metrics`, summed over its labels.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(sum_metric(&text, name))
    }
}

async fn check(response: reqwest::Response, operation: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{operation} failed with {status}: {body}");
    }
    Ok(body)
}

/// Sums every sample of metric `name` in Prometheus text format.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_summed_over_labels() {
        let text = "# HELP parley_deliveries_total x\nparley_deliveries_total{tenant=\"a\"} 3\n\
                    parley_deliveries_total{tenant=\"b\"} 4\nparley_deliveries_other 9\n";
        assert_eq!(sum_metric(text, "parley_deliveries_total"), 7.0);
    }

    #[test]
    fn metric_missing() {
        assert_eq!(sum_metric("", "parley_deliveries_total"), 0.0);
    }
}
