//! Contact details that would move a conversation off the platform: phone
//! numbers, e-mail addresses and messaging handles, including the usual
//! ways of hiding them from a plain pattern.
//!
//! Detection works on text folded without accents, so full-width digits,
//! zero-width characters and tone marks are already gone.
//!
//! - A phone number is a run of at least `min_phone_digits` digits. They
//!   may be spaced out or split by punctuation, dashes or emoji. They may
//!   be number words in English or Vietnamese (`không chín một ...`),
//!   another script's digits (Arabic-Indic, Devanagari ...), or `o` for 0
//!   and `l` or `i` for 1 inside a number. Amounts such as `1.200.000.000`
//!   or `1500000000đ` are not phone numbers.
//! - An e-mail address may write `@` as `(at)`, ` at ` or the Vietnamese
//!   ` a còng `, and dots as links may.
//! - A messaging handle is a link to a messaging service (`t.me/...`,
//!   `zalo.me/...`), or an app name followed by `:` or `@` and a handle
//!   (`telegram: @shop24`, `zalo: minh_tran`).
//!
//! NOTE: any long run of digits counts as a phone number, so order numbers
//! and card numbers of 9 digits or more are detected too. Numbers read in
//! pairs (`mười hai`), number words glued to digits (`zero9one2`) and
//! letters that look like digits in other scripts (Cyrillic `З`) are not
//! read as phone numbers.

use std::ops::Range;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::fold::Folded;
use super::links::{self, COMMON_TLDS, DOT, LinkFinder};

/// A kind of contact detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKind {
    Phone,
    Email,
    Handle,
}

/// Default minimum digits of a phone number: nine, so that Vietnamese
/// mobile numbers (ten digits) match even without their leading zero.
pub const DEFAULT_MIN_PHONE_DIGITS: usize = 9;

/// Maximum separator characters between two groups of one phone number.
const MAX_GAP: usize = 4;

#[derive(Debug, Clone)]
pub struct Contacts {
    kinds: Vec<ContactKind>,
    min_phone_digits: usize,
    links: LinkFinder,
    email: Regex,
    app_handle: Regex,
}

impl Contacts {
    pub fn new(kinds: Vec<ContactKind>, min_phone_digits: usize) -> Result<Contacts, regex::Error> {
        Ok(Contacts {
            kinds,
            min_phone_digits,
            links: LinkFinder::new()?,
            email: Regex::new(&email_pattern())?,
            app_handle: Regex::new(&app_handle_pattern())?,
        })
    }

    /// Finds contact details in `text`, folded without accents, as byte
    /// ranges of the folded text.
    pub fn find(&self, text: &Folded) -> Vec<Range<usize>> {
        let mut found = Vec::new();
        for kind in &self.kinds {
            match kind {
                ContactKind::Phone => found.extend(phones(text.text(), self.min_phone_digits)),
                ContactKind::Email => found.extend(self.emails(text.text())),
                ContactKind::Handle => found.extend(self.handles(text)),
            }
        }
        found
    }
}

/// A run of letters and digits, classified for phone detection.
struct Run {
    range: Range<usize>,
    /// The digits it stands for, or `None` when it is an ordinary word.
    digits: Option<String>,
    /// True when it was written as digits only.
    plain: bool,
    /// True when a currency word follows the digits without a space, as in
    /// `1500000000đ`. The run then covers the digits only.
    currency_after: bool,
}

