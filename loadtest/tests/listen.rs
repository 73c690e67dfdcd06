//! `corecast listen` against a real gateway started in-process (TCP and WebSocket, open and
//! hmac auth), and against hand-written fake servers for what a gateway never sends.
//! Every run has `--seconds` as a safety net, so no test can hang.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use gateway::{Config, Gateway};
use loadtest::listen::{self, ListenArgs, ListenSummary};
use protocol::frame;
use protocol::op;
use protocol::token::Token;

mod support;

use support::{push_bodies, start};

type Outcome = (loadtest::Result<ListenSummary>, String);

/// Runs `listen` on its own thread, writing into a `Vec<u8>`.
fn spawn(args: ListenArgs) -> JoinHandle<Outcome> {
    thread::spawn(move || {
        let mut out = Vec::new();
        let r = listen::run(&args, &mut out);
        (r, String::from_utf8(out).expect("output is UTF-8"))
    })
}

/// Waits until the gateway counts `n` members in `room`; panics (with the listener's outcome
/// if it already ended) after 10 s.
fn wait_member(gw: &Gateway, room: &str, listener: &JoinHandle<Outcome>) {
    let end = Instant::now() + Duration::from_secs(10);
    while !gw.room_counts().iter().any(|(r, n)| r == room && *n == 1) {
        assert!(
            !listener.is_finished(),
            "the listener ended before joining {room}"
        );
        assert!(
            Instant::now() < end,
            "timed out waiting for a member in {room}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn args(room: &str) -> ListenArgs {
    ListenArgs {
        room: room.into(),
        count: Some(3),
        seconds: Some(20),
        ..ListenArgs::default()
    }
}

/// Listens with `a`, pushes three messages into its room (a batch of two, then one) and
/// returns the output.
fn listen_to_three(gw: &Gateway, a: ListenArgs) -> (ListenSummary, String) {
    let room = a.room.clone();
    let listener = spawn(a);
    wait_member(gw, &room, &listener);
    push_bodies(gw, &room, ["one", "two {\"n\":2}"]);
    push_bodies(gw, &room, ["three"]);
    let (r, out) = listener.join().expect("listener thread");
    let summary = r.unwrap_or_else(|e| panic!("listen failed: {e}\n{out}"));
    (summary, out)
}

#[test]
fn tcp_prints_each_room_message_in_order() {
    let gw = start(Config::loopback_ephemeral());
    let a = ListenArgs {
        tcp: gw.tcp_addr().to_string(),
        ..args("live://listen-tcp")
    };
    let (summary, out) = listen_to_three(&gw, a);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "listening on room live://listen-tcp via tcp {}",
                gw.tcp_addr()
            )
            .as_str(),
            "[live://listen-tcp] op=1000 one",
            "[live://listen-tcp] op=1000 two {\"n\":2}",
            "[live://listen-tcp] op=1000 three",
        ],
        "{out}"
    );
    assert_eq!(summary.messages, 3);
    // The auth reply and three bare frames at least (plus a heartbeat reply, if it came first).
    assert!(summary.frames >= 4, "{summary:?}");
}

#[test]
fn ws_prints_each_room_message_in_order() {
    let gw = start(Config::loopback_ephemeral());
    // The full URL form; the ops-friendly host:port form is checked with --json below.
    let a = ListenArgs {
        ws: Some(format!("ws://{}/sub", gw.ws_addr())),
        ..args("live://listen-ws")
    };
    let (summary, out) = listen_to_three(&gw, a);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "listening on room live://listen-ws via ws ws://{}/sub",
                gw.ws_addr()
            )
            .as_str(),
            "[live://listen-ws] op=1000 one",
            "[live://listen-ws] op=1000 two {\"n\":2}",
            "[live://listen-ws] op=1000 three",
        ],
        "{out}"
    );
    assert_eq!(summary.messages, 3);
    // Over WebSocket each batch is one op-9 frame: the auth reply and two batches at least.
    assert!(summary.frames >= 3, "{summary:?}");
}

