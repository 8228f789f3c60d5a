//! The ScyllaDB store: one tenant's chat in a keyspace of its own, shared
//! by any number of runtime replicas.
//!
//! # Data model
//!
//! - `messages` is partitioned by channel and bucket, with 1,000 messages
//!   per bucket, newest first inside a partition. Sequence numbers are
//!   contiguous, so the bucket of any message is computed from its number
//!   and a page never has to search for the partition it starts in. Time
//!   buckets suit ids that encode time, but readers here page by number. A
//!   fixed count per partition bounds its size as well, and leaves no empty
//!   partitions to skip.
//! - `channels` contains each channel's newest number (`last_seq`), its last
//!   activity and, in `newest`, the whole newest message.
//! - `members` (by channel) and `user_channels` (by user) record membership.
//!   `channel_activity` (by user) contains each of the user's channels with its
//!   newest number and activity, so a user's channel list and the positions
//!   a new socket needs are one partition read whatever the number of
//!   channels. The list is sorted by activity in memory: a table clustered
//!   by activity would need a delete and an insert per member per message.
//! - `read_positions` and `delivered_positions` (by channel) contain each
//!   member's read and delivered positions.
//! - `message_reactions` shares the `messages` partitions and has one row
//!   per user and message with the user's reactions. `mentions` (by channel
//!   and user) and `deleted_messages` (by channel) are clustered by number,
//!   so unread mentions and deleted unread messages are range counts.
//! - `client_ids` is keyed by sender and client message id, which makes
//!   dedupe hold across replicas and restarts.
//! - `events` is the tenant's event log, one partition per hour, listed in
//!   `event_buckets`; `event_log_state` marks how far it was purged.
//!   `webhook_endpoints` and `dead_letters` keep webhook delivery state.
//!   `events.rs` explains positions, ordering and what a crash can lose.
//! - `restrictions` (by user) contains bans and mutes, `last_sent` (by
//!   channel) each member's newest send time for slow mode, and
//!   `user_settings` (by user) and `once_marks` the users' settings and
//!   once-a-period marks. `reports`, `report_index` and `report_claims` are
//!   the report queue (see `reports.rs`).
//! - `blocks` (by blocker) and `blocked_by` (by blocked user) contain each
//!   block twice, written by one logged batch (see `blocks.rs`).
//!
//! # Contiguous sequence numbers across replicas
//!
//! The next number is claimed with a lightweight transaction (Paxos) on the
//! channel row: `UPDATE channels SET last_seq = n + 1, newest = ... IF
//! last_seq = n`. Of several replicas that race for `n + 1`, exactly one
//! wins, and the others read the row again and try `n + 2`. A single writer
//! per channel would avoid Paxos's extra round trips, but it needs leases
//! and hand-over between replicas, which fail in more ways than a
//! conditional update does.
//!
//! The transaction stores the whole message in `newest`, so a number is
//! never handed out without its message: a replica that dies after winning
//! the number leaves the message in the channel row. The other rows of a
//! message (client id, read position, activity, and last the `messages`
//! row) are written after the claim. Before claiming `n + 1`, a writer
//! checks that the `messages` row of `n` exists and writes the message's
//! rows from `newest` when it does not. The `messages` row is written last,
//! so its presence means the others are in place.
//!
//! # Positions without transactions
//!
//! Read and delivered positions and the activity rows only ever move
//! forward, so they are written with the position itself as the CQL write
//! timestamp (`USING TIMESTAMP`). Of two concurrent writes the higher
//! position wins, in whatever order they arrive, and no read-before-write
//! is needed. These rows are never deleted, so no tombstone with a real
//! clock timestamp can hide them.
//!
//! Two more tables use small timestamps on purpose. An append writes its
//! `messages` row at timestamp 1, so writing a claimed message's rows again
//! never undoes an edit or a delete, which are lightweight transactions
//! with clock timestamps. `mentions` rows carry the message's edit count
//! plus one (see `changes.rs`). The other tables use ordinary timestamps.
//!
//! # Requests
//!
//! Every statement is prepared and marked idempotent or not. The driver's
//! default retry policy retries idempotent statements on another node after
//! a connection fails, but it retries no write timeout, so the store writes
//! a claimed message's rows again itself. After a lightweight transaction
//! times out, the store reads the row at serial consistency to learn the
//! outcome. Rows that a lightweight transaction writes (users, channels,
//! members) are read at serial consistency where the next step depends on
//! them.
//!
//! # What the cluster must provide
//!
//! - Durability: the Store contract promises that a returned write survives
//!   a power cut. ScyllaDB's default `commitlog_sync: periodic` acknowledges
//!   writes before they reach the disk, so the contract holds only with
//!   `commitlog_sync: batch`, or with replicas that never lose power at the
//!   same moment.
//! - One datacenter per tenant with the default `local_quorum`: its
//!   transactions run at `LOCAL_SERIAL`, which orders them within one
//!   datacenter only. Runtimes of one tenant in several datacenters need
//!   `quorum` or `each_quorum`, whose transactions run at `SERIAL`. Reads
//!   stay local in every case, so a runtime may briefly miss rows written
//!   in another datacenter.