fn runs(text: &str) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut start = None;
    for (index, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (start, c.is_alphanumeric()) {
            (None, true) => start = Some(index),
            (Some(from), false) => {
                let word = &text[from..index];
                runs.push(run_of(word, from));
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// Classifies the word that starts at byte `from` of the text.
fn run_of(word: &str, from: usize) -> Run {
    let plain = |digits: &str| digits.chars().all(|c| decimal_digit(c).is_some());
    // Digits with a currency word stuck to them.
    if let Some(split) = word.find(|c: char| decimal_digit(c).is_none())
        && split > 0
        && plain(&word[..split])
        && CURRENCY_WORDS.contains(&&word[split..])
    {
        return Run {
            range: from..from + split,
            digits: digits_of(&word[..split]),
            plain: true,
            currency_after: true,
        };
    }
    Run {
        range: from..from + word.len(),
        digits: digits_of(word),
        plain: plain(word),
        currency_after: false,
    }
}

/// Reads the digits a word represents: its own digits, with `o` read as 0
/// and `l` or `i` as 1 when it has at least one digit, or a number word.
fn digits_of(word: &str) -> Option<String> {
    if word.chars().any(|c| decimal_digit(c).is_some()) {
        return word
            .chars()
            .map(|c| match c {
                // Latin, Cyrillic and Greek small o.
                'o' | 'о' | 'ο' => Some('0'),
                'l' | 'i' => Some('1'),
                _ => decimal_digit(c),
            })
            .collect();
    }
    let digit = match word {
        "zero" | "khong" | "ko" | "linh" => '0',
        "one" | "mot" => '1',
        "two" | "hai" => '2',
        "three" | "ba" => '3',
        "four" | "bon" | "tu" => '4',
        "five" | "nam" | "lam" => '5',
        "six" | "sau" => '6',
        "seven" | "bay" => '7',
        "eight" | "tam" => '8',
        "nine" | "chin" => '9',
        _ => return None,
    };
    Some(digit.to_string())
}

/// Returns the ASCII digit for a decimal digit of any of the scripts
/// below. Folding has already turned full-width digits into ASCII ones.
fn decimal_digit(c: char) -> Option<char> {
    /// The first code point, the zero, of each script's ten digits:
    /// Arabic-Indic, Extended Arabic-Indic, Devanagari, Bengali, Gurmukhi,
    /// Gujarati, Oriya, Tamil, Telugu, Kannada, Malayalam, Thai, Lao,
    /// Tibetan, Myanmar and Khmer.
    const ZEROS: [u32; 16] = [
        0x0660, 0x06F0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
        0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x17E0,
    ];
    if c.is_ascii_digit() {
        return Some(c);
    }
    let code = c as u32;
    ZEROS
        .iter()
        .find(|zero| (**zero..**zero + 10).contains(&code))
        .and_then(|zero| char::from_digit(code - zero, 10))
}

/// True for characters that may separate the groups of one phone number:
/// common punctuation, dashes, and symbols such as emoji.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '.' | '-' | '(' | ')' | '/' | '_' | ',' | '+' | '*' | '|' | ':' | '~' | '·' | '•'
    ) || (!c.is_ascii() && !c.is_alphanumeric() && !c.is_whitespace())
}

/// Words after a number that make it an amount of money.
const CURRENCY_WORDS: &[&str] = &[
    "d", "vnd", "dong", "k", "tr", "trieu", "ty", "nghin", "ngan", "usd", "eur",
];

fn phones(text: &str, min_digits: usize) -> Vec<Range<usize>> {
    let runs = runs(text);
    let mut found = Vec::new();
    let mut index = 0;
    while index < runs.len() {
        if runs[index].digits.is_none() {
            index += 1;
            continue;
        }
        let first = index;
        while index + 1 < runs.len()
            && runs[index + 1].digits.is_some()
            && joins(&text[runs[index].range.end..runs[index + 1].range.start])
        {
            index += 1;
        }
        let group = &runs[first..=index];
        let digits: usize = group
            .iter()
            .map(|run| run.digits.as_ref().map_or(0, String::len))
            .sum();
        let phone_like = starts_like_phone(text, group)
            || single_digits(group).is_some_and(|digits| !counts_up(&digits));
        // A number in several groups is a phone number only when it starts
        // as one, so sizes (`36 37 38 39 40`), dates and price ranges are
        // not, and neither are times of day (`08:30-12:00`).
        let grouped_ok = group.len() == 1 || (phone_like && !has_clock_time(text, group));
        let amount = !phone_like && is_amount(text, group, runs.get(index + 1));
        if digits >= min_digits && grouped_ok && !amount {
            found.push(group[0].range.start..group[group.len() - 1].range.end);
        } else if !grouped_ok && !amount {
            // The group is not one phone number, but a run in it can be one
            // on its own, as `123456789` is in `123456789 1`.
            let long_runs = group
                .iter()
                .filter(|run| run.digits.as_ref().is_some_and(|d| d.len() >= min_digits));
            found.extend(long_runs.map(|run| run.range.clone()));
        }
        index += 1;
    }
    found
}

/// True when the text between two groups of digits may join them into one
/// number.
fn joins(gap: &str) -> bool {
    gap.chars().count() <= MAX_GAP && gap.chars().all(is_separator)
}

/// True when a group of digit runs reads as an amount: thousands separated
/// by one `.` or `,` each (`1.200.000.000`), or a number followed by a
/// currency word or preceded by `$`.
/// True when a group of digit runs starts as a phone number does: with a
/// 0 (a national number), with 84 (Vietnam's country code) or after a `+`.
fn starts_like_phone(text: &str, group: &[Run]) -> bool {
    let start = group[0].range.start;
    let digits = group[0].digits.as_deref().unwrap_or_default();
    digits.starts_with('0') || digits.starts_with("84") || text[..start].trim_end().ends_with('+')
}

/// Returns the digits of a group whose every run is one digit, as in a
/// number spelled out word by word or written digit by digit. Sizes, dates
/// and amounts are written in runs of several digits.
fn single_digits(group: &[Run]) -> Option<Vec<u32>> {
    group
        .iter()
        .map(|run| match run.digits.as_deref() {
            Some(digit) if digit.len() == 1 => digit.chars().next()?.to_digit(10),
            _ => None,
        })
        .collect()
}

/// True when each digit is one more than the one before, as in counting
/// (`1 2 3 4 5 6 7 8 9`, `một hai ba ...`), which is no phone number.
fn counts_up(digits: &[u32]) -> bool {
    digits.windows(2).all(|pair| pair[1] == pair[0] + 1)
}

/// True when two runs of two plain digits each are joined by `:`, as the
/// hours and minutes of a time of day are.
fn has_clock_time(text: &str, group: &[Run]) -> bool {
    group.windows(2).any(|pair| {
        let gap = &text[pair[0].range.end..pair[1].range.start];
        let two_digits = |run: &Run| run.plain && run.range.len() == 2;
        gap == ":" && two_digits(&pair[0]) && two_digits(&pair[1])
    })
}

fn is_amount(text: &str, group: &[Run], next: Option<&Run>) -> bool {
    let start = group[0].range.start;
    let end = group[group.len() - 1].range.end;
    if text[..start].ends_with('$') || text[..start].ends_with("$ ") {
        return true;
    }
    if group[group.len() - 1].currency_after {
        return true;
    }
    if let Some(next) = next
        && text[end..next.range.start].chars().count() <= 1
        && CURRENCY_WORDS.contains(&&text[next.range.clone()])
    {
        return true;
    }
    let all_plain = group.iter().all(|run| run.plain);
    let first = &text[group[0].range.clone()];
    let thousands = group.len() > 1
        && (1..=3).contains(&first.len())
        && !first.starts_with('0')
        && group[1..].iter().all(|run| run.range.len() == 3)
        && group.windows(2).all(|pair| {
            let gap = &text[pair[0].range.end..pair[1].range.start];
            gap == "." || gap == ","
        });
    all_plain && thousands
}

fn email_pattern() -> String {
    let at = r"(?P<at>\s*@\s*|\s*[\(\[\{<]\s*(?:at|a cong)\s*[\)\]\}>]\s*|\s+(?:at|a cong)\s+)";
    let label = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
    format!(r"\b[a-z0-9][a-z0-9._%+-]*{at}(?P<domain>(?:{label}{DOT})+(?P<tld>[a-z]{{2,24}}))\b")
}

fn app_handle_pattern() -> String {
    let apps = "zalo|zl|telegram|tele|tg|whatsapp|wa|viber|skype|facebook|fb|messenger|insta|instagram|ig|line|wechat|signal|kakaotalk|kakao|snapchat|snap|discord";
    format!(
        r"\b(?P<app>{apps})\b\s*(?P<sep>[:=]\s*@?|@|\s)\s*(?P<handle>[a-z0-9][a-z0-9._-]{{2,}})"
    )
}

/// App names that are also common English words (`line: busy`, `signal:
/// weak`), after which a `:` alone does not announce a handle.
const WORD_APPS: &[&str] = &["line", "signal", "snap", "tele", "wa", "ig", "fb"];

impl Contacts {
    fn emails(&self, text: &str) -> Vec<Range<usize>> {
        self.email
            .captures_iter(text)
            .filter(|captures| {
                let plain_at = captures["at"].trim() == "@";
                plain_at || COMMON_TLDS.contains(&&captures["tld"])
            })
            .map(|captures| captures.get_match().range())
            .collect()
    }

    fn handles(&self, text: &Folded) -> Vec<Range<usize>> {
        let mut found: Vec<Range<usize>> = self
            .links
            .find(text)
            .into_iter()
            .filter(|link| {
                MESSAGING_DOMAINS
                    .iter()
                    .any(|domain| links::is_within(&link.host, domain))
            })
            .map(|link| link.range)
            .collect();
        for captures in self.app_handle.captures_iter(text.text()) {
            let separator = captures["sep"].trim();
            let word_app = WORD_APPS.contains(&&captures["app"]);
            let explicit = separator.contains('@') || (!separator.is_empty() && !word_app);
            let handle = captures["handle"].trim_end_matches(['.', '_', '-']);
            // Otherwise only a handle that could not be an ordinary word
            // counts: one with a digit, `_` or `.` inside.
            let looks_like_handle =
                handle.contains(|c: char| c.is_ascii_digit() || c == '_' || c == '.');
            if explicit || looks_like_handle {
                found.push(captures.get_match().range());
            }
        }
        found
    }
}

/// Domains of messaging services; a link to one is a handle.
const MESSAGING_DOMAINS: &[&str] = &[
    "t.me",
    "telegram.me",
    "telegram.dog",
    "wa.me",
    "whatsapp.com",
    "zalo.me",
    "m.me",
    "fb.me",
    "fb.com",
    "facebook.com",
    "messenger.com",
    "instagram.com",
    "instagr.am",
    "line.me",
    "viber.com",
    "signal.me",
    "discord.gg",
    "discord.com",
    "skype.com",
    "snapchat.com",
    "kakao.com",
    "weixin.qq.com",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(text: &str) -> Vec<String> {
        let kinds = vec![ContactKind::Phone, ContactKind::Email, ContactKind::Handle];
        let contacts = Contacts::new(kinds, DEFAULT_MIN_PHONE_DIGITS).unwrap();
        let folded = Folded::new(text, true);
        let mut ranges = contacts.find(&folded);
        ranges.sort_by_key(|range| range.start);
        // Kinds may overlap, as a phone number inside a zalo.me link does.
        let mut merged: Vec<Range<usize>> = Vec::new();
        for range in ranges {
            match merged.last_mut() {
                Some(last) if range.start < last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        merged
            .into_iter()
            .map(|range| text[folded.source_of(range)].to_owned())
            .collect()
    }

    #[test]
    fn phone_numbers_in_their_usual_forms() {
        assert_eq!(detect("gọi 0912345678 nhé"), ["0912345678"]);
        assert_eq!(detect("sđt: 0912 345 678"), ["0912 345 678"]);
        assert_eq!(detect("call +84 (912) 345-678"), ["84 (912) 345-678"]);
        assert_eq!(detect("0912.345.678 ạ"), ["0912.345.678"]);
    }

    #[test]
    fn spaced_out_and_masked_numbers() {
        assert_eq!(detect("0 9 1 2 3 4 5 6 7 8"), ["0 9 1 2 3 4 5 6 7 8"]);
        assert_eq!(detect("O9l2 345 6i8"), ["O9l2 345 6i8"]);
        assert_eq!(detect("０９１２３４５６７８"), ["０９１２３４５６７８"]);
        assert_eq!(
            detect("09\u{200B}12\u{200B}345678"),
            ["09\u{200B}12\u{200B}345678"]
        );
        assert_eq!(detect("0-9-1-2-3-4-5-6-7-8"), ["0-9-1-2-3-4-5-6-7-8"]);
    }

    #[test]
    fn numbers_spelled_out_in_words() {
        let vietnamese = "không chín một hai ba bốn năm sáu bảy tám";
        assert_eq!(detect(&format!("số em: {vietnamese}")), [vietnamese]);
        assert_eq!(
            detect("khong chin mot hai 345 678"),
            ["khong chin mot hai 345 678"]
        );
        assert_eq!(
            detect("zero nine one two three four five six seven"),
            ["zero nine one two three four five six seven"]
        );
    }

    #[test]
    fn separators_and_look_alikes_in_numbers() {
        for text in [
            "0912|345|678",
            "0912:345:678",
            "0912~345~678",
            "0912·345·678",
            "0912 -- 345 -- 678",
            "\u{041E}912345678",
        ] {
            assert_eq!(detect(text).len(), 1, "{text}");
        }
        // A currency word does not make a phone number an amount.
        assert_eq!(detect("sđt 0912345678 k"), ["0912345678"]);
        assert_eq!(detect("$0912345678"), ["0912345678"]);
    }

    #[test]
    fn marketplace_numbers_are_not_phones() {
        for text in [
            "Giá 1.200.000 - 1.500.000 tùy màu",
            "Còn size 36 37 38 39 40 nhé",
            "Cho thuê từ 12/05/2024 - 15/05/2024",
            "Kích thước 1200 * 600 * 750 mm",
            "Xe đời 2018 2019 2020 đều có",
        ] {
            assert!(detect(text).is_empty(), "{text}: {:?}", detect(text));
        }
    }

    #[test]
    fn amounts_and_short_numbers_are_not_phones() {
        assert!(detect("giá 1.200.000.000 đ").is_empty());
        assert!(detect("giá 1,500,000,000").is_empty());
        assert!(detect("1500000000đ thôi").is_empty());
        assert!(detect("1500000000 vnd").is_empty());
        assert!(detect("$ 1200000000").is_empty());
        assert!(detect("năm 2024 tôi mua 2 xe, 3 lần").is_empty());
        assert!(detect("một hai ba").is_empty());
        assert!(detect("giá 1500000000 - 2000000000 đ").is_empty());
    }

    #[test]
    fn dashes_emoji_and_other_digit_scripts() {
        for text in [
            "0912–345–678",
            "0912—345—678",
            "0912\u{2212}345\u{2212}678",
            "0912\u{2011}345\u{2011}678",
            "0912🙂345🙂678",
            "٠٩١٢٣٤٥٦٧٨",
            "०९१२३४५६७८",
        ] {
            assert_eq!(detect(text), [text], "{text}");
        }
    }

    #[test]
    fn numbers_read_digit_by_digit() {
        for text in [
            "chín một hai ba bốn năm sáu bảy tám chín",
            "tám tư chín một hai ba bốn năm sáu bảy tám",
            "nine one two three four five six seven eight nine",
            "ko chín một hai ba bốn năm sáu bảy tám",
            "ko 9 1 2 3 4 5 6 7 8",
        ] {
            assert_eq!(detect(&format!("số: {text}")), [text], "{text}");
        }
        assert!(detect("hai ba bốn năm").is_empty());
        assert!(detect("Áo size 1 2 3 4 5 6 7 8 9").is_empty());
        assert_eq!(
            detect("đếm: một hai ba bốn năm sáu bảy tám chín mười"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn currency_stuck_to_a_number() {
        assert_eq!(detect("0912345678đ"), ["0912345678"]);
        assert_eq!(detect("gọi 0912.345.678k nha"), ["0912.345.678"]);
        assert!(detect("giá 1500000000đ").is_empty());
        assert!(detect("giá 1.200.000.000đ").is_empty());
    }

    #[test]
    fn times_of_day_are_not_phones() {
        assert!(detect("Mở cửa 08:30-12:00, 13:30-17:30").is_empty());
        assert!(detect("giao 09:00 - 11:30 hoặc 14:00").is_empty());
        assert_eq!(detect("0912:345:678"), ["0912:345:678"]);
    }

    #[test]
    fn long_run_inside_a_group_of_numbers() {
        assert_eq!(detect("123456789 1"), ["123456789"]);
        assert_eq!(detect("mã 12 123456789"), ["123456789"]);
        assert_eq!(detect("size 36 912345678 40"), ["912345678"]);
    }

    #[test]
    fn email_addresses() {
        assert_eq!(detect("mail: Minh.Tran@Gmail.com"), ["Minh.Tran@Gmail.com"]);
        assert_eq!(
            detect("minh (at) gmail (dot) com"),
            ["minh (at) gmail (dot) com"]
        );
        assert_eq!(detect("minh at gmail dot com"), ["minh at gmail dot com"]);
        assert_eq!(
            detect("minh a còng gmail chấm com"),
            ["minh a còng gmail chấm com"]
        );
        assert_eq!(detect("minh@ｇｍａｉｌ．com"), ["minh@ｇｍａｉｌ．com"]);
        assert!(detect("gặp at home dot tomorrow").is_empty());
    }

    #[test]
    fn messaging_handles() {
        assert_eq!(detect("nhắn t.me/shopxe24 nha"), ["t.me/shopxe24"]);
        assert_eq!(
            detect("https://zalo.me/0912345678"),
            ["https://zalo.me/0912345678"]
        );
        assert_eq!(detect("telegram: @shop_xe"), ["telegram: @shop_xe"]);
        assert_eq!(detect("add zalo minh_tran99"), ["zalo minh_tran99"]);
        assert_eq!(detect("Zalo: minhtran"), ["Zalo: minhtran"]);
        assert!(detect("line is busy today").is_empty());
        assert!(detect("Signal: excellent, battery: 95%").is_empty());
        assert!(detect("Product line: premium").is_empty());
        assert_eq!(detect("line: @shop_xe"), ["line: @shop_xe"]);
        assert!(detect("facebook marketplace ok").is_empty());
    }
}
