//! Bad input to the dispatcher gets a clear, specific outcome and harms nothing else.
//!
//! - HTTP API: a missing, malformed or out-of-range parameter answers HTTP 200 with goim's
//!   envelope `{"code": -400, "message": "<parameter>: ..."}`; an oversized body names the body
//!   and the limit; an unknown path or method is not a 200; a full queue answers -500 within
//!   `http.request_timeout_ms`, never a hang. Nothing bad reaches the queue.
//! - Gateway links: garbage, a first message other than Register, an oversized length prefix,
//!   silence past the register timeout, garbage or a dispatcher-only message on a registered
//!   link: the link is closed and counted in `links_rejected`; a well-behaved gateway linked
//!   alongside stays online and keeps receiving pushes, and the HTTP API keeps answering.
//!
//! - Session events from a link the dispatcher no longer counts as the gateway's (removed
//!   gateway, superseded link) never reach the registry.
//!
//! Every test starts its own dispatcher on ephemeral ports and waits with bounded deadlines.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dispatcher::{Config, Dispatcher};
use protocol::link::{
    self, Ack, Body, Broadcast, LinkMessage, PushKeys, Register, Renew, RoomBatch,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Starts a dispatcher on loopback ephemeral ports with `tweak` applied to the config.
fn start(tweak: impl FnOnce(&mut Config)) -> Dispatcher {
    let mut cfg = Config::loopback_ephemeral();
    tweak(&mut cfg);
    Dispatcher::start(cfg).expect("dispatcher starts")
}

/// Polls `f` every 10 ms until it holds, for at most `secs` seconds.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out after {secs} s waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One HTTP/1.1 request (`Connection: close`); returns the status and the raw body.
fn http_raw(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    exchange(addr, &format!("{method} {path}"), &req, false)
}

/// Sends `req` as is (then half-closes when `eof`), reads the answer (bounded: 10 s); returns
/// the status and the raw body.
fn exchange(addr: SocketAddr, what: &str, req: &[u8], eof: bool) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP API");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before taking all of an oversized request; the answer
    // is what counts.
    let sent = s.write_all(req);
    if eof && sent.is_ok() {
        s.shutdown(Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: no complete answer within 10 s (so far {out:?})")
            }
            // A reset after the answer arrived (the server closed with unread input).
            Err(_) if !out.is_empty() => break,
            Err(e) => panic!("{what}: {e} (sending: {sent:?})"),
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{what}: not an HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no status in {head:?}"));
    (status, body.to_string())
}

/// One goim API call: asserts HTTP 200 and a JSON envelope, returns the envelope.
fn api(d: &Dispatcher, method: &str, path: &str, body: &[u8]) -> Value {
    let (status, text) = http_raw(d.http_addr(), method, path, body);
    assert_eq!(status, 200, "{method} {path}: HTTP status (body {text:?})");
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {text:?}"));
    assert!(v["code"].is_i64(), "{method} {path}: no code in {v}");
    assert!(
        v["message"].is_string(),
        "{method} {path}: no message in {v}"
    );
    v
}

/// Asserts a -400 whose message names `needle` (and carries no data).
fn expect_bad(d: &Dispatcher, method: &str, path: &str, body: &[u8], needle: &str) {
    let v = api(d, method, path, body);
    assert_eq!(v["code"], -400, "{method} {path}: {v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains(needle),
        "{method} {path}: message {msg:?} should name {needle:?}"
    );
    assert!(
        v.get("data").is_none(),
        "{method} {path}: data on an error: {v}"
    );
}

/// Asserts code 0; returns the envelope.
fn expect_ok(d: &Dispatcher, method: &str, path: &str, body: &[u8]) -> Value {
    let v = api(d, method, path, body);
    assert_eq!(v["code"], 0, "{method} {path}: {v}");
    assert_eq!(v["message"], "", "{method} {path}: {v}");
    v
}

const ROOM_PUSH: &str = "/goim/push/room?operation=1000&type=live&room=1";

/// The API still takes a push.
fn push_room_ok(d: &Dispatcher) {
    expect_ok(d, "POST", ROOM_PUSH, b"still serving");
}

fn rejected(d: &Dispatcher) -> u64 {
    d.metrics().links_rejected.load(Relaxed)
}

/// The value of a `/metrics` line starting with `prefix` (followed by a space).
fn metric(d: &Dispatcher, prefix: &str) -> Option<u64> {
    let (status, text) = http_raw(d.http_addr(), "GET", "/metrics", b"");
    assert_eq!(status, 200, "GET /metrics");
    text.lines().find_map(|l| {
        l.strip_prefix(prefix)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn instances(d: &Dispatcher) -> Vec<Value> {
    let v = expect_ok(d, "GET", "/goim/nodes/instances", b"");
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("nodes/instances data is not an array: {v}"))
        .clone()
}

fn instance(d: &Dispatcher, id: &str) -> Option<Value> {
    instances(d).into_iter().find(|i| i["hostname"] == id)
}

/// A raw TCP connection to the link port.
fn dial(d: &Dispatcher) -> TcpStream {
    let s = TcpStream::connect(d.link_addr()).expect("connect to the link port");
    s.set_nodelay(true).unwrap();
    s
}

fn frame(body: Body) -> Vec<u8> {
    let mut buf = BytesMut::new();
    link::encode(&LinkMessage::from(body), &mut buf);
    buf.to_vec()
}

fn register(id: &str) -> Body {
    Body::Register(Register {
        gateway_id: id.into(),
        addrs: vec!["10.0.0.1".into()],
        weight: 10,
        conn_count: 0,
        ip_count: 0,
        offline: false,
        ..Default::default()
    })
}

/// Random garbage: a length of 10, then 10 bytes that are no protobuf (an unterminated varint).
fn garbage() -> Vec<u8> {
    let mut g = 10u32.to_be_bytes().to_vec();
    g.extend_from_slice(&[0xff; 10]);
    g
}

/// Asserts the dispatcher closes `s` within `secs` seconds (EOF or reset), whatever it sent
/// before. Returns how long the close took.
fn expect_closed(s: &mut TcpStream, secs: u64, what: &str) -> Duration {
    let t = Instant::now();
    let end = t + Duration::from_secs(secs);
    let mut chunk = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: link still open after {secs} s");
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return t.elapsed(),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: link still open after {secs} s")
            }
            Err(_) => return t.elapsed(),
        }
    }
}

