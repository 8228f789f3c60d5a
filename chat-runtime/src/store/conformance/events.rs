//! Conformance checks of the event log and of webhook delivery state.

use std::collections::HashSet;

use serde_json::Value;

use super::{Fixture, NOW, add_users, group_of, message, text};
use crate::store::{
    DeadLetter, Deleter, Event, ModerationRecord, NewEvent, Store, StoreError, StoreResult,
    WebhookClaim,
};

/// Reads the whole log from the start, page by page.
async fn all_events(store: &dyn Store) -> Vec<Event> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.events(after.as_deref(), 7).await.unwrap();
        if page.events.is_empty() {
            return events;
        }
        after = Some(page.next_cursor.clone());
        events.extend(page.events);
    }
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|event| event.kind.as_str()).collect()
}

pub(crate) async fn events_record_each_change_once(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    store
        .add_member(&group.id, "alice", "carol", NOW)
        .await
        .unwrap();
    // Adding a member twice changes nothing, so it records nothing.
    store
        .add_member(&group.id, "alice", "carol", NOW)
        .await
        .unwrap();
    let first = store
        .append_message(message(&group.id, "alice", "c1", text("xin chào")))
        .await
        .unwrap();
    // A retry with the same client id is the same message.
    store
        .append_message(message(&group.id, "alice", "c1", text("xin chào")))
        .await
        .unwrap();
    store.mark_read(&group.id, "bob", 1).await.unwrap();
    store.mark_read(&group.id, "bob", 1).await.unwrap();
    store
        .react(&group.id, 1, "bob", "👍", true, NOW)
        .await
        .unwrap();
    store
        .delete_message(&group.id, 1, Deleter::Member("alice"), NOW)
        .await
        .unwrap();
    store
        .remove_member(&group.id, "alice", "carol", NOW)
        .await
        .unwrap();
    store.delete_user("carol", NOW).await.unwrap();

    let events = all_events(&*store).await;
    assert_eq!(
        kinds(&events),
        [
            "user.upserted",
            "user.upserted",
            "user.upserted",
            "channel.created",
            "member.added",
            "message.new",
            "channel.read",
            "reaction.added",
            "message.deleted",
            "member.removed",
            "user.deleted",
        ]
    );
    let new = &events[5];
    assert_eq!(new.channel_id.as_deref(), Some(group.id.as_str()));
    assert_eq!(new.data["message"]["seq"], 1);
    assert_eq!(new.data["message"]["content"]["text"], "xin chào");
    assert_eq!(new.created_at, first.message.created_at);
    assert_eq!(events[6].data["user_id"], "bob");
    assert_eq!(events[6].data["read_seq"], 1);
    assert_eq!(events[8].data["deleted_by"], "alice");
    assert_eq!(events[3].data["members"].as_array().map(Vec::len), Some(2));

    let ids: HashSet<&str> = events.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "event ids must be unique");
}

pub(crate) async fn events_resume_after_cursor(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    let before = store.events(None, 1000).await.unwrap();

    for index in 0..5 {
        let client_id = format!("c{index}");
        store
            .append_message(message(&group.id, "alice", &client_id, text("tin")))
            .await
            .unwrap();
    }
    let page = store.events(Some(&before.next_cursor), 3).await.unwrap();
    assert_eq!(page.events.len(), 3);
    let rest = store.events(Some(&page.next_cursor), 100).await.unwrap();
    let seqs: Vec<&Value> = page
        .events
        .iter()
        .chain(&rest.events)
        .map(|event| &event.data["message"]["seq"])
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);

    // At the end of the log an empty page keeps the cursor.
    let empty = store.events(Some(&rest.next_cursor), 100).await.unwrap();
    assert!(empty.events.is_empty());
    assert_eq!(empty.next_cursor, rest.next_cursor);

    let invalid = store.events(Some("not a cursor"), 10).await;
    assert!(
        matches!(invalid, Err(StoreError::Invalid(_))),
        "{invalid:?}"
    );
}

pub(crate) async fn events_of_channel_keep_its_order(fixture: &dyn Fixture) {
    let first = fixture.store();
    add_users(&*first, &["alice", "bob"]).await;
    let group = group_of(&*first, "alice", &["bob"]).await;
    let second = fixture.open_same_data().await;

    const ROUNDS: usize = 20;
    let send = |store: std::sync::Arc<dyn Store>, sender: &'static str| {
        let channel_id = group.id.clone();
        tokio::spawn(async move {
            for round in 0..ROUNDS {
                let client_id = format!("{sender}-{round}");
                store
                    .append_message(message(&channel_id, sender, &client_id, text("hi")))
                    .await
                    .unwrap();
            }
        })
    };
    let alice = send(first.clone(), "alice");
    let bob = send(second.clone(), "bob");
    alice.await.unwrap();
    bob.await.unwrap();

    let seqs: Vec<u64> = all_events(&*first)
        .await
        .iter()
        .filter(|event| event.kind == "message.new")
        .filter_map(|event| event.data["message"]["seq"].as_u64())
        .collect();
    let expected: Vec<u64> = (1..=2 * ROUNDS as u64).collect();
    assert_eq!(seqs, expected);
    second.close().await.unwrap();
}

