//! Connection settings of a tenant's ScyllaDB store, as written in the
//! runtime config, and the driver session built from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::DefaultRetryPolicy;
use scylla::statement::{Consistency, SerialConsistency};
use serde::Deserialize;

use super::schema::check_keyspace_name;

/// The `store` section of a tenant whose chat lives in ScyllaDB.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Nodes to connect to first, as `host:port` (port 9042 by default in
    /// ScyllaDB). The driver discovers the rest of the cluster from them.
    pub contact_points: Vec<String>,
    /// The datacenter this runtime runs in. Requests go to its nodes, and
    /// `local_quorum` counts replicas in it only.
    pub datacenter: String,
    /// The tenant's keyspace. The operator creates it and applies the
    /// schema; the runtime only checks the schema version.
    pub keyspace: String,
    /// CQL role to log in as. Without it the connection is anonymous.
    #[serde(default)]
    pub username: Option<String>,
    /// A file whose contents (trailing newline removed) are the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable that contains the password.
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub tls: Option<ScyllaTlsConfig>,
    /// Consistency of reads and writes.
    #[serde(default)]
    pub consistency: ConsistencyLevel,
    /// Client-side limit on one request, retries included, in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Limit on opening the session, in milliseconds: the first connection
    /// and the cluster metadata it reads.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_request_timeout_ms() -> u64 {
    5_000
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

/// TLS to the nodes. The driver connects by IP address, so each node's
/// certificate must name its address in `subjectAltName`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScyllaTlsConfig {
    /// PEM file with the certificate authorities that sign node certificates.
    pub ca_file: PathBuf,
    /// PEM certificate chain for client authentication, with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// The consistency levels that make sense for chat data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyLevel {
    /// A majority of replicas in the local datacenter. Lightweight
    /// transactions run at `LOCAL_SERIAL`, which orders them within one
    /// datacenter only, so all runtimes of the tenant must run in one.
    #[default]
    LocalQuorum,
    /// A majority of all replicas.
    Quorum,
    /// A majority of replicas in every datacenter, for writes. Reads use
    /// `quorum`, which CQL allows for them.
    EachQuorum,
}

impl ConsistencyLevel {
    /// Consistency of reads, and of the commit of lightweight transactions.
    pub(super) fn consistency(self) -> Consistency {
        match self {
            ConsistencyLevel::LocalQuorum => Consistency::LocalQuorum,
            ConsistencyLevel::Quorum | ConsistencyLevel::EachQuorum => Consistency::Quorum,
        }
    }

    /// Serial consistency of lightweight transactions: local Paxos when
    /// plain requests stay local, cluster-wide Paxos otherwise.
    fn serial(self) -> SerialConsistency {
        match self {
            ConsistencyLevel::LocalQuorum => SerialConsistency::LocalSerial,
            ConsistencyLevel::Quorum | ConsistencyLevel::EachQuorum => SerialConsistency::Serial,
        }
    }

    /// Consistency of a read that must see every committed lightweight
    /// transaction on its row.
    pub(super) fn serial_read(self) -> Consistency {
        match self {
            ConsistencyLevel::LocalQuorum => Consistency::LocalSerial,
            ConsistencyLevel::Quorum | ConsistencyLevel::EachQuorum => Consistency::Serial,
        }
    }

    /// Consistency of plain writes.
    pub(super) fn write_consistency(self) -> Consistency {
        match self {
            ConsistencyLevel::EachQuorum => Consistency::EachQuorum,
            other => other.consistency(),
        }
    }
}

