//! SQL of the report queue.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::queries::{
    OpError, OpResult, existing_message, get_seq, load_user, member_role, not_found, seq_to_sql,
};
use super::{events, safety};
use crate::store::{
    Message, Millis, ModerationRecord, NewEvent, NewReport, Report, ReportChange, ReportStatus,
    ReportTarget, Resolution, StoreError, reports::DELETED_MESSAGE,
};

const REPORT_COLUMNS: &str = "id, status, user_id, channel_id, seq, reporter, rule, reason, note, \
     content, created_at, resolution";

fn report_from_row(row: &Row<'_>) -> rusqlite::Result<Report> {
    let id: i64 = row.get(0)?;
    let status: String = row.get(1)?;
    let seq: Option<i64> = row.get(4)?;
    let content: Option<String> = row.get(9)?;
    let resolution: Option<String> = row.get(11)?;
    Ok(Report {
        id: id.to_string(),
        status: if status == "open" {
            ReportStatus::Open
        } else {
            ReportStatus::Resolved
        },
        user_id: row.get(2)?,
        channel_id: row.get(3)?,
        seq: match seq {
            Some(_) => Some(get_seq(row, 4)?),
            None => None,
        },
        reporter: row.get(5)?,
        rule: row.get(6)?,
        reason: row.get(7)?,
        note: row.get(8)?,
        content: content.and_then(|json| serde_json::from_str(&json).ok()),
        created_at: row.get(10)?,
        resolution: resolution.and_then(|json| serde_json::from_str(&json).ok()),
    })
}

fn load(conn: &Connection, id: i64) -> OpResult<Option<Report>> {
    let sql = format!("SELECT {REPORT_COLUMNS} FROM reports WHERE id = ?1");
    let report = conn
        .prepare_cached(&sql)?
        .query_row([id], report_from_row)
        .optional()?;
    Ok(report)
}

/// Parses a report id. Ids this store did not issue find nothing.
fn parse_id(id: &str) -> Option<i64> {
    id.parse().ok().filter(|id: &i64| *id > 0)
}

/// The fields of a report that `insert` writes.
struct ReportRow<'a> {
    user_id: &'a str,
    channel_id: Option<&'a str>,
    seq: Option<u64>,
    reporter: Option<&'a str>,
    rule: Option<&'a str>,
    reason: &'a str,
    note: Option<&'a str>,
    content: Option<String>,
    created_at: Millis,
}

/// Inserts an open report and its `report.filed` event.
fn insert(conn: &Connection, row: ReportRow<'_>) -> OpResult<Report> {
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO reports (status, user_id, channel_id, seq, reporter, rule, reason, note, \
             content, created_at) VALUES ('open', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
        )?
        .query_row(
            params![
                row.user_id,
                row.channel_id,
                row.seq.map(seq_to_sql),
                row.reporter,
                row.rule,
                row.reason,
                row.note,
                row.content,
                row.created_at
            ],
            |row| row.get(0),
        )?;
    let Some(report) = load(conn, id)? else {
        return not_found();
    };
    events::append(conn, &NewEvent::report_filed(&report))?;
    Ok(report)
}

/// Files one report for each decision of a rule with the `flag` action
/// that is not in shadow mode.
pub(super) fn file_flags(
    conn: &Connection,
    records: &[ModerationRecord],
    message: &Message,
    now: Millis,
) -> OpResult<()> {
    let flags = records
        .iter()
        .filter(|record| record.action == "flag" && !record.shadow);
    for record in flags {
        let content = serde_json::to_string(&message.content)?;
        insert(
            conn,
            ReportRow {
                user_id: &message.sender_id,
                channel_id: Some(&message.channel_id),
                seq: Some(message.seq),
                reporter: None,
                rule: Some(&record.rule),
                reason: &record.reason,
                note: None,
                content: Some(content),
                created_at: now,
            },
        )?;
    }
    Ok(())
}

