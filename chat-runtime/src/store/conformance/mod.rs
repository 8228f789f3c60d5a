//! Behaviour every [`Store`] implementation must show, written once and run
//! against each backend.
//!
//! A backend's test module implements [`Fixture`] and calls
//! [`store_conformance_tests!`], which expands to one `#[tokio::test]` per
//! check below. Each test gets a fixture of its own, so a backend gives each
//! one separate data (a new file, a new keyspace) and tests never see each
//! other's rows.

mod events;
mod message_changes;
mod reports;
mod safety;

pub(crate) use events::*;
pub(crate) use message_changes::*;
pub(crate) use reports::*;
pub(crate) use safety::*;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{
    Channel, ChannelKind, Content, MemberRole, Message, Millis, NewMessage, Page, Store,
    StoreError, StoreResult, UserAuthState,
};

pub(crate) const NOW: Millis = 1_700_000_000_000;

/// Data of one test on one backend.
#[async_trait::async_trait]
pub(crate) trait Fixture: Send + Sync {
    /// Returns the store under test.
    fn store(&self) -> Arc<dyn Store>;

    /// Opens another store on the same data, as a second runtime process
    /// would. Called after the first store was closed, it stands for a
    /// restart.
    async fn open_same_data(&self) -> Arc<dyn Store>;

    /// Opens a store on separate data, as another tenant's store would be.
    async fn open_other_tenant(&self) -> Arc<dyn Store>;

    /// Removes what the test created outside the process, once the check
    /// passed. A failed check leaves it for inspection.
    async fn clean_up(&self) {}
}

/// Expands to one test per conformance check. `$fixture` is an async
/// expression that returns `Option<impl Fixture>`. `None` skips the check,
/// for a backend whose server is not configured on this machine.
macro_rules! store_conformance_tests {
    ($fixture:expr) => {
        $crate::store::conformance::store_conformance_tests!(
            @each $fixture;
            upsert_user_creates_and_updates,
            append_seqs_contiguous_under_concurrency,
            dedupe_returns_duplicate_or_conflict,
            dedupe_ignores_json_key_order,
            retries_match_submitted_content,
            dedupe_survives_reopen_until_purged,
            two_stores_share_one_channel,
            direct_channel_idempotent,
            direct_channel_same_across_stores,
            group_membership_rules,
            create_group_rejects_unknown_member,
            new_member_starts_with_history_read,
            history_paging_while_appending,
            history_page_boundaries,
            messages_between_bounds,
            mark_read_monotonic_and_capped,
            list_channels_order_and_cursor,
            deleted_user_shows_as_sender_deleted,
            revoke_tokens_moves_forward_only,
            append_rejects_non_finite_location,
            tenants_do_not_share_data,
            closed_store_rejects_calls,
            edit_replaces_content,
            delete_keeps_seq_and_fixes_unread,
            delete_checks_who_deletes,
            replies_and_mentions,
            reactions_count_per_user,
            delivered_positions_monotonic,
            receipts_under_concurrent_writes,
            events_record_each_change_once,
            events_resume_after_cursor,
            events_of_channel_keep_its_order,
            moderation_decisions_are_events,
            events_survive_reopen_until_purged,
            webhook_claims_exclude_each_other,
            dead_letters_keep_event_order,
            mutes_stop_sends_until_lifted,
            bans_remove_and_keep_out,
            blocks_stop_direct_channels_and_delivery,
            blocked_messages_keep_channel_order,
            slow_mode_spaces_sends,
            reports_queue_and_resolve,
            flag_decisions_file_reports,
            user_settings_and_once_marks,
            once_mark_has_one_winner,
        );
    };
    (@each $fixture:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let Some(fixture) = $fixture.await else {
                    return;
                };
                $crate::store::conformance::$check(&fixture).await;
                $crate::store::conformance::Fixture::clean_up(&fixture).await;
            }
        )*
    };
}
pub(crate) use store_conformance_tests;

pub(crate) async fn add_users(store: &dyn Store, ids: &[&str]) {
    for id in ids {
        store
            .upsert_user(id, &format!("{id} name"), json!({"plan": "free"}), NOW)
            .await
            .unwrap();
    }
}

pub(crate) fn text(body: &str) -> Content {
    Content::Text {
        text: body.to_owned(),
    }
}

pub(crate) fn message(
    channel_id: &str,
    sender: &str,
    client_id: &str,
    content: Content,
) -> NewMessage {
    NewMessage {
        channel_id: channel_id.to_owned(),
        sender_id: sender.to_owned(),
        client_id: client_id.to_owned(),
        content,
        submitted: None,
        reply_to: None,
        mentions: Vec::new(),
        created_at: NOW,
        moderation: Vec::new(),
    }
}

