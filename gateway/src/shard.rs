//! A shard: one pinned thread running its own io_uring rings, owning its connections, rooms,
//! timers and buffers. Nothing here is shared with another shard on the per-message path.
//!
//! One loop turn: take messages from the inbox (pushes from the ingress), advance the timing
//! wheel, issue writes for connections with queued bytes, reap every ring's completions
//! (accepts, receives, writes, closes), and sleep on the shared eventfd when nothing happened.
//! The goim logic for each client frame lives in `session.rs`, push delivery in `fanout.rs`,
//! the graceful drain in `drain.rs`.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::Instant;

use bytes::Bytes;
use protocol::link::{Body, Session};

use crate::admission::Refusal;
use crate::config::{Config, SlowConsumer};
use crate::conn::{Chunk, Conn, Enqueued, State, Transport};
use crate::fanout::TURN_BUDGET;
use crate::inbox::{Inbox, ShardMsg};
use crate::keys::{KeyTable, Owner};
use crate::rooms::{OnlineTable, Rooms};
use crate::stats::{Counters, SharedCounters};
use crate::uring::{Completion, Op, Ring, RingSize};
use crate::wheel::Wheel;

/// What all shards of one gateway share: touched on connect, auth and close, never per message.
pub struct Shared {
    pub config: Config,
    /// Limits on new connections, and whether the gateway takes any.
    pub admission: crate::admission::Admission,
    pub auth: protocol::token::AuthMode,
    pub slow: SlowConsumer,
    pub keys: KeyTable,
    pub online: Arc<OnlineTable>,
    pub inboxes: Vec<Arc<Inbox>>,
    pub stats: Vec<SharedCounters>,
    pub uplink: crossbeam_channel::Sender<Body>,
    /// Someone takes what is sent up (a dispatcher link, or `Gateway::take_uplink`). Without
    /// one, up-messages are counted as dropped instead of piling up in the channel.
    pub uplink_on: std::sync::atomic::AtomicBool,
    /// Up-messages the link hub could hand to no dispatcher link (none up, or all full).
    pub hub_dropped: std::sync::atomic::AtomicU64,
    /// Dispatcher links taking up-messages: how many answers a recover request gets.
    pub links_up: std::sync::atomic::AtomicUsize,
    pub stop: std::sync::atomic::AtomicBool,
    pub epoch: Instant,
    /// The WSS listener's TLS state (None: WSS off).
    pub tls: Option<crate::tls::Tls>,
}

impl Shared {
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Session events and upstream messages that reached no dispatcher: refused by the shards'
    /// uplink queue, or taken by no link.
    pub fn uplink_dropped(&self) -> u64 {
        let shards: u64 = self.stats.iter().map(|s| s.read().upstream_dropped).sum();
        shards + self.hub_dropped.load(Ordering::Relaxed)
    }
}

/// Why a connection is being closed; the reason reaches the client where the transport allows.
pub struct Reason {
    pub text: String,
    /// WebSocket close code.
    pub code: u16,
    /// Before a WebSocket upgrade: the error that refused it (picks the HTTP status).
    pub upgrade: Option<protocol::Error>,
    /// TLS connections: write no reason, only what the TLS layer has queued (its alert for a
    /// TLS error; nothing can be sealed after one).
    pub tls_alert_only: bool,
}

impl Reason {
    pub fn new(text: impl Into<String>, code: u16) -> Reason {
        Reason {
            text: text.into(),
            code,
            upgrade: None,
            tls_alert_only: false,
        }
    }
}

const MAX_IOV: usize = 64;
/// The listeners' accept ops, by index: TCP, WS, WSS.
pub(crate) const ACCEPT_OPS: [Op; 3] = [Op::AcceptTcp, Op::AcceptWs, Op::AcceptWss];
/// Accepts in flight per listener on the accepting ring.
const ACCEPT_DEPTH: u32 = 16;
const IOV_ARENA: usize = 64 * 1024;
/// How often the resident memory is read against `limits.max_memory_mb`.
const MEMORY_CHECK_MS: u64 = 1_000;
/// How long the final bytes of a closing connection may take before the socket is shut anyway.
const CLOSING_GRACE_MS: u64 = 1_000;

/// The connection behind a handle, borrowing only the rings (so the shard's other fields stay
/// usable alongside it).
pub(crate) fn conn_of(rings: &mut [RingCtx], h: u32) -> Option<&mut Conn> {
    let (r, s) = split(h);
    rings.get_mut(r)?.conns.get_mut(s)?.as_deref_mut()
}

