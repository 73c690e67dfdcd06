//! What arrives on a connection: bytes from one receive are cut into goim frames (TCP) or
//! WebSocket messages holding goim frames (WS), and counted as goim's benchmark client counts
//! them: every frame that is not an auth reply (op 8), a heartbeat reply (op 3) or a
//! disconnect reply (op 6) is one message on TCP; on WS each inner frame of an op-9 message is
//! one, and so is any other such frame.
//!
//! Bytes are parsed straight from the provided buffer they arrived in; only a frame that
//! straddles two receives is copied, into the connection's partial buffer.

use protocol::frame;
use protocol::op;
use protocol::ws::{self, Kind};

use crate::conn::{Conn, State};
use crate::sequence;
use crate::tally::Tally;
use crate::wire;

/// Largest frame or WebSocket message the client accepts from a server (pushes are not capped
/// at goim's 4112 client limit, but a length field this large is an error, not something to
/// buffer).
pub const MAX_SERVER_FRAME: usize = 64 << 20;

/// How a connection ends, as read from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The server says it closes (op-6 body on TCP, Close frame reason on WS).
    Server(String),
    /// The server sent something that is not goim over TCP/WebSocket.
    Malformed(String),
    /// The WebSocket upgrade failed.
    Handshake(String),
}

/// What one receive changed.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The WebSocket upgrade completed: send the auth.
    pub upgraded: bool,
    /// The auth reply arrived.
    pub authed: bool,
    pub end: Option<End>,
}

/// Counting context: the worker's tally and the time of this receive (read once, lazily).
pub struct Counter<'a> {
    pub tally: &'a mut Tally,
    /// Where gaps are written down.
    pub gaps: Option<&'a mut sequence::Gaps>,
    now_us: Option<u64>,
}

impl<'a> Counter<'a> {
    #[cfg(test)]
    pub fn new(tally: &'a mut Tally) -> Self {
        Counter {
            tally,
            gaps: None,
            now_us: None,
        }
    }

    /// Also keeps the gaps seen.
    pub fn with_gaps(tally: &'a mut Tally, gaps: &'a mut sequence::Gaps) -> Self {
        Counter {
            tally,
            gaps: Some(gaps),
            now_us: None,
        }
    }

    fn now_us(&mut self) -> u64 {
        *self.now_us.get_or_insert_with(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0)
        })
    }

    /// A pushed message (not a reply).
    fn message(&mut self, conn: &mut Conn, body: &[u8]) {
        self.tally.live.messages += 1;
        match sequence::parse(body) {
            None => {}
            Some(Ok(stamp)) => {
                if let Some((after, next)) = self.tally.order.check(&mut conn.last_seq, stamp.seq)
                    && let Some(gaps) = self.gaps.as_deref_mut()
                {
                    gaps.push(sequence::Gap {
                        conn: conn.id,
                        after,
                        next,
                    });
                }
                if let Some(ts) = stamp.ts_us {
                    let now = self.now_us();
                    self.tally.arrival(ts, now);
                }
            }
            Some(Err(_)) => self.tally.order.bad_bodies += 1,
        }
    }
}

/// Takes the bytes of one receive.
pub fn on_bytes(conn: &mut Conn, data: &mut [u8], c: &mut Counter) -> Verdict {
    let mut v = Verdict::default();
    let buffered = conn.state == State::Upgrading
        || conn.extra.as_ref().is_some_and(|e| !e.partial.is_empty());
    if buffered {
        let mut buf = std::mem::take(&mut conn.extra().partial);
        buf.extend_from_slice(data);
        let used = parse(conn, &mut buf, c, &mut v);
        if used >= buf.len() {
            buf = Vec::new();
        } else {
            buf.drain(..used);
        }
        conn.extra().partial = buf;
    } else {
        let used = parse(conn, data, c, &mut v);
        if used < data.len() && v.end.is_none() {
            conn.extra().partial = data[used..].to_vec();
        }
    }
    v
}

/// Parses what `buf` holds; returns the bytes used (the rest is an incomplete frame).
fn parse(conn: &mut Conn, buf: &mut [u8], c: &mut Counter, v: &mut Verdict) -> usize {
    let mut off = 0;
    if conn.state == State::Upgrading {
        let key = conn.extra().ws_key;
        match wire::ws_upgrade_response(buf, &key) {
            Ok(None) => return 0,
            Ok(Some(n)) => {
                off = n;
                conn.state = State::Authing;
                v.upgraded = true;
            }
            Err(e) => {
                v.end = Some(End::Handshake(e));
                return buf.len();
            }
        }
    }
    if conn.ws {
        off + parse_ws(conn, &mut buf[off..], c, v)
    } else {
        off + parse_tcp(conn, &buf[off..], c, v)
    }
}

