//! The run's latency second by second. Besides its whole-run histogram, each worker keeps a
//! small histogram for the second the samples arrive in (counted from the run's start on the
//! wall clock, which every worker is given, so all agree on what "second 12" is) and packs it
//! into (value, count) pairs when the next second begins. The report shows each second's
//! percentiles; an `--agent` report carries the pairs so `merge` can add several testers'
//! seconds.
//!
//! Memory: one live histogram per worker, plus 8 bytes per distinct bucket (two significant
//! digits) of each finished second; seconds past [`MAX_SECONDS`] count in the whole-run
//! histogram only.

use std::borrow::Cow;
use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds of a run that get their own histogram (a day).
pub const MAX_SECONDS: u32 = 86_400;
/// Precision of the per-second histograms (the whole run's has three digits).
pub const SECOND_SIGFIG: u8 = 2;
/// Precision of the whole run's histogram.
pub const RUN_SIGFIG: u8 = 3;
/// Latency samples above an hour are clamped (a clock jump, not a delivery).
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A histogram's recorded buckets as `[value, count]` pairs, each value the highest of its
/// bucket (what `merge` reads back).
pub type Pairs = Vec<[u64; 2]>;

/// The whole run's latency histogram (µs, 1 µs to an hour, three significant digits).
pub fn run_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, RUN_SIGFIG)
        .expect("static histogram bounds are valid")
}

/// An empty per-second histogram (auto-resizing: it grows to the largest sample only).
pub fn second_histogram() -> Histogram<u64> {
    Histogram::new(SECOND_SIGFIG).expect("static histogram precision is valid")
}

/// The recorded buckets of `h`.
pub fn pairs(h: &Histogram<u64>) -> Pairs {
    h.iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect()
}

/// Adds `[value, count]` pairs to `h`, values clamped to its range (input from a file: never
/// fails).
pub fn add_pairs(h: &mut Histogram<u64>, pairs: &[[u64; 2]]) {
    for &[value, count] in pairs {
        if count > 0 {
            let value = value.clamp(1, MAX_LATENCY_US);
            // An auto-resizing histogram grows; a bounded one cannot miss a clamped value.
            if h.record_n(value, count).is_err() {
                h.saturating_record_n(value, count);
            }
        }
    }
}

/// One finished second: `(value, count)` of each recorded bucket, sorted by value.
type Packed = Vec<(u32, u32)>;

fn pack(h: &Histogram<u64>) -> Packed {
    h.iter_recorded()
        .map(|v| {
            let value = u32::try_from(v.value_iterated_to()).unwrap_or(u32::MAX);
            (value, u32::try_from(v.count_at_value()).unwrap_or(u32::MAX))
        })
        .collect()
}

/// Adds `b` into `a` (both sorted by value).
fn add_packed(a: &mut Packed, b: &[(u32, u32)]) {
    if a.is_empty() {
        a.extend_from_slice(b);
        return;
    }
    a.extend_from_slice(b);
    a.sort_unstable_by_key(|&(v, _)| v);
    a.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 = kept.1.saturating_add(later.1);
            true
        } else {
            false
        }
    });
}

/// A worker's latency by second of the run.
#[derive(Clone, Debug, Default)]
pub struct Seconds {
    /// The second `live` holds.
    at: u32,
    live: Option<Histogram<u64>>,
    done: BTreeMap<u32, Packed>,
}

impl Seconds {
    /// A sample of `us` microseconds that arrived in second `sec` of the run.
    pub fn record(&mut self, sec: u64, us: u64) {
        let Ok(sec) = u32::try_from(sec) else { return };
        if sec >= MAX_SECONDS {
            return;
        }
        if sec != self.at {
            self.finish();
            self.at = sec;
        }
        let h = self.live.get_or_insert_with(second_histogram);
        // Only fails if the histogram cannot grow that far, which a clamped sample never needs.
        let _ = h.record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Packs the live second away.
    fn finish(&mut self) {
        if let Some(h) = self.live.as_mut().filter(|h| !h.is_empty()) {
            add_packed(self.done.entry(self.at).or_default(), &pack(h));
            h.reset();
        }
    }

    /// Adds another worker's seconds.
    pub fn merge(&mut self, mut o: Seconds) {
        o.finish();
        self.finish();
        for (sec, packed) in o.done {
            add_packed(self.done.entry(sec).or_default(), &packed);
        }
    }

    /// Adds `[value, count]` pairs (an agent report's) to second `sec`.
    pub fn add(&mut self, sec: u64, pairs: &[[u64; 2]]) {
        let Some(at) = u32::try_from(sec).ok().filter(|&s| s < MAX_SECONDS) else {
            return;
        };
        let mut h = second_histogram();
        add_pairs(&mut h, pairs);
        self.merge(Seconds {
            at,
            live: Some(h),
            done: BTreeMap::new(),
        });
    }

    /// The finished seconds, with the live one packed in.
    fn finished(&self) -> Cow<'_, BTreeMap<u32, Packed>> {
        match self.live.as_ref().filter(|h| !h.is_empty()) {
            None => Cow::Borrowed(&self.done),
            Some(h) => {
                let mut done = self.done.clone();
                add_packed(done.entry(self.at).or_default(), &pack(h));
                Cow::Owned(done)
            }
        }
    }