#[test]
fn json_mode_prints_one_object_per_message() {
    let gw = start(Config::loopback_ephemeral());
    let a = ListenArgs {
        ws: Some(gw.ws_addr().to_string()),
        json: true,
        ..args("live://listen-json")
    };
    let (summary, out) = listen_to_three(&gw, a);
    let values: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(values.len(), 4, "{out}");
    assert_eq!(values[0]["listening"]["room"], "live://listen-json");
    assert_eq!(values[0]["listening"]["transport"], "ws");
    let bodies: Vec<&str> = values[1..]
        .iter()
        .map(|v| v["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["one", "two {\"n\":2}", "three"]);
    for v in &values[1..] {
        assert_eq!(
            (v["op"].as_i64(), v["ver"].as_i64(), v["seq"].as_i64()),
            (Some(1000), Some(1), Some(0))
        );
    }
    assert_eq!(summary.messages, 3);
}

#[test]
fn seconds_ends_a_quiet_listen_without_error() {
    let gw = start(Config::loopback_ephemeral());
    let a = ListenArgs {
        tcp: gw.tcp_addr().to_string(),
        count: None,
        seconds: Some(1),
        ..args("live://listen-quiet")
    };
    let began = Instant::now();
    let (r, out) = spawn(a).join().unwrap();
    let summary = r.unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(summary.messages, 0);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn a_closed_port_is_an_error_naming_the_address() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for a in [
        ListenArgs {
            tcp: addr.to_string(),
            ..args("live://x")
        },
        ListenArgs {
            ws: Some(format!("ws://{addr}/sub")),
            ..args("live://x")
        },
    ] {
        let mut out = Vec::new();
        let e = listen::run(&a, &mut out).unwrap_err().to_string();
        assert!(e.contains(&addr.to_string()), "{e}");
        assert!(e.contains("connecting to"), "{e}");
        assert!(out.is_empty());
    }
}

fn hmac_config() -> Config {
    let mut c = Config::loopback_ephemeral();
    c.auth.mode = "hmac".into();
    c.auth.secrets = vec!["s3cret".into()];
    c
}

#[test]
fn hmac_refusal_names_the_reason_on_both_transports() {
    let gw = start(hmac_config());
    for a in [
        ListenArgs {
            tcp: gw.tcp_addr().to_string(),
            ..args("live://hmac")
        },
        ListenArgs {
            ws: Some(gw.ws_addr().to_string()),
            ..args("live://hmac")
        },
    ] {
        let (r, out) = spawn(a.clone()).join().unwrap();
        let e = r.expect_err("an unsigned token is refused").to_string();
        // TCP: the op-6 body; WS: the Close frame's reason (code 1008).
        assert!(e.contains("has no signature"), "{a:?}: {e}");
        assert!(e.contains("refused"), "{e}");
        assert!(out.is_empty(), "nothing printed before the auth: {out}");
    }
}

#[test]
fn hmac_mode_works_with_a_signed_token() {
    let gw = start(hmac_config());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 60;
    let token = Token {
        mid: 9,
        key: "listen-signed".into(),
        room_id: "live://signed".into(),
        platform: "cli".into(),
        accepts: vec![1000],
        ..Token::default()
    }
    .sign(b"s3cret", exp)
    .to_json();
    let a = ListenArgs {
        tcp: gw.tcp_addr().to_string(),
        token: Some(token),
        // --room is ignored with --token: the token's room_id is what the gateway joins.
        ..args("live://signed")
    };
    let (summary, out) = listen_to_three(&gw, a);
    assert_eq!(summary.messages, 3, "{out}");
    assert!(
        out.starts_with("listening on room live://signed via tcp"),
        "{out}"
    );
}

/// A fake TCP server: accepts one connection, reads the auth frame, then writes `reply`.
fn fake_server(reply: Vec<u8>) -> (String, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 16];
        s.read_exact(&mut head).unwrap();
        let h = frame::decode_header(&head, usize::MAX).unwrap();
        assert_eq!(h.op, op::AUTH);
        let mut body = vec![0u8; h.body_len()];
        s.read_exact(&mut body).unwrap();
        s.write_all(&reply).unwrap();
        // Keep the socket open until the client goes away.
        let mut sink = [0u8; 256];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    (addr, h)
}

