//! Client ops after auth: heartbeat with the room's online count, ChangeRoom, Sub/Unsub, the
//! echo of other ops (forwarded upstream), and the heartbeat deadline.

mod support;

use std::time::Duration;

use protocol::link::Body;
use protocol::op;
use support::*;

fn online(f: &Frame) -> i32 {
    assert_eq!(f.op, op::HEARTBEAT_REPLY);
    i32::from_be_bytes(f.body[..4].try_into().unwrap())
}

#[test]
fn heartbeat_reply_carries_the_room_online_count() {
    let gw = start(config());
    for t in BOTH {
        let mut a = Client::auth(&gw, t, &token(1, "", "live://hb", &[]));
        a.send(1, op::HEARTBEAT, 7, b"");
        let f = a.recv().unwrap();
        assert_eq!((f.seq, f.body.len()), (7, 4));
        assert_eq!(online(&f), 1, "alone in the room");
        let mut b = Client::auth(&gw, t, &token(2, "", "live://hb", &[]));
        b.send(1, op::HEARTBEAT, 8, b"");
        assert_eq!(
            online(&b.recv().unwrap()),
            2,
            "two in the room, whatever their shards"
        );
        let mut roomless = Client::auth(&gw, t, &token(3, "", "", &[]));
        roomless.send(1, op::HEARTBEAT, 9, b"");
        assert_eq!(online(&roomless.recv().unwrap()), 0, "no room");
        drop(b);
        eventually(5, "the count to drop", || {
            a.send(1, op::HEARTBEAT, 10, b"");
            online(&a.recv().unwrap()) == 1
        });
        drop(a);
        eventually(5, "the room to empty", || gw.room_counts().is_empty());
    }
}

#[test]
fn other_ops_are_echoed_empty_and_forwarded_upstream() {
    let mut gw = start(config());
    let up = gw.take_uplink().unwrap();
    for t in BOTH {
        let mut c = Client::auth(&gw, t, &token(42, &format!("k-{t:?}"), "", &[]));
        for (o, body) in [
            (op::SEND_MSG, &b"hello"[..]),
            (1000, b"app"),
            (op::AUTH, b"{}"),
        ] {
            c.send(2, o, 31, body);
            let f = c.recv().unwrap();
            assert_eq!((f.ver, f.op, f.seq, f.body.len()), (2, o, 31, 0), "op {o}");
        }
        let mut forwarded = Vec::new();
        while forwarded.len() < 3 {
            match up.recv_timeout(Duration::from_secs(5)).unwrap() {
                Body::Upstream(u) => forwarded.push((u.mid, u.key, u.op, u.seq, u.body)),
                Body::Session(_) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            forwarded[0],
            (42, format!("k-{t:?}"), op::SEND_MSG, 31, b"hello".to_vec())
        );
        assert_eq!(forwarded[1].2, 1000);
    }
}

#[test]
fn raw_op_from_a_tcp_client_writes_nothing_and_on_ws_a_bare_header() {
    let gw = start(config());
    let mut tcp = Client::auth(&gw, Transport::Tcp, JS_TOKEN);
    tcp.send(1, op::RAW, 1, b"x");
    tcp.expect_silence(Duration::from_millis(200));
    let mut ws = Client::auth(&gw, Transport::Ws, JS_TOKEN);
    ws.send(1, op::RAW, 1, b"x");
    let f = ws.recv().unwrap();
    assert_eq!((f.op, f.body.len()), (op::RAW, 0));
}

#[test]
fn change_room_moves_the_connection() {
    let gw = start(config());
    for t in BOTH {
        let mut c = Client::auth(&gw, t, &token(1, "", "live://1000", &[]));
        c.send(1, op::CHANGE_ROOM, 4, b"live://2000");
        let f = c.recv().unwrap();
        assert_eq!(
            (f.op, f.seq, &f.body[..]),
            (op::CHANGE_ROOM_REPLY, 4, &b"live://2000"[..])
        );
        push_room(&gw, "live://1000", 1000, &[b"old"]);
        push_room(&gw, "live://2000", 1000, &[b"new"]);
        let got = c.recv_push().unwrap();
        assert_eq!(got[0].body, b"new");
        c.expect_silence(Duration::from_millis(200));
        // An empty body leaves the room.
        c.send(1, op::CHANGE_ROOM, 5, b"");
        assert_eq!(c.recv().unwrap().op, op::CHANGE_ROOM_REPLY);
        push_room(&gw, "live://2000", 1000, &[b"gone"]);
        c.expect_silence(Duration::from_millis(200));
    }
}

#[test]
fn sub_and_unsub_change_what_key_pushes_deliver() {
    let gw = start(config());
    for t in BOTH {
        let key = format!("sub-{t:?}");
        let mut c = Client::auth(&gw, t, &token(1, &key, "", &[1000]));
        push_keys(&gw, &[&key], 2000, b"filtered");
        c.expect_silence(Duration::from_millis(200));
        c.send(1, op::SUB, 3, b"2000");
        let f = c.recv().unwrap();
        assert_eq!((f.op, f.seq, &f.body[..]), (op::SUB_REPLY, 3, &b"2000"[..]));
        push_keys(&gw, &[&key], 2000, b"now");
        assert_eq!(c.recv_push().unwrap()[0].body, b"now");
        c.send(1, op::UNSUB, 4, b"2000");
        let f = c.recv().unwrap();
        assert_eq!((f.op, &f.body[..]), (op::UNSUB_REPLY, &b"2000"[..]));
        push_keys(&gw, &[&key], 2000, b"again");
        c.expect_silence(Duration::from_millis(200));
        // An unparsable list is echoed and ignored, as in goim.
        c.send(1, op::SUB, 5, b"x,y");
        assert_eq!(c.recv().unwrap().body, b"x,y");
    }
}

#[test]
fn heartbeat_deadline_closes_idle_connections_and_heartbeats_keep_them() {
    let mut c = config();
    c.limits.heartbeat_timeout_ms = 600;
    let gw = start(c);
    for t in BOTH {
        let mut kept = Client::auth(&gw, t, JS_TOKEN);
        let mut idle = Client::auth(&gw, t, JS_TOKEN.replace("123", "124").as_str());
        for i in 0..6 {
            std::thread::sleep(Duration::from_millis(200));
            kept.send(1, op::HEARTBEAT, i, b"");
            assert_eq!(kept.recv().unwrap().op, op::HEARTBEAT_REPLY);
        }
        let reason = idle.expect_closed().unwrap();
        assert!(reason.contains("heartbeat timeout"), "{reason}");
    }
}
