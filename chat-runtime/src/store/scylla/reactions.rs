//! Reactions: one `message_reactions` row per user and message, containing
//! the user's reactions as a set. A change is a compare-and-set of that row,
//! so the per-user limit is kept and `changed` is exact under concurrent
//! requests from several replicas. Counts are computed from the rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::ScyllaStore;
use super::messages::back_off;
use super::rows::{bucket_of, seq_from_cql, seq_to_cql};
use super::users::contention;
use crate::store::{
    MAX_REACTIONS_PER_USER, Message, MessageChange, Millis, NewEvent, StoreError, StoreResult,
};

/// `seq, user_id, reactions` of a `message_reactions` row.
pub(super) type ReactionRow = (i64, String, Option<BTreeSet<String>>);

/// Compare-and-set attempts of one reaction change. Another attempt is
/// needed only when the same user changed reactions on the same message
/// at the same moment through another replica.
const MAX_REACTION_ATTEMPTS: u32 = 16;

/// A user's reactions on one message after a requested change.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReactionUpdate {
    /// The user already has (or, for a removal, never had) the reaction.
    Unchanged,
    /// The reaction would pass [`MAX_REACTIONS_PER_USER`].
    OverLimit,
    Set(BTreeSet<String>),
}

/// Applies adding (`add`) or removing `reaction` to the user's current
/// reactions. An empty result set means the row is deleted.
pub(super) fn update_reactions(
    current: &BTreeSet<String>,
    reaction: &str,
    add: bool,
) -> ReactionUpdate {
    if add == current.contains(reaction) {
        return ReactionUpdate::Unchanged;
    }
    let mut next = current.clone();
    if add {
        if current.len() >= MAX_REACTIONS_PER_USER {
            return ReactionUpdate::OverLimit;
        }
        next.insert(reaction.to_owned());
    } else {
        next.remove(reaction);
    }
    ReactionUpdate::Set(next)
}

/// Fills `reactions` and, for `viewer`, `own_reactions` of `messages` from
/// reaction rows of the same range. Deleted messages keep none, because a
/// reaction that raced the delete may have left a row behind.
pub(super) fn attach_reactions(
    messages: &mut [Message],
    rows: Vec<ReactionRow>,
    viewer: Option<&str>,
) -> StoreResult<()> {
    let positions: HashMap<u64, usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, message)| message.deleted_at.is_none())
        .map(|(index, message)| (message.seq, index))
        .collect();
    for (seq, user, reactions) in rows {
        let seq = seq_from_cql(Some(seq))?;
        let Some(&index) = positions.get(&seq) else {
            continue;
        };
        let message = &mut messages[index];
        let reactions = reactions.unwrap_or_default();
        if viewer == Some(user.as_str()) {
            message.own_reactions = reactions.iter().cloned().collect();
        }
        for reaction in reactions {
            *message.reactions.entry(reaction).or_insert(0) += 1;
        }
    }
    Ok(())
}

/// Groups reaction rows of one message into sorted users per reaction.
pub(super) fn users_per_reaction(rows: Vec<ReactionRow>) -> BTreeMap<String, Vec<String>> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, user, reactions) in rows {
        for reaction in reactions.unwrap_or_default() {
            users.entry(reaction).or_default().push(user.clone());
        }
    }
    for list in users.values_mut() {
        list.sort_unstable();
        list.dedup();
    }
    users
}

impl ScyllaStore {
    pub(super) async fn change_reaction(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
        reaction: &str,
        add: bool,
        now: Millis,
    ) -> StoreResult<MessageChange> {
        let record = self.member_channel(channel_id, user).await?;
        let stored = self
            .stored_message(&record, seq)
            .await?
            .ok_or(StoreError::NotFound)?;
        if stored.deleted_at.is_some() {
            return Err(StoreError::Invalid(
                "the message is deleted, so its reactions cannot change",
            ));
        }

        let mut changed = None;
        for attempt in 0..MAX_REACTION_ATTEMPTS {
            let current = self.user_reactions(channel_id, seq, user).await?;
            let update =
                update_reactions(current.as_ref().unwrap_or(&BTreeSet::new()), reaction, add);
            let next = match update {
                ReactionUpdate::Unchanged => {
                    changed = Some(false);
                    break;
                }
                ReactionUpdate::OverLimit => {
                    return Err(StoreError::Invalid(
                        "the user has the maximum number of different reactions on this message",
                    ));
                }
                ReactionUpdate::Set(next) => next,
            };
            if self
                .swap_user_reactions(channel_id, seq, user, current.as_ref(), &next, now)
                .await?
            {
                changed = Some(true);
                break;
            }
            back_off(attempt).await;
        }
        let Some(changed) = changed else {
            return Err(contention("change a reaction"));
        };
        // The same reaction can come and go many times, so nothing names
        // one change and the event gets a random tag.
        // NOTE: a replica that stops between the transaction and this write
        // loses the event.
        if changed {
            let event = NewEvent::reaction(channel_id, seq, user, reaction, add, now);
            self.log(vec![self.place(event)]).await?;
        }
        self.message_change(&record, seq, changed, user).await
    }

    /// Reads the user's reactions on a message at serial consistency, since
    /// the compare-and-set that follows depends on them. `None` when the
    /// user has none.
    async fn user_reactions(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
    ) -> StoreResult<Option<BTreeSet<String>>> {
        let row: Option<(Option<BTreeSet<String>>,)> = self
            .first_row(
                &self.statements.select_user_reactions_serial,
                (channel_id, bucket_of(seq), seq_to_cql(seq), user),
                "read a user's reactions",
            )
            .await?;
        Ok(row.map(|(reactions,)| reactions.unwrap_or_default()))
    }

