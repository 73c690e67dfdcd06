//! A larger smoke run, by hand: 30,000 connections (override with LOADTEST_SMOKE_CONNS) to an
//! in-process gateway, held for 5 s with room pushes, in one process. Gateway and tester
//! together hold 60,000 sockets while the process may hold only 20,000 descriptors: both keep
//! theirs as io_uring direct descriptors.
//!
//! `cargo test -p corecast-loadtest --release --test smoke -- --ignored --nocapture`

mod support;

use std::time::Duration;

use loadtest::{HoldOptions, Rooms};
use support::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
#[ignore = "30,000 connections for 5 s: run by hand with --ignored --nocapture, in release"]
fn holds_30k_connections_without_process_descriptors() {
    let n: u32 = std::env::var("LOADTEST_SMOKE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let rooms = 100u32;
    let gw = start(config());
    let run = spawn(HoldOptions {
        targets: vec![tcp(&gw, n)],
        rooms: Rooms::RoundRobin {
            kind: "smoke".into(),
            count: rooms,
        },
        duration: Duration::from_secs(5),
        heartbeat_secs: 2,
        ..HoldOptions::default()
    });
    run.wait_for(60, "every connection authenticated", |s| {
        s.authenticated == n as u64
    });
    let fds = open_fds();
    eventually(10, "every member counted by the gateway", || {
        gw.room_counts().iter().map(|(_, c)| *c as u64).sum::<u64>() == n as u64
    });
    let pushes = 20u64;
    for seq in 1..=pushes {
        for r in 1..=rooms {
            push_seqs(&gw, &format!("smoke://{r}"), [seq]);
        }
    }
    run.wait_for(30, "every message delivered", |s| {
        s.messages >= pushes * n as u64
    });
    let (rss_kib, _) = loadtest::cpu::rss_kib();
    // The hold ends by itself 5 s after the last connection settled.
    let report = run.join();
    let (_, hwm_kib) = loadtest::cpu::rss_kib();
    eprint!("{}", report.summary());
    eprintln!(
        "smoke: {n} connections, {:.0} auths/s ({:.2} s first to last auth), {fds} process descriptors open while holding, RSS {} MiB at full hold (peak {} MiB, gateway and tester together)",
        report.auth_rate,
        report.connect_secs,
        rss_kib / 1024,
        hwm_kib / 1024,
    );
    assert_eq!(report.authenticated, n as u64);
    assert_eq!(report.messages, pushes * n as u64);
    assert_eq!(
        (
            report.order.gaps,
            report.order.duplicates,
            report.order.reorders
        ),
        (0, 0, 0)
    );
    assert_eq!(report.error_count(), 0, "{report:#?}");
    assert_eq!(report.closed_by_server, 0);
    assert!(fds < 1_000, "{fds} descriptors: sockets are not direct");
}
