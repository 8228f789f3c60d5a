//! B4: REST reads on the runtime beside the floor's constant route.
//!
//! The runtime serves two reads on a seeded tenant: a history read (the
//! newest page of 50 messages of a channel) and a channel list (the first
//! page of a user's channels). The floor serves `GET /constant`. For each of
//! the three, a closed loop on keep-alive connections measures capacity, and
//! an open loop paced at 25 %, 50 % and 80 % of that capacity measures
//! latency. The floor is also paced at the same absolute rate as each
//! runtime level, so every runtime latency has a floor latency to compare
//! with.
//!
//! This module also owns the HTTP load generator used here: the closed loop,
//! the paced open loop and the latency statistics. [`route_floor`] gives B0
//! the floor's figures alone.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::Context;
use crate::report::{Benchmark, Chart, Figure, Line, Scale};
use crate::servers::Server;
use crate::system::CpuMeter;
use crate::tenant::{self, Api, TENANT};

/// Users of the seeded tenant, named `reader-0` and up.
const USERS: usize = 10;
const USER_PREFIX: &str = "reader-";
/// Channels of each user: a direct channel with each other user, and groups
/// of all users for the rest.
const CHANNELS_PER_USER: usize = 50;
const GROUPS: usize = CHANNELS_PER_USER - (USERS - 1);
/// More than one page, so the newest page is full and older messages exist.
const MESSAGES_PER_CHANNEL: usize = 60;
/// Page size of history reads and channel lists, the API's default.
const PAGE_SIZE: usize = 50;
/// Requests in flight while the tenant is seeded.
const SEED_CONCURRENCY: usize = 64;

/// Keep-alive connections of the closed loop. With the server on one core,
/// 32 requests in flight keep it busy while each waits for its response.
const CONNECTIONS: usize = 32;
/// Load levels of the open loop, as shares of the closed-loop capacity.
const LEVELS: [f64; 3] = [0.25, 0.5, 0.8];
/// The level whose latency distribution is charted.
const CHARTED_LEVEL: f64 = 0.5;
/// Goal for the runtime's p99 at every level.
const P99_GOAL_MS: f64 = 10.0;
/// Load generator CPU, in percent of its core, above which a run is
/// flagged as limited by the load generator.
const GENERATOR_BUSY_PERCENT: f64 = 90.0;
const GENERATOR_BUSY_NOTE: &str = " The load generator was near the limit of its core, so this run \
     measured the load generator as much as the server.";

/// A request that takes longer counts as an error ("timed out").
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait for the last responses of a paced run. Requests time out before
/// it ends, so a request still in flight then points to a bug in the load
/// generator.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(6);
/// Bytes of an error response body kept in the report.
const MAX_ERROR_BODY: usize = 200;
/// The open loop stops sending while this many requests are in flight and
/// counts the requests it skips as errors, so a stalled server cannot make
/// the load generator open connections without limit.
const MAX_IN_FLIGHT: u64 = 4096;
/// Largest latency the histograms hold, in microseconds; longer ones are
/// recorded as this value.
const HISTOGRAM_MAX_MICROS: u64 = 60_000_000;
/// Percentiles drawn in the latency distribution chart, where the run has
/// enough samples for them.
const CHART_PERCENTILES: [f64; 10] = [
    50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999,
];

/// Runs B4.
pub async fn run(ctx: &Context) -> anyhow::Result<Benchmark> {
    let duration = Duration::from_secs_f64(ctx.profile.rest_seconds);
    let runtime_folder = ctx.folder("b4-runtime")?;
    let runtime = tenant::start_runtime(&runtime_folder).await?;
    let floor_folder = ctx.folder("b4-floor")?;
    let floor = Server::floor(floor_folder.join("floor.log")).await?;
    let http = http_client()?;

    let dataset = seed(&runtime, &http).await?;
    let operations = [
        Workload::new("history read", "history", dataset.history)?,
        Workload::new("channel list", "channel-list", dataset.channel_lists)?,
    ];
    let constant = Workload::constant(&floor)?;

    let constant_capacity = measure_capacity(&http, &constant, &floor, duration).await?;
    let mut constant_levels = Vec::new();
    for share in LEVELS {
        let rate = constant_capacity.rate * share;
        let run = open_loop(&http, &constant, &floor, rate, duration).await?;
        constant_levels.push(Level { share, run });
    }

    let mut results = Vec::new();
    for workload in operations {
        let capacity = measure_capacity(&http, &workload, &runtime, duration).await?;
        let mut levels = Vec::new();
        for share in LEVELS {
            let rate = capacity.rate * share;
            let product = open_loop(&http, &workload, &runtime, rate, duration).await?;
            let floor_run = open_loop(&http, &constant, &floor, rate, duration).await?;
            levels.push(ComparedLevel {
                share,
                product,
                floor: floor_run,
            });
        }
        results.push(OperationResult {
            workload,
            capacity,
            levels,
        });
    }

    let mut benchmark = Benchmark::new("B4", "REST: history reads and channel lists");
    describe_setup(&mut benchmark, &dataset.counts);
    for result in &results {
        add_operation_figures(&mut benchmark, result, &constant_capacity);
    }
    add_constant_figures(&mut benchmark, &constant_capacity, &constant_levels);
    for result in &results {
        benchmark.charts.push(throughput_chart(result));
    }
    benchmark
        .charts
        .push(constant_throughput_chart(&constant_levels));
    benchmark
        .charts
        .push(distribution_chart(&results, &constant_levels));
    Ok(benchmark)
}

