//! The gateways this dispatcher knows: their registrations (addresses, weight, connection and IP
//! counts), their room online counts, their link state, and their outbound queues.
//!
//! A gateway enters on its first `Register`, renews every few seconds, and leaves when it stops
//! renewing (`links.renew_timeout_ms`) or when its link stays down past `links.relink_grace_ms`.
//! While its link is down it is shown offline in the node list and its pushes wait in its
//! outbox, to be sent when it dials again. A gateway that announced its renew period and is a
//! full period late (no renewal for twice that) is shown offline too, until it renews. An
//! offline gateway is left out of the node list; one whose link is down or that stopped renewing
//! is also left out of the online totals and the room counts (one that only refuses new
//! connections, draining or over its memory ceiling, still holds its members and counts).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use protocol::link::{Body, Register, Renew};
use tokio::net::tcp::OwnedWriteHalf;

use crate::config::LinksConfig;
use crate::metrics::Metrics;
use crate::outbox::{Ctl, Outbox, Outgoing};
use crate::queue::Done;

/// What the node list shows of a gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayInfo {
    pub id: String,
    pub addrs: Vec<String>,
    pub weight: i32,
    pub conn_count: u64,
    pub ip_count: u64,
    /// Out of the node list: refusing connections, its link is down, or a full renew period
    /// late (derived when the list is read).
    pub offline: bool,
    /// Reported offline by the gateway itself (draining, or over its memory ceiling): it takes
    /// no new connections, so `nodes/weighted` never names it, whatever goim's guard against
    /// a shrinking node set keeps (that guard is for a link or a registry that flaps).
    pub refusing: bool,
    /// Its connections count in the online totals and room counts: its link is up and it
    /// renews (draining or over its memory ceiling, it still holds its members).
    pub counted: bool,
    /// Last registration or renewal, nanoseconds since the Unix epoch.
    pub updated_unix_ns: i64,
}

struct Entry {
    info: GatewayInfo,
    epoch: u64,
    last_renew: Instant,
    /// The gateway's renew period (0: not announced).
    renew_every: Duration,
    down_since: Option<Instant>,
    rooms: HashMap<String, i32>,
    outbox: Outbox,
}

impl Entry {
    /// Offline: reported so by the gateway, its link is down, or it announced a renew period
    /// and sent nothing for two of them (one renewal missed and a full period more).
    fn offline(&self, now: Instant) -> bool {
        self.info.refusing || !self.counted(now)
    }

    fn stale(&self, now: Instant) -> bool {
        !self.renew_every.is_zero()
            && now.saturating_duration_since(self.last_renew) > self.renew_every * 2
    }

    /// Its members count in online totals and room counts: linked and renewing. A gateway
    /// that is only refusing new connections (draining, over its memory ceiling) still holds
    /// its members and counts.
    fn counted(&self, now: Instant) -> bool {
        self.down_since.is_none() && !self.stale(now)
    }
}

