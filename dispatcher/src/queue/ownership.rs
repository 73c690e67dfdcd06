//! Partition ownership by lease, for the queues whose shared consumers would hand one room's
//! consecutive messages to different dispatchers (NATS JetStream, Redis Streams).
//!
//! Rooms are spread over a fixed number of partitions ([`partition_of`]: FNV-1a of goim's queue
//! key, as Kafka's partitioner), each a stream (Redis) or a subject with its own durable
//! consumer (NATS). A partition is read by one dispatcher at a time, the one holding its lease,
//! so one room's messages are batched and numbered by one job, in order. Every tick
//! ([`Owner`], a fifth of the lease):
//! - **members**: the dispatcher renews its membership; the live count sets its share,
//!   `ceil(partitions / members)`;
//! - **renewing**: it renews each lease it holds. A lease refused (taken over) is dropped at
//!   once, and so is one it could not renew for three quarters of the lease period (the broker
//!   is unreachable): another dispatcher may take it once it expires;
//! - **taking**: below its share it takes free leases (starting at a place derived from its
//!   member id, so dispatchers do not all race for partition 0). The backend's reader first
//!   takes back, in order, what a previous owner took and did not finish, then new messages;
//! - **giving back**: above its share it stops reading the extras, lets what it has in flight
//!   finish (for at most one lease period), then releases them.
//!
//! Messages in flight when a partition moves may reach the gateways twice (at-least-once):
//! both owners deliver one contiguous run of the partition in order, so a client sees the first
//! copy of every message in order and no gap. Each change of the set of partitions held counts
//! in `queue_assignment_changes`, which clears the job's room history (as a Kafka rebalance).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::push::PushMsg;
use tokio::sync::{mpsc, watch};

use super::{BoxFut, Delivery, Done};
use crate::Result;
use crate::metrics::{Metrics, inc};

/// The partition of a message's queue key: FNV-1a (32 bits) modulo the count, as sarama's hash
/// partitioner (goim's Kafka producer) and the Kafka backend place keys.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in key {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % partitions.max(1)
}

/// What a leased queue does on its broker. Every call is bounded in time by the backend.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Renews this dispatcher's membership; returns how many dispatchers are live (itself
    /// included).
    fn heartbeat(&self) -> BoxFut<'_, Result<usize>>;
    /// Takes the lease of `partition` if it is free or already this dispatcher's.
    fn acquire(&self, partition: u32) -> BoxFut<'_, Result<bool>>;
    /// Extends a held lease; `false` when another dispatcher holds it now.
    fn renew(&self, partition: u32) -> BoxFut<'_, Result<bool>>;
    /// Gives a held lease up (not another dispatcher's).
    fn release(&self, partition: u32) -> BoxFut<'_, Result<()>>;
    /// Messages in `partition` not yet finished.
    fn lag(&self, partition: u32) -> BoxFut<'_, Result<u64>>;
    /// Reads `partition` into the job until the reader is stopped: first what a previous owner
    /// took and did not finish, in order, then new messages. Recovers from broker errors by
    /// itself (logging them).
    fn consume(self: Arc<Self>, partition: u32, reader: Reader) -> BoxFut<'static, ()>;
}

/// A partition's reader: hands messages to the job and says when to stop.
pub(crate) struct Reader {
    stop: watch::Receiver<bool>,
    tx: mpsc::Sender<Delivery>,
    inflight: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Reader {
    /// Whether the partition is no longer this reader's to read.
    pub(crate) fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once the reader is stopped.
    pub(crate) async fn until_stopped(&mut self) {
        let _ = self.stop.wait_for(|s| *s).await;
    }

    /// Sleeps `d`, or less if the reader is stopped meanwhile.
    pub(crate) async fn pause(&mut self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.until_stopped() => {}
        }
    }

