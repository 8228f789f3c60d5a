//! A user's channel list: unread counts and the newest message left.
//!
//! The channel row's `newest` is written by the transaction that hands out
//! the number, and edits and deletes never change it. So the list reads
//! edited and deleted state from the `messages` row, and takes `newest`
//! only while that row is not written yet (the message cannot have been
//! edited or deleted then, because both complete the row first).

use std::collections::BTreeSet;

use futures_util::{StreamExt as _, TryStreamExt as _};

use super::ScyllaStore;
use super::channels::FAN_OUT;
use super::rows::{
    ChannelRecord, StoredMessage, bucket_of, inconsistent, seq_from_cql, seq_to_cql,
};
use super::schema::BUCKET_SIZE;
use crate::store::{ChannelSummary, Message, Millis, StoreResult};

/// Rows of `deleted_messages` that one search for the newest message left
/// reads, newest first.
const DELETED_SCAN_ROWS: i32 = 1_000;

/// Messages that one search reads and finds deleted before it gives up.
/// One is enough unless `deleted_messages` lags the `messages` rows or
/// more than [`DELETED_SCAN_ROWS`] newest messages are deleted.
const PREVIEW_CANDIDATES: usize = 4;

/// Messages from the newest down that the channel list reads to leave out
/// messages of users the viewer blocks.
const BLOCKED_SCAN_ROWS: u64 = 1_000;

/// Messages that one request of that scan reads.
const BLOCKED_SCAN_CHUNK: u64 = 100;

/// `seq, sender_id, deleted_at, mentions` of a `messages` row.
type SenderRow = (i64, Option<String>, Option<i64>, Option<Vec<String>>);

/// The fields of one message that the channel list reads to hide blocked
/// senders.
#[derive(Debug, Clone, PartialEq)]
struct ScannedMessage {
    seq: u64,
    sender_id: String,
    deleted: bool,
    mentions: Vec<String>,
}

impl ScannedMessage {
    fn from_row(row: SenderRow) -> StoreResult<ScannedMessage> {
        let (seq, sender_id, deleted_at, mentions) = row;
        Ok(ScannedMessage {
            seq: seq_from_cql(Some(seq))?,
            sender_id: sender_id.unwrap_or_default(),
            deleted: deleted_at.is_some(),
            mentions: mentions.unwrap_or_default(),
        })
    }

    fn from_stored(message: &StoredMessage) -> ScannedMessage {
        ScannedMessage {
            seq: message.seq,
            sender_id: message.sender_id.clone(),
            deleted: message.deleted_at.is_some(),
            mentions: message.mentions.clone(),
        }
    }
}

/// Result of scanning a channel's newest messages for blocked senders,
/// fed newest first.
#[derive(Debug, Default, PartialEq)]
struct BlockedScan {
    /// Unread messages of blocked senders that are not deleted.
    hidden_unread: u64,
    /// Those of them that mention the viewer.
    hidden_mentions: u64,
    /// The newest message that is neither deleted nor from a blocked
    /// sender.
    newest_visible: Option<u64>,
}

impl BlockedScan {
    fn add(
        &mut self,
        message: &ScannedMessage,
        viewer: &str,
        read_seq: u64,
        blocked: &BTreeSet<String>,
    ) {
        // Deleted messages are neither shown nor unread already.
        if message.deleted {
            return;
        }
        if !blocked.contains(&message.sender_id) {
            self.newest_visible.get_or_insert(message.seq);
            return;
        }
        if message.seq > read_seq {
            self.hidden_unread += 1;
            if message.mentions.iter().any(|user| user == viewer) {
                self.hidden_mentions += 1;
            }
        }
    }

    /// True once the scan, which has read down to `lowest`, has passed
    /// every unread message and found one to show.
    fn is_done(&self, lowest: u64, read_seq: u64) -> bool {
        self.newest_visible.is_some() && lowest <= read_seq.saturating_add(1)
    }

    /// Takes the hidden messages out of unread counts that include them.
    fn subtract_from(&self, unread: u64, mentions: u64) -> (u64, u64) {
        let unread = unread.saturating_sub(self.hidden_unread);
        let mentions = mentions.saturating_sub(self.hidden_mentions);
        (unread, mentions.min(unread))
    }
}

