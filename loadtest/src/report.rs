//! The report of a hold run: what was asked, what connected, what arrived (also second by
//! second), what went wrong, what it cost the tester and whether the tester itself may have
//! been the limit. Serialised as JSON for harnesses (with `--agent`, also the raw latency
//! histograms that `merge` adds up); [`HoldReport::summary`] is the human-readable form.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize};

use crate::disrupt::ReconnectReport;
use crate::publish::PublishReport;
use crate::sequence::{Gaps, Order};
use crate::timeline::{self, Seconds};

/// Share of the worker threads' time (CPU seconds over threads x run) above which the report
/// warns that the tester may have been the limit.
pub const BUSY_WARNING: f64 = 0.9;
/// Share of pushes sent more than 1 ms late above which the report warns about the publisher.
pub const LATE_WARNING: f64 = 0.1;
/// Points of the latency percentile curve at most.
const MAX_CDF_POINTS: usize = 200;

/// Latency from a seq body's `ts` to its arrival, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub samples: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        Some(Latency {
            samples: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

/// Latency in one second of the run (µs), by arrival: second `sec` is `sec` to `sec + 1`
/// seconds after the run's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondLatency {
    pub sec: u32,
    pub samples: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl SecondLatency {
    pub fn of(sec: u32, h: &Histogram<u64>) -> SecondLatency {
        SecondLatency {
            sec,
            samples: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

/// A point of the latency percentile curve: `percentile` % of the samples took at most `us`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CdfPoint {
    pub percentile: f64,
    pub us: u64,
}

/// The percentile curve of `h` as HdrHistogram prints it: points ever closer together towards
/// 100 % (each halving of the distance to 100 % gets four), ending at the maximum.
pub fn cdf(h: &Histogram<u64>) -> Vec<CdfPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<CdfPoint> = h
        .iter_quantiles(4)
        .map(|v| CdfPoint {
            percentile: v.quantile_iterated_to() * 100.0,
            us: v.value_iterated_to(),
        })
        .take_while(|p| p.percentile < 100.0)
        .take(MAX_CDF_POINTS - 1)
        .collect();
    points.push(CdfPoint {
        percentile: 100.0,
        us: h.max(),
    });
    points
}

/// The raw latency counts behind the figures, which `corecast loadtest merge` needs to add
/// several testers' runs. Always kept; written to the JSON only when `on` (`--agent`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentData {
    /// Whether the JSON carries this (`--agent`; true when read from a report that has it).
    #[serde(skip, default = "read_from_a_report")]
    pub on: bool,
    /// The whole run's histogram (µs, three significant digits) as `[value, count]` pairs.
    #[serde(with = "timeline::run_pairs")]
    pub latency_histogram: Histogram<u64>,
    /// Each second's histogram (two significant digits), seconds as in `latency_by_sec`.
    pub latency_by_sec_histograms: Seconds,
    /// The first and the last auth reply, in seconds from the run's start.
    pub first_auth_secs: Option<f64>,
    pub last_auth_secs: Option<f64>,
}

fn read_from_a_report() -> bool {
    true
}

impl Default for AgentData {
    fn default() -> Self {
        AgentData {
            on: false,
            latency_histogram: timeline::run_histogram(),
            latency_by_sec_histograms: Seconds::default(),
            first_auth_secs: None,
            last_auth_secs: None,
        }
    }
}

impl AgentData {
    fn is_off(&self) -> bool {
        !self.on
    }
}

/// Reads back an [`Order`] (`sequence`'s type has no `Deserialize`).
fn de_order<'de, D: Deserializer<'de>>(d: D) -> Result<Order, D::Error> {
    #[derive(Deserialize)]
    struct O {
        checked: u64,
        gaps: u64,
        duplicates: u64,
        reorders: u64,
        bad_bodies: u64,
    }
    let o = O::deserialize(d)?;
    Ok(Order {
        checked: o.checked,
        gaps: o.gaps,
        duplicates: o.duplicates,
        reorders: o.reorders,
        bad_bodies: o.bad_bodies,
    })
}

