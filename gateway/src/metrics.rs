//! Prometheus metrics: `GET /metrics` on `metrics_bind` serves every shard's counters as one
//! series per shard (`shard="N"`), plus gateway-wide values (ingress inbox-full waits, uplink
//! drops, rooms). Read from the counters the shards publish once per loop turn; serving a scrape
//! touches no shard.

use std::fmt::Write;
use std::sync::Arc;

use crate::ingress::Ingress;
use crate::shard::Shared;

/// Gauges among the counters (the rest are monotonic counters).
const GAUGES: [&str; 3] = ["connections", "authenticated", "rooms"];

/// Counters rendered as one family with a `reason` label: (field prefix, metric, help).
const BY_REASON: [(&str, &str, &str); 2] = [
    (
        "auth_failed_",
        "corecast_gateway_auth_failures_total",
        "auths refused, by reason (not_json, unsigned, no_expiry, bad_signature, expired, newline)",
    ),
    (
        "refused_",
        "corecast_gateway_refused_total",
        "connections refused before auth, by reason (gateway_full, ip_limit, ip_rate, memory, origin)",
    ),
];

/// The exposition text for the current values.
pub fn render(shared: &Shared, ingress: &Ingress) -> String {
    shared.admission.check_memory(shared.now_ms(), 0);
    let shards: Vec<_> = shared.stats.iter().map(|s| s.read()).collect();
    let mut out = String::new();
    if let Some(first) = shards.first() {
        let fields = first.fields();
        for (prefix, metric, help) in BY_REASON {
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} counter");
            for (i, (name, _, _)) in fields.iter().enumerate() {
                let Some(reason) = name.strip_prefix(prefix) else {
                    continue;
                };
                for (shard, c) in shards.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{metric}{{shard=\"{shard}\",reason=\"{reason}\"}} {}",
                        c.fields()[i].2
                    );
                }
            }
        }
        for (i, (name, help, _)) in fields.into_iter().enumerate() {
            if BY_REASON.iter().any(|(p, _, _)| name.starts_with(p)) {
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
    let gateway = [
        (
            "corecast_gateway_inbox_full_total",
            "counter",
            "times the ingress found a shard's inbox full and waited",
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