pub(crate) async fn moderation_decisions_are_events(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    let record = |action: &str| ModerationRecord {
        rule: "contacts".to_owned(),
        action: action.to_owned(),
        shadow: false,
        reason: "contact_details".to_owned(),
        user_id: "alice".to_owned(),
        channel_id: group.id.clone(),
        client_id: Some("c1".to_owned()),
    };

    let mut masked = message(&group.id, "alice", "c1", text("gọi ***"));
    masked.moderation = vec![record("mask")];
    store.append_message(masked).await.unwrap();
    store
        .append_events(vec![NewEvent::moderation(&record("block"), None, NOW)])
        .await
        .unwrap();

    let events = all_events(&*store).await;
    let tail: Vec<&Event> = events.iter().rev().take(3).rev().collect();
    let tail_kinds: Vec<&str> = tail.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(
        tail_kinds,
        ["message.new", "moderation.decision", "moderation.decision"]
    );
    assert_eq!(tail[1].data["action"], "mask");
    assert_eq!(tail[1].data["seq"], 1);
    assert_eq!(tail[2].data["action"], "block");
    assert_eq!(tail[2].data["seq"], Value::Null);
    assert_eq!(tail[2].data["client_id"], "c1");
}

pub(crate) async fn events_survive_reopen_until_purged(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice"]).await;
    store
        .upsert_user("bob", "Bob", serde_json::json!({}), NOW + 10_000)
        .await
        .unwrap();
    let first_page = store.events(None, 1).await.unwrap();
    store.close().await.unwrap();

    let reopened = fixture.open_same_data().await;
    assert_eq!(all_events(&*reopened).await.len(), 2);

    let purged: StoreResult<u64> = reopened.purge_events(NOW + 1).await;
    assert_eq!(purged.unwrap(), 1);
    let left = all_events(&*reopened).await;
    assert_eq!(kinds(&left), ["user.upserted"]);
    assert_eq!(left[0].data["user"]["id"], "bob");

    // The cursor before the purged event has expired. The one after it
    // still reads on.
    let expired = reopened.events(Some("0"), 10).await;
    let expired_before_first = reopened
        .events(None, 10)
        .await
        .map(|page| page.events.len());
    assert_eq!(expired_before_first.unwrap(), 1);
    assert!(
        matches!(
            expired,
            Err(StoreError::CursorExpired | StoreError::Invalid(_))
        ),
        "{expired:?}"
    );
    let after_first = reopened
        .events(Some(&first_page.next_cursor), 10)
        .await
        .unwrap();
    assert_eq!(after_first.events.len(), 1);
    reopened.close().await.unwrap();
}

pub(crate) async fn webhook_claims_exclude_each_other(fixture: &dyn Fixture) {
    let first = fixture.store();
    let second = fixture.open_same_data().await;

    let claim = first
        .claim_webhook("analytics", "process-a", NOW, NOW + 10_000)
        .await
        .unwrap();
    assert_eq!(claim, Some(WebhookClaim { cursor: None }));
    // Another process cannot take it while the lease runs.
    let taken = second
        .claim_webhook("analytics", "process-b", NOW + 5_000, NOW + 15_000)
        .await
        .unwrap();
    assert_eq!(taken, None);
    // Another endpoint is claimed on its own.
    assert!(
        second
            .claim_webhook("push", "process-b", NOW, NOW + 10_000)
            .await
            .unwrap()
            .is_some()
    );

    assert!(
        first
            .save_webhook_cursor("analytics", "process-a", "42", NOW + 20_000)
            .await
            .unwrap()
    );
    assert!(
        !second
            .save_webhook_cursor("analytics", "process-b", "43", NOW + 20_000)
            .await
            .unwrap()
    );
    // Once the lease ran out, the other process takes over from the cursor.
    let taken = second
        .claim_webhook("analytics", "process-b", NOW + 20_001, NOW + 30_000)
        .await
        .unwrap();
    assert_eq!(
        taken,
        Some(WebhookClaim {
            cursor: Some("42".to_owned())
        })
    );
    assert!(
        !first
            .save_webhook_cursor("analytics", "process-a", "50", NOW + 40_000)
            .await
            .unwrap()
    );
    second.close().await.unwrap();
}

pub(crate) async fn dead_letters_keep_event_order(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let events = all_events(&*store).await;
    assert_eq!(events.len(), 3);
    let letter = |event: &Event| DeadLetter {
        event: event.clone(),
        attempts: 5,
        last_error: "HTTP 500".to_owned(),
        failed_at: NOW,
    };
    store
        .add_dead_letter("analytics", letter(&events[2]))
        .await
        .unwrap();
    store
        .add_dead_letter("analytics", letter(&events[0]))
        .await
        .unwrap();
    store
        .add_dead_letter("push", letter(&events[1]))
        .await
        .unwrap();

    let listed = store.dead_letters("analytics", 10).await.unwrap();
    let ids: Vec<&str> = listed
        .iter()
        .map(|letter| letter.event.id.as_str())
        .collect();
    assert_eq!(ids, [events[0].id.as_str(), events[2].id.as_str()]);
    assert_eq!(listed[0], letter(&events[0]));

    let found = store.dead_letter("analytics", &events[2].id).await.unwrap();
    assert_eq!(found, Some(letter(&events[2])));
    assert_eq!(
        store.dead_letter("push", &events[2].id).await.unwrap(),
        None
    );

    let removed = store
        .remove_dead_letter("analytics", &events[0].id)
        .await
        .unwrap();
    assert_eq!(removed, Some(letter(&events[0])));
    let again = store
        .remove_dead_letter("analytics", &events[0].id)
        .await
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(store.dead_letters("analytics", 10).await.unwrap().len(), 1);
    assert_eq!(store.dead_letters("push", 10).await.unwrap().len(), 1);

    assert_eq!(
        store.event_log_end().await.unwrap(),
        events[2].cursor,
        "the log ends at the newest event"
    );
}
