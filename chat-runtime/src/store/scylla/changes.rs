//! Edits and deletes of messages, and the `mentions` rows that follow them.
//!
//! Both are lightweight transactions on the `messages` row, conditioned on
//! the row not being deleted and on its `edit_count`. So an edit never
//! applies to a deleted message, two edits never interleave, and each
//! applied change reads exactly which mentions it replaced.
//!
//! `mentions` rows are written after the transaction with `USING TIMESTAMP`
//! equal to the message's edit count plus one, so the rows of the newest
//! edit win in whatever order the writes of two edits arrive. A delete
//! removes them with a clock timestamp, far above any edit count, so they
//! never come back.

use futures_util::{StreamExt as _, TryStreamExt as _};

use super::ScyllaStore;
use super::blocks::without_blockers;
use super::channels::FAN_OUT;
use super::messages::{back_off, normalise_mentions};
use super::rows::{ChannelRecord, StoredMessage, bucket_of, inconsistent, seq_to_cql};
use super::users::contention;
use crate::store::{
    Deleter, MessageChange, MessageEdit, Millis, NewEvent, StoreError, StoreResult, keys,
};

/// Transaction attempts of one edit or delete. Another attempt is needed
/// only when a concurrent edit of the same message won.
const MAX_CHANGE_ATTEMPTS: u32 = 16;

/// Write timestamp of the `mentions` rows of a message edited `edit_count`
/// times. Appends write timestamp 1.
fn mention_timestamp(edit_count: i32) -> i64 {
    i64::from(edit_count) + 1
}

/// Mentions in `old` that are not in `new`. Both are sorted.
fn removed_mentions<'a>(old: &'a [String], new: &[String]) -> Vec<&'a String> {
    old.iter()
        .filter(|user| new.binary_search(user).is_err())
        .collect()
}

impl ScyllaStore {
    pub(super) async fn edit(&self, mut edit: MessageEdit) -> StoreResult<MessageChange> {
        keys::check_content(&edit.content)?;
        if let Some(mentions) = &mut edit.mentions {
            normalise_mentions(mentions);
        }
        let record = self.member_channel(&edit.channel_id, &edit.editor).await?;
        let mut stored = self
            .stored_message(&record, edit.seq)
            .await?
            .ok_or(StoreError::NotFound)?;
        if stored.sender_id != edit.editor {
            return Err(StoreError::Forbidden("only the sender can edit a message"));
        }
        self.check_can_write(&edit.editor, &edit.channel_id, edit.edited_at)
            .await?;
        if let Some(mentions) = &edit.mentions {
            self.check_mentions(&edit.channel_id, mentions).await?;
        }

        // The sender of a row never changes, so the retries below need not
        // check it again.
        for attempt in 0..MAX_CHANGE_ATTEMPTS {
            if stored.deleted_at.is_some() {
                return Err(StoreError::Invalid("a deleted message cannot be edited"));
            }
            let mentions = edit
                .mentions
                .clone()
                .unwrap_or_else(|| stored.mentions.clone());
            if self.apply_edit(&stored, &edit, &mentions).await? {
                let edit_count = stored.edit_count + 1;
                self.replace_mentions(&stored, &mentions, edit_count)
                    .await?;
                let change = self
                    .message_change(&record, edit.seq, true, &edit.editor)
                    .await?;
                self.log_edit(&change, &edit, mentions, edit_count).await?;
                return Ok(change);
            }
            back_off(attempt).await;
            stored = self.message_row_serial(&record, edit.seq).await?;
        }
        Err(contention("edit a message"))
    }

    /// Logs an applied edit and its moderation decisions, and files the
    /// reports of its `flag` decisions. The message in the event has the
    /// content this edit wrote, even when a later edit already changed the
    /// row that `change` was read from. Tags follow from the edit count,
    /// which names the edit.
    ///
    /// NOTE: a replica that stops between the transaction and these writes
    /// loses the events and reports.
    async fn log_edit(
        &self,
        change: &MessageChange,
        edit: &MessageEdit,
        mentions: Vec<String>,
        edit_count: i32,
    ) -> StoreResult<()> {
        let mut message = change.message.clone();
        message.content = Some(edit.content.clone());
        message.mentions = mentions;
        message.edited_at = Some(edit.edited_at);
        message.deleted_at = None;
        let (seq, count) = (edit.seq.to_string(), edit_count.to_string());
        let channel_id = edit.channel_id.as_str();
        let mut entries = vec![self.place_derived(
            NewEvent::message_edited(&message, edit.edited_at),
            &["message.edited", channel_id, &seq, &count],
        )];
        for (index, record) in edit.moderation.iter().enumerate() {
            let event = NewEvent::moderation(record, Some(edit.seq), edit.edited_at);
            let index = index.to_string();
            entries.push(self.place_derived(
                event,
                &["moderation.decision", channel_id, &seq, &count, &index],
            ));
        }
        self.log(entries).await?;
        self.file_edit_flags(&message, &edit.moderation, edit_count, edit.edited_at)
            .await
    }

