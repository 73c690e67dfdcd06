//! `corecast-bench suite`: the end-to-end benchmark as one command. Every shape is measured for
//! the gateway and for the bare writer, and each gateway figure is given as a share of the
//! bare writer's:
//! - **memory**: idle authenticated connections held ([`harness::memory_runs`]); user-space
//!   bytes (RSS growth) and kernel bytes (slab + TCP) per connection;
//! - **room fan-out**: every connection in one room, fixed push rates ([`harness::fanout`]);
//! - **goim's shape through the whole stack**: `corecast up` as a child process on ephemeral
//!   loopback ports, `corecast loadtest --publish` as another with N connections in one room at
//!   40 pushes/s through the dispatcher's HTTP API, once with goim's body `{"test":1}`
//!   (`--goim-shape`: counted, no latency) and once with `{"seq":N,"ts":T}` (loss, order and
//!   latency); the `up` process's CPU and RSS are sampled from /proc. The bare writer runs the
//!   same connections, rate, push time and body;
//! - **criterion**: the latest `cargo bench -p corecast-benches` estimates
//!   (`target/criterion/**/new/estimates.json`), or a fresh run first with `criterion`.
//!
//! [`run`] returns the whole result as JSON; [`write`] puts `<stem>.json`, `<stem>.md` and the
//! SVG charts (`<stem>-*.svg`) in the output directory, and the goim runs' own load-tester
//! reports go to `<stem>-goim-*/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use plotters::prelude::*;
use serde_json::{Value, json};

use crate::harness::{self, Kind, PushBody, Server};
use crate::procfs;
use crate::up::UpProcess;

/// goim's benchmark push body.
const GOIM_BODY: &[u8] = br#"{"test":1}"#;
/// goim's benchmark push rate, per second.
const GOIM_RATE: u64 = 40;

/// The suite's shapes, for `--shapes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    Memory,
    Fanout,
    Goim,
    Criterion,
}

/// goim's shape's push bodies, for `--goim-bodies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GoimBody {
    /// goim's `{"test":1}`: counted, no latency.
    Test,
    /// `{"seq":N,"ts":T}`: loss, order and latency.
    Seq,
}

/// What the suite measures.
#[derive(Clone, Debug)]
pub struct Options {
    pub short: bool,
    /// Run `cargo bench -p corecast-benches` first (else read its latest results).
    pub criterion: bool,
    pub memory_conns: u64,
    pub memory_runs: usize,
    pub fanout_conns: Vec<u64>,
    pub rates: Vec<u64>,
    pub fanout_seconds: u64,
    pub goim_conns: u64,
    pub goim_seconds: u64,
    /// After the pushes, how long the tester may keep receiving until every expected message
    /// arrived (`corecast loadtest --drain`): a backlog that drains is late, not lost.
    pub goim_drain: u64,
    /// Which bodies goim's shape runs with: goim's `{"test":1}` and/or `{"seq":N,"ts":T}`.
    pub goim_bodies: Vec<GoimBody>,
    /// Which shapes run (all by default).
    pub shapes: Vec<Shape>,
    /// `[limits]` lines for the goim shape's gateway (e.g. drop-oldest for a room that
    /// tolerates gaps); none: the gateway's defaults.
    pub goim_limits: Vec<String>,
    /// `[engine]` lines for the goim shape's gateway (e.g. `sndbuf = 4096`).
    pub goim_engine: Vec<String>,
    /// The tester's SO_RCVBUF for goim's shape (0: the kernel's autotuning). With the tester
    /// on the same machine, a million autotuned receive queues behind a backlog can take the
    /// machine's memory: small buffers keep the backlog in the gateway, where it is shared.
    pub goim_rcvbuf: u32,
    /// Where criterion keeps its results (`<target>/criterion`).
    pub criterion_dir: PathBuf,
    /// A sentence for the summary (what these figures are, e.g. "before the fan-out fix").
    pub note: String,
}

