//! The NATS JetStream queue: one work-queue stream (`stream`) over the subjects
//! `<subject>.<p>`, one per partition, each with its durable pull consumer
//! (`<consumer>-<p>`) shared by the dispatchers and read by the holder of its lease
//! ([`super::ownership`]) so a room's messages stay in order.
//!
//! - **Produce**: publish to the room's partition subject and wait for JetStream's
//!   acknowledgement (stored). A stream already holding `max_messages` refuses new ones
//!   (discard policy `new`): the caller gets a clear -500, nothing accepted is dropped.
//! - **Consume**: the lease holder deletes the partition's consumer and creates it afresh,
//!   delivering from the first message the stream still holds. A work-queue stream removes a
//!   message when it is acknowledged, so that first message is the oldest not finished: what a
//!   dispatcher that died (or gave the partition back) took and did not finish comes again, in
//!   order, before new messages. (JetStream would otherwise redeliver such messages only after
//!   `ack_wait`, behind newer ones.)
//! - **Finish**: once every gateway concerned acknowledged a message, it is acknowledged to
//!   JetStream, which removes it.
//! - **Leases and membership**: the key-value bucket `<stream>-owners`, its entries living one
//!   lease period (`max_age`): `lease.<p>` (created only when absent, renewed by revision) and
//!   `member.<id>`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;
use protocol::push::PushMsg;
use tokio::sync::{Mutex as AsyncMutex, mpsc};

use super::ownership::{self, Backend, Lag, Owner, Reader};
use super::{BoxFut, Delivery, Queue};
use crate::config::NatsConfig;
use crate::metrics::Metrics;
use crate::{Error, Result};

fn err(reason: impl std::fmt::Display) -> Error {
    Error::Queue {
        backend: "nats",
        reason: reason.to_string(),
    }
}

/// Messages a reader may hold unacknowledged per partition (JetStream stops delivering past it).
const MAX_ACK_PENDING: i64 = 20_000;
/// JetStream redelivers an unacknowledged message after this long. Only the lease holder reads,
/// and a new holder recreates the consumer, so this matters only for a message stuck longer than
/// this at a live holder (it then arrives twice).
const ACK_WAIT: Duration = Duration::from_secs(600);
/// Messages asked for per pull.
const PULL_BATCH: usize = 256;
/// The server's idle heartbeat on a pending pull (a pull expires after six of them).
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);
/// Missed heartbeats in a row tolerated before the consumer is created afresh.
const MISSED_HEARTBEATS: u32 = 3;

/// The producing half (and the owner of the partitions' readers).
pub struct Nats {
    inner: Arc<Inner>,
    lag: Arc<Lag>,
    closing: Arc<ownership::Closing>,
}

struct Inner {
    cfg: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    owners: kv::Store,
    member: String,
    timeout: Duration,
    /// This member's revision of each lease it holds.
    leases: AsyncMutex<std::collections::HashMap<u32, u64>>,
    acks: mpsc::UnboundedSender<jetstream::message::Acker>,
}

