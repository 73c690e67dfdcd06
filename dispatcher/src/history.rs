//! Room history: the last messages of each room, numbered with per-room offsets, for clients
//! that come back after a short absence (op 26 through a gateway, or
//! `GET /goim/room/history`).
//!
//! The job numbers a room batch when it flushes it ([`History::record`]: the `seq` of each
//! goim frame becomes the room's next offset) and keeps the frames, sharing the batch's buffer.
//! A room keeps at most `history.messages` messages, none older than `history.max_age_ms`, and
//! all rooms together at most `history.max_bytes`; past any bound the oldest go first. A room
//! whose messages have all gone stays known (its newest offset) until it has been idle for
//! twice `max_age_ms`, so a client that missed nothing is told so.
//!
//! Offsets are contiguous per room, so "what came after `since`" is the last
//! `newest - since` messages: found when the history still holds that many, else too old. A
//! room's first offset in this process is random ([`protocol::history`]), so an offset from
//! before a restart is answered as unknown, not with other messages.
//!
//! Pure: the caller passes the time in.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::history;

use crate::config::HistoryConfig;

/// One room's log.
struct RoomLog {
    /// The first offset given in this process.
    base: u32,
    /// The next offset to give.
    next: u32,
    /// (offset, when recorded, the whole inner frame), oldest first, contiguous offsets.
    msgs: VecDeque<(u32, Instant, Bytes)>,
    last_record: Instant,
}

impl RoomLog {
    fn newest(&self) -> u32 {
        self.next.wrapping_sub(1)
    }
}

/// What the history holds after an offset.
#[derive(Debug, PartialEq)]
pub enum Since {
    /// Every message after the offset, in order (maybe none), and the room's newest offset.
    Found { frames: Vec<Bytes>, newest: u32 },
    /// The messages after the offset are no longer (or were never) in this history.
    TooOld { detail: String, newest: u32 },
    /// No history is held for the room.
    Unknown,
}

/// Every room's history.
pub struct History {
    messages: usize,
    max_age: Duration,
    max_bytes: usize,
    rooms: HashMap<Arc<str>, RoomLog>,
    /// Every held message in record order: (when, room, offset, bytes). An entry whose message
    /// already left its room (the per-room count bound) is skipped when it comes up, and such
    /// entries are swept out whenever they outnumber the messages held.
    order: VecDeque<(Instant, Arc<str>, u32, usize)>,
    bytes: usize,
    /// Messages held over all rooms.
    held: usize,
    seed: std::collections::hash_map::RandomState,
    /// Room logs made so far: mixed into each new room's first offset, so a room forgotten
    /// and made again does not start where it started before.
    made: u64,
    last_sweep: Option<Instant>,
}

impl History {
    pub fn new(cfg: &HistoryConfig) -> History {
        History {
            messages: cfg.messages,
            max_age: Duration::from_millis(cfg.max_age_ms),
            max_bytes: cfg.max_bytes,
            rooms: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            held: 0,
            seed: std::collections::hash_map::RandomState::new(),
            made: 0,
            last_sweep: None,
        }
    }

