//! B1: what an idle connection costs. The server's resident memory and the
//! kernel's TCP memory are read before and after the connections open, and
//! the differences are divided by their number.
//!
//! At 100k connections the clients are spread over six runtime processes,
//! each with its own data directory, and over one client process per
//! runtime with its own 127.0.0.x source address, because one process may
//! be limited to 20,000 open files and one source address to about 28,000
//! ephemeral ports per destination.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::Context;
use crate::client::{self, Kind, Target};
use crate::report::{Benchmark, Figure};
use crate::servers::Server;
use crate::system;
use crate::tenant::{self, Api};

/// Wait after the connections open before memory is read, so allocations
/// made while accepting have settled.
const SETTLE: Duration = Duration::from_secs(2);
/// Members of each floor room while idle.
const FLOOR_ROOM_SIZE: usize = 100;

/// Memory the connections added, per connection, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct IdleCost {
    pub connections: usize,
    pub server_bytes: f64,
    pub kernel_bytes: f64,
}

/// Opens `count` idle connections to `server`, measures, and closes them.
pub async fn measure(
    server: &Server,
    kind: Kind,
    api: Option<&Api>,
    count: usize,
    prefix: &str,
) -> anyhow::Result<IdleCost> {
    if let Some(api) = api {
        api.create_users(prefix, 0..count).await?;
    }
    tokio::time::sleep(SETTLE).await;
    let server_before = server.rss_bytes()?;
    let kernel_before = system::tcp_socket_memory_bytes()?;

    let target = Target {
        kind,
        addr: server.ws_addr,
    };
    let sockets = client::open_many(target, prefix, 0..count, None, |index| {
        format!("{prefix}{}", index / FLOOR_ROOM_SIZE)
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    let server_after = server.rss_bytes()?;
    let kernel_after = system::tcp_socket_memory_bytes()?;
    drop(sockets);

    Ok(IdleCost {
        connections: count,
        server_bytes: per_connection(server_before, server_after, count),
        kernel_bytes: per_connection(kernel_before, kernel_after, count),
    })
}

fn per_connection(before: u64, after: u64, count: usize) -> f64 {
    (after as f64 - before as f64) / count.max(1) as f64
}

pub async fn run(ctx: &Context) -> anyhow::Result<Benchmark> {
    let mut benchmark = Benchmark::new("B1", "Idle connections: memory per connection");
    let count = ctx.profile.idle_connections;

    let floor = Server::floor(ctx.folder("b1-floor")?.join("floor.log")).await?;
    let on_floor = measure(&floor, Kind::Floor, None, count, "idle").await?;
    drop(floor);
    let runtime = tenant::start_runtime(&ctx.folder("b1-runtime")?).await?;
    let api = Api::new(&runtime);
    let on_runtime = measure(&runtime, Kind::Runtime, Some(&api), count, "idle").await?;
    drop(runtime);

    let kib = |bytes: f64| bytes / 1024.0;
    let server = Figure::new(
        format!("server memory per connection, {count} in one process"),
        "KiB",
        kib(on_runtime.server_bytes),
    )
    .with_floor(kib(on_floor.server_bytes));
    let ratio = server.ratio.unwrap_or(f64::INFINITY);
    let met = ratio <= 1.7 && on_runtime.server_bytes < 10.0 * 1024.0;
    benchmark
        .figures
        .push(server.with_target("ratio ≤ 1.7 and < 10 KiB", met));
    benchmark.figures.push(
        Figure::new(
            format!("kernel TCP memory per connection, {count}"),
            "KiB",
            kib(on_runtime.kernel_bytes),
        )
        .with_floor(kib(on_floor.kernel_bytes)),
    );

    if ctx.profile.spread_connections > 0 {
        let spread = measure_spread(
            ctx,
            ctx.profile.spread_connections,
            ctx.profile.spread_processes,
        )
        .await?;
        benchmark.figures.push(
            Figure::new(
                format!(
                    "server memory per connection, {} over {} processes",
                    spread.connections, ctx.profile.spread_processes
                ),
                "KiB",
                kib(spread.server_bytes),
            )
            .with_floor(kib(on_floor.server_bytes)),
        );
        benchmark.figures.push(Figure::new(
            format!("kernel TCP memory per connection, {}", spread.connections),
            "KiB",
            kib(spread.kernel_bytes),
        ));
    } else {
        benchmark.note("The spread over several processes runs only in the full profile.");
    }
    benchmark.note(
        "Kernel TCP memory is machine-wide from /proc/net/sockstat and covers both ends of each loopback \
         connection; idle sockets with empty buffers cost little there.",
    );
    benchmark.note(format!(
        "The floor holds the same number of connections in rooms of {FLOOR_ROOM_SIZE}; each runtime connection is \
         a user of its own with a signed token."
    ));
    Ok(benchmark)
}

/// A client process holding sockets to one runtime.
struct Holder {
    child: Child,
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Closing its standard input makes it close its sockets and exit.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

async fn measure_spread(ctx: &Context, total: usize, processes: usize) -> anyhow::Result<IdleCost> {
    let per_process = total.div_ceil(processes);
    let mut runtimes = Vec::new();
    for index in 0..processes {
        runtimes.push(tenant::start_runtime(&ctx.folder(&format!("b1-spread-{index}"))?).await?);
    }
    let creations = runtimes.iter().map(|runtime| {
        let api = Api::new(runtime);
        async move { api.create_users("spread", 0..per_process).await }
    });
    for result in futures_util::future::join_all(creations).await {
        result?;
    }
    tokio::time::sleep(SETTLE).await;
    let server_before: u64 = runtimes
        .iter()
        .map(Server::rss_bytes)
        .sum::<anyhow::Result<u64>>()?;
    let kernel_before = system::tcp_socket_memory_bytes()?;

    let mut holders = Vec::new();
    for (index, runtime) in runtimes.iter().enumerate() {
        holders.push(spawn_holder(runtime, per_process, index)?);
    }
    let mut connected = 0;
    for holder in &mut holders {
        connected += wait_for_holder(holder).await?;
    }
    tokio::time::sleep(SETTLE).await;
    let server_after: u64 = runtimes
        .iter()
        .map(Server::rss_bytes)
        .sum::<anyhow::Result<u64>>()?;
    let kernel_after = system::tcp_socket_memory_bytes()?;
    drop(holders);

    Ok(IdleCost {
        connections: connected,
        server_bytes: per_connection(server_before, server_after, connected),
        kernel_bytes: per_connection(kernel_before, kernel_after, connected),
    })
}

fn spawn_holder(runtime: &Server, count: usize, index: usize) -> anyhow::Result<Holder> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    crate::system::kill_with_parent(&mut command);
    let child = command
        .args([
            "hold",
            "--target",
            &runtime.ws_addr.to_string(),
            "--prefix",
            "spread",
            "--from",
            "0",
        ])
        .args([
            "--to",
            &count.to_string(),
            "--source",
            &format!("127.0.0.{}", index + 2),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("failed to start a client process")?;
    Ok(Holder { child })
}

async fn wait_for_holder(holder: &mut Holder) -> anyhow::Result<usize> {
    let Some(stdout) = holder.child.stdout.take() else {
        bail!("client process has no standard output");
    };
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await??;
    match line.trim().strip_prefix("ready ").map(str::parse::<usize>) {
        Some(Ok(count)) => Ok(count),
        _ => bail!("client process failed before holding its connections (it printed {line:?})"),
    }
}
