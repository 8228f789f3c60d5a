//! The report queue.
//!
//! A report's id is the position of its `report.filed` event (`{at}-{tag}`,
//! see `events.rs`), so reports order like the log: by the filing time the
//! caller gave, raised past every position this store handed out, then by
//! tag. The event is written at that position, so every writer of a
//! report writes the same event row.
//!
//! `reports` contains each report by id, and `report_index` lists the ids
//! per status and under `all`, clustered by position, which is what the
//! queue pages through. Filing writes the index entries, then the event,
//! and the `reports` row last, so a listed id without a row is a filing
//! that has not finished and is skipped. Readers also skip index entries
//! whose row has another status, which a resolution that stopped half-way
//! leaves behind.
//!
//! Filing writes its rows with write timestamp 1, below the clock
//! timestamps of a resolution, so writing a report again never reopens it.
//!
//! `report_claims` keeps one open report per reporter and target: filing
//! inserts the claim with a lightweight transaction, and resolving removes
//! it. The claim contains the whole report, so a filer that finds a claim
//! whose report has no row yet writes the report itself.

use futures_util::{StreamExt as _, TryStreamExt as _};

use super::channels::FAN_OUT;
use super::events::{LogEntry, Position, derived_tag, micros, random_tag};
use super::rows::{StoredMessage, inconsistent};
use super::users::contention;
use super::{ScyllaStore, failed};
use crate::store::{
    Content, Message, Millis, ModerationRecord, NewEvent, NewReport, Report, ReportChange,
    ReportStatus, ReportTarget, Resolution, StoreError, StoreResult, reports::DELETED_MESSAGE,
};

/// Listing of `report_index` that contains every report.
const LISTING_ALL: &str = "all";

/// Attempts of one member report. Another attempt is needed only when the
/// reporter's claim on the target belonged to a report resolved meanwhile.
const MAX_FILE_ATTEMPTS: usize = 8;

/// `report, status, resolution` of a `reports` row.
type ReportRow = (Option<String>, Option<String>, Option<String>);

/// Returns the `report_index` listing of reports with `status`, or of
/// every report.
fn listing(status: Option<ReportStatus>) -> &'static str {
    status.map_or(LISTING_ALL, ReportStatus::as_str)
}

/// Returns the key of a reporter's claim on a message or user. Message
/// keys put the channel last, after digits and a colon, so no user key or
/// other message key can spell the same text.
fn target_key(user_id: &str, channel_id: Option<&str>, seq: Option<u64>) -> String {
    match (channel_id, seq) {
        (Some(channel_id), Some(seq)) => format!("message:{seq}:{channel_id}"),
        _ => format!("user:{user_id}"),
    }
}

/// Parses a report id this store issued.
fn parse_report_id(id: &str) -> Option<Position> {
    Position::parse(id).filter(|position| !position.tag.is_empty())
}

/// Builds a report from its row: the report as filed, with the status and
/// resolution that resolving changes.
fn report_from_row(row: ReportRow) -> StoreResult<Report> {
    let (json, status, resolution) = row;
    let json = json.ok_or_else(|| inconsistent("stored report has no content"))?;
    let mut report: Report =
        serde_json::from_str(&json).map_err(failed("parse a stored report"))?;
    report.status = match status.as_deref() {
        Some("open") => ReportStatus::Open,
        Some("resolved") => ReportStatus::Resolved,
        _ => return Err(inconsistent("stored report status is not open or resolved")),
    };
    report.resolution = match resolution {
        Some(json) => Some(serde_json::from_str(&json).map_err(failed("parse a resolution"))?),
        None => None,
    };
    Ok(report)
}

/// Builds the report that a rule with the `flag` action files on
/// `message`.
fn flag_report(id: String, record: &ModerationRecord, message: &Message, now: Millis) -> Report {
    Report {
        id,
        status: ReportStatus::Open,
        user_id: message.sender_id.clone(),
        channel_id: Some(message.channel_id.clone()),
        seq: Some(message.seq),
        reporter: None,
        rule: Some(record.rule.clone()),
        reason: record.reason.clone(),
        note: None,
        content: message.content.clone(),
        created_at: now,
        resolution: None,
    }
}

