//! The tenant's moderation rules, then its pre-send hook, applied to a
//! message before it is stored. Every decision is counted in metrics, and
//! every match, rejection and failed call is logged. Decisions that matched
//! are written to the event log: with the message when it is stored, on
//! their own when the message was rejected.

use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::chat::{ChatError, now_millis};
use crate::config::{TenantSettings, max_frame_bytes};
use crate::limits;
use crate::metrics::{DecisionLabels, Metrics, RuleLabels};
use crate::moderation::hook::{Change, HookRequest, Verdict, same_kind};
use crate::moderation::{HOOK_RULE_NAME, Hook, Moderated, OnFailure};
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

impl Subject<'_> {
    fn change(&self) -> Change {
        match self.seq {
            Some(seq) => Change::Edit { seq },
            None => Change::Send,
        }
    }

    fn record(&self, rule: &str, action: &str, reason: &str) -> ModerationRecord {
        ModerationRecord {
            rule: rule.to_owned(),
            action: action.to_owned(),
            shadow: false,
            reason: reason.to_owned(),
            user_id: self.sender.to_owned(),
            channel_id: self.channel_id.to_owned(),
            client_id: self.client_id.map(str::to_owned),
        }
    }
}

/// Content that moderation let through, and the decisions to store with it.
pub(crate) struct Checked {
    pub content: Content,
    pub records: Vec<ModerationRecord>,
}

/// Runs the rules, then the hook, over `content`, which passed the
/// tenant's limits, and returns what to store: the content, masked where a
/// rule asked and rewritten where the hook asked. A blocking rule returns
/// its reason code as the error code.
pub(crate) async fn moderate(
    tenant: &Tenant,
    metrics: &Metrics,
    subject: Subject<'_>,
    content: Content,
) -> Result<Checked, ChatError> {
    let settings = tenant.settings();
    let mut records = Vec::new();
    let checked = apply_rules(tenant, &settings, metrics, &subject, content, &mut records);
    let content = match checked {
        Ok(content) => content,
        Err(error) => return Err(reject(tenant, &subject, &records, error).await),
    };
    let Some(hook) = &settings.hook else {
        return Ok(Checked { content, records });
    };
    // The store checks these again when it writes; checking them here
    // keeps messages that would be refused away from the tenant's hook.
    check_may_write(tenant, &subject).await?;
    let call = Call {
        tenant,
        settings: &settings,
        metrics,
        subject: &subject,
    };
    match call.run(hook, content, &mut records).await {
        Ok(content) => Ok(Checked { content, records }),
        Err(error) => Err(reject(tenant, &subject, &records, error).await),
    }
}

fn apply_rules(
    tenant: &Tenant,
    settings: &TenantSettings,
    metrics: &Metrics,
    subject: &Subject<'_>,
    content: Content,
    records: &mut Vec<ModerationRecord>,
) -> Result<Content, ChatError> {
    if settings.moderation.is_empty() {
        return Ok(content);
    }
    let moderated = settings.moderation.moderate(content);
    record_metrics(tenant, metrics, subject, &moderated);
    records.extend(records_of(subject, &moderated));
    if let Some(blocked) = moderated.blocked() {
        return Err(ChatError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            blocked.reason,
            rejection_message(blocked.reason),
        ));
    }
    let mut content = moderated.content;
    if moderated.masked {
        // A match that spans values and the template's own text is masked
        // in the text only, so a masked template keeps its text alone.
        if let Content::Template { values, .. } = &mut content {
            values.clear();
        }
        // A mask longer than what it hides can push the text past a limit.
        limits::check_content(&content, &settings.limits, &settings.attachment_hosts)?;
    }
    Ok(content)
}

/// Runs the rules, without the hook, over a message an extension sends.
/// The user wrote its text earlier, and rules may have changed since.
pub(crate) async fn moderate_automated(
    tenant: &Tenant,
    metrics: &Metrics,
    subject: Subject<'_>,
    content: Content,
) -> Result<Checked, ChatError> {
    let settings = tenant.settings();
    let mut records = Vec::new();
    match apply_rules(tenant, &settings, metrics, &subject, content, &mut records) {
        Ok(content) => Ok(Checked { content, records }),
        Err(error) => Err(reject(tenant, &subject, &records, error).await),
    }
}

