//! io_uring, isolated: every unsafe call on a ring lives here, behind this contract.
//!
//! - A [`Ring`] is created and used by one thread only (`SINGLE_ISSUER`, `DEFER_TASKRUN`): its
//!   completions are posted only when that thread calls [`Ring::reap`].
//! - Sockets are **direct descriptors**: an accept allocates a slot in the ring's sparse
//!   fixed-file table, so a connection takes no process descriptor (a process here may hold only
//!   20,000, and that cap cannot be raised; the table of one ring is capped the same way, so a
//!   shard opens more rings). A slot is identified by its index; it is only reused after a
//!   [`Ring::close`] of it completed.
//! - Accepts are **single-shot**, and the caller keeps at most (free slots) of them in flight.
//!   io_uring accepts a connection before it allocates its slot and resets the connection when
//!   the table is full; a multishot accept, run as deferred task work, drains the whole listen
//!   queue in one go, so only a bounded number of single-shot accepts keeps that from happening.
//! - Reads are multishot receives into a **provided buffer ring**: the kernel picks a buffer only
//!   when data arrives, so an idle connection holds none. A received buffer must be handed back
//!   with [`Ring::recycle`] once its bytes are consumed.
//! - Memory passed to [`Ring::send`] must stay valid until its completion; the iovec array passed
//!   to [`Ring::writev`] only until the next [`Ring::submit`]/[`Ring::reap`] (the kernel copies
//!   it at submission: `IORING_FEAT_SUBMIT_STABLE`).
//! - One registered eventfd per ring is signalled whenever a completion (or deferred work) is
//!   ready, so one thread can sleep on several rings and on its inbox with a single `poll`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, CancelBuilder, DestinationSlot, Fixed};
use io_uring::{EnterFlags, IoUring, cqueue, opcode, squeue};

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

/// One io_uring with its direct-descriptor table and provided receive buffers.
pub struct Ring {
    uring: IoUring<squeue::Entry, cqueue::Entry>,
    bufs: BufRing,
}

const BUF_GROUP: u16 = 0;

