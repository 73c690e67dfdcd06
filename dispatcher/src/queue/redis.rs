//! The Redis Streams queue: one stream per partition (`<stream>:<p>`), one consumer group
//! (`group`) shared by the dispatchers, each partition read by the holder of its lease
//! ([`super::ownership`]) so a room's messages stay in order.
//!
//! - **Produce**: a script refuses the message when the partition's stream already holds
//!   `max_len` entries, else XADDs it (fields `k`, goim's queue key, and `v`, the `PushMsg`
//!   bytes). The cap never trims: trimming would drop messages no dispatcher delivered yet,
//!   after their callers were told they were accepted. A full stream is a clear -500 instead.
//! - **Consume**: the lease holder first claims (XAUTOCLAIM) every entry another consumer took
//!   and did not acknowledge (a dispatcher that died, or gave the partition back), in order, then
//!   reads new entries (XREADGROUP, `>`) into the job.
//! - **Finish**: once every gateway concerned acknowledged a message, XACK and XDEL remove it,
//!   so a stream holds only unfinished messages and its length is the partition's lag.
//! - **Leases and membership**: `<stream>:<p>:owner` (SET NX PX, extended and deleted only by
//!   its holder, in scripts) and the sorted set `<stream>:members` (scored with Redis's clock).
//!
//! Each round trip is bounded by `timeout_ms`; reads use their own connection per partition
//! (a blocking read would hold up a shared one).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::{AsyncConnectionConfig, Client, Script, Value};
use protocol::push::PushMsg;
use tokio::sync::mpsc;

use super::ownership::{self, Backend, Lag, Owner, Reader};
use super::{BoxFut, Delivery, Queue};
use crate::config::RedisQueueConfig;
use crate::metrics::Metrics;
use crate::registry::redis::redact;
use crate::{Error, Result};

fn err(reason: impl std::fmt::Display) -> Error {
    Error::Queue {
        backend: "redis",
        reason: reason.to_string(),
    }
}

/// Entries read or claimed per round trip.
const READ_COUNT: usize = 256;
/// How long one read waits for new entries.
const READ_BLOCK: Duration = Duration::from_millis(500);
/// Acknowledgements sent per round trip.
const ACK_BATCH: usize = 1024;

/// KEYS: stream. ARGV: cap, key, value. The entry id, or an error when the stream is full.
const PRODUCE: &str = r#"
local len = redis.call('XLEN', KEYS[1])
if len >= tonumber(ARGV[1]) then
  return redis.error_reply('FULL ' .. len)
end
return redis.call('XADD', KEYS[1], '*', 'k', ARGV[2], 'v', ARGV[3])
"#;

/// KEYS: lease. ARGV: member, ms. 1 when the lease is (now) the member's.
const ACQUIRE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: lease. ARGV: member, ms. 1 when extended, 0 when another member holds it or none.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// KEYS: lease. ARGV: member.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// KEYS: members. ARGV: member, ms. Records the member now (Redis's clock), forgets members
/// silent for `ms`, and returns how many remain.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZCARD', KEYS[1])
"#;

/// The producing half (and the owner of the partitions' readers).
pub struct RedisQueue {
    inner: Arc<Inner>,
    lag: Arc<Lag>,
    closing: Arc<ownership::Closing>,
}

struct Inner {
    cfg: RedisQueueConfig,
    client: Client,
    con: ConnectionManager,
    /// The URL with any password masked, for messages.
    url: String,
    member: String,
    timeout: Duration,
    acks: mpsc::UnboundedSender<(u32, String)>,
    produce: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    heartbeat: Script,
}

