//! Room history and recovery through `corecast up` as a real process: room messages carry
//! per-room offsets in their frames' `seq`; a client that comes back with its last offset gets
//! what it missed, in order, then the live stream (over TCP and WebSocket, with the room in its
//! token or not, and while pushes keep coming); one away too long is told so; the HTTP route
//! `GET /goim/room/history` serves the same history; a malformed Recover gets an answer and
//! harms nothing.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use protocol::frame;
use protocol::{history, op};
use serde_json::Value;
use support::{DISPATCHER_TOML, GATEWAY_TOML, Up};

/// One frame a client got: (op, seq as an offset, body).
type Got = (i32, u32, Vec<u8>);

/// A goim client over TCP or WebSocket that reads frames one at a time (op 9 unwrapped).
struct Client {
    tcp: Option<TcpStream>,
    ws: Option<tungstenite::WebSocket<TcpStream>>,
    buf: Vec<u8>,
    queue: std::collections::VecDeque<Got>,
}

impl Client {
    fn connect(up: &Up, ws: bool, room: &str, key: &str) -> Client {
        let token = format!(
            r#"{{"mid":1,"key":"{key}","room_id":"{room}","platform":"web","accepts":[1000]}}"#
        );
        let mut c = if ws {
            let s = TcpStream::connect(up.ws).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let (sock, _) = tungstenite::client(format!("ws://{}/sub", up.ws), s).unwrap();
            Client {
                tcp: None,
                ws: Some(sock),
                buf: Vec::new(),
                queue: Default::default(),
            }
        } else {
            let s = TcpStream::connect(up.tcp).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Client {
                tcp: Some(s),
                ws: None,
                buf: Vec::new(),
                queue: Default::default(),
            }
        };
        c.send(op::AUTH, token.as_bytes());
        let (o, _, body) = c.next();
        assert_eq!(
            o,
            op::AUTH_REPLY,
            "auth: {}",
            String::from_utf8_lossy(&body)
        );
        c
    }

    fn send(&mut self, op: i32, body: &[u8]) {
        let mut out = Vec::new();
        frame::encode(&mut out, 1, op, 7, body);
        if let Some(s) = &mut self.tcp {
            s.write_all(&out).unwrap();
        } else if let Some(ws) = &mut self.ws {
            ws.send(tungstenite::Message::binary(out)).unwrap();
        }
    }

    /// The next frame (panics after 10 s of silence).
    fn next(&mut self) -> Got {
        loop {
            if let Some(g) = self.queue.pop_front() {
                return g;
            }
            if let Some(s) = &mut self.tcp {
                let mut chunk = [0u8; 65536];
                let n = s.read(&mut chunk).expect("a frame within 10 s");
                assert!(n > 0, "the gateway closed the connection");
                self.buf.extend_from_slice(&chunk[..n]);
                while let Ok(Some((h, body, used))) = frame::split(&self.buf, 1 << 24) {
                    self.queue.push_back((h.op, h.seq as u32, body.to_vec()));
                    self.buf.drain(..used);
                }
            } else if let Some(ws) = &mut self.ws {
                let msg = ws.read().expect("a message within 10 s");
                let data = match msg {
                    tungstenite::Message::Binary(d) => d,
                    tungstenite::Message::Close(c) => panic!("closed: {c:?}"),
                    _ => continue,
                };
                let (h, body) = frame::decode_ws_message(&data, 1 << 24).unwrap();
                if h.op == op::RAW {
                    let mut rest = body;
                    while let Ok(Some((ih, ib, used))) = frame::split(rest, 1 << 24) {
                        self.queue.push_back((ih.op, ih.seq as u32, ib.to_vec()));
                        rest = &rest[used..];
                    }
                } else {
                    self.queue.push_back((h.op, h.seq as u32, body.to_vec()));
                }
            }
        }
    }

    /// The next room message (op 1000), skipping heartbeat replies.
    fn message(&mut self) -> (u32, String) {
        loop {
            let (o, seq, body) = self.next();
            if o == 1000 {
                return (seq, String::from_utf8(body).unwrap());
            }
            assert_eq!(o, op::HEARTBEAT_REPLY, "unexpected op {o}");
        }
    }

