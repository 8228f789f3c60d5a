//! Channels, membership, read positions and each user's channel list.

use std::collections::{BTreeSet, HashMap};

use futures_util::{StreamExt as _, TryStreamExt as _};

use super::ScyllaStore;
use super::blocks::includes_blocker;
use super::rows::{
    ChannelRecord, ChannelRow, StoredMessage, channel_from_row, inconsistent, kind_to_cql,
    role_from_cql, role_to_cql, seq_from_cql, seq_to_cql,
};
use crate::store::{
    Channel, ChannelKind, Member, MemberRole, MembershipChange, Millis, NewEvent, StoreError,
    StoreResult, keys,
};

/// Requests one call keeps in flight when it touches many rows (members of
/// a group, channels of a list page). It bounds the load one large group
/// puts on the cluster at once.
pub(super) const FAN_OUT: usize = 32;

/// One of a user's channels as `channel_activity` has it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ChannelEntry {
    pub channel_id: String,
    pub last_seq: u64,
    pub last_activity: Millis,
}

impl ScyllaStore {
    pub(super) async fn channel(&self, id: &str) -> StoreResult<Option<ChannelRecord>> {
        let row: Option<ChannelRow> = self
            .first_row(&self.statements.select_channel, (id,), "read a channel")
            .await?;
        let record = row.map(channel_from_row).transpose()?;
        self.observe_channel(record.as_ref());
        Ok(record)
    }

    /// Makes events this store logs from now on come after the events of
    /// the channel's newest message, even when this replica's clock is
    /// behind.
    fn observe_channel(&self, record: Option<&ChannelRecord>) {
        let newest = record.and_then(|record| record.newest.as_ref());
        if let Some(at) = newest.and_then(StoredMessage::last_event_at) {
            self.event_clock.observe(at);
        }
    }

    /// Reads a channel at serial consistency, which returns the outcome of
    /// every lightweight transaction on the row and finishes one that is
    /// half-way.
    pub(super) async fn channel_serial(&self, id: &str) -> StoreResult<Option<ChannelRecord>> {
        let row: Option<ChannelRow> = self
            .first_row(
                &self.statements.select_channel_serial,
                (id,),
                "read a channel at serial consistency",
            )
            .await?;
        let record = row.map(channel_from_row).transpose()?;
        self.observe_channel(record.as_ref());
        Ok(record)
    }

    pub(super) async fn member_role(
        &self,
        channel_id: &str,
        user: &str,
    ) -> StoreResult<Option<MemberRole>> {
        let row: Option<(Option<String>,)> = self
            .first_row(
                &self.statements.select_member,
                (channel_id, user),
                "read a membership",
            )
            .await?;
        row.map(|(role,)| role_from_cql(role.as_deref()))
            .transpose()
    }

    /// Members of a channel with their roles, sorted by user id (the
    /// clustering order). Empty for an unknown channel.
    async fn members(&self, channel_id: &str) -> StoreResult<Vec<(String, MemberRole)>> {
        let rows: Vec<(String, Option<String>)> = self
            .all_rows(
                &self.statements.select_members,
                (channel_id,),
                "read the members of a channel",
            )
            .await?;
        rows.into_iter()
            .map(|(user, role)| Ok((user, role_from_cql(role.as_deref())?)))
            .collect()
    }

    pub(super) async fn list_member_ids(&self, channel_id: &str) -> StoreResult<Vec<String>> {
        let members = self.members(channel_id).await?;
        Ok(members.into_iter().map(|(user, _)| user).collect())
    }

    /// Returns the channel and the role of `user` in it, or `NotFound` when
    /// `user` is not a member.
    async fn channel_of_member(
        &self,
        channel_id: &str,
        user: &str,
    ) -> StoreResult<(Channel, MemberRole)> {
        let (role, channel) =
            futures_util::try_join!(self.member_role(channel_id, user), self.channel(channel_id))?;
        let Some(role) = role else {
            return Err(StoreError::NotFound);
        };
        match channel {
            Some(record) => Ok((record.channel, role)),
            None => Err(inconsistent("membership refers to a missing channel")),
        }
    }

