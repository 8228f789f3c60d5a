//! The event log and webhook delivery state.
//!
//! # Positions
//!
//! ScyllaDB has no counter that every replica can take the next number
//! from without a transaction per event. So an event's place in the log is
//! a position `(at, tag)`. `at` is in microseconds, and `tag` is 16 hex
//! digits that separate events at the same microsecond. The cursor and the event id
//! are both `"{at}-{tag}"`. `events` is partitioned by the hour of `at`,
//! so a reader at the head of the log reads one or two partitions, and
//! `event_buckets` lists the hours that have events, so an old cursor skips
//! empty hours with one read.
//!
//! `at` comes from the time the caller gave the change (`created_at` of
//! the event), raised by a per-store clock to one microsecond past the last
//! position this store handed out. So one process's changes keep their
//! order even within one millisecond, and retention (`purge_events`, which
//! is by `created_at`) removes a prefix of the log.
//!
//! # Order within a channel
//!
//! A message's position is chosen before the transaction that claims its
//! number, as one past the position of the channel's newest message, which
//! that transaction reads anyway, and it is stored with the claim. So
//! `message.new` events are in the order of sequence numbers whatever the
//! replicas' clocks say. Every read of a channel row also raises the
//! store's clock past the newest message's position, so an edit, delete,
//! reaction, read or membership change written after reading the channel
//! comes after the messages it saw.
//!
//! NOTE: two changes of a channel other than appends that run on two
//! replicas, such as two edits of one message, are ordered by the
//! replicas' clocks, so skew can swap them in the log.
//!
//! # Late writes
//!
//! A position is chosen before its row is written, so a reader could pass
//! a position whose row lands a moment later and never see it. Readers
//! therefore return only events older than a lag that is longer than a
//! write normally takes (see [`DEFAULT_READ_LAG`]). A write that takes
//! longer still is logged with a warning, since readers may have passed it.
//!
//! # Same write
//!
//! This store writes no logged batches: every change is a lightweight
//! transaction or a write whose timestamp decides the winner. Each event is
//! written right after the change succeeded. Where the change can be
//! written again (a claimed message is completed by whichever replica finds
//! it unfinished), the event's position is stored with the change and its
//! tag derived from it, so every writer lands on the same row. Elsewhere a
//! replica that stops between the change and the event loses the event;
//! the call sites mark this with a NOTE.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use sha2::{Digest, Sha256};

use super::channels::FAN_OUT;
use super::rows::inconsistent;
use super::schema::EVENT_BUCKET_MICROS;
use super::{ScyllaStore, failed};
use crate::store::{
    DeadLetter, Event, EventPage, Millis, NewEvent, StoreError, StoreResult, WebhookClaim,
};

/// How far behind the clock readers stay. A position is chosen from the
/// time the caller gave the change, so the lag covers the request up to
/// the event write. The default request timeout is 5 s, and an append
/// completes its rows in up to three attempts.
pub const DEFAULT_READ_LAG: Duration = Duration::from_secs(30);

/// Attempts of one webhook claim. Another attempt is needed only when a
/// concurrent claim or save changed the row between its read and its
/// transaction.
const MAX_CLAIM_ATTEMPTS: usize = 8;

/// A place in the log. Ordered by `at`, then `tag`, as the `events`
/// clustering key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Position {
    pub at: i64,
    /// Empty only in cursors that point before every event at `at`.
    pub tag: String,
}

impl Position {
    /// Returns the position before every event.
    fn start() -> Position {
        Position {
            at: 0,
            tag: String::new(),
        }
    }

    pub(super) fn encode(&self) -> String {
        format!("{}-{}", self.at, self.tag)
    }