pub(crate) struct RingCtx {
    pub ring: Ring,
    pub conns: Vec<Option<Box<Conn>>>,
    pub live: u32,
    /// Accepts in flight on this ring, per listener ([`ACCEPT_OPS`]).
    pub accepts: [u32; 3],
    next_gen: u16,
}

pub struct Shard {
    pub(crate) id: usize,
    pub(crate) shared: Arc<Shared>,
    inbox: Arc<Inbox>,
    pub(crate) rings: Vec<RingCtx>,
    ring_size: RingSize,
    /// TCP, WS and (if on) WSS, as [`ACCEPT_OPS`].
    listeners: [Option<OwnedFd>; 3],
    /// Decrypted WSS input, kept between receives (`tls.rs`).
    pub(crate) tls_plain: Vec<u8>,
    pub(crate) rooms: Rooms,
    wheel: Wheel,
    dirty: Vec<u32>,
    iov: Vec<libc::iovec>,
    completions: Vec<Completion>,
    expired: Vec<(u32, u16)>,
    pub(crate) to_close: Vec<(u32, u16, Reason)>,
    pub(crate) stats: Counters,
    /// Handshake and write latency histograms, and the microsecond clock (`latency.rs`).
    pub(crate) lat: crate::latency::Latency,
    pub(crate) broadcasts: VecDeque<crate::fanout::BroadcastJob>,
    /// The room batch being delivered, a budget of members per loop turn.
    pub(crate) room_job: Option<crate::fanout::RoomJob>,
    /// A message taken from the inbox while merging room batches, to handle next.
    pub(crate) lookahead: Option<ShardMsg>,
    /// Recoveries waiting for the dispatchers, by connection id (`recovery.rs`).
    pub(crate) recovers: std::collections::HashMap<u64, crate::recovery::Pending>,
    recover_check_at: u64,
    /// Storage kept between room jobs: the member snapshot and the batches being merged.
    pub(crate) member_scratch: Vec<u32>,
    pub(crate) merge_scratch: Vec<protocol::batch::Batch>,
    pub(crate) draining: bool,
    pub(crate) drain_next_ms: u64,
    /// The ring new connections are accepted on.
    accepting: usize,
    full_warned: bool,
    pub(crate) now: u64,
}

/// A connection's id on this gateway, as session events carry it: shard, handle, generation.
pub fn conn_id(shard: u16, handle: u32, gen_: u16) -> u64 {
    (shard as u64) << 48 | (handle as u64) << 16 | gen_ as u64
}

/// The (shard, handle, generation) of a [`conn_id`].
pub fn split_conn_id(id: u64) -> (usize, u32, u16) {
    ((id >> 48) as usize, (id >> 16) as u32, id as u16)
}

/// A connection handle: ring index in the top 8 bits, slot in the low 24.
pub fn handle(ring: usize, slot: u32) -> u32 {
    (ring as u32) << 24 | slot
}

/// The ring index and slot of a handle.
pub fn split(h: u32) -> (usize, usize) {
    ((h >> 24) as usize, (h & 0x00ff_ffff) as usize)
}

