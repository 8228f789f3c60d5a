//! Live delivery inside one process: which sockets each user has open, and
//! handing events to their outbound queues.
//!
//! The hub never blocks and never waits for a socket. Each connection has a
//! bounded queue ([`OUTBOUND_QUEUE`]); when it is full the connection is
//! told to close as a slow consumer and the client resumes from its last
//! sequence number, so a stalled reader cannot grow server memory.
//!
//! Events of one channel may reach the hub out of sequence order, because
//! the tasks that stored them finish in any order. Connections restore the
//! order themselves (see `ws::session`), reading the missing messages from
//! the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

/// Frames a connection may have waiting before it counts as a slow consumer.
/// 256 frames of at most a few KiB each bound the memory one stalled socket
/// can hold, while absorbing the bursts of a busy group.
pub const OUTBOUND_QUEUE: usize = 256;

pub type ConnectionId = u64;

/// Item of a connection's queue. One event goes to many sockets, so it is
/// shared and a queue slot is one pointer. tokio's bounded channel allocates
/// its slots 32 at a time, and at the size of `Outbound` that block was
/// about 2.5 KiB on every idle socket.
pub type Queued = Arc<Outbound>;

/// Event the hub hands to a connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A stored message. `frame` is the serialised `message` frame, shared
    /// by every recipient.
    Message {
        channel_id: Arc<str>,
        seq: u64,
        frame: Utf8Bytes,
        stored_at: Instant,
    },
    /// Any other frame (read positions, membership), already serialised.
    Event(Utf8Bytes),
    /// `user_id` started or stopped typing in the channel. Receiving
    /// sockets end a started indicator themselves when no refresh comes,
    /// because the sender's replica may stop before it sends the stop.
    Typing {
        channel_id: Arc<str>,
        user_id: Arc<str>,
        start: bool,
        frame: Utf8Bytes,
    },
    /// The user left or was removed: deliver nothing more from the channel.
    Removed {
        channel_id: Arc<str>,
        frame: Utf8Bytes,
    },
    /// The user was added to a channel (or a direct channel was opened)
    /// whose newest message was `last_seq` at that moment.
    Added {
        channel_id: Arc<str>,
        last_seq: u64,
        frame: Utf8Bytes,
    },
    /// Live events may have been lost on their way from another replica:
    /// read what was missed from the store.
    Resync(Arc<Resync>),
    /// The user's tokens issued before `not_before` (seconds since the
    /// epoch) were revoked: close the socket if its token is one of them.
    Revoked { not_before: i64 },
    /// Close the socket with this WebSocket close code after sending an
    /// error frame with `code` and `message`.
    Close {
        close_code: u16,
        code: &'static str,
        message: String,
    },
}

/// Channels a socket catches up on after events may have been lost.
#[derive(Debug)]
pub enum Resync {
    /// Every channel of the user, and the user's account state.
    All,
    /// These channels, up to these sequence numbers.
    Channels(Vec<(Arc<str>, u64)>),
}

#[derive(Debug)]
struct Registered {
    id: ConnectionId,
    sender: mpsc::Sender<Queued>,
    /// Set once the connection was sent a slow-consumer close. Later
    /// events are dropped instead of each starting another close, since
    /// the client resumes from its last sequence number anyway.
    closing: AtomicBool,
}

/// Open sockets of one tenant, by user.
#[derive(Debug, Default)]
pub struct Hub {
    users: Mutex<HashMap<String, Vec<Registered>>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Error of a registration beyond the user's socket limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyConnections;

impl Hub {
    /// Registers a socket of `user`, unless the user already has `max` open.
    pub fn register(
        &self,
        user: &str,
        max: u32,
    ) -> Result<(ConnectionId, mpsc::Receiver<Queued>), TooManyConnections> {
        let (sender, receiver) = mpsc::channel(OUTBOUND_QUEUE);
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut users = lock(&self.users);
        // Most users have one socket open, and `Vec`'s default first
        // allocation would make room for four.
        let sockets = users
            .entry(user.to_owned())
            .or_insert_with(|| Vec::with_capacity(1));
        if sockets.len() >= max as usize {
            return Err(TooManyConnections);
        }
        sockets.push(Registered {
            id,
            sender,
            closing: AtomicBool::new(false),
        });
        Ok((id, receiver))
    }

