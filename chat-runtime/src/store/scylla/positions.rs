//! Read and delivered positions.
//!
//! Both only move forward and are written with the position itself as the
//! write timestamp, so the highest of concurrent writes wins whatever order
//! they arrive in. The delivered position reported is never below the read
//! position, since a message read has reached a device, so writes that move
//! only the read position (an append, a new member's catch-up) raise it too.

use super::ScyllaStore;
use super::rows::{seq_from_cql, seq_to_cql};
use crate::store::{NewEvent, Positions, StoreError, StoreResult};

/// Position that a call moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    /// Read, and delivered along with it.
    Read,
    Delivered,
}

/// Positions after a mark, and which rows need a write.
#[derive(Debug, PartialEq, Eq)]
struct Moved {
    read_seq: u64,
    delivered_seq: u64,
    write_read: bool,
    write_delivered: bool,
    changed: bool,
}

/// Moves the stored positions `read` and `delivered` to `seq`, capped at
/// `last_seq`, never backwards.
fn move_positions(mark: Mark, read: u64, delivered: u64, seq: u64, last_seq: u64) -> Moved {
    let target = seq.min(last_seq);
    let shown_delivered = delivered.max(read);
    let read_seq = match mark {
        Mark::Read => read.max(target),
        Mark::Delivered => read,
    };
    let delivered_seq = shown_delivered.max(target).max(read_seq);
    Moved {
        read_seq,
        delivered_seq,
        write_read: read_seq > read,
        write_delivered: delivered_seq > delivered,
        changed: read_seq > read || delivered_seq > shown_delivered,
    }
}

impl ScyllaStore {
    /// Moves `user`'s position in `channel_id` forward.
    ///
    /// The positions are read before they are written, so `changed` can be
    /// wrong under a race. Two replicas that mark the same position at once
    /// both report a change. A call that lost to a higher concurrent write
    /// still reports its own. The stored positions are right either
    /// way, because the write timestamps order them.
    pub(super) async fn mark(
        &self,
        channel_id: &str,
        user: &str,
        seq: u64,
        mark: Mark,
    ) -> StoreResult<Positions> {
        let (role, record, read, delivered) = futures_util::try_join!(
            self.member_role(channel_id, user),
            self.channel(channel_id),
            self.read_position(channel_id, user),
            self.delivered_position(channel_id, user),
        )?;
        let (Some(_), Some(record)) = (role, record) else {
            return Err(StoreError::NotFound);
        };
        let moved = move_positions(mark, read, delivered, seq, record.channel.last_seq);
        let write_read = async {
            if moved.write_read {
                self.write_read_position(channel_id, user, moved.read_seq)
                    .await?;
            }
            Ok::<_, StoreError>(())
        };
        let write_delivered = async {
            if moved.write_delivered {
                self.write_delivered_position(channel_id, user, moved.delivered_seq)
                    .await?;
            }
            Ok::<_, StoreError>(())
        };
        futures_util::try_join!(write_read, write_delivered)?;
        // Only reads are logged, as in the embedded store: delivered
        // positions move with every device. The position is read before it
        // is written (see above), so two replicas that move it to the same
        // place at once both log the move.
        // NOTE: a replica that stops between the position write and this
        // one loses the event. A retry finds the position moved already.
        if moved.write_read {
            let event =
                NewEvent::channel_read(channel_id, user, moved.read_seq, crate::chat::now_millis());
            self.log(vec![self.place(event)]).await?;
        }
        Ok(Positions {
            read_seq: moved.read_seq,
            delivered_seq: moved.delivered_seq,
            changed: moved.changed,
            members: self.list_member_ids(channel_id).await?,
        })
    }

    async fn delivered_position(&self, channel_id: &str, user: &str) -> StoreResult<u64> {
        let row: Option<(Option<i64>,)> = self
            .first_row(
                &self.statements.select_delivered_position,
                (channel_id, user),
                "read a delivered position",
            )
            .await?;
        seq_from_cql(row.and_then(|(seq,)| seq))
    }

    async fn write_delivered_position(
        &self,
        channel_id: &str,
        user: &str,
        seq: u64,
    ) -> StoreResult<()> {
        let seq = seq_to_cql(seq);
        self.execute(
            &self.statements.write_delivered_position,
            (channel_id, user, seq, seq),
            "write a delivered position",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_moves_delivered_along() {
        let moved = move_positions(Mark::Read, 2, 3, 5, 10);
        assert_eq!(moved.read_seq, 5);
        assert_eq!(moved.delivered_seq, 5);
        assert!(moved.write_read);
        assert!(moved.write_delivered);
        assert!(moved.changed);
    }

    #[test]
    fn read_below_delivered_keeps_delivered() {
        let moved = move_positions(Mark::Read, 2, 8, 5, 10);
        assert_eq!(moved.read_seq, 5);
        assert_eq!(moved.delivered_seq, 8);
        assert!(!moved.write_delivered);
        assert!(moved.changed);
    }

    #[test]
    fn delivered_leaves_read() {
        let moved = move_positions(Mark::Delivered, 2, 3, 7, 10);
        assert_eq!(moved.read_seq, 2);
        assert_eq!(moved.delivered_seq, 7);
        assert!(!moved.write_read);
        assert!(moved.write_delivered);
        assert!(moved.changed);
    }

    #[test]
    fn positions_never_move_back() {
        let read = move_positions(Mark::Read, 6, 6, 4, 10);
        assert_eq!((read.read_seq, read.delivered_seq), (6, 6));
        assert!(!read.changed);
        assert!(!read.write_read);
        assert!(!read.write_delivered);

        let delivered = move_positions(Mark::Delivered, 6, 9, 7, 10);
        assert_eq!((delivered.read_seq, delivered.delivered_seq), (6, 9));
        assert!(!delivered.changed);
    }

    #[test]
    fn positions_cap_at_last_seq() {
        let moved = move_positions(Mark::Read, 0, 0, 100, 10);
        assert_eq!((moved.read_seq, moved.delivered_seq), (10, 10));
        let moved = move_positions(Mark::Delivered, 0, 0, u64::MAX, 10);
        assert_eq!(moved.delivered_seq, 10);
    }

    #[test]
    fn delivered_below_read_shows_read() {
        // An append moved the read position without a delivered write.
        let moved = move_positions(Mark::Delivered, 5, 0, 5, 10);
        assert_eq!(moved.delivered_seq, 5);
        assert!(!moved.changed, "delivered was already shown as 5");
        assert!(moved.write_delivered, "the stored row catches up");
    }
}
