//! Recovery (op 26) at the gateway, the test playing the dispatcher: the request goes up with
//! the connection's id, the answer's missed messages (after `since` only) come before the live
//! stream, a duplicate answer is ignored; too old, no answer in time, no link, a history past
//! half the outbound cap, the room cap and a second request for the same room each get their
//! own RecoverReply and leave the connection working.

mod support;

use std::time::{Duration, Instant};

use protocol::link::{Body, RecoverRequest, RoomHistory, history_status};
use protocol::{frame, history, op};
use support::*;

/// Inner frames for room messages with these offsets.
fn numbered(first: u32, bodies: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in bodies {
        frame::encode(&mut out, 1, 1000, 0, b.as_bytes());
    }
    history::number_frames(&mut out, first).unwrap();
    out
}

/// The next RecoverRequest sent up (other up-messages skipped).
fn request(up: &crossbeam_channel::Receiver<Body>) -> RecoverRequest {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match up
            .recv_timeout(left)
            .expect("a recover request within 10 s")
        {
            Body::RecoverRequest(r) => return r,
            _ => continue,
        }
    }
}

fn answer(gw: &gateway::Gateway, r: &RecoverRequest, status: i32, frames: Vec<u8>, newest: u32) {
    gw.ingress()
        .deliver(Body::RoomHistory(RoomHistory {
            id: 9,
            conn_id: r.conn_id,
            room: r.room.clone(),
            status,
            frames,
            newest,
            detail: "gone".into(),
        }))
        .expect("history accepted");
}

fn recover(c: &mut Client, since: u32, room: &str) {
    c.send(1, op::RECOVER, 5, &history::recover_body(since, room));
}

fn reply(c: &mut Client) -> String {
    let f = c.recv().unwrap();
    assert_eq!((f.op, f.seq), (op::RECOVER_REPLY, 5), "{f:?}");
    String::from_utf8(f.body).unwrap()
}

/// Bodies of pushed messages with their offsets, read until `n` arrived.
fn pushed(c: &mut Client, n: usize) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        for f in c.recv_push().unwrap() {
            out.push((f.seq as u32, String::from_utf8(f.body).unwrap()));
        }
    }
    out
}

#[test]
fn the_missed_messages_come_before_the_live_stream() {
    for t in BOTH {
        let mut gw = start(config());
        let up = gw.take_uplink().unwrap();
        let mut c = Client::auth(&gw, t, &token(1, "", "", &[]));
        recover(&mut c, 5, "live://r");
        let r = request(&up);
        assert_eq!((r.room.as_str(), r.since), ("live://r", 5));
        // Not in the room until the answer: a batch ahead of it does not reach the client.
        push_room(&gw, "live://r", 1000, &[b"ahead"]);
        // The answer holds offset 5 too: only what comes after `since` is sent.
        answer(
            &gw,
            &r,
            history_status::FOUND,
            numbered(5, &["five", "six", "seven"]),
            7,
        );
        assert_eq!(reply(&mut c), "ok 2 7 live://r", "{t:?}");
        assert_eq!(
            pushed(&mut c, 2),
            vec![(6, "six".into()), (7, "seven".into())],
            "{t:?}"
        );
        // Offsets wrap: a fresh request after u32::MAX - 1.
        recover(&mut c, u32::MAX - 1, "live://s");
        let r2 = request(&up);
        answer(
            &gw,
            &r2,
            history_status::FOUND,
            numbered(u32::MAX - 1, &["a", "b", "c"]),
            0,
        );
        assert_eq!(reply(&mut c), "ok 2 0 live://s");
        assert_eq!(
            pushed(&mut c, 2),
            vec![(u32::MAX, "b".into()), (0, "c".into())]
        );
        // A second answer (another dispatcher, a resend) changes nothing.
        answer(&gw, &r2, history_status::FOUND, numbered(1, &["dup"]), 1);
        push_room(&gw, "live://s", 1000, &[b"live"]);
        assert_eq!(pushed(&mut c, 1)[0].1, "live", "{t:?}");
        push_room(&gw, "live://r", 1000, &[b"live-r"]);
        assert_eq!(pushed(&mut c, 1)[0].1, "live-r", "{t:?}");
    }
}

#[test]
fn too_old_and_unknown_answers_are_told_and_join_live() {
    let mut gw = start(config());
    let up = gw.take_uplink().unwrap();
    let mut c = Client::auth(&gw, Transport::Tcp, &token(1, "", "", &[]));
    recover(&mut c, 1, "live://old");
    let r = request(&up);
    answer(&gw, &r, history_status::TOO_OLD, Vec::new(), 9);
    assert_eq!(reply(&mut c), "error: too old: gone");
    recover(&mut c, 1, "live://new");
    let r = request(&up);
    answer(&gw, &r, history_status::UNKNOWN, Vec::new(), 0);
    let text = reply(&mut c);
    assert!(
        text.starts_with("error: no history of room live://new"),
        "{text}"
    );
    push_room(&gw, "live://old", 1000, &[b"o"]);
    push_room(&gw, "live://new", 1000, &[b"n"]);
    let got: Vec<String> = pushed(&mut c, 2).into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, ["o", "n"]);
}

