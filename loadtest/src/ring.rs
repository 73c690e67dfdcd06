//! io_uring, isolated: every unsafe call on a ring lives here, behind this contract.
//!
//! - A [`Ring`] is created and used by one thread only (`SINGLE_ISSUER`, `DEFER_TASKRUN`): its
//!   completions are posted only when that thread calls [`Ring::reap`].
//! - Sockets are **direct descriptors**: the caller creates a socket with `socket(2)`, binds
//!   it, installs it into the ring's sparse fixed-file table with [`Ring::install`] and closes
//!   its ordinary descriptor at once, so a connection takes no process descriptor (a process
//!   here may hold only 20,000). Every operation then names the socket by its slot.
//! - Reads are multishot receives into a **provided buffer ring**: the kernel picks a buffer
//!   only when data arrives, so an idle connection holds none. A buffer must be handed back
//!   with [`Ring::recycle`] once its bytes are consumed.
//! - Memory passed to [`Ring::send`] must stay valid until its completion; the address and
//!   timeout passed to [`Ring::connect`] until the next submit (the kernel copies both when
//!   it takes the request).
//! - The registered eventfd is signalled whenever a completion (or deferred work) is ready, so
//!   one thread can sleep on all its rings with a single `poll`.
//! - Dropping a ring unregisters its buffer group before the buffers are freed; the owner must
//!   first have ended every request that points at its own memory ([`Ring::cancel`]).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, CancelBuilder, Fixed, Timespec};
use io_uring::{EnterFlags, IoUring, cqueue, opcode, squeue};

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

fn user_data(op: Op, slot: u32) -> u64 {
    op as u64 | (slot as u64) << 32
}

/// One completion, decoded.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub op: Op,
    pub slot: u32,
    pub res: i32,
    pub flags: u32,
}

impl Completion {
    /// The multishot request stays armed.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
    /// The provided buffer this completion filled.
    pub fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// Sizes of one ring.
#[derive(Clone, Copy, Debug)]
pub struct RingSize {
    pub entries: u32,
    pub slots: u32,
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
}

const BUF_GROUP: u16 = 0;

/// One io_uring with its direct-descriptor table and provided receive buffers.
pub struct Ring {
    // Field order matters: the ring is closed before the buffers are freed.
    uring: IoUring<squeue::Entry, cqueue::Entry>,
    bufs: BufRing,
}

impl Ring {
    pub fn new(size: RingSize, eventfd: RawFd) -> io::Result<Ring> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(size.entries.saturating_mul(8))
            .setup_submit_all()
            .build(size.entries)?;
        uring.submitter().register_files_sparse(size.slots)?;
        uring.submitter().register_eventfd(eventfd)?;
        let mut bufs = BufRing::new(size.recv_buffers, size.recv_buffer_size)?;
        // SAFETY: the ring memory is page aligned, sized for `recv_buffers` entries, and stays
        // allocated until the group is unregistered (Drop) or forever (when that fails).
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                bufs.ring as u64,
                size.recv_buffers,
                BUF_GROUP,
                0,
            )?;
        }
        bufs.registered = true;
        Ok(Ring { uring, bufs })
    }

    fn push(&mut self, entries: &[squeue::Entry]) {
        loop {
            // SAFETY: every entry built in this module points only at memory whose lifetime the
            // module's contract puts on the caller.
            if unsafe { self.uring.submission().push_multiple(entries) }.is_ok() {
                return;
            }
            // Submission queue full: hand what is queued to the kernel and retry.
            if let Err(e) = self.submit() {
                tracing::error!("io_uring submit failed while the queue was full: {e}");
            }
        }
    }

    /// Installs sockets into consecutive slots from `first`. The caller closes its own
    /// descriptors afterwards: the table holds its own reference.
    pub fn install(&self, first: u32, fds: &[RawFd]) -> io::Result<()> {
        let n = self.uring.submitter().register_files_update(first, fds)?;
        if n != fds.len() {
            return Err(io::Error::other(format!(
                "installed {n} of {} sockets into the fixed-file table",
                fds.len()
            )));
        }
        Ok(())
    }

    /// Connects the socket in `slot`, failing with `-ECANCELED` after `timeout`.
    ///
    /// # Safety
    /// `addr` (of `len` bytes) and `timeout` must stay valid until the next submit.
    pub unsafe fn connect(
        &mut self,
        slot: u32,
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
        timeout: *const Timespec,
    ) {
        let connect = opcode::Connect::new(Fixed(slot), addr, len)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(user_data(Op::Connect, slot));
        let limit = opcode::LinkTimeout::new(timeout)
            .build()
            .user_data(user_data(Op::ConnectTimeout, slot));
        self.push(&[connect, limit]);
    }

    /// Arms a multishot receive on a slot, into the provided buffers.
    pub fn recv(&mut self, slot: u32) {
        let e = opcode::RecvMulti::new(Fixed(slot), BUF_GROUP)
            .build()
            .user_data(user_data(Op::Recv, slot));
        self.push(&[e]);
    }

    /// Sends `len` bytes at `ptr` on a slot.
    ///
    /// # Safety
    /// The memory must stay valid and unchanged until the completion arrives.
    pub unsafe fn send(&mut self, slot: u32, ptr: *const u8, len: u32) {
        let e = opcode::Send::new(Fixed(slot), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Op::Send, slot));
        self.push(&[e]);
    }

    /// Closes a slot whose socket the server already closed (nothing is pending on it).
    pub fn close(&mut self, slot: u32) {
        let e = opcode::Close::new(Fixed(slot))
            .build()
            .user_data(user_data(Op::Close, slot));
        self.push(&[e]);
    }

    /// Shuts a slot's socket down (ending its pending receive) and then closes the slot.
    pub fn shutdown_and_close(&mut self, slot: u32) {
        let shut = opcode::Shutdown::new(Fixed(slot), libc::SHUT_RDWR)
            .build()
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(user_data(Op::Shutdown, slot));
        let close = opcode::Close::new(Fixed(slot))
            .build()
            .user_data(user_data(Op::Close, slot));
        self.push(&[shut, close]);
    }

    /// Cancels the request `op` has in flight on `slot` (found by its user data, so the kernel
    /// looks in one hash bucket: cancelling every request of a ring this way is linear, where
    /// one "cancel any" is quadratic in the requests in flight). An [`Op::Cancel`] completion
    /// follows.
    pub fn cancel(&mut self, op: Op, slot: u32) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::user_data(user_data(op, slot)))
            .build()
            .user_data(user_data(Op::Cancel, slot));
        self.push(&[e]);
    }

    /// Submits what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.enter(0).map(|_| ())
    }

    fn enter(&mut self, flags: u32) -> io::Result<()> {
        let n = self.uring.submission().len() as u32;
        // SAFETY: plain io_uring_enter with no extended argument.
        match unsafe {
            self.uring
                .submitter()
                .enter::<libc::sigset_t>(n, 0, flags, None)
        } {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::EINTR)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Submits what is queued, runs the ring's deferred work, and appends every completion
    /// ready now to `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        self.enter(EnterFlags::GETEVENTS.bits())?;
        for cqe in self.uring.completion() {
            let ud = cqe.user_data();
            let Some(op) = Op::from_u8(ud as u8) else {
                continue;
            };
            out.push(Completion {
                op,
                slot: (ud >> 32) as u32,
                res: cqe.result(),
                flags: cqe.flags(),
            });
        }
        Ok(())
    }

    /// The bytes the kernel received into buffer `bid`.
    ///
    /// # Safety
    /// The slice is valid only until [`Ring::recycle`] is called for `bid` and while the ring
    /// lives; the caller must not keep it past either.
    pub unsafe fn buffer(&self, bid: u16, len: usize) -> &'static mut [u8] {
        self.bufs.get(bid, len)
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.bufs.recycle(bid);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Once the group is unregistered the kernel can pick none of its buffers, so they may
        // be freed; if that fails they are leaked rather than freed under the kernel.
        if self
            .uring
            .submitter()
            .unregister_buf_ring(BUF_GROUP)
            .is_ok()
        {
            self.bufs.registered = false;
        }
    }
}