/// Returns the decisions that file a report, with their index among all
/// decisions: those of a `flag` rule that is not in shadow mode.
fn flag_decisions(
    records: &[ModerationRecord],
) -> impl Iterator<Item = (usize, &ModerationRecord)> {
    records
        .iter()
        .enumerate()
        .filter(|(_, record)| record.action == "flag" && !record.shadow)
}

impl ScyllaStore {
    /// Writes a new report's index entries, its `report.filed` event and,
    /// last, its row. Every write is idempotent, so any filer may run it
    /// again for the same report.
    async fn write_report(&self, report: &Report, position: &Position) -> StoreResult<()> {
        let index_writes: Vec<_> = [LISTING_ALL, ReportStatus::Open.as_str()]
            .into_iter()
            .map(|listing| {
                self.execute(
                    &self.statements.insert_report_index,
                    (listing, position.at, &position.tag),
                    "list a report",
                )
            })
            .collect();
        futures_util::future::try_join_all(index_writes).await?;

        let entry = LogEntry {
            position: position.clone(),
            event: NewEvent::report_filed(report),
        };
        self.log(vec![entry]).await?;

        let json = serde_json::to_string(report).map_err(failed("serialise a report"))?;
        self.execute(
            &self.statements.insert_report,
            (&report.id, json),
            "write a report",
        )
        .await
    }

    /// Files the reports of a claimed message's `flag` decisions. Claims
    /// from before the event log have no position and file none, as they
    /// log no events.
    pub(super) async fn file_claim_flags(&self, message: &StoredMessage) -> StoreResult<()> {
        let Some(event_at) = message.event_at else {
            return Ok(());
        };
        if flag_decisions(&message.moderation).next().is_none() {
            return Ok(());
        }
        let appended = message.clone().into_message(false);
        self.file_append_flags(&appended, &message.moderation, event_at)
            .await
    }

    /// Files one report per `flag` decision on an appended message. Ids
    /// follow from the message's event position and the decision's index,
    /// so a replica that completes the message writes the same reports.
    async fn file_append_flags(
        &self,
        message: &Message,
        records: &[ModerationRecord],
        event_at: i64,
    ) -> StoreResult<()> {
        let channel_id = message.channel_id.as_str();
        let seq = message.seq.to_string();
        let writes: Vec<_> = flag_decisions(records)
            .map(|(index, record)| {
                let offset = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
                let position = Position {
                    at: event_at.saturating_add(offset),
                    tag: derived_tag(&["report.filed", channel_id, &seq, &index.to_string()]),
                };
                let report = flag_report(position.encode(), record, message, message.created_at);
                (report, position)
            })
            .collect();
        for (report, position) in &writes {
            self.write_report(report, position).await?;
        }
        Ok(())
    }

    /// Files one report per `flag` decision on the edit numbered
    /// `edit_count` of a message, whose content `message` has.
    ///
    /// NOTE: a replica that stops between the edit's transaction and these
    /// writes loses the reports, as it loses the edit's events.
    pub(super) async fn file_edit_flags(
        &self,
        message: &Message,
        records: &[ModerationRecord],
        edit_count: i32,
        edited_at: Millis,
    ) -> StoreResult<()> {
        let channel_id = message.channel_id.as_str();
        let (seq, count) = (message.seq.to_string(), edit_count.to_string());
        for (index, record) in flag_decisions(records) {
            let position = Position {
                at: self.event_clock.next(micros(edited_at)),
                tag: derived_tag(&["report.filed", channel_id, &seq, &count, &index.to_string()]),
            };
            let report = flag_report(position.encode(), record, message, edited_at);
            self.write_report(&report, &position).await?;
        }
        Ok(())
    }

