//! kill -9 one of two dispatchers, with real processes and the embedded queue: two
//! `corecast dispatcher`s (D1, D2, each with its own in-memory registry fed by every gateway),
//! two `corecast gateway`s linked to both, and a `corecast loadtest` whose connections D2's
//! node list spreads over the gateways. D1 gets SIGKILL. Asserted: pushes through the
//! survivor D2 reach every connection; the gateways keep redialling D1 and, once D1 is started
//! again on the same ports, re-link to it and announce their sessions, so pushes through D1
//! reach every connection again (its online count is whole again). The tester counts exactly
//! connections × pushes messages and no connection closed.
//!
//! With Kafka, `tests/kafka.rs` (`heavy_kafka_a_killed_dispatcher_loses_no_acknowledged_push`)
//! kills one of two dispatchers sharing a consumer group mid-stream (in-process gateway) and
//! checks no acknowledged push is lost; `tests/links.rs` covers a cut link's buffered pushes
//! and a stopping dispatcher delivering what it accepted. This test adds the embedded queue,
//! gateway processes, and the re-link after a restart.

mod support;

use std::time::{Duration, Instant};

use support::free_port;
use support::procs::{DispatcherProc, GatewayProc, LoadtestProc, wait_for};

const CONNS: u64 = 200;

fn toml(http: u16, link: u16) -> String {
    format!("http_bind = \"127.0.0.1:{http}\"\nlink_bind = \"127.0.0.1:{link}\"\nthreads = 1\n")
}

fn push(d: &DispatcherProc, n: u64, tag: &str) {
    for i in 0..n {
        let v = d.post(
            "/goim/push/room?operation=1000&type=live&room=1",
            format!("{tag}-{i}").as_bytes(),
        );
        assert_eq!(v["code"], 0, "{v}");
    }
}

fn written(gws: &[&GatewayProc]) -> u64 {
    gws.iter()
        .map(|g| {
            g.metric("corecast_gateway_messages_written_total")
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn heavy_pushes_flow_through_the_surviving_dispatcher_and_gateways_relink_to_a_restarted_one() {
    let d1_toml = toml(free_port(), free_port());
    let mut d1 = DispatcherProc::start("d1", &d1_toml);
    let d2 = DispatcherProc::start("d2", &toml(free_port(), free_port()));
    let links = [d1.link, d2.link];
    let g1 = GatewayProc::start("gw-1", 0, &links, 500, "");
    let g2 = GatewayProc::start("gw-2", 1, &links, 500, "");
    let gws = [&g1, &g2];
    for d in [&d1, &d2] {
        wait_for(
            "both gateways on each dispatcher",
            15,
            Duration::from_millis(50),
            || d.weighted().len() == 2,
        );
    }
    let lt = LoadtestProc::on_nodes(d2.http, CONNS, &[]);
    for d in [&d1, &d2] {
        wait_for(
            "every connection on each dispatcher",
            30,
            Duration::from_millis(50),
            || d.online() == CONNS,
        );
    }
    push(&d1, 3, "before");
    wait_for(
        "the first pushes delivered",
        15,
        Duration::from_millis(50),
        || written(&gws) == CONNS * 3,
    );

    // SIGKILL D1: the survivor carries on.
    d1.p.kill9();
    push(&d2, 5, "survivor");
    wait_for(
        "pushes through the survivor delivered",
        15,
        Duration::from_millis(50),
        || written(&gws) == CONNS * 8,
    );

    // D1 again, same ports: the gateways re-link and announce their sessions.
    let restarted = Instant::now();
    d1 = DispatcherProc::start("d1-again", &d1_toml);
    let relinked = wait_for(
        "the gateways re-linked to D1 with every session",
        30,
        Duration::from_millis(50),
        || d1.weighted().len() == 2 && d1.online() == CONNS,
    );
    let linked = format!("linked to dispatcher {}", d1.link);
    for g in gws {
        // The log line follows the registration: give the log reader a moment.
        wait_for(
            "the gateway logged its second link to D1",
            5,
            Duration::from_millis(20),
            || g.p.logged(&linked) == 2,
        );
    }
    push(&d1, 2, "restarted");
    wait_for(
        "pushes through the restarted D1 delivered",
        15,
        Duration::from_millis(50),
        || written(&gws) == CONNS * 10,
    );
    std::thread::sleep(Duration::from_millis(200));
    let report = lt.finish();
    eprintln!(
        "dispatcher kill -9: pushes through the survivor reached all {CONNS}; the gateways \
         re-linked to the restarted D1 {relinked:?} after it started ({:?} incl. start-up)",
        restarted.elapsed()
    );
    assert_eq!(
        report["messages"],
        CONNS * 10,
        "{}",
        report["close_reasons"]
    );
    assert_eq!(report["closed_by_server"], 0);
    assert_eq!(report["open_at_end"], CONNS);
}
