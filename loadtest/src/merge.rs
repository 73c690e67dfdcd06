//! `corecast loadtest merge A.json B.json ...`: the reports of several testers (each run with
//! `--agent`, typically one per machine, all against the same gateways) as one report, as if
//! one tester had held all their connections. Counts and reason maps are summed; latency
//! histograms are added and the percentiles computed again; the per-second series are lined
//! up by each run's wall-clock start; tester CPU, threads and rings are summed; each tester's
//! warnings are kept under its file's name.
//!
//! With publishers, the expected messages assume every tester's connections were in the room
//! (or took the broadcast) that every publisher pushed to: all authenticated connections x
//! all pushes answered with code 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::publish::PublishReport;
use crate::report::{HoldReport, Latency};
use crate::{Error, Result};

/// Combine the reports of several `corecast loadtest --agent` runs into one.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct MergeArgs {
    /// Reports written with `corecast loadtest --agent` (its `--report FILE`, or its stdout
    /// saved to a file), one per tester.
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Write the merged JSON report to this file instead of stdout.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Also write the merged report for a person into this directory: report.json,
    /// report.md and SVG charts.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Reads one tester's report; it must have been written with `--agent`.
pub fn read_agent(path: &Path) -> Result<HoldReport> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Merge(format!("cannot read {name}: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Merge(format!("{name} is not a JSON report: {e}")))?;
    if value.get("connections").is_none() {
        return Err(Error::Merge(format!(
            "{name} is not a corecast loadtest report (no \"connections\")"
        )));
    }
    if value.get("agent").is_none() {
        return Err(Error::Merge(format!(
            "{name} was not written with --agent: it has no latency histograms to merge (run that tester again with --agent)"
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| Error::Merge(format!("{name} is not a loadtest --agent report: {e}")))
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Adds `b`'s counts into `a`, `b`'s second `i` into `a`'s second `i + offset`.
fn add_series(a: &mut Vec<u64>, b: &[u64], offset: usize) {
    if a.len() < offset + b.len() {
        a.resize(offset + b.len(), 0);
    }
    for (i, v) in b.iter().enumerate() {
        a[offset + i] += v;
    }
}

/// Two publishers' HTTP call times, without their histograms: samples added, the mean
/// weighted, each percentile the larger of the two (an upper bound).
fn add_call_latency(a: Option<Latency>, b: Option<Latency>) -> Option<Latency> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let samples = a.samples + b.samples;
            Some(Latency {
                samples,
                mean: if samples > 0 {
                    (a.mean * a.samples as f64 + b.mean * b.samples as f64) / samples as f64
                } else {
                    0.0
                },
                p50: a.p50.max(b.p50),
                p90: a.p90.max(b.p90),
                p99: a.p99.max(b.p99),
                p999: a.p999.max(b.p999),
                max: a.max.max(b.max),
            })
        }
        (a, b) => a.or(b),
    }
}

fn add_publish(a: &mut PublishReport, b: &PublishReport) {
    a.sent += b.sent;
    a.ok += b.ok;
    add_map(&mut a.errors, &b.errors);
    a.late_over_1ms += b.late_over_1ms;
    add_series(&mut a.ok_by_group, &b.ok_by_group, 0);
    a.call_us = add_call_latency(a.call_us, b.call_us);
    a.secs = a.secs.max(b.secs);
}

/// Several testers' reports (named, for their warnings) as one.
pub fn merge(agents: Vec<(String, HoldReport)>) -> HoldReport {
    let start_ms = agents
        .iter()
        .map(|(_, r)| r.started_unix_ms)
        .min()
        .unwrap_or(0);
    let mut m = HoldReport {
        started_unix_ms: start_ms,
        ..HoldReport::default()
    };
    let mut latency = crate::timeline::run_histogram();
    let mut seconds = crate::timeline::Seconds::default();
    let mut publish: Option<PublishReport> = None;
    let (mut first_auth, mut last_auth) = (None::<f64>, None::<f64>);
    for (name, r) in agents {
        // Where this run started, from the earliest one.
        let from_start = (r.started_unix_ms - start_ms) as f64 / 1000.0;
        let offset = from_start.round() as usize;
        m.connections += r.connections;
        m.attempted += r.attempted;
        m.established += r.established;
        m.authenticated += r.authenticated;
        m.open_at_end += r.open_at_end;
        m.closed_by_server += r.closed_by_server;
        for (mine, theirs) in [
            (&mut m.close_reasons, &r.close_reasons),
            (&mut m.connect_errors, &r.connect_errors),
            (&mut m.errors, &r.errors),
            (&mut m.malformed, &r.malformed),
        ] {
            add_map(mine, theirs);
        }
        m.hold_secs = m.hold_secs.max(r.hold_secs);
        m.elapsed_secs = m.elapsed_secs.max(from_start + r.elapsed_secs);
        m.messages += r.messages;
        m.frames += r.frames;
        m.bytes += r.bytes;
        add_series(&mut m.messages_per_sec, &r.messages_per_sec, offset);
        m.heartbeats_sent += r.heartbeats_sent;
        m.heartbeat_replies += r.heartbeat_replies;
        m.recv_no_buffer += r.recv_no_buffer;
        m.order.add(&r.order);
        m.cpu_secs += r.cpu_secs;
        m.worker_cpu_secs += r.worker_cpu_secs;
        m.threads += r.threads;
        m.rings += r.rings;
        if let Some(p) = &r.publish {
            add_publish(publish.get_or_insert_with(PublishReport::default), p);
        }
        m.warnings
            .extend(r.warnings.iter().map(|w| format!("{name}: {w}")));
        let a = r.agent;
        // Same bounds on both sides: adding cannot fail.
        let _ = latency.add(&a.latency_histogram);
        for (sec, pairs) in a.latency_by_sec_histograms.pairs() {
            seconds.add(u64::from(sec) + offset as u64, &pairs);
        }
        if let Some(f) = a.first_auth_secs {
            first_auth = Some(first_auth.map_or(from_start + f, |x| x.min(from_start + f)));
        }
        if let Some(l) = a.last_auth_secs {
            last_auth = Some(last_auth.map_or(from_start + l, |x| x.max(from_start + l)));
        }
    }
    if let (Some(f), Some(l)) = (first_auth, last_auth) {
        m.connect_secs = (l - f).max(0.0);
        if l > 0.0 {
            m.auth_rate = m.authenticated as f64 / l;
        }
    }
    m.agent.first_auth_secs = first_auth;
    m.agent.last_auth_secs = last_auth;
    m.set_latency(latency, seconds);
    // Merged reports can be merged again.
    m.agent.on = true;
    if let Some(p) = publish {
        // Keep the testers' warnings, not a new one about the publishers together.
        let warnings = std::mem::take(&mut m.warnings);
        m.set_publish(p, None);
        m.warnings = warnings;
    }
    m
}

/// `corecast loadtest merge`: reads the reports, merges them, writes the JSON report (stdout
/// or `--report`) and `--out`'s files, prints the summary on stderr.
pub fn run(args: &MergeArgs) -> Result<HoldReport> {
    let mut agents = Vec::with_capacity(args.reports.len());
    for path in &args.reports {
        agents.push((path.display().to_string(), read_agent(path)?));
    }
    let report = merge(agents);
    crate::output::emit(&report, args.report.as_deref(), args.out.as_deref())?;
    if !args.quiet {
        eprintln!("merged {} reports:", args.reports.len());
        eprint!("{}", report.summary());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{self, Seconds};

    /// A tester's report with `n` latency samples of `us` in second `sec`, started at `start_ms`.
    fn agent(start_ms: u64, n: u64, us: u64, sec: u64) -> HoldReport {
        let mut h = timeline::run_histogram();
        let mut s = Seconds::default();
        for _ in 0..n {
            h.record(us).unwrap();
            s.record(sec, us);
        }
        let mut r = HoldReport {
            connections: 50,
            attempted: 50,
            established: 50,
            authenticated: 50,
            open_at_end: 50,
            messages: n,
            frames: n,
            bytes: n * 30,
            messages_per_sec: vec![0, n, 0],
            started_unix_ms: start_ms,
            elapsed_secs: 3.0,
            hold_secs: 2.0,
            worker_cpu_secs: 0.5,
            cpu_secs: 0.6,
            threads: 1,
            rings: 1,
            ..HoldReport::default()
        };
        r.close_reasons.insert("eof".into(), 1);
        r.set_latency(h, s);
        r.agent.first_auth_secs = Some(0.1);
        r.agent.last_auth_secs = Some(0.5);
        r.agent.on = true;
        r
    }

    #[test]
    fn counts_add_up_and_seconds_line_up_by_start() {
        let a = agent(1_000_000, 100, 1_000, 1);
        let mut b = agent(1_002_000, 300, 5_000, 1);
        b.warnings.push("busy".into());
        b.publish = Some(PublishReport {
            sent: 10,
            ok: 10,
            secs: 2.0,
            ..PublishReport::default()
        });
        let m = merge(vec![("a.json".into(), a), ("b.json".into(), b)]);
        assert_eq!(
            (m.connections, m.authenticated, m.messages),
            (100, 100, 400)
        );
        assert_eq!(m.close_reasons["eof"], 2);
        assert_eq!((m.threads, m.rings), (2, 2));
        assert!((m.worker_cpu_secs - 1.0).abs() < 1e-9);
        // b started 2 s after a: its second 1 is the merged second 3.
        assert_eq!(m.messages_per_sec, [0, 100, 0, 300, 0]);
        assert!((m.elapsed_secs - 5.0).abs() < 1e-9);
        let secs: Vec<(u32, u64)> = m
            .latency_by_sec
            .iter()
            .map(|l| (l.sec, l.samples))
            .collect();
        assert_eq!(secs, [(1, 100), (3, 300)]);
        let l = m.latency_us.unwrap();
        assert_eq!(l.samples, 400);
        assert!((900..=1_001).contains(&l.p50) || (4_990..=5_010).contains(&l.p50));
        assert!((4_990..=5_010).contains(&l.p99), "{l:?}");
        // Auth from a's first (0.1 s) to b's last (2.5 s).
        assert!((m.connect_secs - 2.4).abs() < 1e-9, "{}", m.connect_secs);
        assert!((m.auth_rate - 40.0).abs() < 1e-9, "{}", m.auth_rate);
        assert_eq!(m.warnings, ["b.json: busy"]);
        // Every authenticated connection of either tester should have had every push.
        assert_eq!(m.expected_messages, Some(1_000));
        assert_eq!(m.publish.as_ref().map(|p| p.ok), Some(10));
        assert!(!m.latency_cdf.is_empty());
        // A merged report is itself an agent report.
        let json = serde_json::to_value(&m).unwrap();
        assert!(json["agent"]["latency_histogram"].is_array());
    }

    #[test]
    fn reports_go_through_json() {
        let dir = std::env::temp_dir().join(format!("loadtest-merge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, r: &HoldReport| {
            let p = dir.join(name);
            std::fs::write(&p, serde_json::to_string(r).unwrap()).unwrap();
            p
        };
        let a = write("a.json", &agent(5_000, 10, 700, 0));
        let back = read_agent(&a).unwrap();
        assert_eq!(back.latency_us.unwrap().samples, 10);
        assert_eq!(back.agent.latency_by_sec_histograms.pairs().len(), 1);
        assert!(back.agent.on);

        let mut plain = agent(5_000, 10, 700, 0);
        plain.agent.on = false;
        let plain = write("plain.json", &plain);
        let err = read_agent(&plain).unwrap_err().to_string();
        assert!(
            err.contains("plain.json was not written with --agent"),
            "{err}"
        );
        let missing = dir.join("missing.json");
        let err = read_agent(&missing).unwrap_err().to_string();
        assert!(
            err.contains("cannot read") && err.contains("missing.json"),
            "{err}"
        );
        std::fs::write(dir.join("junk.json"), "{\"connections\": 1, \"agent\": {}}").unwrap();
        let err = read_agent(&dir.join("junk.json")).unwrap_err().to_string();
        assert!(
            err.contains("junk.json is not a loadtest --agent report"),
            "{err}"
        );
        std::fs::write(dir.join("text.json"), "hello").unwrap();
        let err = read_agent(&dir.join("text.json")).unwrap_err().to_string();
        assert!(err.contains("text.json is not a JSON report"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