impl Options {
    /// The shapes by hand (`short == false`) or for CI (tiny, a few seconds each).
    pub fn new(short: bool) -> Options {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                // target/<profile>/corecast-bench
                let exe = std::env::current_exe().ok()?;
                Some(exe.parent()?.parent()?.to_path_buf())
            })
            .unwrap_or_else(|| PathBuf::from("target"));
        let base = Options {
            short,
            criterion: false,
            memory_conns: 100_000,
            memory_runs: 3,
            fanout_conns: vec![10_000, 100_000],
            rates: vec![1, 10, 40, 100],
            fanout_seconds: 5,
            goim_conns: 100_000,
            goim_seconds: 20,
            goim_drain: 300,
            goim_bodies: vec![GoimBody::Test, GoimBody::Seq],
            shapes: vec![Shape::Memory, Shape::Fanout, Shape::Goim, Shape::Criterion],
            goim_limits: Vec::new(),
            goim_engine: Vec::new(),
            goim_rcvbuf: 0,
            criterion_dir: target.join("criterion"),
            note: String::new(),
        };
        if !short {
            return base;
        }
        Options {
            memory_conns: 2_000,
            memory_runs: 1,
            fanout_conns: vec![1_000],
            rates: vec![10, GOIM_RATE],
            fanout_seconds: 2,
            goim_conns: 1_000,
            goim_seconds: 3,
            goim_drain: 30,
            ..base
        }
    }

    fn json(&self) -> Value {
        json!({
            "short": self.short,
            "criterion_run": self.criterion,
            "memory_conns": self.memory_conns,
            "memory_runs": self.memory_runs,
            "fanout_conns": self.fanout_conns,
            "rates": self.rates,
            "fanout_seconds": self.fanout_seconds,
            "goim_conns": self.goim_conns,
            "goim_seconds": self.goim_seconds,
            "goim_rate": GOIM_RATE,
            "goim_drain": self.goim_drain,
            "goim_bodies": self.goim_bodies.iter().map(|b| format!("{b:?}").to_lowercase()).collect::<Vec<_>>(),
            "shapes": self.shapes.iter().map(|s| format!("{s:?}").to_lowercase()).collect::<Vec<_>>(),
            "goim_limits": self.goim_limits,
            "goim_engine": self.goim_engine,
            "goim_rcvbuf": self.goim_rcvbuf,
            "criterion_dir": self.criterion_dir.display().to_string(),
        })
    }
}

/// Runs every shape; `reports` is where the goim runs' load-tester reports go (`<stem>-goim-…`
/// is appended). One JSON value with every figure.
pub fn run(o: &Options, reports: &Path) -> anyhow::Result<Value> {
    let mut secs = serde_json::Map::new();
    let mut timed = |name: &str, t: Instant| {
        let s = t.elapsed().as_secs_f64();
        tracing::info!("suite: {name} took {s:.1} s");
        secs.insert(name.into(), json!((s * 10.0).round() / 10.0));
    };
    let on = |s: Shape| o.shapes.contains(&s);
    let t = Instant::now();
    let memory = if on(Shape::Memory) {
        memory(o.memory_conns, o.memory_runs)?
    } else {
        Value::Null
    };
    timed("memory", t);
    let t = Instant::now();
    let mut fanout = Vec::new();
    for &conns in o.fanout_conns.iter().filter(|_| on(Shape::Fanout)) {
        let r = harness::fanout(conns, &o.rates, o.fanout_seconds, PushBody::Seq { pad: 0 })?;
        for run in r["runs"].as_array().into_iter().flatten() {
            let mut row = run.clone();
            row["conns"] = json!(conns);
            fanout.push(row);
        }
    }
    timed("fanout", t);
    let t = Instant::now();
    let mut goim = Vec::new();
    for body in o.goim_bodies.iter().filter(|_| on(Shape::Goim)) {
        let body = match body {
            GoimBody::Test => PushBody::Fixed(GOIM_BODY),
            GoimBody::Seq => PushBody::Seq { pad: 0 },
        };
        goim.push(goim_shape(o, body, reports)?);
    }
    timed("goim", t);
    let t = Instant::now();
    let criterion = if on(Shape::Criterion) {
        criterion(o)?
    } else {
        Value::Null
    };
    timed("criterion", t);
    Ok(json!({
        "options": o.json(),
        "memory": memory,
        "fanout": fanout,
        "goim": goim,
        "criterion": criterion,
        "secs": secs,
    }))
}

