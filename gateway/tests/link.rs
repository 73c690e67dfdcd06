//! The internal link: the gateway dials a dispatcher (played here by the test), registers,
//! reports sessions and upstream messages, takes pushes and acknowledges them, and dials again
//! after the link fails, without disturbing its clients.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use protocol::batch::BatchBuilder;
use protocol::link::{self, Body, LinkMessage, RoomBatch};
use protocol::op;
use support::*;

struct FakeDispatcher {
    stream: TcpStream,
    buf: BytesMut,
}

impl FakeDispatcher {
    fn accept(l: &TcpListener) -> FakeDispatcher {
        l.set_nonblocking(true).unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if std::time::Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("the gateway did not dial the dispatcher: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        FakeDispatcher {
            stream,
            buf: BytesMut::new(),
        }
    }

    fn next(&mut self) -> Option<Body> {
        loop {
            if let Some(b) = link::decode(&mut self.buf, link::MAX_LINK_MESSAGE).unwrap() {
                return Some(b);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next message that is not periodic (Renew, RoomCounts), within 10 s: periodic ones
    /// alone would keep the read timeout from ever firing.
    fn next_event(&mut self) -> Body {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                std::time::Instant::now() < end,
                "no event from the gateway within 10 s"
            );
            match self.next().expect("link open") {
                Body::Renew(_) | Body::RoomCounts(_) => continue,
                b => return b,
            }
        }
    }

    /// Waits for a RoomCounts report that satisfies `f` (within 10 s).
    fn room_counts_until(
        &mut self,
        mut f: impl FnMut(&std::collections::HashMap<String, i32>) -> bool,
    ) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                std::time::Instant::now() < end,
                "no matching room counts within 10 s"
            );
            if let Body::RoomCounts(rc) = self.next().expect("link open")
                && f(&rc.counts)
            {
                return;
            }
        }
    }

    fn send(&mut self, body: Body) {
        let mut out = BytesMut::new();
        link::encode(&LinkMessage::from(body), &mut out);
        self.stream.write_all(&out).unwrap();
    }
}

fn linked_gateway() -> (gateway::Gateway, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config();
    c.id = "gw-test".into();
    c.public_addrs = vec!["10.0.0.1".into()];
    c.dispatchers = vec![l.local_addr().unwrap().to_string()];
    c.renew_ms = 200;
    (start(c), l)
}

#[test]
fn registers_reports_sessions_and_upstream_and_acks_pushes() {
    let (gw, l) = linked_gateway();
    let mut d = FakeDispatcher::accept(&l);
    let Body::Register(r) = d.next_event() else {
        panic!("Register first")
    };
    assert_eq!(
        (r.gateway_id.as_str(), r.addrs.as_slice(), r.weight),
        ("gw-test", &["10.0.0.1".to_string()][..], 10)
    );
    // The first Renew follows the snapshot of sessions sent on registering: a client that
    // authenticated before it would be announced (without rooms) by the snapshot too.
    while !matches!(d.next().expect("link open"), Body::Renew(_)) {}
    let mut c = Client::auth(&gw, Transport::Ws, &token(77, "k77", "live://link", &[]));
    let Body::Session(s) = d.next_event() else {
        panic!("Session")
    };
    assert!(s.online && s.mid == 77 && s.key == "k77" && s.rooms == ["live://link"]);
    let s_online_id = s.conn_id;
    c.send(1, op::SEND_MSG, 3, b"up");
    assert_eq!(c.recv().unwrap().op, op::SEND_MSG);
    let Body::Upstream(u) = d.next_event() else {
        panic!("Upstream")
    };
    assert_eq!(
        (u.mid, u.op, u.seq, u.body.as_slice()),
        (77, op::SEND_MSG, 3, &b"up"[..])
    );
    let mut b = BatchBuilder::default();
    b.push(1000, b"via link");
    d.send(Body::RoomBatch(RoomBatch {
        id: 41,
        room: "live://link".into(),
        frames: b.inner_frames().to_vec(),
    }));
    assert_eq!(c.recv_push().unwrap()[0].body, b"via link");
    let Body::Ack(a) = d.next_event() else {
        panic!("Ack")
    };
    assert_eq!(a.id, 41);
    drop(c);
    let Body::Session(s) = d.next_event() else {
        panic!("Session offline")
    };
    assert!(!s.online && s.key == "k77");
    assert_eq!(
        s.conn_id, s_online_id,
        "offline names the connection online named"
    );
}

#[test]
fn renewals_report_room_online_counts() {
    let (gw, l) = linked_gateway();
    let mut d = FakeDispatcher::accept(&l);
    assert!(matches!(d.next_event(), Body::Register(_)));
    let clients: Vec<Client> = (0..3)
        .map(|i| {
            let room = if i < 2 { "live://two" } else { "live://one" };
            Client::auth(&gw, Transport::Tcp, &token(i, "", room, &[]))
        })
        .collect();
    d.room_counts_until(|c| c.get("live://two") == Some(&2) && c.get("live://one") == Some(&1));
    drop(clients);
    d.room_counts_until(|c| c.is_empty());
}

#[test]
fn a_link_sending_garbage_is_closed_and_dialled_again_while_clients_carry_on() {
    let (gw, l) = linked_gateway();
    let mut c = Client::auth(&gw, Transport::Tcp, &token(1, "", "live://g", &[]));
    let mut d = FakeDispatcher::accept(&l);
    assert!(matches!(d.next_event(), Body::Register(_)));
    d.stream
        .write_all(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    while d.next().is_some() {}
    // Dialled again, registered again.
    let mut d2 = FakeDispatcher::accept(&l);
    assert!(matches!(d2.next_event(), Body::Register(_)));
    // A message only gateways send is refused the same way.
    d2.send(Body::Ack(protocol::link::Ack { id: 1 }));
    while d2.next().is_some() {}
    let mut d3 = FakeDispatcher::accept(&l);
    assert!(matches!(d3.next_event(), Body::Register(_)));
    assert_alive(&mut c);
    let mut b = BatchBuilder::default();
    b.push(1000, b"after");
    d3.send(Body::RoomBatch(RoomBatch {
        id: 0,
        room: "live://g".into(),
        frames: b.inner_frames().to_vec(),
    }));
    assert_eq!(c.recv_push().unwrap()[0].body, b"after");
}

#[test]
fn up_messages_no_dispatcher_takes_are_counted_not_lost_silently() {
    // A dispatcher that never answers: the link is never up.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = config();
    c.dispatchers = vec![closed.to_string()];
    let gw = start(c);
    let mut client = Client::auth(&gw, Transport::Tcp, &token(5, "", "live://x", &[]));
    client.send(1, protocol::op::SEND_MSG, 1, b"up");
    assert_eq!(client.recv().unwrap().op, protocol::op::SEND_MSG);
    // The online event and the upstream message both reached no link.
    eventually(5, "2 up-messages counted as dropped", || {
        gw.uplink_dropped() == 2
    });
}
