//! Prometheus metrics of `corecast up` as a real process: both endpoints (the gateway's
//! `metrics_bind` and the dispatcher's `/metrics`) parse as valid exposition text (every sample
//! in a declared family, histograms cumulative with `+Inf == _count`), and every series the
//! dashboard and the docs promise moves with real traffic: TCP and WebSocket clients in a room,
//! a refused auth, a client that never reads (cut at the outbound cap), HTTP pushes. The Grafana
//! dashboard (`tuning/grafana/corecast.json`) references only series that exist.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{DISPATCHER_TOML, Up, bodies, client, http_raw, listen};

/// One shard inbox slot and a 64 KB outbound cap, so ring-full events and cap disconnects
/// happen with a few hundred pushes.
const GATEWAY: &str = "id = \"gw-metrics\"\ntcp_bind = \"127.0.0.1:0\"\nws_bind = \"127.0.0.1:0\"\n\
                       metrics_bind = \"127.0.0.1:0\"\nrenew_ms = 200\n\
                       [limits]\noutbound_cap_bytes = 65536\n[engine]\ninbox_capacity = 1\n";

type Labels = BTreeMap<String, String>;

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// A parsed exposition whose structure was checked.
struct Scrape {
    what: String,
    text: String,
    kinds: HashMap<String, String>,
    samples: Vec<Sample>,
}

/// Parses `k="v",...` (the inside of the braces), unescaping values.
fn parse_labels(s: &str, line: &str) -> Labels {
    let mut labels = Labels::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name {key:?} in {line:?}"
        );
        assert_eq!(chars.next(), Some('"'), "label value unquoted in {line:?}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        }
        assert!(
            labels.insert(key.clone(), value).is_none(),
            "label {key} twice in {line:?}"
        );
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => panic!("unexpected {c:?} after a label value in {line:?}"),
        }
    }
    labels
}

/// The family a sample belongs to: its own name, or a histogram's for `_bucket`/`_sum`/`_count`.
fn family_of<'a>(name: &'a str, kinds: &HashMap<String, String>) -> Option<&'a str> {
    if kinds.get(name).is_some_and(|k| k != "histogram") {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (kinds.get(base).map(String::as_str) == Some("histogram")).then_some(base)
    })
}

