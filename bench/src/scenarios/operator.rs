//! B8: the operator on a real API server. For each tenant count of the
//! profile it measures the time from applying ChatTenants to every one of
//! them being Ready, beside a floor that applies the same objects with no
//! controller. Then it reads the operator's memory with every tenant Ready
//! and counts the API write requests per minute once nothing changes.
//!
//! No kubelet or deployment controller runs in the test cluster, so the
//! benchmark marks each runtime Deployment available as soon as a watch
//! shows it, as those two would once the pod started.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{CustomResourceExt, ResourceExt};
use parley_operator::build::credentials::Credentials;
use parley_operator::build::signing::SigningSecrets;
use parley_operator::build::{self, DesiredObjects};
use parley_operator::controller::apply::{self, Mode};
use parley_operator::controller::status;
use parley_operator::crd::ChatTenant;
use parley_operator::settings::OperatorSettings;
use parley_operator::{naming, render, validate};
use parley_tests::cluster::Cluster;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::Context;
use crate::report::{Benchmark, Chart, Figure, Line, Scale};
use crate::servers::{self, Server};

const ID: &str = "B8";
const TITLE: &str = "Operator: time to Ready, memory and steady-state writes";

/// Namespace of the operator's leader election Lease.
const LEASE_NAMESPACE: &str = "parley-system";
/// Name of the Lease, fixed by the operator's command line.
const LEASE_NAME: &str = "parley-operator";
/// Identity the operator holds the Lease under.
const IDENTITY: &str = "bench";
/// Namespace of the Events about ChatTenants. Events about cluster-scoped
/// objects live in `default`.
const EVENT_NAMESPACE: &str = "default";

/// ChatTenant creations, and floor tenants being applied, in flight at once.
const IN_FLIGHT: usize = 32;
/// `app.kubernetes.io/managed-by` of the floor's objects. The operator's
/// watches select its own value, so they never see the floor's objects.
const FLOOR_MANAGED_BY: &str = "parley-bench-floor";
/// Name prefixes of the unmeasured tenants that go first.
const WARM_UP: &str = "warm-up";
const WARM_UP_FLOOR: &str = "warm-up-floor";
/// Generation of a Deployment right after the API server created it.
const CREATED_GENERATION: i64 = 1;

/// Maximum wait for one setup step, such as the CRD or the leader Lease.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between polls of the API server or the operator.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Interval between checks that the operator process is still alive while
/// tenants become Ready.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(1);

/// Verbs of `apiserver_request_total` that only read; every other verb
/// writes. `WATCHLIST` is how older servers label a watch of a collection.
const READ_VERBS: [&str; 4] = ["GET", "LIST", "WATCH", "WATCHLIST"];
const RECONCILES_METRIC: &str = "parley_operator_reconciles_total";
const RECONCILE_ERRORS_METRIC: &str = "parley_operator_reconcile_errors_total";

const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;
const BYTES_PER_KIB: f64 = 1024.0;

/// Maximum wait for one count's tenants to become Ready. It only guards
/// against a stuck run.
/// NOTE: an estimate with a wide margin over the times measured on a
/// two-core machine, not a bound the operator promises.
fn ready_timeout(count: usize) -> Duration {
    Duration::from_secs_f64(60.0 + 0.5 * count as f64)
}

pub async fn run(ctx: &Context) -> anyhow::Result<Benchmark> {
    let counts = &ctx.profile.operator_tenants;
    if counts.is_empty() {
        bail!("the profile names no tenant count for the operator benchmark");
    }
    let results = measure(ctx, counts).await?;
    Ok(report(&results))
}

/// Everything B8 measured, for [`report`].
struct Results {
    /// kube-apiserver's version, such as `v1.20.2`.
    version: String,
    /// One entry per tenant count, in profile order.
    measured: Vec<Measured>,
    steady: SteadyState,
    /// Operator VmRSS in bytes before the first tenant.
    idle_rss: u64,
    /// Operator VmRSS in bytes at the end of the steady-state window.
    rss: u64,
    /// ChatTenants Ready at the end, the warm-up tenant included.
    tenants: usize,
    reconcile_errors: f64,
    /// Summaries of errors the benchmark's watches met and went on from.
    watch_errors: Vec<String>,
}

