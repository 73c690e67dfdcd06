//! The Kafka queue (rdkafka): goim's topic (`goim-push-topic`), message key and value, so a
//! corecast dispatcher can share a topic with goim's logic and job.
//!
//! - **Produce**: acks=all with idempotence; the key is goim's (room key, first key, or the
//!   operation), hashed with FNV-1a as sarama does, so one room stays in one partition and in
//!   order. The HTTP call is answered when the broker acknowledged the message, or with the
//!   error after `message_timeout_ms`.
//! - **Consume**: one consumer in goim's group (`goim-push-group-job`) feeds the job through a
//!   bounded channel. Offsets are stored only for messages whose completion token was released
//!   (every gateway concerned acknowledged the push), and never past one still in flight, so a
//!   dispatcher that dies loses nothing that was acknowledged to a caller: its partitions are
//!   re-read from the last offset stored (at-least-once; goim marks offsets before pushing,
//!   at-most-once). librdkafka commits stored offsets in the background.
//! - **Lag** (`/metrics`): per partition assigned to this consumer, the high watermark (asked
//!   of the broker) minus the offset a restart would read from: the oldest offset in flight,
//!   else one past the highest taken, or the committed offset if that is further (a partition
//!   just taken over from another dispatcher), else the low watermark.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use protocol::push::PushMsg;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::{BoxFut, Delivery, Done, Queue};
use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::{Error, Result};

fn err(reason: impl std::fmt::Display) -> Error {
    Error::Queue {
        backend: "kafka",
        reason: reason.to_string(),
    }
}

/// The producing half.
pub struct Kafka {
    producer: RwLock<Arc<FutureProducer>>,
    producer_config: ClientConfig,
    /// When the producer was last replaced after a failure (at most once per timeout).
    rebuilt: Mutex<Instant>,
    topic: String,
    timeout: Duration,
    consumer: Arc<StreamConsumer>,
    inflight: Arc<Mutex<InFlight>>,
    /// The last lag read from the broker and when: scrapes within [`LAG_CACHE`] of it get it
    /// again, and only one scrape at a time asks the broker (`/metrics` is public).
    lag_cache: Mutex<Option<(Instant, Lag)>>,
    lag_asking: Mutex<()>,
}

/// Messages behind, per partition.
type Lag = Vec<(i32, u64)>;

/// How long a lag read from the broker is served to scrapes.
const LAG_CACHE: Duration = Duration::from_secs(1);

/// Counts changes of this consumer's partition assignment (`queue_assignment_changes`), looked
/// at every 250 ms: the job forgets its room history on each (rooms may have moved).
async fn watch_assignment(consumer: Arc<StreamConsumer>, metrics: Arc<Metrics>) {
    let mut seen: Option<Vec<(String, i32)>> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(list) = consumer.assignment() else {
            continue;
        };
        let mut now: Vec<(String, i32)> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        now.sort();
        if seen.as_ref().is_some_and(|s| *s != now) {
            crate::metrics::inc(&metrics.queue_assignment_changes);
            tracing::info!("kafka: partition assignment now {now:?}; room history cleared");
        }
        seen = Some(now);
    }
}

/// The longest a `/metrics` scrape waits for the broker's watermarks and committed offsets.
const LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// Offsets taken off the queue and not yet finished, per partition (offset → times seen), and
/// one past the highest offset taken.
#[derive(Default)]
struct InFlight {
    partitions: HashMap<i32, (BTreeMap<i64, u32>, i64)>,
}

impl InFlight {
    fn start(&mut self, partition: i32, offset: i64) {
        let (map, next) = self.partitions.entry(partition).or_default();
        *map.entry(offset).or_default() += 1;
        *next = (*next).max(offset + 1);
    }

    /// Marks one finished; returns the offset to store (where a restart reads from): the
    /// oldest still in flight, or one past the highest taken when none is.
    fn finish(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let (map, next) = self.partitions.get_mut(&partition)?;
        if let Some(n) = map.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                map.remove(&offset);
            }
        }
        Some(map.keys().next().copied().unwrap_or(*next))
    }

    /// Where a restart would read `partition` from, as far as this consumer knows: the oldest
    /// offset in flight, else one past the highest taken (None: nothing taken from it).
    fn resume_offset(&self, partition: i32) -> Option<i64> {
        let (map, next) = self.partitions.get(&partition)?;
        Some(map.keys().next().copied().unwrap_or(*next))
    }
}