impl RedisQueue {
    /// Connects (failing now, with the cause, when Redis does not answer), then starts the
    /// ownership loop and the acknowledger; the returned receiver feeds the job.
    pub async fn connect(
        cfg: &RedisQueueConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(RedisQueue, mpsc::Receiver<Delivery>)> {
        let url = redact(&cfg.url);
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let client = Client::open(cfg.url.as_str())
            .map_err(|e| err(format!("queue.redis.url {url:?} is not a Redis URL: {e}")))?;
        let cannot_reach = |e: String| err(format!("cannot reach Redis at {url}: {e}"));
        let mut probe = tokio::time::timeout(timeout, connect_reader(&client, timeout))
            .await
            .map_err(|_| cannot_reach(format!("no answer within {} ms", cfg.timeout_ms)))?
            .map_err(|e| cannot_reach(e.to_string()))?;
        let _: String = ::redis::cmd("PING")
            .query_async(&mut probe)
            .await
            .map_err(|e| cannot_reach(e.to_string()))?;
        let mc = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_max_delay(Duration::from_secs(1));
        let con = tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client.clone(), mc),
        )
        .await
        .map_err(|_| cannot_reach(format!("no answer within {} ms", cfg.timeout_ms)))?
        .map_err(|e| cannot_reach(e.to_string()))?;
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            client,
            con,
            url,
            member: ownership::member_id(),
            timeout,
            acks,
            produce: Script::new(PRODUCE),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            heartbeat: Script::new(HEARTBEAT),
        });
        tokio::spawn(acknowledge(inner.clone(), acks_rx));
        let (tx, rx) = mpsc::channel(1024);
        let lag = Arc::new(Lag::default());
        let closing = Arc::new(ownership::Closing::default());
        tracing::info!(
            "queue: Redis Streams at {} ({}:0..{}, group {}, member {})",
            inner.url,
            cfg.stream,
            cfg.partitions,
            cfg.group,
            inner.member
        );
        let owner = Owner {
            backend: inner.clone(),
            name: "redis queue",
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
            RedisQueue {
                inner,
                lag,
                closing,
            },
            rx,
        ))
    }
}

async fn connect_reader(
    client: &Client,
    timeout: Duration,
) -> ::redis::RedisResult<MultiplexedConnection> {
    let cc = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout + READ_BLOCK));
    client
        .get_multiplexed_async_connection_with_config(&cc)
        .await
}

