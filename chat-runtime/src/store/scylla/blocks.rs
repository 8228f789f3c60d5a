//! Blocks between users.
//!
//! Each block is one row in `blocks` (by blocker) and one in `blocked_by`
//! (by blocked user). Both rows are written by one logged batch, so the
//! two tables agree once the batch is applied, also after a block and an
//! unblock of the same pair race. Reads that filter for a viewer use
//! `blocks`, and fan-out, which needs who blocks a sender, uses
//! `blocked_by`. A user with no blocks costs one read of an empty
//! partition on those paths. Neither table has a bound per user, as in the
//! embedded store, so each send of a user whom many block reads that many
//! rows.

use std::collections::BTreeSet;

use super::{ScyllaStore, failed};
use crate::store::{Message, Millis, NewEvent, StoreError, StoreResult};

impl ScyllaStore {
    /// Makes `blocker` block `blocked`, or stop blocking, and logs the
    /// change. Returns whether anything changed.
    ///
    /// NOTE: the read and the batch are two requests, so two calls that make
    /// the same change at the same moment can both return true and both log
    /// the event. A replica that stops between the batch and the event
    /// loses the event, and a retry finds nothing to change.
    pub(super) async fn change_block(
        &self,
        blocker: &str,
        blocked: &str,
        block: bool,
        now: Millis,
    ) -> StoreResult<bool> {
        if blocker == blocked {
            return Err(StoreError::Invalid("a user cannot block itself"));
        }
        if self.blocks(blocker, blocked).await? == block {
            return Ok(false);
        }
        if block {
            self.session
                .batch(
                    &self.statements.add_block,
                    ((blocker, blocked, now), (blocked, blocker, now)),
                )
                .await
                .map_err(failed("write a block"))?;
        } else {
            self.session
                .batch(
                    &self.statements.remove_block,
                    ((blocker, blocked), (blocked, blocker)),
                )
                .await
                .map_err(failed("remove a block"))?;
        }
        let event = NewEvent::block(blocker, blocked, block, now);
        self.log(vec![self.place(event)]).await?;
        Ok(true)
    }

    /// Returns whether `blocker` blocks `blocked`.
    pub(super) async fn blocks(&self, blocker: &str, blocked: &str) -> StoreResult<bool> {
        let row: Option<(String,)> = self
            .first_row(
                &self.statements.select_block,
                (blocker, blocked),
                "read a block",
            )
            .await?;
        Ok(row.is_some())
    }

    /// Returns whether either user blocks the other.
    pub(super) async fn blocked_between(&self, a: &str, b: &str) -> StoreResult<bool> {
        let (a_blocks_b, b_blocks_a) =
            futures_util::try_join!(self.blocks(a, b), self.blocks(b, a))?;
        Ok(a_blocks_b || b_blocks_a)
    }

    /// Returns the users `blocker` blocks.
    pub(super) async fn blocked_user_set(&self, blocker: &str) -> StoreResult<BTreeSet<String>> {
        let rows: Vec<(String,)> = self
            .all_rows(
                &self.statements.select_blocked_users,
                (blocker,),
                "read the users a user blocks",
            )
            .await?;
        Ok(rows.into_iter().map(|(blocked,)| blocked).collect())
    }

    /// Returns the users who block `blocked`.
    pub(super) async fn blocker_set(&self, blocked: &str) -> StoreResult<BTreeSet<String>> {
        let rows: Vec<(String,)> = self
            .all_rows(
                &self.statements.select_blockers,
                (blocked,),
                "read the users who block a user",
            )
            .await?;
        Ok(rows.into_iter().map(|(blocker,)| blocker).collect())
    }
}

/// Returns `members` without the users in `blockers`, for fan-out of what
/// a user whom `blockers` block wrote or did.
pub(super) fn without_blockers(members: Vec<String>, blockers: &BTreeSet<String>) -> Vec<String> {
    if blockers.is_empty() {
        return members;
    }
    members
        .into_iter()
        .filter(|member| !blockers.contains(member))
        .collect()
}

/// Returns `messages` without those whose senders are in `blocked`.
pub(super) fn without_blocked_senders(
    messages: Vec<Message>,
    blocked: &BTreeSet<String>,
) -> Vec<Message> {
    if blocked.is_empty() {
        return messages;
    }
    messages
        .into_iter()
        .filter(|message| !blocked.contains(&message.sender_id))
        .collect()
}

/// Returns whether one of `members` other than `creator` is among
/// `blockers`, the users who block `creator`.
pub(super) fn includes_blocker<'a>(
    members: impl IntoIterator<Item = &'a str>,
    creator: &str,
    blockers: &BTreeSet<String>,
) -> bool {
    members
        .into_iter()
        .any(|member| member != creator && blockers.contains(member))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(users: &[&str]) -> BTreeSet<String> {
        users.iter().map(|user| (*user).to_owned()).collect()
    }

    fn owned(users: &[&str]) -> Vec<String> {
        users.iter().map(|user| (*user).to_owned()).collect()
    }

    fn message_from(seq: u64, sender: &str) -> Message {
        Message {
            channel_id: "g_1".to_owned(),
            seq,
            sender_id: sender.to_owned(),
            sender_deleted: false,
            client_id: format!("c{seq}"),
            content: None,
            reply_to: None,
            mentions: Vec::new(),
            reactions: Default::default(),
            own_reactions: Vec::new(),
            created_at: 0,
            edited_at: None,
            deleted_at: None,
        }
    }

    #[test]
    fn recipients_leave_out_blockers() {
        let members = owned(&["alice", "bob", "carol"]);
        assert_eq!(
            without_blockers(members.clone(), &set(&["bob"])),
            ["alice", "carol"]
        );
        assert_eq!(without_blockers(members.clone(), &set(&[])), members);
        assert_eq!(
            without_blockers(members, &set(&["dave"])),
            ["alice", "bob", "carol"]
        );
    }

    #[test]
    fn blocked_senders_are_hidden() {
        let messages = vec![
            message_from(1, "alice"),
            message_from(2, "carol"),
            message_from(3, "alice"),
        ];
        let kept = without_blocked_senders(messages.clone(), &set(&["alice"]));
        let seqs: Vec<u64> = kept.iter().map(|message| message.seq).collect();
        assert_eq!(seqs, [2]);
        assert_eq!(without_blocked_senders(messages, &set(&[])).len(), 3);
    }

    #[test]
    fn group_check_ignores_creator() {
        let blockers = set(&["bob"]);
        assert!(includes_blocker(["alice", "bob"], "alice", &blockers));
        assert!(!includes_blocker(["alice", "carol"], "alice", &blockers));
        // A creator listed among the members is not checked against itself.
        assert!(!includes_blocker(["bob"], "bob", &blockers));
    }
}