/// Returns the next chunk of the scan, `(bucket, first, last)` with `last`
/// at `top`, inside one `messages` partition and not below `floor`, or
/// `None` once the scan is past `floor`.
fn scan_chunk(top: u64, floor: u64) -> Option<(i64, u64, u64)> {
    if top == 0 || top < floor {
        return None;
    }
    let bucket = bucket_of(top);
    let bucket_first = u64::try_from(bucket).unwrap_or(0) * BUCKET_SIZE + 1;
    let first = top
        .saturating_sub(BLOCKED_SCAN_CHUNK - 1)
        .max(bucket_first)
        .max(floor);
    Some((bucket, first, top))
}

/// Returns the highest number from `last` down that is not in `deleted`,
/// or `None` when every number down to 1 is.
fn newest_kept(last: u64, deleted: &BTreeSet<u64>) -> Option<u64> {
    let mut candidate = last;
    for seq in deleted.range(..=last).rev() {
        if *seq != candidate {
            break;
        }
        candidate -= 1;
    }
    (candidate > 0).then_some(candidate)
}

/// Unread messages and unread mentions from the counts of the range
/// `(read_seq, last_seq]`. Clamped, because the counts are separate reads
/// that a concurrent delete can fall between.
fn unread_counts(read_seq: u64, last_seq: u64, deleted: u64, mentions: u64) -> (u64, u64) {
    let unread = last_seq.saturating_sub(read_seq).saturating_sub(deleted);
    (unread, mentions.min(unread))
}

impl ScyllaStore {
    pub(super) async fn channel_summaries(
        &self,
        user: &str,
        before: Option<(Millis, String)>,
        limit: u32,
    ) -> StoreResult<Vec<ChannelSummary>> {
        // Messages of users the viewer blocks count neither as unread nor
        // as the newest message. Most users block no one, and for them this
        // read is all the cost.
        let (mut entries, blocked) =
            futures_util::try_join!(self.user_channel_entries(user), self.blocked_user_set(user),)?;
        let blocked = &blocked;
        entries.sort_by(|left, right| {
            (right.last_activity, &right.channel_id).cmp(&(left.last_activity, &left.channel_id))
        });
        if let Some((activity, id)) = &before {
            entries.retain(|entry| (entry.last_activity, &entry.channel_id) < (*activity, id));
        }
        entries.truncate(limit as usize);

        // `buffered` keeps the page in activity order while reading up to
        // FAN_OUT channels at once.
        let reads: Vec<_> = entries
            .iter()
            .map(|entry| async move {
                futures_util::try_join!(
                    self.member_role(&entry.channel_id, user),
                    self.channel(&entry.channel_id),
                    self.read_position(&entry.channel_id, user),
                )
            })
            .collect();
        let pages = futures_util::stream::iter(reads)
            .buffered(FAN_OUT)
            .try_collect::<Vec<_>>()
            .await?;

        let mut summaries = Vec::with_capacity(pages.len());
        for (entry, (role, record, read_seq)) in entries.iter().zip(pages) {
            // A list row left by a membership change that failed half-way
            // (or raced another one) names a channel the user is not in.
            if role.is_none() {
                tracing::warn!(user, channel = %entry.channel_id, "Removing a channel list row without a membership");
                self.execute(
                    &self.statements.delete_user_channel,
                    (user, &entry.channel_id),
                    "remove a channel from a user's list",
                )
                .await?;
                continue;
            }
            let Some(record) = record else {
                return Err(inconsistent("membership refers to a missing channel"));
            };
            summaries.push((entry.last_activity, record, read_seq));
        }

        let details: Vec<_> = summaries
            .into_iter()
            .map(|(last_activity, record, read_seq)| async move {
                self.summary(user, record, read_seq, last_activity, blocked)
                    .await
            })
            .collect();
        futures_util::stream::iter(details)
            .buffered(FAN_OUT)
            .try_collect()
            .await
    }

