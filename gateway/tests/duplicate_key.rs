//! A second connection with the same key closes the first, on whichever shard it is, and key
//! pushes then reach the new one.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn a_newer_connection_with_the_same_key_evicts_the_older() {
    let gw = start(config());
    // Enough pairs that some land on different shards.
    for i in 0..16 {
        let t = if i % 2 == 0 {
            Transport::Tcp
        } else {
            Transport::Ws
        };
        let key = format!("dup-{i}");
        let mut old = Client::auth(&gw, t, &token(1, &key, "live://dup", &[1000]));
        let mut new = Client::auth(&gw, Transport::Tcp, &token(1, &key, "live://dup", &[1000]));
        let reason = old.expect_closed().expect("a reason");
        assert!(
            reason.contains("newer connection with the same key"),
            "{reason}"
        );
        push_keys(&gw, &[&key], 1000, b"to the new one");
        assert_eq!(new.recv_push().unwrap()[0].body, b"to the new one");
        new.expect_silence(Duration::from_millis(50));
    }
    eventually(5, "16 evictions counted", || gw.total().evicted == 16);
}

#[test]
fn session_events_tell_the_evicted_connection_from_its_replacement() {
    let mut gw = start(config());
    let up = gw.take_uplink().unwrap();
    let mut old = Client::auth(&gw, Transport::Tcp, &token(1, "same", "", &[]));
    let _new = Client::auth(&gw, Transport::Ws, &token(1, "same", "", &[]));
    old.expect_closed();
    let mut events = Vec::new();
    while events.len() < 3 {
        if let protocol::link::Body::Session(s) = up.recv_timeout(Duration::from_secs(5)).unwrap() {
            events.push((s.online, s.conn_id));
        }
    }
    // The old connection's online event comes first; its offline event may come before or after
    // the new one's online event (before when both sit on one shard), but it names the old one.
    assert!(events[0].0, "{events:?}");
    let old_id = events[0].1;
    let new_id = events
        .iter()
        .find(|e| e.0 && e.1 != old_id)
        .expect("the new connection's online event, with an id of its own")
        .1;
    let offline: Vec<_> = events.iter().filter(|e| !e.0).collect();
    assert_eq!(offline, vec![&(false, old_id)], "{events:?}");
    assert_ne!(old_id, new_id);
}
