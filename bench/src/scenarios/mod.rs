//! The benchmarks, B0 to B8, and the run that chains them into one report.

mod fanout;
mod floors;
mod idle;
mod latency;
mod operator;
mod reconnect;
mod rest;
mod slow;
mod soak;
mod store;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use crate::client::Kind;
use crate::profile::Profile;
use crate::report::{Benchmark, Report};
use crate::servers::Server;
use crate::system::Machine;
use crate::tenant::Api;

/// Shared state of a run: the profile and a scratch folder per benchmark.
pub struct Context {
    pub profile: Profile,
    scratch: tempfile::TempDir,
    /// Deliveries per second at capacity found by B2, by server and room
    /// size, for the benchmarks that load a server to a share of it.
    capacities: Mutex<HashMap<(Kind, usize), f64>>,
    /// Offered deliveries per second of a capacity search's first step.
    first_step: f64,
}

/// Environment variable that sets the first step of B2's capacity search.
const FIRST_STEP_VARIABLE: &str = "PARLEY_BENCH_FIRST_STEP";

/// First step of a capacity search when [`FIRST_STEP_VARIABLE`] is not set.
const DEFAULT_FIRST_STEP: f64 = 2_000.0;

/// Largest accepted first step. The load generator, on one core, read at
/// most about 175,000 deliveries per second in B2's full runs on 2-vCPU
/// machines, so a step far beyond this would take hours instead of seconds.
const MAX_FIRST_STEP: f64 = 10_000_000.0;

/// Reads the first step of a capacity search from the value of
/// [`FIRST_STEP_VARIABLE`], if set. Anything but a positive rate up to
/// [`MAX_FIRST_STEP`] is rejected before a benchmark starts.
fn parse_first_step(value: Option<&OsStr>) -> anyhow::Result<f64> {
    let Some(value) = value else {
        return Ok(DEFAULT_FIRST_STEP);
    };
    let text = value.to_string_lossy();
    match text.trim().parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= MAX_FIRST_STEP => Ok(rate),
        _ => anyhow::bail!(
            "{FIRST_STEP_VARIABLE} must be a number of deliveries per second above 0 and \
             at most {MAX_FIRST_STEP}, got `{text}`"
        ),
    }
}

impl Context {
    /// Creates a new empty folder for one server or one step.
    pub fn folder(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.scratch.path().join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        Ok(path)
    }

    /// Offered deliveries per second of a capacity search's first step.
    pub fn first_step_deliveries(&self) -> f64 {
        self.first_step
    }

    pub fn remember_capacity(&self, kind: Kind, members: usize, deliveries_per_second: f64) {
        let mut capacities = self
            .capacities
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        capacities.insert((kind, members), deliveries_per_second);
    }

    /// Returns the runtime's capacity for rooms of `members`, from B2 when
    /// it ran, otherwise from a search of its own on `server`.
    pub async fn runtime_capacity(
        &self,
        server: &Server,
        api: &Api,
        members: usize,
    ) -> anyhow::Result<f64> {
        let known = {
            let capacities = self
                .capacities
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            capacities.get(&(Kind::Runtime, members)).copied()
        };
        if let Some(capacity) = known.filter(|capacity| *capacity > 0.0) {
            return Ok(capacity);
        }
        let search = fanout::search(self, server, Kind::Runtime, Some(api), members, "cap").await?;
        let capacity = search.capacity();
        if capacity <= 0.0 {
            anyhow::bail!(
                "the runtime met the p99 bound at no offered rate for rooms of {members}"
            );
        }
        self.remember_capacity(Kind::Runtime, members, capacity);
        Ok(capacity)
    }
}

type Runner =
    for<'a> fn(&'a Context) -> futures_util::future::LocalBoxFuture<'a, anyhow::Result<Benchmark>>;

/// Every benchmark in run order: id, title and the function that runs it.
fn benchmarks() -> Vec<(&'static str, &'static str, Runner)> {
    vec![
        ("B0", "Floors: the bare cost of each kind of work", |ctx| {
            Box::pin(floors::run(ctx))
        }),
        ("B1", "Idle connections: memory per connection", |ctx| {
            Box::pin(idle::run(ctx))
        }),
        (
            "B2",
            "Fan-out: deliveries per second with p99 under 25 ms",
            |ctx| Box::pin(fanout::run(ctx)),
        ),
        ("B3", "Delivery latency at half of capacity", |ctx| {
            Box::pin(latency::run(ctx))
        }),
        ("B4", "REST: history reads and channel lists", |ctx| {
            Box::pin(rest::run(ctx))
        }),
        ("B5", "Reconnect storm: resume after a mass drop", |ctx| {
            Box::pin(reconnect::run(ctx))
        }),
        ("B6", "Slow consumers: 1 % of clients stop reading", |ctx| {
            Box::pin(slow::run(ctx))
        }),
        ("B7", "Soak: connection churn over time", |ctx| {
            Box::pin(soak::run(ctx))
        }),
        (
            "B8",
            "Operator: time to Ready, memory and steady-state writes",
            |ctx| Box::pin(operator::run(ctx)),
        ),
    ]
}

