//! One gateway's outbound queue: pushes waiting for the gateway's link, sent and not yet
//! acknowledged, resent after a re-dial. A task per gateway owns it; a writer task per link
//! does the socket writes, so a slow gateway never blocks the job or other gateways.
//!
//! Each push gets an id from a per-gateway counter. The gateway acknowledges ids in order, so an
//! ack of `n` completes every push up to `n` (a lost ack costs nothing). The queue is bounded
//! in messages and bytes; past either bound the oldest push is dropped, counted in
//! `gateway_buffer_dropped` and logged. When the gateway is removed, what is still unacknowledged
//! is counted in `gateway_removed_dropped`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::link::{self, Body, Broadcast, LinkMessage, PushKeys, RoomBatch, RoomHistory};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::config::LinksConfig;
use crate::metrics::{Metrics, inc};
use crate::queue::Done;

/// A push for one gateway, before it gets its id.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// A room batch: goim inner frames for every member of `room`.
    Room { room: String, frames: Bytes },
    /// Frames for these keys, if `op` is in each connection's watch set.
    Keys {
        keys: Vec<String>,
        op: i32,
        frames: Bytes,
    },
    /// Frames for every connection watching `op`, `speed` connections per second (0: no pacing).
    Broadcast { op: i32, speed: i32, frames: Bytes },
    /// The answer to a connection's recover request (see [`link::RoomHistory`]).
    History {
        conn_id: u64,
        room: String,
        status: i32,
        frames: Vec<Bytes>,
        newest: u32,
        detail: String,
    },
}

impl Outgoing {
    fn into_body(self, id: u64) -> Body {
        match self {
            Outgoing::Room { room, frames } => Body::RoomBatch(RoomBatch {
                id,
                room,
                frames: frames.to_vec(),
            }),
            Outgoing::Keys { keys, op, frames } => Body::PushKeys(PushKeys {
                id,
                keys,
                op,
                frames: frames.to_vec(),
            }),
            Outgoing::Broadcast { op, speed, frames } => Body::Broadcast(Broadcast {
                id,
                op,
                speed,
                frames: frames.to_vec(),
            }),
            Outgoing::History {
                conn_id,
                room,
                status,
                frames,
                newest,
                detail,
            } => Body::RoomHistory(RoomHistory {
                id,
                conn_id,
                room,
                status,
                frames: frames.concat(),
                newest,
                detail,
            }),
        }
    }
}

/// Control messages for a gateway's queue (unbounded: one per link event or ack, and acks are
/// bounded by the pushes in flight).
pub(crate) enum Ctl {
    Linked(OwnedWriteHalf),
    Unlinked,
    Ack(u64),
    /// An encoded message that needs no ack and is not resent (room count totals): written
    /// now if the link is up, dropped otherwise (the next one replaces it).
    Notice(Bytes),
}

/// The handle the cluster keeps for a gateway. Dropping it ends the task.
pub(crate) struct Outbox {
    pub(crate) push: mpsc::Sender<(Outgoing, Done)>,
    pub(crate) ctl: mpsc::UnboundedSender<Ctl>,
}

struct Item {
    id: u64,
    bytes: Bytes,
    _done: Done,
}

/// Largest chunk handed to the writer at once.
const CHUNK: usize = 256 * 1024;

impl Outbox {
    /// Starts the task for gateway `id`.
    pub(crate) fn spawn(id: String, cfg: LinksConfig, metrics: Arc<Metrics>) -> Outbox {
        let (push, push_rx) = mpsc::channel(1024);
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(id, cfg, metrics, push_rx, ctl_rx));
        Outbox { push, ctl }
    }
}

async fn run(
    gateway: String,
    cfg: LinksConfig,
    metrics: Arc<Metrics>,
    mut push_rx: mpsc::Receiver<(Outgoing, Done)>,
    mut ctl_rx: mpsc::UnboundedReceiver<Ctl>,
) {
    let mut items: VecDeque<Item> = VecDeque::new();
    let mut held_bytes = 0usize;
    let mut sent = 0usize;
    let mut next_id = 1u64;
    let mut writer: Option<mpsc::Sender<Bytes>> = None;
    let mut dropped = 0u64;
    loop {
        let want_write = writer.is_some() && sent < items.len();
        let w = writer.clone();
        tokio::select! {
            biased;
            ctl = ctl_rx.recv() => match ctl {
                None => break,
                Some(Ctl::Linked(half)) => {
                    let (tx, rx) = mpsc::channel(4);
                    let stall = Duration::from_millis(cfg.renew_timeout_ms);
                    tokio::spawn(write_loop(gateway.clone(), half, rx, stall));
                    writer = Some(tx);
                    // Everything not acknowledged goes again, in order, on the new link.
                    sent = 0;
                }
                Some(Ctl::Unlinked) => writer = None,
                Some(Ctl::Notice(bytes)) => {
                    if let Some(w) = &writer {
                        let _ = w.try_send(bytes);
                    }
                }
                Some(Ctl::Ack(id)) => {
                    while items.front().is_some_and(|i| i.id <= id) {
                        if let Some(i) = items.pop_front() {
                            held_bytes -= i.bytes.len();
                        }
                        sent = sent.saturating_sub(1);
                        inc(&metrics.gateway_acks);
                    }
                }
            },
            push = push_rx.recv() => match push {
                None => break,
                Some((out, done)) => {
                    let id = next_id;
                    next_id += 1;
                    let mut buf = BytesMut::new();
                    link::encode(&LinkMessage::from(out.into_body(id)), &mut buf);
                    held_bytes += buf.len();
                    items.push_back(Item { id, bytes: buf.freeze(), _done: done });
                    while items.len() > cfg.buffer_messages || held_bytes > cfg.buffer_bytes {
                        let Some(old) = items.pop_front() else { break };
                        held_bytes -= old.bytes.len();
                        sent = sent.saturating_sub(1);
                        inc(&metrics.gateway_buffer_dropped);
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!(
                                "gateway {gateway}: push buffer full ({} messages, {held_bytes} bytes); dropped the oldest push ({dropped} so far)",
                                items.len()
                            );
                        }
                    }
                }
            },
            permit = async move {
                match w {
                    Some(w) => w.reserve_owned().await.ok(),
                    None => std::future::pending().await,
                }
            }, if want_write => match permit {
                Some(permit) => {
                    let mut chunk = BytesMut::new();
                    while sent < items.len() && chunk.len() < CHUNK {
                        chunk.extend_from_slice(&items[sent].bytes);
                        sent += 1;
                    }
                    permit.send(chunk.freeze());
                }
                None => writer = None,
            },
        }
    }
    if !items.is_empty() {
        metrics
            .gateway_removed_dropped
            .fetch_add(items.len() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            "gateway {gateway} removed with {} unacknowledged pushes; they are dropped",
            items.len()
        );
    }
}

/// Writes chunks to one link. A gateway that stops reading for `stall` loses the link (the
/// pushes stay queued for a re-dial).
async fn write_loop(
    gateway: String,
    mut half: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    stall: Duration,
) {
    while let Some(chunk) = rx.recv().await {
        match tokio::time::timeout(stall, half.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!("link to gateway {gateway}: write failed: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    "link to gateway {gateway}: no progress writing for {stall:?}; dropping the link"
                );
                return;
            }
        }
    }
}
