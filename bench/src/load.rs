//! Rooms under load: members connected to the runtime (one group channel
//! per room) or to the floor (one broadcast room), a few of them publishing
//! on a schedule, every socket read into one [`Recorder`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use crate::client::{
    self, Kind, Positions, ReaderEnd, Recorder, Schedule, Sink, StepStats, Target,
};
use crate::system::CpuMeter;
use crate::tenant::Api;

/// How many members of each room publish. Several publishers keep one
/// socket's send-then-ack round trip from capping a room's rate.
pub const PUBLISHERS_PER_ROOM: usize = 8;
/// Time between scheduling a step and its first send, so every publisher
/// task is waiting before the schedule begins.
const SCHEDULE_LEAD: Duration = Duration::from_millis(50);
/// Maximum wait for a step's deliveries after its last send.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Sockets connected at once while a room fills.
const CONNECT_CONCURRENCY: usize = 128;

pub struct RoomPlan {
    pub rooms: usize,
    pub members: usize,
}

pub struct Rooms {
    /// Channel ids on the runtime, room names on the floor.
    pub channels: Vec<String>,
    /// Sinks of every member, by room; the first
    /// [`PUBLISHERS_PER_ROOM`] of each room publish.
    pub sinks: Vec<Vec<Sink>>,
    pub readers: Vec<JoinHandle<ReaderEnd>>,
    pub recorder: Arc<Recorder>,
    pub members: usize,
    /// User ids by room, in the order of `sinks`.
    pub users: Vec<Vec<String>>,
}

/// Figures of one step of offered load.
pub struct StepResult {
    pub offered_deliveries_per_second: f64,
    pub deliveries_per_second: f64,
    pub sent: u64,
    pub expected_deliveries: u64,
    pub stats: StepStats,
    pub server_cpu_seconds: f64,
    pub generator_cpu_percent: f64,
    /// Publishers whose socket failed during the step.
    pub send_failures: usize,
}

impl StepResult {
    pub fn p99_ms(&self) -> f64 {
        self.stats.latency.value_at_quantile(0.99) as f64 / 1000.0
    }

    /// Returns whether every expected delivery arrived.
    pub fn complete(&self) -> bool {
        self.send_failures == 0 && self.stats.deliveries >= self.expected_deliveries
    }

    /// Server CPU per delivery, in microseconds.
    pub fn cpu_micros_per_delivery(&self) -> f64 {
        if self.stats.deliveries == 0 {
            return 0.0;
        }
        self.server_cpu_seconds * 1e6 / self.stats.deliveries as f64
    }
}

/// Creates the rooms' users and channels (on the runtime) and connects every
/// member. `prefix` keeps users of different benchmarks apart.
pub async fn open_rooms(
    target: Target,
    api: Option<&Api>,
    plan: &RoomPlan,
    prefix: &str,
) -> anyhow::Result<Rooms> {
    let users: Vec<Vec<String>> = (0..plan.rooms)
        .map(|room| {
            (0..plan.members)
                .map(|member| format!("{prefix}r{room}m{member}"))
                .collect()
        })
        .collect();
    let channels = match (target.kind, api) {
        (Kind::Runtime, Some(api)) => create_channels(api, &users, prefix).await?,
        (Kind::Runtime, None) => anyhow::bail!("the runtime needs an API to create rooms"),
        (Kind::Floor, _) => (0..plan.rooms)
            .map(|room| format!("{prefix}{room}"))
            .collect(),
    };

    let recorder = Arc::new(Recorder::default());
    let mut sinks = Vec::new();
    let mut readers = Vec::new();
    for (room, members) in users.iter().enumerate() {
        let channel = &channels[room];
        let attempts = members
            .iter()
            .map(|user| client::connect(target, user, channel, None));
        let sockets: Vec<anyhow::Result<client::Socket>> = futures_util::stream::iter(attempts)
            .buffered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        let mut room_sinks = Vec::new();
        for socket in sockets {
            let (sink, stream) = socket?.split();
            room_sinks.push(sink);
            readers.push(client::spawn_reader(
                stream,
                recorder.clone(),
                Positions::default(),
            ));
        }
        sinks.push(room_sinks);
    }
    Ok(Rooms {
        channels,
        sinks,
        readers,
        recorder,
        members: plan.members,
        users,
    })
}