    /// Parses a cursor or event id this store issued.
    pub(super) fn parse(text: &str) -> Option<Position> {
        let (at, tag) = text.split_once('-')?;
        let digits = !at.is_empty() && at.bytes().all(|byte| byte.is_ascii_digit());
        let tag_valid = tag.is_empty()
            || (tag.len() == TAG_DIGITS
                && tag
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)));
        if !digits || !tag_valid {
            return None;
        }
        Some(Position {
            at: at.parse().ok()?,
            tag: tag.to_owned(),
        })
    }

    fn bucket(&self) -> i64 {
        bucket_of(self.at)
    }
}

fn invalid_cursor() -> StoreError {
    StoreError::Invalid("invalid cursor: pass a cursor this API returned")
}

/// Hex digits of a tag: 64 bits, so two events at one microsecond share a
/// tag with negligible odds.
const TAG_DIGITS: usize = 16;

/// Derives the tag of an event from what identifies its change, so that
/// every writer of the change writes the same row. Parts are
/// length-prefixed, so ("ab", "c") and ("a", "bc") differ.
pub(super) fn derived_tag(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    crate::store::keys::hex(&digest[..TAG_DIGITS / 2])
}

/// Generates the tag of an event written once, right after its change.
pub(super) fn random_tag() -> String {
    let bytes: [u8; TAG_DIGITS / 2] = rand::random();
    crate::store::keys::hex(&bytes)
}

/// Partition of `events` that contains position time `at`.
fn bucket_of(at: i64) -> i64 {
    at.div_euclid(EVENT_BUCKET_MICROS)
}

/// First position time after bucket `bucket`.
fn bucket_end(bucket: i64) -> i64 {
    bucket.saturating_add(1).saturating_mul(EVENT_BUCKET_MICROS)
}

/// Position time of a change the caller timed at `millis`.
pub(super) fn micros(millis: Millis) -> i64 {
    millis.max(0).saturating_mul(1_000)
}

fn wall_clock_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

/// Hands out position times that only grow within one store.
#[derive(Debug, Default)]
pub(super) struct EventClock {
    last: AtomicI64,
}

impl EventClock {
    /// Returns a time at least `floor` and past every time handed out or
    /// observed before.
    pub(super) fn next(&self, floor: i64) -> i64 {
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let at = floor.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, at, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return at,
                Err(seen) => last = seen,
            }
        }
    }

    /// Makes later times come after `at`.
    pub(super) fn observe(&self, at: i64) {
        self.last.fetch_max(at, Ordering::AcqRel);
    }
}

/// An event with its place in the log.
#[derive(Debug, Clone)]
pub(super) struct LogEntry {
    pub position: Position,
    pub event: NewEvent,
}

/// `at, tag, kind, channel_id, created_at, data` of an `events` row.
type EventRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

fn event_from_row(row: EventRow) -> StoreResult<Event> {
    let (at, tag, kind, channel_id, created_at, data) = row;
    let cursor = Position { at, tag }.encode();
    let data = match data {
        Some(text) => serde_json::from_str(&text)
            .map_err(|_| inconsistent("stored event data is not valid JSON"))?,
        None => serde_json::Value::Null,
    };
    Ok(Event {
        id: cursor.clone(),
        cursor,
        kind: kind.ok_or_else(|| inconsistent("stored event has no kind"))?,
        channel_id,
        created_at: created_at.unwrap_or(0),
        data,
    })
}

impl ScyllaStore {
    /// The newest position that readers return now.
    fn read_horizon(&self) -> i64 {
        let lag = i64::try_from(self.event_read_lag.as_micros()).unwrap_or(i64::MAX);
        wall_clock_micros().saturating_sub(lag)
    }

    /// Places an event written once, right after its change, after every
    /// position this store handed out.
    pub(super) fn place(&self, event: NewEvent) -> LogEntry {
        LogEntry {
            position: Position {
                at: self.event_clock.next(micros(event.created_at)),
                tag: random_tag(),
            },
            event,
        }
    }

    /// Like [`Self::place`], with a tag derived from `parts`, which name a
    /// change that happens once (a message's deletion, its n-th edit), so
    /// the event's id names the change.
    pub(super) fn place_derived(&self, event: NewEvent, parts: &[&str]) -> LogEntry {
        LogEntry {
            position: Position {
                at: self.event_clock.next(micros(event.created_at)),
                tag: derived_tag(parts),
            },
            event,
        }
    }

