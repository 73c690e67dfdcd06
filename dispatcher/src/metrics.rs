//! The dispatcher's counters, rendered as Prometheus text at `GET /metrics` on the HTTP port.
//! Every drop, rejection and failure the dispatcher decides on is counted here (and logged
//! where it happens), so nothing is lost silently. Beside the counters: histograms of the
//! queue's produce latency and of messages per room batch, the consumer lag, and the gateway
//! links (how many, and one series per gateway).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::App;
use crate::histogram::{BATCH_MESSAGES, Histogram, LATENCY_US, Unit};

/// Indices into [`ROUTES`].
pub mod route {
    pub const PUSH_KEYS: usize = 0;
    pub const PUSH_MIDS: usize = 1;
    pub const PUSH_ROOM: usize = 2;
    pub const PUSH_ALL: usize = 3;
    pub const ONLINE_TOP: usize = 4;
    pub const ONLINE_ROOM: usize = 5;
    pub const ONLINE_TOTAL: usize = 6;
    pub const NODES_WEIGHTED: usize = 7;
    pub const NODES_INSTANCES: usize = 8;
    pub const ROOM_HISTORY: usize = 9;
    pub const OTHER: usize = 10;
}

/// HTTP routes, for per-route request counts.
pub const ROUTES: [&str; 11] = [
    "push_keys",
    "push_mids",
    "push_room",
    "push_all",
    "online_top",
    "online_room",
    "online_total",
    "nodes_weighted",
    "nodes_instances",
    "room_history",
    "other",
];

/// goim's business codes, for per-route request counts (-401: a missing or wrong bearer
/// secret, HTTP 401; -404 and -410: no history for a room, or too old, on
/// `/goim/room/history`).
pub const CODES: [i32; 6] = [0, -400, -401, -404, -410, -500];

macro_rules! counters {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// Monotonic counters (and a few gauges), updated with relaxed atomics.
        pub struct Metrics {
            $($(#[doc = $doc])+ pub $name: AtomicU64,)+
            /// HTTP requests by route and business code.
            pub requests: [[AtomicU64; CODES.len()]; ROUTES.len()],
            /// Time for the queue to accept a message (embedded: a slot in the channel; Kafka:
            /// the broker's acknowledgement), failed and abandoned produces included.
            pub produce_seconds: Histogram,
            /// Messages per room batch flushed by the job.
            pub room_batch_messages: Histogram,
        }

        impl Default for Metrics {
            fn default() -> Metrics {
                Metrics {
                    $($name: AtomicU64::new(0),)+
                    requests: Default::default(),
                    produce_seconds: Histogram::new(&LATENCY_US, Unit::Micros),
                    room_batch_messages: Histogram::new(&BATCH_MESSAGES, Unit::Count),
                }
            }
        }

        impl Metrics {
            fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), concat!($($doc),+), self.$name.load(Ordering::Relaxed)),)+]
            }
        }
    };
}

counters! {
    /// Messages the queue accepted from the HTTP API.
    queue_produced,
    /// Messages the job took off the queue.
    queue_consumed,
    /// Queue messages that did not decode (skipped, logged).
    queue_bad_messages,
    /// Room batches sent to gateways (one per gateway per flush).
    room_batches,
    /// Room messages flushed (each counted once, however many gateways got it).
    room_messages,
    /// Key pushes sent to gateways.
    key_pushes,
    /// Broadcasts sent to gateways.
    broadcasts,
    /// Pushes for a gateway no longer (or never) registered: not deliverable.
    pushes_no_gateway,
    /// Broadcasts made while no gateway was registered.
    broadcasts_no_gateway,
    /// Pushes acknowledged by gateways.
    gateway_acks,
    /// Pushes dropped because a gateway's buffer was full (oldest first).
    gateway_buffer_dropped,
    /// Pushes dropped, unacknowledged, when their gateway was removed.
    gateway_removed_dropped,
    /// Gateway links accepted (registered).
    links_registered,
    /// Gateway links closed for a protocol error (garbage, wrong first message, oversize).
    links_rejected,
    /// Gateway links refused for a missing or wrong link proof (see `link_secrets`).
    links_refused,
    /// Gateways removed (renewal timeout or relink grace expired).
    gateways_removed,
    /// Session events received from gateways.
    session_events,
    /// Session events the registry failed to apply.
    session_errors,
    /// Upstream client messages received from gateways.
    upstream_messages,
    /// Times the queue partitions this dispatcher reads changed (Kafka's assignment, NATS and
    /// Redis leases; each clears the room history: rooms may have moved to or from another
    /// dispatcher).
    queue_assignment_changes,
    /// Recover requests answered with the missed messages.
    recover_found,
    /// Recover requests answered "too old" (the gap is beyond the history).
    recover_too_old,
    /// Recover requests for a room this dispatcher holds no history of.
    recover_unknown,
}

