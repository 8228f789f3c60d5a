//! SQL of the event log and of webhook delivery state. Appends run inside
//! the writer's batch transaction, so an event commits with the change it
//! describes. Reads page by position.

use rusqlite::{Connection, OptionalExtension, params};

use super::queries::{OpError, OpResult};
use crate::store::{DeadLetter, Event, EventPage, Millis, NewEvent, StoreError, WebhookClaim};

/// Most events deleted by one purge request, so that a purge after a long
/// pause holds the write lock for a bounded time. The caller repeats it.
pub(super) const MAX_PURGE_BATCH: u32 = 10_000;

pub(super) fn append(conn: &Connection, event: &NewEvent) -> OpResult<()> {
    conn.prepare_cached(
        "INSERT INTO events (kind, channel_id, created_at, data) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        event.kind,
        event.channel_id,
        event.created_at,
        serde_json::to_string(&event.data)?,
    ])?;
    Ok(())
}

pub(super) fn append_all(conn: &Connection, events: &[NewEvent]) -> OpResult<()> {
    events.iter().try_for_each(|event| append(conn, event))
}

/// Parses a cursor: the decimal position of the last event read, written
/// as this store writes it, so `007` is not taken for `7`.
fn parse_cursor(cursor: &str) -> OpResult<i64> {
    let digits_only = !cursor.is_empty() && cursor.bytes().all(|byte| byte.is_ascii_digit());
    match cursor.parse::<i64>() {
        Ok(position) if digits_only && position.to_string() == cursor => Ok(position),
        _ => Err(OpError::Store(StoreError::Invalid(
            "invalid cursor: pass a cursor this API returned",
        ))),
    }
}

fn purged_through(conn: &Connection) -> OpResult<i64> {
    let position = conn
        .prepare_cached("SELECT purged_through FROM event_log_state WHERE id = 1")?
        .query_row([], |row| row.get(0))?;
    Ok(position)
}

pub(super) fn read(conn: &Connection, after: Option<&str>, limit: u32) -> OpResult<EventPage> {
    let purged = purged_through(conn)?;
    let after = match after {
        Some(cursor) => parse_cursor(cursor)?,
        None => purged,
    };
    if after < purged {
        return Err(OpError::Store(StoreError::CursorExpired));
    }
    // A cursor past the end was never issued by this log, for example one
    // of another tenant. Accepting it would skip every event up to it.
    let end: i64 = log_end(conn)?.parse().unwrap_or(i64::MAX);
    if after > end {
        return Err(OpError::Store(StoreError::Invalid(
            "invalid cursor: it is past the end of this tenant's event log",
        )));
    }

    let mut statement = conn.prepare_cached(
        "SELECT position, kind, channel_id, created_at, data FROM events \
         WHERE position > ?1 ORDER BY position LIMIT ?2",
    )?;
    let rows = statement.query_map(params![after, limit], |row| {
        let position: i64 = row.get(0)?;
        let data: String = row.get(4)?;
        Ok((position, row.get(1)?, row.get(2)?, row.get(3)?, data))
    })?;
    let mut events = Vec::new();
    for row in rows {
        let (position, kind, channel_id, created_at, data) = row?;
        events.push(Event {
            id: position.to_string(),
            cursor: position.to_string(),
            kind,
            channel_id,
            created_at,
            data: serde_json::from_str(&data)?,
        });
    }
    let next_cursor = events
        .last()
        .map_or_else(|| after.to_string(), |event| event.cursor.clone());
    Ok(EventPage {
        events,
        next_cursor,
    })
}

/// Deletes up to [`MAX_PURGE_BATCH`] of the oldest events created before
/// `older_than`. Only a prefix of the log is deleted, even when clocks of
/// the processes sharing the file disagree, so every position at or below
/// `purged_through` is gone and every one above it is kept.
pub(super) fn purge(conn: &Connection, older_than: Millis) -> OpResult<u64> {
    let through: Option<i64> = conn
        .prepare_cached(
            "SELECT MAX(position) FROM (SELECT position, created_at FROM events \
             ORDER BY position LIMIT ?2) WHERE created_at < ?1",
        )?
        .query_row(params![older_than, MAX_PURGE_BATCH], |row| row.get(0))?;
    let Some(through) = through else {
        return Ok(0);
    };
    let deleted = conn
        .prepare_cached("DELETE FROM events WHERE position <= ?1")?
        .execute([through])?;
    conn.prepare_cached(
        "UPDATE event_log_state SET purged_through = MAX(purged_through, ?1) WHERE id = 1",
    )?
    .execute([through])?;
    Ok(deleted as u64)
}

