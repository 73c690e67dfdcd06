//! Recovery on reconnect (op 26): a client names a room and the last offset it got from it;
//! the shard asks every linked dispatcher for what the room got since, sends the client what it
//! missed, in order, and only then lets the room's live stream reach it.
//!
//! Ordering rests on one fact: a dispatcher answers in the same ordered queue as the room
//! batches it sends this gateway, so the batches ahead of its answer hold offsets up to the
//! answer's `newest` and those behind it hold later ones. Until the answer, the connection is
//! not a member of the room (batches ahead of the answer skip it); at the answer it gets the
//! missed messages and joins, so the next batch it gets is the one after `newest`.
//!
//! A connection already in the room (its token named it) has been sent the last
//! `room.fanned - mark` offsets since it joined; those are not sent again, unless the room's
//! offsets jumped since it joined (`room.break_at`): then everything after its offset is sent,
//! maybe again, never leaving a gap. An answer "no history here" from one dispatcher waits for
//! the others (as many as there are links); none answering within `limits.recover_timeout_ms`
//! is answered "unavailable". One recovery at a time per connection; LeaveRoom and ChangeRoom
//! cancel it. Every outcome is a RecoverReply (op 27) the client can read, and every outcome
//! but a refused or cancelled request joins the room.

use std::rc::Rc;

use bytes::Bytes;
use protocol::batch::Batch;
use protocol::frame::Header;
use protocol::link::{Body, RecoverRequest, RoomHistory, history_status};
use protocol::{history, op};

use crate::conn::{State, Transport};
use crate::shard::{Shard, conn_id};

/// A recovery waiting for the dispatchers.
pub(crate) struct Pending {
    room: String,
    since: u32,
    /// The request's header (its ver and seq go back in the reply).
    header: Header,
    /// Offsets (lo, hi] already sent to the connection while it was in the room.
    sent: Option<(u32, u32)>,
    /// Where the room was among the connection's rooms, if it was in it: it goes back there
    /// (the first room is the one heartbeat replies count and ChangeRoom manages).
    position: Option<usize>,
    /// Answers still to come, of how many asked.
    waiting: usize,
    asked: usize,
    deadline: u64,
}

/// How a recovery ended.
enum Outcome {
    History(RoomHistory),
    /// Every dispatcher said it holds no history of the room.
    Unknown,
    TimedOut,
    NoLink,
}

impl Shard {
    /// Where `room` is among connection `h`'s rooms.
    pub(crate) fn room_position(&mut self, h: u32, room: &str) -> Option<usize> {
        let conn = crate::shard::conn_of(&mut self.rings, h)?;
        let rooms = &self.rooms;
        conn.rooms
            .iter()
            .position(|&(idx, _, _)| rooms.get(idx).is_some_and(|r| *r.name == *room))
    }

    /// The room of connection `h`'s recovery in progress, if any.
    pub(crate) fn recovering(&mut self, h: u32) -> Option<String> {
        if self.recovers.is_empty() {
            return None;
        }
        let shard = self.id as u16;
        let id = conn_id(shard, h, self.conn(h)?.gen_);
        self.recovers.get(&id).map(|p| p.room.clone())
    }

    /// Ends connection `h`'s recovery in progress without joining its room, telling the
    /// client why (it changed its rooms meanwhile: ChangeRoom, LeaveRoom).
    pub(crate) fn cancel_recover(&mut self, h: u32, why: &str) {
        let shard = self.id as u16;
        let Some(id) = self.conn(h).map(|c| conn_id(shard, h, c.gen_)) else {
            return;
        };
        if let Some(p) = self.recovers.remove(&id) {
            self.stats.recovery_refused += 1;
            let text = format!("error: recovery of room {} cancelled by {why}", p.room);
            self.reply(h, &p.header, op::RECOVER_REPLY, text.as_bytes());
        }
    }

