//! One worker thread: pinned to a core, with its own rings, opening its share of the
//! connections and running them until told to halt.
//!
//! A thread polls several rings (one per [`MAX_SLOTS_PER_RING`](crate::options::MAX_SLOTS_PER_RING)
//! connections) this way: one eventfd is registered on every ring of the thread; a loop turn
//! opens new connections (within the rate and in-flight budget), sends due heartbeats, then
//! reaps every ring without blocking; when a turn found nothing to do the thread sleeps in
//! `poll(2)` on the eventfd, at most until its next timer (and never more than 50 ms).
//!
//! Connection `k` of the thread first sits in ring `k / slots` at slot `k % slots`. When a
//! connection ends, its slot's generation is bumped at once (so every late completion of the
//! ended connection is recognised by its [`Tag`] and ignored, its buffer recycled) and the slot
//! becomes free when its close completes. Replacement connections (storms, churn, reconnects
//! after the server closed: `crate::disrupt`) take free slots; they wait in a queue ordered by
//! the time their backoff ends.
//!
//! Destinations: a table per worker, append-only (each address boxed, so a connect in flight
//! keeps pointing at it), starting with the run's targets. With `--nodes` a replacement goes
//! to a node of the latest list (`crate::nodes`), round-robin per worker, added to the table
//! the first time; each connection remembers its destination's index.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::SockAddr;
use uring::Timespec;

use crate::conn::{Conn, Extra, Sending, State};
use crate::dial;
use crate::disrupt::{self, Backoff, Orders, Reconnects, Stall, Storm};
use crate::live::{Live, Snapshot};
use crate::options::Transport;
use crate::plan::Plan;
use crate::read::{self, Counter, End};
use crate::ring::{Completion, Op, Ring, RingSize, Tag};
use crate::sequence::Gaps;
use crate::tally::Tally;
use crate::wire::{self, Rng};

/// Heartbeats and deadlines are checked this often.
const SCAN_MS: u64 = 250;
/// Longest sleep of an idle thread.
const MAX_SLEEP_MS: u64 = 50;
/// Sockets opened per loop turn at most (keeps the loop responsive during a ramp).
const OPEN_BATCH: u64 = 512;
/// Masked WebSocket heartbeat frames per thread (each with its own mask), used in turn.
const WS_HEARTBEATS: usize = 64;
/// Submission queue entries per ring (completion queue: 8x).
const RING_ENTRIES: u32 = 4096;
/// How long the teardown waits for cancelled requests to finish.
const TEARDOWN: Duration = Duration::from_secs(3);

/// What a worker needs to know.
pub struct Setup {
    pub index: usize,
    pub threads: usize,
    pub core: Option<core_affinity::CoreId>,
    pub plan: Arc<Plan>,
    pub heartbeat_ms: u64,
    pub connect_timeout: Duration,
    pub auth_timeout: Duration,
    pub inflight: u32,
    /// New connections per second for this thread; 0: unlimited.
    pub rate: f64,
    pub slots_per_ring: u32,
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    pub live: Arc<Live>,
    pub halt: Arc<AtomicBool>,
    pub orders: Arc<Orders>,
    pub storm: Option<Storm>,
    /// Connections this thread drops (and replaces) per second while churn is on.
    pub churn: f64,
    pub reconnect: bool,
    pub backoff: Backoff,
    pub stall: Option<Stall>,
    pub rcvbuf: u32,
    pub shared: Arc<crate::tally::Shared>,
    /// `--nodes`: where replacements go, and (with `server_backoff`) how long they wait.
    pub nodes: Option<Arc<crate::nodes::Nodes>>,
    pub server_backoff: bool,
}

/// What a worker hands back.
pub struct Outcome {
    pub tally: Tally,
    pub reconnects: Reconnects,
    pub gaps: Gaps,
    /// Connections waiting for their replacement when the run ended.
    pub waiting: u64,
    /// CPU seconds this thread used.
    pub cpu_secs: f64,
    pub rings: usize,
}

/// Why the worker ends a connection.
enum Why {
    Read(End),
    Eof,
    Reset,
    RecvError(i32),
    AuthTimeout,
}

struct RingCtx {
    ring: Ring,
    conns: Vec<Option<Conn>>,
    /// Each slot's generation (see the module comment).
    gens: Vec<u16>,
    /// Slots whose last connection's close has completed.
    free: Vec<u32>,
}

impl RingCtx {
    fn tag(&self, slot: u32) -> Tag {
        Tag::new(slot, self.gens[slot as usize])
    }
}

