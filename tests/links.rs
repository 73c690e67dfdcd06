//! Gateways and dispatchers joined by real links (in-process libraries, real sockets): key
//! pushes reach the gateway holding each key, a cut link buffers pushes and delivers them after
//! the gateway re-dials (past its bound the oldest are dropped and counted), and a gateway that
//! goes away is removed with its sessions.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loadtest::listen::ListenArgs;
use support::{bodies, gateway, listen, post_ok, wait_until};

fn dispatcher(grace_ms: u64) -> dispatcher::Dispatcher {
    let mut cfg = dispatcher::Config::loopback_ephemeral();
    cfg.links.relink_grace_ms = grace_ms;
    cfg.links.renew_timeout_ms = 3_000;
    dispatcher::Dispatcher::start(cfg).unwrap()
}

fn client(gw: &gateway::Gateway, room: &str, key: &str, count: u64) -> ListenArgs {
    support::tcp_client(gw.tcp_addr(), room, 0, key, Some(count), 20)
}

fn conns(d: &dispatcher::Dispatcher) -> u64 {
    d.gateways().iter().map(|g| g.conn_count).sum()
}

#[test]
fn key_pushes_reach_the_gateway_holding_each_key_and_rooms_span_gateways() {
    let d = dispatcher(5_000);
    let g1 = gateway("g1", &[d.link_addr()]);
    let g2 = gateway("g2", &[d.link_addr()]);
    let c1 = listen(client(&g1, "live://7", "k1", 3));
    let c2 = listen(client(&g2, "live://7", "k2", 3));
    wait_until("2 gateways with 1 connection each", || {
        d.gateways().len() == 2 && d.gateways().iter().all(|g| g.conn_count == 1)
    });
    post_ok(&d, "/goim/push/keys?operation=1000&keys=k1", b"only-1");
    post_ok(&d, "/goim/push/keys?operation=1000&keys=k2", b"only-2");
    post_ok(
        &d,
        "/goim/push/keys?operation=1000&keys=k1&keys=k2",
        b"both",
    );
    std::thread::sleep(Duration::from_millis(100));
    post_ok(
        &d,
        "/goim/push/room?operation=1000&type=live&room=7",
        b"room",
    );
    let (c1, c2) = (c1.join().unwrap(), c2.join().unwrap());
    assert_eq!(bodies(&c1), ["only-1", "both", "room"]);
    assert_eq!(bodies(&c2), ["only-2", "both", "room"]);
    g1.stop();
    g2.stop();
    d.stop();
}

/// A TCP relay the test can cut, standing between a gateway and its dispatcher.
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, l) = (open.clone(), live.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                if !o.load(Ordering::SeqCst) {
                    // Refused while cut: the gateway keeps re-dialling.
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(to) else {
                    continue;
                };
                let mut keep = l.lock().unwrap();
                keep.push(inbound.try_clone().unwrap());
                keep.push(outbound.try_clone().unwrap());
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr, open, live }
    }

    /// Drops every relayed connection and refuses new ones until `restore`.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[test]
fn pushes_made_while_a_link_is_cut_arrive_after_the_redial() {
    let d = dispatcher(30_000);
    let relay = Relay::start(d.link_addr());
    let g = gateway("g-relay", &[relay.addr]);
    let c = listen(client(&g, "live://1", "k", 10));
    wait_until("the connection to be reported", || conns(&d) == 1);
    post_ok(
        &d,
        "/goim/push/room?operation=1000&type=live&room=1",
        b"before",
    );
    relay.cut();
    wait_until("the dispatcher to see the link down", || {
        d.gateways().iter().all(|g| g.offline)
    });
    for i in 0..8 {
        post_ok(
            &d,
            "/goim/push/room?operation=1000&type=live&room=1",
            format!("cut-{i}").as_bytes(),
        );
    }
    post_ok(
        &d,
        "/goim/push/keys?operation=1000&keys=k",
        b"key-while-cut",
    );
    std::thread::sleep(Duration::from_millis(300));
    relay.restore();
    let got = bodies(&c.join().unwrap());
    let mut want = vec!["before".to_string()];
    want.extend((0..8).map(|i| format!("cut-{i}")));
    want.push("key-while-cut".into());
    // Room messages keep their order; the key push may overtake a room batch.
    let rooms: Vec<&String> = got.iter().filter(|b| *b != "key-while-cut").collect();
    assert_eq!(rooms, want[..9].iter().collect::<Vec<_>>(), "{got:?}");
    assert!(got.contains(&"key-while-cut".to_string()), "{got:?}");
    assert_eq!(
        d.metrics().gateway_buffer_dropped.load(Ordering::Relaxed),
        0
    );
    g.stop();
    d.stop();
}

