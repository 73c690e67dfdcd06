//! What the load tester's integration tests share: a real gateway started in-process on
//! ephemeral loopback ports, room pushes with seq bodies through its ingress, and a runner that
//! holds connections on another thread while the test drives the gateway.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway::{Config, Gateway};
use loadtest::{HoldOptions, HoldReport, Live, Target, Transport};
use protocol::batch::BatchBuilder;
use protocol::link::{Body, RoomBatch};

/// A gateway config on ephemeral loopback ports (as the gateway's own tests use).
pub fn config() -> Config {
    Config::loopback_ephemeral()
}

pub fn start(c: Config) -> Gateway {
    Gateway::start(c).expect("gateway starts")
}

pub fn tcp(gw: &Gateway, n: u32) -> Target {
    Target {
        transport: Transport::Tcp,
        addr: gw.tcp_addr(),
        connections: n,
    }
}

pub fn ws(gw: &Gateway, n: u32) -> Target {
    Target {
        transport: Transport::Ws,
        addr: gw.ws_addr(),
        connections: n,
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// One room push of these bodies (one inner frame each, op 1000) through the ingress.
pub fn push_bodies<B: AsRef<[u8]>>(gw: &Gateway, room: &str, bodies: impl IntoIterator<Item = B>) {
    let mut b = BatchBuilder::default();
    for body in bodies {
        b.push(1000, body.as_ref());
    }
    gw.ingress()
        .deliver(Body::RoomBatch(RoomBatch {
            id: 0,
            room: room.into(),
            frames: b.inner_frames().to_vec(),
        }))
        .expect("room batch accepted");
}

/// One room push of `seqs` as seq bodies.
pub fn push_seqs(gw: &Gateway, room: &str, seqs: impl IntoIterator<Item = u64>) {
    push_bodies(
        gw,
        room,
        seqs.into_iter()
            .map(|s| loadtest::sequence::body(s, now_us())),
    );
}

/// A hold running on its own thread.
pub struct Running {
    pub live: Arc<Live>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: JoinHandle<loadtest::Result<HoldReport>>,
}

pub fn spawn(opts: HoldOptions) -> Running {
    let live = opts.live.clone();
    let stop = opts.stop.clone();
    let handle = std::thread::spawn(move || loadtest::hold::run(opts));
    Running { live, stop, handle }
}

impl Running {
    /// Waits until `f` holds on the live counters, or panics after `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, f: impl Fn(&loadtest::Snapshot) -> bool) {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.live.snapshot();
            if f(&s) {
                return;
            }
            assert!(
                Instant::now() < end && !self.handle.is_finished(),
                "timed out waiting for {what}: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the hold to end by itself (its duration) and returns its report.
    pub fn join(self) -> HoldReport {
        self.handle.join().expect("hold thread").expect("hold runs")
    }

    /// Stops the hold and returns its report.
    pub fn finish(self) -> HoldReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("hold thread").expect("hold runs")
    }
}

/// Waits until `f` holds, or panics after `secs`.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
