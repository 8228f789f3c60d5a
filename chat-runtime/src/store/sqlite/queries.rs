//! SQL of every store operation, run synchronously on one connection.
//!
//! Write operations run on the writer thread inside its batch transaction,
//! read operations inside a read transaction of a pooled connection, so each
//! function reads from one consistent snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::{events, reports, safety};
use crate::store::{
    Appended, Channel, ChannelKind, ChannelSummary, Content, Deleter, MAX_REACTIONS_PER_USER,
    Member, MemberRole, MembershipChange, Message, MessageChange, MessageEdit, Millis, NewEvent,
    NewMessage, Page, Positions, StoreError, User, UserAuthState, keys,
};

/// Failure of one operation: either a store-level outcome that the caller
/// gets as is, or an SQLite error that becomes `Unavailable`.
#[derive(Debug)]
pub(super) enum OpError {
    Store(StoreError),
    Sqlite(rusqlite::Error),
}

pub(super) type OpResult<T> = Result<T, OpError>;

impl From<StoreError> for OpError {
    fn from(error: StoreError) -> Self {
        OpError::Store(error)
    }
}

impl From<rusqlite::Error> for OpError {
    fn from(error: rusqlite::Error) -> Self {
        OpError::Sqlite(error)
    }
}

impl From<serde_json::Error> for OpError {
    fn from(error: serde_json::Error) -> Self {
        OpError::Store(StoreError::Unavailable(Box::new(error)))
    }
}

impl From<OpError> for StoreError {
    fn from(error: OpError) -> Self {
        match error {
            OpError::Store(error) => error,
            OpError::Sqlite(error) => StoreError::Unavailable(Box::new(error)),
        }
    }
}

/// Returns the current time. Positions carry no time of their own, so their events
/// are stamped when written.
fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as Millis)
}

pub(super) fn not_found<T>() -> OpResult<T> {
    Err(OpError::Store(StoreError::NotFound))
}

/// Builds the `Unavailable` error for stored rows that break an invariant of
/// this module.
pub(super) fn inconsistent(message: &'static str) -> OpError {
    OpError::Store(StoreError::Unavailable(message.into()))
}

/// Converts a sequence number or position from the API to SQLite's signed
/// integer. Values above `i64::MAX` cannot be stored, so they clamp without
/// changing any comparison against stored values.
pub(super) fn seq_to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads a sequence number or read position, which SQLite stores as a signed
/// integer.
pub(super) fn get_seq(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, value))
}

fn invalid_column(index: usize, message: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, Type::Text, message.into())
}

// Rows.

const CHANNEL_COLUMNS: &str = "c.id, c.kind, c.name, c.subject, c.created_by, c.created_at, \
     c.last_seq, c.last_activity, c.slow_mode_seconds";

/// Reads a channel from the first nine columns of `row`, in the order of
/// [`CHANNEL_COLUMNS`].
pub(super) fn channel_from_row(row: &Row<'_>) -> rusqlite::Result<Channel> {
    let kind: String = row.get(1)?;
    let kind = match kind.as_str() {
        "direct" => ChannelKind::Direct,
        "group" => ChannelKind::Group,
        _ => return Err(invalid_column(1, "unknown channel kind")),
    };
    Ok(Channel {
        id: row.get(0)?,
        kind,
        name: row.get(2)?,
        subject: row.get(3)?,
        created_by: row.get(4)?,
        created_at: row.get(5)?,
        last_seq: get_seq(row, 6)?,
        last_activity: row.get(7)?,
        slow_mode_seconds: row.get(8)?,
    })
}

fn role_to_sql(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Owner => "owner",
        MemberRole::Member => "member",
    }
}

fn role_from_sql(row: &Row<'_>, index: usize) -> rusqlite::Result<MemberRole> {
    let role: String = row.get(index)?;
    match role.as_str() {
        "owner" => Ok(MemberRole::Owner),
        "member" => Ok(MemberRole::Member),
        _ => Err(invalid_column(index, "unknown member role")),
    }
}

/// Message columns with `sender_deleted` computed from the users table: the
/// sender is deleted now, or the id was deleted and created again since the
/// message was written. Reactions come from their own table, through
/// [`attach_reactions`].
const MESSAGE_SELECT: &str = "SELECT m.channel_id, m.seq, m.sender_id, \
     COALESCE(u.deleted <> 0 OR u.incarnation <> m.sender_incarnation, 1), \
     m.client_id, m.content, m.created_at, m.reply_to, m.mentions, m.edited_at, m.deleted_at \
     FROM messages m LEFT JOIN users u ON u.id = m.sender_id";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let deleted_at: Option<Millis> = row.get(10)?;
    // A deleted message's content column contains JSON null.
    let content = match deleted_at {
        Some(_) => None,
        None => {
            let content: String = row.get(5)?;
            let content: Content = serde_json::from_str(&content)
                .map_err(|_| invalid_column(5, "stored message content is not valid JSON"))?;
            Some(content)
        }
    };
    let mentions = match row.get::<_, Option<String>>(8)? {
        Some(mentions) => serde_json::from_str(&mentions)
            .map_err(|_| invalid_column(8, "stored mentions are not a JSON array of ids"))?,
        None => Vec::new(),
    };
    let reply_to = match row.get::<_, Option<i64>>(7)? {
        Some(seq) => Some(u64::try_from(seq).map_err(|_| invalid_column(7, "negative reply_to"))?),
        None => None,
    };
    Ok(Message {
        channel_id: row.get(0)?,
        seq: get_seq(row, 1)?,
        sender_id: row.get(2)?,
        sender_deleted: row.get(3)?,
        client_id: row.get(4)?,
        content,
        reply_to,
        mentions,
        reactions: BTreeMap::new(),
        own_reactions: Vec::new(),
        created_at: row.get(6)?,
        edited_at: row.get(9)?,
        deleted_at,
    })
}

