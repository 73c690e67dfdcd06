//! The command line of `corecast loadtest` (a clap [`Args`] the binary embeds) and running it:
//! options from flags, Ctrl-C ends the hold early, the JSON report on stdout or in a file and
//! a summary on stderr.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::disrupt::{Backoff, Stall, Storm};
use crate::options::{HoldOptions, Rooms, Target, Transport, Zipf};
use crate::publish::{self, PublishOptions, PublishReport, PushTo};
use crate::report::HoldReport;
use crate::{Error, Result, hold, interrupt};

/// Hold connections to a gateway and count what arrives (goim's benchmark client, at scale).
#[derive(clap::Args, Clone, Debug, PartialEq)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// `merge`: combine several testers' reports instead of running.
    #[command(subcommand)]
    pub command: Option<Tool>,
    /// TCP connections to open.
    #[arg(long, default_value_t = 0)]
    pub tcp: u32,
    /// WebSocket connections to open.
    #[arg(long, default_value_t = 0)]
    pub ws: u32,
    /// The gateway's TCP address.
    #[arg(long, default_value = "127.0.0.1:3101")]
    pub tcp_addr: SocketAddr,
    /// The gateway's WebSocket address (path /sub).
    #[arg(long, default_value = "127.0.0.1:3102")]
    pub ws_addr: SocketAddr,
    /// Find the gateways through a dispatcher, as goim clients do: read
    /// http://HOST:PORT/goim/nodes/weighted, spread the connections over the nodes it lists
    /// (in its order) instead of --tcp-addr/--ws-addr, send reconnects to a node of the latest
    /// list (re-read at most once a second while reconnecting), and wait between reconnect
    /// attempts as its backoff hints say (goim's formula) unless --backoff-base/-max are given.
    #[arg(long, value_name = "URL")]
    pub nodes: Option<String>,
    /// The dispatcher's bearer secret (its `[http] bearer_secrets`), sent as `Authorization:
    /// Bearer` by --publish and --nodes.
    #[arg(long, env = "CORECAST_BEARER", hide_env_values = true)]
    pub bearer: Option<String>,
    /// The room every connection joins (ignored with --rooms).
    #[arg(long, default_value = "live://1000")]
    pub room: String,
    /// Spread connections round-robin over this many rooms, <room-type>://1..N.
    #[arg(long, default_value_t = 0)]
    pub rooms: u32,
    /// Room type for --rooms.
    #[arg(long, default_value = "live")]
    pub room_type: String,
    /// With --rooms: Zipf-sized rooms instead of round-robin (room k holds a share
    /// proportional to 1/k^EXP; 1.0 is the classic skew: a few big rooms, a long tail).
    #[arg(long, value_name = "EXP")]
    pub zipf: Option<f64>,
    /// Connection i authenticates with key <key-prefix>-<i> and mid i+1 (goim's mid 0 is "not
    /// logged in").
    #[arg(long, default_value = "loadtest")]
    pub key_prefix: String,
    /// The token's accepts (ops received through key pushes and broadcasts).
    #[arg(long, value_delimiter = ',', default_value = "1000,1001,1002")]
    pub accepts: Vec<i32>,
    /// How long to hold once every connection has settled (e.g. 60, 90s, 5m, 1h).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// With a publisher: after --duration, keep receiving for up to this long until every
    /// message the accepted pushes should deliver has arrived (a backlog that drains is late,
    /// not lost); the report gives the time it took (`drained_secs`). 0: stop at --duration
    /// and count what has not arrived as missing.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Seconds between two heartbeats of one connection.
    #[arg(long, default_value_t = 30)]
    pub heartbeat_secs: u64,
    /// New connections per second (0: as fast as --inflight allows).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Worker threads, one pinned per core (0: every core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Source addresses to bind (repeat or comma-separate); default 127.0.1.1 upwards for a
    /// loopback gateway.
    #[arg(long = "source", value_delimiter = ',')]
    pub sources: Vec<Ipv4Addr>,
    /// Connections per (source address, destination) pair at most.
    #[arg(long, default_value_t = 2_000)]
    pub per_source: u32,
    /// Time for a TCP connect.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Time from connected to the auth reply.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub auth_timeout: Duration,
    /// Connections per thread between connect and auth reply at most.
    #[arg(long, default_value_t = 4_096)]
    pub inflight: u32,
    /// Direct descriptors per io_uring (at most 16000).
    #[arg(long, default_value_t = 16_000)]
    pub slots_per_ring: u32,
    /// Provided receive buffers per io_uring (a power of two).
    #[arg(long, default_value_t = 2_048)]
    pub recv_buffers: u16,
    /// Size of one receive buffer.
    #[arg(long, default_value_t = 2_048)]
    pub recv_buffer_size: u32,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Write the JSON report to this file instead of stdout.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The `room` scenario: once every connection has settled, push to --room through the
    /// dispatcher's HTTP API at this address (goim's `POST /goim/push/room`), at --push-rate,
    /// for the hold (less a short tail for the last pushes to arrive); bodies
    /// `{"seq":N,"ts":T}` for loss, order and latency checks.
    #[arg(long)]
    pub publish: Option<SocketAddr>,
    /// Pushes per second with --publish.
    #[arg(long, default_value_t = 40)]
    pub push_rate: u32,
    /// The op of the pushes (must be in the connections' --accepts only for key pushes and
    /// broadcasts; room pushes reach every member).
    #[arg(long, default_value_t = 1000)]
    pub push_op: i32,
    /// With --publish: push to every connection (goim's `push/all`, the `broadcast`
    /// scenario) instead of --room; --push-op must be in --accepts. Works with --rooms.
    #[arg(long)]
    pub broadcast: bool,
    /// With --publish: the `push` scenario: push to the connections' keys (goim's
    /// `push/keys`) or mids (`push/mids`), --per-push of them per push, round-robin over all
    /// connections, so each gets its own sequence; --push-op must be in --accepts.
    #[arg(long, value_enum)]
    pub push: Option<PushBy>,
    /// Keys or mids per push with --push.
    #[arg(long, default_value_t = 100)]
    pub per_push: u32,
    /// The `storm` scenario: drop this share (0 to 1) of the open connections at once during
    /// the hold; they reconnect with jittered exponential backoff (--backoff-base/-max), and
    /// the report gives how long until all were back.
    #[arg(long, value_name = "SHARE")]
    pub storm: Option<f64>,
    /// When the storm hits, from the start of the hold (default: a third of --duration).
    #[arg(long, value_parser = parse_duration)]
    pub storm_at: Option<Duration>,
    /// The `soak` scenario's churn: connections dropped and replaced per second during the
    /// hold (give a long --duration).
    #[arg(long, default_value_t = 0.0, value_name = "PER_SEC")]
    pub churn: f64,
    /// Replace connections the server closes (on with --storm and --churn).
    #[arg(long)]
    pub reconnect: bool,
    /// Reconnect backoff: attempt n waits a random time up to min(max, base x 2^n) (default
    /// 1s and 30s; with --nodes, the dispatcher's hints are used unless one of these is given).
    #[arg(long, value_parser = parse_duration)]
    pub backoff_base: Option<Duration>,
    #[arg(long, value_parser = parse_duration)]
    pub backoff_max: Option<Duration>,
    /// Make this share (0 to 1) of the connections stop reading for --stall-for, from
    /// --stall-at into the hold: a gateway with `slow_consumer = "drop-oldest"` drops what
    /// they cannot take, and the report shows the gaps.
    #[arg(long, value_name = "SHARE")]
    pub stall: Option<f64>,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub stall_at: Duration,
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub stall_for: Duration,
    /// SO_RCVBUF of every client socket, in bytes (0: the kernel's default); small values
    /// make a stalled reader back up quickly.
    #[arg(long, default_value_t = 0)]
    pub rcvbuf: u32,
    /// goim's published benchmark shape: every connection in one room, 40 pushes/s, body
    /// `{"test":1}` (counted, not sequence-checked). Needs --publish.
    #[arg(long)]
    pub goim_shape: bool,
    /// hmac auth mode: sign every connection's token with this secret (the gateway's first
    /// `[auth] secrets` entry).
    #[arg(long, env = "CORECAST_SECRET")]
    pub secret: Option<String>,
    /// Also write the report for a person into this directory: report.json, report.md and SVG
    /// charts (throughput over the run, latency percentiles).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// An earlier report (the JSON `--report` writes): print this run's headline figures beside
    /// its figures, with the change of each.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// One of several testers: also write what `corecast loadtest merge` needs into the JSON
    /// report (the raw latency histograms, the run's wall-clock start, the auth times),
    /// wherever the report goes (stdout, --report, --out's report.json). Run one tester per
    /// machine with --agent --report FILE, then `corecast loadtest merge FILE...`.
    #[arg(long)]
    pub agent: bool,
}

