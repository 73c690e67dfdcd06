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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Ends this dispatcher's membership (it is stopping): the others' shares grow at once.
    fn leave(&self) -> BoxFut<'_, Result<()>>;
    /// Messages in `partition` not yet finished.
    fn lag(&self, partition: u32) -> BoxFut<'_, Result<u64>>;
    /// Reads `partition` into the job until the reader is stopped: first what a previous owner
    /// took and did not finish, in order, then new messages. Recovers from broker errors by
    /// itself (logging them).
    fn consume(self: Arc<Self>, partition: u32, reader: Reader) -> BoxFut<'static, ()>;
}

/// How long a lease is good for, as this dispatcher may assume: a quarter of the lease period
/// short of the broker's expiry, counted from when the last successful acquire or renew was
/// *sent*. A reader stops reading once it passes, whatever the owner loop is doing.
pub(crate) struct Validity {
    epoch: Instant,
    until_ms: AtomicU64,
}

impl Validity {
    fn new(epoch: Instant) -> Validity {
        Validity {
            epoch,
            until_ms: AtomicU64::new(0),
        }
    }

    fn extend_to(&self, t: Instant) {
        let ms = t.saturating_duration_since(self.epoch).as_millis() as u64;
        self.until_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time left before the lease may have expired on the broker.
    pub(crate) fn left(&self) -> Duration {
        let until = self.epoch + Duration::from_millis(self.until_ms.load(Ordering::Relaxed));
        until.saturating_duration_since(Instant::now())
    }
}

/// A partition's reader: hands messages to the job and says when to stop.
pub(crate) struct Reader {
    stop: watch::Receiver<bool>,
    valid: Arc<Validity>,
    tx: mpsc::Sender<Delivery>,
    inflight: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

/// Resolves once `stop` is set (or its sender gone) or the lease's validity ran out.
async fn wait_stopped(stop: &mut watch::Receiver<bool>, valid: &Validity) {
    loop {
        let left = valid.left();
        if *stop.borrow() || left.is_zero() {
            return;
        }
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(left) => {}
        }
    }
}

impl Reader {
    /// Whether the partition is no longer this reader's to read: told to stop, or its lease
    /// not renewed in time.
    pub(crate) fn stopped(&self) -> bool {
        *self.stop.borrow() || self.valid.left().is_zero()
    }

    /// Time left before the lease may have expired on the broker (a read must end by then).
    pub(crate) fn left(&self) -> Duration {
        self.valid.left()
    }