/// Fills in `reactions`, and `own_reactions` of `viewer`, for messages of
/// one channel sorted by `seq`, with one range query.
fn attach_reactions(
    conn: &Connection,
    channel_id: &str,
    viewer: Option<&str>,
    messages: &mut [Message],
) -> OpResult<()> {
    let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
        return Ok(());
    };
    let mut statement = conn.prepare_cached(
        "SELECT seq, reaction, COUNT(*), MAX(user_id = ?4) FROM reactions \
         WHERE channel_id = ?1 AND seq >= ?2 AND seq <= ?3 GROUP BY seq, reaction",
    )?;
    let rows = statement
        .query_map(
            params![
                channel_id,
                seq_to_sql(first.seq),
                seq_to_sql(last.seq),
                viewer
            ],
            |row| {
                let count: i64 = row.get(2)?;
                let own: Option<bool> = row.get(3)?;
                Ok((
                    get_seq(row, 0)?,
                    row.get::<_, String>(1)?,
                    count as u64,
                    own.unwrap_or(false),
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (seq, reaction, count, own) in rows {
        let Ok(index) = messages.binary_search_by_key(&seq, |message| message.seq) else {
            continue;
        };
        let message = &mut messages[index];
        if own {
            message.own_reactions.push(reaction.clone());
        }
        message.reactions.insert(reaction, count);
    }
    Ok(())
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    let metadata: String = row.get(2)?;
    let metadata: Value = serde_json::from_str(&metadata)
        .map_err(|_| invalid_column(2, "stored user metadata is not valid JSON"))?;
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        metadata,
        deleted: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
    })
}

// Shared lookups.

pub(super) fn load_user(conn: &Connection, id: &str) -> OpResult<Option<User>> {
    let user = conn
        .prepare_cached(
            "SELECT id, name, metadata, deleted, created_at, updated_at FROM users WHERE id = ?1",
        )?
        .query_row([id], user_from_row)
        .optional()?;
    Ok(user)
}

/// Returns the incarnation of an existing, not deleted user, or `NotFound`.
fn active_incarnation(conn: &Connection, id: &str) -> OpResult<i64> {
    let incarnation = conn
        .prepare_cached("SELECT incarnation FROM users WHERE id = ?1 AND deleted = 0")?
        .query_row([id], |row| row.get(0))
        .optional()?;
    match incarnation {
        Some(incarnation) => Ok(incarnation),
        None => not_found(),
    }
}

pub(super) fn load_channel(conn: &Connection, id: &str) -> OpResult<Option<Channel>> {
    let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels c WHERE c.id = ?1");
    let channel = conn
        .prepare_cached(&sql)?
        .query_row([id], channel_from_row)
        .optional()?;
    Ok(channel)
}

pub(super) fn member_role(
    conn: &Connection,
    channel_id: &str,
    user: &str,
) -> OpResult<Option<MemberRole>> {
    let role = conn
        .prepare_cached("SELECT role FROM members WHERE channel_id = ?1 AND user_id = ?2")?
        .query_row([channel_id, user], |row| role_from_sql(row, 0))
        .optional()?;
    Ok(role)
}

/// Returns the channel if `user` is one of its members, `NotFound` otherwise.
fn channel_of_member(
    conn: &Connection,
    channel_id: &str,
    user: &str,
) -> OpResult<(Channel, MemberRole)> {
    let Some(role) = member_role(conn, channel_id, user)? else {
        return not_found();
    };
    match load_channel(conn, channel_id)? {
        Some(channel) => Ok((channel, role)),
        None => Err(inconsistent("membership refers to a missing channel")),
    }
}

/// Member ids of a channel, sorted. Empty for an unknown channel.
pub(super) fn list_member_ids(conn: &Connection, channel_id: &str) -> OpResult<Vec<String>> {
    let mut statement =
        conn.prepare_cached("SELECT user_id FROM members WHERE channel_id = ?1 ORDER BY user_id")?;
    let ids = statement
        .query_map([channel_id], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

/// Reads one message with its reactions, and `own_reactions` of `viewer`.
fn load_message(
    conn: &Connection,
    channel_id: &str,
    seq: u64,
    viewer: Option<&str>,
) -> OpResult<Option<Message>> {
    let sql = format!("{MESSAGE_SELECT} WHERE m.channel_id = ?1 AND m.seq = ?2");
    let message = conn
        .prepare_cached(&sql)?
        .query_row(params![channel_id, seq_to_sql(seq)], message_from_row)
        .optional()?;
    let Some(message) = message else {
        return Ok(None);
    };
    let mut messages = [message];
    attach_reactions(conn, channel_id, viewer, &mut messages)?;
    let [message] = messages;
    Ok(Some(message))
}

/// Reads a message with its reactions, or `NotFound`.
pub(super) fn existing_message(conn: &Connection, channel_id: &str, seq: u64) -> OpResult<Message> {
    match load_message(conn, channel_id, seq, None)? {
        Some(message) => Ok(message),
        None => not_found(),
    }
}

// Users.

pub(super) fn upsert_user(
    conn: &Connection,
    id: &str,
    name: &str,
    metadata: &Value,
    now: Millis,
) -> OpResult<User> {
    let metadata = serde_json::to_string(metadata)?;
    let deleted: Option<bool> = conn
        .prepare_cached("SELECT deleted FROM users WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?;
    match deleted {
        None => {
            conn.prepare_cached(
                "INSERT INTO users (id, name, metadata, deleted, tokens_not_before, incarnation, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, 0, NULL, 1, ?4, ?4)",
            )?
            .execute(params![id, name, metadata, now])?;
        }
        Some(false) => {
            conn.prepare_cached(
                "UPDATE users SET name = ?2, metadata = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, name, metadata, now])?;
        }
        Some(true) => {
            // A new user takes over a deleted id, so tokens issued before
            // the current second, which include the old user's, stop working.
            conn.prepare_cached(
                "UPDATE users SET name = ?2, metadata = ?3, deleted = 0, tokens_not_before = ?5, \
                 incarnation = incarnation + 1, created_at = ?4, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, name, metadata, now, now / 1000])?;
        }
    }
    let Some(user) = load_user(conn, id)? else {
        return Err(inconsistent("user row missing right after it was written"));
    };
    events::append(conn, &NewEvent::user_upserted(&user, now))?;
    Ok(user)
}

pub(super) fn delete_user(conn: &Connection, id: &str, now: Millis) -> OpResult<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE users SET name = NULL, metadata = 'null', deleted = 1, updated_at = ?2 \
             WHERE id = ?1 AND deleted = 0",
        )?
        .execute(params![id, now])?;
    if changed == 0 {
        return not_found();
    }
    // Templates and away messages are the user's own words, erased with
    // the profile.
    conn.prepare_cached("DELETE FROM user_settings WHERE user_id = ?1")?
        .execute([id])?;
    events::append(conn, &NewEvent::user_deleted(id, now))
}

pub(super) fn revoke_tokens(
    conn: &Connection,
    id: &str,
    at_least: i64,
    now: Millis,
) -> OpResult<i64> {
    let bound: Option<i64> = conn
        .prepare_cached(
            "UPDATE users SET tokens_not_before = MAX(?2, COALESCE(tokens_not_before + 1, ?2)), \
             updated_at = ?3 WHERE id = ?1 AND deleted = 0 RETURNING tokens_not_before",
        )?
        .query_row(params![id, at_least, now], |row| row.get(0))
        .optional()?;
    let Some(bound) = bound else {
        return not_found();
    };
    events::append(conn, &NewEvent::tokens_revoked(id, bound, now))?;
    Ok(bound)
}

pub(super) fn user_auth_state(conn: &Connection, id: &str) -> OpResult<Option<UserAuthState>> {
    let state = conn
        .prepare_cached("SELECT deleted, tokens_not_before FROM users WHERE id = ?1")?
        .query_row([id], |row| {
            Ok(UserAuthState {
                deleted: row.get(0)?,
                banned_until: None,
                tokens_not_before: row.get(1)?,
            })
        })
        .optional()?;
    let Some(mut state) = state else {
        return Ok(None);
    };
    state.banned_until = safety::tenant_ban_until(conn, id, now_millis())?;
    Ok(Some(state))
}

// Channels and members.

pub(super) fn open_direct(
    conn: &Connection,
    a: &str,
    b: &str,
    subject: Option<&str>,
    now: Millis,
) -> OpResult<(Channel, Vec<String>)> {
    if a == b {
        return Err(OpError::Store(StoreError::Invalid(
            "a direct channel needs two different users",
        )));
    }
    active_incarnation(conn, a)?;
    active_incarnation(conn, b)?;

    let (low, high) = if a < b { (a, b) } else { (b, a) };
    // An empty subject is the same key as no subject, so it is stored as none.
    let subject = subject.filter(|subject| !subject.is_empty());
    let key_subject = subject.unwrap_or("");
    let id = keys::direct_channel_id(low, high, key_subject);

    // Two processes may race here. The write lock of the batch transaction
    // serializes them, and the primary key lets only the first insert win.
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO direct_channels (user_low, user_high, subject, channel_id) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![low, high, key_subject, id])?;
    // A block stops new direct channels only. The request's savepoint
    // rolls back the key inserted above.
    if inserted == 1 && safety::blocked_between(conn, a, b)? {
        return Err(OpError::Store(StoreError::Forbidden(
            "one of the two users blocks the other",
        )));
    }
    if inserted == 1 {
        conn.prepare_cached(
            "INSERT INTO channels (id, kind, name, subject, created_by, created_at, last_seq, \
             last_activity) VALUES (?1, 'direct', NULL, ?2, ?3, ?4, 0, ?4)",
        )?
        .execute(params![id, subject, a, now])?;
        for user in [low, high] {
            insert_member(conn, &id, user, MemberRole::Member, 0, now)?;
        }
    }

    let channel_id: String = conn
        .prepare_cached(
            "SELECT channel_id FROM direct_channels \
             WHERE user_low = ?1 AND user_high = ?2 AND subject = ?3",
        )?
        .query_row(params![low, high, key_subject], |row| row.get(0))?;
    let Some(channel) = load_channel(conn, &channel_id)? else {
        return Err(inconsistent(
            "direct channel key refers to a missing channel",
        ));
    };
    let members = list_member_ids(conn, &channel_id)?;
    if inserted == 1 {
        events::append(conn, &NewEvent::channel_created(&channel, &members))?;
    }
    Ok((channel, members))
}

fn insert_member(
    conn: &Connection,
    channel_id: &str,
    user: &str,
    role: MemberRole,
    read_seq: u64,
    now: Millis,
) -> OpResult<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO members \
             (channel_id, user_id, role, read_seq, delivered_seq, joined_at) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        )?
        .execute(params![
            channel_id,
            user,
            role_to_sql(role),
            seq_to_sql(read_seq),
            now
        ])?;
    Ok(inserted == 1)
}

pub(super) fn create_group(
    conn: &Connection,
    id: &str,
    creator: &str,
    name: &str,
    members: &[String],
    now: Millis,
) -> OpResult<(Channel, Vec<String>)> {
    let mut all_members: BTreeSet<&str> = members.iter().map(String::as_str).collect();
    all_members.insert(creator);
    for user in &all_members {
        active_incarnation(conn, user)?;
        if *user != creator && safety::blocks(conn, user, creator)? {
            return Err(OpError::Store(StoreError::Forbidden(
                "a member blocks you, so you cannot add them to a group",
            )));
        }
    }

    conn.prepare_cached(
        "INSERT INTO channels (id, kind, name, subject, created_by, created_at, last_seq, \
         last_activity) VALUES (?1, 'group', ?2, NULL, ?3, ?4, 0, ?4)",
    )?
    .execute(params![id, name, creator, now])?;
    for user in &all_members {
        let role = if *user == creator {
            MemberRole::Owner
        } else {
            MemberRole::Member
        };
        insert_member(conn, id, user, role, 0, now)?;
    }

    let Some(channel) = load_channel(conn, id)? else {
        return Err(inconsistent("group row missing right after it was written"));
    };
    let members: Vec<String> = all_members.into_iter().map(str::to_owned).collect();
    events::append(conn, &NewEvent::channel_created(&channel, &members))?;
    Ok((channel, members))
}

pub(super) fn add_member(
    conn: &Connection,
    channel_id: &str,
    actor: &str,
    user: &str,
    now: Millis,
) -> OpResult<MembershipChange> {
    let (channel, actor_role) = channel_of_member(conn, channel_id, actor)?;
    if channel.kind == ChannelKind::Direct {
        return Err(OpError::Store(StoreError::Invalid(
            "members of a direct channel cannot change",
        )));
    }
    if actor_role != MemberRole::Owner {
        return Err(OpError::Store(StoreError::Forbidden(
            "only the group owner can add members",
        )));
    }
    active_incarnation(conn, user)?;
    safety::check_not_banned_from(conn, user, channel_id, now)?;
    if safety::blocks(conn, user, actor)? {
        return Err(OpError::Store(StoreError::Forbidden(
            "the user blocks you, so you cannot add them",
        )));
    }

    // A new member starts with the existing history marked read, so joining
    // a long-lived group does not show its whole past as unread.
    let changed = insert_member(
        conn,
        channel_id,
        user,
        MemberRole::Member,
        channel.last_seq,
        now,
    )?;
    if changed {
        events::append(conn, &NewEvent::member_added(channel_id, user, actor, now))?;
    }
    let members = list_member_ids(conn, channel_id)?;
    Ok(MembershipChange {
        channel,
        members,
        changed,
    })
}

pub(super) fn remove_member(
    conn: &Connection,
    channel_id: &str,
    actor: &str,
    user: &str,
    now: Millis,
) -> OpResult<MembershipChange> {
    let (channel, actor_role) = channel_of_member(conn, channel_id, actor)?;
    if channel.kind == ChannelKind::Direct {
        return Err(OpError::Store(StoreError::Invalid(
            "members of a direct channel cannot change",
        )));
    }
    if actor == user && actor_role == MemberRole::Owner {
        return Err(OpError::Store(StoreError::Forbidden(
            "the group owner cannot leave its own group",
        )));
    }
    if actor != user && actor_role != MemberRole::Owner {
        return Err(OpError::Store(StoreError::Forbidden(
            "only the group owner can remove other members",
        )));
    }

    let removed = conn
        .prepare_cached("DELETE FROM members WHERE channel_id = ?1 AND user_id = ?2")?
        .execute([channel_id, user])?;
    if removed == 1 {
        events::append(
            conn,
            &NewEvent::member_removed(channel_id, user, Some(actor), now),
        )?;
    }
    let members = list_member_ids(conn, channel_id)?;
    Ok(MembershipChange {
        channel,
        members,
        changed: removed == 1,
    })
}

pub(super) fn channel_for_member(
    conn: &Connection,
    channel_id: &str,
    user: &str,
) -> OpResult<(Channel, Vec<Member>)> {
    let (channel, _) = channel_of_member(conn, channel_id, user)?;
    let mut statement = conn.prepare_cached(
        "SELECT user_id, role, read_seq, delivered_seq FROM members WHERE channel_id = ?1 \
         ORDER BY user_id",
    )?;
    let members = statement
        .query_map([channel_id], |row| {
            Ok(Member {
                user_id: row.get(0)?,
                role: role_from_sql(row, 1)?,
                read_seq: get_seq(row, 2)?,
                delivered_seq: get_seq(row, 3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((channel, members))
}

pub(super) fn member_ids(conn: &Connection, channel_id: &str) -> OpResult<Vec<String>> {
    if load_channel(conn, channel_id)?.is_none() {
        return not_found();
    }
    list_member_ids(conn, channel_id)
}

pub(super) fn channel_positions(conn: &Connection, user: &str) -> OpResult<Vec<(String, u64)>> {
    let mut statement = conn.prepare_cached(
        "SELECT c.id, c.last_seq FROM members m JOIN channels c ON c.id = m.channel_id WHERE m.user_id = ?1",
    )?;
    let rows = statement.query_map([user], |row| {
        Ok((row.get::<_, String>(0)?, get_seq(row, 1)?))
    })?;
    let positions = rows.collect::<rusqlite::Result<Vec<(String, u64)>>>()?;
    Ok(positions)
}

pub(super) fn list_channels(
    conn: &Connection,
    user: &str,
    before: Option<(Millis, String)>,
    limit: u32,
) -> OpResult<Vec<ChannelSummary>> {
    let (before_activity, before_id) = match before {
        Some((activity, id)) => (Some(activity), Some(id)),
        None => (None, None),
    };
    // Messages of users the viewer blocks count neither as unread, nor as
    // the newest message, nor as activity. Most users block no one and
    // skip those queries.
    let blocks_someone = !safety::blocked_users(conn, user)?.is_empty();
    let sql = if blocks_someone {
        &*LIST_CHANNELS_OF_BLOCKER
    } else {
        &*LIST_CHANNELS
    };
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement
        .query_map(
            params![user, before_activity, before_id, i64::from(limit)],
            |row| {
                let mut channel = channel_from_row(row)?;
                channel.last_activity = row.get(10)?;
                Ok((channel, get_seq(row, 9)?))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    let mut summaries = Vec::with_capacity(rows.len());
    for (channel, read_seq) in rows {
        let last_message = if channel.last_seq > 0 {
            newest_visible_message(conn, &channel.id, user, blocks_someone)?
        } else {
            None
        };
        let mut hidden_unread = count_deleted_after(conn, &channel.id, read_seq)?;
        let mut unread_mentions = count_mentions_after(conn, &channel.id, user, read_seq)?;
        if blocks_someone {
            let (messages, mentions) = count_blocked_after(conn, &channel.id, user, read_seq)?;
            hidden_unread += messages;
            unread_mentions = unread_mentions.saturating_sub(mentions);
        }
        summaries.push(ChannelSummary {
            unread: channel
                .last_seq
                .saturating_sub(read_seq)
                .saturating_sub(hidden_unread),
            unread_mentions,
            read_seq,
            last_message,
            channel,
        });
    }
    Ok(summaries)
}

/// A user's channels with their read positions, newest activity first.
/// Binds the user, the cursor's activity and channel id, and the limit.
/// The activity is the eleventh column, after the read position.
static LIST_CHANNELS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {CHANNEL_COLUMNS}, m.read_seq, c.last_activity AS activity \
         FROM members m JOIN channels c ON c.id = m.channel_id WHERE m.user_id = ?1 \
         AND {PAGE_BY_ACTIVITY}"
    )
});

/// [`LIST_CHANNELS`] for a user who blocks someone. Where a blocked user
/// sent the channel's newest message, the channel's activity is the time of
/// the newest message from anyone else, or of its creation, so a blocked
/// user's messages do not move the channel up the list.
static LIST_CHANNELS_OF_BLOCKER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT * FROM (SELECT {CHANNEL_COLUMNS}, m.read_seq, {ACTIVITY_FOR_VIEWER} AS activity \
         FROM members m JOIN channels c ON c.id = m.channel_id WHERE m.user_id = ?1) c \
         WHERE {PAGE_BY_ACTIVITY}"
    )
});

/// The activity of channel `c` for the viewer `?1`: where a user the viewer
/// blocks sent the newest message, the time of the newest message from
/// anyone else, or of the channel's creation.
const ACTIVITY_FOR_VIEWER: &str = "CASE WHEN EXISTS (SELECT 1 FROM blocks b \
         WHERE b.blocker = ?1 AND b.blocked = (SELECT n.sender_id FROM messages n \
             WHERE n.channel_id = c.id ORDER BY n.seq DESC LIMIT 1)) \
     THEN COALESCE((SELECT v.created_at FROM messages v WHERE v.channel_id = c.id \
         AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker = ?1 AND b.blocked = v.sender_id) \
         ORDER BY v.seq DESC LIMIT 1), c.created_at) \
     ELSE c.last_activity END";

/// Runs [`crate::store::Store::activity_for`].
pub(super) fn activity_for(conn: &Connection, channel_id: &str, viewer: &str) -> OpResult<Millis> {
    let sql = format!("SELECT {ACTIVITY_FOR_VIEWER} FROM channels c WHERE c.id = ?2");
    let activity: Option<Millis> = conn
        .prepare_cached(&sql)?
        .query_row(params![viewer, channel_id], |row| row.get(0))
        .optional()?;
    match activity {
        Some(activity) => Ok(activity),
        None => not_found(),
    }
}

/// The page after the cursor `(?2, ?3)`, at most `?4` channels.
const PAGE_BY_ACTIVITY: &str = "(?2 IS NULL \
     OR activity < ?2 OR (activity = ?2 AND c.id < ?3)) \
     ORDER BY activity DESC, c.id DESC LIMIT ?4";

/// Counts the messages after `after` that are not deleted and whose senders
/// `viewer` blocks, and the mentions of `viewer` among them.
fn count_blocked_after(
    conn: &Connection,
    channel_id: &str,
    viewer: &str,
    after: u64,
) -> OpResult<(u64, u64)> {
    let (messages, mentions): (i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(EXISTS (SELECT 1 FROM mentions x \
                 WHERE x.channel_id = m.channel_id AND x.user_id = ?2 AND x.seq = m.seq)), 0) \
             FROM messages m WHERE m.channel_id = ?1 AND m.seq > ?3 AND m.deleted_at IS NULL \
             AND EXISTS (SELECT 1 FROM blocks b WHERE b.blocker = ?2 AND b.blocked = m.sender_id)",
        )?
        .query_row(params![channel_id, viewer, seq_to_sql(after)], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    Ok((messages as u64, mentions as u64))
}

/// Reads the newest message of a channel that is not deleted. The scan walks the
/// primary key backwards and skips deleted rows, so it reads one row per
/// deleted message at the end of the channel.
fn newest_visible_message(
    conn: &Connection,
    channel_id: &str,
    viewer: &str,
    blocks_someone: bool,
) -> OpResult<Option<Message>> {
    let sql = if blocks_someone {
        "SELECT seq FROM messages m WHERE channel_id = ?1 AND deleted_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker = ?2 AND b.blocked = m.sender_id) \
         ORDER BY seq DESC LIMIT 1"
    } else {
        // ?2 is bound either way, so it must appear in the statement.
        "SELECT seq FROM messages WHERE channel_id = ?1 AND deleted_at IS NULL AND ?2 IS NOT NULL \
         ORDER BY seq DESC LIMIT 1"
    };
    let seq: Option<i64> = conn
        .prepare_cached(sql)?
        .query_row([channel_id, viewer], |row| row.get(0))
        .optional()?;
    match seq {
        Some(seq) => load_message(conn, channel_id, seq as u64, Some(viewer)),
        None => Ok(None),
    }
}

fn count_deleted_after(conn: &Connection, channel_id: &str, after: u64) -> OpResult<u64> {
    let count: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM messages \
             WHERE channel_id = ?1 AND seq > ?2 AND deleted_at IS NOT NULL",
        )?
        .query_row(params![channel_id, seq_to_sql(after)], |row| row.get(0))?;
    Ok(count as u64)
}

fn count_mentions_after(
    conn: &Connection,
    channel_id: &str,
    user: &str,
    after: u64,
) -> OpResult<u64> {
    let count: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM mentions WHERE channel_id = ?1 AND user_id = ?2 AND seq > ?3",
        )?
        .query_row(params![channel_id, user, seq_to_sql(after)], |row| {
            row.get(0)
        })?;
    Ok(count as u64)
}

