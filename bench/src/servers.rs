//! Server processes under measurement: the chat runtime and the floor, each
//! started from this benchmark's own executable with a role in its
//! environment, on loopback, and pinned to CPU 0 when `taskset` exists.

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::system;

/// Environment variable that makes this executable serve instead of
/// benchmark: `runtime`, `floor` or `operator`.
pub const ROLE_VARIABLE: &str = "PARLEY_BENCH_ROLE";
/// Floor listen addresses, set by [`Server::floor`].
pub const FLOOR_WS_VARIABLE: &str = "PARLEY_BENCH_FLOOR_WS";
pub const FLOOR_HTTP_VARIABLE: &str = "PARLEY_BENCH_FLOOR_HTTP";

/// CPU the servers run on; the load generator takes the other one.
pub const SERVER_CPU: usize = 0;
pub const LOAD_GENERATOR_CPU: usize = 1;

/// Maximum wait for a server to accept requests.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    child: Child,
    pub pid: u32,
    /// WebSocket address: the runtime's listener, or the floor's rooms.
    pub ws_addr: SocketAddr,
    /// HTTP address: the runtime's listener again, or the floor's
    /// constant route.
    pub http_addr: SocketAddr,
    pub log_path: PathBuf,
}

impl Server {
    /// Starts the runtime on `config`, a configuration file whose
    /// `server.listen` must be `listen`.
    pub async fn runtime(
        config: &Path,
        listen: SocketAddr,
        log_path: PathBuf,
    ) -> anyhow::Result<Server> {
        let mut command = server_command(&log_path)?;
        command
            .env(ROLE_VARIABLE, "runtime")
            .env("PARLEY_CONFIG", config)
            .env("PARLEY_LOG_FORMAT", "text");
        let mut server = Server::spawn(command, listen, listen, log_path)?;
        server.wait_until_ready("/readyz").await?;
        Ok(server)
    }

    /// Starts the floor: bare WebSocket rooms and a constant HTTP route.
    pub async fn floor(log_path: PathBuf) -> anyhow::Result<Server> {
        let ws_addr = free_address()?;
        let http_addr = free_address()?;
        let mut command = server_command(&log_path)?;
        command
            .env(ROLE_VARIABLE, "floor")
            .env(FLOOR_WS_VARIABLE, ws_addr.to_string())
            .env(FLOOR_HTTP_VARIABLE, http_addr.to_string());
        let mut server = Server::spawn(command, ws_addr, http_addr, log_path)?;
        server.wait_until_ready("/constant").await?;
        Ok(server)
    }

    /// Starts this executable in `role` with `args` and `envs`, and waits
    /// until `ready_path` on `listen` responds with a success status.
    pub async fn with_role(
        role: &str,
        args: &[String],
        envs: &[(&str, &OsStr)],
        listen: SocketAddr,
        ready_path: &str,
        log_path: PathBuf,
    ) -> anyhow::Result<Server> {
        let mut command = server_command(&log_path)?;
        command
            .env(ROLE_VARIABLE, role)
            .args(args)
            .envs(envs.iter().copied());
        let mut server = Server::spawn(command, listen, listen, log_path)?;
        server.wait_until_ready(ready_path).await?;
        Ok(server)
    }

    fn spawn(
        mut command: Command,
        ws_addr: SocketAddr,
        http_addr: SocketAddr,
        log_path: PathBuf,
    ) -> anyhow::Result<Server> {
        let child = command
            .spawn()
            .context("failed to start a server process")?;
        Ok(Server {
            pid: child.id(),
            child,
            ws_addr,
            http_addr,
            log_path,
        })
    }

    async fn wait_until_ready(&mut self, path: &str) -> anyhow::Result<()> {
        let url = format!("http://{}{path}", self.http_addr);
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_default();
        let started = Instant::now();
        loop {
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                bail!(
                    "server exited with {status} before it was ready: {}",
                    log.trim()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "server did not respond to {url} within {START_TIMEOUT:?}; see {}",
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        system::rss_bytes(self.pid)
    }

    pub fn cpu_meter(&self) -> anyhow::Result<system::CpuMeter> {
        system::CpuMeter::start(self.pid)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Stops the server with SIGKILL; benchmarks never need its shutdown.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A command that runs this executable, on [`SERVER_CPU`] when `taskset`
/// exists, with its output appended to `log_path`.
fn server_command(log_path: &Path) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("failed to find the benchmark executable")?;
    let taskset = system::taskset_path().filter(|_| system::cpus() > 1);
    let mut command = if let Some(taskset) = taskset {
        let mut command = Command::new(taskset);
        command.arg("-c").arg(SERVER_CPU.to_string()).arg(exe);
        command
    } else {
        Command::new(exe)
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("failed to open {}", log_path.display()))?;
    system::kill_with_parent(&mut command);
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(command)
}

/// Returns a loopback address with a port that was free a moment ago.
pub fn free_address() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("failed to bind a loopback port")?;
    Ok(listener.local_addr()?)
}
