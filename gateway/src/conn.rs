//! One client connection's state, kept small: an idle authenticated connection holds this
//! struct, its key, its room positions and its watch set, and no read or write buffer.

use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Ws,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// WS only: waiting for the HTTP upgrade request.
    Upgrade,
    /// Waiting for op 7.
    Auth,
    Open,
    /// Final bytes (a close reason) are being written; then the socket is shut down.
    Closing,
    /// Shut down; waiting for the receive and send to end before the slot is closed.
    ShutDown,
    /// The slot's close is submitted; the state goes when it completes.
    Closed,
}

/// A connection's outbound queue. The first chunk is held inline, so a connection that has one
/// write's worth queued (the common case) or nothing at all allocates no queue storage; the rest
/// spills into a `VecDeque` only under load.
#[derive(Default)]
pub struct OutQueue {
    head: Option<Chunk>,
    // Boxed on purpose: 8 bytes in every connection instead of a 32-byte empty VecDeque; it is
    // allocated only when a second chunk queues up behind the first.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Chunk>>>,
}

impl OutQueue {
    pub fn len(&self) -> usize {
        self.head.is_some() as usize + self.rest.as_ref().map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    pub fn push_back(&mut self, c: Chunk) {
        if self.head.is_none() {
            self.head = Some(c);
        } else {
            self.rest.get_or_insert_with(Default::default).push_back(c);
        }
    }

    pub fn front_mut(&mut self) -> Option<&mut Chunk> {
        self.head.as_mut()
    }

    pub fn pop_front(&mut self) -> Option<Chunk> {
        let head = self.head.take();
        self.head = self.rest.as_mut().and_then(|r| r.pop_front());
        head
    }

    pub fn iter(&self) -> impl Iterator<Item = &Chunk> {
        self.head
            .iter()
            .chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    pub fn get(&self, i: usize) -> Option<&Chunk> {
        if i == 0 {
            self.head.as_ref()
        } else {
            self.rest.as_ref()?.get(i - 1)
        }
    }

    /// Drops whole chunks from index `keep` on (oldest first) until at least `need` bytes are
    /// freed or none is left past `keep`; returns (bytes, messages) dropped. One shift of the
    /// queue at most, however many chunks go: the kept chunks are few (those in a write), and
    /// the old one-at-a-time removal moved them once per dropped chunk.
    pub fn drop_after(&mut self, keep: usize, need: usize) -> (usize, u64) {
        let (mut bytes, mut msgs) = (0usize, 0u64);
        if keep == 0 {
            while bytes < need {
                let Some(c) = self.pop_front() else { break };
                bytes += c.remaining().len();
                msgs += c.msgs as u64;
            }
            return (bytes, msgs);
        }
        let Some(rest) = self.rest.as_mut() else {
            return (0, 0);
        };
        let from = keep - 1;
        let mut to = from;
        while bytes < need
            && let Some(c) = rest.get(to)
        {
            bytes += c.remaining().len();
            msgs += c.msgs as u64;
            to += 1;
        }
        rest.drain(from.min(to)..to);
        (bytes, msgs)
    }

    pub fn truncate(&mut self, n: usize) {
        if n == 0 {
            self.head = None;
            self.rest = None;
        } else if let Some(r) = self.rest.as_mut() {
            r.truncate(n - 1);
        }
    }
}

/// What [`Conn::enqueue`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued; `newly_dirty`: the connection needs a write issued (none was pending); `dropped`:
    /// messages of older chunks dropped to make room (drop-oldest).
    Queued { newly_dirty: bool, dropped: u64 },
    /// Not queued (drop-oldest, and even dropping every idle chunk left no room): `dropped`
    /// counts the new chunk's messages and any dropped before it.
    Dropped { dropped: u64 },
    /// Not queued: past the cap, and the connection must be closed.
    OverCap,
}

/// Input received but not yet used: a partial frame or handshake, or a fragmented WebSocket
/// message. Allocated only while something is incomplete.
#[derive(Default)]
pub struct Partial {
    pub bytes: Vec<u8>,
    /// Payload of a fragmented WebSocket message being reassembled (Some while one is open).
    pub ws_message: Option<Vec<u8>>,
}

/// Queued bytes: a reference to a shared buffer (a batch encoded once per shard, or a reply)
/// from `off`, carrying `msgs` messages.
pub struct Chunk {
    pub buf: Rc<Bytes>,
    pub off: u32,
    pub msgs: u32,
}

impl Chunk {
    pub fn remaining(&self) -> &[u8] {
        &self.buf[self.off as usize..]
    }
}

pub struct Conn {
    pub gen_: u16,
    pub transport: Transport,
    pub state: State,
    /// A multishot receive is armed.
    pub recv_armed: bool,
    /// A write is in flight, covering the first `inflight` chunks.
    pub inflight: u16,
    pub sending: bool,
    /// A shutdown is in flight. The slot must not be closed before it completes: io_uring runs
    /// a shutdown in a worker and resolves the slot only then, so a slot closed and reused
    /// meanwhile would shut down the next connection.
    pub shutting: bool,
    /// Queued on the shard's dirty list (a write will be issued this turn).
    pub dirty: bool,
    /// Refused at accept ([`crate::admission::Refusal`] as u8; 0: admitted): the first request
    /// is answered with the reason, then the connection closes.
    pub refusal: u8,
    /// Its source address's entry in the admission table (released on close).
    pub ip: u32,
    pub mid: i64,
    /// Shared with the gateway's key table (one allocation for both).
    pub key: std::sync::Arc<str>,
    /// (room index, position among the room's members, the room's `fanned` count when it
    /// joined), the first one being the room goim's ChangeRoom manages.
    pub rooms: Vec<(u32, u32, u32)>,
    /// Ops accepted for key pushes and broadcasts (sorted).
    pub accepts: Vec<i32>,
    pub out: OutQueue,
    pub out_bytes: usize,
    /// Unused input; None when idle.
    pub partial: Option<Box<Partial>>,
    /// Deadline (shard clock, ms) and the deadline the wheel entry was filed for.
    pub deadline: u64,
    pub filed_for: u64,
    /// WSS only: the TLS session (see `tls.rs`). Boxed, so a plain connection pays 8 bytes.
    pub tls: Option<Box<rustls::ServerConnection>>,
}

impl Conn {
    pub fn new(gen_: u16, transport: Transport, deadline: u64) -> Conn {
        Conn {
            gen_,
            transport,
            state: match transport {
                Transport::Tcp => State::Auth,
                Transport::Ws => State::Upgrade,
            },
            recv_armed: false,
            inflight: 0,
            sending: false,
            shutting: false,
            dirty: false,
            refusal: 0,
            ip: crate::admission::NO_IP,
            mid: 0,
            key: std::sync::Arc::from(""),
            rooms: Vec::new(),
            accepts: Vec::new(),
            out: OutQueue::default(),
            out_bytes: 0,
            partial: None,
            deadline,
            filed_for: 0,
            tls: None,
        }
    }

