//! Loss and order checks on pushed messages whose body starts with `{"seq":<u64>,"ts":<unix
//! micros>...}`: per connection the last seq seen, so gaps (missing seqs), duplicates and
//! reorders are counted, and now - ts is a latency sample.
//!
//! Each connection is in one room, so one counter of seqs per room (what a publisher writes)
//! is one sequence per connection. A seq below the last one is a reorder; it also fills one of
//! the gaps counted when the jump over it was seen (without a per-connection bitmap a late
//! message and a duplicate of an old one cannot be told apart; both count as reorders).

use serde::Serialize;

const PREFIX: &[u8] = br#"{"seq":"#;

/// What a seq body carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    /// Unix time in microseconds when it was published, if the body has `"ts"` right after.
    pub ts_us: Option<u64>,
}

/// Parses a message body. `None`: not a seq body (counted as a plain message); `Some(Err)`: it
/// starts like one but is malformed.
pub fn parse(body: &[u8]) -> Option<Result<Stamp, String>> {
    let rest = body.strip_prefix(PREFIX)?;
    Some(parse_fields(rest))
}

fn parse_fields(rest: &[u8]) -> Result<Stamp, String> {
    let (seq, rest) = number(skip_ws(rest)).ok_or("\"seq\" is not an unsigned integer")?;
    let rest = skip_ws(rest);
    let ts_us = match rest.strip_prefix(b",") {
        Some(after) => match skip_ws(after).strip_prefix(br#""ts":"#) {
            Some(ts) => Some(
                number(skip_ws(ts))
                    .ok_or("\"ts\" is not an unsigned integer")?
                    .0,
            ),
            None => None,
        },
        None if rest.starts_with(b"}") => None,
        None => return Err("\"seq\" is followed by neither ',' nor '}'".into()),
    };
    Ok(Stamp { seq, ts_us })
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn number(b: &[u8]) -> Option<(u64, &[u8])> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in &b[..n] {
        v = v.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    Some((v, &b[n..]))
}

/// The body the tests and harnesses publish: `{"seq":N,"ts":now_us}`.
pub fn body(seq: u64, ts_us: u64) -> String {
    format!(r#"{{"seq":{seq},"ts":{ts_us}}}"#)
}

/// Order counters (per thread, then summed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Order {
    /// Messages with a seq body.
    pub checked: u64,
    /// Seqs skipped over (net of late arrivals).
    pub gaps: u64,
    /// The same seq twice in a row.
    pub duplicates: u64,
    /// A seq below the last one.
    pub reorders: u64,
    /// Bodies that start with `{"seq":` but do not parse.
    pub bad_bodies: u64,
}

impl Order {
    /// Checks `seq` against a connection's `last` (None before its first seq body) and moves
    /// it. Returns the gap when `seq` jumps over others: the last seq seen and this one.
    pub fn check(&mut self, last: &mut Option<u64>, seq: u64) -> Option<(u64, u64)> {
        self.checked += 1;
        match *last {
            None => *last = Some(seq),
            Some(l) if seq == l.wrapping_add(1) => *last = Some(seq),
            Some(l) if seq > l => {
                self.gaps += seq - l - 1;
                *last = Some(seq);
                return Some((l, seq));
            }
            Some(l) if seq == l => self.duplicates += 1,
            Some(_) => {
                self.reorders += 1;
                self.gaps = self.gaps.saturating_sub(1);
            }
        }
        None
    }

    pub fn add(&mut self, o: &Order) {
        self.checked += o.checked;
        self.gaps += o.gaps;
        self.duplicates += o.duplicates;
        self.reorders += o.reorders;
        self.bad_bodies += o.bad_bodies;
    }
}

/// Gaps kept for the report, at most this many (the count in [`Order::gaps`] is exact).
pub const MAX_GAP_SAMPLES: usize = 1_000;

/// One gap: connection `conn` saw seq `after`, then seq `next`; the seqs between are missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub conn: u32,
    pub after: u64,
    pub next: u64,
}

impl Gap {
    /// Seqs missing in this gap.
    pub fn missing(&self) -> u64 {
        self.next - self.after - 1
    }
}

/// The first [`MAX_GAP_SAMPLES`] gaps seen (per thread, then merged and sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Gaps {
    pub samples: Vec<Gap>,
    /// Gaps not kept because the list was full.
    pub not_kept: u64,
}

impl Gaps {
    pub fn push(&mut self, g: Gap) {
        if self.samples.len() < MAX_GAP_SAMPLES {
            self.samples.push(g);
        } else {
            self.not_kept += 1;
        }
    }

    pub fn merge(&mut self, o: Gaps) {
        self.not_kept += o.not_kept;
        for g in o.samples {
            self.push(g);
        }
        self.samples.sort_by_key(|g| (g.conn, g.after));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seq_bodies() {
        assert_eq!(
            parse(br#"{"seq":42,"ts":1700000000000000,"pad":"xx"}"#),
            Some(Ok(Stamp {
                seq: 42,
                ts_us: Some(1_700_000_000_000_000)
            }))
        );
        assert_eq!(
            parse(br#"{"seq": 7 }"#),
            Some(Ok(Stamp {
                seq: 7,
                ts_us: None
            }))
        );
        assert_eq!(
            parse(br#"{"seq":7,"other":1}"#),
            Some(Ok(Stamp {
                seq: 7,
                ts_us: None
            }))
        );
        assert_eq!(parse(b"hello"), None);
        assert_eq!(parse(br#"{"test":1}"#), None);
        assert!(parse(br#"{"seq":"x"}"#).unwrap().is_err());
        assert!(
            parse(br#"{"seq":99999999999999999999999}"#)
                .unwrap()
                .is_err()
        );
        assert!(parse(br#"{"seq":1,"ts":-4}"#).unwrap().is_err());
        assert!(parse(br#"{"seq":"#).unwrap().is_err());
        assert_eq!(
            parse(body(3, 9).as_bytes()),
            Some(Ok(Stamp {
                seq: 3,
                ts_us: Some(9)
            }))
        );
    }

    #[test]
    fn counts_gaps_duplicates_and_reorders() {
        let mut o = Order::default();
        let mut last = None;
        let mut gaps = Vec::new();
        for s in [5, 6, 7, 9, 9, 8, 10, 13] {
            gaps.extend(o.check(&mut last, s));
        }
        assert_eq!(gaps, [(7, 9), (10, 13)]);
        // 9 skips 8 (gap), 9 again (duplicate), 8 late (reorder, fills the gap), 13 skips 11, 12
        assert_eq!((o.checked, o.gaps, o.duplicates, o.reorders), (8, 2, 1, 1));
        assert_eq!(last, Some(13));
    }

    #[test]
    fn gap_samples_are_bounded_and_sorted() {
        let mut a = Gaps::default();
        for i in 0..MAX_GAP_SAMPLES as u64 + 5 {
            a.push(Gap {
                conn: 1,
                after: i,
                next: i + 3,
            });
        }
        assert_eq!(a.not_kept, 5);
        let mut b = Gaps::default();
        b.push(Gap {
            conn: 0,
            after: 1,
            next: 3,
        });
        b.merge(a);
        assert_eq!(b.samples[0].conn, 0);
        assert_eq!(b.samples[0].missing(), 1);
        assert_eq!(b.samples.len(), MAX_GAP_SAMPLES);
        assert_eq!(b.not_kept, 6);
    }
}
