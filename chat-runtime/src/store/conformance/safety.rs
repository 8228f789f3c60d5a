//! Conformance checks of blocks, bans and mutes.

use super::{Fixture, NOW, add_users, group_of, message, text};
use crate::store::{NewReport, ReportTarget, Restriction, RestrictionKind, StoreError};

fn restriction(
    user: &str,
    channel: Option<&str>,
    kind: RestrictionKind,
    until: Option<i64>,
) -> Restriction {
    Restriction {
        user_id: user.to_owned(),
        channel_id: channel.map(str::to_owned),
        kind,
        until,
        reason: Some("spam".to_owned()),
        created_at: NOW,
    }
}

fn is_restricted<T: std::fmt::Debug>(
    result: &Result<T, StoreError>,
    kind: RestrictionKind,
) -> bool {
    matches!(result, Err(StoreError::Restricted(restriction)) if restriction.kind == kind)
}

pub(crate) async fn mutes_stop_sends_until_lifted(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob"]).await;
    let first = group_of(&*store, "alice", &["bob"]).await;
    let second = group_of(&*store, "alice", &["bob"]).await;

    let mute = restriction("bob", Some(&first.id), RestrictionKind::Mute, None);
    assert!(store.restrict(mute.clone()).await.unwrap().is_none());
    let muted = store
        .append_message(message(&first.id, "bob", "b1", text("hello")))
        .await;
    assert!(is_restricted(&muted, RestrictionKind::Mute), "{muted:?}");
    // Another channel is not affected.
    store
        .append_message(message(&second.id, "bob", "b2", text("hello")))
        .await
        .unwrap();
    assert_eq!(store.restrictions("bob", NOW).await.unwrap(), [mute]);

    assert!(
        store
            .lift_restriction("bob", Some(&first.id), RestrictionKind::Mute, NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .lift_restriction("bob", Some(&first.id), RestrictionKind::Mute, NOW)
            .await
            .unwrap()
    );
    store
        .append_message(message(&first.id, "bob", "b3", text("hello")))
        .await
        .unwrap();

    // A mute of the tenant that ended is no longer in force.
    let ended = restriction("bob", None, RestrictionKind::Mute, Some(NOW - 1));
    store.restrict(ended).await.unwrap();
    assert!(store.restrictions("bob", NOW).await.unwrap().is_empty());
    // Lifting a restriction that already ended changes nothing.
    let lifted = store
        .lift_restriction("bob", None, RestrictionKind::Mute, NOW)
        .await
        .unwrap();
    assert!(!lifted);
    let ended = restriction("bob", None, RestrictionKind::Mute, Some(NOW - 1));
    store.restrict(ended).await.unwrap();
    store
        .append_message(message(&first.id, "bob", "b4", text("hello")))
        .await
        .unwrap();
    let tenant_mute = restriction("bob", None, RestrictionKind::Mute, Some(NOW + 60_000));
    store.restrict(tenant_mute).await.unwrap();
    let muted = store
        .append_message(message(&second.id, "bob", "b5", text("hello")))
        .await;
    assert!(is_restricted(&muted, RestrictionKind::Mute), "{muted:?}");
    // A retry of a message stored before the mute still gets that message.
    let retry = store
        .append_message(message(&second.id, "bob", "b2", text("hello")))
        .await
        .unwrap();
    assert!(retry.duplicate);
}

pub(crate) async fn bans_remove_and_keep_out(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob", "carol"]).await;

    let ban = restriction("bob", Some(&group.id), RestrictionKind::Ban, None);
    let change = store.restrict(ban).await.unwrap().unwrap();
    assert!(change.changed);
    assert_eq!(change.members, ["alice", "carol"]);
    let again = store.add_member(&group.id, "alice", "bob", NOW).await;
    assert!(is_restricted(&again, RestrictionKind::Ban), "{again:?}");

    // Members of a direct channel never change, so a ban from one is
    // refused, and a channel must exist.
    let (direct, _) = store
        .open_direct("alice", "carol", None, NOW)
        .await
        .unwrap();
    let direct_ban = restriction("carol", Some(&direct.id), RestrictionKind::Ban, None);
    let refused = store.restrict(direct_ban).await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    let direct_mute = restriction("carol", Some(&direct.id), RestrictionKind::Mute, None);
    store.restrict(direct_mute).await.unwrap();
    let unknown = restriction("carol", Some("g_unknown"), RestrictionKind::Mute, None);
    let missing = store.restrict(unknown).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

    let tenant_ban = restriction(
        "carol",
        None,
        RestrictionKind::Ban,
        Some(NOW + 1_000_000_000_000),
    );
    store.restrict(tenant_ban).await.unwrap();
    let state = store.user_auth_state("carol").await.unwrap().unwrap();
    assert_eq!(state.banned_until, Some(NOW + 1_000_000_000_000));
    let state = store.user_auth_state("alice").await.unwrap().unwrap();
    assert_eq!(state.banned_until, None);
}

pub(crate) async fn blocks_stop_direct_channels_and_delivery(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob", "carol"]).await;
    let (direct, _) = store
        .open_direct("alice", "carol", None, NOW)
        .await
        .unwrap();

    assert!(store.set_block("bob", "alice", true, NOW).await.unwrap());
    assert!(!store.set_block("bob", "alice", true, NOW).await.unwrap());
    assert_eq!(store.blocked_users("bob").await.unwrap(), ["alice"]);
    assert_eq!(store.blockers("alice").await.unwrap(), ["bob"]);
    assert!(store.blockers("bob").await.unwrap().is_empty());
    let self_block = store.set_block("bob", "bob", true, NOW).await;
    assert!(
        matches!(self_block, Err(StoreError::Invalid(_))),
        "{self_block:?}"
    );

    // No new direct channel, opened by either of the two.
    for (a, b) in [("alice", "bob"), ("bob", "alice")] {
        let opened = store.open_direct(a, b, None, NOW).await;
        assert!(
            matches!(opened, Err(StoreError::Forbidden(_))),
            "{opened:?}"
        );
    }
    // Alice's messages in the group are not for Bob, Carol's are.
    let from_alice = store
        .append_message(message(&group.id, "alice", "a1", text("hi")))
        .await
        .unwrap();
    assert_eq!(from_alice.members, ["alice", "carol"]);
    let from_carol = store
        .append_message(message(&group.id, "carol", "c1", text("hi")))
        .await
        .unwrap();
    assert_eq!(from_carol.members, ["alice", "bob", "carol"]);
    // Carol's reaction to Alice's message is not for Bob, who does not see
    // that message.
    let reacted = store
        .react(&group.id, 1, "carol", "👍", true, NOW)
        .await
        .unwrap();
    assert_eq!(reacted.members, ["alice", "carol"]);
    // Bob's history and catch-up leave Alice's message out; Carol's keep it.
    let seqs = |messages: Vec<crate::store::Message>| -> Vec<u64> {
        messages.iter().map(|message| message.seq).collect()
    };
    let latest = crate::store::Page::Latest { limit: 10 };
    assert_eq!(
        seqs(store.history(&group.id, "bob", latest).await.unwrap()),
        [2]
    );
    assert_eq!(
        seqs(store.history(&group.id, "carol", latest).await.unwrap()),
        [1, 2]
    );
    let between = store
        .messages_between(&group.id, "bob", 0, 2)
        .await
        .unwrap();
    assert_eq!(seqs(between), [2]);
    let hidden = store.message(&group.id, 1, "bob").await;
    assert!(matches!(hidden, Err(StoreError::NotFound)), "{hidden:?}");
    // A message hidden by the reporter's own block cannot be reported.
    let report = NewReport {
        reporter: "bob".to_owned(),
        target: ReportTarget::Message {
            channel_id: group.id.clone(),
            seq: 1,
        },
        reason: "spam".to_owned(),
        note: None,
        created_at: NOW,
    };
    let reported = store.file_report(report).await;
    assert!(
        matches!(reported, Err(StoreError::NotFound)),
        "{reported:?}"
    );
    // Bob's channel list counts and shows Carol's message only, also after
    // a newer message of Alice that mentions him.
    let mut mention = message(&group.id, "alice", "a1b", text("@bob"));
    mention.mentions = vec!["bob".to_owned()];
    store.append_message(mention).await.unwrap();
    let list = store.list_channels("bob", None, 10).await.unwrap();
    let summary = list
        .iter()
        .find(|summary| summary.channel.id == group.id)
        .unwrap();
    assert_eq!(summary.unread, 1);
    assert_eq!(summary.unread_mentions, 0);
    assert_eq!(summary.last_message.as_ref().map(|last| last.seq), Some(2));
    // Alice cannot pull Bob into a group.
    let forced = store
        .create_group("alice", "spam", &["bob".to_owned()], NOW)
        .await;
    assert!(
        matches!(forced, Err(StoreError::Forbidden(_))),
        "{forced:?}"
    );
    let other = group_of(&*store, "alice", &["carol"]).await;
    let added = store.add_member(&other.id, "alice", "bob", NOW).await;
    assert!(matches!(added, Err(StoreError::Forbidden(_))), "{added:?}");
    // A direct channel that existed before the block still opens.
    let (again, _) = store
        .open_direct("carol", "alice", None, NOW)
        .await
        .unwrap();
    assert_eq!(again.id, direct.id);

    assert!(store.set_block("bob", "alice", false, NOW).await.unwrap());
    let from_alice = store
        .append_message(message(&group.id, "alice", "a2", text("hi")))
        .await
        .unwrap();
    assert_eq!(from_alice.members, ["alice", "bob", "carol"]);
    store.open_direct("alice", "bob", None, NOW).await.unwrap();
}

pub(crate) async fn blocked_messages_keep_channel_order(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let with_carol = group_of(&*store, "bob", &["carol"]).await;
    let with_alice = group_of(&*store, "bob", &["alice"]).await;
    store.set_block("bob", "alice", true, NOW).await.unwrap();

    let mut from_carol = message(&with_carol.id, "carol", "c1", text("hi"));
    from_carol.created_at = NOW + 10;
    store.append_message(from_carol).await.unwrap();
    let mut from_alice = message(&with_alice.id, "alice", "a1", text("hi"));
    from_alice.created_at = NOW + 20;
    store.append_message(from_alice).await.unwrap();

    // Alice's newer message moves her channel up her own list only.
    let bobs = store.list_channels("bob", None, 10).await.unwrap();
    assert_eq!(
        channel_ids(&bobs),
        [with_carol.id.as_str(), with_alice.id.as_str()]
    );
    assert_eq!(bobs[0].channel.last_activity, NOW + 10);
    assert_eq!(bobs[1].channel.last_activity, NOW);
    let alices = store.list_channels("alice", None, 10).await.unwrap();
    assert_eq!(alices[0].channel.last_activity, NOW + 20);
    let for_bob = store.activity_for(&with_alice.id, "bob").await.unwrap();
    assert_eq!(for_bob, NOW);
    let for_alice = store.activity_for(&with_alice.id, "alice").await.unwrap();
    assert_eq!(for_alice, NOW + 20);
    let missing = store.activity_for("g_missing", "bob").await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

    // Paging continues from the activity the blocker was shown.
    let first = store.list_channels("bob", None, 1).await.unwrap();
    assert_eq!(channel_ids(&first), [with_carol.id.as_str()]);
    let cursor = (first[0].channel.last_activity, first[0].channel.id.clone());
    let second = store.list_channels("bob", Some(cursor), 1).await.unwrap();
    assert_eq!(channel_ids(&second), [with_alice.id.as_str()]);
    let cursor = (
        second[0].channel.last_activity,
        second[0].channel.id.clone(),
    );
    let rest = store.list_channels("bob", Some(cursor), 1).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    // A message from someone else moves the channel up again.
    let mut from_bob = message(&with_alice.id, "bob", "b1", text("hi"));
    from_bob.created_at = NOW + 30;
    store.append_message(from_bob).await.unwrap();
    let bobs = store.list_channels("bob", None, 10).await.unwrap();
    assert_eq!(
        channel_ids(&bobs),
        [with_alice.id.as_str(), with_carol.id.as_str()]
    );
    assert_eq!(bobs[0].channel.last_activity, NOW + 30);
}

fn channel_ids(list: &[crate::store::ChannelSummary]) -> Vec<&str> {
    list.iter()
        .map(|summary| summary.channel.id.as_str())
        .collect()
}
