//! Bans and mutes.
//!
//! `restrictions` has one partition per user, clustered by scope (the
//! channel id, or the empty string for the whole tenant) and kind, so every
//! check reads the user's few restrictions in one request and decides in
//! memory. Restrictions are plain writes, and the newest write of a scope
//! and kind wins.
//!
//! NOTE: sends, edits and additions check restrictions before they write,
//! not in one transaction with the write, so a ban or mute that lands
//! during that gap lets that one request through.

use super::rows::inconsistent;
use super::{ScyllaStore, failed};
use crate::store::{
    ChannelKind, MembershipChange, Millis, NewEvent, Restriction, RestrictionKind, StoreError,
    StoreResult,
};

/// Scope of a restriction of the whole tenant.
const TENANT_SCOPE: &str = "";

/// `scope, kind, until, reason, created_at` of a `restrictions` row.
type RestrictionRow = (String, String, Option<i64>, Option<String>, Option<i64>);

fn kind_from_cql(kind: &str) -> StoreResult<RestrictionKind> {
    match kind {
        "ban" => Ok(RestrictionKind::Ban),
        "mute" => Ok(RestrictionKind::Mute),
        _ => Err(inconsistent("stored restriction kind is not ban or mute")),
    }
}

fn restriction_from_row(user_id: &str, row: RestrictionRow) -> StoreResult<Restriction> {
    let (scope, kind, until, reason, created_at) = row;
    Ok(Restriction {
        user_id: user_id.to_owned(),
        channel_id: (scope != TENANT_SCOPE).then_some(scope),
        kind: kind_from_cql(&kind)?,
        until,
        reason,
        created_at: created_at.unwrap_or(0),
    })
}

fn in_force(restriction: &Restriction, now: Millis) -> bool {
    restriction.until.is_none_or(|until| until > now)
}

/// Returns the ban or mute that keeps its user from writing in
/// `channel_id` at `now`: of the tenant or of the channel, a ban before a
/// mute, and the tenant's before the channel's.
fn blocking_restriction(
    restrictions: &[Restriction],
    channel_id: &str,
    now: Millis,
) -> Option<Restriction> {
    let mut matching: Vec<&Restriction> = restrictions
        .iter()
        .filter(|restriction| in_force(restriction, now))
        .filter(|restriction| {
            restriction
                .channel_id
                .as_deref()
                .is_none_or(|channel| channel == channel_id)
        })
        .collect();
    matching.sort_by_key(|restriction| {
        (
            restriction.kind != RestrictionKind::Ban,
            restriction.channel_id.is_some(),
        )
    });
    matching.first().map(|restriction| (*restriction).clone())
}

/// Returns the ban of `channel_id` in force at `now`, if any.
fn channel_ban(restrictions: &[Restriction], channel_id: &str, now: Millis) -> Option<Restriction> {
    restrictions
        .iter()
        .find(|restriction| {
            restriction.kind == RestrictionKind::Ban
                && restriction.channel_id.as_deref() == Some(channel_id)
                && in_force(restriction, now)
        })
        .cloned()
}

/// Returns the end of the tenant ban in force at `now`, `Millis::MAX` for
/// one until lifted.
fn tenant_ban_until(restrictions: &[Restriction], now: Millis) -> Option<Millis> {
    restrictions
        .iter()
        .find(|restriction| {
            restriction.kind == RestrictionKind::Ban
                && restriction.channel_id.is_none()
                && in_force(restriction, now)
        })
        .map(|restriction| restriction.until.unwrap_or(Millis::MAX))
}

impl ScyllaStore {
    /// Reads every restriction of `user_id`, ended ones included, sorted by
    /// scope (the tenant first) and kind.
    async fn user_restrictions(&self, user_id: &str) -> StoreResult<Vec<Restriction>> {
        let rows: Vec<RestrictionRow> = self
            .all_rows(
                &self.statements.select_restrictions,
                (user_id,),
                "read a user's restrictions",
            )
            .await?;
        rows.into_iter()
            .map(|row| restriction_from_row(user_id, row))
            .collect()
    }

    pub(super) async fn restrictions_in_force(
        &self,
        user_id: &str,
        now: Millis,
    ) -> StoreResult<Vec<Restriction>> {
        let mut restrictions = self.user_restrictions(user_id).await?;
        restrictions.retain(|restriction| in_force(restriction, now));
        Ok(restrictions)
    }

