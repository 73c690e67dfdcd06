//! The Redis registry with a real `redis-server` (in-process dispatchers and gateways, real
//! sockets): two dispatchers share sessions through Redis in goim's key scheme (`key_<key>`,
//! `mid_<mid>`, with a TTL that the dispatchers keep renewing), each routes key and mid pushes
//! to clients on either gateway, a disconnect removes the mapping, and a dispatcher pointed at a
//! Redis that is not there refuses to start, naming the URL; a Redis that dies mid-run makes key
//! pushes fail with a clear error (never hang), and once it is back (empty: no persistence)
//! the dispatcher re-writes its sessions and key pushes are delivered again.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use loadtest::listen::ListenArgs;
use support::{bodies, free_port, gateway, listen, post_ok, wait_until};

/// A `redis-server` on a free loopback port, without persistence (`benches::broker`, which
/// kills it by PID on drop), with a tiny RESP client for the assertions.
struct RedisServer {
    server: benches::broker::RedisServer,
    addr: SocketAddr,
}

impl RedisServer {
    fn start() -> RedisServer {
        let server = benches::broker::RedisServer::start(0).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], server.port()));
        let redis = RedisServer { server, addr };
        redis.wait_ready();
        redis
    }

    /// Kills it and starts it again, empty, on the same port.
    fn restart_empty(&mut self) {
        self.server.start_again().unwrap();
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let t = Instant::now();
        while !matches!(self.try_cmd(&["PING"]), Ok(Resp::Simple(ref s)) if s == "PONG") {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not answer PING within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// One command over a fresh connection (a tiny RESP client).
    fn try_cmd(&self, args: &[&str]) -> std::io::Result<Resp> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        read_resp(&mut BufReader::new(s))
    }

    fn cmd(&self, args: &[&str]) -> Resp {
        let r = self
            .try_cmd(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"));
        if let Resp::Error(e) = &r {
            panic!("redis {args:?}: {e}");
        }
        r
    }

    fn get(&self, key: &str) -> Option<String> {
        match self.cmd(&["GET", key]) {
            Resp::Bulk(v) => v,
            other => panic!("GET {key}: {other:?}"),
        }
    }

    /// A hash's fields, sorted.
    fn hgetall(&self, key: &str) -> Vec<(String, String)> {
        let Resp::Array(items) = self.cmd(&["HGETALL", key]) else {
            panic!("HGETALL {key}: not an array");
        };
        let flat: Vec<String> = items
            .into_iter()
            .map(|i| match i {
                Resp::Bulk(Some(s)) => s,
                other => panic!("HGETALL {key}: {other:?}"),
            })
            .collect();
        let mut pairs: Vec<(String, String)> = flat
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        pairs.sort();
        pairs
    }

    fn ttl(&self, key: &str) -> i64 {
        match self.cmd(&["TTL", key]) {
            Resp::Int(n) => n,
            other => panic!("TTL {key}: {other:?}"),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Resp>),
}

fn read_resp(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches("\r\n");
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, line.to_string());
    let (kind, rest) = line.split_at(1);
    let n = || rest.parse::<i64>().map_err(|_| bad());
    Ok(match kind {
        "+" => Resp::Simple(rest.into()),
        "-" => Resp::Error(rest.into()),
        ":" => Resp::Int(n()?),
        "$" if n()? < 0 => Resp::Bulk(None),
        "$" => {
            let mut buf = vec![0u8; n()? as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(buf.len() - 2);
            Resp::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
        }
        "*" if n()? < 0 => Resp::Bulk(None),
        "*" => Resp::Array((0..n()?).map(|_| read_resp(r)).collect::<Result<_, _>>()?),
        _ => return Err(bad()),
    })
}

fn dispatcher_config(redis_url: &str, ttl_secs: u64) -> dispatcher::Config {
    let mut cfg = dispatcher::Config::loopback_ephemeral();
    cfg.registry.kind = "redis".into();
    cfg.registry.redis.url = redis_url.into();
    cfg.registry.redis.ttl_secs = ttl_secs;
    cfg
}

fn client(gw: &gateway::Gateway, mid: i64, key: &str, count: u64) -> ListenArgs {
    support::tcp_client(gw.tcp_addr(), "live://1", mid, key, Some(count), 30)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn two_dispatchers_share_sessions_through_redis_in_goims_key_scheme() {
    let redis = RedisServer::start();
    // A short TTL, so the test also sees the dispatchers renew it (every ttl/3).
    let ttl = 3;
    let da = dispatcher::Dispatcher::start(dispatcher_config(&redis.url(), ttl)).unwrap();
    let db = dispatcher::Dispatcher::start(dispatcher_config(&redis.url(), ttl)).unwrap();
    let links = [da.link_addr(), db.link_addr()];
    let g1 = gateway("g1", &links);
    let g2 = gateway("g2", &links);

    // Member 42 has one connection on each gateway; k3 (no mid) is on g1.
    let c1 = listen(client(&g1, 42, "k1", 3));
    let c2 = listen(client(&g2, 42, "k2", 3));
    let c3 = listen(client(&g1, 0, "k3", 1));
    for d in [&da, &db] {
        wait_until(
            "both gateways on both dispatchers, with their connections",
            || {
                let gws = d.gateways();
                gws.len() == 2 && gws.iter().map(|g| g.conn_count).sum::<u64>() == 3
            },
        );
    }

    // goim's keys, read straight from Redis.
    wait_until("the sessions in Redis", || {
        redis.get("key_k1").as_deref() == Some("g1")
            && redis.get("key_k2").as_deref() == Some("g2")
            && redis.get("key_k3").as_deref() == Some("g1")
            && redis.hgetall("mid_42") == pairs(&[("k1", "g1"), ("k2", "g2")])
    });
    assert_eq!(redis.hgetall("mid_0"), []);
    for key in ["key_k1", "key_k2", "key_k3", "mid_42"] {
        let t = redis.ttl(key);
        assert!((1..=ttl as i64).contains(&t), "TTL of {key}: {t}");
    }
    // Outlive the TTL: the dispatchers keep renewing it (goim renews it on heartbeats).
    std::thread::sleep(Duration::from_secs(ttl + 1));
    assert_eq!(redis.get("key_k1").as_deref(), Some("g1"));
    assert_eq!(
        redis.hgetall("mid_42"),
        pairs(&[("k1", "g1"), ("k2", "g2")])
    );
    assert!(redis.ttl("key_k3") >= 1);

    // A mapping that only Redis knows (no gateway ever reported mid 777): a dispatcher routes
    // by what Redis says, not by what it heard itself.
    assert_eq!(redis.cmd(&["HSET", "mid_777", "k3", "g1"]), Resp::Int(1));

    post_ok(&da, "/goim/push/keys?operation=1000&keys=k2", b"a-to-k2");
    post_ok(&db, "/goim/push/keys?operation=1000&keys=k1", b"b-to-k1");
    post_ok(&da, "/goim/push/mids?operation=1000&mids=42", b"a-mid");
    post_ok(&db, "/goim/push/mids?operation=1000&mids=42", b"b-mid");
    post_ok(
        &db,
        "/goim/push/mids?operation=1000&mids=777",
        b"redis-only",
    );

    // The two dispatchers' pushes travel different paths: compare without order.
    let (c1, c2, c3) = (c1.join().unwrap(), c2.join().unwrap(), c3.join().unwrap());
    assert_eq!(sorted(bodies(&c1)), ["a-mid", "b-mid", "b-to-k1"]);
    assert_eq!(sorted(bodies(&c2)), ["a-mid", "a-to-k2", "b-mid"]);
    assert_eq!(bodies(&c3), ["redis-only"]);

    // The clients left after their messages: their mappings are deleted.
    wait_until("the sessions to leave Redis", || {
        ["key_k1", "key_k2", "key_k3"]
            .iter()
            .all(|k| redis.get(k).is_none())
            && redis.hgetall("mid_42").is_empty()
    });

    g1.stop();
    g2.stop();
    da.stop();
    db.stop();
}

#[test]
fn a_dispatcher_pointed_at_no_redis_refuses_to_start_naming_the_url() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let t = Instant::now();
    let err = match dispatcher::Dispatcher::start(dispatcher_config(&url, 1800)) {
        Ok(_) => panic!("started without a Redis at {url}"),
        Err(e) => e.to_string(),
    };
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("registry (redis)"), "{err}");
}

#[test]
fn a_redis_restart_is_a_clear_error_meanwhile_and_sessions_come_back_after() {
    let mut redis = RedisServer::start();
    // TTL 3 s: the dispatcher re-asserts its mappings every second, which is also how a Redis
    // that came back empty learns them again.
    let d = dispatcher::Dispatcher::start(dispatcher_config(&redis.url(), 3)).unwrap();
    let g = gateway("g-redis", &[d.link_addr()]);
    // Connected through the outage: gets the push before it and the one after it.
    let through = listen(client(&g, 7, "k-through", 2));
    wait_until("the key in Redis", || {
        redis.get("key_k-through").as_deref() == Some("g-redis")
    });
    post_ok(
        &d,
        "/goim/push/keys?operation=1000&keys=k-through",
        b"before",
    );

    redis.server.stop();
    let t = Instant::now();
    let (status, v) = support::http(
        d.http_addr(),
        "POST",
        "/goim/push/keys?operation=1000&keys=k-through",
        b"during",
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], -500, "{v}");
    let msg = v["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(msg.contains("redis"), "{v}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "answered in {:?}",
        t.elapsed()
    );

    // Back, empty (no persistence): the old session is re-written, a new one is written.
    redis.restart_empty();
    let after = listen(client(&g, 8, "k-after", 1));
    wait_until("both keys written into the new Redis", || {
        redis.get("key_k-through").as_deref() == Some("g-redis")
            && redis.get("key_k-after").as_deref() == Some("g-redis")
    });
    post_ok(
        &d,
        "/goim/push/keys?operation=1000&keys=k-through&keys=k-after",
        b"after",
    );
    assert_eq!(bodies(&through.join().unwrap()), ["before", "after"]);
    assert_eq!(bodies(&after.join().unwrap()), ["after"]);
    g.stop();
    d.stop();
}