impl Kafka {
    /// Connects a producer and a consumer; the returned receiver feeds the job.
    pub async fn connect(
        cfg: &KafkaConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Kafka, mpsc::Receiver<Delivery>)> {
        let brokers = cfg.brokers.join(",");
        let mut producer_config = ClientConfig::new();
        producer_config
            .set("bootstrap.servers", &brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // sarama's hash partitioner (goim's producer): FNV-1a of the key.
            .set("partitioner", "fnv1a")
            .set("message.timeout.ms", cfg.message_timeout_ms.to_string())
            .set("topic.metadata.refresh.interval.ms", "2000")
            .set("linger.ms", "1");
        let producer: FutureProducer = producer_config.create().map_err(err)?;
        if cfg.create_partitions > 0 {
            create_topic(&brokers, &cfg.topic, cfg.create_partitions).await?;
        }
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &cfg.group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "200")
            .set("enable.auto.offset.store", "false")
            // A new group reads from the start of what the topic holds: a message produced
            // (and acknowledged to a caller) before any job joined is still delivered.
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("topic.metadata.refresh.interval.ms", "2000")
            .create()
            .map_err(err)?;
        consumer.subscribe(&[&cfg.topic]).map_err(err)?;
        let (tx, rx) = mpsc::channel(1024);
        let consumer = Arc::new(consumer);
        let inflight = Arc::new(Mutex::new(InFlight::default()));
        tokio::spawn(watch_assignment(consumer.clone(), metrics.clone()));
        tokio::spawn(consume(
            consumer.clone(),
            cfg.topic.clone(),
            tx,
            metrics,
            inflight.clone(),
        ));
        Ok((
            Kafka {
                producer: RwLock::new(Arc::new(producer)),
                producer_config,
                rebuilt: Mutex::new(Instant::now()),
                topic: cfg.topic.clone(),
                timeout: Duration::from_millis(cfg.message_timeout_ms),
                consumer,
                inflight,
                lag_cache: Mutex::new(None),
                lag_asking: Mutex::new(()),
            },
            rx,
        ))
    }
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(err)?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| err(format!("creating topic {topic}: {e}")))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(err(format!("creating topic {t}: {code}"))),
        }
    }
    Ok(())
}

async fn consume(
    consumer: Arc<StreamConsumer>,
    topic: String,
    tx: mpsc::Sender<Delivery>,
    metrics: Arc<Metrics>,
    inflight: Arc<Mutex<InFlight>>,
) {
    let mut errors = 0u64;
    loop {
        let m = match consumer.recv().await {
            Ok(m) => m,
            Err(e) => {
                errors += 1;
                if errors.is_power_of_two() {
                    tracing::warn!("kafka consumer: {e} ({errors} errors so far)");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (partition, offset) = (m.partition(), m.offset());
        let decoded = PushMsg::from_bytes(m.payload().unwrap_or_default());
        tracing::trace!(
            "kafka: partition {partition} offset {offset} key {:?}",
            m.key().map(String::from_utf8_lossy)
        );
        drop(m);
        inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .start(partition, offset);
        let (c, t, f) = (consumer.clone(), topic.clone(), inflight.clone());
        let done = Done::on_complete(move || {
            let next = f
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .finish(partition, offset);
            tracing::trace!("kafka: partition {partition} offset {offset} done; storing {next:?}");
            // rd_kafka_offsets_store takes the offset to commit as given (the next one to
            // read); rdkafka's store_offset would commit offset + 1 and skip a message.
            let mut tpl = TopicPartitionList::new();
            if let Some(next) = next
                && let Err(e) = tpl
                    .add_partition_offset(&t, partition, Offset::Offset(next))
                    .and_then(|()| c.store_offsets(&tpl))
            {
                // The partition may have been revoked meanwhile: its new owner re-reads.
                tracing::debug!("kafka: storing offset {next} of partition {partition}: {e}");
            }
        });
        match decoded {
            Ok(msg) => {
                if tx.send(Delivery { msg, done }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                crate::metrics::inc(&metrics.queue_bad_messages);
                tracing::warn!("kafka: partition {partition} offset {offset} skipped: {e}");
                drop(done);
            }
        }
    }
}

impl Queue for Kafka {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    fn pending(&self) -> Option<u64> {
        None
    }

    /// Blocks on the broker (up to [`LAG_TIMEOUT`] in all): its committed offsets for the
    /// assigned partitions, then each partition's high watermark. Partitions the broker does
    /// not answer for in time are left out.
    fn lag(&self) -> Vec<(i32, u64)> {
        let cached = || {
            self.lag_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        if let Some((at, lag)) = cached()
            && at.elapsed() < LAG_CACHE
        {
            return lag;
        }
        // Another scrape is asking the broker: serve what there is.
        let Ok(_asking) = self.lag_asking.try_lock() else {
            return cached().map(|(_, lag)| lag).unwrap_or_default();
        };
        let lag = self.lag_from_broker();
        *self.lag_cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), lag.clone()));
        lag
    }

    fn produce<'a>(&'a self, msg: PushMsg) -> BoxFut<'a, Result<()>> {
        Box::pin(async move { self.produce_one(msg).await })
    }
}