    /// Fails with `Restricted` when a ban or mute keeps `user_id` from
    /// writing in `channel_id` at `now`.
    pub(super) async fn check_can_write(
        &self,
        user_id: &str,
        channel_id: &str,
        now: Millis,
    ) -> StoreResult<()> {
        let restrictions = self.user_restrictions(user_id).await?;
        match blocking_restriction(&restrictions, channel_id, now) {
            Some(restriction) => Err(StoreError::Restricted(Box::new(restriction))),
            None => Ok(()),
        }
    }

    /// Fails with `Restricted` when `user_id` is banned from `channel_id`.
    pub(super) async fn check_not_banned_from(
        &self,
        user_id: &str,
        channel_id: &str,
        now: Millis,
    ) -> StoreResult<()> {
        let restrictions = self.user_restrictions(user_id).await?;
        match channel_ban(&restrictions, channel_id, now) {
            Some(restriction) => Err(StoreError::Restricted(Box::new(restriction))),
            None => Ok(()),
        }
    }

    pub(super) async fn tenant_ban_end(
        &self,
        user_id: &str,
        now: Millis,
    ) -> StoreResult<Option<Millis>> {
        let restrictions = self.user_restrictions(user_id).await?;
        Ok(tenant_ban_until(&restrictions, now))
    }

    pub(super) async fn write_restriction(
        &self,
        restriction: Restriction,
    ) -> StoreResult<Option<MembershipChange>> {
        let channel = match &restriction.channel_id {
            Some(channel_id) => Some(
                self.channel(channel_id)
                    .await?
                    .ok_or(StoreError::NotFound)?
                    .channel,
            ),
            None => None,
        };
        if let Some(channel) = &channel
            && channel.kind == ChannelKind::Direct
            && restriction.kind == RestrictionKind::Ban
        {
            // Members of a direct channel never change, so a banned user
            // could not come back once the ban ended.
            return Err(StoreError::Invalid(
                "a direct channel's members cannot change, so a user cannot be banned from one; mute the user in it or ban the user from the tenant",
            ));
        }
        self.execute(
            &self.statements.write_restriction,
            (
                &restriction.user_id,
                restriction.channel_id.as_deref().unwrap_or(TENANT_SCOPE),
                restriction.kind.as_str(),
                restriction.until,
                restriction.reason.as_deref(),
                restriction.created_at,
            ),
            "write a restriction",
        )
        .await?;
        // NOTE: a replica that stops between the write and the event loses
        // the event, and for a channel ban leaves the user a member until
        // the ban is written again.
        self.log(vec![self.place(NewEvent::restricted(&restriction))])
            .await?;

        let (Some(channel), RestrictionKind::Ban) = (channel, restriction.kind) else {
            return Ok(None);
        };
        let changed = self
            .drop_member(
                &channel.id,
                &restriction.user_id,
                None,
                restriction.created_at,
            )
            .await?;
        let members = self.list_member_ids(&channel.id).await?;
        Ok(Some(MembershipChange {
            channel,
            members,
            changed,
        }))
    }

    /// Removes a restriction, and returns whether one was in force at
    /// `now`. One that already ended is removed too.
    ///
    /// NOTE: the read and the delete are two requests, so two lifts of one
    /// restriction at the same moment can both return true and both log
    /// `restriction.lifted`.
    pub(super) async fn remove_restriction(
        &self,
        user_id: &str,
        channel_id: Option<&str>,
        kind: RestrictionKind,
        now: Millis,
    ) -> StoreResult<bool> {
        let scope = channel_id.unwrap_or(TENANT_SCOPE);
        let row: Option<(Option<i64>,)> = self
            .first_row(
                &self.statements.select_restriction,
                (user_id, scope, kind.as_str()),
                "read a restriction",
            )
            .await?;
        let Some((until,)) = row else {
            return Ok(false);
        };
        self.execute(
            &self.statements.delete_restriction,
            (user_id, scope, kind.as_str()),
            "lift a restriction",
        )
        .await?;
        let was_in_force = until.is_none_or(|until| until > now);
        if was_in_force {
            let event = NewEvent::restriction_lifted(user_id, channel_id, kind, now);
            self.log(vec![self.place(event)]).await?;
        }
        Ok(was_in_force)
    }
}

