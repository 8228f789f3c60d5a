//! A tenant's `extensions` section as written in the runtime configuration.

use serde::Deserialize;

/// Maximum `offline_after_seconds` and `period_seconds`: 30 days.
pub const MAX_SECONDS: u64 = 30 * 24 * 3600;

/// Extensions to enable for a tenant. Each is off unless its section is
/// present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionsConfig {
    #[serde(default)]
    pub auto_reply: Option<AutoReplyConfig>,
}

/// Away messages: when someone writes to a user in a direct channel and the
/// user has been offline for `offline_after_seconds`, the user's away
/// message is sent on their behalf, at most once per channel per
/// `period_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoReplyConfig {
    #[serde(default = "default_offline_after_seconds")]
    pub offline_after_seconds: u64,
    #[serde(default = "default_period_seconds")]
    pub period_seconds: u64,
}

fn default_offline_after_seconds() -> u64 {
    5 * 60
}

fn default_period_seconds() -> u64 {
    24 * 3600
}

impl ExtensionsConfig {
    /// Checks the ranges, returning the invalid field below `extensions`
    /// and the reason.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(auto_reply) = &self.auto_reply {
            if auto_reply.offline_after_seconds > MAX_SECONDS {
                return Err((
                    "auto_reply.offline_after_seconds",
                    format!("must be at most {MAX_SECONDS} (30 days)"),
                ));
            }
            if !(1..=MAX_SECONDS).contains(&auto_reply.period_seconds) {
                return Err((
                    "auto_reply.period_seconds",
                    format!("must be between 1 and {MAX_SECONDS} (30 days)"),
                ));
            }
        }
        Ok(())
    }
}
