//! Conformance checks of slow mode, reports, users' settings and
//! once-marks.

use serde_json::json;

use super::{Fixture, NOW, add_users, group_of, message, text};
use crate::store::{
    ModerationRecord, NewReport, ReportStatus, ReportTarget, Resolution, ResolutionOutcome,
    StoreError,
};

pub(crate) async fn slow_mode_spaces_sends(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob", "carol"]).await;

    let denied = store.set_slow_mode(&group.id, Some("bob"), 10, NOW).await;
    assert!(
        matches!(denied, Err(StoreError::Forbidden(_))),
        "{denied:?}"
    );
    let outsider = store.set_slow_mode(&group.id, Some("dave"), 10, NOW).await;
    assert!(
        matches!(outsider, Err(StoreError::NotFound)),
        "{outsider:?}"
    );
    let (channel, changed) = store
        .set_slow_mode(&group.id, Some("alice"), 10, NOW)
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(channel.slow_mode_seconds, 10);
    let (_, changed) = store.set_slow_mode(&group.id, None, 10, NOW).await.unwrap();
    assert!(!changed);

    let mut first = message(&group.id, "bob", "b1", text("one"));
    first.created_at = NOW;
    store.append_message(first).await.unwrap();
    let mut early = message(&group.id, "bob", "b2", text("two"));
    early.created_at = NOW + 4_000;
    let result = store.append_message(early).await;
    assert!(
        matches!(
            result,
            Err(StoreError::SlowMode {
                retry_after_ms: 6_000
            })
        ),
        "{result:?}"
    );
    // Other members and the owner are not held up by Bob's message.
    let mut carol = message(&group.id, "carol", "c1", text("three"));
    carol.created_at = NOW + 4_000;
    store.append_message(carol).await.unwrap();
    for index in 0..3 {
        let mut owner = message(&group.id, "alice", &format!("a{index}"), text("four"));
        owner.created_at = NOW + 4_000;
        store.append_message(owner).await.unwrap();
    }
    let mut later = message(&group.id, "bob", "b3", text("five"));
    later.created_at = NOW + 10_000;
    store.append_message(later).await.unwrap();

    let (channel, _) = store.channel_for_member(&group.id, "bob").await.unwrap();
    assert_eq!(channel.slow_mode_seconds, 10);
    let (direct, _) = store.open_direct("bob", "carol", None, NOW).await.unwrap();
    let result = store.set_slow_mode(&direct.id, None, 10, NOW).await;
    assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
}

pub(crate) async fn reports_queue_and_resolve(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob", "carol"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    store
        .append_message(message(&group.id, "bob", "b1", text("mua đi")))
        .await
        .unwrap();
    let report = |reporter: &str, target: ReportTarget| NewReport {
        reporter: reporter.to_owned(),
        target,
        reason: "spam".to_owned(),
        note: Some("quảng cáo".to_owned()),
        created_at: NOW,
    };
    let on_message = ReportTarget::Message {
        channel_id: group.id.clone(),
        seq: 1,
    };

    let filed = store
        .file_report(report("alice", on_message.clone()))
        .await
        .unwrap();
    assert!(filed.changed);
    assert_eq!(filed.report.user_id, "bob");
    assert_eq!(filed.report.status, ReportStatus::Open);
    assert_eq!(filed.report.content, Some(text("mua đi")));
    let again = store
        .file_report(report("alice", on_message.clone()))
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(again.report.id, filed.report.id);

    let outsider = store.file_report(report("carol", on_message.clone())).await;
    assert!(
        matches!(outsider, Err(StoreError::NotFound)),
        "{outsider:?}"
    );
    let own = store.file_report(report("bob", on_message.clone())).await;
    assert!(matches!(own, Err(StoreError::Invalid(_))), "{own:?}");
    let missing = ReportTarget::Message {
        channel_id: group.id.clone(),
        seq: 7,
    };
    let result = store.file_report(report("alice", missing)).await;
    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    let user = ReportTarget::User {
        user_id: "bob".to_owned(),
    };
    let on_user = store.file_report(report("carol", user)).await.unwrap();
    assert!(on_user.changed);
    assert_eq!(on_user.report.seq, None);

    let open = store
        .reports(Some(ReportStatus::Open), None, 10)
        .await
        .unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(open[0].id, filed.report.id);
    let next = store.reports(None, Some(&open[0].id), 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, on_user.report.id);

    let resolution = Resolution {
        outcome: ResolutionOutcome::Dismissed,
        note: None,
        resolved_by: Some("mod".to_owned()),
        resolved_at: NOW + 1,
    };
    let resolved = store
        .resolve_report(&filed.report.id, resolution.clone())
        .await
        .unwrap();
    assert!(resolved.changed);
    assert_eq!(resolved.report.status, ReportStatus::Resolved);
    assert_eq!(resolved.report.resolution, Some(resolution.clone()));
    let twice = store
        .resolve_report(&filed.report.id, resolution)
        .await
        .unwrap();
    assert!(!twice.changed);
    let open = store
        .reports(Some(ReportStatus::Open), None, 10)
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        store
            .report(&filed.report.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ReportStatus::Resolved
    );
    assert!(store.report("no-such-report").await.unwrap().is_none());
}