/// Memory per connection of each server, each measured by `corecast-bench memory` in a
/// process of its own: in one process, the second server's connections reuse the pages the
/// first one's freed and its RSS growth reads low.
fn memory(conns: u64, runs: usize) -> anyhow::Result<Value> {
    let measure = |kind: Kind| -> anyhow::Result<Value> {
        let dir = std::env::temp_dir().join(format!(
            "corecast-suite-{}-memory-{}",
            std::process::id(),
            kind.name()
        ));
        let status = Command::new(std::env::current_exe()?)
            .arg("--out")
            .arg(&dir)
            .args(["memory", "--conns", &conns.to_string()])
            .args(["--runs", &runs.to_string(), "--server", kind.name()])
            .stdout(Stdio::null())
            .status()
            .context("starting corecast-bench memory")?;
        if !status.success() {
            bail!(
                "corecast-bench memory --server {} failed ({status})",
                kind.name()
            );
        }
        let file = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .with_context(|| format!("corecast-bench memory wrote no JSON in {}", dir.display()))?;
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(doc["result"].clone())
    };
    let gateway = measure(Kind::Gateway)?;
    // Let the gateway run's sockets leave the kernel's slab before the next baseline.
    std::thread::sleep(Duration::from_secs(5));
    let bare = measure(Kind::BareWriter)?;
    Ok(json!({
        "conns": conns,
        "runs": runs,
        "user_gateway_over_bare_writer": harness::ratio(&gateway["user_bytes_per_conn"], &bare["user_bytes_per_conn"]),
        "kernel_gateway_over_bare_writer": harness::ratio(&gateway["kernel_bytes_per_pair"], &bare["kernel_bytes_per_pair"]),
        "gateway": gateway,
        "bare_writer": bare,
    }))
}

/// `corecast up` for goim's shape: ephemeral loopback ports, no metrics listener, `limits`
/// under `[limits]`.
fn start_up(dir: &Path, limits: &[String], engine: &[String]) -> anyhow::Result<UpProcess> {
    let up = UpProcess::start(
        &harness::corecast_bin()?,
        dir,
        &format!(
            "id = \"gw-suite\"\ntcp_bind = \"127.0.0.1:0\"\nws_bind = \"127.0.0.1:0\"\nmetrics_bind = \"\"\n\n[limits]\n{}\n\n[engine]\n{}\n",
            limits.join("\n"),
            engine.join("\n")
        ),
        "http_bind = \"127.0.0.1:0\"\nlink_bind = \"127.0.0.1:0\"\n",
        "warn",
    )?;
    // The gateway links to the dispatcher right after the line; let it register.
    std::thread::sleep(Duration::from_millis(500));
    Ok(up)
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// One reading of a process: (unix ms, CPU s, gateway shards' CPU s, RSS bytes).
type Sample = (f64, f64, f64, u64);

fn sample(pid: u32) -> Sample {
    (
        unix_ms(),
        procfs::threads_cpu_secs(&pid.to_string(), ""),
        procfs::threads_cpu_secs(&pid.to_string(), "corecast-shard"),
        procfs::pid_rss_bytes(pid),
    )
}

/// Reads `pid` every 100 ms until `stop`.
fn sampler(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            v.push(sample(pid));
            std::thread::sleep(Duration::from_millis(100));
        }
        v.push(sample(pid));
        v
    })
}

/// The last sample taken at or before `ms` (the first when none was).
fn at(samples: &[Sample], ms: f64) -> Sample {
    samples
        .iter()
        .rev()
        .find(|s| s.0 <= ms)
        .or(samples.first())
        .copied()
        .unwrap_or_default()
}

fn body_tag(body: PushBody) -> &'static str {
    match body {
        PushBody::Fixed(_) => "test",
        PushBody::Seq { .. } => "seq",
    }
}