async fn measure(ctx: &Context, counts: &[usize]) -> anyhow::Result<Results> {
    let cluster = start_cluster().await?;
    let client = cluster.client.clone();
    let version = client
        .apiserver_version()
        .await
        .context("failed to read the API server version")?;
    install_crd(&client).await?;
    create_namespace(&client, LEASE_NAMESPACE).await?;

    let log_path = ctx.folder("b8-operator")?.join("operator.log");
    let operator = start_operator(&cluster.kubeconfig, log_path).await?;
    wait_until_reconciling(&client, &operator).await?;
    let idle_rss = operator.rss_bytes()?;

    let marker = DeploymentMarker::start(client.clone()).await?;
    let mut ready_watch = ReadyWatch::start(client.clone()).await?;
    // The first requests of each kind are slower on a fresh API server and
    // operator process, so one tenant of each goes first, unmeasured.
    floor_round(&client, WARM_UP_FLOOR, 1)
        .await
        .context("floor warm-up failed")?;
    operator_round(&client, &operator, &mut ready_watch, &marker, WARM_UP, 1)
        .await
        .context("operator warm-up failed")?;
    let mut measured = Vec::new();
    for &count in counts {
        let floor = floor_round(&client, &format!("floor-{count}"), count)
            .await
            .with_context(|| format!("floor with {count} tenants failed"))?;
        let prefix = format!("op-{count}");
        let applied = operator_round(
            &client,
            &operator,
            &mut ready_watch,
            &marker,
            &prefix,
            count,
        )
        .await
        .with_context(|| format!("operator with {count} tenants failed"))?;
        measured.push(Measured {
            count,
            operator: applied,
            floor,
        });
    }
    let watch_errors = [
        marker.errors.summary("Deployment"),
        ready_watch.errors.summary("ChatTenant"),
    ];
    // The window counts writes by everyone, so the benchmark's own watches
    // and status patches end before it starts.
    drop(marker);
    drop(ready_watch);

    let steady = steady_state(&client, &operator, ctx.profile.steady_state_seconds).await?;
    Ok(Results {
        version: version.git_version,
        measured,
        steady,
        idle_rss,
        rss: operator.rss_bytes()?,
        tenants: counts.iter().sum::<usize>() + 1,
        reconcile_errors: operator_metric(&operator, RECONCILE_ERRORS_METRIC).await?,
        watch_errors: watch_errors.into_iter().flatten().collect(),
    })
}

fn report(results: &Results) -> Benchmark {
    let mut benchmark = Benchmark::new(ID, TITLE);
    add_time_figures(&mut benchmark, &results.measured);
    let largest = results.measured.iter().max_by_key(|round| round.count);
    if let Some(largest) = largest {
        add_write_note(&mut benchmark, largest);
    }
    add_memory_figures(
        &mut benchmark,
        results.idle_rss,
        results.rss,
        results.tenants,
    );
    add_steady_figures(&mut benchmark, &results.steady);
    if let Some(largest) = largest {
        benchmark.charts.push(ready_chart(largest));
    }
    add_notes(
        &mut benchmark,
        &results.version,
        &results.steady,
        results.tenants,
    );
    for summary in &results.watch_errors {
        benchmark.note(summary.clone());
    }
    if results.reconcile_errors > 0.0 {
        benchmark.note(format!(
            "The operator counted {} failed reconciles. Each was retried after a backoff of 1 s or more, which \
             adds to the times above. See the operator's log for the errors.",
            results.reconcile_errors
        ));
    }
    benchmark
}

/// Starts the control plane from a thread allowed on every CPU. Child
/// processes inherit the affinity of the thread that starts them, so etcd,
/// kube-apiserver and kube-controller-manager may use every CPU rather than
/// only the load generator's.
async fn start_cluster() -> anyhow::Result<Cluster> {
    let runtime = tokio::runtime::Handle::current();
    let (sender, receiver) = oneshot::channel();
    std::thread::Builder::new()
        .name("b8-cluster".to_owned())
        .spawn(move || {
            let result = allow_every_cpu().map(|()| runtime.block_on(Cluster::start()));
            let _ = sender.send(result);
        })
        .context("failed to start a thread for the test cluster")?;
    // The harness panics when a component fails to start, which drops the
    // sender. The panic message is on standard error.
    receiver
        .await
        .context("the test cluster failed to start; see the panic message above")?
}

fn allow_every_cpu() -> anyhow::Result<()> {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;

    let mut set = CpuSet::new();
    for cpu in 0..crate::system::cpus().min(CpuSet::count()) {
        set.set(cpu).context("invalid CPU number")?;
    }
    sched_setaffinity(Pid::from_raw(0), &set).context("sched_setaffinity failed")
}

/// Creates the ChatTenant CRD and waits until the API server serves it.
async fn install_crd(client: &kube::Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(
        &PostParams::default(),
        &parley_operator::schema::chat_tenant_crd(),
    )
    .await
    .context("failed to create the ChatTenant CRD")?;
    let established = await_condition(
        crds,
        ChatTenant::crd_name(),
        conditions::is_crd_established(),
    );
    tokio::time::timeout(SETUP_TIMEOUT, established)
        .await
        .with_context(|| {
            format!("the ChatTenant CRD was not established within {SETUP_TIMEOUT:?}")
        })?
        .context("failed to watch the ChatTenant CRD")?;
    Ok(())
}

async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(name.to_owned());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("failed to create namespace {name}"))?;
    Ok(())
}

/// Starts the operator as a process of its own, so that its resident
/// memory is its own, with the cluster's admin kubeconfig.
async fn start_operator(kubeconfig: &Path, log_path: PathBuf) -> anyhow::Result<Server> {
    let listen = servers::free_address()?;
    let args: Vec<String> = [
        "run",
        "--listen",
        &listen.to_string(),
        "--lease-namespace",
        LEASE_NAMESPACE,
        "--identity",
        IDENTITY,
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    let envs = [("KUBECONFIG", kubeconfig.as_os_str())];
    Server::with_role("operator", &args, &envs, listen, "/readyz", log_path).await
}

/// Waits until the operator holds the leader Lease and its controller has
/// started. `/readyz` succeeds as soon as it has reached the API server.
async fn wait_until_reconciling(client: &kube::Client, operator: &Server) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    poll_until(
        "the operator to hold the leader Lease",
        SETUP_TIMEOUT,
        || async {
            let lease = leases
                .get_opt(LEASE_NAME)
                .await
                .context("failed to read the leader Lease")?;
            let holder = lease
                .and_then(|lease| lease.spec)
                .and_then(|spec| spec.holder_identity);
            Ok(holder.as_deref() == Some(IDENTITY))
        },
    )
    .await?;
    // The tenant gauge appears once the controller has created its cache.
    poll_until(
        "the operator's controller to start",
        SETUP_TIMEOUT,
        || async {
            Ok(operator_metrics(operator)
                .await?
                .contains("parley_operator_tenants{"))
        },
    )
    .await
}

