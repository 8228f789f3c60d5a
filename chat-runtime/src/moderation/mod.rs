//! Moderation of message content before it is stored: a tenant's rules run
//! in order over the text of each message, and each may block the message,
//! mask what it matched, or flag the message for review.
//!
//! Rules compare folded text (see [`fold`]), so case, compatibility forms,
//! invisible characters and, for rules that ignore accents, tone marks do
//! not hide a match. Masking replaces the matched characters of the text as the sender
//! wrote it.
//!
//! The text checked is a text message's `text`, a location's `label` and an
//! attachment's `name`.
//!
//! A tenant may add a [`hook`]: its own HTTP endpoint, called after the
//! rules let a message through, which allows, rejects or rewrites it.
//!
//! NOTE: rules do not check `custom` messages: their JSON is the tenant's
//! own format, and rules cannot tell which of its strings users see. The
//! hook receives them like any other message.

mod config;
mod contacts;
mod fold;
pub mod hook;
mod links;
mod terms;

use std::cell::OnceCell;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::{
    Action, ContactsConfig, LinksConfig, MAX_DOMAINS, MAX_RULES, MAX_TERMS, ModerationConfig,
    RuleConfig, TermsConfig,
};
pub use contacts::{ContactKind, DEFAULT_MIN_PHONE_DIGITS};
pub use hook::{Hook, HookConfig, OnFailure};
pub use terms::MAX_TERM_BYTES;

/// Rule name under which the hook's decisions and latency are counted, so
/// no rule may take it.
pub const HOOK_RULE_NAME: &str = "hook";

use crate::store::Content;

/// A tenant's compiled rules.
#[derive(Default)]
pub struct Moderator {
    config: ModerationConfig,
    rules: Vec<Rule>,
}

impl PartialEq for Moderator {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl std::fmt::Debug for Moderator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moderator")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

struct Rule {
    name: Arc<str>,
    action: Action,
    shadow: bool,
    check: Check,
}

enum Check {
    Terms(terms::Terms),
    Regex(regex::Regex),
    Links(links::LinkPolicy),
    Contacts(contacts::Contacts),
}

impl Check {
    /// Returns the code a sender gets when this check blocks a message.
    fn reason(&self) -> &'static str {
        match self {
            Check::Terms(_) => "blocked_term",
            Check::Regex(_) => "blocked_pattern",
            Check::Links(_) => "link_not_allowed",
            Check::Contacts(_) => "contact_details",
        }
    }

    /// Finds the parts of `text` the check matches, as byte ranges of the
    /// original text.
    fn find(&self, text: &Views) -> Vec<Range<usize>> {
        let (folded, found) = match self {
            Check::Terms(terms) => {
                let folded = if terms.strip_accents {
                    text.plain()
                } else {
                    text.accented()
                };
                (folded, terms.find(folded))
            }
            Check::Regex(regex) => {
                let folded = text.composed();
                let found = regex.find_iter(folded.text()).map(|hit| hit.range());
                (folded, found.collect())
            }
            Check::Links(policy) => {
                let folded = text.composed();
                (folded, policy.find(folded))
            }
            Check::Contacts(contacts) => {
                let folded = text.plain();
                (folded, contacts.find(folded))
            }
        };
        found
            .into_iter()
            .map(|range| folded.source_of(range))
            .filter(|range| !range.is_empty())
            .collect()
    }
}

/// The folded forms of one text, each computed when a rule first needs it.
struct Views<'a> {
    original: &'a str,
    plain: OnceCell<fold::Folded>,
    accented: OnceCell<fold::Folded>,
    composed: OnceCell<fold::Folded>,
}

impl<'a> Views<'a> {
    fn new(original: &'a str) -> Self {
        Self {
            original,
            plain: OnceCell::new(),
            accented: OnceCell::new(),
            composed: OnceCell::new(),
        }
    }

    fn plain(&self) -> &fold::Folded {
        self.plain
            .get_or_init(|| fold::Folded::new(self.original, true))
    }

    fn accented(&self) -> &fold::Folded {
        self.accented
            .get_or_init(|| fold::Folded::new(self.original, false))
    }

    fn composed(&self) -> &fold::Folded {
        self.composed.get_or_init(|| self.accented().composed())
    }
}

