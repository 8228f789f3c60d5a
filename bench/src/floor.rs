//! The floor: the least a server can do for the same work. It holds
//! tokio-tungstenite connections and forwards each text frame through one
//! broadcast channel per room to every connection in that room, the sender
//! included, with no authentication, tenants, JSON or storage. It also
//! serves `GET /constant` from axum, the floor of a REST request.
//!
//! It uses the runtime's read buffer (4 KiB) and frame limit (6 × 4096 +
//! 4096 bytes for the default message limit), so the difference between the
//! two is what the runtime adds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::servers::{FLOOR_HTTP_VARIABLE, FLOOR_WS_VARIABLE};

/// Read buffer of each connection, as in the runtime.
const READ_BUFFER_BYTES: usize = 4096;
/// Largest frame read, as in the runtime with its default message limit.
const MAX_FRAME_BYTES: usize = 6 * 4096 + 4096;
/// Frames a connection may fall behind its room before it is closed, as the
/// runtime's per-socket queue of 256.
const ROOM_BACKLOG: usize = 256;

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>;

/// Serves the floor until the process is killed.
pub fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("floor: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("floor: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let ws_addr: SocketAddr = std::env::var(FLOOR_WS_VARIABLE)
        .context("missing WebSocket address")?
        .parse()?;
    let http_addr: SocketAddr = std::env::var(FLOOR_HTTP_VARIABLE)
        .context("missing HTTP address")?
        .parse()?;

    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("failed to bind {http_addr}"))?;
    let router = axum::Router::new().route("/constant", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(http, router).await });

    let listener = TcpListener::bind(ws_addr)
        .await
        .with_context(|| format!("failed to bind {ws_addr}"))?;
    let rooms = Rooms::default();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely; the clients see it.
                eprintln!("floor: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(serve_connection(stream, rooms.clone()));
    }
}

async fn serve_connection(stream: TcpStream, rooms: Rooms) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    // The error type is fixed by tungstenite's callback trait.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let Ok(socket) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let room = path.strip_prefix("/room/").unwrap_or("").to_owned();
    let sender = join_room(&rooms, &room);
    let mut receiver = sender.subscribe();
    let (mut sink, mut stream) = socket.split();

    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(message @ Message::Text(_))) => {
                    let _ = sender.send(message);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            outgoing = receiver.recv() => match outgoing {
                Ok(message) => {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
                // Fell more than the backlog behind: closed, as the runtime
                // closes a slow consumer.
                Err(_) => break,
            },
        }
    }
    drop(receiver);
    leave_room(&rooms, &room, &sender);
}

fn join_room(rooms: &Rooms, room: &str) -> broadcast::Sender<Message> {
    let mut rooms = rooms
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    rooms
        .entry(room.to_owned())
        .or_insert_with(|| broadcast::channel(ROOM_BACKLOG).0)
        .clone()
}

fn leave_room(rooms: &Rooms, room: &str, sender: &broadcast::Sender<Message>) {
    let mut rooms = rooms
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if sender.receiver_count() == 0 {
        rooms.remove(room);
    }
}
