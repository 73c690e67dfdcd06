//! A connect storm against a real `corecast up`: 100,000 TCP connections opened as fast as the
//! load tester can (no rate, thousands in flight per thread) into a gateway whose listen
//! backlog is small, so the kernel's accept queue overflows and clients retransmit. Every
//! connection ends up registered exactly once (the tester, the gateway's count reported to the
//! dispatcher, and the room count agree), a push reaches every one of them, and once the tester
//! leaves, nothing stays registered (no half-registered session).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{DISPATCHER_TOML, GATEWAY_TOML, TempDir, Up, http};

const N: u64 = 100_000;

/// TcpExtListenOverflows + ListenDrops from /proc/net/netstat (machine-wide).
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        return names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter(|(n, _)| *n == "ListenOverflows" || *n == "ListenDrops")
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum();
    }
    0
}

fn online_total(up: &Up) -> u64 {
    let (_, v) = http(up.http, "GET", "/goim/online/total", b"");
    v["data"]["conn_count"].as_u64().unwrap_or(0)
}

fn room_count(up: &Up) -> u64 {
    let (_, v) = http(
        up.http,
        "GET",
        "/goim/online/room?type=live&rooms=1000",
        b"",
    );
    v["data"]["1000"].as_u64().unwrap_or(0)
}

#[test]
fn heavy_a_storm_of_100k_connects_through_an_overflowing_backlog_registers_each_once() {
    // A 128-entry listen backlog per shard: the storm overflows it many times over.
    let gateway = format!("{GATEWAY_TOML}\n[engine]\nbacklog = 128\n");
    let up = Up::start(&gateway, DISPATCHER_TOML);
    let overflows_before = listen_overflows();
    let dir = TempDir::new("storm");
    let report = dir.0.join("report.json");
    let args: Vec<String> = [
        "loadtest",
        "--tcp",
        &N.to_string(),
        "--tcp-addr",
        &up.tcp.to_string(),
        "--ws-addr",
        &up.ws.to_string(),
        "--room",
        "live://1000",
        "--threads",
        "2",
        "--inflight",
        "8000",
        "--connect-timeout",
        "60s",
        "--auth-timeout",
        "60s",
        "--publish",
        &up.http.to_string(),
        "--push-rate",
        "2",
        "--duration",
        "8s",
        "--drain",
        "30s",
        "--quiet",
        "--report",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([report.display().to_string()])
    .collect();
    let started = Instant::now();
    let tester = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_corecast"))
            .args(&args)
            .output()
            .unwrap()
    });
    // While the tester holds: the dispatcher sees every connection, once.
    let mut seen = 0;
    while started.elapsed() < Duration::from_secs(60) && !tester.is_finished() {
        seen = online_total(&up);
        if seen == N {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(seen, N, "connections the dispatcher saw during the hold");
    assert_eq!(room_count(&up), N, "members of the room");
    let out = tester.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest failed: {stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let overflows = listen_overflows() - overflows_before;
    eprintln!(
        "storm: {N} connections, connected in {:.2} s ({:.0}/s auth rate), listen overflows/drops {overflows}, connect errors {}",
        r["connect_secs"].as_f64().unwrap_or(0.0),
        r["auth_rate"].as_f64().unwrap_or(0.0),
        r["connect_errors"]
    );
    assert_eq!(r["authenticated"], N, "{}", r["connect_errors"]);
    assert_eq!(r["closed_by_server"], 0, "{}", r["close_reasons"]);
    let ok = r["publish"]["ok"].as_u64().unwrap();
    assert!(ok >= 1, "{}", r["publish"]);
    assert_eq!(r["expected_messages"], N * ok);
    assert_eq!(r["messages"], N * ok);
    assert_eq!(r["missing_messages"], 0);
    assert_eq!(r["order"]["duplicates"], 0);
    // The tester has closed everything: nothing stays registered.
    let t = Instant::now();
    while online_total(&up) != 0 || room_count(&up) != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "still registered after the tester left: {} connections, {} room members",
            online_total(&up),
            room_count(&up)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
