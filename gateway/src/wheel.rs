//! A timing wheel for connection deadlines (handshake, heartbeat, drain): one entry per
//! connection, no timer per connection.
//!
//! Deadlines are lazy: a connection keeps its current deadline in its own state and sits in the
//! wheel at most once. When its slot comes round, the shard checks the connection's deadline:
//! past → expire; later (a heartbeat moved it) → put it back at the new deadline. Deadlines
//! further away than one turn of the wheel simply come round more than once.

/// Entry: a connection handle and its generation.
pub type Entry = (u32, u16);

pub struct Wheel {
    slots: Vec<Vec<Entry>>,
    tick_ms: u64,
    /// Next tick to fire.
    next_tick: u64,
}

impl Wheel {
    pub fn new(slots: usize, tick_ms: u64) -> Wheel {
        Wheel {
            slots: (0..slots).map(|_| Vec::new()).collect(),
            tick_ms,
            next_tick: 0,
        }
    }

    /// Files an entry to fire at (or just after) `deadline_ms`.
    pub fn insert(&mut self, entry: Entry, deadline_ms: u64) {
        let tick = (deadline_ms.div_ceil(self.tick_ms)).max(self.next_tick);
        let idx = (tick % self.slots.len() as u64) as usize;
        self.slots[idx].push(entry);
    }

    /// Moves every entry whose slot has come round by `now_ms` into `out`.
    pub fn advance(&mut self, now_ms: u64, out: &mut Vec<Entry>) {
        let now_tick = now_ms / self.tick_ms;
        let turns = (now_tick + 1).saturating_sub(self.next_tick);
        let steps = turns.min(self.slots.len() as u64);
        for i in 0..steps {
            let idx = ((self.next_tick + i) % self.slots.len() as u64) as usize;
            // Take the slot's storage too: a slot that held a burst of connections (a connect
            // storm lands them all in a few ticks) must not keep that capacity.
            out.extend(std::mem::take(&mut self.slots[idx]));
        }
        self.next_tick = self.next_tick.max(now_tick + 1);
    }

    /// Milliseconds from `now_ms` until the next tick fires.
    pub fn until_next(&self, now_ms: u64) -> u64 {
        (self.next_tick * self.tick_ms).saturating_sub(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fire_on_their_tick_and_not_before() {
        let mut w = Wheel::new(16, 100);
        let mut out = Vec::new();
        w.insert((1, 0), 250);
        w.insert((2, 0), 1000);
        w.advance(200, &mut out);
        assert!(out.is_empty());
        w.advance(300, &mut out);
        assert_eq!(out, vec![(1, 0)]);
        out.clear();
        w.advance(999, &mut out);
        assert!(out.is_empty());
        w.advance(1000, &mut out);
        assert_eq!(out, vec![(2, 0)]);
    }

    #[test]
    fn far_deadlines_come_round_early_and_past_ones_fire_next() {
        let mut w = Wheel::new(4, 10);
        let mut out = Vec::new();
        w.insert((1, 0), 1_000);
        w.advance(100, &mut out);
        assert_eq!(out, vec![(1, 0)], "fires early; the shard re-files it");
        out.clear();
        w.insert((2, 0), 0);
        w.advance(110, &mut out);
        assert_eq!(out, vec![(2, 0)]);
        assert!(w.until_next(110) <= 10);
    }
}
