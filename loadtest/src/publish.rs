//! The publisher of the `room`, `push` and `broadcast` scenarios: pushes through the
//! dispatcher's HTTP API (goim's `POST /goim/push/room`, `/keys`, `/mids`, `/all`) at a fixed
//! rate, on a schedule (push `i` is due at `start + i / rate`; a slow answer never shifts the
//! later ones, and lateness is recorded, so coordinated omission cannot hide a stall).
//!
//! Pushes go round-robin over groups ([`PushTo`]): the rooms, or the connections' keys or mids
//! in groups of `per_push`. Push `i` goes to group `i % G` with seq `i / G`, so every
//! connection sees its own sequence 0, 1, 2, ... Bodies are `{"seq":N,"ts":T}` (T = the push's
//! scheduled time), which the receivers check for loss, order and latency, or a fixed body
//! (`--goim-shape`: `{"test":1}`, counted only).
//!
//! [`HttpClient`] is a keep-alive HTTP/1.1 client on one socket (also used by the dispatcher
//! benchmark and to read `/goim/nodes/weighted`); with a bearer secret it sends
//! `Authorization: Bearer <secret>` (the dispatcher's `http.bearer_secrets`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::report::Latency;

/// Connect, read and write timeout of the HTTP client.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A keep-alive HTTP/1.1 client on one `TcpStream`: one request at a time, answers read by
/// their `Content-Length`.
pub struct HttpClient {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
    req: Vec<u8>,
    bearer: Option<String>,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl HttpClient {
    pub fn connect(addr: SocketAddr) -> io::Result<HttpClient> {
        Ok(HttpClient {
            addr,
            stream: Self::dial(addr)?,
            buf: Vec::with_capacity(4096),
            req: Vec::with_capacity(512),
            bearer: None,
        })
    }

    /// Sends `Authorization: Bearer <secret>` with every request (None: no header).
    pub fn with_bearer(mut self, secret: Option<String>) -> HttpClient {
        self.bearer = secret;
        self
    }

    fn dial(addr: SocketAddr) -> io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(HTTP_TIMEOUT))?;
        s.set_write_timeout(Some(HTTP_TIMEOUT))?;
        Ok(s)
    }

    /// Opens a fresh connection (after an error left the old one in an unknown state).
    pub fn reconnect(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.stream = Self::dial(self.addr)?;
        Ok(())
    }

    /// POSTs `body` to `path`; returns the answer's status and body.
    pub fn post(&mut self, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        self.request("POST", path, body)
    }

    /// GETs `path`; returns the answer's status and body.
    pub fn get(&mut self, path: &str) -> io::Result<(u16, Vec<u8>)> {
        self.request("GET", path, b"")
    }

    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        self.req.clear();
        write!(
            self.req,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.addr
        )?;
        if let Some(secret) = &self.bearer {
            write!(self.req, "Authorization: Bearer {secret}\r\n")?;
        }
        write!(
            self.req,
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        self.req.extend_from_slice(body);
        self.stream.write_all(&self.req)?;
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            self.fill()?;
        };
        let head =
            std::str::from_utf8(&self.buf[..head_end]).map_err(|_| invalid("non-UTF-8 head"))?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("bad status line"))?;
        let len: usize = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .ok_or_else(|| invalid("answer without Content-Length"))?;
        while self.buf.len() < head_end + len {
            self.fill()?;
        }
        let answer = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Ok((status, answer))
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// POSTs a push and checks goim's envelope: `Ok` for HTTP 200 with `"code":0`, else what
    /// went wrong (an I/O error leaves the connection re-dialled).
    pub fn push(&mut self, path: &str, body: &[u8]) -> Result<(), String> {
        match self.post(path, body) {
            Ok((200, answer)) => {
                let v: serde_json::Value = serde_json::from_slice(&answer)
                    .map_err(|_| format!("not JSON: {}", String::from_utf8_lossy(&answer)))?;
                if v["code"] == 0 {
                    Ok(())
                } else {
                    Err(format!("code {}: {}", v["code"], v["message"]))
                }
            }
            Ok((status, answer)) => match serde_json::from_slice::<serde_json::Value>(&answer) {
                // The dispatcher's 401 (a missing or wrong --bearer) names what is missing.
                Ok(v) if v["message"].is_string() => Err(format!(
                    "HTTP {status}: code {}: {}",
                    v["code"],
                    v["message"].as_str().unwrap_or_default()
                )),
                _ => Err(format!("HTTP {status}")),
            },
            Err(e) => {
                let kind = format!("io: {:?}", e.kind());
                // Best effort: the next push retries the dial if this one fails.
                let _ = self.reconnect();
                Err(kind)
            }
        }
    }
}

