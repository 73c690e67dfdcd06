//! Counters of a run in progress, readable from any thread: the progress line, a test waiting
//! for N authenticated connections, a harness deciding when to push.
//!
//! Each worker counts in plain integers and adds what changed here once per loop turn, so the
//! per-message path touches no atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! live {
    ($($name:ident: $doc:literal),* $(,)?) => {
        /// The shared counters (sums over the worker threads).
        #[derive(Debug, Default)]
        pub struct Live { $(#[doc = $doc] pub $name: AtomicU64,)* }

        /// A copy of [`Live`] at one instant.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct Snapshot { $(#[doc = $doc] pub $name: u64,)* }

        impl Live {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Snapshot {
            /// The counters of `self` plus those of `other` (merging workers' counts).
            pub(crate) fn sum(&self, other: &Snapshot) -> Snapshot {
                Snapshot { $($name: self.$name.wrapping_add(other.$name),)* }
            }
        }

        impl Live {
            /// Adds what changed from `before` to `now` (a worker's counts since its last turn; gauges
            /// may go down, which wrapping arithmetic handles).
            pub(crate) fn add(&self, before: &Snapshot, now: &Snapshot) {
                $(if now.$name != before.$name {
                    self.$name.fetch_add(now.$name.wrapping_sub(before.$name), Ordering::Relaxed);
                })*
            }
        }
    };
}

live! {
    attempted: "connections started (socket created or failed to be)",
    established: "TCP connects that completed",
    authenticated: "connections that received the auth reply (op 8)",
    settled: "connections authenticated or failed before auth",
    messages: "messages received (inner frames, as goim's benchmark client counts)",
    frames: "TCP reads with data, or WebSocket messages",
    bytes: "bytes received",
    errors: "connect and protocol errors (every kind)",
    closed_by_server: "connections the server closed",
    open: "connections open now",
    reconnecting: "connections that ended and whose replacement has not authenticated yet (storm, churn)",
    reconnected: "replacement connections that authenticated",
    pushes_ok: "publisher pushes answered with code 0, to one room or a broadcast (every connection is expected to get each)",
    expected_by_group: "messages expected from pushes to groups (rooms, keys, mids): the group's size per push answered with code 0",
    publishing: "publishers still pushing (gauge)",
}
