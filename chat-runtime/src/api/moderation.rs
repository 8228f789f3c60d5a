//! Routes for reports and slow mode. Members report messages and users and
//! set their group's slow mode through the user API. The tenant reviews and
//! resolves reports, and sets slow mode on any group, through the server
//! API.

use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::channels::{JsonBody, PathParams, QueryParams};
use super::{ApiResult, ServerAuth, UserAuth};
use crate::chat::{self, ChatError};
use crate::store::{Channel, Report, ReportStatus, ReportTarget, ResolutionOutcome};

/// Default and maximum page of the report list.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// A message to report, with `seq`.
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    /// A user to report, when no message is named.
    #[serde(default)]
    user_id: Option<String>,
    reason: String,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Serialize)]
pub struct ReportResponse {
    report: Report,
}

/// Files a report: 201 for a new one, 200 with the open report when the
/// member already reported the same message or user.
pub async fn file(
    auth: UserAuth,
    JsonBody(request): JsonBody<ReportRequest>,
) -> ApiResult<(StatusCode, Json<ReportResponse>)> {
    let target = match (request.channel_id, request.seq, request.user_id) {
        (Some(channel_id), Some(seq), None) => ReportTarget::Message { channel_id, seq },
        (None, None, Some(user_id)) => ReportTarget::User { user_id },
        _ => {
            return Err(ChatError::invalid(
                "name either a message with channel_id and seq, or a user with user_id",
            )
            .into());
        }
    };
    let change = chat::file_report(
        &auth.tenant,
        &auth.user_id,
        target,
        request.reason,
        request.note,
    )
    .await?;
    let status = if change.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(ReportResponse {
            report: change.report,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<ReportStatus>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct ReportPage {
    reports: Vec<Report>,
    /// Id to pass as `after` for the next page; `None` when this page was
    /// not full.
    next_after: Option<String>,
}

/// Lists reports oldest first, by default the open ones.
pub async fn list(
    auth: ServerAuth,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<ReportPage>> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ChatError::invalid(format!("limit must be between 1 and {MAX_PAGE}")).into());
    }
    let status = query.status.unwrap_or(ReportStatus::Open);
    let reports = auth
        .tenant
        .store
        .reports(Some(status), query.after.as_deref(), limit)
        .await?;
    let next_after = if reports.len() == limit as usize {
        reports.last().map(|report| report.id.clone())
    } else {
        None
    };
    Ok(Json(ReportPage {
        reports,
        next_after,
    }))
}

pub async fn get_one(
    auth: ServerAuth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<ReportResponse>> {
    match auth.tenant.store.report(&id).await? {
        Some(report) => Ok(Json(ReportResponse { report })),
        None => Err(no_such_report(&id).into()),
    }
}

fn no_such_report(id: &str) -> ChatError {
    ChatError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no report with id {id:?}"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    outcome: ResolutionOutcome,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    resolved_by: Option<String>,
}

/// Resolves a report. Resolving a resolved report returns it unchanged.
pub async fn resolve(
    auth: ServerAuth,
    PathParams(id): PathParams<String>,
    JsonBody(request): JsonBody<ResolveRequest>,
) -> ApiResult<Json<ReportResponse>> {
    let change = chat::resolve_report(
        &auth.tenant,
        &id,
        request.outcome,
        request.note,
        request.resolved_by,
    )
    .await
    .map_err(|error| {
        if error.code == "not_found" {
            no_such_report(&id)
        } else {
            error
        }
    })?;
    Ok(Json(ReportResponse {
        report: change.report,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowModeRequest {
    /// Minimum seconds between two messages of one member; 0 turns slow
    /// mode off.
    seconds: u32,
}

#[derive(Serialize)]
pub struct ChannelResponse {
    channel: Channel,
}

/// Sets slow mode on a group the caller owns.
pub async fn set_slow_mode(
    auth: UserAuth,
    PathParams(channel_id): PathParams<String>,
    JsonBody(request): JsonBody<SlowModeRequest>,
) -> ApiResult<Json<ChannelResponse>> {
    let channel = chat::set_slow_mode(
        &auth.tenant,
        Some(&auth.user_id),
        &channel_id,
        request.seconds,
    )
    .await?;
    Ok(Json(ChannelResponse { channel }))
}

/// Sets slow mode on any group.
pub async fn server_set_slow_mode(
    auth: ServerAuth,
    PathParams(channel_id): PathParams<String>,
    JsonBody(request): JsonBody<SlowModeRequest>,
) -> ApiResult<Json<ChannelResponse>> {
    let channel = chat::set_slow_mode(&auth.tenant, None, &channel_id, request.seconds).await?;
    Ok(Json(ChannelResponse { channel }))
}