/// A well-behaved fake gateway: registered, reads what the dispatcher sends.
struct Bystander {
    s: TcpStream,
    buf: BytesMut,
}

impl Bystander {
    const ID: &'static str = "g-good";

    fn link(d: &Dispatcher) -> Bystander {
        let mut s = dial(d);
        s.write_all(&frame(register(Self::ID))).unwrap();
        eventually(10, "the bystander gateway is listed", || {
            instance(d, Self::ID).is_some()
        });
        Bystander {
            s,
            buf: BytesMut::new(),
        }
    }

    /// Waits (bounded) for a RoomBatch for `room`, acknowledging what it reads.
    fn expect_room_batch(&mut self, room: &str) {
        let end = Instant::now() + Duration::from_secs(10);
        let mut chunk = [0u8; 65536];
        loop {
            while let Some(body) = link::decode(&mut self.buf, link::MAX_LINK_MESSAGE).unwrap() {
                let id = match &body {
                    Body::RoomBatch(b) => b.id,
                    Body::PushKeys(p) => p.id,
                    Body::Broadcast(b) => b.id,
                    _ => 0,
                };
                if id > 0 {
                    self.s.write_all(&frame(Body::Ack(Ack { id }))).unwrap();
                }
                if let Body::RoomBatch(b) = body
                    && b.room == room
                {
                    return;
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "bystander: no RoomBatch for {room} within 10 s"
            );
            self.s.set_read_timeout(Some(left)).unwrap();
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("bystander: the dispatcher closed its link"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("bystander: no RoomBatch for {room} within 10 s")
                }
                Err(e) => panic!("bystander: link failed: {e}"),
            }
        }
    }

    /// Still listed online, and still receives pushes; the API still takes them.
    fn check(&mut self, d: &Dispatcher) {
        // Renew, so long tests stay within the renew timeout.
        let renew = Body::Renew(Renew {
            conn_count: 0,
            ip_count: 0,
            offline: false,
        });
        self.s.write_all(&frame(renew)).unwrap();
        let i = instance(d, Self::ID).expect("the bystander gateway is still listed");
        assert_eq!(i["metadata"]["offline"], "false", "bystander: {i}");
        push_room_ok(d);
        self.expect_room_batch("live://1");
    }
}

/// The common end of every link test: exactly `n` links rejected (waiting for the count, which
/// follows the close), the bystander unharmed, the API answering.
fn after_rejects(d: &Dispatcher, by: &mut Bystander, n: u64) {
    eventually(10, &format!("{n} links rejected"), || rejected(d) >= n);
    assert_eq!(rejected(d), n, "links_rejected");
    by.check(d);
}

// ---------------------------------------------------------------------------------------------
// HTTP API: parameters
// ---------------------------------------------------------------------------------------------

