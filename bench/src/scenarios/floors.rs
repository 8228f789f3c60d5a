//! B0: the floors on their own, so a reader sees what this machine can do
//! before any Parley figure: idle connections, room broadcast, a constant
//! axum route, the bare store operation and a handshake loop. The handshake
//! loop also runs against the runtime, which adds token checks and the
//! `ready` frame to the WebSocket upgrade.

use std::time::{Duration, Instant};

use super::{Context, fanout, idle, rest, store};
use crate::client::{self, Kind, Target};
use crate::report::{Benchmark, Figure};
use crate::servers::Server;
use crate::system::CpuMeter;
use crate::tenant::{self, Api};

/// Room size of the broadcast floor, between a group chat and a channel.
const BROADCAST_MEMBERS: usize = 100;
/// Clients connecting in a loop at once in the handshake loop.
const HANDSHAKE_CLIENTS: usize = 4;
/// Users the runtime's handshake loop signs in as, in turn.
const HANDSHAKE_USERS: usize = 100;

pub async fn run(ctx: &Context) -> anyhow::Result<Benchmark> {
    let mut benchmark = Benchmark::new("B0", "Floors: the bare cost of each kind of work");
    let floor = Server::floor(ctx.folder("b0-floor")?.join("floor.log")).await?;

    let idle = idle::measure(
        &floor,
        Kind::Floor,
        None,
        ctx.profile.idle_connections,
        "b0idle",
    )
    .await?;
    benchmark.figures.push(Figure::new(
        format!("floor memory per idle connection, {}", idle.connections),
        "KiB",
        idle.server_bytes / 1024.0,
    ));

    let broadcast = fanout::search(ctx, &floor, Kind::Floor, None, BROADCAST_MEMBERS, "b0").await?;
    if let Some(best) = broadcast.best {
        benchmark.figures.push(
            Figure::new(
                format!("floor deliveries/s, rooms of {BROADCAST_MEMBERS}"),
                "/s",
                best.achieved,
            )
            .with_generator_cpu(best.generator_cpu_percent),
        );
        benchmark.figures.push(Figure::new(
            format!("floor CPU per delivery, rooms of {BROADCAST_MEMBERS}"),
            "µs",
            best.cpu_micros_per_delivery,
        ));
    }

    benchmark.figures.extend(rest::route_floor(ctx).await?);
    benchmark.figures.extend(store::run(ctx).await?);

    let seconds = ctx.profile.step_seconds.max(1.0);
    let floor_loop = handshake_loop(&floor, Kind::Floor, seconds).await?;
    drop(floor);
    let runtime = tenant::start_runtime(&ctx.folder("b0-runtime")?).await?;
    Api::new(&runtime)
        .create_users("hs", 0..HANDSHAKE_USERS)
        .await?;
    let runtime_loop = handshake_loop(&runtime, Kind::Runtime, seconds).await?;
    benchmark.figures.push(
        Figure::new("handshakes/s", "/s", runtime_loop.per_second)
            .with_floor(floor_loop.per_second)
            .with_generator_cpu(runtime_loop.generator_cpu_percent),
    );
    benchmark.figures.push(
        Figure::new(
            "server CPU per handshake",
            "µs",
            runtime_loop.server_cpu_micros,
        )
        .with_floor(floor_loop.server_cpu_micros),
    );
    benchmark.note(format!(
        "Handshake loop: {HANDSHAKE_CLIENTS} clients each connecting, reading the upgrade (and on the runtime \
         the ready frame), and closing, for {seconds} s."
    ));
    Ok(benchmark)
}

pub struct HandshakeLoop {
    pub per_second: f64,
    pub server_cpu_micros: f64,
    pub generator_cpu_percent: f64,
}

/// Connects and closes in a loop from several clients for `seconds`.
pub async fn handshake_loop(
    server: &Server,
    kind: Kind,
    seconds: f64,
) -> anyhow::Result<HandshakeLoop> {
    let target = Target {
        kind,
        addr: server.ws_addr,
    };
    let server_cpu = server.cpu_meter()?;
    let generator_cpu = CpuMeter::start_self()?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let clients = (0..HANDSHAKE_CLIENTS).map(|client| async move {
        let mut count = 0usize;
        while Instant::now() < deadline {
            let user = format!(
                "hs{}",
                (client + count * HANDSHAKE_CLIENTS) % HANDSHAKE_USERS
            );
            let mut socket = client::connect(target, &user, "handshake", None).await?;
            socket.close(None).await?;
            count += 1;
        }
        anyhow::Ok(count)
    });
    let mut total = 0;
    for result in futures_util::future::join_all(clients).await {
        total += result?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(HandshakeLoop {
        per_second: total as f64 / elapsed,
        server_cpu_micros: server_cpu.cpu_seconds()? * 1e6 / total.max(1) as f64,
        generator_cpu_percent: generator_cpu.percent()?,
    })
}
