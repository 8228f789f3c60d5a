//! Storage of one tenant's users, channels, memberships and messages.
//!
//! [`Store`] is what the rest of the runtime sees. Each tenant has its own
//! store value, opened on its own file, so a query can only ever reach that
//! tenant's rows: separation comes from construction, never from a
//! `WHERE tenant = ?` filter that a future query could forget.
//!
//! The embedded implementation is [`sqlite::SqliteStore`]. The contract below
//! is written so that a distributed store (ScyllaDB) can satisfy it too:
//! every method is async, and every guarantee is stated per method.

#[cfg(test)]
pub(crate) mod conformance;
pub mod events;
pub(crate) mod keys;
pub mod reports;
pub mod scylla;
pub mod sqlite;

pub use events::{DeadLetter, Event, EventPage, ModerationRecord, NewEvent, WebhookClaim};
pub use reports::{
    NewReport, Report, ReportChange, ReportStatus, ReportTarget, Resolution, ResolutionOutcome,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. Used for display and retention only:
/// ordering always comes from per-channel sequence numbers.
pub type Millis = i64;

/// A user profile as the tenant's backend wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    /// `None` once the user is deleted.
    pub name: Option<String>,
    /// Free-form JSON object from the tenant's backend; `null` once deleted.
    pub metadata: serde_json::Value,
    pub deleted: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// User state that token checks depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserAuthState {
    pub deleted: bool,
    /// End of the user's ban from the whole tenant, when one is in force;
    /// `Millis::MAX` for a ban until lifted.
    pub banned_until: Option<Millis>,
    /// Tokens issued (`iat`, in seconds) before this instant are rejected.
    /// Set when a deleted user id is created again, so the old user's
    /// tokens never come back to life.
    pub tokens_not_before: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Direct,
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Created the group; may add and remove members.
    Owner,
    Member,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub id: String,
    pub kind: ChannelKind,
    /// Group name; `None` for direct channels.
    pub name: Option<String>,
    /// Subject of a direct channel (a listing id, an order id).
    pub subject: Option<String>,
    pub created_by: String,
    pub created_at: Millis,
    /// Sequence number of the newest message, 0 when there is none.
    pub last_seq: u64,
    /// Time of the newest message, or of creation when there is none.
    pub last_activity: Millis,
    /// Minimum time between two messages of one member, in seconds; 0 when
    /// slow mode is off. The group's owner is exempt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slow_mode_seconds: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Maximum slow mode interval: one day.
pub const MAX_SLOW_MODE_SECONDS: u32 = 86_400;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: String,
    pub role: MemberRole,
    pub read_seq: u64,
    /// Highest sequence number that reached at least one of the member's
    /// devices. Never below `read_seq`.
    pub delivered_seq: u64,
}

/// One entry of a user's channel list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelSummary {
    pub channel: Channel,
    /// The newest message that is not deleted, or `None` when there is none.
    pub last_message: Option<Message>,
    /// Messages after `read_seq` that are not deleted. The member's own
    /// messages never count, because sending marks the channel read.
    pub unread: u64,
    /// Unread messages (as counted in `unread`) that mention the member.
    pub unread_mentions: u64,
    pub read_seq: u64,
}