    /// Numbers a flushed room batch (goim inner frames) with the room's next offsets, keeps its
    /// messages, and returns the numbered frames to send. With history off (`messages = 0`)
    /// the frames are still numbered, so clients can see gaps.
    pub fn record(
        &mut self,
        room: &str,
        mut frames: Vec<u8>,
        now: Instant,
    ) -> protocol::Result<Bytes> {
        use std::hash::BuildHasher;
        let key: Arc<str> = match self.rooms.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => {
                self.made += 1;
                let base = self.seed.hash_one((room, self.made)) as u32;
                let key: Arc<str> = Arc::from(room);
                self.rooms.insert(
                    key.clone(),
                    RoomLog {
                        base,
                        next: base,
                        msgs: VecDeque::new(),
                        last_record: now,
                    },
                );
                key
            }
        };
        let log = self.rooms.get_mut(&key).expect("just found or made");
        let first = log.next;
        let n = history::number_frames(&mut frames, first)?;
        log.next = first.wrapping_add(n);
        log.last_record = now;
        let frames = Bytes::from(frames);
        if self.messages == 0 {
            // Nothing kept, but rooms are still forgotten once idle.
            self.expire(now);
            return Ok(frames);
        }
        for (offset, range) in history::offsets(&frames)? {
            let len = range.len();
            log.msgs.push_back((offset, now, frames.slice(range)));
            self.order.push_back((now, key.clone(), offset, len));
            self.bytes += len;
            self.held += 1;
            if log.msgs.len() > self.messages
                && let Some((_, _, gone)) = log.msgs.pop_front()
            {
                self.bytes -= gone.len();
                self.held -= 1;
            }
        }
        self.expire(now);
        if self.order.len() > 2 * self.held + 1024 {
            self.compact();
        }
        Ok(frames)
    }

    /// Drops the order entries of messages no longer held (amortised: run when they outnumber
    /// the held ones, so the order queue stays within twice the messages held).
    fn compact(&mut self) {
        let rooms = &self.rooms;
        self.order.retain(|(_, room, offset, _)| {
            rooms
                .get(room)
                .and_then(|log| log.msgs.front())
                .is_some_and(|(front, _, _)| !history::after(*front, *offset))
        });
    }

    /// Drops messages past the age and byte bounds, and rooms idle and empty past the age.
    pub fn expire(&mut self, now: Instant) {
        while let Some((at, room, offset, _)) = self.order.front() {
            let old = now.saturating_duration_since(*at) > self.max_age;
            if !old && self.bytes <= self.max_bytes {
                break;
            }
            if let Some(log) = self.rooms.get_mut(room)
                && log.msgs.front().is_some_and(|(o, _, _)| o == offset)
                && let Some((_, _, gone)) = log.msgs.pop_front()
            {
                self.bytes -= gone.len();
                self.held -= 1;
            }
            self.order.pop_front();
        }
        // Rooms with nothing held and nothing recorded for twice the age are forgotten (looked
        // at every quarter of the age, not on every record).
        let every = self.max_age / 4;
        if self
            .last_sweep
            .is_none_or(|at| now.saturating_duration_since(at) >= every)
        {
            self.last_sweep = Some(now);
            let idle = self.max_age * 2;
            self.rooms.retain(|_, log| {
                !log.msgs.is_empty() || now.saturating_duration_since(log.last_record) <= idle
            });
        }
    }

    /// What came to `room` after offset `since`.
    pub fn since(&self, room: &str, since: u32) -> Since {
        let Some(log) = self.rooms.get(room) else {
            return Since::Unknown;
        };
        let newest = log.newest();
        let behind = newest.wrapping_sub(since);
        if behind == 0 {
            return Since::Found {
                frames: Vec::new(),
                newest,
            };
        }
        if !history::after(newest, since) {
            return Since::TooOld {
                detail: format!(
                    "offset {since} is ahead of room {room}'s newest offset {newest}: it is from before a restart of the history"
                ),
                newest,
            };
        }
        let given = log.next.wrapping_sub(log.base);
        if behind > given {
            return Since::TooOld {
                detail: format!(
                    "offset {since} is older than room {room}'s history, which starts at offset {}: it is from before a restart of the history",
                    log.base
                ),
                newest,
            };
        }
        let held = log.msgs.len();
        if behind as usize > held {
            let kept = match log.msgs.front() {
                Some((oldest, _, _)) => format!("it keeps offsets {oldest}..{newest}"),
                None => "it keeps none of its messages now".to_string(),
            };
            return Since::TooOld {
                detail: format!(
                    "{} messages of room {room} after offset {since} are gone from the history ({kept}; at most {} messages, at most {:?} old)",
                    behind as usize - held,
                    self.messages,
                    self.max_age
                ),
                newest,
            };
        }
        let frames = log
            .msgs
            .iter()
            .skip(held - behind as usize)
            .map(|(_, _, f)| f.clone())
            .collect();
        Since::Found { frames, newest }
    }

    /// Every message `room` holds: (offset, whole inner frame), oldest first, and the newest
    /// offset; `None` when the room is unknown.
    pub fn all(&self, room: &str) -> Option<(Vec<(u32, Bytes)>, u32)> {
        let log = self.rooms.get(room)?;
        Some((
            log.msgs.iter().map(|(o, _, f)| (*o, f.clone())).collect(),
            log.newest(),
        ))
    }

    /// Forgets every room (a Kafka rebalance moved partitions: rooms this dispatcher no longer
    /// batches must not be answered from here, and those it still batches start afresh, with
    /// new first offsets, so clients are told their offsets are from before a restart).
    pub fn clear(&mut self) {
        self.rooms.clear();
        self.order.clear();
        self.bytes = 0;
        self.held = 0;
    }

    /// Bytes of message frames held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Rooms known.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Messages held over all rooms.
    pub fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::frame;

    fn cfg(messages: usize, max_age_ms: u64, max_bytes: usize) -> HistoryConfig {
        HistoryConfig {
            messages,
            max_age_ms,
            max_bytes,
        }
    }

    fn batch(bodies: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            frame::encode(&mut out, 1, 1000, 0, b.as_bytes());
        }
        out
    }

    fn bodies(frames: &[Bytes]) -> Vec<String> {
        frames
            .iter()
            .map(|f| String::from_utf8_lossy(&f[frame::HEADER_LEN..]).into_owned())
            .collect()
    }

    fn offsets(frames: &Bytes) -> Vec<u32> {
        history::offsets(frames)
            .unwrap()
            .into_iter()
            .map(|(o, _)| o)
            .collect()
    }

    #[test]
    fn batches_are_numbered_contiguously_and_recovered_in_order() {
        let t = Instant::now();
        let mut h = History::new(&cfg(100, 60_000, 1 << 20));
        let a = h.record("r", batch(&["a", "b"]), t).unwrap();
        let b = h.record("r", batch(&["c"]), t).unwrap();
        let o = offsets(&a);
        assert_eq!(o[1], o[0].wrapping_add(1));
        assert_eq!(offsets(&b), vec![o[0].wrapping_add(2)]);
        let Since::Found { frames, newest } = h.since("r", o[0]) else {
            panic!()
        };
        assert_eq!(bodies(&frames), vec!["b", "c"]);
        assert_eq!(newest, o[0].wrapping_add(2));
        assert_eq!(
            h.since("r", newest),
            Since::Found {
                frames: vec![],
                newest
            }
        );
        // Just before the first offset: everything.
        let Since::Found { frames, .. } = h.since("r", o[0].wrapping_sub(1)) else {
            panic!()
        };
        assert_eq!(bodies(&frames), vec!["a", "b", "c"]);
        assert_eq!(h.since("other", 1), Since::Unknown);
    }

    #[test]
    fn rooms_start_at_different_offsets() {
        let t = Instant::now();
        let mut h = History::new(&cfg(10, 60_000, 1 << 20));
        let firsts: std::collections::HashSet<u32> = (0..20)
            .map(|i| offsets(&h.record(&format!("r{i}"), batch(&["x"]), t).unwrap())[0])
            .collect();
        assert!(firsts.len() > 15, "{firsts:?}");
    }

    #[test]
    fn past_the_count_the_oldest_go_and_a_long_absence_is_too_old() {
        let t = Instant::now();
        let mut h = History::new(&cfg(3, 60_000, 1 << 20));
        let first = offsets(&h.record("r", batch(&["1", "2", "3", "4", "5"]), t).unwrap())[0];
        // Holds 3, 4, 5.
        let Since::Found { frames, .. } = h.since("r", first.wrapping_add(1)) else {
            panic!()
        };
        assert_eq!(bodies(&frames), vec!["3", "4", "5"]);
        let Since::TooOld { detail, .. } = h.since("r", first) else {
            panic!()
        };
        assert!(detail.contains("1 messages of room r"), "{detail}");
        assert!(detail.contains("keeps offsets"), "{detail}");
        // From "before a restart": ahead, or older than the start.
        let Since::TooOld { detail, .. } = h.since("r", first.wrapping_add(100)) else {
            panic!()
        };
        assert!(detail.contains("ahead"), "{detail}");
        let Since::TooOld { detail, .. } = h.since("r", first.wrapping_sub(10)) else {
            panic!()
        };
        assert!(detail.contains("older than room r's history"), "{detail}");
        assert_eq!(h.bytes(), 3 * 17);
    }

    #[test]
    fn past_the_age_messages_go_and_the_room_is_forgotten_later() {
        let t = Instant::now();
        let mut h = History::new(&cfg(100, 1_000, 1 << 20));
        let first = offsets(&h.record("r", batch(&["1", "2"]), t).unwrap())[0];
        h.record("r", batch(&["3"]), t + Duration::from_millis(900))
            .unwrap();
        h.expire(t + Duration::from_millis(1_500));
        let Since::TooOld { .. } = h.since("r", first) else {
            panic!()
        };
        let Since::Found { frames, .. } = h.since("r", first.wrapping_add(1)) else {
            panic!()
        };
        assert_eq!(bodies(&frames), vec!["3"]);
        h.expire(t + Duration::from_millis(2_000));
        // All gone, the room still known: nothing missed is still an answer.
        assert_eq!(h.bytes(), 0);
        assert!(matches!(
            h.since("r", first.wrapping_add(2)),
            Since::Found { .. }
        ));
        assert!(matches!(h.since("r", first), Since::TooOld { .. }));
        h.expire(t + Duration::from_millis(3_000));
        assert_eq!(h.since("r", first), Since::Unknown);
        assert_eq!(h.rooms(), 0);
    }

    #[test]
    fn past_the_byte_bound_the_oldest_of_all_rooms_go() {
        let t = Instant::now();
        let mut h = History::new(&cfg(100, 60_000, 3 * 17));
        let a = offsets(&h.record("a", batch(&["1", "2"]), t).unwrap())[0];
        let b = offsets(&h.record("b", batch(&["3", "4"]), t).unwrap())[0];
        assert_eq!(h.bytes(), 3 * 17);
        assert!(matches!(
            h.since("a", a.wrapping_sub(1)),
            Since::TooOld { .. }
        ));
        let Since::Found { frames, .. } = h.since("b", b.wrapping_sub(1)) else {
            panic!()
        };
        assert_eq!(bodies(&frames), vec!["3", "4"]);
    }

    #[test]
    fn bookkeeping_stays_within_twice_what_is_held() {
        let t = Instant::now();
        let mut h = History::new(&cfg(10, 3_600_000, 1 << 30));
        for i in 0..100_000 {
            h.record(&format!("r{}", i % 7), batch(&["x", "y"]), t)
                .unwrap();
        }
        assert_eq!(h.held(), 70);
        assert_eq!(h.bytes(), 70 * 17);
        assert!(h.order.len() <= 2 * 70 + 1024 + 2, "{}", h.order.len());
        // What is held still recovers in order.
        let Some((msgs, newest)) = h.all("r3") else {
            panic!()
        };
        assert_eq!(msgs.len(), 10);
        assert_eq!(msgs[9].0, newest);
    }

    #[test]
    fn a_room_forgotten_and_made_again_starts_elsewhere() {
        let t = Instant::now();
        let mut h = History::new(&cfg(10, 1_000, 1 << 20));
        let first = offsets(&h.record("r", batch(&["a"]), t).unwrap())[0];
        h.expire(t + Duration::from_secs(10));
        assert_eq!(h.since("r", first), Since::Unknown);
        let again = offsets(
            &h.record("r", batch(&["b"]), t + Duration::from_secs(10))
                .unwrap(),
        )[0];
        assert_ne!(again, first);
        assert!(matches!(h.since("r", first), Since::TooOld { .. }));
        h.clear();
        assert_eq!((h.rooms(), h.held(), h.bytes()), (0, 0, 0));
        assert_eq!(h.since("r", again), Since::Unknown);
    }

    #[test]
    fn off_still_numbers_but_keeps_nothing() {
        let t = Instant::now();
        let mut h = History::new(&cfg(0, 60_000, 1 << 20));
        let f = h.record("r", batch(&["1", "2"]), t).unwrap();
        let o = offsets(&f);
        assert_eq!(o[1], o[0].wrapping_add(1));
        assert_eq!(h.bytes(), 0);
        assert!(matches!(h.since("r", o[0]), Since::TooOld { .. }));
    }

    #[test]
    fn malformed_frames_are_refused() {
        let mut h = History::new(&cfg(10, 60_000, 1 << 20));
        let mut f = batch(&["abc"]);
        f.pop();
        assert!(h.record("r", f, Instant::now()).is_err());
    }
}
