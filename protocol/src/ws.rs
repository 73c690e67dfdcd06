//! Server-side WebSocket (RFC 6455) as goim's comet speaks it (reference §1.5): the upgrade at
//! exactly `/sub`, client frame parsing with in-place unmasking, and the few control frames a
//! server sends. Frame headers are parsed and written with tungstenite's [`FrameHeader`]; the
//! HTTP request with httparse (tungstenite's own parser); the accept key with tungstenite's
//! [`derive_accept_key`].
//!
//! Differences from goim, all on error paths: a bad upgrade gets an HTTP error response naming
//! the problem before the close (goim closes silently), and a client Close gets a Close back.

use std::io::Cursor;
use std::ops::Range;

use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::{Error, Result};

/// Largest upgrade request accepted; past it the connection is refused.
pub const MAX_HANDSHAKE: usize = 4096;
/// The only path goim serves WebSocket clients on.
pub const PATH: &str = "/sub";

/// What the gateway needs from a valid upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Accept` value for the response.
    pub accept: String,
    /// `Origin`, for an allowed-origins check.
    pub origin: Option<String>,
}

/// Parses an upgrade request from the bytes received so far. `Ok(None)`: incomplete, read more.
/// On success, also returns the request's length (bytes after it are already WebSocket frames).
pub fn parse_upgrade(buf: &[u8]) -> Result<Option<(Upgrade, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let status = req
        .parse(buf)
        .map_err(|e| Error::Handshake(format!("malformed HTTP request: {e}")))?;
    let len = match status {
        httparse::Status::Partial if buf.len() >= MAX_HANDSHAKE => {
            return Err(Error::HandshakeTooLarge { max: MAX_HANDSHAKE });
        }
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) if len > MAX_HANDSHAKE => {
            return Err(Error::HandshakeTooLarge { max: MAX_HANDSHAKE });
        }
        httparse::Status::Complete(len) => len,
    };
    let method = req.method.unwrap_or("");
    if method != "GET" {
        return Err(Error::Handshake(format!("method {method} is not GET")));
    }
    let path = req.path.unwrap_or("");
    if path != PATH {
        return Err(Error::WrongPath {
            path: path.chars().take(128).collect(),
        });
    }
    let header = |name: &str| -> Option<&[u8]> {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if header("Sec-WebSocket-Version") != Some(b"13") {
        return Err(Error::Handshake("Sec-WebSocket-Version must be 13".into()));
    }
    if !has_token("Upgrade", "websocket") {
        return Err(Error::Handshake("Upgrade header is not websocket".into()));
    }
    if !has_token("Connection", "upgrade") {
        return Err(Error::Handshake("Connection header lacks upgrade".into()));
    }
    let key = header("Sec-WebSocket-Key").unwrap_or(b"");
    if key.is_empty() {
        return Err(Error::Handshake("Sec-WebSocket-Key is missing".into()));
    }
    let origin = header("Origin").map(|v| String::from_utf8_lossy(v).into_owned());
    Ok(Some((
        Upgrade {
            accept: derive_accept_key(key),
            origin,
        },
        len,
    )))
}

/// The `101 Switching Protocols` response (no subprotocol, no extensions, like goim).
pub fn accept_response(up: &Upgrade) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        up.accept
    )
    .into_bytes()
}

/// An HTTP error response naming why the upgrade was refused; the connection closes after it.
pub fn reject_response(err: &Error) -> Vec<u8> {
    let status = match err {
        Error::WrongPath { .. } => "404 Not Found",
        Error::HandshakeTooLarge { .. } => "431 Request Header Fields Too Large",
        Error::OriginNotAllowed { .. } => "403 Forbidden",
        Error::Refused { status: 429, .. } => "429 Too Many Requests",
        Error::Refused { .. } => "503 Service Unavailable",
        _ => "400 Bad Request",
    };
    let body = format!("{err}\n");
    // A refusal under a limit passes: tell clients to wait a little before trying again.
    let retry = if matches!(err, Error::Refused { .. }) {
        "Retry-After: 1\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What a client frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Text, binary (both carry goim frames, as in goim) or continuation.
    Data {
        continuation: bool,
    },
    Ping,
    Pong,
    Close,
}

/// One parsed client frame; its payload is unmasked in place in the buffer given to
/// [`parse_frame`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub kind: Kind,
    /// Where the payload sits in the buffer.
    pub payload: Range<usize>,
    /// Bytes of the buffer the frame takes (header and payload).
    pub len: usize,
}