/// What `corecast loadtest` does besides a run.
#[derive(clap::Subcommand, Clone, Debug, PartialEq)]
pub enum Tool {
    /// Combine the reports of several `corecast loadtest --agent` runs (one per tester
    /// machine) into one report: counts summed, latency histograms added, per-second series
    /// lined up by wall-clock start.
    Merge(crate::merge::MergeArgs),
}

/// What `--push` pushes to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushBy {
    Keys,
    Mids,
}

/// `n` connections over `addrs` in order, as evenly as possible (the first ones get one more
/// when it does not divide); addresses that get none are left out.
fn spread(n: u32, addrs: &[SocketAddr]) -> Vec<(SocketAddr, u32)> {
    let k = addrs.len() as u32;
    if k == 0 {
        return Vec::new();
    }
    addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| (a, n / k + u32::from((i as u32) < n % k)))
        .filter(|&(_, c)| c > 0)
        .collect()
}

/// Parses `90`, `90s`, `1.5s`, `250ms`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 60, 90s, 250ms, 5m, 1h)"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

impl Args {
    /// The run these flags describe.
    pub fn options(&self) -> Result<HoldOptions> {
        let mut targets = Vec::new();
        let mut nodes = None;
        if let Some(url) = &self.nodes {
            let http = crate::nodes::parse_url(url).map_err(Error::Options)?;
            let list = crate::nodes::fetch(http, self.bearer.as_deref()).map_err(Error::Options)?;
            for (transport, n) in [(Transport::Tcp, self.tcp), (Transport::Ws, self.ws)] {
                let addrs = list.addrs(transport);
                if n > 0 && addrs.is_empty() {
                    return Err(Error::Options(format!(
                        "--nodes {url}: no {transport:?} address in the node list"
                    )));
                }
                targets.extend(
                    spread(n, addrs)
                        .into_iter()
                        .map(|(addr, connections)| Target {
                            transport,
                            addr,
                            connections,
                        }),
                );
            }
            nodes = Some(crate::nodes::Nodes::new(http, self.bearer.clone(), list));
        } else if self.tcp > 0 {
            targets.push(Target {
                transport: Transport::Tcp,
                addr: self.tcp_addr,
                connections: self.tcp,
            });
        }
        if self.ws > 0 {
            targets.push(Target {
                transport: Transport::Ws,
                addr: self.ws_addr,
                connections: self.ws,
            });
        }
        if targets.is_empty() {
            return Err(Error::Options(
                "no connections: give --tcp N and/or --ws N".into(),
            ));
        }
        if self.goim_shape && self.publish.is_none() {
            return Err(Error::Options(
                "--goim-shape pushes through the dispatcher: give --publish HOST:PORT".into(),
            ));
        }
        if self.broadcast && self.publish.is_none() {
            return Err(Error::Options(
                "--broadcast pushes through the dispatcher: give --publish HOST:PORT".into(),
            ));
        }
        if self.push.is_some() && self.publish.is_none() {
            return Err(Error::Options(
                "--push pushes through the dispatcher: give --publish HOST:PORT".into(),
            ));
        }
        if self.push.is_some() && (self.broadcast || self.goim_shape) {
            return Err(Error::Options(
                "--push (keys or mids) does not go with --broadcast or --goim-shape".into(),
            ));
        }
        if self.goim_shape && self.rooms > 0 {
            return Err(Error::Options(
                "--goim-shape is one room: drop --rooms".into(),
            ));
        }
        if (self.broadcast || self.push.is_some()) && !self.accepts.contains(&self.push_op) {
            return Err(Error::Options(format!(
                "key, mid and broadcast pushes reach only connections that accept their op: --push-op {} is not in --accepts {:?}",
                self.push_op, self.accepts
            )));
        }
        if self.zipf.is_some() && self.rooms == 0 {
            return Err(Error::Options(
                "--zipf sizes the rooms of --rooms N: give --rooms".into(),
            ));
        }
        if let Some(p) = self.publish_options() {
            p.validate().map_err(Error::Options)?;
        }
        let rooms = self.rooms_plan()?;
        let o = HoldOptions {
            targets,
            rooms,
            key_prefix: self.key_prefix.clone(),
            accepts: self.accepts.clone(),
            duration: self.duration,
            drain: self.drain,
            heartbeat_secs: self.heartbeat_secs,
            rate: self.rate,
            threads: self.threads,
            sources: self.sources.clone(),
            per_source: self.per_source,
            connect_timeout: self.connect_timeout,
            auth_timeout: self.auth_timeout,
            inflight: self.inflight,
            slots_per_ring: self.slots_per_ring,
            recv_buffers: self.recv_buffers,
            recv_buffer_size: self.recv_buffer_size,
            quiet: self.quiet,
            secret: self.secret.clone(),
            storm: self.storm.map(|share| Storm {
                share,
                at: self.storm_at.unwrap_or(self.duration / 3),
            }),
            churn: self.churn,
            reconnect: self.reconnect,
            backoff: {
                let d = Backoff::default();
                let base = self.backoff_base.unwrap_or(d.base);
                Backoff {
                    base,
                    max: self.backoff_max.unwrap_or(d.max.max(base)),
                }
            },
            stall: self.stall.map(|share| Stall {
                share,
                at: self.stall_at,
                length: self.stall_for,
            }),
            rcvbuf: self.rcvbuf,
            server_backoff: nodes.is_some()
                && self.backoff_base.is_none()
                && self.backoff_max.is_none(),
            nodes,
            ..HoldOptions::default()
        };
        o.validate()?;
        Ok(o)
    }
}