/// Error of loading the settings or opening the session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A setting is missing or invalid.
    #[error("invalid ScyllaDB settings: {0}")]
    Invalid(String),
    /// A password, certificate or key file could not be read.
    #[error("failed to read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file is not valid PEM.
    #[error("failed to parse {path} as PEM")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls rejected the certificates or the key.
    #[error("invalid TLS settings")]
    Tls(#[source] rustls::Error),
    /// The session did not open within `connect_timeout_ms`.
    #[error(
        "timed out after {milliseconds} ms connecting to ScyllaDB at {contact_points}; check that the nodes answer CQL on these addresses"
    )]
    TimedOut {
        contact_points: String,
        milliseconds: u64,
    },
    /// No contact point accepted a connection, or the login failed.
    #[error("failed to connect to ScyllaDB at {contact_points}")]
    Session {
        contact_points: String,
        #[source]
        source: Box<scylla::errors::NewSessionError>,
    },
}

impl ScyllaConfig {
    /// Checks the settings that need no file or network access.
    pub fn validate(&self) -> Result<(), ConnectError> {
        self.validate_connection()?;
        check_keyspace_name(&self.keyspace).map_err(ConnectError::Invalid)?;
        let password_sources =
            usize::from(self.password_file.is_some()) + usize::from(self.password_env.is_some());
        match (&self.username, password_sources) {
            (Some(_), 1) | (None, 0) => {}
            (Some(_), _) => {
                return Err(ConnectError::Invalid(
                    "username needs exactly one of password_file and password_env".to_owned(),
                ));
            }
            (None, _) => {
                return Err(ConnectError::Invalid(
                    "password_file and password_env need a username".to_owned(),
                ));
            }
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return Err(ConnectError::Invalid(
                "tls.cert_file and tls.key_file must be set together".to_owned(),
            ));
        }
        Ok(())
    }

    /// Reads the password and the TLS files, to report a missing or invalid
    /// one when the configuration is loaded rather than at connection time.
    pub fn check_files(&self, base: &Path) -> Result<(), ConnectError> {
        if self.username.is_some() {
            self.password(base)?;
        }
        if let Some(tls) = &self.tls {
            tls.client_config(base)?;
        }
        Ok(())
    }

    /// Checks the settings [`Self::connect_with`] uses. The keyspace is not
    /// one of them: the session is not bound to a keyspace.
    fn validate_connection(&self) -> Result<(), ConnectError> {
        if self.contact_points.is_empty() {
            return Err(ConnectError::Invalid(
                "contact_points must list at least one host:port".to_owned(),
            ));
        }
        if self.datacenter.trim().is_empty() {
            return Err(ConnectError::Invalid(
                "datacenter must not be empty".to_owned(),
            ));
        }
        if !(1..=600_000).contains(&self.request_timeout_ms) {
            return Err(ConnectError::Invalid(
                "request_timeout_ms must be between 1 and 600000".to_owned(),
            ));
        }
        if !(1..=600_000).contains(&self.connect_timeout_ms) {
            return Err(ConnectError::Invalid(
                "connect_timeout_ms must be between 1 and 600000".to_owned(),
            ));
        }
        Ok(())
    }

    /// Opens a driver session with these settings. Relative file paths
    /// resolve against `base`.
    pub async fn connect(&self, base: &Path) -> Result<Session, ConnectError> {
        self.validate()?;
        let password = match &self.username {
            Some(_) => Some(self.password(base)?),
            None => None,
        };
        let tls = match &self.tls {
            Some(tls) => Some(tls.client_config(base)?),
            None => None,
        };
        self.connect_with(password, tls).await
    }

