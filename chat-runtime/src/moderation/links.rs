//! Links in message text and the policy of which domains they may name.
//!
//! A link is a URL with a scheme, or a bare domain such as `shop.vn/abc`.
//! Bare domains are recognised only when they end in a common top-level
//! domain, so that `v.v.`, `Mr.Bean` or `file.txt` are not taken for links.
//! Dots written as `[.]`, `(dot)`, ` dot ` or the Vietnamese ` chấm ` count
//! as dots.
//!
//! NOTE: the list of top-level domains is a fixed selection of common ones.
//! A bare domain under another one (`example.museum`) is not seen as a link
//! unless it is written with a scheme.

use std::ops::Range;

use regex::Regex;

use super::fold::Folded;

/// A link found in folded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Lowercase host name, without a trailing dot.
    pub host: String,
    /// Bytes of the folded text the link spans.
    pub range: Range<usize>,
}

pub(super) const DOT: &str =
    r"(?:\.|。|\s*[\(\[\{]\s*(?:\.|dot|chấm|cham)\s*[\)\]\}]\s*|\s+(?:dot|chấm|cham)\s+)";
const LABEL: &str = r"[\p{L}\p{N}](?:[\p{L}\p{N}-]{0,61}[\p{L}\p{N}])?";

/// The patterns that find links, compiled once per rule.
#[derive(Debug, Clone)]
pub struct LinkFinder {
    link: Regex,
    dot: Regex,
}

impl LinkFinder {
    pub fn new() -> Result<LinkFinder, regex::Error> {
        // Browsers read `\` as `/` in these URLs, so a backslash ends the
        // host: `https://evil.example\@good.example` opens evil.example.
        let with_scheme = r"(?:https?|ftp)://(?:[^\s/?#@\\]*@)?(?P<host>[^\s/?#:\\]+)\S*";
        let bare =
            format!(r"\b(?P<bare>(?:{LABEL}{DOT})+(?P<tld>[a-z]{{2,24}}))\b(?::\d+)?(?:[/?#]\S*)?");
        Ok(LinkFinder {
            link: Regex::new(&format!("{with_scheme}|{bare}"))?,
            dot: Regex::new(DOT)?,
        })
    }

    /// Finds the links in `text`, which should be the composed folded form.
    pub fn find(&self, text: &Folded) -> Vec<Link> {
        let mut links = Vec::new();
        for captures in self.link.captures_iter(text.text()) {
            let whole = captures.get_match();
            // The domain of an e-mail address is not a link; contact rules
            // handle addresses.
            if text.char_before(whole.start()) == Some('@') {
                continue;
            }
            let host = if let Some(host) = captures.name("host") {
                host.as_str().trim_end_matches('.').to_owned()
            } else {
                let tld = captures.name("tld").map_or("", |tld| tld.as_str());
                if !COMMON_TLDS.contains(&tld) {
                    continue;
                }
                // `Works fine.It has` is a missing space, not a link: a bare
                // name under a top-level domain that is also a common word
                // counts only with a path after it.
                let bare_end = captures.name("bare").map_or(0, |bare| bare.end());
                if WORD_TLDS.contains(&tld) && whole.end() == bare_end {
                    continue;
                }
                let bare = captures.name("bare").map_or("", |bare| bare.as_str());
                self.dot.split(bare).collect::<Vec<_>>().join(".")
            };
            links.push(Link {
                host,
                range: whole.range(),
            });
        }
        links
    }
}

/// Top-level domains that are also common words, so that a missing space
/// after a full stop makes them look like a domain.
const WORD_TLDS: &[&str] = &["be", "in", "it", "la", "me", "my", "no", "so", "to", "us"];

/// Top-level domains that make a bare `name.tld` count as a link.
pub(super) const COMMON_TLDS: &[&str] = &[
    "ae", "ai", "app", "ar", "asia", "at", "au", "be", "biz", "blog", "br", "ca", "cc", "ch", "cl",
    "click", "cloud", "club", "cn", "co", "com", "cz", "de", "dev", "dk", "edu", "email", "es",
    "eu", "fi", "fm", "fr", "fun", "gg", "gl", "gov", "gr", "hk", "icu", "id", "ie", "il", "in",
    "info", "io", "it", "jp", "kr", "la", "life", "link", "live", "ly", "me", "mobi", "mx", "my",
    "name", "net", "news", "nl", "no", "nz", "one", "online", "org", "page", "ph", "pl", "pro",
    "pt", "ru", "sa", "se", "sg", "sh", "shop", "site", "so", "space", "store", "tech", "th", "to",
    "today", "top", "tr", "tv", "tw", "ua", "uk", "us", "vip", "vn", "website", "work", "world",
    "ws", "xyz", "za",
];