#[test]
fn a_malformed_frame_from_the_server_is_a_clear_error() {
    let mut reply = Vec::new();
    frame::encode(&mut reply, 1, op::AUTH_REPLY, 1, b"");
    frame::encode(&mut reply, 1, 1000, 0, b"fine");
    let mut bad = frame::header_bytes(0, 1, 1000, 0);
    bad[4..6].copy_from_slice(&20i16.to_be_bytes());
    reply.extend_from_slice(&bad);
    let (addr, server) = fake_server(reply);
    let a = ListenArgs {
        tcp: addr.clone(),
        seconds: Some(10),
        ..args("live://fake")
    };
    let (r, out) = spawn(a).join().unwrap();
    let e = r.expect_err("a bad header is an error").to_string();
    assert!(e.contains("malformed frame"), "{e}");
    assert!(e.contains("headerLen is 20"), "{e}");
    assert!(e.contains(&addr), "{e}");
    assert!(
        out.contains("op=1000 fine"),
        "the good frame before it is printed: {out}"
    );
    server.join().unwrap();
}

#[test]
fn a_server_that_closes_after_auth_is_an_error_with_its_reason() {
    let mut reply = Vec::new();
    frame::encode(&mut reply, 1, op::AUTH_REPLY, 1, b"");
    frame::encode(&mut reply, 1, op::DISCONNECT_REPLY, 0, b"drain");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut auth = [0u8; 16];
        s.read_exact(&mut auth).unwrap();
        let len = frame::decode_header(&auth, usize::MAX).unwrap().body_len();
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        s.write_all(&reply).unwrap();
        // Closing with the client's heartbeat unread would reset: read it first.
        let _ = s.read(&mut auth);
        drop(s);
    });
    let a = ListenArgs {
        tcp: addr,
        seconds: Some(10),
        ..args("live://fake")
    };
    let (r, out) = spawn(a).join().unwrap();
    let e = r.expect_err("a close is an error").to_string();
    assert!(
        e.contains("closed the connection after 0 messages: drain"),
        "{e}"
    );
    assert!(out.contains("op=6 disconnect_reply drain"), "{out}");
    server.join().unwrap();
}

#[test]
fn heartbeats_go_out_on_schedule() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = thread::spawn(move || -> usize {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut replied = false;
        let mut heartbeats = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return heartbeats,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            while let Ok(Some((h, _, used))) = frame::split(&got, usize::MAX) {
                match h.op {
                    op::AUTH if !replied => {
                        let mut r = Vec::new();
                        frame::encode(&mut r, h.ver, op::AUTH_REPLY, h.seq, b"");
                        s.write_all(&r).unwrap();
                        replied = true;
                    }
                    op::HEARTBEAT => {
                        heartbeats += 1;
                        let mut r = Vec::new();
                        frame::encode(
                            &mut r,
                            h.ver,
                            op::HEARTBEAT_REPLY,
                            h.seq,
                            &7i32.to_be_bytes(),
                        );
                        s.write_all(&r).unwrap();
                    }
                    other => panic!("unexpected op {other}"),
                }
                got.drain(..used);
            }
        }
    });
    let a = ListenArgs {
        tcp: addr,
        count: None,
        seconds: Some(3),
        heartbeat_secs: 1,
        ..args("live://fake")
    };
    let (r, out) = spawn(a).join().unwrap();
    let summary = r.unwrap_or_else(|e| panic!("{e}\n{out}"));
    let heartbeats = server.join().unwrap();
    // One at once, then one a second until the 3 s deadline: 3 (a 4th if the deadline and
    // the last heartbeat coincide).
    assert!((3..=4).contains(&heartbeats), "{heartbeats} heartbeats");
    assert_eq!(summary.messages, 0);
    assert_eq!(
        summary.frames,
        1 + heartbeats as u64,
        "auth reply + heartbeat replies"
    );
    // Heartbeat replies are not printed (debug logging is off).
    assert_eq!(out.lines().count(), 1, "{out}");
}