    pub(super) async fn file_member_report(&self, new: NewReport) -> StoreResult<ReportChange> {
        let (user_id, channel_id, seq, content) = self.report_target(&new).await?;
        if user_id == new.reporter {
            return Err(StoreError::Invalid(
                "users cannot report themselves or their own messages",
            ));
        }
        let position = Position {
            at: self.event_clock.next(micros(new.created_at)),
            tag: random_tag(),
        };
        let target = target_key(&user_id, channel_id.as_deref(), seq);
        let report = Report {
            id: position.encode(),
            status: ReportStatus::Open,
            user_id,
            channel_id,
            seq,
            reporter: Some(new.reporter.clone()),
            rule: None,
            reason: new.reason,
            note: new.note,
            content,
            created_at: new.created_at,
            resolution: None,
        };
        let json = serde_json::to_string(&report).map_err(failed("serialise a report"))?;

        for _ in 0..MAX_FILE_ATTEMPTS {
            let claimed = self
                .conditional(
                    &self.statements.insert_report_claim,
                    (&new.reporter, &target, &report.id, &json),
                    "claim a report target",
                )
                .await?;
            if claimed {
                self.write_report(&report, &position).await?;
                return Ok(ReportChange {
                    report,
                    changed: true,
                });
            }
            if let Some(existing) = self.claimed_report(&new.reporter, &target).await? {
                return Ok(ReportChange {
                    report: existing,
                    changed: false,
                });
            }
        }
        Err(contention("file a report"))
    }

    /// Returns the open report of the reporter's claim on `target`, writing
    /// it first when its filer has not finished. Returns `None` after
    /// removing a claim whose report is resolved, or when there is no claim.
    async fn claimed_report(&self, reporter: &str, target: &str) -> StoreResult<Option<Report>> {
        let claim: Option<(Option<String>, Option<String>)> = self
            .first_row(
                &self.statements.select_report_claim_serial,
                (reporter, target),
                "read a report claim",
            )
            .await?;
        let (id, json) = match claim {
            None => return Ok(None),
            Some((Some(id), Some(json))) => (id, json),
            Some(_) => return Err(inconsistent("a report claim has no id or report")),
        };
        if let Some(report) = self.find_report(&id).await? {
            if report.status == ReportStatus::Open {
                return Ok(Some(report));
            }
            self.conditional(
                &self.statements.delete_report_claim,
                (reporter, target, &id),
                "remove a resolved report's claim",
            )
            .await?;
            return Ok(None);
        }
        // The filer stopped, or is still writing: either way the same rows.
        let report: Report =
            serde_json::from_str(&json).map_err(failed("parse a claimed report"))?;
        let position =
            parse_report_id(&id).ok_or_else(|| inconsistent("a report claim has an invalid id"))?;
        self.write_report(&report, &position).await?;
        Ok(Some(report))
    }

    /// Checks a report's target and returns the reported user, the
    /// message's channel and number, and a copy of its content.
    async fn report_target(
        &self,
        new: &NewReport,
    ) -> StoreResult<(String, Option<String>, Option<u64>, Option<Content>)> {
        match &new.target {
            ReportTarget::Message { channel_id, seq } => {
                let record = self.member_channel(channel_id, &new.reporter).await?;
                let stored = self
                    .stored_message(&record, *seq)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                // A message the reporter's own block hides is not there
                // for them.
                if self.blocks(&new.reporter, &stored.sender_id).await? {
                    return Err(StoreError::NotFound);
                }
                if stored.content.is_none() {
                    return Err(StoreError::Invalid(DELETED_MESSAGE));
                }
                Ok((
                    stored.sender_id,
                    Some(channel_id.clone()),
                    Some(*seq),
                    stored.content,
                ))
            }
            ReportTarget::User { user_id } => {
                if self.user(user_id).await?.is_none() {
                    return Err(StoreError::NotFound);
                }
                Ok((user_id.clone(), None, None, None))
            }
        }
    }

    pub(super) async fn find_report(&self, id: &str) -> StoreResult<Option<Report>> {
        if parse_report_id(id).is_none() {
            return Ok(None);
        }
        let row: Option<ReportRow> = self
            .first_row(&self.statements.select_report, (id,), "read a report")
            .await?;
        row.map(report_from_row).transpose()
    }

