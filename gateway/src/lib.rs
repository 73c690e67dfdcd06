//! corecast's gateway: goim's comet as a shared-nothing, thread-per-core io_uring server.
//!
//! Data flows like this:
//! - **clients → shards**: every shard listens on the TCP and WebSocket ports, and the WSS
//!   port if configured (SO_REUSEPORT, so the kernel spreads new connections), and accepts them
//!   straight into io_uring direct descriptors ([`uring`]); WSS connections are WebSocket
//!   connections with a TLS session in front ([`tls`]). A shard reads client frames ([`session`]: auth, heartbeats, rooms,
//!   Sub/Unsub), answers them, and sends session events and upstream messages to the uplink.
//! - **dispatchers → clients**: pushes arrive on the internal link ([`link`], or in-process
//!   through [`Gateway::ingress`]); the [`ingress`] encodes each batch once and hands it to
//!   the shards through bounded lock-free inboxes ([`inbox`]); each shard writes it to its
//!   members ([`shard`]), one write per connection carrying everything queued meanwhile.
//!
//! Nothing on the per-message path is shared between shards. What is shared (the key table,
//! the room online counters) is touched on connect, auth, join, leave and close only.

pub mod admission;
pub mod config;
pub mod conn;
mod drain;
pub mod error;
mod fanout;
pub mod inbox;
pub mod ingress;
pub mod keys;
pub mod latency;
mod link;
pub mod metrics;
mod recovery;
pub mod rooms;
mod session;
pub mod shard;
pub mod signal;
pub mod stats;
pub mod tls;
pub mod uring;
pub mod wheel;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Receiver;
use protocol::link::{Body, Register};
use socket2::{Domain, Protocol, Socket, Type};

pub use config::Config;
pub use error::{Error, Result};
pub use ingress::Ingress;
pub use stats::Counters;

use crate::inbox::{Inbox, ShardMsg};
use crate::shard::{Shard, Shared};

/// Capacity of the queue from the shards to the dispatcher links (session events, upstream
/// messages): its slots are allocated up front, so it is sized for bursts a link drains, not
/// for a link that is down (overflow is counted in `uplink_dropped`).
const UPLINK_CAPACITY: usize = 1 << 14;

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    tcp_addr: SocketAddr,
    ws_addr: SocketAddr,
    wss_addr: Option<SocketAddr>,
    ingress: Ingress,
    uplink: Option<Receiver<Body>>,
    metrics_addr: Option<SocketAddr>,
}