    /// Each second with samples, in order, as a histogram.
    pub fn histograms(&self) -> Vec<(u32, Histogram<u64>)> {
        self.finished()
            .iter()
            .map(|(&sec, packed)| {
                let mut h = second_histogram();
                for &(v, c) in packed {
                    let _ = h.record_n(u64::from(v), u64::from(c));
                }
                (sec, h)
            })
            .collect()
    }

    /// Each second with samples, in order, as `[value, count]` pairs.
    pub fn pairs(&self) -> Vec<(u32, Pairs)> {
        self.finished()
            .iter()
            .map(|(&sec, packed)| {
                let p = packed
                    .iter()
                    .map(|&(v, c)| [u64::from(v), u64::from(c)])
                    .collect();
                (sec, p)
            })
            .collect()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty() && self.live.as_ref().is_none_or(|h| h.is_empty())
    }
}

/// One second in JSON: `{"sec": 12, "histogram": [[value, count], ...]}`.
#[derive(Serialize, Deserialize)]
struct SecondPairs {
    sec: u32,
    histogram: Pairs,
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.pairs()
                .into_iter()
                .map(|(sec, histogram)| SecondPairs { sec, histogram }),
        )
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Seconds, D::Error> {
        let mut s = Seconds::default();
        for p in Vec::<SecondPairs>::deserialize(d)? {
            s.add(u64::from(p.sec), &p.histogram);
        }
        Ok(s)
    }
}

/// Serde for a whole-run histogram as `[value, count]` pairs (`#[serde(with = ...)]`).
pub mod run_pairs {
    use super::*;

    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        pairs(h).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let mut h = run_histogram();
        add_pairs(&mut h, &Pairs::deserialize(d)?);
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_their_second() {
        let mut s = Seconds::default();
        for us in [100, 200, 300] {
            s.record(0, us);
        }
        s.record(2, 5_000);
        // A clock step back: the sample still counts in its own second.
        s.record(0, 400);
        s.record(MAX_SECONDS as u64, 1);
        s.record(u64::MAX, 1);
        let by_sec: Vec<(u32, u64, u64)> = s
            .histograms()
            .iter()
            .map(|(t, h)| (*t, h.len(), h.max()))
            .collect();
        assert_eq!(by_sec.len(), 2, "{by_sec:?}");
        assert_eq!((by_sec[0].0, by_sec[0].1), (0, 4));
        assert!((400..=404).contains(&by_sec[0].2), "{by_sec:?}");
        assert_eq!((by_sec[1].0, by_sec[1].1), (2, 1));
    }

    #[test]
    fn workers_and_agents_add_up() {
        let mut a = Seconds::default();
        let mut b = Seconds::default();
        for i in 0..1000 {
            a.record(1, 1_000 + i);
            b.record(1, 1_000 + i);
            b.record(3, 50);
        }
        a.merge(b);
        let p = a.pairs();
        assert_eq!(p.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 3]);
        let count = |pairs: &Pairs| pairs.iter().map(|[_, c]| c).sum::<u64>();
        assert_eq!(count(&p[0].1), 2000);
        assert_eq!(count(&p[1].1), 1000);
        // Pairs read back give the same histogram.
        let mut c = Seconds::default();
        for (sec, pairs) in &p {
            c.add(u64::from(*sec), pairs);
        }
        assert_eq!(c.pairs(), p);
        // And through JSON.
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.starts_with(r#"[{"sec":1,"histogram":[["#), "{json}");
        let back: Seconds = serde_json::from_str(&json).unwrap();
        assert_eq!(back.pairs(), p);
        assert!(!back.is_empty() && Seconds::default().is_empty());
        let mut h = run_histogram();
        add_pairs(&mut h, &[[0, 3], [u64::MAX, 1], [500, 0]]);
        assert_eq!(h.len(), 4);
    }
}