/// Where the pushes go.
#[derive(Clone, Debug, PartialEq)]
pub enum PushTo {
    /// Round-robin over these rooms (`type://id`; goim's `push/room`).
    Rooms(Vec<String>),
    /// Every connection (goim's `push/all`, delivered where `op` is in the connection's
    /// accepts).
    All,
    /// Connections `0..count` by key `<prefix>-<i>` (goim's `push/keys`), `per_push` keys per
    /// push, in groups of consecutive ids.
    Keys {
        prefix: String,
        count: u64,
        per_push: u32,
    },
    /// The same by mid (goim's `push/mids`; the load tester's connection `i` has mid `i + 1`).
    Mids { count: u64, per_push: u32 },
}

impl PushTo {
    /// Groups pushed round-robin.
    pub fn groups(&self) -> u64 {
        match self {
            PushTo::Rooms(rooms) => rooms.len() as u64,
            PushTo::All => 1,
            PushTo::Keys {
                count, per_push, ..
            }
            | PushTo::Mids { count, per_push } => count.div_ceil(u64::from(*per_push).max(1)),
        }
    }

    /// The ids of group `g` (key and mid pushes).
    fn ids(count: u64, per_push: u32, g: u64) -> std::ops::Range<u64> {
        let first = g * u64::from(per_push);
        first..(first + u64::from(per_push)).min(count)
    }
}

/// What to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishOptions {
    /// The dispatcher's HTTP address.
    pub http: SocketAddr,
    pub to: PushTo,
    /// The op of the pushes.
    pub op: i32,
    /// Pushes per second.
    pub rate: u32,
    /// A fixed body instead of `{"seq":N,"ts":T}` (goim's shape: `{"test":1}`).
    pub fixed_body: Option<Vec<u8>>,
    /// The dispatcher's bearer secret (`--bearer`), if its API needs one.
    pub bearer: Option<String>,
}

/// What the publisher did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PublishReport {
    /// Pushes sent, and answered with code 0.
    pub sent: u64,
    pub ok: u64,
    /// Failed pushes by what went wrong.
    pub errors: BTreeMap<String, u64>,
    /// Pushes sent more than 1 ms after their scheduled time (the publisher fell behind).
    pub late_over_1ms: u64,
    /// Pushes answered with code 0, per group (rooms, key or mid groups; one for `all`).
    pub ok_by_group: Vec<u64>,
    /// How long the HTTP calls took, in microseconds.
    pub call_us: Option<Latency>,
    pub secs: f64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// goim's path for a room push of `op` to `room` (`type://id`).
pub fn room_path(room: &str, op: i32) -> Result<String, String> {
    let (kind, id) = room
        .split_once("://")
        .ok_or_else(|| format!("room {room:?} is not a goim room key (type://id)"))?;
    Ok(format!(
        "/goim/push/room?operation={op}&type={}&room={}",
        encode(kind),
        encode(id)
    ))
}

