//! goim's per-connection protocol on a shard (reference §2): the WebSocket upgrade, framing of
//! client input, auth, heartbeats, rooms, Sub/Unsub and upstream messages. Each function takes
//! bytes a connection sent and turns them into replies, room changes and closes.

use std::rc::Rc;

use bytes::Bytes;
use protocol::frame::{self, HEADER_LEN, Header, MAX_CLIENT_FRAME};
use protocol::link::{Body, Session, Upstream};
use protocol::ws::{self, Kind, close_code};
use protocol::{op, token};

use crate::conn::{State, Transport};
use crate::keys::Owner;
use crate::shard::{Reason, Shard, conn_of};

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether `origin` matches an `auth.allowed_origins` entry: equal (ASCII case-insensitive), or
/// for `scheme://*.domain[:port]`, the same scheme and port and a host that is a subdomain of
/// `domain` (not `domain` itself).
pub(crate) fn origin_matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" || pattern.eq_ignore_ascii_case(origin) {
        return true;
    }
    let (Some((p_scheme, p_rest)), Some((o_scheme, o_rest))) =
        (pattern.split_once("://"), origin.split_once("://"))
    else {
        return false;
    };
    let Some(p_suffix) = p_rest.strip_prefix("*.") else {
        return false;
    };
    let o_rest = o_rest.to_ascii_lowercase();
    let p_suffix = p_suffix.to_ascii_lowercase();
    p_scheme.eq_ignore_ascii_case(o_scheme)
        && o_rest.len() > p_suffix.len() + 1
        && o_rest.ends_with(&p_suffix)
        && o_rest.as_bytes()[o_rest.len() - p_suffix.len() - 1] == b'.'
}

fn bad_input_code(e: &protocol::Error) -> u16 {
    match e {
        protocol::Error::FrameTooLong { .. } | protocol::Error::WsTooLarge { .. } => {
            close_code::TOO_BIG
        }
        _ => close_code::PROTOCOL,
    }
}

impl Shard {
    /// Bytes received on a connection (`data` is a provided buffer, valid for this call only).
    pub(crate) fn on_input(&mut self, h: u32, data: &mut [u8]) {
        let Some(conn) = self.conn(h) else { return };
        if let Some(refusal) = crate::admission::Refusal::from_u8(conn.refusal) {
            return self.refused_input(h, refusal, data);
        }
        match (conn.state, conn.transport) {
            (State::Upgrade, _) => self.upgrade_input(h, data),
            (State::Auth | State::Open, Transport::Tcp) => self.tcp_input(h, data),
            (State::Auth | State::Open, Transport::Ws) => self.ws_input(h, data),
            _ => {}
        }
    }

    fn bad_input(&mut self, h: u32, e: &protocol::Error) {
        self.stats.bad_input += 1;
        self.teardown(
            h,
            Some(Reason::new(format!("bad input: {e}"), bad_input_code(e))),
        );
    }

    fn alive(&mut self, h: u32) -> bool {
        self.conn(h)
            .is_some_and(|c| matches!(c.state, State::Auth | State::Open))
    }

    /// Input on a connection refused at accept: its first request (the whole WebSocket
    /// upgrade, or any goim bytes) is answered with the refusal's reason, then it closes.
    fn refused_input(&mut self, h: u32, refusal: crate::admission::Refusal, data: &[u8]) {
        let text = refusal.text(&self.shared.config.limits);
        let mut reason = Reason::new(text.clone(), close_code::TRY_AGAIN_LATER);
        let Some(conn) = self.conn(h) else { return };
        if conn.transport == Transport::Ws && conn.state == State::Upgrade {
            let mut pending = conn.take_pending();
            pending.extend_from_slice(data);
            if let Ok(None) = ws::parse_upgrade(&pending) {
                if let Some(conn) = self.conn(h) {
                    conn.put_pending(pending);
                }
                return;
            }
            reason.upgrade = Some(protocol::Error::Refused {
                status: refusal.status(),
                reason: text,
            });
        }
        self.teardown(h, Some(reason));
    }

