use super::*;

fn moderator(yaml: &str) -> Moderator {
    let config: ModerationConfig = serde_yaml::from_str(yaml).unwrap();
    Moderator::new(&config, "moderation").unwrap()
}

fn invalid(yaml: &str) -> (String, String) {
    let config: ModerationConfig = serde_yaml::from_str(yaml).unwrap();
    Moderator::new(&config, "moderation").unwrap_err()
}

fn text(text: &str) -> Content {
    Content::Text { text: text.into() }
}

fn text_of(content: &Content) -> &str {
    match content {
        Content::Text { text } => text,
        other => panic!("expected text, got {other:?}"),
    }
}

const RULES: &str = r#"
rules:
  - name: scams
    action: block
    terms: { list: ["lừa đảo", "scam*"], accent_insensitive: true }
  - name: contacts
    action: mask
    contacts: {}
  - name: links
    action: flag
    links: { allowed_domains: [cho.example.vn] }
"#;

#[test]
fn block_stops_the_rules_after_it() {
    let moderated = moderator(RULES).moderate(text("Đừng tin, lua dao đấy, gọi 0912345678"));
    let blocked = moderated.blocked().expect("blocked");
    assert_eq!(blocked.reason, "blocked_term");
    assert_eq!(moderated.runs.len(), 1);
    assert_eq!(&*moderated.runs[0].rule, "scams");
}

#[test]
fn mask_rewrites_what_the_sender_wrote() {
    let moderated =
        moderator(RULES).moderate(text("Xe còn nhé, gọi 09l2 345 678 hoặc minh@gmail.com ạ"));
    assert!(moderated.blocked().is_none());
    assert_eq!(
        text_of(&moderated.content),
        "Xe còn nhé, gọi *** hoặc *** ạ"
    );
    let decision = moderated.runs[1].matched.expect("contacts matched");
    assert_eq!(decision.action, Action::Mask);
    assert_eq!(decision.reason, "contact_details");
    assert!(moderated.runs[0].matched.is_none());
}

#[test]
fn flag_keeps_the_message() {
    let original = "xem ảnh ở https://other.example.com/x";
    let moderated = moderator(RULES).moderate(text(original));
    assert_eq!(text_of(&moderated.content), original);
    let decision = moderated.runs[2].matched.expect("links matched");
    assert_eq!(decision.action, Action::Flag);
    assert_eq!(decision.reason, "link_not_allowed");
    assert!(moderated.blocked().is_none());

    let allowed = moderator(RULES).moderate(text("xem https://cho.example.vn/tin/42"));
    assert!(allowed.runs.iter().all(|run| run.matched.is_none()));
}

#[test]
fn shadow_rules_record_without_acting() {
    let yaml = r#"
rules:
  - name: scams
    action: block
    shadow: true
    terms: { list: ["scam"] }
  - name: contacts
    action: mask
    shadow: true
    contacts: { kinds: [email] }
"#;
    let original = "scam? write to an@example.com";
    let moderated = moderator(yaml).moderate(text(original));
    assert!(moderated.blocked().is_none());
    assert_eq!(text_of(&moderated.content), original);
    for run in &moderated.runs {
        let decision = run.matched.expect("each rule matched");
        assert!(decision.shadow, "{run:?}");
    }
}

#[test]
fn later_rules_see_masked_text() {
    let yaml = r#"
rules:
  - name: contacts
    action: mask
    contacts: { kinds: [phone] }
  - name: no-digits
    action: block
    regex: '\d{9,}'
"#;
    let moderated = moderator(yaml).moderate(text("số 0912345678"));
    assert!(moderated.blocked().is_none());
    assert_eq!(text_of(&moderated.content), "số ***");
}

#[test]
fn regex_sees_folded_composed_text() {
    let yaml = r#"
rules:
  - name: price-talk
    action: block
    regex: 'giảm\s+giá'
"#;
    let moderator = moderator(yaml);
    // Upper case, a combining tone mark and a zero-width space.
    let tricky = "GIA\u{0309}M\u{200B} GIÁ";
    assert_eq!(
        moderator.moderate(text(tricky)).blocked().unwrap().reason,
        "blocked_pattern"
    );
    assert!(moderator.moderate(text("giam gia")).blocked().is_none());
}

