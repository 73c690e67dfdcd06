//! The dispatcher's side of the internal link: gateways dial in, send `Register` first, then
//! renewals, room counts, session events, upstream client messages and acks; pushes go down
//! through the gateway's outbox (`outbox`).
//!
//! A link that sends anything else first, a message that does not decode, one over
//! `links.max_message_bytes`, or a message only dispatchers send, is closed, counted in
//! `links_rejected` and logged with the peer's address; nothing else is affected.
//!
//! With `link_secrets` set, the `Register` must carry a proof of one of them (see
//! `protocol::link`): a missing, wrong, stale or replayed proof gets a `Refused` message naming
//! the cause, then the link closes; it is counted in `links_refused` and logged, and the gateway
//! is not registered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use protocol::link::{self, Body, LinkMessage, Refused, Register, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use crate::App;
use crate::metrics::inc;

/// Accepts gateway links until the runtime stops.
pub(crate) async fn serve(listener: TcpListener, app: Arc<App>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let app = app.clone();
                tokio::spawn(async move {
                    if let Err(reason) = handle(stream, &app).await {
                        inc(&app.metrics.links_rejected);
                        tracing::warn!("gateway link from {peer} closed: {reason}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("link accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads more into `buf`. `Ok(false)`: the peer closed cleanly between messages.
async fn fill(rd: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<bool, String> {
    buf.reserve(64 * 1024);
    match rd.read_buf(buf).await {
        Ok(0) if buf.is_empty() => Ok(false),
        Ok(0) => Err(format!(
            "closed in the middle of a message ({} bytes)",
            buf.len()
        )),
        Ok(_) => Ok(true),
        Err(e) => Err(format!("read failed: {e}")),
    }
}

/// Reads into `buf` until one message is whole. `Ok(None)`: the peer closed cleanly.
async fn read_one(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Body>, String> {
    loop {
        if let Some(body) = link::decode(buf, max).map_err(|e| e.to_string())? {
            return Ok(Some(body));
        }
        if !fill(rd, buf).await? {
            return Ok(None);
        }
    }
}

/// Link proof nonces seen lately, with when they expire from memory.
#[derive(Default)]
pub(crate) struct Nonces {
    seen: HashMap<Vec<u8>, Instant>,
}

impl Nonces {
    /// Records `nonce` for `window`; false if it was already there (a replay).
    fn fresh(&mut self, nonce: &[u8], window: Duration, now: Instant) -> bool {
        self.seen.retain(|_, until| *until > now);
        if self.seen.contains_key(nonce) {
            return false;
        }
        self.seen.insert(nonce.to_vec(), now + window);
        true
    }
}

/// Checks a Register's link proof against `link_secrets`; `Err` is the reason to refuse.
fn check_proof(reg: &Register, app: &App) -> Result<(), String> {
    let secrets = &app.config.link_secrets;
    if secrets.is_empty() {
        return Ok(());
    }
    if reg.auth_proof.is_empty() {
        return Err(
            "no link proof: this dispatcher requires a link secret (set link_secret in the gateway's config to one of the dispatcher's link_secrets)"
                .into(),
        );
    }
    if !reg.proof_matches(secrets) {
        return Err(
            "wrong link proof: the gateway's link_secret matches none of the dispatcher's link_secrets"
                .into(),
        );
    }
    let window = Duration::from_millis(app.config.links.auth_window_ms);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let skew = now_ms.abs_diff(reg.auth_unix_ms);
    if skew > window.as_millis() as u64 {
        return Err(format!(
            "stale link proof: signed {:.1} s away from the dispatcher's clock (links.auth_window_ms allows {:.1} s): check the hosts' clocks",
            skew as f64 / 1000.0,
            window.as_secs_f64()
        ));
    }
    let mut nonces = app.nonces.lock().unwrap_or_else(|p| p.into_inner());
    if !nonces.fresh(&reg.auth_nonce, window * 2, Instant::now()) {
        return Err("replayed link proof: its nonce was already used".into());
    }
    Ok(())
}

/// Tells the gateway why it is refused, then lets it read that before the link closes (closing
/// with unread data would reset the connection and could lose the reason).
async fn refuse(mut wr: OwnedWriteHalf, rd: &mut OwnedReadHalf, reason: &str) {
    let mut out = BytesMut::new();
    link::encode(
        &LinkMessage::from(Body::Refused(Refused {
            reason: reason.to_string(),
        })),
        &mut out,
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        wr.write_all(&out).await?;
        wr.shutdown().await?;
        // Drain what the gateway sent after its Register until it closes.
        let mut sink = vec![0u8; 16 * 1024];
        while rd.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

async fn handle(stream: TcpStream, app: &Arc<App>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let (mut rd, wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let max = app.config.links.max_message_bytes;
    let wait = Duration::from_millis(app.config.links.register_timeout_ms);
    let reg: Register = match tokio::time::timeout(wait, read_one(&mut rd, &mut buf, max)).await {
        Err(_) => return Err(format!("no Register within {} ms", wait.as_millis())),
        Ok(Ok(None)) => {
            // A connection that closed without a byte (a port probe) is no protocol error.
            tracing::debug!("a link connection closed before registering");
            return Ok(());
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Some(Body::Register(reg)))) => reg,
        Ok(Ok(Some(other))) => {
            return Err(format!(
                "first message was {}, expected Register",
                other.name()
            ));
        }
    };
    if reg.gateway_id.is_empty() {
        return Err("Register has an empty gateway_id".into());
    }
    if let Err(reason) = check_proof(&reg, app) {
        inc(&app.metrics.links_refused);
        tracing::warn!("gateway {} from {peer} refused: {reason}", reg.gateway_id);
        refuse(wr, &mut rd, &reason).await;
        return Ok(());
    }
    let id = reg.gateway_id.clone();
    let epoch = app.cluster.register(&reg, wr);
    inc(&app.metrics.links_registered);
    // The gateway announces every session it holds right after registering; what the registry
    // knew of it may be stale (events are lost while a link is down), so start afresh.
    if let Err(e) = app.registry.gateway_gone(&id).await {
        tracing::warn!("gateway {id}: stale sessions could not be cleared: {e}");
    }
    tracing::info!(
        "gateway {id} linked (addrs {:?}, weight {}, {} connections)",
        reg.addrs,
        reg.weight,
        reg.conn_count
    );
    let result = read_loop(&mut rd, &mut buf, app, &id, epoch).await;
    app.cluster.unlinked(&id, epoch);
    if result.is_ok() {
        tracing::info!("gateway {id} link closed");
    }
    result.map_err(|e| format!("gateway {id}: {e}"))
}

async fn read_loop(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    app: &Arc<App>,
    id: &str,
    epoch: u64,
) -> Result<(), String> {
    let max = app.config.links.max_message_bytes;
    let mut sessions: Vec<Session> = Vec::new();
    loop {
        // Take every whole message already read; session events are applied as one batch.
        let mut bodies = Vec::new();
        loop {
            match link::decode(buf, max) {
                Ok(Some(body)) => bodies.push(body),
                Ok(None) => break,
                Err(e) => {
                    // Apply what came before the bad message, then close.
                    apply(app, id, epoch, bodies, &mut sessions).await?;
                    return Err(e.to_string());
                }
            }
        }
        apply(app, id, epoch, bodies, &mut sessions).await?;
        // Wake up now and then to notice a link that stopped being the gateway's.
        let read = tokio::time::timeout(Duration::from_secs(1), fill(rd, buf)).await;
        if !app.cluster.is_current(id, epoch) {
            tracing::info!("gateway {id}: link closed (the gateway was removed or re-linked)");
            return Ok(());
        }
        match read {
            Err(_) | Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
        }
    }
}

async fn apply(
    app: &Arc<App>,
    id: &str,
    epoch: u64,
    bodies: Vec<Body>,
    sessions: &mut Vec<Session>,
) -> Result<(), String> {
    if !bodies.is_empty() && !app.cluster.is_current(id, epoch) {
        // Removed, or superseded by a newer link: nothing from this link applies any more
        // (the newer link announces the gateway's sessions itself).
        return Ok(());
    }
    for body in bodies {
        if let Body::Session(s) = body {
            sessions.push(s);
            continue;
        }
        flush_sessions(app, id, sessions).await;
        match body {
            Body::Renew(r) => app.cluster.renew(id, epoch, &r),
            Body::RoomCounts(rc) => {
                // goim's RenewOnline: store this gateway's counts, answer with the cluster's
                // totals for the same rooms (its heartbeat replies carry them).
                let rooms: Vec<String> = rc.counts.keys().cloned().collect();
                app.cluster.room_counts(id, epoch, rc.counts);
                let totals = app.cluster.totals_for(rooms.iter());
                app.cluster.notify(
                    id,
                    Body::RoomCounts(protocol::link::RoomCounts { counts: totals }),
                );
            }
            Body::Ack(a) => app.cluster.ack(id, a.id),
            // Answered by the job, in order with the room batches it sends this gateway.
            Body::RecoverRequest(r) => {
                if app.recover.send((id.to_string(), r)).await.is_err() {
                    return Err("recover request after the job stopped".into());
                }
            }
            Body::Upstream(u) => {
                inc(&app.metrics.upstream_messages);
                tracing::debug!(
                    "upstream from gateway {id}: mid {} key {} op {} ({} bytes)",
                    u.mid,
                    u.key,
                    u.op,
                    u.body.len()
                );
            }
            other => {
                return Err(format!(
                    "sent {}, which a gateway never sends on a registered link",
                    other.name()
                ));
            }
        }
    }
    flush_sessions(app, id, sessions).await;
    Ok(())
}

async fn flush_sessions(app: &Arc<App>, id: &str, sessions: &mut Vec<Session>) {
    if sessions.is_empty() {
        return;
    }
    app.metrics
        .session_events
        .fetch_add(sessions.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let wait = Duration::from_millis(app.config.http.request_timeout_ms);
    let outcome = tokio::time::timeout(wait, app.registry.apply(id, sessions)).await;
    let err = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {} ms", wait.as_millis())),
    };
    if let Some(err) = err {
        app.metrics
            .session_errors
            .fetch_add(sessions.len() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            "gateway {id}: {} session events not applied: {err}",
            sessions.len()
        );
    }
    sessions.clear();
}
