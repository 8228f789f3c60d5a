//! Users' settings and the marks that keep an action to once a period.
//!
//! Each write is a lightweight transaction conditioned on the value it
//! read, so a write reports "changed" only when it replaced what it saw,
//! and of several processes racing on one once-mark exactly one wins.

use serde_json::Value;

use super::rows::inconsistent;
use super::users::contention;
use super::{ScyllaStore, failed};
use crate::store::{Millis, StoreResult};

/// Attempts of one setting or once-mark write. Another attempt is needed
/// only when a concurrent write changed the row between the read and the
/// transaction.
const MAX_ATTEMPTS: usize = 16;

impl ScyllaStore {
    pub(super) async fn put_setting(
        &self,
        user_id: &str,
        name: &str,
        value: Option<&Value>,
        now: Millis,
    ) -> StoreResult<bool> {
        // NOTE: a user deleted between this check and the write below keeps
        // the setting, because the delete erases settings only once.
        self.active_incarnation(user_id).await?;
        match value {
            Some(value) => {
                let json = serde_json::to_string(value).map_err(failed("serialise a setting"))?;
                self.write_setting(user_id, name, &json, now).await
            }
            None => {
                self.conditional(
                    &self.statements.delete_setting,
                    (user_id, name),
                    "delete a user setting",
                )
                .await
            }
        }
    }

    /// Stores `json` unless the setting already has exactly that text,
    /// which is also how the SQLite store decides "changed".
    async fn write_setting(
        &self,
        user_id: &str,
        name: &str,
        json: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        for _ in 0..MAX_ATTEMPTS {
            let current: Option<(Option<String>,)> = self
                .first_row(
                    &self.statements.select_setting_serial,
                    (user_id, name),
                    "read a user setting",
                )
                .await?;
            let applied = match current {
                None => {
                    self.conditional(
                        &self.statements.insert_setting,
                        (user_id, name, json, now),
                        "create a user setting",
                    )
                    .await?
                }
                Some((None,)) => return Err(inconsistent("stored user setting has no value")),
                Some((Some(stored),)) if stored == json => return Ok(false),
                Some((Some(stored),)) => {
                    self.conditional(
                        &self.statements.update_setting,
                        (json, now, user_id, name, stored),
                        "update a user setting",
                    )
                    .await?
                }
            };
            if applied {
                return Ok(true);
            }
        }
        Err(contention("write a user setting"))
    }

    pub(super) async fn list_settings(
        &self,
        user_id: &str,
        prefix: &str,
    ) -> StoreResult<Vec<(String, Value)>> {
        let operation = "read user settings";
        let rows: Vec<(String, Option<String>)> = match prefix_end(prefix) {
            Some(end) => {
                self.all_rows(
                    &self.statements.select_settings_between,
                    (user_id, prefix, end),
                    operation,
                )
                .await?
            }
            None => {
                self.all_rows(
                    &self.statements.select_settings_from,
                    (user_id, prefix),
                    operation,
                )
                .await?
            }
        };
        let mut settings = Vec::with_capacity(rows.len());
        // The rows arrive sorted by name, the clustering order. The filter
        // keeps the result literal even if the range bound were too wide.
        for (name, json) in rows {
            if !name.starts_with(prefix) {
                continue;
            }
            let json = json.unwrap_or_else(|| "null".to_owned());
            let value = serde_json::from_str(&json).map_err(failed("parse a user setting"))?;
            settings.push((name, value));
        }
        Ok(settings)
    }

    /// Erases every setting of a deleted user, which are the user's own
    /// words (templates, away messages).
    pub(super) async fn delete_settings(&self, user_id: &str) -> StoreResult<()> {
        self.execute(
            &self.statements.delete_user_settings,
            (user_id,),
            "delete a user's settings",
        )
        .await
    }

