//! The Redis registry: sessions in goim's key scheme, shared by every dispatcher that points at
//! the same Redis (goim `internal/logic/dao/redis.go`).
//!
//! Keys (TTL `registry.redis.ttl_secs`, goim's 30 min by default):
//! - `key_<key>` → gateway id (string), for `push/keys` (`MGET`);
//! - `mid_<mid>` → hash of `<key>` → gateway id, only for mid > 0, for `push/mids` (`HGETALL`).
//!
//! How data flows:
//! - **Session events** ([`Registry::apply`], one batch per read of a gateway's link) first go
//!   through a local [`Memory`] registry used as a filter: it knows which connection holds each
//!   key, so an offline event from a connection that a newer one already replaced (a
//!   duplicate-key eviction, possibly on another gateway) is dropped instead of deleting the
//!   newer mapping. What passes becomes one pipeline (one round trip per batch): an online event
//!   is goim's `HSET mid_<mid> <key> <gw>` + `EXPIRE mid_<mid>` (mid > 0) and
//!   `SET key_<key> <gw> EX ttl`; a run of offline events is one Lua script that deletes
//!   `key_<key>` and the `mid_<mid>` field **only where they still name this gateway** (another
//!   dispatcher may already have written a newer holder from another gateway's link), where goim
//!   deletes unconditionally.
//! - **Routing** reads Redis, not the filter, so a dispatcher also routes to keys it never heard
//!   of: `push/keys` is one `MGET`, `push/mids` one pipeline of `HGETALL`s; both are grouped by
//!   gateway, keys in a deterministic order (request order for keys, sorted per mid for mids).
//! - **A gateway that goes away** (or re-registers, so stale state is cleared before it
//!   re-announces its sessions) has its sessions taken out of the filter and deleted from Redis
//!   by the same conditional script, in chunks.
//! - **TTLs**: goim refreshes them on every client heartbeat; corecast's gateways do not report
//!   heartbeats, so a background task re-asserts every mapping the filter holds every ttl/3,
//!   in chunks of [`CHUNK`]: it re-sets a mapping that still names its gateway (or is missing,
//!   as goim's heartbeat re-adds a vanished mapping, which also repairs a write that failed), and
//!   leaves one that another gateway has claimed. It stops when the registry is dropped.
//!
//! Every call is bounded: connect and response timeouts on the connection, and [`OP_TIMEOUT`]
//! around each round trip; failures become [`Error::Registry`] naming the cause. The connection
//! is a [`ConnectionManager`], which reconnects by itself after Redis restarts.
//!
//! Known gap (goim has it too): when a key comes back online under a *different* mid, the old
//! `mid_<old>` field is left until its TTL (the filter does not say which mid a key had).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError};
use protocol::link::Session;

use super::memory::Memory;
use super::{BoxFut, Registry, Routes};
use crate::config::RedisConfig;
use crate::{Error, Result};

/// Entries per Lua script call (gateway removal, TTL refresh) and per offline run.
pub const CHUNK: usize = 1000;
/// The longest one round trip (or the initial connect) may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Deletes `key_<k>` and the field `<k>` of `mid_<mid>` where they still name the gateway.
/// ARGV: gateway, then (key, mid) pairs (mid "0" = none). Returns how many keys it deleted.
const DELETE_IF_HELD: &str = r#"
local gw = ARGV[1]
local n = 0
for i = 2, #ARGV, 2 do
  local k, mid = ARGV[i], ARGV[i + 1]
  if redis.call('GET', 'key_' .. k) == gw then
    redis.call('DEL', 'key_' .. k)
    n = n + 1
  end
  if mid ~= '0' and redis.call('HGET', 'mid_' .. mid, k) == gw then
    redis.call('HDEL', 'mid_' .. mid, k)
  end
end
return n
"#;

