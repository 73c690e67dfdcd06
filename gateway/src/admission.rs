//! Admission: whether a connection just accepted may stay, under the gateway's limits
//! (`[limits]`: connections per gateway, connections per source IP, new connections per second
//! per source IP, a memory ceiling), and whether the gateway takes connections at all (it
//! stops while draining or over its memory ceiling, and tells the dispatchers so in its link
//! renewals, which takes it out of `/goim/nodes/weighted`).
//!
//! Shared by the shards and touched on accept and close only, never per message: one mutex
//! guards the per-IP table (two lookups per connection's life), and the connection total is
//! one atomic. A refused connection is not closed at once: the shard answers its first request
//! (the WebSocket upgrade, or the first goim frame) with the refusal's reason, so the client
//! reads why instead of seeing a reset ([`crate::shard`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::config::LimitsConfig;

/// A connection with no source IP known (counted in the total only).
pub const NO_IP: u32 = u32::MAX;

/// Why a connection was refused. The discriminant is what a connection stores (0: admitted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// `limits.max_connections` reached.
    GatewayFull = 1,
    /// `limits.max_connections_per_ip` reached by this source address.
    IpFull = 2,
    /// `limits.connect_rate_per_ip` exceeded by this source address.
    IpRate = 3,
    /// Resident memory above `limits.max_memory_mb`.
    OverMemory = 4,
}

impl Refusal {
    pub fn from_u8(v: u8) -> Option<Refusal> {
        Some(match v {
            1 => Refusal::GatewayFull,
            2 => Refusal::IpFull,
            3 => Refusal::IpRate,
            4 => Refusal::OverMemory,
            _ => return None,
        })
    }

    /// The reason the client reads (TCP: the disconnect frame's body; WebSocket: the HTTP
    /// response body), naming the limit.
    pub fn text(self, limits: &LimitsConfig) -> String {
        match self {
            Refusal::GatewayFull => format!(
                "gateway full: {} connections (limits.max_connections); try another gateway",
                limits.max_connections
            ),
            Refusal::IpFull => format!(
                "too many connections from your address: at most {} (limits.max_connections_per_ip)",
                limits.max_connections_per_ip
            ),
            Refusal::IpRate => format!(
                "connecting too fast from your address: at most {} new connections per second, bursts of {} (limits.connect_rate_per_ip)",
                limits.connect_rate_per_ip, limits.connect_burst_per_ip
            ),
            Refusal::OverMemory => format!(
                "gateway over its memory ceiling of {} MiB (limits.max_memory_mb): not accepting; try another gateway",
                limits.max_memory_mb
            ),
        }
    }

    /// The HTTP status a WebSocket upgrade is refused with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::IpFull | Refusal::IpRate => 429,
            Refusal::GatewayFull | Refusal::OverMemory => 503,
        }
    }
}

struct IpEntry {
    ip: IpAddr,
    conns: u32,
    /// Token bucket for the connect rate: tokens left, at `refilled_ms`.
    tokens: f64,
    refilled_ms: u64,
    /// When `conns` last fell to 0 (the entry is forgotten once its bucket is full again).
    idle_since: u64,
}

#[derive(Default)]
struct IpTable {
    index: HashMap<IpAddr, u32>,
    entries: Vec<Option<IpEntry>>,
    free: Vec<u32>,
    /// Entries whose connections all closed, oldest first, with the time they did.
    idle: VecDeque<(u32, u64)>,
    /// Entries with at least one connection (goim's `ip_count`).
    active: u64,
}

/// The gateway's admission state (one per gateway, shared by its shards).
pub struct Admission {
    max_total: u64,
    max_per_ip: u32,
    rate: f64,
    burst: f64,
    max_memory: u64,
    total: AtomicU64,
    ips: Mutex<IpTable>,
    draining: AtomicBool,
    over_memory: AtomicBool,
    /// Resident memory at the last check, bytes.
    rss: AtomicU64,
    last_check_ms: AtomicU64,
}

impl Admission {
    pub fn new(limits: &LimitsConfig) -> Admission {
        Admission {
            max_total: limits.max_connections,
            max_per_ip: limits.max_connections_per_ip,
            rate: limits.connect_rate_per_ip as f64,
            burst: limits.connect_burst_per_ip.max(1) as f64,
            max_memory: limits.max_memory_mb.saturating_mul(1 << 20),
            total: AtomicU64::new(0),
            ips: Mutex::new(IpTable::default()),
            draining: AtomicBool::new(false),
            over_memory: AtomicBool::new(false),
            rss: AtomicU64::new(0),
            last_check_ms: AtomicU64::new(0),
        }
    }