/// Returns the current time for checks that the API gives no time for.
pub(super) fn wall_clock_millis() -> StoreResult<Millis> {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(failed("read the system clock"))?;
    Ok(i64::try_from(elapsed.as_millis()).unwrap_or(Millis::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    fn restriction(
        channel: Option<&str>,
        kind: RestrictionKind,
        until: Option<Millis>,
    ) -> Restriction {
        Restriction {
            user_id: "bob".to_owned(),
            channel_id: channel.map(str::to_owned),
            kind,
            until,
            reason: None,
            created_at: NOW,
        }
    }

    #[test]
    fn rows_convert_scope_and_kind() {
        let row = (
            String::new(),
            "ban".to_owned(),
            Some(NOW),
            Some("spam".to_owned()),
            Some(5),
        );
        let tenant = restriction_from_row("bob", row).unwrap();
        assert_eq!(tenant.channel_id, None);
        assert_eq!(tenant.kind, RestrictionKind::Ban);
        assert_eq!(tenant.until, Some(NOW));
        assert_eq!(tenant.reason.as_deref(), Some("spam"));
        assert_eq!(tenant.created_at, 5);

        let row = ("g_1".to_owned(), "mute".to_owned(), None, None, None);
        let channel = restriction_from_row("bob", row).unwrap();
        assert_eq!(channel.channel_id.as_deref(), Some("g_1"));
        assert_eq!(channel.kind, RestrictionKind::Mute);
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let row = (String::new(), "kick".to_owned(), None, None, None);
        assert!(matches!(
            restriction_from_row("bob", row),
            Err(StoreError::Unavailable(_))
        ));
    }

    #[test]
    fn blocking_picks_scope_in_force() {
        let restrictions = [
            restriction(Some("g_1"), RestrictionKind::Mute, None),
            restriction(Some("g_2"), RestrictionKind::Ban, None),
            restriction(None, RestrictionKind::Mute, Some(NOW - 1)),
        ];
        let found = blocking_restriction(&restrictions, "g_1", NOW).unwrap();
        assert_eq!(found.channel_id.as_deref(), Some("g_1"));
        assert_eq!(found.kind, RestrictionKind::Mute);
        assert_eq!(blocking_restriction(&restrictions, "g_3", NOW), None);
    }

    #[test]
    fn blocking_prefers_ban_then_tenant() {
        let restrictions = [
            restriction(Some("g_1"), RestrictionKind::Mute, None),
            restriction(None, RestrictionKind::Mute, None),
            restriction(Some("g_1"), RestrictionKind::Ban, None),
        ];
        let found = blocking_restriction(&restrictions, "g_1", NOW).unwrap();
        assert_eq!(found.kind, RestrictionKind::Ban);
        let found = blocking_restriction(&restrictions[..2], "g_1", NOW).unwrap();
        assert_eq!(found.channel_id, None);
    }

    #[test]
    fn restriction_ends_at_until() {
        let ending = restriction(None, RestrictionKind::Mute, Some(NOW));
        assert!(in_force(&ending, NOW - 1));
        assert!(!in_force(&ending, NOW));
        assert!(in_force(
            &restriction(None, RestrictionKind::Mute, None),
            NOW
        ));
    }

    #[test]
    fn channel_ban_ignores_mutes_and_other_scopes() {
        let restrictions = [
            restriction(Some("g_1"), RestrictionKind::Mute, None),
            restriction(None, RestrictionKind::Ban, None),
            restriction(Some("g_2"), RestrictionKind::Ban, None),
        ];
        assert_eq!(channel_ban(&restrictions, "g_1", NOW), None);
        let found = channel_ban(&restrictions, "g_2", NOW).unwrap();
        assert_eq!(found.channel_id.as_deref(), Some("g_2"));
    }

    #[test]
    fn tenant_ban_until_end_or_max() {
        let timed = [restriction(None, RestrictionKind::Ban, Some(NOW + 5))];
        assert_eq!(tenant_ban_until(&timed, NOW), Some(NOW + 5));
        assert_eq!(tenant_ban_until(&timed, NOW + 5), None);
        let lasting = [restriction(None, RestrictionKind::Ban, None)];
        assert_eq!(tenant_ban_until(&lasting, NOW), Some(Millis::MAX));
        let other = [
            restriction(None, RestrictionKind::Mute, None),
            restriction(Some("g_1"), RestrictionKind::Ban, None),
        ];
        assert_eq!(tenant_ban_until(&other, NOW), None);
    }
}
