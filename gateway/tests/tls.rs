//! WSS: goim over WebSocket over TLS on its own listener, beside TCP and WS; bad TLS input
//! closes only its connection and is counted; certificate reload swaps the certificate for new
//! connections only.

mod support;
#[path = "support/wss.rs"]
mod wss;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gateway::{Config, Gateway};
use protocol::op;
use support::*;
use wss::*;

/// A temp dir with a CA and a first certificate in cert.pem / key.pem.
struct Pki {
    dir: PathBuf,
    ca: Ca,
    leaf: Vec<u8>,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "corecast-tls-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new();
        let leaf = ca.issue(&dir.join("cert.pem"), &dir.join("key.pem"));
        Pki { dir, ca, leaf }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn config(&self) -> Config {
        let mut c = config();
        c.wss_bind = "127.0.0.1:0".into();
        c.tls.cert = self.path("cert.pem");
        c.tls.key = self.path("key.pem");
        c
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wss_addr(gw: &Gateway) -> std::net::SocketAddr {
    gw.wss_addr().expect("wss listening")
}

/// Reads until the server closes the connection; panics if it stays open `secs`.
fn read_until_closed(s: &mut TcpStream, secs: u64) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => return got,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

#[test]
fn wss_clients_auth_join_get_pushes_and_heartbeats_beside_tcp_and_ws() {
    let pki = Pki::new("basic");
    let gw = start(pki.config());
    let room = "live://tls";
    let tok = |mid| token(mid, &format!("k{mid}"), room, &[1000]);
    let mut a = WssClient::auth(wss_addr(&gw), pki.ca.client_config(), &tok(1));
    let mut b = WssClient::auth(wss_addr(&gw), pki.ca.client_config(), &tok(2));
    assert_eq!(a.peer_cert(), pki.leaf, "the configured certificate serves");
    let mut tcp = Client::auth(&gw, Transport::Tcp, &tok(3));
    let mut ws = Client::auth(&gw, Transport::Ws, &tok(4));
    wait_authenticated(&gw, 4);
    push_room(&gw, room, 1000, &[b"one", b"two"]);
    for c in [&mut a, &mut b] {
        let got = c.recv_push().unwrap();
        let bodies: Vec<_> = got.iter().map(|f| (f.op, f.body.clone())).collect();
        assert_eq!(
            bodies,
            vec![(1000, b"one".to_vec()), (1000, b"two".to_vec())]
        );
    }
    for c in [&mut tcp, &mut ws] {
        let mut bodies = Vec::new();
        while bodies.len() < 2 {
            bodies.extend(c.recv_push().unwrap().into_iter().map(|f| f.body));
        }
        assert_eq!(bodies, vec![b"one".to_vec(), b"two".to_vec()]);
    }
    // Heartbeats, key pushes and a room change work over TLS as over WS.
    let hb = a.heartbeat(7);
    assert_eq!(hb.body.len(), 4, "online count");
    push_keys(&gw, &["k2"], 1000, b"to b");
    assert_eq!(b.recv_push().unwrap()[0].body, b"to b");
    b.send(1, op::CHANGE_ROOM, 3, b"live://other");
    let f = b.recv().unwrap();
    assert_eq!(
        (f.op, &f.body[..]),
        (op::CHANGE_ROOM_REPLY, &b"live://other"[..])
    );
    push_room(&gw, "live://other", 1000, &[b"moved"]);
    assert_eq!(b.recv_push().unwrap()[0].body, b"moved");
    assert_alive(&mut tcp);
    assert_alive(&mut ws);
    let total = gw.total();
    assert_eq!((total.tls_handshakes, total.tls_errors), (2, 0));
    // Close reasons are sealed like everything else: a bad token gets its reason.
    let mut bad = WssClient::connect(wss_addr(&gw), pki.ca.client_config()).unwrap();
    bad.send(1, op::AUTH, 1, b"not a token");
    match bad.recv() {
        Err(WssEnd::Closed(Some(reason))) => {
            assert!(reason.contains("not valid JSON"), "{reason}")
        }
        other => panic!("expected a close with a reason, got {other:?}"),
    }
    eventually(5, "the refused connection to go", || {
        gw.total().connections == 4
    });
    // A clean close from the client closes the connection, nothing counted as an error.
    a.ws.close(None).unwrap();
    while a.ws.read().is_ok() {}
    eventually(5, "the closed WSS connection to go", || {
        gw.total().connections == 3
    });
    assert_eq!(gw.total().tls_errors, 0);
}

#[test]
fn bad_tls_input_closes_only_its_connection_and_is_counted() {
    let pki = Pki::new("bad");
    let mut c = pki.config();
    // Long enough that a close below is the TLS error's, not the deadline's.
    c.limits.handshake_timeout_ms = 30_000;
    let gw = start(c);
    let addr = wss_addr(&gw);
    let mut wss = WssClient::auth(
        addr,
        pki.ca.client_config(),
        &token(1, "a", "live://x", &[]),
    );
    let mut tcp = Client::auth(&gw, Transport::Tcp, &token(2, "b", "live://x", &[]));
    let mut ws = Client::auth(&gw, Transport::Ws, &token(3, "c", "live://x", &[]));
    let started = Instant::now();

    // Plain HTTP (a WS upgrade) to the TLS port: a TLS alert (decode_error), no HTTP answer.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /sub HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let got = read_until_closed(&mut s, 10);
    assert_eq!(got.first(), Some(&0x15), "a TLS alert record: {got:?}");
    eventually(5, "1 TLS error", || gw.total().tls_errors == 1);

    // Random bytes.
    let mut s = TcpStream::connect(addr).unwrap();
    let noise: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = s.write_all(&noise);
    let got = read_until_closed(&mut s, 10);
    assert_eq!(got.first(), Some(&0x15), "a TLS alert record: {got:?}");
    eventually(5, "2 TLS errors", || gw.total().tls_errors == 2);

    // A client that does not trust the certificate: its alert closes the connection.
    let err = WssClient::connect(addr, untrusting_client_config())
        .err()
        .expect("the handshake fails");
    assert!(
        err.contains("UnknownIssuer") || err.contains("invalid peer certificate"),
        "{err}"
    );
    eventually(5, "3 TLS errors", || gw.total().tls_errors == 3);

    // A valid ClientHello and then a record of garbage after the handshake.
    let mut t = tls_connect(addr, pki.ca.client_config()).unwrap();
    t.sock.write_all(&[0x17, 0x03, 0x03, 0x00, 0x20]).unwrap();
    t.sock.write_all(&[0xab; 0x20]).unwrap();
    let got = read_until_closed(&mut t.sock, 10);
    // Session tickets, then the (encrypted) alert.
    t.conn.read_tls(&mut &got[..]).unwrap();
    let e = t.conn.process_new_packets().unwrap_err().to_string();
    assert!(e.contains("BadRecordMac"), "{e}");
    eventually(5, "4 TLS errors", || gw.total().tls_errors == 4);

    assert!(
        started.elapsed() < Duration::from_secs(25),
        "closed by the errors, not the deadline"
    );
    assert_eq!(gw.total().timeouts, 0);
    // Every other connection carries on.
    assert_alive(&mut tcp);
    assert_alive(&mut ws);
    wss.heartbeat(1);
    push_room(&gw, "live://x", 1000, &[b"still here"]);
    assert_eq!(wss.recv_push().unwrap()[0].body, b"still here");
    eventually(5, "only the three good connections left", || {
        gw.total().connections == 3
    });
    // The counter is in the metrics.
    let text = metrics(&gw);
    assert!(
        text.contains("# TYPE corecast_gateway_tls_errors_total counter"),
        "{text}"
    );
    assert!(
        text.contains("corecast_gateway_tls_reload_errors_total 0"),
        "{text}"
    );
}

fn metrics(gw: &Gateway) -> String {
    let mut s = TcpStream::connect(gw.metrics_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_stalled_tls_handshake_is_closed_at_the_handshake_timeout() {
    let pki = Pki::new("stall");
    let mut c = pki.config();
    c.limits.handshake_timeout_ms = 800;
    let gw = start(c);
    let addr = wss_addr(&gw);
    let mut bystander = WssClient::auth(
        addr,
        pki.ca.client_config(),
        &token(1, "a", "live://s", &[]),
    );
    // The ClientHello, then nothing.
    let mut hello = Vec::new();
    let mut client = rustls::ClientConnection::new(
        pki.ca.client_config(),
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    client.write_tls(&mut hello).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    s.write_all(&hello).unwrap();
    let got = read_until_closed(&mut s, 10);
    let took = t.elapsed();
    assert!(
        got.starts_with(&[0x16]),
        "the server's first flight came: {got:?}"
    );
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "closed at the deadline, after {took:?}"
    );
    eventually(5, "the timeout counted", || gw.total().timeouts == 1);
    assert_eq!(gw.total().tls_errors, 0);
    bystander.heartbeat(2);
}

#[test]
fn a_big_room_push_arrives_whole_and_in_order_over_tls() {
    let pki = Pki::new("big");
    let mut c = pki.config();
    c.limits.outbound_cap_bytes = 8 << 20;
    let gw = start(c);
    let addr = wss_addr(&gw);
    let room = "live://big";
    let mut wss = WssClient::auth(addr, pki.ca.client_config(), &token(1, "a", room, &[]));
    let mut ws = Client::auth(&gw, Transport::Ws, &token(2, "b", room, &[]));
    // 200 messages of 1,000 bytes (one ~200 KiB WebSocket message: 13 TLS records), then a
    // burst of small batches.
    let big: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            let mut b = format!("{i:05}").into_bytes();
            b.resize(1000, b'a' + (i % 26) as u8);
            b
        })
        .collect();
    let refs: Vec<&[u8]> = big.iter().map(|b| &b[..]).collect();
    push_room(&gw, room, 1000, &refs);
    let small: Vec<Vec<u8>> = (0..300u32).map(|i| format!("s{i}").into_bytes()).collect();
    for chunk in small.chunks(10) {
        let refs: Vec<&[u8]> = chunk.iter().map(|b| &b[..]).collect();
        push_room(&gw, room, 1000, &refs);
    }
    let expect: Vec<Vec<u8>> = big.iter().chain(&small).cloned().collect();
    let mut got = Vec::new();
    while got.len() < expect.len() {
        got.extend(wss.recv_push().unwrap().into_iter().map(|f| f.body));
    }
    assert!(got == expect, "the WSS client got every message, in order");
    let mut got = Vec::new();
    while got.len() < expect.len() {
        got.extend(ws.recv_push().unwrap().into_iter().map(|f| f.body));
    }
    assert!(got == expect, "the WS client too");
    let total = gw.total();
    assert_eq!((total.tls_errors, total.cap_disconnects), (0, 0));
}

#[test]
fn a_wss_connection_past_the_cap_is_closed_even_with_drop_oldest() {
    let pki = Pki::new("cap");
    let mut c = pki.config();
    c.limits.outbound_cap_bytes = 64 * 1024;
    c.limits.slow_consumer = "drop-oldest".into();
    c.engine.sndbuf = 4096;
    let gw = start(c);
    let room = "live://slow";
    let mut wss = WssClient::auth(
        wss_addr(&gw),
        pki.ca.client_config(),
        &token(1, "a", room, &[]),
    );
    let body = vec![b'x'; 8 * 1024];
    // The client reads nothing: the kernel buffers fill, then the gateway's queue.
    for _ in 0..400 {
        push_room(&gw, room, 1000, &[&body]);
        if gw.total().cap_disconnects > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    eventually(10, "the slow WSS client disconnected", || {
        gw.total().cap_disconnects == 1
    });
    assert_eq!(
        gw.total().cap_dropped_messages,
        0,
        "nothing dropped from a TLS stream"
    );
    // What was queued arrives intact, then the reason.
    let reason = loop {
        match wss.recv() {
            Ok(f) => assert_eq!(f.op, op::RAW),
            Err(WssEnd::Closed(r)) => break r,
            Err(WssEnd::Timeout) => panic!("not closed"),
        }
    };
    let reason = reason.expect("a close reason");
    assert!(reason.contains("slow consumer"), "{reason}");
}

#[test]
fn reload_swaps_the_certificate_for_new_connections_and_a_bad_one_keeps_the_old() {
    let pki = Pki::new("reload");
    let gw = start(pki.config());
    let addr = wss_addr(&gw);
    let room = "live://r";
    let mut old = WssClient::auth(addr, pki.ca.client_config(), &token(1, "a", room, &[]));
    assert_eq!(old.peer_cert(), pki.leaf);
    // New files in place, then the reload.
    let second = pki
        .ca
        .issue(&pki.dir.join("cert.pem"), &pki.dir.join("key.pem"));
    assert_ne!(second, pki.leaf);
    gw.reload_tls().expect("reload");
    let mut new = WssClient::auth(addr, pki.ca.client_config(), &token(2, "b", room, &[]));
    assert_eq!(
        new.peer_cert(),
        second,
        "a new connection sees the new certificate"
    );
    push_room(&gw, room, 1000, &[b"both"]);
    assert_eq!(
        old.recv_push().unwrap()[0].body,
        b"both",
        "the old connection carries on"
    );
    assert_eq!(new.recv_push().unwrap()[0].body, b"both");

    // A broken key file: an error naming it, counted; the second certificate keeps serving.
    std::fs::write(
        pki.dir.join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = gw.reload_tls().unwrap_err().to_string();
    assert!(e.contains("tls.key") && e.contains("key.pem"), "{e}");
    // A key that is not the certificate's.
    let other = pki.dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    pki.ca.issue(&other.join("c.pem"), &pki.dir.join("key.pem"));
    let e = gw.reload_tls().unwrap_err().to_string();
    assert!(e.contains("does not go with"), "{e}");
    assert_eq!(gw.tls_reload_errors(), 2);
    let third = WssClient::auth(addr, pki.ca.client_config(), &token(3, "c", room, &[]));
    assert_eq!(
        third.peer_cert(),
        second,
        "the last good certificate still serves"
    );
    assert!(metrics(&gw).contains("corecast_gateway_tls_reload_errors_total 2"));
    old.heartbeat(9);
}

#[test]
fn start_fails_clearly_on_a_missing_or_bad_certificate() {
    let pki = Pki::new("start");
    let mut c = pki.config();
    c.tls.key = pki.path("missing-key.pem");
    let e = Gateway::start(c).err().expect("no start").to_string();
    assert!(
        e.contains("tls.key") && e.contains("missing-key.pem") && e.contains("No such file"),
        "{e}"
    );

    std::fs::write(pki.dir.join("garbage.pem"), "hello").unwrap();
    let mut c = pki.config();
    c.tls.cert = pki.path("garbage.pem");
    let e = Gateway::start(c).err().expect("no start").to_string();
    assert!(
        e.contains("tls.cert") && e.contains("no CERTIFICATE"),
        "{e}"
    );

    let mut c = pki.config();
    c.tls.key = pki.path("cert.pem");
    let e = Gateway::start(c).err().expect("no start").to_string();
    assert!(e.contains("tls.key") && e.contains("no PRIVATE KEY"), "{e}");

    // WSS off: nothing to reload.
    let gw = start(config());
    assert!(gw.wss_addr().is_none());
    assert!(
        gw.reload_tls()
            .unwrap_err()
            .to_string()
            .contains("wss_bind")
    );
}

#[test]
fn a_refusal_under_a_limit_is_answered_over_tls() {
    let pki = Pki::new("refusal");
    let mut c = pki.config();
    c.limits.max_connections = 1;
    let gw = start(c);
    let addr = wss_addr(&gw);
    let mut first = WssClient::auth(addr, pki.ca.client_config(), JS_TOKEN);
    // The second completes its TLS handshake, then its upgrade is answered with HTTP 503.
    let err = WssClient::connect(addr, pki.ca.client_config())
        .err()
        .expect("refused");
    assert!(err.contains("503"), "{err}");
    eventually(5, "the refusal counted", || {
        gw.total().refused_gateway_full == 1
    });
    assert_eq!(gw.total().tls_errors, 0, "a refusal is not a TLS error");
    assert_eq!(first.heartbeat(3).op, op::HEARTBEAT_REPLY);
}