/// Re-asserts mappings with a fresh TTL unless another gateway holds them.
/// ARGV: ttl, then (key, mid, gateway) triples (mid "0" = none). Returns how many keys it had to
/// re-add (missing in Redis).
const REFRESH: &str = r#"
local ttl = ARGV[1]
local readded = 0
for i = 2, #ARGV, 3 do
  local k, mid, gw = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local cur = redis.call('GET', 'key_' .. k)
  if cur == false or cur == gw then
    redis.call('SET', 'key_' .. k, gw, 'EX', ttl)
    if cur == false then readded = readded + 1 end
  end
  if mid ~= '0' then
    local h = 'mid_' .. mid
    local f = redis.call('HGET', h, k)
    if f == false or f == gw then
      redis.call('HSET', h, k, gw)
    end
    redis.call('EXPIRE', h, ttl)
  end
end
return readded
"#;

/// The Redis registry (see the module docs).
pub struct Redis {
    inner: Arc<Inner>,
    refresher: tokio::task::AbortHandle,
}

struct Inner {
    con: ConnectionManager,
    filter: Memory,
    ttl_secs: u64,
    /// The URL with any password masked, for messages.
    url: String,
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Connects to Redis (bounded by [`OP_TIMEOUT`]; the error names the URL) and starts the TTL
/// refresher on the current Tokio runtime.
pub async fn connect(cfg: &RedisConfig) -> Result<Redis> {
    let url = redact(&cfg.url);
    if cfg.ttl_secs == 0 {
        return Err(Error::Config(
            "registry.redis.ttl_secs must be at least 1".into(),
        ));
    }
    let cannot_reach = |reason: String| Error::Registry {
        backend: "redis",
        reason: format!("cannot reach Redis at {url}: {reason}"),
    };
    let client = Client::open(cfg.url.as_str()).map_err(|e| Error::Registry {
        backend: "redis",
        reason: format!("registry.redis.url {url:?} is not a Redis URL: {e}"),
    })?;
    // One plain attempt first, so an unreachable Redis fails now with its cause (the manager
    // retries with back-off, which suits reconnects, not start-up).
    let probe = async {
        let cc = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut c = client
            .get_multiplexed_async_connection_with_config(&cc)
            .await?;
        ::redis::cmd("PING").query_async::<String>(&mut c).await
    };
    match tokio::time::timeout(OP_TIMEOUT, probe).await {
        Err(_) => return Err(cannot_reach(timed_out())),
        Ok(Err(e)) => return Err(cannot_reach(e.to_string())),
        Ok(Ok(_)) => {}
    }
    let mc = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_max_delay(Duration::from_secs(1));
    let con = match tokio::time::timeout(OP_TIMEOUT, ConnectionManager::new_with_config(client, mc))
        .await
    {
        Err(_) => return Err(cannot_reach(timed_out())),
        Ok(Err(e)) => return Err(cannot_reach(e.to_string())),
        Ok(Ok(con)) => con,
    };
    let inner = Arc::new(Inner {
        con,
        filter: Memory::default(),
        ttl_secs: cfg.ttl_secs,
        url,
    });
    let period = Duration::from_millis((cfg.ttl_secs.saturating_mul(1000) / 3).max(100));
    let refresher = tokio::spawn(refresh_loop(Arc::downgrade(&inner), period)).abort_handle();
    tracing::info!(
        "registry: Redis at {} (TTL {} s, refreshed every {} ms)",
        inner.url,
        inner.ttl_secs,
        period.as_millis()
    );
    Ok(Redis { inner, refresher })
}

fn timed_out() -> String {
    format!("no answer within {} ms", OP_TIMEOUT.as_millis())
}

impl Inner {
    fn error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Registry {
            backend: "redis",
            reason: format!("{what} at {}: {e}", self.url),
        }
    }

    /// Runs one pipeline whose answers are not needed, bounded.
    async fn run_pipe(&self, what: &str, pipe: &Pipeline) -> Result<()> {
        let mut con = self.con.clone();
        self.bounded(what, pipe.exec_async(&mut con)).await
    }

    /// Runs one command, bounded.
    async fn run_cmd<T: ::redis::FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T> {
        let mut con = self.con.clone();
        self.bounded(what, cmd.query_async(&mut con)).await
    }

