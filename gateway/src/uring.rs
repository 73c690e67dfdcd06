//! The gateway's ring: [`uring::Ring`] (where every unsafe ring call lives, behind its contract)
//! with the gateway's operations and completion decoding. A request's user data packs what it
//! is about ([`Op`], the low byte), the slot's generation, the slot (20 bits: a ring has at most
//! 2^20 slots) and, for sends, when the send was submitted (a 20-bit stamp, the write-latency
//! histogram's clock: `op | gen << 8 | slot << 24 | stamp << 44`), so a completion for a slot
//! that was closed and reused is recognised, and a send's latency needs no per-connection state.
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

/// Bits of a slot in the user data (`engine.slots_per_ring` is at most 2^20).
const SLOT_BITS: u32 = 20;
/// Bits of a send's stamp in the user data ([`Completion::stamp`]).
pub const STAMP_BITS: u32 = 20;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;

/// Packs an op, a slot and the slot's generation into a completion's user data.
pub fn user_data(op: Op, slot: u32, gen_: u16) -> u64 {
    debug_assert!(u64::from(slot) <= SLOT_MASK, "slot {slot} past 20 bits");
    op as u64 | (gen_ as u64) << 8 | (slot as u64 & SLOT_MASK) << 24
}

/// [`user_data`] with a stamp (its low [`STAMP_BITS`] bits) returned in the completion.
pub fn stamped(op: Op, slot: u32, gen_: u16, stamp: u32) -> u64 {
    user_data(op, slot, gen_) | (u64::from(stamp) & STAMP_MASK) << (24 + SLOT_BITS)
}

/// One completion, decoded.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub op: Op,
    pub slot: u32,
    pub gen_: u16,
    pub res: i32,
    pub flags: u32,
    /// What the request was stamped with ([`Ring::send_at`], [`Ring::writev_at`]; 0 for the
    /// rest), modulo 2^[`STAMP_BITS`].
    pub stamp: u32,
}

