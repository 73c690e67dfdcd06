//! A shard's rooms: room key → members (connection handles), and the gateway-wide online count
//! of each room.
//!
//! Members are kept in a vector for a tight fan-out loop; a connection remembers its position in
//! each of its rooms so leaving is O(1) (swap-remove, then fix the moved member's position).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// One room's online counts: members on this gateway, and the cluster total a dispatcher last
/// reported (goim's RenewOnline answer; -1 until one does).
pub struct RoomOnline {
    local: AtomicI32,
    cluster: AtomicI64,
}

impl Default for RoomOnline {
    fn default() -> Self {
        RoomOnline {
            local: AtomicI32::new(0),
            cluster: AtomicI64::new(-1),
        }
    }
}

/// Gateway-wide online count per room, shared by all shards. Touched on join and leave only,
/// never per message.
#[derive(Default)]
pub struct OnlineTable {
    rooms: Mutex<HashMap<Arc<str>, Arc<RoomOnline>>>,
}

impl OnlineTable {
    fn counter(&self, room: &Arc<str>) -> Arc<RoomOnline> {
        let mut map = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(room.clone()).or_default().clone()
    }

    fn release(&self, room: &Arc<str>, counter: Arc<RoomOnline>) {
        let mut map = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        drop(counter);
        if map.get(room).is_some_and(|c| Arc::strong_count(c) == 1) {
            map.remove(room);
        }
    }

