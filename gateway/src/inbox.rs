//! A shard's inbox: a bounded lock-free ring of messages from the ingress (and from other
//! shards), plus the eventfd that wakes the shard. The same eventfd is registered with every
//! io_uring ring of the shard, so the shard sleeps in one `poll` for both.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;
use protocol::batch::Batch;

/// What a shard can be asked to do.
pub enum ShardMsg {
    /// Deliver to every member of the room on this shard; `last` is the room offset of the
    /// batch's last message.
    Room {
        room: Arc<str>,
        batch: Batch,
        last: u32,
    },
    /// A dispatcher's answer to a connection's recover request (`recovery.rs`).
    Recovered {
        handle: u32,
        gen_: u16,
        history: protocol::link::RoomHistory,
    },
    /// Deliver to these connections (already resolved to this shard) if `op` is in their watch
    /// set.
    Keys {
        targets: Vec<(u32, u16)>,
        op: i32,
        batch: Batch,
    },
    /// Deliver to every connection watching `op`, `per_second` connections a second (0: all at
    /// once).
    Broadcast {
        op: i32,
        per_second: u32,
        batch: Batch,
    },
    /// A newer connection took this connection's key.
    Evict { handle: u32, gen_: u16 },
    /// Stop accepting and close connections in batches.
    Drain,
}

pub struct Inbox {
    queue: ArrayQueue<ShardMsg>,
    wake: OwnedFd,
    /// Set by the consumer before it sleeps (then checks the queue once more); a push wakes
    /// the eventfd only while it is set, so a busy consumer costs its producers no syscall.
    pub sleeping: AtomicBool,
    /// Times a producer found the ring full and had to wait (counted on that slow path only).
    full: AtomicU64,
}

impl Inbox {
    pub fn new(capacity: usize) -> std::io::Result<Inbox> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Inbox {
            queue: ArrayQueue::new(capacity),
            // SAFETY: fd is a fresh descriptor we own.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            sleeping: AtomicBool::new(false),
            full: AtomicU64::new(0),
        })
    }

    /// Queues a message; gives it back when the ring is full.
    pub fn push(&self, msg: ShardMsg) -> Result<(), ShardMsg> {
        self.queue.push(msg)?;
        if self.sleeping.load(Ordering::SeqCst) {
            self.wake();
        }
        Ok(())
    }

    pub fn pop(&self) -> Option<ShardMsg> {
        self.queue.pop()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Counts a producer finding the ring full.
    pub fn count_full(&self) {
        self.full.fetch_add(1, Ordering::Relaxed);
    }

    /// Times a producer found the ring full.
    pub fn full_count(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }

    /// Wakes the shard.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), &one as *const u64 as *const _, 8) };
    }

    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Sleeps until woken or `timeout_ms` passes, then clears the eventfd.
    pub fn wait(&self, timeout_ms: i32) {
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        self.clear();
    }

    /// Resets the eventfd counter.
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
        unsafe { libc::read(self.fd(), &mut v as *mut u64 as *mut _, 8) };
    }
}
