//! Pushes: key pushes filtered by the watch set, room pushes ignoring it, broadcasts, and the
//! op-9 encoding per transport (bare frames on TCP, one wrapped message on WS).

mod support;

use std::io::Read;
use std::time::Duration;

use protocol::op;
use support::*;

#[test]
fn tcp_sees_bare_frames_byte_for_byte() {
    let gw = start(config());
    let mut c = Client::auth(&gw, Transport::Tcp, &token(1, "", "live://bytes", &[]));
    push_room(&gw, "live://bytes", 1000, &[b"hi"]);
    let Client::Tcp { stream, .. } = &mut c else {
        unreachable!()
    };
    let mut got = [0u8; 18];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(
        got,
        [
            0, 0, 0, 0x12, 0, 0x10, 0, 1, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, b'h', b'i'
        ]
    );
}

#[test]
fn ws_sees_one_op9_message_per_batch() {
    let gw = start(config());
    let mut ws = Client::auth(&gw, Transport::Ws, &token(1, "", "live://b", &[]));
    let mut tcp = Client::auth(&gw, Transport::Tcp, &token(2, "", "live://b", &[]));
    push_room(&gw, "live://b", 1000, &[b"one", b"two", b"three"]);
    let outer = ws.recv().unwrap();
    assert_eq!((outer.op, outer.ver, outer.seq), (op::RAW, 1, 0));
    let inner = inner_frames(&outer.body);
    assert_eq!(inner.len(), 3, "one WS message holds the whole batch");
    for (f, body) in inner.iter().zip([&b"one"[..], b"two", b"three"]) {
        assert_eq!((f.ver, f.op, f.seq, &f.body[..]), (1, 1000, 0, body));
    }
    for body in [&b"one"[..], b"two", b"three"] {
        let f = tcp.recv().unwrap();
        assert_eq!((f.op, &f.body[..]), (1000, body));
    }
}

#[test]
fn key_pushes_respect_accepts_and_room_pushes_ignore_them() {
    let gw = start(config());
    for t in BOTH {
        let key = format!("key-{t:?}");
        let mut c = Client::auth(&gw, t, &token(9, &key, "live://acc", &[1000, 1002]));
        push_keys(&gw, &[&key], 1001, b"not watched");
        push_keys(&gw, &[&key, "nobody"], 1002, b"watched");
        let got = c.recv_push().unwrap();
        assert_eq!((got[0].op, &got[0].body[..]), (1002, &b"watched"[..]));
        push_room(&gw, "live://acc", 5555, &[b"room"]);
        let got = c.recv_push().unwrap();
        assert_eq!((got[0].op, &got[0].body[..]), (5555, &b"room"[..]));
        c.expect_silence(Duration::from_millis(200));
    }
}

#[test]
fn key_pushes_reach_keys_on_every_shard() {
    let gw = start(config());
    let mut clients: Vec<_> = (0..40)
        .map(|i| {
            let t = if i % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Ws
            };
            Client::auth(&gw, t, &token(i, &format!("k{i}"), "", &[1000]))
        })
        .collect();
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
    push_keys(&gw, &refs, 1000, b"all of you");
    for c in &mut clients {
        assert_eq!(c.recv_push().unwrap()[0].body, b"all of you");
    }
}

#[test]
fn broadcast_reaches_watchers_only_and_paced_broadcasts_finish() {
    let gw = start(config());
    let mut watchers: Vec<_> = (0..10)
        .map(|i| {
            let t = if i % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Ws
            };
            Client::auth(&gw, t, &token(i, "", "", &[1000]))
        })
        .collect();
    let mut other = Client::auth(&gw, Transport::Tcp, &token(99, "", "", &[2000]));
    broadcast(&gw, 1000, 0, b"everyone");
    broadcast(&gw, 1000, 20, b"paced");
    for c in &mut watchers {
        assert_eq!(c.recv_push().unwrap()[0].body, b"everyone");
        assert_eq!(c.recv_push().unwrap()[0].body, b"paced");
    }
    other.expect_silence(Duration::from_millis(200));
}

#[test]
fn malformed_push_frames_are_refused_at_the_ingress() {
    let gw = start(config());
    let err = gw
        .ingress()
        .deliver(protocol::link::Body::RoomBatch(protocol::link::RoomBatch {
            id: 1,
            room: "live://x".into(),
            frames: vec![0, 0, 0, 99, 0, 16],
        }))
        .unwrap_err();
    assert!(err.to_string().contains("inner frame"), "{err}");
}
