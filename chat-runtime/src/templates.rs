//! Message templates: quick replies with `{{name}}` placeholders that a
//! sender fills with values. A tenant lists templates in its configuration,
//! and each user can keep templates of their own.
//!
//! `{{` always opens a placeholder, so a template cannot show two literal
//! opening braces in a row.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::limits::{ContentError, has_control_char, has_visible_char, is_invisible};

/// Maximum templates in a tenant's configuration.
pub const MAX_TENANT_TEMPLATES: usize = 200;
/// Maximum templates of one user, so one user cannot grow the store
/// without bound.
pub const MAX_USER_TEMPLATES: usize = 50;
/// Maximum bytes of a template id.
pub const MAX_ID_BYTES: usize = 64;
/// Maximum characters (grapheme clusters) of one value.
pub const MAX_VALUE_CHARS: usize = 200;
/// Maximum bytes of one value. A character may carry any number of
/// combining marks, so the character limit alone does not bound the size.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Maximum placeholders of one template, and values of one message.
pub const MAX_PLACEHOLDERS: usize = 20;
/// Maximum bytes of a placeholder name.
const MAX_NAME_BYTES: usize = 32;
/// Maximum characters of a title.
pub const MAX_TITLE_CHARS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// 1 to 64 lowercase letters, digits, `-`, `_` or `.`.
    pub id: String,
    /// Short label for a picker, such as "Still available".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Text with `{{name}}` placeholders.
    pub text: String,
}

/// Checks a template id, returning the reason it is invalid.
pub fn check_id(id: &str) -> Result<(), String> {
    // The first byte is a letter or digit, so `.` and `..` are not ids:
    // clients collapse them as path segments.
    let valid = (1..=MAX_ID_BYTES).contains(&id.len())
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "template id {id:?} must be 1 to {MAX_ID_BYTES} lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

/// One piece of a parsed template.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Literal(&'a str),
    Placeholder(&'a str),
}

/// Splits a template's text into literal text and placeholders. A
/// placeholder is `{{name}}` with optional spaces inside the braces, and a
/// name of lowercase letters, digits and `_`.
fn parse(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Literal(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err("a placeholder opened with {{ is not closed with }}".to_owned());
        };
        let name = after[..close].trim();
        let valid = (1..=MAX_NAME_BYTES).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(format!(
                "placeholder {{{{{name}}}}} must be named with 1 to {MAX_NAME_BYTES} lowercase letters, digits or '_'"
            ));
        }
        pieces.push(Piece::Placeholder(name));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    Ok(pieces)
}

/// Returns the template's placeholder names, sorted and without repeats.
pub fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = parse(text)?
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Placeholder(name) => Some(name.to_owned()),
            Piece::Literal(_) => None,
        })
        .collect();
    names.sort();
    names.dedup();
    if names.len() > MAX_PLACEHOLDERS {
        return Err(format!(
            "a template may have at most {MAX_PLACEHOLDERS} different placeholders"
        ));
    }
    Ok(names)
}

/// Checks a template as stored: its id, title and placeholders. Its text is
/// checked against the message limits when it is rendered, because values
/// change its length. Returns the invalid field and the reason.
pub fn validate(template: &Template) -> Result<(), (&'static str, String)> {
    check_id(&template.id).map_err(|reason| ("id", reason))?;
    if let Some(title) = &template.title {
        let chars = title.graphemes(true).count();
        if !has_visible_char(title) || chars > MAX_TITLE_CHARS || has_control_char(title) {
            return Err((
                "title",
                format!("must be 1 to {MAX_TITLE_CHARS} characters without control characters"),
            ));
        }
    }
    if !has_visible_char(&template.text) || has_control_char(&template.text) {
        return Err((
            "text",
            "must contain a visible character and no control characters other than tab and line breaks".to_owned(),
        ));
    }
    placeholders(&template.text).map_err(|reason| ("text", reason))?;
    Ok(())
}