    pub(super) async fn record_once_mark(
        &self,
        name: &str,
        now: Millis,
        period_ms: i64,
    ) -> StoreResult<bool> {
        for _ in 0..MAX_ATTEMPTS {
            let current: Option<(Option<i64>,)> = self
                .first_row(
                    &self.statements.select_once_mark_serial,
                    (name,),
                    "read a once-mark",
                )
                .await?;
            let applied = match current {
                None => {
                    self.conditional(
                        &self.statements.insert_once_mark,
                        (name, now),
                        "create a once-mark",
                    )
                    .await?
                }
                Some((None,)) => return Err(inconsistent("stored once-mark has no time")),
                Some((Some(marked_at),)) => {
                    if !period_over(marked_at, now, period_ms) {
                        return Ok(false);
                    }
                    // Racing processes all condition on the value they
                    // read, so one of them applies and the others read
                    // the winner's mark on their next attempt.
                    self.conditional(
                        &self.statements.update_once_mark,
                        (now, name, marked_at),
                        "renew a once-mark",
                    )
                    .await?
                }
            };
            if applied {
                return Ok(true);
            }
        }
        Err(contention("write a once-mark"))
    }
}

/// Returns whether a mark recorded at `marked_at` no longer stops a new
/// one at `now`.
fn period_over(marked_at: Millis, now: Millis, period_ms: i64) -> bool {
    now.saturating_sub(marked_at) >= period_ms
}

/// Returns the smallest string above every string that starts with
/// `prefix`, or `None` when no such string exists (an empty prefix, or one
/// of only `char::MAX`). ScyllaDB orders `text` by its UTF-8 bytes, which
/// is code point order, so `name >= prefix AND name < end` selects exactly
/// the names that start with `prefix`.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = next_char(last) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Returns the next Unicode scalar value after `c`, skipping surrogates.
fn next_char(c: char) -> Option<char> {
    let mut code = u32::from(c) + 1;
    if (0xD800..=0xDFFF).contains(&code) {
        code = 0xE000;
    }
    char::from_u32(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_char() {
        assert_eq!(prefix_end("template:").as_deref(), Some("template;"));
        assert_eq!(prefix_end("a").as_deref(), Some("b"));
        assert_eq!(prefix_end("ch\u{e0}").as_deref(), Some("ch\u{e1}"));
    }

    #[test]
    fn prefix_end_skips_surrogates() {
        assert_eq!(prefix_end("\u{d7ff}").as_deref(), Some("\u{e000}"));
    }

    #[test]
    fn prefix_end_drops_trailing_max_chars() {
        assert_eq!(prefix_end("a\u{10ffff}").as_deref(), Some("b"));
        assert_eq!(prefix_end("a\u{10ffff}\u{10ffff}").as_deref(), Some("b"));
    }

    #[test]
    fn prefix_end_none_without_bound() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10ffff}"), None);
    }

    /// Byte order of UTF-8 is what ScyllaDB compares `text` by, so the
    /// range must select the same names as `starts_with`.
    #[test]
    fn prefix_range_matches_starts_with() {
        let names = [
            "template",
            "template:",
            "template:a",
            "template:\u{10ffff}",
            "template;",
            "templateX",
            "template%",
            "templatf",
            "away_message",
            "",
            "\u{10ffff}",
        ];
        for prefix in ["template:", "template", "t", "", "\u{10ffff}", "template%"] {
            let end = prefix_end(prefix);
            for name in names {
                let in_range = name.as_bytes() >= prefix.as_bytes()
                    && end
                        .as_ref()
                        .is_none_or(|end| name.as_bytes() < end.as_bytes());
                assert_eq!(
                    in_range,
                    name.starts_with(prefix),
                    "prefix {prefix:?}, name {name:?}"
                );
            }
        }
    }

    #[test]
    fn period_over_at_boundary() {
        assert!(!period_over(1_000, 1_999, 1_000));
        assert!(period_over(1_000, 2_000, 1_000));
        assert!(!period_over(1_000, 1_000, 60_000));
    }

    #[test]
    fn period_over_with_clock_behind_mark() {
        // A process whose clock is behind the stored mark waits.
        assert!(!period_over(5_000, 4_000, 1_000));
    }
}