impl Nats {
    /// Connects (failing now, with the cause, when no server answers), makes the stream and
    /// the owners bucket when missing, then starts the ownership loop and the acknowledger;
    /// the returned receiver feeds the job.
    pub async fn connect(
        cfg: &NatsConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Nats, mpsc::Receiver<Delivery>)> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let servers = cfg.servers.join(",");
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .max_reconnects(None)
            .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(1_000)))
            .connect(cfg.servers.clone())
            .await
            .map_err(|e| err(format!("cannot reach NATS at {servers}: {e}")))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(timeout);
        let storage = match cfg.storage.as_str() {
            "memory" => stream::StorageType::Memory,
            _ => stream::StorageType::File,
        };
        let stream = js
            .get_or_create_stream(stream::Config {
                name: cfg.stream.clone(),
                subjects: vec![format!("{}.*", cfg.subject)],
                retention: stream::RetentionPolicy::WorkQueue,
                max_messages: cfg.max_messages,
                discard: stream::DiscardPolicy::New,
                storage,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                err(format!(
                    "stream {} at {servers} (JetStream enabled? `nats-server -js`): {e}",
                    cfg.stream
                ))
            })?;
        let bucket = format!("{}-owners", cfg.stream);
        // The bucket's stream is made here as `create_key_value` would (async-nats asks for the
        // account's limits first, which it cannot parse from a 2.9 server).
        if js.get_key_value(&bucket).await.is_err() {
            js.get_or_create_stream(stream::Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age: Duration::from_millis(cfg.lease_ms),
                storage,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| err(format!("key-value bucket {bucket} at {servers}: {e}")))?;
        }
        let owners = js
            .get_key_value(&bucket)
            .await
            .map_err(|e| err(format!("key-value bucket {bucket} at {servers}: {e}")))?;
        let member: String = ownership::member_id()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            client,
            js,
            stream,
            owners,
            member,
            timeout,
            leases: AsyncMutex::default(),
            acks,
        });
        tokio::spawn(acknowledge(acks_rx, timeout));
        let (tx, rx) = mpsc::channel(1024);
        let lag = Arc::new(Lag::default());
        let closing = Arc::new(ownership::Closing::default());
        tracing::info!(
            "queue: NATS JetStream at {servers} (stream {}, subjects {}.0..{}, member {})",
            cfg.stream,
            cfg.subject,
            cfg.partitions,
            inner.member
        );
        let owner = Owner {
            backend: inner.clone(),
            name: "nats queue",
            partitions: cfg.partitions,
            lease: Duration::from_millis(cfg.lease_ms),
            start: ownership::start_of(&inner.member, cfg.partitions),
            tx,
            metrics,
            lag: lag.clone(),
            closing: closing.clone(),
        };
        tokio::spawn(owner.run());
        Ok((
            Nats {
                inner,
                lag,
                closing,
            },
            rx,
        ))
    }
}

impl Queue for Nats {
    fn backend(&self) -> &'static str {
        "nats"
    }

    fn produce<'a>(&'a self, msg: PushMsg) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let key = msg.queue_key();
            let p = ownership::partition_of(key.as_bytes(), self.inner.cfg.partitions);
            let subject = format!("{}.{p}", self.inner.cfg.subject);
            // The client would hold a publish while it reconnects and send it once NATS is
            // back, after the caller was told it failed: refuse it now instead.
            if self.inner.client.connection_state() != async_nats::connection::State::Connected {
                return Err(err(format!(
                    "not connected to NATS at {} (reconnecting); {subject} not published",
                    self.inner.cfg.servers.join(",")
                )));
            }
            let publish = async {
                self.inner
                    .js
                    .publish(subject.clone(), msg.to_bytes().into())
                    .await?
                    .await
            };
            match tokio::time::timeout(self.inner.timeout, publish).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(err(format!(
                    "publishing to {subject} (stream {}): {e}",
                    self.inner.cfg.stream
                ))),
                Err(_) => Err(err(format!(
                    "publishing to {subject}: JetStream did not acknowledge within {} ms",
                    self.inner.cfg.timeout_ms
                ))),
            }
        })
    }

    fn pending(&self) -> Option<u64> {
        None
    }

    fn lag(&self) -> Vec<(i32, u64)> {
        self.lag.get()
    }

    fn close(&self) -> BoxFut<'_, ()> {
        Box::pin(self.closing.close())
    }
}

impl Inner {
    fn durable(&self, p: u32) -> String {
        format!("{}-{p}", self.cfg.consumer)
    }

