//! Bans, mutes and blocks between users, applied through the store and
//! then to the sockets they concern.

use std::sync::Arc;

use crate::chat::{ChatError, now_millis};
use crate::hub::Outbound;
use crate::store::{Restriction, RestrictionKind};
use crate::tenant::Tenant;
use crate::ws::protocol::{ServerFrame, close};

/// Bans or mutes a user. A ban from the tenant closes the user's sockets on
/// every replica, so the user shows offline. A ban from a channel removes
/// the user from it, as a member removal does.
pub async fn restrict(tenant: &Tenant, restriction: Restriction) -> Result<(), ChatError> {
    let user = restriction.user_id.clone();
    let tenant_ban = restriction.kind == RestrictionKind::Ban && restriction.channel_id.is_none();
    let removal = tenant.store.restrict(restriction).await?;

    if tenant_ban {
        tenant.close_user(
            &user,
            close::USER_BANNED,
            "user_banned",
            "the user was banned from this chat",
        );
    }
    if let Some(change) = removal.filter(|change| change.changed) {
        let channel_id = change.channel.id.as_str();
        let frame = ServerFrame::MemberRemoved {
            channel_id,
            user_id: &user,
        }
        .to_text();
        let removed = Outbound::Removed {
            channel_id: Arc::from(channel_id),
            frame: frame.clone(),
        };
        tenant.deliver(std::slice::from_ref(&user), removed, None);
        tenant.deliver(&change.members, Outbound::Event(frame), None);
    }
    Ok(())
}

/// Lifts a ban or mute; returns whether one was in place.
pub async fn lift(
    tenant: &Tenant,
    user: &str,
    channel_id: Option<&str>,
    kind: RestrictionKind,
) -> Result<bool, ChatError> {
    let lifted = tenant
        .store
        .lift_restriction(user, channel_id, kind, now_millis())
        .await?;
    Ok(lifted)
}

/// Makes `blocker` block `blocked`, or stop blocking it.
pub async fn set_block(
    tenant: &Tenant,
    blocker: &str,
    blocked: &str,
    block: bool,
) -> Result<bool, ChatError> {
    let exists = tenant
        .store
        .user_auth_state(blocked)
        .await?
        .is_some_and(|state| !state.deleted);
    if !exists && block {
        return Err(ChatError::not_found());
    }
    let changed = tenant
        .store
        .set_block(blocker, blocked, block, now_millis())
        .await?;
    if block {
        tenant.stop_watching(blocker, blocked);
    }
    Ok(changed)
}