#[test]
fn push_keys_bad_parameters_name_the_parameter() {
    let d = start(|_| {});
    let cases = [
        ("/goim/push/keys", "keys"),
        ("/goim/push/keys?operation=1000", "keys"),
        ("/goim/push/keys?operation=1000&keys=", "keys"),
        ("/goim/push/keys?operation=abc&keys=k1", "operation"),
        ("/goim/push/keys?operation=99999999999&keys=k1", "operation"),
        ("/goim/push/keys?operation=1.5&keys=k1", "operation"),
    ];
    for (path, needle) in cases {
        expect_bad(&d, "POST", path, b"msg", needle);
    }
    // The out-of-range value is reported as such.
    let v = api(
        &d,
        "POST",
        "/goim/push/keys?operation=99999999999&keys=k1",
        b"m",
    );
    assert!(
        v["message"].as_str().unwrap().contains("32-bit"),
        "out-of-range operation: {v}"
    );
    // A valid call for a key nobody holds: OK, nothing produced.
    expect_ok(
        &d,
        "POST",
        "/goim/push/keys?operation=1000&keys=nobody",
        b"m",
    );
    assert_eq!(d.metrics().queue_produced.load(Relaxed), 0);
    push_room_ok(&d);
    assert_eq!(d.metrics().queue_produced.load(Relaxed), 1);
    d.stop();
}

#[test]
fn push_mids_bad_parameters_name_the_parameter() {
    let d = start(|_| {});
    let cases = [
        ("/goim/push/mids?operation=1000&mids=abc", "mids"),
        ("/goim/push/mids?operation=1000&mids=1&mids=x", "mids"),
        (
            "/goim/push/mids?operation=1000&mids=99999999999999999999",
            "mids",
        ),
        ("/goim/push/mids?operation=abc&mids=1", "operation"),
        ("/goim/push/mids?operation=99999999999&mids=1", "operation"),
    ];
    for (path, needle) in cases {
        expect_bad(&d, "POST", path, b"msg", needle);
    }
    // The bad value itself is quoted.
    let v = api(&d, "POST", "/goim/push/mids?mids=1&mids=x", b"m");
    assert!(v["message"].as_str().unwrap().contains("\"x\""), "{v}");
    // goim: an empty mids list is OK and does nothing.
    for path in [
        "/goim/push/mids?operation=1000",
        "/goim/push/mids?operation=1000&mids=",
        "/goim/push/mids",
    ] {
        let v = expect_ok(&d, "POST", path, b"m");
        assert!(v.get("data").is_none(), "{path}: {v}");
    }
    // Mids nobody holds: OK, nothing produced.
    expect_ok(
        &d,
        "POST",
        "/goim/push/mids?operation=1000&mids=1&mids=2",
        b"m",
    );
    assert_eq!(d.metrics().queue_produced.load(Relaxed), 0);
    push_room_ok(&d);
    d.stop();
}

#[test]
fn push_room_bad_parameters_name_the_parameter() {
    let d = start(|_| {});
    let cases = [
        ("/goim/push/room?type=live&room=1", "operation"),
        ("/goim/push/room?operation=0&type=live&room=1", "operation"),
        ("/goim/push/room?operation=&type=live&room=1", "operation"),
        (
            "/goim/push/room?operation=abc&type=live&room=1",
            "operation",
        ),
        (
            "/goim/push/room?operation=99999999999&type=live&room=1",
            "operation",
        ),
        ("/goim/push/room?operation=1000&room=1", "type"),
        ("/goim/push/room?operation=1000&type=&room=1", "type"),
        ("/goim/push/room?operation=1000&type=live", "room"),
        ("/goim/push/room?operation=1000&type=live&room=", "room"),
        ("/goim/push/room", "operation"),
    ];
    for (path, needle) in cases {
        expect_bad(&d, "POST", path, b"msg", needle);
    }
    let v = api(
        &d,
        "POST",
        "/goim/push/room?operation=0&type=live&room=1",
        b"m",
    );
    assert!(v["message"].as_str().unwrap().contains("0"), "{v}");
    assert_eq!(
        d.metrics().queue_produced.load(Relaxed),
        0,
        "bad input produced"
    );
    push_room_ok(&d);
    assert_eq!(d.metrics().queue_produced.load(Relaxed), 1);
    d.stop();
}

#[test]
fn push_all_bad_parameters_name_the_parameter() {
    let d = start(|_| {});
    let cases = [
        ("/goim/push/all", "operation"),
        ("/goim/push/all?speed=10", "operation"),
        ("/goim/push/all?operation=0", "operation"),
        ("/goim/push/all?operation=abc", "operation"),
        ("/goim/push/all?operation=1000&speed=-1", "speed"),
        ("/goim/push/all?operation=1000&speed=abc", "speed"),
        ("/goim/push/all?operation=1000&speed=99999999999", "speed"),
    ];
    for (path, needle) in cases {
        expect_bad(&d, "POST", path, b"msg", needle);
    }
    let v = api(&d, "POST", "/goim/push/all?operation=1000&speed=-1", b"m");
    assert!(v["message"].as_str().unwrap().contains("negative"), "{v}");
    assert_eq!(
        d.metrics().queue_produced.load(Relaxed),
        0,
        "bad input produced"
    );
    // Speed absent, empty or 0: unpaced, accepted.
    for path in [
        "/goim/push/all?operation=1000",
        "/goim/push/all?operation=1000&speed=",
        "/goim/push/all?operation=1000&speed=0",
        "/goim/push/all?operation=1000&speed=50",
    ] {
        expect_ok(&d, "POST", path, b"m");
    }
    assert_eq!(d.metrics().queue_produced.load(Relaxed), 4);
    push_room_ok(&d);
    d.stop();
}

