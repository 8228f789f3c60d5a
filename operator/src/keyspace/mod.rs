//! Tenant keyspaces and CQL roles in ScyllaDB.
//!
//! For a tenant with ScyllaDB storage the operator claims the keyspace in
//! its ownership table and creates it with NetworkTopologyStrategy, or
//! alters its replication when the spec changes it. It then creates a login
//! role named like the keyspace with SELECT and MODIFY on it, and applies
//! the runtime's schema migrations. Every step is idempotent, so a reconcile
//! that stopped half-way runs them all again.
//!
//! The operator's own role never needs superuser. The README lists the
//! grants that cover every step here: creating, altering and dropping
//! keyspaces and roles, and granting tenant roles their keyspace.

pub mod cql;

use std::collections::BTreeMap;
use std::sync::Arc;

use chat_runtime::store::scylla::{self as store, ConsistencyLevel, ScyllaConfig};
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use scylla::client::session::Session;
use scylla::value::{CqlValue, Row};

use crate::settings::ScyllaSettings;
use crate::validate::{OPERATOR_KEYSPACE, ValidScylla};

/// Failure of a provisioning step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyspaceError {
    /// The keyspace is recorded as another tenant's.
    #[error("keyspace {keyspace} belongs to tenant {owner}")]
    OwnedByOther { keyspace: String, owner: String },
    /// The keyspace exists but no tenant is recorded as its owner, so it
    /// was not created by the operator and is not taken over.
    #[error(
        "keyspace {keyspace} already exists and was not created by the operator; choose another keyspace name"
    )]
    ExistsUnowned { keyspace: String },
    /// The operator's own credentials Secret is missing or incomplete.
    #[error(
        "failed to read the operator's ScyllaDB credentials from Secret {namespace}/{name}: {reason}"
    )]
    Credentials {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("failed to connect to ScyllaDB")]
    Connect(#[source] store::ConnectError),
    /// A statement failed; `step` names what it was doing.
    #[error("failed to {step}")]
    Request {
        step: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to apply the schema")]
    Schema(#[source] store::SchemaError),
}

impl KeyspaceError {
    /// Returns whether a later attempt can succeed without a change to the
    /// spec or the cluster: the cluster was unreachable, overloaded or timed
    /// out. A refusal by the cluster (invalid statement, missing
    /// permission, failed login) or a conflict of names needs a change.
    pub fn is_transient(&self) -> bool {
        match self {
            KeyspaceError::OwnedByOther { .. }
            | KeyspaceError::ExistsUnowned { .. }
            | KeyspaceError::Credentials { .. } => false,
            KeyspaceError::Connect(error) => !matches!(error, store::ConnectError::Invalid(_)),
            KeyspaceError::Request { source, .. } => !is_refusal(source.as_ref()),
            KeyspaceError::Schema(error) => {
                !std::error::Error::source(error).is_some_and(is_refusal)
            }
        }
    }
}

/// Returns whether `error` is the cluster refusing a statement, which a
/// retry repeats.
fn is_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
    let Some(ExecutionError::LastAttemptError(RequestAttemptError::DbError(kind, _))) =
        error.downcast_ref::<ExecutionError>()
    else {
        return false;
    };
    matches!(
        kind,
        DbError::SyntaxError
            | DbError::Invalid
            | DbError::AlreadyExists { .. }
            | DbError::Unauthorized
            | DbError::AuthenticationError
            | DbError::ConfigError
    )
}

fn request<E>(step: impl Into<String>) -> impl FnOnce(E) -> KeyspaceError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let step = step.into();
    move |source| KeyspaceError::Request {
        step,
        source: Box::new(source),
    }
}

/// Result of a successful provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The tenant's login role; `None` when the cluster has no
    /// authentication.
    pub role: Option<String>,
    pub schema_version: i32,
    /// Whether the replication was changed by this run.
    pub altered_replication: bool,
}

