//! The room batcher: collects each active room's messages into one batch of goim inner frames
//! and says when to flush it: when it holds `room_batch` messages or `room_batch_bytes` bytes,
//! or `room_linger` after its first message (goim: 20 messages or 1 s; here milliseconds).
//! A flushed room is forgotten, so idle rooms hold nothing.
//!
//! Pure: the caller passes the time in, so tests drive it without clocks.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use protocol::frame;

use crate::queue::Done;

/// One room's batch, ready to send.
pub struct Flush {
    pub room: String,
    /// Concatenated goim inner frames (ver 1, the message's op, seq 0, its body).
    pub frames: Vec<u8>,
    pub count: usize,
    /// The messages' completion tokens: dropped once every gateway has the batch.
    pub dones: Vec<Done>,
}

struct Pending {
    frames: Vec<u8>,
    count: usize,
    first: Instant,
    dones: Vec<Done>,
}

/// Batches for every room with pending messages.
pub struct Batcher {
    rooms: HashMap<String, Pending>,
    /// Rooms in the order their batches started (the linger is the same for all, so this is
    /// deadline order). Entries whose batch was already flushed are skipped.
    order: VecDeque<(Instant, String)>,
    max_count: usize,
    max_bytes: usize,
    linger: Duration,
}

impl Batcher {
    pub fn new(max_count: usize, max_bytes: usize, linger: Duration) -> Batcher {
        Batcher {
            rooms: HashMap::new(),
            order: VecDeque::new(),
            max_count: max_count.max(1),
            max_bytes,
            linger,
        }
    }

    /// Adds a message; returns the room's batch when this message completes it.
    pub fn add(
        &mut self,
        room: &str,
        op: i32,
        body: &[u8],
        done: Done,
        now: Instant,
    ) -> Option<Flush> {
        let p = match self.rooms.get_mut(room) {
            Some(p) => p,
            None => {
                self.order.push_back((now, room.to_string()));
                self.rooms.entry(room.to_string()).or_insert(Pending {
                    frames: Vec::with_capacity(frame::HEADER_LEN + body.len()),
                    count: 0,
                    first: now,
                    dones: Vec::new(),
                })
            }
        };
        frame::encode(&mut p.frames, frame::PUSH_VER, op, 0, body);
        p.count += 1;
        p.dones.push(done);
        if p.count >= self.max_count || p.frames.len() >= self.max_bytes {
            return self.take(room);
        }
        None
    }

    fn take(&mut self, room: &str) -> Option<Flush> {
        let (room, p) = self.rooms.remove_entry(room)?;
        Some(Flush {
            room,
            frames: p.frames,
            count: p.count,
            dones: p.dones,
        })
    }

    /// When the oldest pending batch is due, if any.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some((start, room)) = self.order.front() {
            match self.rooms.get(room) {
                Some(p) if p.first == *start => return Some(*start + self.linger),
                _ => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    /// Batches whose linger has passed at `now`, oldest first.
    pub fn due(&mut self, now: Instant) -> Vec<Flush> {
        let mut out = Vec::new();
        while let Some(deadline) = self.next_deadline() {
            if deadline > now {
                break;
            }
            if let Some((_, room)) = self.order.pop_front()
                && let Some(f) = self.take(&room)
            {
                out.push(f);
            }
        }
        out
    }

    /// Every pending batch, oldest first.
    pub fn all(&mut self) -> Vec<Flush> {
        self.due(Instant::now() + self.linger + Duration::from_secs(3600))
    }

    /// Rooms with pending messages.
    pub fn active(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batcher(count: usize, bytes: usize, ms: u64) -> Batcher {
        Batcher::new(count, bytes, Duration::from_millis(ms))
    }

    #[test]
    fn flushes_on_count_keeping_order() {
        let t = Instant::now();
        let mut b = batcher(3, 1 << 20, 10);
        assert!(b.add("r", 1000, b"a", Done::none(), t).is_none());
        assert!(b.add("r", 1001, b"b", Done::none(), t).is_none());
        let f = b.add("r", 1002, b"c", Done::none(), t).unwrap();
        assert_eq!(f.count, 3);
        let mut frames = Vec::new();
        for (op, body) in [(1000, b"a"), (1001, b"b"), (1002, b"c")] {
            frame::encode(&mut frames, 1, op, 0, body);
        }
        assert_eq!(f.frames, frames);
        assert_eq!(b.active(), 0);
        assert!(b.next_deadline().is_none());
    }

    #[test]
    fn flushes_on_bytes() {
        let t = Instant::now();
        let mut b = batcher(100, 40, 10);
        assert!(b.add("r", 1, &[0; 10], Done::none(), t).is_none());
        let f = b.add("r", 1, &[0; 10], Done::none(), t).unwrap();
        assert_eq!((f.count, f.frames.len()), (2, 52));
    }

    #[test]
    fn flushes_after_the_linger_oldest_first() {
        let t = Instant::now();
        let mut b = batcher(100, 1 << 20, 10);
        b.add("a", 1, b"1", Done::none(), t);
        b.add("b", 1, b"2", Done::none(), t + Duration::from_millis(4));
        b.add("a", 1, b"3", Done::none(), t + Duration::from_millis(5));
        assert_eq!(b.next_deadline(), Some(t + Duration::from_millis(10)));
        assert!(b.due(t + Duration::from_millis(9)).is_empty());
        let f = b.due(t + Duration::from_millis(10));
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].room.as_str(), f[0].count), ("a", 2));
        assert_eq!(b.next_deadline(), Some(t + Duration::from_millis(14)));
        let f = b.due(t + Duration::from_millis(20));
        assert_eq!(f[0].room, "b");
        assert_eq!(b.active(), 0);
    }

    #[test]
    fn a_room_flushed_by_count_then_restarted_gets_its_own_deadline() {
        let t = Instant::now();
        let mut b = batcher(1, 1 << 20, 10);
        assert!(b.add("a", 1, b"x", Done::none(), t).is_some());
        let mut b2 = batcher(2, 1 << 20, 10);
        b2.add("a", 1, b"x", Done::none(), t);
        b2.add("a", 1, b"x", Done::none(), t); // flushed by count
        b2.add("a", 1, b"y", Done::none(), t + Duration::from_millis(7));
        // The stale entry (t) is skipped; the new batch is due at t+17.
        assert_eq!(b2.next_deadline(), Some(t + Duration::from_millis(17)));
        assert!(b.next_deadline().is_none());
    }

    #[test]
    fn all_flushes_everything() {
        let t = Instant::now();
        let mut b = batcher(100, 1 << 20, 1000);
        b.add("a", 1, b"1", Done::none(), t);
        b.add("b", 1, b"2", Done::none(), t);
        assert_eq!(b.all().len(), 2);
        assert_eq!(b.active(), 0);
    }
}
