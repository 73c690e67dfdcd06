//! The hold scenario against a real gateway started in-process: fan-out counts, loss and
//! order checks, refused connects, and connections the server closes.

mod support;

use std::time::{Duration, Instant};

use loadtest::{HoldOptions, Rooms, Target, Transport};
use support::*;

#[test]
fn room_pushes_reach_every_member_in_order() {
    let gw = start(config());
    let rooms = 10u32;
    let (n_tcp, n_ws) = (1_000u32, 200u32);
    let total = (n_tcp + n_ws) as u64;
    let run = spawn(HoldOptions {
        targets: vec![tcp(&gw, n_tcp), ws(&gw, n_ws)],
        rooms: Rooms::RoundRobin {
            kind: "test".into(),
            count: rooms,
        },
        duration: Duration::from_secs(60),
        quiet: true,
        ..HoldOptions::default()
    });
    run.wait_for(15, "every connection authenticated", |s| {
        s.authenticated == total
    });
    // The gateway joins the room with the auth reply; wait until it counts every member.
    eventually(5, "every room member counted by the gateway", || {
        let counts = gw.room_counts();
        counts.len() == rooms as usize && counts.iter().all(|(_, n)| *n as u64 == total / 10)
    });
    let pushes = 50u64;
    for seq in 1..=pushes {
        for r in 1..=rooms {
            push_seqs(&gw, &format!("test://{r}"), [seq]);
        }
    }
    let expected = pushes * total;
    run.wait_for(15, "every message delivered", |s| s.messages >= expected);
    std::thread::sleep(Duration::from_millis(200)); // anything extra would show up now
    let report = run.finish();
    eprint!("{}", report.summary());
    assert_eq!(report.connections, total);
    assert_eq!(report.attempted, total);
    assert_eq!(report.established, total);
    assert_eq!(report.authenticated, total);
    assert_eq!(report.open_at_end, total);
    assert_eq!(report.messages, expected, "sent x members");
    assert_eq!(report.order.checked, expected);
    assert_eq!(
        (
            report.order.gaps,
            report.order.duplicates,
            report.order.reorders
        ),
        (0, 0, 0)
    );
    assert_eq!(report.order.bad_bodies, 0);
    assert_eq!(report.error_count(), 0, "{report:#?}");
    assert_eq!(report.closed_by_server, 0, "{:?}", report.close_reasons);
    let latency = report.latency_us.expect("seq bodies carry ts");
    assert_eq!(latency.samples, expected);
    assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    // Every WS message holds at least one message; every TCP read at least one frame.
    assert!(report.frames > 0 && report.frames <= report.messages + total);
    assert!(report.bytes > 0);
    assert_eq!(report.messages_per_sec.iter().sum::<u64>(), expected);
    assert!(report.worker_cpu_secs > 0.0 && report.cpu_secs >= report.worker_cpu_secs);
}

#[test]
fn refused_connects_are_counted_not_fatal() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Instant::now();
    let report = loadtest::hold::run(HoldOptions {
        targets: vec![
            Target {
                transport: Transport::Tcp,
                addr: port,
                connections: 40,
            },
            Target {
                transport: Transport::Ws,
                addr: port,
                connections: 10,
            },
        ],
        duration: Duration::from_millis(300),
        quiet: true,
        ..HoldOptions::default()
    })
    .expect("a refused target is a report, not an error");
    eprint!("{}", report.summary());
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    assert_eq!(report.attempted, 50);
    assert_eq!(report.established, 0);
    assert_eq!(report.authenticated, 0);
    assert_eq!(report.connect_errors.get("refused"), Some(&50));
    assert_eq!(report.error_count(), 50);
    assert_eq!(report.open_at_end, 0);
}

#[test]
fn connections_closed_by_the_server_report_its_reason() {
    let mut c = config();
    c.limits.heartbeat_timeout_ms = 300;
    let gw = start(c);
    let run = spawn(HoldOptions {
        targets: vec![tcp(&gw, 20), ws(&gw, 20)],
        heartbeat_secs: 3_600,
        duration: Duration::from_secs(30),
        quiet: true,
        ..HoldOptions::default()
    });
    run.wait_for(10, "the server to close every connection", |s| {
        s.closed_by_server == 40
    });
    let report = run.finish();
    eprint!("{}", report.summary());
    assert_eq!(report.authenticated, 40);
    assert_eq!(report.closed_by_server, 40);
    assert_eq!(
        report.close_reasons.get("heartbeat timeout"),
        Some(&40),
        "{:?}",
        report.close_reasons
    );
    assert_eq!(report.open_at_end, 0);
    assert_eq!(report.heartbeats_sent, 0);
    assert_eq!(report.error_count(), 0, "{report:#?}");
}

