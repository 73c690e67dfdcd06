//! Disruptions of a hold, ordered by the coordinating thread and carried out by every worker:
//!
//! - a **storm** drops a share of the open connections at once (the `storm` scenario); they
//!   reconnect with jittered exponential backoff, as a client fleet does after a gateway restart;
//! - **churn** drops and reconnects a steady number of connections per second (the `soak`
//!   scenario: a long hold with churn);
//! - a **stall** makes a share of the connections stop reading for a while and then read
//!   again, so the gateway's outbound cap acts on them (the loss detector's proof: with
//!   `slow_consumer = "drop-oldest"` the messages the gateway drops show up as gaps).
//!
//! The coordinator flips [`Orders`]; each worker notices on its next loop turn. Which
//! connections a storm or a stall picks is a function of the connection id ([`chosen`]), so
//! the share is exact over many connections and the same in every run. Workers count what
//! they did in [`Reconnects`], merged into the report's [`ReconnectReport`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::report::Latency;

/// What the coordinator orders; workers read it every loop turn.
#[derive(Debug, Default)]
pub struct Orders {
    /// Storms ordered so far (a worker runs one storm for each increment it sees).
    pub storms: AtomicU32,
    /// Churn is on.
    pub churning: AtomicBool,
    /// The chosen share of connections is not reading.
    pub stalled: AtomicBool,
}

/// A storm: at `at` into the hold, drop `share` of the open connections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Storm {
    pub share: f64,
    pub at: Duration,
}

/// A read stall: from `at` into the hold, `share` of the connections stop reading for `length`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    pub share: f64,
    pub at: Duration,
    pub length: Duration,
}

/// Reconnect backoff: attempt `n` (0 for the first after a drop) waits a uniformly random time
/// in `[0, min(max, base × 2^n)]` ("full jitter"), so a storm's reconnects spread out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt`, from a uniform random `r` (any u64).
    pub fn delay_ms(&self, attempt: u8, r: u64) -> u64 {
        let base = self.base.as_millis() as u64;
        let cap = (self.max.as_millis() as u64).min(base.saturating_mul(1 << attempt.min(20)));
        r % (cap + 1)
    }
}

/// Whether connection `id` is among the `share` (0 to 1) of connections a storm or a stall
/// picks: a multiplicative hash of the id against the share, so picks spread over rooms,
/// threads and targets.
pub fn chosen(id: u32, share: f64) -> bool {
    let h = (id as u64 ^ 0x5bd1_e995).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    (h as f64) < share * (1u64 << 24) as f64
}

/// Bounds on reconnect times (milliseconds).
const MAX_RECONNECT_MS: u64 = 3_600_000;

/// What a worker did to its connections and how they came back.
pub struct Reconnects {
    /// Connections the tester closed (storms and churn).
    pub dropped: u64,
    /// Connections that stopped reading in a stall.
    pub stalled: u64,
    /// Connects made to replace a connection that ended (dropped, or closed by the server).
    pub attempts: u64,
    /// Replacements that authenticated.
    pub reconnected: u64,
    /// From the end of a connection to the auth reply of its replacement.
    pub time_ms: Histogram<u64>,
    /// Replacements that authenticated, by the node (address) they went to.
    pub by_node: BTreeMap<String, u64>,
}

impl Default for Reconnects {
    fn default() -> Self {
        Reconnects {
            dropped: 0,
            stalled: 0,
            attempts: 0,
            reconnected: 0,
            time_ms: Histogram::new_with_bounds(1, MAX_RECONNECT_MS, 2)
                .expect("static histogram bounds are valid"),
            by_node: BTreeMap::new(),
        }
    }
}

impl Reconnects {
    pub fn record(&mut self, ms: u64) {
        self.time_ms
            .saturating_record(ms.clamp(1, MAX_RECONNECT_MS));
    }

    pub fn merge(&mut self, o: &Reconnects) {
        self.dropped += o.dropped;
        self.stalled += o.stalled;
        self.attempts += o.attempts;
        self.reconnected += o.reconnected;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.time_ms.add(&o.time_ms);
        for (node, n) in &o.by_node {
            *self.by_node.entry(node.clone()).or_default() += n;
        }
    }
}

/// The report's account of storms, churn, stalls and reconnects.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReconnectReport {
    /// Storms run, and connections the tester dropped (storms and churn).
    pub storms: u32,
    pub dropped: u64,
    /// Connections that stopped reading in a stall.
    pub stalled: u64,
    /// Connects made to replace a connection that ended, and those that authenticated.
    pub attempts: u64,
    pub reconnected: u64,
    /// Connections still waiting to come back when the run ended.
    pub waiting_at_end: u64,
    /// From a storm until every connection it dropped was back, in seconds (absent if they
    /// were not all back by the end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm_recovery_secs: Option<f64>,
    /// From the end of a connection to the auth reply of its replacement, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<Latency>,
    /// Replacements that authenticated, by the node they went to (`host:port`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_node: BTreeMap<String, u64>,
    /// Replacements that authenticated in each second of the run (the reconnect arrival rate
    /// a gateway sees; its peak shows how well backoff spread a storm).
    pub per_sec: Vec<u64>,
}

impl ReconnectReport {
    pub fn of(
        r: &Reconnects,
        storms: u32,
        waiting: u64,
        recovery: Option<f64>,
        per_sec: Vec<u64>,
    ) -> Self {
        ReconnectReport {
            storms,
            dropped: r.dropped,
            stalled: r.stalled,
            attempts: r.attempts,
            reconnected: r.reconnected,
            waiting_at_end: waiting,
            storm_recovery_secs: recovery,
            time_ms: Latency::of(&r.time_ms),
            by_node: r.by_node.clone(),
            per_sec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_share_is_close_to_exact_and_stable() {
        for share in [0.0, 0.1, 0.5, 1.0] {
            let n = (0..100_000).filter(|&id| chosen(id, share)).count();
            let want = share * 100_000.0;
            assert!((n as f64 - want).abs() <= 1_000.0, "{share}: {n}");
        }
        assert!((0..1000).all(|id| chosen(id, 1.0)));
        assert!((0..1000).all(|id| !chosen(id, 0.0)));
        assert_eq!(chosen(42, 0.3), chosen(42, 0.3));
    }

    #[test]
    fn backoff_is_full_jitter_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
        };
        assert_eq!(b.delay_ms(0, 100), 100);
        assert_eq!(b.delay_ms(0, 101), 0);
        assert_eq!(b.delay_ms(2, 400), 400);
        assert!((0..1000u64).all(|r| b.delay_ms(30, r * 7919) <= 1_000));
        assert!(b.delay_ms(255, u64::MAX) <= 1_000);
    }

    #[test]
    fn reconnect_times_merge() {
        let mut a = Reconnects::default();
        a.record(5);
        a.dropped = 2;
        let mut b = Reconnects::default();
        b.record(50);
        b.reconnected = 1;
        a.by_node.insert("n1".into(), 2);
        b.by_node.insert("n1".into(), 1);
        b.by_node.insert("n2".into(), 5);
        a.merge(&b);
        let r = ReconnectReport::of(&a, 1, 0, Some(1.5), vec![0, 3]);
        assert_eq!(r.by_node["n1"], 3);
        assert_eq!(r.by_node["n2"], 5);
        assert_eq!(r.per_sec, [0, 3]);
        assert_eq!((r.dropped, r.reconnected), (2, 1));
        assert_eq!(r.time_ms.unwrap().samples, 2);
    }
}