async fn poll_until<F, Fut>(
    description: &str,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {description}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn operator_metrics(operator: &Server) -> anyhow::Result<String> {
    let url = format!("{}/metrics", operator.http_url());
    let response = reqwest::get(&url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("failed to read {url}"))?;
    response
        .text()
        .await
        .with_context(|| format!("failed to read {url}"))
}

async fn operator_metric(operator: &Server, name: &str) -> anyhow::Result<f64> {
    Ok(crate::tenant::sum_metric(
        &operator_metrics(operator).await?,
        name,
    ))
}

/// Builds a ChatTenant with every default. It sets only its tenant id,
/// equal to its name.
fn chat_tenant(name: &str) -> anyhow::Result<ChatTenant> {
    let spec = serde_json::from_value(json!({ "tenantId": name }))
        .with_context(|| format!("invalid ChatTenant spec for {name}"))?;
    Ok(ChatTenant::new(name, spec))
}

/// A task that is aborted when this handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Errors a background watch met and went on from, kept for the report.
#[derive(Default)]
struct ErrorLog {
    /// Count and the latest message.
    state: Mutex<(u64, Option<String>)>,
}

impl ErrorLog {
    fn record(&self, message: String) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 += 1;
        state.1 = Some(message);
    }

    /// Formats one line for notes and errors, or `None` when nothing failed.
    fn summary(&self, watch: &str) -> Option<String> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (count, last) = (state.0, state.1.as_deref()?);
        Some(format!(
            "The benchmark's {watch} watch met {count} error(s), the last: {last}"
        ))
    }
}

/// Marks every runtime Deployment the operator creates available, as a
/// kubelet and the deployment controller would once its pod started.
struct DeploymentMarker {
    errors: Arc<ErrorLog>,
    _task: AbortOnDrop,
}

impl DeploymentMarker {
    /// Starts watching and returns once the watch has listed what exists.
    async fn start(client: kube::Client) -> anyhow::Result<DeploymentMarker> {
        let errors = Arc::new(ErrorLog::default());
        let (listed, on_listed) = oneshot::channel();
        let task = tokio::spawn(mark_deployments(client, listed, Arc::clone(&errors)));
        let marker = DeploymentMarker {
            errors,
            _task: AbortOnDrop(task),
        };
        tokio::time::timeout(SETUP_TIMEOUT, on_listed)
            .await
            .context("timed out listing Deployments")?
            .context("the Deployment watch stopped")?;
        Ok(marker)
    }
}

async fn mark_deployments(
    client: kube::Client,
    listed: oneshot::Sender<()>,
    errors: Arc<ErrorLog>,
) {
    let selector = format!("{}={}", naming::MANAGED_BY_LABEL, naming::FIELD_MANAGER);
    let deployments: Api<Deployment> = Api::all(client.clone());
    let mut events = std::pin::pin!(
        watcher(deployments, watcher::Config::default().labels(&selector)).default_backoff()
    );
    let mut listed = Some(listed);
    let mut marked = HashSet::new();
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(event) = events.next().await {
        let deployment = match event {
            Ok(watcher::Event::Apply(deployment) | watcher::Event::InitApply(deployment)) => {
                deployment
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
                continue;
            }
            Ok(_) => continue,
            Err(error) => {
                errors.record(error.to_string());
                continue;
            }
        };
        let namespace = deployment.namespace().unwrap_or_default();
        let generation = deployment.metadata.generation;
        if status::deployment_available(&deployment)
            || !marked.insert((namespace.clone(), generation))
        {
            continue;
        }
        let (client, permits, errors) = (client.clone(), Arc::clone(&permits), Arc::clone(&errors));
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            if let Err(error) = mark_available(&client, &namespace, generation).await {
                errors.record(format!(
                    "failed to mark the Deployment in {namespace} available: {error}"
                ));
            }
        });
    }
}

