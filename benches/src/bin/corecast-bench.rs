//! The end-to-end benchmark harness.
//!
//! `corecast-bench memory --conns N`: gateway resident memory and kernel socket memory per idle
//! authenticated connection.
//! `corecast-bench fanout --conns N --rates 1,10,100`: one room holding every connection, pushes
//! at each rate; delivered messages and socket writes per server CPU-second, for the gateway and
//! for the bare writer at the same shape, and their ratio.
//! `corecast-bench dispatch --queue embedded|kafka --conns N --rate R --seconds S`: HTTP pushes
//! the dispatcher accepts per second, and latency from the HTTP call to N clients of one room
//! at R pushes/s (dispatcher, gateway, Kafka broker and clients all here; see
//! `benches::dispatch`).
//!
//! Servers run inside this process (their threads' CPU time is read from /proc); clients are the
//! bundled load tester (`corecast loadtest`) in a child process. Results go to
//! `benches/results/<date>-<host>-<what>.{json,md}` with the command, machine and date.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::bare_writer::BareWriter;
use benches::dispatch;
use benches::dispatch::wait_for;
use benches::procfs;
use clap::{Parser, Subcommand};
use gateway::Gateway;
use gateway::uring::RingSize;
use protocol::batch::BatchBuilder;
use protocol::link::{Body, RoomBatch};
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    what: What,
    /// Where result files go.
    #[arg(long, default_value = "benches/results", global = true)]
    out: PathBuf,
    /// A label added to result file names (e.g. "short" for CI runs).
    #[arg(long, default_value = "", global = true)]
    label: String,
}

#[derive(Subcommand)]
enum What {
    /// Memory per idle authenticated connection.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        conns: u64,
        /// Repeat the measurement (fresh gateway each time) and report the median.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Room fan-out against the bare writer.
    Fanout {
        #[arg(long, default_value_t = 10_000)]
        conns: u64,
        /// Pushes per second to the room, one run each.
        #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
        rates: Vec<u64>,
        /// Seconds of pushing per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Body bytes per message (goim's benchmark: 10, `{"test":1}`; ours carry seq and ts).
        #[arg(long, default_value_t = 0)]
        pad: usize,
    },
    /// The dispatcher: HTTP pushes accepted per second, and end-to-end latency to one room.
    Dispatch {
        #[arg(long, value_enum, default_value = "embedded")]
        queue: dispatch::Queue,
        /// Connections held in the room (latency phase).
        #[arg(long, default_value_t = 10_000)]
        conns: u64,
        /// Pushes per second to the room (latency phase; goim's benchmark: 40).
        #[arg(long, default_value_t = 40)]
        rate: u64,
        /// Seconds of pushing, per phase.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Concurrent keep-alive HTTP connections (rate phase).
        #[arg(long, default_value_t = 8)]
        http_clients: usize,
        /// Which measurements to make.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "rate,latency"
        )]
        phases: Vec<dispatch::Phase>,
    },
}

fn corecast_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("corecast");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The load tester holding `conns` TCP connections in one room until stopped.
struct Tester {
    child: Child,
    report: PathBuf,
}

