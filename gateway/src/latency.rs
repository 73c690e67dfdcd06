//! A shard's latency histograms: handshakes (accept → the auth reply written, or → the
//! handshake's failure) and writes (a send submitted to io_uring → its completion).
//!
//! The shard counts in plain integers ([`Histogram`]) and publishes them with its other counters
//! once per loop turn ([`SharedHistogram`]); no atomics, locks or syscalls per message. Time is
//! the shard's microsecond clock ([`Latency::now_us`]), read once per loop turn and once per
//! batch of completions, so a latency is exact to one batch.
//!
//! - **Writes** need no per-connection state: a send's user data carries a 20-bit stamp of its
//!   submission time in units of [`STAMP_UNIT_US`] (16 µs; `uring.rs`), which the completion
//!   returns. A send in flight longer than [`STAMP_WRAP_US`] (16.7 s) is counted modulo that.
//! - **Handshakes** keep each connection's accept time in a map only while it handshakes (and
//!   until its auth reply is written), not in [`crate::conn::Conn`]; a send completion looks in
//!   that map only while some auth reply is unwritten. The handshake ends at the first write
//!   that completes after the auth: the one carrying the reply, or (rarely: a pipelined
//!   WebSocket upgrade and auth) a write already in flight just before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::conn::State;
use crate::shard::Shard;

/// Bucket upper bounds in microseconds: 50 µs to 10 s.
pub const BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
/// Buckets, the last one `+Inf`.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// A send's stamp unit (a stamp is the shard clock in these units, modulo 2^20).
pub const STAMP_UNIT_US: u64 = 16;
const STAMP_MASK: u64 = (1 << crate::uring::STAMP_BITS) - 1;
/// How long a send can be in flight before its stamp wraps.
pub const STAMP_WRAP_US: u64 = STAMP_UNIT_US << crate::uring::STAMP_BITS;

/// A fixed-bucket histogram of microseconds, kept in plain integers by one thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative): bucket `i` holds values in
    /// (`BOUNDS_US[i-1]`, `BOUNDS_US[i]`], the last one those above every bound.
    pub counts: [u64; BUCKETS],
    pub sum_us: u64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, us: u64) {
        // The first bound at or above the value (Prometheus buckets are `le`).
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.sum_us += us;
        self.count += 1;
    }

    /// Cumulative counts, one per bound and `+Inf` last (which equals [`Histogram::count`]).
    pub fn cumulative(&self) -> [u64; BUCKETS] {
        let mut acc = 0;
        self.counts.map(|c| {
            acc += c;
            acc
        })
    }
}

/// A [`Histogram`] published for readers on other threads.
#[derive(Debug, Default)]
pub struct SharedHistogram {
    counts: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl SharedHistogram {
    pub fn publish(&self, h: &Histogram) {
        if self.count.load(Ordering::Relaxed) == h.count {
            return;
        }
        for (a, &c) in self.counts.iter().zip(&h.counts) {
            a.store(c, Ordering::Relaxed);
        }
        self.sum_us.store(h.sum_us, Ordering::Relaxed);
        // Readers recompute the count from the buckets (`read`), so `+Inf == _count` always;
        // this copy only tells the next publish whether anything changed.
        self.count.store(h.count, Ordering::Relaxed);
    }

    /// A consistent copy: `count` is recomputed from the buckets read, so `+Inf == _count`.
    pub fn read(&self) -> Histogram {
        let counts = std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed));
        Histogram {
            counts,
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count: counts.iter().sum(),
        }
    }
}

/// A shard's histograms, published together.
#[derive(Debug, Default)]
pub struct SharedLatency {
    pub handshake_ok: SharedHistogram,
    pub handshake_failed: SharedHistogram,
    pub write: SharedHistogram,
}

impl SharedLatency {
    pub fn publish(&self, l: &Latency) {
        self.handshake_ok.publish(&l.handshake_ok);
        self.handshake_failed.publish(&l.handshake_failed);
        self.write.publish(&l.write);
    }
}

/// A shard's own latency state.
#[derive(Debug, Default)]
pub struct Latency {
    /// The shard clock in microseconds: read at the start of each loop turn and after each
    /// batch of completions.
    pub now_us: u64,
    /// Handshakes that ended with the auth reply written.
    pub handshake_ok: Histogram,
    /// Handshakes that ended otherwise: a refused token, bad input, the deadline, a refusal at
    /// accept, the client gone.
    pub handshake_failed: Histogram,
    pub write: Histogram,
    /// Accept times of connections in their handshake, by handle (with the generation).
    accepting: HashMap<u32, (u16, u64)>,
    /// Accept times of connections authenticated whose reply is not yet written.
    replying: HashMap<u32, (u16, u64)>,
}

/// Maps past this many entries are given back when they empty (after a connect storm).
const MAP_KEEP: usize = 4096;

impl Latency {
    /// The stamp for sends submitted now.
    pub fn stamp(&self) -> u32 {
        ((self.now_us / STAMP_UNIT_US) & STAMP_MASK) as u32
    }

    /// Microseconds since a send stamped `stamp` was submitted.
    pub fn since(&self, stamp: u32) -> u64 {
        let now = (self.now_us / STAMP_UNIT_US) & STAMP_MASK;
        (now.wrapping_sub(u64::from(stamp)) & STAMP_MASK) * STAMP_UNIT_US
    }