struct Worker {
    s: Setup,
    rings: Vec<RingCtx>,
    eventfd: OwnedFd,
    /// Connections this thread opens, and the next one to open.
    total: u64,
    next: u64,
    /// Connections between the start of connect and auth (or failure).
    pending: u32,
    tally: Tally,
    published: Snapshot,
    epoch: Instant,
    /// Destination addresses: the targets first, then nodes as reconnects find them (boxed
    /// and append-only: a `connect` in flight points at one).
    #[allow(
        clippy::vec_box,
        reason = "a connect in flight points into a SockAddr: boxes keep them in place as the table grows"
    )]
    dests: Vec<Box<SockAddr>>,
    dest_addrs: Vec<SocketAddr>,
    /// `Host` header value per destination.
    hosts: Vec<String>,
    transports: Vec<Transport>,
    /// Round-robin position over the node list (`--nodes`).
    node_rr: usize,
    connect_timeout: Timespec,
    hb_tcp: Box<[u8; wire::HEARTBEAT_LEN]>,
    hb_ws: Box<[[u8; wire::WS_HEARTBEAT_LEN]; WS_HEARTBEATS]>,
    hb_next: usize,
    rng: Rng,
    comps: Vec<Completion>,
    next_scan_ms: u64,
    /// Send buffers of connections that ended while their send was in flight, kept until the
    /// send completes.
    orphans: HashMap<(usize, Tag), Box<Extra>>,
    /// Replacements due: (when, connection id, attempt).
    queue: BinaryHeap<Reverse<(u64, u32, u8)>>,
    /// When each connection waiting for its replacement ended (ms since the worker started).
    ended_at: HashMap<u32, u64>,
    reconnects: Reconnects,
    gaps: Gaps,
    storms_done: u32,
    stalling: bool,
    /// Churn: drops owed (fractional), when they were last accrued, and where the round-robin
    /// walk over the slots stands.
    churn_owed: f64,
    churn_at_ms: Option<u64>,
    churn_cursor: (usize, usize),
}

/// Runs one worker to the end. An `Err` is a failure of the engine itself (a ring or an
/// eventfd could not be created); connection problems are counted, not returned.
pub fn run(s: Setup) -> Result<Outcome, String> {
    if let Some(core) = s.core
        && !core_affinity::set_for_current(core)
    {
        tracing::warn!(worker = s.index, core = core.id, "could not pin the worker");
    }
    let cpu0 = crate::cpu::thread_secs();
    let mut w = Worker::new(s)?;
    let result = w.run();
    let rings = w.rings.len();
    let waiting = w.ended_at.len() as u64;
    w.teardown();
    result?;
    Ok(Outcome {
        tally: std::mem::take(&mut w.tally),
        reconnects: std::mem::take(&mut w.reconnects),
        gaps: std::mem::take(&mut w.gaps),
        waiting,
        cpu_secs: crate::cpu::thread_secs() - cpu0,
        rings,
    })
}

fn timespec(d: Duration) -> Timespec {
    Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos())
}

