//! The integration tests every durable queue backend passes (Kafka, NATS JetStream, Redis
//! Streams), each against the real broker started here on an ephemeral loopback port: per-room
//! order across two dispatchers and two gateways, with every partition's lag back to 0; a
//! dispatcher killed with SIGKILL mid-stream loses no push that got code 0; a broker outage
//! gives code -500 naming the backend within a few seconds, and pushes flow again once the
//! broker is back; room history comes from the dispatcher reading the room's partition, and is
//! forgotten when its partitions move.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use benches::broker::{Broker, NatsServer, RedisServer};
use loadtest::listen::ListenArgs;

use super::procs::DispatcherProc;
use super::{bodies, gateway, http, listen};

/// A durable queue backend.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Kafka,
    Nats,
    Redis,
}

impl Kind {
    /// As in `queue.kind` (and in the backend's error messages).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::Nats => "nats",
            Kind::Redis => "redis",
        }
    }
}

enum Server {
    Kafka(Broker),
    Nats(NatsServer),
    Redis(RedisServer),
}

/// The backend's broker, on a free loopback port.
pub struct QueueServer {
    kind: Kind,
    server: Server,
    port: u16,
}

impl QueueServer {
    pub fn start(kind: Kind) -> QueueServer {
        let server = match kind {
            Kind::Kafka => Server::Kafka(Broker::start(0).unwrap()),
            Kind::Nats => Server::Nats(NatsServer::start(0).unwrap()),
            Kind::Redis => Server::Redis(RedisServer::start(0).unwrap()),
        };
        let port = match &server {
            Server::Kafka(b) => b.port(),
            Server::Nats(n) => n.port(),
            Server::Redis(r) => r.port(),
        };
        QueueServer { kind, server, port }
    }

    /// Kills the broker (Kafka and Redis lose what they held; NATS keeps its store).
    pub fn stop(&mut self) {
        match &mut self.server {
            Server::Kafka(b) => b.stop(),
            Server::Nats(n) => n.stop(),
            Server::Redis(r) => r.stop(),
        }
    }

    /// Starts the broker again on the same port.
    pub fn start_again(&mut self) {
        match &mut self.server {
            Server::Kafka(b) => {
                b.stop();
                *b = Broker::start(self.port).unwrap();
            }
            Server::Nats(n) => n.start_again().unwrap(),
            Server::Redis(r) => r.start_again().unwrap(),
        }
    }

    /// A dispatcher's config on this broker: 4 partitions, short timeouts and leases.
    pub fn dispatcher_toml(&self) -> String {
        let port = self.port;
        let queue = match self.kind {
            Kind::Kafka => format!(
                "[queue]\nkind = \"kafka\"\n[queue.kafka]\nbrokers = [\"127.0.0.1:{port}\"]\n\
                 create_partitions = 4\nmessage_timeout_ms = 3000\n"
            ),
            Kind::Nats => format!(
                "[queue]\nkind = \"nats\"\n[queue.nats]\nservers = [\"nats://127.0.0.1:{port}\"]\n\
                 partitions = 4\ntimeout_ms = 3000\nlease_ms = 2000\n"
            ),
            Kind::Redis => format!(
                "[queue]\nkind = \"redis\"\n[queue.redis]\nurl = \"redis://127.0.0.1:{port}\"\n\
                 partitions = 4\ntimeout_ms = 3000\nlease_ms = 2000\n"
            ),
        };
        format!(
            "http_bind = \"127.0.0.1:0\"\nlink_bind = \"127.0.0.1:0\"\nthreads = 2\n\
             [http]\nrequest_timeout_ms = 5000\n\
             [links]\nrelink_grace_ms = 10000\n{queue}"
        )
    }
}

pub fn client(gw: &gateway::Gateway, room: &str, count: Option<u64>, seconds: u64) -> ListenArgs {
    super::tcp_client(gw.tcp_addr(), room, 0, "", count, seconds)
}