/// Measures the floor's `GET /constant` alone: its capacity, its p99 at
/// half of that capacity, and the errors of both runs.
pub async fn route_floor(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let duration = Duration::from_secs_f64(ctx.profile.rest_seconds);
    let folder = ctx.folder("b0-route-floor")?;
    let floor = Server::floor(folder.join("floor.log")).await?;
    let http = http_client()?;
    let constant = Workload::constant(&floor)?;

    let capacity = measure_capacity(&http, &constant, &floor, duration).await?;
    let half = open_loop(&http, &constant, &floor, capacity.rate * 0.5, duration).await?;
    Ok(vec![
        Figure::new("GET /constant: capacity", "requests/s", capacity.rate)
            .with_generator_cpu(capacity.generator_cpu_percent),
        Figure::new(
            format!(
                "GET /constant: p99 at 50 % of capacity ({})",
                rate_label(half.rate)
            ),
            "ms",
            half.latency.p99_ms,
        )
        .with_generator_cpu(half.generator_cpu_percent),
        Figure::new(
            "GET /constant: errors at capacity and at 50 %",
            "requests",
            (capacity.tally.errors.total() + half.tally.errors.total()) as f64,
        ),
    ])
}

// ---------------------------------------------------------------------------
// Seeding

/// Requests to spread a load over, and what was seeded for them.
struct Dataset {
    history: Vec<Target>,
    channel_lists: Vec<Target>,
    counts: SeedCounts,
}

struct SeedCounts {
    channels: usize,
    messages: usize,
}

/// A seeded channel and the users who may read it.
struct SeededChannel {
    id: String,
    members: Vec<String>,
}

/// Creates the users, their channels and the messages, then builds one
/// history target per channel and member and one channel list target per
/// user, and checks that each kind of read returns a full page.
async fn seed(runtime: &Server, http: &reqwest::Client) -> anyhow::Result<Dataset> {
    let api = Api::new(runtime);
    api.create_users(USER_PREFIX, 0..USERS)
        .await
        .context("failed to create the users")?;
    let users: Vec<String> = (0..USERS)
        .map(|index| format!("{USER_PREFIX}{index}"))
        .collect();
    let mut headers = BTreeMap::new();
    for user in &users {
        headers.insert(user.clone(), user_headers(user)?);
    }

    let mut channels = open_direct_channels(http, api.base(), &users, &headers).await?;
    for group in 0..GROUPS {
        let id = api
            .create_group(&format!("bench group {group}"), &users)
            .await
            .with_context(|| format!("failed to create group {group}"))?;
        channels.push(SeededChannel {
            id,
            members: users.clone(),
        });
    }
    post_messages(http, api.base(), &channels, &headers).await?;

    let mut history = Vec::new();
    for channel in &channels {
        for member in &channel.members {
            let url = format!(
                "{}/v1/channels/{}/messages?limit={PAGE_SIZE}",
                api.base(),
                channel.id
            );
            history.push(Target::new(&url, lookup(&headers, member)?.clone())?);
        }
    }
    let mut channel_lists = Vec::new();
    for user in &users {
        let url = format!("{}/v1/channels?limit={PAGE_SIZE}", api.base());
        channel_lists.push(Target::new(&url, lookup(&headers, user)?.clone())?);
    }

    check_page(http, &history, "messages").await?;
    check_page(http, &channel_lists, "channels").await?;
    Ok(Dataset {
        history,
        channel_lists,
        counts: SeedCounts {
            channels: channels.len(),
            messages: channels.len() * MESSAGES_PER_CHANNEL,
        },
    })
}