/// Parses the first client frame of `buf`, unmasking its payload in place. `Ok(None)` means
/// more bytes are needed. A payload larger than `max_payload` is an error as soon as the header
/// is in, so a client cannot make the server buffer it. Reserved bits and unknown opcodes are
/// errors (goim closes on both). Masked and unmasked frames are both accepted, as in goim.
pub fn parse_frame(buf: &mut [u8], max_payload: usize) -> Result<Option<Frame>> {
    // Checked before tungstenite's parser so the error names the opcode itself.
    if let Some(&first) = buf.first() {
        let opcode = first & 0x0f;
        if !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10) {
            return Err(Error::WsUnknownOpcode(opcode));
        }
    }
    let mut cursor = Cursor::new(&buf[..]);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(e) => return Err(Error::WsHeader(e.to_string())),
    };
    let head_len = cursor.position() as usize;
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(Error::WsReservedBits {
            rsv1: header.rsv1,
            rsv2: header.rsv2,
            rsv3: header.rsv3,
        });
    }
    let kind = match header.opcode {
        OpCode::Data(Data::Continue) => Kind::Data { continuation: true },
        OpCode::Data(Data::Text) | OpCode::Data(Data::Binary) => Kind::Data {
            continuation: false,
        },
        OpCode::Control(Control::Ping) => Kind::Ping,
        OpCode::Control(Control::Pong) => Kind::Pong,
        OpCode::Control(Control::Close) => Kind::Close,
        OpCode::Data(Data::Reserved(x)) | OpCode::Control(Control::Reserved(x)) => {
            return Err(Error::WsUnknownOpcode(x));
        }
    };
    let control = matches!(kind, Kind::Ping | Kind::Pong | Kind::Close);
    if control && (!header.is_final || len > 125) {
        return Err(Error::WsBadControl);
    }
    // RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0. Checked here so
    // that the end of the frame cannot overflow whatever `max_payload` is.
    if len >> 63 != 0 {
        return Err(Error::WsHeader(format!(
            "payload length {len:#x} has its most significant bit set"
        )));
    }
    if len > max_payload as u64 {
        return Err(Error::WsTooLarge {
            len,
            max: max_payload,
        });
    }
    let Some(end) = usize::try_from(len)
        .ok()
        .and_then(|len| head_len.checked_add(len))
    else {
        return Err(Error::WsTooLarge {
            len,
            max: usize::MAX - head_len,
        });
    };
    if buf.len() < end {
        return Ok(None);
    }
    if let Some(mask) = header.mask {
        apply_mask(&mut buf[head_len..end], mask);
    }
    Ok(Some(Frame {
        fin: header.is_final,
        kind,
        payload: head_len..end,
        len: end,
    }))
}

/// A client frame, masked with `mask` as RFC 6455 requires of clients (load testers, test
/// clients). `first` is the frame's first byte as sent: FIN, the RSV bits and the opcode, so
/// malformed frames can be built too (`0x82`: a final binary frame).
pub fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + payload.len());
    out.push(first);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
    out
}

/// XORs `buf` with the 4-byte client mask.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A Pong answering a Ping with the same payload (at most 125 bytes).
pub fn pong(payload: &[u8]) -> Vec<u8> {
    control(OpCode::Control(Control::Pong), payload)
}

/// A Close frame with a status code and a reason (truncated to fit a control frame).
pub fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(125);
    payload.extend_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    control(OpCode::Control(Control::Close), &payload)
}

/// Close codes corecast uses.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

