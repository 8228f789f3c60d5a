//! B6: slow consumers. Rooms of 100 carry half of the runtime's capacity;
//! then one member in every hundred stops reading its socket. The other
//! members' p99 must stay within 10 % of what it was, and the server's
//! memory must stop growing, because each socket's outgoing queue is
//! bounded and a socket that falls behind is closed.
//!
//! The floor runs the same two phases at the same rate.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Context;
use crate::client::{Kind, Target};
use crate::load::{self, RoomPlan, Rooms, StepResult};
use crate::report::{Benchmark, Chart, Figure, Line, Scale};
use crate::servers::Server;
use crate::tenant::{self, Api};

const ROOM_SIZE: usize = 100;
/// Share of the runtime's capacity offered in both phases.
const LOAD_SHARE: f64 = 0.5;
/// Interval between memory samples.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// Largest growth of resident memory over the second half of the slow
/// phase that still counts as bounded.
const BOUNDED_GROWTH_BYTES: f64 = 4.0 * 1024.0 * 1024.0;

struct Phases {
    baseline: StepResult,
    slow: StepResult,
    /// Deliveries the members that kept reading should have had.
    expected_healthy: u64,
    /// Seconds since the slow phase began, and resident memory in MiB.
    memory: Vec<[f64; 2]>,
    /// Skipped and repeated messages over both phases.
    gaps: u64,
    duplicates: u64,
}

impl Phases {
    fn p99_ratio(&self) -> f64 {
        self.slow.p99_ms() / self.baseline.p99_ms().max(0.001)
    }

    fn growth_second_half(&self) -> f64 {
        let half = self.memory.len() / 2;
        let (Some(middle), Some(last)) = (self.memory.get(half), self.memory.last()) else {
            return 0.0;
        };
        (last[1] - middle[1]) * 1024.0 * 1024.0
    }
}

pub async fn run(ctx: &Context) -> anyhow::Result<Benchmark> {
    let mut benchmark = Benchmark::new("B6", "Slow consumers: 1 % of clients stop reading");
    let rooms_count = ctx.profile.slow_test_clients.div_ceil(ROOM_SIZE).max(1);
    let runtime = tenant::start_runtime(&ctx.folder("b6-runtime")?).await?;
    let api = Api::new(&runtime);
    let capacity = ctx.runtime_capacity(&runtime, &api, ROOM_SIZE).await?;
    let rate_per_room = capacity * LOAD_SHARE / (rooms_count * ROOM_SIZE) as f64;
    let duration = Duration::from_secs_f64(ctx.profile.slow_seconds);

    let on_runtime = phases(
        &runtime,
        Kind::Runtime,
        Some(&api),
        rooms_count,
        rate_per_room,
        duration,
    )
    .await?;
    drop(runtime);
    let floor = Server::floor(ctx.folder("b6-floor")?.join("floor.log")).await?;
    let on_floor = phases(
        &floor,
        Kind::Floor,
        None,
        rooms_count,
        rate_per_room,
        duration,
    )
    .await?;

    let ratio = on_runtime.p99_ratio();
    benchmark.figures.push(
        Figure::new(
            "p99 before slow consumers",
            "ms",
            on_runtime.baseline.p99_ms(),
        )
        .with_floor(on_floor.baseline.p99_ms()),
    );
    benchmark.figures.push(
        Figure::new(
            "p99 with 1 % slow consumers",
            "ms",
            on_runtime.slow.p99_ms(),
        )
        .with_floor(on_floor.slow.p99_ms())
        .with_generator_cpu(on_runtime.slow.generator_cpu_percent),
    );
    benchmark.figures.push(
        Figure::new("p99 with slow consumers / p99 before", "×", ratio)
            .with_floor(on_floor.p99_ratio())
            .with_target(
                "≤ 1.1, nothing missing",
                ratio <= 1.1 && on_runtime.expected_healthy <= on_runtime.slow.stats.deliveries,
            ),
    );
    let growth = on_runtime.growth_second_half();
    benchmark.figures.push(
        Figure::new(
            "server memory growth, second half of the slow phase",
            "MiB",
            growth / (1024.0 * 1024.0),
        )
        .with_floor(on_floor.growth_second_half() / (1024.0 * 1024.0))
        .with_target("< 4 MiB (bounded)", growth < BOUNDED_GROWTH_BYTES),
    );
    let missing = on_runtime
        .expected_healthy
        .saturating_sub(on_runtime.slow.stats.deliveries);
    benchmark.figures.push(
        Figure::new(
            "deliveries missing for members that kept reading",
            "",
            missing as f64,
        )
        .with_correctness_target("0", missing == 0),
    );
    benchmark.add_order_figures(on_runtime.gaps, on_runtime.duplicates);
    benchmark.charts.push(Chart {
        file_stem: "b6-memory".to_owned(),
        title: "Server memory while 1 % of clients do not read".to_owned(),
        x_label: "seconds since the slow consumers stopped reading".to_owned(),
        y_label: "resident memory (MiB)".to_owned(),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        lines: vec![
            Line {
                label: "runtime".to_owned(),
                points: on_runtime.memory.clone(),
            },
            Line {
                label: "floor".to_owned(),
                points: on_floor.memory.clone(),
            },
        ],
    });
    benchmark.note(format!(
        "{rooms_count} rooms of {ROOM_SIZE} at {:.0} deliveries/s (half of the runtime's capacity of {capacity:.0}/s), \
         {} s per phase; in each room the last member stops reading but keeps its socket open.",
        rate_per_room * (rooms_count * ROOM_SIZE) as f64,
        ctx.profile.slow_seconds
    ));
    Ok(benchmark)
}

async fn phases(
    server: &Server,
    kind: Kind,
    api: Option<&Api>,
    rooms_count: usize,
    rate_per_room: f64,
    duration: Duration,
) -> anyhow::Result<Phases> {
    let target = Target {
        kind,
        addr: server.ws_addr,
    };
    let plan = RoomPlan {
        rooms: rooms_count,
        members: ROOM_SIZE,
    };
    let mut rooms: Rooms = load::open_rooms(target, api, &plan, "b6").await?;
    let baseline = rooms
        .run_step(rate_per_room, duration, 0, server.pid)
        .await?;

    // Readers are in room order; the last member of each room stops reading
    // while its socket stays open, because its write half is still held.
    for room in 0..rooms_count {
        rooms.readers[room * ROOM_SIZE + ROOM_SIZE - 1].abort();
    }
    let pid = server.pid;
    let sampler = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut samples = Vec::new();
        loop {
            if let Ok(rss) = crate::system::rss_bytes(pid) {
                samples.push([
                    started.elapsed().as_secs_f64(),
                    rss as f64 / (1024.0 * 1024.0),
                ]);
            }
            if started.elapsed() > duration {
                return samples;
            }
            tokio::time::sleep(SAMPLE_INTERVAL).await;
        }
    });
    let slow = rooms
        .run_step(rate_per_room, duration, 1, server.pid)
        .await?;
    let memory = sampler.await?;
    let gaps = rooms.recorder.gaps.load(Ordering::Relaxed);
    let duplicates = rooms.recorder.duplicates.load(Ordering::Relaxed);
    rooms.close().await;

    Ok(Phases {
        expected_healthy: slow.sent * (ROOM_SIZE as u64 - 1),
        baseline,
        slow,
        memory,
        gaps,
        duplicates,
    })
}
