//! The dispatcher benchmark (`corecast-bench dispatch`): how many HTTP pushes the dispatcher
//! accepts per second, and how long a room push takes from the HTTP call to every client of
//! the room.
//!
//! Everything runs in this process on loopback sockets, except the broker of a durable queue
//! (`--queue kafka`: tansu; `nats`: `nats-server -js`; `redis`: `redis-server`; a child process
//! killed by PID at the end, from [`crate::broker`]). Data flows like this:
//! - **servers**: a [`dispatcher::Dispatcher`] (embedded queue, or a durable one with 4
//!   partitions) and one [`gateway::Gateway`] that dials the dispatcher's link port and
//!   registers. With a durable queue, room pushes are sent until one is accepted and consumed
//!   (the consumer has its partitions) before anything is measured.
//! - **accept rate** ([`Phase::Rate`]): `http_clients` threads, each with one keep-alive
//!   HTTP/1.1 connection ([`HttpClient`], hand-written over `TcpStream`), POST room pushes back
//!   to back for `seconds` to a room with no members, so only the HTTP API, the queue and the
//!   job (which still batches and sends each push to the gateway, where nobody is in the room)
//!   are measured. Every answer must be `"code":0`; each request's time goes to a histogram.
//!   Afterwards the job's backlog is drained (queue consumed == produced) and the drain timed.
//! - **end to end** ([`Phase::Latency`]): the load tester engine ([`loadtest::hold::run`], in a
//!   thread) holds `conns` connections to the gateway, all in room `live://bench`. Once all are
//!   authenticated, one publisher (this thread, one keep-alive connection) POSTs
//!   `/goim/push/room` at `rate` per second on a fixed schedule: push `i` is due at
//!   start + i/rate, and a push that falls behind (a slow answer) goes out at once without
//!   shifting the schedule. Its body is [`loadtest::sequence::body`]`(i, ts)` with `ts` the
//!   push's *due* time in unix microseconds, so time spent behind schedule is charged to
//!   latency (no coordinated omission). The push goes HTTP → queue → job batcher → link →
//!   gateway shards → sockets → tester, which checks each connection's seq order and records
//!   now - ts. When every expected message arrived (or 15 s after the last push) the hold is
//!   stopped and its [`loadtest::HoldReport`] read.
//! - **report**: [`run`] returns one JSON value (every figure, plus the CPU seconds each part
//!   used, read from /proc per thread), [`markdown`] renders its tables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use loadtest::{HoldOptions, HoldReport, Live, Rooms, Target, Transport};
use serde_json::{Value, json};

use crate::broker::{Broker, NatsServer, RedisServer};
use crate::procfs;
use loadtest::publish::HttpClient;

/// The dispatcher's queue backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Queue {
    /// In-process channel.
    Embedded,
    /// A Kafka-compatible broker (tansu, started here).
    Kafka,
    /// NATS JetStream (`nats-server -js`, started here, file storage in a temporary directory).
    Nats,
    /// Redis Streams (`redis-server`, started here, no persistence).
    Redis,
}

impl Queue {
    pub fn name(self) -> &'static str {
        match self {
            Queue::Embedded => "embedded",
            Queue::Kafka => "kafka",
            Queue::Nats => "nats",
            Queue::Redis => "redis",
        }
    }
}

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// HTTP pushes accepted per second (a room with no members).
    Rate,
    /// End-to-end latency from the HTTP call to every client of one room.
    Latency,
}

/// One `corecast-bench dispatch` run.
#[derive(Clone, Debug)]
pub struct Options {
    pub queue: Queue,
    /// Connections held in the room (latency phase).
    pub conns: u64,
    /// Pushes per second to the room (latency phase).
    pub rate: u64,
    /// Seconds of pushing, per phase.
    pub seconds: u64,
    /// Concurrent keep-alive HTTP connections (rate phase).
    pub http_clients: usize,
    /// The dispatcher's `history.messages` (None: its default).
    pub history_messages: Option<usize>,
    pub phases: Vec<Phase>,
}

/// The latency target of the issue: p99 under 50 ms in embedded mode.
pub const TARGET_P99_US: u64 = 50_000;

