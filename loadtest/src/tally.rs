//! One worker's counts: plain integers, reason maps and a latency histogram, owned by its
//! thread and summed with the others' when the run ends.

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::live::Snapshot;
use crate::sequence::Order;

/// Distinct reasons kept per map; the rest are counted under [`OTHER_REASONS`].
const MAX_REASONS: usize = 64;
pub const OTHER_REASONS: &str = "(other reasons)";
/// Latency samples above an hour are clamped (a clock jump, not a delivery).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A worker's counts.
pub struct Tally {
    /// The counters the progress line shows (also published to [`crate::live::Live`]).
    pub live: Snapshot,
    pub heartbeats_sent: u64,
    pub heartbeat_replies: u64,
    /// Receives that found no free provided buffer (the receive is re-armed).
    pub recv_no_buffer: u64,
    /// Connect failures by kind: `refused`, `reset`, `timeout`, or the errno name.
    pub connect_errors: BTreeMap<String, u64>,
    /// Failures after connect: `auth_timeout`, `ws_handshake: ...`, `send: ...`, `recv: ...`.
    pub errors: BTreeMap<String, u64>,
    /// Connections the server closed, by the reason it gave (`eof`/`reset` when none).
    pub close_reasons: BTreeMap<String, u64>,
    /// Malformed input from the server, by what was wrong.
    pub malformed: BTreeMap<String, u64>,
    pub order: Order,
    pub latency: Histogram<u64>,
    pub first_auth: Option<Instant>,
    pub last_auth: Option<Instant>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            live: Snapshot::default(),
            heartbeats_sent: 0,
            heartbeat_replies: 0,
            recv_no_buffer: 0,
            connect_errors: BTreeMap::new(),
            errors: BTreeMap::new(),
            close_reasons: BTreeMap::new(),
            malformed: BTreeMap::new(),
            order: Order::default(),
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("static histogram bounds are valid"),
            first_auth: None,
            last_auth: None,
        }
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    if let Some(v) = map.get_mut(key) {
        *v += n;
    } else if map.len() < MAX_REASONS {
        map.insert(key.to_string(), n);
    } else {
        *map.entry(OTHER_REASONS.to_string()).or_default() += n;
    }
}

impl Tally {
    pub fn connect_error(&mut self, kind: &str) {
        self.live.errors += 1;
        bump(&mut self.connect_errors, kind, 1);
    }

    pub fn error(&mut self, kind: &str) {
        self.live.errors += 1;
        bump(&mut self.errors, kind, 1);
    }

    pub fn closed_by_server(&mut self, reason: &str) {
        self.live.closed_by_server += 1;
        bump(&mut self.close_reasons, reason, 1);
    }

    pub fn malformed(&mut self, what: &str) {
        self.live.errors += 1;
        bump(&mut self.malformed, what, 1);
    }

    pub fn latency(&mut self, us: u64) {
        self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    pub fn authenticated(&mut self, now: Instant) {
        self.live.authenticated += 1;
        self.first_auth.get_or_insert(now);
        self.last_auth = Some(now);
    }

    /// Adds another worker's counts.
    pub fn merge(&mut self, o: Tally) {
        let l = &mut self.live;
        let m = &o.live;
        l.attempted += m.attempted;
        l.established += m.established;
        l.authenticated += m.authenticated;
        l.settled += m.settled;
        l.messages += m.messages;
        l.frames += m.frames;
        l.bytes += m.bytes;
        l.errors += m.errors;
        l.closed_by_server += m.closed_by_server;
        l.open += m.open;
        self.heartbeats_sent += o.heartbeats_sent;
        self.heartbeat_replies += o.heartbeat_replies;
        self.recv_no_buffer += o.recv_no_buffer;
        for (mine, theirs) in [
            (&mut self.connect_errors, o.connect_errors),
            (&mut self.errors, o.errors),
            (&mut self.close_reasons, o.close_reasons),
            (&mut self.malformed, o.malformed),
        ] {
            for (k, v) in theirs {
                bump(mine, &k, v);
            }
        }
        self.order.add(&o.order);
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&o.latency);
        self.first_auth = match (self.first_auth, o.first_auth) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_auth = self.last_auth.max(o.last_auth);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_capped_and_merged() {
        let mut a = Tally::default();
        for i in 0..100 {
            a.closed_by_server(&format!("reason {i}"));
        }
        assert_eq!(a.close_reasons.len(), MAX_REASONS + 1);
        assert_eq!(a.close_reasons[OTHER_REASONS], 100 - MAX_REASONS as u64);
        let mut b = Tally::default();
        b.connect_error("refused");
        b.latency(250);
        a.connect_error("refused");
        a.merge(b);
        assert_eq!(a.connect_errors["refused"], 2);
        assert_eq!(a.live.errors, 2);
        assert_eq!(a.live.closed_by_server, 100);
        assert_eq!(a.latency.len(), 1);
    }
}
