//! The controller: watches ChatTenants and the objects made for them, and
//! runs [`reconcile`] for each tenant that changed.

pub mod apply;
pub mod leader;
pub mod reconcile;
pub mod rotation;
pub mod scylla_login;
pub mod served;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{self, Event as FinalizerEvent};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use crate::build::BuildError;
use crate::build::credentials::CredentialsError;
use crate::crd::ChatTenant;
use crate::naming;
use crate::settings::OperatorSettings;
use crate::telemetry::METRICS;

/// Finalizer on ChatTenants, so the deletion policy runs before they go.
/// Objects inside the tenant namespace never get one, so deleting a
/// namespace can never hang on the operator.
pub const FINALIZER: &str = "parley.dev/cleanup";

/// Maximum wait between retries of a failing reconcile.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// State every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: OperatorSettings,
    /// Name of this replica in the Events it records.
    pub reporting_instance: String,
    /// Managed kinds the API server does not serve, found at start.
    pub missing_kinds: Vec<served::ManagedKind>,
    /// The ScyllaDB connection, when the operator was configured with one.
    pub keyspaces: Option<Arc<dyn crate::keyspace::Provisioner>>,
}

/// Errors of one reconcile, named after the operation that failed. Each is
/// retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read cluster state")]
    Read(#[source] kube::Error),
    #[error("failed to apply a tenant object")]
    Apply(#[source] kube::Error),
    #[error("failed to write the ChatTenant status")]
    Status(#[source] kube::Error),
    #[error("failed to build the tenant objects")]
    Build(#[source] BuildError),
    #[error("failed to load or generate credentials")]
    Credentials(#[source] CredentialsError),
    #[error("failed to update the finalizer")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("failed to provision the ScyllaDB keyspace")]
    Keyspace(#[source] crate::keyspace::KeyspaceError),
}

impl Error {
    /// Short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Read(_) => "read",
            Error::Apply(_) => "apply",
            Error::Status(_) => "status",
            Error::Build(_) => "build",
            Error::Credentials(_) => "credentials",
            Error::Finalizer(_) => "finalizer",
            Error::Keyspace(_) => "keyspace",
        }
    }
}

async fn reconcile(tenant: Arc<ChatTenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(tenant, ctx).await;
    METRICS.reconciles.inc();
    METRICS.duration.observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(tenant: Arc<ChatTenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let tenants: Api<ChatTenant> = Api::all(ctx.client.clone());
    finalizer::finalizer(&tenants, FINALIZER, tenant, |event| async {
        match event {
            FinalizerEvent::Apply(tenant) => reconcile::apply_tenant(tenant, &ctx).await,
            FinalizerEvent::Cleanup(tenant) => reconcile::cleanup_tenant(tenant, &ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

/// Retries with exponential backoff per tenant, capped at [`MAX_BACKOFF`].
fn error_policy(tenant: Arc<ChatTenant>, error: &Error, _ctx: Arc<Context>) -> Action {
    METRICS.error(error.reason());
    let message = crate::error_chain(error);
    tracing::warn!(tenant = %tenant.name_any(), reason = error.reason(), error = %message, "Reconcile failed");
    let attempt = BACKOFF.with_attempt(&tenant.name_any());
    Action::requeue(attempt)
}

/// Per-tenant retry counts for [`error_policy`]. A tenant's count resets
/// once it reconciles without error.
struct Backoff {
    attempts: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

static BACKOFF: std::sync::LazyLock<Backoff> = std::sync::LazyLock::new(|| Backoff {
    attempts: std::sync::Mutex::new(std::collections::HashMap::new()),
});

impl Backoff {
    fn with_attempt(&self, name: &str) -> Duration {
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let attempt = attempts.entry(name.to_owned()).or_insert(0);
        *attempt = attempt.saturating_add(1);
        let seconds = 1u64
            .checked_shl(attempt.saturating_sub(1).min(16))
            .unwrap_or(u64::MAX);
        Duration::from_secs(seconds).min(MAX_BACKOFF)
    }

    fn reset(&self, name: &str) {
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        attempts.remove(name);
    }
}

/// Maps an object the operator made to the ChatTenant whose tenant id its
/// label names.
fn tenant_of<K: Resource>(store: &Store<ChatTenant>, object: &K) -> Option<ObjectRef<ChatTenant>> {
    let tenant_id = object
        .meta()
        .labels
        .as_ref()?
        .get(naming::TENANT_ID_LABEL)?;
    store
        .state()
        .into_iter()
        .find(|tenant| &tenant.spec.tenant_id == tenant_id)
        .map(|tenant| ObjectRef::from_obj(&*tenant))
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: OperatorSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let keyspaces = settings.scylla.clone().map(|scylla| {
        Arc::new(crate::keyspace::Keyspaces::new(scylla, client.clone()))
            as Arc<dyn crate::keyspace::Provisioner>
    });
    run_with_keyspaces(client, settings, keyspaces, shutdown).await;
}

/// Runs the controller with `keyspaces` in place of a ScyllaDB connection
/// made from the settings, until `shutdown` completes. Tests use it to run
/// ScyllaDB tenants without a ScyllaDB cluster.
pub async fn run_with_keyspaces(
    client: Client,
    settings: OperatorSettings,
    keyspaces: Option<Arc<dyn crate::keyspace::Provisioner>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let reporting_instance = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("parley-operator-{}", std::process::id()));
    let missing_kinds = match served::check(&client).await {
        Ok(missing) => missing,
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "Failed to list the API server's kinds; assuming all are served");
            Vec::new()
        }
    };
    for kind in &missing_kinds {
        tracing::warn!(
            kind = kind.kind,
            api_version = kind.api_version,
            "The API server does not serve a managed kind; skipping it"
        );
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings,
        reporting_instance,
        missing_kinds,
        keyspaces,
    });

    let managed = watcher::Config::default().labels(&format!(
        "{}={}",
        naming::MANAGED_BY_LABEL,
        naming::FIELD_MANAGER
    ));
    let controller = Controller::new(
        Api::<ChatTenant>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    METRICS.watch_tenants(store.clone());
    let controller = watch_owned::<Namespace>(controller, &client, &managed, &store);
    let controller = watch_owned::<Deployment>(controller, &client, &managed, &store);
    let controller = watch_owned::<ConfigMap>(controller, &client, &managed, &store);
    let controller = watch_owned::<Secret>(controller, &client, &managed, &store);
    let controller = watch_owned::<Service>(controller, &client, &managed, &store);

    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => BACKOFF.reset(&object.name),
                Err(error) => tracing::debug!(error = %error, "Controller event failed"),
            }
        })
        .await;
}

fn watch_owned<K>(
    controller: Controller<ChatTenant>,
    client: &Client,
    config: &watcher::Config,
    store: &Store<ChatTenant>,
) -> Controller<ChatTenant>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let store = store.clone();
    controller.watches(
        Api::<K>::all(client.clone()),
        config.clone(),
        move |object| tenant_of(&store, &object),
    )
}

/// Runs the controller while this replica holds the leader Lease. Returns
/// `true` when leadership was lost (the process should exit so it can
/// campaign again from a clean state), `false` on shutdown.
pub async fn run_elected(
    client: Client,
    settings: OperatorSettings,
    elector: leader::LeaderElector,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> bool {
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_sender.send(true);
    });

    tokio::select! {
        _ = elector.acquire() => {}
        _ = stopped(stop.clone()) => return false,
    }
    tracing::info!(identity = elector.identity(), "Became the leader");

    let (lost_sender, lost) = tokio::sync::oneshot::channel::<bool>();
    let (done_sender, done) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let lost_leadership = tokio::select! {
            _ = elector.hold() => true,
            _ = stopped(stop) => false,
        };
        let _ = lost_sender.send(lost_leadership);
        let _ = done_sender.send(());
    });
    run(client, settings, async move {
        let _ = done.await;
    })
    .await;
    lost.await.unwrap_or(false)
}

async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone, which happens only after it sent.
    let _ = stop.wait_for(|stopping| *stopping).await;
}