    /// Whether a WebSocket upgrade's `Origin` may connect (`auth.allowed_origins`).
    fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let allowed = &self.shared.config.auth.allowed_origins;
        let Some(origin) = origin else { return true };
        allowed.is_empty() || allowed.iter().any(|a| origin_matches(a, origin))
    }

    fn upgrade_input(&mut self, h: u32, data: &[u8]) {
        let Some(conn) = self.conn(h) else { return };
        let mut pending = conn.take_pending();
        pending.extend_from_slice(data);
        match ws::parse_upgrade(&pending) {
            Ok(None) => {
                if let Some(conn) = self.conn(h) {
                    conn.put_pending(pending);
                }
            }
            Ok(Some((up, _))) if !self.origin_allowed(up.origin.as_deref()) => {
                self.stats.refused_origin += 1;
                let origin = up.origin.unwrap_or_default();
                let mut reason = Reason::new(
                    format!("origin {origin:?} is not allowed"),
                    close_code::POLICY,
                );
                reason.upgrade = Some(protocol::Error::OriginNotAllowed { origin });
                self.teardown(h, Some(reason));
            }
            Ok(Some((up, used))) => {
                let response = Rc::new(Bytes::from(ws::accept_response(&up)));
                self.enqueue(h, &response, 0, true);
                let Some(conn) = self.conn(h) else { return };
                conn.state = State::Auth;
                let mut rest = pending.split_off(used);
                if !rest.is_empty() {
                    self.ws_input(h, &mut rest);
                }
            }
            Err(e) => {
                self.stats.bad_input += 1;
                tracing::debug!("WebSocket upgrade refused: {e}");
                // teardown() writes the HTTP error response while the state is Upgrade.
                let mut reason = Reason::new(e.to_string(), close_code::PROTOCOL);
                reason.upgrade = Some(e);
                self.teardown(h, Some(reason));
            }
        }
    }

    fn tcp_input(&mut self, h: u32, data: &mut [u8]) {
        let Some(conn) = self.conn(h) else { return };
        let mut pending = conn.take_pending();
        let owned = !pending.is_empty();
        if owned {
            pending.extend_from_slice(data);
        }
        let src: &[u8] = if owned { &pending } else { data };
        let mut off = 0;
        loop {
            match frame::split(&src[off..], MAX_CLIENT_FRAME) {
                Ok(Some((header, body, used))) => {
                    off += used;
                    self.on_frame(h, header, body);
                    if !self.alive(h) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.bad_input(h, &e);
                    return;
                }
            }
        }
        let rest = &src[off..];
        let keep = if rest.is_empty() {
            Vec::new()
        } else if owned {
            pending.drain(..off);
            pending
        } else {
            rest.to_vec()
        };
        if let Some(conn) = self.conn(h) {
            conn.put_pending(keep);
        }
    }

    fn ws_input(&mut self, h: u32, data: &mut [u8]) {
        let Some(conn) = self.conn(h) else { return };
        let mut pending = conn.take_pending();
        let owned = !pending.is_empty();
        if owned {
            pending.extend_from_slice(data);
        }
        let src: &mut [u8] = if owned { &mut pending } else { data };
        let mut off = 0;
        loop {
            let parsed = ws::parse_frame(&mut src[off..], MAX_CLIENT_FRAME);
            let f = match parsed {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    self.bad_input(h, &e);
                    return;
                }
            };
            let payload = off + f.payload.start..off + f.payload.end;
            off += f.len;
            match f.kind {
                Kind::Ping => {
                    let pong = Rc::new(Bytes::from(ws::pong(&src[payload])));
                    self.enqueue(h, &pong, 0, true);
                }
                Kind::Pong => {}
                Kind::Close => {
                    self.teardown(h, Some(Reason::new("", close_code::NORMAL)));
                    return;
                }
                Kind::Data { continuation } => {
                    if let Err(e) = self.ws_data(h, continuation, f.fin, &src[payload]) {
                        self.bad_input(h, &e);
                        return;
                    }
                }
            }
            if !self.alive(h) {
                return;
            }
        }
        let keep = if off == src.len() {
            Vec::new()
        } else if owned {
            pending.drain(..off);
            pending
        } else {
            src[off..].to_vec()
        };
        if let Some(conn) = self.conn(h) {
            conn.put_pending(keep);
        }
    }

    /// One WebSocket data frame: a whole goim frame, or a fragment of one.
    fn ws_data(
        &mut self,
        h: u32,
        continuation: bool,
        fin: bool,
        payload: &[u8],
    ) -> protocol::Result<()> {
        let Some(conn) = self.conn(h) else {
            return Ok(());
        };
        let open_message = conn
            .partial
            .as_ref()
            .is_some_and(|p| p.ws_message.is_some());
        if continuation && !open_message {
            return Err(protocol::Error::WsStrayContinuation);
        }
        if !continuation && open_message {
            return Err(protocol::Error::WsInterleavedMessage);
        }
        if fin && !continuation {
            let (header, body) = frame::decode_ws_message(payload, MAX_CLIENT_FRAME)?;
            self.on_frame(h, header, body);
            return Ok(());
        }
        let message = conn.ws_message().get_or_insert_with(Vec::new);
        if message.len() + payload.len() > MAX_CLIENT_FRAME {
            return Err(protocol::Error::WsTooLarge {
                len: (message.len() + payload.len()) as u64,
                max: MAX_CLIENT_FRAME,
            });
        }
        message.extend_from_slice(payload);
        if fin {
            let message = conn.ws_message().take().unwrap_or_default();
            // Frees the partial-input storage when nothing else is pending.
            let pending = conn.take_pending();
            conn.put_pending(pending);
            let (header, body) = frame::decode_ws_message(&message, MAX_CLIENT_FRAME)?;
            self.on_frame(h, header, body);
        }
        Ok(())
    }

    /// Queues a reply frame (ver and seq echoed), WS-wrapped on WebSocket connections.
    pub(crate) fn reply(&mut self, h: u32, header: &Header, op: i32, body: &[u8]) {
        let Some(conn) = self.conn(h) else { return };
        let mut out = Vec::with_capacity(10 + HEADER_LEN + body.len());
        if conn.transport == Transport::Ws {
            let mut head = [0u8; 10];
            let n = protocol::batch::ws_binary_header((HEADER_LEN + body.len()) as u64, &mut head);
            out.extend_from_slice(&head[..n]);
        }
        frame::encode(&mut out, header.ver, op, header.seq, body);
        self.enqueue(h, &Rc::new(Bytes::from(out)), 0, true);
    }

    fn on_frame(&mut self, h: u32, header: Header, body: &[u8]) {
        let Some(conn) = self.conn(h) else { return };
        match conn.state {
            State::Auth => match header.op {
                op::AUTH => self.on_auth(h, &header, body),
                // goim v2 ignores the v1 handshake op before auth.
                op::HANDSHAKE => {}
                other => {
                    self.stats.bad_input += 1;
                    self.teardown(
                        h,
                        Some(Reason::new(
                            format!("bad input: op {other} ({}) before auth", op::name(other)),
                            close_code::POLICY,
                        )),
                    );
                }
            },
            State::Open => self.on_open_frame(h, header, body),
            _ => {}
        }
    }

    fn on_open_frame(&mut self, h: u32, header: Header, body: &[u8]) {
        // A recovery in progress holds a room the connection is about to join: the room ops
        // take it into account.
        let recovering = match header.op {
            op::CHANGE_ROOM | op::JOIN_ROOM | op::LEAVE_ROOM => self.recovering(h),
            _ => None,
        };
        if header.op == op::CHANGE_ROOM && recovering.is_some() {
            self.cancel_recover(h, "ChangeRoom");
        }
        let now = self.now;
        let hb = self.shared.config.limits.heartbeat_timeout_ms;
        let cap = self.shared.config.limits.max_rooms_per_conn;
        let Some(conn) = conn_of(&mut self.rings, h) else {
            return;
        };
        match header.op {
            op::HEARTBEAT => {
                // A later deadline: the wheel entry picks it up when it fires.
                conn.deadline = now + hb;
                let online = conn
                    .rooms
                    .first()
                    .and_then(|&(idx, _, _)| self.rooms.get(idx))
                    .map_or(0, |r| r.reported_online());
                self.reply(h, &header, op::HEARTBEAT_REPLY, &online.to_be_bytes());
            }
            op::CHANGE_ROOM => {
                let rooms = std::mem::take(&mut conn.rooms);
                for (idx, pos, _) in rooms {
                    self.leave_at(idx, pos);
                }
                if !body.is_empty() {
                    self.join(h, &String::from_utf8_lossy(body));
                }
                self.reply(h, &header, op::CHANGE_ROOM_REPLY, body);
            }
            op::SUB | op::UNSUB => {
                if let Some(ops) = op::parse_op_list(body) {
                    if header.op == op::SUB {
                        conn.watch(&ops);
                    } else {
                        conn.unwatch(&ops);
                    }
                }
                self.reply(h, &header, header.op + 1, body);
            }
            op::JOIN_ROOM => {
                let room = String::from_utf8_lossy(body);
                let already = conn
                    .rooms
                    .iter()
                    .any(|&(idx, _, _)| self.rooms.get(idx).is_some_and(|r| *r.name == *room));
                let pending = usize::from(recovering.is_some());
                let refusal = if room.is_empty() {
                    Some("error: empty room key".to_string())
                } else if recovering.as_deref() == Some(&*room) {
                    Some(format!(
                        "error: a recovery of room {room} is in progress: it joins the room"
                    ))
                } else if !already && conn.rooms.len() + pending >= cap {
                    Some(format!("error: room cap of {cap} reached"))
                } else {
                    None
                };
                match refusal {
                    Some(text) => self.reply(h, &header, op::JOIN_ROOM_REPLY, text.as_bytes()),
                    None => {
                        if !already {
                            self.join(h, &room);
                        }
                        self.reply(h, &header, op::JOIN_ROOM_REPLY, body);
                    }
                }
            }
            op::RECOVER => self.start_recover(h, header, body),
            op::LEAVE_ROOM => {
                let room = String::from_utf8_lossy(body);
                let found = conn
                    .rooms
                    .iter()
                    .position(|&(idx, _, _)| self.rooms.get(idx).is_some_and(|r| *r.name == *room));
                match found {
                    Some(i) => {
                        let (idx, pos, _) = conn.rooms.remove(i);
                        self.leave_at(idx, pos);
                        self.reply(h, &header, op::LEAVE_ROOM_REPLY, body);
                    }
                    // Leaving the room a recovery is about to join: the recovery ends there.
                    None if recovering.as_deref() == Some(&*room) => {
                        self.cancel_recover(h, "LeaveRoom");
                        self.reply(h, &header, op::LEAVE_ROOM_REPLY, body);
                    }
                    None => {
                        let text = format!("error: not in room {room}");
                        self.reply(h, &header, op::LEAVE_ROOM_REPLY, text.as_bytes());
                    }
                }
            }
            other => {
                let (mid, key) = (conn.mid, conn.key.to_string());
                let transport = conn.transport;
                self.send_up(Body::Upstream(Upstream {
                    mid,
                    key,
                    ver: header.ver as i32,
                    op: other,
                    seq: header.seq,
                    body: body.to_vec(),
                }));
                // goim echoes the op with an empty body; an op-9 echo is an empty Raw, which
                // writes nothing on TCP.
                if !(other == op::RAW && transport == Transport::Tcp) {
                    self.reply(h, &header, other, b"");
                }
            }
        }
    }

    /// Joins a room, noting how many messages the room had been sent on this shard (what the
    /// connection gets from now on is what comes after; a recovery relies on it).
    pub(crate) fn join(&mut self, h: u32, room: &str) {
        let (idx, pos) = self.rooms.join(room, h);
        let mark = self.rooms.get(idx).map_or(0, |r| r.fanned);
        if let Some(conn) = self.conn(h) {
            // Most connections are in one room: no spare capacity until a second join.
            conn.rooms.reserve_exact(1);
            conn.rooms.push((idx, pos, mark));
        }
    }

    fn on_auth(&mut self, h: u32, header: &Header, body: &[u8]) {
        let t = match token::verify(body, &self.shared.auth, unix_now()) {
            Ok(t) => t,
            Err(e) => {
                self.stats.auth_failed += 1;
                match e {
                    protocol::Error::TokenNotJson(_) => self.stats.auth_failed_not_json += 1,
                    protocol::Error::TokenUnsigned => self.stats.auth_failed_unsigned += 1,
                    protocol::Error::TokenNoExpiry => self.stats.auth_failed_no_expiry += 1,
                    protocol::Error::TokenBadSignature => self.stats.auth_failed_bad_signature += 1,
                    protocol::Error::TokenExpired { .. } => self.stats.auth_failed_expired += 1,
                    protocol::Error::TokenNewline { .. } => self.stats.auth_failed_newline += 1,
                    _ => {}
                }
                self.teardown(
                    h,
                    Some(Reason::new(format!("auth: {e}"), close_code::POLICY)),
                );
                return;
            }
        };
        let key = if t.key.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            t.key
        };
        let deadline = self.now + self.shared.config.limits.heartbeat_timeout_ms;
        let shard = self.id as u16;
        let Some(conn) = self.conn(h) else { return };
        let gen_ = conn.gen_;
        conn.mid = t.mid;
        let shared_key: std::sync::Arc<str> = std::sync::Arc::from(key.as_str());
        conn.key = shared_key.clone();
        conn.watch(&t.accepts);
        conn.state = State::Open;
        self.set_deadline(h, deadline);
        let me = Owner {
            shard,
            handle: h,
            gen_,
        };
        if let Some(prev) = self.shared.keys.claim(&shared_key, me, t.mid) {
            self.evict(prev);
        }
        self.reply(h, header, op::AUTH_REPLY, b"");
        if !t.room_id.is_empty() {
            self.join(h, &t.room_id);
        }
        self.stats.auth_ok += 1;
        self.stats.authenticated += 1;
        self.send_up(Body::Session(Session {
            online: true,
            mid: t.mid,
            key,
            rooms: if t.room_id.is_empty() {
                vec![]
            } else {
                vec![t.room_id]
            },
            platform: t.platform,
            conn_id: crate::shard::conn_id(shard, h, gen_),
        }));
    }

    /// Closes the older holder of a key, on whichever shard it is.
    fn evict(&mut self, prev: Owner) {
        if prev.shard as usize == self.id {
            if self.conn_gen(prev.handle, prev.gen_).is_some() {
                self.stats.evicted += 1;
                self.teardown(
                    prev.handle,
                    Some(Reason::new(
                        "replaced by a newer connection with the same key",
                        close_code::POLICY,
                    )),
                );
            }
            return;
        }
        let inbox = &self.shared.inboxes[prev.shard as usize];
        let mut msg = crate::inbox::ShardMsg::Evict {
            handle: prev.handle,
            gen_: prev.gen_,
        };
        // The other shard drains its inbox every turn; a full inbox only delays this.
        for _ in 0..1000 {
            match inbox.push(msg) {
                Ok(()) => return,
                Err(m) => {
                    msg = m;
                    std::thread::yield_now();
                }
            }
        }
        tracing::warn!(
            "could not evict key holder on shard {}: its inbox stayed full",
            prev.shard
        );
    }
}

#[cfg(test)]
mod tests {
    use super::origin_matches;

    #[test]
    fn origins_match_exactly_or_by_subdomain_wildcard() {
        let yes = [
            ("https://live.example.com", "https://live.example.com"),
            ("https://live.example.com", "HTTPS://Live.Example.com"),
            ("https://*.example.com", "https://a.example.com"),
            ("https://*.example.com", "https://a.b.example.com"),
            ("https://*.example.com:8443", "https://a.example.com:8443"),
            ("*", "http://anything"),
        ];
        let no = [
            ("https://live.example.com", "http://live.example.com"),
            ("https://live.example.com", "https://live.example.com:444"),
            ("https://*.example.com", "https://example.com"),
            ("https://*.example.com", "https://badexample.com"),
            ("https://*.example.com", "https://example.com.evil.net"),
            ("https://*.example.com", "http://a.example.com"),
            ("https://*.example.com:8443", "https://a.example.com"),
            ("https://*.example.com", "null"),
        ];
        for (p, o) in yes {
            assert!(origin_matches(p, o), "{p} should let {o} in");
        }
        for (p, o) in no {
            assert!(!origin_matches(p, o), "{p} should keep {o} out");
        }
    }
}
