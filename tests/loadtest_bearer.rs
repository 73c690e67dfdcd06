//! `corecast loadtest --bearer` against a dispatcher whose API needs a bearer secret: the
//! publisher's pushes and the `--nodes` read carry it and succeed; without it the pushes fail
//! with the dispatcher's 401 reason in the report, and `--nodes` stops before the run with it.

mod support;

use std::process::Command;

use serde_json::Value;
use support::TempDir;

const SECRET: &str = "lt-bearer-secret";

fn dispatcher() -> dispatcher::Dispatcher {
    let mut cfg = dispatcher::Config::loopback_ephemeral();
    cfg.http.bearer_secrets = vec![SECRET.into()];
    dispatcher::Dispatcher::start(cfg).unwrap()
}

fn gateway(d: &dispatcher::Dispatcher) -> gateway::Gateway {
    let mut cfg = gateway::Config::loopback_ephemeral();
    cfg.id = "gw-bearer".into();
    cfg.metrics_bind = String::new();
    cfg.dispatchers = vec![d.link_addr().to_string()];
    cfg.renew_ms = 200;
    let port = support::free_port();
    cfg.tcp_bind = format!("127.0.0.1:{port}");
    cfg.public_addrs = vec![format!("127.0.0.1:{port}")];
    gateway::Gateway::start(cfg).unwrap()
}

/// Runs `corecast loadtest` with these flags; returns its exit success, stderr and report.
fn loadtest(args: &[&str]) -> (bool, String, Option<Value>) {
    let dir = TempDir::new("loadtest-bearer");
    let path = dir.0.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_corecast"))
        .arg("loadtest")
        .args(args)
        .args(["--threads", "1", "-q", "--report"])
        .arg(&path)
        .env_remove("CORECAST_BEARER")
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
        report,
    )
}

#[test]
fn the_publisher_and_nodes_carry_the_bearer_secret() {
    let d = dispatcher();
    let g = gateway(&d);
    support::wait_until("the gateway registers", || d.gateways().len() == 1);
    let http = d.http_addr().to_string();
    let nodes = format!("http://{http}");
    let run = |extra: &[&str]| {
        let mut a = vec![
            "--nodes",
            &nodes,
            "--tcp",
            "50",
            "--publish",
            &http,
            "--push-rate",
            "10",
            "--duration",
            "3s",
        ];
        a.extend_from_slice(extra);
        loadtest(&a)
    };
    let (ok, stderr, r) = run(&["--bearer", SECRET]);
    assert!(ok, "{stderr}");
    let r = r.unwrap();
    let pushed = r["publish"]["ok"].as_u64().unwrap();
    assert!(pushed >= 1, "{}", r["publish"]);
    assert_eq!(r["publish"]["errors"], serde_json::json!({}));
    assert_eq!(r["messages"], 50 * pushed, "{r}");

    // Without it: --nodes cannot read the list, and says why.
    let (ok, stderr, _) = run(&[]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("Authorization"),
        "{stderr}"
    );
    // A wrong one on the publisher alone: every push fails with the reason counted.
    let tcp = g.tcp_addr().to_string();
    let (ok, stderr, r) = loadtest(&[
        "--tcp-addr",
        &tcp,
        "--tcp",
        "5",
        "--publish",
        &http,
        "--bearer",
        "not-it",
        "--push-rate",
        "10",
        "--duration",
        "2s",
    ]);
    assert!(ok, "{stderr}");
    let p = &r.unwrap()["publish"];
    assert_eq!(p["ok"], 0, "{p}");
    let errors = p["errors"].as_object().unwrap();
    assert!(
        errors
            .keys()
            .any(|k| k.contains("HTTP 401") && k.contains("wrong bearer secret")),
        "{p}"
    );
    g.stop();
    d.stop_within(std::time::Duration::ZERO);
}