    /// Hands one message to the job; `finish` runs once it is finished (every gateway
    /// concerned acknowledged it, or it was malformed and skipped, counted in
    /// `queue_bad_messages`). Returns `false`, without running `finish`, when the reader was
    /// stopped (or the job ended) before the job took it: the message stays unfinished on the
    /// broker for the partition's next reader.
    pub(crate) async fn deliver(
        &mut self,
        payload: &[u8],
        what: impl std::fmt::Display,
        finish: impl FnOnce() + Send + 'static,
    ) -> bool {
        let permit = tokio::select! {
            biased;
            _ = self.stop.wait_for(|s| *s) => return false,
            p = self.tx.reserve() => match p {
                Ok(p) => p,
                Err(_) => return false,
            },
        };
        self.inflight.fetch_add(1, Ordering::Relaxed);
        let inflight = self.inflight.clone();
        let done = Done::on_complete(move || {
            inflight.fetch_sub(1, Ordering::Relaxed);
            finish();
        });
        match PushMsg::from_bytes(payload) {
            Ok(msg) => permit.send(Delivery { msg, done }),
            Err(e) => {
                inc(&self.metrics.queue_bad_messages);
                tracing::warn!("queue message {what} skipped: {e}");
                drop(done);
            }
        }
        true
    }
}

/// The lag of the partitions held, as of the last tick (for `/metrics`, which must not wait).
#[derive(Default)]
pub(crate) struct Lag(Mutex<Vec<(i32, u64)>>);

impl Lag {
    pub(crate) fn get(&self) -> Vec<(i32, u64)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, lag: Vec<(i32, u64)>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }
}

/// A partition this dispatcher holds the lease of.
struct Held {
    stop: watch::Sender<bool>,
    inflight: Arc<AtomicUsize>,
    renewed: Instant,
    /// Since when it is being given back (no longer read; waiting for its messages in flight).
    draining: Option<Instant>,
}

/// Which partitions to give back and which to try to take, given the partitions held (and
/// whether each is being given back already), the live member count and where this member
/// starts looking.
fn plan(
    held: &BTreeMap<u32, bool>,
    partitions: u32,
    members: usize,
    start: u32,
) -> (Vec<u32>, Vec<u32>) {
    let share = partitions.div_ceil(members.max(1) as u32) as usize;
    let reading: Vec<u32> = held
        .iter()
        .filter(|(_, draining)| !**draining)
        .map(|(p, _)| *p)
        .collect();
    if reading.len() > share {
        // Give back the last ones held, counting from where this member starts.
        let mut order = reading;
        order.sort_by_key(|p| (p + partitions - start % partitions) % partitions);
        return (order.split_off(share), Vec::new());
    }
    let free = (0..partitions)
        .map(|i| (start + i) % partitions)
        .filter(|p| !held.contains_key(p))
        .collect();
    if reading.len() < share {
        (Vec::new(), free)
    } else {
        (Vec::new(), Vec::new())
    }
}

/// The ownership loop of one dispatcher (see the module docs).
pub(crate) struct Owner<B: Backend> {
    pub(crate) backend: Arc<B>,
    pub(crate) name: &'static str,
    pub(crate) partitions: u32,
    pub(crate) lease: Duration,
    /// Where this member starts looking for free partitions.
    pub(crate) start: u32,
    pub(crate) tx: mpsc::Sender<Delivery>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) lag: Arc<Lag>,
}

