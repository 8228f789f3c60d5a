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

mod queries;
mod schema;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{
    Appended, Channel, ChannelSummary, Member, MembershipChange, Message, Millis, NewMessage, Page,
    Store, StoreError, StoreResult, User, UserAuthState,
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
        let id = queries::random_group_id();
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
        _now: Millis,
    ) -> StoreResult<MembershipChange> {
        let (channel_id, actor, user) = (channel_id.to_owned(), actor.to_owned(), user.to_owned());
        self.write(move |conn| queries::remove_member(conn, &channel_id, &actor, &user))
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

    async fn history(&self, channel_id: &str, user: &str, page: Page) -> StoreResult<Vec<Message>> {
        let (channel_id, user) = (channel_id.to_owned(), user.to_owned());
        self.read(move |conn| queries::history(conn, &channel_id, &user, page))
            .await
    }

    async fn messages_between(
        &self,
        channel_id: &str,
        after: u64,
        up_to: u64,
    ) -> StoreResult<Vec<Message>> {
        let channel_id = channel_id.to_owned();
        self.read(move |conn| queries::messages_between(conn, &channel_id, after, up_to))
            .await
    }

    async fn mark_read(
        &self,
        channel_id: &str,
        user: &str,
        seq: u64,
    ) -> StoreResult<(u64, Vec<String>)> {
        let (channel_id, user) = (channel_id.to_owned(), user.to_owned());
        self.write(move |conn| queries::mark_read(conn, &channel_id, &user, seq))
            .await
    }

    async fn purge_client_ids(&self, older_than: Millis) -> StoreResult<u64> {
        self.write(move |conn| queries::purge_client_ids(conn, older_than))
            .await
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

    use serde_json::json;
    use tempfile::TempDir;

    use super::*;
    use crate::store::{ChannelKind, Content, MemberRole};

    const NOW: Millis = 1_700_000_000_000;

    fn temp_store() -> (TempDir, PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenant.sqlite");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        (dir, path, store)
    }

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

    async fn add_users(store: &SqliteStore, ids: &[&str]) {
        for id in ids {
            store
                .upsert_user(id, &format!("{id} name"), json!({"plan": "free"}), NOW)
                .await
                .unwrap();
        }
    }

    fn text(body: &str) -> Content {
        Content::Text {
            text: body.to_owned(),
        }
    }

    fn message(channel_id: &str, sender: &str, client_id: &str, content: Content) -> NewMessage {
        NewMessage {
            channel_id: channel_id.to_owned(),
            sender_id: sender.to_owned(),
            client_id: client_id.to_owned(),
            content,
            created_at: NOW,
        }
    }

    async fn group_of(store: &SqliteStore, owner: &str, others: &[&str]) -> Channel {
        let others: Vec<String> = others.iter().map(|id| (*id).to_owned()).collect();
        let (channel, _) = store
            .create_group(owner, "team", &others, NOW)
            .await
            .unwrap();
        channel
    }

    fn seqs(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|message| message.seq).collect()
    }

    fn is_unavailable<T: std::fmt::Debug>(result: &StoreResult<T>) -> bool {
        matches!(result, Err(StoreError::Unavailable(_)))
    }

    #[tokio::test]
    async fn upsert_user_creates_and_updates() {
        let (_dir, _path, store) = temp_store();

        let created = store
            .upsert_user("alice", "Alice", json!({"plan": "free"}), NOW)
            .await
            .unwrap();
        assert_eq!(created.name.as_deref(), Some("Alice"));
        assert_eq!(created.created_at, NOW);
        assert!(!created.deleted);

        let updated = store
            .upsert_user("alice", "Alice B", json!({"plan": "pro"}), NOW + 5)
            .await
            .unwrap();
        assert_eq!(updated.name.as_deref(), Some("Alice B"));
        assert_eq!(updated.metadata, json!({"plan": "pro"}));
        assert_eq!(updated.created_at, NOW);
        assert_eq!(updated.updated_at, NOW + 5);

        assert_eq!(store.get_user("alice").await.unwrap(), Some(updated));
        assert_eq!(store.get_user("nobody").await.unwrap(), None);
        let state = store.user_auth_state("alice").await.unwrap().unwrap();
        assert!(!state.deleted);
        assert_eq!(state.tokens_not_before, None);
        assert_eq!(store.user_auth_state("nobody").await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn append_seqs_contiguous_under_concurrency() {
        let (_dir, _path, store) = temp_store();
        let store = Arc::new(store);
        add_users(&store, &["alice", "bob", "mallory"]).await;
        let group = group_of(&store, "alice", &["bob"]).await;

        let mut tasks = Vec::new();
        for task in 0..40 {
            let store = Arc::clone(&store);
            let channel_id = group.id.clone();
            tasks.push(tokio::spawn(async move {
                let sender = if task % 2 == 0 { "alice" } else { "bob" };
                let mut seqs = Vec::new();
                for i in 0..10 {
                    let client_id = format!("{task}-{i}");
                    let appended = store
                        .append_message(message(&channel_id, sender, &client_id, text("hi")))
                        .await
                        .unwrap();
                    assert!(!appended.duplicate);
                    seqs.push(appended.message.seq);

                    // A non-member's request shares batches with the others
                    // and must be rolled back alone.
                    let outsider = store
                        .append_message(message(&channel_id, "mallory", &client_id, text("no")))
                        .await;
                    assert!(matches!(outsider, Err(StoreError::NotFound)));
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (1..=400).collect::<Vec<u64>>());

        let (channel, _) = store.channel_for_member(&group.id, "alice").await.unwrap();
        assert_eq!(channel.last_seq, 400);
        let stored = store
            .history(
                &group.id,
                "bob",
                Page::After {
                    after: 0,
                    limit: 1000,
                },
            )
            .await
            .unwrap();
        assert_eq!(seqs(&stored), (1..=400).collect::<Vec<u64>>());
        assert!(stored.iter().all(|message| message.sender_id != "mallory"));
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

    #[tokio::test]
    async fn dedupe_returns_duplicate_or_conflict() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["alice", "bob"]).await;
        let group = group_of(&store, "alice", &["bob"]).await;
        let other = group_of(&store, "alice", &["bob"]).await;

        let first = store
            .append_message(message(&group.id, "alice", "c1", text("hello")))
            .await
            .unwrap();
        assert!(!first.duplicate);
        assert_eq!(first.message.seq, 1);

        let again = store
            .append_message(message(&group.id, "alice", "c1", text("hello")))
            .await
            .unwrap();
        assert!(again.duplicate);
        assert_eq!(again.message, first.message);
        assert_eq!(again.members, vec!["alice".to_owned(), "bob".to_owned()]);

        let changed = store
            .append_message(message(&group.id, "alice", "c1", text("edited")))
            .await;
        assert!(matches!(changed, Err(StoreError::ClientIdConflict)));
        let elsewhere = store
            .append_message(message(&other.id, "alice", "c1", text("hello")))
            .await;
        assert!(matches!(elsewhere, Err(StoreError::ClientIdConflict)));

        // Client ids are unique per sender, so bob may use the same one.
        let from_bob = store
            .append_message(message(&group.id, "bob", "c1", text("hello")))
            .await
            .unwrap();
        assert!(!from_bob.duplicate);
        assert_eq!(from_bob.message.seq, 2);

        let (channel, _) = store.channel_for_member(&group.id, "alice").await.unwrap();
        assert_eq!(channel.last_seq, 2);
        let (other_channel, _) = store.channel_for_member(&other.id, "alice").await.unwrap();
        assert_eq!(other_channel.last_seq, 0);
    }

    #[tokio::test]
    async fn dedupe_ignores_json_key_order() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["alice"]).await;
        let group = group_of(&store, "alice", &[]).await;

        let forward: serde_json::Value =
            serde_json::from_str(r#"{"a": 1, "b": {"x": 1, "y": 2}}"#).unwrap();
        let backward: serde_json::Value =
            serde_json::from_str(r#"{"b": {"y": 2, "x": 1}, "a": 1}"#).unwrap();
        let first = store
            .append_message(message(
                &group.id,
                "alice",
                "c1",
                Content::Custom { data: forward },
            ))
            .await
            .unwrap();
        let second = store
            .append_message(message(
                &group.id,
                "alice",
                "c1",
                Content::Custom { data: backward },
            ))
            .await
            .unwrap();
        assert!(second.duplicate);
        assert_eq!(second.message.seq, first.message.seq);
    }

    #[tokio::test]
    async fn dedupe_survives_reopen_until_purged() {
        let (_dir, path, store) = temp_store();
        add_users(&store, &["alice"]).await;
        let group = group_of(&store, "alice", &[]).await;
        store
            .append_message(message(&group.id, "alice", "c1", text("hello")))
            .await
            .unwrap();
        store.close().await.unwrap();

        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let again = store
            .append_message(message(&group.id, "alice", "c1", text("hello")))
            .await
            .unwrap();
        assert!(again.duplicate);
        assert_eq!(again.message.seq, 1);
        let changed = store
            .append_message(message(&group.id, "alice", "c1", text("edited")))
            .await;
        assert!(matches!(changed, Err(StoreError::ClientIdConflict)));

        assert_eq!(store.purge_client_ids(NOW).await.unwrap(), 0);
        assert_eq!(store.purge_client_ids(NOW + 1).await.unwrap(), 1);
        let after_purge = store
            .append_message(message(&group.id, "alice", "c1", text("edited")))
            .await
            .unwrap();
        assert!(!after_purge.duplicate);
        assert_eq!(after_purge.message.seq, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_share_one_file() {
        let (_dir, path, first) = temp_store();
        let second = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let stores = [Arc::new(first), Arc::new(second)];
        add_users(&stores[0], &["alice", "bob"]).await;
        let group = group_of(&stores[1], "alice", &["bob"]).await;

        let mut tasks = Vec::new();
        for task in 0..20 {
            let store = Arc::clone(&stores[task % 2]);
            let channel_id = group.id.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..10 {
                    let client_id = format!("{task}-{i}");
                    let appended = store
                        .append_message(message(&channel_id, "alice", &client_id, text("hi")))
                        .await
                        .unwrap();
                    seqs.push(appended.message.seq);
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (1..=200).collect::<Vec<u64>>());

        // The same client id sent through both stores at once is stored once.
        let racing = ["race-1", "race-2", "race-3"];
        for client_id in racing {
            let (left, right) = tokio::join!(
                stores[0].append_message(message(&group.id, "bob", client_id, text("same"))),
                stores[1].append_message(message(&group.id, "bob", client_id, text("same"))),
            );
            let (left, right) = (left.unwrap(), right.unwrap());
            assert_eq!(left.message.seq, right.message.seq);
            assert!(left.duplicate != right.duplicate);
        }

        let conflict = stores[1]
            .append_message(message(&group.id, "alice", "0-0", text("different")))
            .await;
        assert!(matches!(conflict, Err(StoreError::ClientIdConflict)));

        let stored = stores[0]
            .history(
                &group.id,
                "bob",
                Page::After {
                    after: 0,
                    limit: 1000,
                },
            )
            .await
            .unwrap();
        assert_eq!(seqs(&stored), (1..=203).collect::<Vec<u64>>());
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
    async fn direct_channel_idempotent() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["alice", "bob", "carol"]).await;

        let (plain, members) = store.open_direct("alice", "bob", None, NOW).await.unwrap();
        assert!(plain.id.starts_with("d_"));
        assert_eq!(plain.kind, ChannelKind::Direct);
        assert_eq!(plain.subject, None);
        assert_eq!(members, vec!["alice".to_owned(), "bob".to_owned()]);
        let (reversed, _) = store
            .open_direct("bob", "alice", None, NOW + 1)
            .await
            .unwrap();
        assert_eq!(reversed, plain);
        let (empty_subject, _) = store
            .open_direct("bob", "alice", Some(""), NOW)
            .await
            .unwrap();
        assert_eq!(empty_subject.id, plain.id);

        let (order, _) = store
            .open_direct("alice", "bob", Some("order-1"), NOW)
            .await
            .unwrap();
        let (order_reversed, _) = store
            .open_direct("bob", "alice", Some("order-1"), NOW)
            .await
            .unwrap();
        assert_eq!(order_reversed.id, order.id);
        assert_eq!(order.subject.as_deref(), Some("order-1"));
        assert_ne!(order.id, plain.id);
        let (other_order, _) = store
            .open_direct("alice", "bob", Some("order-2"), NOW)
            .await
            .unwrap();
        assert_ne!(other_order.id, order.id);
        let (with_carol, _) = store
            .open_direct("alice", "carol", None, NOW)
            .await
            .unwrap();
        assert_ne!(with_carol.id, plain.id);

        let listed = store.list_channels("alice", None, 100).await.unwrap();
        assert_eq!(listed.len(), 4);

        let same_user = store.open_direct("alice", "alice", None, NOW).await;
        assert!(matches!(same_user, Err(StoreError::Invalid(_))));
        let unknown = store.open_direct("alice", "nobody", None, NOW).await;
        assert!(matches!(unknown, Err(StoreError::NotFound)));
        store.delete_user("carol", NOW).await.unwrap();
        let deleted = store.open_direct("alice", "carol", None, NOW).await;
        assert!(matches!(deleted, Err(StoreError::NotFound)));
    }

    #[test]
    fn direct_channel_id_separates_parts() {
        assert_ne!(
            queries::direct_channel_id("a", "bc", ""),
            queries::direct_channel_id("ab", "c", "")
        );
        assert_ne!(
            queries::direct_channel_id("a", "b", "c"),
            queries::direct_channel_id("a", "bc", "")
        );
        assert_eq!(queries::direct_channel_id("a", "b", "").len(), 2 + 24);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn direct_channel_same_across_stores() {
        let (_dir, path, first) = temp_store();
        let second = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        add_users(&first, &["alice", "bob"]).await;

        for subject in ["listing-1", "listing-2", "listing-3"] {
            let (left, right) = tokio::join!(
                first.open_direct("alice", "bob", Some(subject), NOW),
                second.open_direct("bob", "alice", Some(subject), NOW),
            );
            assert_eq!(left.unwrap().0.id, right.unwrap().0.id);
        }
        assert_eq!(
            first.list_channels("bob", None, 100).await.unwrap().len(),
            3
        );
    }

    #[tokio::test]
    async fn group_membership_rules() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["owner", "bob", "carol", "dave", "gone"]).await;
        store.delete_user("gone", NOW).await.unwrap();

        let members = vec!["bob".to_owned(), "bob".to_owned(), "owner".to_owned()];
        let (group, listed) = store
            .create_group("owner", "team", &members, NOW)
            .await
            .unwrap();
        assert!(group.id.starts_with("g_"));
        assert_eq!(group.kind, ChannelKind::Group);
        assert_eq!(group.name.as_deref(), Some("team"));
        assert_eq!(listed, vec!["bob".to_owned(), "owner".to_owned()]);
        let (_, roles) = store.channel_for_member(&group.id, "owner").await.unwrap();
        let owner_role = roles
            .iter()
            .find(|member| member.user_id == "owner")
            .unwrap()
            .role;
        let bob_role = roles
            .iter()
            .find(|member| member.user_id == "bob")
            .unwrap()
            .role;
        assert_eq!(owner_role, MemberRole::Owner);
        assert_eq!(bob_role, MemberRole::Member);

        let by_member = store.add_member(&group.id, "bob", "carol", NOW).await;
        assert!(matches!(by_member, Err(StoreError::Forbidden(_))));
        let by_outsider = store.add_member(&group.id, "dave", "carol", NOW).await;
        assert!(matches!(by_outsider, Err(StoreError::NotFound)));
        let unknown_channel = store.add_member("g_missing", "owner", "carol", NOW).await;
        assert!(matches!(unknown_channel, Err(StoreError::NotFound)));
        let unknown_user = store.add_member(&group.id, "owner", "nobody", NOW).await;
        assert!(matches!(unknown_user, Err(StoreError::NotFound)));
        let deleted_user = store.add_member(&group.id, "owner", "gone", NOW).await;
        assert!(matches!(deleted_user, Err(StoreError::NotFound)));

        let added = store
            .add_member(&group.id, "owner", "carol", NOW)
            .await
            .unwrap();
        assert!(added.changed);
        assert_eq!(
            added.members,
            vec!["bob".to_owned(), "carol".to_owned(), "owner".to_owned()]
        );
        let added_again = store
            .add_member(&group.id, "owner", "carol", NOW)
            .await
            .unwrap();
        assert!(!added_again.changed);
        assert_eq!(added_again.members.len(), 3);

        let remove_other = store.remove_member(&group.id, "bob", "carol", NOW).await;
        assert!(matches!(remove_other, Err(StoreError::Forbidden(_))));
        let owner_leaves = store.remove_member(&group.id, "owner", "owner", NOW).await;
        assert!(matches!(owner_leaves, Err(StoreError::Forbidden(_))));
        let outsider_removes = store.remove_member(&group.id, "dave", "dave", NOW).await;
        assert!(matches!(outsider_removes, Err(StoreError::NotFound)));

        let left = store
            .remove_member(&group.id, "bob", "bob", NOW)
            .await
            .unwrap();
        assert!(left.changed);
        assert_eq!(left.members, vec!["carol".to_owned(), "owner".to_owned()]);
        let gone_already = store
            .remove_member(&group.id, "owner", "bob", NOW)
            .await
            .unwrap();
        assert!(!gone_already.changed);
        let removed = store
            .remove_member(&group.id, "owner", "carol", NOW)
            .await
            .unwrap();
        assert!(removed.changed);
        assert_eq!(removed.members, vec!["owner".to_owned()]);
        let after_leaving = store.channel_for_member(&group.id, "bob").await;
        assert!(matches!(after_leaving, Err(StoreError::NotFound)));
        let history = store
            .history(&group.id, "bob", Page::Latest { limit: 10 })
            .await;
        assert!(matches!(history, Err(StoreError::NotFound)));

        let (direct, _) = store.open_direct("owner", "bob", None, NOW).await.unwrap();
        let add_direct = store.add_member(&direct.id, "owner", "carol", NOW).await;
        assert!(matches!(add_direct, Err(StoreError::Invalid(_))));
        let remove_direct = store.remove_member(&direct.id, "owner", "bob", NOW).await;
        assert!(matches!(remove_direct, Err(StoreError::Invalid(_))));

        assert_eq!(
            store.member_ids(&group.id).await.unwrap(),
            vec!["owner".to_owned()]
        );
        assert!(matches!(
            store.member_ids("g_missing").await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn create_group_rejects_unknown_member() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["owner", "gone"]).await;
        store.delete_user("gone", NOW).await.unwrap();

        for member in ["nobody", "gone"] {
            let result = store
                .create_group("owner", "team", &[member.to_owned()], NOW)
                .await;
            assert!(
                matches!(result, Err(StoreError::NotFound)),
                "member {member}"
            );
        }
        let by_unknown = store.create_group("nobody", "team", &[], NOW).await;
        assert!(matches!(by_unknown, Err(StoreError::NotFound)));
        assert!(
            store
                .list_channels("owner", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn new_member_starts_with_history_read() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["owner", "bob"]).await;
        let group = group_of(&store, "owner", &[]).await;
        for i in 0..3 {
            store
                .append_message(message(&group.id, "owner", &format!("c{i}"), text("hi")))
                .await
                .unwrap();
        }
        store
            .add_member(&group.id, "owner", "bob", NOW)
            .await
            .unwrap();

        let listed = store.list_channels("bob", None, 10).await.unwrap();
        assert_eq!(listed[0].read_seq, 3);
        assert_eq!(listed[0].unread, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn history_paging_while_appending() {
        let (_dir, _path, store) = temp_store();
        let store = Arc::new(store);
        add_users(&store, &["alice", "bob"]).await;
        let group = group_of(&store, "alice", &["bob"]).await;
        for i in 0..30 {
            store
                .append_message(message(&group.id, "alice", &format!("a{i}"), text("hi")))
                .await
                .unwrap();
        }

        let appender = {
            let store = Arc::clone(&store);
            let channel_id = group.id.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    store
                        .append_message(message(&channel_id, "bob", &format!("b{i}"), text("hi")))
                        .await
                        .unwrap();
                }
            })
        };

        // Backwards from the newest page down to seq 1.
        let latest = store
            .history(&group.id, "alice", Page::Latest { limit: 7 })
            .await
            .unwrap();
        assert_eq!(latest.len(), 7);
        let newest = latest[6].seq;
        let mut backward = seqs(&latest);
        loop {
            let before = backward[0];
            let page = store
                .history(&group.id, "alice", Page::Before { before, limit: 7 })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            let page = seqs(&page);
            assert_eq!(
                *page.last().unwrap(),
                before - 1,
                "page must end right before {before}"
            );
            backward.splice(0..0, page);
        }
        assert_eq!(backward, (1..=newest).collect::<Vec<u64>>());

        // Forwards from the start until every appended message was read.
        let mut forward: Vec<u64> = Vec::new();
        let mut idle_rounds = 0;
        while forward.len() < 80 {
            let after = forward.last().copied().unwrap_or(0);
            let page = store
                .history(&group.id, "bob", Page::After { after, limit: 9 })
                .await
                .unwrap();
            if page.is_empty() {
                idle_rounds += 1;
                assert!(idle_rounds < 5000, "appender stalled at seq {after}");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            assert_eq!(
                page[0].seq,
                after + 1,
                "page must start right after {after}"
            );
            forward.extend(seqs(&page));
        }
        appender.await.unwrap();
        assert_eq!(forward, (1..=80).collect::<Vec<u64>>());
        let rest = store
            .history(
                &group.id,
                "bob",
                Page::After {
                    after: 80,
                    limit: 9,
                },
            )
            .await
            .unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn messages_between_bounds() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["alice"]).await;
        let group = group_of(&store, "alice", &[]).await;
        for i in 0..5 {
            store
                .append_message(message(&group.id, "alice", &format!("c{i}"), text("hi")))
                .await
                .unwrap();
        }

        let middle = store.messages_between(&group.id, 1, 3).await.unwrap();
        assert_eq!(seqs(&middle), vec![2, 3]);
        let to_end = store
            .messages_between(&group.id, 3, u64::MAX)
            .await
            .unwrap();
        assert_eq!(seqs(&to_end), vec![4, 5]);
        assert!(
            store
                .messages_between("g_missing", 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn mark_read_monotonic_and_capped() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["alice", "bob", "carol"]).await;
        let group = group_of(&store, "alice", &["bob"]).await;
        for i in 0..5 {
            let appended = store
                .append_message(message(&group.id, "alice", &format!("c{i}"), text("hi")))
                .await
                .unwrap();
            assert_eq!(appended.message.seq, i + 1);
        }

        let (position, members) = store.mark_read(&group.id, "bob", 3).await.unwrap();
        assert_eq!(position, 3);
        assert_eq!(members, vec!["alice".to_owned(), "bob".to_owned()]);
        let (position, _) = store.mark_read(&group.id, "bob", 2).await.unwrap();
        assert_eq!(position, 3, "read position must not move back");
        let (position, _) = store.mark_read(&group.id, "bob", 100).await.unwrap();
        assert_eq!(position, 5, "read position must stop at last_seq");
        let (position, _) = store.mark_read(&group.id, "bob", u64::MAX).await.unwrap();
        assert_eq!(position, 5);

        let outsider = store.mark_read(&group.id, "carol", 1).await;
        assert!(matches!(outsider, Err(StoreError::NotFound)));
        let unknown = store.mark_read("g_missing", "bob", 1).await;
        assert!(matches!(unknown, Err(StoreError::NotFound)));

        store
            .append_message(message(&group.id, "alice", "c5", text("hi")))
            .await
            .unwrap();
        let for_bob = store.list_channels("bob", None, 10).await.unwrap();
        assert_eq!(for_bob[0].read_seq, 5);
        assert_eq!(for_bob[0].unread, 1);
        let for_alice = store.list_channels("alice", None, 10).await.unwrap();
        assert_eq!(
            for_alice[0].read_seq, 6,
            "sending marks the sender's own message read"
        );
        assert_eq!(for_alice[0].unread, 0);
    }

    #[tokio::test]
    async fn list_channels_order_and_cursor() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["alice", "bob", "carol"]).await;
        let (with_bob, _) = store.open_direct("alice", "bob", None, NOW).await.unwrap();
        let (with_carol, _) = store
            .open_direct("alice", "carol", None, NOW + 5)
            .await
            .unwrap();
        let (first_group, _) = store
            .create_group("alice", "one", &[], NOW + 10)
            .await
            .unwrap();
        let (second_group, _) = store
            .create_group("alice", "two", &[], NOW + 10)
            .await
            .unwrap();
        let mut sent = message(&with_bob.id, "bob", "c1", text("hello"));
        sent.created_at = NOW + 20;
        store.append_message(sent).await.unwrap();

        let (tied_high, tied_low) = if first_group.id > second_group.id {
            (&first_group.id, &second_group.id)
        } else {
            (&second_group.id, &first_group.id)
        };
        let expected = vec![
            with_bob.id.clone(),
            tied_high.clone(),
            tied_low.clone(),
            with_carol.id.clone(),
        ];
        let all = store.list_channels("alice", None, 100).await.unwrap();
        let ids: Vec<String> = all
            .iter()
            .map(|summary| summary.channel.id.clone())
            .collect();
        assert_eq!(ids, expected);

        let top = &all[0];
        assert_eq!(top.channel.last_activity, NOW + 20);
        assert_eq!(top.unread, 1);
        let last = top.last_message.as_ref().unwrap();
        assert_eq!(last.seq, 1);
        assert_eq!(last.content, text("hello"));
        assert!(all[1].last_message.is_none());

        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .list_channels("alice", cursor.clone(), 2)
                .await
                .unwrap();
            let Some(last) = page.last() else {
                break;
            };
            cursor = Some((last.channel.last_activity, last.channel.id.clone()));
            paged.extend(page.into_iter().map(|summary| summary.channel.id));
        }
        assert_eq!(paged, expected);
        assert!(
            store
                .list_channels("nobody", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn deleted_user_shows_as_sender_deleted() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["alice", "bob"]).await;
        let group = group_of(&store, "bob", &["alice"]).await;
        store
            .append_message(message(&group.id, "alice", "c1", text("before")))
            .await
            .unwrap();

        store.delete_user("alice", NOW + 1).await.unwrap();
        let user = store.get_user("alice").await.unwrap().unwrap();
        assert!(user.deleted);
        assert_eq!(user.name, None);
        assert_eq!(user.metadata, serde_json::Value::Null);
        let state = store.user_auth_state("alice").await.unwrap().unwrap();
        assert!(state.deleted);
        let history = store
            .history(&group.id, "bob", Page::Latest { limit: 10 })
            .await
            .unwrap();
        assert!(history[0].sender_deleted);
        let listed = store.list_channels("bob", None, 10).await.unwrap();
        assert!(listed[0].last_message.as_ref().unwrap().sender_deleted);
        assert!(matches!(
            store.delete_user("alice", NOW).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_user("nobody", NOW).await,
            Err(StoreError::NotFound)
        ));
        let deleted_sender = store
            .append_message(message(&group.id, "alice", "c2", text("after")))
            .await;
        assert!(matches!(deleted_sender, Err(StoreError::NotFound)));

        // A new user with the same id is a different person.
        let revived_at = NOW + 2_500;
        let revived = store
            .upsert_user("alice", "New Alice", json!({}), revived_at)
            .await
            .unwrap();
        assert!(!revived.deleted);
        assert_eq!(revived.created_at, revived_at);
        let state = store.user_auth_state("alice").await.unwrap().unwrap();
        assert!(!state.deleted);
        assert_eq!(state.tokens_not_before, Some(revived_at / 1000));
        store
            .append_message(message(&group.id, "alice", "c3", text("new")))
            .await
            .unwrap();
        let history = store
            .history(&group.id, "bob", Page::Latest { limit: 10 })
            .await
            .unwrap();
        assert!(
            history[0].sender_deleted,
            "old messages stay with the deleted user"
        );
        assert!(!history[1].sender_deleted);
    }

    #[tokio::test]
    async fn append_rejects_non_finite_location() {
        let (_dir, _path, store) = temp_store();
        add_users(&store, &["alice"]).await;
        let group = group_of(&store, "alice", &[]).await;

        let location = Content::Location {
            latitude: f64::NAN,
            longitude: 2.0,
            label: None,
        };
        let result = store
            .append_message(message(&group.id, "alice", "c1", location))
            .await;
        assert!(matches!(result, Err(StoreError::Invalid(_))));
        let (channel, _) = store.channel_for_member(&group.id, "alice").await.unwrap();
        assert_eq!(channel.last_seq, 0);
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

        assert!(is_unavailable(
            &store.upsert_user("bob", "Bob", json!({}), NOW).await
        ));
        assert!(is_unavailable(&store.delete_user("alice", NOW).await));
        assert!(is_unavailable(&store.get_user("alice").await));
        assert!(is_unavailable(&store.user_auth_state("alice").await));
        assert!(is_unavailable(
            &store.open_direct("alice", "bob", None, NOW).await
        ));
        assert!(is_unavailable(
            &store.create_group("alice", "x", &[], NOW).await
        ));
        assert!(is_unavailable(
            &store.add_member(&group.id, "alice", "bob", NOW).await
        ));
        assert!(is_unavailable(
            &store.remove_member(&group.id, "alice", "bob", NOW).await
        ));
        assert!(is_unavailable(
            &store.channel_for_member(&group.id, "alice").await
        ));
        assert!(is_unavailable(&store.member_ids(&group.id).await));
        assert!(is_unavailable(
            &store.list_channels("alice", None, 10).await
        ));
        let late = message(&group.id, "alice", "late", text("hi"));
        assert!(is_unavailable(&store.append_message(late).await));
        assert!(is_unavailable(
            &store
                .history(&group.id, "alice", Page::Latest { limit: 1 })
                .await
        ));
        assert!(is_unavailable(
            &store.messages_between(&group.id, 0, 10).await
        ));
        assert!(is_unavailable(
            &store.mark_read(&group.id, "alice", 1).await
        ));
        assert!(is_unavailable(&store.purge_client_ids(NOW).await));
        assert!(is_unavailable(&store.close().await));

        let wal = path.with_extension("sqlite-wal");
        let wal_size = std::fs::metadata(&wal).unwrap().len();
        assert_eq!(wal_size, 0, "close must checkpoint and truncate the WAL");
        drop(other_process);

        let reopened = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let stored = reopened.messages_between(&group.id, 0, 1000).await.unwrap();
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
}
