//! The tables of a tenant keyspace, as versioned migrations.
//!
//! Each migration is additive (new tables, new columns) and safe to run
//! again, so an operator that stopped half-way simply runs it once more.
//! Applied versions are recorded in `schema_migrations`. The operator
//! applies migrations before it rolls out a runtime that needs them. A
//! runtime refuses to start on a keyspace older than [`REQUIRED_VERSION`]
//! and keeps working on a newer one, because newer migrations only add.

use scylla::client::session::Session;

/// Schema version this build reads and writes.
pub const REQUIRED_VERSION: i32 = 5;

/// Messages per partition of the `messages` table (see the module docs of
/// the store).
pub(super) const BUCKET_SIZE: u64 = 1_000;

/// One step of a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A statement that is idempotent by itself (`IF NOT EXISTS`).
    /// `{keyspace}` stands for the tenant keyspace.
    Cql(&'static str),
    /// Adds a column unless the table already has it. CQL has no
    /// `ADD IF NOT EXISTS` in every ScyllaDB version, so the runner reads
    /// `system_schema.columns` first.
    AddColumn {
        table: &'static str,
        column: &'static str,
        cql_type: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub steps: &'static [Step],
}

/// Every migration, oldest first. Versions are 1, 2, 3, ... without gaps.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "users, channels, members, messages, read positions and client ids",
        steps: &[
            Step::Cql(
                "CREATE TABLE IF NOT EXISTS {keyspace}.users (
                id text PRIMARY KEY,
                name text,
                metadata text,
                deleted boolean,
                tokens_not_before bigint,
                incarnation int,
                created_at bigint,
                updated_at bigint
            )",
            ),
            // `newest` is the JSON of the message numbered `last_seq`, written by
            // the same lightweight transaction that hands out the number.
            Step::Cql(
                "CREATE TABLE IF NOT EXISTS {keyspace}.channels (
                id text PRIMARY KEY,
                kind text,
                name text,
                subject text,
                created_by text,
                created_at bigint,
                last_seq bigint,
                last_activity bigint,
                newest text
            )",
            ),
            Step::Cql(
                "CREATE TABLE IF NOT EXISTS {keyspace}.members (
                channel_id text,
                user_id text,
                role text,
                joined_at bigint,
                PRIMARY KEY ((channel_id), user_id)
            )",
            ),
            Step::Cql(
                "CREATE TABLE IF NOT EXISTS {keyspace}.user_channels (
                user_id text,
                channel_id text,
                PRIMARY KEY ((user_id), channel_id)
            )",
            ),
            // Written with USING TIMESTAMP equal to last_seq, so the newest
            // position wins whatever order concurrent writes arrive in.
            Step::Cql(
                "CREATE TABLE IF NOT EXISTS {keyspace}.channel_activity (
                user_id text,
                channel_id text,
                last_seq bigint,
                last_activity bigint,
                PRIMARY KEY ((user_id), channel_id)
            )",
            ),
            // Written with USING TIMESTAMP equal to read_seq, for the same reason.
            Step::Cql(
                "CREATE TABLE IF NOT EXISTS {keyspace}.read_positions (
                channel_id text,
                user_id text,
                read_seq bigint,
                PRIMARY KEY ((channel_id), user_id)
            )",
            ),
            Step::Cql(
                "CREATE TABLE IF NOT EXISTS {keyspace}.messages (
                channel_id text,
                bucket bigint,
                seq bigint,
                sender_id text,
                sender_incarnation int,
                client_id text,
                content text,
                created_at bigint,
                PRIMARY KEY ((channel_id, bucket), seq)
            ) WITH CLUSTERING ORDER BY (seq DESC)",
            ),
            Step::Cql(
                "CREATE TABLE IF NOT EXISTS {keyspace}.client_ids (
                sender_id text,
                client_id text,
                channel_id text,
                seq bigint,
                content_hash blob,
                created_at bigint,
                PRIMARY KEY ((sender_id, client_id))
            )",
            ),
        ],
    },
    Migration {
        version: 2,
        description: "replies, mentions, edits, deletes, reactions and delivered positions",
        steps: MIGRATION_2_STEPS,
    },
    Migration {
        version: 3,
        description: "event log and webhook delivery state",
        steps: MIGRATION_3_STEPS,
    },
    Migration {
        version: 4,
        description: "bans, mutes, slow mode, reports, users' settings and once-marks",
        steps: MIGRATION_4_STEPS,
    },
    Migration {
        version: 5,
        description: "blocks between users",
        steps: MIGRATION_5_STEPS,
    },
];

