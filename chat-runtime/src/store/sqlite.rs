//! [`Store`] on one SQLite file per tenant.
//!
//! SQLite was chosen because in WAL mode several processes on one host can
//! open the same file at once, so runtime processes can share one data
//! directory. Embedded engines such as redb or fjall lock their files for a
//! single process. The `bundled` build of `rusqlite` compiles SQLite into the
//! binary, so no system library is needed.
//!
//! Durability: the journal is a WAL (`journal_mode=WAL`) with
//! `synchronous=FULL`, so SQLite fsyncs the WAL at every COMMIT and a write
//! that returned `Ok` survives a power cut, as the [`Store`] contract
//! requires. `NORMAL`, the level often paired with WAL, skips that fsync and
//! can lose the last commits. FULL is also the compile-time default of the
//! bundled SQLite 3.54, but it is set explicitly so that the guarantee does
//! not depend on build flags. To keep fsyncs affordable, all writes of a store go through one writer
//! thread that commits queued requests in batches (group commit, see
//! `writer`). Reads use a small pool of read-only connections, which WAL
//! mode lets run while a write is in progress.
//!
//! Correctness across processes never relies on memory of one process:
//! sequence numbers come from the channel row, and client message ids are
//! deduplicated through a table, both inside the write transaction whose
//! `BEGIN IMMEDIATE` holds the file's write lock.

mod events;
mod queries;
mod reports;
mod safety;
mod schema;
mod settings;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{Semaphore, mpsc, oneshot};

use std::collections::BTreeMap;

use super::{
    Appended, Channel, ChannelSummary, DeadLetter, Deleter, EventPage, Member, MembershipChange,
    Message, MessageChange, MessageEdit, Millis, NewEvent, NewMessage, NewReport, Page, Positions,
    Report, ReportChange, ReportStatus, Resolution, Restriction, RestrictionKind, Store,
    StoreError, StoreResult, User, UserAuthState, WebhookClaim, keys,
};
use queries::OpResult;
use writer::{BoxedRequest, WRITE_QUEUE_CAPACITY};

/// Prepared statements kept per connection. The store uses about 30
/// distinct statements, and SQLite's default cache of 16 would keep
/// re-preparing them.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Pause between attempts to switch a new file to WAL mode.
const WAL_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// Settings of [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Number of read-only connections, which is also the maximum number of
    /// reads that run at once. Values below 1 are raised to 1.
    pub read_connections: usize,
    /// Maximum time a connection waits for a lock held by another
    /// connection or process before the operation fails with `Unavailable`.
    pub busy_timeout: Duration,
    /// Maximum number of write requests committed in one transaction.
    /// Values below 1 are raised to 1.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
            max_batch: 256,
        }
    }
}

/// A tenant's store in one SQLite file.
///
/// Dropping it without [`Store::close`] is safe: the writer thread still
/// finishes the queued requests and then exits, but the thread is not joined.
pub struct SqliteStore {
    /// Sending half of the write queue, or `None` once the store is closed.
    write_queue: Mutex<Option<mpsc::Sender<BoxedRequest>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<ReadPool>,
    /// Read transactions started, for `parley_store_reads`.
    reads: AtomicU64,
}

/// Read-only connections. The semaphore has one permit per connection, so
/// a task holding a permit always finds a free connection.
struct ReadPool {
    connections: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    size: u32,
}

/// Locks `mutex` even if a thread panicked while holding it. Every critical
/// section here is a single push, pop or take, which cannot leave the value
/// half changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn closed_error() -> StoreError {
    StoreError::Unavailable("store is closed".into())
}

fn sqlite_error(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

fn open_connection(
    path: &Path,
    flags: OpenFlags,
    options: &SqliteOptions,
) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite_error)?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(sqlite_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    // Without the query planner stability guarantee, SQLite 3.54 (bundled
    // with rusqlite 0.43) marks a statement for re-preparing when its plan
    // used a bound value, such as a LIMIT or `seq = ?` beside a join.
    // rusqlite clears the bindings of every statement it returns to its
    // cache, so each use parsed the SQL again. That was about 30 % of the
    // server's CPU for history and channel-list requests (perf,
    // `parley-bench --only B4`).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(sqlite_error)?;
    Ok(conn)
}