pub(super) fn log_end(conn: &Connection) -> OpResult<String> {
    let newest: Option<i64> = conn
        .prepare_cached("SELECT MAX(position) FROM events")?
        .query_row([], |row| row.get(0))?;
    let end = match newest {
        Some(position) => position,
        None => purged_through(conn)?,
    };
    Ok(end.to_string())
}

pub(super) fn claim_webhook(
    conn: &Connection,
    endpoint: &str,
    holder: &str,
    now: Millis,
    lease_until: Millis,
) -> OpResult<Option<WebhookClaim>> {
    // The update applies only when the caller already holds the endpoint or
    // the last lease ran out, so two processes never both hold it.
    let claimed: Option<Option<String>> = conn
        .prepare_cached(
            "INSERT INTO webhook_endpoints (name, cursor, holder, lease_until) \
             VALUES (?1, NULL, ?2, ?4) \
             ON CONFLICT (name) DO UPDATE SET holder = ?2, lease_until = ?4 \
             WHERE webhook_endpoints.holder = ?2 OR webhook_endpoints.lease_until < ?3 \
             RETURNING cursor",
        )?
        .query_row(params![endpoint, holder, now, lease_until], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(claimed.map(|cursor| WebhookClaim { cursor }))
}

pub(super) fn save_webhook_cursor(
    conn: &Connection,
    endpoint: &str,
    holder: &str,
    cursor: &str,
    lease_until: Millis,
) -> OpResult<bool> {
    let updated = conn
        .prepare_cached(
            "UPDATE webhook_endpoints SET cursor = ?3, lease_until = ?4 \
             WHERE name = ?1 AND holder = ?2",
        )?
        .execute(params![endpoint, holder, cursor, lease_until])?;
    Ok(updated == 1)
}

pub(super) fn add_dead_letter(
    conn: &Connection,
    endpoint: &str,
    letter: &DeadLetter,
) -> OpResult<()> {
    let position = parse_cursor(&letter.event.cursor)?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO dead_letters (endpoint, event_id, position, letter) \
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        endpoint,
        letter.event.id,
        position,
        serde_json::to_string(letter)?
    ])?;
    Ok(())
}

pub(super) fn dead_letters(
    conn: &Connection,
    endpoint: &str,
    limit: u32,
) -> OpResult<Vec<DeadLetter>> {
    let mut statement = conn.prepare_cached(
        "SELECT letter FROM dead_letters WHERE endpoint = ?1 ORDER BY position LIMIT ?2",
    )?;
    let rows = statement.query_map(params![endpoint, limit], |row| row.get::<_, String>(0))?;
    let mut letters = Vec::new();
    for row in rows {
        letters.push(serde_json::from_str(&row?)?);
    }
    Ok(letters)
}

pub(super) fn remove_dead_letter(
    conn: &Connection,
    endpoint: &str,
    event_id: &str,
) -> OpResult<Option<DeadLetter>> {
    let letter: Option<String> = conn
        .prepare_cached(
            "DELETE FROM dead_letters WHERE endpoint = ?1 AND event_id = ?2 RETURNING letter",
        )?
        .query_row([endpoint, event_id], |row| row.get(0))
        .optional()?;
    Ok(letter
        .map(|letter| serde_json::from_str(&letter))
        .transpose()?)
}

pub(super) fn dead_letter(
    conn: &Connection,
    endpoint: &str,
    event_id: &str,
) -> OpResult<Option<DeadLetter>> {
    let letter: Option<String> = conn
        .prepare_cached("SELECT letter FROM dead_letters WHERE endpoint = ?1 AND event_id = ?2")?
        .query_row([endpoint, event_id], |row| row.get(0))
        .optional()?;
    Ok(letter
        .map(|letter| serde_json::from_str(&letter))
        .transpose()?)
}