/// The gateway table.
pub struct Cluster {
    entries: Mutex<HashMap<String, Entry>>,
    epochs: AtomicU64,
    cfg: LinksConfig,
    metrics: Arc<Metrics>,
}

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Cluster {
    pub fn new(cfg: LinksConfig, metrics: Arc<Metrics>) -> Cluster {
        Cluster {
            entries: Mutex::new(HashMap::new()),
            epochs: AtomicU64::new(1),
            cfg,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A gateway registered on a new link; returns the link's epoch (later events from an
    /// older link of the same gateway are ignored). Must run inside the runtime.
    pub(crate) fn register(&self, reg: &Register, writer: OwnedWriteHalf) -> u64 {
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        let entry = entries
            .entry(reg.gateway_id.clone())
            .or_insert_with(|| Entry {
                info: GatewayInfo {
                    id: reg.gateway_id.clone(),
                    addrs: Vec::new(),
                    weight: 0,
                    conn_count: 0,
                    ip_count: 0,
                    offline: false,
                    refusing: false,
                    counted: true,
                    updated_unix_ns: 0,
                },
                epoch,
                last_renew: Instant::now(),
                renew_every: Duration::ZERO,
                down_since: None,
                rooms: HashMap::new(),
                outbox: Outbox::spawn(
                    reg.gateway_id.clone(),
                    self.cfg.clone(),
                    self.metrics.clone(),
                ),
            });
        entry.info.addrs = reg.addrs.clone();
        entry.info.weight = reg.weight;
        entry.info.conn_count = reg.conn_count;
        entry.info.ip_count = reg.ip_count;
        entry.info.updated_unix_ns = unix_ns();
        entry.info.refusing = reg.offline;
        entry.epoch = epoch;
        entry.last_renew = Instant::now();
        entry.renew_every = Duration::from_millis(reg.renew_ms);
        entry.down_since = None;
        let _ = entry.outbox.ctl.send(Ctl::Linked(writer));
        epoch
    }

    /// A renewal on the link of this epoch.
    pub(crate) fn renew(&self, id: &str, epoch: u64, r: &Renew) {
        let mut entries = self.lock();
        if let Some(e) = entries.get_mut(id)
            && e.epoch == epoch
        {
            e.info.conn_count = r.conn_count;
            e.info.ip_count = r.ip_count;
            e.info.refusing = r.offline;
            e.info.updated_unix_ns = unix_ns();
            e.last_renew = Instant::now();
        }
    }

    /// This gateway's room online counts (goim's RenewOnline); replaces the previous report.
    pub(crate) fn room_counts(&self, id: &str, epoch: u64, counts: HashMap<String, i32>) {
        let mut entries = self.lock();
        if let Some(e) = entries.get_mut(id)
            && e.epoch == epoch
        {
            e.rooms = counts;
        }
    }

    /// Whether the link of this epoch is still the gateway's registration (not removed, not
    /// superseded by a newer link).
    pub(crate) fn is_current(&self, id: &str, epoch: u64) -> bool {
        self.lock().get(id).is_some_and(|e| e.epoch == epoch)
    }

    pub(crate) fn ack(&self, id: &str, push_id: u64) {
        if let Some(e) = self.lock().get(id) {
            let _ = e.outbox.ctl.send(Ctl::Ack(push_id));
        }
    }

    /// The link of this epoch closed: pushes wait for a re-dial, the node shows offline.
    pub(crate) fn unlinked(&self, id: &str, epoch: u64) {
        let mut entries = self.lock();
        if let Some(e) = entries.get_mut(id)
            && e.epoch == epoch
        {
            e.down_since = Some(Instant::now());
            let _ = e.outbox.ctl.send(Ctl::Unlinked);
        }
    }

    /// Removes gateways that stopped renewing or stayed unlinked too long; returns their ids.
    pub(crate) fn sweep(&self, now: Instant) -> Vec<String> {
        let renew = Duration::from_millis(self.cfg.renew_timeout_ms);
        let grace = Duration::from_millis(self.cfg.relink_grace_ms);
        let mut entries = self.lock();
        let gone: Vec<String> = entries
            .iter()
            .filter(|(_, e)| match e.down_since {
                Some(t) => now.saturating_duration_since(t) >= grace,
                None => now.saturating_duration_since(e.last_renew) >= renew,
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            entries.remove(id);
        }
        gone
    }

    /// Queues a push for gateway `id`. False when no such gateway is registered.
    pub(crate) async fn send(&self, id: &str, out: Outgoing, done: Done) -> bool {
        let tx = match self.lock().get(id) {
            Some(e) => e.outbox.push.clone(),
            None => return false,
        };
        tx.send((out, done)).await.is_ok()
    }

    /// Every registered gateway with its connection count (targets of room batches and
    /// broadcasts), sorted by id.
    pub fn targets(&self) -> Vec<(String, u64)> {
        let mut t: Vec<(String, u64)> = self
            .lock()
            .values()
            .map(|e| (e.info.id.clone(), e.info.conn_count))
            .collect();
        t.sort();
        t
    }

    /// The node list, sorted by id. `offline` is also set for a gateway a full renew period
    /// late.
    pub fn infos(&self) -> Vec<GatewayInfo> {
        let now = Instant::now();
        let mut v: Vec<GatewayInfo> = self
            .lock()
            .values()
            .map(|e| {
                let mut info = e.info.clone();
                info.offline = e.offline(now);
                info.counted = e.counted(now);
                info
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Room online counts summed over the gateways that are online (room key → members).
    pub fn room_totals(&self) -> HashMap<String, i64> {
        let now = Instant::now();
        let mut totals: HashMap<String, i64> = HashMap::new();
        for e in self.lock().values().filter(|e| e.counted(now)) {
            for (room, n) in &e.rooms {
                *totals.entry(room.clone()).or_default() += i64::from(*n);
            }
        }
        totals
    }

    /// Cluster totals for these rooms (what a gateway answers heartbeats with).
    pub fn totals_for<'a>(&self, rooms: impl Iterator<Item = &'a String>) -> HashMap<String, i32> {
        let now = Instant::now();
        let entries = self.lock();
        rooms
            .map(|room| {
                let n: i64 = entries
                    .values()
                    .filter(|e| e.counted(now))
                    .filter_map(|e| e.rooms.get(room))
                    .map(|&n| i64::from(n))
                    .sum();
                (room.clone(), i32::try_from(n).unwrap_or(i32::MAX))
            })
            .collect()
    }

    /// Sends a message that needs no acknowledgement down gateway `id`'s link, if it is up.
    pub(crate) fn notify(&self, id: &str, body: Body) {
        if let Some(e) = self.lock().get(id) {
            let mut buf = bytes::BytesMut::new();
            protocol::link::encode(&protocol::link::LinkMessage::from(body), &mut buf);
            let _ = e.outbox.ctl.send(Ctl::Notice(buf.freeze()));
        }
    }

    /// Every registered gateway's id and whether its link is up, sorted by id.
    pub fn link_states(&self) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = self
            .lock()
            .iter()
            .map(|(id, e)| (id.clone(), e.down_since.is_none()))
            .collect();
        v.sort();
        v
    }

    /// Registered gateways, and how many have a live link.
    pub fn counts(&self) -> (usize, usize) {
        let entries = self.lock();
        let linked = entries.values().filter(|e| e.down_since.is_none()).count();
        (entries.len(), linked)
    }
}