impl Args {
    /// The rooms these flags describe.
    fn rooms_plan(&self) -> Result<Rooms> {
        Ok(match (self.rooms, self.zipf) {
            (0, _) => Rooms::One(self.room.clone()),
            (count, None) => Rooms::RoundRobin {
                kind: self.room_type.clone(),
                count,
            },
            (count, Some(exp)) => Rooms::Zipf(Zipf::new(&self.room_type, count, exp)?),
        })
    }

    fn connections(&self) -> u64 {
        u64::from(self.tcp) + u64::from(self.ws)
    }

    /// The publisher these flags describe, if any.
    pub fn publish_options(&self) -> Option<PublishOptions> {
        let http = self.publish?;
        let count = self.connections();
        let to = match self.push {
            Some(PushBy::Keys) => PushTo::Keys {
                prefix: self.key_prefix.clone(),
                count,
                per_push: self.per_push,
            },
            Some(PushBy::Mids) => PushTo::Mids {
                count,
                per_push: self.per_push,
            },
            None if self.broadcast => PushTo::All,
            None => PushTo::Rooms(self.rooms_plan().ok()?.names()),
        };
        Some(PublishOptions {
            http,
            to,
            op: self.push_op,
            rate: if self.goim_shape { 40 } else { self.push_rate },
            fixed_body: self.goim_shape.then(|| b"{\"test\":1}".to_vec()),
            bearer: self.bearer.clone(),
        })
    }

