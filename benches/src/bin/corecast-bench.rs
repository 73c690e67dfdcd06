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
use std::process::Command;

use benches::harness::{self, Kind, PushBody};
use benches::{dispatch, procfs};
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
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,benches=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let (what, result) = match &cli.what {
        What::Memory { conns, runs } => (
            "memory",
            harness::memory_runs(Kind::Gateway, *conns, *runs)?,
        ),
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