/// Opens a direct channel between every pair of users.
async fn open_direct_channels(
    http: &reqwest::Client,
    base: &str,
    users: &[String],
    headers: &BTreeMap<String, HeaderMap>,
) -> anyhow::Result<Vec<SeededChannel>> {
    let mut pairs = Vec::new();
    for (index, first) in users.iter().enumerate() {
        for second in &users[index + 1..] {
            pairs.push((first.clone(), second.clone()));
        }
    }
    let url = format!("{base}/v1/channels/direct");
    let results: Vec<anyhow::Result<SeededChannel>> = futures_util::stream::iter(pairs)
        .map(|(first, second)| {
            let url = url.clone();
            async move {
                let response = http
                    .post(&url)
                    .headers(lookup(headers, &first)?.clone())
                    .json(&json!({"user_id": second}))
                    .send()
                    .await
                    .with_context(|| format!("failed to open a direct channel for {first}"))?;
                let channel = response_json(response, "open a direct channel").await?;
                let Some(id) = channel["id"].as_str() else {
                    bail!("opening a direct channel returned no id: {channel}");
                };
                Ok(SeededChannel {
                    id: id.to_owned(),
                    members: vec![first, second],
                })
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Posts [`MESSAGES_PER_CHANNEL`] text messages to every channel, sent by
/// its members in turn.
async fn post_messages(
    http: &reqwest::Client,
    base: &str,
    channels: &[SeededChannel],
    headers: &BTreeMap<String, HeaderMap>,
) -> anyhow::Result<()> {
    let sends = channels
        .iter()
        .enumerate()
        .flat_map(|(channel_index, channel)| {
            (0..MESSAGES_PER_CHANNEL).map(move |number| (channel_index, channel, number))
        });
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(sends)
        .map(|(channel_index, channel, number)| async move {
            let sender = &channel.members[number % channel.members.len()];
            let body = json!({
                "client_id": format!("seed-{channel_index}-{number}"),
                "content": {
                    "kind": "text",
                    "text": format!("Message {number} of the seeded history, long enough to look like chat."),
                },
            });
            let response = http
                .post(format!("{base}/v1/channels/{}/messages", channel.id))
                .headers(lookup(headers, sender)?.clone())
                .json(&body)
                .send()
                .await
                .with_context(|| format!("failed to send a message to {}", channel.id))?;
            response_json(response, "send a message").await.map(|_| ())
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Reads the first target and fails unless its `field` array contains a
/// full page, since a short page would measure a lighter read than intended.
async fn check_page(http: &reqwest::Client, targets: &[Target], field: &str) -> anyhow::Result<()> {
    let Some(target) = targets.first() else {
        bail!("no {field} targets were seeded");
    };
    let response = http
        .get(target.url.clone())
        .headers(target.headers.clone())
        .send()
        .await
        .with_context(|| format!("failed to read {}", target.url))?;
    let page = response_json(response, "read a page").await?;
    let length = page[field].as_array().map_or(0, Vec::len);
    if length != PAGE_SIZE {
        bail!(
            "{} returned {length} {field}, expected a full page of {PAGE_SIZE}",
            target.url
        );
    }
    Ok(())
}

async fn response_json(response: reqwest::Response, operation: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{operation} failed with {status}: {body}");
    }
    Ok(body)
}

/// Headers of every request of `user`: a locally signed token and the
/// tenant.
fn user_headers(user: &str) -> anyhow::Result<HeaderMap> {
    let token = tenant::token(user)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).context("invalid token header")?,
    );
    headers.insert(
        HeaderName::from_static("x-parley-tenant"),
        HeaderValue::from_static(TENANT),
    );
    Ok(headers)
}

fn lookup<'a>(
    headers: &'a BTreeMap<String, HeaderMap>,
    user: &str,
) -> anyhow::Result<&'a HeaderMap> {
    headers
        .get(user)
        .with_context(|| format!("no token for user {user}"))
}

// ---------------------------------------------------------------------------
// Load generation

/// Builds the load generator's client.
///
/// reqwest is used rather than hyper directly because it is not where the
/// load generator's CPU goes. A `perf` profile of a quick B4 run on a
/// 2-vCPU AMD EPYC VM put the load generator's CPU at about 17 µs per
/// `GET /constant` request at capacity, half of it in the kernel. reqwest,
/// hyper, URL parsing and their allocations took about half of the other
/// half, so dropping reqwest would save at most about a quarter. The load
/// generator's CPU is reported beside every throughput figure, so a run
/// that it limits shows. `no_proxy` keeps every request on loopback
/// whatever proxy the environment names.
fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(None)
        .build()
        .context("failed to build the HTTP client")
}

/// One request: a URL and its headers, built once before the load starts.
#[derive(Clone)]
struct Target {
    url: reqwest::Url,
    headers: HeaderMap,
}

impl Target {
    fn new(url: &str, headers: HeaderMap) -> anyhow::Result<Target> {
        let url = reqwest::Url::parse(url).with_context(|| format!("invalid URL {url}"))?;
        Ok(Target { url, headers })
    }
}

/// One kind of request, sent to its targets in turn. Clones share the
/// targets.
#[derive(Clone)]
struct Workload {
    /// Name in figures and notes, such as `history read`.
    name: &'static str,
    /// Name in chart file names.
    file_stem: &'static str,
    /// Never empty.
    targets: Arc<Vec<Target>>,
}

impl Workload {
    fn new(
        name: &'static str,
        file_stem: &'static str,
        targets: Vec<Target>,
    ) -> anyhow::Result<Workload> {
        if targets.is_empty() {
            bail!("the {name} workload has no targets");
        }
        Ok(Workload {
            name,
            file_stem,
            targets: Arc::new(targets),
        })
    }

    fn constant(floor: &Server) -> anyhow::Result<Workload> {
        let target = Target::new(&format!("{}/constant", floor.http_url()), HeaderMap::new())?;
        Workload::new("GET /constant", "constant", vec![target])
    }

    fn target(&self, index: u64) -> &Target {
        let position = (index % self.targets.len() as u64) as usize;
        &self.targets[position]
    }
}

/// Why a request failed: a short kind to count, and the first full message.
struct Failure {
    kind: String,
    detail: String,
}

impl Failure {
    fn from_reqwest(error: &reqwest::Error) -> Failure {
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        Failure {
            kind: kind.to_owned(),
            detail: format!("{error:#}"),
        }
    }
}

/// Sends one request and reads the whole body. A status outside 2xx is a
/// failure.
async fn send(http: &reqwest::Client, target: &Target) -> Result<(), Failure> {
    let response = http
        .get(target.url.clone())
        .headers(target.headers.clone())
        .send()
        .await
        .map_err(|error| Failure::from_reqwest(&error))?;
    let status = response.status();
    // Reading the body to its end returns the connection to the pool.
    let body = response
        .bytes()
        .await
        .map_err(|error| Failure::from_reqwest(&error))?;
    if status.is_success() {
        return Ok(());
    }
    Err(Failure {
        kind: format!("HTTP {}", status.as_u16()),
        detail: format!(
            "{} returned {status}: {}",
            target.url,
            String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)])
        ),
    })
}

/// Failed requests by kind, with the first message of each kind.
#[derive(Default)]
struct Errors {
    counts: BTreeMap<String, (u64, String)>,
}

impl Errors {
    fn add(&mut self, failure: Failure) {
        let entry = self
            .counts
            .entry(failure.kind)
            .or_insert_with(|| (0, failure.detail));
        entry.0 += 1;
    }