    /// Sends Recover and returns the reply's body.
    fn recover(&mut self, since: u32, room: &str) -> String {
        self.send(op::RECOVER, &history::recover_body(since, room));
        self.reply(op::RECOVER_REPLY)
    }

    fn reply(&mut self, want: i32) -> String {
        let (o, seq, body) = self.next();
        assert_eq!(o, want, "got op {o}: {}", String::from_utf8_lossy(&body));
        assert_eq!(seq, 7, "a reply echoes the request's seq");
        String::from_utf8(body).unwrap()
    }
}

fn push(up: &Up, room: &str, body: &str) {
    let (kind, id) = room.split_once("://").unwrap();
    let v = up.post(
        &format!("/goim/push/room?operation=1000&type={kind}&room={id}"),
        body.as_bytes(),
    );
    assert_eq!(v["code"], 0, "{v}");
}

/// Waits until the room's history (the HTTP route) has `newest` as its newest offset: every push
/// so far is numbered and flushed (the push API answers once the queue holds a message).
fn wait_flushed(up: &Up, room: &str, newest: u32) {
    let (kind, id) = room.split_once("://").unwrap();
    up.wait_for(&format!("{room} flushed up to {newest}"), |up| {
        up.get(&format!("/goim/room/history?type={kind}&room={id}"))["data"]["newest"] == newest
    });
}

fn up_with_history(history: &str) -> Up {
    Up::start(
        GATEWAY_TOML,
        &format!("{DISPATCHER_TOML}\n[job]\nroom_linger_ms = 1\n[history]\n{history}\n"),
    )
}

/// A client reads its first room message, goes away, 500 pushes go by, it comes back with the
/// room in its token and recovers: all 500 in order, with consecutive offsets, then live.
fn recovers_500(ws: bool) {
    let up = up_with_history("messages = 1000");
    let room = if ws { "live://ws500" } else { "live://tcp500" };
    let mut a = Client::connect(&up, ws, room, "a");
    up.wait_conns(1);
    push(&up, room, "before");
    let (last, body) = a.message();
    assert_eq!(body, "before");
    drop(a);
    up.wait_conns(0);
    for i in 0..500 {
        push(&up, room, &format!("m{i}"));
    }
    wait_flushed(&up, room, last.wrapping_add(500));
    let mut a = Client::connect(&up, ws, room, "a");
    let reply = a.recover(last, room);
    let r = history::parse_recover_reply(reply.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.count, r.room.as_str()), (500, room), "{reply}");
    assert_eq!(r.newest, last.wrapping_add(500));
    for i in 0..500u32 {
        let (seq, body) = a.message();
        assert_eq!(
            (seq, body.as_str()),
            (last.wrapping_add(1 + i), format!("m{i}").as_str())
        );
    }
    push(&up, room, "live");
    assert_eq!(a.message(), (last.wrapping_add(501), "live".to_string()));
}

#[test]
fn a_tcp_client_away_during_500_pushes_recovers_all_500_in_order_then_live() {
    recovers_500(false);
}

#[test]
fn a_ws_client_away_during_500_pushes_recovers_all_500_in_order_then_live() {
    recovers_500(true);
}