    /// How many connections each push group reaches (see [`HoldReport::set_publish`]).
    fn members(&self, to: &PushTo) -> Option<Vec<u64>> {
        let n = self.connections();
        match to {
            PushTo::All => None,
            PushTo::Rooms(r) if r.len() == 1 => None,
            PushTo::Rooms(_) => self.rooms_plan().ok().map(|r| r.members(n)),
            PushTo::Keys { per_push, .. } | PushTo::Mids { per_push, .. } => {
                let k = u64::from(*per_push).max(1);
                Some((0..n.div_ceil(k)).map(|g| k.min(n - g * k)).collect())
            }
        }
    }
}

/// Starts the publisher in a thread: it waits until every connection settled, then pushes for
/// the hold less a tail in which the last pushes arrive (a tenth of the hold, between 1 and
/// 5 s, and at most half of it).
fn start_publisher(
    p: PublishOptions,
    members: Option<Vec<u64>>,
    live: Arc<crate::Live>,
    total: u64,
    hold: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<PublishReport> {
    live.publishing.fetch_add(1, Ordering::Relaxed);
    std::thread::spawn(move || {
        while live.snapshot().settled < total {
            if stop.load(Ordering::Relaxed) {
                live.publishing.fetch_sub(1, Ordering::Relaxed);
                return PublishReport::default();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let tail = (hold / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(5))
            .min(hold / 2);
        let limit = hold.saturating_sub(tail);
        let r = publish::run(&p, limit, &stop, Some((&live, members.as_deref())));
        live.publishing.fetch_sub(1, Ordering::Relaxed);
        r
    })
}

/// Runs the hold the flags describe: JSON report on stdout (or `--report`), summary on stderr;
/// or, with the `merge` subcommand, merges reports (see [`crate::merge`]).
pub fn run(args: &Args) -> Result<HoldReport> {
    if let Some(Tool::Merge(m)) = &args.command {
        return crate::merge::run(m);
    }
    let opts = args.options()?;
    // Read the report to compare with before the run: a bad path fails now, not after it.
    let previous = match &args.compare {
        Some(path) => {
            let bad = |why: String| Error::Options(format!("--compare {}: {why}", path.display()));
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| bad(format!("not a JSON report: {e}")))?,
            )
        }
        None => None,
    };
    let forward = interrupt::Forward::install(opts.stop.clone());
    let publisher = args.publish_options().map(|p| {
        let total = opts.targets.iter().map(|t| u64::from(t.connections)).sum();
        let members = args.members(&p.to);
        start_publisher(
            p,
            members,
            opts.live.clone(),
            total,
            opts.duration,
            opts.stop.clone(),
        )
    });
    let stop = opts.stop.clone();
    let result = hold::run(opts);
    forward.finish();
    // The hold is over: a publisher still waiting (connections never settled) gives up.
    stop.store(true, Ordering::Relaxed);
    let mut report = result?;
    if let Some(p) = publisher {
        let members = args.publish_options().and_then(|o| args.members(&o.to));
        match p.join() {
            Ok(r) => report.set_publish(r, members.as_deref()),
            Err(_) => return Err(Error::Options("the publisher thread panicked".into())),
        }
    }
    report.agent.on = args.agent;
    crate::output::emit(&report, args.report.as_deref(), args.out.as_deref())?;
    if !args.quiet {
        eprint!("{}", report.summary());
    }
    if let Some(previous) = previous {
        let now = serde_json::to_value(&report).expect("a report always serializes");
        eprint!("{}", crate::compare::compare(&previous, &now));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn defaults_match_the_library_defaults() {
        let a = Cli::parse_from(["loadtest", "--tcp", "10"]).args;
        let o = a.options().unwrap();
        let d = HoldOptions::default();
        assert_eq!(o.rooms, d.rooms);
        assert_eq!(o.key_prefix, d.key_prefix);
        assert_eq!(o.accepts, d.accepts);
        assert_eq!(o.duration, d.duration);
        assert_eq!(o.heartbeat_secs, d.heartbeat_secs);
        assert_eq!(o.per_source, d.per_source);
        assert_eq!(
            (o.connect_timeout, o.auth_timeout),
            (d.connect_timeout, d.auth_timeout)
        );
        assert_eq!(o.inflight, d.inflight);
        assert_eq!(o.slots_per_ring, d.slots_per_ring);
        assert_eq!(
            (o.recv_buffers, o.recv_buffer_size),
            (d.recv_buffers, d.recv_buffer_size)
        );
        assert_eq!(o.targets.len(), 1);
    }

    #[test]
    fn flags_build_targets_and_rooms() {
        let a = Cli::parse_from([
            "loadtest",
            "--tcp",
            "10",
            "--ws",
            "5",
            "--ws-addr",
            "127.0.0.1:9",
            "--rooms",
            "4",
            "--room-type",
            "test",
            "--source",
            "127.0.0.2,127.0.0.3",
            "--duration",
            "250ms",
        ])
        .args;
        let o = a.options().unwrap();
        assert_eq!(o.targets[1].transport, Transport::Ws);
        assert_eq!(o.targets[1].addr, "127.0.0.1:9".parse().unwrap());
        assert_eq!(
            o.rooms,
            Rooms::RoundRobin {
                kind: "test".into(),
                count: 4
            }
        );
        assert_eq!(o.sources.len(), 2);
        assert_eq!(o.duration, Duration::from_millis(250));
        let none = Cli::parse_from(["loadtest"]).args;
        assert!(none.options().unwrap_err().to_string().contains("--tcp"));
    }

    #[test]
    fn merge_is_a_subcommand_beside_the_run_flags() {
        let a = Cli::parse_from(["loadtest", "--tcp", "10", "--agent"]).args;
        assert!(a.agent && a.command.is_none());
        let m = Cli::parse_from(["loadtest", "merge", "a.json", "b.json", "--out", "dir"]).args;
        let Some(Tool::Merge(m)) = m.command else {
            panic!("merge parsed as {m:?}")
        };
        assert_eq!(
            m.reports,
            [PathBuf::from("a.json"), PathBuf::from("b.json")]
        );
        assert_eq!(m.out, Some(PathBuf::from("dir")));
        assert!(
            Cli::try_parse_from(["loadtest", "merge"]).is_err(),
            "needs a report"
        );
        assert!(
            Cli::try_parse_from(["loadtest", "--tcp", "10", "merge", "a.json"]).is_err(),
            "run flags do not go with merge"
        );
    }

    #[test]
    fn connections_spread_over_the_nodes_in_order() {
        let a: Vec<SocketAddr> = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<u32> = spread(10, &a).into_iter().map(|(_, c)| c).collect();
        assert_eq!(got, [4, 3, 3]);
        assert_eq!(spread(1, &a).len(), 1);
        assert!(spread(5, &[]).is_empty());
    }

    #[test]
    fn backoff_flags_default_and_turn_off_the_server_hints() {
        let a = Cli::parse_from(["loadtest", "--tcp", "1", "--backoff-base", "2s"]).args;
        let o = a.options().unwrap();
        assert_eq!(o.backoff.base, Duration::from_secs(2));
        assert_eq!(o.backoff.max, Duration::from_secs(30));
        assert!(!o.server_backoff, "no --nodes, no hints");
        let big = Cli::parse_from(["loadtest", "--tcp", "1", "--backoff-base", "60s"]).args;
        assert_eq!(big.options().unwrap().backoff.max, Duration::from_secs(60));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("x").is_err());
    }
}