// Messages.

/// Runs [`crate::store::Store::find_retry`].
pub(super) fn find_retry(conn: &Connection, message: &NewMessage) -> OpResult<Option<Appended>> {
    if member_role(conn, &message.channel_id, &message.sender_id)?.is_none() {
        return not_found();
    }
    let hash = message.request_hash()?;
    stored_retry(
        conn,
        &message.sender_id,
        &message.client_id,
        &message.channel_id,
        &hash,
    )
}

/// Returns the stored message when the sender already used `client_id`
/// for the same request, `ClientIdConflict` when for another one, and
/// `None` when the client id is unused.
fn stored_retry(
    conn: &Connection,
    sender_id: &str,
    client_id: &str,
    channel_id: &str,
    hash: &[u8; 32],
) -> OpResult<Option<Appended>> {
    let previous: Option<(String, u64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT channel_id, seq, content_hash FROM client_ids \
             WHERE sender_id = ?1 AND client_id = ?2",
        )?
        .query_row([sender_id, client_id], |row| {
            Ok((row.get(0)?, get_seq(row, 1)?, row.get(2)?))
        })
        .optional()?;
    let Some((stored_channel, stored_seq, stored_hash)) = previous else {
        return Ok(None);
    };
    if stored_channel != channel_id || stored_hash != hash {
        return Err(OpError::Store(StoreError::ClientIdConflict));
    }
    let Some(stored) = load_message(conn, channel_id, stored_seq, None)? else {
        return Err(inconsistent("client id refers to a missing message"));
    };
    Ok(Some(Appended {
        message: stored,
        duplicate: true,
        members: list_member_ids(conn, channel_id)?,
    }))
}

