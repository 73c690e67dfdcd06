//! A fixed-bucket histogram with atomic counters, for the dispatcher's Prometheus histograms
//! (queue produce latency, messages per room batch). Observing costs a bucket search over a
//! few bounds and three relaxed atomic adds; there is no lock and no allocation.
//!
//! Hand-written rather than `prometheus-client` or `hdrhistogram`: the dispatcher renders its
//! own exposition (counters as plain atomics), it needs two histograms with fixed buckets, and
//! `hdrhistogram` records exact values that Prometheus cannot take without a fixed bucket
//! layout anyway.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency bounds in microseconds: 50 µs to 10 s (rendered in seconds).
pub const LATENCY_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Messages per room batch.
pub const BATCH_MESSAGES: [u64; 13] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000,
];

/// How observed values are rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Observed in microseconds, rendered in seconds.
    Micros,
    /// Rendered as observed.
    Count,
}

/// A histogram over fixed upper bounds (`le`), the last bucket `+Inf`.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    unit: Unit,
    /// Observations per bucket (not cumulative), `bounds.len() + 1` of them.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64], unit: Unit) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Histogram {
            bounds,
            unit,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one value (microseconds for [`Unit::Micros`]).
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Records a duration ([`Unit::Micros`]).
    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Appends the family (`# HELP`, `# TYPE`, then cumulative `_bucket`s, `_sum` and
    /// `_count`, `+Inf` equal to `_count`).
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(&b) => self.fmt(b),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {acc}");
        }
        let sum = self.fmt(self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {acc}");
    }

    fn fmt(&self, v: u64) -> String {
        match self.unit {
            Unit::Count => v.to_string(),
            Unit::Micros => {
                let (s, frac) = (v / 1_000_000, v % 1_000_000);
                if frac == 0 {
                    s.to_string()
                } else {
                    format!("{s}.{}", format!("{frac:06}").trim_end_matches('0'))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .to_string()
    }

    #[test]
    fn buckets_are_upper_inclusive_cumulative_and_end_at_the_count() {
        let h = Histogram::new(&BATCH_MESSAGES, Unit::Count);
        for v in [1, 1, 2, 3, 20, 10_000, 10_001] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "b", "messages per batch");
        assert!(out.starts_with("# HELP b messages per batch\n# TYPE b histogram\n"));
        assert_eq!(sample(&out, "b_bucket{le=\"1\"}"), "2");
        assert_eq!(sample(&out, "b_bucket{le=\"2\"}"), "3");
        assert_eq!(sample(&out, "b_bucket{le=\"5\"}"), "4");
        assert_eq!(sample(&out, "b_bucket{le=\"20\"}"), "5");
        assert_eq!(sample(&out, "b_bucket{le=\"10000\"}"), "6");
        assert_eq!(sample(&out, "b_bucket{le=\"+Inf\"}"), "7");
        assert_eq!(sample(&out, "b_count"), "7");
        assert_eq!(sample(&out, "b_sum"), "20028");
        let buckets: Vec<u64> = out
            .lines()
            .filter(|l| l.starts_with("b_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), BATCH_MESSAGES.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(h.count(), 7);
    }

    #[test]
    fn latency_renders_in_seconds() {
        let h = Histogram::new(&LATENCY_US, Unit::Micros);
        h.observe_duration(std::time::Duration::from_micros(1_400));
        h.observe(50);
        h.observe(20_000_000);
        let mut out = String::new();
        h.render(&mut out, "p_seconds", "produce");
        assert_eq!(sample(&out, "p_seconds_bucket{le=\"0.00005\"}"), "1");
        assert_eq!(sample(&out, "p_seconds_bucket{le=\"0.001\"}"), "1");
        assert_eq!(sample(&out, "p_seconds_bucket{le=\"0.0025\"}"), "2");
        assert_eq!(sample(&out, "p_seconds_bucket{le=\"10\"}"), "2");
        assert_eq!(sample(&out, "p_seconds_bucket{le=\"+Inf\"}"), "3");
        assert_eq!(sample(&out, "p_seconds_sum"), "20.00145");
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = std::sync::Arc::new(Histogram::new(&LATENCY_US, Unit::Micros));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.observe(i * (t + 1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.count(), 40_000);
    }
}