    async fn summary(
        &self,
        user: &str,
        record: ChannelRecord,
        read_seq: u64,
        last_activity: Millis,
        blocked: &BTreeSet<String>,
    ) -> StoreResult<ChannelSummary> {
        let (last_message, (unread, unread_mentions)) = if blocked.is_empty() {
            futures_util::try_join!(
                self.newest_kept_message(&record, user),
                self.unread(&record, user, read_seq),
            )?
        } else {
            self.visible_newest_and_unread(&record, user, read_seq, blocked)
                .await?
        };
        let mut channel = record.channel;
        // The page was sorted and cut on the activity rows, and clients
        // page on the activity they get back, so they get the same value.
        channel.last_activity = last_activity;
        Ok(ChannelSummary {
            channel,
            last_message,
            unread,
            unread_mentions,
            read_seq,
        })
    }

    /// Counts the messages after `read_seq` that are not deleted, and those
    /// of them that mention `user`, with one range count each.
    async fn unread(
        &self,
        record: &ChannelRecord,
        user: &str,
        read_seq: u64,
    ) -> StoreResult<(u64, u64)> {
        let last_seq = record.channel.last_seq;
        if read_seq >= last_seq {
            return Ok((0, 0));
        }
        let channel_id = record.channel.id.as_str();
        let (read, last) = (seq_to_cql(read_seq), seq_to_cql(last_seq));
        let (deleted, mentions) = futures_util::try_join!(
            self.count(
                &self.statements.count_deleted,
                (channel_id, read, last),
                "count deleted messages",
            ),
            self.count(
                &self.statements.count_mentions,
                (channel_id, user, read, last),
                "count unread mentions",
            ),
        )?;
        Ok(unread_counts(read_seq, last_seq, deleted, mentions))
    }

    /// Returns the newest message that is neither deleted nor from a user
    /// `viewer` blocks, and the unread counts without such users' messages.
    ///
    /// NOTE: this reads only the newest [`BLOCKED_SCAN_ROWS`] messages, so
    /// older unread messages of blocked users still count as unread, and a
    /// channel whose newest messages are all hidden or deleted that far
    /// down shows no last message.
    async fn visible_newest_and_unread(
        &self,
        record: &ChannelRecord,
        viewer: &str,
        read_seq: u64,
        blocked: &BTreeSet<String>,
    ) -> StoreResult<(Option<Message>, (u64, u64))> {
        let ((unread, mentions), scan) = futures_util::try_join!(
            self.unread(record, viewer, read_seq),
            self.scan_for_blocked(record, viewer, read_seq, blocked),
        )?;
        let unread_counts = scan.subtract_from(unread, mentions);
        let Some(seq) = scan.newest_visible else {
            return Ok((None, unread_counts));
        };
        let newest = self
            .read_range(record, seq, seq, Some(viewer))
            .await?
            .into_iter()
            .find(|message| message.deleted_at.is_none());
        Ok((newest, unread_counts))
    }

    /// Reads the senders of the channel's newest messages, newest first, a
    /// chunk at a time, until it has passed `read_seq` and found a message
    /// to show, or read [`BLOCKED_SCAN_ROWS`] messages.
    async fn scan_for_blocked(
        &self,
        record: &ChannelRecord,
        viewer: &str,
        read_seq: u64,
        blocked: &BTreeSet<String>,
    ) -> StoreResult<BlockedScan> {
        let last = record.channel.last_seq;
        let floor = last.saturating_sub(BLOCKED_SCAN_ROWS - 1).max(1);
        let mut scan = BlockedScan::default();
        let mut top = last;
        while let Some((bucket, first, chunk_last)) = scan_chunk(top, floor) {
            let rows: Vec<SenderRow> = self
                .rows(
                    &self.statements.select_message_senders,
                    (
                        &record.channel.id,
                        bucket,
                        seq_to_cql(first),
                        seq_to_cql(chunk_last),
                    ),
                    "read the senders of a channel's newest messages",
                )
                .await?;
            let mut scanned = rows
                .into_iter()
                .map(ScannedMessage::from_row)
                .collect::<StoreResult<Vec<_>>>()?;
            // The newest message may still lack its `messages` row while its
            // writer finishes, and is then taken from the channel row.
            if chunk_last == last
                && scanned.first().map(|message| message.seq) != Some(last)
                && let Some(newest) = record.newest.as_ref().filter(|newest| newest.seq == last)
            {
                scanned.insert(0, ScannedMessage::from_stored(newest));
            }
            for message in &scanned {
                scan.add(message, viewer, read_seq, blocked);
            }
            if scan.is_done(first, read_seq) {
                break;
            }
            top = first - 1;
        }
        Ok(scan)
    }