    pub(super) async fn read_position(&self, channel_id: &str, user: &str) -> StoreResult<u64> {
        let row: Option<(Option<i64>,)> = self
            .first_row(
                &self.statements.select_read_position,
                (channel_id, user),
                "read a read position",
            )
            .await?;
        seq_from_cql(row.and_then(|(seq,)| seq))
    }

    /// Moves `user`'s read position in `channel_id` to `seq` unless it is
    /// already further. The write timestamp is the position, so the highest
    /// of concurrent writes wins.
    pub(super) async fn write_read_position(
        &self,
        channel_id: &str,
        user: &str,
        seq: u64,
    ) -> StoreResult<()> {
        let seq = seq_to_cql(seq);
        self.execute(
            &self.statements.write_read_position,
            (channel_id, user, seq, seq),
            "write a read position",
        )
        .await
    }

    /// Records that `user`'s channel reached `last_seq` at `last_activity`,
    /// with `last_seq` as the write timestamp. Without `last_activity`, the
    /// activity time keeps its value.
    pub(super) async fn write_activity(
        &self,
        user: &str,
        channel_id: &str,
        last_seq: u64,
        last_activity: Option<Millis>,
    ) -> StoreResult<()> {
        let seq = seq_to_cql(last_seq);
        match last_activity {
            Some(last_activity) => {
                self.execute(
                    &self.statements.write_activity,
                    (user, channel_id, seq, last_activity, seq),
                    "write a channel's activity",
                )
                .await
            }
            None => {
                self.execute(
                    &self.statements.write_activity_seq,
                    (user, channel_id, seq, seq),
                    "write a channel's newest sequence number",
                )
                .await
            }
        }
    }

    /// Returns the activity of `user`'s row for the channel, which messages
    /// from users `user` blocks do not move, or the channel's own without
    /// a row.
    pub(super) async fn viewed_activity(
        &self,
        channel_id: &str,
        user: &str,
    ) -> StoreResult<Millis> {
        let (record, row) = futures_util::try_join!(
            self.channel(channel_id),
            self.first_row::<(Option<i64>,)>(
                &self.statements.select_one_activity,
                (user, channel_id),
                "read a channel's activity for a user",
            ),
        )?;
        let Some(record) = record else {
            return Err(StoreError::NotFound);
        };
        Ok(row
            .and_then(|(activity,)| activity)
            .unwrap_or(record.channel.last_activity))
    }

    /// Adds `user` as a member and returns whether it was not one before.
    /// The read position starts at `channel.last_seq`, so earlier messages
    /// are not unread.
    async fn insert_member(
        &self,
        channel: &Channel,
        user: &str,
        role: MemberRole,
        now: Millis,
    ) -> StoreResult<bool> {
        let added = self
            .conditional(
                &self.statements.insert_member,
                (&channel.id, user, role_to_cql(role), now),
                "add a member",
            )
            .await?;
        self.execute(
            &self.statements.insert_user_channel,
            (user, &channel.id),
            "add a channel to a user's list",
        )
        .await?;
        // A member added by a call that failed before the catch-up has no
        // read position yet, and gets one now.
        if added || !self.has_read_position(&channel.id, user).await? {
            self.catch_up_new_member(&channel.id, user).await?;
        }
        Ok(added)
    }

    async fn has_read_position(&self, channel_id: &str, user: &str) -> StoreResult<bool> {
        let row: Option<(Option<i64>,)> = self
            .first_row(
                &self.statements.select_read_position,
                (channel_id, user),
                "read a read position",
            )
            .await?;
        Ok(row.is_some())
    }