/// Message content. The JSON form is `{"kind": "text", "text": ...}`,
/// `{"kind": "location", "latitude": ..., "longitude": ..., "label": ...}`,
/// `{"kind": "custom", "data": {...}}`, or one of the kinds below with their
/// fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Content {
    Text {
        text: String,
    },
    Location {
        latitude: f64,
        longitude: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    Custom {
        data: serde_json::Value,
    },
    /// A file or image stored elsewhere, referenced by URL. `size` is in
    /// bytes; `width`, `height` and `thumbnail_url` are given when known.
    Attachment {
        url: String,
        content_type: String,
        size: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thumbnail_url: Option<String>,
    },
    /// A quick reply made from a template. Clients send `template_id` and
    /// `values`; the server renders the template into `text`, so clients
    /// that do not know the template still show the message.
    Template {
        template_id: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        values: BTreeMap<String, String>,
        #[serde(default)]
        text: String,
    },
    /// A message that an extension sent on a user's behalf, such as an away
    /// message. Clients cannot send this kind.
    Automated {
        extension: String,
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub channel_id: String,
    /// Per-channel sequence number: 1, 2, 3 ... with no gaps, assigned by
    /// the store inside the write that stores the message.
    pub seq: u64,
    pub sender_id: String,
    /// True when the sender was deleted after writing this message.
    #[serde(default)]
    pub sender_deleted: bool,
    pub client_id: String,
    /// `None` once the message is deleted. A deleted message keeps its
    /// sequence number, sender and times, and loses its content, mentions
    /// and reactions.
    pub content: Option<Content>,
    /// Sequence number of the message of the same channel this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// Mentioned user ids, each a member when the message was written or
    /// last edited, sorted and without repeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// Number of users per reaction.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reactions: BTreeMap<String, u64>,
    /// Reactions of the user who read the message, sorted. Empty in live
    /// events, which every member shares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub own_reactions: Vec<String>,
    pub created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Millis>,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub channel_id: String,
    pub sender_id: String,
    /// Chosen by the client, unique per sender. Retries with the same id
    /// return the stored message instead of storing a second one.
    pub client_id: String,
    pub content: Content,
    /// The content as the sender submitted it, before a template was
    /// rendered and moderation masked or rewrote it. `None` means `content`.
    /// Retries are compared on this, so a retry finds the stored message
    /// even when moderation would now change it differently.
    pub submitted: Option<Content>,
    /// A message of the same channel, which must exist and not be deleted.
    pub reply_to: Option<u64>,
    /// User ids to mention, sorted and without repeats. Each must be a
    /// member of the channel.
    pub mentions: Vec<String>,
    pub created_at: Millis,
    /// Moderation decisions on the message, written to the event log with
    /// it.
    pub moderation: Vec<ModerationRecord>,
}

impl NewMessage {
    /// Returns the hash that distinguishes a retry of this send from
    /// another send with the same client id.
    pub(crate) fn request_hash(&self) -> Result<[u8; 32], serde_json::Error> {
        let content = self.submitted.as_ref().unwrap_or(&self.content);
        keys::content_hash(&self.channel_id, content, self.reply_to, &self.mentions)
    }
}

/// A change of a message's content by its sender.
#[derive(Debug, Clone)]
pub struct MessageEdit {
    pub channel_id: String,
    pub seq: u64,
    pub editor: String,
    pub content: Content,
    /// New mentions, sorted and without repeats, or `None` to keep the
    /// current ones.
    pub mentions: Option<Vec<String>>,
    pub edited_at: Millis,
    /// Moderation decisions on the new content, written to the event log
    /// with the edit.
    pub moderation: Vec<ModerationRecord>,
}

/// Result of an edit, a delete or a reaction change.
#[derive(Debug, Clone)]
pub struct MessageChange {
    /// The message after the change, without `own_reactions`.
    pub message: Message,
    /// Member user ids at the moment of the write, for fan-out.
    pub members: Vec<String>,
    /// False when the request changed nothing (a message deleted before,
    /// a reaction the user already had or never had).
    pub changed: bool,
}

/// The party that deletes a message, which decides what it may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleter<'a> {
    /// A member, who may delete only its own messages.
    Member(&'a str),
    /// The tenant's backend through the server API, which may delete any
    /// message.
    Server,
}

/// Maximum number of different reactions one user may put on one message.
pub const MAX_REACTIONS_PER_USER: usize = 20;

/// Result of [`Store::append_message`].
#[derive(Debug, Clone)]
pub struct Appended {
    pub message: Message,
    /// True when the client id was seen before with the same content and
    /// the stored message is returned unchanged.
    pub duplicate: bool,
    /// Member user ids at the moment of the write, for fan-out, without
    /// the members who blocked the sender.
    pub members: Vec<String>,
}

/// A ban or a mute of one user, from the whole tenant or one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    pub user_id: String,
    /// The channel, or `None` for the whole tenant.
    pub channel_id: Option<String>,
    pub kind: RestrictionKind,
    /// When the restriction ends, or `None` for one that lasts until it is
    /// lifted.
    pub until: Option<Millis>,
    pub reason: Option<String>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestrictionKind {
    /// From the tenant: no sockets, no requests. From a channel: removed,
    /// and not added again while the ban lasts.
    Ban,
    /// The user reads but cannot send, in the tenant or in the channel.
    Mute,
}

impl RestrictionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RestrictionKind::Ban => "ban",
            RestrictionKind::Mute => "mute",
        }
    }
}

