//! Push delivery on a shard: a room batch to every member, and broadcasts walked over every
//! connection at the requested pace. The bytes are wrapped once per shard (`Rc<Bytes>`) and
//! every member's queue holds a reference; [`Shard::enqueue`] applies the outbound cap.

use std::rc::Rc;

use bytes::Bytes;
use protocol::batch::Batch;

use crate::conn::Transport;
use crate::shard::{Shard, handle, split};

/// A broadcast in progress: where it has got to, and its pace.
pub(crate) struct BroadcastJob {
    pub(crate) op: i32,
    pub(crate) tcp: Rc<Bytes>,
    pub(crate) ws: Rc<Bytes>,
    pub(crate) msgs: u32,
    pub(crate) per_second: u32,
    pub(crate) ring: usize,
    pub(crate) slot: usize,
    pub(crate) started_ms: u64,
    pub(crate) done: u64,
}

impl Shard {
    /// Writes one room batch to every member of the room on this shard: the TCP and WS bytes
    /// are wrapped once here and shared by every member.
    pub(crate) fn fan_out_room(&mut self, room: &str, batch: &Batch) {
        let Some(idx) = self.rooms.find(room) else {
            return;
        };
        let tcp = Rc::new(batch.tcp());
        let ws = Rc::new(batch.ws());
        let msgs = batch.messages();
        let mut i = 0;
        while let Some(&h) = self.rooms.get(idx).and_then(|r| r.members.get(i)) {
            i += 1;
            let (r, s) = split(h);
            let Some(conn) = self.rings[r].conns.get(s).and_then(|c| c.as_deref()) else {
                continue;
            };
            let buf = if conn.transport == Transport::Tcp {
                &tcp
            } else {
                &ws
            };
            self.enqueue(h, buf, msgs, false);
        }
        self.close_deferred();
    }

    pub(crate) fn step_broadcasts(&mut self) -> bool {
        let Some(mut job) = self.broadcasts.pop_front() else {
            return false;
        };
        let budget = if job.per_second == 0 {
            u64::MAX
        } else {
            let elapsed = self.now.saturating_sub(job.started_ms) + 1;
            (elapsed * job.per_second as u64 / 1000 + 1).saturating_sub(job.done)
        };
        let mut n = 0;
        while n < budget && job.ring < self.rings.len() {
            if job.slot >= self.rings[job.ring].conns.len() {
                job.ring += 1;
                job.slot = 0;
                continue;
            }
            let (r, s) = (job.ring, job.slot);
            job.slot += 1;
            let Some(conn) = self.rings[r].conns[s].as_deref() else {
                continue;
            };
            if !conn.is_open() || !conn.watches(job.op) {
                continue;
            }
            let buf = if conn.transport == Transport::Tcp {
                &job.tcp
            } else {
                &job.ws
            };
            let buf = buf.clone();
            self.enqueue(handle(r, s as u32), &buf, job.msgs, false);
            n += 1;
        }
        job.done += n;
        self.close_deferred();
        if job.ring < self.rings.len() {
            self.broadcasts.push_front(job);
        }
        // Only work done keeps the loop busy; between paced steps the shard sleeps (the loop
        // caps its sleep at 10 ms while a broadcast is in progress).
        n > 0
    }
}