    /// Replaces the user's reactions `current` with `next`, and returns
    /// false when another write changed them first.
    async fn swap_user_reactions(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
        current: Option<&BTreeSet<String>>,
        next: &BTreeSet<String>,
        now: Millis,
    ) -> StoreResult<bool> {
        let (bucket, seq) = (bucket_of(seq), seq_to_cql(seq));
        let operation = "change a user's reactions";
        match current {
            None => {
                self.conditional(
                    &self.statements.insert_user_reactions,
                    (channel_id, bucket, seq, user, next, now),
                    operation,
                )
                .await
            }
            Some(current) if next.is_empty() => {
                self.conditional(
                    &self.statements.delete_user_reactions,
                    (channel_id, bucket, seq, user, current),
                    operation,
                )
                .await
            }
            Some(current) => {
                self.conditional(
                    &self.statements.update_user_reactions,
                    (next, now, channel_id, bucket, seq, user, current),
                    operation,
                )
                .await
            }
        }
    }

    /// Users per reaction of a message, for a member.
    pub(super) async fn reaction_users_of(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
    ) -> StoreResult<BTreeMap<String, Vec<String>>> {
        let record = self.member_channel(channel_id, user).await?;
        let stored = self
            .stored_message(&record, seq)
            .await?
            .ok_or(StoreError::NotFound)?;
        if stored.deleted_at.is_some() {
            return Ok(BTreeMap::new());
        }
        let cql_seq = seq_to_cql(seq);
        let rows: Vec<ReactionRow> = self
            .all_rows(
                &self.statements.select_reactions,
                (channel_id, bucket_of(seq), cql_seq, cql_seq),
                "read reactions",
            )
            .await?;
        Ok(users_per_reaction(rows))
    }

    /// Removes every reaction row of a deleted message.
    pub(super) async fn delete_reactions(&self, channel_id: &str, seq: u64) -> StoreResult<()> {
        self.execute(
            &self.statements.delete_message_reactions,
            (channel_id, bucket_of(seq), seq_to_cql(seq)),
            "delete a message's reactions",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    fn message(seq: u64, deleted: bool) -> Message {
        Message {
            channel_id: "g".to_owned(),
            seq,
            sender_id: "an".to_owned(),
            sender_deleted: false,
            client_id: format!("c{seq}"),
            content: None,
            reply_to: None,
            mentions: Vec::new(),
            reactions: BTreeMap::new(),
            own_reactions: Vec::new(),
            created_at: 1,
            edited_at: None,
            deleted_at: deleted.then_some(2),
        }
    }

    #[test]
    fn adding_twice_is_unchanged() {
        let current = set(&["👍"]);
        assert_eq!(
            update_reactions(&current, "👍", true),
            ReactionUpdate::Unchanged
        );
        assert_eq!(
            update_reactions(&current, "❤️", false),
            ReactionUpdate::Unchanged
        );
    }

    #[test]
    fn add_and_remove_change_the_set() {
        let current = set(&["👍"]);
        assert_eq!(
            update_reactions(&current, "❤️", true),
            ReactionUpdate::Set(set(&["👍", "❤️"]))
        );
        assert_eq!(
            update_reactions(&current, "👍", false),
            ReactionUpdate::Set(BTreeSet::new())
        );
    }

    #[test]
    fn limit_rejects_one_more() {
        let full: BTreeSet<String> = (0..MAX_REACTIONS_PER_USER)
            .map(|i| format!("r{i}"))
            .collect();
        assert_eq!(
            update_reactions(&full, "new", true),
            ReactionUpdate::OverLimit
        );
        // Removing, and adding one already there, still work at the limit.
        assert!(matches!(
            update_reactions(&full, "r0", false),
            ReactionUpdate::Set(_)
        ));
        assert_eq!(
            update_reactions(&full, "r0", true),
            ReactionUpdate::Unchanged
        );
    }

    #[test]
    fn counts_and_own_reactions_come_from_rows() {
        let mut messages = vec![message(1, false), message(2, true), message(3, false)];
        let rows = vec![
            (1, "an".to_owned(), Some(set(&["👍", "😂"]))),
            (1, "bo".to_owned(), Some(set(&["👍"]))),
            (2, "bo".to_owned(), Some(set(&["👍"]))),
            (3, "bo".to_owned(), None),
            (9, "bo".to_owned(), Some(set(&["👍"]))),
        ];
        attach_reactions(&mut messages, rows, Some("an")).unwrap();

        assert_eq!(messages[0].reactions.get("👍"), Some(&2));
        assert_eq!(messages[0].reactions.get("😂"), Some(&1));
        assert_eq!(messages[0].own_reactions, ["👍", "😂"]);
        assert!(messages[1].reactions.is_empty(), "deleted message");
        assert!(messages[2].reactions.is_empty());
        assert!(messages[2].own_reactions.is_empty());
    }

    #[test]
    fn no_viewer_leaves_own_reactions_empty() {
        let mut messages = vec![message(1, false)];
        let rows = vec![(1, "an".to_owned(), Some(set(&["👍"])))];
        attach_reactions(&mut messages, rows, None).unwrap();
        assert_eq!(messages[0].reactions.get("👍"), Some(&1));
        assert!(messages[0].own_reactions.is_empty());
    }

    #[test]
    fn users_grouped_and_sorted() {
        let rows = vec![
            (1, "cu".to_owned(), Some(set(&["👍"]))),
            (1, "an".to_owned(), Some(set(&["👍", "❤️"]))),
        ];
        let users = users_per_reaction(rows);
        assert_eq!(users["👍"], ["an", "cu"]);
        assert_eq!(users["❤️"], ["an"]);
        assert_eq!(users.len(), 2);
    }
}