/// Fails as the store would for a sender who is not a member of the
/// channel, edits another member's message, or is banned or muted.
async fn check_may_write(tenant: &Tenant, subject: &Subject<'_>) -> Result<(), ChatError> {
    let store = &tenant.store;
    let members = store.member_ids(subject.channel_id).await?;
    if !members.iter().any(|member| member == subject.sender) {
        return Err(ChatError::not_found());
    }
    if let Some(seq) = subject.seq {
        let message = store
            .message(subject.channel_id, seq, subject.sender)
            .await?;
        if message.sender_id != subject.sender {
            return Err(ChatError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only the sender can edit a message",
            ));
        }
    }
    // A store that keeps no restrictions (ScyllaDB so far) fails this read;
    // the write that follows applies whatever the store keeps.
    let restrictions = store
        .restrictions(subject.sender, now_millis())
        .await
        .unwrap_or_default();
    let stopping = restrictions.iter().find(|restriction| {
        restriction.channel_id.is_none()
            || restriction.channel_id.as_deref() == Some(subject.channel_id)
    });
    match stopping {
        Some(restriction) => Err(super::restricted_error(restriction)),
        None => Ok(()),
    }
}

/// Returns the error for a rejected message, after writing its decisions to
/// the event log. A sender that is not a member of the channel gets
/// `not_found` instead and nothing is written, so no one can add events for
/// channels they are not in.
async fn reject(
    tenant: &Tenant,
    subject: &Subject<'_>,
    records: &[ModerationRecord],
    error: ChatError,
) -> ChatError {
    let member = tenant
        .store
        .member_ids(subject.channel_id)
        .await
        .is_ok_and(|members| members.iter().any(|member| member == subject.sender));
    if !member {
        return ChatError::not_found();
    }
    if records.is_empty() {
        return error;
    }
    let now = now_millis();
    let events = records
        .iter()
        .map(|record| NewEvent::moderation(record, subject.seq, now))
        .collect();
    if let Err(failure) = tenant.store.append_events(events).await {
        tracing::error!(
            tenant = %tenant.id,
            channel = subject.channel_id,
            error = %crate::server::error_chain(&failure),
            "Failed to record a moderation decision in the event log"
        );
    }
    error
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

/// One message on its way to the hook.
struct Call<'a> {
    tenant: &'a Tenant,
    settings: &'a TenantSettings,
    metrics: &'a Metrics,
    subject: &'a Subject<'a>,
}

