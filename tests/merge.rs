//! Several testers as one: two `corecast loadtest --agent` runs against one `corecast up`, in
//! the same room, one of them publishing through the dispatcher; `corecast loadtest merge`
//! adds their reports up (counts, latency samples, per-second series) and writes the same
//! files as a run's `--out`. Bad input: a missing file, a report written without `--agent`.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::{DISPATCHER_TOML, GATEWAY_TOML, TempDir, Up};

fn corecast(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_corecast"));
    c.args(args);
    c
}

/// `corecast loadtest` flags for a run of `n` TCP connections in live://1000 of `up`.
fn tester(up: &Up, n: u32, key_prefix: &str, report: &Path, extra: &[&str]) -> Command {
    let tcp = up.tcp.to_string();
    let mut c = corecast(&[
        "loadtest",
        "--tcp-addr",
        &tcp,
        "--tcp",
        &n.to_string(),
        "--room",
        "live://1000",
        "--key-prefix",
        key_prefix,
        "--threads",
        "1",
        "--agent",
        "--report",
        report.to_str().unwrap(),
    ]);
    c.args(extra);
    c
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn u(v: &Value, ptr: &str) -> u64 {
    v.pointer(ptr)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{ptr} in {v}"))
}

#[test]
fn two_agents_merge_into_one_report() {
    let up = Up::start(GATEWAY_TOML, DISPATCHER_TOML);
    let dir = TempDir::new("merge");
    let (a_path, b_path) = (dir.0.join("a.json"), dir.0.join("b.json"));
    // B only listens, and holds longer than A publishes.
    let b = tester(&up, 50, "agent-b", &b_path, &["--duration", "5s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    up.wait_conns(50);
    let http = up.http.to_string();
    let a = tester(
        &up,
        50,
        "agent-a",
        &a_path,
        &["--publish", &http, "--push-rate", "10", "--duration", "3s"],
    )
    .output()
    .unwrap();
    let a_stderr = ok(&a);
    // Not a terminal: one plain progress line a second, with the last second's p99.
    assert!(
        a_stderr.contains("s  conns 50/50 auth 50 open 50") && a_stderr.contains("  p99 "),
        "{a_stderr}"
    );
    ok(&b.wait_with_output().unwrap());
    let (a, b) = (read(&a_path), read(&b_path));
    let pushes = u(&a, "/publish/ok");
    assert!(pushes >= 1, "{a}");
    for r in [&a, &b] {
        assert_eq!(u(r, "/authenticated"), 50, "{r}");
        assert_eq!(u(r, "/messages"), 50 * pushes, "{r}");
        assert!(r["agent"]["latency_histogram"].is_array(), "{r}");
    }

    let out_dir = dir.0.join("merged");
    let merged_path = dir.0.join("merged.json");
    let out = corecast(&[
        "loadtest",
        "merge",
        a_path.to_str().unwrap(),
        b_path.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--report",
        merged_path.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stderr = ok(&out);
    assert!(stderr.contains("merged 2 reports:"), "{stderr}");
    assert!(stderr.contains("connections: 100 asked"), "{stderr}");
    let m = read(&merged_path);
    for field in [
        "/connections",
        "/authenticated",
        "/messages",
        "/frames",
        "/bytes",
        "/heartbeats_sent",
        "/order/checked",
        "/latency_us/samples",
        "/threads",
    ] {
        assert_eq!(u(&m, field), u(&a, field) + u(&b, field), "{field}");
    }
    assert_eq!(u(&m, "/latency_us/samples"), 100 * pushes);
    let by_sec: u64 = m["latency_by_sec"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u(s, "/samples"))
        .sum();
    assert_eq!(by_sec, 100 * pushes);
    let series: u64 = m["messages_per_sec"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(series, 100 * pushes);
    assert_eq!(u(&m, "/expected_messages"), 100 * pushes, "{m}");
    assert_eq!(u(&m, "/missing_messages"), 0, "{m}");
    assert_eq!(
        u(&m, "/started_unix_ms"),
        u(&a, "/started_unix_ms").min(u(&b, "/started_unix_ms"))
    );
    let report_json: Value = read(&out_dir.join("report.json"));
    assert_eq!(report_json["messages"], m["messages"]);
    for file in ["throughput.svg", "latency.svg", "latency_cdf.svg"] {
        let svg = std::fs::read_to_string(out_dir.join(file)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{file}"
        );
    }
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("(latency.svg)"), "{md}");

    // A report without the agent section, and a file that is not there.
    let mut plain = a.clone();
    plain.as_object_mut().unwrap().remove("agent");
    let plain_path = dir.0.join("plain.json");
    std::fs::write(&plain_path, plain.to_string()).unwrap();
    let missing = dir.0.join("missing.json");
    for (file, why) in [
        (&plain_path, "plain.json was not written with --agent"),
        (&missing, "cannot read"),
    ] {
        let out = corecast(&[
            "loadtest",
            "merge",
            a_path.to_str().unwrap(),
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(why) && stderr.contains(file.file_name().unwrap().to_str().unwrap()),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "no report on bad input");
    }
}
