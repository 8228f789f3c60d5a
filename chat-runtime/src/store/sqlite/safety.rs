//! SQL of blocks between users, of bans and mutes, and of slow mode. The
//! send path checks them inside the write that stores a message, so a
//! restriction applies from the first message after it was written, on
//! every process.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::events;
use super::queries::{OpError, OpResult, list_member_ids, load_channel, member_role};
use crate::store::{
    Channel, ChannelKind, MemberRole, MembershipChange, Millis, NewEvent, Restriction,
    RestrictionKind, StoreError,
};

fn kind_from_sql(kind: &str) -> RestrictionKind {
    if kind == "ban" {
        RestrictionKind::Ban
    } else {
        RestrictionKind::Mute
    }
}

fn restriction_from_row(row: &Row<'_>) -> rusqlite::Result<Restriction> {
    let channel_id: String = row.get(1)?;
    let kind: String = row.get(2)?;
    Ok(Restriction {
        user_id: row.get(0)?,
        channel_id: (!channel_id.is_empty()).then_some(channel_id),
        kind: kind_from_sql(&kind),
        until: row.get(3)?,
        reason: row.get(4)?,
        created_at: row.get(5)?,
    })
}

pub(super) fn restrict(
    conn: &Connection,
    restriction: &Restriction,
) -> OpResult<Option<MembershipChange>> {
    let channel_key = restriction.channel_id.as_deref().unwrap_or("");
    let channel = match &restriction.channel_id {
        Some(channel_id) => match load_channel(conn, channel_id)? {
            Some(channel) => Some(channel),
            None => return Err(OpError::Store(StoreError::NotFound)),
        },
        None => None,
    };
    if let Some(channel) = &channel
        && channel.kind == ChannelKind::Direct
        && restriction.kind == RestrictionKind::Ban
    {
        // Members of a direct channel never change, so a banned user could
        // not come back once the ban ended.
        return Err(OpError::Store(StoreError::Invalid(
            "a direct channel's members cannot change, so a user cannot be banned from one; mute the user in it or ban the user from the tenant",
        )));
    }
    conn.prepare_cached(
        "INSERT OR REPLACE INTO restrictions (user_id, channel_id, kind, until, reason, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        restriction.user_id,
        channel_key,
        restriction.kind.as_str(),
        restriction.until,
        restriction.reason,
        restriction.created_at
    ])?;
    events::append(conn, &NewEvent::restricted(restriction))?;

    let (Some(channel), RestrictionKind::Ban) = (channel, restriction.kind) else {
        return Ok(None);
    };
    let channel_id = channel.id.clone();
    let channel_id = channel_id.as_str();
    let removed = conn
        .prepare_cached("DELETE FROM members WHERE channel_id = ?1 AND user_id = ?2")?
        .execute([channel_id, &restriction.user_id])?;
    if removed == 1 {
        let event = NewEvent::member_removed(
            channel_id,
            &restriction.user_id,
            None,
            restriction.created_at,
        );
        events::append(conn, &event)?;
    }
    Ok(Some(MembershipChange {
        channel,
        members: list_member_ids(conn, channel_id)?,
        changed: removed == 1,
    }))
}

pub(super) fn lift(
    conn: &Connection,
    user_id: &str,
    channel_id: Option<&str>,
    kind: RestrictionKind,
    now: Millis,
) -> OpResult<bool> {
    // A restriction that already ended is removed too, but lifting it
    // changes nothing, so it is reported as not in place.
    let until: Option<Option<Millis>> = conn
        .prepare_cached(
            "DELETE FROM restrictions WHERE user_id = ?1 AND channel_id = ?2 AND kind = ?3 \
             RETURNING until",
        )?
        .query_row(
            params![user_id, channel_id.unwrap_or(""), kind.as_str()],
            |row| row.get(0),
        )
        .optional()?;
    let removed = match until {
        Some(until) => until.is_none_or(|until| until > now),
        None => false,
    };
    if removed {
        let event = NewEvent::restriction_lifted(user_id, channel_id, kind, now);
        events::append(conn, &event)?;
    }
    Ok(removed)
}

