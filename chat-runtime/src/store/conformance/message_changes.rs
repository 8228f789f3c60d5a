//! Conformance checks for edits, deletes, replies, mentions, reactions and
//! delivery positions.

use super::{Fixture, NOW, add_users, group_of, message, seqs, text};
use crate::store::{
    Deleter, MAX_REACTIONS_PER_USER, MessageEdit, Page, Store, StoreError, StoreResult,
};

fn edit(channel_id: &str, seq: u64, editor: &str, body: &str) -> MessageEdit {
    MessageEdit {
        channel_id: channel_id.to_owned(),
        seq,
        editor: editor.to_owned(),
        content: text(body),
        mentions: None,
        edited_at: NOW + 1_000,
        moderation: Vec::new(),
    }
}

fn is_invalid<T: std::fmt::Debug>(result: &StoreResult<T>) -> bool {
    matches!(result, Err(StoreError::Invalid(_)))
}

fn is_forbidden<T: std::fmt::Debug>(result: &StoreResult<T>) -> bool {
    matches!(result, Err(StoreError::Forbidden(_)))
}

fn is_not_found<T: std::fmt::Debug>(result: &StoreResult<T>) -> bool {
    matches!(result, Err(StoreError::NotFound))
}

async fn send(store: &dyn Store, channel_id: &str, sender: &str, client_id: &str) -> u64 {
    store
        .append_message(message(channel_id, sender, client_id, text(client_id)))
        .await
        .unwrap()
        .message
        .seq
}

async fn summary_of(store: &dyn Store, user: &str) -> crate::store::ChannelSummary {
    let mut listed = store.list_channels(user, None, 10).await.unwrap();
    assert_eq!(listed.len(), 1, "{user} has one channel");
    listed.remove(0)
}

pub(crate) async fn edit_replaces_content(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    let seq = send(&*store, &group.id, "alice", "first").await;

    let change = store
        .edit_message(edit(&group.id, seq, "alice", "sửa rồi"))
        .await
        .unwrap();
    assert!(change.changed);
    assert_eq!(change.message.content, Some(text("sửa rồi")));
    assert_eq!(change.message.edited_at, Some(NOW + 1_000));
    assert_eq!(change.message.seq, seq);
    assert_eq!(change.members, vec!["alice".to_owned(), "bob".to_owned()]);

    let read_back = store.message(&group.id, seq, "bob").await.unwrap();
    assert_eq!(read_back.content, Some(text("sửa rồi")));
    assert_eq!(read_back.edited_at, Some(NOW + 1_000));
    let summary = summary_of(&*store, "bob").await;
    let preview = summary.last_message.expect("a preview");
    assert_eq!(preview.content, Some(text("sửa rồi")));
    assert_eq!(summary.unread, 1, "an edit is not a new message");

    let by_other = store.edit_message(edit(&group.id, seq, "bob", "x")).await;
    assert!(is_forbidden(&by_other), "{by_other:?}");
    let by_outsider = store.edit_message(edit(&group.id, seq, "carol", "x")).await;
    assert!(is_not_found(&by_outsider), "{by_outsider:?}");
    let missing = store.edit_message(edit(&group.id, 99, "alice", "x")).await;
    assert!(is_not_found(&missing), "{missing:?}");
}

