//! The hold scenario: open every connection, authenticate it, hold it with heartbeats for a
//! while and count what arrives. The hold ends `duration` after every connection settled
//! (authenticated or failed), when the stop flag is set, or when no connection is left open. This thread spawns the workers, watches the shared counters
//! (one progress line per second, the per-second message series, the stop flag, the end of the
//! hold), then halts the workers and merges what they counted into the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::disrupt::{ReconnectReport, Reconnects};
use crate::live::Snapshot;
use crate::options::HoldOptions;
use crate::plan::Plan;
use crate::progress::{Line, LiveLatency, Progress};
use crate::report::HoldReport;
use crate::sequence::Gaps;
use crate::tally::{Shared, Tally};
use crate::worker::{self, Outcome, Setup};
use crate::{Error, Result, cpu};

/// How often the watcher looks at the counters and the stop flag.
const WATCH: Duration = Duration::from_millis(20);

/// Runs a hold and returns its report. Connection-level problems are in the report; an
/// `Err` means the run could not start or a worker failed.
pub fn run(opts: HoldOptions) -> Result<HoldReport> {
    opts.validate()?;
    let plan = Arc::new(Plan::new(&opts)?);
    let total = plan.total();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let threads = match opts.threads {
        0 => cores.len().max(1),
        n => n,
    }
    .min(total as usize)
    .max(1);
    let halt = Arc::new(AtomicBool::new(false));
    let live = opts.live.clone();
    let before = live.snapshot();
    let cpu0 = cpu::process_secs();
    let start = Instant::now();
    // Every worker counts latency seconds from this instant, on the wall clock.
    let started_unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let shared = Arc::new(Shared::starting_at(started_unix_us));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let setup = Setup {
            index: t,
            threads,
            core: (!cores.is_empty()).then(|| cores[t % cores.len()]),
            plan: plan.clone(),
            heartbeat_ms: opts.heartbeat_secs.saturating_mul(1000),
            connect_timeout: opts.connect_timeout,
            auth_timeout: opts.auth_timeout,
            inflight: opts.inflight,
            rate: opts.rate as f64 / threads as f64,
            slots_per_ring: opts.slots_per_ring,
            recv_buffers: opts.recv_buffers,
            recv_buffer_size: opts.recv_buffer_size,
            live: live.clone(),
            halt: halt.clone(),
            orders: opts.orders.clone(),
            storm: opts.storm,
            churn: opts.churn / threads as f64,
            reconnect: opts.reconnect || opts.storm.is_some() || opts.churn > 0.0,
            backoff: opts.backoff,
            stall: opts.stall,
            rcvbuf: opts.rcvbuf,
            shared: shared.clone(),
            nodes: opts.nodes.clone(),
            server_backoff: opts.server_backoff,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("loadtest-{t}"))
            .spawn(move || worker::run(setup));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                halt.store(true, Ordering::Relaxed);
                for h in handles {
                    let _ = h.join();
                }
                return Err(Error::io("spawning a worker thread", e));
            }
        }
    }

    // `--nodes`: one thread keeps the node list fresh while workers reconnect.
    let refresher = opts.nodes.as_ref().map(|n| n.spawn_refresher(halt.clone()));
    let mut series = Vec::new();
    let mut reconnect_series = Vec::new();
    let mut last = before;
    let mut next_tick = start + Duration::from_secs(1);
    let mut held_from: Option<Instant> = None;
    let orders = &opts.orders;
    let mut storm_at: Option<Instant> = None;
    let mut recovery: Option<f64> = None;
    let mut drained: Option<f64> = None;
    let mut shown = (!opts.quiet).then(|| Progress::new(total));
    loop {
        std::thread::sleep(WATCH);
        let now = Instant::now();
        let snap = live.snapshot();
        if held_from.is_none() && snap.settled - before.settled >= total {
            held_from = Some(now);
            if opts.churn > 0.0 {
                orders.churning.store(true, Ordering::Relaxed);
            }
        }
        let reconnecting = snap.reconnecting.wrapping_sub(before.reconnecting);
        if let Some(h) = held_from {
            let into = now - h;
            if let Some(storm) = opts.storm
                && storm_at.is_none()
                && into >= storm.at
            {
                storm_at = Some(now);
                orders.storms.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(stall) = opts.stall {
                let on = into >= stall.at && into < stall.at + stall.length;
                orders.stalled.store(on, Ordering::Relaxed);
            }
        }
        // A storm's connections are back once none is waiting (checked a little after the
        // storm, so the workers have seen it).
        if let Some(at) = storm_at
            && recovery.is_none()
            && opts.churn == 0.0
            && now >= at + WATCH * 5
            && reconnecting == 0
        {
            recovery = Some((now - at).as_secs_f64());
        }
        if now >= next_tick {
            series.push(snap.messages - last.messages);
            reconnect_series.push(snap.reconnected - last.reconnected);
            if let Some(p) = &mut shown {
                progress(p, start, total, &before, &last, &snap, &shared.live_latency);
            }
            last = snap;
            next_tick += Duration::from_secs(1);
        }
        // Nothing left to hold: every connection settled and none is open.
        let all_gone =
            held_from.is_some() && snap.open.wrapping_sub(before.open) == 0 && reconnecting == 0;
        // Past --duration, a drain waits for the messages still on their way.
        let over = held_from.filter(|&h| now >= h + opts.duration);
        let draining = match over {
            Some(h) if !opts.drain.is_zero() => {
                let caught_up =
                    snap.publishing == 0 && received(&snap, &before) >= expected(&snap, &before);
                if caught_up {
                    drained = Some((now - (h + opts.duration)).as_secs_f64());
                }
                !caught_up && now < h + opts.duration + opts.drain
            }
            _ => false,
        };
        if opts.stop.load(Ordering::Relaxed)
            || (over.is_some() && !draining)
            || all_gone
            || handles.iter().any(|h| h.is_finished())
        {
            break;
        }
    }
    halt.store(true, Ordering::Relaxed);
    orders.churning.store(false, Ordering::Relaxed);
    orders.stalled.store(false, Ordering::Relaxed);
    let ended = Instant::now();
    if let Some(r) = refresher {
        let _ = r.join();
    }
    if let Some(p) = &shown {
        p.finish();
    }
    let mut outcomes = Vec::with_capacity(threads);
    let mut failure = None;
    for (t, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(o)) => outcomes.push(o),
            Ok(Err(message)) => failure = failure.or(Some(Error::Worker { thread: t, message })),
            Err(_) => {
                failure = failure.or(Some(Error::Worker {
                    thread: t,
                    message: "panicked".into(),
                }))
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let end_snap = live.snapshot();
    series.push(end_snap.messages - last.messages);
    reconnect_series.push(end_snap.reconnected - last.reconnected);
    Ok(report(Run {
        total,
        threads,
        start,
        started_unix_us,
        ended,
        held_from,
        outcomes,
        series,
        reconnect_series,
        cpu_secs: cpu::process_secs() - cpu0,
        disrupted: opts.storm.is_some()
            || opts.churn > 0.0
            || opts.stall.is_some()
            || opts.reconnect,
        storms: orders.storms.load(Ordering::Relaxed),
        recovery,
        drained,
    }))
}

/// One second's progress: the counters since `base`, messages since `last`, and the p99 of
/// the latency samples the workers fed since the last line.
fn progress(
    p: &mut Progress,
    start: Instant,
    total: u64,
    base: &Snapshot,
    last: &Snapshot,
    now: &Snapshot,
    latency: &LiveLatency,
) {
    let p99 = p.p99_since_last(latency);
    p.show(&Line::of(start.elapsed(), total, base, last, now, p99));
}

struct Run {
    total: u64,
    threads: usize,
    start: Instant,
    /// `start` on the wall clock, unix µs.
    started_unix_us: u64,
    ended: Instant,
    held_from: Option<Instant>,
    outcomes: Vec<Outcome>,
    series: Vec<u64>,
    /// Replacements authenticated per second.
    reconnect_series: Vec<u64>,
    cpu_secs: f64,
    /// The run had storms, churn, stalls or reconnects to report.
    disrupted: bool,
    storms: u32,
    recovery: Option<f64>,
    /// With --drain: seconds past --duration until every expected message had arrived.
    drained: Option<f64>,
}

/// Messages received since `before`.
fn received(now: &Snapshot, before: &Snapshot) -> u64 {
    now.messages.wrapping_sub(before.messages)
}

/// Messages the publisher's accepted pushes should have delivered by `now` (as
/// [`HoldReport::set_publish`] counts them at the end).
fn expected(now: &Snapshot, before: &Snapshot) -> u64 {
    let authenticated = now.authenticated.wrapping_sub(before.authenticated);
    let pushes = now.pushes_ok.wrapping_sub(before.pushes_ok);
    authenticated * pushes + now.expected_by_group.wrapping_sub(before.expected_by_group)
}

fn report(run: Run) -> HoldReport {
    let mut t = Tally::default();
    let mut worker_cpu_secs = 0.0;
    let mut rings = 0;
    let mut reconnects = Reconnects::default();
    let mut gaps = Gaps::default();
    let mut waiting = 0;
    for o in run.outcomes {
        worker_cpu_secs += o.cpu_secs;
        rings += o.rings;
        t.merge(o.tally);
        reconnects.merge(&o.reconnects);
        gaps.merge(o.gaps);
        waiting += o.waiting;
    }
    let secs = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64();
    let (connect_secs, auth_rate) = match (t.first_auth, t.last_auth) {
        (Some(a), Some(b)) => {
            let to_last = secs(run.start, b);
            let rate = if to_last > 0.0 {
                t.live.authenticated as f64 / to_last
            } else {
                0.0
            };
            (secs(a, b), rate)
        }
        _ => (0.0, 0.0),
    };
    let l = t.live;
    let mut r = HoldReport {
        connections: run.total,
        attempted: l.attempted,
        established: l.established,
        authenticated: l.authenticated,
        open_at_end: l.open,
        closed_by_server: l.closed_by_server,
        close_reasons: t.close_reasons,
        connect_errors: t.connect_errors,
        errors: t.errors,
        malformed: t.malformed,
        connect_secs,
        auth_rate,
        hold_secs: run.held_from.map_or(0.0, |h| secs(h, run.ended)),
        elapsed_secs: secs(run.start, run.ended),
        started_unix_ms: run.started_unix_us / 1000,
        messages: l.messages,
        frames: l.frames,
        bytes: l.bytes,
        messages_per_sec: run.series,
        heartbeats_sent: t.heartbeats_sent,
        heartbeat_replies: t.heartbeat_replies,
        recv_no_buffer: t.recv_no_buffer,
        order: t.order,
        latency_us: None,
        latency_by_sec: Vec::new(),
        latency_cdf: Vec::new(),
        cpu_secs: run.cpu_secs,
        worker_cpu_secs,
        threads: run.threads,
        rings,
        publish: None,
        expected_messages: None,
        missing_messages: None,
        drained_secs: run.drained,
        reconnects: run.disrupted.then(|| {
            ReconnectReport::of(
                &reconnects,
                run.storms,
                waiting,
                run.recovery,
                run.reconnect_series,
            )
        }),
        gaps,
        warnings: Vec::new(),
        agent: Default::default(),
    };
    r.set_latency(t.latency, t.seconds);
    r.agent.first_auth_secs = t.first_auth.map(|a| secs(run.start, a));
    r.agent.last_auth_secs = t.last_auth.map(|b| secs(run.start, b));
    r.warnings = r.tester_warnings();
    r
}
