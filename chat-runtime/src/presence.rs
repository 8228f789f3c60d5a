//! Online state of a tenant's users across replicas, and the index of
//! which sockets watch which users.
//!
//! A user is online while at least one socket of theirs is open on any
//! replica. This process counts its own sockets. Other replicas announce
//! their users through the relay: a change when a user's first socket opens
//! or last one closes there, and every [`REFRESH_INTERVAL`] the full list of
//! users online there. An entry from another replica expires after
//! [`REMOTE_TTL`] without a refresh, so the users of a replica that crashed
//! go offline within that bound.
//!
//! Watchers are sockets that subscribed to users' presence (members of a
//! shared channel). Every change of a watched user's state is returned as a
//! [`Change`] with the sockets to tell.
//!
//! This module only decides; the caller delivers frames and publishes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::hub::ConnectionId;

/// How often a replica announces the users online on it.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// How long another replica's announcement stays valid: three refreshes, so
/// one or two lost refreshes do not flap a user offline.
pub const REMOTE_TTL: Duration = Duration::from_secs(15);

/// Users one socket may watch at once, which bounds the memory of the
/// watcher index per socket.
pub const MAX_WATCHED_PER_SOCKET: usize = 1_000;

/// A watching socket: its user and connection id.
pub type Watcher = (Arc<str>, ConnectionId);

/// A user's presence as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub online: bool,
    /// When the user was last seen online, in milliseconds since the epoch.
    /// `None` when this process never saw the user online.
    pub last_seen: Option<i64>,
}

/// A user whose state changed, and the sockets watching that user.
#[derive(Debug)]
pub struct Change {
    pub user: String,
    pub state: State,
    pub watchers: Vec<Watcher>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a socket may watch at most {MAX_WATCHED_PER_SOCKET} users")]
pub struct TooManyWatched;

#[derive(Default)]
struct Inner {
    /// Open sockets per user in this process.
    local: HashMap<String, usize>,
    /// Per user, the replicas that reported the user online, with the time
    /// their report expires.
    remote: HashMap<String, HashMap<String, Instant>>,
    /// When each user went offline, in milliseconds since the epoch.
    ///
    /// NOTE: kept in memory only, so it starts empty after a restart and a
    /// replica that never saw a user online reports no last-seen time. It
    /// grows by one entry per user seen since the process started.
    last_seen: HashMap<String, i64>,
    /// Per watched user, the sockets watching, each with the number of
    /// its subscribed channels that include the user.
    watchers: HashMap<String, HashMap<Watcher, usize>>,
    /// Per socket, the users watched through each subscribed channel.
    watched_by_socket: HashMap<ConnectionId, HashMap<String, Vec<String>>>,
}

impl Inner {
    fn is_online(&self, user: &str) -> bool {
        self.local.contains_key(user) || self.remote.contains_key(user)
    }

    fn state(&self, user: &str) -> State {
        let online = self.is_online(user);
        State {
            online,
            last_seen: if online {
                None
            } else {
                self.last_seen.get(user).copied()
            },
        }
    }

    /// Returns the change to report when `user`'s online flag moved from
    /// `was_online`, stamping last-seen when the user went offline.
    fn change_from(&mut self, user: &str, was_online: bool, now_ms: i64) -> Option<Change> {
        let online = self.is_online(user);
        if online == was_online {
            return None;
        }
        if !online {
            self.last_seen.insert(user.to_owned(), now_ms);
        }
        let watchers = self
            .watchers
            .get(user)
            .map(|sockets| sockets.keys().cloned().collect())
            .unwrap_or_default();
        Some(Change {
            user: user.to_owned(),
            state: self.state(user),
            watchers,
        })
    }
}

/// Presence of one tenant's users.
#[derive(Default)]
pub struct Presence {
    inner: Mutex<Inner>,
}

impl Presence {
    /// Counts a socket of `user` opened in this process. Returns the change,
    /// and whether it is the user's first socket here.
    pub fn socket_opened(&self, user: &str, now_ms: i64) -> (Option<Change>, bool) {
        let mut inner = self.lock();
        let was_online = inner.is_online(user);
        let count = inner.local.entry(user.to_owned()).or_default();
        *count += 1;
        let first_here = *count == 1;
        (inner.change_from(user, was_online, now_ms), first_here)
    }