/// Result of [`Store::mark_read`] and [`Store::mark_delivered`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positions {
    pub read_seq: u64,
    pub delivered_seq: u64,
    /// False when the call moved neither position.
    pub changed: bool,
    /// Member user ids, for fan-out.
    pub members: Vec<String>,
}

/// Result of a membership change.
#[derive(Debug, Clone)]
pub struct MembershipChange {
    pub channel: Channel,
    /// Members after the change.
    pub members: Vec<String>,
    /// False when the change was a no-op (already a member, already gone).
    pub changed: bool,
}

/// Part of a channel's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The newest `limit` messages.
    Latest { limit: u32 },
    /// Up to `limit` messages with `seq < before`, newest last.
    Before { before: u64, limit: u32 },
    /// Up to `limit` messages with `seq > after`, oldest first.
    After { after: u64, limit: u32 },
}

/// Errors of every store operation. Callers map them to client-visible
/// codes; the `Unavailable` cause goes to the log only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The channel or user does not exist, or the caller is not a member.
    /// Both cases are one variant so callers cannot leak which one it was.
    #[error("not found")]
    NotFound,
    /// The caller is a member but lacks the right (for example removing
    /// someone from a group it does not own).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A client message id was reused with different content.
    #[error("client message id reused with different content")]
    ClientIdConflict,
    /// The request contradicts stored state (for example adding a member to
    /// a direct channel).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// A ban or mute in force stops the request.
    #[error("the user is restricted")]
    Restricted(Box<Restriction>),
    /// An event log cursor points before the oldest event still kept.
    #[error("cursor is older than the retained event log")]
    CursorExpired,
    /// The channel's slow mode stops the member's message; the member may
    /// send again after `retry_after_ms` milliseconds.
    #[error("slow mode: wait {retry_after_ms} ms")]
    SlowMode { retry_after_ms: u64 },
    /// The database failed or is being shut down; the write did not happen.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Durable storage for one tenant.