#[test]
fn no_answer_within_the_timeout_is_told_and_joins_live() {
    let mut cfg = config();
    cfg.limits.recover_timeout_ms = 300;
    let mut gw = start(cfg);
    let up = gw.take_uplink().unwrap();
    let mut c = Client::auth(&gw, Transport::Ws, &token(1, "", "", &[]));
    let t = Instant::now();
    recover(&mut c, 1, "live://quiet");
    let _ = request(&up);
    let text = reply(&mut c);
    assert!(
        text.starts_with("error: history unavailable: no dispatcher answered within 300 ms"),
        "{text}"
    );
    // The shard stamps the deadline with its clock of the current loop turn, which may be up
    // to a turn (about 100 ms) old: the answer can come that much before 300 ms here.
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    push_room(&gw, "live://quiet", 1000, &[b"q"]);
    assert_eq!(pushed(&mut c, 1)[0].1, "q");
    eventually(5, "the timeout counted", || {
        gw.stats().iter().map(|s| s.recovery_timeout).sum::<u64>() == 1
    });
}

#[test]
fn without_a_dispatcher_link_it_joins_live_at_once() {
    let gw = start(config());
    let mut c = Client::auth(&gw, Transport::Tcp, &token(1, "", "", &[]));
    recover(&mut c, 1, "live://alone");
    let text = reply(&mut c);
    assert!(text.contains("no dispatcher link"), "{text}");
    push_room(&gw, "live://alone", 1000, &[b"a"]);
    assert_eq!(pushed(&mut c, 1)[0].1, "a");
}

#[test]
fn a_history_past_half_the_outbound_cap_is_refused_not_sent() {
    let mut cfg = config();
    cfg.limits.outbound_cap_bytes = 4096;
    let mut gw = start(cfg);
    let up = gw.take_uplink().unwrap();
    let mut c = Client::auth(&gw, Transport::Tcp, &token(1, "", "", &[]));
    recover(&mut c, 0, "live://big");
    let r = request(&up);
    let big = "x".repeat(1500);
    answer(
        &gw,
        &r,
        history_status::FOUND,
        numbered(1, &[&big, &big]),
        2,
    );
    let text = reply(&mut c);
    assert!(
        text.starts_with("error: too old: the 2 missed messages of room live://big are 3032 bytes"),
        "{text}"
    );
    assert_alive(&mut c);
}

#[test]
fn one_recovery_at_a_time_and_the_room_cap_counts_it() {
    let mut cfg = config();
    cfg.limits.max_rooms_per_conn = 2;
    let mut gw = start(cfg);
    let up = gw.take_uplink().unwrap();
    let mut c = Client::auth(&gw, Transport::Tcp, &token(1, "", "live://a", &[]));
    recover(&mut c, 1, "live://b");
    let r = request(&up);
    for room in ["live://b", "live://c"] {
        recover(&mut c, 1, room);
        assert_eq!(
            reply(&mut c),
            "error: a recovery of room live://b is already in progress (one at a time)"
        );
    }
    // The recovery in progress holds its room against the cap.
    c.send(1, op::JOIN_ROOM, 5, b"live://c");
    let f = c.recv().unwrap();
    assert_eq!(f.body, b"error: room cap of 2 reached");
    // Joining the room being recovered is left to the recovery.
    c.send(1, op::JOIN_ROOM, 5, b"live://b");
    let f = c.recv().unwrap();
    assert_eq!(
        f.body,
        b"error: a recovery of room live://b is in progress: it joins the room"
    );
    answer(&gw, &r, history_status::FOUND, Vec::new(), 1);
    assert_eq!(reply(&mut c), "ok 0 1 live://b");
    // Then another room: the cap is reached (a and b).
    recover(&mut c, 1, "live://c");
    assert_eq!(reply(&mut c), "error: room cap of 2 reached");
    // Recovering the room it is in is no new room.
    recover(&mut c, 1, "live://a");
    let ra = request(&up);
    answer(&gw, &ra, history_status::FOUND, Vec::new(), 1);
    assert_eq!(reply(&mut c), "ok 0 1 live://a");
    // Each room once: one push each arrives once.
    push_room(&gw, "live://a", 1000, &[b"a"]);
    push_room(&gw, "live://b", 1000, &[b"b"]);
    let got: Vec<String> = pushed(&mut c, 2).into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, ["a", "b"]);
    c.expect_silence(Duration::from_millis(200));
    eventually(5, "the refusals counted", || {
        gw.stats().iter().map(|s| s.recovery_refused).sum::<u64>() == 3
    });
}