    async fn bounded<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T> {
        match tokio::time::timeout(OP_TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(what, e)),
            Err(_) => Err(self.error(what, timed_out())),
        }
    }

    /// Re-asserts every mapping the filter holds, chunk by chunk.
    async fn refresh(&self) -> Result<u64> {
        let mut readded = 0;
        for chunk in self.filter.snapshot().chunks(CHUNK) {
            let cmd = refresh_cmd(self.ttl_secs, chunk);
            readded += self.run_cmd::<u64>("refreshing TTLs", &cmd).await?;
        }
        Ok(readded)
    }
}

async fn refresh_loop(inner: Weak<Inner>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match inner.refresh().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("registry: re-added {n} session mappings missing in Redis"),
            Err(e) => tracing::warn!("registry: TTL refresh failed (retried in {period:?}): {e}"),
        }
    }
}

/// What one batch of events does to Redis, after the filter.
#[derive(Debug, PartialEq)]
enum Op<'a> {
    Online {
        key: &'a str,
        mid: i64,
    },
    /// Consecutive offline events: one conditional-delete script.
    Offline(Vec<(&'a str, i64)>),
}

fn plan<'a>(events: &'a [Session], changed: &[bool]) -> Vec<Op<'a>> {
    let mut ops: Vec<Op<'a>> = Vec::new();
    for (s, &changed) in events.iter().zip(changed) {
        if s.online {
            ops.push(Op::Online {
                key: &s.key,
                mid: s.mid,
            });
        } else if changed {
            match ops.last_mut() {
                Some(Op::Offline(run)) if run.len() < CHUNK => run.push((&s.key, s.mid)),
                _ => ops.push(Op::Offline(vec![(&s.key, s.mid)])),
            }
        }
    }
    ops
}

fn key_of(key: &str) -> String {
    format!("key_{key}")
}

fn mid_of(mid: i64) -> String {
    format!("mid_{mid}")
}

/// The mid as the scripts take it: "0" when it is not indexed (goim: only mid > 0).
fn mid_arg(mid: i64) -> i64 {
    mid.max(0)
}

fn delete_cmd<'a>(gateway: &str, entries: impl IntoIterator<Item = (&'a str, i64)>) -> Cmd {
    let mut c = ::redis::cmd("EVAL");
    c.arg(DELETE_IF_HELD).arg(0).arg(gateway);
    for (k, mid) in entries {
        c.arg(k).arg(mid_arg(mid));
    }
    c
}

fn refresh_cmd(ttl: u64, entries: &[(String, i64, String)]) -> Cmd {
    let mut c = ::redis::cmd("EVAL");
    c.arg(REFRESH).arg(0).arg(ttl);
    for (k, mid, gw) in entries {
        c.arg(k).arg(mid_arg(*mid)).arg(gw);
    }
    c
}

fn apply_pipeline(gateway: &str, ops: &[Op<'_>], ttl: u64) -> Pipeline {
    let mut p = ::redis::pipe();
    for op in ops {
        match op {
            Op::Online { key, mid } => {
                if *mid > 0 {
                    let h = mid_of(*mid);
                    p.cmd("HSET").arg(&h).arg(*key).arg(gateway).ignore();
                    p.cmd("EXPIRE").arg(&h).arg(ttl).ignore();
                }
                p.cmd("SET")
                    .arg(key_of(key))
                    .arg(gateway)
                    .arg("EX")
                    .arg(ttl)
                    .ignore();
            }
            Op::Offline(run) => {
                p.add_command(delete_cmd(gateway, run.iter().copied()))
                    .ignore();
            }
        }
    }
    p
}

/// Groups `MGET` answers by gateway, in request order (missing or empty values are skipped).
fn group_keys(keys: &[String], values: Vec<Option<String>>) -> Routes {
    let mut routes = Routes::new();
    for (k, v) in keys.iter().zip(values) {
        if let Some(gw) = v.filter(|g| !g.is_empty()) {
            routes.entry(gw).or_default().push(k.clone());
        }
    }
    routes
}

/// Groups `HGETALL` answers (key → gateway, one map per mid) by gateway, keys sorted per mid.
fn group_mids(hashes: Vec<HashMap<String, String>>) -> Routes {
    let mut routes = Routes::new();
    for hash in hashes {
        let mut fields: Vec<(String, String)> = hash.into_iter().collect();
        fields.sort();
        for (k, gw) in fields {
            if !gw.is_empty() {
                routes.entry(gw).or_default().push(k);
            }
        }
    }
    routes
}

/// Masks the password of `redis://user:password@host/…`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let host_start = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..host_start].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => userinfo.to_string(),
    };
    format!("{scheme}://{masked}{}", &rest[at..])
}