impl Completion {
    fn decode(raw: RawCompletion) -> Option<Completion> {
        let ud = raw.user_data;
        Some(Completion {
            op: Op::from_u8(ud as u8)?,
            slot: ((ud >> 24) & SLOT_MASK) as u32,
            gen_: (ud >> 8) as u16,
            res: raw.res,
            flags: raw.flags,
            stamp: (ud >> (24 + SLOT_BITS)) as u32,
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

/// Accepts in flight that can carry their peer's address (more are queued without one).
const PEER_BUFS: usize = 64;

/// Where the kernel writes the peer address of each accept in flight: fixed storage (it must
/// not move while the accept is pending), one entry per accept, its index in the completion's
/// slot field.
struct PeerTable {
    addrs: Box<[(libc::sockaddr_storage, libc::socklen_t)]>,
    free: Vec<u16>,
    /// The listener each accept op was queued on (for cancelling by descriptor).
    listeners: Vec<(Op, RawFd)>,
}

impl PeerTable {
    fn new() -> PeerTable {
        PeerTable {
            // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) value.
            addrs: (0..PEER_BUFS)
                .map(|_| (unsafe { std::mem::zeroed() }, 0))
                .collect(),
            free: (0..PEER_BUFS as u16).rev().collect(),
            listeners: Vec::new(),
        }
    }
}

impl Drop for PeerTable {
    fn drop(&mut self) {
        // An accept still pending when the ring goes could be completed by the kernel after
        // the ring's descriptor is closed: leave its address storage (8 KiB) to it.
        if self.free.len() < PEER_BUFS {
            std::mem::forget(std::mem::take(&mut self.addrs));
        }
    }
}

/// Reads a peer address the kernel wrote.
fn peer_of(addr: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<std::net::IpAddr> {
    let len = len as usize;
    match addr.ss_family as i32 {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family and length say the storage holds a sockaddr_in.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            Some(std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into())
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family and length say the storage holds a sockaddr_in6.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            // A v4 client on a dual-stack listener counts as its v4 address.
            Some(ip.to_ipv4_mapped().map_or(ip.into(), Into::into))
        }
        _ => None,
    }
}

/// One io_uring with its direct-descriptor table and provided receive buffers.
pub struct Ring {
    ring: uring::Ring,
    peers: PeerTable,
}

impl Ring {
    pub fn new(size: RingSize, eventfd: RawFd) -> io::Result<Ring> {
        let cq_entries = size.entries.saturating_mul(4);
        uring::Ring::new(size, cq_entries, eventfd).map(|ring| Ring {
            ring,
            peers: PeerTable::new(),
        })
    }

    /// Queues one accept on `listener` into a slot the kernel allocates. Its completion's
    /// peer address is read with [`Ring::take_peer`].
    pub fn accept(&mut self, listener: RawFd, op: Op) {
        if !self.peers.listeners.iter().any(|&(o, _)| o == op) {
            self.peers.listeners.push((op, listener));
        }
        match self.peers.free.pop() {
            Some(i) => {
                let (addr, len) = &mut self.peers.addrs[i as usize];
                *len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                // SAFETY: the entry is taken off the free list until take_peer() reads the
                // completion, and the boxed table never moves or shrinks while the ring lives.
                unsafe {
                    self.ring.accept_addr(
                        listener,
                        addr as *mut _ as *mut libc::sockaddr,
                        len,
                        user_data(op, i as u32 + 1, 0),
                    )
                };
            }
            None => self.ring.accept(listener, user_data(op, 0, 0)),
        }
    }

    /// The peer address of an accept's completion (None for an accept queued without room
    /// for one, or a failed accept), and frees its entry. Call once per accept completion.
    pub fn take_peer(&mut self, c: &Completion) -> Option<std::net::IpAddr> {
        let i = c.slot.checked_sub(1)? as usize;
        if i >= PEER_BUFS {
            return None;
        }
        self.peers.free.push(i as u16);
        let (addr, len) = &self.peers.addrs[i];
        if c.res < 0 {
            return None;
        }
        peer_of(addr, *len)
    }

    /// Cancels every accept queued with `op` (by its listener's descriptor).
    pub fn cancel_accepts(&mut self, op: Op) {
        if let Some(&(_, fd)) = self.peers.listeners.iter().find(|&&(o, _)| o == op) {
            self.ring.cancel_fd_all(fd, user_data(Op::Cancel, 0, 0));
        }
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
        // SAFETY: passed on to the caller.
        unsafe { self.send_at(slot, gen_, 0, ptr, len) };
    }

    /// [`Ring::send`], its completion carrying `stamp` (when it was submitted).
    ///
    /// # Safety
    /// As [`Ring::send`].
    pub unsafe fn send_at(&mut self, slot: u32, gen_: u16, stamp: u32, ptr: *const u8, len: u32) {
        let ud = stamped(Op::Send, slot, gen_, stamp);
        // SAFETY: passed on to the caller.
        unsafe { self.ring.send(slot, ptr, len, ud) };
    }

    /// Writes the buffers described by `iov[..n]` on a slot.
    ///
    /// # Safety
    /// The iovec array must stay valid until the next submit; the memory it points at until
    /// the completion arrives.
    pub unsafe fn writev(&mut self, slot: u32, gen_: u16, iov: *const libc::iovec, n: u32) {
        // SAFETY: passed on to the caller.
        unsafe { self.writev_at(slot, gen_, 0, iov, n) };
    }

    /// [`Ring::writev`], its completion carrying `stamp` (when it was submitted).
    ///
    /// # Safety
    /// As [`Ring::writev`].
    pub unsafe fn writev_at(
        &mut self,
        slot: u32,
        gen_: u16,
        stamp: u32,
        iov: *const libc::iovec,
        n: u32,
    ) {
        let ud = stamped(Op::Send, slot, gen_, stamp);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(ud: u64) -> Completion {
        Completion::decode(RawCompletion {
            user_data: ud,
            res: 7,
            flags: 0,
        })
        .expect("a known op")
    }

    #[test]
    fn user_data_round_trips_op_slot_generation_and_stamp() {
        let max_slot = (1 << SLOT_BITS) - 1;
        let c = decode(stamped(Op::Send, max_slot, u16::MAX, u32::MAX));
        assert_eq!(
            (c.op, c.slot, c.gen_, c.stamp, c.res),
            (Op::Send, max_slot, u16::MAX, (1 << STAMP_BITS) - 1, 7)
        );
        let c = decode(user_data(Op::Recv, 12_345, 9));
        assert_eq!((c.op, c.slot, c.gen_, c.stamp), (Op::Recv, 12_345, 9, 0));
        let c = decode(stamped(Op::Send, 3, 1, (1 << STAMP_BITS) + 5));
        assert_eq!(
            (c.slot, c.stamp),
            (3, 5),
            "the stamp wraps, the slot is untouched"
        );
    }
}
