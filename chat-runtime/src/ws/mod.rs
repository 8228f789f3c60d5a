//! The WebSocket endpoint `/v1/ws`.

pub mod protocol;
mod session;
mod typing;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use crate::api::{ApiError, SharedState, TokenSources, UserAuth};
use crate::chat::ChatError;
use crate::config::max_frame_bytes;
use crate::hub::{ConnectionId, Queued, TooManyConnections};
use crate::tenant::Tenant;

/// Bytes tungstenite reads from the socket at a time. Its default of
/// 128 KiB per connection would dominate the memory of idle sockets; chat
/// frames are small, and a larger frame is simply read in several steps.
pub const READ_BUFFER_BYTES: usize = 4096;

/// Bytes of frames tungstenite collects before it writes them to the
/// socket without waiting for a flush. The session flushes after each batch
/// of frames, so this only caps the bytes of one batch that wait before
/// they are written. tungstenite keeps the buffer's capacity after writing
/// it, so a socket that once wrote a batch keeps up to about twice this.
pub const WRITE_BUFFER_BYTES: usize = 2048;

/// Ratio of tungstenite's frame limit to the limit the session enforces.
const HARD_FRAME_LIMIT_FACTOR: usize = 4;

/// Checks the token, the origin and the socket limit, then upgrades.
/// Failures are answered with an HTTP error before the upgrade, so clients
/// see the same codes as on REST.
pub async fn upgrade(State(state): State<SharedState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    if *state.shutdown.borrow() {
        let error = ChatError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        );
        return ApiError(error).into_response();
    }

    let auth = match UserAuth::authenticate(&state, &parts, TokenSources::WebSocket).await {
        Ok(auth) => auth,
        Err(error) => return ApiError(error).into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let error = ChatError::new(
                rejection.status(),
                "websocket_upgrade_required",
                rejection.body_text(),
            );
            return ApiError(error).into_response();
        }
    };

    let settings = auth.tenant.settings();
    let registration = Registration::new(
        &auth.tenant,
        &auth.user_id,
        settings.limits.max_sockets_per_user,
    );
    let Ok((registration, outbound)) = registration else {
        let error = ChatError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!(
                "this user already has {} open sockets, the tenant's limit",
                settings.limits.max_sockets_per_user
            ),
        );
        return ApiError(error).into_response();
    };

    // tungstenite stops reading at its limit and leaves the rest of the frame
    // unread, so the kernel resets the connection and the client never sees
    // a close code. Its limit is therefore a multiple of ours: frames between
    // the two are read whole and closed with 1009 by the session.
    let frame_limit = max_frame_bytes(&settings.limits);
    let mut upgrade = upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(frame_limit * 4)
        .max_message_size(frame_limit * HARD_FRAME_LIMIT_FACTOR)
        .max_frame_size(frame_limit * HARD_FRAME_LIMIT_FACTOR);
    if offers_subprotocol(&upgrade) {
        upgrade.set_selected_protocol(HeaderValue::from_static(protocol::SUBPROTOCOL));
    }

    let connections = state.connections.clone();
    upgrade.on_upgrade(move |socket| {
        connections.track_future(session::run(state, socket, auth, registration, outbound))
    })
}

/// A socket's place in its tenant's hub. Dropping it releases the place,
/// also when the upgrade never completes (the client reset the connection
/// before the 101 response) or the session task panics, so a user's socket
/// limit cannot fill up with sockets that do not exist.
pub struct Registration {
    tenant: Arc<Tenant>,
    user_id: String,
    pub id: ConnectionId,
}

impl Registration {
    fn new(
        tenant: &Arc<Tenant>,
        user_id: &str,
        max_sockets: u32,
    ) -> Result<(Registration, mpsc::Receiver<Queued>), TooManyConnections> {
        let (id, outbound) = tenant.hub.register(user_id, max_sockets)?;
        tenant.socket_opened(user_id);
        let registration = Registration {
            tenant: Arc::clone(tenant),
            user_id: user_id.to_owned(),
            id,
        };
        Ok((registration, outbound))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tenant.hub.unregister(&self.user_id, self.id);
        let watcher = (Arc::from(self.user_id.as_str()), self.id);
        self.tenant.presence.unwatch_all(&watcher);
        self.tenant.socket_closed(&self.user_id);
    }
}

fn offers_subprotocol<F>(upgrade: &WebSocketUpgrade<F>) -> bool {
    upgrade
        .requested_protocols()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == protocol::SUBPROTOCOL)
}