impl Metrics {
    /// Counts one HTTP request.
    pub fn request(&self, route: usize, code: i32) {
        let c = CODES
            .iter()
            .position(|&x| x == code)
            .unwrap_or(CODES.len() - 1);
        self.requests[route.min(ROUTES.len() - 1)][c].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answered recover request by its status (`link::history_status`).
    pub fn recover(&self, status: i32) {
        let c = match status {
            protocol::link::history_status::FOUND => &self.recover_found,
            protocol::link::history_status::TOO_OLD => &self.recover_too_old,
            _ => &self.recover_unknown,
        };
        inc(c);
    }

    /// Prometheus text exposition; `gauges` are added as-is (name, help, value).
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        for (name, help, v) in self.counters() {
            let _ = writeln!(
                out,
                "# HELP corecast_dispatcher_{name}_total {}",
                help.trim()
            );
            let _ = writeln!(out, "# TYPE corecast_dispatcher_{name}_total counter");
            let _ = writeln!(out, "corecast_dispatcher_{name}_total {v}");
        }
        let _ = writeln!(
            out,
            "# HELP corecast_dispatcher_http_requests_total HTTP API requests by route and goim code."
        );
        let _ = writeln!(
            out,
            "# TYPE corecast_dispatcher_http_requests_total counter"
        );
        for (r, route) in ROUTES.iter().enumerate() {
            for (c, code) in CODES.iter().enumerate() {
                let v = self.requests[r][c].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "corecast_dispatcher_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {v}"
                );
            }
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP corecast_dispatcher_{name} {help}");
            let _ = writeln!(out, "# TYPE corecast_dispatcher_{name} gauge");
            let _ = writeln!(out, "corecast_dispatcher_{name} {v}");
        }
        self.produce_seconds.render(
            &mut out,
            "corecast_dispatcher_queue_produce_seconds",
            "Time for the queue to accept a message (embedded: room in the channel; Kafka: acknowledged by the broker); failures and abandoned produces included.",
        );
        self.room_batch_messages.render(
            &mut out,
            "corecast_dispatcher_room_batch_messages",
            "Messages per room batch flushed by the job (one observation per flush, however many gateways get it).",
        );
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Everything `/metrics` serves: the counters and histograms, the registry and link gauges,
/// the consumer lag per partition (the queue is asked on a blocking thread: Kafka asks the
/// broker for the high watermarks), and one series per registered gateway.
pub(crate) async fn exposition(app: &Arc<App>) -> String {
    let (gateways, linked) = app.cluster.counts();
    let mut out = app.metrics.render(&[
        ("gateways", "Registered gateways.", gateways as u64),
        (
            "gateways_linked",
            "Registered gateways with a live link.",
            linked as u64,
        ),
        (
            "sessions",
            "Sessions in the registry.",
            app.registry.sessions() as u64,
        ),
    ]);
    let queue = app.queue.clone();
    let lag = tokio::task::spawn_blocking(move || queue.lag())
        .await
        .unwrap_or_default();
    let name = "corecast_dispatcher_consumer_lag_messages";
    let _ = writeln!(
        out,
        "# HELP {name} Messages in the queue not yet finished by this dispatcher's job, per partition it consumes (Kafka: the partition's high watermark minus the offset a restart would read from; embedded: partition 0, messages waiting in the channel).\n# TYPE {name} gauge"
    );
    for (partition, n) in lag {
        let _ = writeln!(out, "{name}{{partition=\"{partition}\"}} {n}");
    }
    let infos = app.cluster.infos();
    let links = app.cluster.link_states();
    type Field = fn(&crate::cluster::GatewayInfo, bool) -> u64;
    let per_gateway: [(&str, &str, Field); 3] = [
        (
            "corecast_dispatcher_gateway_linked",
            "1 while the gateway's link to this dispatcher is up.",
            |_, up| u64::from(up),
        ),
        (
            "corecast_dispatcher_gateway_offline",
            "1 while the gateway is out of the node list (refusing connections, link down, or a renew period late).",
            |g, _| u64::from(g.offline),
        ),
        (
            "corecast_dispatcher_gateway_connections",
            "Connections the gateway last reported.",
            |g, _| g.conn_count,
        ),
    ];
    for (name, help, field) in per_gateway {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for g in &infos {
            let up = links.iter().any(|(id, up)| *id == g.id && *up);
            let _ = writeln!(
                out,
                "{name}{{gateway=\"{}\"}} {}",
                label(&g.id),
                field(g, up)
            );
        }
    }
    out
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_requests_and_gauges() {
        let m = Metrics::default();
        inc(&m.queue_produced);
        m.request(2, -400);
        let text = m.render(&[("gateways", "Registered gateways.", 3)]);
        assert!(
            text.contains("corecast_dispatcher_queue_produced_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("route=\"push_room\",code=\"-400\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("corecast_dispatcher_gateways 3\n"), "{text}");
        assert!(
            text.contains("# HELP corecast_dispatcher_queue_produced_total Messages the queue")
        );
    }

    #[test]
    fn renders_the_histograms() {
        let m = Metrics::default();
        m.produce_seconds.observe(120);
        m.room_batch_messages.observe(20);
        let text = m.render(&[]);
        assert!(text.contains("# TYPE corecast_dispatcher_queue_produce_seconds histogram\n"));
        assert!(
            text.contains("corecast_dispatcher_queue_produce_seconds_bucket{le=\"0.00025\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("corecast_dispatcher_queue_produce_seconds_count 1\n"));
        assert!(text.contains("corecast_dispatcher_room_batch_messages_bucket{le=\"20\"} 1\n"));
        assert!(text.contains("corecast_dispatcher_room_batch_messages_sum 20\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