    /// A connection was accepted into `h`.
    pub fn accepted(&mut self, h: u32, gen_: u16) {
        if !self.replying.is_empty() {
            self.replying.remove(&h);
        }
        self.accepting.insert(h, (gen_, self.now_us));
    }

    /// The connection in `h` authenticated: its handshake ends when its reply is written.
    pub fn authenticated(&mut self, h: u32, gen_: u16) {
        if let Some(e) = self.accepting.remove(&h) {
            if e.0 == gen_ {
                self.replying.insert(h, e);
            }
            shrink(&mut self.accepting);
        }
    }

    /// A send on `h`, submitted at `stamp`, completed.
    pub fn written(&mut self, h: u32, gen_: u16, stamp: u32) {
        self.write.observe(self.since(stamp));
        if !self.replying.is_empty()
            && let Some(&(g, at)) = self.replying.get(&h)
            && g == gen_
        {
            self.replying.remove(&h);
            self.handshake_ok.observe(self.now_us.saturating_sub(at));
            shrink(&mut self.replying);
        }
    }

    /// The connection in `h` is being closed: a handshake still under way failed.
    pub fn closing(&mut self, h: u32, gen_: u16) {
        for map in [&mut self.accepting, &mut self.replying] {
            if !map.is_empty()
                && let Some((g, at)) = map.remove(&h)
            {
                if g == gen_ {
                    self.handshake_failed
                        .observe(self.now_us.saturating_sub(at));
                }
                shrink(map);
            }
        }
    }

    /// Connections in their handshake, or authenticated with the reply unwritten.
    pub fn handshaking(&self) -> usize {
        self.accepting.len() + self.replying.len()
    }
}

fn shrink(map: &mut HashMap<u32, (u16, u64)>) {
    if map.is_empty() && map.capacity() > MAP_KEEP {
        *map = HashMap::new();
    }
}

impl Shard {
    /// After input on a connection that was handshaking: if it authenticated, its handshake
    /// now waits for the reply to be written. (A failure is counted where it closes.)
    pub(crate) fn handshake_input_done(&mut self, h: u32) {
        if let Some(conn) = self.conn(h)
            && conn.state == State::Open
        {
            let gen_ = conn.gen_;
            self.lat.authenticated(h, gen_);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive_and_cumulative() {
        let mut h = Histogram::default();
        for us in [
            0,
            50,
            51,
            100,
            9_999_999,
            10_000_000,
            10_000_001,
            u64::MAX / 2,
        ] {
            h.observe(us);
        }
        assert_eq!(h.counts[0], 2, "0 and 50 are in le=50");
        assert_eq!(h.counts[1], 2, "51 and 100 are in le=100");
        assert_eq!(h.counts[BUCKETS - 2], 2, "le=10 s holds 9.99 s and 10 s");
        assert_eq!(h.counts[BUCKETS - 1], 2, "+Inf holds the rest");
        let cum = h.cumulative();
        assert!(cum.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(cum[BUCKETS - 1], h.count);
        assert_eq!(h.count, 8);
    }

    #[test]
    fn published_copy_reads_back_consistently() {
        let shared = SharedHistogram::default();
        let mut h = Histogram::default();
        h.observe(700);
        h.observe(1);
        shared.publish(&h);
        assert_eq!(shared.read(), h);
        // Unchanged counts are not stored again; changed ones are.
        h.observe(2_000_000);
        shared.publish(&h);
        assert_eq!(shared.read(), h);
    }

    #[test]
    fn write_stamps_measure_across_the_wrap() {
        let mut l = Latency {
            now_us: STAMP_WRAP_US - 32,
            ..Default::default()
        };
        let stamp = l.stamp();
        l.now_us += 1_000;
        assert!(
            l.since(stamp).abs_diff(1_000) < STAMP_UNIT_US,
            "{}",
            l.since(stamp)
        );
        l.written(1, 1, stamp);
        assert_eq!(l.write.count, 1);
        assert_eq!(l.write.counts[4], 1, "about 1 ms: le=1000 µs");
    }

    #[test]
    fn handshakes_end_at_the_reply_write_or_at_the_close() {
        let mut l = Latency::default();
        l.accepted(7, 1);
        l.accepted(8, 1);
        l.accepted(9, 1);
        l.now_us = 300;
        // 7 authenticates; a write on it completes: handshake ok, 300 µs.
        l.authenticated(7, 1);
        l.written(7, 1, l.stamp());
        assert_eq!((l.handshake_ok.count, l.handshake_ok.sum_us), (1, 300));
        // 8 is closed before auth: failed. 9 authenticates and is closed before its reply
        // went out: failed too.
        l.now_us = 5_000;
        l.closing(8, 1);
        l.authenticated(9, 1);
        l.closing(9, 1);
        assert_eq!(
            (l.handshake_failed.count, l.handshake_failed.sum_us),
            (2, 10_000)
        );
        // A slot reused by a new connection replaces whatever its old one left.
        l.accepted(4, 1);
        l.authenticated(4, 1);
        l.accepted(4, 2);
        l.written(4, 2, l.stamp());
        assert_eq!(
            l.handshake_ok.count, 1,
            "the new connection has not authenticated"
        );
        l.closing(4, 2);
        assert_eq!(l.handshake_failed.count, 3);
        assert_eq!(l.handshaking(), 0);
        // Writes on connections not handshaking count only as writes.
        l.written(3, 1, l.stamp());
        assert_eq!((l.write.count, l.handshake_ok.count), (3, 1));
    }
}
