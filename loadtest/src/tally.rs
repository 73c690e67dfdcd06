//! One worker's counts: plain integers, reason maps and latency histograms (the whole run's
//! and one per second), owned by its thread and summed with the others' when the run ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::live::Snapshot;
use crate::progress::{self, LIVE_BUCKETS, LiveLatency};
use crate::sequence::Order;
use crate::timeline::{self, MAX_LATENCY_US, Seconds};

/// Distinct reasons kept per map; the rest are counted under [`OTHER_REASONS`].
const MAX_REASONS: usize = 64;
pub const OTHER_REASONS: &str = "(other reasons)";
/// How often (in arrival time) a worker adds its latency buckets to [`Shared::live_latency`].
const FEED_US: u64 = 100_000;

/// What every worker's tally shares with the coordinating thread.
#[derive(Debug, Default)]
pub struct Shared {
    /// The run's start on the wall clock, unix µs: every worker counts the seconds of
    /// [`Tally::seconds`] from it, so second N is the same second for all.
    pub start_us: u64,
    /// Latency buckets for the progress line's p99.
    pub live_latency: LiveLatency,
}

impl Shared {
    pub fn starting_at(start_us: u64) -> Shared {
        Shared {
            start_us,
            live_latency: LiveLatency::default(),
        }
    }
}

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
    /// The whole run's latency (µs).
    pub latency: Histogram<u64>,
    /// Latency by second of arrival (needs [`Shared`]: see [`Tally::new`]).
    pub seconds: Seconds,
    pub first_auth: Option<Instant>,
    pub last_auth: Option<Instant>,
    shared: Option<Arc<Shared>>,
    /// Latency buckets not yet added to the shared ones, and when to add them next.
    live_pending: [u64; LIVE_BUCKETS],
    next_feed_us: u64,
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
            latency: timeline::run_histogram(),
            seconds: Seconds::default(),
            first_auth: None,
            last_auth: None,
            shared: None,
            live_pending: [0; LIVE_BUCKETS],
            next_feed_us: 0,
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
    /// A worker's tally in a run that shares `shared`: latency samples also count by second of
    /// arrival and feed the progress line. (`Tally::default()` keeps the whole-run histogram
    /// only.)
    pub fn new(shared: Arc<Shared>) -> Tally {
        Tally {
            shared: Some(shared),
            ..Tally::default()
        }
    }

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

    /// A latency sample of `us` microseconds (whole run only; see [`Tally::arrival`]).
    pub fn latency(&mut self, us: u64) {
        self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// A message published at `ts_us` arrived at `now_us` (unix µs): a latency sample, counted
    /// for the whole run, for its second of the run, and for the progress line.
    pub fn arrival(&mut self, ts_us: u64, now_us: u64) {
        let us = now_us.saturating_sub(ts_us);
        self.latency(us);
        let Some(shared) = &self.shared else { return };
        let sec = now_us.saturating_sub(shared.start_us) / 1_000_000;
        self.seconds.record(sec, us);
        self.live_pending[progress::bucket(us)] += 1;
        if now_us >= self.next_feed_us {
            shared.live_latency.add(&mut self.live_pending);
            self.next_feed_us = now_us + FEED_US;
        }
    }

    pub fn authenticated(&mut self, now: Instant) {
        self.live.authenticated += 1;
        self.first_auth.get_or_insert(now);
        self.last_auth = Some(now);
    }

    /// Adds another worker's counts.
    pub fn merge(&mut self, o: Tally) {
        self.live = self.live.sum(&o.live);
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
        self.seconds.merge(o.seconds);
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

    #[test]
    fn arrivals_count_by_second_of_the_run() {
        let start = 1_700_000_000_000_000;
        let shared = Arc::new(Shared::starting_at(start));
        let mut a = Tally::new(shared.clone());
        // Published at 0.9 s, arrived at 1.2 s: second 1, 300 ms.
        a.arrival(start + 900_000, start + 1_200_000);
        a.arrival(start + 3_000_000, start + 3_000_500);
        // A sender clock ahead of ours: 1 µs, in second 0.
        a.arrival(start + 10, start + 5);
        let mut b = Tally::new(shared.clone());
        b.arrival(start + 3_000_000, start + 3_001_000);
        a.merge(b);
        assert_eq!(a.latency.len(), 4);
        let secs: Vec<(u32, u64)> = a
            .seconds
            .histograms()
            .iter()
            .map(|(s, h)| (*s, h.len()))
            .collect();
        assert_eq!(secs, [(0, 1), (1, 1), (3, 2)]);
        // The first arrival of each tally fed the live buckets at once.
        let live = shared.live_latency.counts();
        assert_eq!(live.iter().sum::<u64>(), 3);
        assert_eq!(live[progress::bucket(300_000)], 1);
        // Without a run to share, only the whole run counts.
        let mut alone = Tally::default();
        alone.arrival(10, 20);
        assert_eq!(alone.latency.len(), 1);
        assert!(alone.seconds.is_empty());
    }
}