    async fn count(
        &self,
        statement: &scylla::statement::prepared::PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        operation: &'static str,
    ) -> StoreResult<u64> {
        let row: Option<(i64,)> = self.first_row(statement, values, operation).await?;
        Ok(row.map_or(0, |(count,)| u64::try_from(count).unwrap_or(0)))
    }

    /// Returns the newest message of the channel that is not deleted, with
    /// `own_reactions` of `viewer`, or `None` when there is none.
    ///
    /// NOTE: the search reads at most [`DELETED_SCAN_ROWS`] deleted numbers
    /// and [`PREVIEW_CANDIDATES`] messages, so a channel whose newest
    /// thousand or so messages are all deleted shows no last message.
    async fn newest_kept_message(
        &self,
        record: &ChannelRecord,
        viewer: &str,
    ) -> StoreResult<Option<Message>> {
        let last = record.channel.last_seq;
        if last == 0 {
            return Ok(None);
        }
        let newest = self.read_range(record, last, last, Some(viewer)).await?;
        match newest.into_iter().next() {
            Some(message) if message.deleted_at.is_none() => return Ok(Some(message)),
            Some(_) => {}
            None => return Ok(None),
        }

        let rows: Vec<(i64,)> = self
            .rows(
                &self.statements.select_deleted_down_from,
                (&record.channel.id, seq_to_cql(last), DELETED_SCAN_ROWS),
                "read deleted message numbers",
            )
            .await?;
        let mut deleted = rows
            .into_iter()
            .map(|(seq,)| seq_from_cql(Some(seq)))
            .collect::<StoreResult<BTreeSet<u64>>>()?;
        // The newest message's row marks it deleted, whether or not its
        // `deleted_messages` row is written yet.
        deleted.insert(last);
        for _ in 0..PREVIEW_CANDIDATES {
            let Some(candidate) = newest_kept(last, &deleted) else {
                return Ok(None);
            };
            let message = self
                .read_range(record, candidate, candidate, Some(viewer))
                .await?
                .into_iter()
                .next();
            match message {
                Some(message) if message.deleted_at.is_none() => return Ok(Some(message)),
                _ => {
                    deleted.insert(candidate);
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(seqs: &[u64]) -> BTreeSet<u64> {
        seqs.iter().copied().collect()
    }

    #[test]
    fn newest_kept_skips_deleted_top() {
        assert_eq!(newest_kept(10, &set(&[])), Some(10));
        assert_eq!(newest_kept(10, &set(&[10])), Some(9));
        assert_eq!(newest_kept(10, &set(&[10, 9, 8])), Some(7));
        assert_eq!(newest_kept(10, &set(&[10, 8])), Some(9));
        assert_eq!(newest_kept(10, &set(&[9, 8])), Some(10));
    }

    #[test]
    fn newest_kept_none_when_all_deleted() {
        assert_eq!(newest_kept(3, &set(&[1, 2, 3])), None);
        assert_eq!(newest_kept(0, &set(&[])), None);
    }

    #[test]
    fn newest_kept_ignores_numbers_above_last() {
        assert_eq!(newest_kept(5, &set(&[7, 6, 5])), Some(4));
    }

    #[test]
    fn newest_kept_past_a_truncated_scan() {
        // A scan cut at its row limit returns a contiguous run; the next
        // number below it is the candidate, which the caller then reads.
        let scanned: BTreeSet<u64> = (1_001..=2_000).collect();
        assert_eq!(newest_kept(2_000, &scanned), Some(1_000));
    }

    fn scanned(seq: u64, sender: &str, deleted: bool, mentions: &[&str]) -> ScannedMessage {
        ScannedMessage {
            seq,
            sender_id: sender.to_owned(),
            deleted,
            mentions: mentions.iter().map(|user| (*user).to_owned()).collect(),
        }
    }

    fn scan_of(messages: &[ScannedMessage], read_seq: u64) -> BlockedScan {
        let blocked: BTreeSet<String> = ["alice".to_owned()].into();
        let mut scan = BlockedScan::default();
        for message in messages {
            scan.add(message, "bob", read_seq, &blocked);
        }
        scan
    }

    #[test]
    fn scanned_rows_convert() {
        let row = (
            7,
            Some("alice".to_owned()),
            Some(5),
            Some(vec!["bob".to_owned()]),
        );
        assert_eq!(
            ScannedMessage::from_row(row).unwrap(),
            scanned(7, "alice", true, &["bob"])
        );
        let bare = (8, None, None, None);
        assert_eq!(
            ScannedMessage::from_row(bare).unwrap(),
            scanned(8, "", false, &[])
        );
        assert!(ScannedMessage::from_row((-1, None, None, None)).is_err());
    }

    #[test]
    fn scan_hides_unread_of_blocked_senders() {
        let messages = [
            scanned(5, "alice", false, &["bob"]),
            scanned(4, "alice", true, &[]),
            scanned(3, "carol", false, &[]),
            scanned(2, "alice", false, &[]),
            scanned(1, "alice", false, &["bob"]),
        ];
        let scan = scan_of(&messages, 1);
        assert_eq!(scan.hidden_unread, 2);
        assert_eq!(scan.hidden_mentions, 1);
        assert_eq!(scan.newest_visible, Some(3));
    }

    #[test]
    fn scan_skips_deleted_and_read() {
        let messages = [
            scanned(3, "carol", true, &[]),
            scanned(2, "alice", false, &["bob"]),
        ];
        let scan = scan_of(&messages, 2);
        assert_eq!(scan.hidden_unread, 0);
        assert_eq!(scan.hidden_mentions, 0);
        assert_eq!(scan.newest_visible, None);
    }

    #[test]
    fn scan_done_after_read_position_and_visible() {
        let visible = scan_of(&[scanned(9, "carol", false, &[])], 0);
        assert!(visible.is_done(4, 3));
        assert!(!visible.is_done(5, 3));
        let hidden = scan_of(&[scanned(9, "alice", false, &[])], 0);
        assert!(!hidden.is_done(1, 3));
    }

    #[test]
    fn scan_subtracts_hidden_counts() {
        let scan = BlockedScan {
            hidden_unread: 2,
            hidden_mentions: 1,
            newest_visible: None,
        };
        assert_eq!(scan.subtract_from(5, 3), (3, 2));
        // Counts read around a concurrent change can be below the scan's.
        assert_eq!(scan.subtract_from(1, 2), (0, 0));
    }

    #[test]
    fn scan_chunks_stay_in_one_partition() {
        assert_eq!(scan_chunk(2_050, 1_051), Some((2, 2_001, 2_050)));
        assert_eq!(scan_chunk(2_000, 1_051), Some((1, 1_901, 2_000)));
        assert_eq!(scan_chunk(1_100, 1_051), Some((1, 1_051, 1_100)));
        assert_eq!(scan_chunk(1_050, 1_051), None);
        assert_eq!(scan_chunk(5, 1), Some((0, 1, 5)));
        assert_eq!(scan_chunk(0, 1), None);
    }

    #[test]
    fn unread_subtracts_deleted() {
        assert_eq!(unread_counts(3, 10, 2, 1), (5, 1));
        assert_eq!(unread_counts(10, 10, 0, 0), (0, 0));
    }

    #[test]
    fn unread_counts_clamp() {
        // Counts read around a concurrent delete can exceed the range.
        assert_eq!(unread_counts(3, 5, 4, 0), (0, 0));
        assert_eq!(unread_counts(0, 5, 3, 4), (2, 2));
    }
}