impl Shard {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        tcp_listener: OwnedFd,
        ws_listener: OwnedFd,
        wss_listener: Option<OwnedFd>,
    ) -> crate::Result<Shard> {
        let e = &shared.config.engine;
        let ring_size = RingSize {
            entries: e.ring_entries,
            slots: e.slots_per_ring,
            recv_buffers: e.recv_buffers,
            recv_buffer_size: e.recv_buffer_size,
        };
        let wheel = Wheel::new(4096, e.tick_ms);
        let inbox = shared.inboxes[id].clone();
        let mut shard = Shard {
            id,
            rooms: Rooms::new(shared.online.clone()),
            shared,
            inbox,
            rings: Vec::new(),
            ring_size,
            listeners: [Some(tcp_listener), Some(ws_listener), wss_listener],
            tls_plain: Vec::new(),
            wheel,
            dirty: Vec::new(),
            iov: Vec::with_capacity(IOV_ARENA),
            completions: Vec::new(),
            expired: Vec::new(),
            to_close: Vec::new(),
            stats: Counters::default(),
            lat: Default::default(),
            broadcasts: VecDeque::new(),
            room_job: None,
            lookahead: None,
            recovers: std::collections::HashMap::new(),
            recover_check_at: 0,
            member_scratch: Vec::new(),
            merge_scratch: Vec::new(),
            draining: false,
            drain_next_ms: 0,
            accepting: 0,
            full_warned: false,
            now: 0,
        };
        shard.add_ring()?;
        shard.arm_accepts();
        Ok(shard)
    }

    fn add_ring(&mut self) -> crate::Result<usize> {
        let ring =
            Ring::new(self.ring_size, self.inbox.fd()).map_err(|source| crate::Error::Uring {
                shard: self.id,
                source,
            })?;
        self.rings.push(RingCtx {
            ring,
            conns: Vec::new(),
            live: 0,
            accepts: [0; 3],
            next_gen: 1,
        });
        Ok(self.rings.len() - 1)
    }

    /// Keeps the accepts topped up: up to [`ACCEPT_DEPTH`] per listener in flight on the
    /// accepting ring, never more than its free slots; moves to another ring (opening one if
    /// allowed) when it is full.
    fn arm_accepts(&mut self) {
        if self.draining {
            return;
        }
        let fds: [Option<i32>; 3] =
            std::array::from_fn(|i| self.listeners[i].as_ref().map(|l| l.as_raw_fd()));
        let listening = fds.iter().flatten().count() as u32;
        if listening == 0 {
            return;
        }
        let slots = self.ring_size.slots;
        loop {
            let r = self.accepting;
            let ctx = &mut self.rings[r];
            for (which, fd) in fds.iter().enumerate() {
                let Some(fd) = fd else { continue };
                while ctx.accepts[which] < ACCEPT_DEPTH
                    && ctx.live + ctx.accepts.iter().sum::<u32>() < slots
                {
                    ctx.ring.accept(*fd, ACCEPT_OPS[which]);
                    ctx.accepts[which] += 1;
                }
            }
            if fds
                .iter()
                .zip(ctx.accepts)
                .all(|(fd, n)| fd.is_none() || n > 0)
            {
                return;
            }
            // This ring is full: accept on the first ring with room, or a new one.
            let room = |c: &RingCtx| c.live + c.accepts.iter().sum::<u32>() + listening <= slots;
            self.accepting = match self.rings.iter().position(room) {
                Some(i) if i != r => i,
                _ if self.rings.len() < self.shared.config.engine.max_rings_per_shard => {
                    match self.add_ring() {
                        Ok(i) => {
                            tracing::info!(
                                shard = self.id,
                                rings = i + 1,
                                "opened another io_uring ring"
                            );
                            i
                        }
                        Err(e) => {
                            tracing::error!(shard = self.id, "cannot open another ring: {e}");
                            return;
                        }
                    }
                }
                _ => {
                    if !self.full_warned {
                        self.full_warned = true;
                        tracing::warn!(
                            shard = self.id,
                            "every ring is full: not accepting until connections close"
                        );
                    }
                    return;
                }
            };
        }
    }

    /// The event loop; returns when the gateway stops or a drain has closed every connection.
    pub fn run(mut self) {
        loop {
            self.lat.now_us = self.shared.now_us();
            self.now = self.lat.now_us / 1000;
            // Inbox work, bounded per turn: a room batch to a big room is reached a budget of
            // members at a time, so writes, completions and counters keep their pace.
            let mut work = 0;
            while work < TURN_BUDGET {
                if self.room_job.is_some() {
                    work += self.step_room_job(TURN_BUDGET - work).max(1);
                    continue;
                }
                let Some(msg) = self.next_msg() else { break };
                work += self.on_msg(msg);
            }
            self.stats.turns += 1;
            if self.room_job.is_some() {
                self.stats.turns_at_budget += 1;
            }
            let mut busy = work > 0 || self.lookahead.is_some();
            busy |= self.step_broadcasts();
            if self.wheel.until_next(self.now) == 0 {
                self.on_tick();
            }
            if !self.recovers.is_empty() && self.now >= self.recover_check_at {
                self.recover_check_at = self.now + 100;
                self.expire_recovers();
            }
            if self.shared.config.limits.max_memory_mb > 0 {
                self.shared
                    .admission
                    .check_memory(self.now, MEMORY_CHECK_MS);
            }
            if self.draining {
                self.step_drain();
            }
            self.close_deferred();
            self.flush_dirty();
            for r in 0..self.rings.len() {
                let mut completions = std::mem::take(&mut self.completions);
                if let Err(e) = self.rings[r].ring.reap(&mut completions) {
                    tracing::error!(shard = self.id, ring = r, "io_uring enter failed: {e}");
                }
                busy |= !completions.is_empty();
                if !completions.is_empty() {
                    self.lat.now_us = self.shared.now_us();
                }
                for c in completions.drain(..) {
                    self.on_completion(r, c);
                }
                self.completions = completions;
                self.close_deferred();
            }
            self.flush_dirty();
            for r in 0..self.rings.len() {
                if let Err(e) = self.rings[r].ring.submit() {
                    tracing::error!(shard = self.id, ring = r, "io_uring submit failed: {e}");
                }
            }
            self.iov.clear();
            self.publish_stats();
            if self.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            if self.draining && self.live() == 0 {
                tracing::info!(shard = self.id, "drained");
                break;
            }
            if !busy {
                self.inbox.sleeping.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if self.inbox.is_empty() {
                    let mut timeout = self.wheel.until_next(self.shared.now_ms()).max(1);
                    if !self.broadcasts.is_empty() {
                        timeout = timeout.min(10);
                    }
                    self.inbox.wait(timeout.min(1000) as i32);
                }
                self.inbox.sleeping.store(false, Ordering::SeqCst);
            }
        }
    }

    /// The next message to handle: the one set aside while merging, else the inbox's next.
    pub(crate) fn next_msg(&mut self) -> Option<ShardMsg> {
        self.lookahead.take().or_else(|| self.inbox.pop())
    }

    pub(crate) fn live(&self) -> u32 {
        self.rings.iter().map(|r| r.live).sum()
    }

    fn publish_stats(&mut self) {
        let live = self.live() as u64;
        self.stats.connections = live;
        self.stats.rooms = self.rooms.len() as u64;
        self.shared.stats[self.id].publish(&self.stats);
        self.shared.stats[self.id].latency.publish(&self.lat);
    }

    pub(crate) fn conn(&mut self, h: u32) -> Option<&mut Conn> {
        conn_of(&mut self.rings, h)
    }

    pub(crate) fn conn_gen(&mut self, h: u32, gen_: u16) -> Option<&mut Conn> {
        self.conn(h).filter(|c| c.gen_ == gen_)
    }

    fn on_completion(&mut self, r: usize, c: Completion) {
        tracing::trace!(shard = self.id, ring = r, op = ?c.op, slot = c.slot, gen_ = c.gen_, res = c.res, more = c.more(), "completion");
        match c.op {
            Op::AcceptTcp => self.on_accept(r, c, 0),
            Op::AcceptWs => self.on_accept(r, c, 1),
            Op::AcceptWss => self.on_accept(r, c, 2),
            Op::Recv => self.on_recv(r, c),
            Op::Send => self.on_send(r, c),
            Op::Close => self.on_closed(r, c),
            Op::Shutdown => {
                let h = handle(r, c.slot);
                if let Some(conn) = self.conn_gen(h, c.gen_) {
                    conn.shutting = false;
                    self.maybe_close_slot(h);
                }
            }
            Op::Cancel => {}
        }
    }

    /// An accept completed on listener `which` ([`ACCEPT_OPS`]).
    fn on_accept(&mut self, r: usize, c: Completion, which: usize) {
        self.rings[r].accepts[which] -= 1;
        let peer = self.rings[r].ring.take_peer(&c);
        let transport = if which == 0 {
            Transport::Tcp
        } else {
            Transport::Ws
        };
        if c.res >= 0 {
            let slot = c.res as u32;
            let admitted = self.shared.admission.admit(peer, self.now);
            let deadline = self.now + self.shared.config.limits.handshake_timeout_ms;
            let ctx = &mut self.rings[r];
            let gen_ = ctx.next_gen;
            ctx.next_gen = ctx.next_gen.wrapping_add(1).max(1);
            if ctx.conns.len() <= slot as usize {
                ctx.conns.resize_with(slot as usize + 1, || None);
            }
            let mut conn = Box::new(Conn::new(gen_, transport, deadline));
            match admitted {
                Ok(ip) => conn.ip = ip,
                Err(refusal) => {
                    conn.refusal = refusal as u8;
                    let counter = match refusal {
                        Refusal::GatewayFull => &mut self.stats.refused_gateway_full,
                        Refusal::IpFull => &mut self.stats.refused_ip_limit,
                        Refusal::IpRate => &mut self.stats.refused_ip_rate,
                        Refusal::OverMemory => &mut self.stats.refused_memory,
                    };
                    *counter += 1;
                    tracing::debug!(shard = self.id, ?peer, ?refusal, "connection refused");
                }
            }
            conn.recv_armed = true;
            conn.filed_for = deadline;
            ctx.conns[slot as usize] = Some(conn);
            ctx.live += 1;
            ctx.ring.recv(slot, gen_);
            self.wheel.insert((handle(r, slot), gen_), deadline);
            self.stats.accepted += 1;
            self.lat.accepted(handle(r, slot), gen_);
            // The WSS listener exists only with a TLS config.
            if which == 2
                && let Some(tls) = self.shared.tls.as_ref()
            {
                let h = handle(r, slot);
                match tls.session() {
                    Ok(session) => {
                        if let Some(conn) = self.conn(h) {
                            conn.tls = Some(session);
                        }
                    }
                    Err(e) => {
                        self.stats.tls_errors += 1;
                        tracing::error!(shard = self.id, "cannot start a TLS session: {e}");
                        self.teardown(h, None);
                    }
                }
            }
            if self.draining {
                self.teardown(
                    handle(r, slot),
                    Some(Reason::new(
                        "server draining",
                        protocol::ws::close_code::GOING_AWAY,
                    )),
                );
            }
        } else if c.res != -libc::ECANCELED {
            self.stats.accept_errors += 1;
            tracing::warn!(
                shard = self.id,
                ring = r,
                "accept failed: {}",
                std::io::Error::from_raw_os_error(-c.res)
            );
        }
        self.arm_accepts();
    }

    fn on_recv(&mut self, r: usize, c: Completion) {
        let h = handle(r, c.slot);
        let bid = c.buffer();
        let live = match self.conn_gen(h, c.gen_) {
            Some(conn) => {
                if !c.more() {
                    conn.recv_armed = false;
                }
                matches!(conn.state, State::Upgrade | State::Auth | State::Open)
            }
            None => false,
        };
        if c.res > 0 {
            if let Some(bid) = bid {
                if live {
                    let data = self.rings[r].ring.buffer(bid, c.res as usize);
                    let handshaking = self
                        .conn(h)
                        .is_some_and(|conn| matches!(conn.state, State::Upgrade | State::Auth));
                    if self.conn(h).is_some_and(|conn| conn.tls.is_some()) {
                        self.tls_input(h, data);
                    } else {
                        self.on_input(h, data);
                    }
                    if handshaking {
                        self.handshake_input_done(h);
                    }
                }
                self.rings[r].ring.recycle(bid);
            }
        } else if c.res == 0 || c.res != -libc::ENOBUFS {
            // EOF or an error: the client is gone.
            if c.res < 0 && live {
                tracing::debug!(
                    shard = self.id,
                    "receive failed: {}",
                    std::io::Error::from_raw_os_error(-c.res)
                );
            }
            if live {
                self.teardown(h, None);
            }
        }
        // Re-arm a receive that ended while the connection lives on (ENOBUFS, or a kernel that
        // ends multishot receives after a while).
        if let Some(conn) = self.conn_gen(h, c.gen_)
            && !conn.recv_armed
            && matches!(conn.state, State::Upgrade | State::Auth | State::Open)
        {
            conn.recv_armed = true;
            self.rings[r].ring.recv(c.slot, c.gen_);
        }
        self.maybe_close_slot(h);
    }

    fn on_send(&mut self, r: usize, c: Completion) {
        let h = handle(r, c.slot);
        let Some(conn) = self.conn_gen(h, c.gen_) else {
            return;
        };
        conn.sending = false;
        conn.inflight = 0;
        if c.res < 0 {
            tracing::debug!("send failed: {}", std::io::Error::from_raw_os_error(-c.res));
            if matches!(conn.state, State::Upgrade | State::Auth | State::Open) {
                self.teardown(h, None);
            } else if conn.state == State::Closing {
                self.shut(h);
            }
        } else {
            let written = conn.advance(c.res as usize);
            let more = !conn.out.is_empty();
            let closing = conn.state == State::Closing;
            self.stats.messages_written += written;
            self.stats.writes += 1;
            self.stats.bytes_out += c.res as u64;
            self.lat.written(h, c.gen_, c.stamp);
            if more {
                self.mark_dirty(h);
            } else if closing {
                self.shut(h);
            }
        }
        self.maybe_close_slot(h);
    }

    fn on_closed(&mut self, r: usize, c: Completion) {
        let ctx = &mut self.rings[r];
        if let Some(slot) = ctx.conns.get_mut(c.slot as usize)
            && slot.as_ref().is_some_and(|conn| conn.gen_ == c.gen_)
        {
            if let Some(conn) = slot.take()
                && conn.refusal == 0
            {
                self.shared.admission.release(conn.ip, self.now);
            }
            ctx.live -= 1;
            self.stats.closed += 1;
            if self.full_warned {
                // Accepting had stopped with every ring full: this slot lets it resume.
                self.full_warned = false;
                self.accepting = r;
                self.arm_accepts();
            }
        }
    }

    pub(crate) fn mark_dirty(&mut self, h: u32) {
        if let Some(conn) = self.conn(h)
            && !conn.dirty
            && !conn.sending
        {
            conn.dirty = true;
            self.dirty.push(h);
        }
    }

    /// Queues bytes for a connection under its outbound cap ([`Conn::enqueue`]), and acts on
    /// the outcome: the write to issue, the drops to count, the close to make. A TLS
    /// connection's bytes are sealed into records here first (`tls.rs`); past the cap it is
    /// closed whatever the policy (sealed records cannot be dropped).
    pub(crate) fn enqueue(&mut self, h: u32, buf: &Rc<Bytes>, msgs: u32, is_reply: bool) {
        self.queue(h, buf, msgs, is_reply, true);
    }

    /// Queues records a TLS connection's rustls made on its own (handshake, tickets, alerts),
    /// as they are.
    pub(crate) fn enqueue_records(&mut self, h: u32, records: Rc<Bytes>) {
        self.queue(h, &records, 0, true, false);
    }

    fn queue(&mut self, h: u32, buf: &Rc<Bytes>, msgs: u32, is_reply: bool, seal: bool) {
        let cap = self.shared.config.limits.outbound_cap_bytes;
        // A reply past the cap means the client reads nothing at all: always a close.
        let mut drop_oldest = !is_reply && self.shared.slow == SlowConsumer::DropOldest;
        let Some(conn) = conn_of(&mut self.rings, h) else {
            return;
        };
        let sealed;
        let mut buf = buf;
        let mut over_cap = false;
        if let Some(tls) = conn.tls.as_deref_mut() {
            drop_oldest = false;
            if seal {
                // Checked before sealing: records sealed and then not sent would break the
                // stream for the close reason that follows.
                if conn.out_bytes + crate::tls::sealed_len(buf.len()) > cap {
                    over_cap = true;
                } else {
                    sealed = Rc::new(Bytes::from(crate::tls::seal(tls, buf)));
                    if sealed.is_empty() {
                        // Handshake not done: rustls sends it after the handshake's last flight.
                        return;
                    }
                    buf = &sealed;
                }
            }
        }
        let outcome = if over_cap {
            Enqueued::OverCap
        } else {
            conn.enqueue(buf, msgs, cap, drop_oldest)
        };
        match outcome {
            Enqueued::Queued {
                newly_dirty,
                dropped,
            } => {
                if newly_dirty {
                    self.dirty.push(h);
                }
                self.stats.cap_dropped_messages += dropped;
                if !is_reply {
                    self.stats.messages_out += msgs as u64;
                    self.stats.batches_out += 1;
                }
            }
            Enqueued::Dropped { dropped } => self.stats.cap_dropped_messages += dropped,
            Enqueued::OverCap => {
                let gen_ = conn.gen_;
                self.stats.cap_disconnects += 1;
                self.to_close.push((
                    h,
                    gen_,
                    Reason::new(
                        format!("slow consumer: more than {cap} bytes queued and unread"),
                        protocol::ws::close_code::POLICY,
                    ),
                ));
            }
        }
    }

    /// Issues one write per dirty connection, carrying everything it has queued.
    pub(crate) fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        let stamp = self.lat.stamp();
        for &h in &dirty {
            let (r, s) = split(h);
            if self.iov.len() + MAX_IOV > self.iov.capacity() {
                for ctx in &mut self.rings {
                    if let Err(e) = ctx.ring.submit() {
                        tracing::error!("io_uring submit failed: {e}");
                    }
                }
                self.iov.clear();
            }
            let ctx = &mut self.rings[r];
            let Some(conn) = ctx.conns.get_mut(s).and_then(|c| c.as_deref_mut()) else {
                continue;
            };
            conn.dirty = false;
            if conn.sending
                || conn.out.is_empty()
                || matches!(conn.state, State::ShutDown | State::Closed)
            {
                continue;
            }
            let n = conn.out.len().min(MAX_IOV);
            let gen_ = conn.gen_;
            if n == 1 {
                let data = conn.out.get(0).expect("checked non-empty").remaining();
                // SAFETY: the chunk stays in the connection's queue (and the connection in its
                // slot) until this send completes.
                unsafe {
                    ctx.ring
                        .send_at(s as u32, gen_, stamp, data.as_ptr(), data.len() as u32)
                };
            } else {
                let start = self.iov.len();
                for chunk in conn.out.iter().take(n) {
                    let data = chunk.remaining();
                    self.iov.push(libc::iovec {
                        iov_base: data.as_ptr() as *mut _,
                        iov_len: data.len(),
                    });
                }
                // SAFETY: the iovecs live in `self.iov`, which is neither moved nor cleared
                // before the rings are submitted; the chunks stay queued until completion.
                unsafe {
                    ctx.ring
                        .writev_at(s as u32, gen_, stamp, self.iov[start..].as_ptr(), n as u32)
                };
            }
            conn.sending = true;
            conn.inflight = n as u16;
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Closes a connection: leaves its rooms and key, tells the dispatchers, and writes the
    /// reason (if any) before shutting the socket.
    pub(crate) fn teardown(&mut self, h: u32, reason: Option<Reason>) {
        tracing::trace!(
            shard = self.id,
            handle = h,
            reason = reason.as_ref().map(|r| r.text.as_str()),
            "teardown"
        );
        let shard = self.id as u16;
        let Some(conn) = self.conn(h) else { return };
        if !matches!(conn.state, State::Upgrade | State::Auth | State::Open) {
            return;
        }
        let was_open = conn.state == State::Open;
        let gen_ = conn.gen_;
        if !self.recovers.is_empty() {
            self.recovers.remove(&conn_id(shard, h, gen_));
        }
        let Some(conn) = self.conn(h) else { return };
        let rooms = std::mem::take(&mut conn.rooms);
        let key = std::mem::take(&mut conn.key);
        let (mid, transport, prev_state) = (conn.mid, conn.transport, conn.state);
        conn.state = State::Closing;
        conn.partial = None;
        self.lat.closing(h, gen_);
        let mut room_names = Vec::new();
        for (idx, pos, _) in rooms {
            if let Some(room) = self.rooms.get(idx) {
                room_names.push(room.name.to_string());
            }
            self.leave_at(idx, pos);
        }
        if was_open {
            self.shared.keys.release(
                &key,
                Owner {
                    shard,
                    handle: h,
                    gen_,
                },
            );
            self.stats.authenticated = self.stats.authenticated.saturating_sub(1);
            self.send_up(Body::Session(Session {
                online: false,
                mid,
                key: key.to_string(),
                rooms: room_names,
                platform: String::new(),
                conn_id: conn_id(shard, h, gen_),
            }));
        }
        match reason {
            Some(reason) => {
                let bytes = match (transport, prev_state) {
                    (Transport::Ws, State::Upgrade) => match &reason.upgrade {
                        Some(e) => protocol::ws::reject_response(e),
                        None => protocol::ws::reject_response(&protocol::Error::Handshake(
                            reason.text.clone(),
                        )),
                    },
                    (Transport::Ws, _) => protocol::ws::close(reason.code, &reason.text),
                    (Transport::Tcp, _) => {
                        let mut out = Vec::new();
                        protocol::frame::encode(
                            &mut out,
                            1,
                            protocol::op::DISCONNECT_REPLY,
                            0,
                            reason.text.as_bytes(),
                        );
                        out
                    }
                };
                tracing::debug!(shard = self.id, handle = h, "closing: {}", reason.text);
                let conn = self.conn(h).expect("checked above");
                let bytes = match conn.tls.as_deref_mut() {
                    Some(tls) => {
                        crate::tls::seal_last(tls, (!reason.tls_alert_only).then_some(&bytes[..]))
                    }
                    None => bytes,
                };
                // The reason bypasses the cap: it is small and the last thing written.
                if !bytes.is_empty() {
                    conn.out.push_back(Chunk {
                        buf: Rc::new(Bytes::from(bytes)),
                        off: 0,
                        msgs: 0,
                    });
                }
                if conn.out.is_empty() {
                    // Nothing to say (a TLS handshake cut short): shut at once.
                    self.shut(h);
                } else {
                    self.set_deadline(h, self.now + CLOSING_GRACE_MS);
                    self.mark_dirty(h);
                }
            }
            None => self.shut(h),
        }
    }

    /// Shuts the socket down; the slot is closed once the receive and send have ended.
    fn shut(&mut self, h: u32) {
        let (r, s) = split(h);
        let Some(conn) = self.conn(h) else { return };
        if matches!(conn.state, State::ShutDown | State::Closed) {
            return;
        }
        conn.state = State::ShutDown;
        let keep = conn.inflight as usize;
        conn.out.truncate(keep);
        let gen_ = conn.gen_;
        // Only a live receive or send needs waking; otherwise the socket is simply closed.
        if conn.recv_armed || conn.sending {
            conn.shutting = true;
            self.rings[r].ring.shutdown(s as u32, gen_);
        }
        self.maybe_close_slot(h);
    }

    fn maybe_close_slot(&mut self, h: u32) {
        let (r, s) = split(h);
        let Some(conn) = self.conn(h) else { return };
        if conn.state == State::ShutDown && !conn.recv_armed && !conn.sending && !conn.shutting {
            conn.state = State::Closed;
            let gen_ = conn.gen_;
            self.rings[r].ring.close(s as u32, gen_);
        }
    }

    /// Moves a connection's deadline. The wheel entry is lazy: a later deadline is picked up
    /// when the current entry fires; an earlier one needs an entry of its own.
    pub(crate) fn set_deadline(&mut self, h: u32, deadline: u64) {
        let now = self.now;
        let Some(conn) = self.conn(h) else { return };
        conn.deadline = deadline;
        if deadline < conn.filed_for || conn.filed_for <= now {
            conn.filed_for = deadline;
            let gen_ = conn.gen_;
            self.wheel.insert((h, gen_), deadline);
        }
    }

    pub(crate) fn close_deferred(&mut self) {
        while let Some((h, gen_, reason)) = self.to_close.pop() {
            if self.conn_gen(h, gen_).is_some() {
                self.teardown(h, Some(reason));
            }
        }
    }

    pub(crate) fn send_up(&mut self, body: Body) {
        if !self.shared.uplink_on.load(Ordering::Relaxed)
            || self.shared.uplink.try_send(body).is_err()
        {
            self.stats.upstream_dropped += 1;
        }
    }

    fn on_tick(&mut self) {
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.advance(self.now, &mut expired);
        for &(h, gen_) in &expired {
            let now = self.now;
            let Some(conn) = self.conn_gen(h, gen_) else {
                continue;
            };
            if conn.deadline > now {
                if conn.filed_for <= now {
                    conn.filed_for = conn.deadline;
                    let d = conn.deadline;
                    self.wheel.insert((h, gen_), d);
                }
                continue;
            }
            match conn.state {
                State::Upgrade | State::Auth => {
                    self.stats.timeouts += 1;
                    self.teardown(
                        h,
                        Some(Reason::new(
                            "handshake timeout: no auth in time",
                            protocol::ws::close_code::POLICY,
                        )),
                    );
                }
                State::Open => {
                    self.stats.timeouts += 1;
                    self.teardown(
                        h,
                        Some(Reason::new(
                            "heartbeat timeout",
                            protocol::ws::close_code::GOING_AWAY,
                        )),
                    );
                }
                State::Closing => self.shut(h),
                State::ShutDown | State::Closed => {}
            }
        }
        expired.clear();
        // Keep a small scratch list, not the peak of a burst.
        if expired.capacity() > 4096 {
            expired = Vec::new();
        }
        self.expired = expired;
    }

    /// Handles one inbox message; returns the work it took (connections looked at, at least 1).
    fn on_msg(&mut self, msg: ShardMsg) -> usize {
        match msg {
            ShardMsg::Room { room, batch, last } => self.start_room_job(room, batch, last),
            ShardMsg::Recovered {
                handle,
                gen_,
                history,
            } => self.on_recovered(handle, gen_, history),
            ShardMsg::Keys { targets, op, batch } => {
                let work = targets.len().max(1);
                let tcp = Rc::new(batch.tcp());
                let ws = Rc::new(batch.ws());
                for (h, gen_) in targets {
                    let Some(conn) = self.conn_gen(h, gen_) else {
                        continue;
                    };
                    if !conn.is_open() || !conn.watches(op) {
                        continue;
                    }
                    let buf = if conn.transport == Transport::Tcp {
                        &tcp
                    } else {
                        &ws
                    };
                    self.enqueue(h, buf, batch.messages(), false);
                }
                self.close_deferred();
                return work;
            }
            ShardMsg::Broadcast {
                op,
                per_second,
                batch,
            } => self.broadcasts.push_back(crate::fanout::BroadcastJob {
                op,
                tcp: Rc::new(batch.tcp()),
                ws: Rc::new(batch.ws()),
                msgs: batch.messages(),
                per_second,
                ring: 0,
                slot: 0,
                started_ms: self.now,
                done: 0,
            }),
            ShardMsg::Evict { handle, gen_ } => {
                if self.conn_gen(handle, gen_).is_some() {
                    self.stats.evicted += 1;
                    self.teardown(
                        handle,
                        Some(Reason::new(
                            "replaced by a newer connection with the same key",
                            protocol::ws::close_code::POLICY,
                        )),
                    );
                }
            }
            ShardMsg::Drain => self.start_drain(),
        }
        1
    }

    /// Leaves room `idx` at position `pos` and fixes the position of the member that moved.
    pub(crate) fn leave_at(&mut self, idx: u32, pos: u32) {
        if let Some(moved) = self.rooms.leave(idx, pos)
            && let Some(conn) = self.conn(moved.handle)
            && let Some(entry) = conn.rooms.iter_mut().find(|(i, _, _)| *i == idx)
        {
            entry.1 = moved.pos;
        }
    }
}