fn parse_tcp(conn: &mut Conn, buf: &[u8], c: &mut Counter, v: &mut Verdict) -> usize {
    let mut off = 0;
    while v.end.is_none() {
        match frame::split(&buf[off..], MAX_SERVER_FRAME) {
            Ok(Some((h, body, used))) => {
                on_frame(conn, h.op, body, c, v);
                off += used;
            }
            Ok(None) => break,
            Err(e) => {
                v.end = Some(End::Malformed(e.to_string()));
                return buf.len();
            }
        }
    }
    off
}

fn parse_ws(conn: &mut Conn, buf: &mut [u8], c: &mut Counter, v: &mut Verdict) -> usize {
    let mut off = 0;
    while v.end.is_none() {
        let f = match ws::parse_frame(&mut buf[off..], MAX_SERVER_FRAME) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                v.end = Some(End::Malformed(e.to_string()));
                return buf.len();
            }
        };
        let payload = &buf[off + f.payload.start..off + f.payload.end];
        match f.kind {
            Kind::Data {
                continuation: false,
            } if f.fin => on_ws_message(conn, payload, c, v),
            Kind::Data { .. } => {
                v.end = Some(End::Malformed(
                    "fragmented WebSocket message (goim servers send one frame per message)".into(),
                ))
            }
            Kind::Close => {
                let reason = match payload {
                    [_, _, text @ ..] if !text.is_empty() => {
                        String::from_utf8_lossy(text).into_owned()
                    }
                    [a, b] => format!("close code {}", u16::from_be_bytes([*a, *b])),
                    _ => "close frame without a reason".into(),
                };
                v.end = Some(End::Server(reason));
            }
            // The gateway never pings; a Pong would need a send buffer per connection.
            Kind::Ping | Kind::Pong => {}
        }
        off += f.len;
    }
    off
}

fn on_ws_message(conn: &mut Conn, msg: &[u8], c: &mut Counter, v: &mut Verdict) {
    c.tally.live.frames += 1;
    let (h, body) = match frame::decode_ws_message(msg, MAX_SERVER_FRAME) {
        Ok(x) => x,
        Err(e) => {
            v.end = Some(End::Malformed(e.to_string()));
            return;
        }
    };
    if h.op != op::RAW {
        on_frame(conn, h.op, body, c, v);
        return;
    }
    let mut rest = body;
    while !rest.is_empty() {
        match frame::split(rest, MAX_SERVER_FRAME) {
            Ok(Some((_, inner, used))) => {
                c.message(conn, inner);
                rest = &rest[used..];
            }
            Ok(None) => {
                v.end = Some(End::Malformed(format!(
                    "op-9 message ends inside an inner frame ({} bytes left)",
                    rest.len()
                )));
                return;
            }
            Err(e) => {
                v.end = Some(End::Malformed(format!("op-9 inner frame: {e}")));
                return;
            }
        }
    }
}

