//! Every statement the store runs, prepared once per session.
//!
//! Preparing lets ScyllaDB parse each statement once, and gives the driver
//! the partition key of every request, so it sends the request straight to
//! a replica and to the shard that owns the partition.

use scylla::client::session::Session;
use scylla::errors::PrepareError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use super::config::ConsistencyLevel;

/// Whether a statement may run twice with the same effect. The driver's
/// retry policy retries a timed-out request only when it is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    /// A plain write whose values fully decide the outcome.
    IdempotentWrite,
    /// A lightweight transaction. Retrying one that timed out could report
    /// "not applied" for a change it made itself, so the store re-reads the
    /// row instead.
    Conditional,
}

pub(super) struct Statements {
    pub select_user: PreparedStatement,
    pub insert_user: PreparedStatement,
    pub update_user: PreparedStatement,
    pub revive_user: PreparedStatement,
    pub delete_user: PreparedStatement,
    pub revoke_tokens: PreparedStatement,

    pub select_channel: PreparedStatement,
    pub select_channel_serial: PreparedStatement,
    pub insert_channel: PreparedStatement,
    pub claim_seq: PreparedStatement,
    pub set_slow_mode: PreparedStatement,
    pub select_last_sent: PreparedStatement,
    pub write_last_sent: PreparedStatement,

    pub select_member: PreparedStatement,
    pub select_members: PreparedStatement,
    pub insert_member: PreparedStatement,
    pub delete_member: PreparedStatement,
    pub insert_user_channel: PreparedStatement,
    pub delete_user_channel: PreparedStatement,
    pub select_user_channels: PreparedStatement,

    pub write_activity: PreparedStatement,
    pub write_activity_seq: PreparedStatement,
    pub select_activity: PreparedStatement,
    pub select_one_activity: PreparedStatement,
    pub select_read_position: PreparedStatement,
    pub select_read_positions: PreparedStatement,
    pub write_read_position: PreparedStatement,
    pub select_delivered_position: PreparedStatement,
    pub select_delivered_positions: PreparedStatement,
    pub write_delivered_position: PreparedStatement,

    pub select_message: PreparedStatement,
    pub select_message_serial: PreparedStatement,
    pub select_messages_oldest_first: PreparedStatement,
    pub select_message_senders: PreparedStatement,
    pub insert_message: PreparedStatement,
    pub edit_unedited_message: PreparedStatement,
    pub edit_edited_message: PreparedStatement,
    pub delete_unedited_message: PreparedStatement,
    pub delete_edited_message: PreparedStatement,
    pub clear_mentions: PreparedStatement,

    pub select_reactions: PreparedStatement,
    pub select_user_reactions_serial: PreparedStatement,
    pub insert_user_reactions: PreparedStatement,
    pub update_user_reactions: PreparedStatement,
    pub delete_user_reactions: PreparedStatement,
    pub delete_message_reactions: PreparedStatement,

    pub write_mention: PreparedStatement,
    pub remove_mention_at: PreparedStatement,
    pub delete_mention: PreparedStatement,
    pub count_mentions: PreparedStatement,

    pub insert_deleted: PreparedStatement,
    pub count_deleted: PreparedStatement,
    pub select_deleted_down_from: PreparedStatement,

    pub select_client_id: PreparedStatement,
    pub insert_client_id: PreparedStatement,
    pub scan_client_ids: PreparedStatement,
    pub delete_client_id: PreparedStatement,

    pub insert_event: PreparedStatement,
    pub select_events_after: PreparedStatement,
    pub select_newest_event_before: PreparedStatement,
    pub count_events_before: PreparedStatement,
    pub delete_events_before: PreparedStatement,
    pub delete_event_bucket: PreparedStatement,
    pub insert_event_bucket: PreparedStatement,
    pub select_event_buckets: PreparedStatement,
    pub remove_event_bucket: PreparedStatement,
    pub select_purged_position: PreparedStatement,
    pub write_purged_position: PreparedStatement,