/// Returns the name of the tenant's first CQL role: the keyspace name with
/// `_runtime` appended, a valid unquoted CQL identifier. The suffix keeps
/// it clear of roles that people name like keyspaces. A rotation switches
/// to the same name with `_b` appended, and back.
///
/// NOTE: an existing role of that name is adopted (its password is set and
/// it keeps its other grants), because this module has no portable way to
/// tell whether a role exists across ScyllaDB versions.
pub fn role_name(scylla: &ValidScylla) -> String {
    format!("{}_runtime", scylla.keyspace)
}

/// Returns both role names a tenant can have.
pub fn role_names(scylla: &ValidScylla) -> [String; 2] {
    let base = role_name(scylla);
    let alternate = format!("{base}_b");
    [base, alternate]
}

/// Provisioning of tenant keyspaces and roles as the reconciler uses it.
/// [`Keyspaces`] implements it against ScyllaDB. It is a trait so that
/// tests of the reconciler against a real API server can run without a
/// ScyllaDB cluster.
pub trait Provisioner: Send + Sync {
    /// Returns the cluster settings the runtimes get.
    fn settings(&self) -> &ScyllaSettings;
    /// Returns whether tenants get a login role.
    fn uses_roles(&self) -> bool;
    /// Brings the tenant's keyspace, role and schema in line with `scylla`.
    fn ensure<'a>(
        &'a self,
        tenant_id: &'a str,
        scylla: &'a ValidScylla,
        login: Option<(&'a str, &'a str, bool)>,
    ) -> BoxFuture<'a, Result<Provisioned, KeyspaceError>>;
    /// Drops a role of the tenant that no pod uses any more.
    fn drop_role<'a>(
        &'a self,
        scylla: &'a ValidScylla,
        role: &'a str,
    ) -> BoxFuture<'a, Result<(), KeyspaceError>>;
    /// Drops the tenant's keyspace and roles; returns false when no
    /// ownership record names the tenant.
    fn drop_tenant<'a>(
        &'a self,
        tenant_id: &'a str,
        scylla: &'a ValidScylla,
    ) -> BoxFuture<'a, Result<bool, KeyspaceError>>;
}

impl Provisioner for Keyspaces {
    fn settings(&self) -> &ScyllaSettings {
        Keyspaces::settings(self)
    }

    fn uses_roles(&self) -> bool {
        Keyspaces::uses_roles(self)
    }

    fn ensure<'a>(
        &'a self,
        tenant_id: &'a str,
        scylla: &'a ValidScylla,
        login: Option<(&'a str, &'a str, bool)>,
    ) -> BoxFuture<'a, Result<Provisioned, KeyspaceError>> {
        Box::pin(Keyspaces::ensure(self, tenant_id, scylla, login))
    }

    fn drop_role<'a>(
        &'a self,
        scylla: &'a ValidScylla,
        role: &'a str,
    ) -> BoxFuture<'a, Result<(), KeyspaceError>> {
        Box::pin(Keyspaces::drop_role(self, scylla, role))
    }

    fn drop_tenant<'a>(
        &'a self,
        tenant_id: &'a str,
        scylla: &'a ValidScylla,
    ) -> BoxFuture<'a, Result<bool, KeyspaceError>> {
        Box::pin(Keyspaces::drop_tenant(self, tenant_id, scylla))
    }
}