/// Switches the file to WAL mode, which stays set in the file.
///
/// When two connections switch a new file at the same moment, SQLite can
/// return `SQLITE_BUSY` for this pragma at once instead of waiting in the
/// busy handler (seen in `two_stores_create_new_file_at_once`), so the
/// pragma is retried here until `timeout` has passed.
fn enable_wal(conn: &Connection, timeout: Duration) -> StoreResult<()> {
    let deadline = Instant::now() + timeout;
    let journal_mode: String = loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)) {
            Ok(mode) => break mode,
            Err(error)
                if error.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(WAL_RETRY_INTERVAL);
            }
            Err(error) => return Err(sqlite_error(error)),
        }
    };
    if !journal_mode.eq_ignore_ascii_case("wal") {
        let message = format!("SQLite kept journal_mode={journal_mode} instead of WAL");
        return Err(StoreError::Unavailable(message.into()));
    }
    Ok(())
}

impl SqliteStore {
    /// Opens the store in the file at `path`, creating the file and its
    /// tables if missing, and starts the writer thread.
    ///
    /// Several processes may open the same file, also a new one at the same
    /// moment. Fails with `Unavailable` when the file cannot be opened, WAL
    /// mode cannot be set, or the file has a newer schema version.
    pub fn open(path: &Path, options: SqliteOptions) -> StoreResult<SqliteStore> {
        let read_connections = options.read_connections.max(1);
        let max_batch = options.max_batch.max(1);

        let write_flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let writer_conn = open_connection(path, write_flags, &options)?;
        enable_wal(&writer_conn, options.busy_timeout)?;
        // synchronous is a per-connection setting. Only this connection
        // writes, so only it needs FULL.
        writer_conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite_error)?;
        schema::ensure_schema(&writer_conn)?;

        // Read-only connections are opened after the writer so that the WAL
        // and its shared-memory file already exist.
        let read_flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connections = (0..read_connections)
            .map(|_| open_connection(path, read_flags, &options))
            .collect::<StoreResult<Vec<_>>>()?;
        let size = u32::try_from(read_connections).unwrap_or(u32::MAX);
        let readers = ReadPool {
            connections: Mutex::new(connections),
            permits: Arc::new(Semaphore::new(size as usize)),
            size,
        };

        let (sender, receiver) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let writer_thread = writer::spawn(writer_conn, receiver, max_batch, path)
            .map_err(|error| StoreError::Unavailable(Box::new(error)))?;
        tracing::info!(
            path = %path.display(),
            read_connections,
            max_batch,
            "opened SQLite store"
        );
        Ok(SqliteStore {
            write_queue: Mutex::new(Some(sender)),
            writer_thread: Mutex::new(Some(writer_thread)),
            readers: Arc::new(readers),
            reads: AtomicU64::new(0),
        })
    }

    /// Queues `operation` for the writer thread and waits until its batch
    /// has committed or failed.
    async fn write<T, F>(&self, operation: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> OpResult<T> + Send + 'static,
    {
        let Some(sender) = lock(&self.write_queue).clone() else {
            return Err(closed_error());
        };
        let (reply, result) = oneshot::channel();
        sender
            .send(writer::request(operation, reply))
            .await
            .map_err(|_| closed_error())?;
        drop(sender);
        match result.await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(
                "writer thread stopped without returning a result".into(),
            )),
        }
    }

    /// Runs `operation` in a read transaction on a pooled connection.
    async fn read<T, F>(&self, operation: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> OpResult<T> + Send + 'static,
    {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let permit = Arc::clone(&self.readers.permits)
            .acquire_owned()
            .await
            .map_err(|_| closed_error())?;
        let readers = Arc::clone(&self.readers);
        let task = tokio::task::spawn_blocking(move || {
            let result = readers.run(operation);
            drop(permit);
            result
        });
        match task.await {
            Ok(result) => result,
            Err(error) => Err(StoreError::Unavailable(Box::new(error))),
        }
    }
}

impl ReadPool {
    fn run<T>(&self, operation: impl FnOnce(&Connection) -> OpResult<T>) -> StoreResult<T> {
        let Some(mut conn) = lock(&self.connections).pop() else {
            return Err(closed_error());
        };
        let result = read_in_transaction(&mut conn, operation);
        lock(&self.connections).push(conn);
        result
    }

