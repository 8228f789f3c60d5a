//! Server API for the tenant's event log: pages of events after a cursor,
//! with long polling, for analytics consumers and user activity logs.

use std::time::Duration;

use axum::Json;
use serde::{Deserialize, Serialize};

use super::channels::QueryParams;
use super::{ApiResult, ServerAuth};
use crate::chat::ChatError;
use crate::store::Event;

/// Default and maximum events per page.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// Maximum long poll. Load balancers commonly close idle requests after
/// 60 s, so polls end before that.
const MAX_WAIT_SECONDS: u64 = 50;
/// Interval between reads of the log while a long poll waits. The log is
/// shared by every replica, so a read is how a poll learns of events
/// another replica wrote. Events reach a waiting consumer within about this
/// time.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Cursor of the last event read; the oldest event kept when absent.
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    /// Seconds to wait for an event when there is none yet.
    #[serde(default)]
    wait: Option<u64>,
}

/// An event with the tenant it belongs to, as the API and webhooks send it.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope<'a> {
    pub tenant: &'a str,
    #[serde(flatten)]
    pub event: &'a Event,
}

#[derive(Serialize)]
pub struct EventsResponse<'a> {
    events: Vec<Envelope<'a>>,
    next_cursor: String,
}

/// Returns the events after `after`. With `wait`, an empty page is held
/// until an event arrives or the wait ends.
pub async fn list(
    auth: ServerAuth,
    QueryParams(query): QueryParams<EventsQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ChatError::invalid(format!("limit must be between 1 and {MAX_LIMIT}")).into());
    }
    let wait = query.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(ChatError::invalid(format!(
            "wait must be between 0 and {MAX_WAIT_SECONDS} seconds"
        ))
        .into());
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let store = &auth.tenant.store;
    let page = loop {
        let page = store.events(query.after.as_deref(), limit).await?;
        let now = tokio::time::Instant::now();
        if !page.events.is_empty() || now >= deadline {
            break page;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    };

    let response = EventsResponse {
        events: page
            .events
            .iter()
            .map(|event| Envelope {
                tenant: &auth.tenant.id,
                event,
            })
            .collect(),
        next_cursor: page.next_cursor.clone(),
    };
    let body = serde_json::to_value(&response).map_err(|error| {
        tracing::error!(tenant = %auth.tenant.id, error = %error, "Failed to encode events");
        ChatError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "failed to encode the events",
        )
    })?;
    Ok(Json(body))
}