/// The operator's connection, opened on first use and kept.
pub struct Keyspaces {
    settings: ScyllaSettings,
    client: kube::Client,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl Keyspaces {
    pub fn new(settings: ScyllaSettings, client: kube::Client) -> Self {
        Self {
            settings,
            client,
            session: tokio::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &ScyllaSettings {
        &self.settings
    }

    /// Returns whether tenants get a login role: only when the operator
    /// logs in itself. Without authentication ScyllaDB rejects roles'
    /// grants, and a runtime needs no role to connect.
    pub fn uses_roles(&self) -> bool {
        self.settings.credentials_secret.is_some()
    }

    /// Returns the session, connecting (and creating the operator's own
    /// keyspace) the first time. A failed attempt is retried on the next
    /// call.
    async fn session(&self) -> Result<Arc<Session>, KeyspaceError> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref() {
            return Ok(Arc::clone(session));
        }
        let session = Arc::new(self.connect().await?);
        let statements = [
            cql::create_operator_keyspace(
                &self.settings.datacenter,
                self.settings.operator_replication_factor,
            ),
            cql::create_owners_table(),
        ];
        for statement in statements {
            session
                .query_unpaged(statement, ())
                .await
                .map_err(request("create the operator's keyspace"))?;
        }
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    async fn connect(&self) -> Result<Session, KeyspaceError> {
        let (username, password) = match &self.settings.credentials_secret {
            Some(name) => {
                let (username, password) = self.read_credentials(name).await?;
                (Some(username), Some(password))
            }
            None => (None, None),
        };
        let tls = match &self.settings.tls_ca_pem {
            Some(pem) => Some(store::tls_from_pem(pem).map_err(KeyspaceError::Connect)?),
            None => None,
        };
        let config = ScyllaConfig {
            contact_points: self.settings.contact_points.clone(),
            datacenter: self.settings.datacenter.clone(),
            keyspace: OPERATOR_KEYSPACE.to_owned(),
            username,
            password_file: None,
            password_env: None,
            tls: None,
            consistency: ConsistencyLevel::LocalQuorum,
            request_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
        };
        config
            .connect_with(password, tls)
            .await
            .map_err(KeyspaceError::Connect)
    }

    async fn read_credentials(&self, name: &str) -> Result<(String, String), KeyspaceError> {
        let namespace = &self.settings.credentials_namespace;
        let failure = |reason: String| KeyspaceError::Credentials {
            namespace: namespace.clone(),
            name: name.to_owned(),
            reason,
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|error| failure(error.to_string()))?
            .ok_or_else(|| failure("the Secret does not exist".to_owned()))?;
        let data = secret.data.unwrap_or_default();
        let field = |key: &str| {
            data.get(key)
                .and_then(|value| String::from_utf8(value.0.clone()).ok())
                .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
                .filter(|text| !text.is_empty())
                .ok_or_else(|| failure(format!("key {key:?} is missing, empty or not UTF-8")))
        };
        Ok((field("username")?, field("password")?))
    }

    /// Brings the tenant's keyspace, role and schema in line with `scylla`.
    /// `login` is the runtime's role and password, with `true` when the
    /// password must be set (a new role, or a Secret that did not have it).
    /// It is `None` when the cluster has no authentication
    /// ([`Self::uses_roles`]).
    pub async fn ensure(
        &self,
        tenant_id: &str,
        scylla: &ValidScylla,
        login: Option<(&str, &str, bool)>,
    ) -> Result<Provisioned, KeyspaceError> {
        let session = self.session().await?;
        let keyspace = scylla.keyspace.as_str();
        let first_claim = self.claim(&session, tenant_id, keyspace).await?;
        if first_claim && !replication_of(&session, keyspace).await?.is_empty() {
            session
                .query_unpaged(cql::release_owner(), (keyspace, tenant_id))
                .await
                .map_err(request(format!("release keyspace {keyspace}")))?;
            return Err(KeyspaceError::ExistsUnowned {
                keyspace: keyspace.to_owned(),
            });
        }

        session
            .query_unpaged(cql::create_keyspace(keyspace, &scylla.replication), ())
            .await
            .map_err(request(format!("create keyspace {keyspace}")))?;
        let current = replication_of(&session, keyspace).await?;
        let altered_replication = cql::replication_differs(&current, &scylla.replication);
        if altered_replication {
            session
                .query_unpaged(cql::alter_keyspace(keyspace, &scylla.replication), ())
                .await
                .map_err(request(format!(
                    "alter the replication of keyspace {keyspace}"
                )))?;
            tracing::info!(
                tenant = tenant_id,
                keyspace,
                "Changed the keyspace's replication; run a repair so new replicas get the existing rows"
            );
        }

        let role = match login {
            Some((role, password, password_is_new)) => {
                self.ensure_role(&session, role, keyspace, password, password_is_new)
                    .await?;
                Some(role.to_owned())
            }
            None => None,
        };

        let now = chat_runtime::chat::now_millis();
        store::apply_migrations(&session, keyspace, now)
            .await
            .map_err(KeyspaceError::Schema)?;
        let schema_version = store::check_schema(&session, keyspace)
            .await
            .map_err(KeyspaceError::Schema)?;
        Ok(Provisioned {
            role,
            schema_version,
            altered_replication,
        })
    }

    async fn ensure_role(
        &self,
        session: &Session,
        role: &str,
        keyspace: &str,
        password: &str,
        password_is_new: bool,
    ) -> Result<(), KeyspaceError> {
        session
            .query_unpaged(cql::create_role(role, password), ())
            .await
            .map_err(request(format!("create role {role}")))?;
        if password_is_new {
            session
                .query_unpaged(cql::set_role_password(role, password), ())
                .await
                .map_err(request(format!("set the password of role {role}")))?;
        }
        for grant in cql::grants(role, keyspace) {
            session
                .query_unpaged(grant, ())
                .await
                .map_err(request(format!("grant role {role} access to {keyspace}")))?;
        }
        Ok(())
    }

    /// Drops a role of the tenant that no pod uses any more, after a
    /// rotation.
    pub async fn drop_role(&self, scylla: &ValidScylla, role: &str) -> Result<(), KeyspaceError> {
        if !role_names(scylla).iter().any(|name| name == role) {
            return Ok(());
        }
        let session = self.session().await?;
        session
            .query_unpaged(cql::drop_role(role), ())
            .await
            .map_err(request(format!("drop role {role}")))?;
        Ok(())
    }

    /// Records `tenant_id` as the owner of `keyspace`, or fails with
    /// `OwnedByOther` when another tenant owns it. Returns whether the
    /// record is new.
    async fn claim(
        &self,
        session: &Session,
        tenant_id: &str,
        keyspace: &str,
    ) -> Result<bool, KeyspaceError> {
        let step = format!("claim keyspace {keyspace}");
        let inserted: Option<Row> = session
            .query_unpaged(
                cql::claim_owner(),
                (keyspace, tenant_id, chat_runtime::chat::now_millis()),
            )
            .await
            .map_err(request(step.clone()))?
            .into_rows_result()
            .map_err(request(step.clone()))?
            .maybe_first_row()
            .map_err(request(step.clone()))?;
        // The first column of a conditional statement's result is `[applied]`.
        let first_claim = matches!(
            inserted.and_then(|row| row.columns.into_iter().next()),
            Some(Some(CqlValue::Boolean(true)))
        );
        match owner_of(session, keyspace).await? {
            Some(owner) if owner == tenant_id => Ok(first_claim),
            Some(owner) => Err(KeyspaceError::OwnedByOther {
                keyspace: keyspace.to_owned(),
                owner,
            }),
            None => Err(KeyspaceError::Request {
                step,
                source: "the ownership record is missing right after it was written".into(),
            }),
        }
    }

    /// Drops the tenant's keyspace and role and deletes its ownership
    /// record, for the `Delete` policy. Only a keyspace recorded as this
    /// tenant's is dropped: one owned by another tenant fails with
    /// `OwnedByOther`, and one without a record is left alone (returns
    /// false).
    pub async fn drop_tenant(
        &self,
        tenant_id: &str,
        scylla: &ValidScylla,
    ) -> Result<bool, KeyspaceError> {
        let session = self.session().await?;
        let keyspace = scylla.keyspace.as_str();
        match owner_of(&session, keyspace).await? {
            Some(owner) if owner == tenant_id => {}
            Some(owner) => {
                return Err(KeyspaceError::OwnedByOther {
                    keyspace: keyspace.to_owned(),
                    owner,
                });
            }
            None => return Ok(false),
        }

        let mut statements = vec![(
            cql::drop_keyspace(keyspace),
            format!("drop keyspace {keyspace}"),
        )];
        if self.uses_roles() {
            for role in role_names(scylla) {
                statements.push((cql::drop_role(&role), format!("drop role {role}")));
            }
        }
        for (statement, step) in statements {
            session
                .query_unpaged(statement, ())
                .await
                .map_err(request(step))?;
        }
        session
            .query_unpaged(cql::release_owner(), (keyspace, tenant_id))
            .await
            .map_err(request(format!("release keyspace {keyspace}")))?;
        Ok(true)
    }
}

/// Reads a keyspace's replication options from `system_schema.keyspaces`.
async fn replication_of(
    session: &Session,
    keyspace: &str,
) -> Result<BTreeMap<String, String>, KeyspaceError> {
    let step = format!("read the replication of keyspace {keyspace}");
    let row: Option<Row> = session
        .query_unpaged(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .map_err(request(step.clone()))?
        .into_rows_result()
        .map_err(request(step.clone()))?
        .maybe_first_row()
        .map_err(request(step.clone()))?;
    let mut options = BTreeMap::new();
    if let Some(Some(CqlValue::Map(entries))) = row.and_then(|row| row.columns.into_iter().next()) {
        for (key, value) in entries {
            if let (CqlValue::Text(key), CqlValue::Text(value)) = (key, value) {
                options.insert(key, value);
            }
        }
    }
    Ok(options)
}

/// Returns the tenant recorded as the owner of `keyspace`, if any.
async fn owner_of(session: &Session, keyspace: &str) -> Result<Option<String>, KeyspaceError> {
    let step = format!("read the owner of keyspace {keyspace}");
    let row: Option<(Option<String>,)> = session
        .query_unpaged(cql::select_owner(), (keyspace,))
        .await
        .map_err(request(step.clone()))?
        .into_rows_result()
        .map_err(request(step.clone()))?
        .maybe_first_row()
        .map_err(request(step))?;
    Ok(row.and_then(|(owner,)| owner))
}

#[cfg(test)]
mod tests {
    use scylla::errors::{DbError, ExecutionError, RequestAttemptError};

    use super::*;

    fn refused_by_cluster(kind: DbError) -> KeyspaceError {
        let error = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            kind,
            String::from("from the test"),
        ));
        KeyspaceError::Request {
            step: String::from("create keyspace parley_acme"),
            source: Box::new(error),
        }
    }

    #[test]
    fn refusals_are_not_retried() {
        for kind in [
            DbError::Unauthorized,
            DbError::SyntaxError,
            DbError::Invalid,
            DbError::AuthenticationError,
            DbError::ConfigError,
        ] {
            assert!(!refused_by_cluster(kind.clone()).is_transient(), "{kind:?}");
        }
        let conflicts = [
            KeyspaceError::OwnedByOther {
                keyspace: String::from("parley_acme"),
                owner: String::from("globex"),
            },
            KeyspaceError::ExistsUnowned {
                keyspace: String::from("parley_acme"),
            },
        ];
        for conflict in conflicts {
            assert!(!conflict.is_transient(), "{conflict}");
        }
    }

    #[test]
    fn outages_are_retried() {
        for kind in [DbError::Overloaded, DbError::IsBootstrapping] {
            assert!(refused_by_cluster(kind.clone()).is_transient(), "{kind:?}");
        }
        let timeout = KeyspaceError::Request {
            step: String::from("claim keyspace parley_acme"),
            source: Box::new(ExecutionError::RequestTimeout(
                std::time::Duration::from_secs(30),
            )),
        };
        assert!(timeout.is_transient());
    }

    #[test]
    fn role_name_has_suffix() {
        let scylla = ValidScylla {
            keyspace: String::from("parley_acme"),
            replication: BTreeMap::from([(String::from("dc1"), 3)]),
            deletion_policy: crate::crd::DeletionPolicy::Retain,
        };
        assert_eq!(role_name(&scylla), "parley_acme_runtime");
    }
}