    /// Waits for running reads to finish, then rejects new ones and closes
    /// the connections.
    async fn shut_down(&self) {
        // Tokio's semaphore is fair, so this waits behind reads that requested
        // a permit earlier and gets the permits before reads that request later.
        if let Ok(all_permits) = self.permits.acquire_many(self.size).await {
            all_permits.forget();
        }
        self.permits.close();
        lock(&self.connections).clear();
    }
}

/// Runs `operation` inside one read transaction, so that all its queries see
/// the same snapshot even while the writer commits.
fn read_in_transaction<T>(
    conn: &mut Connection,
    operation: impl FnOnce(&Connection) -> OpResult<T>,
) -> StoreResult<T> {
    let transaction = conn.transaction().map_err(sqlite_error)?;
    let value = operation(&transaction)?;
    transaction.commit().map_err(sqlite_error)?;
    Ok(value)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn upsert_user(
        &self,
        id: &str,
        name: &str,
        metadata: serde_json::Value,
        now: Millis,
    ) -> StoreResult<User> {
        let (id, name) = (id.to_owned(), name.to_owned());
        self.write(move |conn| queries::upsert_user(conn, &id, &name, &metadata, now))
            .await
    }

    async fn delete_user(&self, id: &str, now: Millis) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |conn| queries::delete_user(conn, &id, now))
            .await
    }

    async fn revoke_tokens(&self, id: &str, at_least: i64, now: Millis) -> StoreResult<i64> {
        let id = id.to_owned();
        self.write(move |conn| queries::revoke_tokens(conn, &id, at_least, now))
            .await
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        let id = id.to_owned();
        self.read(move |conn| queries::load_user(conn, &id)).await
    }

    async fn user_auth_state(&self, id: &str) -> StoreResult<Option<UserAuthState>> {
        let id = id.to_owned();
        self.read(move |conn| queries::user_auth_state(conn, &id))
            .await
    }

    async fn open_direct(
        &self,
        a: &str,
        b: &str,
        subject: Option<&str>,
        now: Millis,
    ) -> StoreResult<(Channel, Vec<String>)> {
        let (a, b) = (a.to_owned(), b.to_owned());
        let subject = subject.map(str::to_owned);
        self.write(move |conn| queries::open_direct(conn, &a, &b, subject.as_deref(), now))
            .await
    }

    async fn create_group(
        &self,
        creator: &str,
        name: &str,
        members: &[String],
        now: Millis,
    ) -> StoreResult<(Channel, Vec<String>)> {
        let id = keys::random_group_id();
        let (creator, name) = (creator.to_owned(), name.to_owned());
        let members = members.to_vec();
        self.write(move |conn| queries::create_group(conn, &id, &creator, &name, &members, now))
            .await
    }

    async fn add_member(
        &self,
        channel_id: &str,
        actor: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<MembershipChange> {
        let (channel_id, actor, user) = (channel_id.to_owned(), actor.to_owned(), user.to_owned());
        self.write(move |conn| queries::add_member(conn, &channel_id, &actor, &user, now))
            .await
    }

    async fn remove_member(
        &self,
        channel_id: &str,
        actor: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<MembershipChange> {
        let (channel_id, actor, user) = (channel_id.to_owned(), actor.to_owned(), user.to_owned());
        self.write(move |conn| queries::remove_member(conn, &channel_id, &actor, &user, now))
            .await
    }

    async fn channel_for_member(
        &self,
        channel_id: &str,
        user: &str,
    ) -> StoreResult<(Channel, Vec<Member>)> {
        let (channel_id, user) = (channel_id.to_owned(), user.to_owned());
        self.read(move |conn| queries::channel_for_member(conn, &channel_id, &user))
            .await
    }

    async fn activity_for(&self, channel_id: &str, user: &str) -> StoreResult<Millis> {
        let (channel_id, user) = (channel_id.to_owned(), user.to_owned());
        self.read(move |conn| queries::activity_for(conn, &channel_id, &user))
            .await
    }

    async fn member_ids(&self, channel_id: &str) -> StoreResult<Vec<String>> {
        let channel_id = channel_id.to_owned();
        self.read(move |conn| queries::member_ids(conn, &channel_id))
            .await
    }

    async fn channel_positions(&self, user: &str) -> StoreResult<Vec<(String, u64)>> {
        let user = user.to_owned();
        self.read(move |conn| queries::channel_positions(conn, &user))
            .await
    }

    async fn list_channels(
        &self,
        user: &str,
        before: Option<(Millis, String)>,
        limit: u32,
    ) -> StoreResult<Vec<ChannelSummary>> {
        let user = user.to_owned();
        self.read(move |conn| queries::list_channels(conn, &user, before, limit))
            .await
    }

    async fn append_message(&self, message: NewMessage) -> StoreResult<Appended> {
        self.write(move |conn| queries::append_message(conn, message))
            .await
    }

    async fn find_retry(&self, message: &NewMessage) -> StoreResult<Option<Appended>> {
        let message = message.clone();
        self.read(move |conn| queries::find_retry(conn, &message))
            .await
    }

    async fn edit_message(&self, edit: MessageEdit) -> StoreResult<MessageChange> {
        self.write(move |conn| queries::edit_message(conn, edit))
            .await
    }

    async fn delete_message(
        &self,
        channel_id: &str,
        seq: u64,
        deleter: Deleter<'_>,
        now: Millis,
    ) -> StoreResult<MessageChange> {
        let channel_id = channel_id.to_owned();
        let member = match deleter {
            Deleter::Member(user) => Some(user.to_owned()),
            Deleter::Server => None,
        };
        self.write(move |conn| {
            let deleter = match &member {
                Some(user) => Deleter::Member(user),
                None => Deleter::Server,
            };
            queries::delete_message(conn, &channel_id, seq, deleter, now)
        })
        .await
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
        let (channel_id, user, reaction) =
            (channel_id.to_owned(), user.to_owned(), reaction.to_owned());
        self.write(move |conn| queries::react(conn, &channel_id, seq, &user, &reaction, add, now))
            .await
    }

    async fn reaction_users(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
    ) -> StoreResult<BTreeMap<String, Vec<String>>> {
        let (channel_id, user) = (channel_id.to_owned(), user.to_owned());
        self.read(move |conn| queries::reaction_users(conn, &channel_id, seq, &user))
            .await
    }

    async fn message(&self, channel_id: &str, seq: u64, user: &str) -> StoreResult<Message> {
        let (channel_id, user) = (channel_id.to_owned(), user.to_owned());
        self.read(move |conn| queries::message(conn, &channel_id, seq, &user))
            .await
    }

    async fn history(&self, channel_id: &str, user: &str, page: Page) -> StoreResult<Vec<Message>> {
        let (channel_id, user) = (channel_id.to_owned(), user.to_owned());
        self.read(move |conn| queries::history(conn, &channel_id, &user, page))
            .await
    }

    async fn messages_between(
        &self,
        channel_id: &str,
        viewer: &str,
        after: u64,
        up_to: u64,
    ) -> StoreResult<Vec<Message>> {
        let (channel_id, viewer) = (channel_id.to_owned(), viewer.to_owned());
        self.read(move |conn| queries::messages_between(conn, &channel_id, &viewer, after, up_to))
            .await
    }

    async fn mark_read(&self, channel_id: &str, user: &str, seq: u64) -> StoreResult<Positions> {
        let (channel_id, user) = (channel_id.to_owned(), user.to_owned());
        self.write(move |conn| {
            queries::move_position(conn, &channel_id, &user, seq, queries::Receipt::Read)
        })
        .await
    }

    async fn mark_delivered(
        &self,
        channel_id: &str,
        user: &str,
        seq: u64,
    ) -> StoreResult<Positions> {
        let (channel_id, user) = (channel_id.to_owned(), user.to_owned());
        self.write(move |conn| {
            queries::move_position(conn, &channel_id, &user, seq, queries::Receipt::Delivered)
        })
        .await
    }

    async fn purge_client_ids(&self, older_than: Millis) -> StoreResult<u64> {
        self.write(move |conn| queries::purge_client_ids(conn, older_than))
            .await
    }

    async fn append_events(&self, new_events: Vec<NewEvent>) -> StoreResult<()> {
        self.write(move |conn| events::append_all(conn, &new_events))
            .await
    }

    async fn events(&self, after: Option<&str>, limit: u32) -> StoreResult<EventPage> {
        let after = after.map(str::to_owned);
        self.read(move |conn| events::read(conn, after.as_deref(), limit))
            .await
    }

    async fn restrict(&self, restriction: Restriction) -> StoreResult<Option<MembershipChange>> {
        self.write(move |conn| safety::restrict(conn, &restriction))
            .await
    }

    async fn lift_restriction(
        &self,
        user_id: &str,
        channel_id: Option<&str>,
        kind: RestrictionKind,
        now: Millis,
    ) -> StoreResult<bool> {
        let (user_id, channel_id) = (user_id.to_owned(), channel_id.map(str::to_owned));
        self.write(move |conn| safety::lift(conn, &user_id, channel_id.as_deref(), kind, now))
            .await
    }

    async fn restrictions(&self, user_id: &str, now: Millis) -> StoreResult<Vec<Restriction>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| safety::active(conn, &user_id, now))
            .await
    }

    async fn set_block(
        &self,
        blocker: &str,
        blocked: &str,
        block: bool,
        now: Millis,
    ) -> StoreResult<bool> {
        let (blocker, blocked) = (blocker.to_owned(), blocked.to_owned());
        self.write(move |conn| safety::set_block(conn, &blocker, &blocked, block, now))
            .await
    }

    async fn blocked_users(&self, blocker: &str) -> StoreResult<Vec<String>> {
        let blocker = blocker.to_owned();
        self.read(move |conn| safety::blocked_users(conn, &blocker))
            .await
    }

    async fn blockers(&self, blocked: &str) -> StoreResult<Vec<String>> {
        let blocked = blocked.to_owned();
        self.read(move |conn| safety::blockers(conn, &blocked))
            .await
    }

    async fn event_log_end(&self) -> StoreResult<String> {
        self.read(events::log_end).await
    }

    async fn claim_webhook(
        &self,
        endpoint: &str,
        holder: &str,
        now: Millis,
        lease_until: Millis,
    ) -> StoreResult<Option<WebhookClaim>> {
        let (endpoint, holder) = (endpoint.to_owned(), holder.to_owned());
        self.write(move |conn| events::claim_webhook(conn, &endpoint, &holder, now, lease_until))
            .await
    }

    async fn save_webhook_cursor(
        &self,
        endpoint: &str,
        holder: &str,
        cursor: &str,
        lease_until: Millis,
    ) -> StoreResult<bool> {
        let (endpoint, holder, cursor) =
            (endpoint.to_owned(), holder.to_owned(), cursor.to_owned());
        self.write(move |conn| {
            events::save_webhook_cursor(conn, &endpoint, &holder, &cursor, lease_until)
        })
        .await
    }

    async fn add_dead_letter(&self, endpoint: &str, letter: DeadLetter) -> StoreResult<()> {
        let endpoint = endpoint.to_owned();
        self.write(move |conn| events::add_dead_letter(conn, &endpoint, &letter))
            .await
    }

    async fn dead_letters(&self, endpoint: &str, limit: u32) -> StoreResult<Vec<DeadLetter>> {
        let endpoint = endpoint.to_owned();
        self.read(move |conn| events::dead_letters(conn, &endpoint, limit))
            .await
    }

    async fn dead_letter(&self, endpoint: &str, event_id: &str) -> StoreResult<Option<DeadLetter>> {
        let (endpoint, event_id) = (endpoint.to_owned(), event_id.to_owned());
        self.read(move |conn| events::dead_letter(conn, &endpoint, &event_id))
            .await
    }

    async fn remove_dead_letter(
        &self,
        endpoint: &str,
        event_id: &str,
    ) -> StoreResult<Option<DeadLetter>> {
        let (endpoint, event_id) = (endpoint.to_owned(), event_id.to_owned());
        self.write(move |conn| events::remove_dead_letter(conn, &endpoint, &event_id))
            .await
    }

    async fn set_slow_mode(
        &self,
        channel_id: &str,
        actor: Option<&str>,
        seconds: u32,
        now: Millis,
    ) -> StoreResult<(Channel, bool)> {
        let (channel_id, actor) = (channel_id.to_owned(), actor.map(str::to_owned));
        self.write(move |conn| {
            safety::set_slow_mode(conn, &channel_id, actor.as_deref(), seconds, now)
        })
        .await
    }

    async fn file_report(&self, report: NewReport) -> StoreResult<ReportChange> {
        self.write(move |conn| reports::file(conn, &report)).await
    }

    async fn reports(
        &self,
        status: Option<ReportStatus>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Report>> {
        let after = after.map(str::to_owned);
        self.read(move |conn| reports::list(conn, status, after.as_deref(), limit))
            .await
    }

    async fn report(&self, id: &str) -> StoreResult<Option<Report>> {
        let id = id.to_owned();
        self.read(move |conn| reports::get(conn, &id)).await
    }

    async fn resolve_report(&self, id: &str, resolution: Resolution) -> StoreResult<ReportChange> {
        let id = id.to_owned();
        self.write(move |conn| reports::resolve(conn, &id, &resolution))
            .await
    }

    async fn put_user_setting(
        &self,
        user_id: &str,
        key: &str,
        value: Option<serde_json::Value>,
        now: Millis,
    ) -> StoreResult<bool> {
        let (user_id, key) = (user_id.to_owned(), key.to_owned());
        self.write(move |conn| settings::put(conn, &user_id, &key, value.as_ref(), now))
            .await
    }

    async fn user_settings(
        &self,
        user_id: &str,
        prefix: &str,
    ) -> StoreResult<Vec<(String, serde_json::Value)>> {
        let (user_id, prefix) = (user_id.to_owned(), prefix.to_owned());
        self.read(move |conn| settings::list(conn, &user_id, &prefix))
            .await
    }

    async fn mark_once(&self, key: &str, now: Millis, period_ms: i64) -> StoreResult<bool> {
        let key = key.to_owned();
        self.write(move |conn| settings::mark_once(conn, &key, now, period_ms))
            .await
    }

    /// Deletes in batches of [`events::MAX_PURGE_BATCH`], one write request
    /// each, so other writes are not held up behind a large purge.
    async fn purge_events(&self, older_than: Millis) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let deleted = self
                .write(move |conn| events::purge(conn, older_than))
                .await?;
            total += deleted;
            if deleted < u64::from(events::MAX_PURGE_BATCH) {
                return Ok(total);
            }
        }
    }

    /// Stops accepting writes, lets the writer thread commit what is queued,
    /// checkpoints and truncates the WAL, and joins the thread. Returns
    /// `Unavailable` when called a second time.
    async fn close(&self) -> StoreResult<()> {
        let Some(sender) = lock(&self.write_queue).take() else {
            return Err(closed_error());
        };
        // The writer exits once this and the clones held by writes already
        // on their way are gone and the queue is empty.
        drop(sender);
        self.readers.shut_down().await;

        let writer_thread = lock(&self.writer_thread).take();
        if let Some(writer_thread) = writer_thread {
            let joined = tokio::task::spawn_blocking(move || writer_thread.join())
                .await
                .map_err(|error| StoreError::Unavailable(Box::new(error)))?;
            if joined.is_err() {
                return Err(StoreError::Unavailable("writer thread panicked".into()));
            }
        }
        tracing::info!("closed SQLite store");
        Ok(())
    }

    fn reads_started(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Barrier;

    use tempfile::TempDir;

    use super::*;
    use crate::store::conformance::{
        self, Fixture, add_users, group_of, message, seqs, store_conformance_tests, text,
    };

    fn temp_store() -> (TempDir, PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenant.sqlite");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        (dir, path, store)
    }

    /// A tenant file in a temporary folder. Another tenant gets a second
    /// file in the same folder.
    struct SqliteFixture {
        dir: TempDir,
        store: Arc<dyn Store>,
    }

    impl SqliteFixture {
        fn open(&self, file: &str) -> Arc<dyn Store> {
            let path = self.dir.path().join(file);
            Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap())
        }
    }

    #[async_trait::async_trait]
    impl Fixture for SqliteFixture {
        fn store(&self) -> Arc<dyn Store> {
            Arc::clone(&self.store)
        }

        async fn open_same_data(&self) -> Arc<dyn Store> {
            self.open("tenant.sqlite")
        }

        async fn open_other_tenant(&self) -> Arc<dyn Store> {
            self.open("other-tenant.sqlite")
        }
    }

    async fn sqlite_fixture() -> Option<SqliteFixture> {
        let (dir, _path, store) = temp_store();
        Some(SqliteFixture {
            dir,
            store: Arc::new(store),
        })
    }

    store_conformance_tests!(sqlite_fixture());

    #[tokio::test]
    async fn cached_reads_are_not_prepared_again() {
        let (_dir, path, store) = temp_store();
        add_users(&store, &["ann", "bob"]).await;
        let channel = group_of(&store, "ann", &["bob"]).await;
        for client_id in ["c1", "c2"] {
            store
                .append_message(message(&channel.id, "ann", client_id, text("hi")))
                .await
                .unwrap();
        }

        // A join beside `seq = ?` and a bound LIMIT are the shapes that made
        // SQLite re-prepare after every rebinding.
        let conn = open_connection(&path, OpenFlags::default(), &SqliteOptions::default()).unwrap();
        let sql = "SELECT m.seq, u.deleted FROM messages m LEFT JOIN users u ON u.id = m.sender_id \
                   WHERE m.channel_id = ?1 AND m.seq = ?2 LIMIT ?3";
        for seq in [1_i64, 2, 1, 2] {
            let found: i64 = conn
                .prepare_cached(sql)
                .unwrap()
                .query_row(rusqlite::params![channel.id, seq, seq + 1], |row| {
                    row.get(0)
                })
                .unwrap();
            assert_eq!(found, seq);
        }
        let statement = conn.prepare_cached(sql).unwrap();
        assert_eq!(
            statement.get_status(rusqlite::StatementStatus::RePrepare),
            0
        );
    }

    #[tokio::test]
    async fn writer_follows_arrival_order() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["alice"]).await;
        let group = group_of(&store, "alice", &[]).await;

        // Queue every request before waiting for any result, so batches form.
        let sender = lock(&store.write_queue).clone().unwrap();
        let mut results = Vec::new();
        for i in 0..600 {
            let new_message = message(&group.id, "alice", &format!("c{i}"), text("hi"));
            let (reply, result) = oneshot::channel();
            let operation = move |conn: &Connection| queries::append_message(conn, new_message);
            sender
                .send(writer::request(operation, reply))
                .await
                .unwrap();
            results.push(result);
        }
        drop(sender);
        for (index, result) in results.into_iter().enumerate() {
            let appended = result.await.unwrap().unwrap();
            assert_eq!(appended.message.seq, index as u64 + 1);
            assert_eq!(appended.message.client_id, format!("c{index}"));
        }
    }

    #[test]
    fn failed_request_rolls_back_alone() {
        let conn = Connection::open_in_memory().unwrap();
        schema::ensure_schema(&conn).unwrap();
        let insert = |conn: &Connection, id: &str| {
            conn.execute(
                "INSERT INTO users (id, metadata, created_at, updated_at) VALUES (?1, 'null', 0, 0)",
                [id],
            )
        };

        let (first_reply, mut first) = oneshot::channel();
        let (failing_reply, mut failing) = oneshot::channel();
        let (last_reply, mut last) = oneshot::channel();
        let mut batch = vec![
            writer::request(move |conn| Ok(insert(conn, "first")?), first_reply),
            writer::request(
                move |conn| {
                    insert(conn, "failing")?;
                    Err::<usize, _>(queries::OpError::Store(StoreError::Invalid("test failure")))
                },
                failing_reply,
            ),
            writer::request(move |conn| Ok(insert(conn, "last")?), last_reply),
        ];
        writer::run_batch(&conn, &mut batch);

        assert!(batch.is_empty());
        assert_eq!(first.try_recv().unwrap().unwrap(), 1);
        assert!(matches!(
            failing.try_recv().unwrap(),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(last.try_recv().unwrap().unwrap(), 1);
        let mut statement = conn.prepare("SELECT id FROM users ORDER BY id").unwrap();
        let ids: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, vec!["first".to_owned(), "last".to_owned()]);
    }

    #[test]
    fn two_stores_create_new_file_at_once() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("new-{round}.sqlite"));
            let barrier = Arc::new(Barrier::new(2));
            let openers: Vec<_> = (0..2)
                .map(|_| {
                    let (path, barrier) = (path.clone(), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        SqliteStore::open(&path, SqliteOptions::default()).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                let opened = opener.join().unwrap();
                assert!(opened.is_ok(), "round {round}: {opened:?}");
            }
        }
    }

    #[tokio::test]
    async fn close_commits_queued_writes_then_fails() {
        let (_dir, path, store) = temp_store();
        add_users(&store, &["alice"]).await;
        let group = group_of(&store, "alice", &[]).await;

        // Queue requests without waiting for them, then close at once.
        let sender = lock(&store.write_queue).clone().unwrap();
        let mut results = Vec::new();
        for i in 0..100 {
            let new_message = message(&group.id, "alice", &format!("c{i}"), text("hi"));
            let (reply, result) = oneshot::channel();
            let operation = move |conn: &Connection| queries::append_message(conn, new_message);
            sender
                .send(writer::request(operation, reply))
                .await
                .unwrap();
            results.push(result);
        }
        drop(sender);
        // Another open connection keeps SQLite from deleting the WAL when the
        // store's connections close, so only the checkpoint can empty it.
        let other_process = Connection::open(&path).unwrap();
        other_process
            .query_row("SELECT COUNT(*) FROM users", [], |row| row.get::<_, i64>(0))
            .unwrap();
        store.close().await.unwrap();
        for (index, result) in results.into_iter().enumerate() {
            let appended = result.await.unwrap().unwrap();
            assert_eq!(appended.message.seq, index as u64 + 1);
        }

        conformance::assert_every_call_unavailable(&store, &group.id).await;

        let wal = path.with_extension("sqlite-wal");
        let wal_size = std::fs::metadata(&wal).unwrap().len();
        assert_eq!(wal_size, 0, "close must checkpoint and truncate the WAL");
        drop(other_process);

        let reopened = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let stored = reopened
            .messages_between(&group.id, "alice", 0, 1000)
            .await
            .unwrap();
        assert_eq!(seqs(&stored), (1..=100).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn drop_without_close_keeps_writes() {
        let (_dir, path, store) = temp_store();
        add_users(&store, &["alice"]).await;
        drop(store);

        let reopened = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let user = reopened.get_user("alice").await.unwrap();
        assert_eq!(user.map(|user| user.id), Some("alice".to_owned()));
    }

    #[tokio::test]
    async fn open_rejects_newer_schema() {
        let (_dir, path, store) = temp_store();
        store.close().await.unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", schema::SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);

        let reopened = SqliteStore::open(&path, SqliteOptions::default());
        assert!(matches!(reopened, Err(StoreError::Unavailable(_))));
    }

    /// A file written by a build with the first schema opens, keeps its
    /// rows, and starts each member's delivered position at its read one.
    #[tokio::test]
    async fn open_upgrades_first_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenant.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "INSERT INTO users VALUES ('alice', 'Alice', '{}', 0, NULL, 1, 1, 1);
             INSERT INTO users VALUES ('bob', 'Bob', '{}', 0, NULL, 1, 1, 1);
             INSERT INTO channels VALUES ('g_1', 'group', 'team', NULL, 'alice', 1, 2, 3);
             INSERT INTO members VALUES ('g_1', 'alice', 'owner', 2, 1);
             INSERT INTO members VALUES ('g_1', 'bob', 'member', 1, 1);
             INSERT INTO messages VALUES ('g_1', 1, 'alice', 1, 'c1',
                 '{\"kind\":\"text\",\"text\":\"xin chào\"}', 2);
             INSERT INTO messages VALUES ('g_1', 2, 'alice', 1, 'c2',
                 '{\"kind\":\"text\",\"text\":\"hẹn gặp lại\"}', 3);",
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);

        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let history = store
            .history("g_1", "bob", Page::Latest { limit: 10 })
            .await
            .unwrap();
        assert_eq!(seqs(&history), vec![1, 2]);
        assert_eq!(
            history[0].content,
            Some(crate::store::Content::Text {
                text: "xin chào".to_owned()
            })
        );
        let (_, members) = store.channel_for_member("g_1", "bob").await.unwrap();
        let delivered: Vec<(u64, u64)> = members
            .iter()
            .map(|member| (member.read_seq, member.delivered_seq))
            .collect();
        assert_eq!(delivered, vec![(2, 2), (1, 1)]);

        store.react("g_1", 2, "bob", "👍", true, 4).await.unwrap();
        store
            .delete_message("g_1", 1, Deleter::Member("alice"), 5)
            .await
            .unwrap();
        let summary = &store.list_channels("bob", None, 10).await.unwrap()[0];
        assert_eq!(summary.unread, 1);
        store.close().await.unwrap();
    }
}
