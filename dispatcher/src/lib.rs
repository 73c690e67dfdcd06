//! corecast's dispatcher: goim's logic and job roles in one process.
//!
//! Data flows like this:
//! - **gateways → dispatcher**: every gateway dials every dispatcher ([`link`]) and registers;
//!   the [`cluster`] keeps its registration, renewals and room online counts; its session events
//!   feed the [`registry`] (key → gateway, mid → keys).
//! - **business server → queue** (logic role): the HTTP API ([`api`], goim's routes and
//!   envelope) resolves keys and mids through the registry, turns each push into goim's
//!   `PushMsg` and produces it to the [`queue`] (embedded channel, Kafka, NATS JetStream or
//!   Redis Streams); the call answers once the queue holds it.
//! - **queue → gateways** (job role): the [`job`] takes messages off the queue in order, batches
//!   room messages ([`batcher`]), splits broadcast speed over gateways, and hands each push to
//!   its gateway's [`outbox`], which sends it down the link and holds it until the gateway
//!   acknowledges it (resending after a re-dial). The message's completion token is released
//!   only then, which is when the queue may forget the message (Kafka commits its offset, NATS
//!   and Redis acknowledge it).
//! - **room history**: the job numbers each room batch as it flushes it and keeps the last
//!   messages ([`history`]); a gateway's recover request is answered by the job in the same
//!   queue as the room's batches, so the client gets what it missed and then the live stream.

pub mod api;
pub mod batcher;
pub mod cluster;
pub mod config;
mod demo;
pub mod error;
pub mod histogram;
pub mod history;
pub mod job;
mod link;
pub mod metrics;
pub mod nodes;
pub mod outbox;
pub mod queue;
pub mod registry;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use config::Config;
pub use error::{Error, Result};

use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::nodes::Balancer;
use crate::queue::{Delivery, Queue};
use crate::registry::Registry;

/// Recover requests waiting for the job; a link reader past it waits (backpressure on that
/// gateway's link only).
const RECOVER_QUEUE: usize = 1024;

/// What every task of the dispatcher shares.
pub(crate) struct App {
    pub(crate) config: Config,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) balancer: Mutex<Balancer>,
    /// Link proof nonces seen within `links.auth_window_ms` (replays are refused).
    pub(crate) nonces: Mutex<link::Nonces>,
    /// Room history: written by the job as it flushes room batches, read by the job for
    /// gateways' recover requests and by `GET /goim/room/history`.
    pub(crate) history: Mutex<history::History>,
    /// Gateways' recover requests, answered by the job in order with its room batches.
    pub(crate) recover: mpsc::Sender<(String, protocol::link::RecoverRequest)>,
}

/// A running dispatcher.
pub struct Dispatcher {
    runtime: Option<tokio::runtime::Runtime>,
    /// Tells the HTTP server to stop taking requests.
    closing: tokio::sync::watch::Sender<bool>,
    http_addr: SocketAddr,
    link_addr: SocketAddr,
    app: Arc<App>,
}

fn bind(addr: &str) -> Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    l.set_nonblocking(true).map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    Ok(l)
}

impl Dispatcher {
    /// Binds the HTTP and link ports, connects the queue and registry backends, and starts
    /// serving on a runtime of its own.
    pub fn start(config: Config) -> Result<Dispatcher> {
        config.validate()?;
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        if config.threads > 0 {
            rt.worker_threads(config.threads);
        }
        let runtime = rt
            .thread_name("corecast-dispatcher")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let http = bind(&config.http_bind)?;
        let link = bind(&config.link_bind)?;
        let http_addr = http.local_addr().map_err(Error::Runtime)?;
        let link_addr = link.local_addr().map_err(Error::Runtime)?;
        let metrics = Arc::new(Metrics::default());
        let (closing, mut closed) = tokio::sync::watch::channel(false);
        let app = runtime.block_on(async {
            let (queue, deliveries) = queue_backend(&config, &metrics).await?;
            let registry = registry_backend(&config).await?;
            let cluster = Arc::new(Cluster::new(config.links.clone(), metrics.clone()));
            let (recover, recover_rx) = mpsc::channel(RECOVER_QUEUE);
            let app = Arc::new(App {
                config: config.clone(),
                cluster,
                registry,
                queue,
                metrics,
                balancer: Mutex::new(Balancer::new()),
                nonces: Mutex::new(link::Nonces::default()),
                history: Mutex::new(history::History::new(&config.history)),
                recover,
            });
            let http = TcpListener::from_std(http).map_err(Error::Runtime)?;
            let link = TcpListener::from_std(link).map_err(Error::Runtime)?;
            tokio::spawn(link::serve(link, app.clone()));
            let router = api::router(app.clone());
            tokio::spawn(async move {
                let stop = async move {
                    let _ = closed.wait_for(|c| *c).await;
                };
                if let Err(e) = axum::serve(http, router).with_graceful_shutdown(stop).await {
                    tracing::error!("HTTP API stopped: {e}");
                }
            });
            tokio::spawn(sweep(app.clone()));
            tokio::spawn(start_job(deliveries, recover_rx, app.clone()));
            Ok::<_, Error>(app)
        })?;
        tracing::info!(
            "dispatcher {} serving goim's HTTP API on {http_addr}, gateway links on {link_addr} (queue {}, registry {})",
            config.name(),
            app.queue.backend(),
            app.registry.backend()
        );
        Ok(Dispatcher {
            runtime: Some(runtime),
            closing,
            http_addr,
            link_addr,
            app,
        })
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where gateways dial in.
    pub fn link_addr(&self) -> SocketAddr {
        self.link_addr
    }

    /// The counters (also served at `/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.app.metrics
    }

