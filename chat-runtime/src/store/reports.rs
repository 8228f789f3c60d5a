//! Reports of users and messages, queued for the tenant to review.
//!
//! Members file reports; a moderation rule with the `flag` action files one
//! for each message it matches, in the same write that stores the message.
//! The tenant reads the queue and resolves reports through the server API.

use serde::{Deserialize, Serialize};

use super::{Content, Millis};

/// Reasons a member can give for a report. Reports filed by a rule carry
/// the rule's reason code instead, such as `contact_details`.
pub const MEMBER_REASONS: [&str; 6] = [
    "spam",
    "scam",
    "harassment",
    "inappropriate",
    "off_platform",
    "other",
];

/// Reason for refusing a report of a deleted message, whose content is
/// gone: report its sender instead.
pub const DELETED_MESSAGE: &str =
    "a deleted message cannot be reported because its content is gone; report its sender instead";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    Open,
    Resolved,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Open => "open",
            ReportStatus::Resolved => "resolved",
        }
    }
}

/// The message or user a report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// One message, whose sender is the reported user.
    Message { channel_id: String, seq: u64 },
    /// A user as a whole, such as a profile or a pattern of behaviour.
    User { user_id: String },
}

/// A report to file.
#[derive(Debug, Clone)]
pub struct NewReport {
    /// The member who reports. It must be a member of the message's
    /// channel for a message report.
    pub reporter: String,
    pub target: ReportTarget,
    /// One of [`MEMBER_REASONS`].
    pub reason: String,
    pub note: Option<String>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Unique within the tenant; reports sort by it in the order they were
    /// filed.
    pub id: String,
    pub status: ReportStatus,
    /// The reported user: the sender of the reported message, or the user
    /// reported directly.
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The member who filed the report, or `None` when a rule flagged the
    /// message.
    pub reporter: Option<String>,
    /// The rule that flagged the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The message's content when the report was filed, so a later edit or
    /// delete does not hide what was reported. `None` for user reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    pub created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}

/// The tenant's decision that closed a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// `dismissed` when nothing was wrong, `actioned` when the tenant acted
    /// (deleted the message, banned or muted the user).
    pub outcome: ResolutionOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The moderator as the tenant's backend names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    pub resolved_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionOutcome {
    Dismissed,
    Actioned,
}

/// Result of filing or resolving a report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportChange {
    pub report: Report,
    /// False when the reporter already had an open report on the same
    /// target, or when the report was already resolved. The stored report
    /// is then returned unchanged.
    pub changed: bool,
}
