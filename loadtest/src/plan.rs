//! Who connection `i` is: its target, its source address, its room and its token. Computed
//! from `i` on demand, so a million connections need no table.
//!
//! Connection ids run through the targets in order (the first target's connections first).
//! Worker `t` of `T` opens ids `t, t + T, t + 2T, ...`. Within a target, connection `j` binds
//! source address number `j / per_source`, so no (source, destination) pair carries more than
//! `per_source` connections: from 127.0.1.1 upwards (skipping .0 and .255) for loopback
//! targets, from the `sources` list otherwise; a non-loopback target without a list lets the
//! kernel choose.

use std::net::{Ipv4Addr, SocketAddr};

use crate::options::{HoldOptions, Rooms, Target};
use crate::{Error, Result};

/// Loopback source addresses available from 127.0.1.1: 255 values of the third byte (1-255)
/// times 254 of the fourth (1-254).
const AUTO_SOURCES: u64 = 255 * 254;

/// One connection's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub id: u64,
    pub target: usize,
    pub source: Option<Ipv4Addr>,
}

/// The run's connections.
#[derive(Debug)]
pub struct Plan {
    pub targets: Vec<Target>,
    /// First connection id of each target.
    starts: Vec<u64>,
    total: u64,
    sources: Vec<Ipv4Addr>,
    per_source: u64,
    rooms: Rooms,
    key_prefix: String,
    accepts: Vec<i32>,
    /// hmac mode: the secret and the expiry (unix seconds) every token is signed with.
    signing: Option<(Vec<u8>, i64)>,
    /// Source addresses by connection id rather than by index within the target (`--nodes`:
    /// a connection may move to any node, so no (source, destination) pair may carry more
    /// than `per_source` whichever node each connection ends up on).
    by_id: bool,
}

/// The `n`-th automatic loopback source address.
pub fn auto_source(n: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1 + (n / 254) as u8, 1 + (n % 254) as u8)
}

impl Plan {
    pub fn new(o: &HoldOptions) -> Result<Plan> {
        let mut starts = Vec::with_capacity(o.targets.len());
        let mut total = 0u64;
        for t in &o.targets {
            starts.push(total);
            total += t.connections as u64;
            let needed = (t.connections as u64).div_ceil(o.per_source as u64);
            let loopback = t.addr.ip().is_loopback();
            if o.sources.is_empty() && loopback && needed > AUTO_SOURCES {
                return Err(Error::Options(format!(
                    "{} connections to {} at {} per source address need {needed} loopback sources; at most {AUTO_SOURCES} exist",
                    t.connections, t.addr, o.per_source
                )));
            }
            if !o.sources.is_empty() && needed > o.sources.len() as u64 {
                return Err(Error::Options(format!(
                    "{} connections to {} at {} per source address need {needed} source addresses; {} given",
                    t.connections,
                    t.addr,
                    o.per_source,
                    o.sources.len()
                )));
            }
        }
        Ok(Plan {
            targets: o.targets.clone(),
            starts,
            total,
            sources: o.sources.clone(),
            per_source: o.per_source as u64,
            rooms: o.rooms.clone(),
            key_prefix: o.key_prefix.clone(),
            accepts: o.accepts.clone(),
            by_id: o.nodes.is_some(),
            signing: o.secret.as_ref().map(|s| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                (s.as_bytes().to_vec(), now + 86_400)
            }),
        })
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// How many ids worker `t` of `threads` opens.
    pub fn count_for(&self, t: usize, threads: usize) -> u64 {
        let (t, n) = (t as u64, threads as u64);
        if t >= self.total {
            0
        } else {
            (self.total - t).div_ceil(n)
        }
    }

    pub fn spec(&self, id: u64) -> Spec {
        let target = self.starts.partition_point(|&s| s <= id) - 1;
        let j = if self.by_id {
            id
        } else {
            id - self.starts[target]
        };
        let n = j / self.per_source;
        let source = if !self.sources.is_empty() {
            Some(self.sources[n as usize % self.sources.len()])
        } else if self.targets[target].addr.ip().is_loopback()
            && self.targets[target].addr.is_ipv4()
        {
            Some(auto_source(n))
        } else {
            None
        };
        Spec { id, target, source }
    }

    pub fn addr(&self, target: usize) -> SocketAddr {
        self.targets[target].addr
    }

    /// The op-7 body of connection `id` (goim's JSON token, signed in hmac mode).
    pub fn token(&self, id: u64) -> String {
        let t = protocol::token::Token {
            // goim treats mid 0 as "not logged in" (never routed by mid): ids start at 1.
            mid: id as i64 + 1,
            key: format!("{}-{id}", self.key_prefix),
            room_id: self.rooms.room_for(id),
            platform: "loadtest".into(),
            accepts: self.accepts.clone(),
            ..Default::default()
        };
        match &self.signing {
            Some((secret, exp)) => t.sign(secret, *exp).to_json(),
            None => t.to_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Transport;

    fn opts(conns: &[u32]) -> HoldOptions {
        HoldOptions {
            targets: conns
                .iter()
                .enumerate()
                .map(|(i, &c)| Target {
                    transport: Transport::Tcp,
                    addr: format!("127.0.0.1:{}", 3000 + i).parse().unwrap(),
                    connections: c,
                })
                .collect(),
            per_source: 2,
            ..HoldOptions::default()
        }
    }

    #[test]
    fn sources_spread_per_destination() {
        let p = Plan::new(&opts(&[5, 3])).unwrap();
        let got: Vec<(usize, Ipv4Addr)> = (0..8)
            .map(|i| {
                let s = p.spec(i);
                (s.target, s.source.unwrap())
            })
            .collect();
        let a = |d| Ipv4Addr::new(127, 0, 1, d);
        assert_eq!(
            got,
            [
                (0, a(1)),
                (0, a(1)),
                (0, a(2)),
                (0, a(2)),
                (0, a(3)),
                (1, a(1)),
                (1, a(1)),
                (1, a(2))
            ]
        );
        assert_eq!(auto_source(254), Ipv4Addr::new(127, 0, 2, 1));
        assert_eq!(
            auto_source(AUTO_SOURCES - 1),
            Ipv4Addr::new(127, 0, 255, 254)
        );
    }

    #[test]
    fn threads_share_ids_round_robin() {
        let p = Plan::new(&opts(&[5, 3])).unwrap();
        assert_eq!(p.count_for(0, 3) + p.count_for(1, 3) + p.count_for(2, 3), 8);
        assert_eq!((p.count_for(0, 3), p.count_for(2, 3)), (3, 2));
        assert_eq!(p.count_for(9, 10), 0);
    }

    #[test]
    fn too_few_sources_is_an_error() {
        let mut o = opts(&[5]);
        o.sources = vec![Ipv4Addr::new(127, 0, 0, 2)];
        assert!(
            Plan::new(&o)
                .unwrap_err()
                .to_string()
                .contains("need 3 source")
        );
    }

    #[test]
    fn tokens_are_goim_json() {
        let mut o = opts(&[1]);
        o.rooms = Rooms::RoundRobin {
            kind: "test".into(),
            count: 10,
        };
        let p = Plan::new(&o).unwrap();
        let t: serde_json::Value = serde_json::from_str(&p.token(12)).unwrap();
        assert_eq!(t["mid"], 13);
        assert_eq!(t["key"], "loadtest-12");
        assert_eq!(t["room_id"], "test://3");
        assert_eq!(t["platform"], "loadtest");
        assert_eq!(t["accepts"], serde_json::json!([1000, 1001, 1002]));
    }
}