    /// Runs the edit transaction, and returns false when the row changed
    /// since `stored` was read.
    async fn apply_edit(
        &self,
        stored: &StoredMessage,
        edit: &MessageEdit,
        mentions: &[String],
    ) -> StoreResult<bool> {
        let content = serde_json::to_string(&edit.content)
            .map_err(super::failed("serialise message content"))?;
        let (bucket, seq) = (bucket_of(stored.seq), seq_to_cql(stored.seq));
        let set = (content, mentions, edit.edited_at, stored.edit_count + 1);
        let key = (&stored.channel_id, bucket, seq, &stored.sender_id);
        let operation = "edit a message";
        if stored.edit_count == 0 {
            self.conditional(
                &self.statements.edit_unedited_message,
                (set.0, set.1, set.2, set.3, key.0, key.1, key.2, key.3),
                operation,
            )
            .await
        } else {
            self.conditional(
                &self.statements.edit_edited_message,
                (
                    set.0,
                    set.1,
                    set.2,
                    set.3,
                    key.0,
                    key.1,
                    key.2,
                    key.3,
                    stored.edit_count,
                ),
                operation,
            )
            .await
        }
    }

    /// Writes the `mentions` rows of an applied edit: every mention it has,
    /// and removals of those it dropped, all at the edit's timestamp.
    ///
    /// NOTE: a replica that stops between the transaction and these writes
    /// leaves the previous mention rows, and so unread mention counts, in
    /// place until the next edit or delete of the message.
    async fn replace_mentions(
        &self,
        before: &StoredMessage,
        mentions: &[String],
        edit_count: i32,
    ) -> StoreResult<()> {
        let channel_id = before.channel_id.as_str();
        let timestamp = mention_timestamp(edit_count);
        let seq = seq_to_cql(before.seq);
        let removals: Vec<_> = removed_mentions(&before.mentions, mentions)
            .into_iter()
            .map(|user| {
                self.execute(
                    &self.statements.remove_mention_at,
                    (timestamp, channel_id, user, seq),
                    "remove a mention",
                )
            })
            .collect();
        futures_util::try_join!(
            self.write_mentions(channel_id, before.seq, mentions, edit_count),
            futures_util::stream::iter(removals)
                .buffer_unordered(FAN_OUT)
                .try_collect::<Vec<()>>(),
        )?;
        Ok(())
    }

