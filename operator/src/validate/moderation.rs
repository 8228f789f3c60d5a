//! `spec.moderation`: translation into the runtime's `moderation` section,
//! checked by the runtime's own rule compiler so that the operator never
//! writes rules that would stop the runtime from starting.

use chat_runtime::moderation::{
    Action, ContactKind, ContactsConfig, DEFAULT_MIN_PHONE_DIGITS, LinksConfig, ModerationConfig,
    Moderator, RuleConfig, TermsConfig,
};

use super::{InvalidSpec, invalid};
use crate::crd::{
    ContactKindSpec, ContactsCheck, LinksCheck, ModerationAction, ModerationRule, ModerationSpec,
    TermsCheck,
};

const FIELD: &str = "spec.moderation";
/// Maximum length of a `regex`, in characters. The runtime bounds only the
/// compiled size, which is hard to predict from the pattern, so this bound
/// keeps patterns readable and the schema's cost estimate small.
pub const MAX_REGEX_CHARS: usize = 4096;

/// Checks `spec.moderation` and returns the runtime's section for it, with
/// every default filled in.
pub fn validate_moderation(spec: &ModerationSpec) -> Result<ModerationConfig, InvalidSpec> {
    for (index, rule) in spec.rules.iter().enumerate() {
        check_schema_rules(rule, &format!("{FIELD}.rules[{index}]"))?;
    }
    let config = runtime_config(spec);
    Moderator::new(&config, FIELD)
        .map_err(|(field, message)| invalid(camel_case_path(&field), message))?;
    Ok(config)
}

/// Checks the rules of the CRD schema that the runtime does not share, and
/// those whose runtime message would name a field in the runtime's
/// spelling.
fn check_schema_rules(rule: &ModerationRule, field: &str) -> Result<(), InvalidSpec> {
    if let Some(regex) = &rule.regex {
        let chars = regex.chars().count();
        // An empty pattern matches every message.
        if !(1..=MAX_REGEX_CHARS).contains(&chars) {
            return Err(invalid(
                format!("{field}.regex"),
                format!("must be 1 to {MAX_REGEX_CHARS} characters long, not {chars}"),
            ));
        }
    }
    if let Some(links) = &rule.links
        && links.allowed_domains.is_none()
        && links.blocked_domains.is_empty()
    {
        return Err(invalid(
            format!("{field}.links"),
            "set allowedDomains, blockedDomains or both; as written no link would match",
        ));
    }
    if let Some(contacts) = &rule.contacts
        && contacts.kinds.as_ref().is_some_and(Vec::is_empty)
    {
        return Err(invalid(
            format!("{field}.contacts.kinds"),
            "must list at least one of Phone, Email or Handle, or be left out for all three",
        ));
    }
    Ok(())
}

/// Translates the spec into the runtime's section, defaults included.
pub fn runtime_config(spec: &ModerationSpec) -> ModerationConfig {
    ModerationConfig {
        mask: spec
            .mask
            .clone()
            .unwrap_or_else(|| ModerationConfig::default().mask),
        rules: spec.rules.iter().map(rule_config).collect(),
        // The hook is checked and written on its own (see `hooks`),
        // because its secret source is added when the file is built.
        hook: None,
    }
}

fn rule_config(rule: &ModerationRule) -> RuleConfig {
    RuleConfig {
        name: rule.name.clone(),
        action: match rule.action {
            ModerationAction::Block => Action::Block,
            ModerationAction::Mask => Action::Mask,
            ModerationAction::Flag => Action::Flag,
        },
        shadow: rule.shadow.unwrap_or(false),
        terms: rule.terms.as_ref().map(terms_config),
        regex: rule.regex.clone(),
        links: rule.links.as_ref().map(links_config),
        contacts: rule.contacts.as_ref().map(contacts_config),
    }
}

fn terms_config(terms: &TermsCheck) -> TermsConfig {
    TermsConfig {
        list: terms.list.clone(),
        accent_insensitive: terms.accent_insensitive.unwrap_or(false),
    }
}

fn links_config(links: &LinksCheck) -> LinksConfig {
    LinksConfig {
        allowed_domains: links.allowed_domains.clone(),
        blocked_domains: links.blocked_domains.clone(),
    }
}

fn contacts_config(contacts: &ContactsCheck) -> ContactsConfig {
    let kinds = match &contacts.kinds {
        Some(kinds) => kinds.iter().map(|kind| contact_kind(*kind)).collect(),
        None => vec![ContactKind::Phone, ContactKind::Email, ContactKind::Handle],
    };
    ContactsConfig {
        kinds,
        min_phone_digits: contacts
            .min_phone_digits
            .map_or(DEFAULT_MIN_PHONE_DIGITS, |digits| digits as usize),
    }
}

