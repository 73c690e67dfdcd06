//! Admission limits: connections per gateway, per source address, connect rate per source
//! address, the memory ceiling, and WebSocket allowed origins. Each refusal reaches the client
//! as a clear reason (TCP: a disconnect frame; WebSocket: an HTTP status with the reason), is
//! counted by reason, and leaves every other connection alone.

mod support;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use protocol::op;
use support::*;
use tungstenite::client::IntoClientRequest;

/// A TCP connection from `source` (an address on 127.0.0.0/8).
fn tcp_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A goim TCP client from `source` that authenticates; Ok(client) on op 8, Err(reason) when
/// the gateway closes with one.
fn tcp_auth_from(gw: &gateway::Gateway, source: Ipv4Addr) -> Result<Client, String> {
    let mut c = Client::Tcp {
        stream: tcp_from(source, gw.tcp_addr()),
        buf: Vec::new(),
    };
    c.send(1, op::AUTH, 1, JS_TOKEN.as_bytes());
    match c.recv() {
        Ok(f) if f.op == op::AUTH_REPLY => Ok(c),
        Ok(f) if f.op == op::DISCONNECT_REPLY => {
            let reason = String::from_utf8_lossy(&f.body).into_owned();
            // Then the connection ends.
            assert!(c.expect_closed().is_none_or(|r| r == reason));
            Err(reason)
        }
        other => panic!("neither an auth reply nor a reason: {other:?}"),
    }
}

/// A WebSocket upgrade from `source` with an optional Origin: Ok on 101, Err((status, body)).
fn ws_from(
    gw: &gateway::Gateway,
    source: Ipv4Addr,
    origin: Option<&str>,
) -> Result<Client, (u16, String)> {
    let stream = tcp_from(source, gw.ws_addr());
    let mut req = format!("ws://{}/sub", gw.ws_addr())
        .into_client_request()
        .unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => Ok(Client::Ws { ws }),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("neither an upgrade nor an HTTP refusal: {e}"),
    }
}

fn heartbeat_ok(c: &mut Client) {
    c.send(1, op::HEARTBEAT, 9, b"");
    assert_eq!(c.recv().unwrap().op, op::HEARTBEAT_REPLY);
}

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[test]
fn a_full_gateway_refuses_with_a_reason_and_takes_connections_again_when_one_closes() {
    let mut c = config();
    c.limits.max_connections = 3;
    let gw = start(c);
    let mut held: Vec<Client> = (0..3).map(|_| tcp_auth_from(&gw, A).unwrap()).collect();
    let reason = tcp_auth_from(&gw, B).err().expect("the 4th is refused");
    assert!(
        reason.contains("gateway full") && reason.contains("limits.max_connections"),
        "{reason}"
    );
    let (status, body) = ws_from(&gw, B, None).err().expect("refused over WS too");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("gateway full"), "{body}");
    eventually(5, "2 refusals counted", || {
        gw.total().refused_gateway_full == 2
    });
    for c in &mut held {
        heartbeat_ok(c);
    }
    // One leaves; its place is free once its socket is closed.
    drop(held.pop());
    eventually(5, "a new connection is admitted", || {
        tcp_auth_from(&gw, B).is_ok()
    });
}

#[test]
fn per_address_cap_refuses_that_address_only() {
    let mut c = config();
    c.limits.max_connections_per_ip = 2;
    let gw = start(c);
    let mut a1 = tcp_auth_from(&gw, A).unwrap();
    let _a2 = ws_from(&gw, A, None).expect("2nd from A");
    let reason = tcp_auth_from(&gw, A).err().expect("3rd from A refused");
    assert!(
        reason.contains("too many connections from your address") && reason.contains("at most 2"),
        "{reason}"
    );
    let (status, body) = ws_from(&gw, A, None).err().expect("refused over WS too");
    assert_eq!(status, 429, "{body}");
    // B is not affected.
    let _b = tcp_auth_from(&gw, B).expect("B admitted");
    heartbeat_ok(&mut a1);
    assert_eq!(gw.total().refused_ip_limit, 2);
    let m = scrape(&gw);
    assert!(m.contains("corecast_gateway_source_ips 2\n"), "{m}");
    assert!(
        m.contains("reason=\"ip_limit\"} 1\n") || m.contains("reason=\"ip_limit\"} 2\n"),
        "{m}"
    );
}