    /// Writes a `mentions` row per mentioned user of a message edited
    /// `edit_count` times (0 for an append).
    pub(super) async fn write_mentions(
        &self,
        channel_id: &str,
        seq: u64,
        mentions: &[String],
        edit_count: i32,
    ) -> StoreResult<()> {
        let timestamp = mention_timestamp(edit_count);
        let seq = seq_to_cql(seq);
        let writes: Vec<_> = mentions
            .iter()
            .map(|user| {
                self.execute(
                    &self.statements.write_mention,
                    (channel_id, user, seq, timestamp),
                    "write a mention",
                )
            })
            .collect();
        futures_util::stream::iter(writes)
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    pub(super) async fn delete(
        &self,
        channel_id: &str,
        seq: u64,
        deleter: Deleter<'_>,
        now: Millis,
    ) -> StoreResult<MessageChange> {
        let record = match deleter {
            Deleter::Member(user) => self.member_channel(channel_id, user).await?,
            Deleter::Server => self
                .channel(channel_id)
                .await?
                .ok_or(StoreError::NotFound)?,
        };
        let mut stored = self
            .stored_message(&record, seq)
            .await?
            .ok_or(StoreError::NotFound)?;
        if let Deleter::Member(user) = deleter
            && stored.sender_id != user
        {
            return Err(StoreError::Forbidden(
                "a member can delete only its own messages",
            ));
        }

        for attempt in 0..MAX_CHANGE_ATTEMPTS {
            if let Some(deleted_at) = stored.deleted_at {
                // A previous call may have stopped before its clean-up, so
                // it runs again; every step of it is idempotent.
                self.clean_up_deleted(&stored, deleted_at).await?;
                return self
                    .message_change(&record, seq, false, &stored.sender_id)
                    .await;
            }
            if self.apply_delete(&stored, now).await? {
                self.clean_up_deleted(&stored, now).await?;
                // A message is deleted once, so the tag follows from it.
                // NOTE: a replica that stops between the transaction and
                // this write loses the event. A retry finds the message
                // deleted and, like the embedded store, logs nothing.
                let deleted_by = match deleter {
                    Deleter::Member(user) => Some(user),
                    Deleter::Server => None,
                };
                let event = NewEvent::message_deleted(channel_id, seq, deleted_by, now);
                let seq_text = seq.to_string();
                let entry = self.place_derived(event, &["message.deleted", channel_id, &seq_text]);
                self.log(vec![entry]).await?;
                return self
                    .message_change(&record, seq, true, &stored.sender_id)
                    .await;
            }
            back_off(attempt).await;
            stored = self.message_row_serial(&record, seq).await?;
        }
        Err(contention("delete a message"))
    }

    /// Runs the delete transaction, which erases the content and sets
    /// `deleted_at`, and returns false when the row changed since `stored`
    /// was read. The mentions stay until the clean-up has removed their
    /// rows, so that a retry can find the rows to remove.
    async fn apply_delete(&self, stored: &StoredMessage, now: Millis) -> StoreResult<bool> {
        let (bucket, seq) = (bucket_of(stored.seq), seq_to_cql(stored.seq));
        let channel_id = stored.channel_id.as_str();
        let sender = stored.sender_id.as_str();
        let operation = "delete a message";
        if stored.edit_count == 0 {
            self.conditional(
                &self.statements.delete_unedited_message,
                (now, channel_id, bucket, seq, sender),
                operation,
            )
            .await
        } else {
            self.conditional(
                &self.statements.delete_edited_message,
                (now, channel_id, bucket, seq, sender, stored.edit_count),
                operation,
            )
            .await
        }
    }

    /// Records a deleted message for unread counts and the channel list,
    /// and removes its mentions and reactions.
    ///
    /// NOTE: until this finishes, the message still counts as unread and
    /// its mentions as unread mentions. A replica that stops before the end
    /// leaves that state until the message is deleted again.
    async fn clean_up_deleted(
        &self,
        stored: &StoredMessage,
        deleted_at: Millis,
    ) -> StoreResult<()> {
        let channel_id = stored.channel_id.as_str();
        let seq = seq_to_cql(stored.seq);
        let mention_deletes: Vec<_> = stored
            .mentions
            .iter()
            .map(|user| {
                self.execute(
                    &self.statements.delete_mention,
                    (channel_id, user, seq),
                    "delete a mention",
                )
            })
            .collect();
        futures_util::try_join!(
            self.execute(
                &self.statements.insert_deleted,
                (channel_id, seq, deleted_at),
                "record a deleted message",
            ),
            self.delete_reactions(channel_id, stored.seq),
            futures_util::stream::iter(mention_deletes)
                .buffer_unordered(FAN_OUT)
                .try_collect::<Vec<()>>(),
        )?;
        if !stored.mentions.is_empty() {
            self.execute(
                &self.statements.clear_mentions,
                (channel_id, bucket_of(stored.seq), seq),
                "erase a deleted message's mentions",
            )
            .await?;
        }
        Ok(())
    }

    /// Reads a message row at serial consistency, after a transaction on it
    /// was not applied.
    async fn message_row_serial(
        &self,
        record: &ChannelRecord,
        seq: u64,
    ) -> StoreResult<StoredMessage> {
        let row = self
            .first_row(
                &self.statements.select_message_serial,
                (&record.channel.id, bucket_of(seq), seq_to_cql(seq)),
                "read a message at serial consistency",
            )
            .await?;
        let Some(row) = row else {
            return Err(inconsistent("a message row vanished"));
        };
        super::rows::message_from_row(row)
    }

    /// Builds the result of an edit, a delete or a reaction change: the
    /// message as it is now, with reaction counts but no `own_reactions`,
    /// and the members who receive what `actor` did, which leaves out those
    /// who block `actor` or, for another user's message, its sender.
    pub(super) async fn message_change(
        &self,
        record: &ChannelRecord,
        seq: u64,
        changed: bool,
        actor: &str,
    ) -> StoreResult<MessageChange> {
        let (mut messages, members, blockers) = futures_util::try_join!(
            self.read_range(record, seq, seq, None),
            self.list_member_ids(&record.channel.id),
            self.blocker_set(actor),
        )?;
        let mut members = without_blockers(members, &blockers);
        let message = messages
            .pop()
            .ok_or_else(|| inconsistent("a changed message vanished"))?;
        // A reaction to another user's message is not for those who block
        // that user either, since they do not see the message.
        if message.sender_id != actor {
            let sender_blockers = self.blocker_set(&message.sender_id).await?;
            members = without_blockers(members, &sender_blockers);
        }
        Ok(MessageChange {
            message,
            members,
            changed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn removed_mentions_are_old_minus_new() {
        let old = users(&["an", "bo", "cu"]);
        let new = users(&["bo", "do"]);
        let removed: Vec<&str> = removed_mentions(&old, &new)
            .into_iter()
            .map(String::as_str)
            .collect();
        assert_eq!(removed, ["an", "cu"]);
        assert!(removed_mentions(&old, &old).is_empty());
        assert!(removed_mentions(&[], &new).is_empty());
    }

    #[test]
    fn mention_timestamps_grow_with_edits() {
        assert_eq!(mention_timestamp(0), 1);
        assert!(mention_timestamp(1) > mention_timestamp(0));
        assert_eq!(mention_timestamp(i32::MAX), i64::from(i32::MAX) + 1);
    }
}
