//! SQL of users' settings and of marks that keep an action to once a period.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::queries::{OpResult, load_user, not_found};
use crate::store::Millis;

pub(super) fn put(
    conn: &Connection,
    user_id: &str,
    key: &str,
    value: Option<&Value>,
    now: Millis,
) -> OpResult<bool> {
    if load_user(conn, user_id)?.is_none_or(|user| user.deleted) {
        return not_found();
    }
    let changed = match value {
        Some(value) => conn
            .prepare_cached(
                "INSERT INTO user_settings (user_id, key, value, updated_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id, key) DO UPDATE \
                 SET value = excluded.value, updated_at = excluded.updated_at \
                 WHERE value IS NOT excluded.value",
            )?
            .execute(params![user_id, key, serde_json::to_string(value)?, now])?,
        None => conn
            .prepare_cached("DELETE FROM user_settings WHERE user_id = ?1 AND key = ?2")?
            .execute(params![user_id, key])?,
    };
    Ok(changed > 0)
}

pub(super) fn list(
    conn: &Connection,
    user_id: &str,
    prefix: &str,
) -> OpResult<Vec<(String, Value)>> {
    // `substr` compares the prefix exactly, where `LIKE` would treat `%`
    // and `_` in it as wildcards.
    let rows = conn
        .prepare_cached(
            "SELECT key, value FROM user_settings WHERE user_id = ?1 \
             AND substr(key, 1, length(?2)) = ?2 ORDER BY key",
        )?
        .query_map(params![user_id, prefix], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut settings = Vec::with_capacity(rows.len());
    for (key, value) in rows {
        settings.push((key, serde_json::from_str(&value)?));
    }
    Ok(settings)
}

pub(super) fn mark_once(
    conn: &Connection,
    key: &str,
    now: Millis,
    period_ms: i64,
) -> OpResult<bool> {
    let previous: Option<Millis> = conn
        .prepare_cached("SELECT marked_at FROM once_marks WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()?;
    if previous.is_some_and(|at| now.saturating_sub(at) < period_ms) {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO once_marks (key, marked_at) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET marked_at = excluded.marked_at",
    )?
    .execute(params![key, now])?;
    Ok(true)
}