    async fn bounded<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = std::result::Result<T, E>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(err(format!("{what}: {e}"))),
            Err(_) => Err(err(format!(
                "{what}: no answer within {} ms",
                self.cfg.timeout_ms
            ))),
        }
    }

    /// The lease entry's holder and revision, if any.
    async fn holder(&self, key: &str) -> Result<Option<(String, u64)>> {
        let entry = self
            .bounded(&format!("reading {key}"), self.owners.entry(key))
            .await?;
        Ok(entry
            .filter(|e| matches!(e.operation, kv::Operation::Put))
            .map(|e| (String::from_utf8_lossy(&e.value).into_owned(), e.revision)))
    }

    /// Reads partition `p` with a fresh consumer until stopped.
    async fn read(&self, p: u32, reader: &mut Reader) -> Result<()> {
        let durable = self.durable(p);
        // Deleting the consumer is the lease holder's alone (another may hold it by now).
        if reader.stopped() {
            return Ok(());
        }
        match tokio::time::timeout(self.timeout, self.stream.delete_consumer(&durable)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e))
                if matches!(e.kind(), stream::ConsumerErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) => {}
            Ok(Err(e)) => return Err(err(format!("deleting consumer {durable}: {e}"))),
            Err(_) => return Err(err(format!("deleting consumer {durable}: timed out"))),
        }
        let consumer: consumer::PullConsumer = self
            .bounded(
                &format!("creating consumer {durable}"),
                self.stream.create_consumer(consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: format!("{}.{p}", self.cfg.subject),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                }),
            )
            .await?;
        let mut messages = self
            .bounded(
                &format!("pulling from {durable}"),
                consumer
                    .stream()
                    .max_messages_per_batch(PULL_BATCH)
                    .heartbeat(PULL_HEARTBEAT)
                    .expires(PULL_HEARTBEAT * 6)
                    .messages(),
            )
            .await?;
        let mut missed = 0;
        loop {
            let next = tokio::select! {
                biased;
                _ = reader.until_stopped() => return Ok(()),
                m = messages.next() => m,
            };
            let m = match next {
                Some(Ok(m)) => {
                    missed = 0;
                    m
                }
                // A busy machine can miss a heartbeat; the pull goes on. Only a server silent
                // for several heartbeats makes the consumer be created afresh.
                Some(Err(e))
                    if e.kind() == consumer::pull::MessagesErrorKind::MissingHeartbeat
                        && missed < MISSED_HEARTBEATS =>
                {
                    missed += 1;
                    tracing::debug!("pulling from {durable}: {e} ({missed} in a row)");
                    continue;
                }
                Some(Err(e)) => return Err(err(format!("pulling from {durable}: {e}"))),
                None => return Err(err(format!("pulling from {durable}: the stream ended"))),
            };
            let what = match m.info() {
                Ok(i) => format!("{} #{}", self.cfg.stream, i.stream_sequence),
                Err(_) => format!("{} (no metadata)", self.cfg.stream),
            };
            let (m, acker) = m.split();
            let acks = self.acks.clone();
            let taken = reader
                .deliver(&m.payload, what, move || {
                    // The acknowledger outlives every reader; if it is gone the process is
                    // stopping and the message comes again to the partition's next reader.
                    let _ = acks.send(acker);
                })
                .await;
            if !taken {
                return Ok(());
            }
        }
    }
}

/// Acknowledges finished messages to JetStream, one publish each (no round trip waited for).
/// A lost acknowledgement makes the message come again to the partition's next reader
/// (at-least-once). The channel holds at most the messages in flight.
async fn acknowledge(
    mut rx: mpsc::UnboundedReceiver<jetstream::message::Acker>,
    timeout: Duration,
) {
    let mut errors = 0u64;
    while let Some(acker) = rx.recv().await {
        let acked = match tokio::time::timeout(timeout, acker.ack()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "no room to send it within {} ms",
                timeout.as_millis()
            )),
        };
        if let Err(e) = acked {
            errors += 1;
            if errors.is_power_of_two() {
                tracing::warn!(
                    "nats queue: acknowledging a finished message: {e}; it comes again to the partition's next reader ({errors} failures so far)"
                );
            }
        }
    }
}