impl Queue for RedisQueue {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn produce<'a>(&'a self, msg: PushMsg) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let key = msg.queue_key();
            let p = ownership::partition_of(key.as_bytes(), self.inner.cfg.partitions);
            let stream = self.inner.stream(p);
            let mut con = self.inner.con.clone();
            let mut call = self.inner.produce.prepare_invoke();
            call.key(&stream)
                .arg(self.inner.cfg.max_len)
                .arg(&key)
                .arg(msg.to_bytes());
            let added: ::redis::RedisResult<String> = self
                .inner
                .bounded(call.invoke_async(&mut con))
                .await
                .map_err(|e| err(format!("adding to {stream}: {e}")))?;
            match added {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("FULL") => Err(err(format!(
                    "stream {stream} at {} holds queue.redis.max_len ({}) unfinished messages: its reader is behind or gone",
                    self.inner.url, self.inner.cfg.max_len
                ))),
                Err(e) => Err(err(format!(
                    "adding to {stream} at {}: {e}",
                    self.inner.url
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
    fn stream(&self, p: u32) -> String {
        format!("{}:{p}", self.cfg.stream)
    }

    fn lease_key(&self, p: u32) -> String {
        format!("{}:{p}:owner", self.cfg.stream)
    }

    /// Bounds one round trip by `timeout_ms`.
    async fn bounded<T>(&self, f: impl std::future::Future<Output = T>) -> Result<T> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| {
            err(format!(
                "Redis at {} did not answer within {} ms",
                self.url, self.cfg.timeout_ms
            ))
        })
    }

    async fn lease_script(&self, script: &Script, p: u32, with_ms: bool) -> Result<i64> {
        let mut con = self.con.clone();
        let mut call = script.prepare_invoke();
        call.key(self.lease_key(p)).arg(&self.member);
        if with_ms {
            call.arg(self.cfg.lease_ms);
        }
        self.bounded(call.invoke_async::<i64>(&mut con))
            .await?
            .map_err(|e| err(format!("lease of partition {p} at {}: {e}", self.url)))
    }

    /// Bounds one round trip by `d`.
    async fn bounded_by<T>(
        &self,
        d: Duration,
        f: impl std::future::Future<Output = T>,
    ) -> Result<T> {
        tokio::time::timeout(d, f).await.map_err(|_| {
            err(format!(
                "Redis at {} did not answer within {} ms",
                self.url,
                d.as_millis()
            ))
        })
    }

    /// One XAUTOCLAIM page: entries pending for at least `min_idle_ms` from `cursor` on, now
    /// this member's; the next cursor ("0-0" at the end).
    async fn claim(
        &self,
        con: &mut MultiplexedConnection,
        stream: &str,
        min_idle_ms: u64,
        cursor: &str,
        within: Duration,
    ) -> Result<(String, Entries)> {
        let reply: Value = self
            .bounded_by(
                within,
                ::redis::cmd("XAUTOCLAIM")
                    .arg(stream)
                    .arg(&self.cfg.group)
                    .arg(&self.member)
                    .arg(min_idle_ms)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(READ_COUNT)
                    .query_async(con),
            )
            .await?
            .map_err(|e| err(format!("claiming in {stream} at {}: {e}", self.url)))?;
        parse_autoclaim(reply).map_err(|e| err(format!("{stream}: {e}")))
    }

    /// Reads partition `p` once connected: claims what others left unfinished (skipping what
    /// this reader already has in flight), then reads new entries until stopped. Every round
    /// trip ends within the lease's validity (an entry read after it would sit in this
    /// member's pending list); once per lease period it also claims entries pending for two
    /// lease periods anywhere (a read that outlived its bound; an acknowledgement that failed),
    /// which then arrive late rather than never.
    async fn read(
        &self,
        p: u32,
        reader: &mut Reader,
        inflight: &Arc<Mutex<HashSet<String>>>,
    ) -> Result<()> {
        let stream = self.stream(p);
        let at = |e: ::redis::RedisError| err(format!("reading {stream} at {}: {e}", self.url));
        let within = |r: &Reader| r.left().min(self.timeout + READ_BLOCK);
        let mut con = self
            .bounded_by(within(reader), connect_reader(&self.client, self.timeout))
            .await?
            .map_err(at)?;
        let created: ::redis::RedisResult<()> = self
            .bounded_by(
                within(reader),
                ::redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg(&self.cfg.group)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut con),
            )
            .await?;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(at(e));
        }
        let mut cursor = "0-0".to_string();
        loop {
            if reader.stopped() {
                return Ok(());
            }
            let (next, entries) = self
                .claim(&mut con, &stream, 0, &cursor, within(reader))
                .await?;
            if !self.hand_over_all(p, reader, inflight, entries).await {
                return Ok(());
            }
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        self.forget_idle_consumers(&mut con, &stream).await;
        let sweep_every = Duration::from_millis(self.cfg.lease_ms);
        let mut swept = std::time::Instant::now();
        let mut sweep_cursor = "0-0".to_string();
        while !reader.stopped() {
            if swept.elapsed() >= sweep_every {
                swept = std::time::Instant::now();
                let (next, entries) = self
                    .claim(
                        &mut con,
                        &stream,
                        2 * self.cfg.lease_ms,
                        &sweep_cursor,
                        within(reader),
                    )
                    .await?;
                sweep_cursor = next;
                let inflight_now = inflight.lock().unwrap_or_else(|x| x.into_inner()).clone();
                let late: Entries = entries
                    .into_iter()
                    .filter(|(id, _)| !inflight_now.contains(id))
                    .collect();
                if !late.is_empty() {
                    tracing::warn!(
                        "redis queue: {} entries of {stream} left pending for {} ms are delivered late",
                        late.len(),
                        2 * self.cfg.lease_ms
                    );
                }
                if !self.hand_over_all(p, reader, inflight, late).await {
                    return Ok(());
                }
            }
            // The read blocks at most half of what is left of the lease, and must be answered
            // within what is left.
            let left = reader.left();
            if left < Duration::from_millis(20) {
                reader.pause(Duration::from_millis(10)).await;
                continue;
            }
            let block = READ_BLOCK.min(left / 2).max(Duration::from_millis(1));
            let reply: Value = self
                .bounded_by(
                    left.min(block + self.timeout),
                    ::redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(&self.cfg.group)
                        .arg(&self.member)
                        .arg("COUNT")
                        .arg(READ_COUNT)
                        .arg("BLOCK")
                        .arg(block.as_millis() as u64)
                        .arg("STREAMS")
                        .arg(&stream)
                        .arg(">")
                        .query_async(&mut con),
                )
                .await?
                .map_err(at)?;
            let entries = parse_read(reply).map_err(|e| err(format!("{stream}: {e}")))?;
            if !self.hand_over_all(p, reader, inflight, entries).await {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Hands entries over in order, skipping those this reader already has in flight; `false`
    /// once the reader is stopped.
    async fn hand_over_all(
        &self,
        p: u32,
        reader: &mut Reader,
        inflight: &Arc<Mutex<HashSet<String>>>,
        entries: Entries,
    ) -> bool {
        for (id, payload) in entries {
            if inflight
                .lock()
                .unwrap_or_else(|x| x.into_inner())
                .contains(&id)
            {
                continue;
            }
            if !self.hand_over(p, reader, inflight, id, payload).await {
                return false;
            }
        }
        true
    }

    /// Removes the group's consumers that hold no pending entry and were idle for ten lease
    /// periods (dispatchers that stopped: each run is a new member). Best effort.
    async fn forget_idle_consumers(&self, con: &mut MultiplexedConnection, stream: &str) {
        let info: Result<::redis::RedisResult<Value>> = self
            .bounded(
                ::redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(stream)
                    .arg(&self.cfg.group)
                    .query_async(con),
            )
            .await;
        let Ok(Ok(info)) = info else { return };
        for (name, pending, idle_ms) in parse_consumers(info) {
            if name != self.member && pending == 0 && idle_ms > 10 * self.cfg.lease_ms {
                let _: Result<::redis::RedisResult<i64>> = self
                    .bounded(
                        ::redis::cmd("XGROUP")
                            .arg("DELCONSUMER")
                            .arg(stream)
                            .arg(&self.cfg.group)
                            .arg(&name)
                            .query_async(con),
                    )
                    .await;
            }
        }
    }

    /// Gives one entry to the job; its completion queues its XACK + XDEL.
    async fn hand_over(
        &self,
        p: u32,
        reader: &mut Reader,
        inflight: &Arc<Mutex<HashSet<String>>>,
        id: String,
        payload: Vec<u8>,
    ) -> bool {
        inflight
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .insert(id.clone());
        let (acks, held) = (self.acks.clone(), inflight.clone());
        let what = format!("{}:{p} {id}", self.cfg.stream);
        let key = id.clone();
        let taken = reader
            .deliver(&payload, what, move || {
                held.lock().unwrap_or_else(|x| x.into_inner()).remove(&key);
                // The acknowledger outlives every reader; if it is gone the process is
                // stopping and the entry stays pending for the next owner.
                let _ = acks.send((p, key));
            })
            .await;
        if !taken {
            inflight
                .lock()
                .unwrap_or_else(|x| x.into_inner())
                .remove(&id);
        }
        taken
    }
}

/// One entry of a stream reply: its id and its `v` field.
fn parse_entry(v: Value) -> std::result::Result<Option<(String, Vec<u8>)>, String> {
    let Value::Array(mut parts) = v else {
        // XAUTOCLAIM before Redis 7 gave nil for an entry deleted while pending.
        return Ok(None);
    };
    if parts.len() != 2 {
        return Err(format!("an entry of {} parts", parts.len()));
    }
    let fields = parts.pop();
    let id = match parts.pop() {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => return Err(format!("an entry id {other:?}")),
    };
    let Some(Value::Array(fields)) = fields else {
        return Ok(Some((id, Vec::new())));
    };
    let mut it = fields.into_iter();
    let mut payload = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if matches!(&k, Value::BulkString(b) if b == b"v")
            && let Value::BulkString(b) = v
        {
            payload = b;
        }
    }
    Ok(Some((id, payload)))
}

type Entries = Vec<(String, Vec<u8>)>;

fn parse_entries(v: Value) -> std::result::Result<Entries, String> {
    match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if let Some(e) = parse_entry(item)? {
                    out.push(e);
                }
            }
            Ok(out)
        }
        Value::Nil => Ok(Vec::new()),
        other => Err(format!("unexpected entries {other:?}")),
    }
}