fn contact_kind(kind: ContactKindSpec) -> ContactKind {
    match kind {
        ContactKindSpec::Phone => ContactKind::Phone,
        ContactKindSpec::Email => ContactKind::Email,
        ContactKindSpec::Handle => ContactKind::Handle,
    }
}

/// Rewrites a field path of the runtime's configuration, such as
/// `rules[1].links.allowed_domains[0]`, in the spec's spelling,
/// `rules[1].links.allowedDomains[0]`. Paths hold only field names and
/// indices, never values, so no underscore of user data is touched.
pub(super) fn camel_case_path(path: &str) -> String {
    let mut camel = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                camel.extend(c.to_uppercase());
                upper = false;
            }
            c => camel.push(c),
        }
    }
    camel
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ModerationSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn paths_are_spelled_as_in_the_spec() {
        assert_eq!(
            camel_case_path("spec.moderation.rules[3].links.allowed_domains[12]"),
            "spec.moderation.rules[3].links.allowedDomains[12]"
        );
        assert_eq!(
            camel_case_path("spec.moderation.rules[0].contacts.min_phone_digits"),
            "spec.moderation.rules[0].contacts.minPhoneDigits"
        );
        assert_eq!(
            camel_case_path("spec.moderation.mask"),
            "spec.moderation.mask"
        );
    }

    #[test]
    fn default_contact_kinds_match_runtime() {
        let runtime: ContactsConfig = serde_yaml::from_str("{}").unwrap();
        let ours = contacts_config(&ContactsCheck {
            kinds: None,
            min_phone_digits: None,
        });
        assert_eq!(ours, runtime);
    }

    #[test]
    fn empty_section_uses_runtime_defaults() {
        let config = validate_moderation(&spec("{}")).unwrap();
        assert_eq!(config, ModerationConfig::default());
    }

    #[test]
    fn every_field_is_translated() {
        let config = validate_moderation(&spec(
            r#"
mask: "[ẩn]"
rules:
  - name: scams
    action: Block
    shadow: true
    terms: {list: ["lừa đảo", "chuyển khoản trước*"], accentInsensitive: true}
  - name: cards
    action: Flag
    regex: '\b[0-9]{16}\b'
  - name: links
    action: Mask
    links: {allowedDomains: [chotot.example], blockedDomains: [bad.example]}
  - name: phones
    action: Mask
    contacts: {kinds: [Phone, Handle], minPhoneDigits: 10}
"#,
        ))
        .unwrap();
        let expected: ModerationConfig = serde_yaml::from_str(
            r#"
mask: "[ẩn]"
rules:
  - name: scams
    action: block
    shadow: true
    terms: {list: ["lừa đảo", "chuyển khoản trước*"], accent_insensitive: true}
  - name: cards
    action: flag
    regex: '\b[0-9]{16}\b'
  - name: links
    action: mask
    links: {allowed_domains: [chotot.example], blocked_domains: [bad.example]}
  - name: phones
    action: mask
    contacts: {kinds: [phone, handle], min_phone_digits: 10}
"#,
        )
        .unwrap();
        assert_eq!(config, expected);
    }

    #[test]
    fn absent_allowed_domains_stay_absent() {
        // An empty allow list means "no domain is allowed", so it must not
        // appear where the spec left the field out.
        let only_blocked = validate_moderation(&spec(
            "rules: [{name: l, action: Block, links: {blockedDomains: [bad.example]}}]",
        ))
        .unwrap();
        let links = only_blocked.rules[0].links.as_ref().unwrap();
        assert_eq!(links.allowed_domains, None);
        let none_allowed = validate_moderation(&spec(
            "rules: [{name: l, action: Block, links: {allowedDomains: []}}]",
        ))
        .unwrap();
        let links = none_allowed.rules[0].links.as_ref().unwrap();
        assert_eq!(links.allowed_domains, Some(Vec::new()));
    }

    #[test]
    fn each_error_names_its_field() {
        let long_regex = format!("'{}'", "a".repeat(MAX_REGEX_CHARS + 1));
        let many_rules = (0..65)
            .map(|i| format!("{{name: r{i}, action: Flag, regex: a}}"))
            .collect::<Vec<_>>()
            .join(", ");
        let cases: Vec<(String, &str, &str)> = vec![
            ("{mask: '0123456789012345678901234567890123'}".into(), "spec.moderation.mask", "1 to 32 bytes"),
            ("{mask: \"a\\tb\"}".into(), "spec.moderation.mask", "no control or invisible characters"),
            (format!("{{rules: [{many_rules}]}}"), "spec.moderation.rules", "at most 64 rules"),
            ("{rules: [{name: Scams, action: Block, regex: a}]}".into(), "spec.moderation.rules[0].name", "lowercase"),
            ("{rules: [{name: a, action: Block, regex: a}, {name: a, action: Flag, regex: b}]}".into(), "spec.moderation.rules[1].name", "duplicate rule name"),
            ("{rules: [{name: a, action: Block}]}".into(), "spec.moderation.rules[0]", "exactly one of terms, regex, links or contacts"),
            ("{rules: [{name: a, action: Block, regex: a, terms: {list: [b]}}]}".into(), "spec.moderation.rules[0]", "exactly one"),
            ("{rules: [{name: a, action: Block, regex: '[0-9'}]}".into(), "spec.moderation.rules[0].regex", "unclosed character class"),
            ("{rules: [{name: a, action: Block, regex: ''}]}".into(), "spec.moderation.rules[0].regex", "1 to 4096 characters"),
            (format!("{{rules: [{{name: a, action: Block, regex: {long_regex}}}]}}"), "spec.moderation.rules[0].regex", "not 4097"),
            ("{rules: [{name: a, action: Block, regex: '\\w{1000}{1000}'}]}".into(), "spec.moderation.rules[0].regex", "size limit"),
            ("{rules: [{name: a, action: Block, terms: {list: []}}]}".into(), "spec.moderation.rules[0].terms.list", "1 to 10000 terms"),
            ("{rules: [{name: a, action: Block, terms: {list: ['\u{200b}']}}]}".into(), "spec.moderation.rules[0].terms.list", "no visible characters"),
            (format!("{{rules: [{{name: a, action: Block, terms: {{list: [{}]}}}}]}}", "ồ".repeat(100)), "spec.moderation.rules[0].terms.list", "longer than 256 bytes"),
            ("{rules: [{name: a, action: Block, links: {}}]}".into(), "spec.moderation.rules[0].links", "set allowedDomains, blockedDomains or both"),
            ("{rules: [{name: a, action: Block, links: {allowedDomains: [chotot.example, Chotot.example]}}]}".into(), "spec.moderation.rules[0].links.allowedDomains[1]", "lowercase domain"),
            ("{rules: [{name: a, action: Block, links: {blockedDomains: ['https://bad.example']}}]}".into(), "spec.moderation.rules[0].links.blockedDomains[0]", "lowercase domain"),
            ("{rules: [{name: a, action: Mask, contacts: {kinds: []}}]}".into(), "spec.moderation.rules[0].contacts.kinds", "at least one of Phone, Email or Handle"),
            ("{rules: [{name: a, action: Mask, contacts: {minPhoneDigits: 6}}]}".into(), "spec.moderation.rules[0].contacts.minPhoneDigits", "between 7 and 15"),
            ("{rules: [{name: a, action: Mask, contacts: {minPhoneDigits: 16}}]}".into(), "spec.moderation.rules[0].contacts.minPhoneDigits", "between 7 and 15"),
        ];
        for (yaml, field, message) in cases {
            let error = validate_moderation(&spec(&yaml)).unwrap_err();
            assert_eq!(error.field, field, "{yaml}: {}", error.message);
            assert!(
                error.message.contains(message),
                "{yaml}: {:?} does not contain {message:?}",
                error.message
            );
        }
    }

    #[test]
    fn boundary_values_are_valid() {
        let cases = [
            format!("{{mask: '{}'}}", "*".repeat(32)),
            format!(
                "{{rules: [{{name: {}, action: Flag, regex: '{}'}}]}}",
                "a".repeat(63),
                "b".repeat(MAX_REGEX_CHARS)
            ),
            "{rules: [{name: a, action: Mask, contacts: {minPhoneDigits: 7}}]}".to_owned(),
            "{rules: [{name: a, action: Mask, contacts: {kinds: [Email], minPhoneDigits: 15}}]}"
                .to_owned(),
            "{rules: [{name: a, action: Block, links: {allowedDomains: []}}]}".to_owned(),
        ];
        for yaml in cases {
            let result = validate_moderation(&spec(&yaml));
            assert!(result.is_ok(), "{yaml}: {result:?}");
        }
    }
}
