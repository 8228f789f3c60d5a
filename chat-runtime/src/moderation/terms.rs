//! Blocked terms, matched as whole words on folded text.
//!
//! A term matches where it starts and ends at a word boundary, so `scam`
//! does not match `scampi`. A term written with a trailing `*` matches as a
//! prefix (`scam*` matches `scammer`). Scripts written without spaces
//! between words (Chinese, Japanese, Thai ...) have no boundaries to check,
//! so their terms match anywhere.
//!
//! A term of several words also matches with its words joined, or split by
//! any characters other than letters and digits (`lừa-đảo`, `lừa/đảo`,
//! `lừa 🙂 đảo`, `lừađảo`, `l.ừ.a đ.ả.o`), since zero-width characters
//! folded out of a text leave its words joined. Punctuation such as `.`
//! or `,` followed by a space ends a sentence or a clause and splits the
//! words instead. Folding turns a line break into a space, so a term still
//! matches across one.
//!
//! NOTE: a term of one word does not match with its letters spaced out
//! (`s c a m`), and letters written as digits (`5cam`) are not read as
//! letters.

use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};

use super::fold::Folded;

/// Maximum term length, in bytes as written.
pub const MAX_TERM_BYTES: usize = 256;

#[derive(Debug)]
pub struct Terms {
    automaton: AhoCorasick,
    /// Per pattern, whether it matches as a prefix.
    prefix: Vec<bool>,
    /// Terms of several words with their joiners removed, matched on the
    /// text with its joiners removed.
    joined: AhoCorasick,
    /// Per pattern of `joined`, whether it matches as a prefix.
    joined_prefix: Vec<bool>,
    pub strip_accents: bool,
}

impl Terms {
    /// Compiles `terms`, folded as message text is. Fails on a term that
    /// folds to nothing, naming it.
    pub fn new(terms: &[String], strip_accents: bool) -> Result<Terms, String> {
        let mut patterns = Vec::with_capacity(terms.len());
        let mut prefix = Vec::with_capacity(terms.len());
        let mut joined_patterns: Vec<String> = Vec::new();
        let mut joined_prefix = Vec::new();
        for term in terms {
            let (body, is_prefix) = match term.strip_suffix('*') {
                Some(body) => (body, true),
                None => (term.as_str(), false),
            };
            if body.contains('*') {
                return Err(format!(
                    "term {term:?} has a `*` other than one at its end, which is the only place it means a prefix"
                ));
            }
            let folded = Folded::new(body, strip_accents);
            let folded = folded.text().trim();
            if folded.is_empty() {
                return Err(format!("term {term:?} has no visible characters"));
            }
            if term.len() > MAX_TERM_BYTES {
                return Err(format!(
                    "term {term:?} is longer than {MAX_TERM_BYTES} bytes"
                ));
            }
            if folded.chars().any(is_joiner) {
                joined_patterns.push(folded.chars().filter(|c| !is_joiner(*c)).collect());
                joined_prefix.push(is_prefix);
            }
            patterns.push(folded.to_owned());
            prefix.push(is_prefix);
        }
        Ok(Terms {
            automaton: compile(&patterns)?,
            prefix,
            joined: compile(&joined_patterns)?,
            joined_prefix,
            strip_accents,
        })
    }

    /// Finds every term in `text`, as byte ranges of the folded text.
    pub fn find(&self, text: &Folded) -> Vec<Range<usize>> {
        let mut found = Vec::new();
        for hit in self.automaton.find_overlapping_iter(text.text()) {
            let is_prefix = self.prefix[hit.pattern().as_usize()];
            found.extend(whole_words(text, hit.range(), is_prefix));
        }
        if self.joined_prefix.is_empty() {
            return found;
        }
        let compact = Compact::new(text.text());
        for hit in self.joined.find_overlapping_iter(&compact.text) {
            let is_prefix = self.joined_prefix[hit.pattern().as_usize()];
            found.extend(whole_words(
                text,
                compact.folded_range(hit.range()),
                is_prefix,
            ));
        }
        // Terms written with spaces match both ways where the text has them.
        found.sort_by_key(|range| (range.start, range.end));
        found.dedup();
        found
    }
}

