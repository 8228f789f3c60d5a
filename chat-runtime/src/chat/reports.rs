//! Reports of users and messages, and slow mode: what members and the
//! tenant's moderators use to keep a channel civil.

use crate::chat::{ChatError, now_millis, take_rate};
use crate::hub::Outbound;
use crate::store::{
    Channel, MAX_SLOW_MODE_SECONDS, NewReport, ReportChange, ReportTarget, Resolution,
    ResolutionOutcome, reports::MEMBER_REASONS,
};
use crate::tenant::Tenant;
use crate::ws::protocol::ServerFrame;

/// Maximum note on a report or a resolution, in bytes.
pub const MAX_NOTE_BYTES: usize = 1000;

fn check_note(note: Option<&str>) -> Result<(), ChatError> {
    match note {
        Some(note) if note.len() > MAX_NOTE_BYTES || crate::limits::has_control_char(note) => {
            Err(ChatError::invalid(format!(
                "note must be at most {MAX_NOTE_BYTES} bytes without control characters other than tab and line breaks"
            )))
        }
        _ => Ok(()),
    }
}

/// Files a member's report of a message or a user. Filing the same report
/// again returns the open one.
pub async fn file_report(
    tenant: &Tenant,
    reporter: &str,
    target: ReportTarget,
    reason: String,
    note: Option<String>,
) -> Result<ReportChange, ChatError> {
    if !MEMBER_REASONS.contains(&reason.as_str()) {
        return Err(ChatError::invalid(format!(
            "reason must be one of {}",
            MEMBER_REASONS.join(", ")
        )));
    }
    check_note(note.as_deref())?;
    if let ReportTarget::Message { seq: 0, .. } = target {
        return Err(ChatError::invalid(
            "seq must be the sequence number of a message, starting at 1",
        ));
    }
    take_rate(tenant, reporter)?;
    let report = NewReport {
        reporter: reporter.to_owned(),
        target,
        reason,
        note,
        created_at: now_millis(),
    };
    Ok(tenant.store.file_report(report).await?)
}

/// Closes a report with the moderator's outcome.
pub async fn resolve_report(
    tenant: &Tenant,
    id: &str,
    outcome: ResolutionOutcome,
    note: Option<String>,
    resolved_by: Option<String>,
) -> Result<ReportChange, ChatError> {
    check_note(note.as_deref())?;
    if resolved_by
        .as_ref()
        .is_some_and(|by| by.is_empty() || by.len() > 128 || crate::limits::has_control_char(by))
    {
        return Err(ChatError::invalid(
            "resolved_by must be 1 to 128 bytes without control characters",
        ));
    }
    let resolution = Resolution {
        outcome,
        note,
        resolved_by,
        resolved_at: now_millis(),
    };
    Ok(tenant.store.resolve_report(id, resolution).await?)
}

/// Sets a group's slow mode and notifies its members' sockets. `actor` is the
/// owner, or `None` for the server API.
pub async fn set_slow_mode(
    tenant: &Tenant,
    actor: Option<&str>,
    channel_id: &str,
    seconds: u32,
) -> Result<Channel, ChatError> {
    if seconds > MAX_SLOW_MODE_SECONDS {
        return Err(ChatError::invalid(format!(
            "seconds must be between 0 (off) and {MAX_SLOW_MODE_SECONDS}"
        )));
    }
    if let Some(actor) = actor {
        take_rate(tenant, actor)?;
    }
    let (channel, changed) = tenant
        .store
        .set_slow_mode(channel_id, actor, seconds, now_millis())
        .await?;
    if changed {
        let members = tenant.store.member_ids(channel_id).await?;
        let frame = ServerFrame::ChannelUpdated {
            channel_id: &channel.id,
            slow_mode_seconds: channel.slow_mode_seconds,
        }
        .to_text();
        tenant.deliver(&members, Outbound::Event(frame), None);
    }
    Ok(channel)
}