mod blocks;
mod changes;
mod channels;
mod config;
mod connecting;
mod events;
mod messages;
mod positions;
mod reactions;
mod reports;
mod rows;
mod safety;
mod schema;
mod settings;
mod slow_mode;
mod statements;
mod summaries;
#[cfg(test)]
mod tests;
mod users;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::TryStreamExt as _;
use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

pub use config::{ConnectError, ConsistencyLevel, ScyllaConfig, ScyllaTlsConfig, tls_from_pem};
pub use connecting::ConnectingStore;
pub use events::DEFAULT_READ_LAG;
pub use schema::{
    MIGRATIONS, Migration, REQUIRED_VERSION, SchemaError, Step, apply_migrations,
    check_keyspace_name, check_schema,
};

use super::{
    Appended, Channel, ChannelSummary, DeadLetter, Deleter, EventPage, Member, MembershipChange,
    Message, MessageChange, MessageEdit, Millis, NewEvent, NewMessage, NewReport, Page, Positions,
    Report, ReportChange, ReportStatus, Resolution, Restriction, RestrictionKind, Store,
    StoreError, StoreResult, User, UserAuthState, WebhookClaim,
};
use statements::Statements;

/// Error of opening the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The keyspace has no schema or an older one than this build needs.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("failed to prepare the store's statements in keyspace {keyspace}")]
    Prepare {
        keyspace: String,
        #[source]
        source: scylla::errors::PrepareError,
    },
}

/// A failed request, named by what the store was doing.
#[derive(Debug, thiserror::Error)]
#[error("failed to {operation}")]
pub struct RequestFailed {
    operation: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Maps a driver error to `Unavailable`, naming the operation.
fn failed<E>(operation: &'static str) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| {
        StoreError::Unavailable(Box::new(RequestFailed {
            operation,
            source: Box::new(source),
        }))
    }
}

/// Locks that make this process's appends to one channel take turns.
/// Channels share a lock when their ids hash alike, which only costs a
/// wait when both are busy at the same instant.
const CHANNEL_LOCKS: usize = 1024;

pub struct ScyllaStore {
    session: Arc<Session>,
    statements: Statements,
    keyspace: String,
    closed: AtomicBool,
    reads: AtomicU64,
    channel_locks: Vec<tokio::sync::Mutex<()>>,
    lock_hasher: std::collections::hash_map::RandomState,
    event_clock: events::EventClock,
    /// The `events` partition this store last listed in `event_buckets`.
    registered_bucket: std::sync::atomic::AtomicI64,
    event_read_lag: std::time::Duration,
}