impl Call<'_> {
    /// Calls the hook and returns what to store. A decision that rejects
    /// or rewrites the message is added to `records`.
    async fn run(
        &self,
        hook: &Hook,
        content: Content,
        records: &mut Vec<ModerationRecord>,
    ) -> Result<Content, ChatError> {
        let request = HookRequest::new(
            &self.tenant.id,
            self.subject.change(),
            self.subject.channel_id,
            self.subject.sender,
            &content,
        );
        let started = Instant::now();
        // A reply carries at most one message, which a WebSocket frame of
        // the tenant could carry too.
        let result = hook
            .call(
                &self.tenant.hook_calls,
                &request,
                max_frame_bytes(&self.settings.limits),
            )
            .await;
        let elapsed = started.elapsed();
        let (decision, outcome) = match result {
            Ok(Verdict::Allow) => ("allow", Ok(content)),
            Ok(Verdict::Reject { reason }) => {
                self.log_decision("Moderation hook rejected a message", reason.as_deref());
                records.push(
                    self.subject
                        .record(HOOK_RULE_NAME, "block", "rejected_by_hook"),
                );
                ("reject", Err(rejected(reason.as_deref())))
            }
            Ok(Verdict::Rewrite(mut rewritten)) => match self.check_rewrite(&content, &rewritten) {
                Ok(()) => {
                    // A hook that rewrote a template's text may have masked
                    // something that its values still show, so the values
                    // are dropped, as for a masking rule.
                    if let (
                        Content::Template { text: before, .. },
                        Content::Template { text, values, .. },
                    ) = (&content, &mut rewritten)
                        && text != before
                    {
                        values.clear();
                    }
                    self.log_decision("Moderation hook rewrote a message", None);
                    records.push(self.subject.record(
                        HOOK_RULE_NAME,
                        "rewrite",
                        "rewritten_by_hook",
                    ));
                    ("rewrite", Ok(rewritten))
                }
                Err(problem) => {
                    records.push(
                        self.subject
                            .record(HOOK_RULE_NAME, "block", "rejected_by_hook"),
                    );
                    tracing::warn!(
                        tenant = %self.tenant.id,
                        channel = self.subject.channel_id,
                        problem,
                        "Moderation hook rewrote a message into content that cannot be stored; the message was rejected"
                    );
                    ("rewrite_invalid", Err(invalid_rewrite()))
                }
            },
            Err(error) => {
                let open = hook.on_failure == OnFailure::Open;
                tracing::warn!(
                    tenant = %self.tenant.id,
                    channel = self.subject.channel_id,
                    kind = error.kind(),
                    error = %error,
                    on_failure = if open { "open" } else { "closed" },
                    "Moderation hook call failed"
                );
                if open {
                    ("failed_open", Ok(content))
                } else {
                    ("failed_closed", Err(unavailable()))
                }
            }
        };
        self.count(decision, elapsed);
        outcome
    }

    /// Returns why `rewritten` may not replace `original`, as a short code.
    fn check_rewrite(&self, original: &Content, rewritten: &Content) -> Result<(), &'static str> {
        if self.subject.seq.is_some() && !same_kind(original, rewritten) {
            return Err("edit_kind_changed");
        }
        // Only extensions send `automated` messages, and a template message
        // names a template the sender chose.
        match rewritten {
            Content::Automated { .. } => return Err("rewritten_to_automated"),
            Content::Template { template_id, .. } => {
                let same_template = matches!(
                    original,
                    Content::Template { template_id: chosen, .. } if chosen == template_id
                );
                if !same_template {
                    return Err("rewritten_to_another_template");
                }
            }
            _ => {}
        }
        limits::check_content(
            rewritten,
            &self.settings.limits,
            &self.settings.attachment_hosts,
        )
        .map_err(|error| error.code)
    }

    fn log_decision(&self, event: &'static str, reason: Option<&str>) {
        tracing::info!(
            tenant = %self.tenant.id,
            user = self.subject.sender,
            channel = self.subject.channel_id,
            rule = HOOK_RULE_NAME,
            reason,
            "{event}"
        );
    }

    fn count(&self, decision: &'static str, elapsed: Duration) {
        let rule = HOOK_RULE_NAME.to_owned();
        self.metrics
            .moderation_seconds
            .get_or_create(&RuleLabels {
                tenant: self.tenant.id.clone(),
                rule: rule.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.metrics
            .moderation_decisions
            .get_or_create(&DecisionLabels {
                tenant: self.tenant.id.clone(),
                rule,
                decision,
                shadow: false,
            })
            .inc();
    }
}

fn rejected(reason: Option<&str>) -> ChatError {
    let message = match reason {
        Some(reason) => format!("the message was rejected by this chat's moderation ({reason})"),
        None => "the message was rejected by this chat's moderation".to_owned(),
    };
    ChatError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "rejected_by_hook",
        message,
    )
}

fn invalid_rewrite() -> ChatError {
    ChatError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "rejected_by_hook",
        "the message was rejected by this chat's moderation, which changed it into content this chat does not accept",
    )
}

fn unavailable() -> ChatError {
    let mut error = ChatError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "moderation_unavailable",
        "this chat's moderation could not check the message; retry later",
    );
    error.retry_after = Some(Duration::from_secs(1));
    error
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
