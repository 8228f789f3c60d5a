//! B3: delivery latency at half of the runtime's capacity, in rooms of 10,
//! from each message's intended send time, with every message stored and
//! fsynced before its ack. The floor carries the same absolute rate.
//!
//! Every message must be accounted for: each send acked once and delivered
//! to every member once, in order.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::Context;
use crate::client::{Kind, Target};
use crate::load::{self, RoomPlan, Rooms, StepResult};
use crate::report::{Benchmark, Chart, Figure, Line, Scale};
use crate::servers::Server;
use crate::tenant::{self, Api};

/// Members per room: a small group conversation.
const MEMBERS: usize = 10;
/// Rooms sharing the load, so several channels write at once.
const ROOMS: usize = 4;
/// Share of capacity offered.
const LOAD_SHARE: f64 = 0.5;
/// Percentiles drawn in the latency distribution chart.
const CHART_PERCENTILES: [f64; 9] = [0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99];

pub async fn run(ctx: &Context) -> anyhow::Result<Benchmark> {
    let mut benchmark = Benchmark::new("B3", "Delivery latency at half of capacity");
    let runtime = tenant::start_runtime(&ctx.folder("b3-runtime")?).await?;
    let floor = Server::floor(ctx.folder("b3-floor")?.join("floor.log")).await?;
    let api = Api::new(&runtime);

    let capacity = ctx.runtime_capacity(&runtime, &api, MEMBERS).await?;
    let deliveries_per_second = capacity * LOAD_SHARE;
    let rate_per_room = deliveries_per_second / (ROOMS * MEMBERS) as f64;
    let duration = Duration::from_secs_f64(ctx.profile.latency_seconds);

    let on_runtime = measure(&runtime, Kind::Runtime, Some(&api), rate_per_room, duration).await?;
    let on_floor = measure(&floor, Kind::Floor, None, rate_per_room, duration).await?;

    add_figures(&mut benchmark, &on_runtime, &on_floor);
    benchmark.charts.push(Chart {
        file_stem: "b3-latency-distribution".to_owned(),
        title: "Delivery latency at half of capacity".to_owned(),
        x_label: "percentile".to_owned(),
        y_label: "latency from intended send time (ms)".to_owned(),
        x_scale: Scale::Nines,
        y_scale: Scale::Log10,
        lines: vec![
            distribution("runtime delivery", &on_runtime.result.stats.latency),
            distribution("runtime ack", &on_runtime.result.stats.ack_latency),
            distribution("floor delivery", &on_floor.result.stats.latency),
        ],
    });
    benchmark.note(format!(
        "{ROOMS} rooms of {MEMBERS} members, {} publishers each, {:.0} deliveries/s offered for {} s \
         (half of the runtime's capacity of {capacity:.0}/s); the floor carries the same rate.",
        load::PUBLISHERS_PER_ROOM,
        deliveries_per_second,
        ctx.profile.latency_seconds
    ));
    benchmark.note(format!(
        "Accounting on the runtime: {} sent, {} acked, {} of {} deliveries, {} gaps, {} duplicates, {} error frames.",
        on_runtime.result.sent,
        on_runtime.result.stats.acks,
        on_runtime.result.stats.deliveries,
        on_runtime.result.expected_deliveries,
        on_runtime.gaps,
        on_runtime.duplicates,
        on_runtime.errors
    ));
    Ok(benchmark)
}

struct Measured {
    result: StepResult,
    gaps: u64,
    duplicates: u64,
    errors: u64,
}

impl Measured {
    fn accounted_for(&self) -> bool {
        self.result.complete()
            && self.result.stats.deliveries == self.result.expected_deliveries
            && self.result.stats.acks == self.result.sent
            && self.gaps == 0
            && self.duplicates == 0
            && self.errors == 0
    }
}

async fn measure(
    server: &Server,
    kind: Kind,
    api: Option<&Api>,
    rate_per_room: f64,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let target = Target {
        kind,
        addr: server.ws_addr,
    };
    let plan = RoomPlan {
        rooms: ROOMS,
        members: MEMBERS,
    };
    let mut rooms: Rooms = load::open_rooms(target, api, &plan, "b3").await?;
    let result = rooms
        .run_step(rate_per_room, duration, 0, server.pid)
        .await?;
    let measured = Measured {
        result,
        gaps: rooms.recorder.gaps.load(Ordering::Relaxed),
        duplicates: rooms.recorder.duplicates.load(Ordering::Relaxed),
        errors: rooms.recorder.errors.load(Ordering::Relaxed),
    };
    rooms.close().await;
    Ok(measured)
}

fn millis(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn add_figures(benchmark: &mut Benchmark, runtime: &Measured, floor: &Measured) {
    let latency = &runtime.result.stats.latency;
    let floor_latency = &floor.result.stats.latency;
    let targets = [
        ("p50", 0.50, 1.0),
        ("p99", 0.99, 25.0),
        ("p99.9", 0.999, 50.0),
    ];
    for (name, quantile, bound) in targets {
        let value = millis(latency, quantile);
        let figure = Figure::new(format!("delivery latency {name}"), "ms", value)
            .with_floor(millis(floor_latency, quantile))
            // Messages that never arrived are not in the histogram, so the
            // percentiles only count when every message is accounted for.
            .with_target(
                format!("< {bound} ms, every message delivered"),
                value < bound && runtime.accounted_for(),
            );
        benchmark.figures.push(figure);
    }
    let ack = &runtime.result.stats.ack_latency;
    benchmark
        .figures
        .push(Figure::new("ack latency p50", "ms", millis(ack, 0.5)));
    benchmark
        .figures
        .push(Figure::new("ack latency p99", "ms", millis(ack, 0.99)));
    benchmark.figures.push(
        Figure::new("deliveries/s", "/s", runtime.result.deliveries_per_second)
            .with_floor(floor.result.deliveries_per_second)
            .with_generator_cpu(runtime.result.generator_cpu_percent),
    );
    let lost = runtime
        .result
        .expected_deliveries
        .saturating_sub(runtime.result.stats.deliveries);
    benchmark.figures.push(
        Figure::new("messages not accounted for", "deliveries", lost as f64)
            .with_correctness_target(
                "every message acked and delivered once, in order",
                runtime.accounted_for(),
            ),
    );
}

/// Latency at each chart percentile, in milliseconds.
fn distribution(label: &str, histogram: &Histogram<u64>) -> Line {
    Line {
        label: label.to_owned(),
        points: CHART_PERCENTILES
            .iter()
            .map(|&percentile| {
                [
                    percentile,
                    histogram.value_at_percentile(percentile) as f64 / 1000.0,
                ]
            })
            .collect(),
    }
}
