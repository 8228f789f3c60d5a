//! HTTP routes: the user REST API, the server API, the WebSocket upgrade,
//! health and metrics.

mod auth;
mod channels;
pub mod events;
mod messages;
mod moderation;
mod safety;
mod server_api;
mod templates;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::{ServerAuth, TokenSources, UserAuth, tenant_from_parts};

use crate::chat::ChatError;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::tenant::Tenants;

/// Everything request handlers share.
pub struct AppState {
    pub tenants: Tenants,
    pub metrics: Metrics,
    pub server: ServerConfig,
    /// Flips to true once when shutdown starts.
    pub shutdown: watch::Receiver<bool>,
    /// Every WebSocket session, so shutdown can wait for them to close.
    pub connections: TaskTracker,
    pub ready: AtomicBool,
    /// The Redis relay to other replicas, when configured.
    pub relay: Option<Arc<Relay>>,
}

pub type SharedState = Arc<AppState>;

/// Completes once shutdown has started (at once if it already has).
pub async fn shutdown_started(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens at shutdown.
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// Error body of every REST response that is not a success:
/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct ApiError(pub ChatError);

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

/// Code of an error response, left in the response's extensions for
/// [`count_errors`].
#[derive(Debug, Clone, Copy)]
struct ErrorCode(&'static str);

/// Counts every error response by tenant and code. Tenants that are not
/// served here count as `unknown`, so a client cannot create metric labels.
async fn count_errors(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let tenant = match tenant_from_parts(&state, &parts) {
        Some(Ok(tenant)) => tenant.id.clone(),
        _ => String::from("unknown"),
    };
    let response = next.run(Request::from_parts(parts, body)).await;
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        state.metrics.error(&tenant, code);
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        let retry_after_ms = error.retry_after.map(|wait| wait.as_millis() as u64);
        let body = ErrorBody {
            error: ErrorDetail {
                code: error.code,
                message: &error.message,
                retry_after_ms,
            },
        };
        let mut response = (error.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(error.code));
        if let Some(wait) = error.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl<E: Into<ChatError>> From<E> for ApiError {
    fn from(error: E) -> Self {
        ApiError(error.into())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Builds the router of the separate metrics listener.
pub fn metrics_router(state: SharedState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Builds the router with CORS and every route. `/metrics` is part of it
/// only when no separate metrics listener is configured.
pub fn router(state: SharedState) -> Router {
    let user_api = Router::new()
        .route("/v1/me", get(channels::me))
        .route("/v1/me/blocks", get(safety::list_blocks))
        .route(
            "/v1/me/blocks/{user_id}",
            put(safety::block).delete(safety::unblock),
        )
        .route("/v1/me/templates", get(templates::list))
        .route(
            "/v1/me/templates/{template_id}",
            put(templates::put).delete(templates::delete),
        )
        .route(
            "/v1/me/away-message",
            get(templates::get_away_message)
                .put(templates::put_away_message)
                .delete(templates::delete_away_message),
        )
        .route("/v1/reports", post(moderation::file))
        .route("/v1/channels", get(channels::list))
        .route("/v1/channels/direct", post(channels::open_direct))
        .route("/v1/channels/group", post(channels::create_group))
        .route("/v1/channels/{channel_id}", get(channels::get_one))
        .route(
            "/v1/channels/{channel_id}/members",
            post(channels::add_member),
        )
        .route(
            "/v1/channels/{channel_id}/members/{user_id}",
            delete(channels::remove_member),
        )
        .route(
            "/v1/channels/{channel_id}/messages",
            get(channels::history).post(channels::send),
        )
        .route(
            "/v1/channels/{channel_id}/messages/{seq}",
            get(messages::get_one)
                .patch(messages::edit)
                .delete(messages::delete),
        )
        .route(
            "/v1/channels/{channel_id}/messages/{seq}/reactions",
            get(messages::list_reactions),
        )
        .route(
            "/v1/channels/{channel_id}/messages/{seq}/reactions/{reaction}",
            put(messages::add_reaction).delete(messages::remove_reaction),
        )
        .route(
            "/v1/channels/{channel_id}/messages/{seq}/receipts",
            get(messages::receipts),
        )
        .route(
            "/v1/channels/{channel_id}/slow-mode",
            put(moderation::set_slow_mode),
        )
        .route("/v1/channels/{channel_id}/read", post(channels::mark_read))
        .route(
            "/v1/channels/{channel_id}/delivered",
            post(messages::mark_delivered),
        )
        .route(
            "/v1/channels/{channel_id}/presence",
            get(channels::presence),
        )
        .route("/v1/ws", get(crate::ws::upgrade));

    let server_api = Router::new()
        .route(
            "/v1/server/users/{user_id}",
            put(server_api::upsert_user)
                .get(server_api::get_user)
                .delete(server_api::delete_user),
        )
        .route(
            "/v1/server/users/{user_id}/tokens",
            post(server_api::mint_token),
        )
        .route(
            "/v1/server/users/{user_id}/revoke-tokens",
            post(server_api::revoke_tokens),
        )
        .route(
            "/v1/server/channels/{channel_id}/messages/{seq}",
            delete(server_api::delete_message),
        )
        .route(
            "/v1/server/channels/{channel_id}/slow-mode",
            put(moderation::server_set_slow_mode),
        )
        .route("/v1/server/reports", get(moderation::list))
        .route("/v1/server/reports/{report_id}", get(moderation::get_one))
        .route(
            "/v1/server/reports/{report_id}/resolve",
            post(moderation::resolve),
        )
        .route("/v1/server/events", get(events::list))
        .route(
            "/v1/server/users/{user_id}/restrictions",
            get(safety::list_restrictions).post(safety::restrict),
        )
        .route(
            "/v1/server/users/{user_id}/restrictions/{kind}",
            delete(safety::lift),
        )
        .route(
            "/v1/server/webhooks/{name}/dead-letters",
            get(webhooks::list),
        )
        .route(
            "/v1/server/webhooks/{name}/dead-letters/{event_id}",
            delete(webhooks::remove),
        )
        .route(
            "/v1/server/webhooks/{name}/dead-letters/{event_id}/replay",
            post(webhooks::replay),
        );

    let mut operations = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if state.server.metrics_listen.is_none() {
        operations = operations.route("/metrics", get(metrics));
    }

    user_api
        .merge(server_api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_errors,
        ))
        .layer(cors_layer(Arc::clone(&state)))
        .merge(operations)
        .with_state(state)
}

/// CORS per tenant. A request that names its tenant (header
/// `X-Parley-Tenant` or query `tenant`) gets the CORS headers only when that
/// tenant allows its origin. A preflight cannot carry the tenant header, so
/// a preflight that names no tenant is allowed when any tenant allows the
/// origin; the actual request is then checked against its own tenant and
/// rejected with `origin_not_allowed` if that tenant does not allow it.
fn cors_layer(state: SharedState) -> CorsLayer {
    let allow = AllowOrigin::predicate(move |origin: &HeaderValue, parts| {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        match tenant_from_parts(&state, parts) {
            Some(Ok(tenant)) => tenant.settings().origin_allowed(origin),
            Some(Err(_)) => false,
            None => state.tenants.any_allows_origin(origin),
        }
    });
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static(auth::TENANT_HEADER),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<SharedState>) -> Response {
    if !state.ready.load(Ordering::Acquire) || *state.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response();
    }
    let mut unreachable: Vec<String> = state
        .tenants
        .all()
        .iter()
        .filter(|tenant| !tenant.store.is_ready())
        .map(|tenant| tenant.id.clone())
        .collect();
    if unreachable.is_empty() {
        // A replica without Redis still serves its own sockets and stores
        // every message, so it stays in the Service and only reports the degradation.
        return match state.relay.as_ref().and_then(|relay| relay.degraded()) {
            Some(detail) => format!("ready, degraded: {detail}").into_response(),
            None => "ready".into_response(),
        };
    }
    unreachable.sort_unstable();
    let message = format!(
        "not ready: the store of tenant {} is unreachable",
        unreachable.join(", ")
    );
    (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
}

async fn metrics(State(state): State<SharedState>) -> Response {
    for tenant in state.tenants.all() {
        state
            .metrics
            .connections
            .get_or_create(&Metrics::tenant(&tenant.id))
            .set(tenant.hub.connection_count() as i64);
        let reads = i64::try_from(tenant.store.reads_started()).unwrap_or(i64::MAX);
        state
            .metrics
            .store_reads
            .get_or_create(&Metrics::tenant(&tenant.id))
            .set(reads);
    }
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError(ChatError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that HTTP method",
    ))
}

async fn not_found() -> ApiError {
    ApiError(ChatError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such route",
    ))
}