fn listener(addr: SocketAddr, config: &Config) -> Result<Socket> {
    let err = |source| Error::Listen {
        addr: addr.to_string(),
        source,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    if config.engine.sndbuf > 0 {
        socket
            .set_send_buffer_size(config.engine.sndbuf)
            .map_err(err)?;
    }
    if config.engine.rcvbuf > 0 {
        socket
            .set_recv_buffer_size(config.engine.rcvbuf)
            .map_err(err)?;
    }
    socket.set_tcp_nodelay(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(config.engine.backlog).map_err(err)?;
    Ok(socket)
}

fn resolve(addr: &str, what: &str) -> Result<SocketAddr> {
    addr.parse()
        .map_err(|e| Error::Config(format!("{what} {addr:?} is not an ip:port address: {e}")))
}

impl Gateway {
    /// Starts one shard per configured core and begins accepting.
    pub fn start(config: Config) -> Result<Gateway> {
        config.validate()?;
        let cores: Vec<usize> = if config.cores.is_empty() {
            core_affinity::get_core_ids()
                .map(|ids| ids.into_iter().map(|c| c.id).collect())
                .unwrap_or_else(|| vec![0])
        } else {
            config.cores.clone()
        };
        let mut tcp_addr = resolve(&config.tcp_bind, "tcp_bind")?;
        let mut ws_addr = resolve(&config.ws_bind, "ws_bind")?;
        let mut wss_addr = if config.wss_bind.is_empty() {
            None
        } else {
            Some(resolve(&config.wss_bind, "wss_bind")?)
        };
        // The certificate is read before anything listens: a bad file stops the start.
        let tls = match wss_addr {
            Some(_) => Some(tls::Tls::load(&config.tls)?),
            None => None,
        };
        let bound = |s: &Socket, asked: SocketAddr| {
            s.local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .unwrap_or(asked)
        };
        // Bind every shard's listeners now: the first fixes an ephemeral port for the others.
        let mut listeners: Vec<(OwnedFd, OwnedFd, Option<OwnedFd>)> = Vec::new();
        for _ in &cores {
            let t = listener(tcp_addr, &config)?;
            let w = listener(ws_addr, &config)?;
            tcp_addr = bound(&t, tcp_addr);
            ws_addr = bound(&w, ws_addr);
            let s = match wss_addr {
                Some(addr) => {
                    let s = listener(addr, &config)?;
                    wss_addr = Some(bound(&s, addr));
                    Some(s.into())
                }
                None => None,
            };
            listeners.push((t.into(), w.into(), s));
        }
        let inboxes = cores
            .iter()
            .map(|_| Inbox::new(config.engine.inbox_capacity).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("creating a shard eventfd", e))?;
        let (uplink_tx, uplink_rx) = crossbeam_channel::bounded(UPLINK_CAPACITY);
        if config.auth.mode == "open" {
            tracing::warn!(
                "auth mode is \"open\": any JSON token is accepted (goim's behaviour); set [auth] mode = \"hmac\" with secrets in production"
            );
        }
        let shared = Arc::new(Shared {
            admission: admission::Admission::new(&config.limits),
            auth: config.auth_mode(),
            slow: config.slow_consumer()?,
            keys: Default::default(),
            online: Default::default(),
            stats: cores.iter().map(|_| Default::default()).collect(),
            inboxes,
            uplink: uplink_tx,
            uplink_on: AtomicBool::new(!config.dispatchers.is_empty()),
            hub_dropped: AtomicU64::new(0),
            links_up: std::sync::atomic::AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
            tls,
            config,
        });
        // Shards build their rings on their own threads (the rings are single-issuer).
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<()>>(cores.len());
        let mut threads = Vec::new();
        for (id, (&core, (tcp, ws, wss))) in cores.iter().zip(listeners).enumerate() {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("corecast-shard-{id}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        tracing::warn!(shard = id, core, "could not pin the shard to its core");
                    }
                    match Shard::new(id, shared, tcp, ws, wss) {
                        Ok(shard) => {
                            let _ = ready.send(Ok(()));
                            shard.run();
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                })
                .map_err(|e| Error::io("spawning a shard thread", e))?;
            threads.push(t);
        }
        for _ in 0..threads.len() {
            let started = ready_rx
                .recv()
                .map_err(|_| Error::Config("a shard thread died while starting".into()))?;
            if let Err(e) = started {
                shared.stop.store(true, Ordering::Relaxed);
                for inbox in &shared.inboxes {
                    inbox.wake();
                }
                return Err(e);
            }
        }
        let ingress = Ingress {
            shared: shared.clone(),
        };
        let mut uplink = Some(uplink_rx);
        if !shared.config.dispatchers.is_empty() {
            let hub = link::Hub::start(uplink.take().expect("just set"), shared.clone());
            let id = if shared.config.id.is_empty() {
                hostname()
            } else {
                shared.config.id.clone()
            };
            let register = Register {
                gateway_id: id,
                addrs: shared.config.public_addrs.clone(),
                weight: shared.config.weight,
                conn_count: 0,
                ip_count: 0,
                offline: false,
                renew_ms: shared.config.renew_ms,
                ..Default::default()
            };
            for addr in &shared.config.dispatchers {
                link::spawn(addr.clone(), ingress.clone(), hub.clone(), register.clone());
            }
        }
        let metrics_addr = if shared.config.metrics_bind.is_empty() {
            None
        } else {
            match metrics::serve(&shared.config.metrics_bind, shared.clone(), ingress.clone()) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    for inbox in &shared.inboxes {
                        inbox.wake();
                    }
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        };
        tracing::info!(
            shards = threads.len(),
            tcp = %tcp_addr,
            ws = %ws_addr,
            wss = %wss_addr.map_or("off".to_string(), |a| a.to_string()),
            "gateway listening"
        );
        Ok(Gateway {
            shared,
            threads,
            tcp_addr,
            ws_addr,
            wss_addr,
            ingress,
            uplink,
            metrics_addr,
        })
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// The WSS listener's address, when `wss_bind` is set.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.wss_addr
    }

    /// Re-reads the WSS certificate and key files (SIGHUP). On success new handshakes use the
    /// new certificate and open connections are unaffected; on failure the current certificate
    /// keeps serving, and the error is logged, counted (`tls_reload_errors`) and returned.
    pub fn reload_tls(&self) -> Result<()> {
        match &self.shared.tls {
            Some(tls) => tls.reload(),
            None => Err(Error::Config(
                "no certificate to reload: wss_bind is not set".into(),
            )),
        }
    }

    /// Failed certificate reloads so far.
    pub fn tls_reload_errors(&self) -> u64 {
        self.shared.tls.as_ref().map_or(0, |t| t.reload_errors())
    }

    pub fn shards(&self) -> usize {
        self.threads.len()
    }

    /// Where pushes enter (in-process: `corecast up`, tests, benchmarks).
    pub fn ingress(&self) -> Ingress {
        self.ingress.clone()
    }

    /// What the shards send up (session events, upstream messages), when no dispatcher link is
    /// configured to take it. Taken once.
    pub fn take_uplink(&mut self) -> Option<Receiver<Body>> {
        let rx = self.uplink.take();
        if rx.is_some() {
            self.shared.uplink_on.store(true, Ordering::Relaxed);
        }
        rx
    }

    /// Each shard's counters.
    pub fn stats(&self) -> Vec<Counters> {
        self.shared.stats.iter().map(|s| s.read()).collect()
    }

    /// Counters summed over shards.
    pub fn total(&self) -> Counters {
        self.stats()
            .into_iter()
            .fold(Counters::default(), |a, b| a + b)
    }

    /// Session events and upstream messages that reached no dispatcher (no link up, or its
    /// queue full), counted here and in each shard's `upstream_dropped`.
    pub fn uplink_dropped(&self) -> u64 {
        self.shared.uplink_dropped()
    }

    /// Rooms with members on this gateway and their counts.
    pub fn room_counts(&self) -> Vec<(String, i32)> {
        self.shared.online.snapshot()
    }

    /// Stops accepting and closes connections in batches over the drain window; the shards
    /// exit when their last connection is gone ([`Gateway::wait`]).
    pub fn drain(&self) {
        self.shared.admission.set_draining();
        for inbox in &self.shared.inboxes {
            let mut msg = ShardMsg::Drain;
            while let Err(m) = inbox.push(msg) {
                msg = m;
                std::thread::yield_now();
            }
            inbox.wake();
        }
    }

    /// Waits for the shards to exit (after a drain).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stops at once, dropping connections.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for inbox in &self.shared.inboxes {
            inbox.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.halt();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "gateway".into())
}
