//! What a hold run is asked to do: targets, rooms, pacing, engine sizes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

use crate::disrupt::{Backoff, Orders, Stall, Storm};
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
#[derive(Clone, Debug, PartialEq)]
pub enum Rooms {
    /// Every connection in this room (`type://id`).
    One(String),
    /// Connection `i` in room `<kind>://<1 + i % count>`.
    RoundRobin { kind: String, count: u32 },
    /// Zipf-sized rooms: a few big rooms and a long tail, as on a live-streaming platform.
    Zipf(Zipf),
}

/// Rooms `<kind>://1..=count` where room `k` holds a share of the connections proportional to
/// `1 / k^exponent`. Connection `i` is placed by a hash of `i` against the cumulative shares,
/// so the placement is the same in every run and needs no table per connection.
#[derive(Clone, Debug, PartialEq)]
pub struct Zipf {
    pub kind: String,
    pub count: u32,
    pub exponent: f64,
    /// Cumulative shares scaled to 2^32, one per room (the last is 2^32).
    cum: Arc<[u64]>,
}

impl Zipf {
    /// At most this many rooms (the cumulative table costs 8 bytes per room).
    pub const MAX_ROOMS: u32 = 10_000_000;

    pub fn new(kind: &str, count: u32, exponent: f64) -> Result<Zipf> {
        if count == 0 || count > Self::MAX_ROOMS {
            return Err(Error::Options(format!(
                "zipf rooms: {count} rooms is not in 1..={}",
                Self::MAX_ROOMS
            )));
        }
        if !(exponent.is_finite() && exponent >= 0.0) {
            return Err(Error::Options(format!(
                "zipf exponent {exponent} must be a number >= 0"
            )));
        }
        let weights: Vec<f64> = (1..=count).map(|k| (k as f64).powf(-exponent)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cum: Vec<u64> = weights
            .iter()
            .map(|w| {
                acc += w;
                ((acc / total) * (1u64 << 32) as f64) as u64
            })
            .collect();
        *cum.last_mut().expect("count >= 1") = 1 << 32;
        Ok(Zipf {
            kind: kind.to_string(),
            count,
            exponent,
            cum: cum.into(),
        })
    }

    /// The room number (1-based) of connection `i`.
    pub fn room(&self, i: u64) -> u32 {
        let h = (i ^ 0x2545_f491).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        self.cum.partition_point(|&c| c <= h) as u32 + 1
    }
}

impl Rooms {
    /// The room of connection `i`.
    pub fn room_for(&self, i: u64) -> String {
        match self {
            Rooms::One(room) => room.clone(),
            Rooms::RoundRobin { kind, count } => format!("{kind}://{}", 1 + i % *count as u64),
            Rooms::Zipf(z) => format!("{}://{}", z.kind, z.room(i)),
        }
    }

    /// Every room, in order (`1..=count` for several).
    pub fn names(&self) -> Vec<String> {
        match self {
            Rooms::One(room) => vec![room.clone()],
            Rooms::RoundRobin { kind, count } => {
                (1..=*count).map(|k| format!("{kind}://{k}")).collect()
            }
            Rooms::Zipf(z) => (1..=z.count).map(|k| format!("{}://{k}", z.kind)).collect(),
        }
    }

