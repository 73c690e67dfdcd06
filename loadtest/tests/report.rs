//! The report side of a hold against an in-process gateway: latency second by second (the
//! seconds' samples add up to the run's), the percentile curve, `--out`'s charts and
//! report.md, and the `--agent` section read back as `merge` reads it.

mod support;

use std::time::Duration;

use loadtest::{HoldOptions, Rooms};
use support::*;

#[test]
fn latency_by_second_adds_up_to_the_run() {
    let gw = start(config());
    let total = 200u64;
    let run = spawn(HoldOptions {
        targets: vec![tcp(&gw, total as u32)],
        rooms: Rooms::One("test://1".into()),
        duration: Duration::from_secs(60),
        threads: 2,
        quiet: true,
        ..HoldOptions::default()
    });
    run.wait_for(15, "every connection authenticated", |s| {
        s.authenticated == total
    });
    eventually(5, "every room member counted by the gateway", || {
        gw.room_counts().iter().any(|(_, n)| *n as u64 == total)
    });
    // Pushes spread over more than two seconds, so several seconds have samples.
    let pushes = 24u64;
    for seq in 1..=pushes {
        push_seqs(&gw, "test://1", [seq]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let expected = pushes * total;
    run.wait_for(15, "every message delivered", |s| s.messages >= expected);
    let mut report = run.finish();

    let l = report.latency_us.expect("seq bodies carry ts");
    assert_eq!(l.samples, expected);
    let by_sec = &report.latency_by_sec;
    assert!(by_sec.len() >= 2, "{by_sec:?}");
    assert_eq!(by_sec.iter().map(|s| s.samples).sum::<u64>(), expected);
    assert!(by_sec.windows(2).all(|w| w[0].sec < w[1].sec));
    assert!(f64::from(by_sec.last().unwrap().sec) <= report.elapsed_secs);
    for s in by_sec {
        assert!(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max, "{s:?}");
    }
    // The slowest second holds the run's maximum (within the seconds' two digits).
    let max = by_sec.iter().map(|s| s.max).max().unwrap();
    assert!(max.abs_diff(l.max) <= l.max / 50 + 1, "{max} vs {}", l.max);
    let cdf = &report.latency_cdf;
    assert_eq!(
        cdf.last().map(|p| (p.percentile, p.us)),
        Some((100.0, l.max))
    );
    let now_ms = support::now_us() / 1000;
    assert!(report.started_unix_ms <= now_ms && report.started_unix_ms + 60_000 > now_ms);

    let dir = std::env::temp_dir().join(format!("loadtest-report-{}", std::process::id()));
    loadtest::output::write_all(&report, &dir).unwrap();
    for file in ["throughput.svg", "latency.svg", "latency_cdf.svg"] {
        let svg = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{file}"
        );
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("![the whole run's latency by percentile](latency_cdf.svg)"),
        "{md}"
    );

    // What --agent writes, read back as merge reads it.
    report.agent.on = true;
    let path = dir.join("agent.json");
    std::fs::write(&path, serde_json::to_string(&report).unwrap()).unwrap();
    let back = loadtest::merge::read_agent(&path).unwrap();
    assert_eq!(back.agent.latency_histogram.len(), expected);
    assert_eq!(back.latency_by_sec, report.latency_by_sec);
    let merged = loadtest::merge::merge(vec![("a".into(), back)]);
    assert_eq!(merged.latency_us.map(|l| l.samples), Some(expected));
    assert_eq!(merged.latency_by_sec, report.latency_by_sec);
    assert_eq!(merged.messages, report.messages);
    let _ = std::fs::remove_dir_all(&dir);
}
