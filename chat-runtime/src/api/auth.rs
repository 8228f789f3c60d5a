//! Request authentication: which tenant a request is for, and who makes it.
//!
//! Every request names its tenant, in the `X-Parley-Tenant` header or the
//! `tenant` query parameter. User requests carry a user token; server API
//! requests carry an API key with HTTP Basic authentication.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;

use super::{ApiError, SharedState};
use crate::auth::{self, TokenError, VerifiedToken};
use crate::chat::ChatError;
use crate::tenant::Tenant;
use crate::ws::protocol::BEARER_PREFIX;

pub const TENANT_HEADER: &str = "x-parley-tenant";

/// Finds the tenant a request names, or returns `None` when it names none.
pub fn tenant_from_parts(
    state: &SharedState,
    parts: &Parts,
) -> Option<Result<Arc<Tenant>, ChatError>> {
    let from_header = parts
        .headers
        .get(TENANT_HEADER)
        .map(|value| value.to_str().unwrap_or(""));
    let from_query = query_param(parts, "tenant");
    let id = from_header.map(str::to_owned).or(from_query)?;
    Some(state.tenants.get(&id).ok_or_else(|| {
        ChatError::new(
            StatusCode::NOT_FOUND,
            "tenant_not_found",
            "no such tenant is served here",
        )
    }))
}

fn require_tenant(state: &SharedState, parts: &Parts) -> Result<Arc<Tenant>, ChatError> {
    let tenant = tenant_from_parts(state, parts).unwrap_or_else(|| {
        Err(ChatError::new(
            StatusCode::BAD_REQUEST,
            "tenant_missing",
            "name the tenant in the X-Parley-Tenant header or the tenant query parameter",
        ))
    })?;
    check_origin(&tenant, &parts.headers)?;
    Ok(tenant)
}

/// Rejects browser requests from origins the tenant does not allow.
/// Requests without an `Origin` header come from servers and native apps.
pub fn check_origin(tenant: &Tenant, headers: &HeaderMap) -> Result<(), ChatError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let allowed = origin
        .to_str()
        .is_ok_and(|origin| tenant.settings().origin_allowed(origin));
    if allowed {
        Ok(())
    } else {
        Err(ChatError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin is not in the tenant's allowed_origins",
        ))
    }
}

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    form_pairs(query)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        Some((percent_decode(key)?, percent_decode(value)?))
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Sources a user token may come from. REST takes only the `Authorization`
/// header; the WebSocket upgrade also takes the `bearer.<token>` subprotocol
/// and, for browsers, the `access_token` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSources {
    HeaderOnly,
    WebSocket,
}

fn token_from(parts: &Parts, sources: TokenSources) -> Option<String> {
    let from_header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());
    if from_header.is_some() || sources == TokenSources::HeaderOnly {
        return from_header;
    }
    let from_protocol = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| {
            protocol
                .trim()
                .strip_prefix(BEARER_PREFIX)
                .map(str::to_owned)
        });
    from_protocol.or_else(|| query_param(parts, "access_token"))
}

/// An authenticated user of a tenant.
pub struct UserAuth {
    pub tenant: Arc<Tenant>,
    pub user_id: String,
    pub token: VerifiedToken,
}

impl UserAuth {
    /// Checks the tenant, the origin, the token and that the user exists.
    pub async fn authenticate(
        state: &SharedState,
        parts: &Parts,
        sources: TokenSources,
    ) -> Result<UserAuth, ChatError> {
        let tenant = require_tenant(state, parts)?;
        let token = token_from(parts, sources).ok_or_else(|| token_error(TokenError::Missing))?;
        let verified = auth::verify_user_token(
            &tenant.settings(),
            &token,
            state.server.token_leeway_seconds,
        )
        .map_err(token_error)?;

        let auth_state = tenant.store.user_auth_state(&verified.user_id).await?;
        let Some(auth_state) = auth_state else {
            return Err(ChatError::new(
                StatusCode::UNAUTHORIZED,
                "user_not_found",
                "the token's user does not exist; create it through the server API first",
            ));
        };
        if auth_state.deleted {
            return Err(ChatError::new(
                StatusCode::UNAUTHORIZED,
                "user_deleted",
                "the token's user was deleted",
            ));
        }
        if let Some(until) = auth_state.banned_until {
            let message = if until == crate::store::Millis::MAX {
                "the user is banned from this chat".to_owned()
            } else {
                format!(
                    "the user is banned from this chat until {until} (milliseconds since the Unix epoch)"
                )
            };
            return Err(ChatError::new(
                StatusCode::FORBIDDEN,
                "user_banned",
                message,
            ));
        }
        let issued_at = verified.issued_at.map_or(0, |iat| iat as i64);
        if auth_state
            .tokens_not_before
            .is_some_and(|not_before| issued_at < not_before)
        {
            return Err(token_error(TokenError::Invalid));
        }
        Ok(UserAuth {
            user_id: verified.user_id.clone(),
            tenant,
            token: verified,
        })
    }
}

fn token_error(error: TokenError) -> ChatError {
    ChatError::new(StatusCode::UNAUTHORIZED, error.code(), error.to_string())
}

impl FromRequestParts<SharedState> for UserAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let result = UserAuth::authenticate(state, parts, TokenSources::HeaderOnly).await;
        result.map_err(ApiError)
    }
}

/// A tenant's own backend, authenticated with an API key.
pub struct ServerAuth {
    pub tenant: Arc<Tenant>,
}

impl FromRequestParts<SharedState> for ServerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let result = authenticate_server(state, parts);
        result.map_err(ApiError)
    }
}

fn authenticate_server(state: &SharedState, parts: &Parts) -> Result<ServerAuth, ChatError> {
    let tenant = require_tenant(state, parts)?;
    let invalid = || {
        ChatError::new(
            StatusCode::UNAUTHORIZED,
            "api_key_invalid",
            "send the tenant's API key id and secret with HTTP Basic authentication",
        )
    };
    let encoded = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .ok_or_else(invalid)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid())?;
    let split = decoded
        .iter()
        .position(|byte| *byte == b':')
        .ok_or_else(invalid)?;
    let key_id = std::str::from_utf8(&decoded[..split]).map_err(|_| invalid())?;
    if !auth::check_api_key(&tenant.settings(), key_id, &decoded[split + 1..]) {
        return Err(invalid());
    }
    Ok(ServerAuth { tenant })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Eb+c").as_deref(), Some("a.b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%E1%BA%BF").as_deref(), Some("ế"));
    }

    #[test]
    fn query_pairs() {
        let pairs: Vec<_> = form_pairs("tenant=acme&access_token=x.y.z&flag").collect();
        assert_eq!(pairs[0], ("tenant".into(), "acme".into()));
        assert_eq!(pairs[1], ("access_token".into(), "x.y.z".into()));
        assert_eq!(pairs[2], ("flag".into(), "".into()));
    }
}