    /// Writes events. Every write is idempotent, so the driver may repeat
    /// it and a writer may run it again with the same entries.
    pub(super) async fn log(&self, entries: Vec<LogEntry>) -> StoreResult<()> {
        let mut buckets: Vec<i64> = entries
            .iter()
            .map(|entry| entry.position.bucket())
            .collect();
        buckets.sort_unstable();
        buckets.dedup();
        for bucket in buckets {
            self.register_bucket(bucket).await?;
        }
        let writes: Vec<_> = entries
            .iter()
            .map(|entry| self.write_entry(entry))
            .collect();
        futures_util::stream::iter(writes)
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<()>>()
            .await?;
        let horizon = self.read_horizon();
        if let Some(late) = entries.iter().find(|entry| entry.position.at < horizon) {
            tracing::warn!(
                event = %late.position.encode(),
                kind = late.event.kind,
                "An event was written after readers may have passed its position"
            );
        }
        Ok(())
    }

    /// Lists `bucket` in `event_buckets` unless this store did already. It
    /// must precede the event rows: a reader that does not find the bucket
    /// skips its events for good.
    async fn register_bucket(&self, bucket: i64) -> StoreResult<()> {
        if self.registered_bucket.load(Ordering::Acquire) == bucket {
            return Ok(());
        }
        self.execute(
            &self.statements.insert_event_bucket,
            (bucket,),
            "list an hour of the event log",
        )
        .await?;
        self.registered_bucket.store(bucket, Ordering::Release);
        Ok(())
    }

    async fn write_entry(&self, entry: &LogEntry) -> StoreResult<()> {
        let data =
            serde_json::to_string(&entry.event.data).map_err(failed("serialise event data"))?;
        self.execute(
            &self.statements.insert_event,
            (
                entry.position.bucket(),
                entry.position.at,
                &entry.position.tag,
                entry.event.kind,
                entry.event.channel_id.as_deref(),
                entry.event.created_at,
                data,
            ),
            "write an event",
        )
        .await
    }

    pub(super) async fn append_new_events(&self, events: Vec<NewEvent>) -> StoreResult<()> {
        let entries = events.into_iter().map(|event| self.place(event)).collect();
        self.log(entries).await
    }

    /// Reads the position of the newest purged event, `None` before any
    /// purge.
    async fn purged_position(&self) -> StoreResult<Option<Position>> {
        let row: Option<(Option<i64>, Option<String>)> = self
            .first_row(
                &self.statements.select_purged_position,
                (),
                "read the purged end of the event log",
            )
            .await?;
        Ok(match row {
            Some((Some(at), tag)) => Some(Position {
                at,
                tag: tag.unwrap_or_default(),
            }),
            _ => None,
        })
    }

    /// Listed buckets from `first` to `last`, oldest first.
    async fn buckets_between(&self, first: i64, last: i64) -> StoreResult<Vec<i64>> {
        if first > last {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64,)> = self
            .all_rows(
                &self.statements.select_event_buckets,
                (first, last),
                "read the hours of the event log",
            )
            .await?;
        Ok(rows.into_iter().map(|(bucket,)| bucket).collect())
    }

    /// Finds the newest event of `bucket` before position time `before`.
    async fn newest_before(&self, bucket: i64, before: i64) -> StoreResult<Option<Position>> {
        let row: Option<(i64, String)> = self
            .first_row(
                &self.statements.select_newest_event_before,
                (bucket, before),
                "read the newest event of an hour",
            )
            .await?;
        Ok(row.map(|(at, tag)| Position { at, tag }))
    }

