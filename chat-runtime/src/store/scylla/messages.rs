//! Appending and reading messages, and client message id dedupe.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};

use super::blocks::{without_blocked_senders, without_blockers};
use super::channels::FAN_OUT;
use super::events::{self, LogEntry, Position, derived_tag};
use super::reactions::{ReactionRow, attach_reactions};
use super::rows::{
    ChannelRecord, MessageRow, StoredMessage, bucket_of, inconsistent, message_from_row,
    seq_from_cql, seq_to_cql,
};
use super::schema::BUCKET_SIZE;
use super::users::contention;
use super::{ScyllaStore, failed};
use crate::store::{
    Appended, Content, MemberRole, Message, Millis, NewEvent, NewMessage, Page, StoreError,
    StoreResult, keys,
};

/// Returns [`NewMessage::request_hash`] in hex, as the claim stores it.
fn request_hash(new: &NewMessage) -> StoreResult<String> {
    let hash = new.request_hash().map_err(failed("hash message content"))?;
    Ok(keys::hex(&hash))
}

/// Attempts at writing a claimed message's rows before the append fails.
const COMPLETE_ATTEMPTS: u32 = 3;

/// Claims of one append before giving up. Each lost claim means another
/// replica stored a message in the same channel meanwhile, so 64 losses in a
/// row take a channel far busier than any conversation.
const MAX_CLAIM_ATTEMPTS: u32 = 64;

/// Waits a little longer after each lost claim, with jitter, so replicas
/// that keep colliding on one channel spread out.
pub(super) async fn back_off(attempt: u32) {
    let ceiling_ms = 2_u64.saturating_pow(attempt.min(6));
    let wait_ms = rand::random_range(0..=ceiling_ms);
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
}

impl ScyllaStore {
    pub(super) async fn append(&self, mut new: NewMessage) -> StoreResult<Appended> {
        keys::check_content(&new.content)?;
        normalise_mentions(&mut new.mentions);
        let hash = request_hash(&new)?;
        // Appends of this process to one channel take turns, so they do not
        // compete with each other for the same number. Other replicas still
        // compete through the lightweight transaction. The membership check
        // runs inside the turn, so a sender removed meanwhile cannot post.
        let _turn = self.channel_lock(&new.channel_id).lock().await;
        let (role, incarnation) = futures_util::try_join!(
            self.member_role(&new.channel_id, &new.sender_id),
            self.active_incarnation_or_none(&new.sender_id),
        )?;
        let (Some(role), Some(incarnation)) = (role, incarnation) else {
            return Err(StoreError::NotFound);
        };
        let Some(mut record) = self.channel(&new.channel_id).await? else {
            return Err(StoreError::NotFound);
        };

        // Tells this call's claims apart from another replica's claim of the
        // same send.
        let claim_id: u64 = rand::random();
        let mut references_checked = false;
        for attempt in 0..=MAX_CLAIM_ATTEMPTS {
            if let Some(newest) = record.newest.clone() {
                if newest.sender_id == new.sender_id
                    && newest.client_id == new.client_id
                    && newest.content_hash == hash
                {
                    // This send already has the newest number: a claim of
                    // this call whose result was lost, or the same send
                    // through another replica a moment earlier.
                    let duplicate = newest.claim_id != claim_id;
                    return self.settle_own_newest(newest, duplicate).await;
                }
                self.ensure_complete(&newest).await?;
            }
            // Every message below the newest is complete now, so its client
            // id is recorded and a retry of it is found here.
            if let Some(entry) = self.client_id_entry(&new.sender_id, &new.client_id).await? {
                return self.stored_duplicate(&new, &hash, entry).await;
            }
            if attempt == MAX_CLAIM_ATTEMPTS {
                break;
            }
            // Checked after the dedupe above, so a retry of a stored message
            // finds it even when its reply target was deleted since, a mute
            // started, or the slow mode interval has not passed.
            if !references_checked {
                self.check_can_write(&new.sender_id, &new.channel_id, new.created_at)
                    .await?;
                if role != MemberRole::Owner {
                    self.check_slow_mode(&record.channel, &new.sender_id, new.created_at)
                        .await?;
                }
                self.check_references(&record, &new).await?;
                references_checked = true;
            }

            // One past the channel's newest events, so `message.new` events
            // follow sequence numbers even when replicas' clocks disagree.
            // The claim stores the position, so it holds only if the claim
            // wins against the newest message read here.
            let after_newest = record
                .newest
                .as_ref()
                .and_then(StoredMessage::last_event_at)
                .map_or(0, |at| at.saturating_add(1));
            let event_at = self
                .event_clock
                .next(after_newest.max(events::micros(new.created_at)));
            let message = StoredMessage {
                channel_id: new.channel_id.clone(),
                seq: record.channel.last_seq + 1,
                sender_id: new.sender_id.clone(),
                sender_incarnation: incarnation,
                client_id: new.client_id.clone(),
                content: Some(new.content.clone()),
                created_at: new.created_at,
                content_hash: hash.clone(),
                channel_activity: record.channel.last_activity.max(new.created_at),
                claim_id,
                reply_to: new.reply_to,
                mentions: new.mentions.clone(),
                event_at: Some(event_at),
                moderation: new.moderation.clone(),
                edited_at: None,
                deleted_at: None,
                edit_count: 0,
            };
            match self.claim(&record, &message).await {
                Ok(true) => {
                    if let Some(at) = message.last_event_at() {
                        self.event_clock.observe(at);
                    }
                    // NOTE: a block written while this message is stored
                    // may miss this read, and the blocker then gets the
                    // message live.
                    let members = self.complete(&message).await?;
                    return Ok(Appended {
                        message: message.into_message(false),
                        duplicate: false,
                        members,
                    });
                }
                Ok(false) => back_off(attempt).await,
                // The claim may or may not have been applied. The serial read
                // below finishes it either way and shows which.
                Err(error) => {
                    tracing::warn!(channel = %new.channel_id, %error, "Claiming a sequence number failed; reading the channel again");
                }
            }
            record = self
                .channel_serial(&new.channel_id)
                .await?
                .ok_or_else(|| inconsistent("channel disappeared while appending"))?;
        }
        Err(contention("claim a sequence number"))
    }