impl ScyllaStore {
    /// Connects with `config`, checks that the keyspace's schema is recent
    /// enough, and prepares every statement. Relative file paths in
    /// `config` resolve against `base`.
    pub async fn open(config: &ScyllaConfig, base: &Path) -> Result<ScyllaStore, OpenError> {
        let session = config.connect(base).await?;
        Self::with_session(Arc::new(session), &config.keyspace, config.consistency).await
    }

    /// Opens the store of `keyspace` on an existing session.
    pub async fn with_session(
        session: Arc<Session>,
        keyspace: &str,
        consistency: ConsistencyLevel,
    ) -> Result<ScyllaStore, OpenError> {
        let version = check_schema(&session, keyspace).await?;
        let statements = Statements::prepare(&session, keyspace, consistency)
            .await
            .map_err(|source| OpenError::Prepare {
                keyspace: keyspace.to_owned(),
                source,
            })?;
        tracing::info!(
            keyspace,
            schema_version = version,
            "Opened the ScyllaDB store"
        );
        Ok(ScyllaStore {
            session,
            statements,
            keyspace: keyspace.to_owned(),
            closed: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            channel_locks: (0..CHANNEL_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            lock_hasher: std::collections::hash_map::RandomState::new(),
            event_clock: events::EventClock::default(),
            registered_bucket: std::sync::atomic::AtomicI64::new(i64::MIN),
            event_read_lag: DEFAULT_READ_LAG,
        })
    }

    /// Sets how far behind the clock event readers stay (see
    /// [`DEFAULT_READ_LAG`]). Tests whose writes have all returned before
    /// they read can use zero.
    pub fn with_event_read_lag(mut self, lag: std::time::Duration) -> Self {
        self.event_read_lag = lag;
        self
    }

    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    fn channel_lock(&self, channel_id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::BuildHasher as _;
        let index = self.lock_hasher.hash_one(channel_id) as usize % CHANNEL_LOCKS;
        &self.channel_locks[index]
    }

    fn check_open(&self) -> StoreResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        Ok(())
    }

    /// Like `check_open`, and counts a read for metrics.
    fn start_read(&self) -> StoreResult<()> {
        self.check_open()?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Runs a statement whose result fits one response: a single row, a
    /// LIMIT, or a write.
    async fn rows<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        operation: &'static str,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        let result = self
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(failed(operation))?
            .into_rows_result()
            .map_err(failed(operation))?;
        let rows = result
            .rows::<R>()
            .map_err(failed(operation))?
            .collect::<Result<Vec<R>, _>>()
            .map_err(failed(operation))?;
        Ok(rows)
    }

    async fn first_row<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        operation: &'static str,
    ) -> StoreResult<Option<R>>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        Ok(self
            .rows(statement, values, operation)
            .await?
            .into_iter()
            .next())
    }

    /// Runs a statement whose result may span many pages, and reads every
    /// page. The driver keeps requesting pages while the server returns a
    /// paging state, so a page that came back empty does not end the read.
    async fn all_rows<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        operation: &'static str,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        self.session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(failed(operation))?
            .rows_stream::<R>()
            .map_err(failed(operation))?
            .try_collect()
            .await
            .map_err(failed(operation))
    }

    async fn execute(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        operation: &'static str,
    ) -> StoreResult<()> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(failed(operation))?;
        Ok(())
    }

    /// Runs a lightweight transaction and returns whether it was applied.
    async fn conditional(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        operation: &'static str,
    ) -> StoreResult<bool> {
        let result = self
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(failed(operation))?
            .into_rows_result()
            .map_err(failed(operation))?;
        // ScyllaDB returns the row's current values beside `[applied]`, and
        // their columns depend on the statement, so only `[applied]` is read.
        let Some((index, _)) = result.column_specs().get_by_name("[applied]") else {
            return Err(rows::inconsistent(
                "a conditional statement returned no [applied] column",
            ));
        };
        let row: Row = result.first_row().map_err(failed(operation))?;
        let applied = row
            .columns
            .get(index)
            .and_then(Option::as_ref)
            .and_then(CqlValue::as_boolean);
        applied.ok_or_else(|| rows::inconsistent("[applied] is not a boolean"))
    }

    /// Runs a one-row read in the keyspace to check the connection.
    pub async fn ping(&self) -> StoreResult<()> {
        self.check_open()?;
        self.execute(&self.statements.ping, (), "read schema_migrations")
            .await
    }
}