pub(super) fn active(conn: &Connection, user_id: &str, now: Millis) -> OpResult<Vec<Restriction>> {
    let mut statement = conn.prepare_cached(
        "SELECT user_id, channel_id, kind, until, reason, created_at FROM restrictions \
         WHERE user_id = ?1 AND (until IS NULL OR until > ?2) ORDER BY channel_id, kind",
    )?;
    let rows = statement.query_map(params![user_id, now], restriction_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Returns the ban or mute that keeps `user_id` from writing in
/// `channel_id` at `now`, if any: one of the tenant or of the channel.
pub(super) fn blocking_restriction(
    conn: &Connection,
    user_id: &str,
    channel_id: &str,
    now: Millis,
) -> OpResult<Option<Restriction>> {
    let restriction = conn
        .prepare_cached(
            "SELECT user_id, channel_id, kind, until, reason, created_at FROM restrictions \
             WHERE user_id = ?1 AND channel_id IN ('', ?2) AND (until IS NULL OR until > ?3) \
             ORDER BY kind LIMIT 1",
        )?
        .query_row(params![user_id, channel_id, now], restriction_from_row)
        .optional()?;
    Ok(restriction)
}

/// Fails with `Restricted` when a ban or mute keeps `user_id` from writing
/// in `channel_id`.
pub(super) fn check_can_write(
    conn: &Connection,
    user_id: &str,
    channel_id: &str,
    now: Millis,
) -> OpResult<()> {
    match blocking_restriction(conn, user_id, channel_id, now)? {
        Some(restriction) => Err(OpError::Store(StoreError::Restricted(Box::new(
            restriction,
        )))),
        None => Ok(()),
    }
}

/// Fails with `Restricted` when `user_id` is banned from `channel_id`.
pub(super) fn check_not_banned_from(
    conn: &Connection,
    user_id: &str,
    channel_id: &str,
    now: Millis,
) -> OpResult<()> {
    let restriction = conn
        .prepare_cached(
            "SELECT user_id, channel_id, kind, until, reason, created_at FROM restrictions \
             WHERE user_id = ?1 AND channel_id = ?2 AND kind = 'ban' \
             AND (until IS NULL OR until > ?3)",
        )?
        .query_row(params![user_id, channel_id, now], restriction_from_row)
        .optional()?;
    match restriction {
        Some(restriction) => Err(OpError::Store(StoreError::Restricted(Box::new(
            restriction,
        )))),
        None => Ok(()),
    }
}

/// Returns the end of the user's tenant ban in force at `now`, if any.
pub(super) fn tenant_ban_until(
    conn: &Connection,
    user_id: &str,
    now: Millis,
) -> OpResult<Option<Millis>> {
    let until: Option<Option<Millis>> = conn
        .prepare_cached(
            "SELECT until FROM restrictions WHERE user_id = ?1 AND channel_id = '' \
             AND kind = 'ban' AND (until IS NULL OR until > ?2)",
        )?
        .query_row(params![user_id, now], |row| row.get(0))
        .optional()?;
    Ok(until.map(|until| until.unwrap_or(Millis::MAX)))
}

pub(super) fn set_block(
    conn: &Connection,
    blocker: &str,
    blocked: &str,
    block: bool,
    now: Millis,
) -> OpResult<bool> {
    if blocker == blocked {
        return Err(OpError::Store(StoreError::Invalid(
            "a user cannot block itself",
        )));
    }
    let changed = if block {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO blocks (blocker, blocked, created_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![blocker, blocked, now])?
    } else {
        conn.prepare_cached("DELETE FROM blocks WHERE blocker = ?1 AND blocked = ?2")?
            .execute([blocker, blocked])?
    };
    if changed == 1 {
        events::append(conn, &NewEvent::block(blocker, blocked, block, now))?;
    }
    Ok(changed == 1)
}

pub(super) fn blocked_users(conn: &Connection, blocker: &str) -> OpResult<Vec<String>> {
    let mut statement =
        conn.prepare_cached("SELECT blocked FROM blocks WHERE blocker = ?1 ORDER BY blocked")?;
    let rows = statement.query_map([blocker], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

pub(super) fn blockers(conn: &Connection, blocked: &str) -> OpResult<Vec<String>> {
    let mut statement =
        conn.prepare_cached("SELECT blocker FROM blocks WHERE blocked = ?1 ORDER BY blocker")?;
    let rows = statement.query_map([blocked], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

/// True when `blocker` blocks `blocked`.
pub(super) fn blocks(conn: &Connection, blocker: &str, blocked: &str) -> OpResult<bool> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM blocks WHERE blocker = ?1 AND blocked = ?2")?
        .query_row([blocker, blocked], |row| row.get(0))
        .optional()?;
    Ok(found.is_some())
}

/// True when either user blocks the other.
pub(super) fn blocked_between(conn: &Connection, a: &str, b: &str) -> OpResult<bool> {
    let found: Option<i64> = conn
        .prepare_cached(
            "SELECT 1 FROM blocks WHERE (blocker = ?1 AND blocked = ?2) \
             OR (blocker = ?2 AND blocked = ?1) LIMIT 1",
        )?
        .query_row([a, b], |row| row.get(0))
        .optional()?;
    Ok(found.is_some())
}

/// Returns the members of `channel_id` that receive what `sender` writes:
/// all of them except those who block the sender.
pub(super) fn recipients(
    conn: &Connection,
    channel_id: &str,
    sender: &str,
) -> OpResult<Vec<String>> {
    reaction_recipients(conn, channel_id, sender, sender)
}

/// Members of the channel who block neither the reactor nor the sender of
/// the message reacted to, since the blocker does not see that message.
pub(super) fn reaction_recipients(
    conn: &Connection,
    channel_id: &str,
    reactor: &str,
    sender: &str,
) -> OpResult<Vec<String>> {
    let mut statement = conn.prepare_cached(
        "SELECT m.user_id FROM members m WHERE m.channel_id = ?1 AND NOT EXISTS \
         (SELECT 1 FROM blocks b WHERE b.blocker = m.user_id AND b.blocked IN (?2, ?3)) \
         ORDER BY m.user_id",
    )?;
    let rows = statement.query_map([channel_id, reactor, sender], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

/// Fails with `SlowMode` when `user_id` sent a message to the channel less
/// than `seconds` before `now`.
pub(super) fn check_slow_mode(
    conn: &Connection,
    channel_id: &str,
    user_id: &str,
    seconds: u32,
    now: Millis,
) -> OpResult<()> {
    let last_sent_at: Option<Millis> = conn
        .prepare_cached("SELECT last_sent_at FROM members WHERE channel_id = ?1 AND user_id = ?2")?
        .query_row(params![channel_id, user_id], |row| row.get(0))
        .optional()?
        .flatten();
    let Some(last_sent_at) = last_sent_at else {
        return Ok(());
    };
    let next_allowed = last_sent_at.saturating_add(i64::from(seconds) * 1000);
    if now >= next_allowed {
        return Ok(());
    }
    Err(OpError::Store(StoreError::SlowMode {
        retry_after_ms: u64::try_from(next_allowed - now).unwrap_or(0),
    }))
}

pub(super) fn set_slow_mode(
    conn: &Connection,
    channel_id: &str,
    actor: Option<&str>,
    seconds: u32,
    now: Millis,
) -> OpResult<(Channel, bool)> {
    let role = match actor {
        Some(actor) => match member_role(conn, channel_id, actor)? {
            Some(role) => Some(role),
            None => return Err(OpError::Store(StoreError::NotFound)),
        },
        None => None,
    };
    let Some(channel) = load_channel(conn, channel_id)? else {
        return Err(OpError::Store(StoreError::NotFound));
    };
    if channel.kind == ChannelKind::Direct {
        return Err(OpError::Store(StoreError::Invalid(
            "slow mode applies to groups only",
        )));
    }
    if role == Some(MemberRole::Member) {
        return Err(OpError::Store(StoreError::Forbidden(
            "only the group's owner can set slow mode",
        )));
    }
    if channel.slow_mode_seconds == seconds {
        return Ok((channel, false));
    }
    conn.prepare_cached("UPDATE channels SET slow_mode_seconds = ?2 WHERE id = ?1")?
        .execute(params![channel_id, seconds])?;
    let channel = Channel {
        slow_mode_seconds: seconds,
        ..channel
    };
    events::append(conn, &NewEvent::channel_updated(&channel, actor, now))?;
    Ok((channel, true))
}