/// goim's shape through `corecast up` with `body`, then the bare writer at the same
/// connections, rate, push time and body.
fn goim_shape(o: &Options, body: PushBody, reports: &Path) -> anyhow::Result<Value> {
    let tag = format!("goim-{}-{}", o.goim_conns, body_tag(body));
    let dir = reports.with_file_name(format!(
        "{}-{tag}",
        reports
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("suite")
    ));
    let scratch = std::env::temp_dir().join(format!("corecast-suite-{}-{tag}", std::process::id()));
    let up = start_up(&scratch, &o.goim_limits, &o.goim_engine)?;
    let pid = up.pid();
    let before = sample(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let samples = sampler(pid, stop.clone());
    let report_path = dir.join("report.json");
    let mut cmd = Command::new(harness::corecast_bin()?);
    cmd.args(["loadtest", "--tcp", &o.goim_conns.to_string(), "--tcp-addr"])
        .arg(up.tcp.to_string())
        .args(["--room", "live://1000", "--publish"])
        .arg(up.http.to_string())
        .args(["--duration", &format!("{}s", o.goim_seconds), "-q"])
        .args(["--drain", &format!("{}s", o.goim_drain)])
        .args(["--rcvbuf", &o.goim_rcvbuf.to_string()])
        .arg("--report")
        .arg(&report_path)
        .arg("--out")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    match body {
        PushBody::Fixed(_) => cmd.arg("--goim-shape"),
        PushBody::Seq { .. } => cmd.args(["--push-rate", &GOIM_RATE.to_string()]),
    };
    std::fs::create_dir_all(&dir)?;
    let mut child = cmd.spawn().context("starting corecast loadtest")?;
    // The run's own length, plus connecting (a million connections take ~10 s here).
    let limit = Duration::from_secs(o.goim_seconds + o.goim_drain + 120);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            stop.store(true, Ordering::Relaxed);
            bail!("corecast loadtest ran past {limit:?}: stopped");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, Ordering::Relaxed);
    let samples = samples
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    let text = std::fs::read_to_string(&report_path).with_context(|| {
        format!(
            "the load tester ({status}) wrote no report; corecast up said: {}",
            up.log()
        )
    })?;
    // A server that died mid-run (the OOM killer, when kernel socket buffers take the memory)
    // leaves no CPU figures worth a share: the row says so instead.
    let mut up = up;
    let died = up.exited().map(|s| {
        format!(
            "corecast up exited during the run ({s}); its log: {}",
            up.log()
        )
    });
    drop(up);
    let _ = std::fs::remove_dir_all(&scratch);
    let r: Value = serde_json::from_str(&text)?;
    // The pushes start once every connection settled (the hold) and go on to the run's end
    // less the publisher's tail, in which the last ones arrive.
    let started = r["started_unix_ms"].as_f64().unwrap_or(0.0);
    let elapsed = r["elapsed_secs"].as_f64().unwrap_or(0.0);
    let held = r["hold_secs"].as_f64().unwrap_or(0.0);
    let (push_start, end) = (
        started + (elapsed - held) * 1000.0,
        started + elapsed * 1000.0,
    );
    let (s0, s1) = (at(&samples, push_start), at(&samples, end));
    let cpu = s1.1 - s0.1;
    let shard_cpu = s1.2 - s0.2;
    let delivered = r["messages"].as_u64().unwrap_or(0);
    let authenticated = r["authenticated"].as_u64().unwrap_or(0);
    let peak_rss = samples.iter().map(|s| s.3).max().unwrap_or(0);
    let per_conn = |rss: u64| (rss as f64 - before.3 as f64) / authenticated.max(1) as f64;
    let push_secs = r["publish"]["secs"].as_f64().unwrap_or(0.0);
    let gateway = json!({
        "server": "corecast up (gateway + dispatcher)",
        "conns": o.goim_conns,
        "authenticated": authenticated,
        "rate": GOIM_RATE,
        "body": body.name(),
        "seconds": o.goim_seconds,
        "pushes_ok": r["publish"]["ok"],
        "push_errors": r["publish"]["errors"],
        "push_secs": push_secs,
        "expected": r["expected_messages"],
        "delivered": delivered,
        "lost": r["missing_messages"],
        "drained_secs": r["drained_secs"],
        "order": r["order"],
        "latency_us": r["latency_us"],
        "process_cpu_secs": cpu,
        "shard_cpu_secs": shard_cpu,
        "deliveries_per_cpu_sec": (delivered as f64 / cpu.max(1e-9)).round(),
        "deliveries_per_shard_cpu_sec": (delivered as f64 / shard_cpu.max(1e-9)).round(),
        "rss_before_bytes": before.3,
        "rss_at_push_start_bytes": s0.3,
        "rss_peak_bytes": peak_rss,
        "rss_bytes_per_conn_idle": per_conn(s0.3).round(),
        "rss_bytes_per_conn_peak": per_conn(peak_rss).round(),
        "tester_cpu_secs": r["worker_cpu_secs"],
        "tester_warnings": r["warnings"],
        "closed_by_server": r["closed_by_server"],
        "close_reasons": r["close_reasons"],
        "report_dir": dir.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
    });
    let mut gateway = gateway;
    if let Some(why) = &died {
        tracing::warn!("{why}");
        gateway["died"] = json!(why);
        for k in ["deliveries_per_cpu_sec", "deliveries_per_shard_cpu_sec"] {
            gateway[k] = Value::Null;
        }
    }
    let seconds = (push_secs.round() as u64).max(1);
    let bare = harness::fanout_run(
        Server::start(Kind::BareWriter)?,
        o.goim_conns,
        GOIM_RATE,
        seconds,
        body,
    )?;
    let share = harness::ratio(
        &gateway["deliveries_per_cpu_sec"],
        &bare["deliveries_per_cpu_sec"],
    );
    let share_shards = harness::ratio(
        &gateway["deliveries_per_shard_cpu_sec"],
        &bare["deliveries_per_cpu_sec"],
    );
    tracing::info!(
        "goim shape {} conns, body {}: {delivered}/{} delivered, {} deliveries per up CPU-s, bare writer {}, share {:.0}%",
        o.goim_conns,
        body.name(),
        gateway["expected"],
        gateway["deliveries_per_cpu_sec"],
        bare["deliveries_per_cpu_sec"],
        share * 100.0
    );
    Ok(json!({
        "conns": o.goim_conns,
        "rate": GOIM_RATE,
        "body": body.name(),
        "gateway": gateway,
        "bare_writer": bare,
        "share_of_bare_writer": share,
        "shards_only_share_of_bare_writer": share_shards,
    }))
}

