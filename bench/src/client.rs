//! The load generator's WebSocket side: connecting to the runtime or the
//! floor, paced publishing, and reading deliveries into latency histograms.
//!
//! Both servers get the same `send` frame. The runtime replies with an `ack`
//! and a `message` frame to every member's socket; the floor forwards the
//! `send` frame itself to every socket in the room. The text of each message
//! carries its step and its intended send time, so a reader computes the
//! latency from the frame alone and no shared state sits in the hot path
//! except the step's histogram.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::tenant;

pub type Socket = WebSocketStream<TcpStream>;
pub type Sink = SplitSink<Socket, Message>;
pub type Stream = SplitStream<Socket>;

/// Start of all intended send times in this process.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Microseconds since [`EPOCH`].
pub fn now_micros() -> u64 {
    EPOCH.elapsed().as_micros() as u64
}

/// Largest latency a histogram records, in microseconds (one minute).
const MAX_LATENCY_MICROS: u64 = 60_000_000;
/// Maximum wait for the WebSocket upgrade, and again for the server's
/// `ready` frame after it.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Floor,
    Runtime,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Floor => "floor",
            Kind::Runtime => "runtime",
        }
    }
}

/// A server address and the protocol its clients speak.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
}

/// Opens a WebSocket as `user` (the runtime) or into room `room` (the
/// floor), from `source` when given, and waits for the runtime's `ready`.
pub async fn connect(
    target: Target,
    user: &str,
    room: &str,
    source: Option<IpAddr>,
) -> anyhow::Result<Socket> {
    let url = match target.kind {
        Kind::Floor => format!("ws://{}/room/{room}", target.addr),
        Kind::Runtime => format!("ws://{}/v1/ws?tenant={}", target.addr, tenant::TENANT),
    };
    let mut request = url.as_str().into_client_request()?;
    if target.kind == Kind::Runtime {
        let value = HeaderValue::from_str(&format!("Bearer {}", tenant::token(user)?))?;
        request.headers_mut().insert("authorization", value);
    }
    let upgrade = async {
        let stream = tcp_connect(target.addr, source).await?;
        let upgraded = tokio_tungstenite::client_async(request, stream).await;
        upgraded.with_context(|| format!("WebSocket upgrade to {url} failed"))
    };
    let (mut socket, _) = tokio::time::timeout(READY_TIMEOUT, upgrade)
        .await
        .with_context(|| format!("timed out connecting to {url}"))??;
    if target.kind == Kind::Runtime {
        wait_for_ready(&mut socket).await?;
    }
    Ok(socket)
}

async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("failed to connect to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn wait_for_ready(socket: &mut Socket) -> anyhow::Result<()> {
    let ready = tokio::time::timeout(READY_TIMEOUT, async {
        while let Some(message) = socket.next().await {
            if let Message::Text(text) = message? {
                let frame: Frame = serde_json::from_str(text.as_str())?;
                match frame.kind.as_ref() {
                    "ready" => return Ok(()),
                    "error" => bail!("server sent an error instead of ready: {text}"),
                    _ => {}
                }
            }
        }
        bail!("the server closed the socket before ready")
    });
    ready.await.context("timed out waiting for ready")?
}

/// The fields the load generator reads from any frame either server sends.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Option<Delivered<'a>>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    client_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel_id: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
}

#[derive(Deserialize)]
struct Delivered<'a> {
    #[serde(borrow)]
    channel_id: Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    content: Content<'a>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// Builds the frame every publisher sends. Its text is `step:intended_micros`, and
/// its client id adds a counter so the runtime stores each one.
pub fn send_frame(
    channel: &str,
    publisher: usize,
    step: u32,
    intended: u64,
    counter: u64,
) -> Message {
    let frame = serde_json::json!({
        "type": "send",
        "channel_id": channel,
        "client_id": format!("{step}:{intended}:{publisher}:{counter}"),
        "content": {"kind": "text", "text": format!("{step}:{intended}")},
    });
    Message::text(frame.to_string())
}

fn parse_stamp(text: &str) -> Option<(u32, u64)> {
    let mut parts = text.split(':');
    let step = parts.next()?.parse().ok()?;
    let intended = parts.next()?.parse().ok()?;
    Some((step, intended))
}

/// Figures of one step, filled by every reader.
pub struct StepStats {
    /// Delivery latency from the intended send time, in microseconds.
    pub latency: Histogram<u64>,
    /// Ack latency from the intended send time, in microseconds.
    pub ack_latency: Histogram<u64>,
    pub deliveries: u64,
    pub acks: u64,
}