pub(super) fn append_message(conn: &Connection, message: NewMessage) -> OpResult<Appended> {
    let hash = message.request_hash()?;
    let NewMessage {
        channel_id,
        sender_id,
        client_id,
        content,
        submitted: _,
        reply_to,
        mentions,
        created_at,
        moderation,
    } = message;

    let Some(role) = member_role(conn, &channel_id, &sender_id)? else {
        return not_found();
    };
    let incarnation = active_incarnation(conn, &sender_id)?;
    keys::check_content(&content)?;
    if let Some(stored) = stored_retry(conn, &sender_id, &client_id, &channel_id, &hash)? {
        return Ok(stored);
    }

    // Checked after the dedupe lookup, so a retry of a message stored
    // before a mute still gets the stored message.
    safety::check_can_write(conn, &sender_id, &channel_id, created_at)?;
    if let Some(reply_to) = reply_to {
        check_reply_target(conn, &channel_id, reply_to)?;
    }
    check_mentions(conn, &channel_id, &mentions)?;

    // The channel row is the only source of sequence numbers. The write lock
    // is held from BEGIN IMMEDIATE to COMMIT, so processes sharing the file
    // take turns here and never hand out the same number twice.
    // last_activity keeps the maximum because clocks of several processes
    // may disagree, and the channel list must not jump backwards.
    let (seq, slow_mode_seconds): (u64, u32) = conn
        .prepare_cached(
            "UPDATE channels SET last_seq = last_seq + 1, \
             last_activity = MAX(last_activity, ?2) WHERE id = ?1 \
             RETURNING last_seq, slow_mode_seconds",
        )?
        .query_row(params![channel_id, created_at], |row| {
            Ok((get_seq(row, 0)?, row.get(1)?))
        })?;
    // Checked after the update, which returns the setting without another
    // read; a refusal rolls the update back with the rest of the request.
    if slow_mode_seconds > 0 && role != MemberRole::Owner {
        safety::check_slow_mode(conn, &channel_id, &sender_id, slow_mode_seconds, created_at)?;
    }
    let content_json = serde_json::to_string(&content)?;
    conn.prepare_cached(
        "INSERT INTO messages (channel_id, seq, sender_id, sender_incarnation, client_id, content, \
         created_at, reply_to, mentions) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        channel_id,
        seq_to_sql(seq),
        sender_id,
        incarnation,
        client_id,
        content_json,
        created_at,
        reply_to.map(seq_to_sql),
        mentions_json(&mentions)?,
    ])?;
    insert_mentions(conn, &channel_id, seq, &mentions)?;
    conn.prepare_cached(
        "INSERT INTO client_ids (sender_id, client_id, channel_id, seq, content_hash, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        sender_id,
        client_id,
        channel_id,
        seq_to_sql(seq),
        hash,
        created_at
    ])?;
    // An automated message was sent on the user's behalf, so it leaves the
    // user's read and delivered positions where the user left them.
    let sql = if matches!(content, Content::Automated { .. }) {
        "UPDATE members SET last_sent_at = ?4 WHERE channel_id = ?1 AND user_id = ?2 AND ?3 IS NOT NULL"
    } else {
        "UPDATE members SET read_seq = ?3, delivered_seq = MAX(delivered_seq, ?3), \
         last_sent_at = ?4 WHERE channel_id = ?1 AND user_id = ?2"
    };
    conn.prepare_cached(sql)?.execute(params![
        channel_id,
        sender_id,
        seq_to_sql(seq),
        created_at
    ])?;

    let members = safety::recipients(conn, &channel_id, &sender_id)?;
    let message = Message {
        channel_id,
        seq,
        sender_id,
        sender_deleted: false,
        client_id,
        content: Some(content),
        reply_to,
        mentions,
        reactions: BTreeMap::new(),
        own_reactions: Vec::new(),
        created_at,
        edited_at: None,
        deleted_at: None,
    };
    events::append(conn, &NewEvent::message_new(&message))?;
    for record in &moderation {
        events::append(conn, &NewEvent::moderation(record, Some(seq), created_at))?;
    }
    reports::file_flags(conn, &moderation, &message, created_at)?;
    Ok(Appended {
        message,
        duplicate: false,
        members,
    })
}