#[test]
fn leave_room_and_change_room_end_a_recovery_in_progress() {
    let mut gw = start(config());
    let up = gw.take_uplink().unwrap();
    let mut c = Client::auth(&gw, Transport::Ws, &token(1, "", "", &[]));
    recover(&mut c, 1, "live://l");
    let r = request(&up);
    c.send(1, op::LEAVE_ROOM, 5, b"live://l");
    assert_eq!(
        reply(&mut c),
        "error: recovery of room live://l cancelled by LeaveRoom"
    );
    assert_eq!(c.recv().unwrap().op, op::LEAVE_ROOM_REPLY);
    // The late answer joins nothing.
    answer(&gw, &r, history_status::FOUND, numbered(2, &["x"]), 2);
    recover(&mut c, 1, "live://m");
    let _ = request(&up);
    c.send(1, op::CHANGE_ROOM, 5, b"live://n");
    assert_eq!(
        reply(&mut c),
        "error: recovery of room live://m cancelled by ChangeRoom"
    );
    assert_eq!(c.recv().unwrap().op, op::CHANGE_ROOM_REPLY);
    push_room(&gw, "live://l", 1000, &[b"l"]);
    push_room(&gw, "live://m", 1000, &[b"m"]);
    push_room(&gw, "live://n", 1000, &[b"n"]);
    assert_eq!(pushed(&mut c, 1)[0].1, "n");
    c.expect_silence(Duration::from_millis(200));
}

/// Offsets that jump (a resend after a re-dial, another dispatcher's numbering) make the shard
/// stop trusting what it sent as one run: the recovery sends everything after the client's
/// offset, maybe again, never leaving a gap.
#[test]
fn after_offsets_jumped_a_recovery_sends_everything_after_the_offset() {
    let mut gw = start(config());
    let up = gw.take_uplink().unwrap();
    let mut c = Client::auth(&gw, Transport::Tcp, &token(1, "", "live://j", &[]));
    wait_authenticated(&gw, 1);
    for (first, bodies) in [
        (10, &["10", "11", "12"][..]),
        (10, &["10", "11", "12"]),
        (13, &["13"]),
    ] {
        gw.ingress()
            .deliver(Body::RoomBatch(protocol::link::RoomBatch {
                id: 0,
                room: "live://j".into(),
                frames: numbered(first, bodies),
            }))
            .unwrap();
    }
    assert_eq!(pushed(&mut c, 7).len(), 7);
    recover(&mut c, 5, "live://j");
    let r = request(&up);
    let all: Vec<String> = (6..=13).map(|i| i.to_string()).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    answer(&gw, &r, history_status::FOUND, numbered(6, &all), 13);
    assert_eq!(reply(&mut c), "ok 8 13 live://j");
    let got: Vec<u32> = pushed(&mut c, 8).into_iter().map(|(o, _)| o).collect();
    assert_eq!(got, (6..=13).collect::<Vec<u32>>());
}

#[test]
fn an_answer_for_a_connection_that_left_is_dropped() {
    let mut gw = start(config());
    let up = gw.take_uplink().unwrap();
    let mut c = Client::auth(&gw, Transport::Tcp, &token(1, "gone", "", &[]));
    recover(&mut c, 1, "live://left");
    let r = request(&up);
    drop(c);
    wait_authenticated(&gw, 0);
    answer(&gw, &r, history_status::FOUND, numbered(2, &["x"]), 2);
    // The shard carries on.
    let mut d = Client::auth(&gw, Transport::Tcp, &token(2, "", "live://left", &[]));
    push_room(&gw, "live://left", 1000, &[b"y"]);
    assert_eq!(pushed(&mut d, 1)[0].1, "y");
}

/// A connection in two rooms recovers its first one: it stays first, so heartbeat replies
/// still count that room.
#[test]
fn a_recovered_room_keeps_its_place_among_the_connections_rooms() {
    let mut gw = start(config());
    let up = gw.take_uplink().unwrap();
    let mut c = Client::auth(&gw, Transport::Tcp, &token(1, "", "live://first", &[]));
    c.send(1, op::JOIN_ROOM, 3, b"live://second");
    assert_eq!(c.recv().unwrap().op, op::JOIN_ROOM_REPLY);
    // Another member in live://second only, so the two rooms' counts differ.
    let _other = Client::auth(&gw, Transport::Tcp, &token(2, "", "live://second", &[]));
    recover(&mut c, 1, "live://first");
    let r = request(&up);
    answer(&gw, &r, history_status::FOUND, Vec::new(), 1);
    assert_eq!(reply(&mut c), "ok 0 1 live://first");
    eventually(5, "the heartbeat counts live://first (1 member)", || {
        c.send(1, op::HEARTBEAT, 8, b"");
        let f = c.recv().unwrap();
        assert_eq!(f.op, op::HEARTBEAT_REPLY);
        f.body == 1i32.to_be_bytes()
    });
}