#[test]
fn connect_rate_per_address_is_a_bucket_refused_connects_do_not_spend() {
    let mut c = config();
    c.limits.connect_rate_per_ip = 1;
    c.limits.connect_burst_per_ip = 3;
    let gw = start(c);
    let source = Ipv4Addr::new(127, 0, 0, 3);
    let started = Instant::now();
    let outcomes: Vec<Result<Client, String>> =
        (0..6).map(|_| tcp_auth_from(&gw, source)).collect();
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = outcomes.iter().filter(|o| o.is_ok()).count();
    // 3 at once, then one per second of the time the six connects took.
    assert!(admitted >= 3, "{admitted} admitted");
    assert!(
        admitted as f64 <= 3.0 + elapsed.floor(),
        "{admitted} admitted in {elapsed:.2} s"
    );
    let refused: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(refused.len(), 6 - admitted);
    for r in &refused {
        assert!(
            r.contains("connecting too fast") && r.contains("limits.connect_rate_per_ip"),
            "{r}"
        );
    }
    // Another address has its own bucket.
    tcp_auth_from(&gw, Ipv4Addr::new(127, 0, 0, 4)).expect("another address");
    assert_eq!(gw.total().refused_ip_rate, refused.len() as u64);
}

#[test]
fn over_the_memory_ceiling_the_gateway_refuses_and_says_so_in_metrics() {
    let mut c = config();
    // Any process is over 1 MiB: the first check (within a second) trips the ceiling.
    c.limits.max_memory_mb = 1;
    let gw = start(c);
    eventually(5, "over the ceiling", || {
        scrape(&gw).contains("corecast_gateway_over_memory 1\n")
    });
    let m = scrape(&gw);
    assert!(m.contains("corecast_gateway_accepting 0\n"), "{m}");
    let reason = tcp_auth_from(&gw, A).err().expect("refused");
    assert!(reason.contains("memory ceiling of 1 MiB"), "{reason}");
    let (status, _) = ws_from(&gw, A, None).err().expect("refused over WS");
    assert_eq!(status, 503);
    assert_eq!(gw.total().refused_memory, 2);
    let rss: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("corecast_gateway_resident_bytes "))
        .and_then(|v| v.parse().ok())
        .expect("resident bytes");
    assert!(rss > 1 << 20, "{rss}");
}

#[test]
fn allowed_origins_refuse_other_browser_pages_with_403() {
    let mut c = config();
    c.auth.allowed_origins = vec![
        "https://live.example.com".into(),
        "https://*.example.org".into(),
    ];
    let gw = start(c);
    for ok in [
        Some("https://live.example.com"),
        Some("HTTPS://LIVE.EXAMPLE.COM"),
        Some("https://a.b.example.org"),
        None,
    ] {
        let mut c = ws_from(&gw, A, ok).ok().unwrap_or_else(|| panic!("{ok:?}"));
        c.send(1, op::AUTH, 1, JS_TOKEN.as_bytes());
        assert_eq!(c.recv().unwrap().op, op::AUTH_REPLY, "{ok:?}");
    }
    for bad in [
        "https://evil.example.com",
        "http://live.example.com",
        "https://example.org",
        "https://example.org.evil.net",
        "null",
    ] {
        let (status, body) = ws_from(&gw, A, Some(bad)).err().expect(bad);
        assert_eq!(status, 403, "{bad}: {body}");
        assert!(body.contains("is not allowed"), "{body}");
    }
    // Shards publish their counters at the end of a loop turn.
    eventually(5, "5 origin refusals counted", || {
        gw.total().refused_origin == 5
    });
}

fn scrape(gw: &gateway::Gateway) -> String {
    let mut s = TcpStream::connect(gw.metrics_addr().expect("metrics")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