/// Checks that `seq` names a message of the channel that is not deleted.
fn check_reply_target(conn: &Connection, channel_id: &str, seq: u64) -> OpResult<()> {
    let deleted_at: Option<Option<Millis>> = conn
        .prepare_cached("SELECT deleted_at FROM messages WHERE channel_id = ?1 AND seq = ?2")?
        .query_row(params![channel_id, seq_to_sql(seq)], |row| row.get(0))
        .optional()?;
    match deleted_at {
        None => Err(OpError::Store(StoreError::Invalid(
            "reply_to does not name a message of this channel",
        ))),
        Some(Some(_)) => Err(OpError::Store(StoreError::Invalid(
            "cannot reply to a deleted message",
        ))),
        Some(None) => Ok(()),
    }
}

fn check_mentions(conn: &Connection, channel_id: &str, mentions: &[String]) -> OpResult<()> {
    for user in mentions {
        if member_role(conn, channel_id, user)?.is_none() {
            return Err(OpError::Store(StoreError::Invalid(
                "a mentioned user is not a member of the channel",
            )));
        }
    }
    Ok(())
}

fn mentions_json(mentions: &[String]) -> OpResult<Option<String>> {
    if mentions.is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::to_string(mentions)?))
}

fn insert_mentions(
    conn: &Connection,
    channel_id: &str,
    seq: u64,
    mentions: &[String],
) -> OpResult<()> {
    execute_per_mention(
        conn,
        "INSERT OR IGNORE INTO mentions (channel_id, user_id, seq) VALUES (?1, ?2, ?3)",
        channel_id,
        seq,
        mentions,
    )
}

