//! B5: a reconnect storm. Every client drops at once, messages arrive while
//! they are away, and they all reconnect within a second of jitter and
//! resume from their last seq. Measured: the time until every client has
//! every message, the store reads each reconnect costs, and gaps and
//! duplicates, which must be zero.
//!
//! The floor has no resume, so its figure is the same storm of bare
//! reconnects: the time until every client is connected again.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use rand::Rng;

use super::Context;
use crate::client::{self, Kind, Recorder, Target};
use crate::load::{self, RoomPlan};
use crate::report::{Benchmark, Chart, Figure, Line, Scale};
use crate::servers::Server;
use crate::tenant::{self, Api};

/// Members per room.
const ROOM_SIZE: usize = 100;
/// Messages each room receives before the drop, and while clients are away.
const BEFORE_DROP: u64 = 5;
const WHILE_AWAY: u64 = 5;
/// Reconnects spread uniformly over this window.
const JITTER: Duration = Duration::from_secs(1);
/// Reconnects in flight at once; the rest wait for a slot after their
/// jitter, as a client library's connection pool would.
const MAX_CONNECTING: usize = 1024;
/// Maximum time a single client may take to resync before it counts as failed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Target: every client resynced within this time.
const TARGET_SECONDS: f64 = 5.0;

pub async fn run(ctx: &Context) -> anyhow::Result<Benchmark> {
    let mut benchmark = Benchmark::new("B5", "Reconnect storm: resume after a mass drop");
    let rooms_count = ctx.profile.storm_clients.div_ceil(ROOM_SIZE);
    let clients = rooms_count * ROOM_SIZE;
    let runtime = tenant::start_runtime(&ctx.folder("b5-runtime")?).await?;
    let api = Api::new(&runtime);

    let target = Target {
        kind: Kind::Runtime,
        addr: runtime.ws_addr,
    };
    let plan = RoomPlan {
        rooms: rooms_count,
        members: ROOM_SIZE,
    };
    let mut rooms = load::open_rooms(target, Some(&api), &plan, "b5").await?;
    let warm_up = rooms
        .run_step(BEFORE_DROP as f64, Duration::from_secs(1), 0, runtime.pid)
        .await?;
    if !warm_up.complete() {
        anyhow::bail!(
            "only {} of {} deliveries arrived before the drop",
            warm_up.stats.deliveries,
            warm_up.expected_deliveries
        );
    }
    let channels = rooms.channels.clone();
    let users = rooms.users.clone();
    rooms.close().await;

    for (room, channel) in channels.iter().enumerate() {
        for index in 0..WHILE_AWAY {
            let client_id = format!("away-{room}-{index}");
            api.send_text(
                &users[room][0],
                channel,
                &client_id,
                "sent while everyone was away",
            )
            .await?;
        }
    }

    let reads_before = api.metric("parley_store_reads").await?;
    let storm = storm(target, &channels, &users).await;
    let reads_after = api.metric("parley_store_reads").await?;
    let floor_seconds = floor_storm(ctx, clients).await?;

    let resynced = storm.times.len();
    let total_seconds = storm.times.last().copied().unwrap_or(f64::INFINITY);
    benchmark.figures.push(
        Figure::new(
            format!("time until all {clients} clients resynced"),
            "s",
            total_seconds,
        )
        .with_floor(floor_seconds)
        .with_target(
            format!("< {TARGET_SECONDS} s"),
            resynced == clients && total_seconds < TARGET_SECONDS,
        ),
    );
    benchmark.figures.push(Figure::new(
        "p99 time to resync",
        "s",
        percentile(&storm.times, 0.99),
    ));
    benchmark.figures.push(Figure::new(
        "store reads per reconnect",
        "reads",
        (reads_after - reads_before) / clients as f64,
    ));
    benchmark.add_order_figures(
        storm.recorder.gaps.load(Ordering::Relaxed),
        storm.recorder.duplicates.load(Ordering::Relaxed),
    );
    benchmark.figures.push(
        Figure::new(
            "clients that failed to resync",
            "",
            (clients - resynced) as f64,
        )
        // A client that never receives its last messages sees no later seq,
        // so no gap shows that they are missing.
        .with_correctness_target("0", resynced == clients),
    );
    if let Some(error) = &storm.first_error {
        benchmark.note(format!("First failure: {error}"));
    }
    benchmark.charts.push(Chart {
        file_stem: "b5-resync-times".to_owned(),
        title: "Reconnect storm: clients resynced over time".to_owned(),
        x_label: "seconds since the storm began".to_owned(),
        y_label: "clients resynced".to_owned(),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        lines: vec![Line {
            label: "runtime".to_owned(),
            points: storm
                .times
                .iter()
                .enumerate()
                .step_by((resynced / 200).max(1))
                .map(|(index, seconds)| [*seconds, (index + 1) as f64])
                .collect(),
        }],
    });
    benchmark.note(format!(
        "{clients} clients in rooms of {ROOM_SIZE}; {BEFORE_DROP} messages per room before the drop and \
         {WHILE_AWAY} while away; reconnects spread over {} s with at most {MAX_CONNECTING} in flight; each client \
         sends resume and waits for every missed message and the resumed frame.",
        JITTER.as_secs_f64()
    ));
    benchmark
        .note("The floor figure is the same storm of bare reconnects, with nothing to resume.");
    Ok(benchmark)
}