    /// Finds the newest event in the listed buckets up to `last_bucket`
    /// before position time `before`.
    async fn newest_event_before(
        &self,
        last_bucket: i64,
        before: i64,
    ) -> StoreResult<Option<Position>> {
        let buckets = self.buckets_between(i64::MIN, last_bucket).await?;
        for bucket in buckets.into_iter().rev() {
            if let Some(position) = self.newest_before(bucket, before).await? {
                return Ok(Some(position));
            }
        }
        Ok(None)
    }

    pub(super) async fn read_events(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<EventPage> {
        let purged = self.purged_position().await?;
        let start = match after {
            Some(cursor) => {
                let position = Position::parse(cursor).ok_or_else(invalid_cursor)?;
                if purged.as_ref().is_some_and(|purged| position < *purged) {
                    return Err(StoreError::CursorExpired);
                }
                position
            }
            None => purged.unwrap_or_else(Position::start),
        };
        let horizon = self.read_horizon();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut events = Vec::new();
        if limit > 0 && start.at < horizon {
            let buckets = self
                .buckets_between(start.bucket(), bucket_of(horizon - 1))
                .await?;
            'buckets: for bucket in buckets {
                let remaining = i32::try_from(limit - events.len()).unwrap_or(i32::MAX);
                // Paged, because a page of large custom messages can pass
                // the size of one unpaged response.
                let rows: Vec<EventRow> = self
                    .all_rows(
                        &self.statements.select_events_after,
                        (bucket, start.at, &start.tag, remaining),
                        "read events",
                    )
                    .await?;
                for row in rows {
                    if row.0 >= horizon {
                        break 'buckets;
                    }
                    events.push(event_from_row(row)?);
                }
                if events.len() >= limit {
                    break;
                }
            }
        }
        let next_cursor = match (events.last(), after) {
            (Some(event), _) => event.cursor.clone(),
            (None, Some(cursor)) => cursor.to_owned(),
            (None, None) => start.encode(),
        };
        Ok(EventPage {
            events,
            next_cursor,
        })
    }

    /// The cursor of the newest event that readers return now, or of the
    /// start of what is kept when there is none.
    pub(super) async fn log_end(&self) -> StoreResult<String> {
        let horizon = self.read_horizon();
        let (purged, newest) = futures_util::try_join!(
            self.purged_position(),
            self.newest_event_before(bucket_of(horizon - 1), horizon),
        )?;
        let start = purged.unwrap_or_else(Position::start);
        Ok(match newest {
            Some(newest) if newest > start => newest.encode(),
            _ => start.encode(),
        })
    }

    /// Deletes the events created before `older_than`, never past what
    /// readers return, so only a prefix of the log goes.
    ///
    /// NOTE: the count reads every purged row (a `COUNT(*)` per hour), which
    /// grows with the tenant's traffic per hour.
    pub(super) async fn purge_events_before(&self, older_than: Millis) -> StoreResult<u64> {
        let cutoff = micros(older_than).min(self.read_horizon());
        let last_bucket = bucket_of(cutoff - 1);
        let Some(newest) = self.newest_event_before(last_bucket, cutoff).await? else {
            return Ok(0);
        };
        let buckets = self.buckets_between(i64::MIN, last_bucket).await?;

        let mut purged = 0_u64;
        for bucket in &buckets {
            let row: Option<(i64,)> = self
                .first_row(
                    &self.statements.count_events_before,
                    (*bucket, cutoff),
                    "count old events",
                )
                .await?;
            purged += row.map_or(0, |(count,)| u64::try_from(count).unwrap_or(0));
        }
        // The end goes first, so a reader that meets the gap the deletes
        // leave gets `CursorExpired` instead of skipping events silently.
        // Its write timestamp is the position, so of concurrent purges the
        // furthest end stays.
        self.execute(
            &self.statements.write_purged_position,
            (newest.at, &newest.tag, newest.at),
            "record the purged end of the event log",
        )
        .await?;

        for bucket in buckets {
            if bucket_end(bucket) <= cutoff {
                // A whole hour: one partition tombstone instead of rows.
                self.execute(
                    &self.statements.delete_event_bucket,
                    (bucket,),
                    "drop an hour of events",
                )
                .await?;
                self.execute(
                    &self.statements.remove_event_bucket,
                    (bucket,),
                    "unlist an hour of the event log",
                )
                .await?;
            } else {
                self.execute(
                    &self.statements.delete_events_before,
                    (bucket, cutoff),
                    "delete old events",
                )
                .await?;
            }
        }
        Ok(purged)
    }

