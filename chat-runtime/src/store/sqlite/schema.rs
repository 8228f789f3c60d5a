//! Table layout and its creation.

use rusqlite::Connection;

use super::queries::{OpError, OpResult};
use crate::store::StoreError;

/// Value of `PRAGMA user_version` once [`SCHEMA`] is in place. A file with a
/// higher version was written by a newer build and is not opened.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// Every statement is `IF NOT EXISTS`, so a process that lost the race to
/// create a new file runs it again without harm.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT,
    metadata TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    tokens_not_before INTEGER,
    -- Incremented when a deleted id is created again. Messages store the
    -- incarnation of their sender, so messages of the deleted user keep
    -- `sender_deleted` after the id is reused.
    incarnation INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS channels (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('direct', 'group')),
    name TEXT,
    subject TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- The only source of sequence numbers: each append increments it inside
    -- the transaction that stores the message.
    last_seq INTEGER NOT NULL DEFAULT 0,
    last_activity INTEGER NOT NULL
) STRICT;

-- One row per direct channel. The primary key makes opening a direct
-- channel idempotent across processes. An empty subject stands for none.
CREATE TABLE IF NOT EXISTS direct_channels (
    user_low TEXT NOT NULL,
    user_high TEXT NOT NULL,
    subject TEXT NOT NULL,
    channel_id TEXT NOT NULL UNIQUE,
    PRIMARY KEY (user_low, user_high, subject)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS members (
    channel_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('owner', 'member')),
    read_seq INTEGER NOT NULL DEFAULT 0,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS members_by_user ON members (user_id, channel_id);

CREATE TABLE IF NOT EXISTS messages (
    channel_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender_id TEXT NOT NULL,
    sender_incarnation INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    -- JSON form of `Content`.
    content TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, seq)
) STRICT;

-- Client message ids already used, for deduplication of retries.
-- content_hash is the SHA-256 of the channel id and the canonical JSON of
-- the content.
CREATE TABLE IF NOT EXISTS client_ids (
    sender_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    content_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (sender_id, client_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS client_ids_by_age ON client_ids (created_at);
";

/// Creates the tables of a new file, or checks the version of an existing one.
///
/// `BEGIN IMMEDIATE` takes the write lock before `user_version` is read, so
/// when two processes open the same new file at once, the second waits
/// (up to the busy timeout) and then finds the schema in place.
pub(super) fn ensure_schema(conn: &Connection) -> OpResult<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match create_or_check(conn) {
        Ok(()) => {
            conn.execute_batch("COMMIT")?;
            Ok(())
        }
        Err(error) => {
            // The original error matters more than a failed rollback, and
            // closing the connection rolls back anyway.
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

fn create_or_check(conn: &Connection) -> OpResult<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        let message = format!(
            "database has schema version {version}, but this build supports up to {SCHEMA_VERSION}"
        );
        return Err(OpError::Store(StoreError::Unavailable(message.into())));
    }
    if version < SCHEMA_VERSION {
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(())
}
