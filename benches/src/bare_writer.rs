//! The bare writer: the machine's limit for room fan-out, against which the gateway is measured.
//!
//! It uses the gateway's own io_uring engine ([`gateway::uring`]: direct descriptors, provided
//! receive buffers, the same single-shot bounded accepts and several rings per thread) and the
//! same inbox hand-off, and does only what a fan-out cannot avoid: it answers auth (op 7 → op 8,
//! no token check) and heartbeats (op 2 → op 3), and writes each pushed batch's pre-encoded TCP
//! bytes to every connection, one write per connection carrying whatever queued meanwhile
//! (like the gateway), batches that queued up in its inbox merged into one (like the gateway).
//! No rooms, keys, timers, caps or WebSocket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::thread::JoinHandle;

use bytes::Bytes;
use gateway::inbox::{Inbox, ShardMsg};
use gateway::uring::{Completion, Op, Ring, RingSize};
use protocol::batch::Batch;
use protocol::{frame, op};

const ACCEPT_DEPTH: u32 = 16;
const MAX_IOV: usize = 64;
/// Inner bytes a merged batch may reach (the gateway's limit too).
const MERGE_MAX_BYTES: usize = 64 * 1024;

/// Counters shared with the harness.
#[derive(Default)]
pub struct Totals {
    pub authenticated: AtomicU64,
    pub writes: AtomicU64,
    pub messages: AtomicU64,
    pub written: AtomicU64,
}

pub struct BareWriter {
    inboxes: Vec<Arc<Inbox>>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub totals: Arc<Totals>,
}

