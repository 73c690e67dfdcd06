//! Rooms: several rooms per connection (JoinRoom 22 / LeaveRoom 24) with a cap, and fan-out at
//! scale (10,000 connections over every shard and several rings per shard).

mod support;

use std::time::Duration;

use protocol::op;
use support::*;

#[test]
fn a_connection_in_three_rooms_gets_each_and_stops_after_leaving() {
    let mut c = config();
    c.limits.max_rooms_per_conn = 3;
    let gw = start(c);
    for t in BOTH {
        let mut c = Client::auth(&gw, t, &token(1, "", "live://a", &[]));
        for (seq, room) in [(1, "live://b"), (2, "live://c")] {
            c.send(1, op::JOIN_ROOM, seq, room.as_bytes());
            let f = c.recv().unwrap();
            assert_eq!(
                (f.op, f.seq, &f.body[..]),
                (op::JOIN_ROOM_REPLY, seq, room.as_bytes())
            );
        }
        // Joining a room it is already in is a no-op, not a fourth room.
        c.send(1, op::JOIN_ROOM, 3, b"live://b");
        assert_eq!(c.recv().unwrap().body, b"live://b");
        c.send(1, op::JOIN_ROOM, 4, b"live://d");
        let f = c.recv().unwrap();
        assert_eq!(
            (f.op, &f.body[..]),
            (op::JOIN_ROOM_REPLY, &b"error: room cap of 3 reached"[..])
        );
        for room in ["live://a", "live://b", "live://c", "live://d"] {
            push_room(&gw, room, 1000, &[room.as_bytes()]);
        }
        for room in ["live://a", "live://b", "live://c"] {
            assert_eq!(c.recv_push().unwrap()[0].body, room.as_bytes());
        }
        c.expect_silence(Duration::from_millis(150));
        c.send(1, op::LEAVE_ROOM, 5, b"live://b");
        assert_eq!(c.recv().unwrap().body, b"live://b");
        c.send(1, op::LEAVE_ROOM, 6, b"live://zzz");
        assert_eq!(c.recv().unwrap().body, b"error: not in room live://zzz");
        c.send(1, op::JOIN_ROOM, 7, b"");
        assert_eq!(c.recv().unwrap().body, b"error: empty room key");
        push_room(&gw, "live://b", 1000, &[b"left"]);
        push_room(&gw, "live://c", 1000, &[b"still in c"]);
        assert_eq!(c.recv_push().unwrap()[0].body, b"still in c");
        // Now there is room for a third again.
        c.send(1, op::JOIN_ROOM, 8, b"live://d");
        assert_eq!(c.recv().unwrap().body, b"live://d");
    }
}

#[test]
fn heavy_10k_connections_in_100_rooms_get_exactly_their_rooms_pushes_in_order() {
    let mut c = config();
    // Small rings so every shard runs several of them.
    c.engine.slots_per_ring = 1500;
    let gw = start(c);
    let n = 10_000;
    let rooms = 100;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let t = if i % 10 == 0 {
            Transport::Ws
        } else {
            Transport::Tcp
        };
        let mut c = Client::connect(&gw, t);
        c.send(
            1,
            op::AUTH,
            1,
            token(i as i64, "", &format!("test://{}", i % rooms), &[]).as_bytes(),
        );
        clients.push(c);
    }
    for c in &mut clients {
        assert_eq!(c.recv().unwrap().op, op::AUTH_REPLY);
    }
    wait_authenticated(&gw, n as u64);
    let stats = gw.stats();
    assert!(
        stats.iter().all(|s| s.connections > 0),
        "every shard holds connections: {stats:?}"
    );
    for r in 0..rooms {
        let room = format!("test://{r}");
        push_room(&gw, &room, 1000, &[room.as_bytes()]);
    }
    for r in 0..rooms {
        push_room(&gw, &format!("test://{r}"), 1000, &[b"end"]);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mine = format!("test://{}", i % rooms);
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(c.recv_push().unwrap().into_iter().map(|f| f.body));
        }
        assert_eq!(
            got,
            vec![mine.into_bytes(), b"end".to_vec()],
            "connection {i}"
        );
    }
    // 1,000 pushes to one room arrive in order at every member.
    for seq in 0..1000u32 {
        push_room(&gw, "test://7", 1000, &[&seq.to_be_bytes()]);
    }
    for (i, c) in clients
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| i % rooms == 7)
    {
        let mut next = 0u32;
        while next < 1000 {
            for f in c.recv_push().unwrap() {
                let seq = u32::from_be_bytes(f.body[..4].try_into().unwrap());
                assert_eq!(seq, next, "connection {i} out of order");
                next += 1;
            }
        }
    }
    let total = gw.total();
    assert_eq!(total.messages_out, (n * 2 + 100 * 1000) as u64);
}