/// Reads back a [`PublishReport`] (`publish`'s type has no `Deserialize`).
fn de_publish<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PublishReport>, D::Error> {
    #[derive(Deserialize)]
    struct P {
        sent: u64,
        ok: u64,
        errors: BTreeMap<String, u64>,
        late_over_1ms: u64,
        #[serde(default)]
        ok_by_group: Vec<u64>,
        call_us: Option<Latency>,
        secs: f64,
    }
    Ok(Option::<P>::deserialize(d)?.map(|p| PublishReport {
        sent: p.sent,
        ok: p.ok,
        errors: p.errors,
        late_over_1ms: p.late_over_1ms,
        ok_by_group: p.ok_by_group,
        call_us: p.call_us,
        secs: p.secs,
    }))
}

/// Everything a hold run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HoldReport {
    /// Connections asked for.
    pub connections: u64,
    /// Connections started (a socket was created, or creating it failed).
    pub attempted: u64,
    /// TCP connects that completed.
    pub established: u64,
    /// Connections that got the auth reply (op 8).
    pub authenticated: u64,
    /// Connections still open when the run ended.
    pub open_at_end: u64,
    /// Connections the server closed, and the reasons it gave (op-6 body on TCP, Close frame
    /// reason on WS; `eof` or `reset` when it gave none).
    pub closed_by_server: u64,
    pub close_reasons: BTreeMap<String, u64>,
    /// Connect failures by kind: `refused`, `reset`, `timeout`, or an errno name.
    pub connect_errors: BTreeMap<String, u64>,
    /// Failures after connect: `auth_timeout`, `ws_upgrade_timeout`, `ws_handshake: ...`,
    /// `send: ...`, `recv: ...`.
    pub errors: BTreeMap<String, u64>,
    /// Malformed input from the server, by what was wrong (the connection was closed).
    pub malformed: BTreeMap<String, u64>,
    /// From the first auth reply to the last.
    pub connect_secs: f64,
    /// Authenticated connections per second, from the start of the run to the last auth reply.
    pub auth_rate: f64,
    /// Time held after every connection settled (authenticated or failed).
    pub hold_secs: f64,
    /// The whole run.
    pub elapsed_secs: f64,
    /// When the run started on the wall clock, unix ms (`merge` aligns testers' per-second
    /// series by it).
    pub started_unix_ms: u64,
    /// Messages received, as goim's benchmark client counts them (inner frames).
    pub messages: u64,
    /// TCP reads that carried data, plus WebSocket messages.
    pub frames: u64,
    pub bytes: u64,
    /// Messages received in each second of the run (the last entry covers the partial second
    /// before the end).
    pub messages_per_sec: Vec<u64>,
    pub heartbeats_sent: u64,
    pub heartbeat_replies: u64,
    /// Receives that found no free provided buffer and were re-armed.
    pub recv_no_buffer: u64,
    /// Loss and order checks on seq bodies.
    #[serde(deserialize_with = "de_order")]
    pub order: Order,
    /// Present when seq bodies with `ts` arrived.
    pub latency_us: Option<Latency>,
    /// Latency in each second of the run that had samples (by arrival).
    pub latency_by_sec: Vec<SecondLatency>,
    /// The run's latency percentile curve (empty without samples).
    pub latency_cdf: Vec<CdfPoint>,
    /// CPU seconds (user + system) the process used during the run (`RUSAGE_SELF`; includes
    /// anything else in the process, such as an in-process gateway).
    pub cpu_secs: f64,
    /// CPU seconds the tester's worker threads used (`RUSAGE_THREAD`, summed).
    pub worker_cpu_secs: f64,
    pub threads: usize,
    pub rings: usize,
    /// The `room` scenario's publisher (`--publish`), when there was one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_publish"
    )]
    pub publish: Option<PublishReport>,
    /// With a publisher: messages every authenticated connection should have received
    /// (authenticated × pushes answered with code 0), and how many of them did not arrive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_messages: Option<u64>,
    /// With `--drain`: seconds past `--duration` until every expected message had arrived
    /// (absent when the drain ran out first, or there was none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_secs: Option<f64>,
    /// Storms, churn, stalls and reconnects, when the run had any (not read back by `merge`).
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub reconnects: Option<ReconnectReport>,
    /// The gaps behind `order.gaps`: which connection missed which seqs (the first ones seen,
    /// sorted by connection; not read back by `merge`).
    #[serde(skip_deserializing)]
    pub gaps: Gaps,
    /// Signs that the tester, not the server, may have been the limit (see
    /// [`HoldReport::tester_warnings`]).
    pub warnings: Vec<String>,
    /// With `--agent`: the raw latency histograms and auth times `merge` needs.
    #[serde(default, skip_serializing_if = "AgentData::is_off")]
    pub agent: AgentData,
}

