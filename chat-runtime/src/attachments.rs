//! The `attachment` message kind: a file or image stored elsewhere and
//! referenced by URL. Parley stores only the reference, so the URL's host
//! must be on the tenant's allow-list; otherwise any user could make other
//! users' apps fetch from any server.

use axum::http::Uri;

use crate::limits::{ContentError, has_visible_char, is_invisible};

/// Longest accepted URL, in bytes. Common CDN and signed storage URLs stay
/// well under it.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest accepted file name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest accepted content type, in bytes (RFC 6838 allows 127 per part).
const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// Largest accepted image width or height, in pixels.
pub const MAX_DIMENSION: u32 = 100_000;
/// Largest accepted size, in bytes: 2^53 - 1, the largest integer that
/// JavaScript clients read exactly.
pub const MAX_SIZE: u64 = (1 << 53) - 1;

/// An attachment as a client sends it, before its checks.
pub struct Attachment<'a> {
    pub url: &'a str,
    pub content_type: &'a str,
    pub size: u64,
    pub name: Option<&'a str>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub thumbnail_url: Option<&'a str>,
}

/// Checks an attachment against the tenant's allowed hosts. An allowed
/// host is an exact host name, or `*.example.com` for its subdomains.
pub fn check(attachment: &Attachment<'_>, allowed_hosts: &[String]) -> Result<(), ContentError> {
    check_url("url", attachment.url, allowed_hosts)?;
    if let Some(thumbnail) = attachment.thumbnail_url {
        check_url("thumbnail_url", thumbnail, allowed_hosts)?;
    }
    if !is_content_type(attachment.content_type) {
        return Err(invalid(format!(
            "content_type {:?} is not a media type such as image/jpeg",
            attachment.content_type
        )));
    }
    if attachment.size > MAX_SIZE {
        return Err(invalid(format!("size must be at most {MAX_SIZE} bytes")));
    }
    if let Some(name) = attachment.name {
        // Invisible and direction-changing characters could make
        // `invoice\u{202E}gpj.exe` show as a picture's name.
        let hidden = name.chars().any(|c| c.is_control() || is_invisible(c));
        if !has_visible_char(name) || hidden || name.len() > MAX_NAME_BYTES {
            return Err(invalid(format!(
                "name must be 1 to {MAX_NAME_BYTES} bytes with a visible character and no control, invisible or direction-changing characters"
            )));
        }
    }
    for (field, value) in [("width", attachment.width), ("height", attachment.height)] {
        if value.is_some_and(|pixels| pixels == 0 || pixels > MAX_DIMENSION) {
            return Err(invalid(format!(
                "{field} must be between 1 and {MAX_DIMENSION} pixels"
            )));
        }
    }
    Ok(())
}

fn check_url(field: &str, url: &str, allowed_hosts: &[String]) -> Result<(), ContentError> {
    if url.len() > MAX_URL_BYTES {
        return Err(invalid(format!(
            "{field} is longer than {MAX_URL_BYTES} bytes"
        )));
    }
    let host = https_host(url)
        .ok_or_else(|| invalid(format!("{field} must be an https:// URL with a host")))?;
    if allowed_hosts
        .iter()
        .any(|allowed| host_matches(&host, allowed))
    {
        return Ok(());
    }
    Err(ContentError {
        code: "attachment_host_not_allowed",
        message: format!("{field} host {host:?} is not on the tenant's attachment_hosts"),
    })
}

