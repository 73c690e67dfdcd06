//! The fan-out and memory harness: a server in this process (the gateway, or the bare writer
//! on the same io_uring engine), clients from the bundled load tester in a child process
//! ([`Tester`]), and the server's own CPU time and memory read from /proc.
//!
//! [`memory_runs`] measures memory per idle authenticated connection; [`fanout`] pushes to one
//! room holding every connection at fixed rates, for the gateway and for the bare writer, and
//! reports deliveries per server CPU-second and the gateway's share of the bare writer's.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gateway::Gateway;
use gateway::uring::RingSize;
use protocol::batch::BatchBuilder;
use protocol::link::{Body, RoomBatch};
use serde_json::{Value, json};

use crate::bare_writer::BareWriter;
use crate::dispatch::wait_for;
use crate::procfs;

/// The `corecast` binary: `$CORECAST_BIN` when set, else the one beside this executable
/// (`target/<profile>/`).
pub fn corecast_bin() -> anyhow::Result<PathBuf> {
    let bin = match std::env::var_os("CORECAST_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?.with_file_name("corecast"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release), or set CORECAST_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// The load tester holding `conns` TCP connections in one room until stopped.
pub struct Tester {
    child: Child,
    report: PathBuf,
}

impl Tester {
    pub fn start(addr: std::net::SocketAddr, conns: u64, tag: &str) -> anyhow::Result<Tester> {
        let report =
            std::env::temp_dir().join(format!("corecast-bench-{}-{tag}.json", std::process::id()));
        let child = Command::new(corecast_bin()?)
            .args([
                "loadtest",
                "--tcp",
                &conns.to_string(),
                "--tcp-addr",
                &addr.to_string(),
            ])
            .args([
                "--room",
                "test://1",
                "--duration",
                "1h",
                "--heartbeat-secs",
                "100000",
                "-q",
            ])
            .arg("--report")
            .arg(&report)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting corecast loadtest")?;
        Ok(Tester { child, report })
    }

    /// Stops the tester (SIGTERM: it writes its report) and reads the report.
    pub fn finish(mut self) -> anyhow::Result<Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        let text = std::fs::read_to_string(&self.report)
            .with_context(|| format!("the tester ({status}) wrote no report"))?;
        std::fs::remove_file(&self.report).ok();
        Ok(serde_json::from_str(&text)?)
    }
}

/// A number from the environment; a value that does not parse is ignored with a warning.
fn env_number<T: std::str::FromStr>(key: &str) -> Option<T> {
    let v = std::env::var(key).ok()?;
    let n = v.parse().ok();
    if n.is_none() {
        tracing::warn!("{key}={v:?} is not a number: ignored");
    }
    n
}

fn gateway_config() -> gateway::Config {
    let mut c = gateway::Config {
        metrics_bind: String::new(),
        ..gateway::Config::loopback_ephemeral()
    };
    c.limits.heartbeat_timeout_ms = 3_600_000;
    // At rates past what the machine can deliver, queues grow on both servers; the bare writer
    // has no cap, so the gateway's must not act either (64 MiB: never reached here).
    c.limits.outbound_cap_bytes = 64 << 20;
    if let Some(v) = env_number("BENCH_RECV_BUFFERS") {
        c.engine.recv_buffers = v;
    }
    if let Some(v) = env_number("BENCH_SLOTS") {
        c.engine.slots_per_ring = v;
    }
    c
}

/// Starts a gateway whose up-messages (session events) are consumed, as a dispatcher would.
fn start_gateway() -> anyhow::Result<Gateway> {
    let mut gw = Gateway::start(gateway_config())?;
    if let Some(up) = gw.take_uplink() {
        std::thread::spawn(move || for _ in up {});
    }
    Ok(gw)
}

fn memory(kind: Kind, conns: u64) -> anyhow::Result<Value> {
    let server = Server::start(kind)?;
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, k0, split0) = (
        procfs::rss_bytes(),
        procfs::kernel_socket_bytes(),
        procfs::rss_split(),
    );
    let started = Instant::now();
    let tester = Tester::start(server.addr(), conns, "memory")?;
    wait_for("every connection authenticated", 300, || {
        server.authenticated() == conns
    })?;
    let connect_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let (rss1, k1, split1) = (
        procfs::rss_bytes(),
        procfs::kernel_socket_bytes(),
        procfs::rss_split(),
    );
    let report = tester.finish()?;
    drop(server);
    let user = (rss1 as f64 - rss0 as f64) / conns as f64;
    let kernel = (k1 as f64 - k0 as f64) / conns as f64;
    Ok(json!({
        "server": kind.name(),
        "conns": conns,
        "rss_before_bytes": rss0,
        "rss_after_bytes": rss1,
        "user_bytes_per_conn": user.round(),
        "user_split_per_conn": {
            "anon": ((split1.0 as f64 - split0.0 as f64) / conns as f64).round(),
            "file": ((split1.1 as f64 - split0.1 as f64) / conns as f64).round(),
            "shmem": ((split1.2 as f64 - split0.2 as f64) / conns as f64).round(),
        },
        "kernel_bytes_per_pair": kernel.round(),
        "kernel_bytes_per_server_socket_estimate": (kernel / 2.0).round(),
        "connect_secs": connect_secs,
        "tester": { "authenticated": report["authenticated"], "connect_errors": report["connect_errors"], "rss_note": "the tester is a separate process; its memory is not counted" },
    }))
}