impl Kafka {
    /// The lag as the broker has it now (blocks up to [`LAG_TIMEOUT`]).
    fn lag_from_broker(&self) -> Vec<(i32, u64)> {
        let Ok(assigned) = self.consumer.assignment() else {
            return Vec::new();
        };
        let partitions: Vec<i32> = assigned
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        if partitions.is_empty() {
            return Vec::new();
        }
        let deadline = Instant::now() + LAG_TIMEOUT;
        let committed = self
            .consumer
            .committed_offsets(assigned, LAG_TIMEOUT / 2)
            .ok();
        let taken: Vec<Option<i64>> = {
            let f = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            partitions.iter().map(|&p| f.resume_offset(p)).collect()
        };
        let mut out = Vec::new();
        for (p, taken) in partitions.into_iter().zip(taken) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Ok((low, high)) = self.consumer.fetch_watermarks(&self.topic, p, left) else {
                break;
            };
            let committed = committed
                .as_ref()
                .and_then(|c| c.find_partition(&self.topic, p))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let from = match (taken, committed) {
                (Some(t), Some(c)) => t.max(c),
                (Some(o), None) | (None, Some(o)) => o,
                (None, None) => low,
            };
            out.push((p, (high - from).max(0) as u64));
        }
        out
    }

    async fn produce_one(&self, msg: PushMsg) -> Result<()> {
        let key = msg.queue_key();
        let value = msg.to_bytes();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&value);
        let producer = self
            .producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match producer.send(record, Timeout::After(self.timeout)).await {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                self.replace_producer(&producer);
                Err(err(format!("producing to {}: {e}", self.topic)))
            }
        }
    }
}

impl Kafka {
    /// After a failed produce, starts a fresh producer (at most once per message timeout).
    /// An idempotent producer can be left unusable by a broker failure (librdkafka's fatal
    /// idempotence errors, or a broker that lost its producer ids); a new one starts a new
    /// producer session. Sends in flight on the old one finish on it.
    fn replace_producer(&self, failed: &Arc<FutureProducer>) {
        let mut last = self.rebuilt.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() < self.timeout {
            return;
        }
        let mut current = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match self.producer_config.create::<FutureProducer>() {
            Ok(p) => {
                *current = Arc::new(p);
                *last = Instant::now();
                tracing::warn!("kafka: producer replaced after a failed produce");
            }
            Err(e) => tracing::warn!("kafka: could not create a new producer: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stored_only_up_to_the_oldest_in_flight() {
        let mut f = InFlight::default();
        for o in 10..13 {
            f.start(0, o);
        }
        // 11 finishes first: 10 is still in flight, so the stored offset stays at 10.
        assert_eq!(f.finish(0, 11), Some(10));
        assert_eq!(f.finish(0, 10), Some(12));
        assert_eq!(f.finish(0, 12), Some(13));
        // Another partition is independent; an unknown partition stores nothing.
        f.start(1, 0);
        assert_eq!(f.finish(1, 0), Some(1));
        assert_eq!(f.finish(7, 3), None);
    }

    #[test]
    fn resume_offset_is_the_oldest_in_flight_else_past_the_highest() {
        let mut f = InFlight::default();
        assert_eq!(f.resume_offset(0), None);
        f.start(0, 5);
        f.start(0, 6);
        assert_eq!(f.resume_offset(0), Some(5));
        f.finish(0, 5);
        assert_eq!(f.resume_offset(0), Some(6));
        f.finish(0, 6);
        assert_eq!(f.resume_offset(0), Some(7));
    }
}