pub fn wait_conns(http_addr: SocketAddr, n: u64) {
    let t = Instant::now();
    loop {
        let (_, v) = http(http_addr, "GET", "/goim/online/total", b"");
        if v["data"]["conn_count"] == n {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{n} connections never reported: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Messages a dispatcher process took off the queue (its /metrics).
pub fn consumed(http_addr: SocketAddr) -> u64 {
    metric(http_addr, "corecast_dispatcher_queue_consumed_total")
}

/// The consumer lag a dispatcher process reports (its /metrics), per partition.
pub fn lag(http_addr: SocketAddr) -> Vec<(String, u64)> {
    let (_, text) = super::http_raw(http_addr, "GET", "/metrics", b"");
    assert!(
        text.contains("# TYPE corecast_dispatcher_consumer_lag_messages gauge"),
        "{text}"
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("corecast_dispatcher_consumer_lag_messages{partition=\""))
        .filter_map(|l| {
            let (p, v) = l.split_once("\"} ")?;
            Some((p.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A dispatcher process's counter (its /metrics).
pub fn metric(http_addr: SocketAddr, name: &str) -> u64 {
    let (_, text) = super::http_raw(http_addr, "GET", "/metrics", b"");
    super::procs::metric(&text, name)
}

/// Waits until two dispatchers split the 4 partitions between them, each reading some (each
/// change of the partitions read clears a dispatcher's room history).
pub fn wait_split(a: SocketAddr, b: SocketAddr) {
    let t = Instant::now();
    loop {
        let (la, lb) = (lag(a), lag(b));
        let mut parts: Vec<&String> = la.iter().chain(&lb).map(|(p, _)| p).collect();
        parts.sort();
        parts.dedup();
        if !la.is_empty() && !lb.is_empty() && la.len() + lb.len() == 4 && parts.len() == 4 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the partitions never split between the two: a {la:?}, b {lb:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One listener per room `live://0..rooms` on `g`, for `count` messages (None: until `secs`).
pub fn room_listeners(
    g: &gateway::Gateway,
    rooms: usize,
    count: Option<u64>,
    secs: u64,
) -> Vec<(usize, std::thread::JoinHandle<Vec<serde_json::Value>>)> {
    (0..rooms)
        .map(|room| {
            (
                room,
                listen(client(g, &format!("live://{room}"), count, secs)),
            )
        })
        .collect()
}

pub fn push_room(http_addr: SocketAddr, room: usize, body: &str) -> serde_json::Value {
    let path = format!("/goim/push/room?operation=1000&type=live&room={room}");
    http(http_addr, "POST", &path, body.as_bytes()).1
}

pub fn recovery_comes_from_the_dispatcher_that_owns_the_room(kind: Kind) {
    let broker = QueueServer::start(kind);
    let a = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let b = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let g = gateway("k-hist", &[a.link, b.link]);
    wait_split(a.http, b.http);
    let first = listen(client(&g, "live://7", Some(1), 60));
    wait_conns(a.http, 1);
    assert_eq!(push_room(a.http, 7, "first")["code"], 0);
    let first = first.join().unwrap();
    let offset = first
        .iter()
        .find(|l| l["op"] == 1000)
        .and_then(|l| l["offset"].as_u64())
        .unwrap_or_else(|| panic!("{first:?}")) as u32;
    wait_conns(a.http, 0);
    for i in 0..200 {
        let via = if i % 2 == 0 { a.http } else { b.http };
        assert_eq!(push_room(via, 7, &format!("m{i}"))["code"], 0);
    }
    // One dispatcher holds the room's history (it consumes the partition), the other none.
    let newest = u64::from(offset.wrapping_add(200));
    let t = Instant::now();
    let history = |addr| http(addr, "GET", "/goim/room/history?type=live&room=7", b"").1;
    loop {
        let (ha, hb) = (history(a.http), history(b.http));
        let held: Vec<&serde_json::Value> =
            [&ha, &hb].into_iter().filter(|h| h["code"] == 0).collect();
        if held.len() == 1 && held[0]["data"]["newest"] == newest {
            assert_eq!([&ha, &hb].iter().filter(|h| h["code"] == -404).count(), 1);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the history never held the 200: a {ha}, b {hb}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut args = client(&g, "live://7", Some(201), 60);
    args.since = Some(offset);
    let back = listen(args);
    // The live push once the recovery was answered (by the owner; the other said unknown).
    let t = Instant::now();
    while metric(a.http, "corecast_dispatcher_recover_found_total")
        + metric(b.http, "corecast_dispatcher_recover_found_total")
        == 0
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no recovery answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(push_room(b.http, 7, "live")["code"], 0);
    let back = back.join().unwrap();
    let reply = back
        .iter()
        .find(|l| l["op"] == protocol::op::RECOVER_REPLY)
        .unwrap_or_else(|| panic!("{back:?}"));
    assert_eq!(reply["body"], format!("ok 200 {newest} live://7"));
    let mut want: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    want.push("live".into());
    assert_eq!(bodies(&back), want);
    g.stop();
}

/// A dispatcher whose partitions move forgets its room history: a room it no longer batches is
/// not answered from stale messages (clients are told there is none, or that their offset is
/// from before a restart).
pub fn a_rebalance_clears_the_history(kind: Kind) {
    let broker = QueueServer::start(kind);
    let a = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let g = gateway("k-clear", &[a.link]);
    let room_held =
        |addr| http(addr, "GET", "/goim/room/history?type=live&room=3", b"").1["code"] == 0;
    let t = Instant::now();
    while !room_held(a.http) {
        assert_eq!(push_room(a.http, 3, "m")["code"], 0);
        assert!(t.elapsed() < Duration::from_secs(30), "a never held room 3");
        std::thread::sleep(Duration::from_millis(200));
    }
    // (Its first assignment, from none to all 4 partitions, may already count.)
    let changes = metric(a.http, "corecast_dispatcher_queue_assignment_changes_total");
    // A second dispatcher joins the group: a's assignment changes, its history goes.
    let b = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let t = Instant::now();
    while metric(a.http, "corecast_dispatcher_queue_assignment_changes_total") == changes {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "a's assignment never changed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The job clears on its next event: a push to another room, through b.
    let t = Instant::now();
    while room_held(a.http) {
        assert_eq!(
            push_room(b.http, 1000 + t.elapsed().as_millis() as usize, "x")["code"],
            0
        );
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "a kept room 3's history"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    g.stop();
    drop(b);
}

pub fn room_pushes_keep_order_at_every_member(kind: Kind) {
    let broker = QueueServer::start(kind);
    let a = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let b = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let g1 = gateway("k-g1", &[a.link, b.link]);
    let g2 = gateway("k-g2", &[a.link, b.link]);
    const ROOMS: usize = 4;
    const PER_ROOM: usize = 2_500;
    let mut clients = Vec::new();
    for room in 0..ROOMS {
        for g in [&g1, &g2] {
            let args = client(g, &format!("live://{room}"), Some(PER_ROOM as u64), 120);
            clients.push((room, listen(args)));
        }
    }
    wait_conns(a.http, 8);
    wait_conns(b.http, 8);
    let pushers: Vec<_> = (0..ROOMS)
        .map(|room| {
            let (ha, hb) = (a.http, b.http);
            std::thread::spawn(move || {
                for seq in 0..PER_ROOM {
                    let via = if seq % 2 == 0 { ha } else { hb };
                    let v = push_room(via, room, &format!("{room}-{seq}"));
                    assert_eq!(v["code"], 0, "push {room}-{seq}: {v}");
                }
            })
        })
        .collect();
    for p in pushers {
        p.join().unwrap();
    }
    for (room, c) in clients {
        let got = bodies(&c.join().unwrap());
        let want: Vec<String> = (0..PER_ROOM).map(|s| format!("{room}-{s}")).collect();
        assert!(
            got == want,
            "room {room}: {} of {PER_ROOM} received in order; first differences: {:?}",
            got.len(),
            got.iter().zip(&want).find(|(g, w)| g != w)
        );
    }
    // Every partition's lag is reported by the dispatcher consuming it (high watermark minus
    // where a restart would read), and is back to 0 now that every push was acknowledged.
    let t = Instant::now();
    loop {
        let (la, lb) = (lag(a.http), lag(b.http));
        let partitions: std::collections::BTreeSet<&String> =
            la.iter().chain(&lb).map(|(p, _)| p).collect();
        if partitions.len() == 4 && la.iter().chain(&lb).all(|(_, n)| *n == 0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "consumer lag never settled at 0 on 4 partitions: a {la:?}, b {lb:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    g1.stop();
    g2.stop();
}

pub fn a_killed_dispatcher_loses_no_acknowledged_push(kind: Kind) {
    let broker = QueueServer::start(kind);
    let mut a = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let b = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let g = gateway("kill-g", &[a.link, b.link]);
    const ROOMS: usize = 4;
    const PER_ROOM: usize = 300;
    let clients = room_listeners(&g, ROOMS, None, 30);
    wait_conns(b.http, 4);
    // Both dispatchers must own partitions before one dies: warm up until each has consumed.
    let t = Instant::now();
    let mut warm = 0;
    while consumed(a.http) == 0 || consumed(b.http) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "the group never spread over both dispatchers"
        );
        for room in 0..ROOMS {
            push_room(b.http, room, &format!("warm-{warm}"));
        }
        warm += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut acked: Vec<Vec<usize>> = vec![Vec::new(); ROOMS];
    for seq in 0..PER_ROOM {
        if seq == PER_ROOM / 3 {
            // Mid-stream: the dispatcher that owns some of the partitions dies without a word.
            a.p.kill9();
        }
        for (room, acked) in acked.iter_mut().enumerate() {
            let v = push_room(b.http, room, &format!("{room}-{seq}"));
            if v["code"] == 0 {
                acked.push(seq);
            }
        }
    }
    assert!(
        acked.iter().all(|a| a.len() == PER_ROOM),
        "every push through the survivor succeeds"
    );
    for (room, c) in clients {
        let lines = c.join().unwrap();
        let end = lines.last().cloned();
        let got: Vec<String> = bodies(&lines)
            .into_iter()
            .filter(|b| !b.starts_with("warm-"))
            .collect();
        // At-least-once: a replay after the takeover may repeat messages, never lose one, and
        // first arrivals keep their order.
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<&String> = got.iter().filter(|b| seen.insert(b.as_str())).collect();
        let want: Vec<String> = acked[room].iter().map(|s| format!("{room}-{s}")).collect();
        assert_eq!(
            firsts.len(),
            want.len(),
            "room {room}: {} distinct of {} acknowledged pushes arrived; missing {:?}; last line {end:?}",
            firsts.len(),
            want.len(),
            want.iter()
                .filter(|w| !seen.contains(w.as_str()))
                .collect::<Vec<_>>()
        );
        assert!(
            firsts.iter().zip(&want).all(|(g, w)| *g == w),
            "room {room} out of order"
        );
    }
    g.stop();
}

pub fn broker_outage_is_a_clear_error_and_pushes_flow_after_it(kind: Kind) {
    let mut broker = QueueServer::start(kind);
    let d = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let g = gateway("outage-g", &[d.link]);
    let first = listen(client(&g, "live://1", Some(1), 30));
    wait_conns(d.http, 1);
    assert_eq!(push_room(d.http, 1, "before")["code"], 0);
    assert_eq!(bodies(&first.join().unwrap()), ["before"]);

    broker.stop();
    let t = Instant::now();
    let v = push_room(d.http, 1, "during");
    assert_eq!(v["code"], -500, "{v}");
    assert!(v["message"].as_str().unwrap().contains(kind.name()), "{v}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "answered in {:?}",
        t.elapsed()
    );

    broker.start_again();
    let after = listen(client(&g, "live://1", Some(1), 60));
    wait_conns(d.http, 1);
    let t = Instant::now();
    let mut n = 0;
    while !after.is_finished() {
        assert!(
            t.elapsed() < Duration::from_secs(50),
            "no push arrived after the broker came back"
        );
        push_room(d.http, 1, &format!("after-{n}"));
        n += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let got = bodies(&after.join().unwrap());
    assert!(got.len() == 1 && got[0].starts_with("after-"), "{got:?}");
    g.stop();
}

/// A dispatcher killed while it holds messages it took off the queue and has not delivered (it
/// has no gateway, so its job waits): the dispatcher that takes its partitions over delivers
/// them, in order, before what came after.
pub fn unfinished_messages_of_a_killed_dispatcher_are_delivered_by_the_next_reader(kind: Kind) {
    let broker = QueueServer::start(kind);
    let waiting = broker
        .dispatcher_toml()
        .replace("relink_grace_ms = 10000", "relink_grace_ms = 60000");
    let mut a = DispatcherProc::start(kind.name(), &waiting);
    let b = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    // Only b has a gateway: what a takes off the queue stays unfinished.
    let g = gateway("unfinished-g", &[b.link]);
    const ROOMS: usize = 8;
    const PER_ROOM: usize = 20;
    let clients = room_listeners(&g, ROOMS, Some(PER_ROOM as u64 + 1), 60);
    wait_conns(b.http, ROOMS as u64);
    wait_split(a.http, b.http);
    for seq in 0..PER_ROOM {
        for room in 0..ROOMS {
            let v = push_room(b.http, room, &format!("{room}-{seq}"));
            assert_eq!(v["code"], 0, "push {room}-{seq}: {v}");
        }
    }
    // b delivered its share; a's share is unfinished (its reader hands what it reads to a job
    // that waits for a gateway, so a counts none consumed yet).
    let all = (ROOMS * PER_ROOM) as u64;
    let t = Instant::now();
    let unfinished_at_a = || lag(a.http).iter().map(|(_, n)| n).sum::<u64>();
    while consumed(b.http) + unfinished_at_a() != all || lag(b.http).iter().any(|(_, n)| *n > 0) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "b delivered {} and a holds {} unfinished, of {all}",
            consumed(b.http),
            unfinished_at_a()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let held_by_a = unfinished_at_a();
    assert!(held_by_a > 0, "a holds nothing");
    // Time for a's reader to take them off the queue (so the takeover must reclaim them).
    std::thread::sleep(Duration::from_secs(1));
    a.p.kill9();
    for room in 0..ROOMS {
        assert_eq!(push_room(b.http, room, &format!("{room}-after"))["code"], 0);
    }
    for (room, c) in clients {
        let got = bodies(&c.join().unwrap());
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<&String> = got.iter().filter(|b| seen.insert(b.as_str())).collect();
        let mut want: Vec<String> = (0..PER_ROOM).map(|s| format!("{room}-{s}")).collect();
        want.push(format!("{room}-after"));
        assert!(
            firsts.iter().copied().eq(want.iter()),
            "room {room} ({held_by_a} messages were unfinished at the killed dispatcher): got {got:?}"
        );
    }
    g.stop();
}

/// Writes one raw message to every partition, as a foreign producer would: Redis `XADD` of a
/// `v` field, or a NATS publish to `goim.push.<p>` (plain TCP, the text protocols).
pub fn inject_raw(broker: &QueueServer, payload: &[u8]) {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    match broker.kind {
        Kind::Redis => {
            for p in 0..4 {
                let key = format!("goim-push-topic:{p}");
                let args: [&[u8]; 5] = [b"XADD", key.as_bytes(), b"*", b"v", payload];
                let mut req = format!("*{}\r\n", args.len()).into_bytes();
                for a in args {
                    req.extend(format!("${}\r\n", a.len()).as_bytes());
                    req.extend(a);
                    req.extend(b"\r\n");
                }
                s.write_all(&req).unwrap();
                line.clear();
                r.read_line(&mut line).unwrap();
                assert!(line.starts_with('$'), "XADD answered {line:?}");
                line.clear();
                r.read_line(&mut line).unwrap();
            }
        }
        Kind::Nats => {
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("INFO"), "{line:?}");
            let mut req = b"CONNECT {\"verbose\":false}\r\n".to_vec();
            for p in 0..4 {
                req.extend(format!("PUB goim.push.{p} {}\r\n", payload.len()).as_bytes());
                req.extend(payload);
                req.extend(b"\r\n");
            }
            req.extend(b"PING\r\n");
            s.write_all(&req).unwrap();
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                assert!(!line.starts_with("-ERR"), "{line:?}");
                if line.starts_with("PONG") {
                    break;
                }
            }
        }
        Kind::Kafka => panic!("inject_raw speaks Redis and NATS only"),
    }
}

/// A message in the queue that is not a goim `PushMsg` (a foreign producer's, a corrupt one) is
/// counted, logged, acknowledged (it does not come back) and skipped; the room's next push
/// arrives, and every partition's lag returns to 0.
pub fn a_malformed_queue_message_is_counted_and_skipped(kind: Kind) {
    let broker = QueueServer::start(kind);
    let d = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let g = gateway("bad-g", &[d.link]);
    let c = listen(client(&g, "live://1", Some(1), 30));
    wait_conns(d.http, 1);
    inject_raw(&broker, b"\xff\xff\xff not a PushMsg");
    let t = Instant::now();
    while metric(d.http, "corecast_dispatcher_queue_bad_messages_total") < 4 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the 4 malformed messages were not counted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(push_room(d.http, 1, "good")["code"], 0);
    assert_eq!(bodies(&c.join().unwrap()), ["good"]);
    let t = Instant::now();
    loop {
        let l = lag(d.http);
        if l.len() == 4 && l.iter().all(|(_, n)| *n == 0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "lag never back to 0 on 4 partitions: {l:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric(d.http, "corecast_dispatcher_queue_bad_messages_total"),
        4,
        "counted once each"
    );
    g.stop();
}

/// A dispatcher frozen (SIGSTOP) past its lease while pushes keep coming, then thawed: the
/// other dispatcher took its partitions over meanwhile, and the thawed one must not read
/// them any more (its lease's validity ran out), so every room's pushes still arrive in order
/// with none missing.
pub fn a_frozen_dispatcher_stops_reading_when_its_lease_runs_out(kind: Kind) {
    let broker = QueueServer::start(kind);
    let a = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let b = DispatcherProc::start(kind.name(), &broker.dispatcher_toml());
    let g = gateway("frozen-g", &[a.link, b.link]);
    const ROOMS: usize = 4;
    let clients = room_listeners(&g, ROOMS, None, 30);
    wait_conns(b.http, ROOMS as u64);
    wait_split(a.http, b.http);
    let start = Instant::now();
    let mut acked: Vec<Vec<usize>> = vec![Vec::new(); ROOMS];
    let (mut frozen, mut thawed) = (false, false);
    let mut seq = 0;
    // Frozen from 2 s to 7 s (a 2 s lease), pushes until 12 s.
    while start.elapsed() < Duration::from_secs(12) {
        if !frozen && start.elapsed() >= Duration::from_secs(2) {
            a.p.signal(libc::SIGSTOP);
            frozen = true;
        }
        if frozen && !thawed && start.elapsed() >= Duration::from_secs(7) {
            a.p.signal(libc::SIGCONT);
            thawed = true;
        }
        for (room, acked) in acked.iter_mut().enumerate() {
            if push_room(b.http, room, &format!("{room}-{seq}"))["code"] == 0 {
                acked.push(seq);
            }
        }
        seq += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(thawed);
    for (room, c) in clients {
        let got = bodies(&c.join().unwrap());
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<&String> = got.iter().filter(|b| seen.insert(b.as_str())).collect();
        let want: Vec<String> = acked[room].iter().map(|s| format!("{room}-{s}")).collect();
        let missing: Vec<&String> = want.iter().filter(|w| !seen.contains(w.as_str())).collect();
        assert!(missing.is_empty(), "room {room}: missing {missing:?}");
        assert!(
            firsts.iter().copied().eq(want.iter()),
            "room {room} out of order: first difference {:?}",
            firsts.iter().zip(&want).find(|(g, w)| **g != *w)
        );
    }
    g.stop();
}

/// A dispatcher stopped with SIGTERM hands its partitions over (ends its membership, releases
/// its leases once what it had in flight finished): the other dispatcher reads them long before
/// the leases (20 s here) would have expired, and pushes to every room arrive.
pub fn a_stopped_dispatcher_hands_its_partitions_over(kind: Kind) {
    let broker = QueueServer::start(kind);
    let toml = broker
        .dispatcher_toml()
        .replace("lease_ms = 2000", "lease_ms = 20000");
    assert!(toml.contains("lease_ms = 20000"), "{toml}");
    let mut a = DispatcherProc::start(kind.name(), &toml);
    let b = DispatcherProc::start(kind.name(), &toml);
    let g = gateway("handover-g", &[a.link, b.link]);
    const ROOMS: usize = 8;
    let clients = room_listeners(&g, ROOMS, Some(1), 60);
    wait_conns(b.http, ROOMS as u64);
    wait_split(a.http, b.http);
    a.p.signal(libc::SIGTERM);
    let status = a.p.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    let stopped = Instant::now();
    while lag(b.http).len() < 4 {
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "b reads {:?}, not all 4 partitions, {:?} after a stopped (its leases run 20 s)",
            lag(b.http),
            stopped.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for room in 0..ROOMS {
        assert_eq!(push_room(b.http, room, &format!("{room}-after"))["code"], 0);
    }
    for (room, c) in clients {
        assert_eq!(bodies(&c.join().unwrap()), [format!("{room}-after")]);
    }
    g.stop();
}