impl StepStats {
    fn new() -> StepStats {
        StepStats {
            latency: new_histogram(),
            ack_latency: new_histogram(),
            deliveries: 0,
            acks: 0,
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // Three significant digits from 1 µs to a minute; the bounds are
    // constants, so creation cannot fail.
    match Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3) {
        Ok(histogram) => histogram,
        Err(error) => unreachable!("constant histogram bounds are valid: {error}"),
    }
}

/// Deliveries, acks and protocol anomalies seen by all readers.
#[derive(Default)]
pub struct Recorder {
    steps: Mutex<HashMap<u32, StepStats>>,
    /// A message seq at or below one already seen on that socket.
    pub duplicates: AtomicU64,
    /// A message seq more than one above the last one seen on that socket.
    pub gaps: AtomicU64,
    /// Error frames, such as `rate_limited`.
    pub errors: AtomicU64,
    /// Sockets the server closed, such as slow consumers (4008).
    pub closed: AtomicU64,
    /// Every `message` or forwarded `send` frame, whatever its step.
    pub total_deliveries: AtomicU64,
}

impl Recorder {
    fn record(&self, step: u32, latency: u64, ack: bool) {
        let mut steps = self
            .steps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stats = steps.entry(step).or_insert_with(StepStats::new);
        let latency = latency.clamp(1, MAX_LATENCY_MICROS);
        if ack {
            stats.acks += 1;
            let _ = stats.ack_latency.record(latency);
        } else {
            stats.deliveries += 1;
            let _ = stats.latency.record(latency);
        }
    }

    /// Removes and returns the figures of `step`.
    pub fn take(&self, step: u32) -> StepStats {
        let mut steps = self
            .steps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        steps.remove(&step).unwrap_or_else(StepStats::new)
    }

