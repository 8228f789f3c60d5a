//! Read and delivery positions, and the receipts of one message derived
//! from them.
//!
//! A member's position is one number per channel: every message up to it
//! was read (or delivered to at least one of the member's devices). Both
//! only move forward, so receipts stay right when a member reads on two
//! devices while others send: a late, lower position changes nothing.

use serde::Serialize;

use crate::chat::ChatError;
use crate::hub::Outbound;
use crate::store::Positions;
use crate::tenant::Tenant;
use crate::ws::protocol::ServerFrame;

/// Moves the read position and, when it moved, sends `read` to the
/// channel's members. Returns the read position after the call.
pub async fn mark_read(
    tenant: &Tenant,
    user: &str,
    channel_id: &str,
    seq: u64,
) -> Result<u64, ChatError> {
    let positions = tenant.store.mark_read(channel_id, user, seq).await?;
    if positions.changed {
        let frame = ServerFrame::Read {
            channel_id,
            user_id: user,
            seq: positions.read_seq,
        };
        announce(tenant, &positions, frame);
    }
    Ok(positions.read_seq)
}

/// Moves the delivered position and, when it moved, sends `delivered` to
/// the channel's members. Returns the delivered position after the call.
///
/// NOTE: every member hears of every other member's delivery, which costs
/// one frame per member and acknowledgement. In a group of thousands that
/// traffic dwarfs the messages themselves. Large groups would want receipts
/// sent to the senders of the covered messages only.
pub async fn mark_delivered(
    tenant: &Tenant,
    user: &str,
    channel_id: &str,
    seq: u64,
) -> Result<u64, ChatError> {
    let positions = tenant.store.mark_delivered(channel_id, user, seq).await?;
    if positions.changed {
        let frame = ServerFrame::Delivered {
            channel_id,
            user_id: user,
            seq: positions.delivered_seq,
        };
        announce(tenant, &positions, frame);
    }
    Ok(positions.delivered_seq)
}

fn announce(tenant: &Tenant, positions: &Positions, frame: ServerFrame<'_>) {
    tenant.deliver(&positions.members, Outbound::Event(frame.to_text()), None);
}

/// Delivery and read state of one message. Recipients are the channel's
/// current members other than the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipts {
    pub channel_id: String,
    pub seq: u64,
    pub sender_id: String,
    pub recipients: usize,
    /// Recipients with the message on at least one device, sorted.
    pub delivered_to: Vec<String>,
    /// Recipients who read the message, sorted.
    pub read_by: Vec<String>,
    /// True when every recipient has it on a device.
    pub delivered: bool,
    /// True when every recipient read it.
    pub read: bool,
}

/// Returns the receipts of one message for a member of its channel.
pub async fn receipts(
    tenant: &Tenant,
    user: &str,
    channel_id: &str,
    seq: u64,
) -> Result<Receipts, ChatError> {
    let message = tenant.store.message(channel_id, seq, user).await?;
    let (_, members) = tenant.store.channel_for_member(channel_id, user).await?;

    let recipients: Vec<_> = members
        .iter()
        .filter(|member| member.user_id != message.sender_id)
        .collect();
    let delivered_to: Vec<String> = recipients
        .iter()
        .filter(|member| member.delivered_seq >= seq)
        .map(|member| member.user_id.clone())
        .collect();
    let read_by: Vec<String> = recipients
        .iter()
        .filter(|member| member.read_seq >= seq)
        .map(|member| member.user_id.clone())
        .collect();
    Ok(Receipts {
        channel_id: message.channel_id,
        seq,
        sender_id: message.sender_id,
        recipients: recipients.len(),
        delivered: delivered_to.len() == recipients.len(),
        read: read_by.len() == recipients.len(),
        delivered_to,
        read_by,
    })
}
