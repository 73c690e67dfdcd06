//! What a hold run is asked to do: targets, rooms, pacing, engine sizes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

use crate::live::Live;
use crate::{Error, Result};

/// Most connections one (source address, destination) pair carries: past ~2,400 on this
/// machine, `connect()` spends its time searching for a free port.
pub const DEFAULT_PER_SOURCE: u32 = 2_000;
/// Most direct descriptors one ring's fixed-file table holds (the process descriptor limit is
/// 20,000 and a table cannot be larger; a thread opens more rings past this).
pub const MAX_SLOTS_PER_RING: u32 = 16_000;

/// How a client speaks to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// goim frames on a TCP stream.
    Tcp,
    /// goim frames in WebSocket binary messages, at `ws://host:port/sub`.
    Ws,
}

/// `connections` clients of one transport to one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
    pub connections: u32,
}

/// Which room each connection names in its auth token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rooms {
    /// Every connection in this room (`type://id`).
    One(String),
    /// Connection `i` in room `<kind>://<1 + i % count>`.
    RoundRobin { kind: String, count: u32 },
}

impl Rooms {
    /// The room of connection `i`.
    pub fn room_for(&self, i: u64) -> String {
        match self {
            Rooms::One(room) => room.clone(),
            Rooms::RoundRobin { kind, count } => format!("{kind}://{}", 1 + i % *count as u64),
        }
    }
}

/// Everything [`crate::hold::run`] needs. `Default` gives goim's benchmark shape minus the
/// targets (which the caller must set).
#[derive(Clone, Debug)]
pub struct HoldOptions {
    /// Where to connect and how many; connection ids run through the targets in order.
    pub targets: Vec<Target>,
    pub rooms: Rooms,
    /// Connection `i` authenticates with key `<key_prefix>-<i>` and mid `i`.
    pub key_prefix: String,
    /// The token's `accepts` (ops delivered by key pushes and broadcasts).
    pub accepts: Vec<i32>,
    /// How long to hold once every connection has been attempted and settled (authenticated or
    /// failed). The ramp before it is not counted. The run ends sooner if no connection is left
    /// open.
    pub duration: Duration,
    /// Seconds between two heartbeats (op 2) of one connection.
    pub heartbeat_secs: u64,
    /// New connections per second over all threads; 0: as fast as `inflight` allows.
    pub rate: u32,
    /// Worker threads, each pinned to one core; 0: one per core.
    pub threads: usize,
    /// Source addresses to bind; empty: 127.0.1.1, 127.0.1.2, ... for loopback targets and
    /// the kernel's choice for others.
    pub sources: Vec<Ipv4Addr>,
    /// Connections per (source address, destination) pair at most.
    pub per_source: u32,
    /// Time for a TCP connect to complete.
    pub connect_timeout: Duration,
    /// Time from connected to the auth reply (op 8), WebSocket upgrade included.
    pub auth_timeout: Duration,
    /// Connections per thread between connect and auth reply at most.
    pub inflight: u32,
    /// Direct descriptors per ring (at most [`MAX_SLOTS_PER_RING`]).
    pub slots_per_ring: u32,
    /// Provided receive buffers per ring (a power of two) and their size.
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    /// No progress lines on stderr.
    pub quiet: bool,
    /// Set it to end the run early (the report still comes).
    pub stop: Arc<AtomicBool>,
    /// Counters updated while the run goes, readable from any thread.
    pub live: Arc<Live>,
    /// hmac auth mode: sign every token with this secret (the gateway's first `auth.secrets`
    /// entry), valid for a day from the start of the run. `None`: goim's unsigned JSON.
    pub secret: Option<String>,
}

impl Default for HoldOptions {
    fn default() -> Self {
        HoldOptions {
            targets: Vec::new(),
            rooms: Rooms::One("live://1000".into()),
            key_prefix: "loadtest".into(),
            accepts: vec![1000, 1001, 1002],
            duration: Duration::from_secs(60),
            heartbeat_secs: 30,
            rate: 0,
            threads: 0,
            sources: Vec::new(),
            per_source: DEFAULT_PER_SOURCE,
            connect_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
            inflight: 4_096,
            slots_per_ring: MAX_SLOTS_PER_RING,
            recv_buffers: 2_048,
            recv_buffer_size: 2_048,
            quiet: false,
            stop: Arc::new(AtomicBool::new(false)),
            live: Arc::new(Live::default()),
            secret: None,
        }
    }
}

impl HoldOptions {
    /// Connections over all targets.
    pub fn connections(&self) -> u64 {
        self.targets.iter().map(|t| t.connections as u64).sum()
    }

    /// Checks ranges; the message names the option.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Options(m));
        if self.connections() == 0 {
            return bad(
                "no connections asked for: give at least one target with connections > 0".into(),
            );
        }
        if self.connections() > u32::MAX as u64 {
            return bad(format!(
                "{} connections is more than one run can hold",
                self.connections()
            ));
        }
        if let Rooms::RoundRobin { count: 0, .. } = self.rooms {
            return bad("rooms: a round-robin over 0 rooms".into());
        }
        if self.heartbeat_secs == 0 {
            return bad("heartbeat_secs must be at least 1".into());
        }
        if self.per_source == 0 {
            return bad("per_source must be at least 1".into());
        }
        if self.inflight == 0 {
            return bad("inflight must be at least 1".into());
        }
        if self.slots_per_ring == 0 || self.slots_per_ring > MAX_SLOTS_PER_RING {
            return bad(format!(
                "slots_per_ring {} is not in 1..={MAX_SLOTS_PER_RING}",
                self.slots_per_ring
            ));
        }
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > 32_768 {
            return bad(format!(
                "recv_buffers {} must be a power of two up to 32768",
                self.recv_buffers
            ));
        }
        if !(256..=1 << 20).contains(&self.recv_buffer_size) {
            return bad(format!(
                "recv_buffer_size {} is not in 256..=1048576",
                self.recv_buffer_size
            ));
        }
        if self.connect_timeout.is_zero() || self.auth_timeout.is_zero() {
            return bad("connect_timeout and auth_timeout must be above zero".into());
        }
        if !self.sources.is_empty() && self.targets.iter().any(|t| t.addr.is_ipv6()) {
            return bad("source addresses are IPv4 but a target is IPv6".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_round_robin_from_one() {
        let r = Rooms::RoundRobin {
            kind: "live".into(),
            count: 3,
        };
        let got: Vec<String> = (0..4).map(|i| r.room_for(i)).collect();
        assert_eq!(got, ["live://1", "live://2", "live://3", "live://1"]);
        assert_eq!(Rooms::One("x://9".into()).room_for(7), "x://9");
    }

    #[test]
    fn validation_names_the_option() {
        let o = HoldOptions::default();
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("no connections")
        );
        let o = HoldOptions {
            targets: vec![Target {
                transport: Transport::Tcp,
                addr: "127.0.0.1:1".parse().unwrap(),
                connections: 1,
            }],
            recv_buffers: 1000,
            ..HoldOptions::default()
        };
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("recv_buffers")
        );
    }
}