    pub select_webhook_serial: PreparedStatement,
    pub insert_webhook: PreparedStatement,
    pub take_webhook: PreparedStatement,
    pub save_webhook_cursor: PreparedStatement,
    pub insert_dead_letter: PreparedStatement,
    pub select_dead_letters: PreparedStatement,
    pub select_dead_letter: PreparedStatement,
    pub delete_dead_letter: PreparedStatement,

    pub write_restriction: PreparedStatement,
    pub select_restrictions: PreparedStatement,
    pub select_restriction: PreparedStatement,
    pub delete_restriction: PreparedStatement,

    pub select_block: PreparedStatement,
    pub select_blocked_users: PreparedStatement,
    pub select_blockers: PreparedStatement,
    /// Writes a block's `blocks` and `blocked_by` rows.
    pub add_block: Batch,
    /// Deletes a block's `blocks` and `blocked_by` rows.
    pub remove_block: Batch,

    pub insert_report: PreparedStatement,
    pub select_report: PreparedStatement,
    pub select_report_serial: PreparedStatement,
    pub resolve_report: PreparedStatement,
    pub insert_report_index: PreparedStatement,
    pub delete_report_index: PreparedStatement,
    pub select_report_index: PreparedStatement,
    pub insert_report_claim: PreparedStatement,
    pub select_report_claim_serial: PreparedStatement,
    pub delete_report_claim: PreparedStatement,

    pub select_setting_serial: PreparedStatement,
    pub insert_setting: PreparedStatement,
    pub update_setting: PreparedStatement,
    pub delete_setting: PreparedStatement,
    pub select_settings_from: PreparedStatement,
    pub select_settings_between: PreparedStatement,
    pub delete_user_settings: PreparedStatement,
    pub select_once_mark_serial: PreparedStatement,
    pub insert_once_mark: PreparedStatement,
    pub update_once_mark: PreparedStatement,

    pub ping: PreparedStatement,
}

const USER_COLUMNS: &str =
    "id, name, metadata, deleted, tokens_not_before, incarnation, created_at, updated_at";
pub(super) const CHANNEL_COLUMNS: &str =
    "id, kind, name, subject, created_by, created_at, last_seq, last_activity, newest";
/// Columns that an append writes. Edits and deletes write the others.
const MESSAGE_INSERT_COLUMNS: &str = "channel_id, seq, sender_id, sender_incarnation, client_id, \
     content, created_at, reply_to, mentions";
const MESSAGE_COLUMNS: &str = "channel_id, seq, sender_id, sender_incarnation, client_id, \
     content, created_at, reply_to, mentions, edited_at, deleted_at, edit_count";
/// Key of one `messages` row, in bind order.
const MESSAGE_KEY: &str = "channel_id = ? AND bucket = ? AND seq = ?";