fn delete_mentions(
    conn: &Connection,
    channel_id: &str,
    seq: u64,
    mentions: &[String],
) -> OpResult<()> {
    execute_per_mention(
        conn,
        "DELETE FROM mentions WHERE channel_id = ?1 AND user_id = ?2 AND seq = ?3",
        channel_id,
        seq,
        mentions,
    )
}

/// Runs `sql` once per mentioned user, binding the channel, the user and
/// the sequence number. Most messages mention nobody, so the statement is
/// not even looked up for them.
fn execute_per_mention(
    conn: &Connection,
    sql: &str,
    channel_id: &str,
    seq: u64,
    mentions: &[String],
) -> OpResult<()> {
    if mentions.is_empty() {
        return Ok(());
    }
    let mut statement = conn.prepare_cached(sql)?;
    for user in mentions {
        statement.execute(params![channel_id, user, seq_to_sql(seq)])?;
    }
    Ok(())
}

/// Returns the message if `user` is a member and wrote it, `Forbidden` if
/// someone else wrote it, and `Invalid` if it is deleted.
fn own_live_message(
    conn: &Connection,
    channel_id: &str,
    seq: u64,
    user: &str,
    forbidden: &'static str,
    deleted: &'static str,
) -> OpResult<Message> {
    channel_of_member(conn, channel_id, user)?;
    let message = existing_message(conn, channel_id, seq)?;
    // `sender_deleted` is also set when the sender's id was deleted and
    // created again, so a new user of a reused id cannot edit the old
    // user's messages.
    if message.sender_id != user || message.sender_deleted {
        return Err(OpError::Store(StoreError::Forbidden(forbidden)));
    }
    if message.deleted_at.is_some() {
        return Err(OpError::Store(StoreError::Invalid(deleted)));
    }
    Ok(message)
}