#[test]
fn online_bad_parameters_name_the_parameter() {
    let d = start(|_| {});
    let cases = [
        ("/goim/online/top?limit=10", "type"),
        ("/goim/online/top?type=&limit=10", "type"),
        ("/goim/online/top?type=live", "limit"),
        ("/goim/online/top?type=live&limit=0", "limit"),
        ("/goim/online/top?type=live&limit=-3", "limit"),
        ("/goim/online/top?type=live&limit=abc", "limit"),
        ("/goim/online/top?type=live&limit=99999999999", "limit"),
        ("/goim/online/top", "type"),
        ("/goim/online/room?rooms=1", "type"),
        ("/goim/online/room?type=live", "rooms"),
        ("/goim/online/room?type=live&rooms=", "rooms"),
        ("/goim/online/room", "type"),
    ];
    for (path, needle) in cases {
        expect_bad(&d, "GET", path, b"", needle);
    }
    let v = api(&d, "GET", "/goim/online/top?type=live&limit=-3", b"");
    assert!(v["message"].as_str().unwrap().contains("-3"), "{v}");
    push_room_ok(&d);
    d.stop();
}

#[test]
fn valid_calls_answer_the_right_shapes_with_no_gateway() {
    let d = start(|_| {});
    let v = expect_ok(&d, "GET", "/goim/online/total", b"");
    assert_eq!(v["data"], json!({"ip_count": 0, "conn_count": 0}), "{v}");
    let v = expect_ok(&d, "GET", "/goim/online/top?type=live&limit=10", b"");
    assert_eq!(v["data"], json!([]), "{v}");
    let v = expect_ok(
        &d,
        "GET",
        "/goim/online/room?type=live&rooms=1&rooms=2",
        b"",
    );
    assert_eq!(v["data"], json!({"1": 0, "2": 0}), "{v}");
    for path in ["/goim/nodes/weighted", "/goim/nodes/weighted?platform=web"] {
        let v = expect_ok(&d, "GET", path, b"");
        assert_eq!(v["data"]["nodes"], json!(["127.0.0.1"]), "{path}: {v}");
        assert_eq!(v["data"]["domain"], "127.0.0.1", "{path}: {v}");
    }
    let v = expect_ok(&d, "GET", "/goim/nodes/instances", b"");
    assert_eq!(v["data"], json!([]), "{v}");
    // Odd but harmless encodings are decoded, not refused or crashed on.
    let v = expect_ok(
        &d,
        "GET",
        "/goim/online/room?type=live&rooms=%FF&rooms=a%20b",
        b"",
    );
    assert_eq!(v["data"]["a b"], 0, "{v}");
    assert_eq!(v["data"].as_object().unwrap().len(), 2, "{v}");
    push_room_ok(&d);
    d.stop();
}

// ---------------------------------------------------------------------------------------------
// HTTP API: bodies, paths, methods, a full queue, HTTP garbage
// ---------------------------------------------------------------------------------------------

const PUSH_ROUTES: [&str; 4] = [
    "/goim/push/keys?operation=1000&keys=nobody",
    "/goim/push/mids?operation=1000&mids=1",
    "/goim/push/room?operation=1000&type=live&room=1",
    "/goim/push/all?operation=1000",
];

#[test]
fn oversized_bodies_are_refused_on_every_push_route() {
    let d = start(|c| c.http.max_body_bytes = 1024);
    for path in PUSH_ROUTES {
        for size in [4096, 1025] {
            let v = api(&d, "POST", path, &vec![b'x'; size]);
            assert_eq!(v["code"], -400, "{path} with {size} bytes: {v}");
            let msg = v["message"].as_str().unwrap();
            assert!(
                msg.contains("body") && msg.contains("1024"),
                "{path} with {size} bytes: message {msg:?} should name the body and the limit"
            );
        }
        // Exactly at the limit: accepted.
        expect_ok(&d, "POST", path, &vec![b'x'; 1024]);
    }
    // Far over the limit (8 MB, most of it never read): the answer still arrives, and the
    // parameters are checked before the body.
    let big = vec![b'x'; 8 << 20];
    let v = api(&d, "POST", ROOM_PUSH, &big);
    assert_eq!(v["code"], -400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("1024"), "{v}");
    expect_bad(
        &d,
        "POST",
        "/goim/push/room?type=live&room=1",
        &big,
        "operation",
    );
    // Only the two accepted room/all pushes reached the queue.
    assert_eq!(d.metrics().queue_produced.load(Relaxed), 2);
    push_room_ok(&d);
    d.stop();
}