impl HoldReport {
    /// Adds the publisher's report and what it implies: every authenticated connection was in
    /// the room (or, for a broadcast, accepts its op), so each should have received every push
    /// that was answered with code 0.
    ///
    /// `members[g]` is how many connections push group `g` reaches (a room's members, a key
    /// or mid group's size); `None` for one room or a broadcast, where every authenticated
    /// connection counts. With several groups, connections that never authenticated are
    /// counted as missing too.
    pub fn set_publish(&mut self, p: PublishReport, members: Option<&[u64]>) {
        let expected = match members {
            None => self.authenticated * p.ok,
            Some(m) => p.ok_by_group.iter().zip(m).map(|(ok, n)| ok * n).sum(),
        };
        self.expected_messages = Some(expected);
        self.missing_messages = Some(expected.saturating_sub(self.messages));
        self.publish = Some(p);
        self.warnings = self.tester_warnings();
    }

    /// Sets the latency figures from the run's histogram and its seconds, kept for `--agent`.
    pub fn set_latency(&mut self, run: Histogram<u64>, seconds: Seconds) {
        self.latency_us = Latency::of(&run);
        self.latency_by_sec = seconds
            .histograms()
            .iter()
            .map(|(sec, h)| SecondLatency::of(*sec, h))
            .collect();
        self.latency_cdf = cdf(&run);
        self.agent.latency_histogram = run;
        self.agent.latency_by_sec_histograms = seconds;
    }