const RATE_PATH: &str = "/goim/push/room?operation=1000&type=live&room=bench-rate";
const LATENCY_PATH: &str = "/goim/push/room?operation=1000&type=live&room=bench";
const LATENCY_ROOM: &str = "live://bench";
/// goim's benchmark push body.
const RATE_BODY: &[u8] = br#"{"test":1}"#;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "samples": h.len(),
        "mean": h.mean().round(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// Counts an error by its message (shortened: a few distinct kinds are expected).
fn count_error(errors: &mut BTreeMap<String, u64>, e: String) {
    let key: String = e.chars().take(120).collect();
    *errors.entry(key).or_default() += 1;
}

/// A durable queue's broker process.
enum QueueBroker {
    Kafka(Broker),
    Nats(NatsServer),
    Redis(RedisServer),
}

impl QueueBroker {
    fn pid(&self) -> Option<u32> {
        match self {
            QueueBroker::Kafka(b) => Some(b.pid()),
            QueueBroker::Nats(n) => n.pid(),
            QueueBroker::Redis(r) => r.pid(),
        }
    }
}

/// The servers under test.
struct Servers {
    dispatcher: dispatcher::Dispatcher,
    gateway: gateway::Gateway,
    broker: Option<QueueBroker>,
}

impl Servers {
    fn start(queue: Queue, history_messages: Option<usize>) -> anyhow::Result<Servers> {
        let broker = match queue {
            Queue::Embedded => None,
            Queue::Kafka => Some(QueueBroker::Kafka(Broker::start(0)?)),
            Queue::Nats => Some(QueueBroker::Nats(NatsServer::start(0)?)),
            Queue::Redis => Some(QueueBroker::Redis(RedisServer::start(0)?)),
        };
        let mut dc = dispatcher::Config::loopback_ephemeral();
        dc.id = "bench-dispatcher".into();
        if let Some(n) = history_messages {
            dc.history.messages = n;
        }
        dc.queue.kind = queue.name().into();
        match &broker {
            None => {}
            Some(QueueBroker::Kafka(b)) => {
                dc.queue.kafka.brokers = vec![format!("127.0.0.1:{}", b.port())];
                dc.queue.kafka.create_partitions = 4;
            }
            Some(QueueBroker::Nats(n)) => {
                dc.queue.nats.servers = vec![n.url()];
                dc.queue.nats.partitions = 4;
            }
            Some(QueueBroker::Redis(r)) => {
                dc.queue.redis.url = r.url();
                dc.queue.redis.partitions = 4;
            }
        }
        let dispatcher = dispatcher::Dispatcher::start(dc).context("starting the dispatcher")?;
        let mut gc = gateway::Config::loopback_ephemeral();
        gc.id = "bench-gateway".into();
        gc.metrics_bind = String::new();
        gc.dispatchers = vec![dispatcher.link_addr().to_string()];
        gc.renew_ms = 1_000;
        let gateway = gateway::Gateway::start(gc).context("starting the gateway")?;
        let servers = Servers {
            dispatcher,
            gateway,
            broker,
        };
        wait_for("the gateway to register", 30, || {
            servers.dispatcher.gateways().len() == 1
        })?;
        Ok(servers)
    }

    fn stop(self) {
        self.gateway.stop();
        self.dispatcher.stop();
        drop(self.broker);
    }

    fn queue_counts(&self) -> (u64, u64) {
        let m = self.dispatcher.metrics();
        (
            m.queue_produced.load(Ordering::Relaxed),
            m.queue_consumed.load(Ordering::Relaxed),
        )
    }

    /// Dispatcher counters that show what the job did.
    fn job_counts(&self) -> [u64; 4] {
        let m = self.dispatcher.metrics();
        [
            m.room_batches.load(Ordering::Relaxed),
            m.room_messages.load(Ordering::Relaxed),
            m.gateway_acks.load(Ordering::Relaxed),
            m.gateway_buffer_dropped.load(Ordering::Relaxed),
        ]
    }

    /// CPU seconds so far of each part that stays alive through a phase.
    fn cpu(&self) -> [f64; 4] {
        [
            procfs::thread_cpu_secs("corecast-dispat"),
            procfs::thread_cpu_secs("rdk:"),
            procfs::thread_cpu_secs("corecast-shard")
                + procfs::thread_cpu_secs("corecast-link")
                + procfs::thread_cpu_secs("corecast-uplink"),
            self.broker
                .as_ref()
                .and_then(QueueBroker::pid)
                .map_or(0.0, procfs::pid_cpu_secs),
        ]
    }

    /// Waits until the job took everything the queue accepted; seconds waited.
    fn drain(&self, limit: Duration) -> f64 {
        let t = Instant::now();
        loop {
            let (p, c) = self.queue_counts();
            if c >= p || t.elapsed() > limit {
                return t.elapsed().as_secs_f64();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn cpu_json(before: [f64; 4], after: [f64; 4], clients: f64, tester: Option<f64>) -> Value {
    let d = |i: usize| ((after[i] - before[i]) * 100.0).round() / 100.0;
    let mut v = json!({
        "dispatcher_runtime": d(0),
        "kafka_client_threads": d(1),
        "gateway": d(2),
        "broker_process": d(3),
        "http_clients": (clients * 100.0).round() / 100.0,
    });
    if let Some(t) = tester {
        v["tester"] = json!((t * 100.0).round() / 100.0);
    }
    v
}

/// Polls `f` every 20 ms until it holds; an error naming `what` after `secs`.
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        if Instant::now() > end {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Pushes to the empty room until one is accepted and the job consumed it: with Kafka, the
/// producer has its metadata and the consumer group its partitions.
fn warm_up(s: &Servers) -> anyhow::Result<Value> {
    let t = Instant::now();
    let mut client = HttpClient::connect(s.dispatcher.http_addr())?;
    let (mut pushes, mut errors) = (0u64, BTreeMap::new());
    let (_, c0) = s.queue_counts();
    loop {
        pushes += 1;
        if let Err(e) = client.push(RATE_PATH, RATE_BODY) {
            count_error(&mut errors, e);
        }
        if s.queue_counts().1 > c0 {
            break;
        }
        if t.elapsed() > Duration::from_secs(90) {
            bail!("no push was accepted and consumed within 90 s: {errors:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    s.drain(Duration::from_secs(30));
    Ok(json!({ "secs": t.elapsed().as_secs_f64(), "pushes": pushes, "errors": errors }))
}

/// What one rate-phase client thread counted.
struct ClientCount {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    cpu_secs: f64,
}

fn rate_client(addr: SocketAddr, end: Instant) -> ClientCount {
    let mut c = ClientCount {
        ok: 0,
        errors: BTreeMap::new(),
        latency: histogram(),
        cpu_secs: 0.0,
    };
    let cpu0 = loadtest::cpu::thread_secs();
    let mut client = None;
    while Instant::now() < end {
        let cl = match client.as_mut() {
            Some(cl) => cl,
            None => match HttpClient::connect(addr) {
                Ok(cl) => client.insert(cl),
                Err(e) => {
                    count_error(&mut c.errors, format!("connect: {:?}", e.kind()));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let t = Instant::now();
        let r = cl.push(RATE_PATH, RATE_BODY);
        record(&mut c.latency, t.elapsed());
        match r {
            Ok(()) => c.ok += 1,
            Err(e) => count_error(&mut c.errors, e),
        }
    }
    c.cpu_secs = loadtest::cpu::thread_secs() - cpu0;
    c
}

/// HTTP pushes accepted per second by `clients` concurrent keep-alive connections.
fn accept_rate(s: &Servers, clients: usize, seconds: u64) -> anyhow::Result<Value> {
    let addr = s.dispatcher.http_addr();
    let (p0, c0) = s.queue_counts();
    let j0 = s.job_counts();
    let cpu0 = s.cpu();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..clients.max(1))
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("bench-http-{i}"))
                .spawn(move || rate_client(addr, end))
        })
        .collect::<Result<_, _>>()?;
    let mut ok = 0;
    let mut errors = BTreeMap::new();
    let mut latency = histogram();
    let mut client_cpu = 0.0;
    for t in threads {
        let c = t
            .join()
            .map_err(|_| anyhow::anyhow!("an HTTP client panicked"))?;
        ok += c.ok;
        for (k, v) in c.errors {
            *errors.entry(k).or_default() += v;
        }
        latency.add(&c.latency)?;
        client_cpu += c.cpu_secs;
    }
    let secs = start.elapsed().as_secs_f64();
    let (p1, c1) = s.queue_counts();
    let drain_secs = s.drain(Duration::from_secs(60));
    let (p2, c2) = s.queue_counts();
    let j1 = s.job_counts();
    let cpu1 = s.cpu();
    let error_count: u64 = errors.values().sum();
    let accepted_per_sec = ok as f64 / secs;
    eprintln!(
        "accept rate: {ok} pushes in {secs:.1} s = {accepted_per_sec:.0}/s, {error_count} errors, request p50 {} µs p99 {} µs; job backlog at end {} (drained in {drain_secs:.2} s)",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        p1.saturating_sub(c1)
    );
    Ok(json!({
        "http_clients": clients,
        "seconds": secs,
        "accepted": ok,
        "accepted_per_sec": accepted_per_sec.round() as u64,
        "errors": error_count,
        "error_kinds": errors,
        "request_latency_us": percentiles(&latency),
        "queue_produced": p1 - p0,
        "queue_consumed_by_end": c1 - c0,
        "queue_consumed_after_drain": c2 - c0,
        "queue_produced_after_drain": p2 - p0,
        "drain_secs": drain_secs,
        "room_batches": j1[0] - j0[0],
        "room_messages": j1[1] - j0[1],
        "gateway_acks": j1[2] - j0[2],
        "gateway_buffer_dropped": j1[3] - j0[3],
        "cpu_secs": cpu_json(cpu0, cpu1, client_cpu, None),
    }))
}

/// Latency from the HTTP call to the clients: `conns` connections in one room, `rate`
/// pushes per second for `seconds`.
fn end_to_end(s: &Servers, conns: u64, rate: u64, seconds: u64) -> anyhow::Result<Value> {
    if conns == 0 || conns > u32::MAX as u64 || rate == 0 {
        bail!("the latency phase needs --conns above 0 and --rate above 0");
    }
    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let opts = HoldOptions {
        targets: vec![Target {
            transport: Transport::Tcp,
            addr: s.gateway.tcp_addr(),
            connections: conns as u32,
        }],
        rooms: Rooms::One(LATENCY_ROOM.into()),
        key_prefix: "bench".into(),
        duration: Duration::from_secs(3_600),
        quiet: true,
        stop: stop.clone(),
        live: live.clone(),
        ..HoldOptions::default()
    };
    let connect_start = Instant::now();
    let hold = std::thread::Builder::new()
        .name("bench-hold".into())
        .spawn(move || loadtest::hold::run(opts))?;
    let finish = |hold: std::thread::JoinHandle<loadtest::Result<HoldReport>>| {
        stop.store(true, Ordering::Relaxed);
        match hold.join() {
            Ok(r) => r.context("the load tester failed"),
            Err(_) => bail!("the load tester panicked"),
        }
    };
    // Every connection authenticated (or the tester gave up on some).
    let mut waited = Ok(());
    loop {
        let snap = live.snapshot();
        if snap.authenticated >= conns {
            break;
        }
        if snap.settled >= conns || hold.is_finished() {
            waited = Err(format!(
                "{} of {conns} connections authenticated",
                snap.authenticated
            ));
            break;
        }
        if connect_start.elapsed() > Duration::from_secs(120) {
            waited = Err(format!(
                "only {} of {conns} connections authenticated within 120 s",
                snap.authenticated
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(why) = waited {
        let report = finish(hold)?;
        bail!("{why}: {}", report.summary());
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    // Let the session events and the gateway's next renewal land.
    std::thread::sleep(Duration::from_millis(1_500));
    let dispatcher_conns: u64 = s.dispatcher.gateways().iter().map(|g| g.conn_count).sum();

    let base = live.snapshot();
    let g0 = s.gateway.total();
    let j0 = s.job_counts();
    let cpu0 = s.cpu();
    let client_cpu0 = loadtest::cpu::thread_secs();
    let mut client = HttpClient::connect(s.dispatcher.http_addr())?;
    let pushes = rate * seconds;
    let mut ok = 0u64;
    let mut errors = BTreeMap::new();
    let mut call = histogram();
    let mut late = histogram();
    let mut late_over_1ms = 0u64;
    let start = Instant::now();
    let start_us = now_us();
    for i in 0..pushes {
        let offset = Duration::from_nanos(i * 1_000_000_000 / rate);
        let due = start + offset;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let sent = Instant::now();
        let behind = sent.saturating_duration_since(due);
        record(&mut late, behind);
        if behind > Duration::from_millis(1) {
            late_over_1ms += 1;
        }
        let body = loadtest::sequence::body(i, start_us + offset.as_micros() as u64);
        let r = client.push(LATENCY_PATH, body.as_bytes());
        record(&mut call, sent.elapsed());
        match r {
            Ok(()) => ok += 1,
            Err(e) => count_error(&mut errors, e),
        }
    }
    let push_secs = start.elapsed().as_secs_f64();
    let client_cpu = loadtest::cpu::thread_secs() - client_cpu0;
    let expected = conns * ok;
    let settle = Instant::now();
    while live.snapshot().messages - base.messages < expected
        && settle.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let settle_secs = settle.elapsed().as_secs_f64();
    let j1 = s.job_counts();
    let g1 = s.gateway.total();
    let cpu1 = s.cpu();
    let report = finish(hold)?;
    let received = report.messages - base.messages;
    let error_count: u64 = errors.values().sum();
    let lat = report.latency_us;
    if let Some(l) = &lat {
        eprintln!(
            "end to end: {conns} conns, {ok}/{pushes} pushes ok at {rate}/s, {received}/{expected} messages, latency p50 {} µs p99 {} µs max {} µs",
            l.p50, l.p99, l.max
        );
    }
    Ok(json!({
        "conns": conns,
        "rate": rate,
        "pushes": pushes,
        "pushes_ok": ok,
        "push_errors": error_count,
        "push_error_kinds": errors,
        "push_secs": push_secs,
        "connect_secs": connect_secs,
        "dispatcher_reported_conns": dispatcher_conns,
        "sends_late_over_1ms": late_over_1ms,
        "send_lateness_us": percentiles(&late),
        "http_call_us": percentiles(&call),
        "expected": expected,
        "received": received,
        "lost": expected.saturating_sub(received),
        "settle_secs": settle_secs,
        "order": report.order,
        "latency_us": lat,
        "room_batches": j1[0] - j0[0],
        "room_messages": j1[1] - j0[1],
        "gateway_acks": j1[2] - j0[2],
        "gateway_buffer_dropped": j1[3] - j0[3],
        "gateway_writes": g1.writes - g0.writes,
        "gateway_messages_written": g1.messages_written - g0.messages_written,
        "gateway_messages_per_write": (g1.messages_written - g0.messages_written) as f64
            / (g1.writes - g0.writes).max(1) as f64,
        "cpu_secs": cpu_json(cpu0, cpu1, client_cpu, Some(report.worker_cpu_secs)),
        "tester": {
            "authenticated": report.authenticated,
            "open_at_end": report.open_at_end,
            "closed_by_server": report.closed_by_server,
            "close_reasons": report.close_reasons,
            "connect_errors": report.connect_errors,
            "errors": report.errors,
            "malformed": report.malformed,
            "recv_no_buffer": report.recv_no_buffer,
            "messages_per_sec": report.messages_per_sec,
            "worker_cpu_secs": report.worker_cpu_secs,
        },
    }))
}

/// Runs the phases asked for against fresh servers; one JSON value with every figure.
pub fn run(o: &Options) -> anyhow::Result<Value> {
    let t = Instant::now();
    let s = Servers::start(o.queue, o.history_messages)?;
    let start_secs = t.elapsed().as_secs_f64();
    let result = (|| {
        let warm = warm_up(&s)?;
        eprintln!(
            "{} queue: servers up in {start_secs:.1} s, warm after {:.1} s",
            o.queue.name(),
            warm["secs"].as_f64().unwrap_or(0.0)
        );
        let accept = if o.phases.contains(&Phase::Rate) {
            accept_rate(&s, o.http_clients, o.seconds)?
        } else {
            Value::Null
        };
        let e2e = if o.phases.contains(&Phase::Latency) {
            end_to_end(&s, o.conns, o.rate, o.seconds)?
        } else {
            Value::Null
        };
        Ok::<_, anyhow::Error>((warm, accept, e2e))
    })();
    s.stop();
    let (warm, accept, e2e) = result?;
    let p99 = e2e["latency_us"]["p99"].as_u64();
    Ok(json!({
        "queue": o.queue.name(),
        "conns": o.conns,
        "rate": o.rate,
        "seconds": o.seconds,
        "http_clients": o.http_clients,
        "history_messages": o.history_messages,
        "servers_start_secs": start_secs,
        "warm_up": warm,
        "accept": accept,
        "end_to_end": e2e,
        "target_p99_us": TARGET_P99_US,
        // The target is the embedded queue's; the durable queues' latency is recorded
        // against it too.
        "target_met": p99.map(|p| p < TARGET_P99_US),
        "target_applies": o.queue == Queue::Embedded,
    }))
}

fn ms(v: &Value) -> String {
    v.as_f64()
        .map_or("—".into(), |us| format!("{:.1} ms", us / 1000.0))
}

/// The result's tables.
pub fn markdown(r: &Value) -> String {
    let mut md = String::new();
    let q = r["queue"].as_str().unwrap_or("");
    let a = &r["accept"];
    if !a.is_null() {
        let c = &a["cpu_secs"];
        md += &format!(
            "## HTTP pushes accepted\n\nPOST `{RATE_PATH}` (a room with no members) back to back from {} keep-alive connections for {:.1} s.\n\n\
             | queue | HTTP clients | accepted | **accepted/s** | errors | request p50 / p99 / max | job backlog at end, drained in | CPU-s: dispatcher (+ Kafka client) / gateway / broker / HTTP clients |\n|---|---|---|---|---|---|---|---|\n\
             | {q} | {} | {} | **{}** | {} | {} / {} / {} | {} msgs, {:.2} s | {} (+ {}) / {} / {} / {} |\n\n",
            a["http_clients"],
            a["seconds"].as_f64().unwrap_or(0.0),
            a["http_clients"],
            a["accepted"],
            a["accepted_per_sec"],
            a["errors"],
            ms(&a["request_latency_us"]["p50"]),
            ms(&a["request_latency_us"]["p99"]),
            ms(&a["request_latency_us"]["max"]),
            a["queue_produced"].as_u64().unwrap_or(0)
                - a["queue_consumed_by_end"].as_u64().unwrap_or(0),
            a["drain_secs"].as_f64().unwrap_or(0.0),
            c["dispatcher_runtime"],
            c["kafka_client_threads"],
            c["gateway"],
            c["broker_process"],
            c["http_clients"],
        );
        if a["errors"].as_u64().unwrap_or(0) > 0 {
            md += &format!("Errors: `{}`\n\n", a["error_kinds"]);
        }
    }
    let e = &r["end_to_end"];
    if !e.is_null() {
        let l = &e["latency_us"];
        let o = &e["order"];
        let c = &e["cpu_secs"];
        let applies = r["target_applies"].as_bool().unwrap_or(false);
        let met = match (r["target_met"].as_bool(), applies) {
            (Some(true), true) => "met",
            (Some(false), true) => "**missed**",
            (Some(true), false) => "under (target is for embedded)",
            (Some(false), false) => "over (target is for embedded)",
            (None, _) => "—",
        };
        md += &format!(
            "## End-to-end latency\n\n{} connections in room `{LATENCY_ROOM}`, {} pushes/s for {} s through `POST {LATENCY_PATH}`; latency from each push's scheduled send time to its arrival at each client.\n\n\
             | queue | conns | pushes/s | pushes ok | delivered / expected | lost | gaps / dups / reorders | p50 | p90 | **p99** | p99.9 | max | p99 < 50 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
             | {q} | {} | {} | {} / {} | {} / {} | {} | {} / {} / {} | {} | {} | **{}** | {} | {} | {met} |\n\n\
             HTTP call p50 / p99 / max: {} / {} / {}; sends more than 1 ms behind schedule: {} (max {}); room batches from the job: {} for {} messages; gateway socket writes: {} ({:.1} messages per write).\n\
             CPU-s over the run: dispatcher {} (+ Kafka client {}), gateway {}, broker {}, load tester {}, publisher {}.\n\n",
            e["conns"],
            e["rate"],
            e["pushes"].as_u64().unwrap_or(0) / e["rate"].as_u64().unwrap_or(1).max(1),
            e["conns"],
            e["rate"],
            e["pushes_ok"],
            e["pushes"],
            e["received"],
            e["expected"],
            e["lost"],
            o["gaps"],
            o["duplicates"],
            o["reorders"],
            ms(&l["p50"]),
            ms(&l["p90"]),
            ms(&l["p99"]),
            ms(&l["p999"]),
            ms(&l["max"]),
            ms(&e["http_call_us"]["p50"]),
            ms(&e["http_call_us"]["p99"]),
            ms(&e["http_call_us"]["max"]),
            e["sends_late_over_1ms"],
            ms(&e["send_lateness_us"]["max"]),
            e["room_batches"],
            e["room_messages"],
            e["gateway_writes"],
            e["gateway_messages_per_write"].as_f64().unwrap_or(0.0),
            c["dispatcher_runtime"],
            c["kafka_client_threads"],
            c["gateway"],
            c["broker_process"],
            c["tester"],
            c["http_clients"],
        );
        if e["push_errors"].as_u64().unwrap_or(0) > 0 {
            md += &format!("Push errors: `{}`\n\n", e["push_error_kinds"]);
        }
    }
    md
}
