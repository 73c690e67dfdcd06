//! The end-to-end benchmark harness.
//!
//! `corecast-bench memory --conns N`: gateway resident memory and kernel socket memory per idle
//! authenticated connection.
//! `corecast-bench fanout --conns N --rates 1,10,100`: one room holding every connection, pushes
//! at each rate; delivered messages and socket writes per server CPU-second, for the gateway and
//! for the bare writer at the same shape, and their ratio.
//! `corecast-bench dispatch --queue embedded|kafka|nats|redis --conns N --rate R --seconds S`: HTTP pushes
//! the dispatcher accepts per second, and latency from the HTTP call to N clients of one room
//! at R pushes/s (dispatcher, gateway, Kafka broker and clients all here; see
//! `benches::dispatch`).
//!
//! `corecast-bench suite [--short] [--criterion]`: all of it as one command, every shape for the
//! gateway and the bare writer, goim's shape through `corecast up` (see `benches::suite`);
//! writes `<out>/<date>-<host>[-label].{json,md}` and SVG charts.
//!
//! Servers run inside this process (their threads' CPU time is read from /proc); clients are the
//! bundled load tester (`corecast loadtest`) in a child process. Results go to
//! `benches/results/<date>-<host>-<what>.{json,md}` with the command, machine and date.

use std::path::{Path, PathBuf};