fn compile(patterns: &[String]) -> Result<AhoCorasick, String> {
    AhoCorasick::builder()
        .match_kind(MatchKind::Standard)
        .build(patterns)
        .map_err(|error| format!("failed to compile the terms: {error}"))
}

/// Returns `range` of the folded text when it starts and ends at word
/// boundaries, extended to the end of its word for a prefix term.
fn whole_words(text: &Folded, mut range: Range<usize>, is_prefix: bool) -> Option<Range<usize>> {
    let starts_word = text
        .char_at(range.start)
        .is_none_or(|first| !needs_boundary(first))
        || text.char_before(range.start).is_none_or(|c| !in_word(c));
    let ends_word = is_prefix
        || text
            .char_before(range.end)
            .is_none_or(|last| !needs_boundary(last))
        || text.char_at(range.end).is_none_or(|c| !in_word(c));
    if !(starts_word && ends_word) {
        return None;
    }
    if is_prefix {
        // A prefix match covers the rest of its word, so masking it leaves
        // no tail such as `mers` of `scammers`.
        while let Some(next) = text.char_at(range.end).filter(|c| in_word(*c)) {
            range.end += next.len_utf8();
        }
    }
    Some(range)
}

/// True for characters that may join or split the words of a term.
fn is_joiner(c: char) -> bool {
    !in_word(c)
}

/// True when a run of joiners between two words ends a sentence or a
/// clause: it has punctuation followed by white space.
fn breaks_words(run: &str) -> bool {
    let mut after_punctuation = false;
    for c in run.chars() {
        if after_punctuation && c.is_whitespace() {
            return true;
        }
        if matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | '…') {
            after_punctuation = true;
        }
    }
    false
}

/// A text without its joiners, with the offset in the text of each byte
/// kept. A run of joiners that ends a sentence or a clause stays as one
/// space, which no pattern contains, so no term matches across it.
struct Compact {
    text: String,
    offsets: Vec<usize>,
}

impl Compact {
    fn new(text: &str) -> Compact {
        let mut compact = Compact {
            text: String::with_capacity(text.len()),
            offsets: Vec::with_capacity(text.len()),
        };
        let mut run_start = None;
        for (offset, c) in text.char_indices() {
            if is_joiner(c) {
                run_start.get_or_insert(offset);
                continue;
            }
            if let Some(start) = run_start.take()
                && breaks_words(&text[start..offset])
            {
                compact.text.push(' ');
                compact.offsets.push(start);
            }
            compact.text.push(c);
            compact.offsets.extend(offset..offset + c.len_utf8());
        }
        compact
    }

    /// Maps a non-empty range of the compact text to the text.
    fn folded_range(&self, range: Range<usize>) -> Range<usize> {
        self.offsets[range.start]..self.offsets[range.end - 1] + 1
    }
}

fn in_word(c: char) -> bool {
    c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c)
}

/// True for characters of scripts that separate words with spaces, where a
/// term must start and end at a word boundary.
fn needs_boundary(c: char) -> bool {
    in_word(c) && !is_unspaced_script(c)
}