/// Runs the selected benchmarks (all when `only` is empty) and writes the
/// report into `out`. A benchmark that fails is reported with its error and
/// the others still run; the run fails at the end if any did.
pub async fn run_all(
    profile: Profile,
    out: PathBuf,
    only: Vec<String>,
    pinned: bool,
) -> anyhow::Result<()> {
    check_selection(&only)?;
    let first_step = parse_first_step(std::env::var_os(FIRST_STEP_VARIABLE).as_deref())?;
    // Fails now, not after an hour of benchmarks, when the report cannot be
    // written there.
    std::fs::create_dir_all(&out).with_context(|| format!("failed to create {}", out.display()))?;
    let probe = out.join(".parley-bench-probe");
    std::fs::write(&probe, b"").with_context(|| format!("cannot write into {}", out.display()))?;
    let _ = std::fs::remove_file(&probe);
    crate::system::raise_open_files_limit()?;
    let started_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    let label = profile.label().to_owned();
    let ctx = Context {
        profile,
        scratch: tempfile::Builder::new().prefix("parley-bench-").tempdir()?,
        capacities: Mutex::default(),
        first_step,
    };

    let mut results = Vec::new();
    let mut failures = 0;
    for (id, title, runner) in benchmarks() {
        if !only.is_empty() && !only.iter().any(|wanted| wanted.eq_ignore_ascii_case(id)) {
            continue;
        }
        eprintln!("parley-bench: {id} {title}");
        let started = std::time::Instant::now();
        let benchmark = match runner(&ctx).await {
            Ok(benchmark) => benchmark,
            Err(error) => {
                eprintln!("parley-bench: {id} failed: {error:#}");
                failures += 1;
                Benchmark::failed(id, title, &error)
            }
        };
        eprintln!(
            "parley-bench: {id} took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        results.push(benchmark);
        // Let sockets of the finished benchmark leave TIME_WAIT accounting.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let report = Report {
        profile: label,
        started_at,
        machine: Machine::describe(),
        pinning: pinning_description(pinned),
        benchmarks: results,
    };
    report.write(&out)?;
    println!("{}", crate::markdown::render(&report));
    eprintln!("parley-bench: wrote {}", out.join("report.md").display());
    let mut problems = Vec::new();
    let missed = report.missed_correctness_targets();
    if !missed.is_empty() {
        problems.push(format!(
            "messages were lost, repeated or skipped in: {}",
            missed.join(", ")
        ));
    }
    if failures > 0 {
        problems.push(format!("{failures} benchmark(s) failed"));
    }
    if !problems.is_empty() {
        anyhow::bail!("{}; see the report", problems.join("; "));
    }
    Ok(())
}

/// Rejects an `--only` list that names no benchmark, before anything runs.
fn check_selection(only: &[String]) -> anyhow::Result<()> {
    let known: Vec<&str> = benchmarks().iter().map(|(id, _, _)| *id).collect();
    for wanted in only {
        if !known.iter().any(|id| id.eq_ignore_ascii_case(wanted)) {
            anyhow::bail!(
                "unknown benchmark {wanted:?} in --only; expected some of {}",
                known.join(", ")
            );
        }
    }
    Ok(())
}

fn pinning_description(pinned: bool) -> String {
    let servers = crate::system::taskset_available() && crate::system::cpus() > 1;
    match (pinned, servers) {
        (true, true) => format!(
            "servers on CPU {}, load generator on CPU {}",
            crate::servers::SERVER_CPU,
            crate::servers::LOAD_GENERATOR_CPU
        ),
        (true, false) => "load generator pinned; servers unpinned (no taskset)".to_owned(),
        _ => "not pinned (one CPU or no affinity support)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_defaults_when_unset() {
        assert_eq!(parse_first_step(None).unwrap(), DEFAULT_FIRST_STEP);
    }

    #[test]
    fn first_step_accepts_positive_rate() {
        assert_eq!(
            parse_first_step(Some(OsStr::new("45000"))).unwrap(),
            45_000.0
        );
        assert_eq!(
            parse_first_step(Some(OsStr::new(" 2.5e4 "))).unwrap(),
            25_000.0
        );
        assert_eq!(
            parse_first_step(Some(OsStr::new("1e7"))).unwrap(),
            MAX_FIRST_STEP
        );
    }

    #[test]
    fn first_step_rejects_unusable_rates() {
        for value in ["inf", "NaN", "0", "-100", "fast", "", "1e300", "10000001"] {
            let error = parse_first_step(Some(OsStr::new(value)))
                .unwrap_err()
                .to_string();
            assert!(error.contains(FIRST_STEP_VARIABLE), "{value}: {error}");
            assert!(error.contains(&format!("`{value}`")), "{value}: {error}");
        }
    }

    #[test]
    fn first_step_rejects_non_unicode() {
        use std::os::unix::ffi::OsStrExt;

        let value = OsStr::from_bytes(b"\xff2000");
        assert!(parse_first_step(Some(value)).is_err());
    }

    #[test]
    fn selection_rejects_unknown_id() {
        assert!(check_selection(&["B9".to_owned()]).is_err());
        assert!(check_selection(&["B2 ".to_owned()]).is_err());
    }

    #[test]
    fn selection_accepts_any_case() {
        assert!(check_selection(&["b2".to_owned(), "B8".to_owned()]).is_ok());
        assert!(check_selection(&[]).is_ok());
    }
}
