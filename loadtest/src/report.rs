//! The report of a hold run: what was asked, what connected, what arrived, what went wrong,
//! and what it cost the tester. Serialised as JSON for harnesses; [`HoldReport::summary`] is
//! the human-readable form.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::disrupt::ReconnectReport;
use crate::publish::PublishReport;
use crate::sequence::{Gaps, Order};

/// Latency from a seq body's `ts` to its arrival, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
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

/// Everything a hold run measured.
#[derive(Clone, Debug, Serialize)]
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
    pub order: Order,
    /// Present when seq bodies with `ts` arrived.
    pub latency_us: Option<Latency>,
    /// CPU seconds (user + system) the process used during the run (`RUSAGE_SELF`; includes
    /// anything else in the process, such as an in-process gateway).
    pub cpu_secs: f64,
    /// CPU seconds the tester's worker threads used (`RUSAGE_THREAD`, summed).
    pub worker_cpu_secs: f64,
    pub threads: usize,
    pub rings: usize,
    /// The `room` scenario's publisher (`--publish`), when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishReport>,
    /// With a publisher: messages every authenticated connection should have received
    /// (authenticated × pushes answered with code 0), and how many of them did not arrive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_messages: Option<u64>,
    /// Storms, churn, stalls and reconnects, when the run had any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnects: Option<ReconnectReport>,
    /// The gaps behind `order.gaps`: which connection missed which seqs (the first ones seen,
    /// sorted by connection).
    pub gaps: Gaps,
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
        if let (Some(p), Some(expected), Some(missing)) =
            (&self.publish, self.expected_messages, self.missing_messages)
        {
            let errors: u64 = p.errors.values().sum();
            let _ = writeln!(
                s,
                "published: {} pushes, {} ok, {errors} failed, {} sent late (>1 ms) in {:.1} s; expected {expected} messages, {missing} missing",
                p.sent, p.ok, p.late_over_1ms, p.secs
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
        s
    }
}