/// Each criterion benchmark's mean and median (ns), from `dir/**/new/estimates.json`; runs
/// `cargo bench -p corecast-benches` first when asked.
fn criterion(o: &Options) -> anyhow::Result<Value> {
    if o.criterion {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["bench", "-p", "corecast-benches"])
            .stdout(Stdio::null())
            .status()
            .context("running cargo bench")?;
        if !status.success() {
            bail!("cargo bench -p corecast-benches failed ({status})");
        }
    }
    let mut found = Vec::new();
    estimates(&o.criterion_dir, &o.criterion_dir, &mut found);
    found.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(json!({
        "dir": o.criterion_dir.display().to_string(),
        "ran_now": o.criterion,
        "benchmarks": found,
    }))
}

fn estimates(root: &Path, dir: &Path, found: &mut Vec<Value>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() || p.file_name().is_some_and(|n| n == "report") {
            continue;
        }
        let file = p.join("estimates.json");
        if p.file_name().is_some_and(|n| n == "new") && file.is_file() {
            let Ok(v) = std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
            else {
                tracing::warn!("{} is not criterion's estimates: skipped", file.display());
                continue;
            };
            let name = dir
                .strip_prefix(root)
                .map(|n| n.display().to_string())
                .unwrap_or_default();
            found.push(json!({
                "name": name,
                "mean_ns": v["mean"]["point_estimate"],
                "median_ns": v["median"]["point_estimate"],
            }));
        } else {
            estimates(root, &p, found);
        }
    }
}

fn chart_err(e: impl std::fmt::Display) -> String {
    format!("drawing a chart: {e}")
}

/// A grouped bar chart: one group per category, one bar per series.
pub fn bars_svg(
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(&str, RGBColor, Vec<f64>)],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let y_max = series
            .iter()
            .flat_map(|s| s.2.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.15;
        let n = categories.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..n, 0.0..y_max)
            .map_err(chart_err)?;
        let labels = categories.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(categories.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 1e-6 {
                    labels.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_desc)
            .draw()
            .map_err(chart_err)?;
        let width = 0.8 / series.len().max(1) as f64;
        for (k, (name, color, values)) in series.iter().enumerate() {
            let color = *color;
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let x0 = i as f64 + 0.1 + k as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled())
                }))
                .map_err(chart_err)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(chart_err)?;
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}

const GATEWAY_COLOR: RGBColor = RGBColor(31, 119, 180);
const BARE_COLOR: RGBColor = RGBColor(160, 160, 160);

/// The rows that push (fan-out, then goim's shape), with a short name each.
fn push_rows(r: &Value) -> Vec<(String, &Value)> {
    let mut rows = Vec::new();
    for f in r["fanout"].as_array().into_iter().flatten() {
        rows.push((format!("fan-out {}@{}/s", f["conns"], f["rate"]), f));
    }
    for g in r["goim"].as_array().into_iter().flatten() {
        let tag = if g["body"].as_str().is_some_and(|b| b.contains("seq")) {
            "seq"
        } else {
            "test"
        };
        rows.push((format!("goim {} {tag}", g["conns"]), g));
    }
    rows
}