/// Sets the status a deployment controller writes once one pod of
/// `generation` is available.
async fn mark_available(
    client: &kube::Client,
    namespace: &str,
    generation: Option<i64>,
) -> Result<(), kube::Error> {
    let status = DeploymentStatus {
        observed_generation: generation,
        replicas: Some(1),
        ready_replicas: Some(1),
        available_replicas: Some(1),
        updated_replicas: Some(1),
        conditions: Some(vec![DeploymentCondition {
            type_: "Available".to_owned(),
            status: "True".to_owned(),
            ..DeploymentCondition::default()
        }]),
        ..DeploymentStatus::default()
    };
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch_status(
            naming::RUNTIME,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
    Ok(())
}

/// Reports the moment each ChatTenant is first seen with `Ready=True`.
struct ReadyWatch {
    receiver: mpsc::UnboundedReceiver<(String, Instant)>,
    errors: Arc<ErrorLog>,
    _task: AbortOnDrop,
}

impl ReadyWatch {
    /// Starts watching and returns once the watch has listed what exists.
    async fn start(client: kube::Client) -> anyhow::Result<ReadyWatch> {
        let errors = Arc::new(ErrorLog::default());
        let (sender, receiver) = mpsc::unbounded_channel();
        let (listed, on_listed) = oneshot::channel();
        let task = tokio::spawn(watch_ready(client, sender, listed, Arc::clone(&errors)));
        let watch = ReadyWatch {
            receiver,
            errors,
            _task: AbortOnDrop(task),
        };
        tokio::time::timeout(SETUP_TIMEOUT, on_listed)
            .await
            .context("timed out listing ChatTenants")?
            .context("the ChatTenant watch stopped")?;
        Ok(watch)
    }

    /// Returns when each tenant in `names` became Ready. Fails when the
    /// operator process exits or `timeout` passes first.
    async fn wait_for(
        &mut self,
        names: &[String],
        operator: &Server,
        marker: &DeploymentMarker,
        timeout: Duration,
    ) -> anyhow::Result<HashMap<String, Instant>> {
        let mut pending: HashSet<&str> = names.iter().map(String::as_str).collect();
        let mut ready_at = HashMap::new();
        let deadline = Instant::now() + timeout;
        while !pending.is_empty() {
            if Instant::now() >= deadline {
                let errors = [
                    marker.errors.summary("Deployment"),
                    self.errors.summary("ChatTenant"),
                ];
                let errors: Vec<String> = errors.into_iter().flatten().collect();
                let errors = if errors.is_empty() {
                    "The benchmark's watches met no error.".to_owned()
                } else {
                    format!("{}.", errors.join(". "))
                };
                bail!(
                    "{} of {} ChatTenants were not Ready within {timeout:?}. {errors} See the operator's log {}",
                    pending.len(),
                    names.len(),
                    operator.log_path.display()
                );
            }
            match tokio::time::timeout(LIVENESS_INTERVAL, self.receiver.recv()).await {
                Ok(Some((name, at))) => {
                    if pending.remove(name.as_str()) {
                        ready_at.insert(name, at);
                    }
                }
                Ok(None) => bail!("the ChatTenant watch stopped"),
                Err(_) => {
                    // A process that exited has no resident memory left.
                    operator.rss_bytes().with_context(|| {
                        format!(
                            "the operator process exited; see {}",
                            operator.log_path.display()
                        )
                    })?;
                }
            }
        }
        Ok(ready_at)
    }
}

async fn watch_ready(
    client: kube::Client,
    sender: mpsc::UnboundedSender<(String, Instant)>,
    listed: oneshot::Sender<()>,
    errors: Arc<ErrorLog>,
) {
    let tenants: Api<ChatTenant> = Api::all(client);
    let mut events = std::pin::pin!(watcher(tenants, watcher::Config::default()).default_backoff());
    let mut listed = Some(listed);
    let mut reported = HashSet::new();
    while let Some(event) = events.next().await {
        let tenant = match event {
            Ok(watcher::Event::Apply(tenant) | watcher::Event::InitApply(tenant)) => tenant,
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
                continue;
            }
            Ok(_) => continue,
            Err(error) => {
                errors.record(error.to_string());
                continue;
            }
        };
        let conditions = tenant
            .status
            .as_ref()
            .map(|status| status.conditions.as_slice())
            .unwrap_or_default();
        let ready = status::condition_status(conditions, status::READY) == Some("True");
        if ready
            && reported.insert(tenant.name_any())
            && sender.send((tenant.name_any(), Instant::now())).is_err()
        {
            return;
        }
    }
}

/// One count of tenants, made Ready by the operator or applied by the floor.
struct Round {
    /// From the first request of the round to the last tenant done.
    all_done: Duration,
    /// Each tenant's time until done, in seconds, ascending. It runs from
    /// the tenant's create request for the operator and from the start of
    /// the round for the floor.
    per_tenant: Vec<f64>,
    /// Write requests the API server counted during the round, by
    /// `VERB resource[/subresource]`.
    writes: BTreeMap<String, f64>,
}

struct Measured {
    count: usize,
    operator: Round,
    floor: Round,
}

/// Names `prefix-0000` onwards, which are also tenant ids.
fn tenant_names(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| format!("{prefix}-{index:04}"))
        .collect()
}