use benches::harness::{self, Kind, PushBody};
use benches::{dispatch, procfs, suite};
use clap::{Parser, Subcommand};
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
// Parsed once per run; boxing the suite's flags would buy nothing.
#[allow(clippy::large_enum_variant)]
enum What {
    /// Every shape, gateway and bare writer, in one run: memory, room fan-out, goim's shape
    /// through `corecast up`, criterion estimates. Full shapes unless --short.
    Suite {
        /// CI shapes: 2,000 connections for memory, 1,000 for fan-out and goim's shape, 2-3 s
        /// each.
        #[arg(long)]
        short: bool,
        /// Run `cargo bench -p corecast-benches` first (else its latest results are read).
        #[arg(long)]
        criterion: bool,
        /// Idle connections held for the memory shape [full: 100000].
        #[arg(long)]
        memory_conns: Option<u64>,
        /// Memory runs per server, median reported [full: 3].
        #[arg(long)]
        memory_runs: Option<usize>,
        /// Connection counts for the fan-out shape [full: 10000,100000].
        #[arg(long, value_delimiter = ',')]
        fanout_conns: Option<Vec<u64>>,
        /// Pushes per second for the fan-out shape [full: 1,10,40,100].
        #[arg(long, value_delimiter = ',')]
        rates: Option<Vec<u64>>,
        /// Seconds of pushing per fan-out row [full: 5].
        #[arg(long)]
        fanout_seconds: Option<u64>,
        /// Connections for goim's shape [full: 100000; 1000000 for the million run, which
        /// needs benches/million.sh's sysctls].
        #[arg(long)]
        goim_conns: Option<u64>,
        /// Seconds of each goim-shape run [full: 20].
        #[arg(long)]
        goim_seconds: Option<u64>,
        /// Seconds the tester may keep receiving after the pushes, until every expected
        /// message arrived [full: 300; short: 30].
        #[arg(long)]
        goim_drain: Option<u64>,
        /// goim's shape's bodies [default: test,seq].
        #[arg(long, value_enum, value_delimiter = ',')]
        goim_bodies: Option<Vec<suite::GoimBody>>,
        /// Which shapes run [default: memory,fanout,goim,criterion].
        #[arg(long, value_enum, value_delimiter = ',')]
        shapes: Option<Vec<suite::Shape>>,
        /// A `[limits]` line for goim's shape gateway, repeatable (e.g.
        /// 'slow_consumer = "drop-oldest"' for a room that tolerates gaps; default: the
        /// gateway's defaults).
        #[arg(long)]
        goim_limit: Vec<String>,
        /// An `[engine]` line for goim's shape gateway, repeatable (e.g. 'sndbuf = 4096').
        #[arg(long)]
        goim_engine: Vec<String>,
        /// The tester's SO_RCVBUF in goim's shape (0: kernel autotuning) [default: 0].
        #[arg(long, default_value_t = 0)]
        goim_rcvbuf: u32,
        /// A sentence for the summary: what these figures are.
        #[arg(long, default_value = "")]
        note: String,
        /// Where criterion's results are [default: <target>/criterion].
        #[arg(long)]
        criterion_dir: Option<PathBuf>,
    },
    /// Memory per idle authenticated connection.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        conns: u64,
        /// Repeat the measurement (fresh server each time) and report the median.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The server measured.
        #[arg(long, value_enum, default_value = "gateway")]
        server: Kind,
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
        /// The dispatcher's history.messages (room messages kept per room for recovery; 0:
        /// none). Default: the dispatcher's default.
        #[arg(long)]
        history_messages: Option<usize>,
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

fn markdown(what: &str, command: &str, machine: &Value, date: &str, r: &Value) -> String {
    let sharing = if what == "dispatch" {
        "dispatcher, gateway, queue broker (kafka, nats and redis runs), load tester and HTTP publishers all sharing it"
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
                "| connections | runs | server RSS growth per idle authenticated connection, median (min-max) | kernel per client+server socket pair, median (min-max) |\n|---|---|---|---|\n| {} | {} | {} B ({}-{}) | {} B ({}-{}) |\n",
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
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,benches=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let machine = procfs::machine();
    let date = procfs::today()?;
    let host = machine["host"].as_str().unwrap_or("host").to_string();
    let label = if cli.label.is_empty() {
        String::new()
    } else {
        format!("-{}", cli.label)
    };
    if let What::Suite {
        short,
        criterion,
        memory_conns,
        memory_runs,
        fanout_conns,
        rates,
        fanout_seconds,
        goim_conns,
        goim_seconds,
        goim_drain,
        goim_bodies,
        shapes,
        goim_limit,
        goim_engine,
        goim_rcvbuf,
        note,
        criterion_dir,
    } = &cli.what
    {
        let d = suite::Options::new(*short);
        let o = suite::Options {
            criterion: *criterion,
            memory_conns: memory_conns.unwrap_or(d.memory_conns),
            memory_runs: memory_runs.unwrap_or(d.memory_runs),
            fanout_conns: fanout_conns.clone().unwrap_or(d.fanout_conns.clone()),
            rates: rates.clone().unwrap_or(d.rates.clone()),
            fanout_seconds: fanout_seconds.unwrap_or(d.fanout_seconds),
            goim_conns: goim_conns.unwrap_or(d.goim_conns),
            goim_seconds: goim_seconds.unwrap_or(d.goim_seconds),
            goim_drain: goim_drain.unwrap_or(d.goim_drain),
            goim_bodies: goim_bodies.clone().unwrap_or(d.goim_bodies.clone()),
            shapes: shapes.clone().unwrap_or(d.shapes.clone()),
            goim_limits: goim_limit.clone(),
            goim_engine: goim_engine.clone(),
            goim_rcvbuf: *goim_rcvbuf,
            note: note.clone(),
            criterion_dir: criterion_dir.clone().unwrap_or(d.criterion_dir.clone()),
            ..d
        };
        let stem = format!("{date}-{host}{label}");
        let started = std::time::Instant::now();
        let result = suite::run(&o, &cli.out.join(&stem))?;
        let mut doc = json!({ "what": "suite", "command": command, "date": date, "machine": machine, "note": o.note, "secs": started.elapsed().as_secs_f64().round(), "result": result });
        for path in suite::write(&cli.out, &stem, &mut doc)? {
            eprintln!("wrote {}", path.display());
        }
        return Ok(());
    }
    let (what, result) = match &cli.what {
        What::Suite { .. } => unreachable!("handled above"),
        What::Memory {
            conns,
            runs,
            server,
        } => ("memory", harness::memory_runs(*server, *conns, *runs)?),
        What::Fanout {
            conns,
            rates,
            seconds,
            pad,
        } => (
            "fanout",
            harness::fanout(*conns, rates, *seconds, PushBody::Seq { pad: *pad })?,
        ),
        What::Dispatch {
            queue,
            conns,
            rate,
            seconds,
            http_clients,
            history_messages,
            phases,
        } => (
            "dispatch",
            dispatch::run(&dispatch::Options {
                queue: *queue,
                conns: *conns,
                rate: *rate,
                seconds: *seconds,
                http_clients: *http_clients,
                history_messages: *history_messages,
                phases: phases.clone(),
            })?,
        ),
    };
    let doc = json!({ "what": what, "command": command, "date": date, "machine": machine, "result": result });
    std::fs::create_dir_all(&cli.out)?;
    let shape = match &cli.what {
        What::Suite { .. } => unreachable!("handled above"),
        What::Memory {
            conns,
            server: Kind::Gateway,
            ..
        } => format!("{conns}"),
        What::Memory { conns, server, .. } => format!("{conns}-{}", server.name()),
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
