//! Server API for a tenant's own backend: users and user tokens.

use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::channels::{JsonBody, PathParams};
use super::{ApiResult, ServerAuth};
use crate::auth::{self, MAX_TOKEN_TTL_SECONDS};
use crate::chat::{self, ChatError};
use crate::limits;
use crate::store::{Deleter, Message, User};

/// Largest user id, display name and metadata, in bytes.
const MAX_USER_ID_BYTES: usize = 128;
const MAX_NAME_BYTES: usize = 256;
const MAX_METADATA_BYTES: usize = 4096;

/// Default lifetime of a minted user token: one hour.
const DEFAULT_TOKEN_TTL_SECONDS: u64 = 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertUser {
    name: String,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

fn check_user_id(user_id: &str) -> Result<(), ChatError> {
    let valid = !user_id.is_empty()
        && user_id.len() <= MAX_USER_ID_BYTES
        && !user_id
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || limits::is_invisible(c));
    if valid {
        Ok(())
    } else {
        Err(ChatError::invalid(format!(
            "user id must be 1 to {MAX_USER_ID_BYTES} bytes without spaces, control or invisible characters"
        )))
    }
}

pub async fn upsert_user(
    auth: ServerAuth,
    PathParams(user_id): PathParams<String>,
    JsonBody(request): JsonBody<UpsertUser>,
) -> ApiResult<Json<User>> {
    check_user_id(&user_id)?;
    let name_valid = limits::has_visible_char(&request.name)
        && !limits::has_control_char(&request.name)
        && request.name.len() <= MAX_NAME_BYTES;
    if !name_valid {
        return Err(ChatError::invalid(format!(
            "name must be 1 to {MAX_NAME_BYTES} bytes with a visible character and no control characters"
        ))
        .into());
    }
    let metadata = request.metadata.unwrap_or_else(|| serde_json::json!({}));
    if !metadata.is_object() {
        return Err(ChatError::invalid("metadata must be a JSON object").into());
    }
    let depth = crate::limits::json_depth(&metadata);
    if depth > crate::limits::MAX_JSON_DEPTH {
        return Err(ChatError::invalid(format!(
            "metadata nests {depth} levels deep; the limit is {}",
            crate::limits::MAX_JSON_DEPTH
        ))
        .into());
    }
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(ChatError::invalid(format!(
            "metadata must be at most {MAX_METADATA_BYTES} bytes as JSON"
        ))
        .into());
    }
    // Memberships and direct channels outlive a deleted user, so a new user
    // under the old id would inherit the old user's conversations.
    let existing = auth.tenant.store.user_auth_state(&user_id).await?;
    if existing.is_some_and(|state| state.deleted) {
        return Err(ChatError::new(
            StatusCode::CONFLICT,
            "user_deleted",
            "this user id belonged to a deleted user and cannot be reused",
        )
        .into());
    }
    let user = auth
        .tenant
        .store
        .upsert_user(&user_id, &request.name, metadata, chat::now_millis())
        .await?;
    Ok(Json(user))
}

pub async fn get_user(
    auth: ServerAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<User>> {
    let user = auth.tenant.store.get_user(&user_id).await?;
    user.map(Json).ok_or_else(|| ChatError::not_found().into())
}

pub async fn delete_user(
    auth: ServerAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    chat::delete_user(&auth.tenant, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub struct DeletedMessage {
    message: Message,
}

/// Deletes any message of the tenant, for moderation by the tenant's
/// backend. Deleting a deleted message succeeds again.
pub async fn delete_message(
    auth: ServerAuth,
    PathParams((channel_id, seq)): PathParams<(String, String)>,
) -> ApiResult<Json<DeletedMessage>> {
    let seq = super::messages::parse_seq(&seq)?;
    let change = chat::delete_message(&auth.tenant, Deleter::Server, &channel_id, seq).await?;
    Ok(Json(DeletedMessage {
        message: change.message,
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

#[derive(Serialize)]
pub struct TokenResponse {
    token: String,
    expires_at: u64,
}

#[derive(Serialize)]
pub struct RevokeResponse {
    /// Tokens issued (`iat`) before this second are rejected.
    not_before: i64,
}

/// Rejects every token of the user issued so far and closes the sockets
/// that use one, on every replica, within the relay's delivery time.
pub async fn revoke_tokens(
    auth: ServerAuth,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<Json<RevokeResponse>> {
    let not_before = chat::revoke_tokens(&auth.tenant, &user_id).await?;
    Ok(Json(RevokeResponse { not_before }))
}

pub async fn mint_token(
    auth: ServerAuth,
    PathParams(user_id): PathParams<String>,
    body: Bytes,
) -> ApiResult<Json<TokenResponse>> {
    // The body is optional, so an empty one means the defaults.
    let request: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            ChatError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("invalid token request: {error}"),
            )
        })?
    };
    let ttl = request.ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL_SECONDS);
    if !(1..=MAX_TOKEN_TTL_SECONDS).contains(&ttl) {
        return Err(ChatError::invalid(format!(
            "ttl_seconds must be between 1 and {MAX_TOKEN_TTL_SECONDS}"
        ))
        .into());
    }

    let state = auth.tenant.store.user_auth_state(&user_id).await?;
    let Some(state) = state.filter(|state| !state.deleted) else {
        return Err(ChatError::not_found().into());
    };
    let now = auth::unix_now();
    // A revocation rejects tokens issued before the second after it, so a
    // token minted in that second carries the bound as its `iat`.
    let not_before = state
        .tokens_not_before
        .map_or(0, |bound| bound.max(0) as u64);
    let issued_at = now.max(not_before);
    let settings = auth.tenant.settings();
    let token = auth::mint_user_token_issued_at(&settings, &user_id, issued_at, now + ttl).map_err(|error| {
        tracing::error!(tenant = %auth.tenant.id, error = %error, "Failed to sign a user token");
        ChatError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "failed to sign the token")
    })?;
    Ok(Json(TokenResponse {
        token,
        expires_at: now + ttl,
    }))
}