    /// Deliveries of `step` so far, without taking them.
    pub fn deliveries(&self, step: u32) -> u64 {
        let steps = self
            .steps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        steps.get(&step).map_or(0, |stats| stats.deliveries)
    }
}

/// Per-socket channel positions for the runtime's ordering checks.
#[derive(Default)]
pub struct Positions {
    last: HashMap<String, u64>,
}

impl Positions {
    /// Records `seq` of `channel` and reports what it means.
    fn observe(&mut self, channel: &str, seq: u64, recorder: &Recorder) {
        match self.last.get_mut(channel) {
            Some(last) if seq <= *last => {
                recorder.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            Some(last) => {
                if seq > *last + 1 {
                    recorder.gaps.fetch_add(1, Ordering::Relaxed);
                }
                *last = seq;
            }
            None => {
                self.last.insert(channel.to_owned(), seq);
            }
        }
    }

    pub fn set(&mut self, channel: &str, seq: u64) {
        self.last.insert(channel.to_owned(), seq);
    }

    pub fn get(&self, channel: &str) -> u64 {
        self.last.get(channel).copied().unwrap_or(0)
    }
}

/// Channel positions and `resumed` frames one reader saw, returned when it
/// ends.
pub struct ReaderEnd {
    pub positions: Positions,
    /// `resumed` frames by channel, with their seq.
    pub resumed: HashMap<String, u64>,
}

/// Reads one socket until it closes or the task is aborted, recording every
/// delivery and ack into `recorder`.
pub fn spawn_reader(
    stream: Stream,
    recorder: Arc<Recorder>,
    positions: Positions,
) -> JoinHandle<ReaderEnd> {
    spawn_stoppable_reader(stream, recorder, positions, None)
}

/// Like [`spawn_reader`], and also ends, returning what it saw, when `stop`
/// turns true or its sender is dropped.
pub fn spawn_stoppable_reader(
    mut stream: Stream,
    recorder: Arc<Recorder>,
    positions: Positions,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> JoinHandle<ReaderEnd> {
    tokio::spawn(async move {
        let mut end = ReaderEnd {
            positions,
            resumed: HashMap::new(),
        };
        let stopped = async move {
            match stop {
                Some(mut stop) => {
                    let _ = stop.wait_for(|stop| *stop).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(stopped);
        loop {
            let message = tokio::select! {
                message = stream.next() => message,
                () = &mut stopped => break,
            };
            match message {
                Some(Ok(Message::Text(text))) => handle_frame(text.as_str(), &recorder, &mut end),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    recorder.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
        end
    })
}

/// Asks the runtime for the messages of `channel` after `from` and reads
/// until the socket has every one up to `latest` and the `resumed` frame.
/// Gaps and duplicates are counted into `recorder`.
pub async fn resume(
    socket: &mut Socket,
    channel: &str,
    from: u64,
    latest: u64,
    recorder: &Recorder,
) -> anyhow::Result<()> {
    let frame = serde_json::json!({"type": "resume", "ref": "storm", "positions": {channel: from}});
    socket.send(Message::text(frame.to_string())).await?;
    let mut end = ReaderEnd {
        positions: Positions::default(),
        resumed: HashMap::new(),
    };
    end.positions.set(channel, from);
    while !(end.resumed.contains_key(channel) && end.positions.get(channel) >= latest) {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => handle_frame(text.as_str(), recorder, &mut end),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => bail!("the server closed the socket during resume"),
        }
    }
    Ok(())
}

fn handle_frame(text: &str, recorder: &Recorder, end: &mut ReaderEnd) {
    let now = now_micros();
    let Ok(frame) = serde_json::from_str::<Frame>(text) else {
        recorder.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    match frame.kind.as_ref() {
        "message" => {
            let Some(message) = frame.message else { return };
            end.positions
                .observe(&message.channel_id, message.seq, recorder);
            recorder.total_deliveries.fetch_add(1, Ordering::Relaxed);
            if let Some((step, intended)) = message.content.text.as_deref().and_then(parse_stamp) {
                recorder.record(step, now.saturating_sub(intended), false);
            }
        }
        "send" => {
            recorder.total_deliveries.fetch_add(1, Ordering::Relaxed);
            let stamp = frame
                .content
                .and_then(|content| content.text)
                .and_then(|text| parse_stamp(&text));
            if let Some((step, intended)) = stamp {
                recorder.record(step, now.saturating_sub(intended), false);
            }
        }
        "ack" => {
            if let Some((step, intended)) = frame.client_id.as_deref().and_then(parse_stamp) {
                recorder.record(step, now.saturating_sub(intended), true);
            }
        }
        "resumed" => {
            if let (Some(channel), Some(seq)) = (frame.channel_id, frame.seq) {
                end.resumed.insert(channel.into_owned(), seq);
            }
        }
        "error" => {
            recorder.errors.fetch_add(1, Ordering::Relaxed);
            if frame.code.as_deref() == Some("resync_required") {
                recorder.gaps.fetch_add(1, Ordering::Relaxed);
            }
        }
        "resync_required" => {
            recorder.gaps.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Sends the messages of `schedule` from `sink` into `channel`, and returns
/// the sink with the number sent.
///
/// Each message is stamped with its intended send time, so a server that
/// stalls the publisher shows as latency instead of hiding it. The one
/// exception is the timer. When the publisher sleeps until a send is due,
/// the stamp is the moment the sleep ended. The timer's millisecond
/// granularity and the load generator's own wake-up delay are thus not
/// charged to the server.
pub async fn publish_paced(
    mut sink: Sink,
    schedule: Schedule,
    channel: String,
    publisher: usize,
    step: u32,
) -> (Sink, anyhow::Result<u64>) {
    let mut sent = 0;
    for index in 0..schedule.count {
        let intended = schedule.due(index);
        let stamp = if intended > Instant::now() {
            tokio::time::sleep_until(intended.into()).await;
            Instant::now()
        } else {
            intended
        };
        let stamp = stamp.saturating_duration_since(*EPOCH).as_micros() as u64;
        if let Err(error) = sink
            .send(send_frame(&channel, publisher, step, stamp, index as u64))
            .await
        {
            return (sink, Err(error.into()));
        }
        sent += 1;
    }
    (sink, Ok(sent))
}

/// When one publisher sends: message `i` of this publisher is due at
/// `start + interval × (i × stride + offset)`, so `stride` publishers with
/// offsets `0..stride` interleave into one even stream.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub interval: Duration,
    pub stride: usize,
    pub offset: usize,
    pub count: usize,
}

impl Schedule {
    /// When message `index` of this publisher is due.
    pub fn due(&self, index: usize) -> Instant {
        self.start
            + self
                .interval
                .mul_f64((index * self.stride + self.offset) as f64)
    }

    /// Splits `rate` messages per second over `duration` among `publishers`.
    pub fn split(
        rate: f64,
        duration: Duration,
        publishers: usize,
        lead: Duration,
    ) -> Vec<Schedule> {
        let total = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let start = Instant::now() + lead;
        (0..publishers)
            .map(|offset| Schedule {
                start,
                interval,
                stride: publishers,
                offset,
                count: total / publishers + usize::from(offset < total % publishers),
            })
            .collect()
    }
}

/// Arguments of the internal `hold` command.
#[derive(clap::Args)]
pub struct HoldArgs {
    /// Runtime address.
    #[arg(long)]
    pub target: SocketAddr,
    /// Users `{prefix}{from}` to `{prefix}{to - 1}` each open one socket.
    #[arg(long)]
    pub prefix: String,
    #[arg(long)]
    pub from: usize,
    #[arg(long)]
    pub to: usize,
    /// Loopback source address for the connections, such as 127.0.0.3.
    #[arg(long)]
    pub source: Option<IpAddr>,
}

/// Connections opened at once while holding; more only slows the accept
/// queue down.
const HOLD_CONCURRENCY: usize = 256;

/// Opens the sockets, prints `ready N`, and keeps them open until standard input
/// closes, so the parent measures memory with them open.
pub async fn hold(args: HoldArgs) -> anyhow::Result<()> {
    crate::system::raise_open_files_limit()?;
    let target = Target {
        kind: Kind::Runtime,
        addr: args.target,
    };
    let sockets = open_many(
        target,
        &args.prefix,
        args.from..args.to,
        args.source,
        |_| String::new(),
    )
    .await?;
    println!("ready {}", sockets.len());
    let mut line = String::new();
    let stdin = tokio::io::stdin();
    let mut reader = tokio::io::BufReader::new(stdin);
    let _ = tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line).await;
    drop(sockets);
    Ok(())
}

/// Opens one socket per user index in `range`, `HOLD_CONCURRENCY` at a time;
/// `room_of` names the floor room of each index.
pub async fn open_many(
    target: Target,
    prefix: &str,
    range: std::ops::Range<usize>,
    source: Option<IpAddr>,
    room_of: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<Socket>> {
    let attempts = range.map(|index| {
        let user = format!("{prefix}{index}");
        let room = room_of(index);
        async move { connect(target, &user, &room, source).await }
    });
    let results: Vec<anyhow::Result<Socket>> = futures_util::stream::iter(attempts)
        .buffered(HOLD_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip() {
        assert_eq!(parse_stamp("3:123456"), Some((3, 123456)));
        assert_eq!(parse_stamp("3:123456:1:9"), Some((3, 123456)));
        assert_eq!(parse_stamp("hello"), None);
    }

    #[test]
    fn schedule_interleaves_publishers() {
        let schedules = Schedule::split(1000.0, Duration::from_secs(1), 3, Duration::ZERO);
        let counts: Vec<usize> = schedules.iter().map(|schedule| schedule.count).collect();
        assert_eq!(counts, vec![334, 333, 333]);
        assert_eq!(
            schedules[1].due(0) - schedules[1].start,
            Duration::from_millis(1)
        );
        assert_eq!(
            schedules[1].due(2) - schedules[1].start,
            Duration::from_millis(7)
        );
    }

    #[test]
    fn positions_count_gaps_and_duplicates() {
        let recorder = Recorder::default();
        let mut positions = Positions::default();
        for seq in [5, 6, 6, 9, 4] {
            positions.observe("c", seq, &recorder);
        }
        assert_eq!(recorder.duplicates.load(Ordering::Relaxed), 2);
        assert_eq!(recorder.gaps.load(Ordering::Relaxed), 1);
        assert_eq!(positions.get("c"), 9);
    }

    #[test]
    fn runtime_message_frame_recorded() {
        let recorder = Recorder::default();
        let mut end = ReaderEnd {
            positions: Positions::default(),
            resumed: HashMap::new(),
        };
        let frame = r#"{"type":"message","message":{"channel_id":"g_1","seq":1,"sender_id":"a","client_id":"x","content":{"kind":"text","text":"2:0"},"created_at":1}}"#;
        handle_frame(frame, &recorder, &mut end);
        assert_eq!(recorder.deliveries(2), 1);
        assert_eq!(end.positions.get("g_1"), 1);
    }

    #[test]
    fn floor_send_frame_recorded() {
        let recorder = Recorder::default();
        let mut end = ReaderEnd {
            positions: Positions::default(),
            resumed: HashMap::new(),
        };
        let Message::Text(text) = send_frame("room", 0, 4, 0, 1) else {
            unreachable!("send_frame builds text frames");
        };
        handle_frame(text.as_str(), &recorder, &mut end);
        assert_eq!(recorder.deliveries(4), 1);
    }
}