///
/// Every write method returns only after the write is durable (flushed to
/// disk with fsync or fdatasync), so a returned `Ok` survives `kill -9` and
/// a power cut. Implementations must stay correct when several runtime
/// processes use the same data at once.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or updates a user. Upserting a deleted user id creates a new
    /// profile and sets `tokens_not_before` to `now` in seconds. The server
    /// API refuses that case, because the old user's memberships and direct
    /// channels would pass to the new profile.
    async fn upsert_user(
        &self,
        id: &str,
        name: &str,
        metadata: serde_json::Value,
        now: Millis,
    ) -> StoreResult<User>;

    /// Erases a user's profile (name and metadata) and marks it deleted.
    /// Messages stay and show `sender_deleted`. Memberships stay, so history
    /// of group channels remains readable by the others.
    /// Returns `NotFound` when the user never existed or is already deleted.
    async fn delete_user(&self, id: &str, now: Millis) -> StoreResult<()>;

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>>;

    /// Rejects the user's tokens issued (`iat`) before a new bound, in
    /// seconds since the epoch, and returns the bound: `at_least`, or one
    /// second past the previous bound when that is later. Each call thus
    /// rejects every token issued so far, also those minted with the
    /// previous bound as their `iat`. Returns `NotFound` when the user does
    /// not exist or is deleted.
    async fn revoke_tokens(&self, id: &str, at_least: i64, now: Millis) -> StoreResult<i64>;

    /// `None` when the user never existed.
    async fn user_auth_state(&self, id: &str) -> StoreResult<Option<UserAuthState>>;

    /// Returns the direct channel of `a` and `b` about `subject`, creating it
    /// on first use. The same unordered pair and subject always give the same
    /// channel, also under concurrent calls from several processes.
    /// Both users must exist and not be deleted (`NotFound` otherwise), and
    /// `a != b` (`Invalid` otherwise).
    async fn open_direct(
        &self,
        a: &str,
        b: &str,
        subject: Option<&str>,
        now: Millis,
    ) -> StoreResult<(Channel, Vec<String>)>;

    /// Creates a group owned by `creator` with `members` (creator included
    /// whether listed or not). Every member must exist and not be deleted.
    async fn create_group(
        &self,
        creator: &str,
        name: &str,
        members: &[String],
        now: Millis,
    ) -> StoreResult<(Channel, Vec<String>)>;

    /// Adds `user` to a group. Only the owner may add (`Forbidden`); `actor`
    /// must be a member (`NotFound` otherwise); direct channels give
    /// `Invalid`; `user` must exist and not be deleted. The new member starts
    /// with `read_seq = last_seq`, so earlier messages do not count as unread.
    async fn add_member(
        &self,
        channel_id: &str,
        actor: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<MembershipChange>;

    /// Removes `user` from a group. The owner may remove anyone but itself;
    /// any member may remove itself. Direct channels give `Invalid`.
    async fn remove_member(
        &self,
        channel_id: &str,
        actor: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<MembershipChange>;

    /// Returns the channel and its members if `user` is a member (`NotFound`
    /// otherwise, also for a channel that does not exist).
    async fn channel_for_member(
        &self,
        channel_id: &str,
        user: &str,
    ) -> StoreResult<(Channel, Vec<Member>)>;

    /// Returns the channel's `last_activity` as `user`'s channel list shows
    /// it, which leaves out messages of users `user` blocks. The channel
    /// must exist (`NotFound`).
    async fn activity_for(&self, channel_id: &str, user: &str) -> StoreResult<Millis>;

    /// Returns the member user ids of a channel, or `NotFound`.
    async fn member_ids(&self, channel_id: &str) -> StoreResult<Vec<String>>;

    /// Every channel of `user` with its newest sequence number, in no
    /// particular order. One indexed read whatever the number of channels,
    /// because every new socket calls it.
    async fn channel_positions(&self, user: &str) -> StoreResult<Vec<(String, u64)>>;

    /// Channels of `user`, most recent activity first, at most `limit`.
    /// `before` continues a previous page: `(last_activity, channel_id)` of
    /// its last entry.
    ///
    /// NOTE: the cursor is keyed on `last_activity`, which changes, so a
    /// channel that gets a message while a client pages can move to a page
    /// the client already read and be missed or shown twice.
    async fn list_channels(
        &self,
        user: &str,
        before: Option<(Millis, String)>,
        limit: u32,
    ) -> StoreResult<Vec<ChannelSummary>>;

    /// Stores a message with the next sequence number of its channel.
    ///
    /// The sender must be a member and not deleted (`NotFound` otherwise,
    /// also for a retry after the sender left the channel). When the sender
    /// already used `client_id`, returns the stored message with
    /// `duplicate: true` if the channel, content, reply and mentions are the
    /// same, and `ClientIdConflict` otherwise; nothing new is stored either
    /// way. A `reply_to` that names no message of the channel, or a deleted
    /// one, and a mention of a user who is not a member give `Invalid`.
    /// Sending also marks the channel read and delivered up to the new
    /// message for the sender, except for an `automated` message, which an
    /// extension sent on the sender's behalf.
    async fn append_message(&self, message: NewMessage) -> StoreResult<Appended>;

    /// Returns what [`Store::append_message`] returns for a retry when the
    /// sender already used the message's client id: the stored message, or
    /// `ClientIdConflict`. Returns `None`, storing nothing, when the client
    /// id is unused. A send that another process is storing at that moment
    /// may not be found yet.
    async fn find_retry(&self, message: &NewMessage) -> StoreResult<Option<Appended>>;

    /// Replaces the content of a message, and its mentions when the edit
    /// has some, and sets `edited_at`. Only the sender may edit
    /// (`Forbidden`). The editor must be a member, and the message must
    /// exist (`NotFound` otherwise). A deleted message gives `Invalid`, and
    /// so does a mention of a user who is not a member.
    async fn edit_message(&self, edit: MessageEdit) -> StoreResult<MessageChange>;

    /// Erases a message's content, mentions and reactions, and sets
    /// `deleted_at`. The sequence number stays taken, so clients see no gap.
    /// A member may delete only its own messages (`Forbidden`) and must be a
    /// member (`NotFound`). Deleting a deleted message changes nothing and
    /// returns it with `changed: false`.
    async fn delete_message(
        &self,
        channel_id: &str,
        seq: u64,
        deleter: Deleter<'_>,
        now: Millis,
    ) -> StoreResult<MessageChange>;

    /// Adds (`add`) or removes one reaction of `user` to a message. The user
    /// must be a member (`NotFound`). A deleted message gives `Invalid`, and
    /// so does a new reaction past [`MAX_REACTIONS_PER_USER`] of the user on
    /// that message. Adding a reaction the user has, or removing one it does
    /// not have, returns `changed: false`.
    async fn react(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
        reaction: &str,
        add: bool,
        now: Millis,
    ) -> StoreResult<MessageChange>;

    /// Users per reaction of a message, each list sorted, for a member
    /// (`NotFound` otherwise, or when the message does not exist).
    async fn reaction_users(
        &self,
        channel_id: &str,
        seq: u64,
        user: &str,
    ) -> StoreResult<BTreeMap<String, Vec<String>>>;

    /// Reads one message for a member, with `own_reactions` of `user`.
    /// Returns `NotFound` for non-members and for a sequence number that
    /// was never assigned.
    async fn message(&self, channel_id: &str, seq: u64, user: &str) -> StoreResult<Message>;

    /// Reads a page of history for a member (`NotFound` for non-members),
    /// with `own_reactions` of `user`. Deleted messages are included, so
    /// sequence numbers have no gaps. Messages are always returned oldest
    /// first.
    async fn history(&self, channel_id: &str, user: &str, page: Page) -> StoreResult<Vec<Message>>;

    /// Messages with `after < seq <= up_to`, oldest first, with
    /// `own_reactions` of `viewer`, without a membership check (the caller
    /// checked it). Used for resume.
    async fn messages_between(
        &self,
        channel_id: &str,
        viewer: &str,
        after: u64,
        up_to: u64,
    ) -> StoreResult<Vec<Message>>;

    /// Moves `user`'s read position forward to `seq`, capped at the
    /// channel's `last_seq`; never moves it back. The delivered position
    /// moves along, since a read message reached a device.
    async fn mark_read(&self, channel_id: &str, user: &str, seq: u64) -> StoreResult<Positions>;

    /// Moves `user`'s delivered position forward to `seq`, capped at the
    /// channel's `last_seq`; never moves it back.
    async fn mark_delivered(
        &self,
        channel_id: &str,
        user: &str,
        seq: u64,
    ) -> StoreResult<Positions>;

    /// Forgets client message ids recorded before `older_than`.
    async fn purge_client_ids(&self, older_than: Millis) -> StoreResult<u64>;

    /// Appends events that go with no other change, such as the decision
    /// of a moderation rule that blocked a message.
    async fn append_events(&self, events: Vec<NewEvent>) -> StoreResult<()>;

    /// Returns up to `limit` events of the log, oldest first: those after
    /// `after`, or from the oldest event kept when `after` is `None`. Fails
    /// with `CursorExpired` when events after `after` were already purged,
    /// and with `Invalid` for a cursor this store did not issue.
    async fn events(&self, after: Option<&str>, limit: u32) -> StoreResult<EventPage>;

    /// Deletes events created before `older_than`. Returns how many.
    async fn purge_events(&self, older_than: Millis) -> StoreResult<u64>;

    /// Bans or mutes a user, replacing the same kind of restriction in the
    /// same scope. A channel ban also removes the user from the channel;
    /// the result reports whether it did, with the remaining members.
    async fn restrict(&self, restriction: Restriction) -> StoreResult<Option<MembershipChange>>;

    /// Lifts a ban or mute. Returns whether one was in place.
    async fn lift_restriction(
        &self,
        user_id: &str,
        channel_id: Option<&str>,
        kind: RestrictionKind,
        now: Millis,
    ) -> StoreResult<bool>;

    /// Returns the user's restrictions in force at `now`.
    async fn restrictions(&self, user_id: &str, now: Millis) -> StoreResult<Vec<Restriction>>;

    /// Makes `blocker` block `blocked`, or stop blocking when `block` is
    /// false. A block stops new direct channels between the two, and
    /// messages of `blocked` reaching `blocker`. Returns whether anything
    /// changed.
    async fn set_block(
        &self,
        blocker: &str,
        blocked: &str,
        block: bool,
        now: Millis,
    ) -> StoreResult<bool>;

    /// Returns the users `blocker` blocks, sorted.
    async fn blocked_users(&self, blocker: &str) -> StoreResult<Vec<String>>;

    /// Returns the users who block `blocked`, sorted.
    async fn blockers(&self, blocked: &str) -> StoreResult<Vec<String>>;

    /// Sets the channel's slow mode, 0 to turn it off. `actor` is the
    /// member who sets it, who must be the group's owner (`Forbidden`
    /// otherwise, `NotFound` for non-members), or `None` for the server API.
    /// Direct channels give `Invalid`. Returns the channel and whether the
    /// setting changed.
    async fn set_slow_mode(
        &self,
        channel_id: &str,
        actor: Option<&str>,
        seconds: u32,
        now: Millis,
    ) -> StoreResult<(Channel, bool)>;

    /// Files a report. A message report needs the reporter to be a member
    /// of the channel and the message to exist (`NotFound` otherwise), and
    /// keeps a copy of its content. A user report needs the user to exist.
    /// A reporter who already has an open report on the same target gets
    /// that report back with `changed: false`.
    async fn file_report(&self, report: NewReport) -> StoreResult<ReportChange>;

    /// Returns up to `limit` reports with `status` (any when `None`),
    /// oldest first, after the report with id `after`.
    async fn reports(
        &self,
        status: Option<ReportStatus>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Report>>;

    async fn report(&self, id: &str) -> StoreResult<Option<Report>>;

    /// Resolves an open report (`NotFound` for an unknown id). A resolved
    /// report is returned unchanged with `changed: false`.
    async fn resolve_report(&self, id: &str, resolution: Resolution) -> StoreResult<ReportChange>;

    /// Stores `value` as the user's setting `key`, or removes the setting
    /// when `value` is `None`. The user must exist and not be deleted
    /// (`NotFound`). Returns whether anything changed.
    async fn put_user_setting(
        &self,
        user_id: &str,
        key: &str,
        value: Option<serde_json::Value>,
        now: Millis,
    ) -> StoreResult<bool>;

    /// Returns the user's settings whose keys start with `prefix`, sorted
    /// by key.
    async fn user_settings(
        &self,
        user_id: &str,
        prefix: &str,
    ) -> StoreResult<Vec<(String, serde_json::Value)>>;

    /// Records that `key` happened at `now`, unless it was last recorded
    /// less than `period_ms` before. Returns whether it recorded, so of
    /// several processes racing on one key within a period exactly one
    /// gets `true`.
    async fn mark_once(&self, key: &str, now: Millis, period_ms: i64) -> StoreResult<bool>;

    /// Returns the cursor of the newest event, from which a consumer that
    /// wants only later events starts.
    async fn event_log_end(&self) -> StoreResult<String>;

    /// Makes `holder` the one process that delivers to webhook `endpoint`
    /// until `lease_until`, unless another holder's lease runs past `now`.
    /// Returns the endpoint's saved state when the claim succeeded.
    async fn claim_webhook(
        &self,
        endpoint: &str,
        holder: &str,
        now: Millis,
        lease_until: Millis,
    ) -> StoreResult<Option<WebhookClaim>>;

    /// Saves the cursor of the last event handled for `endpoint` and
    /// extends `holder`'s lease. Returns false, saving nothing, when
    /// `holder` no longer holds the endpoint.
    async fn save_webhook_cursor(
        &self,
        endpoint: &str,
        holder: &str,
        cursor: &str,
        lease_until: Millis,
    ) -> StoreResult<bool>;

    /// Keeps an event that `endpoint` did not accept, replacing an earlier
    /// letter of the same event.
    async fn add_dead_letter(&self, endpoint: &str, letter: DeadLetter) -> StoreResult<()>;

    /// Returns up to `limit` dead letters of `endpoint`, oldest event first.
    async fn dead_letters(&self, endpoint: &str, limit: u32) -> StoreResult<Vec<DeadLetter>>;

    /// Returns the dead letter of event `event_id`, if `endpoint` has one.
    async fn dead_letter(&self, endpoint: &str, event_id: &str) -> StoreResult<Option<DeadLetter>>;

    /// Removes the dead letter of event `event_id` and returns it.
    async fn remove_dead_letter(
        &self,
        endpoint: &str,
        event_id: &str,
    ) -> StoreResult<Option<DeadLetter>>;

    /// Finishes queued writes and flushes everything to disk. Later calls
    /// return `Unavailable`.
    async fn close(&self) -> StoreResult<()>;

    /// Read operations started since the store opened, for metrics.
    fn reads_started(&self) -> u64;

    /// Returns whether the store can serve requests now, for readiness
    /// probes. It must return at once without a request, because probes
    /// time out fast. The embedded store is ready while it is open.
    fn is_ready(&self) -> bool {
        true
    }
}