    /// How many of connections `0..n` are in each room of [`Rooms::names`].
    pub fn members(&self, n: u64) -> Vec<u64> {
        match self {
            Rooms::One(_) => vec![n],
            Rooms::RoundRobin { count, .. } => {
                let c = *count as u64;
                (0..c).map(|k| n / c + u64::from(k < n % c)).collect()
            }
            Rooms::Zipf(z) => {
                let mut m = vec![0u64; z.count as usize];
                for i in 0..n {
                    m[z.room(i) as usize - 1] += 1;
                }
                m
            }
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
    /// Connection `i` authenticates with key `<key_prefix>-<i>` and mid `i + 1` (goim's mid 0
    /// is "not logged in").
    pub key_prefix: String,
    /// The token's `accepts` (ops delivered by key pushes and broadcasts).
    pub accepts: Vec<i32>,
    /// How long to hold once every connection has been attempted and settled (authenticated or
    /// failed). The ramp before it is not counted. The run ends sooner if no connection is left
    /// open.
    pub duration: Duration,
    /// With a publisher: how long past `duration` the hold may go on while messages the
    /// accepted pushes should deliver have not all arrived (0: not at all). See `--drain`.
    pub drain: Duration,
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
    /// The `storm` scenario: drop a share of the connections at once during the hold.
    pub storm: Option<Storm>,
    /// The `soak` scenario's churn: connections dropped (and replaced) per second during the
    /// hold, over all threads.
    pub churn: f64,
    /// Connections that end during the hold are replaced (reconnect with backoff). On with a
    /// storm or churn; otherwise a connection the server closes stays closed.
    pub reconnect: bool,
    pub backoff: Backoff,
    /// A share of the connections stops reading for a while during the hold.
    pub stall: Option<Stall>,
    /// SO_RCVBUF of every client socket (set before connect); 0: the kernel's default. Small
    /// values make a stalled reader fill up quickly.
    pub rcvbuf: u32,
    /// What the coordinating thread orders the workers (storms, churn, stalls).
    pub orders: Arc<Orders>,
    /// `--nodes`: the dispatcher's node list; reconnects go to a node from its latest version,
    /// and source addresses are spread by connection id over every destination.
    pub nodes: Option<Arc<crate::nodes::Nodes>>,
    /// Reconnects wait as the node list's backoff hints say (goim's formula) rather than
    /// `backoff` (with `nodes`, unless a backoff was given explicitly).
    pub server_backoff: bool,
}

impl Default for HoldOptions {
    fn default() -> Self {
        HoldOptions {
            targets: Vec::new(),
            rooms: Rooms::One("live://1000".into()),
            key_prefix: "loadtest".into(),
            accepts: vec![1000, 1001, 1002],
            duration: Duration::from_secs(60),
            drain: Duration::ZERO,
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
            storm: None,
            churn: 0.0,
            reconnect: false,
            backoff: Backoff::default(),
            stall: None,
            rcvbuf: 0,
            orders: Arc::new(Orders::default()),
            nodes: None,
            server_backoff: false,
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
        let share = |s: f64| (0.0..=1.0).contains(&s);
        if let Some(st) = &self.storm
            && !share(st.share)
        {
            return bad(format!("storm share {} is not in 0..=1", st.share));
        }
        if let Some(st) = &self.stall
            && (!share(st.share) || st.length.is_zero())
        {
            return bad(format!(
                "stall share {} is not in 0..=1, or its length is zero",
                st.share
            ));
        }
        if !(self.churn >= 0.0 && self.churn.is_finite()) {
            return bad(format!(
                "churn {} is not a rate >= 0 per second",
                self.churn
            ));
        }
        if self.backoff.base.is_zero() || self.backoff.max < self.backoff.base {
            return bad("backoff: base must be above zero and max at least base".into());
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
        assert_eq!(r.members(4), [2, 1, 1]);
        assert_eq!(r.names(), ["live://1", "live://2", "live://3"]);
        assert_eq!(Rooms::One("x://9".into()).room_for(7), "x://9");
    }

    #[test]
    fn zipf_rooms_are_skewed_and_complete() {
        let z = Zipf::new("live", 100, 1.0).unwrap();
        let rooms = Rooms::Zipf(z.clone());
        let m = rooms.members(100_000);
        assert_eq!(m.iter().sum::<u64>(), 100_000);
        // Room 1 holds 1/H(100) ~ 19.3% of the connections, room 2 half of that.
        assert!((18_000..21_000).contains(&m[0]), "{}", m[0]);
        assert!((8_500..10_800).contains(&m[1]), "{}", m[1]);
        assert!(m[0] > m[9] * 5 && m[99] > 0);
        assert_eq!(rooms.room_for(7), rooms.room_for(7));
        let flat = Rooms::Zipf(Zipf::new("a", 4, 0.0).unwrap()).members(40_000);
        assert!(
            flat.iter().all(|&n| (9_500..10_500).contains(&n)),
            "{flat:?}"
        );
        assert!(Zipf::new("a", 0, 1.0).is_err());
        assert!(Zipf::new("a", 3, f64::NAN).is_err());
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