#[test]
fn a_cut_link_holds_pushes_within_its_bound_and_counts_the_oldest_it_drops() {
    let mut cfg = dispatcher::Config::loopback_ephemeral();
    cfg.links.relink_grace_ms = 30_000;
    cfg.links.renew_timeout_ms = 30_000;
    cfg.links.buffer_messages = 5;
    let d = dispatcher::Dispatcher::start(cfg).unwrap();
    let relay = Relay::start(d.link_addr());
    let g = gateway("g-bounded", &[relay.addr]);
    let c = listen(client(&g, "live://1", "kb", 6));
    wait_until("the connection to be reported", || conns(&d) == 1);
    post_ok(&d, "/goim/push/keys?operation=1000&keys=kb", b"before");
    wait_until("the first push acknowledged", || {
        d.metrics().gateway_acks.load(Ordering::Relaxed) >= 1
    });
    relay.cut();
    wait_until("the dispatcher to see the link down", || {
        d.gateways().iter().all(|g| g.offline)
    });
    for i in 0..12 {
        post_ok(
            &d,
            "/goim/push/keys?operation=1000&keys=kb",
            format!("cut-{i}").as_bytes(),
        );
    }
    wait_until("7 pushes dropped past the bound of 5", || {
        d.metrics().gateway_buffer_dropped.load(Ordering::Relaxed) == 7
    });
    relay.restore();
    // The newest five arrive, in order; the seven oldest were dropped and counted.
    let got = bodies(&c.join().unwrap());
    let mut want = vec!["before".to_string()];
    want.extend((7..12).map(|i| format!("cut-{i}")));
    assert_eq!(got, want);
    assert_eq!(
        d.metrics().gateway_buffer_dropped.load(Ordering::Relaxed),
        7
    );
    g.stop();
    d.stop();
}

#[test]
fn a_gateway_that_goes_away_is_removed_with_its_sessions() {
    let d = dispatcher(300);
    let g = gateway("g-gone", &[d.link_addr()]);
    let c = listen(client(&g, "live://1", "gone-key", 1));
    wait_until("the connection to be reported", || conns(&d) == 1);
    g.stop();
    let _ = c.join();
    wait_until("the gateway to be removed", || d.gateways().is_empty());
    assert_eq!(d.metrics().gateways_removed.load(Ordering::Relaxed), 1);
    // Its key no longer routes anywhere: the push is accepted and makes no queue message.
    let before = d.metrics().queue_produced.load(Ordering::Relaxed);
    post_ok(&d, "/goim/push/keys?operation=1000&keys=gone-key", b"x");
    assert_eq!(d.metrics().queue_produced.load(Ordering::Relaxed), before);
    d.stop();
}

/// A raw goim client: authenticates into `room` and returns the stream.
fn raw_client(gw: &gateway::Gateway, room: &str) -> TcpStream {
    let mut s = TcpStream::connect(gw.tcp_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let token = format!(
        "{{\"mid\":0,\"key\":\"\",\"room_id\":\"{room}\",\"platform\":\"t\",\"accepts\":[]}}"
    );
    let mut out = Vec::new();
    protocol::frame::encode(&mut out, 1, protocol::op::AUTH, 1, token.as_bytes());
    s.write_all(&out).unwrap();
    let (op, _) = read_frame(&mut s);
    assert_eq!(op, protocol::op::AUTH_REPLY);
    s
}

fn read_frame(s: &mut TcpStream) -> (i32, Vec<u8>) {
    let mut head = [0u8; protocol::frame::HEADER_LEN];
    s.read_exact(&mut head).unwrap();
    let h = protocol::frame::decode_header(&head, 1 << 20).unwrap();
    let mut body = vec![0u8; h.body_len()];
    s.read_exact(&mut body).unwrap();
    (h.op, body)
}

/// The online count a heartbeat reply (op 3) carries.
fn heartbeat(s: &mut TcpStream) -> i32 {
    let mut out = Vec::new();
    protocol::frame::encode(&mut out, 1, protocol::op::HEARTBEAT, 2, b"");
    s.write_all(&out).unwrap();
    loop {
        let (op, body) = read_frame(s);
        if op == protocol::op::HEARTBEAT_REPLY {
            return i32::from_be_bytes(body[..4].try_into().unwrap());
        }
    }
}

#[test]
fn heartbeat_replies_carry_the_cluster_wide_room_count() {
    let d = dispatcher(5_000);
    let g1 = gateway("hb-g1", &[d.link_addr()]);
    let g2 = gateway("hb-g2", &[d.link_addr()]);
    let mut on_g1 = raw_client(&g1, "live://5");
    let _others: Vec<TcpStream> = (0..2).map(|_| raw_client(&g2, "live://5")).collect();
    // Before any report, a gateway answers with its own count; after the renewals, with the
    // dispatcher's total over both gateways (goim's RenewOnline answer).
    wait_until("the cluster-wide count in heartbeat replies", || {
        heartbeat(&mut on_g1) == 3
    });
    g1.stop();
    g2.stop();
    d.stop();
}

#[test]
fn stopping_a_dispatcher_first_delivers_what_it_accepted() {
    let d = dispatcher(30_000);
    let relay = Relay::start(d.link_addr());
    let g = gateway("g-stop", &[relay.addr]);
    let c = listen(client(&g, "live://1", "k", 3));
    wait_until("the connection to be reported", || conns(&d) == 1);
    relay.cut();
    wait_until("the dispatcher to see the link down", || {
        d.gateways().iter().all(|g| g.offline)
    });
    for i in 0..3 {
        post_ok(
            &d,
            "/goim/push/room?operation=1000&type=live&room=1",
            format!("m{i}").as_bytes(),
        );
    }
    // The embedded queue holds them for a gateway that is away: stopping waits for its acks.
    let stopping = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        d.stop_within(Duration::from_secs(20));
        t.elapsed()
    });
    std::thread::sleep(Duration::from_millis(500));
    relay.restore();
    assert_eq!(bodies(&c.join().unwrap()), ["m0", "m1", "m2"]);
    let took = stopping.join().unwrap();
    assert!(
        took < Duration::from_secs(20),
        "the stop waited for nothing: {took:?}"
    );
    g.stop();
}
