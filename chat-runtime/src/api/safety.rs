//! Routes for blocks between users (user API) and for bans and mutes (server
//! API).

use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::channels::{JsonBody, PathParams, QueryParams};
use super::{ApiResult, ServerAuth, UserAuth};
use crate::chat::{self, ChatError, now_millis};
use crate::limits;
use crate::store::{Restriction, RestrictionKind};

/// Maximum duration of a ban or mute: ten years. A restriction without
/// `duration_seconds` lasts until it is lifted.
const MAX_DURATION_SECONDS: u64 = 10 * 366 * 24 * 3600;
/// Maximum reason, in bytes.
const MAX_REASON_BYTES: usize = 512;

#[derive(Serialize)]
pub struct BlockedUsers {
    blocked_users: Vec<String>,
}

pub async fn list_blocks(auth: UserAuth) -> ApiResult<Json<BlockedUsers>> {
    let blocked_users = auth.tenant.store.blocked_users(&auth.user_id).await?;
    Ok(Json(BlockedUsers { blocked_users }))
}

pub async fn block(
    auth: UserAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    chat::set_block(&auth.tenant, &auth.user_id, &user_id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unblock(
    auth: UserAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    chat::set_block(&auth.tenant, &auth.user_id, &user_id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictRequest {
    kind: RestrictionKind,
    /// The channel, or the whole tenant when absent.
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(default)]
    duration_seconds: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Serialize)]
pub struct RestrictionResponse {
    restriction: Restriction,
}

#[derive(Serialize)]
pub struct RestrictionsResponse {
    restrictions: Vec<Restriction>,
}

/// Bans or mutes a user, replacing a restriction of the same kind in the
/// same scope.
pub async fn restrict(
    auth: ServerAuth,
    PathParams(user_id): PathParams<String>,
    JsonBody(request): JsonBody<RestrictRequest>,
) -> ApiResult<Json<RestrictionResponse>> {
    if let Some(duration) = request.duration_seconds
        && !(1..=MAX_DURATION_SECONDS).contains(&duration)
    {
        return Err(ChatError::invalid(format!(
            "duration_seconds must be between 1 and {MAX_DURATION_SECONDS}; leave it out for a restriction until lifted"
        ))
        .into());
    }
    if request.channel_id.as_deref() == Some("") {
        return Err(ChatError::invalid(
            "channel_id must name a channel; leave it out to restrict the user in the whole tenant",
        )
        .into());
    }
    if let Some(reason) = &request.reason
        && (reason.len() > MAX_REASON_BYTES || limits::has_control_char(reason))
    {
        return Err(ChatError::invalid(format!(
            "reason must be at most {MAX_REASON_BYTES} bytes without control characters"
        ))
        .into());
    }
    let exists = auth
        .tenant
        .store
        .user_auth_state(&user_id)
        .await?
        .is_some_and(|state| !state.deleted);
    if !exists {
        return Err(ChatError::not_found().into());
    }

    let now = now_millis();
    let restriction = Restriction {
        user_id,
        channel_id: request.channel_id,
        kind: request.kind,
        until: request
            .duration_seconds
            .map(|duration| now + (duration * 1000) as i64),
        reason: request.reason,
        created_at: now,
    };
    chat::restrict(&auth.tenant, restriction.clone()).await?;
    Ok(Json(RestrictionResponse { restriction }))
}

/// Returns the user's bans and mutes in force.
pub async fn list_restrictions(
    auth: ServerAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<RestrictionsResponse>> {
    if auth.tenant.store.user_auth_state(&user_id).await?.is_none() {
        return Err(ChatError::not_found().into());
    }
    let restrictions = auth
        .tenant
        .store
        .restrictions(&user_id, now_millis())
        .await?;
    Ok(Json(RestrictionsResponse { restrictions }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiftQuery {
    #[serde(default)]
    channel_id: Option<String>,
}

pub async fn lift(
    auth: ServerAuth,
    PathParams((user_id, kind)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<LiftQuery>,
) -> ApiResult<StatusCode> {
    let kind = match kind.as_str() {
        "ban" => RestrictionKind::Ban,
        "mute" => RestrictionKind::Mute,
        _ => return Err(ChatError::invalid("the kind must be ban or mute").into()),
    };
    let lifted = chat::lift(&auth.tenant, &user_id, query.channel_id.as_deref(), kind).await?;
    if lifted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ChatError::not_found().into())
    }
}