    /// Opens a driver session with a password and TLS settings that come
    /// from elsewhere than files, ignoring the file settings.
    pub async fn connect_with(
        &self,
        password: Option<String>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Session, ConnectError> {
        self.validate_connection()?;

        // Requests go to replicas of the partition (token-aware) and to the
        // shard that owns it; both are the driver's defaults with this policy.
        // Failing over to another datacenter would break LOCAL_QUORUM's
        // promise, so it is off.
        let routing = DefaultPolicy::builder()
            .prefer_datacenter(self.datacenter.clone())
            .token_aware(true)
            .permit_dc_failover(false)
            .build();
        // The default retry policy retries a statement on another node after
        // a connection fails only when it is marked idempotent, and every
        // statement of the store sets the mark. It retries no write timeout.
        let profile = ExecutionProfile::builder()
            .consistency(self.consistency.consistency())
            .serial_consistency(Some(self.consistency.serial()))
            .request_timeout(Some(Duration::from_millis(self.request_timeout_ms)))
            .load_balancing_policy(routing)
            .retry_policy(Arc::new(DefaultRetryPolicy::new()))
            .build();

        let mut builder = SessionBuilder::new()
            .known_nodes(&self.contact_points)
            .connection_timeout(Duration::from_millis(self.connect_timeout_ms))
            .default_execution_profile_handle(profile.into_handle());
        if let (Some(username), Some(password)) = (&self.username, password) {
            builder = builder.user(username, password);
        }
        if let Some(tls) = tls {
            builder = builder.tls_context(Some(tls));
        }
        // The driver's own timeout covers opening a socket. A node that
        // accepts connections and then never replies would hold the first
        // metadata read for a minute, so the whole start gets the limit too.
        let limit = Duration::from_millis(self.connect_timeout_ms);
        match tokio::time::timeout(limit, builder.build()).await {
            Ok(session) => session.map_err(|source| ConnectError::Session {
                contact_points: self.contact_points.join(", "),
                source: Box::new(source),
            }),
            Err(_) => Err(ConnectError::TimedOut {
                contact_points: self.contact_points.join(", "),
                milliseconds: self.connect_timeout_ms,
            }),
        }
    }

    fn password(&self, base: &Path) -> Result<String, ConnectError> {
        if let Some(variable) = &self.password_env {
            return std::env::var(variable).map_err(|_| {
                ConnectError::Invalid(format!(
                    "environment variable {variable} named by password_env is not set or not valid UTF-8"
                ))
            });
        }
        match &self.password_file {
            Some(path) => {
                let path = base.join(path);
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| ConnectError::ReadFile { path, source })?;
                Ok(text.trim_end_matches(['\r', '\n']).to_owned())
            }
            None => Err(ConnectError::Invalid(
                "username needs a password_file or password_env".to_owned(),
            )),
        }
    }
}