/// While a pusher keeps pushing, a client comes back (room in its token, so live messages
/// reach it before it asks) and recovers: every offset exactly once, in order, no gap.
#[test]
fn recovery_while_pushes_keep_coming_has_no_gap_and_no_duplicate() {
    let up = up_with_history("messages = 5000");
    let room = "live://busy";
    for ws in [false, true] {
        let mut a = Client::connect(&up, ws, room, "busy");
        up.wait_conns(1);
        push(&up, room, "first");
        let (last, _) = a.message();
        drop(a);
        up.wait_conns(0);
        let stop = Arc::new(AtomicBool::new(false));
        let pusher = {
            let (stop, http) = (stop.clone(), up.http);
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (_, v) = support::http(
                        http,
                        "POST",
                        "/goim/push/room?operation=1000&type=live&room=busy",
                        format!("p{n}").as_bytes(),
                    );
                    assert_eq!(v["code"], 0, "{v}");
                    n += 1;
                }
                n
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let mut a = Client::connect(&up, ws, room, "busy");
        // Live messages may arrive before the reply: they are not sent again after it. Over
        // TCP the client waits for one before it asks, so that case is always covered.
        let mut seen = Vec::new();
        if !ws {
            seen.push(a.message().0);
        }
        a.send(op::RECOVER, &history::recover_body(last, room));
        let reply = loop {
            let (o, seq, body) = a.next();
            if o == op::RECOVER_REPLY {
                break String::from_utf8(body).unwrap();
            }
            assert_eq!(o, 1000);
            seen.push(seq);
        };
        let r = history::parse_recover_reply(reply.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let pushed = pusher.join().unwrap();
        let total = 1 + pushed;
        let deadline = Instant::now() + Duration::from_secs(15);
        // Everything after `last` exactly once: what came live before the reply, the
        // recovered ones, then live.
        let mut want: Vec<u32> = (1..total as u32).map(|i| last.wrapping_add(i)).collect();
        let mut got_all: Vec<u32> = seen.clone();
        while got_all.len() < want.len() {
            assert!(
                Instant::now() < deadline,
                "ws={ws}: stuck at {}",
                got_all.len()
            );
            got_all.push(a.message().0);
        }
        // Offsets live before the reply come first, then the recovered ones: sort only the
        // part before the reply; after the reply, order is the offsets' order.
        let after_reply = got_all.split_off(seen.len());
        let mut merged = seen.clone();
        merged.extend(&after_reply);
        let mut sorted = merged.clone();
        sorted.sort_by_key(|o| o.wrapping_sub(last));
        want.sort_by_key(|o| o.wrapping_sub(last));
        assert_eq!(sorted, want, "ws={ws}: every offset exactly once ({reply})");
        // After the reply: strictly increasing offsets.
        assert!(
            after_reply
                .windows(2)
                .all(|w| w[1].wrapping_sub(last) > w[0].wrapping_sub(last)),
            "ws={ws}: out of order after the reply"
        );
        assert!(r.count as usize <= want.len());
        eprintln!(
            "ws={ws}: {} live before the reply, {} recovered, {} in all",
            seen.len(),
            r.count,
            want.len()
        );
        drop(a);
        up.wait_conns(0);
    }
}

/// A connection that is not in the room (no room in its token) joins it by recovering.
#[test]
fn recover_joins_a_room_the_token_did_not_name() {
    let up = up_with_history("messages = 100");
    let mut a = Client::connect(&up, false, "", "nroom");
    up.wait_conns(1);
    // Before anything was pushed: no history yet, joined live all the same.
    let reply = a.recover(5, "live://join");
    assert!(
        reply.starts_with("error: no history of room live://join"),
        "{reply}"
    );
    push(&up, "live://join", "x");
    let (first, body) = a.message();
    assert_eq!(body, "x");
    push(&up, "live://join", "y");
    push(&up, "live://join", "z");
    let _ = a.message();
    let _ = a.message();
    // A second connection catches up from the first message.
    let mut b = Client::connect(&up, true, "", "nroom2");
    let reply = b.recover(first, "live://join");
    assert_eq!(
        history::parse_recover_reply(reply.as_bytes()).map(|r| r.count),
        Ok(2),
        "{reply}"
    );
    assert_eq!(b.message().1, "y");
    assert_eq!(b.message().1, "z");
}

/// Away longer than the history holds (by count): told so, then live.
#[test]
fn a_client_away_too_long_is_told_so_and_gets_the_live_stream() {
    let up = up_with_history("messages = 100");
    let room = "live://long";
    let mut a = Client::connect(&up, false, room, "long");
    up.wait_conns(1);
    push(&up, room, "seen");
    let (last, _) = a.message();
    drop(a);
    up.wait_conns(0);
    for i in 0..500 {
        push(&up, room, &format!("m{i}"));
    }
    wait_flushed(&up, room, last.wrapping_add(500));
    let mut a = Client::connect(&up, false, room, "long");
    let reply = a.recover(last, room);
    assert!(
        reply.starts_with("error: too old: 400 messages of room live://long"),
        "{reply}"
    );
    assert!(reply.contains("at most 100 messages"), "{reply}");
    push(&up, room, "live");
    let (seq, body) = a.message();
    assert_eq!((seq, body.as_str()), (last.wrapping_add(501), "live"));
    // From before a restart of the history: an offset it never gave.
    let reply = a.recover(seq.wrapping_add(1_000_000), room);
    assert!(reply.contains("from before a restart"), "{reply}");
}

/// Away longer than the history keeps messages (by age): told so.
#[test]
fn messages_older_than_the_age_are_gone_and_the_client_is_told() {
    let up = up_with_history("messages = 100\nmax_age_ms = 1000");
    let room = "live://aging";
    let mut a = Client::connect(&up, true, room, "aging");
    up.wait_conns(1);
    push(&up, room, "seen");
    let (seq, _) = a.message();
    drop(a);
    up.wait_conns(0);
    push(&up, room, "aging");
    // Well past max_age_ms, then one more push (recording drops what aged out).
    std::thread::sleep(Duration::from_millis(2_000));
    push(&up, room, "fresh");
    wait_flushed(&up, room, seq.wrapping_add(2));
    let mut a = Client::connect(&up, true, room, "aging");
    let reply = a.recover(seq, room);
    assert!(reply.starts_with("error: too old: 1 messages"), "{reply}");
    // What is still held is still recovered.
    let reply = a.recover(seq.wrapping_add(1), room);
    assert_eq!(
        history::parse_recover_reply(reply.as_bytes()).map(|r| r.count),
        Ok(1),
        "{reply}"
    );
    assert_eq!(a.message().1, "fresh");
}

/// More missed than half the gateway's outbound cap: the dispatcher answers too old (the
/// gateway said how much it takes) instead of sending it.
#[test]
fn a_history_larger_than_the_gateway_takes_is_answered_too_old() {
    let up = Up::start(
        &format!("{GATEWAY_TOML}\n[limits]\noutbound_cap_bytes = 4096\n"),
        &format!("{DISPATCHER_TOML}\n[history]\nmessages = 1000\n"),
    );
    let room = "live://big";
    let mut a = Client::connect(&up, false, room, "big");
    up.wait_conns(1);
    push(&up, room, "seen");
    let (last, _) = a.message();
    drop(a);
    up.wait_conns(0);
    let body = "x".repeat(200);
    for _ in 0..20 {
        push(&up, room, &body);
    }
    wait_flushed(&up, room, last.wrapping_add(20));
    let mut a = Client::connect(&up, false, room, "big");
    let reply = a.recover(last, room);
    assert!(
        reply.starts_with("error: too old: the 20 missed messages of room live://big are 4320 bytes, more than the 2048"),
        "{reply}"
    );
    assert!(reply.contains("GET /goim/room/history"), "{reply}");
    push(&up, room, "live");
    assert_eq!(a.message().1, "live");
}

#[test]
fn malformed_recovers_are_answered_and_harm_nothing() {
    let up = up_with_history("messages = 100");
    let room = "live://bad";
    let mut a = Client::connect(&up, false, room, "bad");
    up.wait_conns(1);
    for (body, needle) in [
        (&b"12"[..], "bad Recover body"),
        (b"x live://bad", "offset \"x\""),
        (b"1 ", "empty room key"),
        (b"\xff", "not UTF-8"),
    ] {
        a.send(op::RECOVER, body);
        let reply = a.reply(op::RECOVER_REPLY);
        assert!(
            reply.starts_with("error: ") && reply.contains(needle),
            "{reply}"
        );
    }
    // Still open and still in its room.
    a.send(op::HEARTBEAT, b"");
    assert_eq!(a.reply(op::HEARTBEAT_REPLY).len(), 4);
    push(&up, room, "still here");
    assert_eq!(a.message().1, "still here");
}

fn history_route(http: SocketAddr, query: &str) -> Value {
    support::http(http, "GET", &format!("/goim/room/history?{query}"), b"").1
}

#[test]
fn the_http_route_serves_the_history_and_names_bad_parameters() {
    let up = up_with_history("messages = 3");
    let room = "live://http";
    let mut a = Client::connect(&up, false, room, "h");
    up.wait_conns(1);
    for i in 0..5 {
        push(&up, room, &format!("h{i}"));
    }
    let offsets: Vec<u32> = (0..5).map(|_| a.message().0).collect();
    let v = history_route(up.http, "type=live&room=http");
    assert_eq!(v["code"], 0, "{v}");
    let msgs = v["data"]["messages"].as_array().unwrap();
    let got: Vec<(u64, &str)> = msgs
        .iter()
        .map(|m| (m["offset"].as_u64().unwrap(), m["msg"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (u64::from(offsets[2]), "h2"),
            (u64::from(offsets[3]), "h3"),
            (u64::from(offsets[4]), "h4")
        ]
    );
    assert_eq!(v["data"]["newest"], offsets[4]);
    assert_eq!(msgs[0]["op"], 1000);
    let v = history_route(
        up.http,
        &format!("type=live&room=http&since={}", offsets[3]),
    );
    assert_eq!(v["data"]["messages"].as_array().unwrap().len(), 1, "{v}");
    let v = history_route(
        up.http,
        &format!("type=live&room=http&since={}", offsets[0]),
    );
    assert_eq!(v["code"], -410, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("too old: 1 messages"),
        "{v}"
    );
    let v = history_route(up.http, "type=live&room=nobody");
    assert_eq!(v["code"], -404, "{v}");
    for (q, name) in [
        ("room=http", "type"),
        ("type=live", "room"),
        ("type=live&room=http&since=-1", "since"),
        ("type=live&room=http&since=x", "since"),
    ] {
        let v = history_route(up.http, q);
        assert_eq!(v["code"], -400, "{q}: {v}");
        assert!(v["message"].as_str().unwrap().starts_with(name), "{q}: {v}");
    }
    // Counted per route and code.
    let (_, text) = support::http_raw(up.http, "GET", "/metrics", b"");
    assert!(
        text.contains(
            "corecast_dispatcher_http_requests_total{route=\"room_history\",code=\"-410\"} 1"
        ),
        "{text}"
    );
}

/// `corecast listen --since N` recovers the room from offset N and prints each message's
/// offset.
#[test]
fn listen_since_recovers_and_prints_offsets() {
    let up = up_with_history("messages = 100");
    let room = "live://cli";
    let mut a = Client::connect(&up, false, room, "cli");
    up.wait_conns(1);
    push(&up, room, "c0");
    let (first, _) = a.message();
    for i in 1..4 {
        push(&up, room, &format!("c{i}"));
    }
    wait_flushed(&up, room, first.wrapping_add(3));
    let mut args = support::client(&up, true, room, 2, "cli2", &[1000]);
    args.since = Some(first);
    args.count = Some(4);
    let listener = support::listen(args);
    // Then one live message, once the recovery was answered.
    up.wait_for("the recovery answered", |up| {
        let (_, text) = support::http_raw(up.http, "GET", "/metrics", b"");
        text.contains("corecast_dispatcher_recover_found_total 1\n")
    });
    push(&up, room, "c4");
    let lines = listener.join().unwrap();
    let reply = lines
        .iter()
        .find(|l| l["op"] == op::RECOVER_REPLY)
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(
        reply["body"],
        format!("ok 3 {} {room}", first.wrapping_add(3)),
        "{lines:?}"
    );
    let got: Vec<(u64, String)> = lines
        .iter()
        .filter(|l| l["op"] == 1000)
        .map(|l| {
            (
                l["offset"].as_u64().unwrap(),
                l["body"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = (1..5u32)
        .map(|i| (u64::from(first.wrapping_add(i)), format!("c{i}")))
        .collect();
    assert_eq!(got, want);
}