    /// Counts a socket of `user` closed in this process. Returns the change,
    /// and whether it was the user's last socket here.
    pub fn socket_closed(&self, user: &str, now_ms: i64) -> (Option<Change>, bool) {
        let mut inner = self.lock();
        let was_online = inner.is_online(user);
        let last_here = match inner.local.get_mut(user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                inner.local.remove(user);
                true
            }
            None => false,
        };
        (inner.change_from(user, was_online, now_ms), last_here)
    }

    /// Records that replica `instance` has `user` online (`online`) or no
    /// longer has. `last_seen` is the other replica's stamp for an offline
    /// report.
    pub fn remote_report(
        &self,
        instance: &str,
        user: &str,
        online: bool,
        last_seen: Option<i64>,
        now: Instant,
        now_ms: i64,
    ) -> Option<Change> {
        let mut inner = self.lock();
        let was_online = inner.is_online(user);
        if online {
            let replicas = inner.remote.entry(user.to_owned()).or_default();
            replicas.insert(instance.to_owned(), now + REMOTE_TTL);
        } else if let Some(replicas) = inner.remote.get_mut(user) {
            replicas.remove(instance);
            if replicas.is_empty() {
                inner.remote.remove(user);
            }
        }
        let change = inner.change_from(user, was_online, last_seen.unwrap_or(now_ms));
        if let Some(stamp) = last_seen
            && !inner.is_online(user)
        {
            let newest = inner.last_seen.entry(user.to_owned()).or_insert(stamp);
            *newest = (*newest).max(stamp);
        }
        change
    }

    /// Applies replica `instance`'s full list of online users: each listed
    /// user's entry is renewed, and the replica's entries for users it no
    /// longer lists are removed.
    pub fn remote_refresh(
        &self,
        instance: &str,
        users: &[String],
        now: Instant,
        now_ms: i64,
    ) -> Vec<Change> {
        let listed: HashSet<&str> = users.iter().map(String::as_str).collect();
        let inner = self.lock();
        let dropped: Vec<String> = inner
            .remote
            .iter()
            .filter(|(user, replicas)| {
                replicas.contains_key(instance) && !listed.contains(user.as_str())
            })
            .map(|(user, _)| user.clone())
            .collect();
        drop(inner);

        let mut changes = Vec::new();
        for user in dropped {
            changes.extend(self.remote_report(instance, &user, false, None, now, now_ms));
        }
        for user in users {
            changes.extend(self.remote_report(instance, user, true, None, now, now_ms));
        }
        changes
    }

    /// Removes reports of other replicas that were not refreshed in time.
    pub fn expire(&self, now: Instant, now_ms: i64) -> Vec<Change> {
        let inner = self.lock();
        let stale: Vec<(String, String)> = inner
            .remote
            .iter()
            .flat_map(|(user, replicas)| {
                replicas
                    .iter()
                    .filter(|(_, expires)| **expires <= now)
                    .map(move |(instance, _)| (user.clone(), instance.clone()))
            })
            .collect();
        drop(inner);

        stale
            .into_iter()
            .filter_map(|(user, instance)| {
                self.remote_report(&instance, &user, false, None, now, now_ms)
            })
            .collect()
    }

    /// Users with a socket open in this process.
    pub fn local_users(&self) -> Vec<String> {
        self.lock().local.keys().cloned().collect()
    }

    pub fn state(&self, user: &str) -> State {
        self.lock().state(user)
    }

    /// Makes `watcher` receive changes of `users`, the other members of
    /// `channel`, in place of what it watched through `channel` before, and
    /// returns their current states. Fails, changing nothing, when the
    /// socket would watch more than [`MAX_WATCHED_PER_SOCKET`] users.
    pub fn watch(
        &self,
        watcher: &Watcher,
        channel: &str,
        users: &[String],
    ) -> Result<Vec<(String, State)>, TooManyWatched> {
        let mut inner = self.lock();
        let channels = inner.watched_by_socket.entry(watcher.1).or_default();
        let mut distinct: HashSet<&String> = channels
            .iter()
            .filter(|(watched_channel, _)| watched_channel.as_str() != channel)
            .flat_map(|(_, watched)| watched.iter())
            .collect();
        distinct.extend(users);
        if distinct.len() > MAX_WATCHED_PER_SOCKET {
            return Err(TooManyWatched);
        }

        let previous = channels.insert(channel.to_owned(), users.to_vec());
        for user in previous.unwrap_or_default() {
            release(&mut inner.watchers, &user, watcher);
        }
        for user in users {
            let sockets = inner.watchers.entry(user.clone()).or_default();
            *sockets.entry(watcher.clone()).or_default() += 1;
        }
        Ok(users
            .iter()
            .map(|user| (user.clone(), inner.state(user)))
            .collect())
    }