    pub fn unregister(&self, user: &str, id: ConnectionId) {
        let mut users = lock(&self.users);
        if let Some(sockets) = users.get_mut(user) {
            sockets.retain(|socket| socket.id != id);
            if sockets.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Hands `event` to every open socket of every user in `users`, except
    /// the socket `skip` (the one the event came from, when it needs no echo).
    pub fn send_to_users<'a>(
        &self,
        users: impl IntoIterator<Item = &'a String>,
        event: &Outbound,
        skip: Option<ConnectionId>,
    ) -> usize {
        let event = Arc::new(event.clone());
        let users_map = lock(&self.users);
        let mut handed = 0;
        for user in users {
            let Some(sockets) = users_map.get(user) else {
                continue;
            };
            for socket in sockets.iter().filter(|socket| Some(socket.id) != skip) {
                handed += usize::from(offer(socket, Arc::clone(&event)));
            }
        }
        handed
    }

    /// Hands `event` to the listed sockets, each named by its user and id.
    pub fn send_to_connections(&self, targets: &[(Arc<str>, ConnectionId)], event: &Outbound) {
        let event = Arc::new(event.clone());
        let users = lock(&self.users);
        for (user, id) in targets {
            let socket = users
                .get(user.as_ref())
                .and_then(|sockets| sockets.iter().find(|socket| socket.id == *id));
            if let Some(socket) = socket {
                offer(socket, Arc::clone(&event));
            }
        }
    }

    /// Closes every socket of `user`, for example when the user is deleted.
    pub fn close_user(&self, user: &str, close_code: u16, code: &'static str, message: &str) {
        let users = lock(&self.users);
        for socket in users.get(user).into_iter().flatten() {
            force_close(&socket.sender, close_code, code, message);
        }
    }

    /// Tells every socket of the tenant in this process to catch up.
    pub fn resync(&self, resync: &Arc<Resync>) {
        let event = Arc::new(Outbound::Resync(Arc::clone(resync)));
        let users = lock(&self.users);
        for socket in users.values().flatten() {
            offer(socket, Arc::clone(&event));
        }
    }

    /// Closes every socket of the tenant, on shutdown or tenant removal.
    pub fn close_all(&self, close_code: u16, code: &'static str, message: &str) {
        let users = lock(&self.users);
        for socket in users.values().flatten() {
            force_close(&socket.sender, close_code, code, message);
        }
    }

    pub fn connection_count(&self) -> usize {
        lock(&self.users).values().map(Vec::len).sum()
    }

    pub fn is_online(&self, user: &str) -> bool {
        lock(&self.users).contains_key(user)
    }
}

/// Queues `event`, or tells the connection to close when its queue is full.
/// Returns whether the event was queued.
fn offer(socket: &Registered, event: Queued) -> bool {
    if socket.closing.load(Ordering::Relaxed) {
        return false;
    }
    match socket.sender.try_send(event) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(_)) => {
            socket.closing.store(true, Ordering::Relaxed);
            force_close(
                &socket.sender,
                4008,
                "slow_consumer",
                "the socket did not read fast enough; reconnect and resume",
            );
            false
        }
    }
}