impl Worker {
    fn new(s: Setup) -> Result<Worker, String> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut rng = Rng::seeded(s.index);
        let mut hb_ws = Box::new([[0u8; wire::WS_HEARTBEAT_LEN]; WS_HEARTBEATS]);
        for f in hb_ws.iter_mut() {
            *f = wire::ws_heartbeat(rng.mask());
        }
        let targets = &s.plan.targets;
        Ok(Worker {
            total: s.plan.count_for(s.index, s.threads),
            next: 0,
            pending: 0,
            rings: Vec::new(),
            eventfd,
            tally: Tally::new(s.shared.clone()),
            published: Snapshot::default(),
            epoch: Instant::now(),
            dests: targets
                .iter()
                .map(|t| Box::new(SockAddr::from(t.addr)))
                .collect(),
            dest_addrs: targets.iter().map(|t| t.addr).collect(),
            hosts: targets.iter().map(|t| t.addr.to_string()).collect(),
            transports: targets.iter().map(|t| t.transport).collect(),
            node_rr: s.index,
            connect_timeout: timespec(s.connect_timeout),
            hb_tcp: Box::new(wire::heartbeat()),
            hb_ws,
            hb_next: 0,
            rng,
            comps: Vec::with_capacity(4096),
            next_scan_ms: SCAN_MS,
            orphans: HashMap::new(),
            queue: BinaryHeap::new(),
            ended_at: HashMap::new(),
            reconnects: Reconnects::default(),
            gaps: Gaps::default(),
            storms_done: 0,
            stalling: false,
            churn_owed: 0.0,
            churn_at_ms: None,
            churn_cursor: (0, 0),
            s,
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn run(&mut self) -> Result<(), String> {
        while !self.s.halt.load(Ordering::Relaxed) {
            let now = self.now_ms();
            self.open_more(now)?;
            self.reopen(now);
            self.follow_orders(now);
            if now >= self.next_scan_ms {
                self.scan(now);
                self.next_scan_ms = now + SCAN_MS;
            }
            self.drain_eventfd();
            let mut handled = 0;
            for r in 0..self.rings.len() {
                let mut comps = std::mem::take(&mut self.comps);
                self.rings[r]
                    .ring
                    .reap(&mut comps)
                    .map_err(|e| format!("io_uring_enter: {e}"))?;
                handled += comps.len();
                for c in comps.drain(..) {
                    self.on_completion(r, c);
                }
                self.comps = comps;
            }
            // What the handlers queued goes to the kernel before any sleep.
            for ctx in &mut self.rings {
                ctx.ring
                    .submit()
                    .map_err(|e| format!("io_uring_enter: {e}"))?;
            }
            self.publish();
            if handled == 0 {
                let wait = self.sleep_ms(self.now_ms());
                if wait > 0 {
                    self.sleep(wait);
                }
            }
        }
        Ok(())
    }

    fn publish(&mut self) {
        if self.published != self.tally.live {
            self.s.live.add(&self.published, &self.tally.live);
            self.published = self.tally.live;
        }
    }

    /// How long an idle turn may sleep: until the next scan or the next connect the rate
    /// allows, at most [`MAX_SLEEP_MS`].
    fn sleep_ms(&self, now: u64) -> u64 {
        let mut wait = MAX_SLEEP_MS.min(self.next_scan_ms.saturating_sub(now));
        if self.next < self.total && self.pending < self.s.inflight {
            if self.s.rate > 0.0 {
                let at = (self.next as f64 / self.s.rate * 1000.0) as u64;
                wait = wait.min(at.saturating_sub(now));
            } else {
                wait = 0;
            }
        }
        if let Some(Reverse((due, _, _))) = self.queue.peek()
            && self.pending < self.s.inflight
        {
            wait = wait.min(due.saturating_sub(now));
        }
        wait
    }

    fn sleep(&self, ms: u64) {
        let mut pfd = libc::pollfd {
            fd: self.eventfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms as libc::c_int) };
    }

    fn drain_eventfd(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a u64 from a non-blocking eventfd.
        unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }

    fn tag(&self, r: usize, slot: u32) -> Tag {
        self.rings[r].tag(slot)
    }

    fn handle(&self, k: u64) -> (usize, u32) {
        let slots = self.s.slots_per_ring as u64;
        ((k / slots) as usize, (k % slots) as u32)
    }

    fn id_of(&self, k: u64) -> u64 {
        self.s.index as u64 + k * self.s.threads as u64
    }

    fn conn(&mut self, r: usize, slot: u32) -> Option<&mut Conn> {
        self.rings
            .get_mut(r)?
            .conns
            .get_mut(slot as usize)?
            .as_mut()
    }

    /// Opens the connections the rate and the in-flight cap allow now.
    fn open_more(&mut self, now: u64) -> Result<(), String> {
        if self.next >= self.total || self.pending >= self.s.inflight {
            return Ok(());
        }
        let mut allowed = self.total;
        if self.s.rate > 0.0 {
            allowed = allowed.min((now as f64 / 1000.0 * self.s.rate) as u64 + 1);
        }
        let mut budget = allowed
            .saturating_sub(self.next)
            .min((self.s.inflight - self.pending) as u64)
            .min(OPEN_BATCH);
        while budget > 0 {
            let (r, slot) = self.handle(self.next);
            if r == self.rings.len() {
                self.add_ring()?;
            }
            let room = self.s.slots_per_ring as u64 - slot as u64;
            let n = budget.min(room).min(self.total - self.next);
            self.open_batch(r, slot, n, now);
            self.next += n;
            budget -= n;
        }
        Ok(())
    }

    fn add_ring(&mut self) -> Result<(), String> {
        let first = self.rings.len() as u64 * self.s.slots_per_ring as u64;
        let slots = (self.total - first).min(self.s.slots_per_ring as u64) as u32;
        let size = RingSize {
            entries: RING_ENTRIES,
            slots,
            recv_buffers: self.s.recv_buffers,
            recv_buffer_size: self.s.recv_buffer_size,
        };
        let ring = Ring::new(size, self.eventfd.as_raw_fd()).map_err(|e| {
            format!(
                "creating ring {} ({slots} slots, {} receive buffers of {} bytes): {e}",
                self.rings.len(),
                size.recv_buffers,
                size.recv_buffer_size
            )
        })?;
        let mut conns = Vec::with_capacity(slots as usize);
        conns.resize_with(slots as usize, || None);
        self.rings.push(RingCtx {
            ring,
            conns,
            gens: vec![0; slots as usize],
            free: Vec::new(),
        });
        Ok(())
    }

    /// Creates `n` sockets for consecutive slots from `first` of ring `r`, installs them with
    /// one registration, closes their descriptors and submits their connects.
    fn open_batch(&mut self, r: usize, first: u32, n: u64, now: u64) {
        let mut sockets = Vec::with_capacity(n as usize);
        let mut fds = Vec::with_capacity(n as usize);
        for i in 0..n {
            let id = self.id_of(self.next + i);
            let spec = self.s.plan.spec(id);
            self.tally.live.attempted += 1;
            match dial::socket(&self.s.plan.addr(spec.target), spec.source, self.s.rcvbuf) {
                Ok(sock) => {
                    fds.push(sock.as_raw_fd());
                    sockets.push(Some((sock, spec.target)));
                }
                Err(e) => {
                    let kind = dial::errno_name(e.raw_os_error().unwrap_or(0));
                    self.tally.connect_error(&format!("socket: {kind}"));
                    self.tally.live.settled += 1;
                    fds.push(-1);
                    sockets.push(None);
                }
            }
        }
        if let Err(e) = self.rings[r].ring.install(first, &fds) {
            let kind = dial::errno_name(e.raw_os_error().unwrap_or(0));
            for s in sockets.iter_mut().filter(|s| s.is_some()) {
                *s = None;
                self.tally.connect_error(&format!("install: {kind}"));
                self.tally.live.settled += 1;
            }
        }
        for (i, s) in sockets.into_iter().enumerate() {
            // The table holds its own reference: the descriptor is closed here.
            let Some((_sock, target)) = s else { continue };
            let id = self.id_of(self.next + i as u64) as u32;
            let conn = self.new_conn(id, target, now);
            self.start_connect(r, first + i as u32, conn, target);
        }
    }

    fn new_conn(&self, id: u32, target: usize, now: u64) -> Conn {
        let deadline = (now + (self.s.connect_timeout + self.s.auth_timeout).as_millis() as u64)
            .min(u32::MAX as u64) as u32;
        let mut c = Conn::new(id, self.transports[target] == Transport::Ws, deadline);
        c.dest = target as u16;
        c
    }

    /// The destination of a replacement for connection `id` (first connected to `target`):
    /// the same target, or with `--nodes` the next node of the latest list for its transport.
    fn dest_for(&mut self, target: usize) -> usize {
        let Some(nodes) = &self.s.nodes else {
            return target;
        };
        let transport = self.transports[target];
        let list = nodes.current();
        let addrs = list.addrs(transport);
        if addrs.is_empty() {
            return target;
        }
        let addr = addrs[self.node_rr % addrs.len()];
        self.node_rr = self.node_rr.wrapping_add(1);
        if let Some(i) = (0..self.dests.len())
            .find(|&i| self.dest_addrs[i] == addr && self.transports[i] == transport)
        {
            return i;
        }
        if self.dests.len() >= u16::MAX as usize {
            return target;
        }
        self.dests.push(Box::new(SockAddr::from(addr)));
        self.dest_addrs.push(addr);
        self.hosts.push(addr.to_string());
        self.transports.push(transport);
        self.dests.len() - 1
    }

    /// Puts `conn` in `slot` (whose socket is installed) and submits its connect.
    fn start_connect(&mut self, r: usize, slot: u32, conn: Conn, target: usize) {
        self.rings[r].conns[slot as usize] = Some(conn);
        self.pending += 1;
        let tag = self.tag(r, slot);
        let dest = &*self.dests[target];
        // SAFETY: each boxed destination and `connect_timeout` live as long as the worker and
        // are never moved or changed (the table only grows).
        unsafe {
            self.rings[r].ring.connect(
                tag,
                dest.as_ptr() as *const libc::sockaddr,
                dest.len(),
                &self.connect_timeout,
            )
        };
    }

    /// Opens the replacements that are due, into free slots, within the in-flight budget.
    fn reopen(&mut self, now: u64) {
        while self.pending < self.s.inflight
            && let Some(&Reverse((due, id, attempt))) = self.queue.peek()
            && due <= now
        {
            let Some(r) = self.rings.iter().position(|c| !c.free.is_empty()) else {
                return; // closes still completing
            };
            self.queue.pop();
            let slot = self.rings[r].free.pop().expect("checked non-empty");
            self.reconnects.attempts += 1;
            let spec = self.s.plan.spec(id as u64);
            let dest = self.dest_for(spec.target);
            let opened = dial::socket(&self.dest_addrs[dest], spec.source, self.s.rcvbuf)
                .map_err(|e| ("socket", e))
                .and_then(|sock| {
                    self.rings[r]
                        .ring
                        .install(slot, &[sock.as_raw_fd()])
                        .map_err(|e| ("install", e))
                });
            if let Err((what, e)) = opened {
                let kind = dial::errno_name(e.raw_os_error().unwrap_or(0));
                self.tally.connect_error(&format!("{what}: {kind}"));
                self.rings[r].free.push(slot);
                self.schedule(id, attempt.saturating_add(1), now);
                continue;
            }
            let mut conn = self.new_conn(id, dest, now);
            conn.again = true;
            conn.retry = attempt;
            self.start_connect(r, slot, conn, dest);
        }
    }

    /// Queues the replacement of connection `id` after the backoff of `attempt`.
    fn schedule(&mut self, id: u32, attempt: u8, now: u64) {
        let r = self.rng.next_u64();
        let hints = match &self.s.nodes {
            Some(nodes) => {
                nodes.want_fresh();
                self.s
                    .server_backoff
                    .then(|| nodes.current().hints)
                    .flatten()
            }
            None => None,
        };
        let delay = match hints {
            Some(h) => h.delay_ms(attempt, r),
            None => self.s.backoff.delay_ms(attempt, r),
        };
        self.queue.push(Reverse((now + delay, id, attempt)));
        if let std::collections::hash_map::Entry::Vacant(e) = self.ended_at.entry(id) {
            e.insert(now);
            self.tally.live.reconnecting += 1;
        }
    }

    /// Carries out what the coordinator ordered: storms, churn, stalls.
    fn follow_orders(&mut self, now: u64) {
        let o = &self.s.orders;
        let storms = o.storms.load(Ordering::Relaxed);
        let churning = o.churning.load(Ordering::Relaxed);
        let stalled = o.stalled.load(Ordering::Relaxed);
        if storms > self.storms_done {
            self.storms_done = storms;
            if let Some(storm) = self.s.storm {
                self.storm(storm.share, now);
            }
        }
        if churning && self.s.churn > 0.0 {
            let last = *self.churn_at_ms.get_or_insert(now);
            self.churn_owed += (now - last) as f64 / 1000.0 * self.s.churn;
            self.churn_at_ms = Some(now);
            let n = self.churn_owed as u64;
            if n > 0 {
                self.churn_owed -= n as f64;
                self.churn_some(n, now);
            }
        } else {
            self.churn_at_ms = None;
        }
        if stalled != self.stalling
            && let Some(stall) = self.s.stall
        {
            self.stalling = stalled;
            self.set_stall(stall.share, stalled);
        }
    }

    fn open_slots(&self) -> Vec<(usize, u32)> {
        let mut v = Vec::new();
        for (r, ctx) in self.rings.iter().enumerate() {
            for (slot, c) in ctx.conns.iter().enumerate() {
                if c.as_ref().is_some_and(|c| c.state == State::Open) {
                    v.push((r, slot as u32));
                }
            }
        }
        v
    }

    fn storm(&mut self, share: f64, now: u64) {
        for (r, slot) in self.open_slots() {
            let id = self.rings[r].conns[slot as usize]
                .as_ref()
                .map_or(0, |c| c.id);
            if disrupt::chosen(id, share) {
                self.drop_conn(r, slot, now);
            }
        }
    }

    /// Drops `n` open connections, walking the slots round-robin from where the last call
    /// stopped.
    fn churn_some(&mut self, mut n: u64, now: u64) {
        let total: usize = self.rings.iter().map(|c| c.conns.len()).sum();
        let (mut r, mut slot) = self.churn_cursor;
        for _ in 0..total {
            if n == 0 {
                break;
            }
            if r >= self.rings.len() {
                (r, slot) = (0, 0);
            }
            if slot >= self.rings[r].conns.len() {
                (r, slot) = (r + 1, 0);
                continue;
            }
            let open = self.rings[r].conns[slot]
                .as_ref()
                .is_some_and(|c| c.state == State::Open);
            if open {
                self.drop_conn(r, slot as u32, now);
                n -= 1;
            }
            slot += 1;
        }
        self.churn_cursor = (r, slot);
    }

    /// The tester closes a connection; it is replaced after a backoff.
    fn drop_conn(&mut self, r: usize, slot: u32, now: u64) {
        let Some(conn) = self.release(r, slot) else {
            return;
        };
        self.reconnects.dropped += 1;
        self.tally.live.open -= 1;
        self.schedule(conn.id, 0, now);
    }

    fn set_stall(&mut self, share: f64, on: bool) {
        for (r, slot) in self.open_slots() {
            let tag = self.tag(r, slot);
            let ctx = &mut self.rings[r];
            let Some(conn) = ctx.conns[slot as usize].as_mut() else {
                continue;
            };
            if on && disrupt::chosen(conn.id, share) {
                conn.paused = true;
                self.reconnects.stalled += 1;
                if conn.recv_armed {
                    ctx.ring.cancel(Op::Recv, tag);
                }
            } else if !on && conn.paused {
                conn.paused = false;
                if !conn.recv_armed {
                    conn.recv_armed = true;
                    ctx.ring.recv(tag);
                }
            }
        }
    }

    /// Takes a connection out of its slot and closes the slot (shut down first if a request
    /// is in flight on it). The slot's generation moves on at once; the slot is free again
    /// when the close completes.
    fn release(&mut self, r: usize, slot: u32) -> Option<Conn> {
        let ctx = &mut self.rings[r];
        let mut conn = ctx.conns[slot as usize].take()?;
        let tag = ctx.tag(slot);
        ctx.gens[slot as usize] = tag.gen_.wrapping_add(1);
        if conn.sending == Sending::Owned
            && let Some(extra) = conn.extra.take()
        {
            self.orphans.insert((r, tag), extra);
        }
        if conn.recv_armed || conn.sending != Sending::Nothing {
            ctx.ring.shutdown_and_close(tag);
        } else {
            ctx.ring.close(tag);
        }
        Some(conn)
    }

    fn on_completion(&mut self, r: usize, c: Completion) {
        let ctx = &mut self.rings[r];
        if ctx.gens.get(c.tag.slot as usize) != Some(&c.tag.gen_) {
            // A late completion of a connection that has ended.
            match c.op {
                Op::Recv => {
                    if let Some(bid) = c.buffer() {
                        ctx.ring.recycle(bid);
                    }
                }
                Op::Send => {
                    self.orphans.remove(&(r, c.tag));
                }
                Op::Close => ctx.free.push(c.tag.slot),
                _ => {}
            }
            return;
        }
        let slot = c.tag.slot;
        match c.op {
            Op::Connect => self.on_connect(r, slot, c.res),
            Op::Recv => self.on_recv(r, c),
            Op::Send => self.on_send(r, slot, c.res),
            Op::ConnectTimeout | Op::Shutdown | Op::Close | Op::Cancel => {}
        }
    }

    fn on_connect(&mut self, r: usize, slot: u32, res: i32) {
        let now = self.now_ms();
        let auth_deadline = (now + self.s.auth_timeout.as_millis() as u64) as u32;
        let tag = self.tag(r, slot);
        let Some(conn) = self.conn(r, slot) else {
            return;
        };
        if res < 0 {
            let again = conn.again;
            self.tally.connect_error(&dial::connect_error_kind(-res));
            self.pending -= 1;
            let conn = self.release(r, slot).expect("checked above");
            if !again {
                self.tally.live.settled += 1;
            }
            self.replace(&conn, now);
            return;
        }
        conn.due_ms = auth_deadline;
        conn.recv_armed = true;
        let (id, ws, dest) = (conn.id, conn.ws, conn.dest as usize);
        if !conn.again {
            self.tally.live.established += 1;
        }
        self.tally.live.open += 1;
        self.rings[r].ring.recv(tag);
        let out = if ws {
            let key = wire::ws_key(&mut self.rng);
            let req = wire::ws_upgrade(&self.hosts[dest], &key);
            let conn = self.conn(r, slot).expect("checked above");
            conn.state = State::Upgrading;
            conn.extra().ws_key = key;
            req
        } else {
            let auth = wire::auth(&self.s.plan.token(id as u64));
            self.conn(r, slot).expect("checked above").state = State::Authing;
            auth
        };
        self.send_owned(r, slot, out);
    }

    /// Queues the replacement of a connection that ended, if this run replaces them.
    fn replace(&mut self, conn: &Conn, now: u64) {
        if !self.s.reconnect || self.s.halt.load(Ordering::Relaxed) {
            return;
        }
        let attempt = if conn.state == State::Open {
            0
        } else {
            conn.retry.saturating_add(1)
        };
        self.schedule(conn.id, attempt, now);
    }

    /// Sends bytes owned by the connection (its `Extra::out`), which must not be sending.
    fn send_owned(&mut self, r: usize, slot: u32, bytes: Vec<u8>) {
        let tag = self.tag(r, slot);
        let ctx = &mut self.rings[r];
        let Some(conn) = ctx.conns[slot as usize].as_mut() else {
            return;
        };
        debug_assert_eq!(conn.sending, Sending::Nothing);
        conn.sending = Sending::Owned;
        conn.send_off = 0;
        let extra = conn.extra();
        extra.out = bytes;
        let (ptr, len) = (extra.out.as_ptr(), extra.out.len() as u32);
        // SAFETY: `out` is not touched until the send completes; if the connection ends
        // first, its Extra moves to `orphans` (the heap buffer does not move) until then.
        unsafe { ctx.ring.send(tag, ptr, len) };
    }

    fn send_auth(&mut self, r: usize, slot: u32) {
        let Some(conn) = self.conn(r, slot) else {
            return;
        };
        let id = conn.id as u64;
        let frame = wire::auth(&self.s.plan.token(id));
        let bytes = wire::ws_masked(&frame, self.rng.mask());
        self.send_owned(r, slot, bytes);
    }

    fn on_recv(&mut self, r: usize, c: Completion) {
        let bid = c.buffer();
        let more = c.more();
        let slot = c.tag.slot;
        let ctx = &mut self.rings[r];
        let Some(conn) = ctx.conns[slot as usize].as_mut() else {
            if let Some(bid) = bid {
                ctx.ring.recycle(bid);
            }
            return;
        };
        if !more {
            conn.recv_armed = false;
        }
        if c.res > 0 {
            let Some(bid) = bid else {
                self.end(r, slot, Why::RecvError(libc::ENOBUFS));
                return;
            };
            self.tally.live.bytes += c.res as u64;
            if !conn.ws {
                self.tally.live.frames += 1;
            }
            // SAFETY: the slice is used only until the recycle below.
            let data = unsafe { ctx.ring.buffer(bid, c.res as usize) };
            let v = read::on_bytes(
                conn,
                data,
                &mut Counter::with_gaps(&mut self.tally, &mut self.gaps),
            );
            ctx.ring.recycle(bid);
            if v.upgraded {
                if conn.sending == Sending::Nothing {
                    self.send_auth(r, slot);
                } else {
                    conn.auth_queued = true;
                }
            }
            if v.authed {
                self.authenticated(r, slot);
            }
            if let Some(end) = v.end {
                self.end(r, slot, Why::Read(end));
                return;
            }
        } else if c.res == 0 {
            self.end(r, slot, Why::Eof);
            return;
        } else {
            match -c.res {
                libc::ENOBUFS => self.tally.recv_no_buffer += 1,
                libc::ECONNRESET => return self.end(r, slot, Why::Reset),
                libc::ECANCELED => return,
                e => return self.end(r, slot, Why::RecvError(e)),
            }
        }
        if !more
            && let Some(conn) = self.conn(r, slot)
            && !conn.paused
        {
            conn.recv_armed = true;
            self.rings[r].ring.recv(c.tag);
        }
    }

    fn authenticated(&mut self, r: usize, slot: u32) {
        let now_ms = self.now_ms();
        let due = (now_ms + self.s.heartbeat_ms).min(u32::MAX as u64) as u32;
        self.pending -= 1;
        let Some(conn) = self.conn(r, slot) else {
            return;
        };
        conn.due_ms = due;
        conn.shrink();
        let (again, id, dest) = (conn.again, conn.id, conn.dest as usize);
        if again {
            self.reconnects.reconnected += 1;
            self.tally.live.reconnected += 1;
            *self
                .reconnects
                .by_node
                .entry(self.dest_addrs[dest].to_string())
                .or_default() += 1;
            if let Some(at) = self.ended_at.remove(&id) {
                self.reconnects.record(now_ms.saturating_sub(at));
                self.tally.live.reconnecting -= 1;
            }
        } else {
            self.tally.authenticated(Instant::now());
            self.tally.live.settled += 1;
        }
    }

    fn on_send(&mut self, r: usize, slot: u32, res: i32) {
        let tag = self.tag(r, slot);
        let ctx = &mut self.rings[r];
        let Some(conn) = ctx.conns[slot as usize].as_mut() else {
            return;
        };
        let (ptr, len) = match conn.sending {
            Sending::Nothing => return,
            Sending::Owned => {
                let out = &conn.extra().out;
                (out.as_ptr(), out.len())
            }
            Sending::TcpHeartbeat => (self.hb_tcp.as_ptr(), self.hb_tcp.len()),
            Sending::WsHeartbeat(i) => {
                let f = &self.hb_ws[i as usize];
                (f.as_ptr(), f.len())
            }
        };
        if res < 0 {
            conn.sending = Sending::Nothing;
            match -res {
                // The server closed: the receive side reports it.
                libc::EPIPE | libc::ECONNRESET | libc::ECANCELED => {}
                e => self.tally.error(&format!("send: {}", dial::errno_name(e))),
            }
            return;
        }
        let off = conn.send_off as usize + res as usize;
        if off < len {
            conn.send_off = off as u16;
            // SAFETY: the same buffer as the send that just completed, still untouched.
            unsafe { ctx.ring.send(tag, ptr.add(off), (len - off) as u32) };
            return;
        }
        let was_owned = conn.sending == Sending::Owned;
        conn.sending = Sending::Nothing;
        conn.send_off = 0;
        if was_owned {
            conn.extra().out = Vec::new();
        }
        if conn.auth_queued {
            conn.auth_queued = false;
            self.send_auth(r, slot);
        } else {
            conn.shrink();
        }
    }

    /// Ends a connection: counts why, closes its slot, and queues its replacement if this run
    /// replaces them.
    fn end(&mut self, r: usize, slot: u32, why: Why) {
        let now = self.now_ms();
        let Some(conn) = self.release(r, slot) else {
            return;
        };
        match &why {
            Why::Read(End::Server(reason)) => self.tally.closed_by_server(reason),
            Why::Read(End::Malformed(what)) => self.tally.malformed(what),
            Why::Read(End::Handshake(what)) => self.tally.error(&format!("ws_handshake: {what}")),
            Why::Eof => self.tally.closed_by_server("eof"),
            Why::Reset => self.tally.closed_by_server("reset"),
            Why::RecvError(e) => self.tally.error(&format!("recv: {}", dial::errno_name(*e))),
            Why::AuthTimeout => self.tally.error(if conn.state == State::Upgrading {
                "ws_upgrade_timeout"
            } else {
                "auth_timeout"
            }),
        }
        if conn.state != State::Open {
            if !conn.again {
                self.tally.live.settled += 1;
            }
            self.pending -= 1;
        }
        if conn.state != State::Connecting {
            self.tally.live.open -= 1;
        }
        self.replace(&conn, now);
    }

    /// Sends due heartbeats and ends connections past their auth deadline.
    fn scan(&mut self, now: u64) {
        let mut late = Vec::new();
        for (r, ctx) in self.rings.iter_mut().enumerate() {
            for (slot, c) in ctx.conns.iter_mut().enumerate() {
                let Some(conn) = c else { continue };
                if conn.due_ms as u64 > now {
                    continue;
                }
                match conn.state {
                    // The linked timeout ends a connect.
                    State::Connecting => {}
                    State::Upgrading | State::Authing => late.push((r, slot as u32)),
                    State::Open => {
                        if conn.sending != Sending::Nothing {
                            continue; // retried at the next scan
                        }
                        let (ptr, len) = if conn.ws {
                            let i = self.hb_next;
                            self.hb_next = (i + 1) % WS_HEARTBEATS;
                            conn.sending = Sending::WsHeartbeat(i as u8);
                            (self.hb_ws[i].as_ptr(), self.hb_ws[i].len())
                        } else {
                            conn.sending = Sending::TcpHeartbeat;
                            (self.hb_tcp.as_ptr(), self.hb_tcp.len())
                        };
                        conn.send_off = 0;
                        conn.due_ms = (now + self.s.heartbeat_ms).min(u32::MAX as u64) as u32;
                        self.tally.heartbeats_sent += 1;
                        let tag = Tag::new(slot as u32, ctx.gens[slot]);
                        // SAFETY: the heartbeat frames live in the worker, which outlives every
                        // send (the teardown waits for them).
                        unsafe { ctx.ring.send(tag, ptr, len as u32) };
                    }
                }
            }
        }
        for (r, slot) in late {
            self.end(r, slot, Why::AuthTimeout);
        }
    }

    /// Cancels everything in flight and waits for it to end, so no request still points at
    /// memory about to be freed. If that does not happen in time, the memory is leaked.
    fn teardown(&mut self) {
        let mut asked = 0usize;
        for (r, ctx) in self.rings.iter_mut().enumerate() {
            for (slot, c) in ctx.conns.iter().enumerate() {
                let Some(conn) = c else { continue };
                let tag = Tag::new(slot as u32, ctx.gens[slot]);
                if conn.state == State::Connecting {
                    ctx.ring.cancel(Op::Connect, tag);
                    asked += 1;
                }
                if conn.recv_armed {
                    ctx.ring.cancel(Op::Recv, tag);
                    asked += 1;
                }
                if conn.sending != Sending::Nothing {
                    ctx.ring.cancel(Op::Send, tag);
                    asked += 1;
                }
            }
            for &(_, tag) in self.orphans.keys().filter(|(o, _)| *o == r) {
                ctx.ring.cancel(Op::Send, tag);
                asked += 1;
            }
        }
        let deadline = Instant::now() + TEARDOWN;
        let mut answered = 0;
        let mut quiet_turns = 0;
        let mut comps = Vec::new();
        while Instant::now() < deadline {
            let mut seen = 0;
            for ctx in &mut self.rings {
                if ctx.ring.reap(&mut comps).is_err() {
                    break;
                }
                seen += comps.len();
                for c in comps.drain(..) {
                    match c.op {
                        Op::Cancel => answered += 1,
                        Op::Recv => {
                            if let Some(bid) = c.buffer() {
                                ctx.ring.recycle(bid);
                            }
                        }
                        _ => {}
                    }
                }
            }
            if answered >= asked && seen == 0 {
                quiet_turns += 1;
                if quiet_turns >= 2 {
                    self.publish();
                    return;
                }
            } else {
                quiet_turns = 0;
            }
            if seen == 0 {
                self.sleep(2);
            }
        }
        tracing::warn!(
            worker = self.s.index,
            "in-flight requests did not end in time; leaking their memory"
        );
        self.publish();
        std::mem::forget(std::mem::take(&mut self.rings));
        std::mem::forget(std::mem::take(&mut self.orphans));
        std::mem::forget(std::mem::replace(&mut self.hb_tcp, Box::new([0; 16])));
        std::mem::forget(std::mem::replace(
            &mut self.hb_ws,
            Box::new([[0; wire::WS_HEARTBEAT_LEN]; WS_HEARTBEATS]),
        ));
    }
}