    /// Pages through the index of `status` until `limit` reports with that
    /// status are found or the index ends.
    pub(super) async fn list_reports(
        &self,
        status: Option<ReportStatus>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Report>> {
        let mut cursor = match after {
            Some(after) => parse_report_id(after)
                .ok_or(StoreError::Invalid("after must be the id of a report"))?,
            None => Position {
                at: 0,
                tag: String::new(),
            },
        };
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        let page_size = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let mut reports = Vec::new();
        while reports.len() < wanted {
            let ids: Vec<(i64, String)> = self
                .rows(
                    &self.statements.select_report_index,
                    (listing(status), cursor.at, &cursor.tag, page_size),
                    "list reports",
                )
                .await?;
            let Some((at, tag)) = ids.last().cloned() else {
                break;
            };
            let full_page = ids.len() == usize::try_from(page_size).unwrap_or(usize::MAX);
            let found = self.reports_by_position(ids).await?;
            reports.extend(
                found
                    .into_iter()
                    .flatten()
                    .filter(|report| status.is_none_or(|status| report.status == status)),
            );
            if !full_page {
                break;
            }
            cursor = Position { at, tag };
        }
        reports.truncate(wanted);
        Ok(reports)
    }

    /// Reads the reports at `positions`, in their order, `None` for those
    /// without a row.
    async fn reports_by_position(
        &self,
        positions: Vec<(i64, String)>,
    ) -> StoreResult<Vec<Option<Report>>> {
        let reads: Vec<_> = positions
            .into_iter()
            .map(|(at, tag)| async move { self.find_report(&Position { at, tag }.encode()).await })
            .collect();
        futures_util::stream::iter(reads)
            .buffered(FAN_OUT)
            .try_collect()
            .await
    }

    pub(super) async fn resolve(
        &self,
        id: &str,
        resolution: Resolution,
    ) -> StoreResult<ReportChange> {
        let position = parse_report_id(id).ok_or(StoreError::NotFound)?;
        let report = self.report_serial(id).await?.ok_or(StoreError::NotFound)?;
        if report.status == ReportStatus::Resolved {
            return Ok(ReportChange {
                report,
                changed: false,
            });
        }
        // Listed as resolved before the transaction, so a resolution that
        // stops half-way is never missing from that listing. Readers skip
        // the entry while the report is still open.
        self.execute(
            &self.statements.insert_report_index,
            (ReportStatus::Resolved.as_str(), position.at, &position.tag),
            "list a resolved report",
        )
        .await?;
        let json = serde_json::to_string(&resolution).map_err(failed("serialise a resolution"))?;
        let applied = self
            .conditional(
                &self.statements.resolve_report,
                (json, id),
                "resolve a report",
            )
            .await?;
        let report = self
            .report_serial(id)
            .await?
            .ok_or_else(|| inconsistent("report row missing right after it was resolved"))?;
        if !applied {
            return Ok(ReportChange {
                report,
                changed: false,
            });
        }
        self.finish_resolution(&report, &position, resolution.resolved_at)
            .await?;
        Ok(ReportChange {
            report,
            changed: true,
        })
    }

    /// Removes a resolved report from the open listing and frees its
    /// reporter's claim, then logs `report.resolved`.
    ///
    /// NOTE: a replica that stops before this finishes loses the event.
    /// The stale open entry and claim do no harm: readers skip the entry,
    /// and the next filing on the target removes the claim.
    async fn finish_resolution(
        &self,
        report: &Report,
        position: &Position,
        resolved_at: Millis,
    ) -> StoreResult<()> {
        self.execute(
            &self.statements.delete_report_index,
            (ReportStatus::Open.as_str(), position.at, &position.tag),
            "remove a report from the open listing",
        )
        .await?;
        if let Some(reporter) = &report.reporter {
            let target = target_key(&report.user_id, report.channel_id.as_deref(), report.seq);
            self.conditional(
                &self.statements.delete_report_claim,
                (reporter, target, &report.id),
                "remove a resolved report's claim",
            )
            .await?;
        }
        let event = NewEvent::report_resolved(report, resolved_at);
        self.log(vec![self.place(event)]).await
    }

    async fn report_serial(&self, id: &str) -> StoreResult<Option<Report>> {
        let row: Option<ReportRow> = self
            .first_row(
                &self.statements.select_report_serial,
                (id,),
                "read a report",
            )
            .await?;
        row.map(report_from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_report(id: &str) -> Report {
        Report {
            id: id.to_owned(),
            status: ReportStatus::Open,
            user_id: "bob".to_owned(),
            channel_id: Some("c1".to_owned()),
            seq: Some(3),
            reporter: Some("alice".to_owned()),
            rule: None,
            reason: "spam".to_owned(),
            note: Some("quảng cáo".to_owned()),
            content: Some(Content::Text {
                text: "mua đi".to_owned(),
            }),
            created_at: 1_000,
            resolution: None,
        }
    }

    #[test]
    fn report_row_round_trips() {
        let report = open_report("1000000-0123456789abcdef");
        let json = serde_json::to_string(&report).unwrap();
        let row = (Some(json), Some("open".to_owned()), None);
        assert_eq!(report_from_row(row).unwrap(), report);
    }

    #[test]
    fn report_row_takes_status_and_resolution_columns() {
        let report = open_report("1000000-0123456789abcdef");
        let resolution = Resolution {
            outcome: crate::store::ResolutionOutcome::Actioned,
            note: None,
            resolved_by: Some("mod".to_owned()),
            resolved_at: 2_000,
        };
        let row = (
            Some(serde_json::to_string(&report).unwrap()),
            Some("resolved".to_owned()),
            Some(serde_json::to_string(&resolution).unwrap()),
        );
        let read = report_from_row(row).unwrap();
        assert_eq!(read.status, ReportStatus::Resolved);
        assert_eq!(read.resolution, Some(resolution));
    }

    #[test]
    fn report_row_with_unknown_status_is_rejected() {
        let json = serde_json::to_string(&open_report("1-0123456789abcdef")).unwrap();
        let row = (Some(json), Some("closed".to_owned()), None);
        assert!(matches!(
            report_from_row(row),
            Err(StoreError::Unavailable(_))
        ));
    }

    #[test]
    fn report_ids_parse_only_with_tag() {
        let position = Position {
            at: 1_733_400_000_000_000,
            tag: "0123456789abcdef".to_owned(),
        };
        assert_eq!(parse_report_id(&position.encode()), Some(position));
        assert_eq!(parse_report_id("1733400000000000-"), None);
        assert_eq!(parse_report_id("17"), None);
        assert_eq!(parse_report_id("no-such-report"), None);
    }

    /// The index clusters by `(at, tag)`, and `after` pages by the same
    /// order, so ids must compare like the positions they encode.
    #[test]
    fn report_ids_order_like_positions() {
        let ids = [
            "999-ffffffffffffffff",
            "1000-0000000000000000",
            "1000-00000000000000ff",
            "10000-0000000000000000",
        ];
        let positions: Vec<Position> = ids.iter().map(|id| parse_report_id(id).unwrap()).collect();
        for pair in positions.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
        }
    }

    #[test]
    fn target_keys_differ_by_target() {
        let on_message = target_key("bob", Some("c1"), Some(12));
        assert_eq!(on_message, "message:12:c1");
        assert_ne!(on_message, target_key("bob", Some("c1"), Some(1)));
        assert_ne!(on_message, target_key("bob", Some("2:c1"), Some(1)));
        assert_eq!(target_key("bob", None, None), "user:bob");
        assert_ne!(target_key("message:12:c1", None, None), on_message);
    }

    #[test]
    fn listing_per_status() {
        assert_eq!(listing(None), "all");
        assert_eq!(listing(Some(ReportStatus::Open)), "open");
        assert_eq!(listing(Some(ReportStatus::Resolved)), "resolved");
    }

    #[test]
    fn flag_decisions_skip_shadow_and_other_actions() {
        let record = |action: &str, shadow: bool| ModerationRecord {
            rule: format!("{action}-rule"),
            action: action.to_owned(),
            shadow,
            reason: "contact_details".to_owned(),
            user_id: "bob".to_owned(),
            channel_id: "c1".to_owned(),
            client_id: None,
        };
        let records = [
            record("mask", false),
            record("flag", true),
            record("flag", false),
        ];
        let indexes: Vec<usize> = flag_decisions(&records).map(|(index, _)| index).collect();
        assert_eq!(indexes, [2]);
    }
}