/// A provided-buffer ring: `entries` descriptors followed by `entries` buffers of `size` bytes.
struct BufRing {
    ring: *mut BufRingEntry,
    bufs: *mut u8,
    ring_layout: std::alloc::Layout,
    buf_layout: std::alloc::Layout,
    entries: u16,
    size: u32,
    tail: u16,
    /// The kernel may still use the memory: never free it.
    registered: bool,
}

impl BufRing {
    fn new(entries: u16, size: u32) -> io::Result<BufRing> {
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        let ring_layout = std::alloc::Layout::from_size_align(ring_bytes.max(4096), 4096)
            .map_err(io::Error::other)?;
        let buf_layout =
            std::alloc::Layout::from_size_align(entries as usize * size as usize, 4096)
                .map_err(io::Error::other)?;
        // SAFETY: both layouts have non-zero sizes.
        let (ring, bufs) = unsafe {
            (
                std::alloc::alloc_zeroed(ring_layout) as *mut BufRingEntry,
                std::alloc::alloc(buf_layout),
            )
        };
        if ring.is_null() || bufs.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "provided buffers",
            ));
        }
        let mut br = BufRing {
            ring,
            bufs,
            ring_layout,
            buf_layout,
            entries,
            size,
            tail: 0,
            registered: false,
        };
        for bid in 0..entries {
            br.add(bid);
        }
        br.publish();
        Ok(br)
    }

    fn add(&mut self, bid: u16) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: idx < entries; the entry array holds `entries` elements.
        let entry = unsafe { &mut *self.ring.add(idx) };
        // SAFETY: bid < entries, so the buffer lies inside the allocation.
        entry.set_addr(unsafe { self.bufs.add(bid as usize * self.size as usize) } as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field sits in the first entry, which is valid and 2-byte aligned.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.ring) as *mut u16) };
        tail.store(self.tail, Ordering::Release);
    }

    fn get(&self, bid: u16, len: usize) -> &'static mut [u8] {
        let bid = (bid % self.entries) as usize;
        let len = len.min(self.size as usize);
        // SAFETY: the buffer lies inside the allocation (bid < entries, len <= size); the kernel
        // wrote it before posting the completion and does not touch it until it is recycled.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.add(bid * self.size as usize), len) }
    }

    fn recycle(&mut self, bid: u16) {
        self.add(bid % self.entries);
        self.publish();
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            return;
        }
        // SAFETY: allocated in `new` with these layouts; the kernel no longer uses them.
        unsafe {
            std::alloc::dealloc(self.ring as *mut u8, self.ring_layout);
            std::alloc::dealloc(self.bufs, self.buf_layout);
        }
    }
}