#[async_trait::async_trait]
impl Store for ScyllaStore {
    async fn upsert_user(
        &self,
        id: &str,
        name: &str,
        metadata: serde_json::Value,
        now: Millis,
    ) -> StoreResult<User> {
        self.check_open()?;
        self.upsert_user_row(id, name, &metadata, now).await
    }

    async fn delete_user(&self, id: &str, now: Millis) -> StoreResult<()> {
        self.check_open()?;
        self.delete_user_row(id, now).await
    }

    async fn revoke_tokens(&self, id: &str, at_least: i64, now: Millis) -> StoreResult<i64> {
        self.check_open()?;
        self.revoke_tokens_row(id, at_least, now).await
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        self.start_read()?;
        Ok(self.user(id).await?.map(|record| record.user))
    }

    async fn user_auth_state(&self, id: &str) -> StoreResult<Option<UserAuthState>> {
        self.start_read()?;
        let Some(record) = self.user(id).await? else {
            return Ok(None);
        };
        let banned_until = self
            .tenant_ban_end(id, safety::wall_clock_millis()?)
            .await?;
        Ok(Some(UserAuthState {
            deleted: record.user.deleted,
            banned_until,
            tokens_not_before: record.tokens_not_before,
        }))
    }

    async fn open_direct(
        &self,
        a: &str,
        b: &str,
        subject: Option<&str>,
        now: Millis,
    ) -> StoreResult<(Channel, Vec<String>)> {
        self.check_open()?;
        self.open_direct_channel(a, b, subject, now).await
    }

    async fn create_group(
        &self,
        creator: &str,
        name: &str,
        members: &[String],
        now: Millis,
    ) -> StoreResult<(Channel, Vec<String>)> {
        self.check_open()?;
        self.create_group_channel(creator, name, members, now).await
    }

