//! Folding of message text into the form moderation rules compare, with the
//! position in the original text of every folded character, so that a
//! match can be masked in the text the sender wrote.
//!
//! Folding applies Unicode compatibility decomposition (NFKD), full case
//! folding, removal of invisible characters and collapsing of white space.
//! Comparing NFKD forms matches exactly the strings NFKC comparison would,
//! and keeps one folded character per position, which composing would not.
//! With `strip_accents`, combining marks are dropped and the Vietnamese `đ`
//! becomes `d`, so `lừa đảo` and `lua dao` fold to the same text.
//!
//! Latin look-alikes from Cyrillic and Greek (`а`, `о`, `ρ` ...) are folded
//! to Latin only inside words that also contain Latin letters, so that
//! `scаm` with a Cyrillic `а` matches `scam` while Russian or Greek words
//! stay as they are.

use std::ops::Range;

use unicode_normalization::char::{
    canonical_combining_class, compose, decompose_compatible, is_combining_mark,
};

use crate::limits::is_invisible;

/// Text in folded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    text: String,
    /// One entry per character of `text`, in order.
    origins: Vec<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    /// Byte offset of the folded character in `text`.
    at: usize,
    /// Bytes of the original text it came from.
    source: Range<usize>,
}

/// A folded character and the bytes of the original text it came from.
type Piece = (char, Range<usize>);

impl Folded {
    /// Folds `original`, keeping or stripping accents.
    pub fn new(original: &str, strip_accents: bool) -> Folded {
        let mut pieces: Vec<Piece> = Vec::with_capacity(original.len());
        for (start, c) in original.char_indices() {
            let source = start..start + c.len_utf8();
            if is_invisible(c) {
                continue;
            }
            decompose_compatible(c, |decomposed| {
                fold_case(decomposed, |folded| {
                    push_folded(&mut pieces, folded, &source, strip_accents);
                });
            });
        }
        order_marks(&mut pieces);
        fold_lookalikes(&mut pieces);
        Folded::from_pieces(pieces)
    }