/// The charts: file suffix, what it shows, SVG.
fn charts(r: &Value) -> Result<Vec<(&'static str, &'static str, String)>, String> {
    let rows = push_rows(r);
    let names: Vec<String> = rows.iter().map(|(n, _)| n.clone()).collect();
    let pick = |side: &str, key: &str| -> Vec<f64> {
        rows.iter()
            .map(|(_, x)| x[side][key].as_f64().unwrap_or(0.0) / 1e6)
            .collect()
    };
    let deliveries = bars_svg(
        "deliveries per server CPU-second",
        "million messages per CPU-s",
        &names,
        &[
            (
                "gateway",
                GATEWAY_COLOR,
                pick("gateway", "deliveries_per_cpu_sec"),
            ),
            (
                "bare writer",
                BARE_COLOR,
                pick("bare_writer", "deliveries_per_cpu_sec"),
            ),
        ],
    )?;
    let timed: Vec<&(String, &Value)> = rows
        .iter()
        .filter(|(_, x)| !x["gateway"]["latency_us"].is_null())
        .collect();
    let lat = |side: &str, p: &str| -> Vec<f64> {
        timed
            .iter()
            .map(|(_, x)| x[side]["latency_us"][p].as_f64().unwrap_or(0.0) / 1000.0)
            .collect()
    };
    let latency = bars_svg(
        "latency, publish to arrival",
        "ms",
        &timed.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        &[
            (
                "gateway p50",
                RGBColor(120, 180, 230),
                lat("gateway", "p50"),
            ),
            ("gateway p99", GATEWAY_COLOR, lat("gateway", "p99")),
            (
                "gateway p99.9",
                RGBColor(10, 50, 110),
                lat("gateway", "p999"),
            ),
            (
                "bare writer p50",
                RGBColor(210, 210, 210),
                lat("bare_writer", "p50"),
            ),
            ("bare writer p99", BARE_COLOR, lat("bare_writer", "p99")),
            (
                "bare writer p99.9",
                RGBColor(90, 90, 90),
                lat("bare_writer", "p999"),
            ),
        ],
    )?;
    let m = &r["memory"];
    let mem = |side: &str| {
        vec![
            m[side]["user_bytes_per_conn"].as_f64().unwrap_or(0.0),
            m[side]["kernel_bytes_per_pair"].as_f64().unwrap_or(0.0),
        ]
    };
    let memory = bars_svg(
        &format!("memory per idle connection, {} connections", m["conns"]),
        "bytes",
        &[
            "user space (RSS growth)".into(),
            "kernel, client+server pair".into(),
        ],
        &[
            ("gateway", GATEWAY_COLOR, mem("gateway")),
            ("bare writer", BARE_COLOR, mem("bare_writer")),
        ],
    )?;
    // Only the charts of shapes that ran (`--shapes`).
    let mut out = Vec::new();
    if !rows.is_empty() {
        out.push((
            "deliveries.svg",
            "deliveries per server CPU-second, gateway vs bare writer, per shape",
            deliveries,
        ));
        out.push((
            "latency.svg",
            "latency p50 / p99 / p99.9, gateway vs bare writer, per shape",
            latency,
        ));
    }
    if !m.is_null() {
        out.push((
            "memory.svg",
            "memory per idle connection, gateway vs bare writer",
            memory,
        ));
    }
    Ok(out)
}

fn bytes(v: &Value) -> String {
    v.as_f64().map_or("—".into(), |x| format!("{x:.0} B"))
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("—".into(), |x| format!("{:.0}%", x * 100.0))
}

fn millions(v: &Value) -> String {
    v.as_f64()
        .map_or("—".into(), |x| format!("{:.2} M", x / 1e6))
}

fn lat3(l: &Value) -> String {
    if l.is_null() {
        return "—".into();
    }
    let ms = |k: &str| {
        l[k].as_f64()
            .map_or("—".into(), |us| format!("{:.1}", us / 1000.0))
    };
    format!("{} / {} / {} ms", ms("p50"), ms("p99"), ms("p999"))
}