pub(super) fn file(conn: &Connection, new: &NewReport) -> OpResult<ReportChange> {
    let (user_id, channel_id, seq, content) = match &new.target {
        ReportTarget::Message { channel_id, seq } => {
            if member_role(conn, channel_id, &new.reporter)?.is_none() {
                return not_found();
            }
            let message = existing_message(conn, channel_id, *seq)?;
            // A message the reporter's own block hides is not there for them.
            if safety::blocks(conn, &new.reporter, &message.sender_id)? {
                return not_found();
            }
            if message.content.is_none() {
                return Err(OpError::Store(StoreError::Invalid(DELETED_MESSAGE)));
            }
            let content = serde_json::to_string(&message.content)?;
            (
                message.sender_id,
                Some(channel_id.as_str()),
                Some(*seq),
                Some(content),
            )
        }
        ReportTarget::User { user_id } => {
            if load_user(conn, user_id)?.is_none() {
                return not_found();
            }
            (user_id.clone(), None, None, None)
        }
    };
    if user_id == new.reporter {
        return Err(OpError::Store(StoreError::Invalid(
            "users cannot report themselves or their own messages",
        )));
    }

    if let Some(report) = open_report_of(conn, &new.reporter, &user_id, channel_id, seq)? {
        return Ok(ReportChange {
            report,
            changed: false,
        });
    }
    let report = insert(
        conn,
        ReportRow {
            user_id: &user_id,
            channel_id,
            seq,
            reporter: Some(&new.reporter),
            rule: None,
            reason: &new.reason,
            note: new.note.as_deref(),
            content,
            created_at: new.created_at,
        },
    )?;
    Ok(ReportChange {
        report,
        changed: true,
    })
}

/// Finds the reporter's open report on the same target.
fn open_report_of(
    conn: &Connection,
    reporter: &str,
    user_id: &str,
    channel_id: Option<&str>,
    seq: Option<u64>,
) -> OpResult<Option<Report>> {
    let sql = format!(
        "SELECT {REPORT_COLUMNS} FROM reports WHERE status = 'open' AND reporter = ?1 \
         AND user_id = ?2 AND channel_id IS ?3 AND seq IS ?4 LIMIT 1"
    );
    let report = conn
        .prepare_cached(&sql)?
        .query_row(
            params![reporter, user_id, channel_id, seq.map(seq_to_sql)],
            report_from_row,
        )
        .optional()?;
    Ok(report)
}

pub(super) fn list(
    conn: &Connection,
    status: Option<ReportStatus>,
    after: Option<&str>,
    limit: u32,
) -> OpResult<Vec<Report>> {
    let after = match after {
        Some(after) => match parse_id(after) {
            Some(id) => id,
            None => {
                return Err(OpError::Store(StoreError::Invalid(
                    "after must be the id of a report",
                )));
            }
        },
        None => 0,
    };
    let sql = format!(
        "SELECT {REPORT_COLUMNS} FROM reports WHERE (?1 IS NULL OR status = ?1) AND id > ?2 \
         ORDER BY id LIMIT ?3"
    );
    let reports = conn
        .prepare_cached(&sql)?
        .query_map(
            params![status.map(ReportStatus::as_str), after, i64::from(limit)],
            report_from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(reports)
}

pub(super) fn get(conn: &Connection, id: &str) -> OpResult<Option<Report>> {
    match parse_id(id) {
        Some(id) => load(conn, id),
        None => Ok(None),
    }
}

pub(super) fn resolve(
    conn: &Connection,
    id: &str,
    resolution: &Resolution,
) -> OpResult<ReportChange> {
    let Some(report) = get(conn, id)? else {
        return not_found();
    };
    if report.status == ReportStatus::Resolved {
        return Ok(ReportChange {
            report,
            changed: false,
        });
    }
    let Some(row_id) = parse_id(id) else {
        return not_found();
    };
    conn.prepare_cached("UPDATE reports SET status = 'resolved', resolution = ?2 WHERE id = ?1")?
        .execute(params![row_id, serde_json::to_string(resolution)?])?;
    let Some(report) = load(conn, row_id)? else {
        return not_found();
    };
    events::append(
        conn,
        &NewEvent::report_resolved(&report, resolution.resolved_at),
    )?;
    Ok(ReportChange {
        report,
        changed: true,
    })
}