/// Returns the lowercase host of an `https` URL on the default port, without
/// user information, or `None` for any other URL.
fn https_host(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let authority = uri.authority()?;
    // `user@host` would show one host to people and reach another, and
    // another port of an allowed host may be another service.
    if authority.as_str().contains('@') || uri.port_u16().is_some_and(|port| port != 443) {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    is_host_name(&host).then_some(host)
}

fn host_matches(host: &str, allowed: &str) -> bool {
    match allowed.strip_prefix("*.") {
        Some(parent) => host
            .strip_suffix(parent)
            .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
        None => host == allowed,
    }
}

fn is_content_type(value: &str) -> bool {
    // RFC 6838: a name starts with a letter or digit.
    let token = |part: &str| {
        part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    value.len() <= MAX_CONTENT_TYPE_BYTES
        && value
            .split_once('/')
            .is_some_and(|(kind, subtype)| token(kind) && token(subtype))
}

/// Checks an entry of a tenant's `attachment_hosts`: a lowercase host name,
/// or `*.` followed by one.
pub fn is_allowed_host_entry(entry: &str) -> bool {
    is_host_name(entry.strip_prefix("*.").unwrap_or(entry))
}

/// Checks a lowercase DNS host name: labels of 1 to 63 letters, digits and
/// `-`, at most 253 bytes in all.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn invalid(message: String) -> ContentError {
    ContentError {
        code: "invalid_attachment",
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        vec![
            String::from("cdn.chotot.vn"),
            String::from("*.images.example.com"),
        ]
    }

    fn image(url: &str) -> Attachment<'_> {
        Attachment {
            url,
            content_type: "image/jpeg",
            size: 183_204,
            name: Some("xe đạp cũ.jpg"),
            width: Some(1024),
            height: Some(768),
            thumbnail_url: None,
        }
    }

    fn code_of(result: Result<(), ContentError>) -> &'static str {
        result.err().map_or("ok", |error| error.code)
    }

    #[test]
    fn allowed_hosts_and_subdomains_pass() {
        assert_eq!(
            code_of(check(
                &image("https://cdn.chotot.vn/a/b.jpg?sig=1"),
                &hosts()
            )),
            "ok"
        );
        assert_eq!(
            code_of(check(&image("https://CDN.Chotot.vn/b.jpg"), &hosts())),
            "ok"
        );
        assert_eq!(
            code_of(check(
                &image("https://eu.images.example.com/x.png"),
                &hosts()
            )),
            "ok"
        );
    }

    #[test]
    fn other_hosts_are_rejected() {
        for url in [
            "https://evil.example/x.jpg",
            "https://images.example.com/x.jpg",
            "https://cdn.chotot.vn.evil.example/x.jpg",
            "https://xcdn.chotot.vn/x.jpg",
            "https://notimages.example.com/x.jpg",
        ] {
            assert_eq!(
                code_of(check(&image(url), &hosts())),
                "attachment_host_not_allowed",
                "{url}"
            );
        }
    }

    #[test]
    fn unsafe_urls_are_invalid() {
        for url in [
            "http://cdn.chotot.vn/x.jpg",
            "https://user@cdn.chotot.vn/x.jpg",
            "javascript:alert(1)",
            "/relative/x.jpg",
            "not a url",
            "https://cdn.chotot.vn:8443/x.jpg",
            "https://a..img.example.com/x.jpg",
            "https://a!$.img.example.com/x.jpg",
        ] {
            assert_eq!(
                code_of(check(&image(url), &hosts())),
                "invalid_attachment",
                "{url}"
            );
        }
        let long = format!("https://cdn.chotot.vn/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(
            code_of(check(&image(&long), &hosts())),
            "invalid_attachment"
        );
    }

    #[test]
    fn thumbnail_host_is_checked_too() {
        let mut attachment = image("https://cdn.chotot.vn/x.jpg");
        attachment.thumbnail_url = Some("https://evil.example/t.jpg");
        assert_eq!(
            code_of(check(&attachment, &hosts())),
            "attachment_host_not_allowed"
        );
    }

    #[test]
    fn fields_are_checked() {
        let mut attachment = image("https://cdn.chotot.vn/x.jpg");
        attachment.content_type = "jpeg";
        assert_eq!(code_of(check(&attachment, &hosts())), "invalid_attachment");
        attachment.content_type =
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
        assert_eq!(code_of(check(&attachment, &hosts())), "ok");
        attachment.width = Some(0);
        assert_eq!(code_of(check(&attachment, &hosts())), "invalid_attachment");
        attachment.width = Some(10);
        attachment.name = Some("a\u{0}b");
        assert_eq!(code_of(check(&attachment, &hosts())), "invalid_attachment");
        attachment.name = Some("   ");
        assert_eq!(code_of(check(&attachment, &hosts())), "invalid_attachment");
        attachment.name = Some("invoice\u{202E}gpj.exe");
        assert_eq!(code_of(check(&attachment, &hosts())), "invalid_attachment");
        attachment.name = Some("\u{200B}");
        assert_eq!(code_of(check(&attachment, &hosts())), "invalid_attachment");
        attachment.name = Some("hóa đơn tháng 12.pdf");
        assert_eq!(code_of(check(&attachment, &hosts())), "ok");
        attachment.content_type = "../..";
        assert_eq!(code_of(check(&attachment, &hosts())), "invalid_attachment");
        attachment.content_type = "image/png";
        attachment.size = MAX_SIZE + 1;
        assert_eq!(code_of(check(&attachment, &hosts())), "invalid_attachment");
    }

    #[test]
    fn default_port_is_allowed() {
        let result = check(&image("https://cdn.chotot.vn:443/x.jpg"), &hosts());
        assert_eq!(code_of(result), "ok");
    }

    #[test]
    fn empty_allow_list_rejects_every_host() {
        let result = check(&image("https://cdn.chotot.vn/x.jpg"), &[]);
        assert_eq!(code_of(result), "attachment_host_not_allowed");
    }

    #[test]
    fn host_entries_are_validated() {
        assert!(is_allowed_host_entry("cdn.chotot.vn"));
        assert!(is_allowed_host_entry("*.images.example.com"));
        assert!(!is_allowed_host_entry("*"));
        assert!(!is_allowed_host_entry("https://cdn.chotot.vn"));
        assert!(!is_allowed_host_entry("CDN.example.com"));
        assert!(!is_allowed_host_entry("a..b"));
    }
}