/// Several memory measurements of `kind` (a fresh server each time); the headline figures are
/// medians, the spread is kept.
pub fn memory_runs(kind: Kind, conns: u64, runs: usize) -> anyhow::Result<Value> {
    let mut all = Vec::new();
    for i in 0..runs.max(1) {
        if i > 0 {
            // Let the previous run's sockets leave the kernel's slab before the next baseline.
            std::thread::sleep(Duration::from_secs(5));
        }
        let r = memory(kind, conns)?;
        tracing::info!(
            "{} memory run {}: {} B per connection",
            kind.name(),
            i + 1,
            r["user_bytes_per_conn"]
        );
        all.push(r);
    }
    let median = |key: &str| {
        let mut v: Vec<f64> = all.iter().filter_map(|r| r[key].as_f64()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (user, user_min, user_max) = median("user_bytes_per_conn");
    let (kernel, kernel_min, kernel_max) = median("kernel_bytes_per_pair");
    Ok(json!({
        "server": kind.name(),
        "conns": conns,
        "runs": all.len(),
        "user_bytes_per_conn": user,
        "user_bytes_per_conn_min_max": [user_min, user_max],
        "kernel_bytes_per_pair": kernel,
        "kernel_bytes_per_pair_min_max": [kernel_min, kernel_max],
        "kernel_bytes_per_server_socket_estimate": (kernel / 2.0).round(),
        "each_run": all,
    }))
}

/// Which server a measurement runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Gateway,
    BareWriter,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::BareWriter => "bare-writer",
        }
    }
}

/// A server under test, in this process.
pub enum Server {
    Gateway(Gateway),
    Bare(BareWriter),
}