/// Creates `count` ChatTenants and waits until the operator reports each
/// Ready and has recorded its Ready Event, its last write for the tenant.
async fn operator_round(
    client: &kube::Client,
    operator: &Server,
    ready_watch: &mut ReadyWatch,
    marker: &DeploymentMarker,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Round> {
    let names = tenant_names(prefix, count);
    let tenants: Api<ChatTenant> = Api::all(client.clone());
    let writes_before = apiserver_writes(client).await?;
    let started = Instant::now();
    let applied: HashMap<String, Instant> = stream::iter(names.clone())
        .map(|name| {
            let tenants = tenants.clone();
            async move {
                let tenant = chat_tenant(&name)?;
                let at = Instant::now();
                tenants
                    .create(&PostParams::default(), &tenant)
                    .await
                    .with_context(|| format!("failed to create ChatTenant {name}"))?;
                anyhow::Ok((name, at))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let ready_at = ready_watch
        .wait_for(&names, operator, marker, ready_timeout(count))
        .await?;

    let last_ready = ready_at.values().max().copied().unwrap_or(started);
    let mut per_tenant: Vec<f64> = names
        .iter()
        .filter_map(|name| {
            Some(
                ready_at
                    .get(name)?
                    .saturating_duration_since(*applied.get(name)?)
                    .as_secs_f64(),
            )
        })
        .collect();
    per_tenant.sort_by(f64::total_cmp);
    wait_for_ready_events(client, &names).await?;
    let writes = growth(&writes_before, &apiserver_writes(client).await?);
    Ok(Round {
        all_done: last_ready.saturating_duration_since(started),
        per_tenant,
        writes,
    })
}

/// Waits until the operator has recorded a Ready Event for each tenant in
/// `names`. It records the Event after the status write the watch reports,
/// so until then it is still writing.
async fn wait_for_ready_events(client: &kube::Client, names: &[String]) -> anyhow::Result<()> {
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), EVENT_NAMESPACE);
    let expected: HashSet<&str> = names.iter().map(String::as_str).collect();
    let params = ListParams::default().fields("reason=Ready");
    poll_until("a Ready Event for every tenant", SETUP_TIMEOUT, || async {
        let list = events
            .list(&params)
            .await
            .context("failed to list Events")?;
        let seen: HashSet<&str> = list
            .items
            .iter()
            .filter_map(|event| event.involved_object.name.as_deref())
            .filter(|name| expected.contains(name))
            .collect();
        Ok(seen.len() == expected.len())
    })
    .await
}

/// Applies the objects the operator would create for `count` tenants
/// directly, then marks each Deployment available as the benchmark does for
/// the operator. These are the operator's writes without its reads, status
/// writes and Events. A tenant's time runs from the start of the round, as
/// if every tenant were applied at once, so like the operator's it includes
/// the wait behind the other tenants.
async fn floor_round(client: &kube::Client, prefix: &str, count: usize) -> anyhow::Result<Round> {
    let tenants: Vec<DesiredObjects> = tenant_names(prefix, count)
        .iter()
        .map(|tenant_id| floor_objects(tenant_id))
        .collect::<anyhow::Result<_>>()?;
    let writes_before = apiserver_writes(client).await?;
    let started = Instant::now();
    let mut per_tenant: Vec<f64> = stream::iter(&tenants)
        .map(|objects| async move {
            let namespace = objects.namespace.name_any();
            for manifest in objects.manifests() {
                apply::apply(client, manifest, Mode::Always)
                    .await
                    .with_context(|| {
                        format!("failed to apply the {} of {namespace}", manifest.kind())
                    })?;
            }
            mark_available(client, &namespace, Some(CREATED_GENERATION))
                .await
                .with_context(|| {
                    format!("failed to mark the Deployment in {namespace} available")
                })?;
            anyhow::Ok(started.elapsed().as_secs_f64())
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let all_done = started.elapsed();
    per_tenant.sort_by(f64::total_cmp);
    let writes = growth(&writes_before, &apiserver_writes(client).await?);
    Ok(Round {
        all_done,
        per_tenant,
        writes,
    })
}

/// Builds the objects the operator would create for `tenant_id`, with two
/// changes so the cluster leaves them alone. They carry the floor's
/// managed-by label, which the operator does not watch. The namespace has
/// no owner reference, because the garbage collector would delete a
/// namespace whose owner ChatTenant does not exist.
fn floor_objects(tenant_id: &str) -> anyhow::Result<DesiredObjects> {
    let tenant = chat_tenant(tenant_id)?;
    let valid = validate::validate(&tenant, &OperatorSettings::default())
        .with_context(|| format!("invalid floor tenant {tenant_id}"))?;
    let credentials = Credentials::generate(tenant_id).context("failed to generate credentials")?;
    let owner = render::owner_reference(&tenant, &valid.name);
    // The floor's tenants set no hook or webhooks, so they need no signing
    // secrets.
    let signing = SigningSecrets::default();
    let mut objects = build::desired(&valid, &credentials, &signing, None, None, &owner)
        .context("failed to build the floor objects")?;
    objects.namespace.metadata.owner_references = None;
    let mut metadata = vec![
        &mut objects.namespace.metadata,
        &mut objects.quota.metadata,
        &mut objects.default_deny_policy.metadata,
        &mut objects.allow_ingress_policy.metadata,
        &mut objects.allow_dns_policy.metadata,
        &mut objects.service_account.metadata,
        &mut objects.credentials.metadata,
        &mut objects.config.metadata,
        &mut objects.deployment.metadata,
        &mut objects.service.metadata,
    ];
    if let Some(claim) = objects.data_claim.as_mut() {
        metadata.push(&mut claim.metadata);
    }
    if let Some(ingress) = objects.ingress.as_mut() {
        metadata.push(&mut ingress.metadata);
    }
    for meta in metadata {
        meta.labels.get_or_insert_default().insert(
            naming::MANAGED_BY_LABEL.to_owned(),
            FLOOR_MANAGED_BY.to_owned(),
        );
    }
    Ok(objects)
}

/// Write requests counted in one window, and the operator's reconciles.
struct SteadyState {
    seconds: f64,
    /// Growth of each write series, by `VERB resource[/subresource]`.
    writes: BTreeMap<String, f64>,
    reconciles: f64,
}

async fn steady_state(
    client: &kube::Client,
    operator: &Server,
    seconds: f64,
) -> anyhow::Result<SteadyState> {
    let writes_before = apiserver_writes(client).await?;
    let reconciles_before = operator_metric(operator, RECONCILES_METRIC).await?;
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let writes_after = apiserver_writes(client).await?;
    let reconciles_after = operator_metric(operator, RECONCILES_METRIC).await?;
    Ok(SteadyState {
        seconds,
        writes: growth(&writes_before, &writes_after),
        reconciles: reconciles_after - reconciles_before,
    })
}

/// Reads kube-apiserver's own `/metrics` with the admin credentials of
/// `client` and returns its write requests since it started.
async fn apiserver_writes(client: &kube::Client) -> anyhow::Result<BTreeMap<String, f64>> {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .context("failed to build the /metrics request")?;
    let text = client
        .request_text(request)
        .await
        .context("failed to read kube-apiserver's /metrics")?;
    Ok(write_counts(&text))
}

/// One sample line of the Prometheus text format.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(name, _)| *name == key)
            .map_or("", |(_, value)| value.as_str())
    }
}

/// Parses `name{key="value",...} value [timestamp]`. Returns `None` for
/// comments, blank lines and lines in another format.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        (labels, rest) = parse_labels(inside)?;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses the labels after a sample's `{` and returns them with the text
/// after the closing `}`.
fn parse_labels(text: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = rest.split_once('=')?;
        let quoted = after_key.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let closing = loop {
            match chars.next()? {
                (index, '"') => break index,
                // The format escapes only backslash, double quote and line feed.
                (_, '\\') => match chars.next()? {
                    (_, 'n') => value.push('\n'),
                    (_, escaped) => value.push(escaped),
                },
                (_, other) => value.push(other),
            }
        };
        labels.push((key.trim(), value));
        rest = quoted[closing + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
}

/// Sums `apiserver_request_total` over the verbs that write, keyed by
/// `VERB resource[/subresource]`. Requests on `leases` are left out,
/// because their renewals are leader election's heartbeat and not
/// reconcile work.
fn write_counts(text: &str) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    for sample in text.lines().filter_map(parse_sample) {
        let (verb, resource) = (sample.label("verb"), sample.label("resource"));
        if sample.name != "apiserver_request_total"
            || READ_VERBS.contains(&verb)
            || resource == "leases"
        {
            continue;
        }
        let mut key = format!("{verb} {resource}");
        let subresource = sample.label("subresource");
        if !subresource.is_empty() {
            key = format!("{key}/{subresource}");
        }
        *counts.entry(key).or_insert(0.0) += sample.value;
    }
    counts
}

/// Returns how much each series grew from `before` to `after`, leaving out
/// those that did not.
fn growth(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(key, value)| (key.clone(), value - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, grown)| *grown > 0.0)
        .collect()
}

fn total(counts: &BTreeMap<String, f64>) -> f64 {
    // A float sum of nothing is -0.0, which would print as a negative zero.
    counts.values().fold(0.0, |sum, count| sum + count)
}

/// Returns the nearest-rank percentile of `sorted`, which must be
/// ascending. It is the smallest value with at least `percent` % of the
/// values at or below it.
fn percentile(sorted: &[f64], percent: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Returns the points of the cumulative share of `sorted` values, each
/// `[value, percent of values at or below it]`.
fn cumulative_points(sorted: &[f64]) -> Vec<[f64; 2]> {
    let count = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(index, value)| [*value, 100.0 * (index + 1) as f64 / count])
        .collect()
}

fn add_time_figures(benchmark: &mut Benchmark, measured: &[Measured]) {
    for round in measured {
        let (operator, floor, count) = (&round.operator, &round.floor, round.count);
        if count == 1 {
            let seconds = operator.all_done.as_secs_f64();
            benchmark.figures.push(
                Figure::new("time to Ready, 1 tenant", "s", seconds)
                    .with_floor(floor.all_done.as_secs_f64())
                    .with_target("< 5 s", seconds < 5.0),
            );
            continue;
        }
        benchmark.figures.push(
            Figure::new(
                format!("time until all {count} tenants Ready"),
                "s",
                operator.all_done.as_secs_f64(),
            )
            .with_floor(floor.all_done.as_secs_f64()),
        );
        for percent in [50.0, 99.0] {
            let (Some(value), Some(floor_value)) = (
                percentile(&operator.per_tenant, percent),
                percentile(&floor.per_tenant, percent),
            ) else {
                continue;
            };
            benchmark.figures.push(
                Figure::new(
                    format!("p{percent} apply-to-Ready per tenant, {count} tenants"),
                    "s",
                    value,
                )
                .with_floor(floor_value),
            );
        }
    }
    if let Some(largest) = measured.iter().max_by_key(|round| round.count) {
        let tenants = largest.count as f64;
        benchmark.figures.push(
            Figure::new(
                format!(
                    "API writes per tenant until Ready, {} tenants",
                    largest.count
                ),
                "writes",
                total(&largest.operator.writes) / tenants,
            )
            .with_floor(total(&largest.floor.writes) / tenants),
        );
    }
}

/// Lists the writes per tenant of the largest count by request kind, so a
/// reader can see what the operator writes beyond the floor.
fn add_write_note(benchmark: &mut Benchmark, largest: &Measured) {
    let per_tenant = |writes: &BTreeMap<String, f64>| {
        let series: Vec<String> = writes
            .iter()
            .map(|(key, value)| format!("{key} {:.2}", value / largest.count as f64))
            .collect();
        series.join(", ")
    };
    benchmark.note(format!(
        "API writes per tenant with {} tenants, counted by kube-apiserver and including the benchmark's \
         creates and Deployment status patches. Operator: {}. Floor: {}.",
        largest.count,
        per_tenant(&largest.operator.writes),
        per_tenant(&largest.floor.writes)
    ));
}

fn add_memory_figures(benchmark: &mut Benchmark, idle_rss: u64, rss: u64, tenants: usize) {
    benchmark.figures.push(Figure::new(
        "operator RSS, no tenants",
        "MiB",
        idle_rss as f64 / BYTES_PER_MIB,
    ));
    benchmark.figures.push(Figure::new(
        format!("operator RSS, {tenants} tenants Ready"),
        "MiB",
        rss as f64 / BYTES_PER_MIB,
    ));
    let per_tenant = (rss as f64 - idle_rss as f64) / tenants as f64 / BYTES_PER_KIB;
    benchmark
        .figures
        .push(Figure::new("operator RSS per tenant", "KiB", per_tenant));
}

fn add_steady_figures(benchmark: &mut Benchmark, steady: &SteadyState) {
    let minutes = steady.seconds / 60.0;
    let writes = total(&steady.writes) / minutes;
    benchmark.figures.push(
        Figure::new("API writes in steady state", "/min", writes).with_target("= 0", writes == 0.0),
    );
    benchmark.figures.push(Figure::new(
        "operator reconciles in steady state",
        "/min",
        steady.reconciles / minutes,
    ));
}

fn ready_chart(largest: &Measured) -> Chart {
    Chart {
        file_stem: "b8-time-to-ready".to_owned(),
        title: format!(
            "Operator: share of {} tenants Ready against time since apply",
            largest.count
        ),
        x_label: "time since apply (s)".to_owned(),
        y_label: "tenants Ready (%)".to_owned(),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        lines: vec![
            Line {
                label: "operator".to_owned(),
                points: cumulative_points(&largest.operator.per_tenant),
            },
            Line {
                label: "floor: objects applied directly".to_owned(),
                points: cumulative_points(&largest.floor.per_tenant),
            },
        ],
    }
}

fn add_notes(benchmark: &mut Benchmark, version: &str, steady: &SteadyState, tenants: usize) {
    benchmark.note(format!(
        "kube-apiserver {version}, etcd and kube-controller-manager from the test harness, on loopback. \
         The operator is a separate process (this executable in the operator role), pinned like the other \
         servers to CPU {} when taskset exists. The benchmark is on CPU {}, and the control plane may use any CPU.",
        servers::SERVER_CPU,
        servers::LOAD_GENERATOR_CPU
    ));
    benchmark.note(format!(
        "Each count applies new ChatTenants that set only their tenantId, with {IN_FLIGHT} creations in flight, \
         while the tenants of earlier counts stay Ready. One unmeasured tenant goes first, for the operator and \
         for the floor, because the first requests of each kind are slower on a fresh server. A tenant's time \
         runs from its create request to the watch event that shows Ready=True. No kubelet runs, so the \
         benchmark marks each runtime Deployment available as soon as its watch shows it. Image pulls and pod \
         starts are therefore not in these times."
    ));
    benchmark.note(format!(
        "Floor: the benchmark builds the same objects with the operator's library and server-side applies them \
         in the operator's order, {IN_FLIGHT} tenants in flight, then marks the Deployment available. A tenant's \
         time runs from the start of the round, as if all were applied at once, so like the operator's it \
         includes the wait behind the other tenants. The floor makes no reads, status writes or Events. Its objects carry \
         another managed-by label and no owner reference, so the operator and the garbage collector leave them \
         alone."
    ));
    benchmark.note(format!(
        "Memory: VmRSS of the operator process before the first tenant, and at the end of the steady-state \
         window with all {tenants} tenants Ready, the warm-up tenant included. Per tenant is the growth divided \
         by the tenants."
    ));
    let counted = if steady.writes.is_empty() {
        "none".to_owned()
    } else {
        let series: Vec<String> = steady
            .writes
            .iter()
            .map(|(key, value)| format!("{key} {value}"))
            .collect();
        series.join(", ")
    };
    benchmark.note(format!(
        "Steady-state writes: growth of kube-apiserver's apiserver_request_total over {} s, for verbs other than \
         GET, LIST and WATCH and without Lease renewals, read from its /metrics with the admin credentials before \
         and after. The window starts once every tenant is Ready, every Ready Event is recorded and the \
         benchmark's watches have stopped. The count includes every client of the API server. Besides the \
         operator, these are kube-controller-manager (namespace, garbage-collector and PVC protection \
         controllers, which act on deleted objects, and the benchmark deletes none) and kube-apiserver's own \
         loopback clients. The harness turns off kube-apiserver's reconciler of the kubernetes Service's \
         Endpoints, which would fail and retry every 10 s on a loopback address. Counted: {counted}.",
        steady.seconds
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_with_labels() {
        let line = r#"apiserver_request_total{code="201",resource="namespaces",verb="POST"} 3"#;
        let sample = parse_sample(line).unwrap();
        assert_eq!(sample.name, "apiserver_request_total");
        assert_eq!(sample.label("verb"), "POST");
        assert_eq!(sample.label("resource"), "namespaces");
        assert_eq!(sample.label("subresource"), "");
        assert_eq!(sample.value, 3.0);
    }

    #[test]
    fn sample_without_labels_and_with_timestamp() {
        let sample = parse_sample("process_open_fds 12 1700000000000").unwrap();
        assert_eq!(sample.name, "process_open_fds");
        assert!(sample.labels.is_empty());
        assert_eq!(sample.value, 12.0);
    }

    #[test]
    fn sample_with_escapes_and_commas_in_values() {
        let line = r#"m{a="x,y}",b="say \"hi\"\n",c="back\\slash",} 1.5e+06"#;
        let sample = parse_sample(line).unwrap();
        assert_eq!(sample.label("a"), "x,y}");
        assert_eq!(sample.label("b"), "say \"hi\"\n");
        assert_eq!(sample.label("c"), "back\\slash");
        assert_eq!(sample.value, 1_500_000.0);
    }

    #[test]
    fn sample_comments_and_malformed_lines() {
        assert_eq!(parse_sample("# TYPE apiserver_request_total counter"), None);
        assert_eq!(parse_sample("   "), None);
        assert_eq!(parse_sample(r#"m{a="unterminated} 1"#), None);
        assert_eq!(parse_sample("m not-a-number"), None);
    }

    const METRICS: &str = r#"# HELP apiserver_request_total Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",resource="chattenants",subresource="",verb="GET"} 40
apiserver_request_total{code="200",resource="chattenants",subresource="",verb="LIST"} 4
apiserver_request_total{code="0",resource="deployments",subresource="",verb="WATCH"} 2
apiserver_request_total{code="201",resource="namespaces",subresource="",verb="APPLY"} 3
apiserver_request_total{code="200",resource="namespaces",subresource="",verb="APPLY"} 1
apiserver_request_total{code="200",resource="deployments",subresource="status",verb="PATCH"} 2
apiserver_request_total{code="200",resource="leases",subresource="",verb="PUT"} 50
apiserver_request_duration_seconds_count{resource="namespaces",verb="APPLY"} 9
"#;

    #[test]
    fn writes_by_verb_and_resource() {
        let counts = write_counts(METRICS);
        let expected = BTreeMap::from([
            ("APPLY namespaces".to_owned(), 4.0),
            ("PATCH deployments/status".to_owned(), 2.0),
        ]);
        assert_eq!(counts, expected);
        assert_eq!(total(&counts), 6.0);
    }

    #[test]
    fn writes_leave_out_reads_and_leases() {
        let text = "apiserver_request_total{resource=\"leases\",verb=\"PUT\"} 7\n\
                    apiserver_request_total{resource=\"pods\",verb=\"WATCHLIST\"} 7\n";
        assert!(write_counts(text).is_empty());
    }

    #[test]
    fn growth_keeps_new_and_grown_series() {
        let before = BTreeMap::from([
            ("POST events".to_owned(), 5.0),
            ("APPLY secrets".to_owned(), 2.0),
        ]);
        let after = BTreeMap::from([
            ("POST events".to_owned(), 7.0),
            ("APPLY secrets".to_owned(), 2.0),
            ("DELETE namespaces".to_owned(), 1.0),
        ]);
        let expected = BTreeMap::from([
            ("POST events".to_owned(), 2.0),
            ("DELETE namespaces".to_owned(), 1.0),
        ]);
        assert_eq!(growth(&before, &after), expected);
    }

    #[test]
    fn percentile_nearest_rank() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(5.0));
        assert_eq!(percentile(&values, 99.0), Some(10.0));
        assert_eq!(percentile(&values, 100.0), Some(10.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
    }

    #[test]
    fn percentile_of_one_and_none() {
        assert_eq!(percentile(&[0.25], 99.0), Some(0.25));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn cumulative_points_end_at_all() {
        let points = cumulative_points(&[0.1, 0.2, 0.4, 0.8]);
        assert_eq!(
            points,
            vec![[0.1, 25.0], [0.2, 50.0], [0.4, 75.0], [0.8, 100.0]]
        );
    }

    #[test]
    fn floor_objects_leave_the_operator_out() {
        let objects = floor_objects("floor-test").unwrap();
        assert_eq!(objects.namespace.metadata.owner_references, None);
        for manifest in objects.manifests() {
            let value = serde_json::to_value(manifest).unwrap();
            let managed_by = &value["metadata"]["labels"][naming::MANAGED_BY_LABEL];
            assert_eq!(managed_by, FLOOR_MANAGED_BY, "{}", manifest.kind());
        }
    }
}
