//! CQL text of the provisioning steps, built without a connection.
//!
//! Keyspace, role and datacenter names are checked by `validate` before
//! they reach these functions (lowercase letters, digits, '_', and for
//! datacenters also '-' and '.'), so they are safe to splice into CQL, which
//! has no bind markers in DDL. Passwords are generated from letters and
//! digits only, and quotes are escaped anyway.

use std::collections::BTreeMap;

use crate::validate::OPERATOR_KEYSPACE;

/// Table of keyspace owners: which tenant a keyspace was created for, so
/// that another tenant naming the same keyspace never takes it over.
pub const OWNERS_TABLE: &str = "keyspace_owners";

/// Returns the replication map of a NetworkTopologyStrategy keyspace, as
/// CQL.
pub fn replication_map(replication: &BTreeMap<String, u32>) -> String {
    let factors: Vec<String> = replication
        .iter()
        .map(|(datacenter, factor)| format!("'{datacenter}': {factor}"))
        .collect();
    format!(
        "{{'class': 'NetworkTopologyStrategy', {}}}",
        factors.join(", ")
    )
}

pub fn create_keyspace(keyspace: &str, replication: &BTreeMap<String, u32>) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}",
        replication_map(replication)
    )
}

pub fn alter_keyspace(keyspace: &str, replication: &BTreeMap<String, u32>) -> String {
    format!(
        "ALTER KEYSPACE {keyspace} WITH replication = {}",
        replication_map(replication)
    )
}

pub fn create_operator_keyspace(datacenter: &str, factor: u32) -> String {
    create_keyspace(
        OPERATOR_KEYSPACE,
        &BTreeMap::from([(datacenter.to_owned(), factor)]),
    )
}

pub fn create_owners_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {OPERATOR_KEYSPACE}.{OWNERS_TABLE} (
            keyspace_name text PRIMARY KEY,
            tenant_id text,
            claimed_at bigint
        )"
    )
}

pub fn claim_owner() -> String {
    format!(
        "INSERT INTO {OPERATOR_KEYSPACE}.{OWNERS_TABLE} (keyspace_name, tenant_id, claimed_at) \
         VALUES (?, ?, ?) IF NOT EXISTS"
    )
}

pub fn select_owner() -> String {
    format!("SELECT tenant_id FROM {OPERATOR_KEYSPACE}.{OWNERS_TABLE} WHERE keyspace_name = ?")
}

pub fn release_owner() -> String {
    format!(
        "DELETE FROM {OPERATOR_KEYSPACE}.{OWNERS_TABLE} WHERE keyspace_name = ? IF tenant_id = ?"
    )
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub fn create_role(role: &str, password: &str) -> String {
    format!(
        "CREATE ROLE IF NOT EXISTS {role} WITH PASSWORD = {} AND LOGIN = true",
        quote_literal(password)
    )
}

pub fn set_role_password(role: &str, password: &str) -> String {
    format!(
        "ALTER ROLE {role} WITH PASSWORD = {}",
        quote_literal(password)
    )
}

/// Grants the runtime's role what it needs on its keyspace: reading and
/// writing rows. It cannot change the schema, which the operator applies.
pub fn grants(role: &str, keyspace: &str) -> [String; 2] {
    [
        format!("GRANT SELECT ON KEYSPACE {keyspace} TO {role}"),
        format!("GRANT MODIFY ON KEYSPACE {keyspace} TO {role}"),
    ]
}

pub fn drop_keyspace(keyspace: &str) -> String {
    format!("DROP KEYSPACE IF EXISTS {keyspace}")
}

pub fn drop_role(role: &str) -> String {
    format!("DROP ROLE IF EXISTS {role}")
}

/// Returns whether the replication options a keyspace has (as
/// `system_schema.keyspaces` stores them: the strategy class and one entry
/// per datacenter) differ from `desired`.
pub fn replication_differs(
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, u32>,
) -> bool {
    let class_matches = current
        .get("class")
        .is_some_and(|class| class.ends_with("NetworkTopologyStrategy"));
    let factors: BTreeMap<&str, &str> = current
        .iter()
        .filter(|(key, _)| key.as_str() != "class")
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let desired_factors: BTreeMap<&str, String> = desired
        .iter()
        .map(|(datacenter, factor)| (datacenter.as_str(), factor.to_string()))
        .collect();
    let same_factors = factors.len() == desired_factors.len()
        && desired_factors
            .iter()
            .all(|(datacenter, factor)| factors.get(datacenter) == Some(&factor.as_str()));
    !(class_matches && same_factors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replication(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs
            .iter()
            .map(|(datacenter, factor)| ((*datacenter).to_owned(), *factor))
            .collect()
    }

    fn stored(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn keyspace_uses_network_topology() {
        let statement = create_keyspace("parley_acme", &replication(&[("dc1", 3), ("dc2", 2)]));
        assert_eq!(
            statement,
            "CREATE KEYSPACE IF NOT EXISTS parley_acme WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
        );
        assert!(alter_keyspace("parley_acme", &replication(&[("dc1", 5)])).starts_with(
            "ALTER KEYSPACE parley_acme WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 5}"
        ));
    }

    #[test]
    fn replication_difference_detected() {
        let desired = replication(&[("dc1", 3)]);
        let same = stored(&[
            (
                "class",
                "org.apache.cassandra.locator.NetworkTopologyStrategy",
            ),
            ("dc1", "3"),
        ]);
        assert!(!replication_differs(&same, &desired));

        let cases = [
            stored(&[
                (
                    "class",
                    "org.apache.cassandra.locator.NetworkTopologyStrategy",
                ),
                ("dc1", "2"),
            ]),
            stored(&[
                (
                    "class",
                    "org.apache.cassandra.locator.NetworkTopologyStrategy",
                ),
                ("dc1", "3"),
                ("dc2", "3"),
            ]),
            stored(&[
                ("class", "org.apache.cassandra.locator.SimpleStrategy"),
                ("replication_factor", "3"),
            ]),
            stored(&[("dc1", "3")]),
        ];
        for current in cases {
            assert!(replication_differs(&current, &desired), "{current:?}");
        }
    }

    #[test]
    fn password_quotes_are_escaped() {
        assert_eq!(
            create_role("parley_acme", "pa'ss"),
            "CREATE ROLE IF NOT EXISTS parley_acme WITH PASSWORD = 'pa''ss' AND LOGIN = true"
        );
        assert_eq!(
            set_role_password("parley_acme", "x"),
            "ALTER ROLE parley_acme WITH PASSWORD = 'x'"
        );
    }

    #[test]
    fn grants_cover_rows_only() {
        let [select, modify] = grants("parley_acme", "parley_acme");
        assert_eq!(
            select,
            "GRANT SELECT ON KEYSPACE parley_acme TO parley_acme"
        );
        assert_eq!(
            modify,
            "GRANT MODIFY ON KEYSPACE parley_acme TO parley_acme"
        );
    }

    #[test]
    fn owner_statements_use_operator_keyspace() {
        assert!(create_owners_table().contains("parley_operator.keyspace_owners"));
        assert!(claim_owner().ends_with("IF NOT EXISTS"));
        assert!(release_owner().ends_with("IF tenant_id = ?"));
        assert_eq!(
            create_operator_keyspace("dc1", 3),
            "CREATE KEYSPACE IF NOT EXISTS parley_operator WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'dc1': 3}"
        );
    }
}