/// True for letters of scripts written without spaces between words.
fn is_unspaced_script(c: char) -> bool {
    matches!(
        c,
        '\u{0E00}'..='\u{0EFF}'     // Thai, Lao
            | '\u{1000}'..='\u{109F}' // Myanmar
            | '\u{1780}'..='\u{17FF}' // Khmer
            | '\u{3040}'..='\u{30FF}' // Hiragana, Katakana
            | '\u{3400}'..='\u{4DBF}' // CJK Extension A
            | '\u{4E00}'..='\u{9FFF}' // CJK Unified Ideographs
            | '\u{F900}'..='\u{FAFF}' // CJK Compatibility Ideographs
            | '\u{20000}'..='\u{2FA1F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(list: &[&str], strip_accents: bool) -> Terms {
        let list: Vec<String> = list.iter().map(|term| term.to_string()).collect();
        Terms::new(&list, strip_accents).unwrap()
    }

    fn matches(terms: &Terms, text: &str) -> Vec<String> {
        let folded = Folded::new(text, terms.strip_accents);
        terms
            .find(&folded)
            .into_iter()
            .map(|range| text[folded.source_of(range)].to_owned())
            .collect()
    }

    #[test]
    fn whole_words_only() {
        let scam = terms(&["scam"], false);
        assert_eq!(matches(&scam, "this is a SCAM!"), ["SCAM"]);
        assert!(matches(&scam, "grilled scampi").is_empty());
        assert!(matches(&scam, "antiscam tips").is_empty());
    }

    #[test]
    fn prefix_terms() {
        let scam = terms(&["scam*"], false);
        assert_eq!(matches(&scam, "scammers here"), ["scammers"]);
        assert!(matches(&scam, "antiscam").is_empty());
    }

    #[test]
    fn vietnamese_with_and_without_tone_marks() {
        let strict = terms(&["lừa đảo"], false);
        assert_eq!(matches(&strict, "Đây là LỪA ĐẢO"), ["LỪA ĐẢO"]);
        assert!(matches(&strict, "day la lua dao").is_empty());
        // "lúa đào" (rice, peach) differs only in its tone marks.
        assert!(matches(&strict, "lúa đào").is_empty());

        let loose = terms(&["lừa đảo"], true);
        assert_eq!(matches(&loose, "day la lua dao"), ["lua dao"]);
        assert_eq!(matches(&loose, "Lừa   Đảo"), ["Lừa   Đảo"]);
        // Combining marks typed separately.
        let combining = "lu\u{031B}\u{0300}a \u{0111}a\u{0309}o";
        assert_eq!(matches(&loose, combining), [combining]);
    }

    #[test]
    fn zero_width_and_lookalike_tricks() {
        let scam = terms(&["scam", "lừa đảo"], true);
        assert_eq!(
            matches(&scam, "s\u{200B}c\u{200D}am"),
            ["s\u{200B}c\u{200D}am"]
        );
        assert_eq!(matches(&scam, "s\u{0441}am"), ["s\u{0441}am"]);
        assert_eq!(matches(&scam, "ＳＣＡＭ"), ["ＳＣＡＭ"]);
        assert_eq!(matches(&scam, "l\u{00AD}ừa đảo"), ["l\u{00AD}ừa đảo"]);
    }

    #[test]
    fn words_joined_or_split_otherwise() {
        let list = terms(&["lừa đảo", "chuyển khoản trước"], true);
        for text in [
            "lừa-đảo",
            "lừa_đảo",
            "lừađảo",
            "lừa\u{200B}đảo",
            "l.ừ.a đ.ả.o",
            "lừa – đảo",
            "lừa/đảo",
            "lừa,đảo",
            "lừa🙂đảo",
            "lừa | đảo",
            "lừa(đảo",
        ] {
            assert_eq!(
                matches(&list, &format!("đây là {text} nhé")),
                [text],
                "{text}"
            );
        }
        assert_eq!(matches(&list, "chuyểnkhoảntrước nha"), ["chuyểnkhoảntrước"]);
        // Joined words still need boundaries at both ends.
        assert!(matches(&list, "xlừađảo").is_empty());
        assert!(matches(&list, "búa đao").is_empty());
        // The end of a sentence or a clause splits them.
        for text in ["Bán xe lừa. Đảo Cát Bà giao hàng", "con lừa, đảo Lý Sơn"] {
            assert!(matches(&list, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn mixed_scripts_and_emoji() {
        let list = terms(&["scam", "诈骗", "мошенник"], false);
        let text = "Cẩn thận 🙅‍♀️ scam 诈骗 và мошенник!";
        assert_eq!(matches(&list, text), ["scam", "诈骗", "мошенник"]);
        // Ideographs match inside a sentence without spaces.
        assert_eq!(matches(&list, "这是诈骗吗"), ["诈骗"]);
    }

    #[test]
    fn term_without_visible_characters_is_rejected() {
        let error = Terms::new(&["\u{200B} ".to_owned()], false).unwrap_err();
        assert!(error.contains("no visible characters"), "{error}");
    }
}
