//! Op-9 ("Raw") batches, encoded once for both transports (reference §1.4).
//!
//! A batch is one allocation laid out as
//!
//! ```text
//! [ spare | WS header (2-10 B) | outer goim header (op 9, ver 1, seq 0) | inner frames ... ]
//!           ^ ws()                                                          ^ tcp()
//! ```
//!
//! so the TCP bytes (bare inner frames: a TCP client never sees op 9) and the WebSocket bytes
//! (one binary message: outer op-9 header followed by the inner frames) are two reference-counted
//! slices of the same buffer. A shard hands the same `Bytes` to every member; nothing is copied
//! per connection.

use bytes::Bytes;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::frame::{self, HEADER_LEN, PUSH_VER};
use crate::{Result, op};

/// Largest server WebSocket header: 2 bytes + 8-byte extended length, unmasked.
const WS_HEADER_MAX: usize = 10;
const PREFIX: usize = WS_HEADER_MAX + HEADER_LEN;

/// An encoded op-9 batch of one or more inner frames.
#[derive(Clone, Debug)]
pub struct Batch {
    buf: Bytes,
    ws_start: usize,
    messages: u32,
}

impl Batch {
    /// Builds a batch from already-encoded inner frames (what the dispatcher sends in a room
    /// batch). The frames are validated ([`frame::count_inner_frames`]) and copied once.
    pub fn from_inner_frames(frames: &[u8]) -> Result<Batch> {
        let messages = frame::count_inner_frames(frames)? as u32;
        let mut buf = Vec::with_capacity(PREFIX + frames.len());
        buf.resize(PREFIX, 0);
        buf.extend_from_slice(frames);
        Ok(Self::seal(buf, messages))
    }

    /// Joins batches into one, in order: their inner frames back to back under one op-9 frame.
    /// A shard uses it to merge consecutive batches of one room that queued up while it was
    /// busy, so a member gets one chunk (and one write) for all of them. Each input was
    /// validated when it was built, so this only copies.
    pub fn concat(batches: &[Batch]) -> Batch {
        let inner: usize = batches.iter().map(Batch::tcp_len).sum();
        let mut buf = Vec::with_capacity(PREFIX + inner);
        buf.resize(PREFIX, 0);
        let mut messages = 0u32;
        for b in batches {
            buf.extend_from_slice(&b.buf[PREFIX..]);
            messages = messages.saturating_add(b.messages);
        }
        Self::seal(buf, messages)
    }

    /// Builds a batch holding one inner frame (ver 1, `op`, seq 0, `body`): a key push or a
    /// broadcast.
    pub fn single(op: i32, body: &[u8]) -> Batch {
        let mut b = BatchBuilder::with_capacity(HEADER_LEN + body.len());
        b.push(op, body);
        b.finish()
    }

    fn seal(mut buf: Vec<u8>, messages: u32) -> Batch {
        let inner_len = buf.len() - PREFIX;
        let outer = frame::header_bytes(inner_len, PUSH_VER, op::RAW, 0);
        buf[WS_HEADER_MAX..PREFIX].copy_from_slice(&outer);
        let ws_len = HEADER_LEN + inner_len;
        let mut head = [0u8; WS_HEADER_MAX];
        let head_len = ws_binary_header(ws_len as u64, &mut head);
        let ws_start = WS_HEADER_MAX - head_len;
        buf[ws_start..WS_HEADER_MAX].copy_from_slice(&head[..head_len]);
        Batch {
            buf: Bytes::from(buf),
            ws_start,
            messages,
        }
    }

    /// The bytes a TCP connection writes: the inner frames, back to back.
    pub fn tcp(&self) -> Bytes {
        self.buf.slice(PREFIX..)
    }

    /// The bytes a WebSocket connection writes: one unmasked binary frame holding the outer
    /// op-9 goim frame.
    pub fn ws(&self) -> Bytes {
        self.buf.slice(self.ws_start..)
    }

    /// How many inner frames (messages, as goim's benchmark client counts them) it holds.
    pub fn messages(&self) -> u32 {
        self.messages
    }

    /// Length of the TCP bytes.
    pub fn tcp_len(&self) -> usize {
        self.buf.len() - PREFIX
    }
}

