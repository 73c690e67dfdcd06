//! Room fan-out under a burst: batches to a room that queue up while a shard is busy are merged
//! (each member gets one chunk for all of them) and delivered whole and in order, and the
//! shard's counters account for every merge.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn a_burst_to_a_room_arrives_whole_and_in_order_and_merges_are_counted() {
    let gw = start(config());
    let members = 240usize;
    let mut clients: Vec<Client> = (0..members)
        .map(|i| {
            let t = if i % 4 == 3 {
                Transport::Ws
            } else {
                Transport::Tcp
            };
            Client::auth(&gw, t, &token(i as i64 + 1, "", "live://burst", &[]))
        })
        .collect();
    wait_authenticated(&gw, members as u64);
    // One message per batch, pushed as fast as the ingress takes them: the shards fall behind
    // and find runs of batches of the same room in their inboxes.
    let n = 4000u32;
    for seq in 0..n {
        push_room(&gw, "live://burst", 1000, &[&seq.to_be_bytes()]);
    }
    std::thread::scope(|s| {
        for chunk in clients.chunks_mut(members / 4) {
            s.spawn(move || {
                for c in chunk {
                    c.set_timeout(Duration::from_secs(20));
                    let mut next = 0u32;
                    while next < n {
                        for f in c.recv_push().expect("every message arrives") {
                            assert_eq!(f.op, 1000);
                            let seq = u32::from_be_bytes(f.body[..4].try_into().unwrap());
                            assert_eq!(seq, next, "in order, nothing missing");
                            next += 1;
                        }
                    }
                }
            });
        }
    });
    clients[0].expect_silence(Duration::from_millis(100));
    // Per shard: every member got every message, in (n - merged) chunks.
    let mut merged = 0;
    for s in gw.stats() {
        assert_eq!(s.messages_out, s.authenticated * n as u64);
        assert_eq!(
            s.batches_out,
            s.authenticated * (n as u64 - s.room_batches_merged),
            "one chunk per member per merged batch"
        );
        assert_eq!(s.cap_dropped_messages + s.cap_disconnects, 0);
        merged += s.room_batches_merged;
    }
    println!("batches merged: {merged} (of {n} per shard)");
}