#[test]
fn heartbeats_are_answered_and_keep_connections_open() {
    let mut c = config();
    c.limits.heartbeat_timeout_ms = 1_500;
    let gw = start(c);
    let report = loadtest::hold::run(HoldOptions {
        targets: vec![tcp(&gw, 10), ws(&gw, 10)],
        heartbeat_secs: 1,
        duration: Duration::from_millis(2_600),
        quiet: true,
        ..HoldOptions::default()
    })
    .unwrap();
    eprint!("{}", report.summary());
    assert_eq!(report.closed_by_server, 0, "{:?}", report.close_reasons);
    assert_eq!(report.open_at_end, 20);
    assert!(report.heartbeats_sent >= 40, "{}", report.heartbeats_sent);
    assert!(
        report.heartbeat_replies >= 40,
        "{}",
        report.heartbeat_replies
    );
    assert_eq!(report.messages, 0, "heartbeat replies are not messages");
}

#[test]
fn ramp_paces_new_connections() {
    let gw = start(config());
    let report = loadtest::hold::run(HoldOptions {
        targets: vec![tcp(&gw, 200)],
        rate: 400,
        duration: Duration::from_millis(100),
        quiet: true,
        ..HoldOptions::default()
    })
    .unwrap();
    eprint!("{}", report.summary());
    assert_eq!(report.authenticated, 200);
    // 200 connections at 400/s: about half a second from the first auth to the last.
    assert!(
        (0.35..1.5).contains(&report.connect_secs),
        "{}",
        report.connect_secs
    );
    assert!(report.auth_rate < 600.0, "{}", report.auth_rate);
}

#[test]
fn malformed_server_frames_are_counted_and_closed() {
    use std::io::{Read, Write};
    // A fake server: answers every auth with op 8, then a frame whose headerLen is 9.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let n = 5;
    let server = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..n {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = [0u8; 16];
            s.read_exact(&mut head).unwrap();
            let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
            let mut body = vec![0u8; len - 16];
            s.read_exact(&mut body).unwrap();
            let mut out = Vec::new();
            protocol::frame::encode(&mut out, 1, protocol::op::AUTH_REPLY, 1, b"");
            let mut bad = protocol::frame::header_bytes(2, 1, 1000, 0);
            bad[4..6].copy_from_slice(&9i16.to_be_bytes());
            out.extend_from_slice(&bad);
            out.extend_from_slice(b"xx");
            s.write_all(&out).unwrap();
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(2));
    });
    let report = loadtest::hold::run(HoldOptions {
        targets: vec![Target {
            transport: Transport::Tcp,
            addr,
            connections: n,
        }],
        duration: Duration::from_millis(300),
        quiet: true,
        ..HoldOptions::default()
    })
    .unwrap();
    eprint!("{}", report.summary());
    assert_eq!(report.authenticated, n as u64);
    assert_eq!(
        report.malformed.get("frame headerLen is 9, must be 16"),
        Some(&(n as u64)),
        "{:?}",
        report.malformed
    );
    assert_eq!(report.open_at_end, 0, "malformed connections are closed");
    assert_eq!(report.messages, 0);
    server.join().unwrap();
}

#[test]
fn hmac_mode_signs_every_token_and_a_wrong_secret_is_refused_with_its_reason() {
    let mut c = config();
    c.auth.mode = "hmac".into();
    c.auth.secrets = vec!["right-secret".into()];
    let gw = start(c);
    let run = |secret: &str| {
        loadtest::hold::run(HoldOptions {
            targets: vec![tcp(&gw, 30), ws(&gw, 10)],
            duration: Duration::from_millis(300),
            quiet: true,
            secret: Some(secret.into()),
            ..HoldOptions::default()
        })
        .unwrap()
    };
    let ok = run("right-secret");
    assert_eq!(ok.authenticated, 40, "{}", ok.summary());
    let bad = run("wrong-secret");
    assert_eq!(bad.authenticated, 0, "{}", bad.summary());
    let refused: u64 = bad
        .close_reasons
        .iter()
        .filter(|(reason, _)| reason.contains("signature does not match"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(refused, 40, "{}", bad.summary());
}