fn control(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mut head = [0u8; 10];
    let n = crate::batch::ws_header(opcode, payload.len() as u64, &mut head);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "GET /sub HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://a.example\r\n\r\n";

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        client_frame(first, payload, [1, 2, 3, 4])
    }

    #[test]
    fn client_frames_parse_back_at_every_length_form() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut f = client_frame(0x82, &payload, [9, 8, 7, 6]);
            let parsed = parse_frame(&mut f, 1 << 20).unwrap().unwrap();
            assert_eq!(
                (parsed.kind, parsed.fin, parsed.len),
                (
                    Kind::Data {
                        continuation: false
                    },
                    true,
                    f.len()
                )
            );
            assert_eq!(&f[parsed.payload], &payload[..], "len {len}");
        }
    }

    #[test]
    fn upgrade_follows_rfc_6455_example() {
        let (up, len) = parse_upgrade(REQ.as_bytes()).unwrap().unwrap();
        assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(up.origin.as_deref(), Some("http://a.example"));
        assert_eq!(len, REQ.len());
        let resp = String::from_utf8(accept_response(&up)).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 "));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn partial_upgrade_waits() {
        for cut in 0..REQ.len() {
            assert_eq!(parse_upgrade(&REQ.as_bytes()[..cut]).unwrap(), None);
        }
    }

    #[test]
    fn upgrade_checks_match_goim() {
        let cases = [
            (REQ.replace("GET /sub ", "GET /sub?x=1 "), "ws_wrong_path"),
            (REQ.replace("GET /sub ", "GET /foo "), "ws_wrong_path"),
            (REQ.replace("GET ", "POST "), "ws_handshake"),
            (REQ.replace("Version: 13", "Version: 8"), "ws_handshake"),
            (
                REQ.replace("Upgrade: websocket", "Upgrade: h2c"),
                "ws_handshake",
            ),
            (
                REQ.replace("keep-alive, Upgrade", "keep-alive"),
                "ws_handshake",
            ),
            (REQ.replace("dGhlIHNhbXBsZSBub25jZQ==", ""), "ws_handshake"),
        ];
        for (req, kind) in cases {
            let err = parse_upgrade(req.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), kind, "{req}");
            let resp = String::from_utf8(reject_response(&err)).unwrap();
            assert!(resp.starts_with("HTTP/1.1 4"), "{resp}");
        }
        let huge = format!("GET /sub HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HANDSHAKE));
        assert_eq!(
            parse_upgrade(huge.as_bytes()),
            Err(Error::HandshakeTooLarge { max: MAX_HANDSHAKE })
        );
        assert!(parse_upgrade(b"\x00\x01garbage\r\n\r\n").is_err());
    }

    #[test]
    fn refusals_get_their_status_and_a_retry_hint() {
        let cases = [
            (
                Error::OriginNotAllowed {
                    origin: "https://evil.example".into(),
                },
                "HTTP/1.1 403 Forbidden\r\n",
                false,
            ),
            (
                Error::Refused {
                    status: 429,
                    reason: "slow down".into(),
                },
                "HTTP/1.1 429 Too Many Requests\r\n",
                true,
            ),
            (
                Error::Refused {
                    status: 503,
                    reason: "full".into(),
                },
                "HTTP/1.1 503 Service Unavailable\r\n",
                true,
            ),
        ];
        for (err, status, retry) in cases {
            let resp = String::from_utf8(reject_response(&err)).unwrap();
            assert!(resp.starts_with(status), "{resp}");
            assert_eq!(resp.contains("Retry-After: 1\r\n"), retry, "{resp}");
            assert!(resp.ends_with(&format!("\r\n\r\n{err}\n")), "{resp}");
        }
    }

    #[test]
    fn masked_binary_frame_is_unmasked_in_place() {
        let mut f = masked(0x82, b"hello");
        let frame = parse_frame(&mut f, 4112).unwrap().unwrap();
        assert_eq!(
            frame.kind,
            Kind::Data {
                continuation: false
            }
        );
        assert!(frame.fin);
        assert_eq!(&f[frame.payload.clone()], b"hello");
        assert_eq!(frame.len, f.len());
    }

    #[test]
    fn partial_frames_wait() {
        let f = masked(0x82, &[9u8; 300]);
        for cut in 0..f.len() {
            let mut part = f[..cut].to_vec();
            assert_eq!(parse_frame(&mut part, 4112).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn bad_frames_are_rejected() {
        let mut rsv = masked(0x82 | 0x40, b"x");
        assert!(matches!(
            parse_frame(&mut rsv, 4112),
            Err(Error::WsReservedBits { rsv1: true, .. })
        ));
        let mut unknown = masked(0x83, b"x");
        assert_eq!(
            parse_frame(&mut unknown, 4112),
            Err(Error::WsUnknownOpcode(3))
        );
        let mut unknown_control = masked(0x8b, b"x");
        assert_eq!(
            parse_frame(&mut unknown_control, 4112),
            Err(Error::WsUnknownOpcode(11))
        );
        let mut big = masked(0x82, &[0u8; 5000]);
        assert_eq!(
            parse_frame(&mut big[..8], 4112),
            Err(Error::WsTooLarge {
                len: 5000,
                max: 4112
            })
        );
        let mut frag_ping = masked(0x09, b"p");
        assert_eq!(parse_frame(&mut frag_ping, 4112), Err(Error::WsBadControl));
    }

    #[test]
    fn a_64_bit_length_cannot_overflow_the_frame_end() {
        // Found by the ws_frame fuzz target: a length of 2^64-1 under a limit of usize::MAX
        // overflowed `head_len + len`.
        let mut head = vec![0x82, 0xff];
        head.extend_from_slice(&u64::MAX.to_be_bytes());
        head.extend_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(
            parse_frame(&mut head.clone(), usize::MAX),
            Err(Error::WsHeader(m)) if m.contains("most significant bit")
        ));
        assert!(matches!(
            parse_frame(&mut head, 4112),
            Err(Error::WsHeader(_))
        ));
        let mut big = vec![0x82, 0xff];
        big.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        big.extend_from_slice(&[1, 2, 3, 4, 5]);
        assert_eq!(parse_frame(&mut big, usize::MAX), Ok(None));
    }

    #[test]
    fn control_frames() {
        let mut ping = masked(0x89, b"abc");
        let f = parse_frame(&mut ping, 4112).unwrap().unwrap();
        assert_eq!(f.kind, Kind::Ping);
        assert_eq!(pong(&ping[f.payload]), vec![0x8a, 3, b'a', b'b', b'c']);
        let c = close(close_code::POLICY, "auth: bad signature");
        assert_eq!(c[0], 0x88);
        assert_eq!(c[1] as usize, 2 + 19);
        assert_eq!(&c[2..4], &1008u16.to_be_bytes());
        assert_eq!(close(1000, &"é".repeat(100)).len(), 2 + 2 + 122);
    }
}