/// Checks the values a sender gives: names a template could use, and short
/// single-line texts.
pub fn check_values(
    template_id: &str,
    values: &BTreeMap<String, String>,
) -> Result<(), ContentError> {
    check_id(template_id).map_err(|reason| ContentError::new("invalid_template", reason))?;
    if values.len() > MAX_PLACEHOLDERS {
        return Err(ContentError::new(
            "invalid_template",
            format!("a template message may have at most {MAX_PLACEHOLDERS} values"),
        ));
    }
    for (name, value) in values {
        if !is_plain_line(value) {
            return Err(ContentError::new(
                "invalid_template",
                format!(
                    "value {name:?} must be one line of 1 to {MAX_VALUE_CHARS} characters and at most {MAX_VALUE_BYTES} bytes, with a visible character and no control, line-breaking or invisible characters"
                ),
            ));
        }
    }
    Ok(())
}

/// Returns whether a value fits into a line of the template as the sender
/// wrote it: visible, within the limits, and without characters that break
/// the line, hide, or change the direction of the text after them.
fn is_plain_line(value: &str) -> bool {
    value.len() <= MAX_VALUE_BYTES
        && value.graphemes(true).count() <= MAX_VALUE_CHARS
        && has_visible_char(value)
        && !value
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_invisible(c))
}

