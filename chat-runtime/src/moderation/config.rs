//! A tenant's `moderation` section as written in the runtime
//! configuration, and its validation into compiled rules.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::HOOK_RULE_NAME;
use super::contacts::{ContactKind, Contacts, DEFAULT_MIN_PHONE_DIGITS};
use super::hook::HookConfig;
use super::links::{self, LinkFinder, LinkPolicy};
use super::terms::Terms;
use super::{Check, Rule};

/// Maximum rules per tenant.
pub const MAX_RULES: usize = 64;
/// Maximum terms per `terms` rule.
pub const MAX_TERMS: usize = 10_000;
/// Maximum domains per list of a `links` rule.
pub const MAX_DOMAINS: usize = 1_000;
/// Largest compiled regular expression, in bytes. The `regex` crate runs in
/// time linear in the text, so a pattern cannot stall a send, but a large
/// pattern costs memory in every process.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Maximum length of a `regex` rule's pattern, in characters.
pub const MAX_REGEX_CHARS: usize = 4096;
/// Maximum mask text, in bytes.
const MAX_MASK_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModerationConfig {
    /// Text that replaces each masked part of a message.
    pub mask: String,
    /// Rules in the order they run. A rule that blocks stops the rest, and
    /// a rule that masks hands the masked text to the rules after it.
    pub rules: Vec<RuleConfig>,
    /// An HTTP endpoint of the tenant that checks each message the rules
    /// let through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookConfig>,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        Self {
            mask: "***".to_owned(),
            rules: Vec::new(),
            hook: None,
        }
    }
}

/// One rule: a name, what it does on a match, and exactly one check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name used in metrics and logs: 1 to 63 lowercase letters, digits,
    /// `-` or `_`.
    pub name: String,
    pub action: Action,
    /// When true the rule records its decisions but does not act on them,
    /// so a new rule can be tried on real traffic first.
    #[serde(default)]
    pub shadow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<TermsConfig>,
    /// A regular expression in the syntax of the `regex` crate, matched
    /// case-insensitively against the text after NFKC normalisation, case
    /// folding and removal of invisible characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<LinksConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<ContactsConfig>,
}

