//! B2: the highest deliveries per second each server sustains with p99
//! latency under 25 ms, for rooms of 10 to 10,000 members, and the server
//! CPU each delivery costs.
//!
//! The offered rate grows by half each step until a step misses the p99
//! bound, loses a delivery or has a socket closed. When every socket is
//! still open, a few more steps then bisect between the last rate that
//! passed and the first that failed. The highest step that passed is the
//! capacity.

use std::time::Duration;

use super::Context;
use crate::client::{Kind, Target};
use crate::load::{self, RoomPlan, StepResult};
use crate::report::{Benchmark, Chart, Figure, Line, Scale};
use crate::servers::Server;
use crate::tenant::{self, Api};

/// The latency bound a step must meet to count.
pub const P99_BOUND_MS: f64 = 25.0;
/// Growth of the offered rate from one step to the next.
const STEP_GROWTH: f64 = 1.5;
/// Members connected at once in a search: small rooms come many at a time,
/// as on a real server, so the runtime's group commit sees the writes of
/// many rooms and not only of one room's publishers.
const MEMBERS_PER_SEARCH: usize = 1_000;
/// Load generator CPU, in percent of its core, above which a capacity may
/// be the load generator's rather than the server's.
const GENERATOR_BUSY_PERCENT: f64 = 80.0;
/// Steps before a search gives up growing.
const MAX_STEPS: u32 = 16;
/// Steps that bisect between the last passing and the first failing rate.
/// Three of them narrow a factor of 1.5 to about 1.05, so a capacity is
/// not understated by up to a third only because of where the steps fell.
const REFINE_STEPS: u32 = 3;

/// One step's figures, kept for the report.
#[derive(Debug, Clone, Copy)]
pub struct StepSummary {
    pub offered: f64,
    pub achieved: f64,
    pub p99_ms: f64,
    pub cpu_micros_per_delivery: f64,
    pub generator_cpu_percent: f64,
    pub passed: bool,
}

/// The steps of one search and the best one that passed.
#[derive(Debug, Clone)]
pub struct Search {
    pub steps: Vec<StepSummary>,
    pub best: Option<StepSummary>,
}

impl Search {
    /// Deliveries per second at capacity. When not even the first step met
    /// the bound, what that step delivered, so the benchmarks that load a
    /// server to a share of its capacity still run (their figures then show
    /// the missed targets).
    pub fn capacity(&self) -> f64 {
        match (self.best, self.steps.first()) {
            (Some(best), _) => best.achieved,
            (None, Some(first)) => first.achieved,
            (None, None) => 0.0,
        }
    }
}

impl Search {
    /// Returns each step's deliveries per second and p99, by increasing
    /// throughput, so the bisecting steps fall in place on the chart.
    pub fn points(&self) -> Vec<[f64; 2]> {
        let mut points: Vec<[f64; 2]> = self
            .steps
            .iter()
            .map(|step| [step.achieved, step.p99_ms])
            .collect();
        points.sort_by(|a, b| a[0].total_cmp(&b[0]));
        points
    }
}

/// Rooms of `members` that one search loads at once.
pub fn rooms_for(members: usize) -> usize {
    (MEMBERS_PER_SEARCH / members.max(1)).max(1)
}

/// Runs one step at `rate` messages per second per room and logs it.
async fn run_step(
    rooms: &mut load::Rooms,
    server: &Server,
    kind: Kind,
    members: usize,
    rate: f64,
    duration: Duration,
    step: u32,
) -> anyhow::Result<StepSummary> {
    let result = rooms.run_step(rate, duration, step, server.pid).await?;
    let summary = summarize(&result);
    let ack = match kind {
        Kind::Runtime => format!(
            ", ack p99 {:.2} ms",
            result.stats.ack_latency.value_at_quantile(0.99) as f64 / 1000.0
        ),
        // The floor sends no acks.
        Kind::Floor => String::new(),
    };
    eprintln!(
        "parley-bench:   {} rooms of {members}: offered {:.0}/s, delivered {:.0}/s, p50 {:.2} ms, p99 {:.2} ms{ack}",
        kind.label(),
        summary.offered,
        summary.achieved,
        result.stats.latency.value_at_quantile(0.5) as f64 / 1000.0,
        summary.p99_ms,
    );
    Ok(summary)
}