pub(crate) async fn group_of(store: &dyn Store, owner: &str, others: &[&str]) -> Channel {
    let others: Vec<String> = others.iter().map(|id| (*id).to_owned()).collect();
    let (channel, _) = store
        .create_group(owner, "team", &others, NOW)
        .await
        .unwrap();
    channel
}

pub(crate) fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|message| message.seq).collect()
}

pub(crate) fn is_unavailable<T: std::fmt::Debug>(result: &StoreResult<T>) -> bool {
    matches!(result, Err(StoreError::Unavailable(_)))
}

pub(crate) async fn upsert_user_creates_and_updates(fixture: &dyn Fixture) {
    let store = fixture.store();

    let created = store
        .upsert_user("alice", "Alice", json!({"plan": "free"}), NOW)
        .await
        .unwrap();
    assert_eq!(created.name.as_deref(), Some("Alice"));
    assert_eq!(created.created_at, NOW);
    assert!(!created.deleted);

    let updated = store
        .upsert_user("alice", "Alice B", json!({"plan": "pro"}), NOW + 5)
        .await
        .unwrap();
    assert_eq!(updated.name.as_deref(), Some("Alice B"));
    assert_eq!(updated.metadata, json!({"plan": "pro"}));
    assert_eq!(updated.created_at, NOW);
    assert_eq!(updated.updated_at, NOW + 5);

    assert_eq!(store.get_user("alice").await.unwrap(), Some(updated));
    assert_eq!(store.get_user("nobody").await.unwrap(), None);
    let state = store.user_auth_state("alice").await.unwrap().unwrap();
    assert!(!state.deleted);
    assert_eq!(state.tokens_not_before, None);
    assert_eq!(store.user_auth_state("nobody").await.unwrap(), None);
}

