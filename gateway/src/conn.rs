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
    pub mid: i64,
    pub key: Box<str>,
    pub platform: Box<str>,
    /// (room index, position among the room's members), the first one being the room goim's
    /// ChangeRoom manages.
    pub rooms: Vec<(u32, u32)>,
    /// Ops accepted for key pushes and broadcasts (sorted).
    pub accepts: Vec<i32>,
    pub out: VecDeque<Chunk>,
    pub out_bytes: usize,
    /// Unparsed input (a partial frame, handshake or fragmented WS message); empty when idle.
    pub pending: Vec<u8>,
    /// WS: payload of a fragmented message being reassembled.
    pub ws_message: Vec<u8>,
    /// Deadline (shard clock, ms) and the deadline the wheel entry was filed for.
    pub deadline: u64,
    pub filed_for: u64,
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
            mid: 0,
            key: Box::from(""),
            platform: Box::from(""),
            rooms: Vec::new(),
            accepts: Vec::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            pending: Vec::new(),
            ws_message: Vec::new(),
            deadline,
            filed_for: 0,
        }
    }

    pub fn watches(&self, op: i32) -> bool {
        self.accepts.binary_search(&op).is_ok()
    }

    pub fn watch(&mut self, ops: &[i32]) {
        for &op in ops {
            if let Err(i) = self.accepts.binary_search(&op) {
                self.accepts.insert(i, op);
            }
        }
    }

    pub fn unwatch(&mut self, ops: &[i32]) {
        self.accepts.retain(|a| !ops.contains(a));
    }

    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Consumes `n` written bytes from the front of the queue; returns how many chunks were
    /// fully written.
    pub fn advance(&mut self, mut n: usize) -> usize {
        let mut done = 0;
        self.out_bytes = self.out_bytes.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.out.front_mut() else {
                break;
            };
            let left = front.buf.len() - front.off as usize;
            if n >= left {
                n -= left;
                self.out.pop_front();
                done += 1;
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
        c.out_bytes = 7;
        assert_eq!(c.advance(2), 0);
        assert_eq!(c.out.front().unwrap().remaining(), b"c");
        assert_eq!(c.advance(3), 1);
        assert_eq!(c.out.front().unwrap().remaining(), b"fg");
        assert_eq!(c.advance(2), 1);
        assert!(c.out.is_empty());
        assert_eq!(c.out_bytes, 0);
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