impl ScyllaTlsConfig {
    fn client_config(&self, base: &Path) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
        let roots = root_store(read_certificates(&base.join(&self.ca_file))?)?;
        let builder = client_builder()?.with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let chain = read_certificates(&base.join(cert_file))?;
                let key_path = base.join(key_file);
                let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|source| {
                    ConnectError::Pem {
                        path: key_path,
                        source,
                    }
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(ConnectError::Tls)?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// Builds a TLS client config that trusts the PEM certificates in `ca_pem`
/// and presents no client certificate.
pub fn tls_from_pem(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    let certificates = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ConnectError::Pem {
            path: PathBuf::from("<certificate authorities>"),
            source,
        })?;
    if certificates.is_empty() {
        return Err(ConnectError::Invalid(
            "the certificate authorities contain no PEM certificate".to_owned(),
        ));
    }
    let config = client_builder()?
        .with_root_certificates(root_store(certificates)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn root_store(
    certificates: Vec<CertificateDer<'static>>,
) -> Result<rustls::RootCertStore, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(ConnectError::Tls)?;
    }
    Ok(roots)
}

fn client_builder()
-> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, ConnectError> {
    // The process links more than one rustls crypto provider (the
    // Kubernetes client uses ring), so the provider is named instead of
    // relying on a process-wide default.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConnectError::Tls)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let pem_error = |source| ConnectError::Pem {
        path: path.to_owned(),
        source,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certificates.is_empty() {
        return Err(ConnectError::Invalid(format!(
            "{} contains no PEM certificate",
            path.display()
        )));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> ScyllaConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    const MINIMAL: &str = "
contact_points: [\"127.0.0.1:9042\"]
datacenter: dc1
keyspace: acme_chat
";

    #[test]
    fn minimal_settings_get_defaults() {
        let config = parse(MINIMAL);
        config.validate().unwrap();
        assert_eq!(config.consistency, ConsistencyLevel::LocalQuorum);
        assert_eq!(config.request_timeout_ms, 5_000);
        assert_eq!(
            config.consistency.write_consistency(),
            Consistency::LocalQuorum
        );
        assert_eq!(config.consistency.serial(), SerialConsistency::LocalSerial);
    }

    #[test]
    fn each_quorum_applies_to_writes_only() {
        let level = ConsistencyLevel::EachQuorum;
        assert_eq!(level.write_consistency(), Consistency::EachQuorum);
        assert_eq!(level.consistency(), Consistency::Quorum);
        assert_eq!(level.serial(), SerialConsistency::Serial);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let cases = [
            (
                "contact_points: []\ndatacenter: dc1\nkeyspace: acme",
                "contact_points",
            ),
            (
                "contact_points: [\"a:1\"]\ndatacenter: \" \"\nkeyspace: acme",
                "datacenter",
            ),
            (
                "contact_points: [\"a:1\"]\ndatacenter: dc1\nkeyspace: system_auth",
                "reserved",
            ),
            (
                "contact_points: [\"a:1\"]\ndatacenter: dc1\nkeyspace: Acme-Chat",
                "keyspace",
            ),
            (
                "contact_points: [\"a:1\"]\ndatacenter: dc1\nkeyspace: acme\nusername: chat",
                "exactly one",
            ),
            (
                "contact_points: [\"a:1\"]\ndatacenter: dc1\nkeyspace: acme\npassword_env: P",
                "need a username",
            ),
            (
                "contact_points: [\"a:1\"]\ndatacenter: dc1\nkeyspace: acme\ntls: {ca_file: ca.pem, cert_file: c.pem}",
                "together",
            ),
            (
                "contact_points: [\"a:1\"]\ndatacenter: dc1\nkeyspace: acme\nrequest_timeout_ms: 0",
                "request_timeout_ms",
            ),
        ];
        for (yaml, expected) in cases {
            let error = parse(yaml).validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn unknown_field_is_rejected() {
        let yaml = format!("{MINIMAL}replication_factor: 3\n");
        let error = serde_yaml::from_str::<ScyllaConfig>(&yaml).unwrap_err();
        assert!(error.to_string().contains("replication_factor"), "{error}");
    }

    #[test]
    fn password_file_is_read_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
        let mut config = parse(MINIMAL);
        config.username = Some("acme".to_owned());
        config.password_file = Some(PathBuf::from("password"));
        config.validate().unwrap();
        assert_eq!(config.password(dir.path()).unwrap(), "s3cret");
    }

    #[test]
    fn tls_file_without_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
        let tls = ScyllaTlsConfig {
            ca_file: PathBuf::from("ca.pem"),
            cert_file: None,
            key_file: None,
        };
        let error = tls.client_config(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("contains no PEM certificate"),
            "{error}"
        );
        let missing = ScyllaTlsConfig {
            ca_file: PathBuf::from("missing.pem"),
            cert_file: None,
            key_file: None,
        };
        assert!(matches!(
            missing.client_config(dir.path()),
            Err(ConnectError::Pem { .. })
        ));
    }

    #[test]
    fn tls_from_pem_needs_a_certificate() {
        let empty = tls_from_pem("").unwrap_err();
        assert!(empty.to_string().contains("no PEM certificate"), "{empty}");
        let garbage = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(tls_from_pem(garbage).is_err());
    }

    /// A node that accepts TCP connections but never replies must not hold
    /// the start past `connect_timeout_ms`.
    #[tokio::test]
    async fn silent_node_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                sockets.push(socket);
            }
        });
        let mut config = parse(MINIMAL);
        config.contact_points = vec![address.to_string()];
        config.connect_timeout_ms = 300;

        let error = config.connect(Path::new(".")).await.unwrap_err();
        assert!(
            matches!(
                error,
                ConnectError::TimedOut {
                    milliseconds: 300,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains(&address.to_string()), "{error}");
        accepted.abort();
    }
}
