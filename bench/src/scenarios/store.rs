//! The store floor beside the runtime's own store, for B0.
//!
//! The floor is the least a durable write of one small row costs in the
//! embedded store. It is a rusqlite INSERT committed on its own, on a
//! connection set up as the runtime sets up its writer: WAL journal,
//! `synchronous=FULL` and a 5 s busy timeout. The product is
//! [`SqliteStore::append_message`], which also checks membership, records
//! the client id and updates the channel and the sender's read position,
//! all through the store's writer thread. It runs one append at a time, as
//! the floor does, and with [`CONCURRENT_APPENDERS`] appenders whose writes
//! the writer thread commits in batches. A small write and fdatasync on a
//! plain file gives the disk's own cost for reference.
//!
//! Everything runs inside the benchmark process, so on the load
//! generator's CPU when pinning is available.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use chat_runtime::store::sqlite::{SqliteOptions, SqliteStore};
use chat_runtime::store::{Content, NewMessage, Store};
use hdrhistogram::Histogram;
use rusqlite::{Connection, OpenFlags};

use super::Context;
use super::rest::{micros, new_histogram, percentile_ms};
use crate::profile::{Profile, ProfileName};
use crate::report::Figure;
use crate::system::CpuMeter;

/// Appenders of the concurrent run, each on a channel of its own.
const CONCURRENT_APPENDERS: usize = 16;
/// Operations run before each measurement, to create files and fill
/// caches.
const WARM_UP_OPERATIONS: u64 = 20;
/// Text of every row and message: a short chat line.
const BODY: &str = "Is the bike still for sale? I could pick it up on Saturday morning.";
/// Bytes written per operation in the disk reference.
const DISK_RECORD_BYTES: usize = 64;
/// The runtime's busy timeout (`SqliteOptions::default`), applied to the
/// floor's connection too.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Measures the disk reference, the store floor and the runtime's store,
/// and returns their figures with the product's ratios to the floor.
pub async fn run(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let duration = phase_duration(&ctx.profile);

    let disk_path = ctx.folder("store-disk")?.join("records");
    let disk = tokio::task::spawn_blocking(move || measure_disk(&disk_path, duration))
        .await
        .context("the disk measurement thread stopped")??;

    let floor_path = ctx.folder("store-floor")?.join("floor.sqlite3");
    let floor = tokio::task::spawn_blocking(move || measure_insert_floor(&floor_path, duration))
        .await
        .context("the store floor thread stopped")??;

    let sequential_path = ctx.folder("store-sequential")?.join("bench.sqlite3");
    let sequential = measure_appends(&sequential_path, 1, duration).await?;
    let concurrent_path = ctx.folder("store-concurrent")?.join("bench.sqlite3");
    let concurrent = measure_appends(&concurrent_path, CONCURRENT_APPENDERS, duration).await?;

    let mut figures = Vec::new();
    let disk_name = format!("disk: {DISK_RECORD_BYTES}-byte write + fdatasync, one at a time");
    figures.extend(disk.figures(&disk_name, None)?);
    let floor_name = "store floor: SQLite INSERT committed alone, one at a time";
    figures.extend(floor.figures(floor_name, None)?);
    figures.extend(sequential.figures("store append, one at a time", Some(&floor))?);
    let concurrent_name = format!("store append, {CONCURRENT_APPENDERS} concurrent appenders");
    figures.extend(concurrent.figures(&concurrent_name, Some(&floor))?);
    Ok(figures)
}

/// Length of each measured phase. The profile has no field of its own for
/// the store, so the length follows its name.
fn phase_duration(profile: &Profile) -> Duration {
    match profile.name {
        ProfileName::Quick => Duration::from_secs(1),
        ProfileName::Full => Duration::from_secs(5),
    }
}