    /// Writes a new member's read position and activity from the channel
    /// row as it is after the membership was written. A message numbered
    /// after that read finds the member in its member list and writes the
    /// member's activity itself, so no message falls between the two.
    async fn catch_up_new_member(&self, channel_id: &str, user: &str) -> StoreResult<()> {
        let Some(record) = self.channel(channel_id).await? else {
            return Err(inconsistent("membership refers to a missing channel"));
        };
        let channel = record.channel;
        futures_util::try_join!(
            self.write_read_position(channel_id, user, channel.last_seq),
            self.write_activity(
                user,
                channel_id,
                channel.last_seq,
                Some(channel.last_activity)
            ),
        )?;
        Ok(())
    }

    pub(super) async fn open_direct_channel(
        &self,
        a: &str,
        b: &str,
        subject: Option<&str>,
        now: Millis,
    ) -> StoreResult<(Channel, Vec<String>)> {
        if a == b {
            return Err(StoreError::Invalid(
                "a direct channel needs two different users",
            ));
        }
        futures_util::try_join!(self.active_incarnation(a), self.active_incarnation(b))?;

        let (low, high) = if a < b { (a, b) } else { (b, a) };
        // An empty subject is the same key as no subject, so it is stored as none.
        let subject = subject.filter(|subject| !subject.is_empty());
        let id = keys::direct_channel_id(low, high, subject.unwrap_or(""));

        // The id follows from the pair and the subject, so replicas that
        // open the same channel at once insert the same row, and the
        // transaction keeps the first one's creation time and creator.
        let (record, created) = match self.channel(&id).await? {
            Some(record) => (record, false),
            None => {
                // A block stops new direct channels only, so an existing
                // one opens without this read.
                // NOTE: a block written between this check and the insert
                // below does not stop that one channel.
                if self.blocked_between(a, b).await? {
                    return Err(StoreError::Forbidden(
                        "one of the two users blocks the other",
                    ));
                }
                let created = self
                    .conditional(
                        &self.statements.insert_channel,
                        (
                            &id,
                            kind_to_cql(ChannelKind::Direct),
                            None::<&str>,
                            subject,
                            a,
                            now,
                            now,
                        ),
                        "create a direct channel",
                    )
                    .await?;
                let record = self.channel_serial(&id).await?.ok_or_else(|| {
                    inconsistent("direct channel missing right after it was written")
                })?;
                (record, created)
            }
        };

        // A creator that stopped after the channel row leaves members or
        // their channel list rows missing, so every call completes them.
        let members = self.list_member_ids(&id).await?;
        for user in [low, high] {
            if members.iter().any(|member| member == user) {
                self.execute(
                    &self.statements.insert_user_channel,
                    (user, &id),
                    "add a channel to a user's list",
                )
                .await?;
            } else {
                self.insert_member(
                    &record.channel,
                    user,
                    MemberRole::Member,
                    record.channel.created_at,
                )
                .await?;
            }
        }
        let members = vec![low.to_owned(), high.to_owned()];
        // Only the call whose insert created the row logs the creation.
        // NOTE: a replica that stops before this line loses the event, and
        // the calls that complete the channel later do not know it is
        // missing.
        if created {
            let event = NewEvent::channel_created(&record.channel, &members);
            self.log(vec![self.place(event)]).await?;
        }
        Ok((record.channel, members))
    }