/// Asserts a raw exchange answered HTTP 200 with a -400 naming the body.
fn expect_bad_body(d: &Dispatcher, what: &str, req: &[u8], eof: bool, needle: &str) {
    let (status, text) = exchange(d.http_addr(), what, req, eof);
    assert_eq!(status, 200, "{what}: {text:?}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text:?}"));
    assert_eq!(v["code"], -400, "{what}: {v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("body"),
        "{what}: message {msg:?} should name the body"
    );
    assert!(
        msg.contains(needle),
        "{what}: message {msg:?} should contain {needle:?}"
    );
}

#[test]
fn truncated_chunked_and_overdeclared_bodies_get_a_clear_answer() {
    let d = start(|c| c.http.max_body_bytes = 1024);
    let head = |extra: &str| {
        format!("POST {ROOM_PUSH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
            .into_bytes()
    };
    // A chunked body over the limit: refused like a sized one.
    let mut req = head("Transfer-Encoding: chunked\r\n");
    for _ in 0..4 {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b'x'; 0x400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    expect_bad_body(&d, "chunked 4096 bytes", &req, false, "1024");
    // A chunked body at the limit: accepted.
    let mut req = head("Transfer-Encoding: chunked\r\n");
    req.extend_from_slice(b"400\r\n");
    req.extend_from_slice(&[b'x'; 0x400]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let (status, text) = exchange(d.http_addr(), "chunked 1024 bytes", &req, false);
    assert_eq!((status, text.contains("\"code\":0")), (200, true), "{text}");
    // A declared length far over the limit: refused once the limit is passed, without
    // waiting for the rest.
    let mut req = head("Content-Length: 1000000\r\n");
    req.extend_from_slice(&[b'x'; 2048]);
    expect_bad_body(&d, "1 MB declared, 2 KB sent", &req, false, "1024");
    // A body cut short by the client: answered, naming the body.
    let mut req = head("Content-Length: 100\r\n");
    req.extend_from_slice(&[b'x'; 10]);
    expect_bad_body(&d, "100 bytes declared, 10 sent", &req, true, "");
    assert_eq!(
        d.metrics().queue_produced.load(Relaxed),
        1,
        "only the good push"
    );
    push_room_ok(&d);
    d.stop();
}

#[test]
fn unknown_paths_and_wrong_methods_are_not_200() {
    let d = start(|_| {});
    for (method, path) in [
        ("GET", "/goim/nope"),
        ("POST", "/goim/push/nope?operation=1"),
        // `/` is the demo page; nothing else is served outside /goim/ and /metrics.
        ("GET", "/index.html"),
        ("GET", "/goim"),
        ("GET", "/goim/room/history/x"),
    ] {
        let (status, body) = http_raw(d.http_addr(), method, path, b"");
        assert_eq!(status, 404, "{method} {path}: {body:?}");
    }
    for (method, path) in [
        ("GET", ROOM_PUSH),
        ("GET", "/goim/push/keys?keys=a"),
        ("GET", "/goim/push/mids?mids=1"),
        ("GET", "/goim/push/all?operation=1"),
        ("POST", "/goim/online/total"),
        ("DELETE", "/goim/nodes/instances"),
        ("POST", "/goim/room/history?type=live&room=1"),
    ] {
        let (status, body) = http_raw(d.http_addr(), method, path, b"");
        assert_ne!(status, 200, "{method} {path}: {body:?}");
        assert!(
            (400..500).contains(&status),
            "{method} {path}: HTTP {status} should be a client error"
        );
    }
    // A GET on a push route produced nothing.
    assert_eq!(d.metrics().queue_produced.load(Relaxed), 0);
    push_room_ok(&d);
    d.stop();
}

#[test]
fn http_garbage_harms_nothing() {
    let d = start(|_| {});
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        &[0xffu8; 64][..],
        b"POST /goim/push/room?operation=1000&type=live&room=1 HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(d.http_addr()).unwrap();
        s.write_all(junk).unwrap();
        let _ = s.shutdown(Shutdown::Write);
        let _ = expect_closed(&mut s, 10, "HTTP garbage");
    }
    // A URI too long to take (about 110 KB, and about 1.2 MB): a client error, not a hang.
    for n in [10_000, 100_000] {
        let mut path = String::from("/goim/push/keys?operation=1000");
        for i in 0..n {
            path.push_str(&format!("&keys=k{i}"));
        }
        let (status, body) = http_raw(d.http_addr(), "POST", &path, b"m");
        assert!(
            (400..500).contains(&status),
            "{n} keys, a {}-byte URI: HTTP {status} {body:?}",
            path.len()
        );
    }
    assert_eq!(d.metrics().queue_produced.load(Relaxed), 0);
    push_room_ok(&d);
    d.stop();
}

#[test]
fn a_full_queue_answers_500_in_bounded_time() {
    let d = start(|c| {
        c.queue.embedded.capacity = 1;
        c.http.request_timeout_ms = 300;
        // The job does not consume until a gateway registers or this grace passes.
        c.links.relink_grace_ms = 60_000;
    });
    push_room_ok(&d);
    for _ in 0..2 {
        let t = Instant::now();
        let v = api(&d, "POST", ROOM_PUSH, b"no room");
        let took = t.elapsed();
        assert_eq!(v["code"], -500, "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains("embedded") && msg.contains("300 ms"),
            "message {msg:?} should say the embedded queue did not answer within 300 ms"
        );
        assert!(took < Duration::from_secs(5), "a full queue took {took:?}");
    }
    for path in [
        "/goim/push/all?operation=1000",
        "/goim/push/room?operation=7&type=a&room=b",
    ] {
        let v = api(&d, "POST", path, b"m");
        assert_eq!(v["code"], -500, "{path}: {v}");
    }
    // Everything else still answers, promptly.
    let t = Instant::now();
    expect_bad(
        &d,
        "POST",
        "/goim/push/room?type=live&room=1",
        b"m",
        "operation",
    );
    let v = expect_ok(&d, "GET", "/goim/online/total", b"");
    assert_eq!(v["data"], json!({"ip_count": 0, "conn_count": 0}));
    expect_ok(&d, "GET", "/goim/nodes/weighted", b"");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(d.metrics().queue_produced.load(Relaxed), 1);
    assert_eq!(
        metric(
            &d,
            "corecast_dispatcher_http_requests_total{route=\"push_room\",code=\"-500\"}"
        ),
        Some(3)
    );
    d.stop();
}

// ---------------------------------------------------------------------------------------------
// Gateway links
// ---------------------------------------------------------------------------------------------

#[test]
fn link_garbage_first_is_closed_and_counted() {
    let d = start(|_| {});
    let mut by = Bystander::link(&d);
    let mut s = dial(&d);
    s.write_all(&garbage()).unwrap();
    expect_closed(&mut s, 5, "garbage");
    after_rejects(&d, &mut by, 1);
    // An empty message (length 0: no body), and a peer that stops mid-message.
    let mut s = dial(&d);
    s.write_all(&0u32.to_be_bytes()).unwrap();
    expect_closed(&mut s, 5, "empty message");
    after_rejects(&d, &mut by, 2);
    let mut s = dial(&d);
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(&[0u8; 10]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    expect_closed(&mut s, 5, "half a message");
    after_rejects(&d, &mut by, 3);
    assert_eq!(d.gateways().len(), 1, "only the bystander is registered");
    assert_eq!(d.metrics().links_registered.load(Relaxed), 1);
    d.stop();
}

#[test]
fn link_first_message_other_than_register_is_closed_and_counted() {
    let d = start(|_| {});
    let mut by = Bystander::link(&d);
    let mut s = dial(&d);
    s.write_all(&frame(Body::Renew(Renew {
        conn_count: 5,
        ip_count: 5,
        offline: false,
    })))
    .unwrap();
    expect_closed(&mut s, 5, "Renew first");
    after_rejects(&d, &mut by, 1);
    // A Register without a gateway id is no registration either.
    let mut s = dial(&d);
    s.write_all(&frame(register(""))).unwrap();
    expect_closed(&mut s, 5, "Register with an empty gateway_id");
    after_rejects(&d, &mut by, 2);
    assert_eq!(d.gateways().len(), 1, "only the bystander is registered");
    assert_eq!(d.metrics().links_registered.load(Relaxed), 1);
    let v = expect_ok(&d, "GET", "/goim/online/total", b"");
    assert_eq!(v["data"], json!({"ip_count": 0, "conn_count": 0}), "{v}");
    d.stop();
}

#[test]
fn link_length_over_the_limit_is_closed_before_the_body() {
    let d = start(|c| c.links.max_message_bytes = 1024);
    let mut by = Bystander::link(&d);
    let mut s = dial(&d);
    // Only the length prefix: the dispatcher must not wait for a megabyte that never comes.
    s.write_all(&1_000_000u32.to_be_bytes()).unwrap();
    expect_closed(&mut s, 5, "oversized length");
    after_rejects(&d, &mut by, 1);
    // Just over the limit, whole: refused as well; on a registered link too.
    let mut s = dial(&d);
    s.write_all(&frame(register("g-big"))).unwrap();
    eventually(10, "g-big is listed", || instance(&d, "g-big").is_some());
    s.write_all(&1025u32.to_be_bytes()).unwrap();
    expect_closed(&mut s, 5, "oversized length on a registered link");
    after_rejects(&d, &mut by, 2);
    d.stop();
}

#[test]
fn link_silent_past_the_register_timeout_is_closed_and_counted() {
    let d = start(|c| c.links.register_timeout_ms = 300);
    let mut by = Bystander::link(&d);
    let mut s = dial(&d);
    let took = expect_closed(&mut s, 5, "silent link");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    after_rejects(&d, &mut by, 1);
    // A prompt Register is accepted as usual.
    let mut s = dial(&d);
    s.write_all(&frame(register("g-late"))).unwrap();
    eventually(10, "g-late is listed", || instance(&d, "g-late").is_some());
    assert_eq!(rejected(&d), 1);
    drop(s);
    d.stop();
}

#[test]
fn registered_link_garbage_goes_offline_then_is_removed() {
    // A relink grace long enough to see the gateway offline, short enough to see it removed.
    let d = start(|c| c.links.relink_grace_ms = 1_000);
    let mut by = Bystander::link(&d);
    let mut s = dial(&d);
    s.write_all(&frame(register("g-bad"))).unwrap();
    eventually(10, "g-bad is listed online", || {
        instance(&d, "g-bad").is_some_and(|i| i["metadata"]["offline"] == "false")
    });
    let i = instance(&d, "g-bad").unwrap();
    assert_eq!(i["metadata"]["weight"], "10", "{i}");
    assert_eq!(i["addrs"], json!(["10.0.0.1"]), "{i}");
    // A good renewal, then garbage in the same write: the renewal is applied, then the link
    // is closed.
    let mut bytes = frame(Body::Renew(Renew {
        conn_count: 7,
        ip_count: 3,
        offline: false,
    }));
    bytes.extend_from_slice(&garbage());
    s.write_all(&bytes).unwrap();
    expect_closed(&mut s, 5, "garbage on a registered link");
    eventually(10, "1 link rejected", || rejected(&d) == 1);
    let i = instance(&d, "g-bad").expect("g-bad is still listed within its relink grace");
    assert_eq!(i["metadata"]["offline"], "true", "{i}");
    assert_eq!(
        i["metadata"]["conn_count"], "7",
        "the renewal before the garbage: {i}"
    );
    // Offline gateways are not counted online.
    let v = expect_ok(&d, "GET", "/goim/online/total", b"");
    assert_eq!(v["data"], json!({"ip_count": 0, "conn_count": 0}), "{v}");
    // Removed once the relink grace has passed; only the bystander remains.
    eventually(10, "g-bad is removed", || instance(&d, "g-bad").is_none());
    assert_eq!(d.metrics().gateways_removed.load(Relaxed), 1);
    assert_eq!(instances(&d).len(), 1);
    after_rejects(&d, &mut by, 1);
    d.stop();
}

#[test]
fn registered_link_sending_dispatcher_only_messages_is_closed_and_counted() {
    let d = start(|_| {});
    let mut by = Bystander::link(&d);
    let bodies = [
        Body::PushKeys(PushKeys {
            id: 1,
            keys: vec!["k".into()],
            op: 1000,
            frames: b"x".to_vec(),
        }),
        Body::RoomBatch(RoomBatch {
            id: 1,
            room: "live://1".into(),
            frames: b"x".to_vec(),
        }),
        Body::Broadcast(Broadcast {
            id: 1,
            op: 1000,
            speed: 0,
            frames: b"x".to_vec(),
        }),
        register("g-again"),
    ];
    for (n, body) in bodies.into_iter().enumerate() {
        let name = body.name();
        let id = format!("g-rogue-{n}");
        let mut s = dial(&d);
        s.write_all(&frame(register(&id))).unwrap();
        eventually(10, &format!("{id} is listed"), || {
            instance(&d, &id).is_some()
        });
        s.write_all(&frame(body)).unwrap();
        expect_closed(&mut s, 5, &format!("{name} from a gateway"));
        after_rejects(&d, &mut by, n as u64 + 1);
        let i = instance(&d, &id).expect("listed within its relink grace");
        assert_eq!(i["metadata"]["offline"], "true", "{name}: {i}");
    }
    assert!(
        instance(&d, "g-again").is_none(),
        "a second Register must not register"
    );
    d.stop();
}

fn session(key: &str, mid: i64) -> Body {
    Body::Session(link::Session {
        online: true,
        mid,
        key: key.into(),
        rooms: vec!["live://1".into()],
        platform: "web".into(),
        conn_id: 1,
    })
}

/// Waits up to `secs` seconds for `f`; false when it never held (for things that must not
/// happen, with a sign that they would have by then).
fn within(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Session events on a link the dispatcher no longer counts as the gateway's must not reach the
/// registry: here, the link of a gateway removed because it stopped renewing.
#[test]
fn a_removed_gateways_late_session_events_are_not_applied() {
    let d = start(|c| c.links.renew_timeout_ms = 300);
    let mut s = dial(&d);
    s.write_all(&frame(register("g-silent"))).unwrap();
    eventually(10, "g-silent is listed", || {
        instance(&d, "g-silent").is_some()
    });
    // It never renews: removed, and the dispatcher's side of the link ends.
    eventually(10, "g-silent is removed", || {
        d.metrics().gateways_removed.load(Relaxed) == 1
    });
    assert!(instance(&d, "g-silent").is_none());
    expect_closed(&mut s, 5, "the link of a removed gateway");
    // Late input on that socket: a session, then garbage (whose rejection would show the
    // dispatcher still reads the link).
    let mut late = frame(session("k-late", 7));
    late.extend_from_slice(&garbage());
    let _ = s.write_all(&late);
    let read = within(2, || rejected(&d) > 0);
    let sessions = metric(&d, "corecast_dispatcher_sessions");
    expect_ok(
        &d,
        "POST",
        "/goim/push/keys?operation=1000&keys=k-late",
        b"m",
    );
    expect_ok(&d, "POST", "/goim/push/mids?operation=1000&mids=7", b"m");
    assert_eq!(
        (sessions, d.metrics().queue_produced.load(Relaxed)),
        (Some(0), 0),
        "a removed gateway's session was applied (sessions gauge, messages produced for it); \
         the dispatcher still read its link: {read}"
    );
    push_room_ok(&d);
    d.stop();
}

/// cluster.rs: "later events from an older link of the same gateway are ignored". Renew and
/// RoomCounts are; Session events must be too.
#[test]
fn session_events_from_a_superseded_link_are_ignored() {
    let d = start(|_| {});
    let mut old = dial(&d);
    old.write_all(&frame(register("g-dup"))).unwrap();
    eventually(10, "g-dup is listed", || instance(&d, "g-dup").is_some());
    // The gateway re-dials and registers again on a new link, announcing nothing.
    let mut new = dial(&d);
    new.write_all(&frame(register("g-dup"))).unwrap();
    eventually(10, "g-dup registered twice", || {
        d.metrics().links_registered.load(Relaxed) == 2
    });
    // A late session (and a renewal, which is ignored as it should be) on the old link, then
    // garbage whose rejection shows the old link was read.
    let mut late = frame(Body::Renew(Renew {
        conn_count: 99,
        ip_count: 99,
        offline: false,
    }));
    late.extend_from_slice(&frame(session("k-stale", 8)));
    late.extend_from_slice(&garbage());
    let _ = old.write_all(&late);
    let read = within(2, || rejected(&d) > 0);
    // The new link is unharmed: still listed online, the old link's renewal not applied.
    let i = instance(&d, "g-dup").expect("g-dup is still listed");
    assert_eq!(i["metadata"]["offline"], "false", "{i}");
    assert_eq!(
        i["metadata"]["conn_count"], "0",
        "the old link's renewal was applied: {i}"
    );
    let sessions = metric(&d, "corecast_dispatcher_sessions");
    expect_ok(
        &d,
        "POST",
        "/goim/push/keys?operation=1000&keys=k-stale",
        b"m",
    );
    assert_eq!(
        (sessions, d.metrics().queue_produced.load(Relaxed)),
        (Some(0), 0),
        "a session from the superseded link was applied (sessions gauge, messages produced \
         for it); old link read: {read}"
    );
    drop(new);
    d.stop();
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[test]
fn metrics_count_bad_input() {
    let d = start(|_| {});
    for path in [
        "/goim/push/room?type=live&room=1",
        "/goim/push/room?operation=0&type=live&room=1",
        "/goim/push/room?operation=1000&room=1",
    ] {
        expect_bad(&d, "POST", path, b"m", "");
    }
    expect_bad(
        &d,
        "GET",
        "/goim/online/top?type=live&limit=0",
        b"",
        "limit",
    );
    let mut s = dial(&d);
    s.write_all(&garbage()).unwrap();
    expect_closed(&mut s, 5, "garbage");
    eventually(10, "1 link rejected", || rejected(&d) == 1);
    push_room_ok(&d);

    let (status, text) = http_raw(d.http_addr(), "GET", "/metrics", b"");
    assert_eq!(status, 200);
    assert!(
        text.contains("corecast_dispatcher_links_rejected_total"),
        "{text}"
    );
    let get = |prefix: &str| metric(&d, prefix);
    assert_eq!(
        get("corecast_dispatcher_links_rejected_total"),
        Some(1),
        "{text}"
    );
    let req = |route: &str, code: i32| {
        get(&format!(
            "corecast_dispatcher_http_requests_total{{route=\"{route}\",code=\"{code}\"}}"
        ))
    };
    assert_eq!(req("push_room", -400), Some(3), "{text}");
    assert_eq!(req("push_room", 0), Some(1), "{text}");
    assert_eq!(req("online_top", -400), Some(1), "{text}");
    assert_eq!(
        get("corecast_dispatcher_queue_produced_total"),
        Some(1),
        "{text}"
    );
    d.stop();
}
