//! The link secret, seen from the dispatcher (`link_secrets`), with fake gateways speaking the
//! link protocol over real sockets: a Register without a proof, with a proof of a wrong secret,
//! with a clock outside `links.auth_window_ms`, or replaying an earlier Register, is refused:
//! the gateway receives `Refused` naming the cause, the link closes, `links_refused` counts it
//! and the gateway is not listed. A right proof (either of two secrets) registers; a
//! dispatcher without secrets accepts a Register with or without a proof. Silent gateways: a
//! gateway that announced its renew period and stops renewing leaves the node list within one
//! more period. (Real gateways against a dispatcher with secrets: `tests/link_secret.rs` at
//! the root.)

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use dispatcher::{Config, Dispatcher};
use protocol::link::{self, Body, LinkMessage, Register, Renew};

fn start(secrets: &[&str]) -> Dispatcher {
    let mut cfg = Config::loopback_ephemeral();
    cfg.link_secrets = secrets.iter().map(|s| s.to_string()).collect();
    cfg.links.auth_window_ms = 60_000;
    Dispatcher::start(cfg).expect("dispatcher starts")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn register(id: &str) -> Register {
    Register {
        gateway_id: id.into(),
        addrs: vec!["127.0.0.1:3101".into()],
        weight: 10,
        ..Default::default()
    }
}

fn proved(id: &str, secret: &str, at_ms: u64, nonce: u8) -> Register {
    let mut r = register(id);
    r.prove(secret.as_bytes(), at_ms, [nonce; 16]);
    r
}

/// A fake gateway: dials, sends `reg`, and reads what comes back.
struct Fake {
    s: TcpStream,
    buf: BytesMut,
}

impl Fake {
    fn link(d: &Dispatcher, reg: Register) -> Fake {
        let mut s = TcpStream::connect(d.link_addr()).unwrap();
        let mut out = BytesMut::new();
        link::encode(&LinkMessage::from(Body::Register(reg)), &mut out);
        s.write_all(&out).unwrap();
        Fake {
            s,
            buf: BytesMut::new(),
        }
    }

    fn send(&mut self, body: Body) {
        let mut out = BytesMut::new();
        link::encode(&LinkMessage::from(body), &mut out);
        self.s.write_all(&out).unwrap();
    }

    /// The next message, or None when the link closes (or 5 s pass).
    fn next(&mut self) -> Option<Body> {
        self.s
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        loop {
            if let Some(b) = link::decode(&mut self.buf, link::MAX_LINK_MESSAGE).unwrap() {
                return Some(b);
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// Expects `Refused` naming `needle`, then the close.
    fn expect_refused(mut self, needle: &str) {
        match self.next() {
            Some(Body::Refused(r)) => assert!(
                r.reason.contains(needle),
                "reason {:?} should name {needle:?}",
                r.reason
            ),
            other => panic!("expected Refused({needle}), got {other:?}"),
        }
        assert!(self.next().is_none(), "the link closes after Refused");
    }
}

fn listed(d: &Dispatcher, id: &str) -> bool {
    d.gateways().iter().any(|g| g.id == id)
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `/goim/nodes/instances` as JSON (to check the refused gateway is not there).
fn instances(d: &Dispatcher) -> serde_json::Value {
    let mut s = TcpStream::connect(d.http_addr()).unwrap();
    write!(
        s,
        "GET /goim/nodes/instances HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap()
}

#[test]
fn a_missing_or_wrong_proof_is_refused_with_its_reason() {
    let d = start(&["right"]);
    Fake::link(&d, register("g-none")).expect_refused("no link proof");
    Fake::link(&d, proved("g-wrong", "wrong", now_ms(), 1)).expect_refused("wrong link proof");
    // A proof made for another gateway id does not carry over.
    let mut stolen = proved("g-other", "right", now_ms(), 2);
    stolen.gateway_id = "g-thief".into();
    Fake::link(&d, stolen).expect_refused("wrong link proof");
    assert_eq!(d.metrics().links_refused.load(Relaxed), 3);
    assert_eq!(
        d.metrics().links_rejected.load(Relaxed),
        0,
        "refusals are not protocol errors"
    );
    assert!(d.gateways().is_empty(), "{:?}", d.gateways());
    assert_eq!(instances(&d)["data"], serde_json::json!([]));
    d.stop();
}

#[test]
fn a_stale_clock_or_a_replayed_register_is_refused() {
    let d = start(&["right"]);
    Fake::link(&d, proved("g-late", "right", now_ms() - 120_000, 1))
        .expect_refused("stale link proof");
    let reg = proved("g-replay", "right", now_ms(), 7);
    let mut first = Fake::link(&d, reg.clone());
    eventually("the first Register links", || listed(&d, "g-replay"));
    first.send(Body::Renew(Renew::default()));
    Fake::link(&d, reg).expect_refused("replayed link proof");
    assert_eq!(d.metrics().links_refused.load(Relaxed), 2);
    drop(first);
    d.stop();
}

#[test]
fn a_right_proof_links_with_either_of_two_secrets() {
    let d = start(&["old", "new"]);
    let _a = Fake::link(&d, proved("g-old", "old", now_ms(), 1));
    let _b = Fake::link(&d, proved("g-new", "new", now_ms(), 2));
    eventually("both gateways listed", || {
        listed(&d, "g-old") && listed(&d, "g-new")
    });
    assert_eq!(d.metrics().links_refused.load(Relaxed), 0);
    assert_eq!(d.metrics().links_registered.load(Relaxed), 2);
    d.stop();
}

#[test]
fn a_dispatcher_without_secrets_accepts_any_gateway() {
    let d = start(&[]);
    let _a = Fake::link(&d, register("g-plain"));
    let _b = Fake::link(&d, proved("g-proved", "whatever", 1, 3));
    eventually("both gateways listed", || {
        listed(&d, "g-plain") && listed(&d, "g-proved")
    });
    assert_eq!(d.metrics().links_refused.load(Relaxed), 0);
    d.stop();
}

#[test]
fn a_gateway_that_stops_renewing_goes_offline_within_one_more_period() {
    let d = start(&[]);
    let mut reg = register("g-silent");
    reg.renew_ms = 300;
    let mut g = Fake::link(&d, reg);
    eventually("listed online", || {
        d.gateways()
            .iter()
            .any(|g| g.id == "g-silent" && !g.offline)
    });
    // Renew on time for a while: it stays online.
    let mut last = Instant::now();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(150));
        g.send(Body::Renew(Renew {
            conn_count: 5,
            ..Default::default()
        }));
        last = Instant::now();
        assert!(
            d.gateways()
                .iter()
                .any(|g| g.id == "g-silent" && !g.offline),
            "renewing on time keeps it online"
        );
    }
    // Silence, with the link still open (a hung gateway): offline once a renewal is a full
    // period late (600 ms after the last one), long before links.renew_timeout_ms (15 s).
    eventually("shown offline", || {
        d.gateways().iter().any(|g| g.id == "g-silent" && g.offline)
    });
    let took = last.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(1_500),
        "offline after {took:?}"
    );
    // Renewing again brings it back.
    g.send(Body::Renew(Renew::default()));
    eventually("online again", || {
        d.gateways()
            .iter()
            .any(|g| g.id == "g-silent" && !g.offline)
    });
    d.stop();
}
