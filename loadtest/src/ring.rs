//! The load tester's ring: [`uring::Ring`] (where every unsafe ring call lives, behind its
//! contract) with the load tester's operations and completion decoding. A request's user data
//! packs what it is about ([`Op`], the low byte) and the connection's [`Tag`] (`op | tag <<
//! 32`): its slot and the slot's generation, so a completion of a connection that has ended
//! is told apart from one of the connection that reuses its slot.
//!
//! Sockets are created by the caller with `socket(2)` and bound, installed into the ring's
//! fixed-file table with [`Ring::install`] and their ordinary descriptors closed at once; every
//! operation then names the socket by its slot. A slot is shut down and closed with one
//! hard-linked pair ([`Ring::shutdown_and_close`]), so the close never overtakes the shutdown.
//! Dropping a ring frees its buffers: the owner must first have ended every request that points
//! at its own memory ([`Ring::cancel`]).

use std::io;
use std::os::fd::RawFd;

use uring::{RawCompletion, Timespec};

/// What a completion is about (the low byte of its user data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Connect = 1,
    ConnectTimeout = 2,
    Recv = 3,
    Send = 4,
    Shutdown = 5,
    Close = 6,
    Cancel = 7,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Connect,
            2 => Op::ConnectTimeout,
            3 => Op::Recv,
            4 => Op::Send,
            5 => Op::Shutdown,
            6 => Op::Close,
            7 => Op::Cancel,
            _ => return None,
        })
    }
}

/// A connection's name in its ring: the slot (a fixed-file index, below 65,536) and the
/// slot's generation (bumped each time a connection in the slot ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    pub slot: u32,
    pub gen_: u16,
}

impl Tag {
    pub fn new(slot: u32, gen_: u16) -> Tag {
        debug_assert!(slot <= u16::MAX as u32);
        Tag { slot, gen_ }
    }
}

fn user_data(op: Op, tag: Tag) -> u64 {
    op as u64 | (tag.slot as u64 & 0xffff) << 32 | (tag.gen_ as u64) << 48
}

/// One completion, decoded.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub op: Op,
    pub tag: Tag,
    pub res: i32,
    pub flags: u32,
}

impl Completion {
    fn decode(raw: RawCompletion) -> Option<Completion> {
        let ud = raw.user_data;
        Some(Completion {
            op: Op::from_u8(ud as u8)?,
            tag: Tag {
                slot: ((ud >> 32) & 0xffff) as u32,
                gen_: (ud >> 48) as u16,
            },
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
        let cq_entries = size.entries.saturating_mul(8);
        uring::Ring::new(size, cq_entries, eventfd).map(|ring| Ring { ring })
    }

    /// Installs sockets into consecutive slots from `first`. The caller closes its own
    /// descriptors afterwards: the table holds its own reference.
    pub fn install(&self, first: u32, fds: &[RawFd]) -> io::Result<()> {
        self.ring.install(first, fds)
    }

    /// Connects the socket in `slot`, failing with `-ECANCELED` after `timeout`.
    ///
    /// # Safety
    /// `addr` (of `len` bytes) and `timeout` must stay valid until the next submit.
    pub unsafe fn connect(
        &mut self,
        tag: Tag,
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
        timeout: *const Timespec,
    ) {
        let (connect, limit) = (
            user_data(Op::Connect, tag),
            user_data(Op::ConnectTimeout, tag),
        );
        // SAFETY: passed on to the caller.
        unsafe {
            self.ring
                .connect(tag.slot, addr, len, timeout, connect, limit)
        };
    }

    /// Arms a multishot receive on a slot, into the provided buffers.
    pub fn recv(&mut self, tag: Tag) {
        self.ring.recv(tag.slot, user_data(Op::Recv, tag));
    }

    /// Sends `len` bytes at `ptr` on a slot.
    ///
    /// # Safety
    /// The memory must stay valid and unchanged until the completion arrives.
    pub unsafe fn send(&mut self, tag: Tag, ptr: *const u8, len: u32) {
        let ud = user_data(Op::Send, tag);
        // SAFETY: passed on to the caller.
        unsafe { self.ring.send(tag.slot, ptr, len, ud) };
    }

    /// Closes a slot whose socket the server already closed (nothing is pending on it).
    pub fn close(&mut self, tag: Tag) {
        self.ring.close(tag.slot, user_data(Op::Close, tag));
    }

    /// Shuts a slot's socket down (ending its pending receive) and then closes the slot.
    pub fn shutdown_and_close(&mut self, tag: Tag) {
        self.ring.shutdown_and_close(
            tag.slot,
            user_data(Op::Shutdown, tag),
            user_data(Op::Close, tag),
        );
    }

    /// Cancels the request `op` has in flight on `slot` (found by its user data, so the kernel
    /// looks in one hash bucket: cancelling every request of a ring this way is linear, where
    /// one "cancel any" is quadratic in the requests in flight). An [`Op::Cancel`] completion
    /// follows.
    pub fn cancel(&mut self, op: Op, tag: Tag) {
        self.ring
            .cancel(user_data(op, tag), user_data(Op::Cancel, tag));
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
    /// # Safety
    /// The slice is valid only until [`Ring::recycle`] is called for `bid` and while the ring
    /// lives; the caller must not keep it past either.
    pub unsafe fn buffer(&self, bid: u16, len: usize) -> &'static mut [u8] {
        // SAFETY: passed on to the caller.
        unsafe { self.ring.buffer(bid, len) }
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.ring.recycle(bid);
    }
}