struct Storm {
    /// Seconds from the start of the storm to each client's resync, sorted.
    times: Vec<f64>,
    recorder: std::sync::Arc<Recorder>,
    first_error: Option<String>,
}

async fn storm(target: Target, channels: &[String], users: &[Vec<String>]) -> Storm {
    let recorder = std::sync::Arc::new(Recorder::default());
    let started = Instant::now();
    let mut rng = rand::rng();
    let mut clients: Vec<(Duration, &str, &str)> = Vec::new();
    for (room, members) in users.iter().enumerate() {
        for user in members {
            let jitter = JITTER.mul_f64(rng.random::<f64>());
            clients.push((jitter, user, &channels[room]));
        }
    }
    clients.sort_by_key(|client| client.0);

    let attempts = clients.into_iter().map(|(jitter, user, channel)| {
        let recorder = recorder.clone();
        async move {
            tokio::time::sleep_until((started + jitter).into()).await;
            let resynced = async {
                let mut socket = client::connect(target, user, channel, None).await?;
                client::resume(
                    &mut socket,
                    channel,
                    BEFORE_DROP,
                    BEFORE_DROP + WHILE_AWAY,
                    &recorder,
                )
                .await?;
                anyhow::Ok(socket)
            };
            let socket = tokio::time::timeout(CLIENT_TIMEOUT, resynced)
                .await
                .context("timed out")??;
            // Held open until every client has resynced, as real clients stay.
            anyhow::Ok((started.elapsed().as_secs_f64(), socket))
        }
    });
    let results: Vec<anyhow::Result<(f64, client::Socket)>> = futures_util::stream::iter(attempts)
        .buffer_unordered(MAX_CONNECTING)
        .collect()
        .await;

    let mut times = Vec::new();
    let mut first_error = None;
    for result in results {
        match result {
            Ok((seconds, _socket)) => times.push(seconds),
            Err(error) => {
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    times.sort_by(f64::total_cmp);
    Storm {
        times,
        recorder,
        first_error,
    }
}

/// The same storm against the floor: seconds until every client is
/// connected again.
async fn floor_storm(ctx: &Context, clients: usize) -> anyhow::Result<f64> {
    let floor = Server::floor(ctx.folder("b5-floor")?.join("floor.log")).await?;
    let target = Target {
        kind: Kind::Floor,
        addr: floor.ws_addr,
    };
    let started = Instant::now();
    let mut rng = rand::rng();
    let mut jitters: Vec<Duration> = (0..clients)
        .map(|_| JITTER.mul_f64(rng.random::<f64>()))
        .collect();
    jitters.sort();
    let attempts = jitters
        .into_iter()
        .enumerate()
        .map(|(index, jitter)| async move {
            tokio::time::sleep_until((started + jitter).into()).await;
            let socket =
                client::connect(target, "", &format!("storm{}", index / ROOM_SIZE), None).await?;
            anyhow::Ok((started.elapsed().as_secs_f64(), socket))
        });
    let results: Vec<anyhow::Result<(f64, client::Socket)>> = futures_util::stream::iter(attempts)
        .buffer_unordered(MAX_CONNECTING)
        .collect()
        .await;
    let mut latest: f64 = 0.0;
    for result in results {
        latest = latest.max(result?.0);
    }
    Ok(latest)
}

fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_sorted_times() {
        let times: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&times, 0.99), 99.0);
        assert_eq!(percentile(&times, 1.0), 100.0);
        assert_eq!(percentile(&[3.0], 0.5), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