/// XAUTOCLAIM's reply: the next cursor and the entries claimed.
fn parse_autoclaim(v: Value) -> std::result::Result<(String, Entries), String> {
    let Value::Array(mut parts) = v else {
        return Err(format!("unexpected XAUTOCLAIM reply {v:?}"));
    };
    if parts.len() < 2 {
        return Err("a short XAUTOCLAIM reply".into());
    }
    parts.truncate(2);
    let entries = parse_entries(parts.pop().unwrap_or(Value::Nil))?;
    let next = match parts.pop() {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Some(Value::SimpleString(s)) => s,
        other => return Err(format!("an XAUTOCLAIM cursor {other:?}")),
    };
    Ok((next, entries))
}

/// XREADGROUP's reply for one stream (nil when nothing arrived in time).
fn parse_read(v: Value) -> std::result::Result<Entries, String> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::new();
            for s in streams {
                let Value::Array(mut kv) = s else {
                    return Err(format!("unexpected stream {s:?}"));
                };
                if kv.len() != 2 {
                    return Err("a stream reply without its entries".into());
                }
                out.extend(parse_entries(kv.pop().unwrap_or(Value::Nil))?);
            }
            Ok(out)
        }
        // RESP3 answers with a map of stream → entries.
        Value::Map(streams) => {
            let mut out = Vec::new();
            for (_, entries) in streams {
                out.extend(parse_entries(entries)?);
            }
            Ok(out)
        }
        other => Err(format!("unexpected XREADGROUP reply {other:?}")),
    }
}