impl Statements {
    pub(super) async fn prepare(
        session: &Session,
        keyspace: &str,
        consistency: ConsistencyLevel,
    ) -> Result<Statements, PrepareError> {
        let preparer = Preparer {
            session,
            keyspace,
            consistency,
        };
        let user = |statement: &str| statement.replace("{user_columns}", USER_COLUMNS);
        Ok(Statements {
            select_user: preparer
                .prepare(
                    Kind::Read,
                    &user("SELECT {user_columns} FROM {ks}.users WHERE id = ?"),
                )
                .await?,
            insert_user: preparer
                .prepare(
                    Kind::Conditional,
                    &user(
                        "INSERT INTO {ks}.users ({user_columns}) VALUES (?, ?, ?, false, null, 1, ?, ?) \
                         IF NOT EXISTS",
                    ),
                )
                .await?,
            update_user: preparer
                .prepare(
                    Kind::Conditional,
                    "UPDATE {ks}.users SET name = ?, metadata = ?, updated_at = ? \
                     WHERE id = ? IF deleted = false AND incarnation = ?",
                )
                .await?,
            revive_user: preparer
                .prepare(
                    Kind::Conditional,
                    "UPDATE {ks}.users SET name = ?, metadata = ?, deleted = false, \
                     tokens_not_before = ?, incarnation = ?, created_at = ?, updated_at = ? \
                     WHERE id = ? IF deleted = true AND incarnation = ?",
                )
                .await?,
            delete_user: preparer
                .prepare(
                    Kind::Conditional,
                    "UPDATE {ks}.users SET name = null, metadata = 'null', deleted = true, \
                     updated_at = ? WHERE id = ? IF deleted = false AND incarnation = ?",
                )
                .await?,
            revoke_tokens: preparer
                .prepare(
                    Kind::Conditional,
                    "UPDATE {ks}.users SET tokens_not_before = ?, updated_at = ? \
                     WHERE id = ? IF deleted = false AND incarnation = ?",
                )
                .await?,

            select_channel: preparer
                .prepare(
                    Kind::Read,
                    &format!(
                        "SELECT {CHANNEL_COLUMNS}, slow_mode_seconds FROM {{ks}}.channels \
                         WHERE id = ?"
                    ),
                )
                .await?,
            select_channel_serial: preparer
                .prepare_serial_read(&format!(
                    "SELECT {CHANNEL_COLUMNS}, slow_mode_seconds FROM {{ks}}.channels \
                     WHERE id = ?"
                ))
                .await?,
            insert_channel: preparer
                .prepare(
                    Kind::Conditional,
                    &format!(
                        "INSERT INTO {{ks}}.channels ({CHANNEL_COLUMNS}) \
                         VALUES (?, ?, ?, ?, ?, ?, 0, ?, null) IF NOT EXISTS"
                    ),
                )
                .await?,
            claim_seq: preparer
                .prepare(
                    Kind::Conditional,
                    "UPDATE {ks}.channels SET last_seq = ?, last_activity = ?, newest = ? \
                     WHERE id = ? IF last_seq = ?",
                )
                .await?,
            // The condition fails for a channel that does not exist, so the
            // update never creates a row.
            set_slow_mode: preparer
                .prepare(
                    Kind::Conditional,
                    "UPDATE {ks}.channels SET slow_mode_seconds = ? WHERE id = ? \
                     IF kind = 'group'",
                )
                .await?,
            select_last_sent: preparer
                .prepare(
                    Kind::Read,
                    "SELECT sent_at FROM {ks}.last_sent WHERE channel_id = ? AND user_id = ?",
                )
                .await?,
            // Written with the send time as the timestamp, so the newest
            // send wins whatever order writes arrive in.
            write_last_sent: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.last_sent (channel_id, user_id, sent_at) \
                     VALUES (?, ?, ?) USING TIMESTAMP ?",
                )
                .await?,

            select_member: preparer
                .prepare(
                    Kind::Read,
                    "SELECT role FROM {ks}.members WHERE channel_id = ? AND user_id = ?",
                )
                .await?,
            select_members: preparer
                .prepare(
                    Kind::Read,
                    "SELECT user_id, role FROM {ks}.members WHERE channel_id = ?",
                )
                .await?,
            insert_member: preparer
                .prepare(
                    Kind::Conditional,
                    "INSERT INTO {ks}.members (channel_id, user_id, role, joined_at) \
                     VALUES (?, ?, ?, ?) IF NOT EXISTS",
                )
                .await?,
            delete_member: preparer
                .prepare(
                    Kind::Conditional,
                    "DELETE FROM {ks}.members WHERE channel_id = ? AND user_id = ? IF EXISTS",
                )
                .await?,
            insert_user_channel: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.user_channels (user_id, channel_id) VALUES (?, ?)",
                )
                .await?,
            delete_user_channel: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "DELETE FROM {ks}.user_channels WHERE user_id = ? AND channel_id = ?",
                )
                .await?,
            select_user_channels: preparer
                .prepare(
                    Kind::Read,
                    "SELECT channel_id FROM {ks}.user_channels WHERE user_id = ?",
                )
                .await?,