async fn create_channels(
    api: &Api,
    users: &[Vec<String>],
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let mut channels = Vec::new();
    for (room, members) in users.iter().enumerate() {
        let count = members.len();
        api.create_users(&format!("{prefix}r{room}m"), 0..count)
            .await
            .context("failed to create room members")?;
        let channel = api
            .create_group(&format!("{prefix} room {room}"), members)
            .await
            .context("failed to create a room")?;
        channels.push(channel);
    }
    Ok(channels)
}

impl Rooms {
    /// Offers `rate_per_room` messages per second to every room for
    /// `duration`, waits for the deliveries, and returns the step's figures.
    pub async fn run_step(
        &mut self,
        rate_per_room: f64,
        duration: Duration,
        step: u32,
        server_pid: u32,
    ) -> anyhow::Result<StepResult> {
        let server_cpu = CpuMeter::start(server_pid)?;
        let generator_cpu = CpuMeter::start_self()?;

        let mut tasks = Vec::new();
        let rooms = self.sinks.len();
        for (room, room_sinks) in self.sinks.iter_mut().enumerate() {
            let publishers = PUBLISHERS_PER_ROOM.min(room_sinks.len());
            // Rooms start a fraction of an interval apart, so their sends
            // interleave instead of arriving as one burst per interval.
            let interval = Duration::from_secs_f64(1.0 / rate_per_room.max(0.001));
            let phase = interval.mul_f64(room as f64 / rooms as f64);
            let schedules =
                Schedule::split(rate_per_room, duration, publishers, SCHEDULE_LEAD + phase);
            let pairs = room_sinks.drain(..publishers).zip(schedules);
            for (publisher, (sink, schedule)) in pairs.enumerate() {
                let channel = self.channels[room].clone();
                tasks.push((
                    room,
                    tokio::spawn(client::publish_paced(
                        sink, schedule, channel, publisher, step,
                    )),
                ));
            }
        }
        let mut sent = 0;
        let mut send_failures = 0;
        let mut returned: Vec<Vec<Sink>> = self.sinks.iter().map(|_| Vec::new()).collect();
        for (room, task) in tasks {
            let (sink, result) = task.await.context("publisher task failed")?;
            match result {
                Ok(count) => sent += count,
                // The server closed the publisher, as a slow consumer most
                // likely; the step fails, the benchmark goes on.
                Err(_) => send_failures += 1,
            }
            returned[room].push(sink);
        }
        for (room, mut publishers) in returned.into_iter().enumerate() {
            publishers.append(&mut self.sinks[room]);
            self.sinks[room] = publishers;
        }

        let expected = sent * self.members as u64;
        let drain_started = Instant::now();
        while self.recorder.deliveries(step) < expected
            && drain_started.elapsed() < DRAIN_TIMEOUT
            && self.recorder.closed.load(Ordering::Relaxed) == 0
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !crate::system::is_alive(server_pid) {
            anyhow::bail!("the server (pid {server_pid}) exited during step {step}");
        }
        let stats = self.recorder.take(step);
        let offered = rate_per_room * (self.channels.len() * self.members) as f64;
        Ok(StepResult {
            offered_deliveries_per_second: offered,
            deliveries_per_second: stats.deliveries as f64 / duration.as_secs_f64(),
            sent,
            expected_deliveries: expected,
            stats,
            server_cpu_seconds: server_cpu.cpu_seconds()?,
            generator_cpu_percent: generator_cpu.percent()?,
            send_failures,
        })
    }

    /// Returns whether every socket is still open, so another step can run.
    pub fn intact(&self) -> bool {
        self.recorder.closed.load(Ordering::Relaxed) == 0
    }

    /// Closes every socket and waits for the readers.
    pub async fn close(self) {
        for reader in &self.readers {
            reader.abort();
        }
        drop(self.sinks);
        for reader in self.readers {
            let _ = reader.await;
        }
    }
}