impl Tester {
    fn start(addr: std::net::SocketAddr, conns: u64, tag: &str) -> anyhow::Result<Tester> {
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
    fn finish(mut self) -> anyhow::Result<Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        let text = std::fs::read_to_string(&self.report)
            .with_context(|| format!("the tester ({status}) wrote no report"))?;
        std::fs::remove_file(&self.report).ok();
        Ok(serde_json::from_str(&text)?)
    }
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
    if let Ok(v) = std::env::var("BENCH_RECV_BUFFERS") {
        c.engine.recv_buffers = v.parse().unwrap();
    }
    if let Ok(v) = std::env::var("BENCH_SLOTS") {
        c.engine.slots_per_ring = v.parse().unwrap();
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

fn memory(conns: u64) -> anyhow::Result<Value> {
    let gw = start_gateway()?;
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, k0, split0) = (
        procfs::rss_bytes(),
        procfs::kernel_socket_bytes(),
        procfs::rss_split(),
    );
    let started = Instant::now();
    let tester = Tester::start(gw.tcp_addr(), conns, "memory")?;
    wait_for("every connection authenticated", 300, || {
        gw.total().authenticated == conns
    })?;
    let connect_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let (rss1, k1, split1) = (
        procfs::rss_bytes(),
        procfs::kernel_socket_bytes(),
        procfs::rss_split(),
    );
    let report = tester.finish()?;
    let rings = gw.stats().len();
    drop(gw);
    let user = (rss1 as f64 - rss0 as f64) / conns as f64;
    let kernel = (k1 as f64 - k0 as f64) / conns as f64;
    Ok(json!({
        "conns": conns,
        "shards": rings,
        "gateway_rss_before_bytes": rss0,
        "gateway_rss_after_bytes": rss1,
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

/// Several memory measurements; the headline figures are medians, the spread is kept.
fn memory_runs(conns: u64, runs: usize) -> anyhow::Result<Value> {
    let mut all = Vec::new();
    for i in 0..runs.max(1) {
        if i > 0 {
            // Let the previous run's sockets leave the kernel's slab before the next baseline.
            std::thread::sleep(Duration::from_secs(5));
        }
        let r = memory(conns)?;
        eprintln!(
            "run {}: {} B per connection",
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

enum Server {
    Gateway(Gateway),
    Bare(BareWriter),
}

impl Server {
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
            Server::Gateway(_) => "gateway",
            Server::Bare(_) => "bare-writer",
        }
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn fanout_run(
    server: Server,
    conns: u64,
    rate: u64,
    seconds: u64,
    pad: usize,
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
    let padding = "x".repeat(pad);
    for i in 0..pushes {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let mut b = BatchBuilder::default();
        let mut body = loadtest::sequence::body(i, now_us());
        if pad > 0 {
            body.pop();
            body.push_str(&format!(",\"pad\":\"{padding}\"}}"));
        }
        b.push(1000, body.as_bytes());
        server.push(b.inner_frames().to_vec());
    }
    let push_secs = t0.elapsed().as_secs_f64();
    // Let the last writes land: every message written (at most 120 s, for overloaded shapes).
    let settle = Instant::now();
    while server.counts().2 - d0 < pushes * conns && settle.elapsed() < Duration::from_secs(120) {
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

fn cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0])
}

fn fanout(conns: u64, rates: &[u64], seconds: u64, pad: usize) -> anyhow::Result<Value> {
    let mut runs = Vec::new();
    for &rate in rates {
        let g = fanout_run(Server::Gateway(start_gateway()?), conns, rate, seconds, pad)?;
        let e = gateway::config::EngineConfig::default();
        let size = RingSize {
            entries: e.ring_entries,
            slots: e.slots_per_ring,
            recv_buffers: e.recv_buffers,
            recv_buffer_size: e.recv_buffer_size,
        };
        let bare = BareWriter::start(&cores(), "127.0.0.1:0".parse()?, size)?;
        let b = fanout_run(Server::Bare(bare), conns, rate, seconds, pad)?;
        let share = g["deliveries_per_cpu_sec"].as_f64().unwrap_or(0.0)
            / b["deliveries_per_cpu_sec"].as_f64().unwrap_or(1.0).max(1.0);
        eprintln!(
            "conns {conns} rate {rate}/s: gateway {} deliveries/cpu-s, bare writer {}, share {:.0}%",
            g["deliveries_per_cpu_sec"],
            b["deliveries_per_cpu_sec"],
            share * 100.0
        );
        runs.push(
            json!({ "rate": rate, "gateway": g, "bare_writer": b, "share_of_bare_writer": share }),
        );
    }
    Ok(json!({ "conns": conns, "seconds": seconds, "pad": pad, "runs": runs }))
}

fn markdown(what: &str, command: &str, machine: &Value, date: &str, r: &Value) -> String {
    let sharing = if what == "dispatch" {
        "dispatcher, gateway, Kafka broker (kafka runs), load tester and HTTP publishers all sharing it"
    } else {
        "gateway and load tester sharing it"
    };
    let mut md = format!(
        "# {what} — {date}\n\nCommand: `{command}`\n\nMachine: {} ({} cores, {} GiB, Linux {}), {sharing}.\n\n",
        machine["cpu"].as_str().unwrap_or(""),
        machine["cores"],
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or("")
    );
    match what {
        "dispatch" => md += &dispatch::markdown(r),
        "memory" => {
            md += &format!(
                "| connections | runs | gateway RSS growth per idle authenticated connection, median (min-max) | kernel per client+server socket pair, median (min-max) |\n|---|---|---|---|\n| {} | {} | {} B ({}-{}) | {} B ({}-{}) |\n",
                r["conns"],
                r["runs"],
                r["user_bytes_per_conn"],
                r["user_bytes_per_conn_min_max"][0],
                r["user_bytes_per_conn_min_max"][1],
                r["kernel_bytes_per_pair"],
                r["kernel_bytes_per_pair_min_max"][0],
                r["kernel_bytes_per_pair_min_max"][1]
            )
        }
        _ => {
            md += "| conns | pushes/s | server | delivered / expected | gaps | deliveries per CPU-s | writes per CPU-s | msgs per write | p50 / p99 latency | share of bare writer |\n|---|---|---|---|---|---|---|---|---|---|\n";
            for run in r["runs"].as_array().into_iter().flatten() {
                for key in ["gateway", "bare_writer"] {
                    let x = &run[key];
                    let lat = &x["latency_us"];
                    md += &format!(
                        "| {} | {} | {} | {} / {} | {} | {:.0} | {:.0} | {:.1} | {} µs / {} µs | {} |\n",
                        x["conns"],
                        x["rate"],
                        x["server"].as_str().unwrap_or(""),
                        x["delivered"],
                        x["expected"],
                        x["gaps"],
                        x["deliveries_per_cpu_sec"].as_f64().unwrap_or(0.0),
                        x["writes_per_cpu_sec"].as_f64().unwrap_or(0.0),
                        x["messages_per_write"].as_f64().unwrap_or(0.0),
                        lat["p50"],
                        lat["p99"],
                        if key == "gateway" {
                            format!(
                                "{:.0}%",
                                run["share_of_bare_writer"].as_f64().unwrap_or(0.0) * 100.0
                            )
                        } else {
                            "—".into()
                        }
                    );
                }
            }
        }
    }
    md
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let (what, result) = match &cli.what {
        What::Memory { conns, runs } => ("memory", memory_runs(*conns, *runs)?),
        What::Fanout {
            conns,
            rates,
            seconds,
            pad,
        } => ("fanout", fanout(*conns, rates, *seconds, *pad)?),
        What::Dispatch {
            queue,
            conns,
            rate,
            seconds,
            http_clients,
            phases,
        } => (
            "dispatch",
            dispatch::run(&dispatch::Options {
                queue: *queue,
                conns: *conns,
                rate: *rate,
                seconds: *seconds,
                http_clients: *http_clients,
                phases: phases.clone(),
            })?,
        ),
    };
    let machine = procfs::machine();
    let date = String::from_utf8(
        Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d")
            .output()?
            .stdout,
    )?
    .trim()
    .to_string();
    let host = machine["host"].as_str().unwrap_or("host").to_string();
    let doc = json!({ "what": what, "command": command, "date": date, "machine": machine, "result": result });
    std::fs::create_dir_all(&cli.out)?;
    let label = if cli.label.is_empty() {
        String::new()
    } else {
        format!("-{}", cli.label)
    };
    let shape = match &cli.what {
        What::Memory { conns, .. } => format!("{conns}"),
        What::Fanout { conns, .. } => format!("{conns}"),
        What::Dispatch { queue, .. } => queue.name().to_string(),
    };
    let stem = format!("{date}-{host}-{what}-{shape}{label}");
    let json_path = cli.out.join(format!("{stem}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)?)?;
    let md = markdown(what, &command, &doc["machine"], &date, &doc["result"]);
    std::fs::write(cli.out.join(format!("{stem}.md")), &md)?;
    println!("{md}");
    eprintln!("wrote {}", Path::new(&json_path).display());
    Ok(())
}