/// One rule's decision on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRun {
    pub rule: Arc<str>,
    pub elapsed: Duration,
    /// The rule's decision when it matched; `None` when it let the message
    /// pass.
    pub matched: Option<Decision>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// True when the rule only records: the message went on unchanged.
    pub shadow: bool,
    /// Code of the rule's kind, which a blocked sender receives.
    pub reason: &'static str,
}

/// The result of moderating one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Moderated {
    /// The content to store, masked where a rule asked.
    pub content: Content,
    /// True when a rule masked part of the content.
    pub masked: bool,
    /// One entry per rule that ran, in order.
    pub runs: Vec<RuleRun>,
}

impl Moderated {
    /// Returns the decision that blocked the message, if one did.
    pub fn blocked(&self) -> Option<&Decision> {
        self.runs
            .iter()
            .filter_map(|run| run.matched.as_ref())
            .find(|decision| decision.action == Action::Block && !decision.shadow)
    }
}

impl Moderator {
    /// Compiles a tenant's `moderation` section. On an invalid value returns
    /// the path of its field below `field`, and the reason.
    pub fn new(config: &ModerationConfig, field: &str) -> Result<Moderator, (String, String)> {
        let rules = config::compile(config, field)?;
        Ok(Moderator {
            config: config.clone(),
            rules,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Runs the rules over `content` until one blocks it.
    pub fn moderate(&self, mut content: Content) -> Moderated {
        let mut runs = Vec::with_capacity(self.rules.len());
        let mut masked = false;
        for rule in &self.rules {
            let started = Instant::now();
            let matched = self.apply(rule, &mut content);
            masked |=
                matched.is_some_and(|decision| decision.action == Action::Mask && !decision.shadow);
            runs.push(RuleRun {
                rule: rule.name.clone(),
                elapsed: started.elapsed(),
                matched,
            });
            if matched.is_some_and(|decision| decision.action == Action::Block && !decision.shadow)
            {
                break;
            }
        }
        Moderated {
            content,
            masked,
            runs,
        }
    }

    /// Runs one rule over every text of `content`, masking in place when
    /// the rule masks and is not in shadow mode.
    fn apply(&self, rule: &Rule, content: &mut Content) -> Option<Decision> {
        let mut matched = false;
        for text in texts_of(content) {
            let found = rule.check.find(&Views::new(text));
            if found.is_empty() {
                continue;
            }
            matched = true;
            if rule.action == Action::Mask && !rule.shadow {
                *text = mask(text, found, &self.config.mask);
            }
        }
        matched.then_some(Decision {
            action: rule.action,
            shadow: rule.shadow,
            reason: rule.check.reason(),
        })
    }
}

/// Returns the user-visible texts of a message, which rules check.
fn texts_of(content: &mut Content) -> Vec<&mut String> {
    match content {
        Content::Text { text } => vec![text],
        Content::Location { label, .. } => label.iter_mut().collect(),
        Content::Attachment { name, .. } => name.iter_mut().collect(),
        Content::Custom { .. } => Vec::new(),
        // The values are checked as well as the text they were rendered
        // into, because clients may show either.
        Content::Template { values, text, .. } => {
            let mut texts = vec![text];
            texts.extend(values.values_mut());
            texts
        }
        Content::Automated { text, .. } => vec![text],
    }
}

/// Replaces each of `ranges` (byte ranges of `text` on character
/// boundaries, possibly overlapping) with `mask`. Each range first grows
/// over the combining marks, joiners and selectors after it, so none of
/// them is left to attach to the mask.
fn mask(text: &str, mut ranges: Vec<Range<usize>>, mask: &str) -> String {
    for range in &mut ranges {
        let attached: usize = text[range.end..]
            .chars()
            .take_while(|c| {
                unicode_normalization::char::is_combining_mark(*c)
                    || matches!(c, '\u{200D}' | '\u{FE00}'..='\u{FE0F}' | '\u{20E3}')
            })
            .map(char::len_utf8)
            .sum();
        range.end += attached;
    }
    ranges.sort_by_key(|range| range.start);
    let mut masked = String::with_capacity(text.len());
    let mut copied = 0;
    for range in ranges {
        if range.end <= copied {
            continue;
        }
        let start = range.start.max(copied);
        masked.push_str(&text[copied..start]);
        if start == range.start {
            masked.push_str(mask);
        }
        copied = range.end;
    }
    masked.push_str(&text[copied..]);
    masked
}

#[cfg(test)]
mod tests;
