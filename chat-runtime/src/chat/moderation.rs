//! The tenant's moderation rules applied to a message before it is stored,
//! with every decision counted in metrics and every match logged.
//!
//! NOTE: a decision is recorded in metrics and the log only. Nothing keeps
//! a durable record of it yet, so flagged messages have no review queue.

use axum::http::StatusCode;

use crate::chat::ChatError;
use crate::limits;
use crate::metrics::{DecisionLabels, Metrics, RuleLabels};
use crate::moderation::Moderated;
use crate::store::Content;
use crate::tenant::Tenant;

/// Runs the rules over `content`, which passed the tenant's limits, and
/// returns what to store: the content, masked where a rule asked. A
/// blocking rule returns its reason code as the error code.
pub(crate) fn moderate(
    tenant: &Tenant,
    metrics: &Metrics,
    sender: &str,
    channel_id: &str,
    content: Content,
) -> Result<Content, ChatError> {
    let settings = tenant.settings();
    if settings.moderation.is_empty() {
        return Ok(content);
    }
    let moderated = settings.moderation.moderate(content);
    record(tenant, metrics, sender, channel_id, &moderated);
    if let Some(blocked) = moderated.blocked() {
        return Err(ChatError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            blocked.reason,
            rejection_message(blocked.reason),
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
    Ok(moderated.content)
}

fn record(
    tenant: &Tenant,
    metrics: &Metrics,
    sender: &str,
    channel_id: &str,
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
                user = sender,
                channel = channel_id,
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