/// The summary: one table per shape, the charts linked and shown.
pub fn markdown(doc: &Value, stem: &str, charts: &[(&str, &str)]) -> String {
    let r = &doc["result"];
    let o = &r["options"];
    let m = &doc["machine"];
    let mut md = format!(
        "# corecast benchmark suite — {}\n\nCommand: `{}`\n\nMachine: {} ({} cores, {} GiB, Linux {}), host `{}`; servers and load tester share it. Mode: {}.\n\n",
        doc["date"].as_str().unwrap_or(""),
        doc["command"].as_str().unwrap_or(""),
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or(""),
        m["host"].as_str().unwrap_or(""),
        if o["short"].as_bool().unwrap_or(false) {
            "short (CI shapes)"
        } else {
            "full"
        },
    );
    if let Some(note) = doc["note"].as_str().filter(|n| !n.is_empty()) {
        let _ = writeln!(md, "**Note:** {note}\n");
    }
    md += "The *bare writer* (`benches/src/bare_writer.rs`) is the machine's limit: the gateway's io_uring engine writing the same pre-encoded bytes to the same sockets, with none of the gateway's logic. *Share* is the gateway's deliveries per CPU-second as a share of the bare writer's at the same shape.\n\n";

    let mm = &r["memory"];
    if !mm.is_null() {
        let (g, b) = (&mm["gateway"], &mm["bare_writer"]);
        let _ = writeln!(
            md,
            "## Memory: {} idle authenticated TCP connections\n\nMedian of {} run(s), a fresh server each (min-max in the JSON); each server measured by `corecast-bench memory` in a process of its own.\n\n\
             | per connection | gateway | bare writer | gateway ÷ bare writer |\n|---|---|---|---|\n\
             | user space (RSS growth) | {} | {} | {:.2} |\n\
             | kernel, client + server pair (slab + TCP) | {} | {} | {:.2} |\n",
            mm["conns"],
            mm["runs"],
            bytes(&g["user_bytes_per_conn"]),
            bytes(&b["user_bytes_per_conn"]),
            mm["user_gateway_over_bare_writer"].as_f64().unwrap_or(0.0),
            bytes(&g["kernel_bytes_per_pair"]),
            bytes(&b["kernel_bytes_per_pair"]),
            mm["kernel_gateway_over_bare_writer"]
                .as_f64()
                .unwrap_or(0.0),
        );
    }

    let fanout_ran = r["fanout"].as_array().is_some_and(|a| !a.is_empty());
    if fanout_ran {
        let _ = writeln!(
            md,
            "## Room fan-out: every connection in one room\n\n{} s of pushes per row, body `{{\"seq\":N,\"ts\":T}}`, pushes handed straight to the server in this process.\n\n\
         | conns | pushes/s | delivered / expected, gateway | bare writer | gateway deliveries per CPU-s | bare writer | **share** | gateway p50 / p99 / p99.9 | bare writer p50 / p99 / p99.9 |\n|---|---|---|---|---|---|---|---|---|",
            o["fanout_seconds"]
        );
    }
    for f in r["fanout"].as_array().into_iter().flatten() {
        let (g, b) = (&f["gateway"], &f["bare_writer"]);
        let _ = writeln!(
            md,
            "| {} | {} | {} / {} | {} / {} | {} | {} | **{}** | {} | {} |",
            f["conns"],
            f["rate"],
            g["delivered"],
            g["expected"],
            b["delivered"],
            b["expected"],
            millions(&g["deliveries_per_cpu_sec"]),
            millions(&b["deliveries_per_cpu_sec"]),
            pct(&f["share_of_bare_writer"]),
            lat3(&g["latency_us"]),
            lat3(&b["latency_us"]),
        );
    }

    let _ = writeln!(
        md,
        "\n## goim's shape through the whole stack\n\n`corecast up` (gateway + dispatcher, one process) and `corecast loadtest --publish` (child processes, ephemeral loopback ports): every connection in one room, {GOIM_RATE} pushes/s through `POST /goim/push/room` for {} s less the tester's tail. `{{\"test\":1}}` is goim's exact body (`--goim-shape`: counted, no timestamps, so no latency); `{{\"seq\":N,\"ts\":T}}` adds loss, order and latency. Deliveries per CPU-s divide by the whole `up` process's CPU (gateway *and* dispatcher: every thread's run time from /proc/<pid>/task/*/schedstat) over the push window; *shards only* by the gateway shard threads'. The bare writer gets the same connections, rate, push time and body, handed straight to it.\n\n\
         | body | conns | pushes ok | delivered / expected | lost | drained after the pushes | p50 / p99 / p99.9 | `up` deliveries per CPU-s | bare writer | **share** | share, shards only | RSS per conn idle / peak | bare writer delivered / expected, p50 / p99 / p99.9 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        o["goim_seconds"]
    );
    for x in r["goim"].as_array().into_iter().flatten() {
        let (g, b) = (&x["gateway"], &x["bare_writer"]);
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} / {} | {} | {} | {} | {} | {} | **{}** | {} | {} / {} | {} / {}, {} |",
            x["body"].as_str().unwrap_or(""),
            x["conns"],
            g["pushes_ok"],
            g["delivered"],
            g["expected"],
            g["lost"],
            g["drained_secs"]
                .as_f64()
                .map_or("—".into(), |d| format!("{d:.1} s")),
            lat3(&g["latency_us"]),
            millions(&g["deliveries_per_cpu_sec"]),
            millions(&b["deliveries_per_cpu_sec"]),
            pct(&x["share_of_bare_writer"]),
            pct(&x["shards_only_share_of_bare_writer"]),
            bytes(&g["rss_bytes_per_conn_idle"]),
            bytes(&g["rss_bytes_per_conn_peak"]),
            b["delivered"],
            b["expected"],
            lat3(&b["latency_us"]),
        );
    }
    for x in r["goim"].as_array().into_iter().flatten() {
        if let Some(why) = x["gateway"]["died"].as_str() {
            let _ = writeln!(
                md,
                "\n**The `{}` run failed**: {why}. Its CPU figures and share are left out.",
                x["body"].as_str().unwrap_or("")
            );
        }
    }
    let reports: Vec<String> = r["goim"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["gateway"]["report_dir"].as_str())
        .map(|d| format!("[{d}/report.md]({d}/report.md)"))
        .collect();
    let _ = writeln!(
        md,
        "\nThe load tester's own reports (per-second throughput and latency charts): {}.\n",
        reports.join(", ")
    );

    let c = &r["criterion"];
    let benches = c["benchmarks"].as_array().cloned().unwrap_or_default();
    // (absent when `--shapes` left criterion out)
    if !c.is_null() {
        let _ = writeln!(
            md,
            "## Criterion micro-benchmarks\n\n{} `{}` ({}).\n",
            if benches.is_empty() {
                "No results in"
            } else {
                "Latest estimates in"
            },
            c["dir"].as_str().unwrap_or(""),
            if c["ran_now"].as_bool().unwrap_or(false) {
                "`cargo bench -p corecast-benches` run by this suite"
            } else {
                "from the last `cargo bench -p corecast-benches`; `--criterion` runs it first"
            }
        );
    }
    if !benches.is_empty() {
        md += "| benchmark | mean | median |\n|---|---|---|\n";
        let t = |v: &Value| {
            v.as_f64().map_or("—".into(), |ns| {
                if ns >= 1e6 {
                    format!("{:.2} ms", ns / 1e6)
                } else if ns >= 1e3 {
                    format!("{:.2} µs", ns / 1e3)
                } else {
                    format!("{ns:.1} ns")
                }
            })
        };
        for b in &benches {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} |",
                b["name"].as_str().unwrap_or(""),
                t(&b["mean_ns"]),
                t(&b["median_ns"])
            );
        }
        md.push('\n');
    }

    md += "## Charts\n\n";
    for (file, what) in charts {
        let _ = writeln!(md, "- [{stem}-{file}]({stem}-{file}): {what}");
    }
    for (file, what) in charts {
        let _ = write!(md, "\n![{what}]({stem}-{file})\n");
    }
    let _ = writeln!(
        md,
        "\nEvery figure, with the command, machine and date: [{stem}.json]({stem}.json)."
    );
    md
}

/// Writes `<out>/<stem>.json`, `<stem>.md` and the charts; returns the paths written.
pub fn write(out: &Path, stem: &str, doc: &mut Value) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let charts = charts(&doc["result"]).map_err(anyhow::Error::msg)?;
    let mut written = Vec::new();
    let mut files = Vec::new();
    for (file, what, svg) in &charts {
        let path = out.join(format!("{stem}-{file}"));
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        files.push(json!({ "file": format!("{stem}-{file}"), "shows": what }));
        written.push(path);
    }
    doc["charts"] = json!(files);
    let json_path = out.join(format!("{stem}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(doc)? + "\n")?;
    let list: Vec<(&str, &str)> = charts.iter().map(|(f, w, _)| (*f, *w)).collect();
    let md_path = out.join(format!("{stem}.md"));
    std::fs::write(&md_path, markdown(doc, stem, &list))?;
    written.insert(0, md_path);
    written.insert(0, json_path);
    Ok(written)
}