fn summarize(result: &StepResult) -> StepSummary {
    let passed = result.complete() && result.p99_ms() <= P99_BOUND_MS;
    StepSummary {
        offered: result.offered_deliveries_per_second,
        achieved: result.deliveries_per_second,
        p99_ms: result.p99_ms(),
        cpu_micros_per_delivery: result.cpu_micros_per_delivery(),
        generator_cpu_percent: result.generator_cpu_percent,
        passed,
    }
}

/// Searches the capacity of one room of `members` on a running server.
pub async fn search(
    ctx: &Context,
    server: &Server,
    kind: Kind,
    api: Option<&Api>,
    members: usize,
    prefix: &str,
) -> anyhow::Result<Search> {
    let target = Target {
        kind,
        addr: server.ws_addr,
    };
    let plan = RoomPlan {
        rooms: rooms_for(members),
        members,
    };
    let mut rooms = load::open_rooms(target, api, &plan, prefix).await?;
    let duration = Duration::from_secs_f64(ctx.profile.step_seconds);
    let mut rate = (ctx.first_step_deliveries() / (plan.rooms * members) as f64)
        .max(2.0 / ctx.profile.step_seconds);

    let mut steps = Vec::new();
    let mut best: Option<StepSummary> = None;
    let mut failed_rate = None;
    for step in 0..MAX_STEPS {
        let summary = run_step(&mut rooms, server, kind, members, rate, duration, step).await?;
        steps.push(summary);
        if !summary.passed {
            failed_rate = Some(rate);
            break;
        }
        best = Some(summary);
        rate *= STEP_GROWTH;
    }

    // Rates are per room here. The last passing one is the failing one
    // divided by the growth factor.
    if let Some(mut failed) = failed_rate.filter(|_| best.is_some()) {
        let mut passed = failed / STEP_GROWTH;
        let first_refine_step = steps.len() as u32;
        for step in first_refine_step..first_refine_step + REFINE_STEPS {
            if !rooms.intact() {
                break;
            }
            let rate = (passed * failed).sqrt();
            let summary = run_step(&mut rooms, server, kind, members, rate, duration, step).await?;
            steps.push(summary);
            if summary.passed {
                passed = rate;
                if best.is_none_or(|best| summary.achieved > best.achieved) {
                    best = Some(summary);
                }
            } else {
                failed = rate;
            }
        }
    }
    rooms.close().await;
    Ok(Search { steps, best })
}

pub async fn run(ctx: &Context) -> anyhow::Result<Benchmark> {
    let mut benchmark = Benchmark::new("B2", "Fan-out: deliveries per second with p99 under 25 ms");
    let runtime = tenant::start_runtime(&ctx.folder("b2-runtime")?).await?;
    let floor = Server::floor(ctx.folder("b2-floor")?.join("floor.log")).await?;
    let api = Api::new(&runtime);

    let mut chart = Chart {
        file_stem: "b2-throughput-latency".to_owned(),
        title: "Fan-out: p99 latency against deliveries per second".to_owned(),
        x_label: "deliveries per second".to_owned(),
        y_label: "p99 latency (ms)".to_owned(),
        x_scale: Scale::Log10,
        y_scale: Scale::Log10,
        lines: Vec::new(),
    };
    for &members in &ctx.profile.room_sizes {
        let on_runtime = search(
            ctx,
            &runtime,
            Kind::Runtime,
            Some(&api),
            members,
            &format!("b2s{members}"),
        )
        .await?;
        let on_floor = search(
            ctx,
            &floor,
            Kind::Floor,
            None,
            members,
            &format!("b2s{members}"),
        )
        .await?;
        ctx.remember_capacity(Kind::Runtime, members, on_runtime.capacity());
        ctx.remember_capacity(Kind::Floor, members, on_floor.capacity());
        add_figures(&mut benchmark, members, &on_runtime, &on_floor);
        for (label, search) in [("runtime", &on_runtime), ("floor", &on_floor)] {
            chart.lines.push(Line {
                label: format!("{label}, rooms of {members}"),
                points: search.points(),
            });
        }
    }
    benchmark.charts.push(chart);
    benchmark.note(format!(
        "Rooms of up to 1,000 members one at a time, smaller rooms {MEMBERS_PER_SEARCH} members' worth at once \
         (100 rooms of 10, 10 of 100); {} publishers per room; steps of {} s, each offering {STEP_GROWTH}× the last, \
         then {REFINE_STEPS} steps bisecting between the last rate that passed and the first that failed; \
         a delivery is one message frame read by one member socket, the sender's included.",
        load::PUBLISHERS_PER_ROOM,
        ctx.profile.step_seconds
    ));
    benchmark.note("The runtime stores and fsyncs every message before delivering it; the floor stores nothing.");
    Ok(benchmark)
}

