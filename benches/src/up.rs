//! `corecast up` as a child process on ephemeral loopback ports, for the benchmark suite and
//! the root crate's tests: the configs are written to a directory, the addresses read from the
//! `corecast up:` line it prints on stderr (the rest of which is kept as its log), and the
//! process is killed by its PID when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

/// A running `corecast up`.
pub struct UpProcess {
    child: Child,
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub http: SocketAddr,
    log: Arc<Mutex<String>>,
}

/// The address after `after` in the `corecast up:` line.
fn field(line: &str, after: &str) -> anyhow::Result<SocketAddr> {
    let rest = line
        .split_once(after)
        .with_context(|| format!("no {after:?} in {line:?}"))?
        .1;
    let addr = rest.split([' ', '/']).next().unwrap_or_default();
    addr.parse()
        .with_context(|| format!("{addr:?} after {after:?} is not an address"))
}

impl UpProcess {
    /// Starts `bin up` with these configs (written into `dir`) and `RUST_LOG=rust_log`; returns
    /// once it printed its addresses (at most 30 s).
    pub fn start(
        bin: &Path,
        dir: &Path,
        gateway_toml: &str,
        dispatcher_toml: &str,
        rust_log: &str,
    ) -> anyhow::Result<UpProcess> {
        std::fs::create_dir_all(dir)?;
        let g = dir.join("gateway.toml");
        let d = dir.join("dispatcher.toml");
        std::fs::write(&g, gateway_toml)?;
        std::fs::write(&d, dispatcher_toml)?;
        let mut child = Command::new(bin)
            .arg("up")
            .arg("--gateway-config")
            .arg(&g)
            .arg("--dispatcher-config")
            .arg(&d)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} up", bin.display()))?;
        let stderr = child.stderr.take().context("corecast up's stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("corecast up:") {
                    let _ = tx.send(line.clone());
                }
                if let Ok(mut l) = l.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let unspecified = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut up = UpProcess {
            child,
            tcp: unspecified,
            ws: unspecified,
            http: unspecified,
            log,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow::anyhow!("corecast up did not start: {}", up.log()))?;
        up.tcp = field(&line, "clients on tcp ")?;
        up.ws = field(&line, "ws://")?;
        up.http = field(&line, "http://")?;
        Ok(up)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Kills it (by its PID) and reaps it.
    /// How the process ended, if it has (a crash, or the OOM killer: `signal: 9`).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
