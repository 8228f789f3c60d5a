//! The writer thread: the only user of the write connection.
//!
//! Requests are taken from the queue in arrival order and applied in that
//! order, up to `max_batch` of them in one `BEGIN IMMEDIATE ... COMMIT`
//! transaction, so one fsync covers the whole batch. Each request runs inside
//! its own savepoint, so a request that fails is rolled back alone. No
//! request gets its result before COMMIT has returned.

use std::path::Path;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::queries::OpResult;
use crate::store::{StoreError, StoreResult};

/// Capacity of the write queue. When the writer falls behind, callers wait
/// in `send` instead of the queue growing without limit, which pushes back
/// on the connections that produce the writes. 1024 is four batches at the
/// default `max_batch`, so a full next batch is ready whenever a commit ends.
pub(super) const WRITE_QUEUE_CAPACITY: usize = 1024;

/// A queued write together with the channel that returns its result.
pub(super) trait WriteRequest: Send {
    /// Runs the request inside the open transaction and keeps the outcome.
    /// Returns false when the request failed and must be rolled back.
    fn apply(&mut self, conn: &Connection) -> bool;

    /// Sends the kept outcome, or `Unavailable` with `batch_failure` when the
    /// batch was not committed.
    fn send_result(self: Box<Self>, batch_failure: Option<&str>);
}

pub(super) type BoxedRequest = Box<dyn WriteRequest>;

struct Request<T, F> {
    operation: Option<F>,
    outcome: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> WriteRequest for Request<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> OpResult<T> + Send,
{
    fn apply(&mut self, conn: &Connection) -> bool {
        let Some(operation) = self.operation.take() else {
            return false;
        };
        let outcome = operation(conn).map_err(StoreError::from);
        let succeeded = outcome.is_ok();
        self.outcome = Some(outcome);
        succeeded
    }

    fn send_result(self: Box<Self>, batch_failure: Option<&str>) {
        let result = match (batch_failure, self.outcome) {
            (None, Some(outcome)) => outcome,
            (Some(reason), _) => Err(StoreError::Unavailable(
                format!("write transaction was not committed: {reason}").into(),
            )),
            (None, None) => Err(StoreError::Unavailable(
                "write request was never applied".into(),
            )),
        };
        // The caller may have stopped waiting. The write is committed or
        // rolled back either way, so there is nothing left to do.
        let _ = self.reply.send(result);
    }
}

/// Wraps `operation` as a queued request whose result goes to `reply`.
pub(super) fn request<T, F>(operation: F, reply: oneshot::Sender<StoreResult<T>>) -> BoxedRequest
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> OpResult<T> + Send + 'static,
{
    Box::new(Request {
        operation: Some(operation),
        outcome: None,
        reply,
    })
}

/// Starts the writer thread. It runs until every sender of `queue` is
/// dropped and the queue is empty, then checkpoints the WAL and closes
/// `conn`.
pub(super) fn spawn(
    conn: Connection,
    queue: mpsc::Receiver<BoxedRequest>,
    max_batch: usize,
    path: &Path,
) -> std::io::Result<JoinHandle<()>> {
    // The thread's logs name the file, so a failed batch can be traced to
    // its tenant.
    let span = tracing::info_span!("sqlite_writer", path = %path.display());
    std::thread::Builder::new()
        .name("sqlite-writer".to_owned())
        .spawn(move || span.in_scope(|| run(conn, queue, max_batch)))
}

fn run(conn: Connection, mut queue: mpsc::Receiver<BoxedRequest>, max_batch: usize) {
    let mut batch: Vec<BoxedRequest> = Vec::with_capacity(max_batch);
    // `blocking_recv_many` takes requests in the order they were sent and
    // returns 0 only once all senders are gone and the queue is drained.
    while queue.blocking_recv_many(&mut batch, max_batch) > 0 {
        run_batch(&conn, &mut batch);
    }
    checkpoint(&conn);
}

/// Applies and commits `batch`, then sends every request its result and
/// empties `batch`.
pub(super) fn run_batch(conn: &Connection, batch: &mut Vec<BoxedRequest>) {
    let failure = apply_batch(conn, batch).err();
    if let Some(reason) = &failure {
        tracing::error!(
            batch_size = batch.len(),
            error = %reason,
            "write batch failed; every request in it returns Unavailable"
        );
    }
    for request in batch.drain(..) {
        request.send_result(failure.as_deref());
    }
}

/// Applies `batch` in one transaction. On `Err`, nothing of the batch is
/// committed.
fn apply_batch(conn: &Connection, batch: &mut [BoxedRequest]) -> Result<(), String> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|error| format!("BEGIN IMMEDIATE failed: {error}"))?;
    for request in batch.iter_mut() {
        if let Err(reason) = apply_in_savepoint(conn, request.as_mut()) {
            roll_back(conn);
            return Err(reason);
        }
    }
    if let Err(error) = conn.execute_batch("COMMIT") {
        roll_back(conn);
        return Err(format!("COMMIT failed: {error}"));
    }
    Ok(())
}

fn apply_in_savepoint(conn: &Connection, request: &mut dyn WriteRequest) -> Result<(), String> {
    run_cached(conn, "SAVEPOINT request").map_err(|error| format!("SAVEPOINT failed: {error}"))?;
    let succeeded = request.apply(conn);
    // Some errors (disk full, I/O errors) make SQLite roll back the whole
    // transaction by itself. The requests before this one are then rolled back too.
    if conn.is_autocommit() {
        return Err("SQLite rolled back the transaction after a failed request".to_owned());
    }
    if !succeeded {
        run_cached(conn, "ROLLBACK TO request")
            .map_err(|error| format!("ROLLBACK TO SAVEPOINT failed: {error}"))?;
    }
    run_cached(conn, "RELEASE request")
        .map_err(|error| format!("RELEASE SAVEPOINT failed: {error}"))
}

/// Runs a statement without parameters through the statement cache. Every
/// request runs a savepoint's statements, and parsing them each time showed
/// in profiles of the writer thread.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn roll_back(conn: &Connection) {
    if conn.is_autocommit() {
        return;
    }
    if let Err(error) = conn.execute_batch("ROLLBACK") {
        tracing::error!(%error, "ROLLBACK of a failed write batch failed");
    }
}

/// Copies the WAL into the database file and truncates the WAL to zero bytes.
/// Every commit was already fsynced to the WAL, so a checkpoint that cannot
/// finish loses no data: the WAL stays and a later checkpoint copies it.
fn checkpoint(conn: &Connection) {
    let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    });
    match result {
        Ok(0) => tracing::debug!("WAL checkpoint finished"),
        Ok(_) => tracing::debug!(
            "WAL checkpoint could not finish because another connection is using the database"
        ),
        Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
    }
}