pub(crate) async fn append_seqs_contiguous_under_concurrency(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "mallory"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;

    let mut tasks = Vec::new();
    for task in 0..40 {
        let store = Arc::clone(&store);
        let channel_id = group.id.clone();
        tasks.push(tokio::spawn(async move {
            let sender = if task % 2 == 0 { "alice" } else { "bob" };
            let mut seqs = Vec::new();
            for i in 0..10 {
                let client_id = format!("{task}-{i}");
                let appended = store
                    .append_message(message(&channel_id, sender, &client_id, text("hi")))
                    .await
                    .unwrap();
                assert!(!appended.duplicate);
                seqs.push(appended.message.seq);

                // A non-member's request runs among the others and must
                // fail alone, without taking a sequence number.
                let outsider = store
                    .append_message(message(&channel_id, "mallory", &client_id, text("no")))
                    .await;
                assert!(matches!(outsider, Err(StoreError::NotFound)));
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<u64>>());

    let (channel, _) = store.channel_for_member(&group.id, "alice").await.unwrap();
    assert_eq!(channel.last_seq, 400);
    let stored = store
        .history(
            &group.id,
            "bob",
            Page::After {
                after: 0,
                limit: 1000,
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(&stored), (1..=400).collect::<Vec<u64>>());
    assert!(stored.iter().all(|message| message.sender_id != "mallory"));
}

pub(crate) async fn dedupe_returns_duplicate_or_conflict(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    let other = group_of(&*store, "alice", &["bob"]).await;

    let first = store
        .append_message(message(&group.id, "alice", "c1", text("hello")))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.message.seq, 1);

    let again = store
        .append_message(message(&group.id, "alice", "c1", text("hello")))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, first.message);
    assert_eq!(again.members, vec!["alice".to_owned(), "bob".to_owned()]);

    let changed = store
        .append_message(message(&group.id, "alice", "c1", text("edited")))
        .await;
    assert!(matches!(changed, Err(StoreError::ClientIdConflict)));
    let elsewhere = store
        .append_message(message(&other.id, "alice", "c1", text("hello")))
        .await;
    assert!(matches!(elsewhere, Err(StoreError::ClientIdConflict)));

    // Client ids are unique per sender, so bob may use the same one.
    let from_bob = store
        .append_message(message(&group.id, "bob", "c1", text("hello")))
        .await
        .unwrap();
    assert!(!from_bob.duplicate);
    assert_eq!(from_bob.message.seq, 2);

    let (channel, _) = store.channel_for_member(&group.id, "alice").await.unwrap();
    assert_eq!(channel.last_seq, 2);
    let (other_channel, _) = store.channel_for_member(&other.id, "alice").await.unwrap();
    assert_eq!(other_channel.last_seq, 0);
}

pub(crate) async fn retries_match_submitted_content(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    let submitted = text("gọi 0912 345 678");
    let masked = |mask: &str| {
        let mut new = message(&group.id, "alice", "c1", text(mask));
        new.submitted = Some(submitted.clone());
        new
    };

    let unused = store.find_retry(&masked("gọi ***")).await.unwrap();
    assert!(unused.is_none(), "{unused:?}");
    let first = store.append_message(masked("gọi ***")).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.message.content, Some(text("gọi ***")));

    // A retry that moderation changed differently still finds the message.
    let found = store.find_retry(&masked("gọi ###")).await.unwrap().unwrap();
    assert!(found.duplicate);
    assert_eq!(found.message, first.message);
    assert_eq!(found.members, ["alice", "bob"]);
    let again = store.append_message(masked("gọi ###")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, first.message);

    // Other submitted content under the same client id is a conflict.
    let mut other = masked("gọi ***");
    other.submitted = Some(text("gọi 0987 654 321"));
    let conflict = store.find_retry(&other).await;
    assert!(
        matches!(conflict, Err(StoreError::ClientIdConflict)),
        "{conflict:?}"
    );
    let outsider = store
        .find_retry(&message(&group.id, "carol", "c1", text("hi")))
        .await;
    assert!(
        matches!(outsider, Err(StoreError::NotFound)),
        "{outsider:?}"
    );
    let (channel, _) = store.channel_for_member(&group.id, "alice").await.unwrap();
    assert_eq!(channel.last_seq, 1);
}

pub(crate) async fn dedupe_ignores_json_key_order(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice"]).await;
    let group = group_of(&*store, "alice", &[]).await;

    let forward: serde_json::Value =
        serde_json::from_str(r#"{"a": 1, "b": {"x": 1, "y": 2}}"#).unwrap();
    let backward: serde_json::Value =
        serde_json::from_str(r#"{"b": {"y": 2, "x": 1}, "a": 1}"#).unwrap();
    let first = store
        .append_message(message(
            &group.id,
            "alice",
            "c1",
            Content::Custom { data: forward },
        ))
        .await
        .unwrap();
    let second = store
        .append_message(message(
            &group.id,
            "alice",
            "c1",
            Content::Custom { data: backward },
        ))
        .await
        .unwrap();
    assert!(second.duplicate);
    assert_eq!(second.message.seq, first.message.seq);
}

pub(crate) async fn dedupe_survives_reopen_until_purged(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice"]).await;
    let group = group_of(&*store, "alice", &[]).await;
    store
        .append_message(message(&group.id, "alice", "c1", text("hello")))
        .await
        .unwrap();
    store.close().await.unwrap();

    let store = fixture.open_same_data().await;
    let again = store
        .append_message(message(&group.id, "alice", "c1", text("hello")))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.seq, 1);
    let changed = store
        .append_message(message(&group.id, "alice", "c1", text("edited")))
        .await;
    assert!(matches!(changed, Err(StoreError::ClientIdConflict)));

    assert_eq!(store.purge_client_ids(NOW).await.unwrap(), 0);
    assert_eq!(store.purge_client_ids(NOW + 1).await.unwrap(), 1);
    let after_purge = store
        .append_message(message(&group.id, "alice", "c1", text("edited")))
        .await
        .unwrap();
    assert!(!after_purge.duplicate);
    assert_eq!(after_purge.message.seq, 2);
}

pub(crate) async fn two_stores_share_one_channel(fixture: &dyn Fixture) {
    let first = fixture.store();
    let second = fixture.open_same_data().await;
    let stores = [first, second];
    add_users(&*stores[0], &["alice", "bob"]).await;
    let group = group_of(&*stores[1], "alice", &["bob"]).await;

    let mut tasks = Vec::new();
    for task in 0..20 {
        let store = Arc::clone(&stores[task % 2]);
        let channel_id = group.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..10 {
                let client_id = format!("{task}-{i}");
                let appended = store
                    .append_message(message(&channel_id, "alice", &client_id, text("hi")))
                    .await
                    .unwrap();
                seqs.push(appended.message.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>());

    // The same client id sent through both stores at once is stored once.
    let racing = ["race-1", "race-2", "race-3"];
    for client_id in racing {
        let (left, right) = tokio::join!(
            stores[0].append_message(message(&group.id, "bob", client_id, text("same"))),
            stores[1].append_message(message(&group.id, "bob", client_id, text("same"))),
        );
        let (left, right) = (left.unwrap(), right.unwrap());
        assert_eq!(left.message.seq, right.message.seq);
        assert!(left.duplicate != right.duplicate);
    }

    let conflict = stores[1]
        .append_message(message(&group.id, "alice", "0-0", text("different")))
        .await;
    assert!(matches!(conflict, Err(StoreError::ClientIdConflict)));

    let stored = stores[0]
        .history(
            &group.id,
            "bob",
            Page::After {
                after: 0,
                limit: 1000,
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(&stored), (1..=203).collect::<Vec<u64>>());
}

pub(crate) async fn direct_channel_idempotent(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;

    let (plain, members) = store.open_direct("alice", "bob", None, NOW).await.unwrap();
    assert!(plain.id.starts_with("d_"));
    assert_eq!(plain.kind, ChannelKind::Direct);
    assert_eq!(plain.subject, None);
    assert_eq!(members, vec!["alice".to_owned(), "bob".to_owned()]);
    let (reversed, _) = store
        .open_direct("bob", "alice", None, NOW + 1)
        .await
        .unwrap();
    assert_eq!(reversed, plain);
    let (empty_subject, _) = store
        .open_direct("bob", "alice", Some(""), NOW)
        .await
        .unwrap();
    assert_eq!(empty_subject.id, plain.id);

    let (order, _) = store
        .open_direct("alice", "bob", Some("order-1"), NOW)
        .await
        .unwrap();
    let (order_reversed, _) = store
        .open_direct("bob", "alice", Some("order-1"), NOW)
        .await
        .unwrap();
    assert_eq!(order_reversed.id, order.id);
    assert_eq!(order.subject.as_deref(), Some("order-1"));
    assert_ne!(order.id, plain.id);
    let (other_order, _) = store
        .open_direct("alice", "bob", Some("order-2"), NOW)
        .await
        .unwrap();
    assert_ne!(other_order.id, order.id);
    let (with_carol, _) = store
        .open_direct("alice", "carol", None, NOW)
        .await
        .unwrap();
    assert_ne!(with_carol.id, plain.id);

    let listed = store.list_channels("alice", None, 100).await.unwrap();
    assert_eq!(listed.len(), 4);

    let same_user = store.open_direct("alice", "alice", None, NOW).await;
    assert!(matches!(same_user, Err(StoreError::Invalid(_))));
    let unknown = store.open_direct("alice", "nobody", None, NOW).await;
    assert!(matches!(unknown, Err(StoreError::NotFound)));
    store.delete_user("carol", NOW).await.unwrap();
    let deleted = store.open_direct("alice", "carol", None, NOW).await;
    assert!(matches!(deleted, Err(StoreError::NotFound)));
}

pub(crate) async fn direct_channel_same_across_stores(fixture: &dyn Fixture) {
    let first = fixture.store();
    let second = fixture.open_same_data().await;
    add_users(&*first, &["alice", "bob"]).await;

    for subject in ["listing-1", "listing-2", "listing-3"] {
        let (left, right) = tokio::join!(
            first.open_direct("alice", "bob", Some(subject), NOW),
            second.open_direct("bob", "alice", Some(subject), NOW),
        );
        assert_eq!(left.unwrap().0.id, right.unwrap().0.id);
    }
    assert_eq!(
        first.list_channels("bob", None, 100).await.unwrap().len(),
        3
    );
}

pub(crate) async fn group_membership_rules(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["owner", "bob", "carol", "dave", "gone"]).await;
    store.delete_user("gone", NOW).await.unwrap();

    let members = vec!["bob".to_owned(), "bob".to_owned(), "owner".to_owned()];
    let (group, listed) = store
        .create_group("owner", "team", &members, NOW)
        .await
        .unwrap();
    assert!(group.id.starts_with("g_"));
    assert_eq!(group.kind, ChannelKind::Group);
    assert_eq!(group.name.as_deref(), Some("team"));
    assert_eq!(listed, vec!["bob".to_owned(), "owner".to_owned()]);
    let (_, roles) = store.channel_for_member(&group.id, "owner").await.unwrap();
    let owner_role = roles
        .iter()
        .find(|member| member.user_id == "owner")
        .unwrap()
        .role;
    let bob_role = roles
        .iter()
        .find(|member| member.user_id == "bob")
        .unwrap()
        .role;
    assert_eq!(owner_role, MemberRole::Owner);
    assert_eq!(bob_role, MemberRole::Member);

    let by_member = store.add_member(&group.id, "bob", "carol", NOW).await;
    assert!(matches!(by_member, Err(StoreError::Forbidden(_))));
    let by_outsider = store.add_member(&group.id, "dave", "carol", NOW).await;
    assert!(matches!(by_outsider, Err(StoreError::NotFound)));
    let unknown_channel = store.add_member("g_missing", "owner", "carol", NOW).await;
    assert!(matches!(unknown_channel, Err(StoreError::NotFound)));
    let unknown_user = store.add_member(&group.id, "owner", "nobody", NOW).await;
    assert!(matches!(unknown_user, Err(StoreError::NotFound)));
    let deleted_user = store.add_member(&group.id, "owner", "gone", NOW).await;
    assert!(matches!(deleted_user, Err(StoreError::NotFound)));

    let added = store
        .add_member(&group.id, "owner", "carol", NOW)
        .await
        .unwrap();
    assert!(added.changed);
    assert_eq!(
        added.members,
        vec!["bob".to_owned(), "carol".to_owned(), "owner".to_owned()]
    );
    let added_again = store
        .add_member(&group.id, "owner", "carol", NOW)
        .await
        .unwrap();
    assert!(!added_again.changed);
    assert_eq!(added_again.members.len(), 3);

    let remove_other = store.remove_member(&group.id, "bob", "carol", NOW).await;
    assert!(matches!(remove_other, Err(StoreError::Forbidden(_))));
    let owner_leaves = store.remove_member(&group.id, "owner", "owner", NOW).await;
    assert!(matches!(owner_leaves, Err(StoreError::Forbidden(_))));
    let outsider_removes = store.remove_member(&group.id, "dave", "dave", NOW).await;
    assert!(matches!(outsider_removes, Err(StoreError::NotFound)));

    let left = store
        .remove_member(&group.id, "bob", "bob", NOW)
        .await
        .unwrap();
    assert!(left.changed);
    assert_eq!(left.members, vec!["carol".to_owned(), "owner".to_owned()]);
    let gone_already = store
        .remove_member(&group.id, "owner", "bob", NOW)
        .await
        .unwrap();
    assert!(!gone_already.changed);
    let removed = store
        .remove_member(&group.id, "owner", "carol", NOW)
        .await
        .unwrap();
    assert!(removed.changed);
    assert_eq!(removed.members, vec!["owner".to_owned()]);
    let after_leaving = store.channel_for_member(&group.id, "bob").await;
    assert!(matches!(after_leaving, Err(StoreError::NotFound)));
    let history = store
        .history(&group.id, "bob", Page::Latest { limit: 10 })
        .await;
    assert!(matches!(history, Err(StoreError::NotFound)));

    let (direct, _) = store.open_direct("owner", "bob", None, NOW).await.unwrap();
    let add_direct = store.add_member(&direct.id, "owner", "carol", NOW).await;
    assert!(matches!(add_direct, Err(StoreError::Invalid(_))));
    let remove_direct = store.remove_member(&direct.id, "owner", "bob", NOW).await;
    assert!(matches!(remove_direct, Err(StoreError::Invalid(_))));

    assert_eq!(
        store.member_ids(&group.id).await.unwrap(),
        vec!["owner".to_owned()]
    );
    assert!(matches!(
        store.member_ids("g_missing").await,
        Err(StoreError::NotFound)
    ));
}

pub(crate) async fn create_group_rejects_unknown_member(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["owner", "gone"]).await;
    store.delete_user("gone", NOW).await.unwrap();

    for member in ["nobody", "gone"] {
        let result = store
            .create_group("owner", "team", &[member.to_owned()], NOW)
            .await;
        assert!(
            matches!(result, Err(StoreError::NotFound)),
            "member {member}"
        );
    }
    let by_unknown = store.create_group("nobody", "team", &[], NOW).await;
    assert!(matches!(by_unknown, Err(StoreError::NotFound)));
    assert!(
        store
            .list_channels("owner", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn new_member_starts_with_history_read(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["owner", "bob"]).await;
    let group = group_of(&*store, "owner", &[]).await;
    for i in 0..3 {
        store
            .append_message(message(&group.id, "owner", &format!("c{i}"), text("hi")))
            .await
            .unwrap();
    }
    store
        .add_member(&group.id, "owner", "bob", NOW)
        .await
        .unwrap();

    let listed = store.list_channels("bob", None, 10).await.unwrap();
    assert_eq!(listed[0].read_seq, 3);
    assert_eq!(listed[0].unread, 0);
    let (_, members) = store.channel_for_member(&group.id, "bob").await.unwrap();
    let bob = members
        .iter()
        .find(|member| member.user_id == "bob")
        .unwrap();
    assert_eq!(
        bob.delivered_seq, 3,
        "history marked read counts as delivered"
    );
}

pub(crate) async fn history_paging_while_appending(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    for i in 0..30 {
        store
            .append_message(message(&group.id, "alice", &format!("a{i}"), text("hi")))
            .await
            .unwrap();
    }

    let appender = {
        let store = Arc::clone(&store);
        let channel_id = group.id.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                store
                    .append_message(message(&channel_id, "bob", &format!("b{i}"), text("hi")))
                    .await
                    .unwrap();
            }
        })
    };

    // Backwards from the newest page down to seq 1.
    let latest = store
        .history(&group.id, "alice", Page::Latest { limit: 7 })
        .await
        .unwrap();
    assert_eq!(latest.len(), 7);
    let newest = latest[6].seq;
    let mut backward = seqs(&latest);
    loop {
        let before = backward[0];
        let page = store
            .history(&group.id, "alice", Page::Before { before, limit: 7 })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        let page = seqs(&page);
        assert_eq!(
            *page.last().unwrap(),
            before - 1,
            "page must end right before {before}"
        );
        backward.splice(0..0, page);
    }
    assert_eq!(backward, (1..=newest).collect::<Vec<u64>>());

    // Forwards from the start until every appended message was read.
    let mut forward: Vec<u64> = Vec::new();
    let mut idle_rounds = 0;
    while forward.len() < 80 {
        let after = forward.last().copied().unwrap_or(0);
        let page = store
            .history(&group.id, "bob", Page::After { after, limit: 9 })
            .await
            .unwrap();
        if page.is_empty() {
            idle_rounds += 1;
            assert!(idle_rounds < 5000, "appender stalled at seq {after}");
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        assert_eq!(
            page[0].seq,
            after + 1,
            "page must start right after {after}"
        );
        forward.extend(seqs(&page));
    }
    appender.await.unwrap();
    assert_eq!(forward, (1..=80).collect::<Vec<u64>>());
    let rest = store
        .history(
            &group.id,
            "bob",
            Page::After {
                after: 80,
                limit: 9,
            },
        )
        .await
        .unwrap();
    assert!(rest.is_empty());
}

pub(crate) async fn messages_between_bounds(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice"]).await;
    let group = group_of(&*store, "alice", &[]).await;
    for i in 0..5 {
        store
            .append_message(message(&group.id, "alice", &format!("c{i}"), text("hi")))
            .await
            .unwrap();
    }

    let middle = store
        .messages_between(&group.id, "alice", 1, 3)
        .await
        .unwrap();
    assert_eq!(seqs(&middle), vec![2, 3]);
    let to_end = store
        .messages_between(&group.id, "alice", 3, u64::MAX)
        .await
        .unwrap();
    assert_eq!(seqs(&to_end), vec![4, 5]);
    assert!(
        store
            .messages_between("g_missing", "alice", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn mark_read_monotonic_and_capped(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    for i in 0..5 {
        let appended = store
            .append_message(message(&group.id, "alice", &format!("c{i}"), text("hi")))
            .await
            .unwrap();
        assert_eq!(appended.message.seq, i + 1);
    }

    let positions = store.mark_read(&group.id, "bob", 3).await.unwrap();
    assert_eq!(positions.read_seq, 3);
    assert_eq!(positions.delivered_seq, 3, "a read message was delivered");
    assert!(positions.changed);
    assert_eq!(
        positions.members,
        vec!["alice".to_owned(), "bob".to_owned()]
    );
    let positions = store.mark_read(&group.id, "bob", 2).await.unwrap();
    assert_eq!(positions.read_seq, 3, "read position must not move back");
    assert!(!positions.changed);
    let positions = store.mark_read(&group.id, "bob", 100).await.unwrap();
    assert_eq!(positions.read_seq, 5, "read position must stop at last_seq");
    let positions = store.mark_read(&group.id, "bob", u64::MAX).await.unwrap();
    assert_eq!(positions.read_seq, 5);
    assert!(!positions.changed);

    let outsider = store.mark_read(&group.id, "carol", 1).await;
    assert!(matches!(outsider, Err(StoreError::NotFound)));
    let unknown = store.mark_read("g_missing", "bob", 1).await;
    assert!(matches!(unknown, Err(StoreError::NotFound)));

    store
        .append_message(message(&group.id, "alice", "c5", text("hi")))
        .await
        .unwrap();
    let for_bob = store.list_channels("bob", None, 10).await.unwrap();
    assert_eq!(for_bob[0].read_seq, 5);
    assert_eq!(for_bob[0].unread, 1);
    let for_alice = store.list_channels("alice", None, 10).await.unwrap();
    assert_eq!(
        for_alice[0].read_seq, 6,
        "sending marks the sender's own message read"
    );
    assert_eq!(for_alice[0].unread, 0);
}

pub(crate) async fn list_channels_order_and_cursor(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let (with_bob, _) = store.open_direct("alice", "bob", None, NOW).await.unwrap();
    let (with_carol, _) = store
        .open_direct("alice", "carol", None, NOW + 5)
        .await
        .unwrap();
    let (first_group, _) = store
        .create_group("alice", "one", &[], NOW + 10)
        .await
        .unwrap();
    let (second_group, _) = store
        .create_group("alice", "two", &[], NOW + 10)
        .await
        .unwrap();
    let mut sent = message(&with_bob.id, "bob", "c1", text("hello"));
    sent.created_at = NOW + 20;
    store.append_message(sent).await.unwrap();

    let (tied_high, tied_low) = if first_group.id > second_group.id {
        (&first_group.id, &second_group.id)
    } else {
        (&second_group.id, &first_group.id)
    };
    let expected = vec![
        with_bob.id.clone(),
        tied_high.clone(),
        tied_low.clone(),
        with_carol.id.clone(),
    ];
    let all = store.list_channels("alice", None, 100).await.unwrap();
    let ids: Vec<String> = all
        .iter()
        .map(|summary| summary.channel.id.clone())
        .collect();
    assert_eq!(ids, expected);

    let top = &all[0];
    assert_eq!(top.channel.last_activity, NOW + 20);
    assert_eq!(top.unread, 1);
    let last = top.last_message.as_ref().unwrap();
    assert_eq!(last.seq, 1);
    assert_eq!(last.content, Some(text("hello")));
    assert!(all[1].last_message.is_none());

    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_channels("alice", cursor.clone(), 2)
            .await
            .unwrap();
        let Some(last) = page.last() else {
            break;
        };
        cursor = Some((last.channel.last_activity, last.channel.id.clone()));
        paged.extend(page.into_iter().map(|summary| summary.channel.id));
    }
    assert_eq!(paged, expected);
    assert!(
        store
            .list_channels("nobody", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn revoke_tokens_moves_forward_only(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["lan", "gone"]).await;
    let not_before = |state: Option<UserAuthState>| state.unwrap().tokens_not_before;

    assert_eq!(store.revoke_tokens("lan", 1_000, NOW).await.unwrap(), 1_000);
    let stored = not_before(store.user_auth_state("lan").await.unwrap());
    assert_eq!(stored, Some(1_000));
    // A second revocation in the same second, or one with an older bound,
    // still moves past every token issued so far.
    assert_eq!(store.revoke_tokens("lan", 1_000, NOW).await.unwrap(), 1_001);
    assert_eq!(store.revoke_tokens("lan", 900, NOW).await.unwrap(), 1_002);
    let stored = not_before(store.user_auth_state("lan").await.unwrap());
    assert_eq!(stored, Some(1_002));
    assert_eq!(store.revoke_tokens("lan", 2_000, NOW).await.unwrap(), 2_000);

    store.delete_user("gone", NOW).await.unwrap();
    let deleted = store.revoke_tokens("gone", 1_000, NOW).await;
    assert!(matches!(deleted, Err(StoreError::NotFound)), "{deleted:?}");
    let missing = store.revoke_tokens("nobody", 1_000, NOW).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
}

pub(crate) async fn deleted_user_shows_as_sender_deleted(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob"]).await;
    let group = group_of(&*store, "bob", &["alice"]).await;
    store
        .append_message(message(&group.id, "alice", "c1", text("before")))
        .await
        .unwrap();

    store.delete_user("alice", NOW + 1).await.unwrap();
    let user = store.get_user("alice").await.unwrap().unwrap();
    assert!(user.deleted);
    assert_eq!(user.name, None);
    assert_eq!(user.metadata, serde_json::Value::Null);
    let state = store.user_auth_state("alice").await.unwrap().unwrap();
    assert!(state.deleted);
    let history = store
        .history(&group.id, "bob", Page::Latest { limit: 10 })
        .await
        .unwrap();
    assert!(history[0].sender_deleted);
    let listed = store.list_channels("bob", None, 10).await.unwrap();
    assert!(listed[0].last_message.as_ref().unwrap().sender_deleted);
    assert!(matches!(
        store.delete_user("alice", NOW).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_user("nobody", NOW).await,
        Err(StoreError::NotFound)
    ));
    let deleted_sender = store
        .append_message(message(&group.id, "alice", "c2", text("after")))
        .await;
    assert!(matches!(deleted_sender, Err(StoreError::NotFound)));

    // A new user with the same id is a different person.
    let revived_at = NOW + 2_500;
    let revived = store
        .upsert_user("alice", "New Alice", json!({}), revived_at)
        .await
        .unwrap();
    assert!(!revived.deleted);
    assert_eq!(revived.created_at, revived_at);
    let state = store.user_auth_state("alice").await.unwrap().unwrap();
    assert!(!state.deleted);
    assert_eq!(state.tokens_not_before, Some(revived_at / 1000));
    store
        .append_message(message(&group.id, "alice", "c3", text("new")))
        .await
        .unwrap();
    let history = store
        .history(&group.id, "bob", Page::Latest { limit: 10 })
        .await
        .unwrap();
    assert!(
        history[0].sender_deleted,
        "old messages stay with the deleted user"
    );
    assert!(!history[1].sender_deleted);
}

pub(crate) async fn append_rejects_non_finite_location(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice"]).await;
    let group = group_of(&*store, "alice", &[]).await;

    let location = Content::Location {
        latitude: f64::NAN,
        longitude: 2.0,
        label: None,
    };
    let result = store
        .append_message(message(&group.id, "alice", "c1", location))
        .await;
    assert!(matches!(result, Err(StoreError::Invalid(_))));
    let (channel, _) = store.channel_for_member(&group.id, "alice").await.unwrap();
    assert_eq!(channel.last_seq, 0);
}

pub(crate) async fn history_page_boundaries(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    let empty = store
        .history(&group.id, "bob", Page::Latest { limit: 10 })
        .await
        .unwrap();
    assert!(empty.is_empty());
    for i in 0..5 {
        store
            .append_message(message(&group.id, "alice", &format!("c{i}"), text("hi")))
            .await
            .unwrap();
    }

    let cases = [
        (Page::Latest { limit: 100 }, vec![1, 2, 3, 4, 5]),
        (Page::Latest { limit: 2 }, vec![4, 5]),
        (Page::Latest { limit: 0 }, vec![]),
        (
            Page::Before {
                before: 1,
                limit: 10,
            },
            vec![],
        ),
        (
            Page::Before {
                before: 2,
                limit: 10,
            },
            vec![1],
        ),
        (
            Page::Before {
                before: 6,
                limit: 2,
            },
            vec![4, 5],
        ),
        (
            Page::Before {
                before: u64::MAX,
                limit: 3,
            },
            vec![3, 4, 5],
        ),
        (Page::After { after: 0, limit: 1 }, vec![1]),
        (
            Page::After {
                after: 3,
                limit: 10,
            },
            vec![4, 5],
        ),
        (
            Page::After {
                after: 5,
                limit: 10,
            },
            vec![],
        ),
        (
            Page::After {
                after: u64::MAX,
                limit: 10,
            },
            vec![],
        ),
    ];
    for (page, expected) in cases {
        let read = store.history(&group.id, "bob", page).await.unwrap();
        assert_eq!(seqs(&read), expected, "{page:?}");
    }
}

pub(crate) async fn tenants_do_not_share_data(fixture: &dyn Fixture) {
    let store = fixture.store();
    let other = fixture.open_other_tenant().await;
    add_users(&*store, &["alice", "bob"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    store
        .append_message(message(&group.id, "alice", "c1", text("secret")))
        .await
        .unwrap();

    assert_eq!(other.get_user("alice").await.unwrap(), None);
    assert_eq!(other.user_auth_state("alice").await.unwrap(), None);
    assert!(matches!(
        other.channel_for_member(&group.id, "alice").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        other.member_ids(&group.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        other
            .list_channels("alice", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(other.channel_positions("alice").await.unwrap().is_empty());
    assert!(
        other
            .messages_between(&group.id, "alice", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // The same ids in the other tenant name different users and channels.
    add_users(&*other, &["alice", "bob"]).await;
    let other_group = group_of(&*other, "alice", &["bob"]).await;
    let appended = other
        .append_message(message(&other_group.id, "alice", "c1", text("secret")))
        .await
        .unwrap();
    assert!(!appended.duplicate, "client ids are per tenant");
    assert_eq!(appended.message.seq, 1);
    let in_group = other
        .append_message(message(&group.id, "alice", "c2", text("hi")))
        .await;
    assert!(matches!(in_group, Err(StoreError::NotFound)));
    let (channel, _) = store.channel_for_member(&group.id, "alice").await.unwrap();
    assert_eq!(channel.last_seq, 1);
}

pub(crate) async fn closed_store_rejects_calls(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice"]).await;
    let group = group_of(&*store, "alice", &[]).await;
    store
        .append_message(message(&group.id, "alice", "c1", text("hi")))
        .await
        .unwrap();
    store.close().await.unwrap();

    assert_every_call_unavailable(store.as_ref(), &group.id).await;
    let reopened = fixture.open_same_data().await;
    let stored = reopened
        .messages_between(&group.id, "alice", 0, 10)
        .await
        .unwrap();
    assert_eq!(seqs(&stored), vec![1]);
}

/// Checks that every method of a closed `store` returns `Unavailable`.
pub(crate) async fn assert_every_call_unavailable(store: &dyn Store, channel_id: &str) {
    assert!(is_unavailable(
        &store.upsert_user("bob", "Bob", json!({}), NOW).await
    ));
    assert!(is_unavailable(&store.delete_user("alice", NOW).await));
    assert!(is_unavailable(&store.get_user("alice").await));
    assert!(is_unavailable(&store.user_auth_state("alice").await));

    assert!(is_unavailable(
        &store.open_direct("alice", "bob", None, NOW).await
    ));
    assert!(is_unavailable(
        &store.create_group("alice", "x", &[], NOW).await
    ));
    assert!(is_unavailable(
        &store.add_member(channel_id, "alice", "bob", NOW).await
    ));
    assert!(is_unavailable(
        &store.remove_member(channel_id, "alice", "bob", NOW).await
    ));
    assert!(is_unavailable(
        &store.channel_for_member(channel_id, "alice").await
    ));
    assert!(is_unavailable(&store.member_ids(channel_id).await));

    assert!(is_unavailable(&store.channel_positions("alice").await));
    assert!(is_unavailable(
        &store.list_channels("alice", None, 10).await
    ));

    let late = message(channel_id, "alice", "late", text("hi"));
    assert!(is_unavailable(&store.append_message(late).await));
    assert!(is_unavailable(
        &store
            .history(channel_id, "alice", Page::Latest { limit: 1 })
            .await
    ));
    assert!(is_unavailable(
        &store.messages_between(channel_id, "alice", 0, 10).await
    ));
    assert!(is_unavailable(
        &store.mark_read(channel_id, "alice", 1).await
    ));
    assert!(is_unavailable(&store.purge_client_ids(NOW).await));
    assert!(is_unavailable(&store.close().await));
}