    /// Checks that `reply_to` names a message of the channel that is not
    /// deleted, and that every mentioned user is a member.
    ///
    /// NOTE: a reply target deleted, or a mentioned member removed, between
    /// this check and the claim is stored anyway.
    async fn check_references(&self, record: &ChannelRecord, new: &NewMessage) -> StoreResult<()> {
        if let Some(reply_to) = new.reply_to {
            let target = self.stored_message(record, reply_to).await?;
            let replyable = matches!(target, Some(target) if target.deleted_at.is_none());
            if !replyable {
                return Err(StoreError::Invalid(
                    "reply_to must name an earlier message of the channel that is not deleted",
                ));
            }
        }
        self.check_mentions(&new.channel_id, &new.mentions).await
    }

    /// Returns `Invalid` unless every user in `mentions` is a member.
    pub(super) async fn check_mentions(
        &self,
        channel_id: &str,
        mentions: &[String],
    ) -> StoreResult<()> {
        if mentions.is_empty() {
            return Ok(());
        }
        let members = self.list_member_ids(channel_id).await?;
        if mentions.iter().all(|user| members.contains(user)) {
            Ok(())
        } else {
            Err(StoreError::Invalid(
                "every mentioned user must be a member of the channel",
            ))
        }
    }

    async fn active_incarnation_or_none(&self, id: &str) -> StoreResult<Option<i32>> {
        match self.active_incarnation(id).await {
            Ok(incarnation) => Ok(Some(incarnation)),
            Err(StoreError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Claims `message.seq` for `message` if the channel still ends at the
    /// number `record` shows.
    pub(super) async fn claim(
        &self,
        record: &ChannelRecord,
        message: &StoredMessage,
    ) -> StoreResult<bool> {
        let newest = serde_json::to_string(message).map_err(failed("serialise a message"))?;
        self.conditional(
            &self.statements.claim_seq,
            (
                seq_to_cql(message.seq),
                message.channel_activity,
                newest,
                &message.channel_id,
                seq_to_cql(record.channel.last_seq),
            ),
            "claim a sequence number",
        )
        .await
    }

    /// Finishes a message with this sender, client id and content that
    /// already has the channel's newest number.
    ///
    /// NOTE: a different content under the same client id is not treated as
    /// a conflict here, because a client id forgotten by the purge may be
    /// used again. Two sends of one client id with different content through
    /// two replicas at the same moment can therefore both be stored.
    async fn settle_own_newest(
        &self,
        newest: StoredMessage,
        duplicate: bool,
    ) -> StoreResult<Appended> {
        let members = self.complete(&newest).await?;
        // The row may have been edited or deleted since the claim.
        let stored = self
            .message_row(&newest.channel_id, newest.seq)
            .await?
            .unwrap_or(newest);
        let message = self
            .finish_messages(vec![stored])
            .await?
            .pop()
            .ok_or_else(|| inconsistent("a read message vanished"))?;
        Ok(Appended {
            message,
            duplicate,
            members,
        })
    }

    /// Writes the rows of a message whose number is claimed in the channel
    /// row, its events among them, and returns the members it is for: all
    /// but those who block the sender. The `messages` row goes last, so
    /// once it exists the others do too. Every write here is idempotent, so
    /// a replica that finds the message unfinished may run this again.
    ///
    /// The driver does not retry write timeouts, so each attempt that fails
    /// is repeated here, up to [`COMPLETE_ATTEMPTS`] in all. When every
    /// attempt fails the caller gets `Unavailable` although the message has
    /// its number. A retry with the same client id then finds it, and the
    /// next message in the channel finishes its rows.
    async fn complete(&self, message: &StoredMessage) -> StoreResult<Vec<String>> {
        let mut attempt = 1;
        loop {
            match self.complete_once(message).await {
                Ok(members) => return Ok(members),
                Err(error) if attempt >= COMPLETE_ATTEMPTS => return Err(error),
                Err(error) => {
                    tracing::warn!(channel = %message.channel_id, seq = message.seq, error = %crate::server::error_chain(&error), "Writing a message's rows failed; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn complete_once(&self, message: &StoredMessage) -> StoreResult<Vec<String>> {
        let channel_id = message.channel_id.as_str();
        let (members, blockers) = futures_util::try_join!(
            self.list_member_ids(channel_id),
            self.blocker_set(&message.sender_id),
        )?;
        let hash = decode_hex(&message.content_hash)?;
        let seq = seq_to_cql(message.seq);

        let client_id = self.execute(
            &self.statements.insert_client_id,
            (
                &message.sender_id,
                &message.client_id,
                channel_id,
                seq,
                hash,
                message.created_at,
            ),
            "record a client message id",
        );
        // An automated message was sent on the user's behalf, so it leaves
        // the user's read position where the user left it.
        let automated = matches!(message.content, Some(Content::Automated { .. }));
        let sender_read = async {
            if automated {
                Ok(())
            } else {
                self.write_read_position(channel_id, &message.sender_id, message.seq)
                    .await
            }
        };
        let mentions = self.write_mentions(channel_id, message.seq, &message.mentions, 0);
        // A member who blocks the sender gets the new sequence number but
        // keeps the activity time, so the message does not move the channel
        // up that member's list.
        let activity_writes: Vec<_> = members
            .iter()
            .map(|member| {
                let activity = (!blockers.contains(member)).then_some(message.channel_activity);
                self.write_activity(member, channel_id, message.seq, activity)
            })
            .collect();
        let activity = futures_util::stream::iter(activity_writes)
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<()>>();
        let events = self.log(message_events(message));
        let last_sent = self.write_last_sent(channel_id, &message.sender_id, message.created_at);
        let reports = self.file_claim_flags(message);
        futures_util::try_join!(
            client_id,
            sender_read,
            last_sent,
            mentions,
            activity,
            events,
            reports
        )?;

        let content = message
            .content
            .as_ref()
            .ok_or_else(|| inconsistent("a claimed message has no content"))?;
        let content =
            serde_json::to_string(content).map_err(failed("serialise message content"))?;
        self.execute(
            &self.statements.insert_message,
            (
                bucket_of(message.seq),
                channel_id,
                seq,
                &message.sender_id,
                message.sender_incarnation,
                &message.client_id,
                content,
                message.created_at,
                message.reply_to.map(seq_to_cql),
                &message.mentions,
            ),
            "write a message",
        )
        .await?;
        Ok(without_blockers(members, &blockers))
    }

    /// Completes `newest` unless its `messages` row already exists.
    async fn ensure_complete(&self, newest: &StoredMessage) -> StoreResult<()> {
        if self
            .message_row(&newest.channel_id, newest.seq)
            .await?
            .is_none()
        {
            tracing::info!(channel = %newest.channel_id, seq = newest.seq, "Completing a message whose writer stopped before finishing");
            self.complete(newest).await?;
        }
        Ok(())
    }

    pub(super) async fn message_row(
        &self,
        channel_id: &str,
        seq: u64,
    ) -> StoreResult<Option<StoredMessage>> {
        let row: Option<MessageRow> = self
            .first_row(
                &self.statements.select_message,
                (channel_id, bucket_of(seq), seq_to_cql(seq)),
                "read a message",
            )
            .await?;
        row.map(message_from_row).transpose()
    }

    /// Returns message `seq` of the channel, or `None` when the number was
    /// never assigned. A newest message whose writer has not finished is
    /// completed first, so that edits, deletes and reactions always find
    /// its `messages` row.
    pub(super) async fn stored_message(
        &self,
        record: &ChannelRecord,
        seq: u64,
    ) -> StoreResult<Option<StoredMessage>> {
        if seq == 0 || seq > record.channel.last_seq {
            return Ok(None);
        }
        if let Some(stored) = self.message_row(&record.channel.id, seq).await? {
            return Ok(Some(stored));
        }
        match &record.newest {
            Some(newest) if newest.seq == seq => {
                self.complete(newest).await?;
                Ok(self.message_row(&record.channel.id, seq).await?)
            }
            _ => Err(inconsistent("a message below the newest has no row")),
        }
    }

    /// Runs [`crate::store::Store::find_retry`]. It finds sends whose
    /// client id row is written, so it misses a send still being stored.
    pub(super) async fn stored_retry(&self, new: &NewMessage) -> StoreResult<Option<Appended>> {
        let (role, entry) = futures_util::try_join!(
            self.member_role(&new.channel_id, &new.sender_id),
            self.client_id_entry(&new.sender_id, &new.client_id),
        )?;
        if role.is_none() {
            return Err(StoreError::NotFound);
        }
        match entry {
            Some(entry) => {
                let hash = request_hash(new)?;
                Ok(Some(self.stored_duplicate(new, &hash, entry).await?))
            }
            None => Ok(None),
        }
    }

    async fn client_id_entry(
        &self,
        sender: &str,
        client_id: &str,
    ) -> StoreResult<Option<ClientIdEntry>> {
        let row: Option<ClientIdRow> = self
            .first_row(
                &self.statements.select_client_id,
                (sender, client_id),
                "look up a client message id",
            )
            .await?;
        let Some((channel_id, seq, hash)) = row else {
            return Ok(None);
        };
        Ok(Some(ClientIdEntry {
            channel_id: channel_id.unwrap_or_default(),
            seq: seq_from_cql(seq)?,
            content_hash: keys::hex(&hash.unwrap_or_default()),
        }))
    }

    /// Returns the stored message for a retry whose client id is already
    /// recorded.
    async fn stored_duplicate(
        &self,
        new: &NewMessage,
        hash: &str,
        entry: ClientIdEntry,
    ) -> StoreResult<Appended> {
        if entry.channel_id != new.channel_id || entry.content_hash != hash {
            return Err(StoreError::ClientIdConflict);
        }
        let stored = match self.message_row(&new.channel_id, entry.seq).await? {
            Some(stored) => stored,
            None => {
                // The client id row is written before the message row, so
                // the message may still be the newest one, unfinished.
                let record = self
                    .channel_serial(&new.channel_id)
                    .await?
                    .ok_or_else(|| inconsistent("client id refers to a missing channel"))?;
                match record.newest {
                    Some(newest) if newest.seq == entry.seq => {
                        self.complete(&newest).await?;
                        newest
                    }
                    _ => return Err(inconsistent("client id refers to a missing message")),
                }
            }
        };
        let (members, blockers) = futures_util::try_join!(
            self.list_member_ids(&new.channel_id),
            self.blocker_set(&new.sender_id),
        )?;
        let members = without_blockers(members, &blockers);
        let message = self
            .finish_messages(vec![stored])
            .await?
            .pop()
            .ok_or_else(|| inconsistent("a read message vanished"))?;
        Ok(Appended {
            message,
            duplicate: true,
            members,
        })
    }

    pub(super) async fn history_page(
        &self,
        channel_id: &str,
        user: &str,
        page: Page,
    ) -> StoreResult<Vec<Message>> {
        let (role, record, blocked) = futures_util::try_join!(
            self.member_role(channel_id, user),
            self.channel(channel_id),
            self.blocked_user_set(user),
        )?;
        let (Some(_), Some(record)) = (role, record) else {
            return Err(StoreError::NotFound);
        };
        let last_seq = record.channel.last_seq;
        // Numbers are contiguous, so the range a page covers follows from
        // the page and the channel's newest number alone.
        let (first, last) = match page {
            Page::Latest { limit } => newest_range(last_seq, limit),
            Page::Before { before, limit } => {
                newest_range(before.saturating_sub(1).min(last_seq), limit)
            }
            Page::After { after, limit } => {
                let first = after.saturating_add(1);
                (first, after.saturating_add(u64::from(limit)).min(last_seq))
            }
        };
        if blocked.is_empty() {
            return self.read_range(&record, first, last, Some(user)).await;
        }
        let older = !matches!(page, Page::After { .. });
        let limit = match page {
            Page::Latest { limit } | Page::Before { limit, .. } | Page::After { limit, .. } => {
                limit
            }
        };
        let request = PageRequest {
            first,
            last,
            limit: u64::from(limit),
            older,
        };
        self.page_without_blocked(&record, user, request, &blocked)
            .await
    }

    /// Reads a history page for a viewer who blocks someone. Messages of
    /// blocked users leave gaps, which further ranges in the page's
    /// direction fill, so that the page still has `limit` messages when the
    /// channel has them.
    ///
    /// NOTE: no further range starts after [`HIDDEN_SCAN_MESSAGES`]
    /// messages, so a longer run of hidden messages ends the page early,
    /// and an empty page there looks like the end of the history.
    async fn page_without_blocked(
        &self,
        record: &ChannelRecord,
        viewer: &str,
        request: PageRequest,
        blocked: &BTreeSet<String>,
    ) -> StoreResult<Vec<Message>> {
        let mut page: VecDeque<Message> = VecDeque::new();
        let (mut first, mut last) = (request.first, request.last);
        let mut extra_read = 0;
        while first > 0 && first <= last {
            let messages = self.read_range(record, first, last, Some(viewer)).await?;
            let kept = without_blocked_senders(messages, blocked);
            if request.older {
                for message in kept.into_iter().rev() {
                    page.push_front(message);
                }
            } else {
                page.extend(kept);
            }
            let missing = request.limit.saturating_sub(page.len() as u64);
            if missing == 0 || extra_read >= HIDDEN_SCAN_MESSAGES {
                break;
            }
            (first, last) = next_range(&request, first, last, missing, record.channel.last_seq);
            extra_read += last.saturating_sub(first) + 1;
        }
        let mut page = Vec::from(page);
        trim_page(&mut page, &request);
        Ok(page)
    }

    pub(super) async fn messages_in_range(
        &self,
        channel_id: &str,
        viewer: &str,
        after: u64,
        up_to: u64,
    ) -> StoreResult<Vec<Message>> {
        let (record, blocked) =
            futures_util::try_join!(self.channel(channel_id), self.blocked_user_set(viewer),)?;
        let Some(record) = record else {
            return Ok(Vec::new());
        };
        let last = up_to.min(record.channel.last_seq);
        let messages = self
            .read_range(&record, after.saturating_add(1), last, Some(viewer))
            .await?;
        Ok(without_blocked_senders(messages, &blocked))
    }

    /// Returns the channel if `user` is a member, and `NotFound` otherwise.
    pub(super) async fn member_channel(
        &self,
        channel_id: &str,
        user: &str,
    ) -> StoreResult<ChannelRecord> {
        let (role, record) =
            futures_util::try_join!(self.member_role(channel_id, user), self.channel(channel_id))?;
        match (role, record) {
            (Some(_), Some(record)) => Ok(record),
            _ => Err(StoreError::NotFound),
        }
    }

    /// Reads one message for a member, or `NotFound`.
    pub(super) async fn single_message(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
    ) -> StoreResult<Message> {
        let (record, blocked) = futures_util::try_join!(
            self.member_channel(channel_id, user),
            self.blocked_user_set(user),
        )?;
        if seq == 0 || seq > record.channel.last_seq {
            return Err(StoreError::NotFound);
        }
        let messages = self.read_range(&record, seq, seq, Some(user)).await?;
        // Messages of a blocked user are hidden from the blocker, as in
        // history.
        without_blocked_senders(messages, &blocked)
            .pop()
            .ok_or(StoreError::NotFound)
    }

    /// Reads messages `first..=last`, oldest first, one bucket after
    /// another, with their reactions and the `own_reactions` of `viewer`.
    /// The newest message may still lack its `messages` row while its
    /// writer finishes, and is then taken from the channel row.
    pub(super) async fn read_range(
        &self,
        record: &ChannelRecord,
        first: u64,
        last: u64,
        viewer: Option<&str>,
    ) -> StoreResult<Vec<Message>> {
        if first == 0 || first > last {
            return Ok(Vec::new());
        }
        let channel_id = record.channel.id.as_str();
        let mut stored = Vec::with_capacity(usize::try_from(last - first + 1).unwrap_or(0));
        let mut reactions = Vec::new();
        for (bucket, bucket_first, bucket_last) in bucket_ranges(first, last) {
            let limit = i32::try_from(bucket_last - bucket_first + 1).unwrap_or(i32::MAX);
            let range = (
                channel_id,
                bucket,
                seq_to_cql(bucket_first),
                seq_to_cql(bucket_last),
            );
            // Paged, because a thousand large custom messages can pass the
            // size ScyllaDB accepts in one unpaged response.
            let (rows, reaction_rows) = futures_util::try_join!(
                self.all_rows::<MessageRow>(
                    &self.statements.select_messages_oldest_first,
                    (range.0, range.1, range.2, range.3, limit),
                    "read messages",
                ),
                self.all_rows::<ReactionRow>(
                    &self.statements.select_reactions,
                    range,
                    "read reactions",
                ),
            )?;
            for row in rows {
                stored.push(message_from_row(row)?);
            }
            reactions.extend(reaction_rows);
        }

        if stored.last().map(|message| message.seq) != Some(last)
            && let Some(newest) = &record.newest
            && newest.seq == last
        {
            stored.push(newest.clone());
        }
        let expected = last - first + 1;
        if stored.len() as u64 != expected {
            tracing::warn!(
                channel = channel_id,
                first,
                last,
                found = stored.len(),
                "Messages are missing from a range of contiguous numbers"
            );
        }
        let mut messages = self.finish_messages(stored).await?;
        attach_reactions(&mut messages, reactions, viewer)?;
        Ok(messages)
    }

    /// Turns stored messages into API messages, looking up once per sender
    /// whether the sender was deleted since.
    pub(super) async fn finish_messages(
        &self,
        stored: Vec<StoredMessage>,
    ) -> StoreResult<Vec<Message>> {
        let mut senders: Vec<&str> = stored
            .iter()
            .map(|message| message.sender_id.as_str())
            .collect();
        senders.sort_unstable();
        senders.dedup();
        let lookups: Vec<_> = senders
            .into_iter()
            .map(|sender| async move {
                Ok::<_, StoreError>((sender.to_owned(), self.user(sender).await?))
            })
            .collect();
        let users = futures_util::stream::iter(lookups)
            .buffer_unordered(FAN_OUT)
            .try_collect::<HashMap<_, _>>()
            .await?;

        Ok(stored
            .into_iter()
            .map(|message| {
                // The sender is deleted now, or the id was deleted and
                // created again since the message was written.
                let deleted = match users.get(&message.sender_id) {
                    Some(Some(record)) => {
                        record.user.deleted || record.incarnation != message.sender_incarnation
                    }
                    _ => true,
                };
                message.into_message(deleted)
            })
            .collect())
    }

    /// Deletes client ids recorded before `older_than`.
    ///
    /// NOTE: `client_ids` has no index by age, so this reads the whole
    /// table (about one row per message of the retention window) and deletes
    /// the old rows one by one. It runs as a background task once an hour.
    pub(super) async fn delete_client_ids_before(&self, older_than: Millis) -> StoreResult<u64> {
        let rows: Vec<(String, String, Option<i64>)> = self
            .all_rows(
                &self.statements.scan_client_ids,
                (),
                "read client message ids",
            )
            .await?;
        let old: Vec<(String, String)> = rows
            .into_iter()
            .filter(|(_, _, created_at)| created_at.unwrap_or(0) < older_than)
            .map(|(sender, client_id, _)| (sender, client_id))
            .collect();
        let deletes: Vec<_> = old
            .iter()
            .map(|(sender, client_id)| {
                self.execute(
                    &self.statements.delete_client_id,
                    (sender, client_id),
                    "delete a client message id",
                )
            })
            .collect();
        futures_util::stream::iter(deletes)
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(old.len() as u64)
    }
}

/// Builds the events of an append: `message.new` and the moderation
/// decisions. Positions come from the claim and tags from the message, so
/// every replica that completes the message writes the same rows and a
/// duplicate send adds none. Claims from before the event log have no
/// position and log nothing.
///
/// NOTE: a message whose writer stopped after the claim gets its events
/// only when the next append, edit, delete or retry completes it. Readers
/// that passed its position meanwhile never see them.
fn message_events(message: &StoredMessage) -> Vec<LogEntry> {
    let Some(at) = message.event_at else {
        return Vec::new();
    };
    let channel_id = message.channel_id.as_str();
    let seq = message.seq.to_string();
    let new = NewEvent::message_new(&message.clone().into_message(false));
    let mut entries = vec![LogEntry {
        position: Position {
            at,
            tag: derived_tag(&["message.new", channel_id, &seq]),
        },
        event: new,
    }];
    for (index, record) in message.moderation.iter().enumerate() {
        let offset = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
        let event = NewEvent::moderation(record, Some(message.seq), message.created_at);
        entries.push(LogEntry {
            position: Position {
                at: at.saturating_add(offset),
                tag: derived_tag(&["moderation.decision", channel_id, &seq, &index.to_string()]),
            },
            event,
        });
    }
    entries
}

/// `channel_id, seq, content_hash` of a `client_ids` row.
type ClientIdRow = (Option<String>, Option<i64>, Option<Vec<u8>>);

/// A recorded client message id.
struct ClientIdEntry {
    channel_id: String,
    seq: u64,
    content_hash: String,
}

/// Sorts `mentions` and drops repeats, as the stored set has them.
pub(super) fn normalise_mentions(mentions: &mut Vec<String>) {
    mentions.sort_unstable();
    mentions.dedup();
}

/// Splits `first..=last` into `(bucket, first, last)` per `messages`
/// partition, oldest first.
pub(super) fn bucket_ranges(first: u64, last: u64) -> Vec<(i64, u64, u64)> {
    if first == 0 || first > last {
        return Vec::new();
    }
    (bucket_of(first)..=bucket_of(last))
        .map(|bucket| {
            let index = u64::try_from(bucket).unwrap_or(0);
            let bucket_first = first.max(index * BUCKET_SIZE + 1);
            let bucket_last = last.min(index.saturating_add(1).saturating_mul(BUCKET_SIZE));
            (bucket, bucket_first, bucket_last)
        })
        .collect()
}

/// Messages past its first range that a history page starts reading, at
/// most, to fill gaps that blocked senders leave.
const HIDDEN_SCAN_MESSAGES: u64 = 1_000;

/// Messages that each further range of such a page reads at least, so a
/// page with a few gaps needs few requests.
const HIDDEN_SCAN_STEP: u64 = 100;

/// A history page to fill: its first range, its size, and whether it grows
/// towards older messages (`Latest`, `Before`) or newer ones (`After`).
struct PageRequest {
    first: u64,
    last: u64,
    limit: u64,
    older: bool,
}

/// Returns the range next to `first..=last` in the page's direction, with
/// room for `missing` messages and at least [`HIDDEN_SCAN_STEP`]. The
/// range is empty when the channel has no more messages that way.
fn next_range(
    request: &PageRequest,
    first: u64,
    last: u64,
    missing: u64,
    last_seq: u64,
) -> (u64, u64) {
    let size = missing.max(HIDDEN_SCAN_STEP);
    if request.older {
        let top = first.saturating_sub(1);
        if top == 0 {
            return (1, 0);
        }
        (top.saturating_sub(size - 1).max(1), top)
    } else {
        let bottom = last.saturating_add(1);
        (bottom, last.saturating_add(size).min(last_seq))
    }
}

/// Cuts a page that grew past its limit, keeping the messages next to
/// where the page starts: the newest for older pages, the oldest for newer
/// ones.
fn trim_page(page: &mut Vec<Message>, request: &PageRequest) {
    let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
    if page.len() <= limit {
        return;
    }
    if request.older {
        page.drain(..page.len() - limit);
    } else {
        page.truncate(limit);
    }
}

/// Returns the range `(first, last)` of the newest `limit` numbers up to
/// `last`. The range is empty when `first > last`.
fn newest_range(last: u64, limit: u32) -> (u64, u64) {
    if limit == 0 || last == 0 {
        return (1, 0);
    }
    let first = last.saturating_sub(u64::from(limit) - 1).max(1);
    (first, last)
}

fn decode_hex(text: &str) -> StoreResult<Vec<u8>> {
    let invalid = || inconsistent("stored content hash is not hex");
    if !text.len().is_multiple_of(2) {
        return Err(invalid());
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).map_err(|_| invalid())?;
            u8::from_str_radix(digits, 16).map_err(|_| invalid())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_range_covers_limit_or_all() {
        assert_eq!(newest_range(10, 3), (8, 10));
        assert_eq!(newest_range(10, 10), (1, 10));
        assert_eq!(newest_range(10, 100), (1, 10));
        assert_eq!(newest_range(1, 1), (1, 1));
        let (first, last) = newest_range(10, 0);
        assert!(first > last);
        let (first, last) = newest_range(0, 5);
        assert!(first > last);
        assert_eq!(newest_range(u64::MAX, u32::MAX).1, u64::MAX);
    }

    fn request(first: u64, last: u64, limit: u64, older: bool) -> PageRequest {
        PageRequest {
            first,
            last,
            limit,
            older,
        }
    }

    #[test]
    fn next_range_grows_older_pages_down() {
        let older = request(91, 100, 10, true);
        assert_eq!(next_range(&older, 91, 100, 3, 100), (1, 90));
        assert_eq!(next_range(&older, 500, 510, 3, 510), (400, 499));
        assert_eq!(next_range(&older, 500, 510, 250, 510), (250, 499));
        let (first, last) = next_range(&older, 1, 10, 3, 10);
        assert!(first > last);
    }

    #[test]
    fn next_range_grows_newer_pages_up() {
        let newer = request(11, 20, 10, false);
        assert_eq!(next_range(&newer, 11, 20, 3, 500), (21, 120));
        assert_eq!(next_range(&newer, 11, 20, 3, 50), (21, 50));
        let (first, last) = next_range(&newer, 11, 20, 3, 20);
        assert!(first > last);
    }

    fn numbered(seqs: std::ops::RangeInclusive<u64>) -> Vec<Message> {
        seqs.map(|seq| {
            StoredMessage {
                channel_id: "g_1".to_owned(),
                seq,
                sender_id: "alice".to_owned(),
                sender_incarnation: 1,
                client_id: format!("c{seq}"),
                content: None,
                created_at: 0,
                content_hash: String::new(),
                channel_activity: 0,
                claim_id: 0,
                reply_to: None,
                mentions: Vec::new(),
                event_at: None,
                moderation: Vec::new(),
                edited_at: None,
                deleted_at: None,
                edit_count: 0,
            }
            .into_message(false)
        })
        .collect()
    }

    fn page_seqs(page: &[Message]) -> Vec<u64> {
        page.iter().map(|message| message.seq).collect()
    }

    #[test]
    fn trim_keeps_messages_next_to_page_start() {
        let mut older = numbered(1..=5);
        trim_page(&mut older, &request(4, 5, 3, true));
        assert_eq!(page_seqs(&older), [3, 4, 5]);

        let mut newer = numbered(1..=5);
        trim_page(&mut newer, &request(1, 2, 3, false));
        assert_eq!(page_seqs(&newer), [1, 2, 3]);

        let mut short = numbered(1..=2);
        trim_page(&mut short, &request(1, 2, 3, true));
        assert_eq!(page_seqs(&short), [1, 2]);
    }

    #[test]
    fn bucket_ranges_split_at_partitions() {
        assert_eq!(bucket_ranges(1, 5), [(0, 1, 5)]);
        assert_eq!(
            bucket_ranges(998, 1_003),
            [(0, 998, 1_000), (1, 1_001, 1_003)]
        );
        assert_eq!(
            bucket_ranges(1_000, 3_001),
            [
                (0, 1_000, 1_000),
                (1, 1_001, 2_000),
                (2, 2_001, 3_000),
                (3, 3_001, 3_001)
            ]
        );
        assert!(bucket_ranges(5, 4).is_empty());
        assert!(bucket_ranges(0, 4).is_empty());
    }

    #[test]
    fn mentions_are_sorted_without_repeats() {
        let mut mentions = vec!["cu".to_owned(), "an".to_owned(), "cu".to_owned()];
        normalise_mentions(&mut mentions);
        assert_eq!(mentions, ["an", "cu"]);
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0_u8, 1, 0xab, 0xff];
        assert_eq!(keys::hex(&bytes), "0001abff");
        assert_eq!(decode_hex("0001abff").unwrap(), bytes);
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
        assert!(decode_hex("éa").is_err());
    }
}
