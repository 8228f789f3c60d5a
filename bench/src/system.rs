//! Readings from Linux's `/proc`: a process's resident memory and CPU time,
//! the kernel's TCP socket memory, and the machine's description.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Serialize;

/// Clock ticks per second of `/proc/PID/stat` times. Linux reports them in
/// USER_HZ, which is 100 on every architecture it exports to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// Size of the pages `/proc/net/sockstat` counts socket memory in. Linux
/// counts that memory in `PAGE_SIZE` units, 4 KiB on x86_64 and most arm64
/// kernels.
const SOCKSTAT_PAGE_BYTES: u64 = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub open_files_limit: u64,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = field_kib(&meminfo, "MemTotal:").unwrap_or(0) * 1024;
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_owned())
            .unwrap_or_default();
        let open_files_limit =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(0);
        Machine {
            cpu_model,
            cpus: cpus(),
            memory_bytes,
            kernel,
            open_files_limit,
        }
    }
}

/// Resident memory of a process in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    match field_kib(&status, "VmRSS:") {
        Some(kib) => Ok(kib * 1024),
        None => bail!("{path} has no VmRSS line"),
    }
}

/// User plus system CPU time a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    parse_stat_cpu(&stat).with_context(|| format!("{path} is not in the expected format"))
}

fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name in brackets may contain spaces, so fields are counted
    // from the last closing bracket: utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

/// Memory the kernel holds for TCP sockets, machine-wide, in bytes.
pub fn tcp_socket_memory_bytes() -> anyhow::Result<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat")
        .context("failed to read /proc/net/sockstat")?;
    parse_sockstat_tcp_pages(&sockstat)
        .map(|pages| pages * SOCKSTAT_PAGE_BYTES)
        .context("/proc/net/sockstat has no TCP mem field")
}

fn parse_sockstat_tcp_pages(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|line| line.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "mem" {
            return words.next()?.parse().ok();
        }
    }
    None
}

fn field_kib(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Returns whether a process is still running: it exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// CPU use of a process over an interval, in percent of one core.
pub struct CpuMeter {
    pid: u32,
    started: Instant,
    cpu_at_start: f64,
}

impl CpuMeter {
    pub fn start(pid: u32) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter {
            pid,
            started: Instant::now(),
            cpu_at_start: cpu_seconds(pid)?,
        })
    }

    /// Measures the calling process itself.
    pub fn start_self() -> anyhow::Result<CpuMeter> {
        CpuMeter::start(std::process::id())
    }

    /// CPU seconds used since the meter started.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        Ok(cpu_seconds(self.pid)? - self.cpu_at_start)
    }

    /// Percent of one core used since the meter started.
    pub fn percent(&self) -> anyhow::Result<f64> {
        let wall = self.started.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return Ok(0.0);
        }
        Ok(100.0 * self.cpu_seconds()? / wall)
    }
}

/// CPUs online, whatever CPU this process is pinned to.
pub fn cpus() -> usize {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let processors = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    if processors > 0 {
        processors
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// Pins the calling thread, and the threads it starts afterwards, to one
/// CPU. Returns false when the machine has fewer CPUs.
pub fn pin_self(cpu: usize) -> anyhow::Result<bool> {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;

    if cpu >= cpus() {
        return Ok(false);
    }
    let mut set = CpuSet::new();
    set.set(cpu).context("invalid CPU number")?;
    sched_setaffinity(Pid::from_raw(0), &set).context("sched_setaffinity failed")?;
    Ok(true)
}

/// Makes the process that `command` starts receive SIGKILL when this process
/// ends, even by SIGKILL, so no server outlives the run that started it.
///
/// Linux sends the signal when the thread that started the child ends, so
/// `command` must be spawned from a thread that lives as long as the run:
/// the main thread, which runs the benchmarks' single-threaded runtime.
pub fn kill_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;

    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, and makes
    // only the prctl and getppid system calls, which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The parent may have ended before the line above took effect.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "the benchmark process ended before this child started",
                ));
            }
            Ok(())
        });
    }
}

/// Raises the open-files soft limit to the hard limit and returns it.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};

    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit failed")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit failed")?;
    Ok(hard)
}

/// Returns the path of `taskset` (util-linux), when it exists.
pub fn taskset_path() -> Option<&'static Path> {
    ["/usr/bin/taskset", "/bin/taskset"]
        .into_iter()
        .map(Path::new)
        .find(|path| path.exists())
}

/// Returns whether `taskset` can start a process on one CPU.
pub fn taskset_available() -> bool {
    taskset_path().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_killed_when_starter_thread_ends() {
        use std::os::unix::process::ExitStatusExt;

        // Linux ties the signal to the thread that started the child, so a
        // short-lived thread plays the part of a benchmark process that ends.
        let mut child = std::thread::spawn(|| {
            let mut command = std::process::Command::new("sleep");
            command.arg("30");
            kill_with_parent(&mut command);
            command.spawn().unwrap()
        })
        .join()
        .unwrap();

        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "child ended with {status}");
    }

    #[test]
    fn stat_cpu_with_spaces_in_name() {
        let stat = "4242 (tokio worker 1) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
    }

    #[test]
    fn stat_cpu_truncated() {
        assert_eq!(parse_stat_cpu("4242 (x) S 1 2"), None);
    }

    #[test]
    fn sockstat_tcp_mem() {
        let sockstat =
            "sockets: used 190\nTCP: inuse 12 orphan 0 tw 3 alloc 14 mem 37\nUDP: inuse 1 mem 2\n";
        assert_eq!(parse_sockstat_tcp_pages(sockstat), Some(37));
    }

    #[test]
    fn sockstat_without_tcp() {
        assert_eq!(parse_sockstat_tcp_pages("UDP: inuse 1 mem 2\n"), None);
    }

    #[test]
    fn own_process_is_alive() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(u32::MAX));
    }

    #[test]
    fn meminfo_field() {
        assert_eq!(
            field_kib("MemTotal:       24684756 kB\n", "MemTotal:"),
            Some(24684756)
        );
    }
}
