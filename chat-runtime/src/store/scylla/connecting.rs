//! A ScyllaDB store that connects in the background, so that one tenant's
//! unreachable cluster neither stops the runtime from starting nor holds
//! up a reload for the other tenants.
//!
//! Until the connection, the schema check and the statement preparation
//! have succeeded, every call returns `Unavailable` and the store is not
//! ready, so `/readyz` fails and no message is acknowledged. The task
//! tries again with growing waits, and stops when the store is closed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OnceCell, watch};

use super::{ScyllaConfig, ScyllaStore};
use crate::store::{
    Appended, Channel, ChannelSummary, DeadLetter, Deleter, EventPage, Member, MembershipChange,
    Message, MessageChange, MessageEdit, Millis, NewEvent, NewMessage, NewReport, Page, Positions,
    Report, ReportChange, ReportStatus, Resolution, Restriction, RestrictionKind, Store,
    StoreError, StoreResult, User, UserAuthState, WebhookClaim,
};

/// Wait after the first failed attempt. Each later failure doubles it, up
/// to [`MAX_RETRY_WAIT`].
const FIRST_RETRY_WAIT: Duration = Duration::from_secs(1);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

pub struct ConnectingStore {
    keyspace: String,
    store: Arc<OnceCell<ScyllaStore>>,
    closed: AtomicBool,
    stop: watch::Sender<bool>,
}

impl ConnectingStore {
    /// Starts connecting with `config` in a task on the current Tokio
    /// runtime. Relative file paths in `config` resolve against `base`.
    pub fn start(config: ScyllaConfig, base: PathBuf) -> ConnectingStore {
        let store = Arc::new(OnceCell::new());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(connect_until_open(
            config.clone(),
            base,
            Arc::clone(&store),
            stopped,
        ));
        ConnectingStore {
            keyspace: config.keyspace,
            store,
            closed: AtomicBool::new(false),
            stop,
        }
    }

    fn open(&self) -> StoreResult<&ScyllaStore> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        self.store.get().ok_or_else(|| {
            StoreError::Unavailable(
                format!("not connected to ScyllaDB keyspace {} yet", self.keyspace).into(),
            )
        })
    }
}