#[test]
fn location_labels_and_attachment_names_are_checked() {
    let moderator = moderator(RULES);
    let location = Content::Location {
        latitude: 10.77,
        longitude: 106.7,
        label: Some("Gặp ở đây, zalo: minh_tran".into()),
    };
    let moderated = moderator.moderate(location);
    let Content::Location { label, .. } = &moderated.content else {
        panic!("expected a location");
    };
    assert_eq!(label.as_deref(), Some("Gặp ở đây, ***"));

    let attachment = Content::Attachment {
        url: "https://cdn.example.com/a.jpg".into(),
        content_type: "image/jpeg".into(),
        size: 10,
        name: Some("scam.jpg".into()),
        width: None,
        height: None,
        thumbnail_url: None,
    };
    assert!(moderator.moderate(attachment).blocked().is_some());
}

#[test]
fn emoji_and_mixed_scripts_pass_untouched() {
    let original = "Chào 👋🏽 bạn! 👨‍👩‍👧‍👦 Привет 你好 — giá 1.200.000.000 đ";
    let moderated = moderator(RULES).moderate(text(original));
    assert_eq!(text_of(&moderated.content), original);
    assert!(moderated.runs.iter().all(|run| run.matched.is_none()));
}

#[test]
fn invalid_rules_name_their_field() {
    let (field, reason) = invalid("rules: [{name: a, action: block}]");
    assert_eq!(field, "moderation.rules[0]");
    assert!(reason.contains("exactly one"), "{reason}");

    let (field, reason) = invalid("rules: [{name: a, action: block, regex: '(unclosed'}]");
    assert_eq!(field, "moderation.rules[0].regex");
    assert!(reason.contains("unclosed"), "{reason}");

    let (field, _) = invalid(
        "rules: [{name: a, action: flag, terms: {list: [x]}}, {name: a, action: flag, terms: {list: [y]}}]",
    );
    assert_eq!(field, "moderation.rules[1].name");

    let (field, _) = invalid("rules: [{name: Bad Name, action: flag, terms: {list: [x]}}]");
    assert_eq!(field, "moderation.rules[0].name");

    let (field, _) = invalid("rules: [{name: a, action: flag, terms: {list: ['\u{200B}']}}]");
    assert_eq!(field, "moderation.rules[0].terms.list");

    let (field, _) =
        invalid("rules: [{name: a, action: flag, links: {blocked_domains: ['*.x.com']}}]");
    assert_eq!(field, "moderation.rules[0].links.blocked_domains[0]");

    let (field, _) = invalid("rules: [{name: a, action: flag, links: {}}]");
    assert_eq!(field, "moderation.rules[0].links");

    let (field, _) = invalid("rules: [{name: a, action: flag, contacts: {min_phone_digits: 3}}]");
    assert_eq!(field, "moderation.rules[0].contacts.min_phone_digits");

    let (field, _) = invalid("mask: \"\\n\"");
    assert_eq!(field, "moderation.mask");
}

#[test]
fn mask_merges_overlapping_ranges() {
    assert_eq!(mask("abcdef", vec![1..3, 2..4, 5..6], "*"), "a*e*");
    assert_eq!(mask("abc", vec![], "*"), "abc");
    // Marks after a masked digit go with it.
    assert_eq!(
        mask(
            "call 1\u{FE0F}\u{20E3} now",
            std::iter::once(5..6).collect(),
            "#"
        ),
        "call # now"
    );
    assert_eq!(
        mask(
            "x 5\u{0323}\u{0301} y",
            std::iter::once(2..3).collect(),
            "#"
        ),
        "x # y"
    );
}

#[test]
fn written_config_reads_back_unchanged() {
    // The operator writes the section it validated with these types, so
    // writing and reading must not lose a setting or turn an absent list
    // into an empty one, which for `allowed_domains` means "no domain".
    let yaml = r#"
mask: "[hidden]"
rules:
  - name: scams
    action: block
    shadow: true
    terms: { list: ["lừa đảo", "scam*"], accent_insensitive: true }
  - name: cards
    action: flag
    regex: '\b[0-9]{16}\b'
  - name: blocked-links
    action: block
    links: { blocked_domains: [bad.example] }
  - name: no-links
    action: mask
    links: { allowed_domains: [] }
  - name: phones
    action: mask
    contacts: { kinds: [phone], min_phone_digits: 10 }
"#;
    let config: ModerationConfig = serde_yaml::from_str(yaml).unwrap();
    let written = serde_yaml::to_string(&config).unwrap();
    let read: ModerationConfig = serde_yaml::from_str(&written).unwrap();
    assert_eq!(read, config, "{written}");
    assert!(!written.contains("null"), "{written}");
    Moderator::new(&read, "moderation").unwrap();
}
