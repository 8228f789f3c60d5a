//! Slow mode: a minimum time between two messages of one member of a
//! group, from which the group's owner is exempt.
//!
//! The interval is a column of the channel row, written by a lightweight
//! transaction so it is ordered with the claims of sequence numbers on
//! that row. Each member's newest send time is in `last_sent`, written
//! with the send time as the write timestamp, so the newest send wins in
//! whatever order the writes arrive.

use super::users::contention;
use super::{ScyllaStore, failed};
use crate::store::{Channel, ChannelKind, MemberRole, Millis, NewEvent, StoreError, StoreResult};

/// Attempts of one change of the interval. Another attempt is needed only
/// when the channel row changed between the read and the transaction.
const MAX_ATTEMPTS: usize = 8;

impl ScyllaStore {
    pub(super) async fn change_slow_mode(
        &self,
        channel_id: &str,
        actor: Option<&str>,
        seconds: u32,
        now: Millis,
    ) -> StoreResult<(Channel, bool)> {
        if let Some(actor) = actor {
            match self.member_role(channel_id, actor).await? {
                None => return Err(StoreError::NotFound),
                Some(MemberRole::Member) => {
                    return Err(StoreError::Forbidden(
                        "only the group's owner can set slow mode",
                    ));
                }
                Some(MemberRole::Owner) => {}
            }
        }
        let stored_seconds = i32::try_from(seconds).map_err(|_| {
            StoreError::Invalid("slow mode seconds must fit a 32-bit signed integer")
        })?;
        for _ in 0..MAX_ATTEMPTS {
            let record = self
                .channel_serial(channel_id)
                .await?
                .ok_or(StoreError::NotFound)?;
            let channel = record.channel;
            if channel.kind == ChannelKind::Direct {
                return Err(StoreError::Invalid("slow mode applies to groups only"));
            }
            if channel.slow_mode_seconds == seconds {
                return Ok((channel, false));
            }
            // NOTE: the transaction checks that the channel is still a
            // group, not that the interval is still the one read above, so
            // two changes racing to the same value can both report a
            // change and both log `channel.updated`.
            let applied = self
                .conditional(
                    &self.statements.set_slow_mode,
                    (stored_seconds, channel_id),
                    "set slow mode",
                )
                .await?;
            if applied {
                let channel = Channel {
                    slow_mode_seconds: seconds,
                    ..channel
                };
                // NOTE: a replica that stops between the transaction and
                // this write loses the event.
                let event = NewEvent::channel_updated(&channel, actor, now);
                self.log(vec![self.place(event)]).await?;
                return Ok((channel, true));
            }
        }
        Err(contention("set slow mode"))
    }

    /// Fails with `SlowMode` when `channel` has slow mode and `user` sent a
    /// message less than the interval before `now`. The caller exempts the
    /// owner.
    ///
    /// NOTE: two sends of one member through two replicas at the same
    /// moment both pass, because neither reads the other's send time yet.
    /// Sends through one replica take turns per channel, so they do not.
    pub(super) async fn check_slow_mode(
        &self,
        channel: &Channel,
        user: &str,
        now: Millis,
    ) -> StoreResult<()> {
        if channel.slow_mode_seconds == 0 {
            return Ok(());
        }
        let row: Option<(Option<i64>,)> = self
            .first_row(
                &self.statements.select_last_sent,
                (&channel.id, user),
                "read a member's last send time",
            )
            .await?;
        let last_sent_at = row.and_then(|(sent_at,)| sent_at);
        match slow_mode_wait(channel.slow_mode_seconds, last_sent_at, now) {
            Some(retry_after_ms) => Err(StoreError::SlowMode { retry_after_ms }),
            None => Ok(()),
        }
    }

    /// Records `sent_at` as `user`'s newest send time in the channel.
    pub(super) async fn write_last_sent(
        &self,
        channel_id: &str,
        user: &str,
        sent_at: Millis,
    ) -> StoreResult<()> {
        self.execute(
            &self.statements.write_last_sent,
            (channel_id, user, sent_at, last_sent_timestamp(sent_at)),
            "record a member's last send time",
        )
        .await
    }
}

/// Returns the write timestamp of a `last_sent` row: the send time, which
/// only grows for one member, kept above zero.
fn last_sent_timestamp(sent_at: Millis) -> i64 {
    sent_at.max(1)
}

/// Returns how many milliseconds a member who last sent at `last_sent_at`
/// must still wait at `now`, or `None` when the member may send.
fn slow_mode_wait(seconds: u32, last_sent_at: Option<Millis>, now: Millis) -> Option<u64> {
    let last_sent_at = last_sent_at?;
    let next_allowed = last_sent_at.saturating_add(i64::from(seconds).saturating_mul(1_000));
    if seconds == 0 || now >= next_allowed {
        return None;
    }
    u64::try_from(next_allowed.saturating_sub(now)).ok()
}

/// Converts the stored interval, null for a channel that never had slow
/// mode.
pub(super) fn slow_mode_from_cql(seconds: Option<i32>) -> StoreResult<u32> {
    u32::try_from(seconds.unwrap_or(0)).map_err(failed("read a channel's slow mode interval"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    #[test]
    fn wait_is_rest_of_interval() {
        assert_eq!(slow_mode_wait(10, Some(NOW), NOW + 4_000), Some(6_000));
        assert_eq!(slow_mode_wait(10, Some(NOW), NOW), Some(10_000));
        assert_eq!(slow_mode_wait(10, Some(NOW), NOW + 9_999), Some(1));
    }

    #[test]
    fn no_wait_after_interval_or_first_send() {
        assert_eq!(slow_mode_wait(10, Some(NOW), NOW + 10_000), None);
        assert_eq!(slow_mode_wait(10, None, NOW), None);
        assert_eq!(slow_mode_wait(0, Some(NOW), NOW), None);
    }

    #[test]
    fn clock_behind_last_send_waits_whole_gap() {
        assert_eq!(slow_mode_wait(1, Some(NOW), NOW - 500), Some(1_500));
    }

    #[test]
    fn stored_interval_conversion() {
        assert_eq!(slow_mode_from_cql(None).unwrap(), 0);
        assert_eq!(slow_mode_from_cql(Some(86_400)).unwrap(), 86_400);
        assert!(matches!(
            slow_mode_from_cql(Some(-1)),
            Err(StoreError::Unavailable(_))
        ));
    }

    #[test]
    fn last_sent_timestamp_stays_positive() {
        assert_eq!(last_sent_timestamp(NOW), NOW);
        assert_eq!(last_sent_timestamp(0), 1);
        assert_eq!(last_sent_timestamp(-5), 1);
    }
}