/// Operations completed in one phase and what they cost.
struct Measured {
    operations: u64,
    seconds: f64,
    /// Microseconds per operation.
    histogram: Histogram<u64>,
    /// CPU time of the whole benchmark process over the phase.
    cpu_seconds: f64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.operations as f64 / self.seconds
    }

    fn cpu_micros_per_operation(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.operations as f64
    }

    fn latency_ms(&self, percentile: f64) -> anyhow::Result<f64> {
        percentile_ms(&self.histogram, percentile).context("a store phase completed no operation")
    }

    /// Builds the throughput, p50, p99 and CPU-per-operation figures, each
    /// with `floor`'s figure as its floor when given.
    fn figures(&self, name: &str, floor: Option<&Measured>) -> anyhow::Result<Vec<Figure>> {
        let compare = |figure: Figure, floor_value: Option<f64>| match floor_value {
            Some(value) => figure.with_floor(value),
            None => figure,
        };
        let floor_latency =
            |percentile: f64| floor.map(|floor| floor.latency_ms(percentile)).transpose();
        Ok(vec![
            compare(
                Figure::new(format!("{name}: throughput"), "operations/s", self.rate()),
                floor.map(Measured::rate),
            ),
            compare(
                Figure::new(format!("{name}: p50"), "ms", self.latency_ms(50.0)?),
                floor_latency(50.0)?,
            ),
            compare(
                Figure::new(format!("{name}: p99"), "ms", self.latency_ms(99.0)?),
                floor_latency(99.0)?,
            ),
            compare(
                Figure::new(
                    format!("{name}: CPU per operation"),
                    "µs",
                    self.cpu_micros_per_operation(),
                ),
                floor.map(Measured::cpu_micros_per_operation),
            ),
        ])
    }
}

/// Runs `operation` one call at a time for `duration` after a warm-up, and
/// times each call. The argument is a number never passed before.
fn time_sequentially(
    duration: Duration,
    mut operation: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<Measured> {
    for number in 0..WARM_UP_OPERATIONS {
        operation(number)?;
    }
    let mut histogram = new_histogram()?;
    let cpu = CpuMeter::start_self()?;
    let started = Instant::now();
    let mut number = WARM_UP_OPERATIONS;
    while started.elapsed() < duration {
        let before = Instant::now();
        operation(number)?;
        histogram.saturating_record(micros(before.elapsed()));
        number += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Measured {
        operations: number - WARM_UP_OPERATIONS,
        seconds,
        histogram,
        cpu_seconds: cpu.cpu_seconds()?,
    })
}

/// Overwrites the first bytes of a file and flushes them with fdatasync,
/// one write at a time. Overwriting keeps the file's size, so fdatasync
/// has no metadata to flush.
fn measure_disk(path: &Path, duration: Duration) -> anyhow::Result<Measured> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all_at(&[0; 4096], 0)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", path.display()))?;
    let mut record = [0u8; DISK_RECORD_BYTES];
    time_sequentially(duration, |number| {
        record[..8].copy_from_slice(&number.to_le_bytes());
        file.write_all_at(&record, 0)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("failed to write {}", path.display()))
    })
}

/// Inserts one row per transaction on a connection opened with the
/// runtime writer's flags and pragmas.
fn measure_insert_floor(path: &Path, duration: Duration) -> anyhow::Result<Measured> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("failed to open {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let journal_mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        bail!("SQLite kept journal_mode={journal_mode} instead of WAL");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE rows (
            id INTEGER PRIMARY KEY,
            channel_id TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at INTEGER NOT NULL
        ) STRICT;",
    )?;

    time_sequentially(duration, |_| {
        // Outside a transaction, SQLite commits each statement on its own.
        conn.prepare_cached("INSERT INTO rows (channel_id, body, created_at) VALUES (?1, ?2, ?3)")?
            .execute(rusqlite::params!["d_floor", BODY, now_millis()?])
            .context("the floor INSERT failed")?;
        Ok(())
    })
}