    pub(super) async fn create_group_channel(
        &self,
        creator: &str,
        name: &str,
        members: &[String],
        now: Millis,
    ) -> StoreResult<(Channel, Vec<String>)> {
        let mut all_members: BTreeSet<&str> = members.iter().map(String::as_str).collect();
        all_members.insert(creator);
        let checks: Vec<_> = all_members
            .iter()
            .map(|user| self.active_incarnation(user))
            .collect();
        let incarnations = futures_util::stream::iter(checks)
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<_>>();
        let (_, blockers) = futures_util::try_join!(incarnations, self.blocker_set(creator))?;
        // NOTE: a block written after this read does not stop this group.
        if includes_blocker(all_members.iter().copied(), creator, &blockers) {
            return Err(StoreError::Forbidden(
                "a member blocks you, so you cannot add them to a group",
            ));
        }

        let id = keys::random_group_id();
        let created = self
            .conditional(
                &self.statements.insert_channel,
                (
                    &id,
                    kind_to_cql(ChannelKind::Group),
                    Some(name),
                    None::<&str>,
                    creator,
                    now,
                    now,
                ),
                "create a group",
            )
            .await?;
        if !created {
            return Err(inconsistent("a random group id is already taken"));
        }
        let channel = Channel {
            id,
            kind: ChannelKind::Group,
            name: Some(name.to_owned()),
            subject: None,
            created_by: creator.to_owned(),
            created_at: now,
            last_seq: 0,
            last_activity: now,
            slow_mode_seconds: 0,
        };

        // NOTE: unlike the embedded store, creating a group is not atomic.
        // A replica that fails here leaves a group with part of its members,
        // and the caller, who got an error, creates another one.
        let inserts: Vec<_> = all_members
            .iter()
            .map(|user| {
                let role = if *user == creator {
                    MemberRole::Owner
                } else {
                    MemberRole::Member
                };
                self.insert_member(&channel, user, role, now)
            })
            .collect();
        futures_util::stream::iter(inserts)
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<bool>>()
            .await?;
        let members: Vec<String> = all_members.into_iter().map(str::to_owned).collect();
        // NOTE: like the members above, the event is lost when the replica
        // stops before it is written.
        let event = NewEvent::channel_created(&channel, &members);
        self.log(vec![self.place(event)]).await?;
        Ok((channel, members))
    }

