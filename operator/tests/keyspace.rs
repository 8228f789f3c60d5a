//! Provisioning against a real ScyllaDB node. The tests run when
//! `PARLEY_SCYLLA_NODES` lists contact points (`host:port`,
//! comma-separated), with `PARLEY_SCYLLA_DATACENTER` naming the node's
//! datacenter (`datacenter1` by default), and pass without doing anything
//! otherwise. Each test uses keyspaces with random names and drops them.

use std::collections::BTreeMap;

use parley_operator::keyspace::{KeyspaceError, Keyspaces};

use support::{settings, storage, unused_client};

// Clippy allows `unwrap` in tests only inside `#[test]` functions and
// `#[cfg(test)]` modules, so the helpers live in one.
#[cfg(test)]
mod support {
    use std::collections::BTreeMap;

    use parley_operator::crd::DeletionPolicy;
    use parley_operator::settings::ScyllaSettings;
    use parley_operator::validate::ValidScylla;

    pub fn settings() -> Option<ScyllaSettings> {
        let nodes = std::env::var("PARLEY_SCYLLA_NODES").ok()?;
        let contact_points: Vec<String> = nodes
            .split(',')
            .map(str::trim)
            .filter(|node| !node.is_empty())
            .map(str::to_owned)
            .collect();
        if contact_points.is_empty() {
            return None;
        }
        Some(ScyllaSettings {
            contact_points,
            datacenter: std::env::var("PARLEY_SCYLLA_DATACENTER")
                .unwrap_or_else(|_| "datacenter1".to_owned()),
            credentials_secret: None,
            credentials_namespace: "parley-system".to_owned(),
            tls_ca_pem: None,
            operator_replication_factor: 1,
        })
    }

    /// Returns a Kubernetes client that is never used: the settings name no
    /// credentials Secret, so the provisioner reads none.
    pub fn unused_client() -> kube::Client {
        parley_operator::install_crypto_provider();
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    pub fn storage(settings: &ScyllaSettings, factor: u32) -> ValidScylla {
        let suffix: u32 = rand::random();
        ValidScylla {
            keyspace: format!("parley_test_ks_{suffix:08x}"),
            replication: BTreeMap::from([(settings.datacenter.clone(), factor)]),
            deletion_policy: DeletionPolicy::Delete,
        }
    }
}

#[tokio::test]
async fn keyspace_is_provisioned_once_and_dropped() {
    let Some(settings) = settings() else {
        eprintln!("PARLEY_SCYLLA_NODES is not set; skipping a ScyllaDB test");
        return;
    };
    let keyspaces = Keyspaces::new(settings.clone(), unused_client());
    let scylla = storage(&settings, 1);

    let first = keyspaces.ensure("acme", &scylla, None).await.unwrap();
    // The settings name no credentials, so the cluster is taken to have no
    // authentication and no role is created.
    assert_eq!(first.role, None);
    assert_eq!(
        first.schema_version,
        chat_runtime::store::scylla::REQUIRED_VERSION
    );
    assert!(!first.altered_replication);
    let again = keyspaces.ensure("acme", &scylla, None).await.unwrap();
    assert_eq!(again, first);

    // Another tenant naming the same keyspace is refused, with the owner.
    let taken = keyspaces.ensure("globex", &scylla, None).await.unwrap_err();
    assert!(
        matches!(&taken, KeyspaceError::OwnedByOther { owner, .. } if owner == "acme"),
        "{taken:?}"
    );
    assert!(!taken.is_transient());
    assert!(matches!(
        keyspaces.drop_tenant("globex", &scylla).await,
        Err(KeyspaceError::OwnedByOther { .. })
    ));

    assert!(keyspaces.drop_tenant("acme", &scylla).await.unwrap());
    // Dropped keyspaces can be claimed again.
    keyspaces.ensure("globex", &scylla, None).await.unwrap();
    assert!(keyspaces.drop_tenant("globex", &scylla).await.unwrap());
}

#[tokio::test]
async fn existing_keyspace_is_not_taken_over() {
    let Some(settings) = settings() else {
        return;
    };
    let scylla = storage(&settings, 1);
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&settings.contact_points)
        .build()
        .await
        .unwrap();
    let statement = format!(
        "CREATE KEYSPACE {} WITH replication = {{'class': 'NetworkTopologyStrategy', '{}': 1}}",
        scylla.keyspace, settings.datacenter
    );
    session.query_unpaged(statement, ()).await.unwrap();

    let keyspaces = Keyspaces::new(settings.clone(), unused_client());
    let refused = keyspaces
        .ensure("umbrella", &scylla, None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, KeyspaceError::ExistsUnowned { .. }),
        "{refused:?}"
    );
    assert!(!refused.is_transient());
    // The claim was released, so deleting the tenant leaves the keyspace.
    assert!(!keyspaces.drop_tenant("umbrella", &scylla).await.unwrap());
    session
        .query_unpaged(format!("DROP KEYSPACE {}", scylla.keyspace), ())
        .await
        .unwrap();
}

#[tokio::test]
async fn replication_change_is_applied() {
    let Some(settings) = settings() else {
        return;
    };
    let keyspaces = Keyspaces::new(settings.clone(), unused_client());
    let mut scylla = storage(&settings, 1);
    keyspaces.ensure("initech", &scylla, None).await.unwrap();

    // A factor above the node count is accepted by CREATE and ALTER; only
    // writes at quorum would then fail, and this test writes nothing more.
    scylla.replication = BTreeMap::from([(settings.datacenter.clone(), 2)]);
    let altered = keyspaces.ensure("initech", &scylla, None).await;
    keyspaces.drop_tenant("initech", &scylla).await.unwrap();
    assert!(altered.unwrap().altered_replication);
}
