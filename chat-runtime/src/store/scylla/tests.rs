//! Tests against a real ScyllaDB node. They run when `PARLEY_SCYLLA_NODES`
//! lists contact points (`host:port`, comma-separated) and pass without
//! doing anything otherwise. `PARLEY_SCYLLA_DATACENTER` names the node's
//! datacenter (`datacenter1`, ScyllaDB's default, when unset). Each test
//! gets keyspaces of its own, dropped when it passes.

use std::sync::{Arc, Mutex};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

use super::*;
use crate::store::conformance::{Fixture, store_conformance_tests};

const NODES_VARIABLE: &str = "PARLEY_SCYLLA_NODES";

struct Cluster {
    nodes: Vec<String>,
    datacenter: String,
}

fn cluster() -> Option<Cluster> {
    let nodes = std::env::var(NODES_VARIABLE).ok()?;
    let nodes: Vec<String> = nodes
        .split(',')
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .map(str::to_owned)
        .collect();
    if nodes.is_empty() {
        return None;
    }
    let datacenter =
        std::env::var("PARLEY_SCYLLA_DATACENTER").unwrap_or_else(|_| "datacenter1".to_owned());
    Some(Cluster { nodes, datacenter })
}

impl Cluster {
    async fn session(&self) -> Arc<Session> {
        let session = SessionBuilder::new()
            .known_nodes(&self.nodes)
            .build()
            .await
            .unwrap();
        Arc::new(session)
    }

    /// Creates a keyspace with a random name and the current schema.
    async fn new_keyspace(&self, session: &Session) -> String {
        let suffix: u64 = rand::random();
        let keyspace = format!("parley_test_{suffix:016x}");
        let statement = format!(
            "CREATE KEYSPACE {keyspace} WITH replication = \
             {{'class': 'NetworkTopologyStrategy', '{}': 1}}",
            self.datacenter
        );
        session.query_unpaged(statement, ()).await.unwrap();
        apply_migrations(session, &keyspace, 0).await.unwrap();
        keyspace
    }
}

async fn drop_keyspace(session: &Session, keyspace: &str) {
    let statement = format!("DROP KEYSPACE IF EXISTS {keyspace}");
    if let Err(error) = session.query_unpaged(statement, ()).await {
        eprintln!("failed to drop test keyspace {keyspace}: {error}");
    }
}