    /// Decides on a connection just accepted from `ip` at `now_ms`. Admitted: the IP entry to
    /// hand back to [`Admission::release`] when it closes; refused: why (nothing is held).
    pub fn admit(&self, ip: Option<IpAddr>, now_ms: u64) -> Result<u32, Refusal> {
        if self.over_memory.load(Ordering::Relaxed) {
            return Err(Refusal::OverMemory);
        }
        if self.max_total > 0 && self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Refusal::GatewayFull);
        }
        let idx = match ip {
            Some(ip) => {
                let mut t = self.ips.lock().unwrap_or_else(|p| p.into_inner());
                self.forget_idle(&mut t, now_ms);
                let idx = match t.index.get(&ip) {
                    Some(&i) => i,
                    None => {
                        let e = IpEntry {
                            ip,
                            conns: 0,
                            tokens: self.burst,
                            refilled_ms: now_ms,
                            idle_since: now_ms,
                        };
                        let i = match t.free.pop() {
                            Some(i) => {
                                t.entries[i as usize] = Some(e);
                                i
                            }
                            None => {
                                t.entries.push(Some(e));
                                (t.entries.len() - 1) as u32
                            }
                        };
                        t.index.insert(ip, i);
                        i
                    }
                };
                let (rate, burst, max_per_ip) = (self.rate, self.burst, self.max_per_ip);
                let Some(e) = t.entries.get_mut(idx as usize).and_then(|e| e.as_mut()) else {
                    return Err(Refusal::GatewayFull);
                };
                if rate > 0.0 {
                    let dt = now_ms.saturating_sub(e.refilled_ms) as f64 / 1000.0;
                    e.tokens = (e.tokens + dt * rate).min(burst);
                    e.refilled_ms = now_ms;
                    if e.tokens < 1.0 {
                        return Err(Refusal::IpRate);
                    }
                }
                if max_per_ip > 0 && e.conns >= max_per_ip {
                    return Err(Refusal::IpFull);
                }
                if rate > 0.0 {
                    e.tokens -= 1.0;
                }
                e.conns += 1;
                if e.conns == 1 {
                    t.active += 1;
                }
                idx
            }
            None => NO_IP,
        };
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(idx)
    }

    /// An admitted connection closed.
    pub fn release(&self, idx: u32, now_ms: u64) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        if idx == NO_IP {
            return;
        }
        let mut t = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = t.entries.get_mut(idx as usize).and_then(|e| e.as_mut()) else {
            return;
        };
        e.conns = e.conns.saturating_sub(1);
        if e.conns == 0 {
            e.idle_since = now_ms;
            t.active = t.active.saturating_sub(1);
            t.idle.push_back((idx, now_ms));
        }
        self.forget_idle(&mut t, now_ms);
    }

    /// Forgets entries idle long enough for their bucket to be full again (at once when no
    /// connect rate is set), so the table holds only addresses with connections or a recent
    /// connect.
    fn forget_idle(&self, t: &mut IpTable, now_ms: u64) {
        let keep_ms = if self.rate > 0.0 {
            (self.burst / self.rate * 1000.0).ceil() as u64
        } else {
            0
        };
        while let Some(&(i, since)) = t.idle.front() {
            if since + keep_ms > now_ms {
                break;
            }
            t.idle.pop_front();
            let gone = t.entries[i as usize]
                .as_ref()
                .is_some_and(|e| e.conns == 0 && e.idle_since == since);
            if gone && let Some(e) = t.entries[i as usize].take() {
                t.index.remove(&e.ip);
                t.free.push(i);
            }
        }
    }

    /// Connections admitted and not yet closed (over all shards).
    pub fn connections(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Distinct source addresses with a connection now (goim's `ip_count`).
    pub fn ip_count(&self) -> u64 {
        self.ips.lock().unwrap_or_else(|p| p.into_inner()).active
    }

    /// Source addresses the table remembers (with connections, or a recent connect).
    pub fn ips_tracked(&self) -> usize {
        self.ips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .index
            .len()
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn over_memory(&self) -> bool {
        self.over_memory.load(Ordering::Relaxed)
    }

    /// Not taking connections (draining, or over the memory ceiling): reported to the
    /// dispatchers as offline, so `nodes/weighted` sends no new clients here.
    pub fn offline(&self) -> bool {
        self.draining() || self.over_memory()
    }

    /// Resident memory at the last check, bytes.
    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// Reads the process's resident memory (at most once per `every_ms`, whichever shard
    /// calls) and updates the ceiling: over it, refuse; back under 90 % of it, accept again
    /// (the gap keeps the state from flapping with every connection). Returns true when the
    /// state changed.
    pub fn check_memory(&self, now_ms: u64, every_ms: u64) -> bool {
        let last = self.last_check_ms.load(Ordering::Relaxed);
        if now_ms < last + every_ms
            || self
                .last_check_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        let Some(rss) = resident_bytes() else {
            return false;
        };
        self.rss.store(rss, Ordering::Relaxed);
        self.apply_memory(rss)
    }

    /// Updates the ceiling state for a resident size of `rss` bytes; true when it changed.
    pub fn apply_memory(&self, rss: u64) -> bool {
        if self.max_memory == 0 {
            return false;
        }
        let was = self.over_memory.load(Ordering::Relaxed);
        let now = if was {
            rss > self.max_memory / 10 * 9
        } else {
            rss > self.max_memory
        };
        if now != was {
            self.over_memory.store(now, Ordering::Relaxed);
            if now {
                tracing::warn!(
                    rss_mib = rss >> 20,
                    ceiling_mib = self.max_memory >> 20,
                    "over the memory ceiling: refusing new connections"
                );
            } else {
                tracing::info!(
                    rss_mib = rss >> 20,
                    "back under 90% of the memory ceiling: accepting again"
                );
            }
        }
        now != was
    }
}

/// The process's resident set size, from /proc/self/statm.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: u64, per_ip: u32, rate: u32, burst: u32) -> LimitsConfig {
        LimitsConfig {
            max_connections: total,
            max_connections_per_ip: per_ip,
            connect_rate_per_ip: rate,
            connect_burst_per_ip: burst,
            ..Default::default()
        }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 1, last]))
    }

    #[test]
    fn per_ip_cap_counts_open_connections_only() {
        let a = Admission::new(&limits(0, 2, 0, 0));
        let x = a.admit(ip(1), 0).unwrap();
        let y = a.admit(ip(1), 0).unwrap();
        assert_eq!(a.admit(ip(1), 0), Err(Refusal::IpFull));
        assert!(a.admit(ip(2), 0).is_ok(), "another address is not affected");
        assert_eq!(a.ip_count(), 2);
        a.release(x, 1);
        assert!(a.admit(ip(1), 1).is_ok());
        a.release(y, 2);
        assert_eq!(a.connections(), 2);
    }

    #[test]
    fn gateway_cap_counts_every_shard() {
        let a = Admission::new(&limits(3, 0, 0, 0));
        for _ in 0..3 {
            a.admit(None, 0).unwrap();
        }
        assert_eq!(a.admit(ip(1), 0), Err(Refusal::GatewayFull));
        a.release(NO_IP, 0);
        assert!(a.admit(ip(1), 0).is_ok());
    }

    #[test]
    fn connect_rate_is_a_token_bucket_per_ip() {
        let a = Admission::new(&limits(0, 0, 10, 5));
        for _ in 0..5 {
            let i = a.admit(ip(1), 1000).unwrap();
            a.release(i, 1000);
        }
        // The burst is spent; closing the connections does not give it back.
        assert_eq!(a.admit(ip(1), 1000), Err(Refusal::IpRate));
        assert!(a.admit(ip(2), 1000).is_ok());
        // 10 per second: one more after 100 ms, not two.
        assert!(a.admit(ip(1), 1100).is_ok());
        assert_eq!(a.admit(ip(1), 1100), Err(Refusal::IpRate));
        // Refusals spend nothing: after a full second the burst is back.
        assert!(a.admit(ip(1), 2200).is_ok());
    }

    #[test]
    fn idle_addresses_are_forgotten_once_their_bucket_is_full() {
        let a = Admission::new(&limits(0, 0, 10, 5));
        for last in 0..100 {
            let i = a.admit(ip(last), 0).unwrap();
            a.release(i, 0);
        }
        assert_eq!(a.ips_tracked(), 100);
        assert_eq!(a.ip_count(), 0);
        // A bucket of 5 at 10/s is full after 500 ms.
        let i = a.admit(ip(200), 600).unwrap();
        assert_eq!(a.ips_tracked(), 1);
        a.release(i, 600);
        let no_rate = Admission::new(&limits(0, 3, 0, 0));
        let i = no_rate.admit(ip(1), 0).unwrap();
        no_rate.release(i, 0);
        assert_eq!(
            no_rate.ips_tracked(),
            0,
            "without a rate, forgotten at once"
        );
    }

    #[test]
    fn memory_ceiling_has_a_gap_before_accepting_again() {
        let a = Admission::new(&LimitsConfig {
            max_memory_mb: 100,
            ..Default::default()
        });
        let mib = 1u64 << 20;
        assert!(!a.apply_memory(99 * mib));
        assert!(a.apply_memory(101 * mib));
        assert!(a.offline());
        assert_eq!(a.admit(ip(1), 0), Err(Refusal::OverMemory));
        assert!(!a.apply_memory(95 * mib), "still above 90 %");
        assert!(a.apply_memory(89 * mib));
        assert!(a.admit(ip(1), 0).is_ok());
        let off = Admission::new(&LimitsConfig::default());
        assert!(!off.apply_memory(u64::MAX), "no ceiling by default");
    }

    #[test]
    fn the_reasons_name_their_knob() {
        let l = limits(10, 2, 5, 20);
        for (r, knob, status) in [
            (Refusal::GatewayFull, "limits.max_connections", 503),
            (Refusal::IpFull, "limits.max_connections_per_ip", 429),
            (Refusal::IpRate, "limits.connect_rate_per_ip", 429),
            (Refusal::OverMemory, "limits.max_memory_mb", 503),
        ] {
            assert!(r.text(&l).contains(knob), "{}", r.text(&l));
            assert_eq!(r.status(), status);
            assert_eq!(Refusal::from_u8(r as u8), Some(r));
        }
        assert_eq!(Refusal::from_u8(0), None);
    }
}