const MIGRATION_2_STEPS: &[Step] = &[
    Step::AddColumn {
        table: "messages",
        column: "reply_to",
        cql_type: "bigint",
    },
    // Sorted user ids. Frozen, so that a write replaces the whole set in one
    // cell instead of leaving a collection tombstone.
    Step::AddColumn {
        table: "messages",
        column: "mentions",
        cql_type: "frozen<set<text>>",
    },
    Step::AddColumn {
        table: "messages",
        column: "edited_at",
        cql_type: "bigint",
    },
    Step::AddColumn {
        table: "messages",
        column: "deleted_at",
        cql_type: "bigint",
    },
    // Number of applied edits, null before the first one. Edits and deletes
    // are lightweight transactions conditioned on it.
    Step::AddColumn {
        table: "messages",
        column: "edit_count",
        cql_type: "int",
    },
    // One row per user and message with the user's reactions, so the
    // per-user limit is checked and written by one lightweight transaction.
    // The partition matches the `messages` bucket, so a page reads its
    // reactions with one range query per bucket.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.message_reactions (
            channel_id text,
            bucket bigint,
            seq bigint,
            user_id text,
            reactions frozen<set<text>>,
            updated_at bigint,
            PRIMARY KEY ((channel_id, bucket), seq, user_id)
        )",
    ),
    // One row per mention, so a member's unread mentions are a range count.
    // Written with USING TIMESTAMP equal to the message's edit count plus
    // one, so the newest edit's rows win in whatever order writes arrive.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.mentions (
            channel_id text,
            user_id text,
            seq bigint,
            PRIMARY KEY ((channel_id, user_id), seq)
        )",
    ),
    // Deleted sequence numbers, so unread counts subtract them with a range
    // count and the channel list finds the newest message left.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.deleted_messages (
            channel_id text,
            seq bigint,
            deleted_at bigint,
            PRIMARY KEY ((channel_id), seq)
        ) WITH CLUSTERING ORDER BY (seq DESC)",
    ),
    // Written with USING TIMESTAMP equal to delivered_seq, like read_positions.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.delivered_positions (
            channel_id text,
            user_id text,
            delivered_seq bigint,
            PRIMARY KEY ((channel_id), user_id)
        )",
    ),
];

/// Hours of event log per `events` partition (see `events.rs`). Fixed
/// forever: cursors and the bucket list depend on it.
pub(super) const EVENT_BUCKET_MICROS: i64 = 3_600 * 1_000_000;

const MIGRATION_3_STEPS: &[Step] = &[
    // One partition per hour of log time, so a reader at the head of the
    // log touches one or two partitions and retention drops whole
    // partitions. `at` is the event's position in microseconds, and `tag`
    // separates events at the same microsecond. Together they are the
    // cursor.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.events (
            bucket bigint,
            at bigint,
            tag text,
            kind text,
            channel_id text,
            created_at bigint,
            data text,
            PRIMARY KEY ((bucket), at, tag)
        ) WITH CLUSTERING ORDER BY (at ASC, tag ASC)",
    ),
    // The hours that have events, in one small partition (`log` is always
    // 0), so a reader whose cursor is days old skips the empty hours with
    // one read instead of one read per hour.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.event_buckets (
            log int,
            bucket bigint,
            PRIMARY KEY ((log), bucket)
        )",
    ),
    // The position of the newest purged event. Written with the position
    // as the write timestamp, so concurrent purges leave the furthest one.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.event_log_state (
            log int PRIMARY KEY,
            purged_at bigint,
            purged_tag text
        )",
    ),
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.webhook_endpoints (
            endpoint text PRIMARY KEY,
            holder text,
            lease_until bigint,
            cursor text
        )",
    ),
    // Clustered by the event's position, so letters list in event order.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.dead_letters (
            endpoint text,
            at bigint,
            tag text,
            letter text,
            PRIMARY KEY ((endpoint), at, tag)
        )",
    ),
];

