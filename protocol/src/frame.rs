//! The goim frame: a 16-byte big-endian header followed by the body (reference §1.1).
//!
//! ```text
//! offset 0  i32 packLen   = 16 + body length
//! offset 4  i16 headerLen = 16
//! offset 6  i16 ver
//! offset 8  i32 op
//! offset 12 i32 seq
//! offset 16 body
//! ```

use crate::{Error, Result};

/// Length of every goim header.
pub const HEADER_LEN: usize = 16;
/// Largest body a client may send (goim's `MaxBodySize`).
pub const MAX_BODY: usize = 4096;
/// Largest frame a client may send: 4112 bytes.
pub const MAX_CLIENT_FRAME: usize = HEADER_LEN + MAX_BODY;
/// `ver` that server-generated pushes carry.
pub const PUSH_VER: i16 = 1;

/// A decoded header. `pack_len` is already validated against the limit it was decoded with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub pack_len: usize,
    pub ver: i16,
    pub op: i32,
    pub seq: i32,
}

impl Header {
    pub fn body_len(&self) -> usize {
        self.pack_len - HEADER_LEN
    }
}

/// Decodes and validates the 16 header bytes at the start of `buf`. `max_pack` is the largest
/// acceptable `packLen` ([`MAX_CLIENT_FRAME`] for client input).
///
/// Unlike goim, a `packLen` below 16 is rejected rather than read as "no body".
pub fn decode_header(buf: &[u8; HEADER_LEN], max_pack: usize) -> Result<Header> {
    let pack_len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let header_len = i16::from_be_bytes([buf[4], buf[5]]);
    if pack_len < 0 || pack_len as usize > max_pack {
        return Err(Error::FrameTooLong {
            len: pack_len as i64,
            max: max_pack,
        });
    }
    if header_len as usize != HEADER_LEN {
        return Err(Error::BadHeaderLen { got: header_len });
    }
    if (pack_len as usize) < HEADER_LEN {
        return Err(Error::FrameTooShort {
            len: pack_len as i64,
        });
    }
    Ok(Header {
        pack_len: pack_len as usize,
        ver: i16::from_be_bytes([buf[6], buf[7]]),
        op: i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        seq: i32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]),
    })
}

/// Splits the first complete frame off a TCP byte stream.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (read more), or the header,
/// the body and the number of bytes consumed. A bad header is an error as soon as its 16 bytes
/// are in, before the body arrives.
pub fn split(buf: &[u8], max_pack: usize) -> Result<Option<(Header, &[u8], usize)>> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = decode_header(head, max_pack)?;
    if buf.len() < header.pack_len {
        return Ok(None);
    }
    Ok(Some((
        header,
        &buf[HEADER_LEN..header.pack_len],
        header.pack_len,
    )))
}

/// Decodes the goim frame carried by one WebSocket message: the message must hold exactly one
/// frame (goim reads only the first and ignores what follows; corecast requires
/// `packLen == message length`, which goim's own clients always satisfy).
pub fn decode_ws_message(msg: &[u8], max_pack: usize) -> Result<(Header, &[u8])> {
    let Some(head) = msg.first_chunk::<HEADER_LEN>() else {
        return Err(Error::FrameTooShort {
            len: msg.len() as i64,
        });
    };
    let header = decode_header(head, max_pack)?;
    if header.pack_len != msg.len() {
        return Err(Error::WsLengthMismatch {
            pack_len: header.pack_len,
            msg_len: msg.len(),
        });
    }
    Ok((header, &msg[HEADER_LEN..]))
}

/// Writes a header for a body of `body_len` bytes.
pub fn header_bytes(body_len: usize, ver: i16, op: i32, seq: i32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&((HEADER_LEN + body_len) as i32).to_be_bytes());
    h[4..6].copy_from_slice(&(HEADER_LEN as i16).to_be_bytes());
    h[6..8].copy_from_slice(&ver.to_be_bytes());
    h[8..12].copy_from_slice(&op.to_be_bytes());
    h[12..16].copy_from_slice(&seq.to_be_bytes());
    h
}

/// Appends a whole frame (header and body) to `out`.
pub fn encode(out: &mut Vec<u8>, ver: i16, op: i32, seq: i32, body: &[u8]) {
    out.extend_from_slice(&header_bytes(body.len(), ver, op, seq));
    out.extend_from_slice(body);
}