            write_activity: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.channel_activity (user_id, channel_id, last_seq, last_activity) \
                     VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
                )
                .await?,
            write_activity_seq: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.channel_activity (user_id, channel_id, last_seq) \
                     VALUES (?, ?, ?) USING TIMESTAMP ?",
                )
                .await?,
            select_activity: preparer
                .prepare(
                    Kind::Read,
                    "SELECT channel_id, last_seq, last_activity FROM {ks}.channel_activity \
                     WHERE user_id = ?",
                )
                .await?,
            select_one_activity: preparer
                .prepare(
                    Kind::Read,
                    "SELECT last_activity FROM {ks}.channel_activity \
                     WHERE user_id = ? AND channel_id = ?",
                )
                .await?,
            select_read_position: preparer
                .prepare(
                    Kind::Read,
                    "SELECT read_seq FROM {ks}.read_positions WHERE channel_id = ? AND user_id = ?",
                )
                .await?,
            select_read_positions: preparer
                .prepare(
                    Kind::Read,
                    "SELECT user_id, read_seq FROM {ks}.read_positions WHERE channel_id = ?",
                )
                .await?,
            write_read_position: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.read_positions (channel_id, user_id, read_seq) \
                     VALUES (?, ?, ?) USING TIMESTAMP ?",
                )
                .await?,

            select_delivered_position: preparer
                .prepare(
                    Kind::Read,
                    "SELECT delivered_seq FROM {ks}.delivered_positions \
                     WHERE channel_id = ? AND user_id = ?",
                )
                .await?,
            select_delivered_positions: preparer
                .prepare(
                    Kind::Read,
                    "SELECT user_id, delivered_seq FROM {ks}.delivered_positions \
                     WHERE channel_id = ?",
                )
                .await?,
            write_delivered_position: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.delivered_positions (channel_id, user_id, delivered_seq) \
                     VALUES (?, ?, ?) USING TIMESTAMP ?",
                )
                .await?,

            select_message: preparer
                .prepare(
                    Kind::Read,
                    &format!("SELECT {MESSAGE_COLUMNS} FROM {{ks}}.messages WHERE {MESSAGE_KEY}"),
                )
                .await?,
            select_message_serial: preparer
                .prepare_serial_read(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM {{ks}}.messages WHERE {MESSAGE_KEY}"
                ))
                .await?,
            select_messages_oldest_first: preparer
                .prepare(
                    Kind::Read,
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} FROM {{ks}}.messages \
                         WHERE channel_id = ? AND bucket = ? AND seq >= ? AND seq <= ? \
                         ORDER BY seq ASC LIMIT ?"
                    ),
                )
                .await?,
            // Only what the channel list needs to skip messages of blocked
            // users, newest first.
            select_message_senders: preparer
                .prepare(
                    Kind::Read,
                    "SELECT seq, sender_id, deleted_at, mentions FROM {ks}.messages \
                     WHERE channel_id = ? AND bucket = ? AND seq >= ? AND seq <= ? \
                     ORDER BY seq DESC",
                )
                .await?,
            // Timestamp 1 is below every edit and delete, which are
            // lightweight transactions with clock timestamps, so writing a
            // claimed message's row again never undoes them.
            insert_message: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    &format!(
                        "INSERT INTO {{ks}}.messages (bucket, {MESSAGE_INSERT_COLUMNS}) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP 1"
                    ),
                )
                .await?,
            // The sender condition fails for a row that does not exist, so
            // the update never creates one. `edit_count` makes edits and
            // deletes of one message compare-and-set, so each reads the
            // mentions it replaces. CQL compares with null only as a
            // literal, hence one statement for a message never edited.
            edit_unedited_message: preparer
                .prepare(
                    Kind::Conditional,
                    &format!(
                        "UPDATE {{ks}}.messages SET content = ?, mentions = ?, edited_at = ?, \
                         edit_count = ? WHERE {MESSAGE_KEY} \
                         IF sender_id = ? AND deleted_at = null AND edit_count = null"
                    ),
                )
                .await?,
            edit_edited_message: preparer
                .prepare(
                    Kind::Conditional,
                    &format!(
                        "UPDATE {{ks}}.messages SET content = ?, mentions = ?, edited_at = ?, \
                         edit_count = ? WHERE {MESSAGE_KEY} \
                         IF sender_id = ? AND deleted_at = null AND edit_count = ?"
                    ),
                )
                .await?,
            delete_unedited_message: preparer
                .prepare(
                    Kind::Conditional,
                    &format!(
                        "UPDATE {{ks}}.messages SET content = null, deleted_at = ? \
                         WHERE {MESSAGE_KEY} \
                         IF sender_id = ? AND deleted_at = null AND edit_count = null"
                    ),
                )
                .await?,
            delete_edited_message: preparer
                .prepare(
                    Kind::Conditional,
                    &format!(
                        "UPDATE {{ks}}.messages SET content = null, deleted_at = ? \
                         WHERE {MESSAGE_KEY} \
                         IF sender_id = ? AND deleted_at = null AND edit_count = ?"
                    ),
                )
                .await?,
            clear_mentions: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    &format!("UPDATE {{ks}}.messages SET mentions = null WHERE {MESSAGE_KEY}"),
                )
                .await?,

            select_reactions: preparer
                .prepare(
                    Kind::Read,
                    "SELECT seq, user_id, reactions FROM {ks}.message_reactions \
                     WHERE channel_id = ? AND bucket = ? AND seq >= ? AND seq <= ?",
                )
                .await?,
            select_user_reactions_serial: preparer
                .prepare_serial_read(&format!(
                    "SELECT reactions FROM {{ks}}.message_reactions \
                     WHERE {MESSAGE_KEY} AND user_id = ?"
                ))
                .await?,
            insert_user_reactions: preparer
                .prepare(
                    Kind::Conditional,
                    "INSERT INTO {ks}.message_reactions \
                     (channel_id, bucket, seq, user_id, reactions, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
                )
                .await?,
            update_user_reactions: preparer
                .prepare(
                    Kind::Conditional,
                    &format!(
                        "UPDATE {{ks}}.message_reactions SET reactions = ?, updated_at = ? \
                         WHERE {MESSAGE_KEY} AND user_id = ? IF reactions = ?"
                    ),
                )
                .await?,
            delete_user_reactions: preparer
                .prepare(
                    Kind::Conditional,
                    &format!(
                        "DELETE FROM {{ks}}.message_reactions \
                         WHERE {MESSAGE_KEY} AND user_id = ? IF reactions = ?"
                    ),
                )
                .await?,
            delete_message_reactions: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    &format!("DELETE FROM {{ks}}.message_reactions WHERE {MESSAGE_KEY}"),
                )
                .await?,

            write_mention: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.mentions (channel_id, user_id, seq) VALUES (?, ?, ?) \
                     USING TIMESTAMP ?",
                )
                .await?,
            remove_mention_at: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "DELETE FROM {ks}.mentions USING TIMESTAMP ? \
                     WHERE channel_id = ? AND user_id = ? AND seq = ?",
                )
                .await?,
            // A clock timestamp, far above the edit counts that the other
            // mention writes use, so a deleted message's mentions stay gone.
            delete_mention: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "DELETE FROM {ks}.mentions WHERE channel_id = ? AND user_id = ? AND seq = ?",
                )
                .await?,
            count_mentions: preparer
                .prepare(
                    Kind::Read,
                    "SELECT COUNT(*) FROM {ks}.mentions \
                     WHERE channel_id = ? AND user_id = ? AND seq > ? AND seq <= ?",
                )
                .await?,

            insert_deleted: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.deleted_messages (channel_id, seq, deleted_at) \
                     VALUES (?, ?, ?)",
                )
                .await?,
            count_deleted: preparer
                .prepare(
                    Kind::Read,
                    "SELECT COUNT(*) FROM {ks}.deleted_messages \
                     WHERE channel_id = ? AND seq > ? AND seq <= ?",
                )
                .await?,
            select_deleted_down_from: preparer
                .prepare(
                    Kind::Read,
                    "SELECT seq FROM {ks}.deleted_messages \
                     WHERE channel_id = ? AND seq <= ? LIMIT ?",
                )
                .await?,

            select_client_id: preparer
                .prepare(
                    Kind::Read,
                    "SELECT channel_id, seq, content_hash FROM {ks}.client_ids \
                     WHERE sender_id = ? AND client_id = ?",
                )
                .await?,
            insert_client_id: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.client_ids \
                     (sender_id, client_id, channel_id, seq, content_hash, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .await?,
            scan_client_ids: preparer
                .prepare(
                    Kind::Read,
                    "SELECT sender_id, client_id, created_at FROM {ks}.client_ids",
                )
                .await?,
            delete_client_id: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "DELETE FROM {ks}.client_ids WHERE sender_id = ? AND client_id = ?",
                )
                .await?,

            insert_event: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.events \
                     (bucket, at, tag, kind, channel_id, created_at, data) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .await?,
            // Both clustering columns in one slice, so a page resumes right
            // after the cursor's event even among events of one microsecond.
            select_events_after: preparer
                .prepare(
                    Kind::Read,
                    "SELECT at, tag, kind, channel_id, created_at, data FROM {ks}.events \
                     WHERE bucket = ? AND (at, tag) > (?, ?) LIMIT ?",
                )
                .await?,
            select_newest_event_before: preparer
                .prepare(
                    Kind::Read,
                    "SELECT at, tag FROM {ks}.events WHERE bucket = ? AND at < ? \
                     ORDER BY at DESC, tag DESC LIMIT 1",
                )
                .await?,
            count_events_before: preparer
                .prepare(
                    Kind::Read,
                    "SELECT COUNT(*) FROM {ks}.events WHERE bucket = ? AND at < ?",
                )
                .await?,
            delete_events_before: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "DELETE FROM {ks}.events WHERE bucket = ? AND at < ?",
                )
                .await?,
            delete_event_bucket: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "DELETE FROM {ks}.events WHERE bucket = ?",
                )
                .await?,
            insert_event_bucket: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.event_buckets (log, bucket) VALUES (0, ?)",
                )
                .await?,
            select_event_buckets: preparer
                .prepare(
                    Kind::Read,
                    "SELECT bucket FROM {ks}.event_buckets \
                     WHERE log = 0 AND bucket >= ? AND bucket <= ?",
                )
                .await?,
            remove_event_bucket: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "DELETE FROM {ks}.event_buckets WHERE log = 0 AND bucket = ?",
                )
                .await?,
            select_purged_position: preparer
                .prepare(
                    Kind::Read,
                    "SELECT purged_at, purged_tag FROM {ks}.event_log_state WHERE log = 0",
                )
                .await?,
            write_purged_position: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.event_log_state (log, purged_at, purged_tag) \
                     VALUES (0, ?, ?) USING TIMESTAMP ?",
                )
                .await?,

            select_webhook_serial: preparer
                .prepare_serial_read(
                    "SELECT holder, lease_until, cursor FROM {ks}.webhook_endpoints \
                     WHERE endpoint = ?",
                )
                .await?,
            insert_webhook: preparer
                .prepare(
                    Kind::Conditional,
                    "INSERT INTO {ks}.webhook_endpoints (endpoint, holder, lease_until) \
                     VALUES (?, ?, ?) IF NOT EXISTS",
                )
                .await?,
            take_webhook: preparer
                .prepare(
                    Kind::Conditional,
                    "UPDATE {ks}.webhook_endpoints SET holder = ?, lease_until = ? \
                     WHERE endpoint = ? IF holder = ? AND lease_until = ?",
                )
                .await?,
            save_webhook_cursor: preparer
                .prepare(
                    Kind::Conditional,
                    "UPDATE {ks}.webhook_endpoints SET cursor = ?, lease_until = ? \
                     WHERE endpoint = ? IF holder = ?",
                )
                .await?,
            insert_dead_letter: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.dead_letters (endpoint, at, tag, letter) \
                     VALUES (?, ?, ?, ?)",
                )
                .await?,
            select_dead_letters: preparer
                .prepare(
                    Kind::Read,
                    "SELECT letter FROM {ks}.dead_letters WHERE endpoint = ? LIMIT ?",
                )
                .await?,
            select_dead_letter: preparer
                .prepare(
                    Kind::Read,
                    "SELECT letter FROM {ks}.dead_letters \
                     WHERE endpoint = ? AND at = ? AND tag = ?",
                )
                .await?,
            delete_dead_letter: preparer
                .prepare(
                    Kind::Conditional,
                    "DELETE FROM {ks}.dead_letters WHERE endpoint = ? AND at = ? AND tag = ? \
                     IF EXISTS",
                )
                .await?,

            write_restriction: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.restrictions \
                     (user_id, scope, kind, until, reason, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .await?,
            select_restrictions: preparer
                .prepare(
                    Kind::Read,
                    "SELECT scope, kind, until, reason, created_at FROM {ks}.restrictions \
                     WHERE user_id = ?",
                )
                .await?,
            select_restriction: preparer
                .prepare(
                    Kind::Read,
                    "SELECT until FROM {ks}.restrictions \
                     WHERE user_id = ? AND scope = ? AND kind = ?",
                )
                .await?,
            delete_restriction: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "DELETE FROM {ks}.restrictions WHERE user_id = ? AND scope = ? AND kind = ?",
                )
                .await?,

            select_block: preparer
                .prepare(
                    Kind::Read,
                    "SELECT blocked FROM {ks}.blocks WHERE blocker = ? AND blocked = ?",
                )
                .await?,
            select_blocked_users: preparer
                .prepare(
                    Kind::Read,
                    "SELECT blocked FROM {ks}.blocks WHERE blocker = ?",
                )
                .await?,
            select_blockers: preparer
                .prepare(
                    Kind::Read,
                    "SELECT blocker FROM {ks}.blocked_by WHERE blocked = ?",
                )
                .await?,
            add_block: preparer
                .prepare_logged_batch(&[
                    "INSERT INTO {ks}.blocks (blocker, blocked, created_at) VALUES (?, ?, ?)",
                    "INSERT INTO {ks}.blocked_by (blocked, blocker, created_at) \
                     VALUES (?, ?, ?)",
                ])
                .await?,
            remove_block: preparer
                .prepare_logged_batch(&[
                    "DELETE FROM {ks}.blocks WHERE blocker = ? AND blocked = ?",
                    "DELETE FROM {ks}.blocked_by WHERE blocked = ? AND blocker = ?",
                ])
                .await?,

            // Timestamp 1, below the clock timestamp of the resolving
            // transaction, so writing a filed report again never reopens it.
            insert_report: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.reports (id, report, status) VALUES (?, ?, 'open') \
                     USING TIMESTAMP 1",
                )
                .await?,
            select_report: preparer
                .prepare(
                    Kind::Read,
                    "SELECT report, status, resolution FROM {ks}.reports WHERE id = ?",
                )
                .await?,
            select_report_serial: preparer
                .prepare_serial_read(
                    "SELECT report, status, resolution FROM {ks}.reports WHERE id = ?",
                )
                .await?,
            resolve_report: preparer
                .prepare(
                    Kind::Conditional,
                    "UPDATE {ks}.reports SET status = 'resolved', resolution = ? \
                     WHERE id = ? IF status = 'open'",
                )
                .await?,
            // Timestamp 1 as well, so writing a filed report again never
            // lists it as open after a resolution removed that entry.
            insert_report_index: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "INSERT INTO {ks}.report_index (listing, at, tag) VALUES (?, ?, ?) \
                     USING TIMESTAMP 1",
                )
                .await?,
            delete_report_index: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "DELETE FROM {ks}.report_index WHERE listing = ? AND at = ? AND tag = ?",
                )
                .await?,
            select_report_index: preparer
                .prepare(
                    Kind::Read,
                    "SELECT at, tag FROM {ks}.report_index \
                     WHERE listing = ? AND (at, tag) > (?, ?) LIMIT ?",
                )
                .await?,
            insert_report_claim: preparer
                .prepare(
                    Kind::Conditional,
                    "INSERT INTO {ks}.report_claims (reporter, target, id, report) \
                     VALUES (?, ?, ?, ?) IF NOT EXISTS",
                )
                .await?,
            select_report_claim_serial: preparer
                .prepare_serial_read(
                    "SELECT id, report FROM {ks}.report_claims WHERE reporter = ? AND target = ?",
                )
                .await?,
            delete_report_claim: preparer
                .prepare(
                    Kind::Conditional,
                    "DELETE FROM {ks}.report_claims WHERE reporter = ? AND target = ? IF id = ?",
                )
                .await?,

            select_setting_serial: preparer
                .prepare_serial_read(
                    "SELECT value FROM {ks}.user_settings WHERE user_id = ? AND name = ?",
                )
                .await?,
            insert_setting: preparer
                .prepare(
                    Kind::Conditional,
                    "INSERT INTO {ks}.user_settings (user_id, name, value, updated_at) \
                     VALUES (?, ?, ?, ?) IF NOT EXISTS",
                )
                .await?,
            update_setting: preparer
                .prepare(
                    Kind::Conditional,
                    "UPDATE {ks}.user_settings SET value = ?, updated_at = ? \
                     WHERE user_id = ? AND name = ? IF value = ?",
                )
                .await?,
            delete_setting: preparer
                .prepare(
                    Kind::Conditional,
                    "DELETE FROM {ks}.user_settings WHERE user_id = ? AND name = ? IF EXISTS",
                )
                .await?,
            select_settings_from: preparer
                .prepare(
                    Kind::Read,
                    "SELECT name, value FROM {ks}.user_settings WHERE user_id = ? AND name >= ?",
                )
                .await?,
            select_settings_between: preparer
                .prepare(
                    Kind::Read,
                    "SELECT name, value FROM {ks}.user_settings \
                     WHERE user_id = ? AND name >= ? AND name < ?",
                )
                .await?,
            delete_user_settings: preparer
                .prepare(
                    Kind::IdempotentWrite,
                    "DELETE FROM {ks}.user_settings WHERE user_id = ?",
                )
                .await?,
            select_once_mark_serial: preparer
                .prepare_serial_read("SELECT marked_at FROM {ks}.once_marks WHERE name = ?")
                .await?,
            insert_once_mark: preparer
                .prepare(
                    Kind::Conditional,
                    "INSERT INTO {ks}.once_marks (name, marked_at) VALUES (?, ?) IF NOT EXISTS",
                )
                .await?,
            update_once_mark: preparer
                .prepare(
                    Kind::Conditional,
                    "UPDATE {ks}.once_marks SET marked_at = ? WHERE name = ? IF marked_at = ?",
                )
                .await?,

            ping: preparer
                .prepare(
                    Kind::Read,
                    "SELECT version FROM {ks}.schema_migrations LIMIT 1",
                )
                .await?,
        })
    }
}