/// A close must get through even when the queue is full, so it goes on a
/// spawned task that waits for room; the connection drains its queue while
/// it shuts down, so the wait is short.
fn force_close(sender: &mpsc::Sender<Queued>, close_code: u16, code: &'static str, message: &str) {
    let close = Arc::new(Outbound::Close {
        close_code,
        code,
        message: message.to_owned(),
    });
    if let Err(mpsc::error::TrySendError::Full(close)) = sender.try_send(close) {
        let sender = sender.clone();
        tokio::spawn(async move {
            let _ = sender.send(close).await;
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind that is still
    // consistent (every mutation is a single push, retain or remove).
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> Outbound {
        Outbound::Event(Utf8Bytes::from(text.to_owned()))
    }

    #[tokio::test]
    async fn delivers_to_every_socket_of_listed_users() {
        let hub = Hub::default();
        let (_, mut alice_phone) = hub.register("alice", 5).unwrap();
        let (_, mut alice_laptop) = hub.register("alice", 5).unwrap();
        let (_, mut carol) = hub.register("carol", 5).unwrap();

        let handed = hub.send_to_users(&["alice".to_owned()], &event("hi"), None);
        assert_eq!(handed, 2);
        assert!(matches!(
            alice_phone.try_recv().as_deref(),
            Ok(Outbound::Event(_))
        ));
        assert!(matches!(
            alice_laptop.try_recv().as_deref(),
            Ok(Outbound::Event(_))
        ));
        assert!(carol.try_recv().is_err());
    }

    #[tokio::test]
    async fn skip_leaves_out_the_origin_socket() {
        let hub = Hub::default();
        let (origin, mut first) = hub.register("alice", 5).unwrap();
        let (_, mut second) = hub.register("alice", 5).unwrap();
        hub.send_to_users(&["alice".to_owned()], &event("typing"), Some(origin));
        assert!(first.try_recv().is_err());
        assert!(second.try_recv().is_ok());
    }

    #[tokio::test]
    async fn socket_limit_per_user() {
        let hub = Hub::default();
        let _first = hub.register("alice", 2).unwrap();
        let (second, _receiver) = hub.register("alice", 2).unwrap();
        assert_eq!(hub.register("alice", 2).unwrap_err(), TooManyConnections);
        hub.unregister("alice", second);
        assert!(hub.register("alice", 2).is_ok());
    }

    #[tokio::test]
    async fn full_queue_closes_as_slow_consumer() {
        let hub = Hub::default();
        let (_, mut receiver) = hub.register("alice", 1).unwrap();
        for _ in 0..OUTBOUND_QUEUE + 1 {
            hub.send_to_users(&["alice".to_owned()], &event("x"), None);
        }
        let mut saw_close = false;
        for _ in 0..OUTBOUND_QUEUE + 1 {
            if let Some(Outbound::Close { code, .. }) = receiver.recv().await.as_deref() {
                assert_eq!(*code, "slow_consumer");
                saw_close = true;
                break;
            }
        }
        assert!(saw_close);
    }

    #[tokio::test]
    async fn slow_consumer_gets_one_close() {
        let hub = Hub::default();
        let (_, mut receiver) = hub.register("alice", 1).unwrap();
        for _ in 0..OUTBOUND_QUEUE * 3 {
            hub.send_to_users(&["alice".to_owned()], &event("x"), None);
        }
        let mut closes = 0;
        let mut events = 0;
        while let Ok(Some(queued)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), receiver.recv()).await
        {
            match queued.as_ref() {
                Outbound::Close { .. } => closes += 1,
                _ => events += 1,
            }
        }
        assert_eq!(events, OUTBOUND_QUEUE);
        assert_eq!(closes, 1);
    }

    #[tokio::test]
    async fn resync_reaches_every_socket() {
        let hub = Hub::default();
        let (_, mut alice) = hub.register("alice", 2).unwrap();
        let (_, mut bob) = hub.register("bob", 2).unwrap();
        hub.resync(&Arc::new(Resync::All));
        for receiver in [&mut alice, &mut bob] {
            let queued = receiver.try_recv().unwrap();
            assert!(
                matches!(queued.as_ref(), Outbound::Resync(resync) if matches!(**resync, Resync::All))
            );
        }
    }

    #[tokio::test]
    async fn unregister_forgets_user() {
        let hub = Hub::default();
        let (id, _receiver) = hub.register("alice", 1).unwrap();
        assert!(hub.is_online("alice"));
        hub.unregister("alice", id);
        assert!(!hub.is_online("alice"));
        assert_eq!(hub.connection_count(), 0);
    }
}