    fn merge(&mut self, other: Errors) {
        for (kind, (count, detail)) in other.counts {
            let entry = self.counts.entry(kind).or_insert_with(|| (0, detail));
            entry.0 += count;
        }
    }

    fn total(&self) -> u64 {
        self.counts.values().map(|(count, _)| count).sum()
    }

    /// Counts per kind with one message each, or `None` without errors.
    fn describe(&self) -> Option<String> {
        if self.counts.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(kind, (count, detail))| format!("{count} × {kind} (first: {detail})"))
            .collect();
        Some(parts.join("; "))
    }
}

#[derive(Default)]
struct Tally {
    successes: u64,
    errors: Errors,
}

impl Tally {
    fn add(&mut self, outcome: Result<(), Failure>) {
        match outcome {
            Ok(()) => self.successes += 1,
            Err(failure) => self.errors.add(failure),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.successes += other.successes;
        self.errors.merge(other.errors);
    }
}

/// Closed-loop result: successful requests per second with
/// [`CONNECTIONS`] requests in flight.
struct Capacity {
    rate: f64,
    tally: Tally,
    generator_cpu_percent: f64,
    /// Server CPU time per successful request, in microseconds.
    server_cpu_micros: f64,
}

/// Runs a short closed loop to open the connections and warm the server,
/// then measures capacity for `duration`. Fails when no request succeeded,
/// because every paced level is a share of this rate.
async fn measure_capacity(
    http: &reqwest::Client,
    workload: &Workload,
    server: &Server,
    duration: Duration,
) -> anyhow::Result<Capacity> {
    let warm_up = duration.mul_f64(0.2).min(Duration::from_secs(1));
    closed_loop(http, workload, warm_up).await?;

    let generator = CpuMeter::start_self()?;
    let server_cpu = server.cpu_meter()?;
    let started = Instant::now();
    let tally = closed_loop(http, workload, duration).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let server_seconds = server_cpu.cpu_seconds()?;
    let generator_cpu_percent = generator.percent()?;

    if tally.successes == 0 {
        bail!(
            "no {} request succeeded in the closed loop: {}",
            workload.name,
            tally.errors.describe().unwrap_or_default()
        );
    }
    Ok(Capacity {
        rate: tally.successes as f64 / elapsed,
        server_cpu_micros: server_seconds * 1e6 / tally.successes as f64,
        generator_cpu_percent,
        tally,
    })
}

/// Sends requests on [`CONNECTIONS`] workers, each sending its next request
/// as soon as the previous one has its response, until `duration` has
/// passed.
async fn closed_loop(
    http: &reqwest::Client,
    workload: &Workload,
    duration: Duration,
) -> anyhow::Result<Tally> {
    let deadline = Instant::now() + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONNECTIONS as u64 {
        let http = http.clone();
        let workload = workload.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            let mut index = worker;
            while Instant::now() < deadline {
                tally.add(send(&http, workload.target(index)).await);
                index += CONNECTIONS as u64;
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = workers.join_next().await {
        total.merge(joined.context("a closed-loop worker stopped")?);
    }
    Ok(total)
}

/// Latencies and outcomes of a paced run, shared by its request tasks.
struct Recorder {
    /// Microseconds from each request's scheduled send time to its outcome,
    /// failures included, so a stall shows however few requests it delays.
    histogram: Histogram<u64>,
    tally: Tally,
}

fn lock(recorder: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Result of an open-loop run at one request rate.
struct Paced {
    /// Scheduled requests per second.
    rate: f64,
    /// Successful requests per second over the run.
    achieved_rate: f64,
    scheduled: u64,
    tally: Tally,
    latency: Latency,
    histogram: Histogram<u64>,
    /// How late the pacing thread handed requests over, in microseconds.
    /// This share of each latency is the load generator's own.
    pacing_lateness: Histogram<u64>,
    generator_cpu_percent: f64,
    server_cpu_percent: f64,
    /// Server CPU time per successful request, in microseconds.
    server_cpu_micros: f64,
}

/// Sends requests at `rate` per second for `duration`, each at its
/// scheduled time whether or not earlier ones have their responses, and
/// waits for the last responses.
///
/// A blocking thread does the pacing with `std::thread::sleep`, whose
/// precision is tens of microseconds where tokio's timer rounds to whole
/// milliseconds. Latency runs from the scheduled time, so a send that the
/// load generator itself delays counts against the server. That keeps the
/// figures honest and at worst overstates latency.
async fn open_loop(
    http: &reqwest::Client,
    workload: &Workload,
    server: &Server,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Paced> {
    if !(rate.is_finite() && rate > 0.0) {
        bail!("invalid request rate {rate} for {}", workload.name);
    }
    let recorder = Arc::new(Mutex::new(Recorder {
        histogram: new_histogram()?,
        tally: Tally::default(),
    }));
    let in_flight = Arc::new(AtomicU64::new(0));
    let dispatch = {
        let handle = tokio::runtime::Handle::current();
        let http = http.clone();
        let workload = workload.clone();
        let recorder = Arc::clone(&recorder);
        let in_flight = Arc::clone(&in_flight);
        move |index: u64, scheduled_at: Instant| {
            if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                lock(&recorder).tally.add(Err(Failure {
                    kind: "not sent".to_owned(),
                    detail: format!("{MAX_IN_FLIGHT} requests were already in flight"),
                }));
                return;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let http = http.clone();
            let workload = workload.clone();
            let recorder = Arc::clone(&recorder);
            let in_flight = Arc::clone(&in_flight);
            handle.spawn(async move {
                let outcome = send(&http, workload.target(index)).await;
                let latency = micros(scheduled_at.elapsed());
                let mut recorder = lock(&recorder);
                recorder.histogram.saturating_record(latency);
                recorder.tally.add(outcome);
                drop(recorder);
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    };

    let generator = CpuMeter::start_self()?;
    let server_cpu = server.cpu_meter()?;
    let started = Instant::now();
    let (scheduled, pacing_lateness) = tokio::task::spawn_blocking(move || {
        let mut lateness = new_histogram()?;
        let scheduled = pace(rate, duration, &mut lateness, dispatch);
        anyhow::Ok((scheduled, lateness))
    })
    .await
    .context("the pacing thread stopped")??;
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu_percent = server_cpu.percent()?;
    let server_cpu_seconds = server_cpu.cpu_seconds()?;
    let generator_cpu_percent = generator.percent()?;

    let mut recorder = lock(&recorder);
    let unanswered = in_flight.load(Ordering::Relaxed);
    for _ in 0..unanswered {
        recorder.tally.add(Err(Failure {
            kind: "unanswered".to_owned(),
            detail: format!("no outcome within {DRAIN_TIMEOUT:?} after the last send"),
        }));
    }
    let histogram = std::mem::replace(&mut recorder.histogram, new_histogram()?);
    let tally = std::mem::take(&mut recorder.tally);
    drop(recorder);
    Ok(Paced {
        rate,
        achieved_rate: tally.successes as f64 / elapsed,
        server_cpu_micros: server_cpu_seconds * 1e6 / tally.successes.max(1) as f64,
        scheduled,
        latency: Latency::from_histogram(&histogram)
            .with_context(|| format!("no {} request completed at {rate:.0}/s", workload.name))?,
        histogram,
        pacing_lateness,
        tally,
        generator_cpu_percent,
        server_cpu_percent,
    })
}

/// Calls `dispatch(index, scheduled_at)` for every request of the schedule,
/// sleeping until each one's time, and records in `lateness` how late each
/// call came, in microseconds. Returns the number of requests.
fn pace(
    rate: f64,
    duration: Duration,
    lateness: &mut Histogram<u64>,
    mut dispatch: impl FnMut(u64, Instant),
) -> u64 {
    let start = Instant::now();
    let count = scheduled_requests(rate, duration);
    for index in 0..count {
        let scheduled_at = start + send_offset(index, rate);
        let now = Instant::now();
        if scheduled_at > now {
            std::thread::sleep(scheduled_at - now);
        }
        lateness.saturating_record(micros(scheduled_at.elapsed()));
        dispatch(index, scheduled_at);
    }
    count
}

/// Whole microseconds of `duration`, for the histograms.
pub(super) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Number of requests sent at `rate` per second in `duration`, at least
/// one.
fn scheduled_requests(rate: f64, duration: Duration) -> u64 {
    ((rate * duration.as_secs_f64()).floor() as u64).max(1)
}

/// Time of request `index` after the start at `rate` per second. Each
/// offset is computed from the index, not by adding intervals, so rounding
/// never accumulates into drift.
fn send_offset(index: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(index as f64 / rate)
}

// ---------------------------------------------------------------------------
// Latency statistics

/// Creates an empty histogram of latencies in microseconds, from 1 µs to
/// 60 s at three significant digits.
pub(super) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3).context("failed to create a histogram")
}

/// Latency at `percentile` (0 to 100) in milliseconds, from a histogram in
/// microseconds, or `None` when it contains no samples.
pub(super) fn percentile_ms(histogram: &Histogram<u64>, percentile: f64) -> Option<f64> {
    if histogram.is_empty() {
        return None;
    }
    // 99.9 / 100 rounds up to 0.9990000000000001, which would make p99.9
    // of 1000 samples the largest one. Shaving 1e-12 undoes that rounding
    // and moves no rank for fewer than 10^11 samples.
    let quantile = (percentile / 100.0 - 1e-12).max(0.0);
    Some(histogram.value_at_quantile(quantile) as f64 / 1000.0)
}

/// Chart points `[percentile, ms]` for each of `percentiles` that the
/// samples can show: percentile p needs at least 1 / (1 - p / 100) samples,
/// so that at least one sample lies above it.
fn distribution_points(histogram: &Histogram<u64>, percentiles: &[f64]) -> Vec<[f64; 2]> {
    let samples = histogram.len() as f64;
    // The tolerance keeps 99.9 % of 1000 samples, which rounds to 0.99999.
    let enough = |percentile: f64| samples * (100.0 - percentile) / 100.0 >= 1.0 - 1e-9;
    percentiles
        .iter()
        .filter(|&&percentile| percentile < 100.0 && enough(percentile))
        .filter_map(|&percentile| Some([percentile, percentile_ms(histogram, percentile)?]))
        .collect()
}

struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn from_histogram(histogram: &Histogram<u64>) -> Option<Latency> {
        Some(Latency {
            p50_ms: percentile_ms(histogram, 50.0)?,
            p99_ms: percentile_ms(histogram, 99.0)?,
            p999_ms: percentile_ms(histogram, 99.9)?,
            max_ms: histogram.max() as f64 / 1000.0,
        })
    }
}

// ---------------------------------------------------------------------------
// Figures, charts and notes

struct Level {
    share: f64,
    run: Paced,
}

/// The runtime at one share of its capacity, and the floor at the same
/// request rate.
struct ComparedLevel {
    share: f64,
    product: Paced,
    floor: Paced,
}

struct OperationResult {
    workload: Workload,
    capacity: Capacity,
    levels: Vec<ComparedLevel>,
}

fn describe_setup(benchmark: &mut Benchmark, counts: &SeedCounts) {
    benchmark.note(format!(
        "Seeded {USERS} users, each a member of {CHANNELS_PER_USER} channels \
         ({} direct, {GROUPS} groups of all users): {} channels and {} messages, \
         {MESSAGES_PER_CHANNEL} per channel. Reads take pages of {PAGE_SIZE}.",
        USERS - 1,
        counts.channels,
        counts.messages
    ));
    let levels: Vec<String> = LEVELS.iter().map(|&share| share_label(share)).collect();
    benchmark.note(format!(
        "Capacity: a closed loop on {CONNECTIONS} keep-alive connections after a short warm-up. \
         Levels: an open loop paced at {} of that capacity, with latency from each request's \
         scheduled send time to its response, failures included. The floor column of a runtime \
         level is GET /constant paced at the same request rate.",
        levels.join(", ")
    ));
    benchmark.note(format!(
        "Errors are requests with a status outside 2xx, transport failures, timeouts \
         ({REQUEST_TIMEOUT:?}) and requests skipped because {MAX_IN_FLIGHT} were already in flight."
    ));
}

fn add_operation_figures(benchmark: &mut Benchmark, result: &OperationResult, constant: &Capacity) {
    let name = result.workload.name;
    let capacity = &result.capacity;
    benchmark.figures.push(
        Figure::new(format!("{name}: capacity"), "requests/s", capacity.rate)
            .with_floor(constant.rate)
            .with_generator_cpu(capacity.generator_cpu_percent),
    );
    benchmark.figures.push(
        Figure::new(
            format!("{name}: server CPU per request"),
            "µs",
            capacity.server_cpu_micros,
        )
        .with_floor(constant.server_cpu_micros),
    );
    benchmark.note(capacity_note(name, capacity));

    for level in &result.levels {
        let label = format!(
            "{name} at {} ({})",
            share_label(level.share),
            rate_label(level.product.rate)
        );
        let (product, floor) = (&level.product, &level.floor);
        benchmark.figures.push(
            Figure::new(
                format!("{label}: throughput"),
                "requests/s",
                product.achieved_rate,
            )
            .with_floor(floor.achieved_rate)
            .with_generator_cpu(product.generator_cpu_percent),
        );
        // Paced requests arrive one at a time, so they share fewer wake-ups
        // than the closed loop's and can cost more CPU each than at capacity.
        benchmark.figures.push(
            Figure::new(
                format!("{label}: server CPU per request"),
                "µs",
                product.server_cpu_micros,
            )
            .with_floor(floor.server_cpu_micros),
        );
        benchmark.figures.push(
            Figure::new(format!("{label}: p50"), "ms", product.latency.p50_ms)
                .with_floor(floor.latency.p50_ms),
        );
        let met = product.latency.p99_ms < P99_GOAL_MS;
        benchmark.figures.push(
            Figure::new(format!("{label}: p99"), "ms", product.latency.p99_ms)
                .with_floor(floor.latency.p99_ms)
                .with_target(format!("p99 < {P99_GOAL_MS} ms"), met),
        );
        benchmark.figures.push(
            Figure::new(format!("{label}: p99.9"), "ms", product.latency.p999_ms)
                .with_floor(floor.latency.p999_ms),
        );
        let errors = product.tally.errors.total();
        benchmark.figures.push(
            Figure::new(format!("{label}: errors"), "requests", errors as f64)
                .with_floor(floor.tally.errors.total() as f64)
                .with_target("no errors", errors == 0),
        );
        benchmark.note(level_note(&label, "runtime", product));
        benchmark.note(level_note(&label, "floor", floor));
    }
}

fn add_constant_figures(benchmark: &mut Benchmark, capacity: &Capacity, levels: &[Level]) {
    benchmark.figures.push(
        Figure::new(
            "GET /constant (floor): capacity",
            "requests/s",
            capacity.rate,
        )
        .with_generator_cpu(capacity.generator_cpu_percent),
    );
    benchmark.figures.push(Figure::new(
        "GET /constant (floor): server CPU per request",
        "µs",
        capacity.server_cpu_micros,
    ));
    benchmark.note(capacity_note("GET /constant (floor)", capacity));
    for level in levels {
        let label = format!(
            "GET /constant (floor) at {} ({})",
            share_label(level.share),
            rate_label(level.run.rate)
        );
        benchmark.figures.push(
            Figure::new(
                format!("{label}: throughput"),
                "requests/s",
                level.run.achieved_rate,
            )
            .with_generator_cpu(level.run.generator_cpu_percent),
        );
        benchmark.figures.push(Figure::new(
            format!("{label}: p99"),
            "ms",
            level.run.latency.p99_ms,
        ));
        benchmark.figures.push(Figure::new(
            format!("{label}: p99.9"),
            "ms",
            level.run.latency.p999_ms,
        ));
        benchmark.figures.push(Figure::new(
            format!("{label}: errors"),
            "requests",
            level.run.tally.errors.total() as f64,
        ));
        benchmark.note(level_note(&label, "floor", &level.run));
    }
}

/// Describes a paced run in one line: counts, latency, CPU and the errors
/// in full.
fn level_note(label: &str, server: &str, run: &Paced) -> String {
    let lateness = |percentile| percentile_ms(&run.pacing_lateness, percentile).unwrap_or(0.0);
    let mut note = format!(
        "{label}, {server}: {} requests scheduled, {} succeeded, {} failed; p50 {:.3} ms, \
         p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; pacing lateness p50 {:.3} ms, \
         p99 {:.3} ms; server CPU {:.0} %, load generator CPU {:.0} %.",
        run.scheduled,
        run.tally.successes,
        run.tally.errors.total(),
        run.latency.p50_ms,
        run.latency.p99_ms,
        run.latency.p999_ms,
        run.latency.max_ms,
        lateness(50.0),
        lateness(99.0),
        run.server_cpu_percent,
        run.generator_cpu_percent
    );
    if let Some(errors) = run.tally.errors.describe() {
        note.push_str(&format!(" Errors: {errors}."));
    }
    if run.generator_cpu_percent >= GENERATOR_BUSY_PERCENT {
        note.push_str(GENERATOR_BUSY_NOTE);
    }
    note
}

/// Describes a closed loop in one line: counts, CPU and the errors in full.
fn capacity_note(name: &str, capacity: &Capacity) -> String {
    let mut note = format!(
        "{name}, closed loop: {} requests succeeded, {} failed; load generator CPU {:.0} %.",
        capacity.tally.successes,
        capacity.tally.errors.total(),
        capacity.generator_cpu_percent
    );
    if let Some(errors) = capacity.tally.errors.describe() {
        note.push_str(&format!(" Errors: {errors}."));
    }
    if capacity.generator_cpu_percent >= GENERATOR_BUSY_PERCENT {
        note.push_str(GENERATOR_BUSY_NOTE);
    }
    note
}

fn throughput_chart(result: &OperationResult) -> Chart {
    let points = |select: fn(&ComparedLevel) -> &Paced| -> Vec<[f64; 2]> {
        result
            .levels
            .iter()
            .map(|level| {
                let run = select(level);
                [run.achieved_rate, run.latency.p99_ms]
            })
            .collect()
    };
    Chart {
        file_stem: format!("b4-{}-p99", result.workload.file_stem),
        title: format!("{}: p99 against throughput", result.workload.name),
        x_label: "requests/s".to_owned(),
        y_label: "p99 (ms)".to_owned(),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        lines: vec![
            Line {
                label: "runtime".to_owned(),
                points: points(|level| &level.product),
            },
            Line {
                label: "floor (GET /constant)".to_owned(),
                points: points(|level| &level.floor),
            },
        ],
    }
}

fn constant_throughput_chart(levels: &[Level]) -> Chart {
    Chart {
        file_stem: "b4-constant-p99".to_owned(),
        title: "GET /constant (floor): p99 against throughput".to_owned(),
        x_label: "requests/s".to_owned(),
        y_label: "p99 (ms)".to_owned(),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        lines: vec![Line {
            label: "floor".to_owned(),
            points: levels
                .iter()
                .map(|level| [level.run.achieved_rate, level.run.latency.p99_ms])
                .collect(),
        }],
    }
}

/// Latency by percentile at [`CHARTED_LEVEL`] of each operation's capacity.
fn distribution_chart(results: &[OperationResult], constant_levels: &[Level]) -> Chart {
    let mut lines = Vec::new();
    for result in results {
        if let Some(level) = result
            .levels
            .iter()
            .find(|level| level.share == CHARTED_LEVEL)
        {
            lines.push(Line {
                label: format!("{} (runtime)", result.workload.name),
                points: distribution_points(&level.product.histogram, &CHART_PERCENTILES),
            });
            lines.push(Line {
                label: format!("GET /constant at the {} rate", result.workload.name),
                points: distribution_points(&level.floor.histogram, &CHART_PERCENTILES),
            });
        }
    }
    if let Some(level) = constant_levels
        .iter()
        .find(|level| level.share == CHARTED_LEVEL)
    {
        lines.push(Line {
            label: "GET /constant at 50 % of its capacity".to_owned(),
            points: distribution_points(&level.run.histogram, &CHART_PERCENTILES),
        });
    }
    Chart {
        file_stem: "b4-latency-at-50".to_owned(),
        title: "Latency distribution at 50 % of capacity".to_owned(),
        x_label: "percentile".to_owned(),
        y_label: "latency (ms)".to_owned(),
        x_scale: Scale::Nines,
        y_scale: Scale::Log10,
        lines,
    }
}

fn share_label(share: f64) -> String {
    format!("{:.0} %", share * 100.0)
}

fn rate_label(rate: f64) -> String {
    format!("{rate:.0} requests/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram_of(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut histogram = new_histogram().unwrap();
        for value in values {
            histogram.record(value).unwrap();
        }
        histogram
    }

    #[test]
    fn schedule_count_for_rate_and_duration() {
        assert_eq!(scheduled_requests(1000.0, Duration::from_secs(2)), 2000);
        assert_eq!(scheduled_requests(2500.0, Duration::from_millis(100)), 250);
    }

    #[test]
    fn schedule_count_at_least_one() {
        assert_eq!(scheduled_requests(0.5, Duration::from_secs(1)), 1);
    }

    #[test]
    fn schedule_offsets_evenly_spaced() {
        assert_eq!(send_offset(0, 4000.0), Duration::ZERO);
        assert_eq!(send_offset(1, 4000.0), Duration::from_micros(250));
        assert_eq!(send_offset(4, 4000.0), Duration::from_millis(1));
    }

    #[test]
    fn schedule_offsets_do_not_drift() {
        // 1/3 ms is not a whole number of nanoseconds, so summing rounded
        // intervals would drift by 1/3 ns per request.
        let offset = send_offset(1_000_000, 3000.0);
        let exact = Duration::new(333, 333_333_333);
        assert!(
            offset.abs_diff(exact) <= Duration::from_nanos(1),
            "offset was {offset:?}"
        );
    }

    #[test]
    fn pace_dispatches_every_index_once() {
        let mut indexes = Vec::new();
        let mut lateness = new_histogram().unwrap();
        let count = pace(
            10_000.0,
            Duration::from_millis(5),
            &mut lateness,
            |index, _| indexes.push(index),
        );
        assert_eq!(count, 50);
        assert_eq!(indexes, (0..50).collect::<Vec<u64>>());
        assert_eq!(lateness.len(), 50);
    }

    #[test]
    fn pace_scheduled_times_follow_offsets() {
        let mut times = Vec::new();
        let mut lateness = new_histogram().unwrap();
        pace(
            1000.0,
            Duration::from_millis(4),
            &mut lateness,
            |_, scheduled_at| times.push(scheduled_at),
        );
        assert_eq!(times.len(), 4);
        for (index, pair) in times.windows(2).enumerate() {
            assert_eq!(
                pair[1] - pair[0],
                send_offset(index as u64 + 1, 1000.0) - send_offset(index as u64, 1000.0)
            );
        }
    }

    #[test]
    fn percentile_of_empty_histogram() {
        let histogram = new_histogram().unwrap();
        assert_eq!(percentile_ms(&histogram, 99.0), None);
    }

    #[test]
    fn percentile_in_milliseconds() {
        // 1 ms to 100 ms in steps of 1 ms.
        let histogram = histogram_of((1..=100).map(|ms| ms * 1000));
        let p50 = percentile_ms(&histogram, 50.0).unwrap();
        let p99 = percentile_ms(&histogram, 99.0).unwrap();
        let p100 = percentile_ms(&histogram, 100.0).unwrap();
        // Three significant digits: values are exact to within 0.1 %.
        assert!((p50 - 50.0).abs() <= 0.05, "p50 was {p50}");
        assert!((p99 - 99.0).abs() <= 0.1, "p99 was {p99}");
        assert!((p100 - 100.0).abs() <= 0.1, "p100 was {p100}");
    }

    #[test]
    fn percentile_sees_single_outlier() {
        let histogram = histogram_of((0..999).map(|_| 100).chain([250_000]));
        assert_eq!(percentile_ms(&histogram, 99.0), Some(0.1));
        let p999 = percentile_ms(&histogram, 99.95).unwrap();
        assert!((p999 - 250.0).abs() <= 0.25, "p99.95 was {p999}");
    }

    #[test]
    fn latency_summary_fields() {
        let histogram = histogram_of((1..=1000).map(|micros| micros * 10));
        let latency = Latency::from_histogram(&histogram).unwrap();
        assert!(
            (latency.p50_ms - 5.0).abs() <= 0.01,
            "p50 was {}",
            latency.p50_ms
        );
        assert!(
            (latency.p99_ms - 9.9).abs() <= 0.01,
            "p99 was {}",
            latency.p99_ms
        );
        assert!(
            (latency.p999_ms - 9.99).abs() <= 0.01,
            "p99.9 was {}",
            latency.p999_ms
        );
        assert!(
            (latency.max_ms - 10.0).abs() <= 0.01,
            "max was {}",
            latency.max_ms
        );
    }

    #[test]
    fn latency_summary_of_empty_histogram() {
        assert!(Latency::from_histogram(&new_histogram().unwrap()).is_none());
    }

    #[test]
    fn distribution_points_limited_by_samples() {
        // 1000 samples show percentiles up to 99.9 but not 99.95.
        let histogram = histogram_of(1..=1000);
        let points = distribution_points(&histogram, &CHART_PERCENTILES);
        let percentiles: Vec<f64> = points.iter().map(|point| point[0]).collect();
        assert_eq!(percentiles, vec![50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9]);
    }

    #[test]
    fn distribution_points_skip_hundredth_percentile() {
        let histogram = histogram_of(1..=10);
        let points = distribution_points(&histogram, &[50.0, 100.0]);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0][0], 50.0);
    }

    #[test]
    fn distribution_points_rise_with_percentile() {
        let histogram = histogram_of((1..=100_000).map(|micros| micros % 5000 + 1));
        let points = distribution_points(&histogram, &CHART_PERCENTILES);
        assert_eq!(points.len(), CHART_PERCENTILES.len());
        for pair in points.windows(2) {
            assert!(pair[1][1] >= pair[0][1], "{pair:?} is not rising");
        }
    }

    #[test]
    fn errors_counted_by_kind() {
        let mut errors = Errors::default();
        for kind in ["HTTP 503", "HTTP 503", "timed out"] {
            errors.add(Failure {
                kind: kind.to_owned(),
                detail: format!("{kind} detail"),
            });
        }
        assert_eq!(errors.total(), 3);
        assert_eq!(
            errors.describe().unwrap(),
            "2 × HTTP 503 (first: HTTP 503 detail); 1 × timed out (first: timed out detail)"
        );
    }

    #[test]
    fn errors_merged() {
        let mut first = Errors::default();
        first.add(Failure {
            kind: "HTTP 500".to_owned(),
            detail: "first".to_owned(),
        });
        let mut second = Errors::default();
        second.add(Failure {
            kind: "HTTP 500".to_owned(),
            detail: "second".to_owned(),
        });
        first.merge(second);
        assert_eq!(first.total(), 2);
        assert_eq!(first.describe().unwrap(), "2 × HTTP 500 (first: first)");
    }

    #[test]
    fn no_errors_described_as_none() {
        assert!(Errors::default().describe().is_none());
    }
}
