//! Per-shard counters. A shard counts in plain integers and publishes them once per loop turn,
//! so the per-message path touches no atomics; readers (metrics, tests, benchmarks) see values
//! at most one loop turn old. Its latency histograms (`latency.rs`) are published beside them;
//! its inbox's depth and full events are read from the inbox itself (`inbox.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        /// A shard's counters, as plain integers (the shard's own copy).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters { $(#[doc = $doc] pub $name: u64,)* }

        /// The published copy, readable from any thread.
        #[derive(Debug, Default)]
        pub struct SharedCounters {
            $($name: AtomicU64,)*
            /// The shard's latency histograms, published beside the counters.
            pub latency: crate::latency::SharedLatency,
        }

        impl SharedCounters {
            pub fn publish(&self, c: &Counters) {
                $(self.$name.store(c.$name, Ordering::Relaxed);)*
            }
            pub fn read(&self) -> Counters {
                Counters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl std::ops::Add for Counters {
            type Output = Counters;
            fn add(self, o: Counters) -> Counters {
                Counters { $($name: self.$name + o.$name,)* }
            }
        }

        impl Counters {
            /// (name, help, value) for every counter.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $doc, self.$name),)*]
            }
        }
    };
}

counters! {
    connections: "connections open now (gauge)",
    authenticated: "authenticated connections now (gauge)",
    rooms: "rooms with members on this shard (gauge)",
    accepted: "connections accepted",
    accept_errors: "accepts that failed (the client saw a reset or nothing)",
    closed: "connections closed",
    auth_ok: "successful auths",
    auth_failed: "auths refused (bad token, bad signature, expired)",
    auth_failed_not_json: "auths refused: the token is not JSON",
    auth_failed_unsigned: "auths refused: hmac mode and the token has no sig",
    auth_failed_no_expiry: "auths refused: hmac mode and the token has no exp",
    auth_failed_bad_signature: "auths refused: the signature matches none of the secrets",
    auth_failed_expired: "auths refused: the token is past its exp",
    auth_failed_newline: "auths refused: hmac mode and key, room_id or platform holds a newline",
    refused_gateway_full: "connections refused: limits.max_connections reached",
    refused_ip_limit: "connections refused: limits.max_connections_per_ip reached",
    refused_ip_rate: "connections refused: limits.connect_rate_per_ip exceeded",
    refused_memory: "connections refused: over limits.max_memory_mb",
    refused_origin: "WebSocket upgrades refused: Origin not in auth.allowed_origins",
    bad_input: "connections closed for malformed input",
    timeouts: "connections closed by the handshake or heartbeat deadline",
    evicted: "connections closed because a newer one took their key",
    messages_out: "messages (inner frames) queued to clients",
    batches_out: "push batches queued to clients",
    room_batches_merged: "room batches merged into the one queued before them (the room outpaced the sockets)",
    turns: "event-loop turns",
    turns_at_budget: "loop turns that stopped at the work budget with fan-out work left",
    messages_written: "messages (inner frames) fully written to client sockets",
    writes: "socket writes completed",
    bytes_out: "bytes written to clients",
    cap_disconnects: "connections closed past the outbound cap",
    cap_dropped_messages: "messages dropped past the outbound cap (drop-oldest)",
    upstream_dropped: "client messages not forwarded (no dispatcher link, or its queue full)",
    tls_handshakes: "WSS: TLS handshakes completed",
    tls_errors: "WSS: connections closed for a TLS error (not TLS, bad record, failed handshake, alert from the client)",
    recover_requests: "recoveries (op 26) sent to the dispatchers",
    recovery_found: "recoveries answered with the missed messages",
    recovery_too_old: "recoveries answered too old (the gap is beyond the history)",
    recovery_unknown: "recoveries no dispatcher held a history for (joined live)",
    recovery_timeout: "recoveries no dispatcher answered in limits.recover_timeout_ms (joined live)",
    recovery_refused: "recover requests refused (malformed body, room cap, one already in progress)",
    recovered_messages: "missed messages sent by recoveries",
}