    pub fn watches(&self, op: i32) -> bool {
        self.accepts.binary_search(&op).is_ok()
    }

    pub fn watch(&mut self, ops: &[i32]) {
        self.accepts.reserve_exact(ops.len());
        for &op in ops {
            if let Err(i) = self.accepts.binary_search(&op) {
                self.accepts.insert(i, op);
            }
        }
    }

    pub fn unwatch(&mut self, ops: &[i32]) {
        self.accepts.retain(|a| !ops.contains(a));
    }

    /// Queues `buf` (carrying `msgs` messages) under the outbound cap of `cap` bytes: the rule every push and reply goes
    /// through. Past the cap, with `drop_oldest`, whole queued chunks that are not being written
    /// are dropped (oldest first) until the new one fits, or the new one is dropped; without it,
    /// nothing is queued and the caller must close the connection.
    pub fn enqueue(
        &mut self,
        buf: &Rc<Bytes>,
        msgs: u32,
        cap: usize,
        drop_oldest: bool,
    ) -> Enqueued {
        let len = buf.len();
        let mut dropped = 0u64;
        if self.out_bytes + len > cap {
            if !drop_oldest {
                return Enqueued::OverCap;
            }
            // Kept: the chunks a write in flight covers, and a chunk partly written (dropping
            // it would cut a frame in two on the wire).
            let partly_written = self.out.get(0).is_some_and(|c| c.off > 0);
            let keep = (self.inflight as usize).max(partly_written as usize);
            let need = self.out_bytes + len - cap;
            let (freed, gone) = self.out.drop_after(keep, need);
            self.out_bytes -= freed;
            dropped += gone;
            if self.out_bytes + len > cap {
                return Enqueued::Dropped {
                    dropped: dropped + msgs as u64,
                };
            }
        }
        self.out.push_back(Chunk {
            buf: buf.clone(),
            off: 0,
            msgs,
        });
        self.out_bytes += len;
        let newly_dirty = !self.dirty && !self.sending;
        self.dirty |= newly_dirty;
        Enqueued::Queued {
            newly_dirty,
            dropped,
        }
    }