    /// What suggests the tester itself was the limit: worker threads busy nearly all the run,
    /// receives that found no buffer, a publisher behind its schedule.
    pub fn tester_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let capacity = self.threads as f64 * self.elapsed_secs;
        if capacity > 0.0 && self.worker_cpu_secs / capacity >= BUSY_WARNING {
            w.push(format!(
                "the tester's worker threads were busy {:.0}% of the run: the tester, not the server, may have been the limit; use more threads/cores or another machine (--agent)",
                self.worker_cpu_secs / capacity * 100.0
            ));
        }
        if self.recv_no_buffer > 0 {
            w.push(format!(
                "{} receives found no free receive buffer and waited for one: the tester read more slowly than data arrived; raise --recv-buffers (or --recv-buffer-size)",
                self.recv_no_buffer
            ));
        }
        if let Some(p) = &self.publish
            && p.sent > 0
            && p.late_over_1ms as f64 / p.sent as f64 >= LATE_WARNING
        {
            w.push(format!(
                "{} of {} pushes ({:.0}%) were sent more than 1 ms late: the publisher fell behind --push-rate, so the gateway saw a lower or burstier rate than asked",
                p.late_over_1ms,
                p.sent,
                p.late_over_1ms as f64 / p.sent as f64 * 100.0
            ));
        }
        w
    }

    /// Errors of every kind (connect, after connect, malformed).
    pub fn error_count(&self) -> u64 {
        [&self.connect_errors, &self.errors, &self.malformed]
            .iter()
            .flat_map(|m| m.values())
            .sum()
    }

    /// What went wrong, by kind: connect errors, errors after connect, malformed input, and
    /// the reasons the server gave for closing.
    pub fn problems(&self) -> [(&'static str, &BTreeMap<String, u64>); 4] {
        [
            ("connect errors", &self.connect_errors),
            ("errors", &self.errors),
            ("malformed", &self.malformed),
            ("closed by server", &self.close_reasons),
        ]
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "connections: {} asked, {} attempted, {} established, {} authenticated, {} open at end",
            self.connections,
            self.attempted,
            self.established,
            self.authenticated,
            self.open_at_end
        );
        let _ = writeln!(
            s,
            "connect: {:.2} s first to last auth, {:.0} auths/s; held {:.1} s of {:.1} s",
            self.connect_secs, self.auth_rate, self.hold_secs, self.elapsed_secs
        );
        let _ = writeln!(
            s,
            "received: {} messages, {} frames, {} bytes; heartbeats {} sent, {} replies",
            self.messages, self.frames, self.bytes, self.heartbeats_sent, self.heartbeat_replies
        );
        let o = &self.order;
        if o.checked > 0 {
            let _ = writeln!(
                s,
                "order: {} checked, {} gaps, {} duplicates, {} reorders, {} bad seq bodies",
                o.checked, o.gaps, o.duplicates, o.reorders, o.bad_bodies
            );
        }
        if let Some(g) = self.gaps.samples.first() {
            let _ = writeln!(
                s,
                "gaps: first at connection {} (seq {} then {}); {} listed in the JSON report",
                g.conn,
                g.after,
                g.next,
                self.gaps.samples.len()
            );
        }
        if let Some(r) = &self.reconnects {
            let _ = writeln!(
                s,
                "disruptions: {} storms, {} dropped, {} stalled; {} reconnect attempts, {} reconnected, {} waiting at end{}",
                r.storms,
                r.dropped,
                r.stalled,
                r.attempts,
                r.reconnected,
                r.waiting_at_end,
                r.storm_recovery_secs
                    .map(|s| format!("; storm recovered in {s:.1} s"))
                    .unwrap_or_default()
            );
            if let Some(t) = &r.time_ms {
                let _ = writeln!(
                    s,
                    "reconnect time (drop to auth reply): p50 {} ms, p99 {} ms, max {} ms; peak {} reconnects in one second",
                    t.p50,
                    t.p99,
                    t.max,
                    r.per_sec.iter().max().copied().unwrap_or(0)
                );
            }
            if !r.by_node.is_empty() {
                let nodes: Vec<String> =
                    r.by_node.iter().map(|(n, c)| format!("{n} {c}")).collect();
                let _ = writeln!(s, "reconnects by node: {}", nodes.join(", "));
            }
        }
        if let (Some(p), Some(expected), Some(missing)) =
            (&self.publish, self.expected_messages, self.missing_messages)
        {
            let errors: u64 = p.errors.values().sum();
            let _ = writeln!(
                s,
                "published: {} pushes, {} ok, {errors} failed, {} sent late (>1 ms) in {:.1} s; expected {expected} messages, {missing} missing{}",
                p.sent,
                p.ok,
                p.late_over_1ms,
                p.secs,
                self.drained_secs
                    .map(|d| format!(" (the last arrived {d:.1} s after the hold)"))
                    .unwrap_or_default()
            );
        }
        if let Some(l) = &self.latency_us {
            let _ = writeln!(
                s,
                "latency us: p50 {} p90 {} p99 {} p999 {} max {} ({} samples)",
                l.p50, l.p90, l.p99, l.p999, l.max, l.samples
            );
        }
        for (name, map) in self.problems() {
            if !map.is_empty() {
                let items: Vec<String> = map.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                let _ = writeln!(s, "{name}: {}", items.join(", "));
            }
        }
        let _ = writeln!(
            s,
            "cpu: {:.2} s workers, {:.2} s process; {} threads, {} rings",
            self.worker_cpu_secs, self.cpu_secs, self.threads, self.rings
        );
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(threads: usize, elapsed_secs: f64, worker_cpu_secs: f64) -> HoldReport {
        HoldReport {
            threads,
            elapsed_secs,
            worker_cpu_secs,
            ..HoldReport::default()
        }
    }

    #[test]
    fn warnings_name_the_tester_limit() {
        assert!(
            run(2, 10.0, 17.9).tester_warnings().is_empty(),
            "89.5% busy"
        );
        let w = run(2, 10.0, 18.0).tester_warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("the tester's worker threads were busy 90% of the run"));
        assert!(w[0].contains("--agent"));
        assert!(
            run(0, 0.0, 1.0).tester_warnings().is_empty(),
            "no division by zero"
        );

        let mut r = run(1, 10.0, 1.0);
        r.recv_no_buffer = 1;
        let w = r.tester_warnings();
        assert!(w.len() == 1 && w[0].contains("--recv-buffers"), "{w:?}");

        let mut r = run(1, 10.0, 1.0);
        let late = |late_over_1ms| PublishReport {
            sent: 100,
            ok: 100,
            late_over_1ms,
            ..PublishReport::default()
        };
        r.set_publish(late(9), None);
        assert!(r.warnings.is_empty(), "9% late: {:?}", r.warnings);
        r.set_publish(late(10), None);
        assert!(
            r.warnings.len() == 1 && r.warnings[0].starts_with("10 of 100 pushes (10%)"),
            "{:?}",
            r.warnings
        );
        assert!(r.summary().contains("\nwarning: 10 of 100 pushes"));
        r.set_publish(PublishReport::default(), None);
        assert!(r.warnings.is_empty(), "nothing sent, nothing late");
    }

    #[test]
    fn cdf_climbs_to_the_maximum() {
        assert!(cdf(&timeline::run_histogram()).is_empty());
        let mut h = timeline::run_histogram();
        for us in 1..=100_000 {
            h.record(us).unwrap();
        }
        let points = cdf(&h);
        assert!(
            points.len() > 20 && points.len() <= MAX_CDF_POINTS,
            "{}",
            points.len()
        );
        assert_eq!(points[0].percentile, 0.0);
        assert!(points.windows(2).all(|w| w[0].percentile < w[1].percentile));
        assert!(points.windows(2).all(|w| w[0].us <= w[1].us));
        let last = points.last().unwrap();
        assert_eq!((last.percentile, last.us), (100.0, h.max()));
        // 1..=100000 us: percentile p is about p x 1000 us (three significant digits).
        for p in &points[1..] {
            let want = p.percentile * 1000.0;
            assert!((p.us as f64 - want).abs() <= want * 0.002 + 1.0, "{p:?}");
        }
    }

    #[test]
    fn per_second_latency_and_the_agent_section() {
        let mut h = timeline::run_histogram();
        let mut s = Seconds::default();
        for us in 1..=100 {
            h.record(us * 100).unwrap();
            s.record(u64::from(us > 50) * 4, us * 100);
        }
        let mut r = run(1, 5.0, 0.1);
        r.set_latency(h, s);
        let by_sec: Vec<(u32, u64, u64)> = r
            .latency_by_sec
            .iter()
            .map(|l| (l.sec, l.samples, l.max))
            .collect();
        assert_eq!(by_sec.len(), 2);
        assert_eq!((by_sec[0].0, by_sec[0].1), (0, 50));
        assert_eq!((by_sec[1].0, by_sec[1].1), (4, 50));
        assert!((4_990..=10_050).contains(&by_sec[0].2) && by_sec[1].2 >= 9_950);
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("agent").is_none(), "only with --agent");
        assert_eq!(json["latency_by_sec"][1]["sec"], 4);
        r.agent.on = true;
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["agent"]["latency_histogram"].as_array().unwrap().len(),
            100
        );
        assert!(json["agent"].get("on").is_none());
        let back: HoldReport = serde_json::from_value(json).unwrap();
        assert!(back.agent.on);
        assert_eq!(back.agent.latency_histogram.len(), 100);
        assert_eq!(back.latency_by_sec, r.latency_by_sec);
    }
}