    /// A Recover frame (op 26) from an open connection.
    pub(crate) fn start_recover(&mut self, h: u32, header: Header, body: &[u8]) {
        let (since, room) = match history::parse_recover(body) {
            Ok((since, room)) => (since, room.to_string()),
            Err(e) => {
                self.stats.recovery_refused += 1;
                return self.reply(
                    h,
                    &header,
                    op::RECOVER_REPLY,
                    format!("error: {e}").as_bytes(),
                );
            }
        };
        let cap = self.shared.config.limits.max_rooms_per_conn;
        let shard = self.id as u16;
        let Some(conn) = self.conn(h) else { return };
        let id = conn_id(shard, h, conn.gen_);
        // One recovery at a time per connection: each answer can be up to half the outbound
        // cap, and a client must not make its gateway and dispatchers do that in a loop.
        if let Some(p) = self.recovers.get(&id) {
            self.stats.recovery_refused += 1;
            let text = format!(
                "error: a recovery of room {} is already in progress (one at a time)",
                p.room
            );
            return self.reply(h, &header, op::RECOVER_REPLY, text.as_bytes());
        }
        let joined = self.room_position(h, &room);
        let Some(conn) = self.conn(h) else { return };
        if joined.is_none() && conn.rooms.len() >= cap {
            self.stats.recovery_refused += 1;
            let text = format!("error: room cap of {cap} reached");
            return self.reply(h, &header, op::RECOVER_REPLY, text.as_bytes());
        }
        // Out of the room until the answer; note what it was already sent.
        let mut sent = None;
        if let Some(i) = joined {
            let Some(&(idx, _, _)) = self.conn(h).and_then(|c| c.rooms.get(i)) else {
                return;
            };
            self.finish_room_job_for(h, idx);
            let Some(conn) = self.conn(h) else { return };
            let (idx, pos, mark) = conn.rooms.remove(i);
            if let Some(r) = self.rooms.get(idx) {
                let d = r.fanned.wrapping_sub(mark);
                // Joined before offsets last jumped: what it was sent is not one run.
                let broken = (r.break_at.wrapping_sub(mark) as i32) > 0;
                if d > 0 && !broken {
                    sent = Some((r.last.wrapping_sub(d), r.last));
                }
            }
            self.leave_at(idx, pos);
        }
        let mut p = Pending {
            room,
            since,
            header,
            sent,
            position: joined,
            waiting: 0,
            asked: 0,
            deadline: self.now + self.shared.config.limits.recover_timeout_ms,
        };
        use std::sync::atomic::Ordering;
        if !self.shared.uplink_on.load(Ordering::Relaxed) {
            return self.finish_recover(h, p, Outcome::NoLink);
        }
        // Each link answers; a gateway whose uplink a test or `corecast up` took has one.
        p.waiting = self.shared.links_up.load(Ordering::Relaxed).max(1);
        p.asked = p.waiting;
        self.send_up(Body::RecoverRequest(RecoverRequest {
            conn_id: id,
            room: p.room.clone(),
            since,
            max_bytes: (self.shared.config.limits.outbound_cap_bytes / 2) as u64,
        }));
        self.recovers.insert(id, p);
        self.stats.recover_requests += 1;
    }

    /// A dispatcher's answer to a recover request.
    pub(crate) fn on_recovered(&mut self, h: u32, gen_: u16, answer: RoomHistory) {
        let id = conn_id(self.id as u16, h, gen_);
        // None: the connection went away, another dispatcher answered first, or the answer is
        // for an earlier recovery (cancelled, or resent after a re-dial).
        let Some(p) = self.recovers.get_mut(&id).filter(|p| p.room == answer.room) else {
            return;
        };
        let outcome = if answer.status == history_status::UNKNOWN {
            p.waiting = p.waiting.saturating_sub(1);
            if p.waiting > 0 {
                return;
            }
            Outcome::Unknown
        } else {
            Outcome::History(answer)
        };
        let Some(p) = self.recovers.remove(&id) else {
            return;
        };
        if self.conn_gen(h, gen_).is_some() {
            self.finish_recover(h, p, outcome);
        }
    }

