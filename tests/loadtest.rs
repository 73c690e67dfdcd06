//! `corecast loadtest`'s room scenario against a real `corecast up`: the tester holds TCP and
//! WebSocket connections in one room and publishes through the dispatcher's HTTP API; the
//! messages received equal the connections times the pushes accepted, with no gap. goim's
//! benchmark shape, and an unreachable dispatcher (a clear line in the report, no hang).

mod support;

use std::process::Command;

use serde_json::Value;
use support::{DISPATCHER_TOML, GATEWAY_TOML, TempDir, Up, free_port};

/// Runs `corecast loadtest` with these flags; returns its JSON report.
fn loadtest(args: &[String]) -> Value {
    let dir = TempDir::new("loadtest");
    let path = dir.0.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_corecast"))
        .arg("loadtest")
        .args(args)
        .arg("--report")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest failed: {stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        stderr.contains("published:"),
        "the summary names the publisher: {stderr}"
    );
    report
}

fn args(up: &Up, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--tcp-addr",
        &up.tcp.to_string(),
        "--ws-addr",
        &up.ws.to_string(),
        "--room",
        "live://1000",
        "--threads",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn the_room_scenario_counts_every_push_at_every_connection() {
    let up = Up::start(GATEWAY_TOML, DISPATCHER_TOML);
    let http = up.http.to_string();
    let r = loadtest(&args(
        &up,
        &[
            "--tcp",
            "300",
            "--ws",
            "100",
            "--publish",
            &http,
            "--push-rate",
            "20",
            "--duration",
            "4s",
        ],
    ));
    assert_eq!(r["authenticated"], 400, "{r}");
    let p = &r["publish"];
    let ok = p["ok"].as_u64().unwrap();
    assert!(ok >= 1 && p["sent"] == ok, "{p}");
    assert_eq!(r["expected_messages"], 400 * ok, "{r}");
    assert_eq!(r["missing_messages"], 0, "{r}");
    assert_eq!(r["messages"], 400 * ok, "{r}");
    let order = &r["order"];
    assert_eq!(order["checked"], 400 * ok, "{order}");
    assert_eq!(
        (order["gaps"].clone(), order["reorders"].clone()),
        (0.into(), 0.into())
    );
    assert!(r["latency_us"]["p99"].as_u64().is_some(), "{r}");
}

#[test]
fn goims_shape_and_an_unreachable_dispatcher() {
    let up = Up::start(GATEWAY_TOML, DISPATCHER_TOML);
    let http = up.http.to_string();
    let r = loadtest(&args(
        &up,
        &[
            "--tcp",
            "100",
            "--publish",
            &http,
            "--goim-shape",
            "--duration",
            "3s",
        ],
    ));
    let ok = r["publish"]["ok"].as_u64().unwrap();
    // 40 pushes/s for the hold less its 1 s tail: 80 on schedule (fewer only if the hold
    // ended first on a starved machine).
    assert!((1..=80).contains(&ok), "{r}");
    assert_eq!(r["messages"], 100 * ok, "{r}");
    assert_eq!(r["missing_messages"], 0, "{r}");

    let nowhere = format!("127.0.0.1:{}", free_port());
    let r = loadtest(&args(
        &up,
        &["--tcp", "10", "--publish", &nowhere, "--duration", "1s"],
    ));
    let errors = r["publish"]["errors"].as_object().unwrap();
    let (what, n) = errors.iter().next().unwrap();
    assert!(
        what.contains("connecting to the dispatcher") && what.contains(&nowhere),
        "{what}"
    );
    assert_eq!(n, 1);
    assert_eq!(r["publish"]["sent"], 0);
}

#[test]
fn a_drain_waits_for_a_backlog_to_arrive() {
    // A fifth of the connections stop reading from 1 s to 4 s into a 3 s hold: when the hold
    // ends their messages are still queued. --drain keeps receiving until they arrive.
    let up = Up::start(GATEWAY_TOML, DISPATCHER_TOML);
    let http = up.http.to_string();
    let r = loadtest(&args(
        &up,
        &[
            "--tcp",
            "100",
            "--publish",
            &http,
            "--push-rate",
            "20",
            "--duration",
            "3s",
            "--stall",
            "0.2",
            "--stall-at",
            "1s",
            "--stall-for",
            "3s",
            "--drain",
            "20s",
        ],
    ));
    let ok = r["publish"]["ok"].as_u64().unwrap();
    assert!(ok >= 1, "{r}");
    assert_eq!(r["missing_messages"], 0, "{r}");
    assert_eq!(r["messages"], 100 * ok, "{r}");
    let drained = r["drained_secs"].as_f64().expect("the backlog drained");
    assert!(
        (0.5..20.0).contains(&drained),
        "the stalled connections caught up after their stall ended: {drained}"
    );
}

#[test]
fn compare_prints_each_figure_beside_an_earlier_report() {
    let up = Up::start(GATEWAY_TOML, DISPATCHER_TOML);
    let http = up.http.to_string();
    let dir = TempDir::new("compare");
    let first = dir.0.join("first.json");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_corecast"))
            .arg("loadtest")
            .args(args(
                &up,
                &[
                    "--tcp",
                    "50",
                    "--publish",
                    &http,
                    "--push-rate",
                    "10",
                    "--duration",
                    "2s",
                ],
            ))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--report", first.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "--report",
        dir.0.join("second.json").to_str().unwrap(),
        "--compare",
        first.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("compared with the previous report:"),
        "{stderr}"
    );
    assert!(stderr.contains("  authenticated: 50 -> 50"), "{stderr}");
    assert!(stderr.contains("  messages missing: 0 -> 0"), "{stderr}");
    // A report that is not there fails before the run, naming the flag and the path.
    let missing = dir.0.join("none.json");
    let out = run(&["--compare", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--compare") && stderr.contains("none.json"),
        "{stderr}"
    );
}

#[test]
fn the_broadcast_scenario_reaches_every_connection_in_every_room() {
    let up = Up::start(GATEWAY_TOML, DISPATCHER_TOML);
    let http = up.http.to_string();
    let r = loadtest(&args(
        &up,
        &[
            "--tcp",
            "150",
            "--ws",
            "50",
            "--rooms",
            "5",
            "--publish",
            &http,
            "--broadcast",
            "--push-rate",
            "20",
            "--duration",
            "3s",
        ],
    ));
    let ok = r["publish"]["ok"].as_u64().unwrap();
    assert!(ok >= 1, "{r}");
    assert_eq!(r["authenticated"], 200, "{r}");
    assert_eq!(r["messages"], 200 * ok, "{r}");
    assert_eq!(r["missing_messages"], 0, "{r}");
    assert_eq!(r["order"]["gaps"], 0, "{r}");
    // An op the connections do not accept is refused before the run.
    let out = Command::new(env!("CARGO_BIN_EXE_corecast"))
        .arg("loadtest")
        .args(args(
            &up,
            &[
                "--tcp",
                "1",
                "--publish",
                &http,
                "--broadcast",
                "--push-op",
                "7",
            ],
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--push-op 7 is not in --accepts"));
}

/// The `push` scenario: key pushes and mid pushes in groups, round-robin over every
/// connection; each connection gets its own sequence, in order, nothing missing.
#[test]
fn the_push_scenario_reaches_each_key_and_each_mid() {
    let up = Up::start(GATEWAY_TOML, DISPATCHER_TOML);
    let http = up.http.to_string();
    for (by, per_push) in [("keys", "40"), ("mids", "30")] {
        let r = loadtest(&args(
            &up,
            &[
                "--tcp",
                "200",
                "--ws",
                "50",
                "--publish",
                &http,
                "--push",
                by,
                "--per-push",
                per_push,
                "--push-rate",
                "50",
                "--duration",
                "3s",
            ],
        ));
        assert_eq!(r["authenticated"], 250, "{r}");
        let groups = r["publish"]["ok_by_group"].as_array().unwrap();
        let per: u64 = per_push.parse().unwrap();
        assert_eq!(groups.len() as u64, 250u64.div_ceil(per), "{by}");
        let ok = r["publish"]["ok"].as_u64().unwrap();
        assert!(
            ok >= groups.len() as u64,
            "{by}: every group pushed at least once: {r}"
        );
        let expected = r["expected_messages"].as_u64().unwrap();
        let want: u64 = groups
            .iter()
            .enumerate()
            .map(|(g, n)| n.as_u64().unwrap() * per.min(250 - g as u64 * per))
            .sum();
        assert_eq!(expected, want, "{by}");
        assert_eq!(r["messages"], expected, "{by}: {r}");
        assert_eq!(r["missing_messages"], 0, "{by}: {r}");
        assert_eq!(r["order"]["checked"], expected, "{by}");
        assert_eq!(r["order"]["gaps"], 0, "{by}: {r}");
        assert_eq!(r["order"]["reorders"], 0, "{by}: {r}");
    }
}

/// The `room` scenario over Zipf-sized rooms: a few big rooms, a long tail; pushes go
/// round-robin over the rooms and every member of each gets each of its room's pushes.
#[test]
fn zipf_sized_rooms_each_get_their_pushes() {
    let up = Up::start(GATEWAY_TOML, DISPATCHER_TOML);
    let http = up.http.to_string();
    let r = loadtest(&args(
        &up,
        &[
            "--tcp",
            "300",
            "--rooms",
            "12",
            "--zipf",
            "1.0",
            "--publish",
            &http,
            "--push-rate",
            "60",
            "--duration",
            "3s",
        ],
    ));
    let groups = r["publish"]["ok_by_group"].as_array().unwrap();
    assert_eq!(groups.len(), 12);
    let members =
        loadtest::Rooms::Zipf(loadtest::options::Zipf::new("live", 12, 1.0).unwrap()).members(300);
    assert!(members[0] > 3 * members[11], "skewed: {members:?}");
    let want: u64 = groups
        .iter()
        .zip(&members)
        .map(|(n, m)| n.as_u64().unwrap() * m)
        .sum();
    assert_eq!(r["expected_messages"], want, "{r}");
    assert_eq!(r["messages"], want, "{r}");
    assert_eq!(r["order"]["gaps"], 0, "{r}");
}

/// The `storm` scenario from the command line: a share of the connections is dropped at
/// once while pushes go on, and every one of them comes back.
#[test]
fn the_storm_scenario_brings_every_dropped_connection_back() {
    let up = Up::start(GATEWAY_TOML, DISPATCHER_TOML);
    let http = up.http.to_string();
    let r = loadtest(&args(
        &up,
        &[
            "--tcp",
            "300",
            "--publish",
            &http,
            "--push-rate",
            "20",
            "--storm",
            "0.3",
            "--storm-at",
            "500ms",
            "--backoff-base",
            "100ms",
            "--backoff-max",
            "500ms",
            "--duration",
            "4s",
        ],
    ));
    let dropped = (0..300)
        .filter(|&id| loadtest::disrupt::chosen(id, 0.3))
        .count() as u64;
    let s = &r["reconnects"];
    assert_eq!(s["storms"], 1, "{r}");
    assert_eq!(s["dropped"], dropped, "{s}");
    assert_eq!(s["reconnected"], dropped, "{s}");
    assert_eq!(s["waiting_at_end"], 0, "{s}");
    assert!(s["storm_recovery_secs"].as_f64().is_some(), "{s}");
    assert_eq!(r["open_at_end"], 300, "{r}");
    // Dropped connections miss what was pushed while they were away, and nothing else:
    // no duplicate, no reorder.
    assert_eq!(r["order"]["duplicates"], 0, "{r}");
    assert_eq!(r["order"]["reorders"], 0, "{r}");
}
