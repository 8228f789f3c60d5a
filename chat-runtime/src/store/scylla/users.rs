//! Users. Every write to `users` is a lightweight transaction conditioned on
//! the row's `deleted` flag and incarnation, so that a profile update racing
//! a delete, or two replicas reviving one id, cannot mix two people's
//! profiles.

use super::rows::{UserRecord, UserRow, user_from_row};
use super::{ScyllaStore, failed};
use crate::store::{Millis, NewEvent, StoreError, StoreResult, User};

/// Attempts of one user write before giving up. Another attempt is needed
/// only when a concurrent write to the same user won the transaction.
const MAX_USER_ATTEMPTS: usize = 16;

impl ScyllaStore {
    pub(super) async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        let row: Option<UserRow> = self
            .first_row(&self.statements.select_user, (id,), "read a user")
            .await?;
        row.map(user_from_row).transpose()
    }

    /// Returns the incarnation of an existing, not deleted user, or
    /// `NotFound`.
    pub(super) async fn active_incarnation(&self, id: &str) -> StoreResult<i32> {
        match self.user(id).await? {
            Some(record) if !record.user.deleted => Ok(record.incarnation),
            _ => Err(StoreError::NotFound),
        }
    }

    pub(super) async fn upsert_user_row(
        &self,
        id: &str,
        name: &str,
        metadata: &serde_json::Value,
        now: Millis,
    ) -> StoreResult<User> {
        let metadata_json =
            serde_json::to_string(metadata).map_err(failed("serialise user metadata"))?;
        for _ in 0..MAX_USER_ATTEMPTS {
            let applied = match self.user(id).await? {
                None => {
                    self.conditional(
                        &self.statements.insert_user,
                        (id, name, &metadata_json, now, now),
                        "create a user",
                    )
                    .await?
                }
                Some(record) if !record.user.deleted => {
                    self.conditional(
                        &self.statements.update_user,
                        (name, &metadata_json, now, id, record.incarnation),
                        "update a user",
                    )
                    .await?
                }
                Some(record) => {
                    self.conditional(
                        &self.statements.revive_user,
                        (
                            name,
                            &metadata_json,
                            now / 1000,
                            record.incarnation + 1,
                            now,
                            now,
                            id,
                            record.incarnation,
                        ),
                        "create a user again",
                    )
                    .await?
                }
            };
            if applied {
                let Some(record) = self.user(id).await? else {
                    return Err(super::rows::inconsistent(
                        "user row missing right after it was written",
                    ));
                };
                // NOTE: user changes have no version to derive an event
                // from, so the event is written once after the transaction,
                // and a replica that stops in between loses it.
                let event = NewEvent::user_upserted(&record.user, now);
                self.log(vec![self.place(event)]).await?;
                return Ok(record.user);
            }
        }
        Err(contention("upsert a user"))
    }

    pub(super) async fn delete_user_row(&self, id: &str, now: Millis) -> StoreResult<()> {
        for _ in 0..MAX_USER_ATTEMPTS {
            let incarnation = self.active_incarnation(id).await?;
            let applied = self
                .conditional(
                    &self.statements.delete_user,
                    (now, id, incarnation),
                    "delete a user",
                )
                .await?;
            if applied {
                // NOTE: a replica that stops after the transaction and
                // before this erase leaves the user's settings in place,
                // and a retry finds the user deleted and erases nothing.
                self.delete_settings(id).await?;
                let event = NewEvent::user_deleted(id, now);
                return self.log(vec![self.place(event)]).await;
            }
        }
        Err(contention("delete a user"))
    }
}

impl ScyllaStore {
    pub(super) async fn revoke_tokens_row(
        &self,
        id: &str,
        at_least: i64,
        now: Millis,
    ) -> StoreResult<i64> {
        for _ in 0..MAX_USER_ATTEMPTS {
            let record = match self.user(id).await? {
                Some(record) if !record.user.deleted => record,
                _ => return Err(StoreError::NotFound),
            };
            let after_previous = record.tokens_not_before.map_or(at_least, |bound| bound + 1);
            let bound = after_previous.max(at_least);
            let applied = self
                .conditional(
                    &self.statements.revoke_tokens,
                    (bound, now, id, record.incarnation),
                    "revoke a user's tokens",
                )
                .await?;
            if applied {
                let event = NewEvent::tokens_revoked(id, bound, now);
                self.log(vec![self.place(event)]).await?;
                return Ok(bound);
            }
        }
        Err(contention("revoke a user's tokens"))
    }
}

/// Builds the error for a write that lost its lightweight transaction to
/// concurrent writes every time it tried.
pub(super) fn contention(operation: &'static str) -> StoreError {
    #[derive(Debug, thiserror::Error)]
    #[error("failed to {0}: concurrent writes to the same row won every attempt")]
    struct Contention(&'static str);
    StoreError::Unavailable(Box::new(Contention(operation)))
}