const MIGRATION_4_STEPS: &[Step] = &[
    // One partition per user. `scope` is the channel id, or the empty
    // string for the whole tenant, and `kind` is `ban` or `mute`.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.restrictions (
            user_id text,
            scope text,
            kind text,
            until bigint,
            reason text,
            created_at bigint,
            PRIMARY KEY ((user_id), scope, kind)
        )",
    ),
    // Null for channels from before slow mode, which reads as off.
    Step::AddColumn {
        table: "channels",
        column: "slow_mode_seconds",
        cql_type: "int",
    },
    // Each member's newest send time per channel, for slow mode. Written
    // with USING TIMESTAMP equal to sent_at, so the newest send wins.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.last_sent (
            channel_id text,
            user_id text,
            sent_at bigint,
            PRIMARY KEY ((channel_id), user_id)
        )",
    ),
    // One row per report. `report` is the JSON of the report as filed.
    // Resolving changes only `status` and `resolution`.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.reports (
            id text PRIMARY KEY,
            report text,
            status text,
            resolution text
        )",
    ),
    // Report ids by listing (`all`, `open`, `resolved`), clustered by the
    // position that the id encodes, so the queue pages in filing order.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.report_index (
            listing text,
            at bigint,
            tag text,
            PRIMARY KEY ((listing), at, tag)
        )",
    ),
    // A reporter's open report per target, so a second report on the same
    // target finds the first. `report` is the report's JSON, from which
    // another filer finishes a filing that stopped half-way.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.report_claims (
            reporter text,
            target text,
            id text,
            report text,
            PRIMARY KEY ((reporter), target)
        )",
    ),
    // Clustered by name, so a prefix is one range read of the user's
    // partition. `value` is JSON.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.user_settings (
            user_id text,
            name text,
            value text,
            updated_at bigint,
            PRIMARY KEY ((user_id), name)
        )",
    ),
    // Written only by lightweight transactions conditioned on `marked_at`.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.once_marks (
            name text PRIMARY KEY,
            marked_at bigint
        )",
    ),
];

const MIGRATION_5_STEPS: &[Step] = &[
    // One partition per blocker, so the users a viewer blocks are one
    // read, sorted by the clustering order.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.blocks (
            blocker text,
            blocked text,
            created_at bigint,
            PRIMARY KEY ((blocker), blocked)
        )",
    ),
    // The same blocks keyed by the blocked user, so the members who block a
    // sender are one read. Written in one logged batch with `blocks`.
    Step::Cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.blocked_by (
            blocked text,
            blocker text,
            created_at bigint,
            PRIMARY KEY ((blocked), blocker)
        )",
    ),
];

const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations (
    version int PRIMARY KEY,
    description text,
    applied_at bigint
)";

/// Keyspaces that belong to ScyllaDB itself or to its tools.
const RESERVED_PREFIXES: &[&str] = &["system", "alternator", "cdc", "audit"];

/// The operator's own keyspace, with its record of keyspace owners.
const OPERATOR_KEYSPACE: &str = "parley_operator";

/// Error of checking or applying the schema.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    #[error("invalid keyspace name: {0}")]
    InvalidKeyspace(String),
    /// A statement failed; `step` names what it was doing.
    #[error("failed to {step} in keyspace {keyspace}")]
    Request {
        step: String,
        keyspace: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The keyspace has no schema, or an older one than this build needs.
    #[error(
        "keyspace {keyspace} has schema version {found}, but this runtime needs {REQUIRED_VERSION}; apply the migrations first (the operator does this before it rolls out a runtime)"
    )]
    TooOld { keyspace: String, found: i32 },
}

/// Checks that `name` can be a tenant keyspace: 1 to 48 lowercase letters,
/// digits and underscores, starting with a letter, and not one of
/// ScyllaDB's own keyspaces. Returns the reason when it cannot.
pub fn check_keyspace_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|first| first.is_ascii_lowercase());
    let rest_valid = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !starts_with_letter || !rest_valid || name.len() > 48 {
        return Err(format!(
            "keyspace {name:?} must be 1 to 48 lowercase letters, digits or '_', starting with a letter"
        ));
    }
    if name == OPERATOR_KEYSPACE {
        return Err(format!(
            "keyspace {name:?} is reserved for the Parley operator's own tables"
        ));
    }
    if let Some(prefix) = RESERVED_PREFIXES
        .iter()
        .find(|prefix| name.starts_with(**prefix))
    {
        return Err(format!(
            "keyspace {name:?} is reserved: names starting with {prefix:?} belong to ScyllaDB"
        ));
    }
    Ok(())
}

fn in_keyspace(statement: &str, keyspace: &str) -> String {
    statement.replace("{keyspace}", keyspace)
}

fn request_error<E>(step: impl Into<String>, keyspace: &str) -> impl FnOnce(E) -> SchemaError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let step = step.into();
    let keyspace = keyspace.to_owned();
    move |source| SchemaError::Request {
        step,
        keyspace,
        source: Box::new(source),
    }
}