    /// Stops `watcher` from watching through `channel`. Users it still
    /// watches through another channel stay watched.
    pub fn unwatch(&self, watcher: &Watcher, channel: &str) {
        let mut inner = self.lock();
        let Some(channels) = inner.watched_by_socket.get_mut(&watcher.1) else {
            return;
        };
        let users = channels.remove(channel).unwrap_or_default();
        if channels.is_empty() {
            inner.watched_by_socket.remove(&watcher.1);
        }
        for user in users {
            release(&mut inner.watchers, &user, watcher);
        }
    }

    /// Forgets everything `watcher` watched, when its socket closes.
    pub fn unwatch_all(&self, watcher: &Watcher) {
        let mut inner = self.lock();
        let Some(channels) = inner.watched_by_socket.remove(&watcher.1) else {
            return;
        };
        for user in channels.into_values().flatten() {
            release(&mut inner.watchers, &user, watcher);
        }
    }

    /// Stops every socket of `watcher_user` from watching `user`, through
    /// all its channels, when `watcher_user` blocks `user`.
    pub fn stop_watching(&self, watcher_user: &str, user: &str) {
        let mut inner = self.lock();
        let Some(sockets) = inner.watchers.get_mut(user) else {
            return;
        };
        let watchers: Vec<Watcher> = sockets
            .keys()
            .filter(|watcher| &*watcher.0 == watcher_user)
            .cloned()
            .collect();
        for watcher in &watchers {
            sockets.remove(watcher);
        }
        if sockets.is_empty() {
            inner.watchers.remove(user);
        }

        for (_, connection) in watchers {
            if let Some(channels) = inner.watched_by_socket.get_mut(&connection) {
                for watched in channels.values_mut() {
                    watched.retain(|watched_user| watched_user != user);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every mutation leaves the maps consistent before it can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drops one of `watcher`'s subscriptions that include `user`.
fn release(watchers: &mut HashMap<String, HashMap<Watcher, usize>>, user: &str, watcher: &Watcher) {
    let Some(sockets) = watchers.get_mut(user) else {
        return;
    };
    if let Some(count) = sockets.get_mut(watcher) {
        *count -= 1;
        if *count == 0 {
            sockets.remove(watcher);
        }
    }
    if sockets.is_empty() {
        watchers.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watcher(user: &str, id: ConnectionId) -> Watcher {
        (Arc::from(user), id)
    }

    #[test]
    fn first_socket_online_last_socket_offline() {
        let presence = Presence::default();
        let (change, first) = presence.socket_opened("lan", 1);
        assert!(first);
        assert!(change.unwrap().state.online);
        let (change, first) = presence.socket_opened("lan", 2);
        assert!(!first);
        assert!(change.is_none());

        let (change, last) = presence.socket_closed("lan", 3);
        assert!(change.is_none());
        assert!(!last);
        let (change, last) = presence.socket_closed("lan", 4);
        assert!(last);
        let change = change.unwrap();
        assert!(!change.state.online);
        assert_eq!(change.state.last_seen, Some(4));
    }

    #[test]
    fn watchers_get_changes_of_watched_users_only() {
        let presence = Presence::default();
        let bob = watcher("bob", 7);
        let states = presence.watch(&bob, "d1", &[String::from("lan")]).unwrap();
        assert!(!states[0].1.online);

        let change = presence.socket_opened("lan", 1).0.unwrap();
        assert_eq!(change.watchers, vec![bob.clone()]);
        let other = presence.socket_opened("minh", 1).0.unwrap();
        assert!(other.watchers.is_empty());

        presence.unwatch_all(&bob);
        let (change, _) = presence.socket_closed("lan", 2);
        assert!(change.unwrap().watchers.is_empty());
    }

    #[test]
    fn user_watched_through_two_channels_stays_watched() {
        let presence = Presence::default();
        let bob = watcher("bob", 7);
        presence
            .watch(&bob, "g1", &[String::from("lan"), String::from("minh")])
            .unwrap();
        presence.watch(&bob, "g2", &[String::from("lan")]).unwrap();
        presence.unwatch(&bob, "g1");

        let lan = presence.socket_opened("lan", 1).0.unwrap();
        assert_eq!(lan.watchers, vec![bob.clone()]);
        let minh = presence.socket_opened("minh", 1).0.unwrap();
        assert!(minh.watchers.is_empty());
        presence.unwatch(&bob, "g2");
        assert!(
            presence
                .socket_closed("lan", 2)
                .0
                .unwrap()
                .watchers
                .is_empty()
        );
    }

    #[test]
    fn blocked_user_stops_being_watched() {
        let presence = Presence::default();
        let bob = watcher("bob", 7);
        let bob_phone = watcher("bob", 8);
        let carol = watcher("carol", 9);
        let lan_and_minh = [String::from("lan"), String::from("minh")];
        presence.watch(&bob, "g1", &lan_and_minh).unwrap();
        presence.watch(&bob, "g2", &[String::from("lan")]).unwrap();
        presence.watch(&bob_phone, "g1", &lan_and_minh).unwrap();
        presence.watch(&carol, "g1", &lan_and_minh).unwrap();

        presence.stop_watching("bob", "lan");
        let lan = presence.socket_opened("lan", 1).0.unwrap();
        assert_eq!(lan.watchers, vec![carol.clone()]);
        let minh = presence.socket_opened("minh", 1).0.unwrap();
        assert_eq!(minh.watchers.len(), 3);

        // Dropping the subscriptions afterwards keeps the counts right.
        presence.unwatch(&bob, "g1");
        presence.unwatch_all(&bob_phone);
        presence.unwatch_all(&carol);
        let minh = presence.socket_closed("minh", 2).0.unwrap();
        assert!(minh.watchers.is_empty(), "{:?}", minh.watchers);
        presence.watch(&bob, "g3", &[String::from("lan")]).unwrap();
        let lan = presence.socket_closed("lan", 2).0.unwrap();
        assert_eq!(lan.watchers, vec![bob.clone()]);
    }

    #[test]
    fn last_seen_is_hidden_while_online() {
        let presence = Presence::default();
        presence.socket_opened("lan", 1);
        presence.socket_closed("lan", 2);
        assert_eq!(presence.state("lan").last_seen, Some(2));
        let back = presence.socket_opened("lan", 3).0.unwrap();
        assert_eq!(back.state.last_seen, None);
        assert_eq!(presence.state("lan").last_seen, None);
    }

    #[test]
    fn remote_replica_keeps_user_online() {
        let presence = Presence::default();
        let now = Instant::now();
        let change = presence
            .remote_report("replica-b", "lan", true, None, now, 10)
            .unwrap();
        assert!(change.state.online);
        // A local socket opening and closing does not hide the other replica.
        assert!(presence.socket_opened("lan", 11).0.is_none());
        let (change, last) = presence.socket_closed("lan", 12);
        assert!(last);
        assert!(change.is_none());
        assert!(presence.state("lan").online);

        let change = presence
            .remote_report("replica-b", "lan", false, Some(13), now, 14)
            .unwrap();
        assert!(!change.state.online);
        assert_eq!(presence.state("lan").last_seen, Some(13));
    }

    #[test]
    fn unrefreshed_replica_expires() {
        let presence = Presence::default();
        let start = Instant::now();
        presence.remote_report("crashed", "lan", true, None, start, 1);
        assert!(presence.expire(start + REMOTE_TTL / 2, 2).is_empty());
        let changes = presence.expire(start + REMOTE_TTL, 3);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].state.online);
        assert_eq!(changes[0].state.last_seen, Some(3));
    }

    #[test]
    fn refresh_renews_and_drops_unlisted_users() {
        let presence = Presence::default();
        let start = Instant::now();
        presence.remote_refresh("b", &[String::from("lan"), String::from("minh")], start, 1);
        assert!(presence.state("minh").online);

        let later = start + REMOTE_TTL - Duration::from_secs(1);
        let changes = presence.remote_refresh("b", &[String::from("lan")], later, 2);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].user, "minh");
        assert!(!changes[0].state.online);
        // Renewed at `later`, so still online past the first expiry.
        assert!(presence.expire(start + REMOTE_TTL, 3).is_empty());
        assert!(presence.state("lan").online);
    }

    #[test]
    fn watch_limit_per_socket() {
        let presence = Presence::default();
        let socket = watcher("bob", 1);
        let many: Vec<String> = (0..MAX_WATCHED_PER_SOCKET)
            .map(|i| format!("u{i}"))
            .collect();
        presence.watch(&socket, "big", &many).unwrap();
        // Watching the same users through another channel adds nothing.
        presence.watch(&socket, "small", &many[..10]).unwrap();
        let error = presence.watch(&socket, "other", &[String::from("one-more")]);
        assert_eq!(error.unwrap_err(), TooManyWatched);
        presence.unwatch(&socket, "big");
        presence
            .watch(&socket, "other", &[String::from("one-more")])
            .unwrap();
    }
}
