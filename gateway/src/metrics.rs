//! Prometheus metrics: `GET /metrics` on `metrics_bind` serves every shard's counters as one
//! series per shard (`shard="N"`), its inbox ring (depth, capacity, full events), its handshake
//! and write latency histograms, plus gateway-wide values (ingress inbox-full waits, uplink
//! drops, rooms). Read from what the shards publish once per loop turn and from the inbox
//! rings' own counters; serving a scrape touches no shard.

use std::fmt::Write;
use std::sync::Arc;

use crate::ingress::Ingress;
use crate::latency::{BOUNDS_US, Histogram};
use crate::shard::Shared;

/// Gauges among the counters (the rest are monotonic counters).
const GAUGES: [&str; 3] = ["connections", "authenticated", "rooms"];

/// Counters rendered as one family with a label: (field prefix, metric, help, label).
const BY_REASON: [(&str, &str, &str, &str); 3] = [
    (
        "auth_failed_",
        "corecast_gateway_auth_failures_total",
        "auths refused, by reason (not_json, unsigned, no_expiry, bad_signature, expired, newline)",
        "reason",
    ),
    (
        "refused_",
        "corecast_gateway_refused_total",
        "connections refused before auth, by reason (gateway_full, ip_limit, ip_rate, memory, origin)",
        "reason",
    ),
    (
        "recovery_",
        "corecast_gateway_recoveries_total",
        "recoveries (op 26) by outcome (found, too_old, unknown, timeout, refused)",
        "outcome",
    ),
];

/// The exposition text for the current values.
pub fn render(shared: &Shared, ingress: &Ingress) -> String {
    shared.admission.check_memory(shared.now_ms(), 0);
    let shards: Vec<_> = shared.stats.iter().map(|s| s.read()).collect();
    let mut out = String::new();
    if let Some(first) = shards.first() {
        let fields = first.fields();
        for (prefix, metric, help, label) in BY_REASON {
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} counter");
            for (i, (name, _, _)) in fields.iter().enumerate() {
                let Some(reason) = name.strip_prefix(prefix) else {
                    continue;
                };
                for (shard, c) in shards.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{metric}{{shard=\"{shard}\",{label}=\"{reason}\"}} {}",
                        c.fields()[i].2
                    );
                }
            }
        }
        for (i, (name, help, _)) in fields.into_iter().enumerate() {
            if BY_REASON.iter().any(|(p, _, _, _)| name.starts_with(p)) {
                continue;
            }
            let kind = if GAUGES.contains(&name) {
                "gauge"
            } else {
                "counter"
            };
            let metric = if kind == "counter" {
                format!("corecast_gateway_{name}_total")
            } else {
                format!("corecast_gateway_{name}")
            };
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            for (shard, c) in shards.iter().enumerate() {
                let _ = writeln!(out, "{metric}{{shard=\"{shard}\"}} {}", c.fields()[i].2);
            }
        }
    }
    ring_series(&mut out, shared);
    latency_series(&mut out, shared);
    let gateway = [
        (
            "corecast_gateway_inbox_full_total",
            "counter",
            "times the ingress found a shard's inbox full and waited (all shards; per shard: corecast_gateway_ring_full_total)",
            ingress.ring_full(),
        ),
        (
            "corecast_gateway_uplink_dropped_total",
            "counter",
            "session events and upstream messages no dispatcher took",
            shared.uplink_dropped(),
        ),
        (
            "corecast_gateway_accepting",
            "gauge",
            "1 while the gateway takes new connections; 0 while draining or over its memory ceiling (it then reports itself offline to the dispatchers)",
            u64::from(!shared.admission.offline()),
        ),
        (
            "corecast_gateway_over_memory",
            "gauge",
            "1 while resident memory is over limits.max_memory_mb",
            u64::from(shared.admission.over_memory()),
        ),
        (
            "corecast_gateway_resident_bytes",
            "gauge",
            "resident memory of the process at the last check (every second with limits.max_memory_mb set, else at each scrape)",
            shared.admission.rss(),
        ),
        (
            "corecast_gateway_source_ips",
            "gauge",
            "distinct source addresses with a connection (goim's ip_count)",
            shared.admission.ip_count(),
        ),
        (
            "corecast_gateway_tls_reloads_total",
            "counter",
            "WSS certificate reloads that succeeded (SIGHUP)",
            shared.tls.as_ref().map_or(0, |t| t.reloads()),
        ),
        (
            "corecast_gateway_tls_reload_errors_total",
            "counter",
            "WSS certificate reloads that failed (the previous certificate stayed)",
            shared.tls.as_ref().map_or(0, |t| t.reload_errors()),
        ),
        (
            "corecast_gateway_room_keys",
            "gauge",
            "rooms with members on this gateway",
            shared.online.snapshot().len() as u64,
        ),
    ];
    for (metric, kind, help, value) in gateway {
        let _ = writeln!(
            out,
            "# HELP {metric} {help}\n# TYPE {metric} {kind}\n{metric} {value}"
        );
    }
    out
}

