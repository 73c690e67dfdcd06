//! WSS in the real binary: `corecast gateway` with a certificate swaps it for new connections
//! on SIGHUP (and keeps it when the new files are bad), and refuses to start, naming the file,
//! when the key is missing.

mod support;
#[path = "../gateway/tests/support/wss.rs"]
mod wss;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::TempDir;
use wss::*;

/// A `corecast gateway` child process, killed (by its PID) on drop, its stderr kept.
struct GatewayProcess {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl GatewayProcess {
    fn spawn(config: &Path) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corecast"))
            .arg("gateway")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("corecast gateway starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = l.lock().unwrap();
                l.push_str(&strip_ansi(&line));
                l.push('\n');
            }
        });
        GatewayProcess { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to 15 s) until the log holds `what`.
    fn wait_log(&self, what: &str) {
        let t = Instant::now();
        while !self.log().contains(what) {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "no {what:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The WSS address from the "gateway listening" line.
    fn wss_addr(&self) -> SocketAddr {
        self.wait_log("gateway listening");
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("gateway listening"))
            .unwrap();
        let addr = line
            .split_once("wss=")
            .unwrap_or_else(|| panic!("no wss= in {line:?}"))
            .1
            .split_whitespace()
            .next()
            .unwrap();
        addr.parse()
            .unwrap_or_else(|e| panic!("{addr:?} in {line:?}: {e}"))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on this test's own child, by its PID.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill {sig}");
    }

    /// Waits (up to `secs`) for the process to exit.
    fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "still running after {secs} s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    let toml = format!(
        "tcp_bind = \"127.0.0.1:0\"\nws_bind = \"127.0.0.1:0\"\nwss_bind = \"127.0.0.1:0\"\n\
         metrics_bind = \"\"\n[tls]\ncert = {:?}\nkey = {:?}\n[drain]\ninterval_ms = 100\n",
        dir.join("cert.pem").to_string_lossy(),
        dir.join("key.pem").to_string_lossy()
    );
    std::fs::write(&path, toml).unwrap();
    path
}

const TOKEN: &str = r#"{"mid":1, "room_id":"live://wss", "platform":"web", "accepts":[1000]}"#;

#[test]
fn sighup_swaps_the_certificate_for_new_connections() {
    let dir = TempDir::new("wss-hup");
    let ca = Ca::new();
    let first = ca.issue(&dir.0.join("cert.pem"), &dir.0.join("key.pem"));
    let mut gw = GatewayProcess::spawn(&write_config(&dir.0));
    let addr = gw.wss_addr();
    let mut old = WssClient::auth(addr, ca.client_config(), TOKEN);
    assert_eq!(old.peer_cert(), first);

    let second = ca.issue(&dir.0.join("cert.pem"), &dir.0.join("key.pem"));
    gw.signal(libc::SIGHUP);
    gw.wait_log("TLS certificate reloaded");
    let new = WssClient::auth(addr, ca.client_config(), TOKEN);
    assert_eq!(
        new.peer_cert(),
        second,
        "a new connection sees the new certificate"
    );
    old.heartbeat(1);

    // Broken files: the reload fails, is logged, and the second certificate keeps serving.
    std::fs::write(dir.0.join("key.pem"), "not a key").unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_log("TLS reload failed");
    assert!(gw.log().contains("key.pem"), "{}", gw.log());
    let third = WssClient::auth(addr, ca.client_config(), TOKEN);
    assert_eq!(third.peer_cert(), second);
    old.heartbeat(2);

    // SIGTERM still drains and exits.
    drop((old, new, third));
    gw.signal(libc::SIGTERM);
    let status = gw.wait_exit(20);
    assert!(status.success(), "{status:?}\n{}", gw.log());
}

#[test]
fn a_missing_key_file_stops_the_start_naming_it() {
    let dir = TempDir::new("wss-nokey");
    let ca = Ca::new();
    ca.issue(&dir.0.join("cert.pem"), &dir.0.join("unused-key.pem"));
    let mut gw = GatewayProcess::spawn(&write_config(&dir.0));
    let status = gw.wait_exit(20);
    assert!(!status.success(), "{status:?}");
    // Give the reader thread a moment to take the last lines.
    std::thread::sleep(Duration::from_millis(100));
    let log = gw.log();
    let key = dir.0.join("key.pem");
    assert!(
        log.contains("tls.key") && log.contains(&*key.to_string_lossy()),
        "{log}"
    );
    assert!(log.contains("No such file"), "{log}");
}

/// The gateway process's resident memory, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

/// What an idle WSS connection costs the gateway in user space, against an idle WS one: a
/// `corecast gateway` process, its RSS read before and after N authenticated WS connections,
/// then N WSS connections (each in a room, handshake done, then idle). Not part of the suite
/// (it prints figures, asserts only sanity); run with
/// `cargo nextest run -p corecast --cargo-profile ci --test wss --run-ignored only --no-capture`
/// (`CORECAST_IDLE_CONNS` sets N, default 2,000).
#[test]
#[ignore]
fn idle_wss_connection_cost() {
    let n: usize = std::env::var("CORECAST_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let dir = TempDir::new("wss-idle");
    let ca = Ca::new();
    ca.issue(&dir.0.join("cert.pem"), &dir.0.join("key.pem"));
    let gw = GatewayProcess::spawn(&write_config(&dir.0));
    let wss = gw.wss_addr();
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("gateway listening"))
        .unwrap();
    let ws: SocketAddr = line
        .split_once(" ws=")
        .unwrap()
        .1
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let pid = gw.child.id();
    let settle = || std::thread::sleep(Duration::from_millis(1500));
    // Warm up: the first connections of each kind allocate what every later one shares.
    let mut warm = Vec::new();
    for _ in 0..20 {
        warm.push(WssClient::auth(wss, ca.client_config(), TOKEN));
    }
    settle();
    let base = rss(pid);
    let mut plain = Vec::new();
    for _ in 0..n {
        let s = std::net::TcpStream::connect(ws).unwrap();
        let (mut c, _) = tungstenite::client(format!("ws://{ws}/sub"), s).unwrap();
        let mut auth = Vec::new();
        protocol::frame::encode(&mut auth, 1, protocol::op::AUTH, 1, TOKEN.as_bytes());
        c.send(tungstenite::Message::binary(auth)).unwrap();
        c.read().unwrap();
        plain.push(c);
    }
    settle();
    let with_ws = rss(pid);
    let config = ca.client_config();
    let mut tls = Vec::new();
    for _ in 0..n {
        tls.push(WssClient::auth(wss, config.clone(), TOKEN));
    }
    settle();
    let with_wss = rss(pid);
    let per_ws = (with_ws as f64 - base as f64) / n as f64;
    let per_wss = (with_wss as f64 - with_ws as f64) / n as f64;
    println!(
        "gateway RSS: {base} B with 20 WSS connections; +{n} WS: {with_ws} B ({per_ws:.0} B each); \
         +{n} WSS: {with_wss} B ({per_wss:.0} B each, {:.0} B more than WS)",
        per_wss - per_ws
    );
    assert!(per_wss > per_ws, "TLS state costs something");
    drop((warm, plain, tls));
}
