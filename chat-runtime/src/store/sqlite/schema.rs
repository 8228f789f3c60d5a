//! Table layout and its creation.

use rusqlite::Connection;

use super::queries::{OpError, OpResult};
use crate::store::StoreError;

/// Value of `PRAGMA user_version` once every entry of [`MIGRATIONS`] is in
/// place. A file with a higher version was written by a newer build and is
/// not opened.
pub(super) const SCHEMA_VERSION: i64 = 4;

/// SQL that takes a file from version `index` to `index + 1`.
pub(super) const MIGRATIONS: [&str; 4] = [
    SCHEMA,
    EDITS_REACTIONS_RECEIPTS,
    EVENT_LOG,
    SLOW_MODE_REPORTS_SETTINGS,
];

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

/// Edits, soft deletes, replies, mentions, reactions and delivery positions.
/// `ALTER TABLE` has no `IF NOT EXISTS`, so this runs only on a file whose
/// recorded version is below it, inside the same write lock as the version check.
const EDITS_REACTIONS_RECEIPTS: &str = "
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
-- JSON array of user ids, NULL when there are none.
ALTER TABLE messages ADD COLUMN mentions TEXT;
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
ALTER TABLE messages ADD COLUMN deleted_at INTEGER;

ALTER TABLE members ADD COLUMN delivered_seq INTEGER NOT NULL DEFAULT 0;
UPDATE members SET delivered_seq = read_seq;

-- Unread counts subtract deleted messages, which this index finds without
-- reading the others.
CREATE INDEX IF NOT EXISTS deleted_messages ON messages (channel_id, seq)
    WHERE deleted_at IS NOT NULL;

-- One row per mention of a user, for unread mention counts. Rows of a
-- deleted message are removed with its content.
CREATE TABLE IF NOT EXISTS mentions (
    channel_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS reactions (
    channel_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    reaction TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, seq, reaction, user_id)
) STRICT, WITHOUT ROWID;
";

/// The event log, webhook delivery state, blocks, bans and mutes. AUTOINCREMENT keeps positions of purged events from being
/// handed out again, so a consumer's cursor never points at a different
/// event later. `event_log_state` records the highest purged position, to
/// tell an expired cursor from a valid one.
const EVENT_LOG: &str = "
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    channel_id TEXT,
    created_at INTEGER NOT NULL,
    -- JSON object with the change's details.
    data TEXT NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS events_by_age ON events (created_at);

CREATE TABLE IF NOT EXISTS event_log_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    purged_through INTEGER NOT NULL
) STRICT;

INSERT OR IGNORE INTO event_log_state (id, purged_through) VALUES (1, 0);

-- Delivery state of each webhook endpoint: the last event handled, and the
-- process that delivers while its lease lasts.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    name TEXT PRIMARY KEY,
    cursor TEXT,
    holder TEXT NOT NULL,
    lease_until INTEGER NOT NULL
) STRICT;

-- Users blocked by other users.
CREATE TABLE IF NOT EXISTS blocks (
    blocker TEXT NOT NULL,
    blocked TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (blocker, blocked)
) STRICT, WITHOUT ROWID;

-- Bans and mutes. An empty channel_id stands for the whole tenant, and a
-- NULL until for a restriction that lasts until lifted.
CREATE TABLE IF NOT EXISTS restrictions (
    user_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('ban', 'mute')),
    until INTEGER,
    reason TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, channel_id, kind)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS dead_letters (
    endpoint TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- Position of the event in the log, for ordering.
    position INTEGER NOT NULL,
    -- JSON of the `DeadLetter`.
    letter TEXT NOT NULL,
    PRIMARY KEY (endpoint, event_id)
) STRICT;
";

/// Slow mode, the report queue, users' settings (templates, away messages)
/// and the marks that keep an extension from acting twice in a period.
const SLOW_MODE_REPORTS_SETTINGS: &str = "
ALTER TABLE channels ADD COLUMN slow_mode_seconds INTEGER NOT NULL DEFAULT 0;
-- Time of the member's newest message, which slow mode measures from.
ALTER TABLE members ADD COLUMN last_sent_at INTEGER;

CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    user_id TEXT NOT NULL,
    channel_id TEXT,
    seq INTEGER,
    -- NULL when a moderation rule filed the report.
    reporter TEXT,
    rule TEXT,
    reason TEXT NOT NULL,
    note TEXT,
    -- JSON form of the reported message's `Content`.
    content TEXT,
    created_at INTEGER NOT NULL,
    -- JSON form of the `Resolution`, once resolved.
    resolution TEXT
) STRICT;

CREATE INDEX IF NOT EXISTS reports_by_status ON reports (status, id);
CREATE INDEX IF NOT EXISTS reports_by_reporter ON reports (reporter, user_id)
    WHERE status = 'open';

CREATE TABLE IF NOT EXISTS user_settings (
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    -- JSON value.
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT, WITHOUT ROWID;

-- Finds who blocks a user, for typing indicators.
CREATE INDEX IF NOT EXISTS blocks_by_blocked ON blocks (blocked, blocker);

CREATE TABLE IF NOT EXISTS once_marks (
    key TEXT PRIMARY KEY,
    marked_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
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
    let applied = usize::try_from(version).unwrap_or(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        conn.execute_batch(migration)?;
        conn.pragma_update(None, "user_version", index as i64 + 1)?;
    }
    Ok(())
}