    /// Resolves once the reader is stopped.
    pub(crate) async fn until_stopped(&mut self) {
        wait_stopped(&mut self.stop, &self.valid).await;
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
        if self.stopped() {
            return false;
        }
        let permit = tokio::select! {
            biased;
            _ = wait_stopped(&mut self.stop, &self.valid) => return false,
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
    valid: Arc<Validity>,
    inflight: Arc<AtomicUsize>,
    /// When the last successful acquire or renew was sent.
    renewed: Instant,
    /// Since when it is being given back (no longer read; waiting for its messages in flight
    /// and for its reader to end).
    draining: Option<Instant>,
    task: tokio::task::JoinHandle<()>,
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
    /// Set when the dispatcher stops; see [`Closing`].
    pub(crate) closing: Arc<Closing>,
}

/// Tells the ownership loop the dispatcher is stopping, and when it has handed its partitions
/// back.
#[derive(Default)]
pub(crate) struct Closing {
    asked: tokio::sync::Notify,
    done: tokio::sync::Notify,
    is_asked: std::sync::atomic::AtomicBool,
}

impl Closing {
    /// Asks the loop to stop reading, let what is in flight finish (at most one lease period)
    /// and release every lease; resolves once it did.
    pub(crate) async fn close(&self) {
        let done = self.done.notified();
        self.is_asked.store(true, Ordering::SeqCst);
        self.asked.notify_one();
        done.await;
    }
}

impl<B: Backend> Owner<B> {
    /// Runs until the job's receiver is gone.
    pub(crate) async fn run(self) {
        let tick = (self.lease / 5).max(Duration::from_millis(20));
        // Every lease call is bounded well inside the lease, whatever the backend's timeout.
        let bound = self.lease / 4;
        let stale = self.lease * 3 / 4;
        let epoch = Instant::now();
        let mut held: BTreeMap<u32, Held> = BTreeMap::new();
        let mut members = 1usize;
        let mut errors = 0u64;
        while !self.tx.is_closed() && !self.closing.is_asked.load(Ordering::SeqCst) {
            // Renew what is held, all at once; drop what was taken over or not renewed in time.
            let backend = &*self.backend;
            let renewals = futures_util::future::join_all(held.keys().map(|&p| async move {
                let sent = Instant::now();
                let r = tokio::time::timeout(bound, backend.renew(p)).await;
                (p, sent, r)
            }))
            .await;
            let mut lost = Vec::new();
            for (p, sent, r) in renewals {
                let Some(h) = held.get_mut(&p) else { continue };
                match r {
                    Ok(Ok(true)) => {
                        h.renewed = sent;
                        h.valid.extend_to(sent + stale);
                    }
                    Ok(Ok(false)) => lost.push((p, "another dispatcher holds its lease".into())),
                    Ok(Err(e)) => self.warn(&mut errors, format!("renewing partition {p}: {e}")),
                    Err(_) => self.warn(
                        &mut errors,
                        format!("renewing partition {p}: no answer within {bound:?}"),
                    ),
                }
            }
            for (p, h) in &held {
                if h.renewed.elapsed() >= stale && !lost.iter().any(|(q, _)| q == p) {
                    lost.push((*p, format!("its lease was not renewed for {stale:?}")));
                }
            }
            for (p, why) in lost {
                if let Some(h) = held.remove(&p) {
                    let _ = h.stop.send(true);
                    self.changed(&held);
                    tracing::warn!("{}: partition {p} dropped: {why}", self.name);
                }
            }
            // Partitions being given back whose reader ended and whose messages finished (or
            // that waited a whole lease).
            let drained: Vec<u32> = held
                .iter()
                .filter(|(_, h)| {
                    h.draining.is_some_and(|t| {
                        (h.inflight.load(Ordering::Relaxed) == 0 && h.task.is_finished())
                            || t.elapsed() >= self.lease
                    })
                })
                .map(|(p, _)| *p)
                .collect();
            for p in drained {
                held.remove(&p);
                self.changed(&held);
                match tokio::time::timeout(bound, self.backend.release(p)).await {
                    Ok(Ok(())) => tracing::info!("{}: partition {p} given back", self.name),
                    // It expires by itself within a lease.
                    Ok(Err(e)) => self.warn(&mut errors, format!("releasing partition {p}: {e}")),
                    Err(_) => self.warn(&mut errors, format!("releasing partition {p}: timed out")),
                }
            }
            match tokio::time::timeout(bound, self.backend.heartbeat()).await {
                Ok(Ok(n)) => members = n.max(1),
                Ok(Err(e)) => self.warn(&mut errors, format!("membership: {e}")),
                Err(_) => self.warn(&mut errors, "membership: timed out".into()),
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
                let sent = Instant::now();
                match tokio::time::timeout(bound, self.backend.acquire(p)).await {
                    Ok(Ok(true)) => {
                        let valid = Arc::new(Validity::new(epoch));
                        valid.extend_to(sent + stale);
                        // Counted before the reader starts: the job forgets its history before
                        // it sees the partition's first message.
                        self.changed(&held);
                        let h = self.start_reader(p, valid, sent);
                        held.insert(p, h);
                        tracing::info!("{}: partition {p} taken", self.name);
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        self.warn(&mut errors, format!("taking partition {p}: {e}"));
                        break;
                    }
                    Err(_) => {
                        self.warn(&mut errors, format!("taking partition {p}: timed out"));
                        break;
                    }
                }
            }
            let lags =
                futures_util::future::join_all(held.keys().map(|&p| async move {
                    (p, tokio::time::timeout(bound, backend.lag(p)).await)
                }))
                .await;
            self.lag.set(
                lags.into_iter()
                    .filter_map(|(p, r)| Some((p as i32, r.ok()?.ok()?)))
                    .collect(),
            );
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.closing.asked.notified() => {}
            }
        }
        // Stopping: no more reads; what is in flight finishes (its leases renewed meanwhile, for
        // at most one lease period), then every lease goes back.
        for h in held.values() {
            let _ = h.stop.send(true);
        }
        let since = Instant::now();
        while since.elapsed() < self.lease
            && held
                .values()
                .any(|h| h.inflight.load(Ordering::Relaxed) > 0 || !h.task.is_finished())
        {
            for &p in held.keys() {
                let _ = tokio::time::timeout(bound, self.backend.renew(p)).await;
            }
            tokio::time::sleep(tick.min(Duration::from_millis(50))).await;
        }
        let _ = tokio::time::timeout(bound, self.backend.leave()).await;
        for &p in held.keys() {
            let _ = tokio::time::timeout(bound, self.backend.release(p)).await;
        }
        if !held.is_empty() {
            tracing::info!(
                "{}: stopping; partitions {:?} handed back",
                self.name,
                held.keys().collect::<Vec<_>>()
            );
        }
        self.closing.done.notify_one();
    }

    /// Counts a change of the partitions held (the job clears its room history on it).
    fn changed(&self, held: &BTreeMap<u32, Held>) {
        inc(&self.metrics.queue_assignment_changes);
        let now: Vec<u32> = held.keys().copied().collect();
        tracing::info!(
            "{}: partitions changing (held: {now:?}); room history cleared",
            self.name
        );
    }

    fn start_reader(&self, p: u32, valid: Arc<Validity>, sent: Instant) -> Held {
        let (stop, stop_rx) = watch::channel(false);
        let inflight = Arc::new(AtomicUsize::new(0));
        let reader = Reader {
            stop: stop_rx,
            valid: valid.clone(),
            tx: self.tx.clone(),
            inflight: inflight.clone(),
            metrics: self.metrics.clone(),
        };
        let task = tokio::spawn(self.backend.clone().consume(p, reader));
        Held {
            stop,
            valid,
            inflight,
            renewed: sent,
            draining: None,
            task,
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
        let valid = Arc::new(Validity::new(Instant::now()));
        valid.extend_to(Instant::now() + Duration::from_secs(60));
        let mut r = Reader {
            stop: stop_rx,
            valid,
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

    #[tokio::test]
    async fn a_reader_stops_when_its_lease_is_not_renewed_in_time() {
        let (tx, _rx) = mpsc::channel(8);
        let (_stop, stop_rx) = watch::channel(false);
        let valid = Arc::new(Validity::new(Instant::now()));
        valid.extend_to(Instant::now() + Duration::from_millis(50));
        let mut r = Reader {
            stop: stop_rx,
            valid: valid.clone(),
            tx,
            inflight: Arc::default(),
            metrics: Arc::new(Metrics::default()),
        };
        assert!(!r.stopped());
        assert!(r.left() > Duration::ZERO);
        tokio::time::timeout(Duration::from_secs(5), r.until_stopped())
            .await
            .expect("until_stopped resolves when the validity runs out");
        assert!(r.stopped());
        let msg = PushMsg {
            r#type: 1,
            room: "live://1".into(),
            ..Default::default()
        }
        .to_bytes();
        assert!(
            !r.deliver(&msg, "late", || {}).await,
            "nothing taken past it"
        );
        // A renewal (sent later) makes it valid again; an older one never shortens it.
        valid.extend_to(Instant::now() + Duration::from_secs(60));
        valid.extend_to(Instant::now());
        assert!(!r.stopped());
        assert!(r.deliver(&msg, "renewed", || {}).await);
    }
}