    /// Takes `endpoint` for `holder` when it is free, already `holder`'s, or
    /// its lease ran out. CQL cannot put "holder is me or the lease ran
    /// out" in one condition, so the row is read and then changed only if
    /// it still has the holder and lease that were read.
    pub(super) async fn claim_endpoint(
        &self,
        endpoint: &str,
        holder: &str,
        now: Millis,
        lease_until: Millis,
    ) -> StoreResult<Option<WebhookClaim>> {
        for _ in 0..MAX_CLAIM_ATTEMPTS {
            let applied = match self.webhook_row(endpoint).await? {
                None => {
                    self.conditional(
                        &self.statements.insert_webhook,
                        (endpoint, holder, lease_until),
                        "claim a new webhook endpoint",
                    )
                    .await?
                }
                Some((current, current_lease, _)) => {
                    if current != holder && current_lease >= now {
                        return Ok(None);
                    }
                    self.conditional(
                        &self.statements.take_webhook,
                        (holder, lease_until, endpoint, &current, current_lease),
                        "claim a webhook endpoint",
                    )
                    .await?
                }
            };
            if applied {
                // Read again: once the claim applied the previous holder
                // can no longer save, so this is the final cursor.
                let cursor = self.webhook_row(endpoint).await?.and_then(|row| row.2);
                return Ok(Some(WebhookClaim { cursor }));
            }
        }
        Err(super::users::contention("claim a webhook endpoint"))
    }

    /// `holder, lease_until, cursor` of an endpoint, at serial consistency
    /// since a transaction depends on them.
    async fn webhook_row(
        &self,
        endpoint: &str,
    ) -> StoreResult<Option<(String, i64, Option<String>)>> {
        let row: Option<(Option<String>, Option<i64>, Option<String>)> = self
            .first_row(
                &self.statements.select_webhook_serial,
                (endpoint,),
                "read a webhook endpoint",
            )
            .await?;
        Ok(row.map(|(holder, lease_until, cursor)| {
            (holder.unwrap_or_default(), lease_until.unwrap_or(0), cursor)
        }))
    }

    pub(super) async fn save_endpoint_cursor(
        &self,
        endpoint: &str,
        holder: &str,
        cursor: &str,
        lease_until: Millis,
    ) -> StoreResult<bool> {
        self.conditional(
            &self.statements.save_webhook_cursor,
            (cursor, lease_until, endpoint, holder),
            "save a webhook cursor",
        )
        .await
    }

    pub(super) async fn insert_dead_letter(
        &self,
        endpoint: &str,
        letter: &DeadLetter,
    ) -> StoreResult<()> {
        let position = Position::parse(&letter.event.id).ok_or_else(invalid_cursor)?;
        let text = serde_json::to_string(letter).map_err(failed("serialise a dead letter"))?;
        self.execute(
            &self.statements.insert_dead_letter,
            (endpoint, position.at, &position.tag, text),
            "keep a dead letter",
        )
        .await
    }

