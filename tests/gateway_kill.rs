//! kill -9 a gateway, with real processes: one `corecast dispatcher`, two `corecast gateway`s
//! (A and B, renewing every 500 ms) and a `corecast loadtest --nodes --reconnect` whose
//! connections the dispatcher's node list spreads over both, plus one plain client on A that
//! never reconnects. Gateway A gets SIGKILL. Asserted:
//!
//! - within one renewal period the dispatcher's `/goim/nodes/weighted` no longer lists A,
//!   `/goim/nodes/instances` shows it offline, and `/goim/online/total` and the room count no
//!   longer count A's sessions (they equal B's);
//! - a key push to the client that lived on A answers code 0 (goim's answer) and delivers
//!   nothing: held for A during `relink_grace_ms`, then dropped and counted
//!   (`gateway_removed_dropped`) when A is removed; once A is removed, the key is unknown and
//!   a push to it queues nothing;
//! - every one of A's load-test connections reconnects, all to B (the tester's report: by
//!   node), and room pushes then reach every connection (the tester counts exactly
//!   connections × pushes messages).
//!
//! The measured times (kill → A out of the node list, kill → all back on B) are printed.

mod support;

use std::time::{Duration, Instant};

use support::procs::{DispatcherProc, GatewayProc, LoadtestProc, wait_for};

const RENEW_MS: u64 = 500;
const CONNS: u64 = 400;
const PUSHES: u64 = 5;

fn room_count(d: &DispatcherProc) -> u64 {
    d.get("/goim/online/room?type=live&rooms=1")["data"]["1"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn heavy_a_killed_gateways_clients_move_to_the_other_and_the_dispatcher_forgets_it() {
    let d = DispatcherProc::start(
        "dispatcher",
        "http_bind = \"127.0.0.1:0\"\nlink_bind = \"127.0.0.1:0\"\nthreads = 2\n\
         [links]\nrelink_grace_ms = 3000\n\
         [backoff]\nmax_delay = 2\nbase_delay = 1\nfactor = 1.5\njitter = 0.5\n",
    );
    let mut a = GatewayProc::start("gw-a", 0, &[d.link], RENEW_MS, "");
    let b = GatewayProc::start("gw-b", 1, &[d.link], RENEW_MS, "");
    wait_for(
        "both gateways listed",
        15,
        Duration::from_millis(50),
        || d.weighted().len() == 2,
    );
    // A plain client on A that will not come back.
    let orphan = support::listen(support::tcp_client(
        a.tcp, "live://1", 900_001, "orphan", None, 60,
    ));
    wait_for(
        "the orphan client counted",
        15,
        Duration::from_millis(50),
        || d.online() == 1,
    );
    let lt = LoadtestProc::on_nodes(d.http, CONNS, &["--reconnect"]);
    wait_for(
        "every connection counted by the dispatcher",
        30,
        Duration::from_millis(50),
        || d.online() == CONNS + 1,
    );
    let before = d.instances();
    let share = |id: &str| before.iter().find(|i| i.0 == id).map_or(0, |i| i.2);
    let (on_a, on_b) = (share("gw-a"), share("gw-b"));
    assert_eq!(on_a + on_b, CONNS + 1, "{before:?}");
    assert!(
        on_a > 100 && on_b > 100,
        "the node list spread the connections: A {on_a}, B {on_b}"
    );
    assert_eq!(room_count(&d), CONNS + 1);
    let a_addr = a.tcp.to_string();

    // SIGKILL gateway A.
    let killed = Instant::now();
    a.p.kill9();
    let gone = wait_for(
        "A out of nodes/weighted",
        10,
        Duration::from_millis(5),
        || !d.weighted().contains(&a_addr),
    );
    // What the dispatcher says right after: A offline, its sessions not counted. (A's
    // clients wait at least 0.5 s, the hints' jitter, before reconnecting to B, so B still
    // holds only its own.)
    let instances = d.instances();
    assert!(
        instances.iter().any(|i| i.0 == "gw-a" && i.1),
        "A shown offline: {instances:?}"
    );
    assert_eq!(d.weighted(), [b.tcp.to_string()]);
    assert_eq!(d.online(), on_b, "online/total counts only B");
    assert_eq!(room_count(&d), on_b, "the room count counts only B");
    assert!(
        gone <= Duration::from_millis(RENEW_MS),
        "A left the node list {gone:?} after the kill, more than one renewal period"
    );
    // A key push to the client that lived on A: goim's code 0, held for A meanwhile.
    let v = d.post("/goim/push/keys?operation=1000&keys=orphan", b"lost");
    assert_eq!(v["code"], 0, "{v}");
    let orphan_lines = orphan.join().unwrap();
    assert!(
        support::bodies(&orphan_lines).is_empty(),
        "the orphan got nothing: {orphan_lines:?}"
    );

    // Every connection A had comes back, on B.
    let back = wait_for(
        "A's connections back on B",
        30,
        Duration::from_millis(20),
        || d.online() == CONNS && d.instances().iter().any(|i| i.0 == "gw-b" && i.2 == CONNS),
    ) + gone;
    // A is removed after relink_grace_ms; the push held for it is dropped and counted.
    wait_for("A removed", 15, Duration::from_millis(50), || {
        d.instances().iter().all(|i| i.0 != "gw-a")
    });
    assert_eq!(d.metric("corecast_dispatcher_gateways_removed_total"), 1);
    assert_eq!(
        d.metric("corecast_dispatcher_gateway_removed_dropped_total"),
        1,
        "the push held for A is dropped when A is removed"
    );
    // Now the key is unknown: code 0, nothing queued.
    let produced = d.metric("corecast_dispatcher_queue_produced_total");
    let v = d.post("/goim/push/keys?operation=1000&keys=orphan", b"lost again");
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(
        d.metric("corecast_dispatcher_queue_produced_total"),
        produced,
        "a push to a key whose gateway is gone queues nothing"
    );

    // Room pushes reach every connection, all on B now.
    for i in 0..PUSHES {
        let v = d.post(
            "/goim/push/room?operation=1000&type=live&room=1",
            format!("after-{i}").as_bytes(),
        );
        assert_eq!(v["code"], 0, "{v}");
    }
    wait_for(
        "B wrote every push to every connection",
        15,
        Duration::from_millis(50),
        || {
            b.metric("corecast_gateway_messages_written_total")
                .is_some_and(|n| n >= CONNS * PUSHES)
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let report = lt.finish();
    let r = &report["reconnects"];
    eprintln!(
        "kill -9 of A: A out of nodes/weighted after {gone:?}; all {CONNS} connections back \
         (the {} from A on B) {back:?} after the kill; reconnect time p50 {} ms, p99 {} ms, \
         max {} ms; by node {}",
        on_a - 1,
        r["time_ms"]["p50"],
        r["time_ms"]["p99"],
        r["time_ms"]["max"],
        r["by_node"]
    );
    assert_eq!(r["reconnected"], on_a - 1, "{r}");
    assert_eq!(r["waiting_at_end"], 0, "{r}");
    assert_eq!(
        r["by_node"],
        serde_json::json!({ b.tcp.to_string(): on_a - 1 }),
        "every reconnect went to B"
    );
    assert_eq!(
        report["messages"],
        CONNS * PUSHES,
        "every connection got every push: {}",
        report["close_reasons"]
    );
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "the whole test stays bounded"
    );
}