fn on_frame(conn: &mut Conn, op: i32, body: &[u8], c: &mut Counter, v: &mut Verdict) {
    match op {
        op::AUTH_REPLY => {
            if conn.state == State::Authing {
                conn.state = State::Open;
                v.authed = true;
            }
        }
        op::HEARTBEAT_REPLY => c.tally.heartbeat_replies += 1,
        op::DISCONNECT_REPLY => {
            v.end = Some(End::Server(String::from_utf8_lossy(body).into_owned()));
        }
        _ => c.message(conn, body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Extra;
    use protocol::batch::BatchBuilder;

    fn open(ws: bool) -> Conn {
        let mut c = Conn::new(1, ws, 0);
        c.state = State::Open;
        c
    }

    fn feed(conn: &mut Conn, t: &mut Tally, bytes: &[u8]) -> Verdict {
        let mut data = bytes.to_vec();
        on_bytes(conn, &mut data, &mut Counter::new(t))
    }

    fn batch(n: u64) -> protocol::batch::Batch {
        let mut b = BatchBuilder::default();
        for s in 1..=n {
            b.push(1000, sequence::body(s, 1).as_bytes());
        }
        b.finish()
    }

    #[test]
    fn tcp_frames_split_anywhere_are_counted_once() {
        let b = batch(5);
        let bytes = b.tcp();
        for cut in 0..bytes.len() {
            let (mut conn, mut t) = (open(false), Tally::default());
            assert!(feed(&mut conn, &mut t, &bytes[..cut]).end.is_none());
            assert!(feed(&mut conn, &mut t, &bytes[cut..]).end.is_none());
            assert_eq!(t.live.messages, 5, "cut {cut}");
            assert_eq!((t.order.checked, t.order.gaps), (5, 0));
            conn.shrink();
            assert!(conn.extra.is_none(), "nothing kept after a whole frame");
        }
    }

    #[test]
    fn ws_op9_counts_inner_frames() {
        let b = batch(3);
        let bytes = b.ws();
        for cut in [0, 1, 5, bytes.len() - 1] {
            let (mut conn, mut t) = (open(true), Tally::default());
            feed(&mut conn, &mut t, &bytes[..cut]);
            let v = feed(&mut conn, &mut t, &bytes[cut..]);
            assert!(v.end.is_none());
            assert_eq!((t.live.messages, t.live.frames), (3, 1), "cut {cut}");
        }
    }

    #[test]
    fn replies_are_not_messages() {
        let (mut conn, mut t) = (open(false), Tally::default());
        conn.state = State::Authing;
        let mut bytes = Vec::new();
        frame::encode(&mut bytes, 1, op::AUTH_REPLY, 1, b"");
        frame::encode(&mut bytes, 1, op::HEARTBEAT_REPLY, 1, &5i32.to_be_bytes());
        frame::encode(&mut bytes, 1, 1000, 0, b"hello");
        let v = feed(&mut conn, &mut t, &bytes);
        assert!(v.authed);
        assert_eq!(conn.state, State::Open);
        assert_eq!((t.live.messages, t.heartbeat_replies), (1, 1));
    }

    #[test]
    fn disconnect_reply_and_close_frame_give_the_reason() {
        let (mut conn, mut t) = (open(false), Tally::default());
        let mut bytes = Vec::new();
        frame::encode(&mut bytes, 1, op::DISCONNECT_REPLY, 0, b"heartbeat timeout");
        let v = feed(&mut conn, &mut t, &bytes);
        assert_eq!(v.end, Some(End::Server("heartbeat timeout".into())));
        let (mut conn, mut t) = (open(true), Tally::default());
        let v = feed(&mut conn, &mut t, &ws::close(1001, "going away now"));
        assert_eq!(v.end, Some(End::Server("going away now".into())));
    }

    #[test]
    fn malformed_input_is_an_end_not_a_panic() {
        let (mut conn, mut t) = (open(false), Tally::default());
        let mut h = frame::header_bytes(0, 1, 1000, 0);
        h[4] = 9;
        assert!(matches!(
            feed(&mut conn, &mut t, &h).end,
            Some(End::Malformed(m)) if m.contains("headerLen")
        ));
        let (mut conn, mut t) = (open(true), Tally::default());
        // An op-9 message whose inner frame claims more bytes than there are.
        let mut inner = Vec::new();
        frame::encode(&mut inner, 1, 1000, 0, b"abc");
        inner.truncate(inner.len() - 1);
        let mut msg = frame::header_bytes(inner.len(), 1, op::RAW, 0).to_vec();
        msg.extend(inner);
        let mut wsf = vec![0x82, msg.len() as u8];
        wsf.extend(msg);
        assert!(matches!(
            feed(&mut conn, &mut t, &wsf).end,
            Some(End::Malformed(_))
        ));
        let (mut conn, mut t) = (open(true), Tally::default());
        assert!(matches!(
            feed(&mut conn, &mut t, &[0x83, 0]).end,
            Some(End::Malformed(_))
        ));
    }

    #[test]
    fn upgrade_answer_then_frames_in_one_read() {
        let mut conn = Conn::new(1, true, 0);
        conn.state = State::Upgrading;
        let key = wire::ws_key(&mut wire::Rng::new(1));
        conn.extra = Some(Box::new(Extra {
            ws_key: key,
            ..Extra::default()
        }));
        let req = wire::ws_upgrade("h", &key);
        let (up, _) = ws::parse_upgrade(&req).unwrap().unwrap();
        let mut bytes = ws::accept_response(&up);
        let mut auth = Vec::new();
        frame::encode(&mut auth, 1, op::AUTH_REPLY, 1, b"");
        bytes.extend(vec![0x82, auth.len() as u8]);
        bytes.extend(auth);
        let mut t = Tally::default();
        let v = feed(&mut conn, &mut t, &bytes[..10]);
        assert!(!v.upgraded);
        let v = feed(&mut conn, &mut t, &bytes[10..]);
        assert!(v.upgraded && v.authed, "{v:?}");
        assert_eq!(conn.state, State::Open);
    }
}