pub(crate) async fn delete_keeps_seq_and_fixes_unread(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    for client_id in ["m1", "m2", "m3"] {
        send(&*store, &group.id, "alice", client_id).await;
    }
    assert_eq!(summary_of(&*store, "bob").await.unread, 3);

    let change = store
        .delete_message(&group.id, 2, Deleter::Member("alice"), NOW + 5)
        .await
        .unwrap();
    assert!(change.changed);
    assert_eq!(change.message.content, None);
    assert_eq!(change.message.deleted_at, Some(NOW + 5));
    assert_eq!(change.message.seq, 2);
    assert_eq!(summary_of(&*store, "bob").await.unread, 2);

    let again = store
        .delete_message(&group.id, 2, Deleter::Member("alice"), NOW + 6)
        .await
        .unwrap();
    assert!(!again.changed, "a second delete changes nothing");
    assert_eq!(again.message.deleted_at, Some(NOW + 5));

    // The newest message goes: the preview falls back to the one before.
    store
        .delete_message(&group.id, 3, Deleter::Server, NOW + 7)
        .await
        .unwrap();
    let summary = summary_of(&*store, "bob").await;
    assert_eq!(summary.unread, 1);
    assert_eq!(
        summary.channel.last_seq, 3,
        "the sequence number stays taken"
    );
    let preview = summary.last_message.expect("message 1 is left");
    assert_eq!(preview.seq, 1);
    assert_eq!(preview.content, Some(text("m1")));

    let history = store
        .history(&group.id, "bob", Page::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(
        seqs(&history),
        vec![1, 2, 3],
        "deleted messages keep their place"
    );
    assert!(history[1].content.is_none());
    assert!(history[2].content.is_none());

    // Reading past deleted messages leaves nothing unread, and a message
    // sent later counts once.
    store.mark_read(&group.id, "bob", 3).await.unwrap();
    assert_eq!(summary_of(&*store, "bob").await.unread, 0);
    send(&*store, &group.id, "alice", "m4").await;
    assert_eq!(summary_of(&*store, "bob").await.unread, 1);
    store
        .delete_message(&group.id, 1, Deleter::Server, NOW + 8)
        .await
        .unwrap();
    assert_eq!(
        summary_of(&*store, "bob").await.unread,
        1,
        "deleting a read message leaves the unread count alone"
    );

    store
        .delete_message(&group.id, 4, Deleter::Member("alice"), NOW + 9)
        .await
        .unwrap();
    let summary = summary_of(&*store, "bob").await;
    assert_eq!(summary.unread, 0);
    assert!(summary.last_message.is_none(), "every message is deleted");
}

pub(crate) async fn delete_checks_who_deletes(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    let seq = send(&*store, &group.id, "bob", "bob's").await;

    let by_owner = store
        .delete_message(&group.id, seq, Deleter::Member("alice"), NOW)
        .await;
    assert!(is_forbidden(&by_owner), "{by_owner:?}");
    let by_outsider = store
        .delete_message(&group.id, seq, Deleter::Member("carol"), NOW)
        .await;
    assert!(is_not_found(&by_outsider), "{by_outsider:?}");
    let missing = store
        .delete_message(&group.id, 42, Deleter::Server, NOW)
        .await;
    assert!(is_not_found(&missing), "{missing:?}");
    let unknown_channel = store
        .delete_message("g_missing", 1, Deleter::Server, NOW)
        .await;
    assert!(is_not_found(&unknown_channel), "{unknown_channel:?}");

    store
        .delete_message(&group.id, seq, Deleter::Member("bob"), NOW)
        .await
        .unwrap();
    let edit_deleted = store.edit_message(edit(&group.id, seq, "bob", "x")).await;
    assert!(is_invalid(&edit_deleted), "{edit_deleted:?}");
    let react_deleted = store.react(&group.id, seq, "alice", "👍", true, NOW).await;
    assert!(is_invalid(&react_deleted), "{react_deleted:?}");
    let mut reply = message(&group.id, "alice", "reply", text("re"));
    reply.reply_to = Some(seq);
    let reply_deleted = store.append_message(reply).await;
    assert!(is_invalid(&reply_deleted), "{reply_deleted:?}");
}

pub(crate) async fn replies_and_mentions(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol", "dave"]).await;
    let group = group_of(&*store, "alice", &["bob", "carol"]).await;
    let first = send(&*store, &group.id, "bob", "question").await;

    let mut reply = message(&group.id, "alice", "answer", text("@bob @carol đây"));
    reply.reply_to = Some(first);
    reply.mentions = vec!["bob".to_owned(), "carol".to_owned()];
    let appended = store.append_message(reply.clone()).await.unwrap();
    assert_eq!(appended.message.reply_to, Some(first));
    assert_eq!(appended.message.mentions, vec!["bob", "carol"]);
    let stored = store
        .message(&group.id, appended.message.seq, "carol")
        .await
        .unwrap();
    assert_eq!(stored.reply_to, Some(first));
    assert_eq!(stored.mentions, vec!["bob", "carol"]);

    let retry = store.append_message(reply.clone()).await.unwrap();
    assert!(retry.duplicate);
    let mut changed_mentions = reply.clone();
    changed_mentions.mentions = vec!["bob".to_owned()];
    let conflict = store.append_message(changed_mentions).await;
    assert!(matches!(conflict, Err(StoreError::ClientIdConflict)));

    let bob = summary_of(&*store, "bob").await;
    assert_eq!((bob.unread, bob.unread_mentions), (1, 1));
    let carol = summary_of(&*store, "carol").await;
    assert_eq!((carol.unread, carol.unread_mentions), (2, 1));

    // An edit that drops carol's mention removes it from her count.
    let mut dropped = edit(&group.id, appended.message.seq, "alice", "@bob thôi");
    dropped.mentions = Some(vec!["bob".to_owned()]);
    store.edit_message(dropped).await.unwrap();
    assert_eq!(summary_of(&*store, "carol").await.unread_mentions, 0);
    assert_eq!(summary_of(&*store, "bob").await.unread_mentions, 1);
    store.mark_read(&group.id, "bob", 2).await.unwrap();
    assert_eq!(summary_of(&*store, "bob").await.unread_mentions, 0);

    let mut outsider = message(&group.id, "alice", "outsider", text("@dave"));
    outsider.mentions = vec!["dave".to_owned()];
    let rejected = store.append_message(outsider).await;
    assert!(is_invalid(&rejected), "{rejected:?}");
    let mut bad_edit = edit(&group.id, appended.message.seq, "alice", "@dave");
    bad_edit.mentions = Some(vec!["dave".to_owned()]);
    let rejected = store.edit_message(bad_edit).await;
    assert!(is_invalid(&rejected), "{rejected:?}");

    for target in [99, appended.message.seq + 1] {
        let mut future = message(&group.id, "alice", &format!("future{target}"), text("?"));
        future.reply_to = Some(target);
        let rejected = store.append_message(future).await;
        assert!(is_invalid(&rejected), "reply to {target}: {rejected:?}");
    }
    assert_eq!(
        store.channel_positions("alice").await.unwrap()[0].1,
        2,
        "rejected messages take no sequence number"
    );

    // Deleting a mentioning message removes the mention from the count.
    let mut ping = message(&group.id, "alice", "ping", text("@carol"));
    ping.mentions = vec!["carol".to_owned()];
    let ping = store.append_message(ping).await.unwrap().message.seq;
    assert_eq!(summary_of(&*store, "carol").await.unread_mentions, 1);
    store
        .delete_message(&group.id, ping, Deleter::Member("alice"), NOW)
        .await
        .unwrap();
    assert_eq!(summary_of(&*store, "carol").await.unread_mentions, 0);
}

pub(crate) async fn reactions_count_per_user(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    let seq = send(&*store, &group.id, "alice", "hello").await;

    let added = store
        .react(&group.id, seq, "bob", "👍", true, NOW)
        .await
        .unwrap();
    assert!(added.changed);
    assert_eq!(added.message.reactions.get("👍"), Some(&1));
    let repeated = store
        .react(&group.id, seq, "bob", "👍", true, NOW)
        .await
        .unwrap();
    assert!(!repeated.changed);
    assert_eq!(repeated.message.reactions.get("👍"), Some(&1));
    store
        .react(&group.id, seq, "alice", "👍", true, NOW)
        .await
        .unwrap();
    store
        .react(&group.id, seq, "alice", "thích", true, NOW)
        .await
        .unwrap();

    let for_bob = store.message(&group.id, seq, "bob").await.unwrap();
    assert_eq!(for_bob.reactions.get("👍"), Some(&2));
    assert_eq!(for_bob.reactions.get("thích"), Some(&1));
    assert_eq!(for_bob.own_reactions, vec!["👍"]);
    let history = store
        .history(&group.id, "alice", Page::Latest { limit: 5 })
        .await
        .unwrap();
    assert_eq!(history[0].own_reactions, vec!["thích", "👍"]);
    let resumed = store
        .messages_between(&group.id, "bob", 0, seq)
        .await
        .unwrap();
    assert_eq!(resumed[0].own_reactions, vec!["👍"]);
    assert_eq!(resumed[0].reactions.get("👍"), Some(&2));

    let users = store.reaction_users(&group.id, seq, "bob").await.unwrap();
    assert_eq!(users["👍"], vec!["alice", "bob"]);
    assert_eq!(users["thích"], vec!["alice"]);

    let removed = store
        .react(&group.id, seq, "bob", "👍", false, NOW)
        .await
        .unwrap();
    assert!(removed.changed);
    assert_eq!(removed.message.reactions.get("👍"), Some(&1));
    let absent = store
        .react(&group.id, seq, "bob", "👍", false, NOW)
        .await
        .unwrap();
    assert!(!absent.changed);

    for index in 0..MAX_REACTIONS_PER_USER {
        store
            .react(&group.id, seq, "bob", &format!("r{index}"), true, NOW)
            .await
            .unwrap();
    }
    let over = store
        .react(&group.id, seq, "bob", "one-more", true, NOW)
        .await;
    assert!(is_invalid(&over), "{over:?}");
    let outsider = store.react(&group.id, seq, "carol", "👍", true, NOW).await;
    assert!(is_not_found(&outsider), "{outsider:?}");
    let outsider_list = store.reaction_users(&group.id, seq, "carol").await;
    assert!(is_not_found(&outsider_list), "{outsider_list:?}");
    let missing = store.react(&group.id, 99, "bob", "👍", true, NOW).await;
    assert!(is_not_found(&missing), "{missing:?}");

    store
        .delete_message(&group.id, seq, Deleter::Member("alice"), NOW)
        .await
        .unwrap();
    let deleted = store.message(&group.id, seq, "bob").await.unwrap();
    assert!(deleted.reactions.is_empty(), "a delete erases reactions");
    assert!(deleted.own_reactions.is_empty());
}

pub(crate) async fn delivered_positions_monotonic(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    for client_id in ["m1", "m2", "m3", "m4"] {
        send(&*store, &group.id, "alice", client_id).await;
    }

    let delivered = store.mark_delivered(&group.id, "bob", 3).await.unwrap();
    assert_eq!((delivered.read_seq, delivered.delivered_seq), (0, 3));
    assert!(delivered.changed);
    let back = store.mark_delivered(&group.id, "bob", 1).await.unwrap();
    assert_eq!(back.delivered_seq, 3);
    assert!(!back.changed);
    let capped = store.mark_delivered(&group.id, "bob", 100).await.unwrap();
    assert_eq!(capped.delivered_seq, 4);

    let read = store.mark_read(&group.id, "bob", 2).await.unwrap();
    assert_eq!((read.read_seq, read.delivered_seq), (2, 4));

    let (_, members) = store.channel_for_member(&group.id, "alice").await.unwrap();
    let alice = members.iter().find(|m| m.user_id == "alice").unwrap();
    let bob = members.iter().find(|m| m.user_id == "bob").unwrap();
    assert_eq!((alice.read_seq, alice.delivered_seq), (4, 4));
    assert_eq!((bob.read_seq, bob.delivered_seq), (2, 4));

    let outsider = store.mark_delivered(&group.id, "carol", 1).await;
    assert!(is_not_found(&outsider), "{outsider:?}");
}

/// Two processes append, read and acknowledge delivery in one channel at
/// once. Every position ends at the highest value requested, and no
/// returned position is ever lower than one returned before it.
pub(crate) async fn receipts_under_concurrent_writes(fixture: &dyn Fixture) {
    let first = fixture.store();
    add_users(&*first, &["alice", "bob"]).await;
    let group = group_of(&*first, "alice", &["bob"]).await;
    let second = fixture.open_same_data().await;

    const ROUNDS: u64 = 30;
    let run = |store: std::sync::Arc<dyn Store>, sender: &'static str, reader: &'static str| {
        let channel_id = group.id.clone();
        tokio::spawn(async move {
            let (mut last_read, mut last_delivered) = (0, 0);
            for round in 0..ROUNDS {
                let client_id = format!("{sender}-{round}");
                let seq = store
                    .append_message(message(&channel_id, sender, &client_id, text("hi")))
                    .await
                    .unwrap()
                    .message
                    .seq;
                let delivered = store
                    .mark_delivered(&channel_id, reader, seq)
                    .await
                    .unwrap();
                let read = store.mark_read(&channel_id, reader, seq).await.unwrap();
                assert!(delivered.delivered_seq >= last_delivered);
                assert!(read.read_seq >= last_read);
                assert!(read.read_seq >= seq);
                assert!(read.delivered_seq >= read.read_seq);
                (last_read, last_delivered) = (read.read_seq, read.delivered_seq);
            }
        })
    };
    let alice_sends = run(first.clone(), "alice", "bob");
    let bob_sends = run(second.clone(), "bob", "alice");
    alice_sends.await.unwrap();
    bob_sends.await.unwrap();

    let (channel, members) = first.channel_for_member(&group.id, "alice").await.unwrap();
    assert_eq!(channel.last_seq, 2 * ROUNDS);
    for member in &members {
        // The sender of the last message read it by sending, and its task
        // then marked it read for the other member too.
        assert_eq!(member.read_seq, 2 * ROUNDS, "{}", member.user_id);
        assert_eq!(member.delivered_seq, 2 * ROUNDS, "{}", member.user_id);
    }
    second.close().await.unwrap();
}