impl<B: Backend> Owner<B> {
    /// Runs until the job's receiver is gone.
    pub(crate) async fn run(self) {
        let tick = (self.lease / 5).max(Duration::from_millis(20));
        let stale = self.lease * 3 / 4;
        let mut held: BTreeMap<u32, Held> = BTreeMap::new();
        let mut members = 1usize;
        let mut errors = 0u64;
        while !self.tx.is_closed() {
            let mut changed = false;
            // Renew what is held; drop what was taken over or could not be renewed in time.
            let mut lost = Vec::new();
            for (&p, h) in held.iter_mut() {
                match self.backend.renew(p).await {
                    Ok(true) => h.renewed = Instant::now(),
                    Ok(false) => lost.push((p, "another dispatcher holds its lease".to_string())),
                    Err(e) if h.renewed.elapsed() >= stale => lost.push((p, e.to_string())),
                    Err(e) => self.warn(&mut errors, format!("renewing partition {p}: {e}")),
                }
            }
            for (p, why) in lost {
                if let Some(h) = held.remove(&p) {
                    let _ = h.stop.send(true);
                    changed = true;
                    tracing::warn!("{}: partition {p} dropped: {why}", self.name);
                }
            }
            // Partitions being given back whose messages finished (or that waited a lease).
            let drained: Vec<u32> = held
                .iter()
                .filter(|(_, h)| {
                    h.draining.is_some_and(|t| {
                        h.inflight.load(Ordering::Relaxed) == 0 || t.elapsed() >= self.lease
                    })
                })
                .map(|(p, _)| *p)
                .collect();
            for p in drained {
                held.remove(&p);
                changed = true;
                if let Err(e) = self.backend.release(p).await {
                    // It expires by itself within a lease.
                    self.warn(&mut errors, format!("releasing partition {p}: {e}"));
                }
                tracing::info!("{}: partition {p} given back", self.name);
            }
            match self.backend.heartbeat().await {
                Ok(n) => members = n.max(1),
                Err(e) => self.warn(&mut errors, format!("membership: {e}")),
            }
            let state: BTreeMap<u32, bool> = held
                .iter()
                .map(|(p, h)| (*p, h.draining.is_some()))
                .collect();
            let (give, take) = plan(&state, self.partitions, members, self.start);
            for p in give {
                if let Some(h) = held.get_mut(&p) {
                    let _ = h.stop.send(true);
                    h.draining = Some(Instant::now());
                    tracing::info!(
                        "{}: giving partition {p} back ({members} dispatchers share {})",
                        self.name,
                        self.partitions
                    );
                }
            }
            let share = self.partitions.div_ceil(members as u32) as usize;
            for p in take {
                if held.values().filter(|h| h.draining.is_none()).count() >= share {
                    break;
                }
                match self.backend.acquire(p).await {
                    Ok(true) => {
                        held.insert(p, self.start_reader(p));
                        changed = true;
                        tracing::info!("{}: partition {p} taken", self.name);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        self.warn(&mut errors, format!("taking partition {p}: {e}"));
                        break;
                    }
                }
            }
            if changed {
                inc(&self.metrics.queue_assignment_changes);
                let now: Vec<u32> = held.keys().copied().collect();
                tracing::info!(
                    "{}: partitions held now {now:?}; room history cleared",
                    self.name
                );
            }
            let mut lag = Vec::new();
            for &p in held.keys() {
                if let Ok(n) = self.backend.lag(p).await {
                    lag.push((p as i32, n));
                }
            }
            self.lag.set(lag);
            tokio::time::sleep(tick).await;
        }
        for (p, h) in held {
            let _ = h.stop.send(true);
            let _ = self.backend.release(p).await;
        }
    }

    fn start_reader(&self, p: u32) -> Held {
        let (stop, stop_rx) = watch::channel(false);
        let inflight = Arc::new(AtomicUsize::new(0));
        let reader = Reader {
            stop: stop_rx,
            tx: self.tx.clone(),
            inflight: inflight.clone(),
            metrics: self.metrics.clone(),
        };
        tokio::spawn(self.backend.clone().consume(p, reader));
        Held {
            stop,
            inflight,
            renewed: Instant::now(),
            draining: None,
        }
    }

    /// Logs broker errors of the loop, fewer as they repeat.
    fn warn(&self, errors: &mut u64, what: String) {
        *errors += 1;
        if errors.is_power_of_two() {
            tracing::warn!("{}: {what} ({errors} errors so far)", self.name);
        }
    }
}

