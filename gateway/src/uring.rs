//! The gateway's ring: [`uring::Ring`] (where every unsafe ring call lives, behind its contract)
//! with the gateway's operations and completion decoding. A request's user data packs what it
//! is about ([`Op`], the low byte), the slot's generation and the slot (`op | gen << 8 |
//! slot << 32`), so a completion for a slot that was closed and reused is recognised.
//!
//! Two io_uring facts shape how the gateway uses its rings:
//!
//! - Accepts are **single-shot**, and a shard keeps at most (free slots) of them in flight.
//!   io_uring accepts a connection before it allocates its slot and resets the connection when
//!   the table is full; a multishot accept, run as deferred task work, drains the whole listen
//!   queue in one go, so only a bounded number of single-shot accepts keeps that from happening.
//! - A shutdown on a fixed slot runs in an io-wq worker and resolves the slot only then, so a
//!   slot is closed only after its [`Ring::shutdown`] completed, never right behind it: a close
//!   queued behind an unlinked shutdown can free the slot first, and the shutdown then hits the
//!   next connection accepted into it.

use std::io;
use std::os::fd::RawFd;

use uring::RawCompletion;

/// What a completion is about (the low byte of its user data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    AcceptTcp = 1,
    AcceptWs = 2,
    Recv = 3,
    Send = 4,
    Shutdown = 5,
    Close = 6,
    Cancel = 7,
    AcceptWss = 8,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::AcceptTcp,
            2 => Op::AcceptWs,
            3 => Op::Recv,
            4 => Op::Send,
            5 => Op::Shutdown,
            6 => Op::Close,
            7 => Op::Cancel,
            8 => Op::AcceptWss,
            _ => return None,
        })
    }
}

/// Packs an op, a slot and the slot's generation into a completion's user data.
pub fn user_data(op: Op, slot: u32, gen_: u16) -> u64 {
    op as u64 | (gen_ as u64) << 8 | (slot as u64) << 32
}

/// One completion, decoded.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub op: Op,
    pub slot: u32,
    pub gen_: u16,
    pub res: i32,
    pub flags: u32,
}

impl Completion {
    fn decode(raw: RawCompletion) -> Option<Completion> {
        let ud = raw.user_data;
        Some(Completion {
            op: Op::from_u8(ud as u8)?,
            slot: (ud >> 32) as u32,
            gen_: (ud >> 8) as u16,
            res: raw.res,
            flags: raw.flags,
        })
    }
    /// The multishot request stays armed.
    pub fn more(&self) -> bool {
        uring::more(self.flags)
    }
    /// The provided buffer this completion filled.
    pub fn buffer(&self) -> Option<u16> {
        uring::buffer(self.flags)
    }
}

/// Sizes of one ring.
pub use uring::Sizes as RingSize;

/// One io_uring with its direct-descriptor table and provided receive buffers.
pub struct Ring {
    ring: uring::Ring,
}

impl Ring {
    pub fn new(size: RingSize, eventfd: RawFd) -> io::Result<Ring> {
        let cq_entries = size.entries.saturating_mul(4);
        uring::Ring::new(size, cq_entries, eventfd).map(|ring| Ring { ring })
    }

    /// Queues one accept on `listener` into a slot the kernel allocates.
    pub fn accept(&mut self, listener: RawFd, op: Op) {
        self.ring.accept(listener, user_data(op, 0, 0));
    }

    /// Cancels every accept queued with `op`.
    pub fn cancel_accepts(&mut self, op: Op) {
        self.ring
            .cancel_all(user_data(op, 0, 0), user_data(Op::Cancel, 0, 0));
    }

    /// Arms a multishot receive on a slot, into the provided buffers.
    pub fn recv(&mut self, slot: u32, gen_: u16) {
        self.ring.recv(slot, user_data(Op::Recv, slot, gen_));
    }

    /// Sends `len` bytes at `ptr` on a slot.
    ///
    /// # Safety
    /// The memory must stay valid and unchanged until the completion arrives.
    pub unsafe fn send(&mut self, slot: u32, gen_: u16, ptr: *const u8, len: u32) {
        let ud = user_data(Op::Send, slot, gen_);
        // SAFETY: passed on to the caller.
        unsafe { self.ring.send(slot, ptr, len, ud) };
    }

    /// Writes the buffers described by `iov[..n]` on a slot.
    ///
    /// # Safety
    /// The iovec array must stay valid until the next submit; the memory it points at until
    /// the completion arrives.
    pub unsafe fn writev(&mut self, slot: u32, gen_: u16, iov: *const libc::iovec, n: u32) {
        let ud = user_data(Op::Send, slot, gen_);
        // SAFETY: passed on to the caller.
        unsafe { self.ring.writev(slot, iov, n, ud) };
    }

    /// Shuts both directions of a slot's socket: its pending receive ends, its pending send fails.
    pub fn shutdown(&mut self, slot: u32, gen_: u16) {
        self.ring
            .shutdown(slot, user_data(Op::Shutdown, slot, gen_));
    }

    /// Closes a slot (the socket, and the slot becomes free for accept).
    pub fn close(&mut self, slot: u32, gen_: u16) {
        self.ring.close(slot, user_data(Op::Close, slot, gen_));
    }

    /// Submits what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.ring.submit()
    }

    /// Submits what is queued, runs the ring's deferred work, and appends every completion
    /// ready now to `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        self.ring.reap(out, Completion::decode)
    }

    /// The bytes the kernel received into buffer `bid`.
    ///
    /// The slice stays valid until [`Ring::recycle`] is called for `bid` (and while the ring
    /// lives); the caller must not keep it past that.
    pub fn buffer(&self, bid: u16, len: usize) -> &'static mut [u8] {
        // SAFETY: the condition is this method's documented contract; the gateway consumes a
        // buffer's bytes before it recycles the buffer.
        unsafe { self.ring.buffer(bid, len) }
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.ring.recycle(bid);
    }

    pub fn fd(&self) -> RawFd {
        self.ring.fd()
    }
}