    /// Answers recoveries past their deadline (called about every 100 ms while any wait).
    pub(crate) fn expire_recovers(&mut self) {
        let now = self.now;
        let due: Vec<u64> = self
            .recovers
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        let due: Vec<(u64, Pending)> = due
            .into_iter()
            .filter_map(|id| self.recovers.remove(&id).map(|p| (id, p)))
            .collect();
        for (id, p) in due {
            let (_, h, gen_) = crate::shard::split_conn_id(id);
            if self.conn_gen(h, gen_).is_some() {
                self.finish_recover(h, p, Outcome::TimedOut);
            }
        }
    }

    /// Sends the reply and what was missed, then joins the room.
    fn finish_recover(&mut self, h: u32, p: Pending, outcome: Outcome) {
        if !self.conn(h).is_some_and(|c| c.state == State::Open) {
            return;
        }
        let mut missed = Vec::new();
        let mut count = 0u32;
        let text = match outcome {
            Outcome::History(a) if a.status == history_status::FOUND => {
                // Offsets up to `since` the client has; those in `sent` it was sent meanwhile.
                for (offset, range) in history::offsets(&a.frames).unwrap_or_default() {
                    let already = p.sent.is_some_and(|(lo, hi)| {
                        history::after(offset, lo) && !history::after(offset, hi)
                    });
                    if history::after(offset, p.since) && !already {
                        missed.extend_from_slice(&a.frames[range]);
                        count += 1;
                    }
                }
                // What is missed must fit the connection's outbound cap with room to spare,
                // or the cap's policy would act on the recovery itself.
                let fits = self.shared.config.limits.outbound_cap_bytes / 2;
                if missed.len() > fits {
                    self.stats.recovery_too_old += 1;
                    let text = format!(
                        "error: too old: the {count} missed messages of room {} are {} bytes, more than half limits.outbound_cap_bytes ({fits}); GET /goim/room/history serves them",
                        p.room,
                        missed.len()
                    );
                    missed.clear();
                    count = 0;
                    text
                } else {
                    self.stats.recovery_found += 1;
                    self.stats.recovered_messages += u64::from(count);
                    String::from_utf8_lossy(&history::recovered_body(count, a.newest, &p.room))
                        .into_owned()
                }
            }
            Outcome::History(a) => {
                self.stats.recovery_too_old += 1;
                format!("error: too old: {}", a.detail)
            }
            Outcome::Unknown => {
                self.stats.recovery_unknown += 1;
                format!(
                    "error: no history of room {}: no dispatcher holds one (never pushed, or idle too long); joined live",
                    p.room
                )
            }
            Outcome::TimedOut => {
                self.stats.recovery_timeout += 1;
                let ms = self.shared.config.limits.recover_timeout_ms;
                if p.waiting == p.asked {
                    format!(
                        "error: history unavailable: no dispatcher answered within {ms} ms; joined live"
                    )
                } else {
                    format!(
                        "error: history unavailable: {} of {} dispatchers answered within {ms} ms and none of them holds room {}'s history; joined live",
                        p.asked - p.waiting,
                        p.asked,
                        p.room
                    )
                }
            }
            Outcome::NoLink => {
                self.stats.recovery_unknown += 1;
                format!(
                    "error: history unavailable: this gateway has no dispatcher link; joined {} live",
                    p.room
                )
            }
        };
        self.reply(h, &p.header, op::RECOVER_REPLY, text.as_bytes());
        if count > 0
            && let Ok(batch) = Batch::from_inner_frames(&missed)
            && let Some(conn) = self.conn(h)
        {
            let bytes: Bytes = if conn.transport == Transport::Tcp {
                batch.tcp()
            } else {
                batch.ws()
            };
            // Not droppable under drop-oldest: the reply said they follow.
            self.enqueue(h, &Rc::new(bytes), count, true);
            self.close_deferred();
        }
        let member = self.room_position(h, &p.room).is_some();
        if !member && self.conn(h).is_some_and(|c| c.state == State::Open) {
            self.join(h, &p.room);
            if let Some(i) = p.position
                && let Some(conn) = self.conn(h)
                && i + 1 < conn.rooms.len()
                && let Some(seat) = conn.rooms.pop()
            {
                conn.rooms.insert(i, seat);
            }
        }
    }
}
