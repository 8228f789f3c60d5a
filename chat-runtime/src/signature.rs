//! The `Parley-Signature` header that lets a receiver check that a request
//! came from this runtime and was not replayed much later.
//!
//! The header reads `t=<unix seconds>,v1=<hex>`, where the hex is the
//! lowercase HMAC-SHA256, keyed with a secret shared with the receiver, of
//! the timestamp, a `.`, and the exact bytes of the body. Signing the
//! timestamp with the body stops a captured request from being sent again
//! with a fresh timestamp.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Name of the HTTP header that carries the signature.
pub const HEADER: &str = "Parley-Signature";

/// Default age past which [`verify`] rejects a signature: long enough for
/// clock drift between hosts, short enough to make replays of captured
/// requests useless soon.
pub const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

/// Reason a signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is not of the form t=<unix seconds>,v1=<hex>")]
    Malformed,
    #[error("the signature's timestamp is more than the tolerance away from now")]
    Stale,
    #[error("no signature matches the body and the secret")]
    Mismatch,
}

/// Returns the header value signing `body` at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    let mut header = format!("t={timestamp},v1=");
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(header, "{byte:02x}");
    }
    header
}

/// Checks a header made by [`sign`] against `body` and `secret`.
///
/// The timestamp must lie within `tolerance_seconds` of `now` in either
/// direction, since the sender's clock may run ahead. The header may carry
/// several `v1` entries, as during a change of secret, and one matching
/// entry is enough. Each comparison takes the same time whatever bytes
/// differ, so response times reveal nothing about the expected signature.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance_seconds: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" => {
                if timestamp.is_some()
                    || value.is_empty()
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(SignatureError::Malformed);
                }
                timestamp = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            "v1" => signatures.push(decode_hex(value).ok_or(SignatureError::Malformed)?),
            // Later schemes may add entries, which an older receiver skips.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(timestamp) > tolerance_seconds {
        return Err(SignatureError::Stale);
    }
    let expected = mac(secret, timestamp, body);
    let matched = signatures
        .iter()
        .any(|signature| expected.clone().verify_slice(signature).is_ok());
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Returns the current time in unix seconds, for [`sign`] and [`verify`].
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.chain_update(timestamp.to_string().as_bytes())
        .chain_update(b".")
        .chain_update(body)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"hook-secret-0123456789abcdef0123456789";
    const BODY: &[u8] = br#"{"tenant":"acme","action":"send"}"#;

    #[test]
    fn signature_matches_a_known_value() {
        // Computed independently with:
        // printf '%s' '1700000000.{"tenant":"acme","action":"send"}' |
        //   openssl dgst -sha256 -hmac 'hook-secret-0123456789abcdef0123456789'
        assert_eq!(
            sign(SECRET, 1_700_000_000, BODY),
            "t=1700000000,v1=1bb99c93da08119f9704607256d9c817c04de7bd5156f202c61fb6203e19b46f"
        );
    }

    #[test]
    fn signed_body_verifies() {
        let header = sign(SECRET, 1_700_000_000, BODY);
        assert_eq!(verify(SECRET, &header, BODY, 1_700_000_010, 300), Ok(()));
        // A sender whose clock runs a little ahead is accepted too.
        assert_eq!(verify(SECRET, &header, BODY, 1_699_999_990, 300), Ok(()));
    }

    #[test]
    fn other_secret_or_body_is_refused() {
        let header = sign(SECRET, 1_700_000_000, BODY);
        let other = b"another-secret-0123456789abcdef01234567";
        assert_eq!(
            verify(other, &header, BODY, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &header, b"{}", 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = header.replace("t=1700000000", "t=1700000001");
        assert_eq!(
            verify(SECRET, &moved, BODY, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn old_or_future_timestamp_is_refused() {
        let header = sign(SECRET, 1_700_000_000, BODY);
        assert_eq!(
            verify(SECRET, &header, BODY, 1_700_000_301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, &header, BODY, 1_699_999_699, 300),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn one_matching_entry_of_several_is_enough() {
        let header = sign(SECRET, 1_700_000_000, BODY);
        let (_, good) = header.split_once(",v1=").unwrap();
        let rotated = format!("t=1700000000,v1={},v1={good}", "00".repeat(32));
        assert_eq!(verify(SECRET, &rotated, BODY, 1_700_000_000, 300), Ok(()));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for header in [
            "",
            "v1=00",
            "t=1700000000",
            "t=1700000000,v1=",
            "t=1700000000,v1=0",
            "t=1700000000,v1=zz",
            "t=-5,v1=00",
            "t=1,t=2,v1=00",
            "t=1700000000;v1=00",
        ] {
            assert_eq!(
                verify(SECRET, header, BODY, 1_700_000_000, 300),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
    }
}