pub(super) fn edit_message(conn: &Connection, edit: MessageEdit) -> OpResult<MessageChange> {
    let MessageEdit {
        channel_id,
        seq,
        editor,
        content,
        mentions,
        edited_at,
        moderation,
    } = edit;
    let message = own_live_message(
        conn,
        &channel_id,
        seq,
        &editor,
        "only the sender can edit a message",
        "a deleted message cannot be edited",
    )?;
    safety::check_can_write(conn, &editor, &channel_id, edited_at)?;
    keys::check_content(&content)?;

    if let Some(mentions) = &mentions {
        check_mentions(conn, &channel_id, mentions)?;
        delete_mentions(conn, &channel_id, seq, &message.mentions)?;
        insert_mentions(conn, &channel_id, seq, mentions)?;
        conn.prepare_cached(
            "UPDATE messages SET mentions = ?3 WHERE channel_id = ?1 AND seq = ?2",
        )?
        .execute(params![
            channel_id,
            seq_to_sql(seq),
            mentions_json(mentions)?
        ])?;
    }
    conn.prepare_cached(
        "UPDATE messages SET content = ?3, edited_at = ?4 WHERE channel_id = ?1 AND seq = ?2",
    )?
    .execute(params![
        channel_id,
        seq_to_sql(seq),
        serde_json::to_string(&content)?,
        edited_at
    ])?;

    let message = existing_message(conn, &channel_id, seq)?;
    events::append(conn, &NewEvent::message_edited(&message, edited_at))?;
    for record in &moderation {
        events::append(conn, &NewEvent::moderation(record, Some(seq), edited_at))?;
    }
    reports::file_flags(conn, &moderation, &message, edited_at)?;
    Ok(MessageChange {
        message,
        members: safety::recipients(conn, &channel_id, &editor)?,
        changed: true,
    })
}

pub(super) fn delete_message(
    conn: &Connection,
    channel_id: &str,
    seq: u64,
    deleter: Deleter<'_>,
    now: Millis,
) -> OpResult<MessageChange> {
    let message = match deleter {
        Deleter::Member(user) => {
            channel_of_member(conn, channel_id, user)?;
            let message = existing_message(conn, channel_id, seq)?;
            if message.sender_id != user || message.sender_deleted {
                return Err(OpError::Store(StoreError::Forbidden(
                    "only the sender can delete a message",
                )));
            }
            message
        }
        Deleter::Server => existing_message(conn, channel_id, seq)?,
    };
    let members = safety::recipients(conn, channel_id, &message.sender_id)?;
    if message.deleted_at.is_some() {
        return Ok(MessageChange {
            message,
            members,
            changed: false,
        });
    }

    delete_mentions(conn, channel_id, seq, &message.mentions)?;
    conn.prepare_cached("DELETE FROM reactions WHERE channel_id = ?1 AND seq = ?2")?
        .execute(params![channel_id, seq_to_sql(seq)])?;
    conn.prepare_cached(
        "UPDATE messages SET content = 'null', mentions = NULL, deleted_at = ?3 \
         WHERE channel_id = ?1 AND seq = ?2",
    )?
    .execute(params![channel_id, seq_to_sql(seq), now])?;
    let deleted_by = match deleter {
        Deleter::Member(user) => Some(user),
        Deleter::Server => None,
    };
    events::append(
        conn,
        &NewEvent::message_deleted(channel_id, seq, deleted_by, now),
    )?;

    Ok(MessageChange {
        message: existing_message(conn, channel_id, seq)?,
        members,
        changed: true,
    })
}

pub(super) fn react(
    conn: &Connection,
    channel_id: &str,
    seq: u64,
    user: &str,
    reaction: &str,
    add: bool,
    now: Millis,
) -> OpResult<MessageChange> {
    channel_of_member(conn, channel_id, user)?;
    let message = existing_message(conn, channel_id, seq)?;
    if message.deleted_at.is_some() {
        return Err(OpError::Store(StoreError::Invalid(
            "the message is deleted, so its reactions cannot change",
        )));
    }

    let changed = if add {
        add_reaction(conn, channel_id, seq, user, reaction, now)?
    } else {
        conn.prepare_cached(
            "DELETE FROM reactions \
             WHERE channel_id = ?1 AND seq = ?2 AND reaction = ?3 AND user_id = ?4",
        )?
        .execute(params![channel_id, seq_to_sql(seq), reaction, user])?
            == 1
    };
    if changed {
        let event = NewEvent::reaction(channel_id, seq, user, reaction, add, now);
        events::append(conn, &event)?;
    }

    Ok(MessageChange {
        members: safety::reaction_recipients(conn, channel_id, user, &message.sender_id)?,
        message: existing_message(conn, channel_id, seq)?,
        changed,
    })
}

