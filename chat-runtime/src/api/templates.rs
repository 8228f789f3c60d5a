//! Routes for message templates and away messages (user API).

use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::channels::{JsonBody, PathParams};
use super::{ApiResult, UserAuth};
use crate::chat::{self, ChatError, now_millis, templates::Templates};
use crate::extensions::{AWAY_MESSAGE_KEY, AwayMessage, away_message};
use crate::store::Content;
use crate::templates::Template;

pub async fn list(auth: UserAuth) -> ApiResult<Json<Templates>> {
    Ok(Json(
        chat::templates::list(&auth.tenant, &auth.user_id).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    #[serde(default)]
    title: Option<String>,
    text: String,
}

#[derive(Serialize)]
pub struct TemplateResponse {
    template: Template,
}

/// Creates (201) or replaces (200) one of the caller's templates.
pub async fn put(
    auth: UserAuth,
    PathParams(id): PathParams<String>,
    JsonBody(request): JsonBody<TemplateRequest>,
) -> ApiResult<(StatusCode, Json<TemplateResponse>)> {
    let template = Template {
        id,
        title: request.title,
        text: request.text,
    };
    let created = chat::templates::save(&auth.tenant, &auth.user_id, template.clone()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(TemplateResponse { template })))
}

pub async fn delete(auth: UserAuth, PathParams(id): PathParams<String>) -> ApiResult<StatusCode> {
    if chat::templates::remove(&auth.tenant, &auth.user_id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ChatError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("you have no template with id {id:?}"),
        )
        .into())
    }
}

#[derive(Serialize)]
pub struct AwayMessageResponse {
    away_message: AwayMessage,
}

pub async fn get_away_message(auth: UserAuth) -> ApiResult<Json<AwayMessageResponse>> {
    match away_message(&auth.tenant, &auth.user_id).await? {
        Some(away_message) => Ok(Json(AwayMessageResponse { away_message })),
        None => Err(no_away_message().into()),
    }
}

/// Sets the caller's away message. The text passes the tenant's limits and
/// moderation rules now, so a user learns at once that a rule blocks it. A
/// masking rule stores the masked text.
pub async fn put_away_message(
    auth: UserAuth,
    JsonBody(request): JsonBody<AwayMessage>,
) -> ApiResult<Json<AwayMessageResponse>> {
    let tenant = &auth.tenant;
    let settings = tenant.settings();
    let content = Content::Text { text: request.text };
    crate::limits::check_content(&content, &settings.limits, &settings.attachment_hosts)?;
    let moderated = settings.moderation.moderate(content);
    if let Some(blocked) = moderated.blocked() {
        return Err(ChatError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            blocked.reason,
            "the away message breaks one of the tenant's moderation rules",
        )
        .into());
    }
    let Content::Text { text } = moderated.content else {
        return Err(ChatError::invalid("the away message must be text").into());
    };
    let away_message = AwayMessage {
        text,
        enabled: request.enabled,
    };
    let value = serde_json::to_value(&away_message).unwrap_or_default();
    tenant
        .store
        .put_user_setting(&auth.user_id, AWAY_MESSAGE_KEY, Some(value), now_millis())
        .await
        .map_err(ChatError::from)?;
    Ok(Json(AwayMessageResponse { away_message }))
}

pub async fn delete_away_message(auth: UserAuth) -> ApiResult<StatusCode> {
    let removed = auth
        .tenant
        .store
        .put_user_setting(&auth.user_id, AWAY_MESSAGE_KEY, None, now_millis())
        .await
        .map_err(ChatError::from)?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_away_message().into())
    }
}

fn no_away_message() -> ChatError {
    ChatError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "you have no away message; set one with PUT",
    )
}
