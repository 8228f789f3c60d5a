//! The tenant's moderation rules applied to a message before it is stored.
//! Every decision is counted in metrics, and every match is logged and
//! written to the event log: with the message when it is stored, on its own
//! when a rule blocked it.

use axum::http::StatusCode;

use crate::chat::{ChatError, now_millis};
use crate::limits;
use crate::metrics::{DecisionLabels, Metrics, RuleLabels};
use crate::moderation::Moderated;
use crate::store::{Content, ModerationRecord, NewEvent};
use crate::tenant::Tenant;

/// The message being checked: who sends or edits it, and where.
pub(crate) struct Subject<'a> {
    pub sender: &'a str,
    pub channel_id: &'a str,
    /// Set for sends.
    pub client_id: Option<&'a str>,
    /// Set for edits: the edited message.
    pub seq: Option<u64>,
}

/// Content that moderation let through, and the decisions to store with it.
pub(crate) struct Checked {
    pub content: Content,
    pub records: Vec<ModerationRecord>,
}

/// Runs the rules over `content`, which passed the tenant's limits, and
/// returns what to store: the content, masked where a rule asked. A
/// blocking rule returns its reason code as the error code.
pub(crate) async fn moderate(
    tenant: &Tenant,
    metrics: &Metrics,
    subject: Subject<'_>,
    content: Content,
) -> Result<Checked, ChatError> {
    let settings = tenant.settings();
    if settings.moderation.is_empty() {
        return Ok(Checked {
            content,
            records: Vec::new(),
        });
    }
    let moderated = settings.moderation.moderate(content);
    record_metrics(tenant, metrics, &subject, &moderated);
    let records = records_of(&subject, &moderated);

    if let Some(blocked) = moderated.blocked() {
        let reason = blocked.reason;
        record_block(tenant, &subject, &records).await;
        return Err(ChatError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            reason,
            rejection_message(reason),
        ));
    }
    if moderated.masked {
        // A mask longer than what it hides can push the text past a limit.
        limits::check_content(
            &moderated.content,
            &settings.limits,
            &settings.attachment_hosts,
        )?;
    }
    Ok(Checked {
        content: moderated.content,
        records,
    })
}

/// Builds one record per rule that matched, shadow rules included.
fn records_of(subject: &Subject<'_>, moderated: &Moderated) -> Vec<ModerationRecord> {
    let matched = moderated
        .runs
        .iter()
        .filter_map(|run| run.matched.map(|decision| (run, decision)));
    matched
        .map(|(run, decision)| ModerationRecord {
            rule: run.rule.to_string(),
            action: decision.action.as_str().to_owned(),
            shadow: decision.shadow,
            reason: decision.reason.to_owned(),
            user_id: subject.sender.to_owned(),
            channel_id: subject.channel_id.to_owned(),
            client_id: subject.client_id.map(str::to_owned),
        })
        .collect()
}

/// Writes the decisions on a blocked message to the event log. The sender
/// gets the rejection even when this write fails, so the failure is logged.
async fn record_block(tenant: &Tenant, subject: &Subject<'_>, records: &[ModerationRecord]) {
    let now = now_millis();
    let events = records
        .iter()
        .map(|record| NewEvent::moderation(record, subject.seq, now))
        .collect();
    if let Err(error) = tenant.store.append_events(events).await {
        tracing::error!(
            tenant = %tenant.id,
            channel = subject.channel_id,
            error = %crate::server::error_chain(&error),
            "Failed to record a moderation decision in the event log"
        );
    }
}

fn record_metrics(
    tenant: &Tenant,
    metrics: &Metrics,
    subject: &Subject<'_>,
    moderated: &Moderated,
) {
    for run in &moderated.runs {
        let rule = run.rule.to_string();
        metrics
            .moderation_seconds
            .get_or_create(&RuleLabels {
                tenant: tenant.id.clone(),
                rule: rule.clone(),
            })
            .observe(run.elapsed.as_secs_f64());
        let (decision, shadow) = match &run.matched {
            Some(decision) => (decision.action.as_str(), decision.shadow),
            None => ("pass", false),
        };
        metrics
            .moderation_decisions
            .get_or_create(&DecisionLabels {
                tenant: tenant.id.clone(),
                rule,
                decision,
                shadow,
            })
            .inc();
        if let Some(matched) = &run.matched {
            tracing::info!(
                tenant = %tenant.id,
                user = subject.sender,
                channel = subject.channel_id,
                rule = %run.rule,
                action = matched.action.as_str(),
                shadow = matched.shadow,
                reason = matched.reason,
                "Moderation rule matched"
            );
        }
    }
}

fn rejection_message(reason: &str) -> &'static str {
    match reason {
        "blocked_term" => "the message contains a term this chat does not allow",
        "blocked_pattern" => "the message matches a pattern this chat does not allow",
        "link_not_allowed" => "the message links to a site this chat does not allow",
        "contact_details" => "the message contains contact details, which this chat does not allow",
        _ => "the message was rejected by this chat's moderation rules",
    }
}