/// Accumulates inner frames into a batch (the dispatcher's room batcher; tests).
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    messages: u32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl BatchBuilder {
    pub fn with_capacity(inner_bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(PREFIX + inner_bytes);
        buf.resize(PREFIX, 0);
        BatchBuilder { buf, messages: 0 }
    }

    /// Appends one inner frame (ver 1, `op`, seq 0).
    pub fn push(&mut self, op: i32, body: &[u8]) {
        self.buf
            .extend_from_slice(&frame::header_bytes(body.len(), PUSH_VER, op, 0));
        self.buf.extend_from_slice(body);
        self.messages += 1;
    }

    pub fn messages(&self) -> u32 {
        self.messages
    }

    /// Bytes of inner frames so far.
    pub fn inner_len(&self) -> usize {
        self.buf.len() - PREFIX
    }

    /// The inner frames so far (what a room batch carries over the link).
    pub fn inner_frames(&self) -> &[u8] {
        &self.buf[PREFIX..]
    }

    pub fn finish(self) -> Batch {
        Batch::seal(self.buf, self.messages)
    }
}

/// Writes the header of one unfragmented, unmasked binary frame of `len` payload bytes into
/// `out` and returns its length (2, 4 or 10). Uses tungstenite's frame header encoder.
pub fn ws_binary_header(len: u64, out: &mut [u8; WS_HEADER_MAX]) -> usize {
    ws_header(OpCode::Data(Data::Binary), len, out)
}

pub(crate) fn ws_header(opcode: OpCode, len: u64, out: &mut [u8; WS_HEADER_MAX]) -> usize {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    let mut cursor = std::io::Cursor::new(&mut out[..]);
    // Writing at most 10 bytes into a 10-byte buffer cannot fail.
    header
        .format(len, &mut cursor)
        .expect("a WebSocket header fits in 10 bytes");
    cursor.position() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn single_push_matches_the_reference_example() {
        let b = Batch::single(1000, b"hi");
        assert_eq!(
            &b.tcp()[..],
            hex("00000012 0010 0001 000003e8 00000000 6869")
        );
        let mut ws = vec![0x82, 34];
        ws.extend(hex(
            "00000022 0010 0001 00000009 00000000 00000012 0010 0001 000003e8 00000000 6869",
        ));
        assert_eq!(&b.ws()[..], ws);
        assert_eq!(b.messages(), 1);
    }

    #[test]
    fn concat_joins_inner_frames_in_order() {
        let a = Batch::single(1000, b"hi");
        let mut bb = BatchBuilder::default();
        bb.push(1001, b"x");
        bb.push(1002, b"");
        let b = bb.finish();
        let c = Batch::concat(&[a.clone(), b.clone()]);
        assert_eq!(c.messages(), 3);
        let mut want = a.tcp().to_vec();
        want.extend_from_slice(&b.tcp());
        assert_eq!(&c.tcp()[..], &want[..]);
        assert_eq!(frame::count_inner_frames(&c.tcp()).unwrap(), 3);
        // The WS bytes are one binary message whose payload is the op-9 frame of all three.
        let same = Batch::from_inner_frames(&want).unwrap();
        assert_eq!(&c.ws()[..], &same.ws()[..]);
        let one = Batch::concat(std::slice::from_ref(&a));
        assert_eq!(&one.ws()[..], &a.ws()[..]);
        let none = Batch::concat(&[]);
        assert_eq!((none.messages(), none.tcp_len()), (0, 0));
    }

    #[test]
    fn tcp_and_ws_share_one_buffer() {
        let b = Batch::single(1000, b"x");
        let (t, w) = (b.tcp(), b.ws());
        assert_eq!(t.as_ptr() as usize - w.as_ptr() as usize, w.len() - t.len());
    }

    #[test]
    fn builder_and_inner_frames_agree() {
        let mut bb = BatchBuilder::default();
        for i in 0..20 {
            bb.push(1000, format!("{{\"test\":{i}}}").as_bytes());
        }
        let inner = bb.inner_frames().to_vec();
        let a = bb.finish();
        let b = Batch::from_inner_frames(&inner).unwrap();
        assert_eq!(a.tcp(), b.tcp());
        assert_eq!(a.ws(), b.ws());
        assert_eq!(a.messages(), 20);
        assert!(Batch::from_inner_frames(&inner[..inner.len() - 3]).is_err());
    }

    #[test]
    fn ws_lengths_use_7_16_and_64_bit_forms() {
        for (body, head_len, first_len_byte) in [
            (0usize, 2usize, 32u8),
            (93, 2, 125),
            (94, 4, 126),
            (65_503, 4, 126),
            (65_504, 10, 127),
        ] {
            let b = Batch::single(1000, &vec![0u8; body]);
            let ws = b.ws();
            let payload = 32 + body;
            assert_eq!(ws.len(), head_len + payload, "body {body}");
            assert_eq!(ws[0], 0x82);
            if head_len == 2 {
                assert_eq!(ws[1] as usize, payload);
            } else {
                assert_eq!(ws[1], first_len_byte);
            }
        }
    }
}
