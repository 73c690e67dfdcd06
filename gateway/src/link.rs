//! The gateway's side of the internal link: one thread per configured dispatcher dials it,
//! registers, renews the registration every few seconds, forwards what the shards send up
//! (session events, upstream client messages), hands pushes to the ingress and acknowledges
//! them. A link that drops is dialled again with exponential backoff.
//!
//! With `link_secret` set, every Register carries a fresh proof of it (`Register::prove`); a
//! dispatcher that refuses the proof sends `Refused` with its reason, which is logged as the
//! cause of the link's end before the next dial.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, bounded};
use protocol::link::{self, Ack, Body, LinkMessage, Register, Renew, RoomCounts, Session};

use crate::ingress::Ingress;
use crate::shard::Shared;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Fans the shards' uplink out to every connected dispatcher link. What no link takes (none
/// connected, or a link's queue full) is counted in `Shared::hub_dropped`.
pub(crate) struct Hub {
    links: std::sync::Mutex<Vec<Sender<Body>>>,
    shared: Arc<Shared>,
}

impl Hub {
    pub(crate) fn start(uplink: Receiver<Body>, shared: Arc<Shared>) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            links: std::sync::Mutex::new(Vec::new()),
            shared: shared.clone(),
        });
        let h = hub.clone();
        std::thread::Builder::new()
            .name("corecast-uplink".into())
            .spawn(move || {
                for body in uplink {
                    let mut links = h.links.lock().unwrap_or_else(|p| p.into_inner());
                    let mut taken = false;
                    links.retain(|tx| match tx.try_send(body.clone()) {
                        Ok(()) => {
                            taken = true;
                            true
                        }
                        Err(crossbeam_channel::TrySendError::Full(_)) => true,
                        Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
                    });
                    shared.links_up.store(links.len(), Ordering::Relaxed);
                    if !taken {
                        shared.hub_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .expect("spawning a thread");
        hub
    }

    fn subscribe(&self) -> Receiver<Body> {
        let (tx, rx) = bounded(65_536);
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.push(tx);
        self.shared.links_up.store(links.len(), Ordering::Relaxed);
        rx
    }
}

/// Dials one dispatcher for the life of the gateway.
pub(crate) fn spawn(addr: String, ingress: Ingress, hub: Arc<Hub>, register: Register) {
    std::thread::Builder::new()
        .name(format!("corecast-link-{addr}"))
        .spawn(move || {
            let mut backoff = Duration::from_millis(100);
            while !ingress.shared.stop.load(Ordering::Relaxed) {
                match run_link(&addr, &ingress, &hub, &register) {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => tracing::warn!(
                        "link to dispatcher {addr}: {e}; dialling again in {backoff:?}"
                    ),
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        })
        .expect("spawning a thread");
}

fn send(stream: &mut TcpStream, body: Body) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    link::encode(&LinkMessage::from(body), &mut buf);
    stream.write_all(&buf)
}

fn run_link(addr: &str, ingress: &Ingress, hub: &Hub, register: &Register) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    // Subscribe before registering: whatever the shards send up once the dispatcher knows this
    // gateway must reach it.
    let up = hub.subscribe();
    let mut reg = register.clone();
    reg.conn_count = conn_count(ingress);
    reg.ip_count = ingress.shared.admission.ip_count();
    reg.offline = ingress.shared.admission.offline();
    let secret = &ingress.shared.config.link_secret;
    if !secret.is_empty() {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        reg.prove(secret.as_bytes(), unix_ms, *uuid::Uuid::new_v4().as_bytes());
    }
    send(&mut writer, Body::Register(reg))?;
    // The dispatcher forgets this gateway's sessions when it registers (it may have missed
    // events while unlinked); tell it every session held now. Events that raced with the
    // snapshot also arrive live, and both orders resolve the same way (online is idempotent,
    // an offline names its connection).
    let sessions = send_sessions(&mut writer, ingress)?;
    tracing::info!("linked to dispatcher {addr} ({sessions} sessions announced)");
    let (ack_tx, ack_rx) = bounded::<u64>(65_536);
    let stop_writer = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = stop_writer.clone();
    let ing = ingress.clone();
    let writer_thread = std::thread::spawn(move || -> std::io::Result<()> {
        let renew_every = Duration::from_millis(ing.shared.config.renew_ms);
        let mut last_renew = Instant::now();
        let mut offline = ing.shared.admission.offline();
        while !stop.load(Ordering::Relaxed) {
            if ing.shared.stop.load(Ordering::Relaxed) {
                // The gateway stopped: close the link, which also ends the reader.
                let _ = writer.shutdown(std::net::Shutdown::Both);
                break;
            }
            crossbeam_channel::select! {
                recv(up) -> m => if let Ok(body) = m { send(&mut writer, body)? },
                recv(ack_rx) -> m => if let Ok(id) = m { send(&mut writer, Body::Ack(Ack { id }))? },
                default(renew_every.min(Duration::from_millis(200))) => {}
            }
            // Draining or over the memory ceiling: say so at once, not at the next renewal, so
            // nodes/weighted stops sending clients here.
            let now_offline = ing.shared.admission.offline();
            if last_renew.elapsed() >= renew_every || now_offline != offline {
                last_renew = Instant::now();
                offline = now_offline;
                send(
                    &mut writer,
                    Body::Renew(Renew {
                        conn_count: conn_count(&ing),
                        ip_count: ing.shared.admission.ip_count(),
                        offline,
                    }),
                )?;
                // goim's RenewOnline: this gateway's members per room (rooms with members).
                let counts = ing.shared.online.snapshot().into_iter().collect();
                send(&mut writer, Body::RoomCounts(RoomCounts { counts }))?;
            }
        }
        Ok(())
    });
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut refused: Option<String> = None;
    let result = loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut failed = None;
        loop {
            match link::decode(&mut buf, link::MAX_LINK_MESSAGE) {
                Ok(Some(Body::Refused(r))) => {
                    refused = Some(r.reason);
                    break;
                }
                Ok(Some(body)) => match ingress.deliver(body) {
                    Ok(0) => {}
                    Ok(id) => {
                        let _ = ack_tx.try_send(id);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(reason) = refused.take() {
            break Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("the dispatcher refused this gateway: {reason}"),
            ));
        }
        if let Some(e) = failed {
            break Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad link message: {e}"),
            ));
        }
    };
    stop_writer.store(true, Ordering::Relaxed);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = writer_thread.join();
    result
}

/// Sends an online `Session` for every authenticated connection; returns how many.
fn send_sessions(stream: &mut TcpStream, ingress: &Ingress) -> std::io::Result<usize> {
    let snapshot = ingress.shared.keys.snapshot();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    for (key, owner, mid) in &snapshot {
        let body = Body::Session(Session {
            online: true,
            mid: *mid,
            key: key.to_string(),
            rooms: Vec::new(),
            platform: String::new(),
            conn_id: crate::shard::conn_id(owner.shard, owner.handle, owner.gen_),
        });
        link::encode(&LinkMessage::from(body), &mut buf);
        if buf.len() >= 60 * 1024 {
            stream.write_all(&buf)?;
            buf.clear();
        }
    }
    stream.write_all(&buf)?;
    Ok(snapshot.len())
}

fn conn_count(ingress: &Ingress) -> u64 {
    ingress
        .shared
        .stats
        .iter()
        .map(|s| s.read().authenticated)
        .sum()
}