impl Ring {
    pub fn new(size: RingSize, eventfd: RawFd) -> io::Result<Ring> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(size.entries.saturating_mul(4))
            .setup_submit_all()
            .build(size.entries)?;
        uring.submitter().register_files_sparse(size.slots)?;
        uring.submitter().register_eventfd(eventfd)?;
        let bufs = BufRing::new(size.recv_buffers, size.recv_buffer_size)?;
        // SAFETY: the ring memory is page aligned, sized for `recv_buffers` entries and lives as
        // long as the process (BufRing is leaked on drop, see there).
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                bufs.ring as u64,
                size.recv_buffers,
                BUF_GROUP,
                0,
            )?;
        }
        Ok(Ring { uring, bufs })
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built in this module points only at memory whose lifetime the
            // module's contract puts on the caller.
            if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                return;
            }
            // Submission queue full: hand what is queued to the kernel and retry.
            if let Err(e) = self.submit() {
                tracing::error!("io_uring submit failed while the queue was full: {e}");
            }
        }
    }

    /// Queues one accept on `listener` into a slot the kernel allocates.
    pub fn accept(&mut self, listener: RawFd, op: Op) {
        let e = opcode::Accept::new(
            io_uring::types::Fd(listener),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .file_index(Some(DestinationSlot::auto_target()))
        .build()
        .user_data(user_data(op, 0, 0));
        self.push(e);
    }

    /// Cancels every accept queued with `op`.
    pub fn cancel_accepts(&mut self, op: Op) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::user_data(user_data(op, 0, 0)).all())
            .build()
            .user_data(user_data(Op::Cancel, 0, 0));
        self.push(e);
    }

    /// Arms a multishot receive on a slot, into the provided buffers.
    pub fn recv(&mut self, slot: u32, gen_: u16) {
        let e = opcode::RecvMulti::new(Fixed(slot), BUF_GROUP)
            .build()
            .user_data(user_data(Op::Recv, slot, gen_));
        self.push(e);
    }

    /// Sends `len` bytes at `ptr` on a slot.
    ///
    /// # Safety
    /// The memory must stay valid and unchanged until the completion arrives.
    pub unsafe fn send(&mut self, slot: u32, gen_: u16, ptr: *const u8, len: u32) {
        let e = opcode::Send::new(Fixed(slot), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Op::Send, slot, gen_));
        self.push(e);
    }

    /// Writes the buffers described by `iov[..n]` on a slot.
    ///
    /// # Safety
    /// The iovec array must stay valid until the next submit; the memory it points at until
    /// the completion arrives.
    pub unsafe fn writev(&mut self, slot: u32, gen_: u16, iov: *const libc::iovec, n: u32) {
        let e = opcode::Writev::new(Fixed(slot), iov, n)
            .build()
            .user_data(user_data(Op::Send, slot, gen_));
        self.push(e);
    }

    /// Shuts both directions of a slot's socket: its pending receive ends, its pending send fails.
    pub fn shutdown(&mut self, slot: u32, gen_: u16) {
        let e = opcode::Shutdown::new(Fixed(slot), libc::SHUT_RDWR)
            .build()
            .user_data(user_data(Op::Shutdown, slot, gen_));
        self.push(e);
    }

    /// Closes a slot (the socket, and the slot becomes free for accept).
    pub fn close(&mut self, slot: u32, gen_: u16) {
        let e = opcode::Close::new(Fixed(slot))
            .build()
            .user_data(user_data(Op::Close, slot, gen_));
        self.push(e);
    }

    /// Submits what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        let n = self.uring.submission().len() as u32;
        // SAFETY: plain io_uring_enter with no extended argument.
        match unsafe {
            self.uring
                .submitter()
                .enter::<libc::sigset_t>(n, 0, 0, None)
        } {
            Ok(_) => Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    || e.raw_os_error() == Some(libc::EAGAIN) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Submits what is queued, runs the ring's deferred work, and appends every completion
    /// ready now to `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        let n = self.uring.submission().len() as u32;
        // SAFETY: plain io_uring_enter with no extended argument.
        let entered = unsafe {
            self.uring
                .submitter()
                .enter::<libc::sigset_t>(n, 0, EnterFlags::GETEVENTS.bits(), None)
        };
        if let Err(e) = entered
            && !matches!(
                e.raw_os_error(),
                Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::EINTR)
            )
        {
            return Err(e);
        }
        for cqe in self.uring.completion() {
            let ud = cqe.user_data();
            let Some(op) = Op::from_u8(ud as u8) else {
                continue;
            };
            out.push(Completion {
                op,
                slot: (ud >> 32) as u32,
                gen_: (ud >> 8) as u16,
                res: cqe.result(),
                flags: cqe.flags(),
            });
        }
        Ok(())
    }

    /// The bytes the kernel received into buffer `bid`.
    ///
    /// The slice stays valid until [`Ring::recycle`] is called for `bid`; the caller must not
    /// keep it past that.
    pub fn buffer(&self, bid: u16, len: usize) -> &'static mut [u8] {
        self.bufs.get(bid, len)
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.bufs.recycle(bid);
    }

    pub fn fd(&self) -> RawFd {
        self.uring.as_raw_fd()
    }
}

/// A provided-buffer ring: `entries` descriptors followed by `entries` buffers of `size` bytes.
struct BufRing {
    ring: *mut BufRingEntry,
    bufs: *mut u8,
    entries: u16,
    size: u32,
    tail: u16,
}

impl BufRing {
    fn new(entries: u16, size: u32) -> io::Result<BufRing> {
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        let ring_layout = std::alloc::Layout::from_size_align(ring_bytes.max(4096), 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let buf_layout =
            std::alloc::Layout::from_size_align(entries as usize * size as usize, 4096)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
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
            entries,
            size,
            tail: 0,
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

// The buffer memory is deliberately never freed: the kernel may still hold the group while the
// ring's requests are being torn down asynchronously after the ring fd is closed. A gateway
// creates its rings once for the life of the process.
