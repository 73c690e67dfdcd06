//! Malformed input: each case closes only the offending connection, with a reason naming the
//! problem, and is counted; a bystander on each transport keeps working.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use protocol::op;
use support::*;

struct Fixture {
    gw: gateway::Gateway,
    bystanders: Vec<Client>,
}

impl Fixture {
    fn new(c: gateway::Config) -> Fixture {
        let gw = start(c);
        let bystanders = BOTH
            .iter()
            .map(|&t| Client::auth(&gw, t, &token(1, "", "live://by", &[])))
            .collect();
        Fixture { gw, bystanders }
    }

    fn check_bystanders(&mut self) {
        for c in &mut self.bystanders {
            assert_alive(c);
        }
    }
}

fn closed_with(c: &mut Client, expect: &str) {
    let reason = c.expect_closed().unwrap_or_default();
    assert!(
        reason.contains(expect),
        "reason {reason:?} should contain {expect:?}"
    );
}

#[test]
fn frame_header_violations_close_the_connection_before_and_after_auth() {
    let mut f = Fixture::new(config());
    let mut long = goim(1, op::HEARTBEAT, 1, b"");
    long[0..4].copy_from_slice(&4113i32.to_be_bytes());
    let mut header_len = goim(1, op::HEARTBEAT, 1, b"");
    header_len[4..6].copy_from_slice(&20i16.to_be_bytes());
    let mut short = goim(1, op::HEARTBEAT, 1, b"");
    short[0..4].copy_from_slice(&15i32.to_be_bytes());
    let cases = [
        (long, "packLen 4113 exceeds the limit of 4112"),
        (header_len, "headerLen is 20"),
        (short, "packLen 15 is shorter"),
    ];
    for t in BOTH {
        for authed in [false, true] {
            for (bytes, expect) in &cases {
                let mut c = if authed {
                    Client::auth(&f.gw, t, JS_TOKEN)
                } else {
                    Client::connect(&f.gw, t)
                };
                c.send_raw(bytes.clone());
                closed_with(&mut c, expect);
            }
        }
    }
    // A whole 4113-byte frame on TCP is refused as soon as its header is in.
    let mut c = Client::connect(&f.gw, Transport::Tcp);
    c.send_raw(goim(1, op::AUTH, 1, &[b' '; 4097]));
    closed_with(&mut c, "packLen 4113");
    eventually(5, "13 bad inputs counted", || f.gw.total().bad_input == 13);
    f.check_bystanders();
}

#[test]
fn ops_before_auth_close_with_the_op_named() {
    let mut f = Fixture::new(config());
    for t in BOTH {
        for o in [op::HEARTBEAT, op::SEND_MSG, 1000] {
            let mut c = Client::connect(&f.gw, t);
            c.send(1, o, 1, b"");
            closed_with(&mut c, &format!("op {o} "));
        }
    }
    f.check_bystanders();
}

#[test]
fn a_partial_header_held_open_is_closed_at_the_handshake_timeout() {
    let mut c = config();
    c.limits.handshake_timeout_ms = 400;
    let mut f = Fixture::new(c);
    let mut tcp = Client::connect(&f.gw, Transport::Tcp);
    tcp.send_raw(goim(1, op::AUTH, 1, b"{}")[..8].to_vec());
    let mut ws = Client::connect(&f.gw, Transport::Ws);
    ws.stream()
        .write_all(&ws_frame(0x82, &goim(1, op::AUTH, 1, b"{}"))[..10])
        .unwrap();
    // A slow-loris upgrade request: never finishes its headers.
    let mut loris = TcpStream::connect(f.gw.ws_addr()).unwrap();
    loris
        .write_all(b"GET /sub HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    closed_with(&mut tcp, "handshake timeout");
    closed_with(&mut ws, "handshake timeout");
    let mut resp = String::new();
    loris
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    loris.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("handshake timeout"),
        "{resp}"
    );
    f.check_bystanders();
}