    /// The gateways currently registered.
    pub fn gateways(&self) -> Vec<cluster::GatewayInfo> {
        self.app.cluster.infos()
    }

    /// Stops serving: the HTTP API stops taking requests; with the embedded queue, what it
    /// accepted is delivered first (for up to `drain` while gateways acknowledge it; what is
    /// left is logged); then links drop and tasks end. A durable queue (Kafka, NATS, Redis)
    /// re-delivers what was not finished to the dispatchers that remain.
    pub fn stop_within(mut self, drain: Duration) {
        let _ = self.closing.send(true);
        let started = Instant::now();
        let mut left = self.app.queue.pending().unwrap_or(0);
        while left > 0 && started.elapsed() < drain {
            std::thread::sleep(Duration::from_millis(10));
            left = self.app.queue.pending().unwrap_or(0);
        }
        if left > 0 {
            tracing::warn!(
                "dispatcher stopping with {left} accepted pushes not yet acknowledged by gateways"
            );
        }
        // A leased queue hands its partitions over (waiting for what is in flight), so another
        // dispatcher reads them at once rather than when the leases expire.
        if let Some(rt) = &self.runtime {
            let (done, wait) = std::sync::mpsc::channel();
            let queue = self.app.queue.clone();
            rt.spawn(async move {
                queue.close().await;
                let _ = done.send(());
            });
            let left = drain
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(1));
            if wait.recv_timeout(left).is_err() {
                tracing::warn!("dispatcher stopping before its queue handed its partitions back");
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    /// [`Dispatcher::stop_within`] 5 seconds.
    pub fn stop(self) {
        self.stop_within(Duration::from_secs(5));
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn queue_backend(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<(Arc<dyn Queue>, mpsc::Receiver<Delivery>)> {
    let timed = |q: Arc<dyn Queue>| Arc::new(queue::timed::Timed::new(q, metrics.clone()));
    match config.queue.kind.as_str() {
        "embedded" => {
            let (q, rx) = queue::embedded::Embedded::new(config.queue.embedded.capacity);
            Ok((timed(Arc::new(q)), rx))
        }
        "kafka" => {
            let (q, rx) =
                queue::kafka::Kafka::connect(&config.queue.kafka, metrics.clone()).await?;
            Ok((timed(Arc::new(q)), rx))
        }
        "nats" => {
            let (q, rx) = queue::nats::Nats::connect(&config.queue.nats, metrics.clone()).await?;
            Ok((timed(Arc::new(q)), rx))
        }
        "redis" => {
            let (q, rx) =
                queue::redis::RedisQueue::connect(&config.queue.redis, metrics.clone()).await?;
            Ok((timed(Arc::new(q)), rx))
        }
        other => Err(Error::Config(format!(
            "queue.kind {other:?} is not available in this build"
        ))),
    }
}

async fn registry_backend(config: &Config) -> Result<Arc<dyn Registry>> {
    match config.registry.kind.as_str() {
        "memory" => Ok(Arc::new(registry::memory::Memory::default())),
        "redis" => Ok(Arc::new(
            registry::redis::connect(&config.registry.redis).await?,
        )),
        other => Err(Error::Config(format!(
            "registry.kind {other:?} is not available in this build"
        ))),
    }
}

/// Removes gateways that stopped renewing or did not re-dial in time, with their sessions.
async fn sweep(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        for id in app.cluster.sweep(Instant::now()) {
            metrics::inc(&app.metrics.gateways_removed);
            tracing::warn!("gateway {id} removed: it stopped renewing or did not re-dial in time");
            if let Err(e) = app.registry.gateway_gone(&id).await {
                tracing::warn!("gateway {id}: its sessions could not be removed: {e}");
            }
        }
    }
}

/// Starts the job once a gateway has registered (or after the relink grace), so messages
/// waiting in a durable queue are not flushed to an empty cluster while gateways re-dial.
async fn start_job(
    deliveries: mpsc::Receiver<Delivery>,
    recover: mpsc::Receiver<(String, protocol::link::RecoverRequest)>,
    app: Arc<App>,
) {
    let grace = Duration::from_millis(app.config.links.relink_grace_ms);
    let started = Instant::now();
    while app.cluster.counts().0 == 0 && started.elapsed() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    job::run(deliveries, recover, app).await;
}
