//! Push delivery on a shard: a room batch to every member, and broadcasts walked over every
//! connection at the requested pace. The bytes are wrapped once per shard (`Rc<Bytes>`) and
//! every member's queue holds a reference; [`Shard::enqueue`] applies the outbound cap.
//!
//! A room batch becomes a [`RoomJob`]: the members are snapshotted and reached a budget at a
//! time, so one loop turn never does more than [`TURN_BUDGET`] member enqueues before the
//! shard writes, reaps completions and publishes its counters. Batches of the same room queued
//! right behind the first are merged into it first: when a big room outpaces the sockets, the
//! members get fewer, larger chunks instead of a growing backlog of small ones.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use protocol::batch::Batch;

use crate::conn::Transport;
use crate::inbox::ShardMsg;
use crate::shard::{Shard, conn_of, handle, split};

/// Member enqueues (and other inbox work) one loop turn may do. Past it the turn goes on to
/// its writes, completions, timers and counters; the rest waits for the next turn. Larger:
/// fewer turns per fan-out (a little less overhead); smaller: a shard answers its sockets
/// sooner during a big fan-out. At ~20 ns per member this is under a millisecond of work.
pub(crate) const TURN_BUDGET: usize = 32 * 1024;

/// Inner bytes a merged room batch may reach (also at most half the outbound cap).
const MERGE_MAX_BYTES: usize = 64 * 1024;

/// A room batch being delivered: the bytes, the members it is for, and how far it has got.
pub(crate) struct RoomJob {
    room: Arc<str>,
    /// The members when the batch arrived. A member that leaves meanwhile is skipped (it is
    /// checked again before each enqueue); one that joins meanwhile gets the next batch.
    members: Vec<u32>,
    next: usize,
    tcp: Rc<Bytes>,
    ws: Rc<Bytes>,
    msgs: u32,
}

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
    /// Starts delivering a room batch: merges into it the batches of the same room queued
    /// right behind it, and snapshots the room's members on this shard.
    pub(crate) fn start_room_job(&mut self, room: Arc<str>, batch: Batch, mut last: u32) {
        let limit = MERGE_MAX_BYTES.min(self.shared.config.limits.outbound_cap_bytes / 2);
        let mut merged = std::mem::take(&mut self.merge_scratch);
        let mut bytes = batch.tcp_len();
        // Whether the merged batches' offsets follow each other.
        let first = last.wrapping_sub(batch.messages().saturating_sub(1));
        let mut contiguous = true;
        merged.push(batch);
        while let Some(next) = self.next_msg() {
            match next {
                ShardMsg::Room {
                    room: r,
                    batch: b,
                    last: l,
                } if r == room && bytes + b.tcp_len() <= limit => {
                    bytes += b.tcp_len();
                    contiguous &=
                        l.wrapping_sub(b.messages().saturating_sub(1)) == last.wrapping_add(1);
                    last = l;
                    merged.push(b);
                }
                other => {
                    self.lookahead = Some(other);
                    break;
                }
            }
        }
        self.stats.room_batches_merged += merged.len() as u64 - 1;
        let batch = match merged.len() {
            1 => merged.pop(),
            _ => Some(Batch::concat(&merged)),
        };
        merged.clear();
        self.merge_scratch = merged;
        let (Some(batch), Some(idx)) = (batch, self.rooms.find(&room)) else {
            return;
        };
        let mut members = std::mem::take(&mut self.member_scratch);
        members.clear();
        if let Some(r) = self.rooms.get_mut(idx) {
            members.extend_from_slice(&r.members);
            let follows = r.fanned == 0 || first == r.last.wrapping_add(1);
            r.fanned = r.fanned.wrapping_add(batch.messages());
            r.last = last;
            if !(follows && contiguous) {
                r.break_at = r.fanned;
            }
        }
        self.room_job = Some(RoomJob {
            room,
            members,
            next: 0,
            tcp: Rc::new(batch.tcp()),
            ws: Rc::new(batch.ws()),
            msgs: batch.messages(),
        });
    }

    /// Reaches up to `budget` more members of the room job in progress; returns how many
    /// members it looked at (0 when there is no job).
    pub(crate) fn step_room_job(&mut self, budget: usize) -> usize {
        let Some(mut job) = self.room_job.take() else {
            return 0;
        };
        let start = job.next;
        // The room may have emptied, or been made again at another index, since the job began:
        // look it up by name once per step (gone: the job ends), and check each member is
        // still in it.
        let idx = self.rooms.find(&job.room);
        let end = match idx {
            Some(_) => (start + budget).min(job.members.len()),
            None => job.members.len(),
        };
        if let Some(idx) = idx {
            for &h in &job.members[start..end] {
                let (r, s) = split(h);
                let Some(conn) = self.rings[r].conns.get(s).and_then(|c| c.as_deref()) else {
                    continue;
                };
                if !conn.is_open() || !conn.rooms.iter().any(|&(i, _, _)| i == idx) {
                    continue;
                }
                let buf = if conn.transport == Transport::Tcp {
                    &job.tcp
                } else {
                    &job.ws
                };
                self.enqueue(h, buf, job.msgs, false);
            }
            self.close_deferred();
        }
        job.next = end;
        if job.next < job.members.len() {
            self.room_job = Some(job);
        } else {
            // Keep the snapshot's storage for the next job (a big room's is megabytes).
            self.member_scratch = job.members;
        }
        end - start
    }

    /// If the room job in progress is for room `idx` and has not reached member `h` yet,
    /// enqueues its batch for `h` now (and takes `h` out of the rest of the job): the room
    /// already counts the batch as sent to every member, which is what a recovery that makes
    /// `h` leave the room relies on.
    pub(crate) fn finish_room_job_for(&mut self, h: u32, idx: u32) {
        let Some(job) = self.room_job.as_mut() else {
            return;
        };
        if self.rooms.find(&job.room) != Some(idx) {
            return;
        }
        let Some(at) = job.members[job.next..].iter().position(|&m| m == h) else {
            return;
        };
        job.members.remove(job.next + at);
        let Some(conn) = conn_of(&mut self.rings, h) else {
            return;
        };
        let buf = if conn.transport == Transport::Tcp {
            job.tcp.clone()
        } else {
            job.ws.clone()
        };
        let msgs = job.msgs;
        self.enqueue(h, &buf, msgs, false);
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