struct Preparer<'a> {
    session: &'a Session,
    keyspace: &'a str,
    consistency: ConsistencyLevel,
}

impl Preparer<'_> {
    /// Prepares `statement` with `{ks}` replaced by the keyspace. The name
    /// was checked when the settings were validated, so it is safe to
    /// splice into CQL.
    async fn prepare(
        &self,
        kind: Kind,
        statement: &str,
    ) -> Result<PreparedStatement, PrepareError> {
        let text = statement.replace("{ks}", self.keyspace);
        let mut prepared = self.session.prepare(text).await?;
        prepared.set_is_idempotent(kind != Kind::Conditional);
        if kind == Kind::IdempotentWrite {
            prepared.set_consistency(self.consistency.write_consistency());
        }
        Ok(prepared)
    }

    /// Prepares a read at serial consistency, which returns the outcome of
    /// every lightweight transaction on the row and finishes one that is
    /// half-way.
    async fn prepare_serial_read(
        &self,
        statement: &str,
    ) -> Result<PreparedStatement, PrepareError> {
        let mut prepared = self.prepare(Kind::Read, statement).await?;
        prepared.set_consistency(self.consistency.serial_read());
        Ok(prepared)
    }

    /// Prepares plain writes as one logged batch. ScyllaDB applies a logged
    /// batch whole or not at all, also across partitions, and gives all its
    /// writes one timestamp, so of two racing batches on the same rows one
    /// wins in every table.
    async fn prepare_logged_batch(&self, statements: &[&str]) -> Result<Batch, PrepareError> {
        let mut batch = Batch::new(BatchType::Logged);
        for statement in statements {
            let prepared = self.prepare(Kind::IdempotentWrite, statement).await?;
            batch.append_statement(prepared);
        }
        batch.set_is_idempotent(true);
        batch.set_consistency(self.consistency.write_consistency());
        Ok(batch)
    }
}