/// Where a member id starts looking for free partitions.
pub(crate) fn start_of(member: &str, partitions: u32) -> u32 {
    partition_of(member.as_bytes(), partitions)
}

/// A member id for this dispatcher: host name, process id and a random part (a restarted
/// dispatcher is a new member; its old leases expire).
pub(crate) fn member_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let salt = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &salt[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_fnv1a_like_sarama() {
        // FNV-1a 32 of "" and "a" (the published test vectors).
        assert_eq!(partition_of(b"", 1 << 31), 0x811c_9dc5 % (1 << 31));
        assert_eq!(partition_of(b"a", 1 << 31), 0xe40c_292c % (1 << 31));
        assert_eq!(partition_of(b"live://7", 1), 0);
        let spread: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| partition_of(format!("live://{i}").as_bytes(), 4))
            .collect();
        assert_eq!(spread.len(), 4, "100 rooms reach every partition");
    }

    fn held(ps: &[(u32, bool)]) -> BTreeMap<u32, bool> {
        ps.iter().copied().collect()
    }

    #[test]
    fn a_lone_member_takes_every_partition_from_its_start() {
        let (give, take) = plan(&held(&[]), 4, 1, 2);
        assert!(give.is_empty());
        assert_eq!(take, [2, 3, 0, 1]);
    }

    #[test]
    fn a_member_above_its_share_gives_back_the_excess() {
        // Two members, four partitions: a share of two.
        let (give, take) = plan(
            &held(&[(0, false), (1, false), (2, false), (3, false)]),
            4,
            2,
            1,
        );
        assert_eq!(give, [3, 0], "keeps 1 and 2, counting from its start");
        assert!(take.is_empty());
        // Partitions already being given back do not count.
        let (give, take) = plan(&held(&[(0, true), (1, false), (2, false)]), 4, 2, 1);
        assert!(give.is_empty() && take.is_empty());
    }

    #[test]
    fn a_member_below_its_share_looks_at_the_partitions_it_does_not_hold() {
        let (give, take) = plan(&held(&[(1, false), (3, true)]), 4, 2, 3);
        assert!(give.is_empty());
        assert_eq!(take, [0, 2]);
        // Three members, four partitions: a share of two, so one may stand by with none.
        let (give, take) = plan(&held(&[(0, false), (1, false)]), 4, 3, 0);
        assert!(give.is_empty() && take.is_empty());
    }

    #[tokio::test]
    async fn a_stopped_reader_does_not_take_or_finish_the_message() {
        let (tx, mut rx) = mpsc::channel(1);
        let (stop, stop_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let mut r = Reader {
            stop: stop_rx,
            tx,
            inflight: Arc::default(),
            metrics: metrics.clone(),
        };
        let finished = Arc::new(AtomicUsize::new(0));
        let f = |n: &Arc<AtomicUsize>| {
            let n = n.clone();
            move || {
                n.fetch_add(1, Ordering::SeqCst);
            }
        };
        let msg = PushMsg {
            r#type: 1,
            operation: 1000,
            room: "live://1".into(),
            ..Default::default()
        }
        .to_bytes();
        assert!(r.deliver(&msg, "1", f(&finished)).await);
        assert_eq!(r.inflight.load(Ordering::SeqCst), 1);
        // The job's channel is full; stopping the reader leaves the second message untaken.
        let _ = stop.send(true);
        assert!(!r.deliver(&msg, "2", f(&finished)).await);
        assert_eq!(finished.load(Ordering::SeqCst), 0);
        drop(rx.recv().await);
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "finished once the job drops it"
        );
        assert_eq!(r.inflight.load(Ordering::SeqCst), 0);
        // A malformed message is counted and finished at once.
        let _ = stop.send(false);
        assert!(r.deliver(b"\xff\xff", "3", f(&finished)).await);
        assert_eq!(finished.load(Ordering::SeqCst), 2);
        assert_eq!(metrics.queue_bad_messages.load(Ordering::SeqCst), 1);
    }
}