impl PublishOptions {
    /// The goim route and query of the pushes to group `g`.
    pub fn path(&self, g: u64) -> Result<String, String> {
        let op = self.op;
        match &self.to {
            PushTo::All => {
                if op == 0 {
                    return Err("a broadcast needs a non-zero op (goim's push/all)".into());
                }
                Ok(format!("/goim/push/all?operation={op}"))
            }
            PushTo::Rooms(rooms) => {
                let room = rooms.get(g as usize).ok_or("no room to push to")?;
                room_path(room, op)
            }
            PushTo::Keys {
                prefix,
                count,
                per_push,
            } => {
                let mut p = format!("/goim/push/keys?operation={op}");
                for i in PushTo::ids(*count, *per_push, g) {
                    let _ = write!(p, "&keys={}", encode(&format!("{prefix}-{i}")));
                }
                Ok(p)
            }
            PushTo::Mids { count, per_push } => {
                let mut p = format!("/goim/push/mids?operation={op}");
                for i in PushTo::ids(*count, *per_push, g) {
                    let _ = write!(p, "&mids={}", i + 1);
                }
                Ok(p)
            }
        }
    }

    /// Checks what can be checked before the run.
    pub fn validate(&self) -> Result<(), String> {
        if self.to.groups() == 0 {
            return Err("nothing to push to (no rooms, or no connections)".into());
        }
        for g in 0..self.to.groups().min(1_000) {
            self.path(g)?;
        }
        if let PushTo::Keys { per_push: 0, .. } | PushTo::Mids { per_push: 0, .. } = self.to {
            return Err("keys/mids per push must be at least 1".into());
        }
        if self.rate == 0 {
            return Err("the push rate must be at least 1 per second".into());
        }
        Ok(())
    }
}