fn add_figures(benchmark: &mut Benchmark, members: usize, runtime: &Search, floor: &Search) {
    let (Some(best), floor_best) = (runtime.best, floor.best) else {
        add_first_step_figures(benchmark, members, runtime, floor);
        return;
    };
    let mut throughput = Figure::new(
        format!("deliveries/s, rooms of {members}"),
        "/s",
        best.achieved,
    )
    .with_generator_cpu(best.generator_cpu_percent);
    if let Some(floor_best) = floor_best {
        throughput = throughput.with_floor(floor_best.achieved);
    }
    if let Some(floor_best) = floor_best
        && floor_best.generator_cpu_percent >= GENERATOR_BUSY_PERCENT
    {
        benchmark.note(format!(
            "Rooms of {members}: the load generator used {:.0} % of its core at the floor's capacity, so the floor \
             may be able to deliver more than measured and the ratio may be too high.",
            floor_best.generator_cpu_percent
        ));
    }
    let ratio = throughput.ratio.unwrap_or(0.0);
    benchmark
        .figures
        .push(throughput.with_target("ratio ≥ 0.5", ratio >= 0.5));

    let mut cpu = Figure::new(
        format!("server CPU per delivery, rooms of {members}"),
        "µs",
        best.cpu_micros_per_delivery,
    );
    if let Some(floor_best) = floor_best {
        cpu = cpu.with_floor(floor_best.cpu_micros_per_delivery);
    }
    benchmark.figures.push(cpu);

    let mut p99 = Figure::new(
        format!("p99 at capacity, rooms of {members}"),
        "ms",
        best.p99_ms,
    );
    if let Some(floor_best) = floor_best {
        p99 = p99.with_floor(floor_best.p99_ms);
    }
    benchmark.figures.push(p99);
}

/// Reports a room size at which the runtime met the bound at no offered
/// rate: its capacity counts as zero, and the first step's p99 of both
/// servers shows how far off each was.
fn add_first_step_figures(
    benchmark: &mut Benchmark,
    members: usize,
    runtime: &Search,
    floor: &Search,
) {
    let Some(first) = runtime.steps.first() else {
        return;
    };
    let mut throughput = Figure::new(format!("deliveries/s, rooms of {members}"), "/s", 0.0)
        .with_generator_cpu(first.generator_cpu_percent);
    if let Some(floor_best) = floor.best {
        throughput = throughput.with_floor(floor_best.achieved);
    }
    benchmark
        .figures
        .push(throughput.with_target("ratio ≥ 0.5", false));

    let mut p99 = Figure::new(
        format!(
            "p99 at the lowest offered rate ({:.0}/s), rooms of {members}",
            first.offered
        ),
        "ms",
        first.p99_ms,
    );
    if let Some(floor_first) = floor.steps.first() {
        p99 = p99.with_floor(floor_first.p99_ms);
    }
    benchmark
        .figures
        .push(p99.with_target(format!("< {P99_BOUND_MS} ms"), false));
    if floor.best.is_none() {
        benchmark.note(format!(
            "Rooms of {members}: neither server met the p99 bound at the lowest offered rate. Each message is a \
             burst of {members} frames that the server writes and the load generator reads one after another, \
             each on one core, so the last frames of a burst arrive later than the bound allows."
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(achieved: f64, p99_ms: f64, passed: bool) -> StepSummary {
        StepSummary {
            offered: achieved,
            achieved,
            p99_ms,
            cpu_micros_per_delivery: 10.0,
            generator_cpu_percent: 50.0,
            passed,
        }
    }

    #[test]
    fn points_sorted_by_throughput() {
        // Growth steps, then bisecting steps between 3,000 and 4,500.
        let search = Search {
            steps: vec![
                step(2_000.0, 1.0, true),
                step(3_000.0, 2.0, true),
                step(4_500.0, 90.0, false),
                step(3_674.0, 30.0, false),
                step(3_320.0, 4.0, true),
            ],
            best: Some(step(3_320.0, 4.0, true)),
        };
        let throughputs: Vec<f64> = search.points().iter().map(|point| point[0]).collect();
        assert_eq!(throughputs, [2_000.0, 3_000.0, 3_320.0, 3_674.0, 4_500.0]);
        assert_eq!(search.capacity(), 3_320.0);
    }
}
