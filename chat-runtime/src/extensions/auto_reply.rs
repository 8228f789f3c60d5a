//! Away messages: a user who is offline replies to new conversations with a
//! message of their own, such as a seller saying when they will be back.

use serde::{Deserialize, Serialize};

use super::{AutoReplyConfig, Extension};
use crate::chat::{self, ChatError, now_millis};
use crate::metrics::Metrics;
use crate::store::{ChannelKind, Content, Event, Message, StoreError};
use crate::tenant::Tenant;

/// Key of the away message among a user's settings.
pub const AWAY_MESSAGE_KEY: &str = "away_message";

/// Age past which a message gets no away message, in milliseconds. An
/// extension that was paused or fell behind then skips its backlog instead
/// of replying to messages long after they were written.
const MAX_MESSAGE_AGE_MS: i64 = 10 * 60 * 1000;

/// A user's away message as stored in the user's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwayMessage {
    pub text: String,
    /// Lets a user pause the message without losing its text.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// Reads a user's away message; `None` when the user has none.
pub async fn away_message(
    tenant: &Tenant,
    user_id: &str,
) -> Result<Option<AwayMessage>, ChatError> {
    let settings = tenant
        .store
        .user_settings(user_id, AWAY_MESSAGE_KEY)
        .await?;
    let stored = settings
        .into_iter()
        .find(|(key, _)| key == AWAY_MESSAGE_KEY)
        .and_then(|(_, value)| serde_json::from_value(value).ok());
    Ok(stored)
}

pub struct AutoReply {
    offline_after_ms: i64,
    period_ms: i64,
}

impl AutoReply {
    pub fn new(config: &AutoReplyConfig) -> Self {
        let millis = |seconds: u64| i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self {
            offline_after_ms: millis(config.offline_after_seconds),
            period_ms: millis(config.period_seconds),
        }
    }

    /// Returns whether `user_id` has been offline long enough. A user this
    /// process never saw online counts as offline long enough.
    ///
    /// NOTE: presence lives in memory, so for a while after a restart a
    /// user who left a minute before the restart counts as long offline
    /// and may send an away message early.
    fn offline_long_enough(&self, tenant: &Tenant, user_id: &str, now: i64) -> bool {
        let presence = tenant.presence.state(user_id);
        if presence.online {
            return false;
        }
        presence
            .last_seen
            .is_none_or(|seen| now.saturating_sub(seen) >= self.offline_after_ms)
    }
}

#[async_trait::async_trait]
impl Extension for AutoReply {
    fn name(&self) -> &'static str {
        "auto_reply"
    }

    fn wants(&self, kind: &str) -> bool {
        kind == "message.new"
    }

    async fn handle(
        &self,
        tenant: &Tenant,
        metrics: &Metrics,
        event: &Event,
    ) -> Result<(), ChatError> {
        let Ok(message) = serde_json::from_value::<Message>(event.data["message"].clone()) else {
            return Err(ChatError::invalid(
                "the message.new event contains no message",
            ));
        };
        // Automated messages never reply to each other, so two users who are
        // both away do not trade away messages.
        if matches!(message.content, Some(Content::Automated { .. }) | None) {
            return Ok(());
        }
        let now = now_millis();
        if now.saturating_sub(message.created_at) > MAX_MESSAGE_AGE_MS {
            return Ok(());
        }
        let store = &tenant.store;
        let (channel, members) = match store
            .channel_for_member(&message.channel_id, &message.sender_id)
            .await
        {
            Ok(found) => found,
            // The sender left or was deleted since, so no one gets a reply.
            Err(StoreError::NotFound) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        if channel.kind != ChannelKind::Direct {
            return Ok(());
        }
        let Some(recipient) = members
            .iter()
            .map(|member| member.user_id.as_str())
            .find(|member| *member != message.sender_id)
        else {
            return Ok(());
        };

        let Some(away) = away_message(tenant, recipient).await? else {
            return Ok(());
        };
        if !away.enabled || !self.offline_long_enough(tenant, recipient, now) {
            return Ok(());
        }
        // A user who blocks the sender sends them nothing, not even that
        // they are away.
        let blocked = store.blocked_users(recipient).await?;
        if blocked.contains(&message.sender_id) {
            return Ok(());
        }

        // Marked before sending, so two replicas or two quick messages never
        // send twice in a period. A send that fails after the mark is lost
        // for the period, which is the cheaper mistake for an away message.
        let key = format!("auto_reply:{}:{recipient}", channel.id);
        if !store.mark_once(&key, now, self.period_ms).await? {
            return Ok(());
        }
        let automated = chat::Automated {
            sender: recipient,
            channel_id: &channel.id,
            client_id: format!("auto-reply:{}", event.id),
            extension: self.name(),
            text: away.text,
        };
        chat::send_automated(tenant, metrics, automated).await?;
        Ok(())
    }
}