struct ScyllaFixture {
    cluster: Cluster,
    session: Arc<Session>,
    keyspace: String,
    store: Arc<dyn Store>,
    other_keyspaces: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Fixture for ScyllaFixture {
    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Opens a store on a session of its own, as another replica would.
    async fn open_same_data(&self) -> Arc<dyn Store> {
        let session = self.cluster.session().await;
        let store = ScyllaStore::with_session(session, &self.keyspace, ConsistencyLevel::default())
            .await
            .unwrap()
            .with_event_read_lag(std::time::Duration::ZERO);
        Arc::new(store)
    }

    async fn open_other_tenant(&self) -> Arc<dyn Store> {
        let keyspace = self.cluster.new_keyspace(&self.session).await;
        self.other_keyspaces.lock().unwrap().push(keyspace.clone());
        let store = ScyllaStore::with_session(
            Arc::clone(&self.session),
            &keyspace,
            ConsistencyLevel::default(),
        )
        .await
        .unwrap();
        Arc::new(store)
    }

    async fn clean_up(&self) {
        let others = std::mem::take(&mut *self.other_keyspaces.lock().unwrap());
        for keyspace in others.iter().chain([&self.keyspace]) {
            drop_keyspace(&self.session, keyspace).await;
        }
    }
}

async fn scylla_fixture() -> Option<ScyllaFixture> {
    let Some(cluster) = cluster() else {
        eprintln!("{NODES_VARIABLE} is not set; skipping a ScyllaDB test");
        return None;
    };
    let session = cluster.session().await;
    let keyspace = cluster.new_keyspace(&session).await;
    // Every check reads the log after its writes returned, so no write can
    // land behind a reader and the lag would only hide events.
    let store =
        ScyllaStore::with_session(Arc::clone(&session), &keyspace, ConsistencyLevel::default())
            .await
            .unwrap()
            .with_event_read_lag(std::time::Duration::ZERO);
    Some(ScyllaFixture {
        cluster,
        session,
        keyspace,
        store: Arc::new(store),
        other_keyspaces: Mutex::new(Vec::new()),
    })
}

store_conformance_tests!(scylla_fixture());

#[tokio::test]
async fn migrations_apply_once_and_check() {
    let Some(cluster) = cluster() else {
        return;
    };
    let session = cluster.session().await;
    let keyspace = cluster.new_keyspace(&session).await;

    let again = apply_migrations(&session, &keyspace, 0).await.unwrap();
    assert!(again.is_empty(), "already applied: {again:?}");
    assert_eq!(
        check_schema(&session, &keyspace).await.unwrap(),
        REQUIRED_VERSION
    );

    // A keyspace that exists without the schema is refused.
    let empty = format!("{keyspace}_empty");
    let statement = format!(
        "CREATE KEYSPACE {empty} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', '{}': 1}}",
        cluster.datacenter
    );
    session.query_unpaged(statement, ()).await.unwrap();
    let refused =
        ScyllaStore::with_session(Arc::clone(&session), &empty, ConsistencyLevel::default()).await;
    assert!(
        matches!(
            refused,
            Err(OpenError::Schema(SchemaError::TooOld { found: 0, .. }))
        ),
        "{:?}",
        refused.err()
    );

    // A schema newer than this build needs is accepted.
    session
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.schema_migrations (version, description, applied_at) \
                 VALUES (?, 'from a newer build', 0)"
            ),
            (REQUIRED_VERSION + 1,),
        )
        .await
        .unwrap();
    assert_eq!(
        check_schema(&session, &keyspace).await.unwrap(),
        REQUIRED_VERSION + 1
    );
    let store =
        ScyllaStore::with_session(Arc::clone(&session), &keyspace, ConsistencyLevel::default())
            .await
            .unwrap();
    store.ping().await.unwrap();

    drop_keyspace(&session, &empty).await;
    drop_keyspace(&session, &keyspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_crosses_buckets() {
    let Some(fixture) = scylla_fixture().await else {
        return;
    };
    let store = fixture.store();
    for user in ["ann", "bob"] {
        store
            .upsert_user(user, user, serde_json::json!({}), 1)
            .await
            .unwrap();
    }
    let (group, _) = store
        .create_group("ann", "team", &["bob".to_owned()], 1)
        .await
        .unwrap();
    let total = schema::BUCKET_SIZE + 5;
    for i in 0..total {
        store
            .append_message(NewMessage {
                channel_id: group.id.clone(),
                sender_id: "ann".to_owned(),
                client_id: format!("c{i}"),
                content: crate::store::Content::Text {
                    text: format!("tin nhắn số {i}"),
                },
                submitted: None,
                reply_to: None,
                mentions: Vec::new(),
                created_at: 1,
                moderation: Vec::new(),
            })
            .await
            .unwrap();
    }

    let across = store
        .history(
            &group.id,
            "bob",
            Page::After {
                after: schema::BUCKET_SIZE - 3,
                limit: 6,
            },
        )
        .await
        .unwrap();
    let seqs: Vec<u64> = across.iter().map(|message| message.seq).collect();
    let first = schema::BUCKET_SIZE - 2;
    assert_eq!(seqs, (first..first + 6).collect::<Vec<u64>>());
    let latest = store
        .history(&group.id, "bob", Page::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(latest.last().unwrap().seq, total);
    assert_eq!(latest.len(), 10);
    fixture.clean_up().await;
}

/// A writer that stopped right after winning its number leaves the message
/// in the channel row only. Readers still see it, the next append writes
/// its rows, and a retry of its client id finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unfinished_message_is_completed() {
    let Some(fixture) = scylla_fixture().await else {
        return;
    };
    let store = ScyllaStore::with_session(
        Arc::clone(&fixture.session),
        &fixture.keyspace,
        ConsistencyLevel::default(),
    )
    .await
    .unwrap();
    for user in ["ann", "bob"] {
        store
            .upsert_user(user, user, serde_json::json!({}), 1)
            .await
            .unwrap();
    }
    let (group, _) = store
        .create_group("ann", "team", &["bob".to_owned()], 1)
        .await
        .unwrap();
    let content = crate::store::Content::Text {
        text: "Mình lấy cái này nhé".to_owned(),
    };
    let hash = crate::store::keys::hex(
        &crate::store::keys::content_hash(&group.id, &content, None, &[]).unwrap(),
    );
    let unfinished = rows::StoredMessage {
        channel_id: group.id.clone(),
        seq: 1,
        sender_id: "ann".to_owned(),
        sender_incarnation: 1,
        client_id: "c1".to_owned(),
        content: Some(content.clone()),
        created_at: 5,
        content_hash: hash,
        channel_activity: 5,
        claim_id: 1,
        reply_to: None,
        mentions: Vec::new(),
        event_at: None,
        moderation: Vec::new(),
        edited_at: None,
        deleted_at: None,
        edit_count: 0,
    };
    let record = store.channel(&group.id).await.unwrap().unwrap();
    assert!(store.claim(&record, &unfinished).await.unwrap());
    assert!(store.message_row(&group.id, 1).await.unwrap().is_none());

    let seen = store
        .history(&group.id, "bob", Page::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].client_id, "c1");

    let next = store
        .append_message(NewMessage {
            channel_id: group.id.clone(),
            sender_id: "bob".to_owned(),
            client_id: "c2".to_owned(),
            content: crate::store::Content::Text {
                text: "Ok bạn".to_owned(),
            },
            submitted: None,
            reply_to: None,
            mentions: Vec::new(),
            created_at: 6,
            moderation: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(next.message.seq, 2);
    assert!(store.message_row(&group.id, 1).await.unwrap().is_some());

    let retry = store
        .append_message(NewMessage {
            channel_id: group.id.clone(),
            sender_id: "ann".to_owned(),
            client_id: "c1".to_owned(),
            content,
            submitted: None,
            reply_to: None,
            mentions: Vec::new(),
            created_at: 7,
            moderation: Vec::new(),
        })
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message.seq, 1);
    fixture.clean_up().await;
}