    /// Takes the bytes of an incomplete frame or handshake (empty when there are none).
    pub fn take_pending(&mut self) -> Vec<u8> {
        self.partial
            .as_mut()
            .map(|p| std::mem::take(&mut p.bytes))
            .unwrap_or_default()
    }

    /// Keeps bytes for the next read; frees the storage when nothing is incomplete.
    pub fn put_pending(&mut self, bytes: Vec<u8>) {
        match &mut self.partial {
            Some(p) => {
                p.bytes = bytes;
                if p.bytes.is_empty() && p.ws_message.is_none() {
                    self.partial = None;
                }
            }
            None if bytes.is_empty() => {}
            None => {
                self.partial = Some(Box::new(Partial {
                    bytes,
                    ws_message: None,
                }))
            }
        }
    }

    /// The fragmented WebSocket message being reassembled, if one is open.
    pub fn ws_message(&mut self) -> &mut Option<Vec<u8>> {
        &mut self.partial.get_or_insert_with(Default::default).ws_message
    }

    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Consumes `n` written bytes from the front of the queue; returns how many messages the
    /// fully written chunks carried.
    pub fn advance(&mut self, mut n: usize) -> u64 {
        let mut done = 0;
        self.out_bytes = self.out_bytes.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.out.front_mut() else {
                break;
            };
            let left = front.buf.len() - front.off as usize;
            if n >= left {
                n -= left;
                done += front.msgs as u64;
                self.out.pop_front();
            } else {
                front.off += n as u32;
                n = 0;
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(s: &'static [u8]) -> Chunk {
        Chunk {
            buf: Rc::new(Bytes::from_static(s)),
            off: 0,
            msgs: 1,
        }
    }

    #[test]
    fn advance_handles_partial_writes() {
        let mut c = Conn::new(1, Transport::Tcp, 0);
        c.out.push_back(chunk(b"abc"));
        c.out.push_back(chunk(b"defg"));
        assert_eq!(c.out.len(), 2);
        // (each test chunk carries one message)
        c.out_bytes = 7;
        assert_eq!(c.advance(2), 0);
        assert_eq!(c.out.get(0).unwrap().remaining(), b"c");
        assert_eq!(c.advance(3), 1);
        assert_eq!(c.out.get(0).unwrap().remaining(), b"fg");
        assert_eq!(c.advance(2), 1);
        assert!(c.out.is_empty());
        assert_eq!(c.out_bytes, 0);
    }

    #[test]
    fn out_queue_keeps_order_across_head_and_rest() {
        let mut q = OutQueue::default();
        assert!(q.is_empty());
        for s in [&b"a"[..], b"b", b"c"] {
            q.push_back(Chunk {
                buf: Rc::new(Bytes::from_static(s)),
                off: 0,
                msgs: 1,
            });
        }
        assert_eq!(
            q.iter().map(|c| c.remaining()[0]).collect::<Vec<_>>(),
            b"abc"
        );
        assert_eq!(q.get(2).unwrap().remaining(), b"c");
        // Dropping past the first chunk takes "b" only (1 byte needed).
        assert_eq!(q.drop_after(1, 1), (1, 1));
        assert_eq!(q.pop_front().unwrap().remaining(), b"a");
        assert_eq!(q.len(), 1);
        q.truncate(0);
        assert!(q.is_empty() && q.pop_front().is_none());
    }

    fn sized(n: usize) -> Rc<Bytes> {
        Rc::new(Bytes::from(vec![0u8; n]))
    }

    #[test]
    fn enqueue_marks_dirty_once_and_respects_the_cap() {
        let mut c = Conn::new(1, Transport::Tcp, 0);
        assert_eq!(
            c.enqueue(&sized(60), 1, 100, false),
            Enqueued::Queued {
                newly_dirty: true,
                dropped: 0
            }
        );
        assert_eq!(
            c.enqueue(&sized(40), 1, 100, false),
            Enqueued::Queued {
                newly_dirty: false,
                dropped: 0
            }
        );
        assert_eq!(c.enqueue(&sized(1), 1, 100, false), Enqueued::OverCap);
        assert_eq!(
            (c.out.len(), c.out_bytes),
            (2, 100),
            "nothing queued past the cap"
        );
    }

    #[test]
    fn drop_oldest_never_drops_what_is_being_written() {
        let mut c = Conn::new(1, Transport::Tcp, 0);
        for _ in 0..3 {
            c.enqueue(&sized(30), 2, 100, true);
        }
        c.sending = true;
        c.inflight = 1; // the first chunk is in a write
        assert_eq!(
            c.enqueue(&sized(50), 5, 100, true),
            Enqueued::Queued {
                newly_dirty: false,
                dropped: 4
            }
        );
        assert_eq!(c.out.iter().map(|x| x.msgs).collect::<Vec<_>>(), vec![2, 5]);
        assert_eq!(c.out_bytes, 80);
        // Nothing idle left to drop: the new chunk itself is dropped.
        assert_eq!(
            c.enqueue(&sized(90), 3, 100, true),
            Enqueued::Dropped { dropped: 5 + 3 }
        );
        assert_eq!(c.out.iter().map(|x| x.msgs).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn drop_oldest_never_cuts_a_partly_written_chunk() {
        let mut c = Conn::new(1, Transport::Tcp, 0);
        for _ in 0..3 {
            c.enqueue(&sized(30), 1, 100, true);
        }
        // A write took 10 bytes of the first chunk and completed: nothing is in flight, but the
        // rest of that chunk must still go out whole.
        c.advance(10);
        assert_eq!((c.inflight, c.out_bytes), (0, 80));
        assert_eq!(
            c.enqueue(&sized(40), 1, 100, true),
            Enqueued::Queued {
                newly_dirty: false,
                dropped: 1
            }
        );
        assert_eq!(
            c.out.get(0).unwrap().off,
            10,
            "the partly written chunk stays first"
        );
        assert_eq!(c.out_bytes, 90);
        // Many small chunks dropped in one go, oldest first, behind a write in flight.
        let mut c = Conn::new(1, Transport::Tcp, 0);
        for i in 0..50u32 {
            c.enqueue(&sized(2), i, 100, true);
        }
        c.inflight = 2;
        assert_eq!(
            c.enqueue(&sized(30), 99, 100, true),
            Enqueued::Queued {
                newly_dirty: false,
                dropped: (2..17).sum::<u32>() as u64
            }
        );
        let msgs: Vec<u32> = c.out.iter().map(|x| x.msgs).collect();
        assert_eq!(&msgs[..3], &[0, 1, 17]);
        assert_eq!(*msgs.last().unwrap(), 99);
        assert_eq!(c.out_bytes, 100);
    }

    #[test]
    fn partial_input_is_freed_when_complete() {
        let mut c = Conn::new(1, Transport::Tcp, 0);
        c.put_pending(vec![1, 2]);
        assert!(c.partial.is_some());
        assert_eq!(c.take_pending(), vec![1, 2]);
        c.put_pending(Vec::new());
        assert!(c.partial.is_none());
        *c.ws_message() = Some(vec![]);
        c.put_pending(Vec::new());
        assert!(c.partial.is_some(), "an open fragmented message keeps it");
    }

    #[test]
    fn watch_set_is_a_sorted_set() {
        let mut c = Conn::new(1, Transport::Ws, 0);
        c.watch(&[1002, 1000, 1000]);
        assert_eq!(c.accepts, vec![1000, 1002]);
        assert!(c.watches(1002) && !c.watches(1001));
        c.unwatch(&[1000]);
        assert_eq!(c.accepts, vec![1002]);
    }

    #[test]
    fn idle_connection_state_is_small() {
        // The per-connection budget is 512 bytes of user space in all; the struct is most of it.
        assert!(
            std::mem::size_of::<Conn>() <= 256,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
