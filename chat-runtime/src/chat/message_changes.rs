//! Changes to stored messages: edits, deletes and reactions. Each writes
//! through the store first and then notifies the channel's members, so a client
//! never sees a change that is not durable.
//!
//! NOTE: these events are live only. A socket that misses one (a relay
//! outage, a reconnect) still gets the change when it next reads the message
//! through history, but resume replays new messages only, so a client that
//! keeps messages in memory shows the old version until it reloads them.

use crate::chat::{ChatError, moderation, now_millis, take_rate, templates};
use crate::hub::Outbound;
use crate::limits;
use crate::metrics::Metrics;
use crate::store::{Content, Deleter, MessageChange, MessageEdit};
use crate::tenant::Tenant;
use crate::ws::protocol::{ReactionAction, ServerFrame};

/// Replaces a message's content (and its mentions when `mentions` is given)
/// and sends `message_edited` to the channel's members.
pub async fn edit_message(
    tenant: &Tenant,
    metrics: &Metrics,
    editor: &str,
    channel_id: &str,
    seq: u64,
    content: Content,
    mentions: Option<Vec<String>>,
) -> Result<MessageChange, ChatError> {
    check_seq(seq)?;
    let settings = tenant.settings();
    let content = templates::prepare(tenant, editor, content).await?;
    limits::check_content(&content, &settings.limits, &settings.attachment_hosts)?;
    let mentions = mentions.map(limits::check_mentions).transpose()?;
    take_rate(tenant, editor)?;
    let subject = moderation::Subject {
        sender: editor,
        channel_id,
        client_id: None,
        seq: Some(seq),
    };
    let checked = moderation::moderate(tenant, metrics, subject, content).await?;

    let change = tenant
        .store
        .edit_message(MessageEdit {
            channel_id: channel_id.to_owned(),
            seq,
            editor: editor.to_owned(),
            content: checked.content,
            mentions,
            edited_at: now_millis(),
            moderation: checked.records,
        })
        .await?;
    let frame = ServerFrame::MessageEdited {
        message: &change.message,
    };
    announce(tenant, &change, frame);
    Ok(change)
}

/// Erases a message's content and sends `message_deleted` to the channel's
/// members. Deleting a deleted message succeeds and sends nothing.
pub async fn delete_message(
    tenant: &Tenant,
    deleter: Deleter<'_>,
    channel_id: &str,
    seq: u64,
) -> Result<MessageChange, ChatError> {
    check_seq(seq)?;
    if let Deleter::Member(user) = deleter {
        take_rate(tenant, user)?;
    }
    let change = tenant
        .store
        .delete_message(channel_id, seq, deleter, now_millis())
        .await?;
    if change.changed {
        let frame = ServerFrame::MessageDeleted {
            message: &change.message,
        };
        announce(tenant, &change, frame);
    }
    Ok(change)
}

/// Adds or removes one reaction of `user` and sends `reaction` to the
/// channel's members when that changed anything. Returns the change and
/// the reaction in the NFC form it was stored under.
pub async fn react(
    tenant: &Tenant,
    user: &str,
    channel_id: &str,
    seq: u64,
    reaction: &str,
    add: bool,
) -> Result<(MessageChange, String), ChatError> {
    check_seq(seq)?;
    let reaction = limits::check_reaction(reaction)?;
    take_rate(tenant, user)?;
    let change = tenant
        .store
        .react(channel_id, seq, user, &reaction, add, now_millis())
        .await?;
    if change.changed {
        let frame = ServerFrame::Reaction {
            channel_id,
            seq,
            user_id: user,
            reaction: &reaction,
            action: if add {
                ReactionAction::Added
            } else {
                ReactionAction::Removed
            },
            count: change
                .message
                .reactions
                .get(&reaction)
                .copied()
                .unwrap_or(0),
        };
        announce(tenant, &change, frame);
    }
    Ok((change, reaction))
}

/// Rejects sequence number 0, which no message has, with the error a
/// malformed number gets, instead of `not_found`.
fn check_seq(seq: u64) -> Result<(), ChatError> {
    if seq == 0 {
        return Err(ChatError::invalid(
            "invalid message sequence number 0: expected an integer from 1",
        ));
    }
    Ok(())
}

fn announce(tenant: &Tenant, change: &MessageChange, frame: ServerFrame<'_>) {
    tenant.deliver(&change.members, Outbound::Event(frame.to_text()), None);
}