    pub(super) async fn list_dead_letters(
        &self,
        endpoint: &str,
        limit: u32,
    ) -> StoreResult<Vec<DeadLetter>> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows: Vec<(Option<String>,)> = self
            .all_rows(
                &self.statements.select_dead_letters,
                (endpoint, limit),
                "read dead letters",
            )
            .await?;
        rows.into_iter()
            .map(|(letter,)| dead_letter_from_text(letter))
            .collect()
    }

    pub(super) async fn find_dead_letter(
        &self,
        endpoint: &str,
        event_id: &str,
    ) -> StoreResult<Option<DeadLetter>> {
        // An id this store never issued names no letter.
        let Some(position) = Position::parse(event_id) else {
            return Ok(None);
        };
        let row: Option<(Option<String>,)> = self
            .first_row(
                &self.statements.select_dead_letter,
                (endpoint, position.at, &position.tag),
                "read a dead letter",
            )
            .await?;
        row.map(|(letter,)| dead_letter_from_text(letter))
            .transpose()
    }

    /// Removes a dead letter with a transaction, so that of two concurrent
    /// removals only one returns the letter.
    pub(super) async fn take_dead_letter(
        &self,
        endpoint: &str,
        event_id: &str,
    ) -> StoreResult<Option<DeadLetter>> {
        let Some(position) = Position::parse(event_id) else {
            return Ok(None);
        };
        let Some(letter) = self.find_dead_letter(endpoint, event_id).await? else {
            return Ok(None);
        };
        let removed = self
            .conditional(
                &self.statements.delete_dead_letter,
                (endpoint, position.at, &position.tag),
                "remove a dead letter",
            )
            .await?;
        Ok(removed.then_some(letter))
    }
}

fn dead_letter_from_text(letter: Option<String>) -> StoreResult<DeadLetter> {
    let text = letter.ok_or_else(|| inconsistent("stored dead letter is empty"))?;
    serde_json::from_str(&text).map_err(|_| inconsistent("stored dead letter is not valid JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let position = Position {
            at: 1_700_000_000_000_123,
            tag: "0123456789abcdef".to_owned(),
        };
        assert_eq!(position.encode(), "1700000000000123-0123456789abcdef");
        assert_eq!(Position::parse(&position.encode()), Some(position));
        assert_eq!(Position::parse("0-"), Some(Position::start()));
    }

    #[test]
    fn foreign_cursors_are_refused() {
        for text in [
            "",
            "0",
            "42",
            "-0123456789abcdef",
            "x-0123456789abcdef",
            "1-0123456789ABCDEF",
            "1-0123",
            "1-0123456789abcdef0",
            "+1-0123456789abcdef",
            "99999999999999999999-0123456789abcdef",
            "not a cursor",
        ] {
            assert_eq!(Position::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn positions_order_by_time_then_tag() {
        let at = |at: i64, tag: &str| Position {
            at,
            tag: tag.to_owned(),
        };
        assert!(at(1, "ffffffffffffffff") < at(2, "0000000000000000"));
        assert!(at(2, "") < at(2, "0000000000000000"));
        assert!(at(2, "0000000000000001") > at(2, "0000000000000000"));
    }

    #[test]
    fn derived_tags_are_stable_and_separate_parts() {
        let tag = derived_tag(&["message.new", "g_1", "7"]);
        assert_eq!(tag.len(), TAG_DIGITS);
        assert_eq!(tag, derived_tag(&["message.new", "g_1", "7"]));
        assert_ne!(tag, derived_tag(&["message.new", "g_17", ""]));
        assert_eq!(random_tag().len(), TAG_DIGITS);
        assert!(Position::parse(&format!("5-{tag}")).is_some());
    }

    #[test]
    fn clock_only_grows() {
        let clock = EventClock::default();
        assert_eq!(clock.next(100), 100);
        assert_eq!(clock.next(100), 101);
        assert_eq!(clock.next(50), 102);
        clock.observe(500);
        assert_eq!(clock.next(0), 501);
        clock.observe(10);
        assert_eq!(clock.next(1_000), 1_000);
    }

    #[test]
    fn buckets_are_hours() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(EVENT_BUCKET_MICROS - 1), 0);
        assert_eq!(bucket_of(EVENT_BUCKET_MICROS), 1);
        assert_eq!(bucket_of(-1), -1);
        assert_eq!(bucket_end(0), EVENT_BUCKET_MICROS);
        assert_eq!(micros(1_700_000_000_000), 1_700_000_000_000_000);
        assert_eq!(micros(-5), 0);
    }
}