/// Adds a reaction unless the user has it; returns whether it was added.
fn add_reaction(
    conn: &Connection,
    channel_id: &str,
    seq: u64,
    user: &str,
    reaction: &str,
    now: Millis,
) -> OpResult<bool> {
    let mut own: Vec<String> = conn
        .prepare_cached(
            "SELECT reaction FROM reactions WHERE channel_id = ?1 AND seq = ?2 AND user_id = ?3",
        )?
        .query_map(params![channel_id, seq_to_sql(seq), user], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    own.sort();
    if own
        .binary_search_by(|existing| existing.as_str().cmp(reaction))
        .is_ok()
    {
        return Ok(false);
    }
    if own.len() >= MAX_REACTIONS_PER_USER {
        return Err(OpError::Store(StoreError::Invalid(
            "too many different reactions of one user on this message",
        )));
    }
    conn.prepare_cached(
        "INSERT INTO reactions (channel_id, seq, reaction, user_id, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![channel_id, seq_to_sql(seq), reaction, user, now])?;
    Ok(true)
}

pub(super) fn reaction_users(
    conn: &Connection,
    channel_id: &str,
    seq: u64,
    user: &str,
) -> OpResult<BTreeMap<String, Vec<String>>> {
    channel_of_member(conn, channel_id, user)?;
    existing_message(conn, channel_id, seq)?;
    let mut statement = conn.prepare_cached(
        "SELECT reaction, user_id FROM reactions WHERE channel_id = ?1 AND seq = ?2 \
         ORDER BY reaction, user_id",
    )?;
    let rows = statement
        .query_map(params![channel_id, seq_to_sql(seq)], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (reaction, user_id) in rows {
        users.entry(reaction).or_default().push(user_id);
    }
    Ok(users)
}

pub(super) fn message(
    conn: &Connection,
    channel_id: &str,
    seq: u64,
    user: &str,
) -> OpResult<Message> {
    channel_of_member(conn, channel_id, user)?;
    match load_message(conn, channel_id, seq, Some(user))? {
        // Messages of a blocked user are hidden from the blocker, as in
        // history.
        Some(message) if safety::blocks(conn, user, &message.sender_id)? => not_found(),
        Some(message) => Ok(message),
        None => not_found(),
    }
}

/// Returns the SQL condition that leaves out messages of users `viewer`
/// blocks, with `viewer` bound at `parameter`, or nothing when the viewer
/// blocks nobody, which keeps the common query free of the extra lookup.
fn blocked_filter(conn: &Connection, viewer: &str, parameter: &str) -> OpResult<String> {
    if safety::blocked_users(conn, viewer)?.is_empty() {
        // The parameter must still appear, since it is always bound.
        return Ok(format!(" AND {parameter} IS NOT NULL"));
    }
    Ok(format!(
        " AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker = {parameter} \
         AND b.blocked = m.sender_id)"
    ))
}

pub(super) fn history(
    conn: &Connection,
    channel_id: &str,
    user: &str,
    page: Page,
) -> OpResult<Vec<Message>> {
    if member_role(conn, channel_id, user)?.is_none() {
        return not_found();
    }
    // Latest is Before with no upper bound. Both read newest first so that
    // LIMIT keeps the newest rows, then flip to oldest first.
    let (condition, newest_first, bound, limit) = match page {
        Page::Latest { limit } => ("m.seq < ?2", true, i64::MAX, limit),
        Page::Before { before, limit } => ("m.seq < ?2", true, seq_to_sql(before), limit),
        Page::After { after, limit } => ("m.seq > ?2", false, seq_to_sql(after), limit),
    };
    let order = if newest_first { "DESC" } else { "ASC" };
    let blocked = blocked_filter(conn, user, "?4")?;
    let sql = format!(
        "{MESSAGE_SELECT} WHERE m.channel_id = ?1 AND {condition}{blocked} \
         ORDER BY m.seq {order} LIMIT ?3"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let mut messages = statement
        .query_map(
            params![channel_id, bound, i64::from(limit), user],
            message_from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if newest_first {
        messages.reverse();
    }
    attach_reactions(conn, channel_id, Some(user), &mut messages)?;
    Ok(messages)
}

pub(super) fn messages_between(
    conn: &Connection,
    channel_id: &str,
    viewer: &str,
    after: u64,
    up_to: u64,
) -> OpResult<Vec<Message>> {
    let blocked = blocked_filter(conn, viewer, "?4")?;
    let sql = format!(
        "{MESSAGE_SELECT} WHERE m.channel_id = ?1 AND m.seq > ?2 AND m.seq <= ?3{blocked} \
         ORDER BY m.seq"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let mut messages = statement
        .query_map(
            params![channel_id, seq_to_sql(after), seq_to_sql(up_to), viewer],
            message_from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    attach_reactions(conn, channel_id, Some(viewer), &mut messages)?;
    Ok(messages)
}

/// Position that a receipt moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Receipt {
    Read,
    Delivered,
}

/// Moves the read or delivered position of `user` forward to `seq`, capped
/// at the channel's `last_seq`. Reading also counts as delivery.
pub(super) fn move_position(
    conn: &Connection,
    channel_id: &str,
    user: &str,
    seq: u64,
    receipt: Receipt,
) -> OpResult<Positions> {
    let current: Option<(u64, u64, u64)> = conn
        .prepare_cached(
            "SELECT m.read_seq, m.delivered_seq, c.last_seq \
             FROM members m JOIN channels c ON c.id = m.channel_id \
             WHERE m.channel_id = ?1 AND m.user_id = ?2",
        )?
        .query_row(params![channel_id, user], |row| {
            Ok((get_seq(row, 0)?, get_seq(row, 1)?, get_seq(row, 2)?))
        })
        .optional()?;
    let Some((read_seq, delivered_seq, last_seq)) = current else {
        return not_found();
    };

    let target = seq.min(last_seq);
    let new_read = match receipt {
        Receipt::Read => read_seq.max(target),
        Receipt::Delivered => read_seq,
    };
    let new_delivered = delivered_seq.max(target).max(new_read);
    let changed = (new_read, new_delivered) != (read_seq, delivered_seq);
    if changed {
        conn.prepare_cached(
            "UPDATE members SET read_seq = ?3, delivered_seq = ?4 \
             WHERE channel_id = ?1 AND user_id = ?2",
        )?
        .execute(params![
            channel_id,
            user,
            seq_to_sql(new_read),
            seq_to_sql(new_delivered)
        ])?;
    }
    // Delivery positions move with every device's acknowledgement, so only
    // reads go to the event log.
    if new_read != read_seq {
        let event = NewEvent::channel_read(channel_id, user, new_read, now_millis());
        events::append(conn, &event)?;
    }
    Ok(Positions {
        read_seq: new_read,
        delivered_seq: new_delivered,
        changed,
        members: list_member_ids(conn, channel_id)?,
    })
}

pub(super) fn purge_client_ids(conn: &Connection, older_than: Millis) -> OpResult<u64> {
    let deleted = conn
        .prepare_cached("DELETE FROM client_ids WHERE created_at < ?1")?
        .execute([older_than])?;
    Ok(deleted as u64)
}