    pub(super) async fn add_group_member(
        &self,
        channel_id: &str,
        actor: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<MembershipChange> {
        let (channel, actor_role) = self.channel_of_member(channel_id, actor).await?;
        if channel.kind == ChannelKind::Direct {
            return Err(StoreError::Invalid(
                "members of a direct channel cannot change",
            ));
        }
        if actor_role != MemberRole::Owner {
            return Err(StoreError::Forbidden(
                "only the group owner can add members",
            ));
        }
        self.active_incarnation(user).await?;
        self.check_not_banned_from(user, channel_id, now).await?;
        // NOTE: a block written after this read does not stop this addition.
        if self.blocks(user, actor).await? {
            return Err(StoreError::Forbidden(
                "the user blocks you, so you cannot add them",
            ));
        }

        let changed = self
            .insert_member(&channel, user, MemberRole::Member, now)
            .await?;
        // Logged only by the call whose transaction added the member.
        // NOTE: a replica that stops between the two loses the event.
        if changed {
            let event = NewEvent::member_added(channel_id, user, actor, now);
            self.log(vec![self.place(event)]).await?;
        }
        let members = self.list_member_ids(channel_id).await?;
        Ok(MembershipChange {
            channel,
            members,
            changed,
        })
    }

    pub(super) async fn remove_group_member(
        &self,
        channel_id: &str,
        actor: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<MembershipChange> {
        let (channel, actor_role) = self.channel_of_member(channel_id, actor).await?;
        if channel.kind == ChannelKind::Direct {
            return Err(StoreError::Invalid(
                "members of a direct channel cannot change",
            ));
        }
        if actor == user && actor_role == MemberRole::Owner {
            return Err(StoreError::Forbidden(
                "the group owner cannot leave its own group",
            ));
        }
        if actor != user && actor_role != MemberRole::Owner {
            return Err(StoreError::Forbidden(
                "only the group owner can remove other members",
            ));
        }

        let changed = self.drop_member(channel_id, user, Some(actor), now).await?;
        let members = self.list_member_ids(channel_id).await?;
        Ok(MembershipChange {
            channel,
            members,
            changed,
        })
    }

    /// Removes `user` from a channel and logs `member.removed` with `actor`,
    /// `None` for a ban. Returns whether the user was a member.
    pub(super) async fn drop_member(
        &self,
        channel_id: &str,
        user: &str,
        actor: Option<&str>,
        now: Millis,
    ) -> StoreResult<bool> {
        // The channel list row goes first: a call that fails between the
        // two writes leaves a member without the row, which the next call
        // removes, rather than a list row for a channel the user left.
        self.execute(
            &self.statements.delete_user_channel,
            (user, channel_id),
            "remove a channel from a user's list",
        )
        .await?;
        let changed = self
            .conditional(
                &self.statements.delete_member,
                (channel_id, user),
                "remove a member",
            )
            .await?;
        // NOTE: as for additions, a replica that stops between the
        // transaction and this write loses the event.
        if changed {
            let event = NewEvent::member_removed(channel_id, user, actor, now);
            self.log(vec![self.place(event)]).await?;
        }
        // The read position and activity rows stay: they are read only
        // together with a membership, and a returning member's new
        // position overwrites them.
        Ok(changed)
    }

    pub(super) async fn channel_with_members(
        &self,
        channel_id: &str,
        user: &str,
    ) -> StoreResult<(Channel, Vec<Member>)> {
        let (members, record, positions, delivered) = futures_util::try_join!(
            self.members(channel_id),
            self.channel(channel_id),
            self.all_rows::<(String, Option<i64>)>(
                &self.statements.select_read_positions,
                (channel_id,),
                "read the read positions of a channel",
            ),
            self.all_rows::<(String, Option<i64>)>(
                &self.statements.select_delivered_positions,
                (channel_id,),
                "read the delivered positions of a channel",
            ),
        )?;
        if !members.iter().any(|(member, _)| member == user) {
            return Err(StoreError::NotFound);
        }
        let Some(record) = record else {
            return Err(inconsistent("membership refers to a missing channel"));
        };
        let positions: HashMap<String, Option<i64>> = positions.into_iter().collect();
        let delivered: HashMap<String, Option<i64>> = delivered.into_iter().collect();
        let members = members
            .into_iter()
            .map(|(user_id, role)| {
                let read_seq = seq_from_cql(positions.get(&user_id).copied().flatten())?;
                let delivered_seq = seq_from_cql(delivered.get(&user_id).copied().flatten())?;
                Ok(Member {
                    user_id,
                    role,
                    read_seq,
                    // Reading implies delivery, and the read position may
                    // have moved without a delivered write (an append, a
                    // new member's catch-up).
                    delivered_seq: delivered_seq.max(read_seq),
                })
            })
            .collect::<StoreResult<Vec<Member>>>()?;
        Ok((record.channel, members))
    }

    /// Returns every channel `user` is a member of, with its newest number
    /// and activity, in no particular order.
    ///
    /// NOTE: this reads the user's list rows, not the memberships. A list
    /// row left by an add and a remove that raced on two replicas names a
    /// channel the user is not in, until `list_channels` meets and removes
    /// it. Its activity row stops moving then, so resume replays nothing
    /// from it.
    pub(super) async fn user_channel_entries(&self, user: &str) -> StoreResult<Vec<ChannelEntry>> {
        let (memberships, activity) = futures_util::try_join!(
            self.all_rows::<(String,)>(
                &self.statements.select_user_channels,
                (user,),
                "read a user's channels",
            ),
            self.all_rows::<(String, Option<i64>, Option<i64>)>(
                &self.statements.select_activity,
                (user,),
                "read the activity of a user's channels",
            ),
        )?;
        let activity: HashMap<String, (Option<i64>, Option<i64>)> = activity
            .into_iter()
            .map(|(channel_id, last_seq, last_activity)| (channel_id, (last_seq, last_activity)))
            .collect();
        memberships
            .into_iter()
            .map(|(channel_id,)| {
                let (last_seq, last_activity) =
                    activity.get(&channel_id).copied().unwrap_or((None, None));
                Ok(ChannelEntry {
                    last_seq: seq_from_cql(last_seq)?,
                    last_activity: last_activity.unwrap_or(0),
                    channel_id,
                })
            })
            .collect()
    }
}
