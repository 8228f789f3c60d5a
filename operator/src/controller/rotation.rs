//! Credential rotation, asked for by an annotation on the ChatTenant.
//!
//! Setting `parley.dev/rotate-credentials` to a new value (a date, a
//! ticket id) adds a new signing key beside the old one. Both keys are
//! accepted for [`OperatorSettings::rotation_overlap`], so tokens signed
//! with the old key keep working while clients renew; then the old key is
//! removed. The Secret records which request it handled and when, so a
//! rotation happens once per annotation value and survives restarts.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::build::credentials::{ApiKey, Credentials, CredentialsError};

/// Annotation on the ChatTenant that requests a rotation.
pub const ROTATE_ANNOTATION: &str = "parley.dev/rotate-credentials";
/// Annotation on the Secret: the rotation request it handled last.
pub const HANDLED_ANNOTATION: &str = "parley.dev/rotation-handled";
/// Annotation on the Secret: when that rotation started (RFC 3339).
pub const STARTED_ANNOTATION: &str = "parley.dev/rotation-started";

/// Credentials to apply, with the Secret annotations that record them, and
/// when to look again (the end of an overlap window).
#[derive(Debug, Clone)]
pub struct Plan {
    pub credentials: Credentials,
    pub annotations: BTreeMap<String, String>,
    pub recheck_in: Option<Duration>,
    /// True when keys were dropped. Server-side apply must then write the
    /// Secret even though every remaining field matches, to remove them.
    pub drops_keys: bool,
}

/// Decides the credentials from the existing ones, the Secret's record and
/// the ChatTenant's request. `generate` makes a new key when one is needed.
pub fn plan(
    existing: Credentials,
    record: &BTreeMap<String, String>,
    request: Option<&str>,
    overlap: Duration,
    now: Timestamp,
    generate: impl FnOnce() -> Result<Credentials, CredentialsError>,
) -> Result<Plan, CredentialsError> {
    let mut annotations: BTreeMap<String, String> = record
        .iter()
        .filter(|(key, _)| *key == HANDLED_ANNOTATION || *key == STARTED_ANNOTATION)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();

    let handled = record.get(HANDLED_ANNOTATION).map(String::as_str);
    if let Some(request) = request.filter(|request| Some(*request) != handled) {
        let fresh = generate()?;
        let mut keys = vec![fresh.current().clone()];
        keys.extend(existing.keys().cloned());
        annotations.insert(HANDLED_ANNOTATION.to_owned(), request.to_owned());
        annotations.insert(STARTED_ANNOTATION.to_owned(), now.to_string());
        return Ok(Plan {
            credentials: Credentials::from_keys(keys)?,
            annotations,
            recheck_in: Some(overlap),
            drops_keys: false,
        });
    }

    let older_keys = existing.keys().count() > 1;
    let started = record
        .get(STARTED_ANNOTATION)
        .and_then(|text| text.parse::<Timestamp>().ok());
    let remaining = started.map(|started| remaining_overlap(started, overlap, now));
    match remaining {
        Some(Some(wait)) if older_keys => Ok(Plan {
            credentials: existing,
            annotations,
            recheck_in: Some(wait),
            drops_keys: false,
        }),
        _ if older_keys => Ok(Plan {
            credentials: Credentials::from_keys(vec![existing.current().clone()])?,
            annotations,
            recheck_in: None,
            drops_keys: true,
        }),
        _ => Ok(Plan {
            credentials: existing,
            annotations,
            recheck_in: None,
            drops_keys: false,
        }),
    }
}

/// Time left in the overlap window, or `None` once it has passed.
fn remaining_overlap(started: Timestamp, overlap: Duration, now: Timestamp) -> Option<Duration> {
    let elapsed = now.duration_since(started).unsigned_abs();
    overlap.checked_sub(elapsed).filter(|left| !left.is_zero())
}

/// Returns the keys as a list, current first.
pub fn key_ids(credentials: &Credentials) -> Vec<String> {
    credentials
        .keys()
        .map(|key: &ApiKey| key.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> ApiKey {
        ApiKey {
            id: id.to_owned(),
            secret: format!("{id}-secret-0123456789abcdef0123456789"),
        }
    }

    fn single(id: &str) -> Credentials {
        Credentials::from_keys(vec![key(id)]).unwrap()
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    const OVERLAP: Duration = Duration::from_secs(60);

    #[test]
    fn no_request_keeps_credentials() {
        let plan = plan(
            single("k1"),
            &BTreeMap::new(),
            None,
            OVERLAP,
            at(100),
            || unreachable!(),
        )
        .unwrap();
        assert_eq!(key_ids(&plan.credentials), ["k1"]);
        assert_eq!(plan.recheck_in, None);
    }

    #[test]
    fn new_request_adds_a_current_key() {
        let plan = plan(
            single("k1"),
            &BTreeMap::new(),
            Some("2026-12"),
            OVERLAP,
            at(100),
            || Ok(single("k2")),
        )
        .unwrap();
        assert_eq!(key_ids(&plan.credentials), ["k2", "k1"]);
        assert_eq!(plan.annotations[HANDLED_ANNOTATION], "2026-12");
        assert_eq!(plan.recheck_in, Some(OVERLAP));
    }

    #[test]
    fn handled_request_is_not_repeated() {
        let record = BTreeMap::from([
            (HANDLED_ANNOTATION.to_owned(), "2026-12".to_owned()),
            (STARTED_ANNOTATION.to_owned(), at(100).to_string()),
        ]);
        let existing = Credentials::from_keys(vec![key("k2"), key("k1")]).unwrap();
        let during = plan(
            existing.clone(),
            &record,
            Some("2026-12"),
            OVERLAP,
            at(130),
            || unreachable!(),
        )
        .unwrap();
        assert_eq!(key_ids(&during.credentials), ["k2", "k1"]);
        assert_eq!(during.recheck_in, Some(Duration::from_secs(30)));

        let after = plan(
            existing,
            &record,
            Some("2026-12"),
            OVERLAP,
            at(161),
            || unreachable!(),
        )
        .unwrap();
        assert_eq!(key_ids(&after.credentials), ["k2"]);
        assert_eq!(after.recheck_in, None);
        assert!(after.drops_keys);
    }
}
