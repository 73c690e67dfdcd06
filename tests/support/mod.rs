//! Helpers for the binary's integration tests: run `corecast up` as a real process on
//! ephemeral loopback ports, speak HTTP to its API, and listen as goim clients.

#![allow(dead_code)]

pub mod browser;
pub mod procs;
pub mod queues;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `corecast up` process, killed (by PID) on drop.
pub struct Up {
    process: benches::up::UpProcess,
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub http: SocketAddr,
    _dir: TempDir,
}

pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "corecast-{tag}-{}-{:x}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(1);
    h.finish()
}

/// Gateway config lines for tests: ephemeral ports, fast renewals.
pub const GATEWAY_TOML: &str = "id = \"gw-up\"\ntcp_bind = \"127.0.0.1:0\"\nws_bind = \"127.0.0.1:0\"\nmetrics_bind = \"\"\nrenew_ms = 200\n";
/// Dispatcher config lines for tests: ephemeral ports.
pub const DISPATCHER_TOML: &str =
    "http_bind = \"127.0.0.1:0\"\nlink_bind = \"127.0.0.1:0\"\nthreads = 2\n";

impl Up {
    /// Starts `corecast up` with these config files' contents and waits until it serves.
    pub fn start(gateway_toml: &str, dispatcher_toml: &str) -> Up {
        let dir = TempDir::new("up");
        let process = benches::up::UpProcess::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_corecast")),
            &dir.0,
            gateway_toml,
            dispatcher_toml,
            "info",
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let up = Up {
            tcp: process.tcp,
            ws: process.ws,
            http: process.http,
            process,
            _dir: dir,
        };
        // The gateway links to the dispatcher right after start; wait until it is listed.
        up.wait_for("the gateway to register", |up| {
            up.get("/goim/nodes/instances")["data"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        });
        up
    }

    pub fn get(&self, path: &str) -> Value {
        http(self.http, "GET", path, b"").1
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Value {
        http(self.http, "POST", path, body).1
    }

    /// Polls `cond` every 50 ms for up to 15 s.
    pub fn wait_for(&self, what: &str, cond: impl Fn(&Up) -> bool) {
        let t = Instant::now();
        while !cond(self) {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}; log:\n{}",
                self.process.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the gateway reports `n` connections.
    pub fn wait_conns(&self, n: u64) {
        self.wait_for(&format!("{n} connections"), |up| {
            up.get("/goim/online/total")["data"]["conn_count"] == n
        });
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// What the process printed on stderr so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// One HTTP/1.1 request; returns the status and the JSON body (Null if not JSON).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, text) = http_raw(addr, method, path, body);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn http_raw(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    http_with(addr, method, path, "", body)
}

/// One HTTP/1.1 request with extra header lines (each ending in `\r\n`); the status and the
/// body as text.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// A goim client in a thread (`corecast listen` in JSON mode); returns its output lines.
pub fn listen(args: loadtest::listen::ListenArgs) -> JoinHandle<Vec<Value>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let result = loadtest::listen::run(&args, &mut out);
        let mut lines: Vec<Value> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("listening").is_none())
            .collect();
        if let Err(e) = result {
            // Kept for failure messages; `bodies` ignores it.
            lines.push(serde_json::json!({ "error": e.to_string() }));
        }
        lines
    })
}

/// Listen args for a TCP client of the gateway at `tcp`: JSON output, watching op 1000,
/// ending after `count` messages (if given) or `seconds`.
pub fn tcp_client(
    tcp: SocketAddr,
    room: &str,
    mid: i64,
    key: &str,
    count: Option<u64>,
    seconds: u64,
) -> loadtest::listen::ListenArgs {
    loadtest::listen::ListenArgs {
        tcp: tcp.to_string(),
        room: room.into(),
        mid,
        key: key.into(),
        accepts: vec![1000],
        json: true,
        count,
        seconds: Some(seconds),
        ..Default::default()
    }
}

/// Listen args for a client of `up` in `room`, over WebSocket if `ws`.
pub fn client(
    up: &Up,
    ws: bool,
    room: &str,
    mid: i64,
    key: &str,
    accepts: &[i32],
) -> loadtest::listen::ListenArgs {
    loadtest::listen::ListenArgs {
        ws: ws.then(|| up.ws.to_string()),
        accepts: accepts.to_vec(),
        ..tcp_client(up.tcp, room, mid, key, None, 20)
    }
}

/// The bodies of the messages a client received, in order.
pub fn bodies(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["op"].as_i64().is_some_and(|op| op >= 1000))
        .filter_map(|m| m["body"].as_str().map(str::to_string))
        .collect()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An in-process gateway on ephemeral ports dialling these dispatcher links, renewing every
/// 200 ms.
pub fn gateway(id: &str, links: &[SocketAddr]) -> gateway::Gateway {
    let mut cfg = gateway::Config::loopback_ephemeral();
    cfg.id = id.into();
    cfg.metrics_bind = String::new();
    cfg.dispatchers = links.iter().map(|a| a.to_string()).collect();
    cfg.renew_ms = 200;
    gateway::Gateway::start(cfg).unwrap()
}

/// Polls `cond` every 50 ms for up to 15 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// POSTs to a dispatcher and asserts goim's code 0.
pub fn post_ok(d: &dispatcher::Dispatcher, path: &str, body: &[u8]) {
    let (status, v) = http(d.http_addr(), "POST", path, body);
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{path}: {v}");
}