    /// Every room with members on this gateway, with its count.
    pub fn snapshot(&self) -> Vec<(String, i32)> {
        let map = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(k, v)| (k.to_string(), v.local.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Records cluster totals reported by a dispatcher, for the rooms this gateway has.
    pub fn set_cluster(&self, counts: &HashMap<String, i32>) {
        let map = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        for (room, n) in counts {
            if let Some(c) = map.get(room.as_str()) {
                c.cluster.store(i64::from(*n), Ordering::Relaxed);
            }
        }
    }
}

pub struct Room {
    pub name: Arc<str>,
    pub members: Vec<u32>,
    online: Arc<RoomOnline>,
    /// Messages sent to this room on this shard since it was made (wrapping), and the offset
    /// of the last of them: a member that joined when `fanned` was `m` has been sent the last
    /// `fanned - m` offsets up to `last` (what a recovery must not send it twice).
    pub fanned: u32,
    pub last: u32,
    /// `fanned` after the last batch whose offsets did not follow the previous ones (a resend,
    /// a dropped batch, another dispatcher's numbering): a member that joined before it may not
    /// have been sent a contiguous run, so a recovery sends it everything after its offset
    /// (maybe again) rather than risk a gap.
    pub break_at: u32,
}

impl Room {
    /// Members on this whole gateway.
    pub fn online(&self) -> i32 {
        self.online.local.load(Ordering::Relaxed)
    }

    /// What a heartbeat reply tells a member: the cluster total the dispatchers last reported
    /// (every `renew_ms`), or this gateway's count before any report.
    pub fn reported_online(&self) -> i32 {
        match self.online.cluster.load(Ordering::Relaxed) {
            n if n >= 0 => i32::try_from(n).unwrap_or(i32::MAX),
            _ => self.online(),
        }
    }
}

/// Result of [`Rooms::leave`]: which member moved into the freed position, if any.
pub struct Moved {
    pub handle: u32,
    pub pos: u32,
}

pub struct Rooms {
    index: HashMap<Arc<str>, u32>,
    rooms: Vec<Option<Room>>,
    free: Vec<u32>,
    online: Arc<OnlineTable>,
}

impl Rooms {
    pub fn new(online: Arc<OnlineTable>) -> Rooms {
        Rooms {
            index: HashMap::new(),
            rooms: Vec::new(),
            free: Vec::new(),
            online,
        }
    }

    pub fn find(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub fn get(&self, idx: u32) -> Option<&Room> {
        self.rooms.get(idx as usize).and_then(|r| r.as_ref())
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut Room> {
        self.rooms.get_mut(idx as usize).and_then(|r| r.as_mut())
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Adds `handle` to the room (created when new); returns the room index and the member's
    /// position.
    pub fn join(&mut self, name: &str, handle: u32) -> (u32, u32) {
        let idx = match self.index.get(name) {
            Some(&i) => i,
            None => {
                let name: Arc<str> = Arc::from(name);
                let room = Room {
                    online: self.online.counter(&name),
                    name: name.clone(),
                    members: Vec::new(),
                    fanned: 0,
                    last: 0,
                    break_at: 0,
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        self.rooms[i as usize] = Some(room);
                        i
                    }
                    None => {
                        self.rooms.push(Some(room));
                        (self.rooms.len() - 1) as u32
                    }
                };
                self.index.insert(name, i);
                i
            }
        };
        let room = self.rooms[idx as usize]
            .as_mut()
            .expect("indexed rooms exist");
        room.members.push(handle);
        room.online.local.fetch_add(1, Ordering::Relaxed);
        (idx, (room.members.len() - 1) as u32)
    }

    /// Removes the member at `pos` of room `idx`; drops the room when it empties.
    pub fn leave(&mut self, idx: u32, pos: u32) -> Option<Moved> {
        let room = self.rooms.get_mut(idx as usize)?.as_mut()?;
        let pos = pos as usize;
        if pos >= room.members.len() {
            return None;
        }
        room.members.swap_remove(pos);
        room.online.local.fetch_sub(1, Ordering::Relaxed);
        let moved = room.members.get(pos).map(|&handle| Moved {
            handle,
            pos: pos as u32,
        });
        if room.members.is_empty() {
            let room = self.rooms[idx as usize].take().expect("checked above");
            self.index.remove(&room.name);
            self.free.push(idx);
            self.online.release(&room.name, room.online);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_leave_and_swap_positions() {
        let online = Arc::new(OnlineTable::default());
        let mut rooms = Rooms::new(online.clone());
        let (r, p0) = rooms.join("live://1", 10);
        let (_, p1) = rooms.join("live://1", 11);
        let (_, p2) = rooms.join("live://1", 12);
        assert_eq!((p0, p1, p2), (0, 1, 2));
        assert_eq!(rooms.get(r).unwrap().online(), 3);
        let moved = rooms.leave(r, p0).unwrap();
        assert_eq!((moved.handle, moved.pos), (12, 0));
        assert_eq!(rooms.get(r).unwrap().members, vec![12, 11]);
        assert!(rooms.leave(r, 1).is_none());
        assert!(rooms.leave(r, 0).is_none());
        assert!(rooms.find("live://1").is_none());
        assert!(online.snapshot().is_empty());
        let (r2, _) = rooms.join("live://2", 1);
        assert_eq!(r2, r, "a freed index is reused");
    }

    #[test]
    fn online_counts_span_shards() {
        let online = Arc::new(OnlineTable::default());
        let mut a = Rooms::new(online.clone());
        let mut b = Rooms::new(online.clone());
        let (ra, _) = a.join("x", 1);
        let (rb, pb) = b.join("x", 1);
        assert_eq!(a.get(ra).unwrap().online(), 2);
        b.leave(rb, pb);
        assert_eq!(a.get(ra).unwrap().online(), 1);
        assert_eq!(online.snapshot(), vec![("x".to_string(), 1)]);
        // A dispatcher's cluster total replaces the local count in heartbeat replies.
        assert_eq!(a.get(ra).unwrap().reported_online(), 1);
        online.set_cluster(&HashMap::from([("x".to_string(), 9), ("y".to_string(), 4)]));
        assert_eq!(a.get(ra).unwrap().reported_online(), 9);
        assert_eq!(a.get(ra).unwrap().online(), 1);
    }
}