impl BareWriter {
    /// Starts one pinned thread per core, all listening on `bind` (SO_REUSEPORT).
    pub fn start(cores: &[usize], bind: SocketAddr, size: RingSize) -> std::io::Result<BareWriter> {
        let mut addr = bind;
        let mut listeners = Vec::new();
        for _ in cores {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.bind(&addr.into())?;
            s.listen(65_535)?;
            addr = s.local_addr()?.as_socket().unwrap_or(addr);
            listeners.push(OwnedFd::from(s));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let totals = Arc::new(Totals::default());
        let inboxes: Vec<Arc<Inbox>> = cores
            .iter()
            .map(|_| Inbox::new(4096).map(Arc::new))
            .collect::<std::io::Result<_>>()?;
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for ((&core, listener), inbox) in cores.iter().zip(listeners).zip(&inboxes) {
            let (inbox, stop, totals, ready) = (
                inbox.clone(),
                stop.clone(),
                totals.clone(),
                ready_tx.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("bare-writer-{core}"))
                    .spawn(move || {
                        core_affinity::set_for_current(core_affinity::CoreId { id: core });
                        match Worker::new(listener, inbox, size, totals) {
                            Ok(mut w) => {
                                let _ = ready.send(Ok(()));
                                w.run(&stop);
                            }
                            Err(e) => {
                                let _ = ready.send(Err(e));
                            }
                        }
                    })?,
            );
        }
        for _ in cores {
            ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("a bare-writer thread died"))??;
        }
        Ok(BareWriter {
            inboxes,
            threads,
            addr,
            stop,
            totals,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Hands a batch to every thread, which writes its TCP bytes to all its connections.
    pub fn push(&self, batch: &Batch) {
        for inbox in &self.inboxes {
            let mut msg = ShardMsg::Room {
                room: Arc::from(""),
                batch: batch.clone(),
                last: 0,
            };
            while let Err(m) = inbox.push(msg) {
                msg = m;
                std::thread::yield_now();
            }
        }
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for i in &self.inboxes {
            i.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for BareWriter {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Conn {
    gen_: u16,
    authed: bool,
    recv_armed: bool,
    sending: bool,
    closing: bool,
    dirty: bool,
    inflight: usize,
    out: VecDeque<(Rc<Bytes>, usize, u32)>,
    pending: Vec<u8>,
}

struct RingCtx {
    ring: Ring,
    conns: Vec<Option<Box<Conn>>>,
    live: u32,
    accepts: u32,
    next_gen: u16,
}

struct Worker {
    listener: OwnedFd,
    inbox: Arc<Inbox>,
    size: RingSize,
    rings: Vec<RingCtx>,
    accepting: usize,
    dirty: Vec<(usize, usize)>,
    iov: Vec<libc::iovec>,
    completions: Vec<Completion>,
    totals: Arc<Totals>,
    writes: u64,
    messages: u64,
    written: u64,
    authed: u64,
}

impl Worker {
    fn new(
        listener: OwnedFd,
        inbox: Arc<Inbox>,
        size: RingSize,
        totals: Arc<Totals>,
    ) -> std::io::Result<Worker> {
        let mut w = Worker {
            listener,
            inbox,
            size,
            rings: Vec::new(),
            accepting: 0,
            dirty: Vec::new(),
            iov: Vec::with_capacity(64 * 1024),
            completions: Vec::new(),
            totals,
            writes: 0,
            messages: 0,
            written: 0,
            authed: 0,
        };
        w.add_ring()?;
        w.arm_accepts();
        Ok(w)
    }

    fn add_ring(&mut self) -> std::io::Result<usize> {
        self.rings.push(RingCtx {
            ring: Ring::new(self.size, self.inbox.fd())?,
            conns: Vec::new(),
            live: 0,
            accepts: 0,
            next_gen: 1,
        });
        Ok(self.rings.len() - 1)
    }

    fn arm_accepts(&mut self) {
        let fd = self.listener.as_raw_fd();
        loop {
            let ctx = &mut self.rings[self.accepting];
            while ctx.accepts < ACCEPT_DEPTH && ctx.live + ctx.accepts < self.size.slots {
                ctx.ring.accept(fd, Op::AcceptTcp);
                ctx.accepts += 1;
            }
            if ctx.accepts > 0 {
                return;
            }
            match self
                .rings
                .iter()
                .position(|c| c.live + c.accepts < self.size.slots)
            {
                Some(i) => self.accepting = i,
                None => match self.add_ring() {
                    Ok(i) => self.accepting = i,
                    Err(_) => return,
                },
            }
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let mut busy = false;
            // Batches that queued up while the writer was busy go out as one (as the gateway
            // merges a room's): one queue entry per connection per turn, not per push.
            let mut merged = Vec::new();
            let mut bytes = 0;
            while let Some(msg) = self.inbox.pop() {
                busy = true;
                if let ShardMsg::Room { batch, .. } = msg {
                    bytes += batch.tcp_len();
                    merged.push(batch);
                    if bytes >= MERGE_MAX_BYTES {
                        self.fan_out(&Batch::concat(&merged));
                        merged.clear();
                        bytes = 0;
                    }
                }
            }
            match merged.len() {
                0 => {}
                1 => self.fan_out(&merged[0]),
                _ => self.fan_out(&Batch::concat(&merged)),
            }
            self.flush();
            for r in 0..self.rings.len() {
                let mut cs = std::mem::take(&mut self.completions);
                let _ = self.rings[r].ring.reap(&mut cs);
                busy |= !cs.is_empty();
                for c in cs.drain(..) {
                    self.on_completion(r, c);
                }
                self.completions = cs;
            }
            self.flush();
            for ctx in &mut self.rings {
                let _ = ctx.ring.submit();
            }
            self.iov.clear();
            self.totals
                .writes
                .fetch_add(std::mem::take(&mut self.writes), Ordering::Relaxed);
            self.totals
                .messages
                .fetch_add(std::mem::take(&mut self.messages), Ordering::Relaxed);
            self.totals
                .written
                .fetch_add(std::mem::take(&mut self.written), Ordering::Relaxed);
            self.totals
                .authenticated
                .fetch_add(std::mem::take(&mut self.authed), Ordering::Relaxed);
            if !busy {
                self.inbox.sleeping.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if self.inbox.is_empty() {
                    self.inbox.wait(100);
                }
                self.inbox.sleeping.store(false, Ordering::SeqCst);
            }
        }
    }

    fn fan_out(&mut self, batch: &Batch) {
        let tcp = Rc::new(batch.tcp());
        for (r, ctx) in self.rings.iter_mut().enumerate() {
            for (s, c) in ctx.conns.iter_mut().enumerate() {
                let Some(c) = c.as_deref_mut() else { continue };
                if !c.authed || c.closing {
                    continue;
                }
                c.out.push_back((tcp.clone(), 0, batch.messages()));
                self.messages += batch.messages() as u64;
                if !c.dirty && !c.sending {
                    c.dirty = true;
                    self.dirty.push((r, s));
                }
            }
        }
    }

    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &(r, s) in &dirty {
            if self.iov.len() + MAX_IOV > self.iov.capacity() {
                for ctx in &mut self.rings {
                    let _ = ctx.ring.submit();
                }
                self.iov.clear();
            }
            let ctx = &mut self.rings[r];
            let Some(c) = ctx.conns[s].as_deref_mut() else {
                continue;
            };
            c.dirty = false;
            if c.sending || c.out.is_empty() || c.closing {
                continue;
            }
            let n = c.out.len().min(MAX_IOV);
            if n == 1 {
                let (b, off, _) = &c.out[0];
                // SAFETY: the bytes stay queued until the send completes.
                unsafe {
                    ctx.ring
                        .send(s as u32, c.gen_, b[*off..].as_ptr(), (b.len() - off) as u32)
                };
            } else {
                let start = self.iov.len();
                for (b, off, _) in c.out.iter().take(n) {
                    self.iov.push(libc::iovec {
                        iov_base: b[*off..].as_ptr() as *mut _,
                        iov_len: b.len() - off,
                    });
                }
                // SAFETY: the iovecs stay in `self.iov` until the rings are submitted.
                unsafe {
                    ctx.ring
                        .writev(s as u32, c.gen_, self.iov[start..].as_ptr(), n as u32)
                };
            }
            c.sending = true;
            c.inflight = n;
        }
    }

    fn reply(&mut self, r: usize, s: usize, bytes: Vec<u8>) {
        let Some(c) = self.rings[r].conns[s].as_deref_mut() else {
            return;
        };
        c.out.push_back((Rc::new(Bytes::from(bytes)), 0, 0));
        if !c.dirty && !c.sending {
            c.dirty = true;
            self.dirty.push((r, s));
        }
    }

    fn on_completion(&mut self, r: usize, c: Completion) {
        let s = c.slot as usize;
        match c.op {
            Op::AcceptTcp => {
                self.rings[r].accepts -= 1;
                if c.res >= 0 {
                    let ctx = &mut self.rings[r];
                    let slot = c.res as usize;
                    let gen_ = ctx.next_gen;
                    ctx.next_gen = ctx.next_gen.wrapping_add(1).max(1);
                    if ctx.conns.len() <= slot {
                        ctx.conns.resize_with(slot + 1, || None);
                    }
                    ctx.conns[slot] = Some(Box::new(Conn {
                        gen_,
                        authed: false,
                        recv_armed: true,
                        sending: false,
                        closing: false,
                        dirty: false,
                        inflight: 0,
                        out: VecDeque::new(),
                        pending: Vec::new(),
                    }));
                    ctx.live += 1;
                    ctx.ring.recv(slot as u32, gen_);
                }
                self.arm_accepts();
            }
            Op::Recv => {
                let bid = c.buffer();
                let ok = self.rings[r]
                    .conns
                    .get(s)
                    .and_then(|x| x.as_deref())
                    .is_some_and(|x| x.gen_ == c.gen_);
                if c.res > 0
                    && let Some(bid) = bid
                {
                    if ok {
                        let data = self.rings[r].ring.buffer(bid, c.res as usize).to_vec();
                        self.on_input(r, s, &data);
                    }
                    self.rings[r].ring.recycle(bid);
                }
                if !ok {
                    return;
                }
                let ctx = &mut self.rings[r];
                let conn = ctx.conns[s].as_deref_mut().expect("checked");
                if !c.more() {
                    conn.recv_armed = false;
                }
                if c.res == 0 || (c.res < 0 && c.res != -libc::ENOBUFS) {
                    conn.closing = true;
                } else if !conn.recv_armed {
                    conn.recv_armed = true;
                    ctx.ring.recv(s as u32, c.gen_);
                }
                self.maybe_close(r, s);
            }
            Op::Send => {
                let Some(conn) = self.rings[r]
                    .conns
                    .get_mut(s)
                    .and_then(|x| x.as_deref_mut())
                else {
                    return;
                };
                if conn.gen_ != c.gen_ {
                    return;
                }
                conn.sending = false;
                if c.res < 0 {
                    conn.closing = true;
                } else {
                    self.writes += 1;
                    let mut n = c.res as usize;
                    while n > 0 {
                        let Some((b, off, msgs)) = conn.out.front_mut() else {
                            break;
                        };
                        let left = b.len() - *off;
                        if n >= left {
                            n -= left;
                            self.written += *msgs as u64;
                            conn.out.pop_front();
                        } else {
                            *off += n;
                            n = 0;
                        }
                    }
                    if !conn.out.is_empty() && !conn.dirty {
                        conn.dirty = true;
                        self.dirty.push((r, s));
                    }
                }
                self.maybe_close(r, s);
            }
            Op::Close => {
                let ctx = &mut self.rings[r];
                if ctx
                    .conns
                    .get(s)
                    .and_then(|x| x.as_deref())
                    .is_some_and(|x| x.gen_ == c.gen_)
                {
                    ctx.conns[s] = None;
                    ctx.live -= 1;
                }
            }
            _ => {}
        }
    }

    fn maybe_close(&mut self, r: usize, s: usize) {
        let ctx = &mut self.rings[r];
        let Some(conn) = ctx.conns[s].as_deref_mut() else {
            return;
        };
        if conn.closing && !conn.recv_armed && !conn.sending {
            conn.recv_armed = true; // never again: the close is on its way
            ctx.ring.close(s as u32, conn.gen_);
        }
    }

    fn on_input(&mut self, r: usize, s: usize, data: &[u8]) {
        let Some(conn) = self.rings[r].conns[s].as_deref_mut() else {
            return;
        };
        let mut buf = std::mem::take(&mut conn.pending);
        buf.extend_from_slice(data);
        let mut off = 0;
        let mut replies = Vec::new();
        while let Ok(Some((h, _, used))) = frame::split(&buf[off..], frame::MAX_CLIENT_FRAME) {
            off += used;
            match h.op {
                op::AUTH => {
                    conn.authed = true;
                    self.authed += 1;
                    frame::encode(&mut replies, h.ver, op::AUTH_REPLY, h.seq, b"");
                }
                op::HEARTBEAT => frame::encode(
                    &mut replies,
                    h.ver,
                    op::HEARTBEAT_REPLY,
                    h.seq,
                    &0i32.to_be_bytes(),
                ),
                _ => {}
            }
        }
        buf.drain(..off);
        conn.pending = buf;
        if !replies.is_empty() {
            self.reply(r, s, replies);
        }
    }
}