impl Server {
    /// Starts a fresh gateway, or a bare writer on the gateway's default engine sizes.
    pub fn start(kind: Kind) -> anyhow::Result<Server> {
        Ok(match kind {
            Kind::Gateway => Server::Gateway(start_gateway()?),
            Kind::BareWriter => {
                let e = gateway::config::EngineConfig::default();
                let size = RingSize {
                    entries: e.ring_entries,
                    slots: e.slots_per_ring,
                    recv_buffers: e.recv_buffers,
                    recv_buffer_size: e.recv_buffer_size,
                };
                Server::Bare(BareWriter::start(&cores(), "127.0.0.1:0".parse()?, size)?)
            }
        })
    }

    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Server::Gateway(g) => g.tcp_addr(),
            Server::Bare(b) => b.addr(),
        }
    }
    fn authenticated(&self) -> u64 {
        match self {
            Server::Gateway(g) => g.total().authenticated,
            Server::Bare(b) => b
                .totals
                .authenticated
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
    /// (messages queued, socket writes completed, messages fully written)
    fn counts(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        match self {
            Server::Gateway(g) => {
                let t = g.total();
                (t.messages_out, t.writes, t.messages_written)
            }
            Server::Bare(b) => (
                b.totals.messages.load(Relaxed),
                b.totals.writes.load(Relaxed),
                b.totals.written.load(Relaxed),
            ),
        }
    }
    fn cpu(&self) -> f64 {
        match self {
            Server::Gateway(_) => procfs::thread_cpu_secs("corecast-shard"),
            Server::Bare(_) => procfs::thread_cpu_secs("bare-writer"),
        }
    }
    fn push(&self, frames: Vec<u8>) {
        match self {
            Server::Gateway(g) => {
                g.ingress()
                    .deliver(Body::RoomBatch(RoomBatch {
                        id: 0,
                        room: "test://1".into(),
                        frames,
                    }))
                    .expect("a well-formed batch");
            }
            Server::Bare(b) => b.push(
                &protocol::batch::Batch::from_inner_frames(&frames).expect("a well-formed batch"),
            ),
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Server::Gateway(_) => Kind::Gateway.name(),
            Server::Bare(_) => Kind::BareWriter.name(),
        }
    }
}

/// What each push carries.
#[derive(Clone, Copy, Debug)]
pub enum PushBody {
    /// `{"seq":N,"ts":T}` (loss, order and latency checked), padded with `"pad"` by that many
    /// bytes.
    Seq { pad: usize },
    /// The same bytes every time (goim's benchmark: `{"test":1}`): counted only.
    Fixed(&'static [u8]),
}

impl PushBody {
    fn bytes(self, seq: u64) -> Vec<u8> {
        match self {
            PushBody::Fixed(b) => b.to_vec(),
            PushBody::Seq { pad } => {
                let mut body = loadtest::sequence::body(seq, now_us());
                if pad > 0 {
                    body.pop();
                    body.push_str(&format!(",\"pad\":\"{}\"}}", "x".repeat(pad)));
                }
                body.into_bytes()
            }
        }
    }

    /// The body's name in result files.
    pub fn name(self) -> String {
        match self {
            PushBody::Fixed(b) => String::from_utf8_lossy(b).into_owned(),
            PushBody::Seq { pad: 0 } => r#"{"seq":N,"ts":T}"#.into(),
            PushBody::Seq { pad } => format!(r#"{{"seq":N,"ts":T,"pad":<{pad} B>}}"#),
        }
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One fan-out run: `conns` connections in one room, `rate` pushes/s for `seconds`; what the
/// clients received per second of the server's CPU time.
pub fn fanout_run(
    server: Server,
    conns: u64,
    rate: u64,
    seconds: u64,
    body: PushBody,
) -> anyhow::Result<Value> {
    let tester = Tester::start(server.addr(), conns, &format!("{}-{rate}", server.name()))?;
    wait_for("every connection authenticated", 300, || {
        server.authenticated() == conns
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let pushes = rate * seconds;
    let (m0, w0, d0) = server.counts();
    let cpu0 = server.cpu();
    let t0 = Instant::now();
    for i in 0..pushes {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let mut b = BatchBuilder::default();
        b.push(1000, &body.bytes(i));
        server.push(b.inner_frames().to_vec());
    }
    let push_secs = t0.elapsed().as_secs_f64();
    // Let the last writes land: every message written (at most 120 s, for overloaded shapes).
    let settle = Instant::now();
    while server.counts().2 - d0 < pushes * conns && settle.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let drain_secs = settle.elapsed().as_secs_f64();
    let cpu = server.cpu() - cpu0;
    let (m1, w1, _) = server.counts();
    // The tester reads what the kernel still holds before it is stopped.
    std::thread::sleep(Duration::from_millis(500));
    let report = tester.finish()?;
    let delivered = report["messages"].as_u64().unwrap_or(0);
    let writes = w1 - w0;
    Ok(json!({
        "server": server.name(),
        "conns": conns,
        "rate": rate,
        "body": body.name(),
        "pushes": pushes,
        "push_secs": push_secs,
        "drain_secs": drain_secs,
        "expected": pushes * conns,
        "queued": m1 - m0,
        "delivered": delivered,
        "gaps": report["order"]["gaps"],
        "server_cpu_secs": cpu,
        "deliveries_per_cpu_sec": (delivered as f64 / cpu.max(1e-9)).round(),
        "writes": writes,
        "writes_per_cpu_sec": (writes as f64 / cpu.max(1e-9)).round(),
        "messages_per_write": (delivered as f64 / writes.max(1) as f64),
        "latency_us": report["latency_us"],
        "tester_cpu_secs": report["worker_cpu_secs"],
    }))
}

/// This process's cores (one server thread each).
pub fn cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0])
}

/// `a / b` of two figures of two results (0 when either is missing).
pub fn ratio(a: &Value, b: &Value) -> f64 {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => a / b,
        _ => 0.0,
    }
}

/// Room fan-out at each rate, for the gateway and then the bare writer (fresh servers each).
pub fn fanout(conns: u64, rates: &[u64], seconds: u64, body: PushBody) -> anyhow::Result<Value> {
    let mut runs = Vec::new();
    for &rate in rates {
        let g = fanout_run(Server::start(Kind::Gateway)?, conns, rate, seconds, body)?;
        let b = fanout_run(Server::start(Kind::BareWriter)?, conns, rate, seconds, body)?;
        let share = ratio(&g["deliveries_per_cpu_sec"], &b["deliveries_per_cpu_sec"]);
        tracing::info!(
            "conns {conns} rate {rate}/s: gateway {} deliveries/cpu-s, bare writer {}, share {:.0}%",
            g["deliveries_per_cpu_sec"],
            b["deliveries_per_cpu_sec"],
            share * 100.0
        );
        runs.push(
            json!({ "rate": rate, "gateway": g, "bare_writer": b, "share_of_bare_writer": share }),
        );
    }
    Ok(json!({ "conns": conns, "seconds": seconds, "body": body.name(), "runs": runs }))
}
