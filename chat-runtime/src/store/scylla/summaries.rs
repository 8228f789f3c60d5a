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
use super::rows::{ChannelRecord, inconsistent, seq_from_cql, seq_to_cql};
use crate::store::{ChannelSummary, Message, Millis, StoreResult};

/// Rows of `deleted_messages` that one search for the newest message left
/// reads, newest first.
const DELETED_SCAN_ROWS: i32 = 1_000;

/// Messages that one search reads and finds deleted before it gives up.
/// One is enough unless `deleted_messages` lags the `messages` rows or
/// more than [`DELETED_SCAN_ROWS`] newest messages are deleted.
const PREVIEW_CANDIDATES: usize = 4;

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
        let mut entries = self.user_channel_entries(user).await?;
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
                self.summary(user, record, read_seq, last_activity).await
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
    ) -> StoreResult<ChannelSummary> {
        let (last_message, (unread, unread_mentions)) = futures_util::try_join!(
            self.newest_kept_message(&record, user),
            self.unread(&record, user, read_seq),
        )?;
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