/// True when `host` is `domain` or one of its subdomains.
pub fn is_within(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// A policy on the domains that links may name.
#[derive(Debug, Clone)]
pub struct LinkPolicy {
    pub finder: LinkFinder,
    /// When set, links to any other domain break the policy. An empty list
    /// allows no link at all.
    pub allowed: Option<Vec<String>>,
    /// Links to these domains break the policy, even when allowed.
    pub blocked: Vec<String>,
}

impl LinkPolicy {
    /// Finds the links in `text` that break the policy.
    pub fn find(&self, text: &Folded) -> Vec<Range<usize>> {
        self.finder
            .find(text)
            .into_iter()
            .filter(|link| !self.allows(&link.host))
            .map(|link| link.range)
            .collect()
    }

    fn allows(&self, host: &str) -> bool {
        if self.blocked.iter().any(|domain| is_within(host, domain)) {
            return false;
        }
        match &self.allowed {
            Some(allowed) => allowed.iter().any(|domain| is_within(host, domain)),
            None => true,
        }
    }
}

/// Checks an entry of `allowed_domains` or `blocked_domains`: a lowercase
/// host name such as `example.com`, which also covers its subdomains.
pub fn is_domain_entry(entry: &str) -> bool {
    // Message text is folded before links are found, so an entry that
    // folding changes (full-width letters, for one) could never match.
    let folded = Folded::new(entry, false).composed();
    folded.text() == entry
        && !entry.is_empty()
        && entry.len() <= 253
        && entry.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() && !c.is_uppercase() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(text: &str) -> Vec<String> {
        let folded = Folded::new(text, false).composed();
        let finder = LinkFinder::new().unwrap();
        finder
            .find(&folded)
            .into_iter()
            .map(|link| link.host)
            .collect()
    }

    #[test]
    fn urls_and_bare_domains() {
        assert_eq!(
            hosts("xem https://Shop.Example.com/a?b=1 nhé"),
            ["shop.example.com"]
        );
        assert_eq!(hosts("vào www.cho-tot.vn/xe đi"), ["www.cho-tot.vn"]);
        assert_eq!(
            hosts("bit.ly/abc và tinyurl.com"),
            ["bit.ly", "tinyurl.com"]
        );
        assert_eq!(hosts("http://localhost:8080/x"), ["localhost"]);
    }

    #[test]
    fn ordinary_text_is_not_a_link() {
        assert!(hosts("v.v. và Mr.Bean, file.txt, giá 1.5tr, 3.5km").is_empty());
        assert!(hosts("Xin chào. Com ơi").is_empty());
        assert!(hosts("mail an@example.com").is_empty());
        assert!(hosts("Great condition.No scratches, works fine.It has a case").is_empty());
        assert_eq!(hosts("t.me/shop và shop.me"), ["t.me"]);
    }

    #[test]
    fn obfuscated_dots() {
        assert_eq!(hosts("example[.]com"), ["example.com"]);
        assert_eq!(hosts("example (dot) com"), ["example.com"]);
        assert_eq!(hosts("example dot com"), ["example.com"]);
        assert_eq!(hosts("shopxyz chấm vn"), ["shopxyz.vn"]);
        assert_eq!(hosts("bit\u{200B}.ly/x"), ["bit.ly"]);
        assert_eq!(hosts("ＥＸＡＭＰＬＥ．ＣＯＭ"), ["example.com"]);
        assert_eq!(hosts("vào evil。com nhé"), ["evil.com"]);
        assert_eq!(hosts("https://evil.com\\@good.vn/x"), ["evil.com"]);
        assert_eq!(hosts("https://evil.com\\.good.vn/x"), ["evil.com"]);
    }

    #[test]
    fn policy_allows_listed_domains_and_subdomains() {
        let policy = LinkPolicy {
            finder: LinkFinder::new().unwrap(),
            allowed: Some(vec!["example.com".into()]),
            blocked: vec!["bad.example.com".into()],
        };
        let folded = Folded::new(
            "a.example.com ok, bad.example.com no, notexample.com no",
            false,
        )
        .composed();
        let broken: Vec<&str> = policy
            .find(&folded)
            .into_iter()
            .map(|range| &folded.text()[range])
            .collect();
        assert_eq!(broken, ["bad.example.com", "notexample.com"]);
    }

    #[test]
    fn empty_allow_list_allows_no_link() {
        let policy = LinkPolicy {
            finder: LinkFinder::new().unwrap(),
            allowed: Some(vec![]),
            blocked: vec![],
        };
        let folded = Folded::new("see example.org", false).composed();
        assert_eq!(policy.find(&folded).len(), 1);
    }

    #[test]
    fn domain_entries() {
        assert!(is_domain_entry("example.com"));
        assert!(is_domain_entry("chợ.vn"));
        assert!(!is_domain_entry("Example.com"));
        assert!(!is_domain_entry("*.example.com"));
        assert!(!is_domain_entry("example..com"));
        assert!(!is_domain_entry(""));
        assert!(!is_domain_entry("ｅｖｉｌ.com"));
    }
}