impl Registry for Redis {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn apply<'a>(&'a self, gateway: &'a str, events: &'a [Session]) -> BoxFut<'a, Result<()>> {
        let changed = self.inner.filter.apply_now(gateway, events);
        let ops = plan(events, &changed);
        let pipe = apply_pipeline(gateway, &ops, self.inner.ttl_secs);
        Box::pin(async move {
            if pipe.is_empty() {
                return Ok(());
            }
            let what = format!("writing {} session events", events.len());
            self.inner.run_pipe(&what, &pipe).await
        })
    }

    fn gateway_gone<'a>(&'a self, gateway: &'a str) -> BoxFut<'a, Result<()>> {
        let gone = self.inner.filter.remove_gateway(gateway);
        Box::pin(async move {
            for chunk in gone.chunks(CHUNK) {
                let cmd = delete_cmd(gateway, chunk.iter().map(|(k, m)| (k.as_str(), *m)));
                let what = format!("removing the sessions of gateway {gateway}");
                self.inner.run_cmd::<u64>(&what, &cmd).await?;
            }
            Ok(())
        })
    }

    fn routes_by_keys<'a>(&'a self, keys: &'a [String]) -> BoxFut<'a, Result<Routes>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Routes::new());
            }
            let mut cmd = ::redis::cmd("MGET");
            for k in keys {
                cmd.arg(key_of(k));
            }
            let values: Vec<Option<String>> =
                self.inner.run_cmd("looking up keys (MGET)", &cmd).await?;
            Ok(group_keys(keys, values))
        })
    }

    fn routes_by_mids<'a>(&'a self, mids: &'a [i64]) -> BoxFut<'a, Result<Routes>> {
        Box::pin(async move {
            let mut pipe = ::redis::pipe();
            for &mid in mids.iter().filter(|&&m| m > 0) {
                pipe.cmd("HGETALL").arg(mid_of(mid));
            }
            if pipe.is_empty() {
                return Ok(Routes::new());
            }
            let hashes: Vec<HashMap<String, String>> = self
                .inner
                .bounded(
                    "looking up mids (HGETALL)",
                    pipe.query_async(&mut self.inner.con.clone()),
                )
                .await?;
            Ok(group_mids(hashes))
        })
    }

    fn sessions(&self) -> usize {
        self.inner.filter.sessions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::registry::memory::ev;

    fn args(c: &Cmd) -> Vec<String> {
        c.args_iter()
            .map(|a| match a {
                ::redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<other>".into(),
            })
            .collect()
    }

    fn pipeline_args(p: &Pipeline) -> Vec<Vec<String>> {
        p.cmd_iter()
            .map(|c| {
                let mut a = args(c);
                if a[0] == "EVAL" {
                    // The script body is long; name it.
                    a[1] = if a[1] == DELETE_IF_HELD {
                        "<delete>".into()
                    } else {
                        "<refresh>".into()
                    };
                }
                a
            })
            .collect()
    }

    #[test]
    fn online_events_write_goims_keys_with_the_ttl() {
        let events = [ev(true, 7, "a", 1), ev(true, 0, "b", 2)];
        let p = apply_pipeline("g1", &plan(&events, &[true, true]), 1800);
        assert_eq!(
            pipeline_args(&p),
            [
                vec!["HSET", "mid_7", "a", "g1"],
                vec!["EXPIRE", "mid_7", "1800"],
                vec!["SET", "key_a", "g1", "EX", "1800"],
                // mid 0 is not indexed (goim: only mid > 0).
                vec!["SET", "key_b", "g1", "EX", "1800"],
            ]
        );
    }

    #[test]
    fn offline_runs_become_one_conditional_delete_each_in_order() {
        let events = [
            ev(false, 7, "a", 1),
            ev(false, -3, "b", 2),
            ev(true, 7, "a", 3),
            ev(false, 7, "a", 3),
        ];
        let ops = plan(&events, &[true, true, true, true]);
        assert_eq!(
            ops,
            [
                Op::Offline(vec![("a", 7), ("b", -3)]),
                Op::Online { key: "a", mid: 7 },
                Op::Offline(vec![("a", 7)]),
            ]
        );
        let p = apply_pipeline("g1", &ops, 60);
        let a = pipeline_args(&p);
        assert_eq!(a[0], ["EVAL", "<delete>", "0", "g1", "a", "7", "b", "0"]);
        assert_eq!(a[4], ["EVAL", "<delete>", "0", "g1", "a", "7"]);
        assert_eq!(a.len(), 5);
    }

    #[test]
    fn a_stale_offline_event_writes_nothing() {
        let m = Memory::default();
        m.apply_now("g1", &[ev(true, 7, "k", 1)]);
        m.apply_now("g2", &[ev(true, 7, "k", 5)]);
        let stale = [ev(false, 7, "k", 1)];
        let changed = m.apply_now("g1", &stale);
        assert!(plan(&stale, &changed).is_empty());
        assert!(apply_pipeline("g1", &plan(&stale, &changed), 60).is_empty());
    }

    #[test]
    fn long_offline_runs_are_chunked() {
        let events: Vec<Session> = (0..CHUNK + 1)
            .map(|i| ev(false, 0, &format!("k{i}"), i as u64))
            .collect();
        let changed = vec![true; events.len()];
        let ops = plan(&events, &changed);
        assert_eq!(ops.len(), 2);
        assert!(matches!(&ops[1], Op::Offline(run) if run.len() == 1));
    }

    #[test]
    fn refresh_and_delete_scripts_take_their_arguments_flat() {
        let c = refresh_cmd(
            30,
            &[("a".into(), 7, "g1".into()), ("b".into(), 0, "g2".into())],
        );
        let a = args(&c);
        assert_eq!(a[0], "EVAL");
        assert_eq!(a[1], REFRESH);
        assert_eq!(a[2..], ["0", "30", "a", "7", "g1", "b", "0", "g2"]);
        let c = delete_cmd("g1", [("a", 7), ("b", 0)]);
        assert_eq!(args(&c)[2..], ["0", "g1", "a", "7", "b", "0"]);
    }

    #[test]
    fn lookups_group_by_gateway_deterministically() {
        let keys: Vec<String> = ["x", "a", "zz", "b", "e"].map(String::from).to_vec();
        let r = group_keys(
            &keys,
            vec![
                Some("g2".into()),
                Some("g1".into()),
                None,
                Some("g2".into()),
                Some(String::new()),
            ],
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r["g1"], ["a"]);
        assert_eq!(r["g2"], ["x", "b"]);

        let r = group_mids(vec![
            HashMap::from([("c".into(), "g1".into()), ("a".into(), "g1".into())]),
            HashMap::from([("b".into(), "g2".into())]),
        ]);
        assert_eq!(r["g1"], ["a", "c"]);
        assert_eq!(r["g2"], ["b"]);
    }

    #[test]
    fn passwords_are_masked_in_messages() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact("unix:///tmp/r.sock"), "unix:///tmp/r.sock");
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_naming_the_url() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = RedisConfig {
            url: format!("redis://127.0.0.1:{port}"),
            ttl_secs: 60,
        };
        let t = std::time::Instant::now();
        let err = connect(&cfg).await.err().expect("no Redis listens there");
        assert!(t.elapsed() < OP_TIMEOUT + Duration::from_secs(1));
        let msg = err.to_string();
        assert!(msg.contains(&cfg.url), "{msg}");
        assert!(
            msg.starts_with("registry (redis): cannot reach Redis"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_or_a_bad_url_fails_bounded() {
        // Accepts TCP (the backlog) but never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = RedisConfig {
            url: format!("redis://{}", silent.local_addr().unwrap()),
            ttl_secs: 60,
        };
        let t = std::time::Instant::now();
        let msg = connect(&cfg)
            .await
            .err()
            .expect("it never answers")
            .to_string();
        assert!(t.elapsed() <= OP_TIMEOUT + Duration::from_millis(500));
        assert!(msg.contains(&cfg.url), "{msg}");

        let cfg = RedisConfig {
            url: "http://u:pw@example.com".into(),
            ttl_secs: 60,
        };
        let msg = connect(&cfg)
            .await
            .err()
            .expect("not a Redis URL")
            .to_string();
        assert!(msg.contains("is not a Redis URL"), "{msg}");
        assert!(!msg.contains("pw"), "{msg}");
        let cfg = RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            ttl_secs: 0,
        };
        let msg = connect(&cfg).await.err().expect("TTL 0").to_string();
        assert!(msg.contains("ttl_secs"), "{msg}");
    }

    /// A throwaway `redis-server` on a free loopback port, killed on drop.
    struct Server {
        child: std::process::Child,
        url: String,
        dir: std::path::PathBuf,
    }

    impl Server {
        fn start() -> Server {
            let bin = "/usr/bin/redis-server";
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: run scripts/test.sh, which installs it (Debian package redis-server)"
            );
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let dir = std::env::temp_dir().join(format!(
                "corecast-registry-redis-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let child = std::process::Command::new(bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let server = Server {
                child,
                url: format!("redis://127.0.0.1:{port}"),
                dir,
            };
            let t = std::time::Instant::now();
            loop {
                if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    use std::io::{Read, Write};
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut buf = [0u8; 16];
                    if s.write_all(b"PING\r\n").is_ok()
                        && s.read(&mut buf)
                            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                    {
                        return server;
                    }
                }
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "redis-server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn get(c: &mut ConnectionManager, key: &str) -> Option<String> {
        ::redis::cmd("GET").arg(key).query_async(c).await.unwrap()
    }

    async fn hgetall(c: &mut ConnectionManager, key: &str) -> Vec<(String, String)> {
        let h: HashMap<String, String> = ::redis::cmd("HGETALL")
            .arg(key)
            .query_async(c)
            .await
            .unwrap();
        let mut v: Vec<_> = h.into_iter().collect();
        v.sort();
        v
    }

    async fn ttl(c: &mut ConnectionManager, key: &str) -> i64 {
        ::redis::cmd("TTL").arg(key).query_async(c).await.unwrap()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scripts_against_a_real_redis() {
        let server = Server::start();
        let cfg = RedisConfig {
            url: server.url.clone(),
            ttl_secs: 100,
        };
        let r = connect(&cfg).await.unwrap();
        let mut c = r.inner.con.clone();

        // Online: goim's keys, with the TTL.
        r.apply(
            "g1",
            &[
                ev(true, 7, "a", 1),
                ev(true, 7, "b", 2),
                ev(true, 0, "n", 3),
            ],
        )
        .await
        .unwrap();
        r.apply("g2", &[ev(true, 7, "c", 1)]).await.unwrap();
        assert_eq!(get(&mut c, "key_a").await.as_deref(), Some("g1"));
        assert_eq!(
            hgetall(&mut c, "mid_7").await,
            pairs(&[("a", "g1"), ("b", "g1"), ("c", "g2")])
        );
        assert!((1..=100).contains(&ttl(&mut c, "key_a").await));
        assert!((1..=100).contains(&ttl(&mut c, "mid_7").await));
        assert_eq!(hgetall(&mut c, "mid_0").await, []);
        assert_eq!(r.sessions(), 4);
        let keys: Vec<String> = ["c", "a", "nope", "n"].map(String::from).to_vec();
        let routes = r.routes_by_keys(&keys).await.unwrap();
        assert_eq!(routes["g1"], ["a", "n"]);
        assert_eq!(routes["g2"], ["c"]);
        let routes = r.routes_by_mids(&[7, 0, 99]).await.unwrap();
        assert_eq!(routes["g1"], ["a", "b"]);
        assert_eq!(routes["g2"], ["c"]);

        // Key "a" moves to g2 (duplicate key); g1's late offline event must not delete it.
        r.apply("g2", &[ev(true, 7, "a", 9)]).await.unwrap();
        r.apply("g1", &[ev(false, 7, "a", 1)]).await.unwrap();
        assert_eq!(get(&mut c, "key_a").await.as_deref(), Some("g2"));
        // A current offline event whose key another dispatcher already gave to another gateway
        // (written straight into Redis here) leaves that newer holder alone.
        ::redis::cmd("SET")
            .arg("key_b")
            .arg("g3")
            .exec_async(&mut c)
            .await
            .unwrap();
        ::redis::cmd("HSET")
            .arg("mid_7")
            .arg("b")
            .arg("g3")
            .exec_async(&mut c)
            .await
            .unwrap();
        r.apply("g1", &[ev(false, 7, "b", 2)]).await.unwrap();
        assert_eq!(get(&mut c, "key_b").await.as_deref(), Some("g3"));
        // A current one deletes both entries.
        r.apply("g2", &[ev(false, 7, "c", 1)]).await.unwrap();
        assert_eq!(get(&mut c, "key_c").await, None);
        assert_eq!(
            hgetall(&mut c, "mid_7").await,
            pairs(&[("a", "g2"), ("b", "g3")])
        );

        // Refresh: re-adds what vanished, renews the TTL, leaves other gateways' claims.
        r.apply("g1", &[ev(true, 8, "d", 4), ev(true, 8, "e", 5)])
            .await
            .unwrap();
        ::redis::cmd("DEL")
            .arg("key_d")
            .exec_async(&mut c)
            .await
            .unwrap();
        ::redis::cmd("SET")
            .arg("key_e")
            .arg("g4")
            .arg("EX")
            .arg(5)
            .exec_async(&mut c)
            .await
            .unwrap();
        ::redis::cmd("EXPIRE")
            .arg("key_a")
            .arg(5)
            .exec_async(&mut c)
            .await
            .unwrap();
        assert_eq!(r.inner.refresh().await.unwrap(), 1);
        assert_eq!(get(&mut c, "key_d").await.as_deref(), Some("g1"));
        assert_eq!(get(&mut c, "key_e").await.as_deref(), Some("g4"));
        assert!(ttl(&mut c, "key_a").await > 5);

        // A gateway that goes away: its entries go, unless re-claimed.
        ::redis::cmd("SET")
            .arg("key_n")
            .arg("g5")
            .exec_async(&mut c)
            .await
            .unwrap();
        r.gateway_gone("g1").await.unwrap();
        assert_eq!(get(&mut c, "key_d").await, None);
        assert_eq!(get(&mut c, "key_n").await.as_deref(), Some("g5"));
        assert_eq!(hgetall(&mut c, "mid_8").await, []);
        assert_eq!(get(&mut c, "key_a").await.as_deref(), Some("g2"));
        assert_eq!(r.sessions(), 1);

        // Unreachable Redis: calls fail with the cause, bounded.
        let refresher = r.refresher.clone();
        drop(server);
        let t = std::time::Instant::now();
        let err = r.routes_by_keys(&keys).await.unwrap_err().to_string();
        assert!(
            t.elapsed() <= OP_TIMEOUT + Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert!(
            err.starts_with("registry (redis): looking up keys (MGET) at redis://127.0.0.1:"),
            "{err}"
        );
        // Dropping the registry stops its refresher.
        drop(r);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(refresher.is_finished());
    }
}