async fn connect_until_open(
    config: ScyllaConfig,
    base: PathBuf,
    slot: Arc<OnceCell<ScyllaStore>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut wait = FIRST_RETRY_WAIT;
    loop {
        let attempt = tokio::select! {
            result = ScyllaStore::open(&config, &base) => result,
            _ = stopped.wait_for(|stop| *stop) => return,
        };
        match attempt {
            Ok(store) => {
                // Only this task fills the cell, so it is empty here.
                let _ = slot.set(store);
                return;
            }
            Err(error) => {
                let message = crate::server::error_chain(&error);
                tracing::warn!(keyspace = %config.keyspace, error = %message, retry_in_seconds = wait.as_secs(), "Failed to open the ScyllaDB store; the tenant is not ready until it opens");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        wait = (wait * 2).min(MAX_RETRY_WAIT);
    }
}

#[async_trait::async_trait]
impl Store for ConnectingStore {
    async fn upsert_user(
        &self,
        id: &str,
        name: &str,
        metadata: serde_json::Value,
        now: Millis,
    ) -> StoreResult<User> {
        self.open()?.upsert_user(id, name, metadata, now).await
    }

    async fn delete_user(&self, id: &str, now: Millis) -> StoreResult<()> {
        self.open()?.delete_user(id, now).await
    }

    async fn revoke_tokens(&self, id: &str, at_least: i64, now: Millis) -> StoreResult<i64> {
        self.open()?.revoke_tokens(id, at_least, now).await
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        self.open()?.get_user(id).await
    }

    async fn user_auth_state(&self, id: &str) -> StoreResult<Option<UserAuthState>> {
        self.open()?.user_auth_state(id).await
    }

    async fn open_direct(
        &self,
        a: &str,
        b: &str,
        subject: Option<&str>,
        now: Millis,
    ) -> StoreResult<(Channel, Vec<String>)> {
        self.open()?.open_direct(a, b, subject, now).await
    }

    async fn create_group(
        &self,
        creator: &str,
        name: &str,
        members: &[String],
        now: Millis,
    ) -> StoreResult<(Channel, Vec<String>)> {
        self.open()?.create_group(creator, name, members, now).await
    }

    async fn add_member(
        &self,
        channel_id: &str,
        actor: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<MembershipChange> {
        self.open()?.add_member(channel_id, actor, user, now).await
    }

    async fn remove_member(
        &self,
        channel_id: &str,
        actor: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<MembershipChange> {
        self.open()?
            .remove_member(channel_id, actor, user, now)
            .await
    }

    async fn channel_for_member(
        &self,
        channel_id: &str,
        user: &str,
    ) -> StoreResult<(Channel, Vec<Member>)> {
        self.open()?.channel_for_member(channel_id, user).await
    }

    async fn activity_for(&self, channel_id: &str, user: &str) -> StoreResult<Millis> {
        self.open()?.activity_for(channel_id, user).await
    }

    async fn member_ids(&self, channel_id: &str) -> StoreResult<Vec<String>> {
        self.open()?.member_ids(channel_id).await
    }

    async fn channel_positions(&self, user: &str) -> StoreResult<Vec<(String, u64)>> {
        self.open()?.channel_positions(user).await
    }

    async fn list_channels(
        &self,
        user: &str,
        before: Option<(Millis, String)>,
        limit: u32,
    ) -> StoreResult<Vec<ChannelSummary>> {
        self.open()?.list_channels(user, before, limit).await
    }

    async fn append_message(&self, message: NewMessage) -> StoreResult<Appended> {
        self.open()?.append_message(message).await
    }

    async fn find_retry(&self, message: &NewMessage) -> StoreResult<Option<Appended>> {
        self.open()?.find_retry(message).await
    }

    async fn edit_message(&self, edit: MessageEdit) -> StoreResult<MessageChange> {
        self.open()?.edit_message(edit).await
    }

    async fn delete_message(
        &self,
        channel_id: &str,
        seq: u64,
        deleter: Deleter<'_>,
        now: Millis,
    ) -> StoreResult<MessageChange> {
        self.open()?
            .delete_message(channel_id, seq, deleter, now)
            .await
    }

    async fn react(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
        reaction: &str,
        add: bool,
        now: Millis,
    ) -> StoreResult<MessageChange> {
        self.open()?
            .react(channel_id, seq, user, reaction, add, now)
            .await
    }

    async fn reaction_users(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
    ) -> StoreResult<BTreeMap<String, Vec<String>>> {
        self.open()?.reaction_users(channel_id, seq, user).await
    }

    async fn message(&self, channel_id: &str, seq: u64, user: &str) -> StoreResult<Message> {
        self.open()?.message(channel_id, seq, user).await
    }

    async fn history(&self, channel_id: &str, user: &str, page: Page) -> StoreResult<Vec<Message>> {
        self.open()?.history(channel_id, user, page).await
    }

    async fn messages_between(
        &self,
        channel_id: &str,
        viewer: &str,
        after: u64,
        up_to: u64,
    ) -> StoreResult<Vec<Message>> {
        self.open()?
            .messages_between(channel_id, viewer, after, up_to)
            .await
    }

    async fn mark_read(&self, channel_id: &str, user: &str, seq: u64) -> StoreResult<Positions> {
        self.open()?.mark_read(channel_id, user, seq).await
    }

    async fn mark_delivered(
        &self,
        channel_id: &str,
        user: &str,
        seq: u64,
    ) -> StoreResult<Positions> {
        self.open()?.mark_delivered(channel_id, user, seq).await
    }

    async fn purge_client_ids(&self, older_than: Millis) -> StoreResult<u64> {
        self.open()?.purge_client_ids(older_than).await
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> StoreResult<()> {
        self.open()?.append_events(events).await
    }

    async fn events(&self, after: Option<&str>, limit: u32) -> StoreResult<EventPage> {
        self.open()?.events(after, limit).await
    }

    async fn purge_events(&self, older_than: Millis) -> StoreResult<u64> {
        self.open()?.purge_events(older_than).await
    }

    async fn restrict(&self, restriction: Restriction) -> StoreResult<Option<MembershipChange>> {
        self.open()?.restrict(restriction).await
    }

    async fn lift_restriction(
        &self,
        user_id: &str,
        channel_id: Option<&str>,
        kind: RestrictionKind,
        now: Millis,
    ) -> StoreResult<bool> {
        self.open()?
            .lift_restriction(user_id, channel_id, kind, now)
            .await
    }

    async fn restrictions(&self, user_id: &str, now: Millis) -> StoreResult<Vec<Restriction>> {
        self.open()?.restrictions(user_id, now).await
    }

    async fn set_block(
        &self,
        blocker: &str,
        blocked: &str,
        block: bool,
        now: Millis,
    ) -> StoreResult<bool> {
        self.open()?.set_block(blocker, blocked, block, now).await
    }

    async fn blocked_users(&self, blocker: &str) -> StoreResult<Vec<String>> {
        self.open()?.blocked_users(blocker).await
    }

    async fn blockers(&self, blocked: &str) -> StoreResult<Vec<String>> {
        self.open()?.blockers(blocked).await
    }

    async fn set_slow_mode(
        &self,
        channel_id: &str,
        actor: Option<&str>,
        seconds: u32,
        now: Millis,
    ) -> StoreResult<(Channel, bool)> {
        self.open()?
            .set_slow_mode(channel_id, actor, seconds, now)
            .await
    }

    async fn file_report(&self, report: NewReport) -> StoreResult<ReportChange> {
        self.open()?.file_report(report).await
    }

    async fn reports(
        &self,
        status: Option<ReportStatus>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Report>> {
        self.open()?.reports(status, after, limit).await
    }

    async fn report(&self, id: &str) -> StoreResult<Option<Report>> {
        self.open()?.report(id).await
    }

    async fn resolve_report(&self, id: &str, resolution: Resolution) -> StoreResult<ReportChange> {
        self.open()?.resolve_report(id, resolution).await
    }

    async fn put_user_setting(
        &self,
        user_id: &str,
        key: &str,
        value: Option<serde_json::Value>,
        now: Millis,
    ) -> StoreResult<bool> {
        self.open()?
            .put_user_setting(user_id, key, value, now)
            .await
    }

    async fn user_settings(
        &self,
        user_id: &str,
        prefix: &str,
    ) -> StoreResult<Vec<(String, serde_json::Value)>> {
        self.open()?.user_settings(user_id, prefix).await
    }

    async fn mark_once(&self, key: &str, now: Millis, period_ms: i64) -> StoreResult<bool> {
        self.open()?.mark_once(key, now, period_ms).await
    }

    async fn event_log_end(&self) -> StoreResult<String> {
        self.open()?.event_log_end().await
    }

    async fn claim_webhook(
        &self,
        endpoint: &str,
        holder: &str,
        now: Millis,
        lease_until: Millis,
    ) -> StoreResult<Option<WebhookClaim>> {
        self.open()?
            .claim_webhook(endpoint, holder, now, lease_until)
            .await
    }

    async fn save_webhook_cursor(
        &self,
        endpoint: &str,
        holder: &str,
        cursor: &str,
        lease_until: Millis,
    ) -> StoreResult<bool> {
        self.open()?
            .save_webhook_cursor(endpoint, holder, cursor, lease_until)
            .await
    }

    async fn add_dead_letter(&self, endpoint: &str, letter: DeadLetter) -> StoreResult<()> {
        self.open()?.add_dead_letter(endpoint, letter).await
    }

    async fn dead_letters(&self, endpoint: &str, limit: u32) -> StoreResult<Vec<DeadLetter>> {
        self.open()?.dead_letters(endpoint, limit).await
    }

    async fn dead_letter(&self, endpoint: &str, event_id: &str) -> StoreResult<Option<DeadLetter>> {
        self.open()?.dead_letter(endpoint, event_id).await
    }

    async fn remove_dead_letter(
        &self,
        endpoint: &str,
        event_id: &str,
    ) -> StoreResult<Option<DeadLetter>> {
        self.open()?.remove_dead_letter(endpoint, event_id).await
    }

    /// Stops the connecting task and closes the store if it opened.
    async fn close(&self) -> StoreResult<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        let _ = self.stop.send(true);
        match self.store.get() {
            Some(store) => store.close().await,
            None => Ok(()),
        }
    }

    fn reads_started(&self) -> u64 {
        self.store.get().map_or(0, ScyllaStore::reads_started)
    }

    fn is_ready(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.store.get().is_some_and(ScyllaStore::is_ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable_config() -> ScyllaConfig {
        // Binding and dropping a listener leaves a loopback port with
        // nothing behind it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        serde_yaml::from_str(&format!(
            "{{contact_points: [\"127.0.0.1:{port}\"], datacenter: dc1, keyspace: acme_chat, connect_timeout_ms: 200}}"
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn unreachable_cluster_is_not_ready_and_refuses_writes() {
        let store = ConnectingStore::start(unreachable_config(), PathBuf::from("."));
        assert!(!store.is_ready());
        let appended = store
            .append_message(NewMessage {
                channel_id: String::from("g_1"),
                sender_id: String::from("ann"),
                client_id: String::from("c1"),
                content: crate::store::Content::Text {
                    text: String::from("xin chào"),
                },
                submitted: None,
                reply_to: None,
                mentions: Vec::new(),
                created_at: 1,
                moderation: Vec::new(),
            })
            .await;
        let Err(StoreError::Unavailable(reason)) = appended else {
            panic!("an append without a connection must fail as Unavailable: {appended:?}");
        };
        assert!(reason.to_string().contains("acme_chat"), "{reason}");
        assert_eq!(store.reads_started(), 0);

        store.close().await.unwrap();
        assert!(!store.is_ready());
        assert!(matches!(
            store.close().await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
