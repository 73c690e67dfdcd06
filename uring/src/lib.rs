//! io_uring, isolated in one crate: the only unsafe ring code of the project lives here, behind
//! this contract. The gateway and the load tester build their own operations and completion
//! decoding on top of it; neither touches a ring directly.
//!
//! - A [`Ring`] is created and used by one thread only (`SINGLE_ISSUER`, `DEFER_TASKRUN`): its
//!   completions are posted only when that thread calls [`Ring::reap`].
//! - Sockets are **direct descriptors**: a socket lives in a slot of the ring's sparse
//!   fixed-file table, either accepted straight into a slot the kernel allocates
//!   ([`Ring::accept`]) or created by the caller and installed into a slot it names
//!   ([`Ring::install`], after which the caller closes its own descriptor at once). So a
//!   connection takes no process descriptor (a process here may hold only 20,000, and that cap
//!   cannot be raised; the table of one ring is capped the same way, so a user opens more
//!   rings). Every operation names the socket by its slot; a slot is only reused after a
//!   [`Ring::close`] of it completed.
//! - Reads are multishot receives into a **provided buffer ring**: the kernel picks a buffer only
//!   when data arrives, so an idle connection holds none. A received buffer must be handed back
//!   with [`Ring::recycle`] once its bytes are consumed.
//! - Memory passed to [`Ring::send`] must stay valid until its completion, and so must the
//!   memory the iovecs passed to [`Ring::writev`] point at; the iovec array itself, and the
//!   address and timeout passed to [`Ring::connect`], only until the next
//!   [`Ring::submit`]/[`Ring::reap`] (the kernel copies them when it takes the request:
//!   `IORING_FEAT_SUBMIT_STABLE`).
//! - Every request carries the caller's `user_data`, returned untouched in its completion
//!   ([`RawCompletion`]); this crate never interprets it (cancelling finds requests by it) and
//!   queues no request of its own.
//! - One registered eventfd per ring is signalled whenever a completion (or deferred work) is
//!   ready, so one thread can sleep on several rings (and anything else) with a single `poll`.
//! - Dropping a ring unregisters its buffer group before the buffers are freed (they are leaked
//!   if that fails); the owner must first have ended every request that points at its own
//!   memory.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, CancelBuilder, DestinationSlot, Fd, Fixed};
use io_uring::{EnterFlags, IoUring, cqueue, opcode};

pub use io_uring::squeue::Entry;
pub use io_uring::types::Timespec;

/// Sizes of one ring.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Submission queue entries.
    pub entries: u32,
    /// Slots of the fixed-file table.
    pub slots: u32,
    /// Provided receive buffers (a power of two).
    pub recv_buffers: u16,
    /// Bytes per receive buffer.
    pub recv_buffer_size: u32,
}

/// One completion as the kernel posted it.
#[derive(Clone, Copy, Debug)]
pub struct RawCompletion {
    pub user_data: u64,
    pub res: i32,
    pub flags: u32,
}

impl RawCompletion {
    /// The multishot request stays armed.
    pub fn more(&self) -> bool {
        more(self.flags)
    }
    /// The provided buffer this completion filled.
    pub fn buffer(&self) -> Option<u16> {
        buffer(self.flags)
    }
}

/// Whether completion `flags` say the multishot request stays armed.
pub fn more(flags: u32) -> bool {
    cqueue::more(flags)
}

/// The provided buffer named by completion `flags`, if any.
pub fn buffer(flags: u32) -> Option<u16> {
    cqueue::buffer_select(flags)
}

const BUF_GROUP: u16 = 0;

/// One io_uring with its direct-descriptor table and provided receive buffers.
pub struct Ring {
    // Field order matters: the ring is closed before the buffers are freed.
    uring: IoUring<Entry, cqueue::Entry>,
    bufs: BufRing,
}