/// XINFO CONSUMERS: (name, pending, idle ms) of each consumer.
fn parse_consumers(v: Value) -> Vec<(String, u64, u64)> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let Value::Array(consumers) = v else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in consumers {
        let pairs: Vec<(Value, Value)> = match c {
            Value::Array(flat) => {
                let mut it = flat.into_iter();
                std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
            }
            Value::Map(m) => m,
            _ => continue,
        };
        let (mut name, mut pending, mut idle) = (None, None, None);
        for (k, v) in pairs {
            match (text(&k).as_deref(), v) {
                (Some("name"), v) => name = text(&v),
                (Some("pending"), Value::Int(n)) => pending = Some(n.max(0) as u64),
                (Some("idle"), Value::Int(n)) => idle = Some(n.max(0) as u64),
                _ => {}
            }
        }
        if let (Some(n), Some(p), Some(i)) = (name, pending, idle) {
            out.push((n, p, i));
        }
    }
    out
}

/// Sends XACK + XDEL for finished entries, batched per partition. A batch that fails is tried
/// again with the next ones, every 100 ms while Redis does not answer; an entry whose
/// acknowledgement never lands stays pending and comes again (the reader's sweep, or the
/// partition's next owner). The channel and the retry list hold at most the messages in
/// flight.
async fn acknowledge(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<(u32, String)>) {
    let mut errors = 0u64;
    let mut batch: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some((p, id)) => batch.entry(p).or_default().push(id),
                None => return,
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut n = batch.values().map(Vec::len).sum::<usize>();
        while n < ACK_BATCH
            && let Ok((p, id)) = rx.try_recv()
        {
            batch.entry(p).or_default().push(id);
            n += 1;
        }
        let mut failed = BTreeMap::new();
        for (p, ids) in std::mem::take(&mut batch) {
            let stream = inner.stream(p);
            let mut pipe = ::redis::pipe();
            pipe.cmd("XACK")
                .arg(&stream)
                .arg(&inner.cfg.group)
                .arg(&ids)
                .ignore()
                .cmd("XDEL")
                .arg(&stream)
                .arg(&ids)
                .ignore();
            let mut con = inner.con.clone();
            let why = match inner.bounded(pipe.exec_async(&mut con)).await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            errors += 1;
            if errors.is_power_of_two() {
                tracing::warn!(
                    "redis queue: acknowledging {} finished entries of {stream}: {why}; trying again ({errors} failures so far)",
                    ids.len()
                );
            }
            failed.insert(p, ids);
        }
        batch = failed;
    }
}