/// Walks concatenated inner frames (an op-9 body) and returns how many there are. Inner frames
/// come from the dispatcher, not from clients, so their bodies are not capped at 4096; every
/// header must still be well formed and the last frame must end exactly at the end of `buf`.
pub fn count_inner_frames(buf: &[u8]) -> Result<usize> {
    let mut offset = 0;
    let mut count = 0;
    while offset < buf.len() {
        let Some(head) = buf[offset..].first_chunk::<HEADER_LEN>() else {
            return Err(Error::BadInnerFrame {
                offset,
                reason: "truncated header",
            });
        };
        let header = decode_header(head, i32::MAX as usize).map_err(|_| Error::BadInnerFrame {
            offset,
            reason: "bad packLen or headerLen",
        })?;
        if buf.len() - offset < header.pack_len {
            return Err(Error::BadInnerFrame {
                offset,
                reason: "packLen runs past the end",
            });
        }
        offset += header.pack_len;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn heartbeat_bytes_match_the_reference() {
        let mut out = Vec::new();
        encode(&mut out, 1, op::HEARTBEAT, 1, b"");
        assert_eq!(out, hex("00000010 0010 0001 00000002 00000001"));
        out.clear();
        encode(&mut out, 1, op::HEARTBEAT_REPLY, 1, &5i32.to_be_bytes());
        assert_eq!(out, hex("00000014 0010 0001 00000003 00000001 00000005"));
    }

    #[test]
    fn auth_reply_and_push_bytes_match_the_reference() {
        let mut out = Vec::new();
        encode(&mut out, 1, op::AUTH_REPLY, 1, b"");
        assert_eq!(out, hex("00000010 0010 0001 00000008 00000001"));
        out.clear();
        encode(&mut out, PUSH_VER, 1000, 0, b"hi");
        assert_eq!(out, hex("00000012 0010 0001 000003e8 00000000 6869"));
    }

    #[test]
    fn split_round_trips_and_waits_for_more() {
        let mut out = Vec::new();
        encode(&mut out, 3, 1000, 42, b"hello");
        encode(&mut out, 1, op::HEARTBEAT, 7, b"");
        for cut in 0..21 {
            assert_eq!(
                split(&out[..cut], MAX_CLIENT_FRAME).unwrap(),
                None,
                "cut {cut}"
            );
        }
        let (h, body, used) = split(&out, MAX_CLIENT_FRAME).unwrap().unwrap();
        assert_eq!(
            (h.ver, h.op, h.seq, body, used),
            (3, 1000, 42, &b"hello"[..], 21)
        );
        let (h, body, used) = split(&out[used..], MAX_CLIENT_FRAME).unwrap().unwrap();
        assert_eq!((h.op, h.seq, body.len(), used), (op::HEARTBEAT, 7, 0, 16));
    }

    #[test]
    fn limits_are_exactly_4112() {
        let mut ok = Vec::new();
        encode(&mut ok, 1, 4, 1, &[7u8; MAX_BODY]);
        assert_eq!(ok.len(), 4112);
        assert!(split(&ok, MAX_CLIENT_FRAME).unwrap().is_some());
        let mut big = Vec::new();
        encode(&mut big, 1, 4, 1, &[7u8; MAX_BODY + 1]);
        assert_eq!(
            split(&big[..16], MAX_CLIENT_FRAME),
            Err(Error::FrameTooLong {
                len: 4113,
                max: 4112
            })
        );
    }

    #[test]
    fn bad_headers_are_rejected_with_their_values() {
        let mut h = header_bytes(0, 1, 2, 1);
        h[4..6].copy_from_slice(&20i16.to_be_bytes());
        assert_eq!(
            split(&h, MAX_CLIENT_FRAME),
            Err(Error::BadHeaderLen { got: 20 })
        );
        let mut h = header_bytes(0, 1, 2, 1);
        h[0..4].copy_from_slice(&15i32.to_be_bytes());
        assert_eq!(
            split(&h, MAX_CLIENT_FRAME),
            Err(Error::FrameTooShort { len: 15 })
        );
        let mut h = header_bytes(0, 1, 2, 1);
        h[0..4].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(matches!(
            split(&h, MAX_CLIENT_FRAME),
            Err(Error::FrameTooLong { len: -1, .. })
        ));
    }

    #[test]
    fn ws_message_must_hold_exactly_one_frame() {
        let mut m = Vec::new();
        encode(&mut m, 1, op::AUTH, 1, b"{}");
        let (h, body) = decode_ws_message(&m, MAX_CLIENT_FRAME).unwrap();
        assert_eq!((h.op, body), (op::AUTH, &b"{}"[..]));
        assert_eq!(
            decode_ws_message(&m[..10], MAX_CLIENT_FRAME),
            Err(Error::FrameTooShort { len: 10 })
        );
        m.push(0);
        assert_eq!(
            decode_ws_message(&m, MAX_CLIENT_FRAME),
            Err(Error::WsLengthMismatch {
                pack_len: 18,
                msg_len: 19
            })
        );
        assert!(decode_ws_message(&m[..17], MAX_CLIENT_FRAME).is_err());
    }

    #[test]
    fn inner_frames_are_counted_and_checked() {
        let mut b = Vec::new();
        for i in 0..3 {
            encode(&mut b, 1, 1000, 0, format!("m{i}").as_bytes());
        }
        assert_eq!(count_inner_frames(&b), Ok(3));
        assert_eq!(count_inner_frames(&[]), Ok(0));
        assert!(count_inner_frames(&b[..b.len() - 1]).is_err());
        assert!(count_inner_frames(&b[..5]).is_err());
        let mut big = Vec::new();
        encode(&mut big, 1, 1000, 0, &vec![1u8; 10_000]);
        assert_eq!(count_inner_frames(&big), Ok(1));
    }
}
