//! B7: a soak. Rooms of 10 carry a steady load while other clients connect,
//! stay a random while and disconnect, over and over. Memory and p99 are
//! read every window; what matters is whether they drift, so this benchmark
//! has no floor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;

use super::Context;
use crate::client::{self, Kind, Target};
use crate::load::{self, RoomPlan};
use crate::report::{Benchmark, Chart, Figure, Line, Scale};
use crate::tenant::{self, Api};

const ROOM_SIZE: usize = 10;
const ROOMS: usize = 10;
/// Share of the runtime's capacity (rooms of 10) the rooms carry.
const LOAD_SHARE: f64 = 0.25;
/// Windows the soak is cut into.
const WINDOWS: usize = 30;

pub async fn run(ctx: &Context) -> anyhow::Result<Benchmark> {
    let mut benchmark = Benchmark::new("B7", "Soak: connection churn over time");
    let runtime = tenant::start_runtime(&ctx.folder("b7-runtime")?).await?;
    let api = Api::new(&runtime);
    let capacity = ctx.runtime_capacity(&runtime, &api, ROOM_SIZE).await?;
    let rate_per_room = capacity * LOAD_SHARE / (ROOMS * ROOM_SIZE) as f64;
    let window = Duration::from_secs_f64(ctx.profile.soak_seconds / WINDOWS as f64);
    // Each churning client stays up to a window, so all of them turn over
    // several times during the soak.
    let longest_stay = window;

    let churners = ctx.profile.soak_clients;
    api.create_users("churn", 0..churners).await?;
    let target = Target {
        kind: Kind::Runtime,
        addr: runtime.ws_addr,
    };
    let plan = RoomPlan {
        rooms: ROOMS,
        members: ROOM_SIZE,
    };
    let mut rooms = load::open_rooms(target, Some(&api), &plan, "b7").await?;

    let running = Arc::new(AtomicBool::new(true));
    let churned = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for index in 0..churners {
        let (running, churned, failed) = (running.clone(), churned.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("churn{index}");
            while running.load(Ordering::Relaxed) {
                let stay = longest_stay.mul_f64(rand::rng().random::<f64>());
                match client::connect(target, &user, "", None).await {
                    Ok(socket) => {
                        tokio::time::sleep(stay).await;
                        drop(socket);
                        churned.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }

    let started = Instant::now();
    let mut memory = Vec::new();
    let mut p99 = Vec::new();
    let mut lost = 0;
    for index in 0..WINDOWS {
        let result = rooms
            .run_step(rate_per_room, window, index as u32, runtime.pid)
            .await?;
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        memory.push([minutes, runtime.rss_bytes()? as f64 / (1024.0 * 1024.0)]);
        p99.push([minutes, result.p99_ms()]);
        lost += result
            .expected_deliveries
            .saturating_sub(result.stats.deliveries);
    }
    running.store(false, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    let gaps = rooms.recorder.gaps.load(Ordering::Relaxed);
    let duplicates = rooms.recorder.duplicates.load(Ordering::Relaxed);
    rooms.close().await;

    add_figures(&mut benchmark, &memory, &p99, lost);
    benchmark.add_order_figures(gaps, duplicates);
    benchmark.figures.push(Figure::new(
        "connections churned",
        "",
        churned.load(Ordering::Relaxed) as f64,
    ));
    let failures = failed.load(Ordering::Relaxed);
    benchmark.figures.push(
        Figure::new("failed connection attempts", "", failures as f64)
            .with_target("0", failures == 0),
    );
    benchmark.charts.push(over_time(
        "b7-memory",
        "Soak: server memory",
        "resident memory (MiB)",
        memory,
    ));
    benchmark.charts.push(over_time(
        "b7-p99",
        "Soak: delivery p99 per window",
        "p99 latency (ms)",
        p99,
    ));
    benchmark.note(format!(
        "{:.0} s in {WINDOWS} windows; {ROOMS} rooms of {ROOM_SIZE} at {:.0} deliveries/s (a quarter of capacity); \
         {churners} other clients each connecting, staying up to {:.1} s and disconnecting, over and over.",
        ctx.profile.soak_seconds,
        rate_per_room * (ROOMS * ROOM_SIZE) as f64,
        longest_stay.as_secs_f64()
    ));
    Ok(benchmark)
}

fn add_figures(benchmark: &mut Benchmark, memory: &[[f64; 2]], p99: &[[f64; 2]], lost: u64) {
    let first_memory = memory.first().map_or(0.0, |sample| sample[1]);
    let last_memory = memory.last().map_or(0.0, |sample| sample[1]);
    benchmark.figures.push(Figure::new(
        "server memory, first window",
        "MiB",
        first_memory,
    ));
    benchmark.figures.push(Figure::new(
        "server memory, last window",
        "MiB",
        last_memory,
    ));
    let first_p99 = p99.first().map_or(0.0, |sample| sample[1]);
    let last_p99 = p99.last().map_or(0.0, |sample| sample[1]);
    let worst_p99 = p99.iter().map(|sample| sample[1]).fold(0.0, f64::max);
    benchmark
        .figures
        .push(Figure::new("p99, first window", "ms", first_p99));
    benchmark
        .figures
        .push(Figure::new("p99, last window", "ms", last_p99));
    benchmark.figures.push(
        Figure::new("p99, worst window", "ms", worst_p99).with_target("< 25 ms", worst_p99 < 25.0),
    );
    benchmark.figures.push(
        Figure::new("deliveries lost", "", lost as f64).with_correctness_target("0", lost == 0),
    );
}

fn over_time(file_stem: &str, title: &str, y_label: &str, points: Vec<[f64; 2]>) -> Chart {
    Chart {
        file_stem: file_stem.to_owned(),
        title: title.to_owned(),
        x_label: "minutes".to_owned(),
        y_label: y_label.to_owned(),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        lines: vec![Line {
            label: "runtime".to_owned(),
            points,
        }],
    }
}