/// Publishes until `stop` is set or `limit` passes. Failures (an unreachable dispatcher, error
/// answers) are counted in the report by what went wrong.
/// Pushes at `o.rate` until `limit` or `stop`. Each push answered with code 0 is also counted in
/// `live` (when given), as expected messages: `members[g]` for push group `g`, or one
/// `pushes_ok` when every connection is expected to get it (`members` is `None`), so the hold
/// can wait for the last messages to arrive (`--drain`).
pub fn run(
    o: &PublishOptions,
    limit: Duration,
    stop: &AtomicBool,
    live: Option<(&crate::Live, Option<&[u64]>)>,
) -> PublishReport {
    let groups = o.to.groups().max(1);
    let mut r = PublishReport {
        ok_by_group: vec![0; groups as usize],
        ..PublishReport::default()
    };
    if let Err(e) = o.validate() {
        r.errors.insert(e, 1);
        return r;
    }
    let mut client = match HttpClient::connect(o.http) {
        Ok(c) => c.with_bearer(o.bearer.clone()),
        Err(e) => {
            r.errors.insert(
                format!("connecting to the dispatcher at {}: {e}", o.http),
                1,
            );
            return r;
        }
    };
    let mut calls = Histogram::<u64>::new(3).expect("3 significant figures is valid");
    let start = Instant::now();
    let start_us = now_us();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let offset = Duration::from_nanos(i * 1_000_000_000 / u64::from(o.rate.max(1)));
        if offset >= limit {
            break;
        }
        let due = start + offset;
        let now = Instant::now();
        if due > now {
            // Sleep in short steps so a stop is noticed.
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
            continue;
        }
        if now.saturating_duration_since(due) > Duration::from_millis(1) {
            r.late_over_1ms += 1;
        }
        let (g, seq) = (i % groups, i / groups);
        let body = match &o.fixed_body {
            Some(b) => b.clone(),
            None => crate::sequence::body(seq, start_us + offset.as_micros() as u64).into_bytes(),
        };
        let path = o.path(g).expect("validated above");
        let sent = Instant::now();
        r.sent += 1;
        match client.push(&path, &body) {
            Ok(()) => {
                r.ok += 1;
                r.ok_by_group[g as usize] += 1;
                match live {
                    Some((l, Some(members))) => {
                        let n = members.get(g as usize).copied().unwrap_or(0);
                        l.expected_by_group.fetch_add(n, Ordering::Relaxed);
                    }
                    Some((l, None)) => {
                        l.pushes_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
            }
            Err(e) => {
                let key: String = e.chars().take(120).collect();
                *r.errors.entry(key).or_default() += 1;
            }
        }
        let _ = calls.record(sent.elapsed().as_micros() as u64);
        i += 1;
    }
    r.secs = start.elapsed().as_secs_f64();
    r.call_us = Latency::of(&calls);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_paths_are_goims_and_encoded() {
        assert_eq!(
            room_path("live://1000", 1000).unwrap(),
            "/goim/push/room?operation=1000&type=live&room=1000"
        );
        assert_eq!(
            room_path("live://a b&c", 7).unwrap(),
            "/goim/push/room?operation=7&type=live&room=a%20b%26c"
        );
        assert!(room_path("no-type", 1).unwrap_err().contains("type://id"));
    }

    #[test]
    fn an_unreachable_dispatcher_is_a_clear_error() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let o = PublishOptions {
            http: addr,
            to: PushTo::Rooms(vec!["live://1".into()]),
            op: 1000,
            rate: 10,
            fixed_body: None,
            bearer: None,
        };
        let r = run(&o, Duration::from_secs(1), &AtomicBool::new(false), None);
        assert_eq!((r.sent, r.ok), (0, 0));
        let err = r.errors.keys().next().unwrap();
        assert!(
            err.contains(&addr.to_string()) && err.contains("refused"),
            "{err}"
        );
        assert!(o.validate().is_ok());
        assert!(
            PublishOptions {
                rate: 0,
                ..o.clone()
            }
            .validate()
            .is_err()
        );
        let all = PublishOptions {
            to: PushTo::All,
            ..o.clone()
        };
        assert_eq!(all.path(0).unwrap(), "/goim/push/all?operation=1000");
        assert!(PublishOptions { op: 0, ..all }.validate().is_err());
    }

    #[test]
    fn key_and_mid_pushes_go_in_groups() {
        let o = PublishOptions {
            http: "127.0.0.1:1".parse().unwrap(),
            to: PushTo::Keys {
                prefix: "lt x".into(),
                count: 5,
                per_push: 2,
            },
            op: 1000,
            rate: 10,
            fixed_body: None,
            bearer: None,
        };
        assert_eq!(o.to.groups(), 3);
        assert_eq!(
            o.path(0).unwrap(),
            "/goim/push/keys?operation=1000&keys=lt%20x-0&keys=lt%20x-1"
        );
        assert_eq!(
            o.path(2).unwrap(),
            "/goim/push/keys?operation=1000&keys=lt%20x-4"
        );
        let m = PublishOptions {
            to: PushTo::Mids {
                count: 3,
                per_push: 3,
            },
            ..o.clone()
        };
        assert_eq!(m.to.groups(), 1);
        assert_eq!(
            m.path(0).unwrap(),
            "/goim/push/mids?operation=1000&mids=1&mids=2&mids=3"
        );
        let rooms = PublishOptions {
            to: PushTo::Rooms(vec!["a://1".into(), "a://2".into()]),
            ..o.clone()
        };
        assert_eq!(rooms.to.groups(), 2);
        assert!(rooms.path(1).unwrap().ends_with("room=2"));
        let none = PublishOptions {
            to: PushTo::Keys {
                prefix: "k".into(),
                count: 0,
                per_push: 1,
            },
            ..o
        };
        assert!(none.validate().unwrap_err().contains("nothing to push"));
    }

    /// The hand-written client against a canned keep-alive server: two answers on one
    /// connection, the second split across reads.
    #[test]
    fn http_client_reads_answers_by_content_length() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            for answer in [
                &br#"{"code":0,"message":""}"#[..],
                br#"{"code":-400,"message":"x"}"#,
            ] {
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let head = String::from_utf8_lossy(&got[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                while got.len() < head_end + len {
                    let n = s.read(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                got.drain(..head_end + len);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    answer.len()
                );
                s.write_all(reply.as_bytes()).unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_millis(20));
                s.write_all(answer).unwrap();
            }
        });
        let mut c = HttpClient::connect(addr).unwrap();
        assert_eq!(c.push("/a", b"{}"), Ok(()));
        let e = c.push("/b", b"hello").unwrap_err();
        assert!(e.contains("-400"), "{e}");
        server.join().unwrap();
    }
}
