//! One webhook request: the signed body of an event and its outcome.

use serde_json::Value;

use super::WebhookSettings;
use crate::api::events::Envelope;
use crate::signature;
use crate::store::Event;
use crate::tenant::Tenant;

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// The reason, such as `HTTP 503` or `timed out`, without the URL.
    Failed(String),
}

/// Builds the body of `event`: the event as the server API shows it. A
/// `message.new` event also lists the recipients that had no socket open
/// when the body was built, so the tenant's backend can send them a push
/// notification.
pub async fn payload(tenant: &Tenant, event: &Event) -> Vec<u8> {
    let envelope = Envelope {
        tenant: &tenant.id,
        event,
    };
    let mut body = serde_json::to_value(&envelope).unwrap_or(Value::Null);
    if event.kind == "message.new"
        && let Some(channel_id) = &event.channel_id
    {
        let sender = event.data["message"]["sender_id"]
            .as_str()
            .unwrap_or_default();
        // A channel that is gone lists no recipients rather than failing the
        // delivery of an event that happened.
        let members = tenant
            .store
            .member_ids(channel_id)
            .await
            .unwrap_or_default();
        let mut offline = Vec::new();
        for member in members {
            if member == sender || tenant.presence.state(&member).online {
                continue;
            }
            // A user who blocks the sender gets no push for the message.
            let blocked = tenant
                .store
                .blocked_users(&member)
                .await
                .unwrap_or_default();
            if !blocked.iter().any(|user| user == sender) {
                offline.push(member);
            }
        }
        body["offline_recipients"] = Value::from(offline);
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Sends `body` to the endpoint once.
pub async fn attempt_once(
    client: &reqwest::Client,
    settings: &WebhookSettings,
    event: &Event,
    body: &[u8],
) -> Attempt {
    let timestamp = signature::unix_now();
    let request = client
        .post(&settings.url)
        .timeout(settings.timeout)
        .header("content-type", "application/json")
        .header(
            signature::HEADER,
            signature::sign(&settings.secret, timestamp, body),
        )
        .header("parley-event-id", &event.id)
        .header("parley-event-type", &event.kind)
        .body(body.to_vec());
    match request.send().await {
        Ok(response) if response.status().is_success() => Attempt::Delivered,
        Ok(response) => Attempt::Failed(format!("HTTP {}", response.status().as_u16())),
        Err(error) if error.is_timeout() => Attempt::Failed("timed out".to_owned()),
        Err(error) if error.is_connect() => Attempt::Failed("connection failed".to_owned()),
        Err(_) => Attempt::Failed("request failed".to_owned()),
    }
}