/// Appends messages through a new [`SqliteStore`] at `path` with
/// `appenders` concurrent callers, each waiting for its append before the
/// next, for `duration` after a warm-up.
async fn measure_appends(
    path: &Path,
    appenders: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let store = Arc::new(
        SqliteStore::open(path, SqliteOptions::default())
            .with_context(|| format!("failed to open the store at {}", path.display()))?,
    );
    let channels = create_channels(&store, appenders).await?;
    for number in 0..WARM_UP_OPERATIONS {
        append(&store, &channels[0], number).await?;
    }

    let cpu = CpuMeter::start_self()?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for channel in channels {
        let store = Arc::clone(&store);
        tasks.spawn(async move { append_until(&store, &channel, deadline).await });
    }
    let mut histogram = new_histogram()?;
    let mut operations = 0;
    while let Some(joined) = tasks.join_next().await {
        let appender = joined.context("an appender task stopped")??;
        operations += appender.len();
        histogram
            .add(&appender)
            .context("failed to merge latency histograms")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu.cpu_seconds()?;
    store.close().await.context("failed to close the store")?;
    Ok(Measured {
        operations,
        seconds,
        histogram,
        cpu_seconds,
    })
}

/// A channel with its only sender.
struct AppendChannel {
    id: String,
    sender: String,
}

/// Creates one direct channel per appender, between the appender's user
/// and a shared peer.
async fn create_channels(
    store: &SqliteStore,
    appenders: usize,
) -> anyhow::Result<Vec<AppendChannel>> {
    let now = now_millis()?;
    store
        .upsert_user("peer", "peer", serde_json::json!({}), now)
        .await
        .context("failed to create the peer user")?;
    let mut channels = Vec::new();
    for index in 0..appenders {
        let sender = format!("appender-{index}");
        store
            .upsert_user(&sender, &sender, serde_json::json!({}), now)
            .await
            .with_context(|| format!("failed to create user {sender}"))?;
        let (channel, _) = store
            .open_direct(&sender, "peer", None, now)
            .await
            .with_context(|| format!("failed to open a direct channel for {sender}"))?;
        channels.push(AppendChannel {
            id: channel.id,
            sender,
        });
    }
    if channels.is_empty() {
        bail!("no appenders were requested");
    }
    Ok(channels)
}

/// Appends to `channel` one message at a time until `deadline`, and returns
/// the latency of each append in microseconds.
async fn append_until(
    store: &SqliteStore,
    channel: &AppendChannel,
    deadline: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = new_histogram()?;
    // Numbers below WARM_UP_OPERATIONS were used by the warm-up on the
    // first channel, and client ids must stay unique per sender.
    let mut number = WARM_UP_OPERATIONS;
    while Instant::now() < deadline {
        let before = Instant::now();
        append(store, channel, number).await?;
        histogram.saturating_record(micros(before.elapsed()));
        number += 1;
    }
    Ok(histogram)
}

async fn append(store: &SqliteStore, channel: &AppendChannel, number: u64) -> anyhow::Result<()> {
    let message = NewMessage {
        channel_id: channel.id.clone(),
        sender_id: channel.sender.clone(),
        client_id: format!("{}-{number}", channel.sender),
        content: Content::Text {
            text: BODY.to_owned(),
        },
        submitted: None,
        reply_to: None,
        mentions: Vec::new(),
        created_at: now_millis()?,
        moderation: Vec::new(),
    };
    let appended = store
        .append_message(message)
        .await
        .with_context(|| format!("failed to append to {}", channel.id))?;
    if appended.duplicate {
        bail!(
            "append to {} was taken as a duplicate of message {}",
            channel.id,
            appended.message.seq
        );
    }
    Ok(())
}

fn now_millis() -> anyhow::Result<i64> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH)?;
    Ok(i64::try_from(since_epoch.as_millis())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_sequentially_numbers_each_call_once() {
        let mut numbers = Vec::new();
        let measured = time_sequentially(Duration::from_millis(5), |number| {
            numbers.push(number);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            measured.operations,
            numbers.len() as u64 - WARM_UP_OPERATIONS
        );
        assert_eq!(measured.histogram.len(), measured.operations);
        let expected: Vec<u64> = (0..numbers.len() as u64).collect();
        assert_eq!(numbers, expected);
    }

    #[test]
    fn time_sequentially_stops_at_error() {
        let result = time_sequentially(Duration::from_secs(60), |number| {
            if number == 3 {
                bail!("write failed");
            }
            Ok(())
        });
        assert!(result.is_err());
    }

    #[test]
    fn figures_compare_with_floor() {
        let measured = |operations: u64, micros: u64| {
            let mut histogram = new_histogram().unwrap();
            for _ in 0..operations {
                histogram.record(micros).unwrap();
            }
            Measured {
                operations,
                seconds: 2.0,
                histogram,
                cpu_seconds: 0.5,
            }
        };
        let floor = measured(1000, 1000);
        let product = measured(500, 2000);

        let figures = product.figures("append", Some(&floor)).unwrap();

        let names: Vec<&str> = figures.iter().map(|figure| figure.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "append: throughput",
                "append: p50",
                "append: p99",
                "append: CPU per operation"
            ]
        );
        assert_eq!(figures[0].value, 250.0);
        assert_eq!(figures[0].ratio, Some(0.5));
        assert_eq!(figures[1].value, 2.0);
        assert_eq!(figures[1].floor, Some(1.0));
        assert_eq!(figures[3].value, 1000.0);
        assert_eq!(figures[3].ratio, Some(2.0));
    }

    #[test]
    fn figures_of_empty_phase() {
        let measured = Measured {
            operations: 1,
            seconds: 1.0,
            histogram: new_histogram().unwrap(),
            cpu_seconds: 0.0,
        };
        assert!(measured.figures("empty", None).is_err());
    }
}
