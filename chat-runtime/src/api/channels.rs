//! User REST API: channels, members, history, sending and read positions.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ApiResult, SharedState, UserAuth};
use crate::chat::{self, ChatError};
use crate::store::{Channel, ChannelSummary, Content, Member, Message, Page, User};

/// Default and largest page sizes for history and channel lists.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// A JSON body whose rejections use the API's error format.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = super::ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(super::ApiError(ChatError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                rejection.body_text(),
            ))),
        }
    }
}

/// Query parameters whose rejections use the API's error format.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = super::ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(QueryParams(value)),
            Err(rejection) => Err(super::ApiError(ChatError::invalid(rejection.body_text()))),
        }
    }
}

/// Path parameters whose rejections use the API's error format. A segment
/// that is not valid UTF-8 once percent-decoded is the usual cause.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = super::ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParams(value)),
            Err(rejection) => Err(super::ApiError(ChatError::invalid(rejection.body_text()))),
        }
    }
}

pub async fn me(auth: UserAuth) -> ApiResult<Json<User>> {
    let user = auth.tenant.store.get_user(&auth.user_id).await?;
    user.map(Json).ok_or_else(|| ChatError::not_found().into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectRequest {
    user_id: String,
    #[serde(default)]
    subject: Option<String>,
}

pub async fn open_direct(
    auth: UserAuth,
    JsonBody(request): JsonBody<DirectRequest>,
) -> ApiResult<Json<Channel>> {
    if let Some(subject) = &request.subject {
        check_length("subject", subject, 256)?;
    }
    let channel = chat::open_direct(
        &auth.tenant,
        &auth.user_id,
        &request.user_id,
        request.subject.as_deref(),
    )
    .await?;
    Ok(Json(channel))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    name: String,
    #[serde(default)]
    members: Vec<String>,
}

/// Largest group created in one request; more members are added one by one.
const MAX_GROUP_CREATE: usize = 1000;

pub async fn create_group(
    auth: UserAuth,
    JsonBody(request): JsonBody<GroupRequest>,
) -> ApiResult<(StatusCode, Json<Channel>)> {
    check_length("name", &request.name, 256)?;
    if request.members.len() > MAX_GROUP_CREATE {
        return Err(ChatError::invalid(format!(
            "members lists more than {MAX_GROUP_CREATE} users"
        ))
        .into());
    }
    let channel =
        chat::create_group(&auth.tenant, &auth.user_id, &request.name, &request.members).await?;
    Ok((StatusCode::CREATED, Json(channel)))
}

fn check_length(field: &str, value: &str, max: usize) -> Result<(), ChatError> {
    if value.trim().is_empty() || value.len() > max {
        return Err(ChatError::invalid(format!(
            "{field} must be 1 to {max} bytes"
        )));
    }
    Ok(())
}

#[derive(Serialize)]
pub struct ChannelDetail {
    channel: Channel,
    members: Vec<Member>,
}

pub async fn get_one(
    auth: UserAuth,
    PathParams(channel_id): PathParams<String>,
) -> ApiResult<Json<ChannelDetail>> {
    let store = &auth.tenant.store;
    let (mut channel, members) = store.channel_for_member(&channel_id, &auth.user_id).await?;
    // The same activity as the user's channel list shows.
    channel.last_activity = store.activity_for(&channel_id, &auth.user_id).await?;
    Ok(Json(ChannelDetail { channel, members }))
}

#[derive(Serialize)]
pub struct MemberPresence {
    user_id: String,
    online: bool,
    /// Milliseconds since the epoch, or null when unknown.
    last_seen: Option<i64>,
}

#[derive(Serialize)]
pub struct ChannelPresence {
    presence: Vec<MemberPresence>,
}

/// Returns the presence of the channel's other members, for clients that
/// poll instead of subscribing over WebSocket.
pub async fn presence(
    auth: UserAuth,
    PathParams(channel_id): PathParams<String>,
) -> ApiResult<Json<ChannelPresence>> {
    let (_, members) = auth
        .tenant
        .store
        .channel_for_member(&channel_id, &auth.user_id)
        .await?;
    // Presence is a hint, so a failed read of the blocks leaves no one out
    // rather than failing the request.
    let blocked = auth
        .tenant
        .store
        .blocked_users(&auth.user_id)
        .await
        .unwrap_or_default();
    let presence = members
        .into_iter()
        .filter(|member| member.user_id != auth.user_id && !blocked.contains(&member.user_id))
        .map(|member| {
            let state = auth.tenant.presence.state(&member.user_id);
            MemberPresence {
                user_id: member.user_id,
                online: state.online,
                last_seen: state.last_seen,
            }
        })
        .collect();
    Ok(Json(ChannelPresence { presence }))
}

/// Other parameters (such as `tenant`) are ignored here.
#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<u32>,
    /// `next` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Serialize)]
pub struct ChannelList {
    channels: Vec<ChannelSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

pub async fn list(
    auth: UserAuth,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<ChannelList>> {
    let limit = page_size(query.limit)?;
    let before = match &query.cursor {
        Some(cursor) => Some(parse_cursor(cursor)?),
        None => None,
    };
    let channels = auth
        .tenant
        .store
        .list_channels(&auth.user_id, before, limit)
        .await?;
    let next = match channels.last() {
        Some(last) if channels.len() == limit as usize => Some(format!(
            "{}.{}",
            last.channel.last_activity, last.channel.id
        )),
        _ => None,
    };
    Ok(Json(ChannelList { channels, next }))
}

fn parse_cursor(cursor: &str) -> Result<(i64, String), ChatError> {
    let invalid = || ChatError::invalid("cursor is not a value returned as next");
    let (activity, id) = cursor.split_once('.').ok_or_else(invalid)?;
    Ok((activity.parse().map_err(|_| invalid())?, id.to_owned()))
}

fn page_size(limit: Option<u32>) -> Result<u32, ChatError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        Some(_) => Err(ChatError::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    user_id: String,
}

pub async fn add_member(
    auth: UserAuth,
    PathParams(channel_id): PathParams<String>,
    JsonBody(request): JsonBody<MemberRequest>,
) -> ApiResult<StatusCode> {
    let change =
        chat::add_member(&auth.tenant, &auth.user_id, &channel_id, &request.user_id).await?;
    Ok(if change.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    })
}

pub async fn remove_member(
    auth: UserAuth,
    PathParams((channel_id, user_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    chat::remove_member(&auth.tenant, &auth.user_id, &channel_id, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Other parameters (such as `tenant`) are ignored here.
#[derive(Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct HistoryPage {
    /// Oldest first.
    messages: Vec<Message>,
}

pub async fn history(
    auth: UserAuth,
    PathParams(channel_id): PathParams<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> ApiResult<Json<HistoryPage>> {
    let limit = page_size(query.limit)?;
    let page = match (query.before, query.after) {
        (Some(_), Some(_)) => {
            return Err(ChatError::invalid("give before or after, not both").into());
        }
        (Some(before), None) => Page::Before { before, limit },
        (None, Some(after)) => Page::After { after, limit },
        (None, None) => Page::Latest { limit },
    };
    let messages = auth
        .tenant
        .store
        .history(&channel_id, &auth.user_id, page)
        .await?;
    Ok(Json(HistoryPage { messages }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    client_id: String,
    content: Content,
    #[serde(default)]
    reply_to: Option<u64>,
    /// `null` counts as leaving it out, as in an edit.
    #[serde(default)]
    mentions: Option<Vec<String>>,
}

#[derive(Serialize)]
pub struct SendResponse {
    message: Message,
    duplicate: bool,
}

pub async fn send(
    State(state): State<SharedState>,
    auth: UserAuth,
    PathParams(channel_id): PathParams<String>,
    JsonBody(request): JsonBody<SendRequest>,
) -> ApiResult<(StatusCode, Json<SendResponse>)> {
    let draft = chat::Draft {
        channel_id,
        client_id: request.client_id,
        content: request.content,
        reply_to: request.reply_to,
        mentions: request.mentions.unwrap_or_default(),
    };
    let appended = chat::send_message(&auth.tenant, &state.metrics, &auth.user_id, draft).await?;
    let status = if appended.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(SendResponse {
            message: appended.message,
            duplicate: appended.duplicate,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    seq: u64,
}

#[derive(Serialize)]
pub struct ReadResponse {
    read_seq: u64,
}

pub async fn mark_read(
    auth: UserAuth,
    PathParams(channel_id): PathParams<String>,
    JsonBody(request): JsonBody<ReadRequest>,
) -> ApiResult<Json<ReadResponse>> {
    let read_seq = chat::mark_read(&auth.tenant, &auth.user_id, &channel_id, request.seq).await?;
    Ok(Json(ReadResponse { read_seq }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        assert_eq!(
            parse_cursor("1700000000000.g_abc").unwrap(),
            (1_700_000_000_000, "g_abc".into())
        );
        assert!(parse_cursor("nonsense").is_err());
    }

    #[test]
    fn page_size_bounds() {
        assert_eq!(page_size(None).unwrap(), DEFAULT_PAGE);
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(MAX_PAGE + 1)).is_err());
    }
}