/// Each shard's inbox ring (ingress → shard): depth now, capacity, times found full.
fn ring_series(out: &mut String, shared: &Shared) {
    type Read = fn(&crate::inbox::Inbox) -> u64;
    let families: [(&str, &str, &str, Read); 3] = [
        (
            "corecast_gateway_ring_depth",
            "gauge",
            "messages waiting in the shard's inbox ring (pushes from the ingress not yet taken)",
            |i| i.len() as u64,
        ),
        (
            "corecast_gateway_ring_capacity",
            "gauge",
            "the shard's inbox ring capacity (engine.inbox_capacity)",
            |i| i.capacity() as u64,
        ),
        (
            "corecast_gateway_ring_full_total",
            "counter",
            "times the ingress found the shard's inbox ring full and waited",
            |i| i.full_count(),
        ),
    ];
    for (metric, kind, help, read) in families {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
        for (shard, inbox) in shared.inboxes.iter().enumerate() {
            let _ = writeln!(out, "{metric}{{shard=\"{shard}\"}} {}", read(inbox));
        }
    }
}

/// Each shard's handshake and write latency histograms.
fn latency_series(out: &mut String, shared: &Shared) {
    let metric = "corecast_gateway_handshake_seconds";
    let _ = writeln!(
        out,
        "# HELP {metric} accept to the auth reply written (outcome=ok), or to the handshake's end otherwise (outcome=failed: refused token, bad input, deadline, refusal, client gone)\n# TYPE {metric} histogram"
    );
    for (shard, s) in shared.stats.iter().enumerate() {
        let l = &s.latency;
        for (outcome, h) in [("ok", &l.handshake_ok), ("failed", &l.handshake_failed)] {
            let labels = format!("shard=\"{shard}\",outcome=\"{outcome}\"");
            histogram(out, metric, &labels, &h.read());
        }
    }
    let metric = "corecast_gateway_write_seconds";
    let _ = writeln!(
        out,
        "# HELP {metric} a socket write submitted to io_uring to its completion\n# TYPE {metric} histogram"
    );
    for (shard, s) in shared.stats.iter().enumerate() {
        let labels = format!("shard=\"{shard}\"");
        histogram(out, metric, &labels, &s.latency.write.read());
    }
}

/// One histogram's samples: cumulative `_bucket`s (`le` in seconds, `+Inf` last), `_sum`
/// (seconds), `_count`.
pub fn histogram(out: &mut String, metric: &str, labels: &str, h: &Histogram) {
    let cumulative = h.cumulative();
    for (i, c) in cumulative.iter().enumerate() {
        let le = BOUNDS_US
            .get(i)
            .map_or("+Inf".to_string(), |&us| seconds(us));
        let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"{le}\"}} {c}");
    }
    let _ = writeln!(
        out,
        "{metric}_sum{{{labels}}} {}\n{metric}_count{{{labels}}} {}",
        seconds(h.sum_us),
        h.count
    );
}

/// Microseconds as decimal seconds, exactly (`50` → `0.00005`, `2500000` → `2.5`).
pub fn seconds(us: u64) -> String {
    let (s, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        return s.to_string();
    }
    let f = format!("{frac:06}");
    format!("{s}.{}", f.trim_end_matches('0'))
}

/// Serves `/metrics` on its own thread until the gateway stops.
pub(crate) fn serve(
    addr: &str,
    shared: Arc<Shared>,
    ingress: Ingress,
) -> crate::Result<std::net::SocketAddr> {
    let server = tiny_http::Server::http(addr).map_err(|e| crate::Error::Listen {
        addr: addr.to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let local = server.server_addr().to_ip().ok_or_else(|| {
        crate::Error::Config(format!("metrics_bind {addr:?} is not an IP address"))
    })?;
    std::thread::Builder::new()
        .name("corecast-metrics".into())
        .spawn(move || {
            while !shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(Some(req)) = server.recv_timeout(std::time::Duration::from_millis(200))
                else {
                    continue;
                };
                let response = if req.url() == "/metrics" {
                    let body = render(&shared, &ingress);
                    tiny_http::Response::from_string(body).with_header(
                        "Content-Type: text/plain; version=0.0.4"
                            .parse::<tiny_http::Header>()
                            .expect("a valid header"),
                    )
                } else {
                    tiny_http::Response::from_string(format!(
                        "no such path {}: try /metrics\n",
                        req.url()
                    ))
                    .with_status_code(404)
                };
                let _ = req.respond(response);
            }
        })
        .map_err(|e| crate::Error::io("spawning the metrics thread", e))?;
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(50), "0.00005");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(10_000_000), "10");
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_000_001), "1.000001");
    }

    #[test]
    fn histogram_exposition_is_cumulative_with_inf_equal_to_count() {
        let mut h = Histogram::default();
        for us in [10, 60, 60, 20_000_000] {
            h.observe(us);
        }
        let mut out = String::new();
        histogram(&mut out, "m", "shard=\"0\"", &h);
        assert!(
            out.contains("m_bucket{shard=\"0\",le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("m_bucket{shard=\"0\",le=\"0.0001\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("m_bucket{shard=\"0\",le=\"10\"} 3\n"), "{out}");
        assert!(
            out.contains("m_bucket{shard=\"0\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("m_sum{shard=\"0\"} 20.00013\n"), "{out}");
        assert!(out.ends_with("m_count{shard=\"0\"} 4\n"), "{out}");
    }
}
