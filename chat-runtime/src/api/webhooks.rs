//! Server API for webhook dead letters: events an endpoint did not accept
//! after its last attempt, which the tenant can read, send again or drop.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::channels::{PathParams, QueryParams};
use super::{ApiResult, ServerAuth, SharedState};
use crate::chat::{ChatError, now_millis};
use crate::store::DeadLetter;
use crate::tenant::Tenant;
use crate::webhooks::{self, Attempt, WebhookSettings};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LettersQuery {
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct LettersResponse {
    dead_letters: Vec<DeadLetter>,
}

#[derive(Serialize)]
pub struct ReplayResponse {
    delivered: bool,
}

/// Returns the configured endpoint `name`, or `not_found`.
fn endpoint(tenant: &Tenant, name: &str) -> Result<WebhookSettings, ChatError> {
    let settings = tenant.settings();
    let found = settings
        .webhooks
        .iter()
        .find(|endpoint| endpoint.name == name)
        .cloned();
    found.ok_or_else(|| {
        ChatError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no webhook endpoint named {name:?} is configured"),
        )
    })
}

/// Lists an endpoint's dead letters, oldest event first.
pub async fn list(
    auth: ServerAuth,
    PathParams(name): PathParams<String>,
    QueryParams(query): QueryParams<LettersQuery>,
) -> ApiResult<Json<LettersResponse>> {
    endpoint(&auth.tenant, &name)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ChatError::invalid(format!("limit must be between 1 and {MAX_LIMIT}")).into());
    }
    let dead_letters = auth.tenant.store.dead_letters(&name, limit).await?;
    Ok(Json(LettersResponse { dead_letters }))
}

/// Sends a dead letter to its endpoint once more. On success the letter
/// is removed; on failure it stays, with the new attempt counted, and the
/// response is 502 with the reason.
pub async fn replay(
    State(state): State<SharedState>,
    auth: ServerAuth,
    PathParams((name, event_id)): PathParams<(String, String)>,
) -> ApiResult<Json<ReplayResponse>> {
    let settings = endpoint(&auth.tenant, &name)?;
    let store = &auth.tenant.store;
    let Some(mut letter) = store.dead_letter(&name, &event_id).await? else {
        return Err(ChatError::not_found().into());
    };

    // The letter is removed only after the endpoint accepted the event, so
    // a crash in between sends it again later rather than losing it.
    let body = webhooks::payload(&auth.tenant, &letter.event).await;
    let client = crate::http::client().map_err(|error| {
        tracing::error!(error = %error, "Failed to build the HTTP client");
        ChatError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the runtime has no HTTP client",
        )
    })?;
    let outcome = webhooks::attempt_once(client, &settings, &letter.event, &body).await;
    let outcome_label = match outcome {
        Attempt::Delivered => "delivered",
        Attempt::Failed(_) => "failed",
    };
    state
        .metrics
        .webhook_deliveries
        .get_or_create(&crate::metrics::WebhookLabels {
            tenant: auth.tenant.id.clone(),
            endpoint: name.clone(),
            outcome: outcome_label,
        })
        .inc();
    match outcome {
        Attempt::Delivered => {
            store.remove_dead_letter(&name, &event_id).await?;
            Ok(Json(ReplayResponse { delivered: true }))
        }
        Attempt::Failed(reason) => {
            letter.attempts += 1;
            letter.last_error = reason.clone();
            letter.failed_at = now_millis();
            // A letter dropped while the attempt ran stays dropped.
            if store.dead_letter(&name, &event_id).await?.is_some() {
                store.add_dead_letter(&name, letter).await?;
            }
            Err(ChatError::new(
                StatusCode::BAD_GATEWAY,
                "webhook_failed",
                format!("the endpoint did not accept the event: {reason}; the dead letter is kept"),
            )
            .into())
        }
    }
}

/// Drops a dead letter without sending it.
pub async fn remove(
    auth: ServerAuth,
    PathParams((name, event_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    endpoint(&auth.tenant, &name)?;
    match auth
        .tenant
        .store
        .remove_dead_letter(&name, &event_id)
        .await?
    {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ChatError::not_found().into()),
    }
}