pub(crate) async fn flag_decisions_file_reports(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob"]).await;
    let group = group_of(&*store, "alice", &["bob"]).await;
    let record = |action: &str, shadow: bool| ModerationRecord {
        rule: format!("{action}-rule"),
        action: action.to_owned(),
        shadow,
        reason: "contact_details".to_owned(),
        user_id: "bob".to_owned(),
        channel_id: group.id.clone(),
        client_id: Some("b1".to_owned()),
    };
    let mut flagged = message(&group.id, "bob", "b1", text("zalo 0912"));
    flagged.moderation = vec![
        record("flag", false),
        record("flag", true),
        record("mask", false),
    ];
    store.append_message(flagged).await.unwrap();

    let reports = store.reports(None, None, 10).await.unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].reporter, None);
    assert_eq!(reports[0].rule.as_deref(), Some("flag-rule"));
    assert_eq!(reports[0].reason, "contact_details");
    assert_eq!(reports[0].seq, Some(1));
}

pub(crate) async fn user_settings_and_once_marks(fixture: &dyn Fixture) {
    let store = fixture.store();
    add_users(&*store, &["alice", "bob"]).await;
    let value = json!({ "text": "Chào {{ten}}" });
    assert!(
        store
            .put_user_setting("alice", "template:hi", Some(value.clone()), NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_user_setting("alice", "template:hi", Some(value.clone()), NOW)
            .await
            .unwrap()
    );
    store
        .put_user_setting("alice", "template:bye", Some(json!({ "text": "bye" })), NOW)
        .await
        .unwrap();
    store
        .put_user_setting(
            "alice",
            "away_message",
            Some(json!({ "text": "away" })),
            NOW,
        )
        .await
        .unwrap();
    // Prefixes are literal, not patterns.
    store
        .put_user_setting("alice", "templateX", Some(json!(1)), NOW)
        .await
        .unwrap();
    let templates = store.user_settings("alice", "template:").await.unwrap();
    let keys: Vec<&str> = templates.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["template:bye", "template:hi"]);
    assert_eq!(templates[1].1, value);
    assert!(store.user_settings("bob", "").await.unwrap().is_empty());

    assert!(
        store
            .put_user_setting("alice", "template:hi", None, NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_user_setting("alice", "template:hi", None, NOW)
            .await
            .unwrap()
    );
    let missing = store
        .put_user_setting("nobody", "template:hi", Some(json!(1)), NOW)
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    // Deleting the user erases the settings.
    store.delete_user("alice", NOW).await.unwrap();
    assert!(store.user_settings("alice", "").await.unwrap().is_empty());

    assert!(store.mark_once("k", NOW, 1_000).await.unwrap());
    assert!(!store.mark_once("k", NOW + 999, 1_000).await.unwrap());
    assert!(store.mark_once("other", NOW + 999, 1_000).await.unwrap());
    assert!(store.mark_once("k", NOW + 1_000, 1_000).await.unwrap());
    assert!(!store.mark_once("k", NOW + 1_500, 1_000).await.unwrap());
}

pub(crate) async fn once_mark_has_one_winner(fixture: &dyn Fixture) {
    let first = fixture.store();
    let second = fixture.open_same_data().await;
    let mut tasks = Vec::new();
    for index in 0..16 {
        let store = if index % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            store.mark_once("race", NOW, 60_000).await.unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}
