//! Disruptions against a real gateway started in-process: a read stall against a
//! `drop-oldest` gateway (the loss detector's proof: every message the gateway drops is a gap,
//! exactly where it was dropped), a storm (a share dropped at once comes back), and churn.

mod support;

use std::time::Duration;

use loadtest::disrupt::{Backoff, Stall, Storm, chosen};
use loadtest::{HoldOptions, Rooms};
use support::*;

#[test]
fn a_stalled_reader_behind_drop_oldest_shows_every_dropped_message_as_a_gap() {
    let mut c = config();
    c.limits.slow_consumer = "drop-oldest".into();
    c.limits.outbound_cap_bytes = 2048;
    c.engine.sndbuf = 4096;
    let gw = start(c);
    let (n_tcp, n_ws) = (30u32, 10u32);
    let total = (n_tcp + n_ws) as u64;
    let share = 0.5;
    let run = spawn(HoldOptions {
        targets: vec![tcp(&gw, n_tcp), ws(&gw, n_ws)],
        rooms: Rooms::One("test://stall".into()),
        duration: Duration::from_secs(60),
        stall: Some(Stall {
            share,
            at: Duration::from_millis(500),
            length: Duration::from_millis(1500),
        }),
        rcvbuf: 4096,
        quiet: true,
        ..HoldOptions::default()
    });
    run.wait_for(15, "every connection authenticated", |s| {
        s.authenticated == total
    });
    eventually(5, "every member counted by the gateway", || {
        gw.room_counts()
            .iter()
            .any(|(r, n)| r == "test://stall" && *n as u64 == total)
    });
    // 1,500 pushes over ~3 s: before, during and after the stall.
    let pushes = 1_500u64;
    for seq in 0..pushes {
        push_seqs(&gw, "test://stall", [seq]);
        std::thread::sleep(Duration::from_millis(2));
    }
    let dropped = || gw.total().cap_dropped_messages;
    run.wait_for(15, "every message delivered or dropped", |s| {
        s.messages + dropped() >= pushes * total
    });
    std::thread::sleep(Duration::from_millis(200)); // anything extra would show up now
    let report = run.finish();
    eprint!("{}", report.summary());
    let dropped = dropped();
    let g = gw.total();
    assert!(dropped > 0, "the stall made the gateway drop: {g:?}");
    assert_eq!(g.cap_disconnects, 0);
    let stalled = (0..total as u32).filter(|&id| chosen(id, share)).count() as u64;
    let r = report.reconnects.as_ref().expect("a stall is reported");
    assert_eq!(r.stalled, stalled);
    // Every message is either received or dropped by the gateway ...
    assert_eq!(report.messages + dropped, pushes * total);
    // ... and every dropped one is a gap, none a duplicate or out of order.
    assert_eq!(report.order.checked, report.messages);
    assert_eq!(report.order.gaps, dropped);
    assert_eq!(
        (report.order.duplicates, report.order.reorders),
        (0, 0),
        "{:?}",
        report.order
    );
    // The gaps are where the stall was: at stalled connections only, and they add up.
    let gaps = &report.gaps;
    assert_eq!(gaps.not_kept, 0);
    assert!(!gaps.samples.is_empty());
    assert!(
        gaps.samples.iter().all(|g| chosen(g.conn, share)),
        "{gaps:?}"
    );
    let sum: u64 = gaps.samples.iter().map(|g| g.missing()).sum();
    assert_eq!(sum, dropped);
    assert!(
        gaps.samples
            .iter()
            .all(|g| g.next < pushes && g.after < g.next)
    );
    assert_eq!(report.error_count(), 0, "{report:#?}");
    assert_eq!(report.open_at_end, total);
}

#[test]
fn a_storm_drops_a_share_and_every_dropped_connection_comes_back() {
    let gw = start(config());
    let total = 400u32;
    let share = 0.5;
    let run = spawn(HoldOptions {
        targets: vec![tcp(&gw, 300), ws(&gw, 100)],
        rooms: Rooms::One("test://storm".into()),
        duration: Duration::from_secs(60),
        storm: Some(Storm {
            share,
            at: Duration::from_millis(300),
        }),
        backoff: Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
        quiet: true,
        ..HoldOptions::default()
    });
    let dropped = (0..total).filter(|&id| chosen(id, share)).count() as u64;
    assert!(dropped > 150 && dropped < 250, "{dropped}");
    run.wait_for(15, "every connection authenticated", |s| {
        s.authenticated == total as u64
    });
    run.wait_for(15, "the storm hit", |s| s.reconnecting > 0);
    run.wait_for(15, "every dropped connection back", |s| s.reconnecting == 0);
    eventually(5, "the gateway counts everyone again", || {
        gw.room_counts()
            .iter()
            .any(|(r, n)| r == "test://storm" && *n as u32 == total)
    });
    let report = run.finish();
    eprint!("{}", report.summary());
    let r = report.reconnects.clone().expect("a storm is reported");
    assert_eq!(r.storms, 1);
    assert_eq!(r.dropped, dropped);
    assert_eq!(r.reconnected, dropped);
    assert_eq!(r.waiting_at_end, 0);
    assert_eq!(
        r.time_ms.as_ref().expect("reconnect times").samples,
        dropped
    );
    assert!(r.storm_recovery_secs.is_some(), "{r:?}");
    assert_eq!(report.authenticated, total as u64, "first connections only");
    assert_eq!(report.open_at_end, total as u64);
    assert_eq!(report.error_count(), 0, "{report:#?}");
    assert_eq!(report.closed_by_server, 0);
}

#[test]
fn churn_replaces_connections_while_the_hold_goes_on() {
    let gw = start(config());
    let total = 200u64;
    let run = spawn(HoldOptions {
        targets: vec![tcp(&gw, total as u32)],
        rooms: Rooms::One("test://churn".into()),
        duration: Duration::from_secs(60),
        churn: 200.0,
        backoff: Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
        quiet: true,
        ..HoldOptions::default()
    });
    run.wait_for(15, "every connection authenticated", |s| {
        s.authenticated == total
    });
    // Churn runs on: wait for more drops than there are connections.
    let before = gw.total();
    eventually(20, "the gateway saw 300 connections come back", || {
        gw.total().auth_ok >= before.auth_ok + 300
    });
    let report = run.finish();
    eprint!("{}", report.summary());
    let r = report.reconnects.clone().expect("churn is reported");
    assert!(r.dropped >= 300, "{r:?}");
    // Each drop is either back or still waiting at the end.
    assert_eq!(r.reconnected + r.waiting_at_end, r.dropped, "{r:?}");
    assert!(r.reconnected >= 300);
    assert_eq!(report.error_count(), 0, "{report:#?}");
    assert_eq!(report.closed_by_server, 0);
}