fn http_upgrade(gw: &gateway::Gateway, request: &str) -> String {
    let mut s = TcpStream::connect(gw.ws_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

#[test]
fn websocket_upgrades_off_the_sub_path_or_malformed_get_an_http_error() {
    let mut f = Fixture::new(config());
    let req = |path: &str, method: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let resp = http_upgrade(&f.gw, &req("/foo", "GET"));
    assert!(
        resp.starts_with("HTTP/1.1 404") && resp.contains("\"/foo\" is not /sub"),
        "{resp}"
    );
    let resp = http_upgrade(&f.gw, &req("/sub?x=1", "GET"));
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    let resp = http_upgrade(&f.gw, &req("/sub", "POST"));
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("POST is not GET"),
        "{resp}"
    );
    let huge = format!("GET /sub HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000));
    let resp = http_upgrade(&f.gw, &huge);
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    f.check_bystanders();
}

#[test]
fn websocket_frame_violations_close_with_a_close_frame() {
    let mut f = Fixture::new(config());
    let auth = goim(1, op::AUTH, 1, JS_TOKEN.as_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (ws_frame(0x82 | 0x40, &auth), "reserved bits"),
        (ws_frame(0x83, &auth), "unknown opcode 3"),
        (ws_frame(0x8b, b""), "unknown opcode 11"),
        (
            ws_frame(0x82, &vec![0u8; 5000]),
            "exceeds the limit of 4112",
        ),
        (
            ws_frame(0x80, &auth),
            "continuation frame without a message",
        ),
        (
            ws_frame(0x82, &goim(1, op::AUTH, 1, b"{}")[..15]),
            "shorter than the 16-byte header",
        ),
    ];
    for authed in [false, true] {
        for (bytes, expect) in &cases {
            let mut c = if authed {
                Client::auth(&f.gw, Transport::Ws, JS_TOKEN)
            } else {
                Client::connect(&f.gw, Transport::Ws)
            };
            c.stream().write_all(bytes).unwrap();
            closed_with(&mut c, expect);
        }
    }
    f.check_bystanders();
}

#[test]
fn websocket_fragments_ping_and_close_are_handled() {
    let f = Fixture::new(config());
    let mut c = Client::connect(&f.gw, Transport::Ws);
    let auth = goim(1, op::AUTH, 5, JS_TOKEN.as_bytes());
    // The auth frame in three fragments (text, then continuations), with a ping between.
    let mut bytes = ws_frame(0x01, &auth[..10]);
    bytes.extend(ws_frame(0x89, b"ping!"));
    bytes.extend(ws_frame(0x00, &auth[10..40]));
    bytes.extend(ws_frame(0x80, &auth[40..]));
    c.stream().write_all(&bytes).unwrap();
    let Client::Ws { ws } = &mut c else {
        unreachable!()
    };
    let mut saw_pong = false;
    loop {
        match ws.read().unwrap() {
            tungstenite::Message::Pong(p) => {
                assert_eq!(&p[..], b"ping!");
                saw_pong = true;
            }
            tungstenite::Message::Binary(b) => {
                let (h, _) = protocol::frame::decode_ws_message(&b, 4112).unwrap();
                assert_eq!((h.op, h.seq), (op::AUTH_REPLY, 5));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_pong);
    // An empty first fragment still opens a message; the continuation completes it.
    let hb = goim(1, op::HEARTBEAT, 6, b"");
    let mut bytes = ws_frame(0x02, b"");
    bytes.extend(ws_frame(0x80, &hb));
    c.stream().write_all(&bytes).unwrap();
    let f = c.recv().unwrap();
    assert_eq!((f.op, f.seq), (op::HEARTBEAT_REPLY, 6));
    c.stream()
        .write_all(&ws_frame(0x88, &1000u16.to_be_bytes()))
        .unwrap();
    assert_eq!(c.expect_closed(), Some(String::new()));
}

fn slow_consumer(policy: &str) {
    let mut c = config();
    c.limits.outbound_cap_bytes = 512 * 1024;
    c.limits.slow_consumer = policy.into();
    // Bounded kernel buffers, so the unread bytes pile up in the gateway's queue, not in the
    // kernel's autotuned send buffer (which would swallow megabytes).
    c.engine.sndbuf = 64 * 1024;
    let gw = start(c);
    // A client that never reads, with the smallest receive buffer the kernel allows.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&gw.tcp_addr().into()).unwrap();
    let mut slow = Client::Tcp {
        stream: sock.into(),
        buf: Vec::new(),
    };
    slow.set_timeout(Duration::from_secs(10));
    slow.send(
        1,
        op::AUTH,
        1,
        token(1, "slow", "live://fast", &[]).as_bytes(),
    );
    let mut readers: Vec<Client> = (0..4)
        .map(|i| {
            let t = if i % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Ws
            };
            Client::auth(&gw, t, &token(2 + i, "", "live://fast", &[]))
        })
        .collect();
    wait_authenticated(&gw, 5);
    let n = 3000u32;
    let body = vec![b'x'; 1000];
    std::thread::scope(|s| {
        for (i, c) in readers.iter_mut().enumerate() {
            s.spawn(move || {
                let mut next = 0u32;
                while next < n {
                    for f in c.recv_push().expect("reader keeps receiving") {
                        let seq = u32::from_be_bytes(f.body[..4].try_into().unwrap());
                        assert_eq!(seq, next, "reader {i} got every message in order");
                        next += 1;
                    }
                }
            });
        }
        // As fast as healthy readers keep up on a shared 2-core machine: bursts of 20 x 1 KB
        // every 4 ms (~5 MB/s to each reader, who may stall ~150 ms before reaching the cap).
        for seq in 0..n {
            let mut m = seq.to_be_bytes().to_vec();
            m.extend_from_slice(&body);
            push_room(&gw, "live://fast", 1000, &[&m]);
            if seq % 20 == 19 {
                std::thread::sleep(Duration::from_millis(4));
            }
        }
    });
    match policy {
        "disconnect" => {
            eventually(10, "the slow consumer is disconnected", || {
                gw.total().cap_disconnects == 1
            });
            let mut got = 0;
            loop {
                match slow.recv() {
                    Ok(f) if f.op == 1000 => got += 1,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            assert!(got < n, "the slow consumer was cut off ({got} of {n})");
        }
        _ => {
            eventually(5, "messages dropped and counted", || {
                gw.total().cap_dropped_messages > 0
            });
            assert_eq!(gw.total().cap_disconnects, 0);
            // The connection lives on and gets what was kept, in order, with gaps.
            let mut last = None;
            let mut got = 0;
            slow.set_timeout(Duration::from_millis(500));
            while let Ok(f) = slow.recv() {
                if f.op != 1000 {
                    continue;
                }
                let seq = u32::from_be_bytes(f.body[..4].try_into().unwrap());
                assert!(last.is_none_or(|l| seq > l), "order kept");
                last = Some(seq);
                got += 1;
            }
            assert_eq!(
                got + gw.total().cap_dropped_messages,
                n as u64,
                "received + dropped = sent"
            );
            slow.set_timeout(Duration::from_secs(5));
            assert_alive(&mut slow);
        }
    }
}

#[test]
fn a_client_that_never_reads_is_disconnected_and_others_get_everything() {
    slow_consumer("disconnect");
}

#[test]
fn drop_oldest_keeps_a_slow_client_and_counts_what_it_dropped() {
    slow_consumer("drop-oldest");
}