impl Backend for Inner {
    fn heartbeat(&self) -> BoxFut<'_, Result<usize>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let mut call = self.heartbeat.prepare_invoke();
            call.key(format!("{}:members", self.cfg.stream))
                .arg(&self.member)
                .arg(self.cfg.lease_ms);
            let n: i64 = self
                .bounded(call.invoke_async(&mut con))
                .await?
                .map_err(|e| err(format!("membership at {}: {e}", self.url)))?;
            Ok(n.max(1) as usize)
        })
    }

    fn acquire(&self, partition: u32) -> BoxFut<'_, Result<bool>> {
        Box::pin(async move { Ok(self.lease_script(&self.acquire, partition, true).await? == 1) })
    }

    fn renew(&self, partition: u32) -> BoxFut<'_, Result<bool>> {
        Box::pin(async move { Ok(self.lease_script(&self.renew, partition, true).await? == 1) })
    }

    fn release(&self, partition: u32) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            self.lease_script(&self.release, partition, false).await?;
            Ok(())
        })
    }

    fn leave(&self) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let removed: ::redis::RedisResult<i64> = self
                .bounded(
                    ::redis::cmd("ZREM")
                        .arg(format!("{}:members", self.cfg.stream))
                        .arg(&self.member)
                        .query_async(&mut con),
                )
                .await?;
            removed.map_err(|e| err(format!("leaving at {}: {e}", self.url)))?;
            Ok(())
        })
    }

    fn lag(&self, partition: u32) -> BoxFut<'_, Result<u64>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let n: u64 = self
                .bounded(
                    ::redis::cmd("XLEN")
                        .arg(self.stream(partition))
                        .query_async(&mut con),
                )
                .await?
                .map_err(|e| err(format!("XLEN at {}: {e}", self.url)))?;
            Ok(n)
        })
    }

    fn consume(self: Arc<Self>, partition: u32, mut reader: Reader) -> BoxFut<'static, ()> {
        Box::pin(async move {
            let inflight = Arc::new(Mutex::new(HashSet::new()));
            let mut errors = 0u64;
            while !reader.stopped() {
                match self.read(partition, &mut reader, &inflight).await {
                    Ok(()) => break,
                    Err(e) => {
                        errors += 1;
                        if errors.is_power_of_two() {
                            tracing::warn!(
                                "redis queue: partition {partition}: {e} ({errors} errors so far); retrying"
                            );
                        }
                        reader.pause(Duration::from_millis(250)).await;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, v: &str) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![bulk("k"), bulk("live://1"), bulk("v"), bulk(v)]),
        ])
    }

    #[test]
    fn replies_parse_into_ids_and_payloads() {
        let read = Value::Array(vec![Value::Array(vec![
            bulk("s:0"),
            Value::Array(vec![entry("1-0", "a"), entry("1-1", "b")]),
        ])]);
        assert_eq!(
            parse_read(read).unwrap(),
            [("1-0".into(), b"a".to_vec()), ("1-1".into(), b"b".to_vec())]
        );
        assert!(parse_read(Value::Nil).unwrap().is_empty());
        let claim = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![entry("2-0", "c"), Value::Nil]),
            Value::Array(vec![]),
        ]);
        assert_eq!(
            parse_autoclaim(claim).unwrap(),
            ("5-0".into(), vec![("2-0".into(), b"c".to_vec())])
        );
        assert!(parse_autoclaim(Value::Int(3)).is_err());
        assert!(parse_read(Value::Int(3)).is_err());
        assert!(parse_entries(Value::Array(vec![Value::Array(vec![bulk("1-0")])])).is_err());
    }

    #[test]
    fn consumers_parse_from_xinfo() {
        let c = |name: &str, pending: i64, idle: i64| {
            Value::Array(vec![
                bulk("name"),
                bulk(name),
                bulk("pending"),
                Value::Int(pending),
                bulk("idle"),
                Value::Int(idle),
                bulk("inactive"),
                Value::Int(idle),
            ])
        };
        let v = Value::Array(vec![c("a", 0, 70_000), c("b", 3, 10)]);
        assert_eq!(
            parse_consumers(v),
            [("a".into(), 0, 70_000), ("b".into(), 3, 10)]
        );
        assert!(parse_consumers(Value::Nil).is_empty());
    }
}