impl Ring {
    /// Sets up a ring with `cq_entries` completion queue entries, a sparse table of
    /// `sizes.slots` slots, `eventfd` registered and the provided receive buffers registered.
    pub fn new(sizes: Sizes, cq_entries: u32, eventfd: RawFd) -> io::Result<Ring> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(cq_entries)
            .setup_submit_all()
            .build(sizes.entries)?;
        uring.submitter().register_files_sparse(sizes.slots)?;
        uring.submitter().register_eventfd(eventfd)?;
        let mut bufs = BufRing::new(sizes.recv_buffers, sizes.recv_buffer_size)?;
        // SAFETY: the ring memory is page aligned, sized for `recv_buffers` entries, and stays
        // allocated until the group is unregistered (Drop) or forever (when that fails).
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                bufs.ring as u64,
                sizes.recv_buffers,
                BUF_GROUP,
                0,
            )?;
        }
        bufs.registered = true;
        Ok(Ring { uring, bufs })
    }

    /// Queues `entries` together (a linked chain is never split across a submit); when the
    /// submission queue is full, submits what is queued and retries.
    ///
    /// # Safety
    /// Every entry must point only at memory that stays valid as long as its request needs it
    /// (see the crate's contract).
    pub unsafe fn push(&mut self, entries: &[Entry]) {
        loop {
            // SAFETY: the caller vouches for the memory the entries point at.
            if unsafe { self.uring.submission().push_multiple(entries) }.is_ok() {
                return;
            }
            // Submission queue full: hand what is queued to the kernel and retry.
            if let Err(e) = self.submit() {
                tracing::error!("io_uring submit failed while the queue was full: {e}");
            }
        }
    }

    /// Queues entries that point at no memory of the caller.
    fn push_owned(&mut self, entries: &[Entry]) {
        // SAFETY: the entries built by the safe methods point at no memory of the caller.
        unsafe { self.push(entries) }
    }

    /// Queues one single-shot accept on `listener` into a slot the kernel allocates; the slot
    /// is the completion's result.
    pub fn accept(&mut self, listener: RawFd, user_data: u64) {
        let e = opcode::Accept::new(Fd(listener), std::ptr::null_mut(), std::ptr::null_mut())
            .file_index(Some(DestinationSlot::auto_target()))
            .build()
            .user_data(user_data);
        self.push_owned(&[e]);
    }

    /// Like [`Ring::accept`], and the kernel also writes the peer's address to `addr` (at most
    /// `*addrlen` bytes; `*addrlen` becomes the address's length).
    ///
    /// # Safety
    /// `addr` and `addrlen` must stay valid, and be neither read nor written by the caller,
    /// until the completion arrives (the kernel writes them when the accept completes).
    pub unsafe fn accept_addr(
        &mut self,
        listener: RawFd,
        addr: *mut libc::sockaddr,
        addrlen: *mut libc::socklen_t,
        user_data: u64,
    ) {
        let e = opcode::Accept::new(Fd(listener), addr, addrlen)
            .file_index(Some(DestinationSlot::auto_target()))
            .build()
            .user_data(user_data);
        // SAFETY: the memory the entry points at is the caller's, under this method's contract.
        unsafe { self.push(&[e]) }
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

    /// Connects the socket in `slot`, linked to a timeout: the connect fails with `-ECANCELED`
    /// after `timeout` (completion `connect_user_data`; the timeout's own completion carries
    /// `timeout_user_data`).
    ///
    /// # Safety
    /// `addr` (of `len` bytes) and `timeout` must stay valid until the next submit.
    pub unsafe fn connect(
        &mut self,
        slot: u32,
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
        timeout: *const Timespec,
        connect_user_data: u64,
        timeout_user_data: u64,
    ) {
        let connect = opcode::Connect::new(Fixed(slot), addr, len)
            .build()
            .flags(io_uring::squeue::Flags::IO_LINK)
            .user_data(connect_user_data);
        let limit = opcode::LinkTimeout::new(timeout)
            .build()
            .user_data(timeout_user_data);
        // SAFETY: the caller keeps `addr` and `timeout` valid until the next submit.
        unsafe { self.push(&[connect, limit]) };
    }

    /// Arms a multishot receive on a slot, into the provided buffers.
    pub fn recv(&mut self, slot: u32, user_data: u64) {
        let e = opcode::RecvMulti::new(Fixed(slot), BUF_GROUP)
            .build()
            .user_data(user_data);
        self.push_owned(&[e]);
    }

    /// Sends `len` bytes at `ptr` on a slot (without `SIGPIPE`).
    ///
    /// # Safety
    /// The memory must stay valid and unchanged until the completion arrives.
    pub unsafe fn send(&mut self, slot: u32, ptr: *const u8, len: u32, user_data: u64) {
        let e = opcode::Send::new(Fixed(slot), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data);
        // SAFETY: the caller keeps the memory valid until the completion.
        unsafe { self.push(&[e]) };
    }

    /// Writes the buffers described by `iov[..n]` on a slot.
    ///
    /// # Safety
    /// The iovec array must stay valid until the next submit; the memory it points at until
    /// the completion arrives.
    pub unsafe fn writev(&mut self, slot: u32, iov: *const libc::iovec, n: u32, user_data: u64) {
        let e = opcode::Writev::new(Fixed(slot), iov, n)
            .build()
            .user_data(user_data);
        // SAFETY: the caller keeps the iovecs and their memory valid as documented.
        unsafe { self.push(&[e]) };
    }

    /// Shuts both directions of a slot's socket: its pending receive ends, its pending send
    /// fails.
    pub fn shutdown(&mut self, slot: u32, user_data: u64) {
        let e = opcode::Shutdown::new(Fixed(slot), libc::SHUT_RDWR)
            .build()
            .user_data(user_data);
        self.push_owned(&[e]);
    }

    /// Shuts a slot's socket down (ending its pending receive) and then, hard-linked so it runs
    /// only once the shutdown completed whatever its result, closes the slot.
    pub fn shutdown_and_close(&mut self, slot: u32, shutdown_user_data: u64, close_user_data: u64) {
        let shut = opcode::Shutdown::new(Fixed(slot), libc::SHUT_RDWR)
            .build()
            .flags(io_uring::squeue::Flags::IO_HARDLINK)
            .user_data(shutdown_user_data);
        let close = opcode::Close::new(Fixed(slot))
            .build()
            .user_data(close_user_data);
        self.push_owned(&[shut, close]);
    }

    /// Closes a slot (the socket, and the slot becomes free).
    pub fn close(&mut self, slot: u32, user_data: u64) {
        let e = opcode::Close::new(Fixed(slot)).build().user_data(user_data);
        self.push_owned(&[e]);
    }

    /// Cancels one request in flight whose user data is `target` (the kernel looks in one hash
    /// bucket: cancelling every request of a ring this way is linear, where one "cancel any" is
    /// quadratic in the requests in flight). A completion with `user_data` follows.
    pub fn cancel(&mut self, target: u64, user_data: u64) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::user_data(target))
            .build()
            .user_data(user_data);
        self.push_owned(&[e]);
    }

    /// Cancels every request in flight whose user data is `target`. A completion with
    /// `user_data` follows.
    pub fn cancel_all(&mut self, target: u64, user_data: u64) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::user_data(target).all())
            .build()
            .user_data(user_data);
        self.push_owned(&[e]);
    }

    /// Cancels every request in flight on the (regular) descriptor `fd`, such as the accepts
    /// queued on a listener. A completion with `user_data` follows.
    pub fn cancel_fd_all(&mut self, fd: RawFd, user_data: u64) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
            .build()
            .user_data(user_data);
        self.push_owned(&[e]);
    }

    /// Submits what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.enter(0)
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
    /// ready now to `out`, as `decode` makes it (those it returns `None` for are dropped;
    /// `Some` keeps them raw).
    pub fn reap<T>(
        &mut self,
        out: &mut Vec<T>,
        decode: impl FnMut(RawCompletion) -> Option<T>,
    ) -> io::Result<()> {
        self.enter(EnterFlags::GETEVENTS.bits())?;
        let raw = self.uring.completion().map(|cqe| RawCompletion {
            user_data: cqe.user_data(),
            res: cqe.result(),
            flags: cqe.flags(),
        });
        out.extend(raw.filter_map(decode));
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

    /// The ring's own descriptor.
    pub fn fd(&self) -> RawFd {
        self.uring.as_raw_fd()
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
