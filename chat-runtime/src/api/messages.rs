//! User REST API for single messages: reading, editing and deleting one,
//! its reactions, and its receipts.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::channels::{JsonBody, PathParams};
use super::{ApiResult, SharedState, UserAuth};
use crate::chat::{self, ChatError, Receipts};
use crate::store::{Content, Deleter, Message};

/// Parses the `{seq}` part of a message path, so that a malformed number
/// gets the API's error format instead of the framework's.
pub(super) fn parse_seq(seq: &str) -> Result<u64, ChatError> {
    let digits_only = !seq.is_empty() && seq.bytes().all(|byte| byte.is_ascii_digit());
    match seq.parse::<u64>() {
        Ok(seq) if digits_only && seq > 0 => Ok(seq),
        _ => Err(ChatError::invalid(format!(
            "invalid message sequence number {seq:?}: expected an integer from 1"
        ))),
    }
}

pub async fn get_one(
    auth: UserAuth,
    PathParams((channel_id, seq)): PathParams<(String, String)>,
) -> ApiResult<Json<Message>> {
    let seq = parse_seq(&seq)?;
    let message = auth
        .tenant
        .store
        .message(&channel_id, seq, &auth.user_id)
        .await?;
    Ok(Json(message))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    content: Content,
    #[serde(default)]
    mentions: Option<Vec<String>>,
}

#[derive(Serialize)]
pub struct MessageResponse {
    message: Message,
}

pub async fn edit(
    State(state): State<SharedState>,
    auth: UserAuth,
    PathParams((channel_id, seq)): PathParams<(String, String)>,
    JsonBody(request): JsonBody<EditRequest>,
) -> ApiResult<Json<MessageResponse>> {
    let seq = parse_seq(&seq)?;
    let change = chat::edit_message(
        &auth.tenant,
        &state.metrics,
        &auth.user_id,
        &channel_id,
        seq,
        request.content,
        request.mentions,
    )
    .await?;
    Ok(Json(MessageResponse {
        message: change.message,
    }))
}

pub async fn delete(
    auth: UserAuth,
    PathParams((channel_id, seq)): PathParams<(String, String)>,
) -> ApiResult<Json<MessageResponse>> {
    let seq = parse_seq(&seq)?;
    let deleter = Deleter::Member(&auth.user_id);
    let change = chat::delete_message(&auth.tenant, deleter, &channel_id, seq).await?;
    Ok(Json(MessageResponse {
        message: change.message,
    }))
}

#[derive(Serialize)]
pub struct ReactionResponse {
    /// The reaction in its stored (NFC) form.
    reaction: String,
    /// Users with this reaction after the request.
    count: u64,
    /// False when the user already had the reaction (adding) or did not
    /// have it (removing).
    changed: bool,
}

pub async fn add_reaction(
    auth: UserAuth,
    PathParams((channel_id, seq, reaction)): PathParams<(String, String, String)>,
) -> ApiResult<Json<ReactionResponse>> {
    change_reaction(auth, channel_id, seq, reaction, true).await
}

pub async fn remove_reaction(
    auth: UserAuth,
    PathParams((channel_id, seq, reaction)): PathParams<(String, String, String)>,
) -> ApiResult<Json<ReactionResponse>> {
    change_reaction(auth, channel_id, seq, reaction, false).await
}

async fn change_reaction(
    auth: UserAuth,
    channel_id: String,
    seq: String,
    reaction: String,
    add: bool,
) -> ApiResult<Json<ReactionResponse>> {
    let seq = parse_seq(&seq)?;
    let (change, reaction) = chat::react(
        &auth.tenant,
        &auth.user_id,
        &channel_id,
        seq,
        &reaction,
        add,
    )
    .await?;
    let count = change
        .message
        .reactions
        .get(&reaction)
        .copied()
        .unwrap_or(0);
    Ok(Json(ReactionResponse {
        reaction,
        count,
        changed: change.changed,
    }))
}

#[derive(Serialize)]
pub struct ReactionsResponse {
    /// Users per reaction, each list sorted.
    reactions: BTreeMap<String, Vec<String>>,
}

pub async fn list_reactions(
    auth: UserAuth,
    PathParams((channel_id, seq)): PathParams<(String, String)>,
) -> ApiResult<Json<ReactionsResponse>> {
    let seq = parse_seq(&seq)?;
    let store = &auth.tenant.store;
    // A message that a block hides from the user is not found here either,
    // and users the viewer blocks are left out of the lists.
    store.message(&channel_id, seq, &auth.user_id).await?;
    let blocked = store.blocked_users(&auth.user_id).await?;
    let mut reactions = store
        .reaction_users(&channel_id, seq, &auth.user_id)
        .await?;
    if !blocked.is_empty() {
        for users in reactions.values_mut() {
            users.retain(|user| !blocked.contains(user));
        }
        reactions.retain(|_, users| !users.is_empty());
    }
    Ok(Json(ReactionsResponse { reactions }))
}

pub async fn receipts(
    auth: UserAuth,
    PathParams((channel_id, seq)): PathParams<(String, String)>,
) -> ApiResult<Json<Receipts>> {
    let seq = parse_seq(&seq)?;
    let receipts = chat::receipts(&auth.tenant, &auth.user_id, &channel_id, seq).await?;
    Ok(Json(receipts))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveredRequest {
    seq: u64,
}

#[derive(Serialize)]
pub struct DeliveredResponse {
    delivered_seq: u64,
}

pub async fn mark_delivered(
    auth: UserAuth,
    PathParams(channel_id): PathParams<String>,
    JsonBody(request): JsonBody<DeliveredRequest>,
) -> ApiResult<Json<DeliveredResponse>> {
    let delivered_seq =
        chat::mark_delivered(&auth.tenant, &auth.user_id, &channel_id, request.seq).await?;
    Ok(Json(DeliveredResponse { delivered_seq }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_must_be_positive_integer() {
        assert_eq!(parse_seq("7").unwrap(), 7);
        assert!(parse_seq("0").is_err());
        assert!(parse_seq("-1").is_err());
        assert!(parse_seq("abc").is_err());
        assert!(parse_seq("+1").is_err());
        assert!(parse_seq("18446744073709551616").is_err());
    }
}