    async fn add_member(
        &self,
        channel_id: &str,
        actor: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<MembershipChange> {
        self.check_open()?;
        self.add_group_member(channel_id, actor, user, now).await
    }

    async fn remove_member(
        &self,
        channel_id: &str,
        actor: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<MembershipChange> {
        self.check_open()?;
        self.remove_group_member(channel_id, actor, user, now).await
    }

    async fn channel_for_member(
        &self,
        channel_id: &str,
        user: &str,
    ) -> StoreResult<(Channel, Vec<Member>)> {
        self.start_read()?;
        self.channel_with_members(channel_id, user).await
    }

    async fn activity_for(&self, channel_id: &str, user: &str) -> StoreResult<Millis> {
        self.start_read()?;
        self.viewed_activity(channel_id, user).await
    }

    async fn member_ids(&self, channel_id: &str) -> StoreResult<Vec<String>> {
        self.start_read()?;
        if self.channel(channel_id).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        self.list_member_ids(channel_id).await
    }

    async fn channel_positions(&self, user: &str) -> StoreResult<Vec<(String, u64)>> {
        self.start_read()?;
        let entries = self.user_channel_entries(user).await?;
        Ok(entries
            .into_iter()
            .map(|entry| (entry.channel_id, entry.last_seq))
            .collect())
    }

    async fn list_channels(
        &self,
        user: &str,
        before: Option<(Millis, String)>,
        limit: u32,
    ) -> StoreResult<Vec<ChannelSummary>> {
        self.start_read()?;
        self.channel_summaries(user, before, limit).await
    }

    async fn append_message(&self, message: NewMessage) -> StoreResult<Appended> {
        self.check_open()?;
        self.append(message).await
    }

    async fn find_retry(&self, message: &NewMessage) -> StoreResult<Option<Appended>> {
        self.start_read()?;
        self.stored_retry(message).await
    }

    async fn edit_message(&self, edit: MessageEdit) -> StoreResult<MessageChange> {
        self.check_open()?;
        self.edit(edit).await
    }

    async fn delete_message(
        &self,
        channel_id: &str,
        seq: u64,
        deleter: Deleter<'_>,
        now: Millis,
    ) -> StoreResult<MessageChange> {
        self.check_open()?;
        self.delete(channel_id, seq, deleter, now).await
    }

    async fn react(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
        reaction: &str,
        add: bool,
        now: Millis,
    ) -> StoreResult<MessageChange> {
        self.check_open()?;
        self.change_reaction(channel_id, seq, user, reaction, add, now)
            .await
    }

    async fn reaction_users(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
    ) -> StoreResult<BTreeMap<String, Vec<String>>> {
        self.start_read()?;
        self.reaction_users_of(channel_id, seq, user).await
    }

    async fn message(&self, channel_id: &str, seq: u64, user: &str) -> StoreResult<Message> {
        self.start_read()?;
        self.single_message(channel_id, seq, user).await
    }

    async fn history(&self, channel_id: &str, user: &str, page: Page) -> StoreResult<Vec<Message>> {
        self.start_read()?;
        self.history_page(channel_id, user, page).await
    }

    async fn messages_between(
        &self,
        channel_id: &str,
        viewer: &str,
        after: u64,
        up_to: u64,
    ) -> StoreResult<Vec<Message>> {
        self.start_read()?;
        self.messages_in_range(channel_id, viewer, after, up_to)
            .await
    }

    async fn mark_read(&self, channel_id: &str, user: &str, seq: u64) -> StoreResult<Positions> {
        self.check_open()?;
        self.mark(channel_id, user, seq, positions::Mark::Read)
            .await
    }

    async fn mark_delivered(
        &self,
        channel_id: &str,
        user: &str,
        seq: u64,
    ) -> StoreResult<Positions> {
        self.check_open()?;
        self.mark(channel_id, user, seq, positions::Mark::Delivered)
            .await
    }

    async fn purge_client_ids(&self, older_than: Millis) -> StoreResult<u64> {
        self.check_open()?;
        self.delete_client_ids_before(older_than).await
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> StoreResult<()> {
        self.check_open()?;
        self.append_new_events(events).await
    }

    async fn events(&self, after: Option<&str>, limit: u32) -> StoreResult<EventPage> {
        self.start_read()?;
        self.read_events(after, limit).await
    }

    async fn purge_events(&self, older_than: Millis) -> StoreResult<u64> {
        self.check_open()?;
        self.purge_events_before(older_than).await
    }

    async fn restrict(&self, restriction: Restriction) -> StoreResult<Option<MembershipChange>> {
        self.check_open()?;
        self.write_restriction(restriction).await
    }

    async fn lift_restriction(
        &self,
        user_id: &str,
        channel_id: Option<&str>,
        kind: RestrictionKind,
        now: Millis,
    ) -> StoreResult<bool> {
        self.check_open()?;
        self.remove_restriction(user_id, channel_id, kind, now)
            .await
    }

    async fn restrictions(&self, user_id: &str, now: Millis) -> StoreResult<Vec<Restriction>> {
        self.start_read()?;
        self.restrictions_in_force(user_id, now).await
    }

    async fn set_block(
        &self,
        blocker: &str,
        blocked: &str,
        block: bool,
        now: Millis,
    ) -> StoreResult<bool> {
        self.check_open()?;
        self.change_block(blocker, blocked, block, now).await
    }

    async fn blocked_users(&self, blocker: &str) -> StoreResult<Vec<String>> {
        self.start_read()?;
        let blocked = self.blocked_user_set(blocker).await?;
        Ok(blocked.into_iter().collect())
    }

    async fn blockers(&self, blocked: &str) -> StoreResult<Vec<String>> {
        self.start_read()?;
        let blockers = self.blocker_set(blocked).await?;
        Ok(blockers.into_iter().collect())
    }

    async fn set_slow_mode(
        &self,
        channel_id: &str,
        actor: Option<&str>,
        seconds: u32,
        now: Millis,
    ) -> StoreResult<(Channel, bool)> {
        self.check_open()?;
        self.change_slow_mode(channel_id, actor, seconds, now).await
    }

    async fn file_report(&self, report: NewReport) -> StoreResult<ReportChange> {
        self.check_open()?;
        self.file_member_report(report).await
    }

    async fn reports(
        &self,
        status: Option<ReportStatus>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Report>> {
        self.start_read()?;
        self.list_reports(status, after, limit).await
    }

    async fn report(&self, id: &str) -> StoreResult<Option<Report>> {
        self.start_read()?;
        self.find_report(id).await
    }

    async fn resolve_report(&self, id: &str, resolution: Resolution) -> StoreResult<ReportChange> {
        self.check_open()?;
        self.resolve(id, resolution).await
    }

    async fn put_user_setting(
        &self,
        user_id: &str,
        key: &str,
        value: Option<serde_json::Value>,
        now: Millis,
    ) -> StoreResult<bool> {
        self.check_open()?;
        self.put_setting(user_id, key, value.as_ref(), now).await
    }

    async fn user_settings(
        &self,
        user_id: &str,
        prefix: &str,
    ) -> StoreResult<Vec<(String, serde_json::Value)>> {
        self.start_read()?;
        self.list_settings(user_id, prefix).await
    }

    async fn mark_once(&self, key: &str, now: Millis, period_ms: i64) -> StoreResult<bool> {
        self.check_open()?;
        self.record_once_mark(key, now, period_ms).await
    }

    async fn event_log_end(&self) -> StoreResult<String> {
        self.start_read()?;
        self.log_end().await
    }

    async fn claim_webhook(
        &self,
        endpoint: &str,
        holder: &str,
        now: Millis,
        lease_until: Millis,
    ) -> StoreResult<Option<WebhookClaim>> {
        self.check_open()?;
        self.claim_endpoint(endpoint, holder, now, lease_until)
            .await
    }

    async fn save_webhook_cursor(
        &self,
        endpoint: &str,
        holder: &str,
        cursor: &str,
        lease_until: Millis,
    ) -> StoreResult<bool> {
        self.check_open()?;
        self.save_endpoint_cursor(endpoint, holder, cursor, lease_until)
            .await
    }

    async fn add_dead_letter(&self, endpoint: &str, letter: DeadLetter) -> StoreResult<()> {
        self.check_open()?;
        self.insert_dead_letter(endpoint, &letter).await
    }

    async fn dead_letters(&self, endpoint: &str, limit: u32) -> StoreResult<Vec<DeadLetter>> {
        self.start_read()?;
        self.list_dead_letters(endpoint, limit).await
    }

    async fn dead_letter(&self, endpoint: &str, event_id: &str) -> StoreResult<Option<DeadLetter>> {
        self.start_read()?;
        self.find_dead_letter(endpoint, event_id).await
    }

    async fn remove_dead_letter(
        &self,
        endpoint: &str,
        event_id: &str,
    ) -> StoreResult<Option<DeadLetter>> {
        self.check_open()?;
        self.take_dead_letter(endpoint, event_id).await
    }

    /// Marks the store closed. Requests already running finish, because
    /// each keeps a reference to the session. The session's connections
    /// close when the last of them ends.
    async fn close(&self) -> StoreResult<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        Ok(())
    }

    fn reads_started(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Ready while open and connected to at least one node. The driver
    /// reconnects in the background, so this turns true again by itself.
    fn is_ready(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
            && self
                .session
                .get_cluster_state()
                .get_nodes_info()
                .iter()
                .any(|node| node.is_connected())
    }
}