/// Applies every migration not yet recorded in `keyspace`, oldest first, and
/// returns the versions it applied. The keyspace must exist.
pub async fn apply_migrations(
    session: &Session,
    keyspace: &str,
    now: i64,
) -> Result<Vec<i32>, SchemaError> {
    check_keyspace_name(keyspace).map_err(SchemaError::InvalidKeyspace)?;
    session
        .query_unpaged(in_keyspace(CREATE_VERSION_TABLE, keyspace), ())
        .await
        .map_err(request_error("create schema_migrations", keyspace))?;

    let recorded = recorded_versions(session, keyspace).await?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS
        .iter()
        .filter(|migration| !recorded.contains(&migration.version))
    {
        for step in migration.steps {
            run_step(session, keyspace, migration.version, *step).await?;
        }
        // DDL changes reach the other nodes asynchronously. The next
        // migration, and the runtime, must see these tables everywhere.
        session
            .await_schema_agreement()
            .await
            .map_err(request_error("wait for schema agreement", keyspace))?;
        session
            .query_unpaged(
                in_keyspace(
                    "INSERT INTO {keyspace}.schema_migrations (version, description, applied_at) \
                     VALUES (?, ?, ?)",
                    keyspace,
                ),
                (migration.version, migration.description, now),
            )
            .await
            .map_err(request_error(
                format!("record migration {}", migration.version),
                keyspace,
            ))?;
        applied.push(migration.version);
    }
    Ok(applied)
}

async fn run_step(
    session: &Session,
    keyspace: &str,
    version: i32,
    step: Step,
) -> Result<(), SchemaError> {
    match step {
        Step::Cql(statement) => {
            session
                .query_unpaged(in_keyspace(statement, keyspace), ())
                .await
                .map_err(request_error(
                    format!("run a statement of migration {version}"),
                    keyspace,
                ))?;
        }
        Step::AddColumn {
            table,
            column,
            cql_type,
        } => {
            let existing = session
                .query_unpaged(
                    "SELECT column_name FROM system_schema.columns \
                     WHERE keyspace_name = ? AND table_name = ? AND column_name = ?",
                    (keyspace, table, column),
                )
                .await
                .map_err(request_error(
                    format!("look up column {table}.{column}"),
                    keyspace,
                ))?
                .into_rows_result()
                .map_err(request_error(
                    format!("look up column {table}.{column}"),
                    keyspace,
                ))?
                .rows_num();
            if existing == 0 {
                let statement = format!("ALTER TABLE {keyspace}.{table} ADD {column} {cql_type}");
                session
                    .query_unpaged(statement, ())
                    .await
                    .map_err(request_error(
                        format!("add column {table}.{column}"),
                        keyspace,
                    ))?;
            }
        }
    }
    Ok(())
}

async fn recorded_versions(session: &Session, keyspace: &str) -> Result<Vec<i32>, SchemaError> {
    let step = "read schema_migrations";
    let result = session
        .query_unpaged(
            in_keyspace("SELECT version FROM {keyspace}.schema_migrations", keyspace),
            (),
        )
        .await
        .map_err(request_error(step, keyspace))?
        .into_rows_result()
        .map_err(request_error(step, keyspace))?;
    let versions = result
        .rows::<(i32,)>()
        .map_err(request_error(step, keyspace))?
        .map(|row| row.map(|(version,)| version))
        .collect::<Result<Vec<i32>, _>>()
        .map_err(request_error(step, keyspace))?;
    Ok(versions)
}

/// Returns the schema version of `keyspace`: the highest version up to
/// which every migration is recorded. Fails with `TooOld` when that is
/// below [`REQUIRED_VERSION`].
pub async fn check_schema(session: &Session, keyspace: &str) -> Result<i32, SchemaError> {
    check_keyspace_name(keyspace).map_err(SchemaError::InvalidKeyspace)?;
    let exists = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables \
             WHERE keyspace_name = ? AND table_name = 'schema_migrations'",
            (keyspace,),
        )
        .await
        .map_err(request_error("look up schema_migrations", keyspace))?
        .into_rows_result()
        .map_err(request_error("look up schema_migrations", keyspace))?
        .rows_num();
    let found = if exists == 0 {
        0
    } else {
        contiguous_version(&recorded_versions(session, keyspace).await?)
    };
    if found < REQUIRED_VERSION {
        return Err(SchemaError::TooOld {
            keyspace: keyspace.to_owned(),
            found,
        });
    }
    Ok(found)
}

