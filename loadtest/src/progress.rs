//! The live progress of a run: once a second, elapsed time, connections, auth replies,
//! messages per second, the last second's p99 latency and errors. On a terminal one line is
//! redrawn in place (indicatif); otherwise (tests, CI, a pipe) a plain line is printed each
//! second.
//!
//! The p99 comes from [`LiveLatency`]: coarse buckets (four per power of two, so within 25 %)
//! that each worker counts in plain integers and adds to the shared atomics a few times a
//! second, on the arrival of a sample (see [`crate::tally::Tally::arrival`]): no atomic per
//! message, no extra clock read. The exact figures are in the report.

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::live::Snapshot;

/// Buckets of [`LiveLatency`]: 0-7 µs one each, then four per power of two up to 2^32 µs.
pub const LIVE_BUCKETS: usize = 124;

/// The bucket of a latency of `us` microseconds (values past 2^32 µs share the last).
pub fn bucket(us: u64) -> usize {
    if us < 8 {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros() as usize;
    let sub = ((us >> (msb - 2)) & 3) as usize;
    ((msb - 1) * 4 + sub).min(LIVE_BUCKETS - 1)
}

/// The largest latency that falls in bucket `i`.
pub fn bucket_top(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let msb = i / 4 + 1;
    let sub = (i % 4) as u64;
    ((4 + sub + 1) << (msb - 2)) - 1
}

/// Latency samples by bucket, summed over the workers.
#[derive(Debug)]
pub struct LiveLatency {
    counts: [AtomicU64; LIVE_BUCKETS],
}

impl Default for LiveLatency {
    fn default() -> Self {
        LiveLatency {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LiveLatency {
    /// Adds a worker's counts and zeroes them.
    pub(crate) fn add(&self, pending: &mut [u64; LIVE_BUCKETS]) {
        for (shared, mine) in self.counts.iter().zip(pending.iter_mut()) {
            if *mine > 0 {
                shared.fetch_add(*mine, Ordering::Relaxed);
                *mine = 0;
            }
        }
    }

    pub fn counts(&self) -> [u64; LIVE_BUCKETS] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

/// The latency at quantile `q` of these bucket counts (the top of its bucket); `None`
/// without samples.
pub fn quantile(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_top(i));
        }
    }
    None
}

/// `850us`, `1.2ms`, `3.40s`.
pub fn show_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// One second's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub elapsed: Duration,
    pub attempted: u64,
    pub total: u64,
    pub authenticated: u64,
    pub open: u64,
    pub msgs_per_sec: u64,
    pub messages: u64,
    /// p99 latency of the samples that arrived in the last second.
    pub p99_us: Option<u64>,
    pub errors: u64,
    pub closed: u64,
    /// Connections waiting for their replacement (storm, churn); shown when there are any.
    pub reconnecting: u64,
}

impl Line {
    /// The figures since `base` (the counters when the run started), over the second from
    /// `last` to `now`.
    pub fn of(
        elapsed: Duration,
        total: u64,
        base: &Snapshot,
        last: &Snapshot,
        now: &Snapshot,
        p99_us: Option<u64>,
    ) -> Line {
        Line {
            elapsed,
            attempted: now.attempted - base.attempted,
            total,
            authenticated: now.authenticated - base.authenticated,
            open: now.open.wrapping_sub(base.open),
            msgs_per_sec: now.messages - last.messages,
            messages: now.messages - base.messages,
            p99_us,
            errors: now.errors - base.errors,
            closed: now.closed_by_server - base.closed_by_server,
            reconnecting: now.reconnecting.wrapping_sub(base.reconnecting),
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p99 = self
            .p99_us
            .map_or_else(|| "-".into(), |us| format!("~{}", show_us(us)));
        write!(
            f,
            "{:>5}s  conns {}/{} auth {} open {}  msgs/s {}  msgs {}  p99 {p99}  errors {}  closed {}",
            self.elapsed.as_secs(),
            self.attempted,
            self.total,
            self.authenticated,
            self.open,
            self.msgs_per_sec,
            self.messages,
            self.errors,
            self.closed,
        )?;
        if self.reconnecting > 0 {
            write!(f, "  reconnecting {}", self.reconnecting)?;
        }
        Ok(())
    }
}

/// Where the lines go: a redrawn bar (connections authenticated of asked) on a terminal,
/// plain lines otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// The latency counts at the last tick.
    seen: [u64; LIVE_BUCKETS],
}

impl Progress {
    /// Progress for a run of `total` connections, on stderr.
    pub fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template("loadtest [{bar:20}] {msg}")
                .expect("a valid template")
                .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(style);
            bar
        });
        Progress {
            bar,
            seen: [0; LIVE_BUCKETS],
        }
    }

    /// The p99 of the samples fed since the last call.
    pub fn p99_since_last(&mut self, latency: &LiveLatency) -> Option<u64> {
        let now = latency.counts();
        let delta: Vec<u64> = now
            .iter()
            .zip(&self.seen)
            .map(|(n, s)| n.saturating_sub(*s))
            .collect();
        self.seen = now;
        quantile(&delta, 0.99)
    }

    /// Shows one second's line.
    pub fn show(&self, line: &Line) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(line.authenticated);
                bar.set_message(line.to_string());
            }
            None => eprintln!("loadtest {line}"),
        }
    }

    /// Clears the bar (the summary follows).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_within_a_quarter() {
        let mut last = 0;
        for us in 0..100_000u64 {
            let b = bucket(us);
            assert!(b == last || b == last + 1, "{us}: {b} after {last}");
            assert!(bucket_top(b) >= us, "{us} above the top of its bucket");
            assert!(bucket_top(b) as f64 <= us as f64 * 1.25 + 1.0, "{us}");
            last = b;
        }
        assert_eq!(bucket(u64::from(u32::MAX)), LIVE_BUCKETS - 1);
        assert_eq!(bucket(u64::MAX), LIVE_BUCKETS - 1);
        assert_eq!(bucket_top(LIVE_BUCKETS - 1), u64::from(u32::MAX));
    }

    #[test]
    fn p99_of_the_last_second() {
        let live = LiveLatency::default();
        let mut progress = Progress {
            bar: None,
            seen: [0; LIVE_BUCKETS],
        };
        assert_eq!(progress.p99_since_last(&live), None);
        let mut pending = [0u64; LIVE_BUCKETS];
        pending[bucket(1_000)] += 990;
        pending[bucket(50_000)] += 10;
        live.add(&mut pending);
        assert!(pending.iter().all(|&c| c == 0), "added and zeroed");
        let p99 = progress.p99_since_last(&live).unwrap();
        assert!((1_000..1_250).contains(&p99), "{p99}");
        // The next second sees only what came after.
        pending[bucket(40_000)] += 5;
        live.add(&mut pending);
        let p99 = progress.p99_since_last(&live).unwrap();
        assert!((40_000..50_000).contains(&p99), "{p99}");
        assert_eq!(progress.p99_since_last(&live), None);
    }

    #[test]
    fn the_line_keeps_the_figures() {
        let base = Snapshot {
            attempted: 10,
            ..Snapshot::default()
        };
        let last = Snapshot {
            messages: 100,
            ..base
        };
        let now = Snapshot {
            attempted: 110,
            authenticated: 90,
            open: 95,
            messages: 400,
            errors: 3,
            closed_by_server: 1,
            ..base
        };
        let line = Line::of(Duration::from_secs(7), 100, &base, &last, &now, Some(1_500));
        assert_eq!(
            line.to_string(),
            "    7s  conns 100/100 auth 90 open 95  msgs/s 300  msgs 400  p99 ~1.5ms  errors 3  closed 1"
        );
        let storm = Snapshot {
            reconnecting: 4,
            ..now
        };
        let line = Line::of(Duration::from_secs(8), 100, &base, &now, &storm, None);
        assert!(
            line.to_string()
                .ends_with("msgs/s 0  msgs 400  p99 -  errors 3  closed 1  reconnecting 4"),
            "{line}"
        );
        assert_eq!(show_us(999), "999us");
        assert_eq!(show_us(2_500_000), "2.50s");
    }
}
