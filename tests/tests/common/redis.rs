//! A real `redis-server` on a free loopback port, owned by one test.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the `redis-server` binary; `scripts/test.sh`
/// sets it after installing Debian's package. Without it, `redis-server`
/// is looked up on PATH.
const SERVER_VARIABLE: &str = "PARLEY_REDIS_SERVER";

/// A Redis server process without persistence. Killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server whose log and files go to `dir`.
    pub fn start(dir: &Path) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            child: None,
            port,
            dir: dir.to_owned(),
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends SIGKILL and waits for the process to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one command and returns the first line of the reply, such as
    /// `+OK` or `:1`.
    pub fn command(&self, args: &[&str]) -> String {
        self.send(args).1
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Returns `total_connections_received` from `INFO stats`.
    pub fn connections_received(&self) -> u64 {
        let (mut reader, header) = self.send(&["INFO", "stats"]);
        assert!(header.starts_with('$'), "INFO reply {header}");
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if let Some(count) = line.trim_end().strip_prefix("total_connections_received:") {
                return count.parse().unwrap();
            }
            assert!(
                !line.is_empty(),
                "no total_connections_received in INFO stats"
            );
        }
    }

    /// Returns how many clients are subscribed to `channel`.
    pub fn subscribers(&self, channel: &str) -> u64 {
        let (mut reader, header) = self.send(&["PUBSUB", "NUMSUB", channel]);
        assert_eq!(header, "*2", "PUBSUB NUMSUB reply");
        let mut lines = Vec::new();
        for _ in 0..3 {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            lines.push(line.trim_end().to_owned());
        }
        // The channel as a bulk string (two lines), then the count.
        lines[2]
            .strip_prefix(':')
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("unexpected PUBSUB NUMSUB reply {lines:?}"))
    }

    fn send(&self, args: &[&str]) -> (BufReader<TcpStream>, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        (reader, line.trim_end().to_owned())
    }

    fn spawn(&mut self) {
        let binary = std::env::var_os(SERVER_VARIABLE).unwrap_or_else(|| "redis-server".into());
        let port = self.port.to_string();
        let log = self.dir.join("redis.log");
        let child = Command::new(&binary)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "failed to start {}: {error}. Run scripts/test.sh, which installs Debian's redis-server, or install it and set {SERVER_VARIABLE}",
                    binary.to_string_lossy()
                )
            });
        self.child = Some(child);
        self.wait_until_answering(&log);
    }

    fn wait_until_answering(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut line = String::new();
                if stream.write_all(b"PING\r\n").is_ok()
                    && BufReader::new(stream).read_line(&mut line).is_ok()
                    && line.starts_with("+PONG")
                {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                panic!("redis-server exited with {status}: {text}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
