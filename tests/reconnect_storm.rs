//! A reconnect storm, smoothed by the dispatcher's backoff hints, with real processes: a
//! `corecast dispatcher`, one `corecast gateway` (A) and a `corecast loadtest --nodes
//! --reconnect` holding a few thousand connections on it. A is killed (SIGKILL) and started
//! again at once on the same ports, so every connection drops and comes back. The arrival rate
//! of the reconnects at the new A is read from its `/metrics` (`authenticated`, sampled every
//! 50 ms), and its peak over any one-second window compared between two runs:
//!
//! - hints that spread reconnects (`[backoff]` base 2 s, max 4 s, factor 1.8, jitter 1.0: the
//!   first attempt waits uniformly 0-4 s, goim's formula), and
//! - hints of zero (`{}`: reconnect at once, a thundering herd).
//!
//! Asserted: every connection is back in both runs (all on A: the tester's report, by node),
//! and the peak with hints is at most 60 % of the peak without: a ratio of the same run shape,
//! not a timing threshold. The peaks and the reconnect time distributions are printed.

mod support;

use std::time::{Duration, Instant};

use support::procs::{DispatcherProc, GatewayProc, LoadtestProc, wait_for};

const CONNS: u64 = 3_000;

struct Storm {
    /// Most reconnects authenticated at A within any one second.
    peak: u64,
    /// From the kill until every connection was authenticated at the new A.
    back: Duration,
    /// The tester's own per-second peak and drop-to-auth times (ms).
    report_peak: u64,
    p50: u64,
    p99: u64,
    max: u64,
}

/// The largest rise of `samples` (time, count) within any window of `window`.
fn peak_within(samples: &[(Instant, u64)], window: Duration) -> u64 {
    let mut best = 0;
    for (i, &(t0, n0)) in samples.iter().enumerate() {
        for &(t1, n1) in &samples[i..] {
            if t1.duration_since(t0) > window {
                break;
            }
            best = best.max(n1.saturating_sub(n0));
        }
    }
    best
}

fn storm(backoff: &str) -> Storm {
    let d = DispatcherProc::start(
        "dispatcher",
        &format!(
            "http_bind = \"127.0.0.1:0\"\nlink_bind = \"127.0.0.1:0\"\nthreads = 1\n\
             [links]\nrelink_grace_ms = 30000\n[backoff]\n{backoff}"
        ),
    );
    let mut a = GatewayProc::start("gw-storm", 1, &[d.link], 500, "");
    wait_for("A listed", 15, Duration::from_millis(50), || {
        d.weighted() == [a.tcp.to_string()]
    });
    let lt = LoadtestProc::on_nodes(d.http, CONNS, &["--reconnect", "--heartbeat-secs", "60"]);
    let authed = |a: &GatewayProc| a.metric("corecast_gateway_authenticated");
    wait_for(
        "every connection on A",
        60,
        Duration::from_millis(50),
        || authed(&a) == Some(CONNS),
    );
    // Kill A and start it again on the same ports at once: every connection drops together.
    let killed = Instant::now();
    a.restart();
    // The new process held nobody before it started: the series starts at zero there.
    let mut samples = vec![(killed, 0u64)];
    let back = wait_for(
        "every connection back on the new A",
        60,
        Duration::from_millis(50),
        || {
            let n = authed(&a).unwrap_or(0);
            samples.push((Instant::now(), n));
            n == CONNS
        },
    );
    let peak = peak_within(&samples, Duration::from_secs(1));
    let report = lt.finish();
    let r = &report["reconnects"];
    assert_eq!(r["reconnected"], CONNS, "every connection came back: {r}");
    assert_eq!(r["waiting_at_end"], 0, "{r}");
    assert_eq!(
        r["by_node"],
        serde_json::json!({ a.tcp.to_string(): CONNS }),
        "all to the node the list named"
    );
    let ms = |k: &str| r["time_ms"][k].as_u64().unwrap_or(0);
    Storm {
        peak,
        back,
        report_peak: r["per_sec"]
            .as_array()
            .and_then(|a| a.iter().filter_map(|v| v.as_u64()).max())
            .unwrap_or(0),
        p50: ms("p50"),
        p99: ms("p99"),
        max: ms("max"),
    }
}

#[test]
fn heavy_backoff_hints_spread_a_reconnect_storm() {
    let spread = storm("max_delay = 4\nbase_delay = 2\nfactor = 1.8\njitter = 1.0\n");
    let herd = storm("max_delay = 0\nbase_delay = 0\nfactor = 0.0\njitter = 0.0\n");
    for (name, s) in [("hints 2s/4s/1.8/1.0", &spread), ("hints of zero", &herd)] {
        eprintln!(
            "{name}: {CONNS} connections back {:?} after the kill; peak {} reconnects in one \
             second at the gateway ({:.0} %), {} in the tester's busiest second; drop to auth \
             p50 {} ms, p99 {} ms, max {} ms",
            s.back,
            s.peak,
            s.peak as f64 * 100.0 / CONNS as f64,
            s.report_peak,
            s.p50,
            s.p99,
            s.max
        );
    }
    assert!(
        herd.peak as f64 >= CONNS as f64 * 0.8,
        "without hints nearly all reconnect within one second: {}",
        herd.peak
    );
    assert!(
        spread.peak as f64 <= herd.peak as f64 * 0.6,
        "with hints the peak second ({}) is at most 60 % of the herd's ({})",
        spread.peak,
        herd.peak
    );
}
