//! Real `corecast` processes for the fault tests: dispatchers, gateways and load testers
//! started from `env!("CARGO_BIN_EXE_corecast")` with temporary TOML configs on loopback
//! ports, their logs kept in memory (shown when a test fails), killed by PID (SIGKILL on drop;
//! only the children a test started).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{TempDir, http, http_raw};

/// A child process with its stderr captured.
pub struct Proc {
    pub name: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// The first log line containing the readiness text.
    pub ready: String,
    dead: bool,
}

/// Lines kept per process (the last ones).
const KEEP: usize = 4_000;

impl Proc {
    /// Starts `corecast <args>` and waits (up to 30 s) for a stderr line containing `ready`
    /// (empty: do not wait).
    pub fn start(name: &str, args: &[String], ready: &str) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corecast"))
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("CORECAST_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let l = log.clone();
        let needle = ready.to_string();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && !needle.is_empty() && line.contains(&needle) {
                    sent = true;
                    let _ = tx.send(line.clone());
                }
                let mut l = l.lock().unwrap();
                if l.len() >= KEEP {
                    l.remove(0);
                }
                l.push(line);
            }
        });
        let mut p = Proc {
            name: name.to_string(),
            child,
            log,
            ready: String::new(),
            dead: false,
        };
        if !ready.is_empty() {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => p.ready = line,
                Err(_) => panic!("{name} did not log {ready:?}; log:\n{}", p.log()),
            }
        }
        p
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        if !self.dead {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.dead = true;
        }
    }

    /// Sends `sig` to this child (by its PID).
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling a child this test spawned and has not reaped.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the child to exit, up to `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.dead = true;
                return status;
            }
            assert!(
                Instant::now() < end,
                "{} did not exit within {within:?}; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of its log.
    pub fn log(&self) -> String {
        let l = self.log.lock().unwrap();
        let from = l.len().saturating_sub(60);
        l[from..].join("\n")
    }

    /// How many log lines contain `needle`.
    pub fn logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `corecast dispatcher` process.
pub struct DispatcherProc {
    pub p: Proc,
    pub http: SocketAddr,
    pub link: SocketAddr,
    _dir: TempDir,
}

impl DispatcherProc {
    /// Starts a dispatcher with this TOML (binds included) and reads the addresses it got.
    pub fn start(name: &str, toml: &str) -> DispatcherProc {
        let dir = TempDir::new(name);
        let path = dir.0.join("dispatcher.toml");
        std::fs::write(&path, toml).unwrap();
        let p = Proc::start(
            name,
            &[
                "dispatcher".into(),
                "--config".into(),
                path.display().to_string(),
            ],
            "serving goim's HTTP API on",
        );
        let after = |needle: &str| -> SocketAddr {
            let line = &p.ready;
            let rest = &line[line.find(needle).unwrap() + needle.len()..];
            rest.split([',', ' ', ')'])
                .find(|s| s.contains(':'))
                .unwrap()
                .trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ':')
                .parse()
                .unwrap()
        };
        DispatcherProc {
            http: after("HTTP API on "),
            link: after("gateway links on "),
            p,
            _dir: dir,
        }
    }

    pub fn get(&self, path: &str) -> Value {
        http(self.http, "GET", path, b"").1
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Value {
        http(self.http, "POST", path, body).1
    }

    /// A counter or gauge from its /metrics (0 when absent).
    pub fn metric(&self, name: &str) -> u64 {
        metric(&http_raw(self.http, "GET", "/metrics", b"").1, name)
    }

    /// Connections the dispatcher counts online (`/goim/online/total`).
    pub fn online(&self) -> u64 {
        self.get("/goim/online/total")["data"]["conn_count"]
            .as_u64()
            .unwrap_or(0)
    }

    /// The node list's `nodes` (`/goim/nodes/weighted`).
    pub fn weighted(&self) -> Vec<String> {
        self.get("/goim/nodes/weighted")["data"]["nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `/goim/nodes/instances`: (hostname, offline, conn_count) of each.
    pub fn instances(&self) -> Vec<(String, bool, u64)> {
        self.get("/goim/nodes/instances")["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i["hostname"].as_str().unwrap_or_default().to_string(),
                            i["metadata"]["offline"] == "true",
                            i["metadata"]["conn_count"]
                                .as_str()
                                .and_then(|c| c.parse().ok())
                                .unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The value of the first sample of `name` (summed over labels) in Prometheus text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, v) = l.rsplit_once(' ')?;
            let base = key.split('{').next()?;
            (base == name)
                .then(|| v.trim().parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// A `corecast gateway` process on fixed loopback ports (so a restart gets the same ones).
pub struct GatewayProc {
    pub p: Proc,
    pub id: String,
    pub tcp: SocketAddr,
    pub metrics: SocketAddr,
    toml: PathBuf,
    _dir: Arc<TempDir>,
}

impl GatewayProc {
    /// A gateway `id` on `core`, dialling `links`, renewing every `renew_ms`, advertising its
    /// TCP address, with `extra` TOML appended.
    pub fn start(
        id: &str,
        core: usize,
        links: &[SocketAddr],
        renew_ms: u64,
        extra: &str,
    ) -> GatewayProc {
        let (tcp, ws, metrics) = (super::free_port(), super::free_port(), super::free_port());
        let links: Vec<String> = links.iter().map(|l| format!("\"{l}\"")).collect();
        let toml = format!(
            "id = \"{id}\"\ncores = [{core}]\ntcp_bind = \"127.0.0.1:{tcp}\"\nws_bind = \"127.0.0.1:{ws}\"\n\
             metrics_bind = \"127.0.0.1:{metrics}\"\ndispatchers = [{}]\npublic_addrs = [\"127.0.0.1:{tcp}\"]\n\
             renew_ms = {renew_ms}\n{extra}",
            links.join(", ")
        );
        let dir = Arc::new(TempDir::new(id));
        let path = dir.0.join("gateway.toml");
        std::fs::write(&path, toml).unwrap();
        let p = Self::spawn(id, &path);
        GatewayProc {
            p,
            id: id.into(),
            tcp: format!("127.0.0.1:{tcp}").parse().unwrap(),
            metrics: format!("127.0.0.1:{metrics}").parse().unwrap(),
            toml: path,
            _dir: dir,
        }
    }

    fn spawn(id: &str, path: &std::path::Path) -> Proc {
        Proc::start(
            id,
            &[
                "gateway".into(),
                "--config".into(),
                path.display().to_string(),
            ],
            "gateway listening",
        )
    }

    /// Starts the same gateway again (same id, config and ports) after it died.
    pub fn restart(&mut self) {
        self.p.kill9();
        self.p = Self::spawn(&self.id, &self.toml);
    }

    /// A counter or gauge from its /metrics, summed over shards (None: no answer).
    pub fn metric(&self, name: &str) -> Option<u64> {
        let mut s =
            std::net::TcpStream::connect_timeout(&self.metrics, Duration::from_secs(1)).ok()?;
        use std::io::{Read, Write};
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(metric(&text, name))
    }
}

/// `corecast loadtest` as a child process writing its JSON report to a file.
pub struct LoadtestProc {
    pub p: Proc,
    report: PathBuf,
    _dir: TempDir,
}

impl LoadtestProc {
    /// Runs `corecast loadtest <args> -q --report FILE`.
    pub fn start(args: &[&str]) -> LoadtestProc {
        let dir = TempDir::new("loadtest");
        let report = dir.0.join("report.json");
        let mut all: Vec<String> = vec!["loadtest".into()];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend(["-q".into(), "--report".into(), report.display().to_string()]);
        LoadtestProc {
            p: Proc::start("loadtest", &all, ""),
            report,
            _dir: dir,
        }
    }

    /// Holds `conns` TCP connections in live://1, spread over the nodes the dispatcher at
    /// `http` lists (`--nodes`), on one thread, until [`LoadtestProc::finish`]; `extra` adds
    /// flags (`--reconnect`, ...).
    pub fn on_nodes(http: SocketAddr, conns: u64, extra: &[&str]) -> LoadtestProc {
        let nodes = format!("http://{http}");
        let conns = conns.to_string();
        let mut args = vec![
            "--nodes",
            &nodes,
            "--tcp",
            &conns,
            "--room",
            "live://1",
            "--duration",
            "300s",
            "--threads",
            "1",
        ];
        args.extend_from_slice(extra);
        LoadtestProc::start(&args)
    }

    /// Ends the hold (SIGINT: the run stops early with its report) and returns the report.
    pub fn finish(mut self) -> Value {
        self.p.signal(libc::SIGINT);
        let status = self.p.wait_exit(Duration::from_secs(30));
        let text = std::fs::read_to_string(&self.report).unwrap_or_else(|e| {
            panic!(
                "no report ({e}); loadtest exited {status:?}; log:\n{}",
                self.p.log()
            )
        });
        serde_json::from_str(&text).unwrap()
    }
}

/// Polls `cond` every `every` for up to `secs` seconds; returns how long it took.
pub fn wait_for(
    what: &str,
    secs: u64,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(every);
    }
    t.elapsed()
}