/// Parses and checks an exposition: every line a comment, blank or a sample; every family
/// typed once and its lines together; every sample after its family's `# TYPE`; no series
/// twice; counters non-negative; every histogram series with `le` ascending to `+Inf`,
/// cumulative counts, `+Inf == _count` and a `_sum`.
fn parse(text: &str, what: &str) -> Scrape {
    let mut kinds: HashMap<String, String> = HashMap::new();
    let mut helps = HashSet::new();
    let mut samples = Vec::new();
    let mut seen = HashSet::new();
    let mut current: Option<String> = None;
    let mut finished: HashSet<String> = HashSet::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (word, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            match word {
                "HELP" => assert!(helps.insert(name.to_string()), "{what}: HELP twice: {line}"),
                "TYPE" => {
                    let kind = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{what}: bad type in {line:?}"
                    );
                    assert!(
                        kinds.insert(name.to_string(), kind.to_string()).is_none(),
                        "{what}: TYPE twice: {line}"
                    );
                    assert!(helps.contains(name), "{what}: TYPE before HELP: {line}");
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{what}: bad sample line {line:?}"
        );
        let (labels, rest) = if line[name_end..].starts_with('{') {
            let close = line
                .rfind('}')
                .unwrap_or_else(|| panic!("{what}: {line:?}"));
            (
                parse_labels(&line[name_end + 1..close], line),
                &line[close + 1..],
            )
        } else {
            (Labels::new(), &line[name_end..])
        };
        let value_text = rest.trim();
        assert!(
            !value_text.contains(' '),
            "{what}: one value and no timestamp expected: {line:?}"
        );
        let value: f64 = value_text
            .parse()
            .unwrap_or_else(|_| panic!("{what}: value of {line:?}"));
        let family = family_of(name, &kinds)
            .unwrap_or_else(|| panic!("{what}: {name} has no # TYPE before it"))
            .to_string();
        if current.as_deref() != Some(family.as_str()) {
            assert!(
                !finished.contains(&family),
                "{what}: family {family} is split: {line:?}"
            );
            if let Some(prev) = current.replace(family.clone()) {
                finished.insert(prev);
            }
        }
        let kind = kinds[&family].as_str();
        assert!(value.is_finite(), "{what}: {line:?}");
        if kind == "counter" || kind == "histogram" {
            assert!(value >= 0.0, "{what}: a negative count: {line:?}");
        }
        assert!(
            seen.insert((name.to_string(), labels.clone())),
            "{what}: series twice: {line:?}"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    let s = Scrape {
        what: what.to_string(),
        text: text.to_string(),
        kinds,
        samples,
    };
    s.check_histograms();
    s
}

impl Scrape {
    fn check_histograms(&self) {
        let what = &self.what;
        for (family, _) in self.kinds.iter().filter(|(_, k)| *k == "histogram") {
            // Series of this family by their labels without `le`.
            let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            let bucket = format!("{family}_bucket");
            for s in self.samples.iter().filter(|s| s.name == bucket) {
                let mut labels = s.labels.clone();
                let le = labels
                    .remove("le")
                    .unwrap_or_else(|| panic!("{what}: {bucket} without le"));
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse()
                        .unwrap_or_else(|_| panic!("{what}: le {le:?} of {bucket}"))
                };
                buckets.entry(labels).or_default().push((le, s.value));
            }
            assert!(
                !buckets.is_empty(),
                "{what}: histogram {family} has no buckets"
            );
            for (labels, b) in &buckets {
                assert!(
                    b.windows(2).all(|w| w[0].0 < w[1].0),
                    "{what}: {family}{labels:?}: le not ascending"
                );
                assert!(
                    b.windows(2).all(|w| w[0].1 <= w[1].1),
                    "{what}: {family}{labels:?}: buckets not cumulative: {b:?}"
                );
                let (last_le, inf) = *b.last().unwrap();
                assert_eq!(
                    last_le,
                    f64::INFINITY,
                    "{what}: {family}{labels:?}: no +Inf"
                );
                let count = self.one(&format!("{family}_count"), labels);
                assert_eq!(inf, count, "{what}: {family}{labels:?}: +Inf != _count");
                self.one(&format!("{family}_sum"), labels);
            }
            let expected: usize = buckets.len();
            for suffix in ["_count", "_sum"] {
                let n = self
                    .samples
                    .iter()
                    .filter(|s| s.name == format!("{family}{suffix}"))
                    .count();
                assert_eq!(
                    n, expected,
                    "{what}: {family}{suffix} series without buckets"
                );
            }
        }
    }

    /// The value of the one series with exactly these labels.
    fn one(&self, name: &str, labels: &Labels) -> f64 {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == *labels)
            .unwrap_or_else(|| panic!("{}: no {name}{labels:?}", self.what))
            .value
    }

    /// The sum of every series of `name` carrying these labels (at least one must exist).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        assert!(
            !matching.is_empty(),
            "{}: no series {name}{labels:?} in\n{}",
            self.what,
            self.text
        );
        matching.iter().sum()
    }

    fn total(&self, name: &str) -> f64 {
        self.sum(name, &[])
    }

    /// Every value of `label` among the series of `name`.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }

    /// Every label name on the series of `name`.
    fn label_names(&self, name: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .flat_map(|s| s.labels.keys().cloned())
            .collect()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

fn scrape(addr: SocketAddr, what: &str) -> Scrape {
    let (status, text) = http_raw(addr, "GET", "/metrics", b"");
    assert_eq!(status, 200, "{what} /metrics: {text}");
    parse(&text, what)
}

/// The gateway's metrics address, from the line `corecast up` prints.
fn gateway_metrics(up: &Up) -> SocketAddr {
    let t = Instant::now();
    loop {
        let log = up.log();
        if let Some(addr) = log
            .lines()
            .find_map(|l| l.split_once("Prometheus metrics on http://"))
            .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
        {
            return addr;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no metrics address printed:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until `cond` holds on fresh scrapes of both endpoints (15 s at most); returns them.
fn eventually(
    gw: SocketAddr,
    http: SocketAddr,
    what: &str,
    cond: impl Fn(&Scrape, &Scrape) -> bool,
) -> (Scrape, Scrape) {
    let t = Instant::now();
    loop {
        let (g, d) = (scrape(gw, "gateway"), scrape(http, "dispatcher"));
        if cond(&g, &d) {
            return (g, d);
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}; gateway:\n{}\ndispatcher:\n{}",
            g.text,
            d.text
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn goim_frame(op: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    protocol::frame::encode(&mut out, 1, op, 1, body);
    out
}

/// A TCP client whose token is not JSON: the gateway answers with a reason and closes.
fn refused_auth(tcp: SocketAddr) -> String {
    let mut s = TcpStream::connect(tcp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&goim_frame(protocol::op::AUTH, b"not json"))
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

/// A TCP client that authenticates into `room`, reads the auth reply and then never reads
/// again (a small receive buffer, so the gateway's outbound cap is reached soon).
fn never_reads(tcp: SocketAddr, room: &str) -> TcpStream {
    let mut s = TcpStream::connect(tcp).unwrap();
    let small: libc::c_int = 4096;
    // SAFETY: setsockopt on a socket this test owns, with a valid c_int.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &small as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let token = format!(r#"{{"mid":9,"key":"never-reads","room_id":"{room}","accepts":[1000]}}"#);
    s.write_all(&goim_frame(protocol::op::AUTH, token.as_bytes()))
        .unwrap();
    let mut head = [0u8; 16];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_exact(&mut head).unwrap();
    let op = i32::from_be_bytes(head[8..12].try_into().unwrap());
    assert_eq!(op, protocol::op::AUTH_REPLY, "auth reply expected");
    s
}

fn push(up: &Up, room: &str, body: &[u8]) {
    let v = up.post(
        &format!("/goim/push/room?operation=1000&type=live&room={room}"),
        body,
    );
    assert_eq!(v["code"], 0, "push to {room}: {v}");
}

/// Series every shard has.
const PER_SHARD: [&str; 19] = [
    "corecast_gateway_connections",
    "corecast_gateway_authenticated",
    "corecast_gateway_rooms",
    "corecast_gateway_accepted_total",
    "corecast_gateway_messages_out_total",
    "corecast_gateway_batches_out_total",
    "corecast_gateway_messages_written_total",
    "corecast_gateway_writes_total",
    "corecast_gateway_bytes_out_total",
    "corecast_gateway_cap_disconnects_total",
    "corecast_gateway_cap_dropped_messages_total",
    "corecast_gateway_ring_depth",
    "corecast_gateway_ring_capacity",
    "corecast_gateway_ring_full_total",
    "corecast_gateway_auth_failures_total",
    "corecast_gateway_handshake_seconds_count",
    "corecast_gateway_handshake_seconds_bucket",
    "corecast_gateway_write_seconds_count",
    "corecast_gateway_write_seconds_bucket",
];

#[test]
fn both_endpoints_parse_and_every_series_moves_with_traffic() {
    let up = Up::start(GATEWAY, DISPATCHER_TOML);
    let gw = gateway_metrics(&up);
    let (g0, d0) = (scrape(gw, "gateway"), scrape(up.http, "dispatcher"));
    let shards = g0.label_values("corecast_gateway_connections", "shard");
    assert!(!shards.is_empty());
    for name in PER_SHARD {
        assert_eq!(
            g0.label_values(name, "shard"),
            shards,
            "{name}: one series per shard"
        );
    }
    assert_eq!(
        g0.label_values("corecast_gateway_handshake_seconds_count", "outcome"),
        BTreeSet::from(["failed".to_string(), "ok".to_string()])
    );
    for reason in [
        "not_json",
        "unsigned",
        "no_expiry",
        "bad_signature",
        "expired",
        "newline",
    ] {
        g0.sum(
            "corecast_gateway_auth_failures_total",
            &[("reason", reason)],
        );
    }

    // Traffic: a TCP and a WebSocket client in live://7, a refused token, a client that never
    // reads in live://slow.
    const PUSHES: u64 = 5;
    let mut tcp = client(&up, false, "live://7", 1, "m-tcp", &[1000]);
    tcp.count = Some(PUSHES);
    let mut ws = client(&up, true, "live://7", 2, "m-ws", &[1000]);
    ws.count = Some(PUSHES);
    let (tcp, ws) = (listen(tcp), listen(ws));
    let refusal = refused_auth(up.tcp);
    assert!(refusal.contains("auth"), "{refusal:?}");
    let stalled = never_reads(up.tcp, "live://slow");

    // Gauges at their values once the three are in.
    let delta = |a: &Scrape, b: &Scrape, name: &str, labels: &[(&str, &str)]| {
        b.sum(name, labels) - a.sum(name, labels)
    };
    let (g1, d1) = eventually(gw, up.http, "three authenticated connections", |g, d| {
        g.total("corecast_gateway_authenticated") == 3.0
            && g.total("corecast_gateway_connections") == 3.0
            && delta(
                &g0,
                g,
                "corecast_gateway_handshake_seconds_count",
                &[("outcome", "ok")],
            ) == 3.0
            && d.sum(
                "corecast_dispatcher_gateway_connections",
                &[("gateway", "gw-metrics")],
            ) == 3.0
    });
    assert_eq!(g1.total("corecast_gateway_room_keys"), 2.0);
    let rooms = g1.total("corecast_gateway_rooms");
    assert!(
        (2.0..=2.0 * shards.len() as f64).contains(&rooms),
        "rooms per shard sum to {rooms}"
    );
    for shard in &shards {
        let s = [("shard", shard.as_str())];
        assert_eq!(g1.sum("corecast_gateway_ring_depth", &s), 0.0, "idle ring");
        assert_eq!(g1.sum("corecast_gateway_ring_capacity", &s), 1.0);
    }
    assert_eq!(
        delta(
            &g0,
            &g1,
            "corecast_gateway_auth_failures_total",
            &[("reason", "not_json")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            &g0,
            &g1,
            "corecast_gateway_handshake_seconds_count",
            &[("outcome", "failed")]
        ),
        1.0,
        "the refused token ended a handshake"
    );
    assert_eq!(d1.total("corecast_dispatcher_gateways"), 1.0);
    assert_eq!(d1.total("corecast_dispatcher_gateways_linked"), 1.0);
    let me = [("gateway", "gw-metrics")];
    assert_eq!(d1.sum("corecast_dispatcher_gateway_linked", &me), 1.0);
    assert_eq!(d1.sum("corecast_dispatcher_gateway_offline", &me), 0.0);
    assert_eq!(
        d1.sum(
            "corecast_dispatcher_consumer_lag_messages",
            &[("partition", "0")]
        ),
        0.0
    );

    // Pushes to live://7 reach both clients.
    let mut pushed = 0u64;
    for i in 0..PUSHES {
        push(&up, "7", format!("m{i}").as_bytes());
        pushed += 1;
    }
    let want: Vec<String> = (0..PUSHES).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&tcp.join().unwrap()), want, "tcp");
    assert_eq!(bodies(&ws.join().unwrap()), want, "ws");

    // Bursts of room batches to many rooms: with one inbox slot per shard the ingress finds a
    // ring full and waits.
    let mut burst = 0;
    while scrape(gw, "gateway").total("corecast_gateway_ring_full_total") == 0.0 {
        assert!(burst < 10, "no ring-full event after {burst} bursts");
        for r in 0..200 {
            push(&up, &format!("burst-{burst}-{r}"), b"x");
            pushed += 1;
        }
        burst += 1;
    }

    // 16 KB pushes to the client that never reads, until the gateway cuts it at the cap.
    let big = vec![b'z'; 16 * 1024];
    let mut sent = 0;
    while scrape(gw, "gateway").total("corecast_gateway_cap_disconnects_total") == 0.0 {
        assert!(
            sent < 2_000,
            "no cap disconnect after {sent} pushes of 16 KB"
        );
        for _ in 0..20 {
            push(&up, "slow", &big);
            pushed += 1;
            sent += 1;
        }
    }
    drop(stalled);

    // Everything settles: no connection left, every push consumed and batched, the lag back
    // to 0, every completed write timed.
    let (g2, d2) = eventually(gw, up.http, "the traffic to settle", |g, d| {
        g.total("corecast_gateway_connections") == 0.0
            && g.total("corecast_gateway_write_seconds_count")
                == g.total("corecast_gateway_writes_total")
            && delta(&d0, d, "corecast_dispatcher_room_batch_messages_sum", &[]) == pushed as f64
            && d.total("corecast_dispatcher_consumer_lag_messages") == 0.0
    });
    let gd = |name: &str| delta(&g0, &g2, name, &[]);
    let dd = |name: &str| delta(&d0, &d2, name, &[]);
    assert_eq!(gd("corecast_gateway_accepted_total"), 4.0);
    assert_eq!(gd("corecast_gateway_auth_ok_total"), 3.0);
    assert_eq!(gd("corecast_gateway_closed_total"), 4.0);
    assert_eq!(g2.total("corecast_gateway_authenticated"), 0.0);
    assert!(gd("corecast_gateway_messages_out_total") >= (2 * PUSHES) as f64);
    assert!(gd("corecast_gateway_messages_written_total") >= (2 * PUSHES) as f64);
    // The dispatcher may batch the pushes, and a write carries what queued meanwhile: at
    // least one batch and one write per member.
    assert!(gd("corecast_gateway_batches_out_total") >= 2.0);
    assert!(gd("corecast_gateway_writes_total") >= 2.0);
    // At least the pushes' frames (16-byte header, 2-byte body) to both members.
    assert!(gd("corecast_gateway_bytes_out_total") >= (2 * PUSHES * 18) as f64);
    assert_eq!(gd("corecast_gateway_cap_disconnects_total"), 1.0);
    assert!(gd("corecast_gateway_ring_full_total") > 0.0);
    assert_eq!(
        g2.total("corecast_gateway_inbox_full_total"),
        g2.total("corecast_gateway_ring_full_total"),
        "the gateway-wide count is the shards' sum"
    );
    assert!(gd("corecast_gateway_write_seconds_count") >= 2.0);
    assert!(gd("corecast_gateway_write_seconds_sum") > 0.0);
    assert!(gd("corecast_gateway_handshake_seconds_sum") > 0.0);
    assert_eq!(
        delta(
            &g0,
            &g2,
            "corecast_gateway_handshake_seconds_count",
            &[("outcome", "ok")]
        ),
        3.0
    );
    assert_eq!(
        delta(
            &d0,
            &d2,
            "corecast_dispatcher_http_requests_total",
            &[("route", "push_room"), ("code", "0")]
        ),
        pushed as f64
    );
    assert_eq!(
        dd("corecast_dispatcher_queue_produced_total"),
        pushed as f64
    );
    assert_eq!(
        dd("corecast_dispatcher_queue_consumed_total"),
        pushed as f64
    );
    assert_eq!(
        dd("corecast_dispatcher_queue_produce_seconds_count"),
        pushed as f64
    );
    assert!(dd("corecast_dispatcher_queue_produce_seconds_sum") > 0.0);
    assert_eq!(dd("corecast_dispatcher_room_messages_total"), pushed as f64);
    let batches = dd("corecast_dispatcher_room_batch_messages_count");
    assert!(
        batches >= 1.0 && batches <= pushed as f64,
        "{batches} batches for {pushed} messages"
    );
    assert!(dd("corecast_dispatcher_room_batches_total") >= batches);
}

/// Metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("corecast_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

/// Label names an expression uses: in `{...}` matchers and in `by (...)`.
fn label_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find('{') {
        let end = rest[i..].find('}').map_or(rest.len(), |e| i + e);
        for m in rest[i + 1..end].split(',') {
            let key: String = m
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !key.is_empty() {
                out.push(key);
            }
        }
        rest = &rest[end..];
    }
    let mut rest = expr;
    while let Some(i) = rest.find("by (") {
        let end = rest[i..].find(')').map_or(rest.len(), |e| i + e);
        out.extend(
            rest[i + 4..end]
                .split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        );
        rest = &rest[end..];
    }
    out
}

/// Panels, flattened out of rows.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

#[test]
fn the_dashboard_uses_only_series_that_exist() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/grafana/corecast.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    // Importable with a datasource input.
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["uid"].as_str().is_some_and(|t| !t.is_empty()));

    let mut exprs: Vec<(String, String)> = Vec::new();
    let mut ids = HashSet::new();
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "panel id twice: {title}"
        );
        assert!(p["gridPos"]["w"].as_i64().is_some(), "{title}: no gridPos");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: datasource"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{title}: datasource"
            );
            let expr = t["expr"].as_str().expect("expr").to_string();
            exprs.push((title.clone(), expr));
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .expect("a variable's query");
            exprs.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }

    let up = Up::start(GATEWAY, DISPATCHER_TOML);
    let (g, d) = (
        scrape(gateway_metrics(&up), "gateway"),
        scrape(up.http, "dispatcher"),
    );
    let mut used = BTreeSet::new();
    for (title, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: no corecast series in {expr:?}");
        let mut labels: BTreeSet<String> = ["instance", "job", "le"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for name in &names {
            let scrape = if name.starts_with("corecast_gateway_") {
                &g
            } else {
                &d
            };
            assert!(
                scrape.has(name),
                "{title}: {name} is not served by `corecast up` ({expr})"
            );
            labels.extend(scrape.label_names(name));
            used.insert(name.clone());
        }
        for l in label_names(expr) {
            assert!(
                labels.contains(&l),
                "{title}: label {l} is on none of {names:?} ({expr})"
            );
        }
    }
    // The panels the dashboard promises.
    for name in [
        "corecast_gateway_connections",
        "corecast_gateway_messages_written_total",
        "corecast_gateway_writes_total",
        "corecast_gateway_bytes_out_total",
        "corecast_gateway_ring_depth",
        "corecast_gateway_ring_full_total",
        "corecast_gateway_cap_disconnects_total",
        "corecast_gateway_cap_dropped_messages_total",
        "corecast_gateway_auth_failures_total",
        "corecast_gateway_handshake_seconds_bucket",
        "corecast_gateway_write_seconds_bucket",
        "corecast_dispatcher_http_requests_total",
        "corecast_dispatcher_queue_produce_seconds_bucket",
        "corecast_dispatcher_consumer_lag_messages",
        "corecast_dispatcher_room_batch_messages_bucket",
        "corecast_dispatcher_gateways_linked",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
}