/// The action a rule takes on a message it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Reject the message: nothing is stored or delivered, and the sender
    /// gets an error with the rule's reason code.
    Block,
    /// Replace each matched part with the mask text, then store the message.
    Mask,
    /// Store and deliver the message, and record the match for review.
    Flag,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Mask => "mask",
            Action::Flag => "flag",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TermsConfig {
    /// Words or phrases, matched as whole words; a trailing `*` matches any
    /// word that starts with the term.
    pub list: Vec<String>,
    /// When true, tone marks and other accents are ignored, so `lừa đảo`
    /// also matches `lua dao`.
    #[serde(default)]
    pub accent_insensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinksConfig {
    /// When given, links to any other domain match the rule; an empty list
    /// makes every link match. Each entry covers its subdomains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_domains: Option<Vec<String>>,
    /// Links to these domains and their subdomains match the rule.
    #[serde(default)]
    pub blocked_domains: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContactsConfig {
    /// Kinds to detect; all of them by default.
    #[serde(default = "all_contact_kinds")]
    pub kinds: Vec<ContactKind>,
    /// Minimum digits of a phone number.
    #[serde(default = "default_min_phone_digits")]
    pub min_phone_digits: usize,
}

fn all_contact_kinds() -> Vec<ContactKind> {
    vec![ContactKind::Phone, ContactKind::Email, ContactKind::Handle]
}

fn default_min_phone_digits() -> usize {
    DEFAULT_MIN_PHONE_DIGITS
}

/// Checks the section and compiles its rules. An error names the field
/// below `field`, such as `rules[2].regex`, and the reason.
pub(super) fn compile(
    config: &ModerationConfig,
    field: &str,
) -> Result<Vec<Rule>, (String, String)> {
    let mask_valid = config.mask.len() <= MAX_MASK_BYTES
        && crate::limits::has_visible_char(&config.mask)
        && !config
            .mask
            .chars()
            .any(|c| c.is_control() || crate::limits::is_invisible(c));
    if !mask_valid {
        return Err((
            format!("{field}.mask"),
            format!(
                "must be 1 to {MAX_MASK_BYTES} bytes with a visible character and no control or invisible characters"
            ),
        ));
    }
    if config.rules.len() > MAX_RULES {
        return Err((
            format!("{field}.rules"),
            format!("at most {MAX_RULES} rules are allowed"),
        ));
    }
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(config.rules.len());
    for (index, rule) in config.rules.iter().enumerate() {
        let rule_field = format!("{field}.rules[{index}]");
        if !is_rule_name(&rule.name) {
            return Err((
                format!("{rule_field}.name"),
                "must be 1 to 63 lowercase letters, digits, '-' or '_'".to_owned(),
            ));
        }
        if rule.name == HOOK_RULE_NAME {
            return Err((
                format!("{rule_field}.name"),
                format!("{HOOK_RULE_NAME:?} is reserved for the pre-send hook's metrics"),
            ));
        }
        if !names.insert(rule.name.as_str()) {
            return Err((
                format!("{rule_field}.name"),
                format!("duplicate rule name {:?}", rule.name),
            ));
        }
        let check = compile_check(rule).map_err(|(sub, reason)| {
            let at = if sub.is_empty() {
                rule_field.clone()
            } else {
                format!("{rule_field}.{sub}")
            };
            (at, reason)
        })?;
        rules.push(Rule {
            name: rule.name.as_str().into(),
            action: rule.action,
            shadow: rule.shadow,
            check,
        });
    }
    Ok(rules)
}

fn compile_check(rule: &RuleConfig) -> Result<Check, (String, String)> {
    let set = [
        rule.terms.is_some(),
        rule.regex.is_some(),
        rule.links.is_some(),
        rule.contacts.is_some(),
    ];
    if set.iter().filter(|set| **set).count() != 1 {
        return Err((
            String::new(),
            "set exactly one of terms, regex, links or contacts".to_owned(),
        ));
    }
    if let Some(terms) = &rule.terms {
        return compile_terms(terms);
    }
    if let Some(pattern) = &rule.regex {
        // An empty pattern would match every message.
        if pattern.is_empty() || pattern.chars().count() > MAX_REGEX_CHARS {
            return Err((
                "regex".to_owned(),
                format!("must be 1 to {MAX_REGEX_CHARS} characters"),
            ));
        }
        let regex = regex::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|error| ("regex".to_owned(), error.to_string()))?;
        return Ok(Check::Regex(regex));
    }
    if let Some(links) = &rule.links {
        return compile_links(links);
    }
    match &rule.contacts {
        Some(contacts) => compile_contacts(contacts),
        None => Err((String::new(), "no check is set".to_owned())),
    }
}

fn compile_terms(terms: &TermsConfig) -> Result<Check, (String, String)> {
    if terms.list.is_empty() || terms.list.len() > MAX_TERMS {
        return Err((
            "terms.list".to_owned(),
            format!("must list 1 to {MAX_TERMS} terms"),
        ));
    }
    let compiled = Terms::new(&terms.list, terms.accent_insensitive)
        .map_err(|reason| ("terms.list".to_owned(), reason))?;
    Ok(Check::Terms(compiled))
}

fn compile_links(config: &LinksConfig) -> Result<Check, (String, String)> {
    let lists = [
        ("links.allowed_domains", config.allowed_domains.as_deref()),
        (
            "links.blocked_domains",
            Some(config.blocked_domains.as_slice()),
        ),
    ];
    for (name, list) in lists {
        let list = list.unwrap_or_default();
        if list.len() > MAX_DOMAINS {
            return Err((name.to_owned(), format!("at most {MAX_DOMAINS} domains")));
        }
        for (index, domain) in list.iter().enumerate() {
            if !links::is_domain_entry(domain) {
                return Err((
                    format!("{name}[{index}]"),
                    format!("{domain:?} is not a lowercase domain name such as example.com"),
                ));
            }
        }
    }
    if config.allowed_domains.is_none() && config.blocked_domains.is_empty() {
        return Err((
            "links".to_owned(),
            "set allowed_domains, blocked_domains or both; as written no link would match"
                .to_owned(),
        ));
    }
    Ok(Check::Links(LinkPolicy {
        finder: LinkFinder::new().map_err(|error| ("links".to_owned(), error.to_string()))?,
        allowed: config.allowed_domains.clone(),
        blocked: config.blocked_domains.clone(),
    }))
}

fn compile_contacts(config: &ContactsConfig) -> Result<Check, (String, String)> {
    if config.kinds.is_empty() {
        return Err((
            "contacts.kinds".to_owned(),
            "must list at least one of phone, email or handle".to_owned(),
        ));
    }
    if !(7..=15).contains(&config.min_phone_digits) {
        return Err((
            "contacts.min_phone_digits".to_owned(),
            "must be between 7 and 15".to_owned(),
        ));
    }
    let mut kinds = config.kinds.clone();
    kinds.dedup();
    let contacts = Contacts::new(kinds, config.min_phone_digits)
        .map_err(|error| ("contacts".to_owned(), error.to_string()))?;
    Ok(Check::Contacts(contacts))
}

fn is_rule_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