/// Fills the placeholders of `text` with `values`. Every placeholder needs
/// a value, and every value a placeholder, so a misspelt name fails instead
/// of leaving a gap. Values are inserted as they are and never parsed, so a
/// value containing `{{` stays literal. Filling stops with
/// `message_too_large` as soon as the text passes `max_bytes`, so a
/// template that repeats a placeholder cannot make the server build a text
/// far larger than any message.
pub fn render(
    text: &str,
    values: &BTreeMap<String, String>,
    max_bytes: usize,
) -> Result<String, ContentError> {
    let pieces = parse(text).map_err(|reason| ContentError::new("invalid_template", reason))?;
    let mut rendered = String::with_capacity(text.len().min(max_bytes));
    for piece in &pieces {
        let part = match piece {
            Piece::Literal(literal) => *literal,
            Piece::Placeholder(name) => match values.get(*name) {
                Some(value) => value.as_str(),
                None => {
                    return Err(ContentError::new(
                        "template_value_missing",
                        format!("the template needs a value for {name:?}"),
                    ));
                }
            },
        };
        if rendered.len() + part.len() > max_bytes {
            return Err(ContentError::new(
                "message_too_large",
                format!("the filled-in template is over the limit of {max_bytes} bytes"),
            ));
        }
        rendered.push_str(part);
    }
    for name in values.keys() {
        if !pieces.contains(&Piece::Placeholder(name.as_str())) {
            return Err(ContentError::new(
                "invalid_template",
                format!("the template has no placeholder {name:?}"),
            ));
        }
    }
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn render_fills_vietnamese_text() {
        let text = "Chào {{ten}}, {{mon_hang}} vẫn còn. Giá {{gia}} nhé {{ten}}!";
        let rendered = render(
            text,
            &values(&[
                ("ten", "Hương"),
                ("mon_hang", "xe đạp"),
                ("gia", "1.200.000 đ"),
            ]),
            4096,
        )
        .unwrap();
        assert_eq!(
            rendered,
            "Chào Hương, xe đạp vẫn còn. Giá 1.200.000 đ nhé Hương!"
        );
    }

    #[test]
    fn render_allows_spaces_inside_braces() {
        let rendered = render("Hi {{ name }}!", &values(&[("name", "An")]), 4096).unwrap();
        assert_eq!(rendered, "Hi An!");
    }

    #[test]
    fn render_requires_every_value() {
        let error = render(
            "Hi {{name}} from {{shop}}",
            &values(&[("name", "An")]),
            4096,
        )
        .unwrap_err();
        assert_eq!(error.code, "template_value_missing");
        assert!(error.message.contains("shop"), "{}", error.message);
    }

    #[test]
    fn render_rejects_unknown_value() {
        let error = render(
            "Hi {{name}}",
            &values(&[("name", "An"), ("nmae", "x")]),
            4096,
        )
        .unwrap_err();
        assert_eq!(error.code, "invalid_template");
        assert!(error.message.contains("nmae"), "{}", error.message);
    }

    #[test]
    fn render_stops_at_the_size_limit() {
        let text = "{{a}}".repeat(1000);
        let error = render(&text, &values(&[("a", "xin chào")]), 4096).unwrap_err();
        assert_eq!(error.code, "message_too_large");
        let fits = render(&"{{a}}".repeat(4), &values(&[("a", "xin chào")]), 36).unwrap();
        assert_eq!(fits.len(), 36);
    }

    #[test]
    fn values_are_not_expanded_again() {
        let rendered = render("Hi {{name}}", &values(&[("name", "{{name}}")]), 4096).unwrap();
        assert_eq!(rendered, "Hi {{name}}");
    }

    #[test]
    fn template_without_placeholders_renders_as_is() {
        assert_eq!(
            render("Còn hàng ạ", &BTreeMap::new(), 4096).unwrap(),
            "Còn hàng ạ"
        );
    }

    #[test]
    fn invalid_placeholders_are_named() {
        assert!(
            placeholders("Hi {{name")
                .unwrap_err()
                .contains("not closed")
        );
        assert!(placeholders("Hi {{Name}}").unwrap_err().contains("Name"));
        assert!(placeholders("Hi {{}}").is_err());
        assert!(placeholders("Hi {{tên}}").is_err());
        assert_eq!(
            placeholders("{{b}} {{a}} {{b}}").unwrap(),
            vec!["a".to_owned(), "b".to_owned()]
        );
    }

    #[test]
    fn too_many_placeholders_are_rejected() {
        let text: String = (0..=MAX_PLACEHOLDERS)
            .map(|i| format!("{{{{p{i}}}}} "))
            .collect();
        assert!(placeholders(&text).is_err());
    }

    #[test]
    fn template_fields_are_checked() {
        let good = Template {
            id: "still-available".into(),
            title: Some("Còn hàng".into()),
            text: "Sản phẩm vẫn còn ạ".into(),
        };
        assert_eq!(validate(&good), Ok(()));
        let bad_id = Template {
            id: "Still Available".into(),
            ..good.clone()
        };
        assert_eq!(validate(&bad_id).unwrap_err().0, "id");
        let empty_text = Template {
            text: " \u{200b} ".into(),
            ..good.clone()
        };
        assert_eq!(validate(&empty_text).unwrap_err().0, "text");
        let long_title = Template {
            title: Some("ạ".repeat(MAX_TITLE_CHARS + 1)),
            ..good
        };
        assert_eq!(validate(&long_title).unwrap_err().0, "title");
    }

    #[test]
    fn values_must_be_short_single_lines() {
        assert!(check_values("a", &values(&[("name", "An")])).is_ok());
        assert!(check_values("a", &values(&[("name", "a\nb")])).is_err());
        for bad in ["a\rb", "a\u{2028}b", "\u{202e}abc", " ", "\u{200b}", ""] {
            assert!(
                check_values("a", &values(&[("name", bad)])).is_err(),
                "{bad:?}"
            );
        }
        let stacked = format!("a{}", "\u{301}".repeat(600));
        assert!(check_values("a", &values(&[("name", &stacked)])).is_err());
        let long = "ệ".repeat(MAX_VALUE_CHARS + 1);
        assert!(check_values("a", &values(&[("name", &long)])).is_err());
        let fits = "ệ".repeat(MAX_VALUE_CHARS);
        assert!(check_values("a", &values(&[("name", &fits)])).is_ok());
        assert!(check_values("A", &BTreeMap::new()).is_err());
        assert!(check_values("..", &BTreeMap::new()).is_err());
        assert!(check_values(".", &BTreeMap::new()).is_err());
    }
}