impl Backend for Inner {
    fn heartbeat(&self) -> BoxFut<'_, Result<usize>> {
        Box::pin(async move {
            let key = format!("member.{}", self.member);
            self.bounded(
                "membership",
                self.owners.put(&key, self.member.clone().into()),
            )
            .await?;
            let count = async {
                let mut keys = self.owners.keys().await?;
                let mut n = 0usize;
                while let Some(k) = keys.next().await {
                    if k?.starts_with("member.") {
                        n += 1;
                    }
                }
                Ok::<usize, async_nats::Error>(n)
            };
            Ok(self.bounded("listing members", count).await?.max(1))
        })
    }

    fn acquire(&self, partition: u32) -> BoxFut<'_, Result<bool>> {
        Box::pin(async move {
            let key = format!("lease.{partition}");
            let created = tokio::time::timeout(
                self.timeout,
                self.owners.create(&key, self.member.clone().into()),
            )
            .await;
            let revision = match created {
                Ok(Ok(rev)) => rev,
                Err(_) => return Err(err(format!("taking {key}: timed out"))),
                Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match self.holder(&key).await? {
                        // This member's already (a lease kept across a broker blip).
                        Some((who, rev)) if who == self.member => rev,
                        _ => return Ok(false),
                    }
                }
                Ok(Err(e)) => return Err(err(format!("taking {key}: {e}"))),
            };
            self.leases.lock().await.insert(partition, revision);
            Ok(true)
        })
    }

    fn renew(&self, partition: u32) -> BoxFut<'_, Result<bool>> {
        Box::pin(async move {
            let key = format!("lease.{partition}");
            let Some(rev) = self.leases.lock().await.get(&partition).copied() else {
                return Ok(false);
            };
            let updated = tokio::time::timeout(
                self.timeout,
                self.owners.update(&key, self.member.clone().into(), rev),
            )
            .await;
            match updated {
                Ok(Ok(new)) => {
                    self.leases.lock().await.insert(partition, new);
                    Ok(true)
                }
                Err(_) => Err(err(format!("renewing {key}: timed out"))),
                Ok(Err(e)) => match self.holder(&key).await? {
                    Some((who, rev)) if who == self.member => {
                        // Our own (the revision moved under a retried update).
                        self.leases.lock().await.insert(partition, rev);
                        Ok(true)
                    }
                    Some(_) | None => {
                        tracing::debug!("renewing {key}: {e}");
                        self.leases.lock().await.remove(&partition);
                        Ok(false)
                    }
                },
            }
        })
    }

    fn release(&self, partition: u32) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            let key = format!("lease.{partition}");
            let Some(rev) = self.leases.lock().await.remove(&partition) else {
                return Ok(());
            };
            self.bounded(
                &format!("releasing {key}"),
                self.owners.delete_expect_revision(&key, Some(rev)),
            )
            .await
        })
    }

    fn leave(&self) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            let key = format!("member.{}", self.member);
            self.bounded("leaving", self.owners.delete(&key)).await
        })
    }

    fn lag(&self, partition: u32) -> BoxFut<'_, Result<u64>> {
        Box::pin(async move {
            let durable = self.durable(partition);
            let info = self
                .bounded(
                    &format!("consumer {durable}"),
                    self.stream.consumer_info(&durable),
                )
                .await?;
            Ok(info.num_pending + info.num_ack_pending as u64)
        })
    }

    fn consume(self: Arc<Self>, partition: u32, mut reader: Reader) -> BoxFut<'static, ()> {
        Box::pin(async move {
            let mut errors = 0u64;
            while !reader.stopped() {
                match self.read(partition, &mut reader).await {
                    Ok(()) => break,
                    Err(e) => {
                        errors += 1;
                        if errors.is_power_of_two() {
                            tracing::warn!(
                                "nats queue: partition {partition}: {e} ({errors} errors so far); retrying"
                            );
                        }
                        reader.pause(Duration::from_millis(250)).await;
                    }
                }
            }
        })
    }
}