/// Returns the highest `n` such that versions 1 to `n` are all in
/// `recorded`.
fn contiguous_version(recorded: &[i32]) -> i32 {
    let mut version = 0;
    while recorded.contains(&(version + 1)) {
        version += 1;
    }
    version
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_numbered_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i32 + 1);
            assert!(!migration.steps.is_empty());
        }
        assert_eq!(MIGRATIONS.last().unwrap().version, REQUIRED_VERSION);
    }

    #[test]
    fn migration_statements_are_idempotent() {
        for migration in MIGRATIONS {
            for step in migration.steps {
                if let Step::Cql(statement) = step {
                    assert!(
                        statement.contains("IF NOT EXISTS {keyspace}."),
                        "migration {} has a statement that is not safe to rerun: {statement}",
                        migration.version
                    );
                }
            }
        }
    }

    #[test]
    fn migration_1_is_unchanged() {
        let first = &MIGRATIONS[0];
        assert_eq!(first.version, 1);
        assert_eq!(first.steps.len(), 8);
        assert!(first.steps.iter().all(|step| matches!(step, Step::Cql(_))));
    }

    #[test]
    fn migration_2_only_adds() {
        let second = &MIGRATIONS[1];
        assert_eq!(second.version, 2);
        for step in second.steps {
            if let Step::Cql(statement) = step {
                assert!(
                    statement
                        .trim_start()
                        .starts_with("CREATE TABLE IF NOT EXISTS"),
                    "{statement}"
                );
            }
        }
        let added: Vec<&str> = second
            .steps
            .iter()
            .filter_map(|step| match step {
                Step::AddColumn { table, column, .. } => {
                    assert_eq!(*table, "messages");
                    Some(*column)
                }
                Step::Cql(_) => None,
            })
            .collect();
        assert_eq!(
            added,
            [
                "reply_to",
                "mentions",
                "edited_at",
                "deleted_at",
                "edit_count"
            ]
        );
    }

    #[test]
    fn migration_3_only_creates_tables() {
        let third = &MIGRATIONS[2];
        assert_eq!(third.version, 3);
        for step in third.steps {
            let Step::Cql(statement) = step else {
                panic!("migration 3 only creates tables: {step:?}");
            };
            assert!(
                statement
                    .trim_start()
                    .starts_with("CREATE TABLE IF NOT EXISTS"),
                "{statement}"
            );
        }
    }

    #[test]
    fn migration_4_only_adds() {
        let fourth = &MIGRATIONS[3];
        assert_eq!(fourth.version, 4);
        let mut added = Vec::new();
        for step in fourth.steps {
            match step {
                Step::Cql(statement) => assert!(
                    statement
                        .trim_start()
                        .starts_with("CREATE TABLE IF NOT EXISTS"),
                    "{statement}"
                ),
                Step::AddColumn { table, column, .. } => added.push((*table, *column)),
            }
        }
        assert_eq!(added, [("channels", "slow_mode_seconds")]);
    }

    #[test]
    fn migration_5_creates_block_tables() {
        let fifth = &MIGRATIONS[4];
        assert_eq!(fifth.version, 5);
        let mut tables = Vec::new();
        for step in fifth.steps {
            let Step::Cql(statement) = step else {
                panic!("migration 5 only creates tables: {step:?}");
            };
            let name = statement
                .trim_start()
                .strip_prefix("CREATE TABLE IF NOT EXISTS {keyspace}.")
                .and_then(|rest| rest.split_whitespace().next());
            tables.push(name);
        }
        assert_eq!(tables, [Some("blocks"), Some("blocked_by")]);
    }

    #[test]
    fn keyspace_names() {
        for valid in ["acme_chat", "a", "tenant_42", &"a".repeat(48)] {
            assert_eq!(check_keyspace_name(valid), Ok(()), "{valid}");
        }
        for invalid in [
            "",
            "1acme",
            "Acme",
            "acme-chat",
            "acme chat",
            "ä",
            &"a".repeat(49),
        ] {
            assert!(check_keyspace_name(invalid).is_err(), "{invalid:?}");
        }
        for reserved in [
            "system",
            "system_auth",
            "system_schema",
            "alternator_t",
            "cdc_x",
            "parley_operator",
        ] {
            let error = check_keyspace_name(reserved).unwrap_err();
            assert!(error.contains("reserved"), "{reserved}: {error}");
        }
    }

    #[test]
    fn contiguous_version_stops_at_gap() {
        assert_eq!(contiguous_version(&[]), 0);
        assert_eq!(contiguous_version(&[1]), 1);
        assert_eq!(contiguous_version(&[2, 1, 3]), 3);
        assert_eq!(contiguous_version(&[1, 3]), 1);
        assert_eq!(contiguous_version(&[2]), 0);
    }

    #[test]
    fn keyspace_placeholder_is_replaced() {
        let statement = in_keyspace(CREATE_VERSION_TABLE, "acme_chat");
        assert!(statement.contains("acme_chat.schema_migrations"));
        assert!(!statement.contains('{'));
    }
}