    fn from_pieces(pieces: Vec<Piece>) -> Folded {
        let mut text = String::with_capacity(pieces.len());
        let mut origins = Vec::with_capacity(pieces.len());
        for (c, source) in pieces {
            origins.push(Origin {
                at: text.len(),
                source,
            });
            text.push(c);
        }
        Folded { text, origins }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Returns the same text with each base character and its marks
    /// composed again (NFC), the form regular expressions expect, where
    /// `ế` is one character.
    pub fn composed(&self) -> Folded {
        let mut pieces: Vec<Piece> = Vec::with_capacity(self.origins.len());
        for (c, origin) in self.text.chars().zip(&self.origins) {
            let source = origin.source.clone();
            if canonical_combining_class(c) != 0
                && let Some((last, last_source)) = pieces.last_mut()
                && let Some(composed) = compose(*last, c)
            {
                *last = composed;
                *last_source = last_source.start.min(source.start)..last_source.end.max(source.end);
                continue;
            }
            pieces.push((c, source));
        }
        Folded::from_pieces(pieces)
    }

    /// Maps a byte range of the folded text to the bytes of the original
    /// text its characters came from.
    pub fn source_of(&self, folded: Range<usize>) -> Range<usize> {
        let first = self
            .origins
            .partition_point(|origin| origin.at < folded.start);
        let end = self
            .origins
            .partition_point(|origin| origin.at < folded.end);
        let covered = &self.origins[first..end.max(first)];
        let start = covered.iter().map(|origin| origin.source.start).min();
        let stop = covered.iter().map(|origin| origin.source.end).max();
        match (start, stop) {
            (Some(start), Some(stop)) => start..stop,
            _ => 0..0,
        }
    }

    /// Returns the folded character that ends right before byte `at`, if any.
    pub fn char_before(&self, at: usize) -> Option<char> {
        self.text[..at].chars().next_back()
    }

    /// Returns the folded character that starts at byte `at`, if any.
    pub fn char_at(&self, at: usize) -> Option<char> {
        self.text[at..].chars().next()
    }
}

/// Applies full case folding to one character. `to_lowercase` covers all
/// but a few letters whose folded form differs from their lowercase.
fn fold_case(c: char, mut emit: impl FnMut(char)) {
    match c {
        'ß' | 'ẞ' => {
            emit('s');
            emit('s');
        }
        'ς' => emit('σ'),
        'ſ' => emit('s'),
        _ => c.to_lowercase().for_each(emit),
    }
}

fn push_folded(pieces: &mut Vec<Piece>, c: char, source: &Range<usize>, strip_accents: bool) {
    if c.is_whitespace() {
        // Runs of white space fold to one space, so `lừa  đảo` across a
        // double space or a line break still matches `lừa đảo`.
        if pieces.last().is_some_and(|(last, _)| *last == ' ') {
            extend_last(pieces, source);
        } else {
            pieces.push((' ', source.clone()));
        }
        return;
    }
    // `Ð` (eth) and `Ɖ` (African D) are drawn like the Vietnamese `Đ`.
    let c = match c {
        'ð' | 'ɖ' => 'đ',
        _ => c,
    };
    if strip_accents {
        if is_combining_mark(c) {
            extend_last(pieces, source);
            return;
        }
        pieces.push((strip_letter(c), source.clone()));
        return;
    }
    pieces.push((c, source.clone()));
}

/// Widens the last folded character's source to cover `source`, so that
/// masking it also masks what was dropped after it.
fn extend_last(pieces: &mut [Piece], source: &Range<usize>) {
    if let Some((_, last)) = pieces.last_mut() {
        last.end = last.end.max(source.end);
    }
}

/// Maps letters that carry a stroke rather than a combining mark, and so
/// survive decomposition, to their base letter.
fn strip_letter(c: char) -> char {
    match c {
        'đ' | 'ð' | 'ɗ' => 'd',
        'ø' => 'o',
        'ł' => 'l',
        'ı' => 'i',
        'ħ' => 'h',
        'ŧ' => 't',
        _ => c,
    }
}

/// Puts each run of combining marks in canonical order, as normalisation
/// does, so `ệ` typed as e + circumflex + dot below and as e + dot below +
/// circumflex folds to the same text.
fn order_marks(pieces: &mut [Piece]) {
    let mut index = 0;
    while index < pieces.len() {
        if canonical_combining_class(pieces[index].0) == 0 {
            index += 1;
            continue;
        }
        let start = index;
        while index < pieces.len() && canonical_combining_class(pieces[index].0) != 0 {
            index += 1;
        }
        pieces[start..index].sort_by_key(|(c, _)| canonical_combining_class(*c));
    }
}

/// Folds Cyrillic and Greek letters that look like Latin ones to Latin, in
/// words that mix them with Latin letters.
fn fold_lookalikes(pieces: &mut [Piece]) {
    let mut start = 0;
    while start < pieces.len() {
        let in_word = |c: char| c.is_alphanumeric() || is_combining_mark(c);
        if !in_word(pieces[start].0) {
            start += 1;
            continue;
        }
        let mut end = start;
        while end < pieces.len() && in_word(pieces[end].0) {
            end += 1;
        }
        let word = &mut pieces[start..end];
        let has_latin = word.iter().any(|(c, _)| c.is_ascii_alphabetic());
        let has_lookalike = word.iter().any(|(c, _)| latin_lookalike(*c).is_some());
        if has_latin && has_lookalike {
            for (c, _) in word.iter_mut() {
                if let Some(latin) = latin_lookalike(*c) {
                    *c = latin;
                }
            }
        }
        start = end;
    }
}

/// Returns the Latin letter that a lowercase Cyrillic or Greek letter
/// looks like.
fn latin_lookalike(c: char) -> Option<char> {
    let latin = match c {
        'а' | 'α' => 'a',
        'в' | 'β' => 'b',
        'с' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'ε' => 'e',
        'һ' => 'h',
        'і' | 'ι' => 'i',
        'ј' => 'j',
        'к' | 'κ' => 'k',
        'ӏ' => 'l',
        'м' => 'm',
        'п' | 'η' => 'n',
        'о' | 'ο' => 'o',
        'р' | 'ρ' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'т' | 'τ' => 't',
        'υ' => 'u',
        'ν' => 'v',
        'ԝ' | 'ω' => 'w',
        'х' | 'χ' => 'x',
        'у' | 'γ' => 'y',
        _ => return None,
    };
    Some(latin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(text: &str) -> String {
        Folded::new(text, false).text().to_owned()
    }

    fn fold_plain(text: &str) -> String {
        Folded::new(text, true).text().to_owned()
    }

    #[test]
    fn precomposed_and_combining_fold_alike() {
        // "Lừa đảo" typed precomposed, and with combining marks.
        let precomposed = "L\u{1EEB}a \u{0111}\u{1EA3}o";
        let combining = "Lu\u{031B}\u{0300}a \u{0111}a\u{0309}o";
        assert_eq!(fold(precomposed), fold(combining));
        assert_eq!(fold_plain(precomposed), "lua dao");
        // Look-alikes of Đ.
        assert_eq!(fold("LỪA ÐẢO"), fold("lừa đảo"));
        assert_eq!(fold_plain("lừa ƉẢO"), "lua dao");
    }

    #[test]
    fn mark_order_does_not_matter() {
        let circumflex_first = "e\u{0302}\u{0323}";
        let dot_first = "e\u{0323}\u{0302}";
        assert_eq!(fold(circumflex_first), fold(dot_first));
        assert_eq!(Folded::new(dot_first, false).composed().text(), "ệ");
    }

    #[test]
    fn compatibility_forms_and_case_fold() {
        assert_eq!(fold("ＳＣＡＭ"), "scam");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("ΣΟΦΟΣ"), fold("σοφος"));
        assert_eq!(fold("①②"), "12");
    }

    #[test]
    fn invisible_characters_are_removed() {
        assert_eq!(fold("s\u{200B}c\u{00AD}a\u{2060}m"), "scam");
        assert_eq!(fold("lừa\u{FEFF} đảo"), fold("lừa đảo"));
    }

    #[test]
    fn white_space_collapses() {
        assert_eq!(fold("mua\t\n  bán"), fold("mua bán"));
    }

    #[test]
    fn lookalikes_fold_in_mixed_words_only() {
        // A Cyrillic "а" and "с" inside a Latin word.
        assert_eq!(fold("s\u{0441}\u{0430}m"), "scam");
        // A Russian word is left alone.
        assert_eq!(fold("сор"), "сор");
        assert_eq!(fold("ρay"), "pay");
    }

    #[test]
    fn source_maps_back_to_original() {
        let original = "Gọi 0912 nhé";
        let folded = Folded::new(original, true);
        let start = folded.text().find("0912").unwrap();
        let source = folded.source_of(start..start + 4);
        assert_eq!(&original[source], "0912");

        // A folded range over a stripped accent covers the whole letter.
        let word = folded.text().find("goi").unwrap();
        assert_eq!(&original[folded.source_of(word..word + 3)], "Gọi");
    }

    #[test]
    fn composed_keeps_sources() {
        let original = "Nhà\u{200B} đẹp";
        let composed = Folded::new(original, false).composed();
        assert_eq!(composed.text(), "nhà đẹp");
        let start = composed.text().find("đẹp").unwrap();
        let source = composed.source_of(start..composed.text().len());
        assert_eq!(&original[source], "đẹp");
    }
}
