//! goim's job role: takes messages off the queue in order and sends them to the gateways.
//!
//! - ROOM messages go through the room [`Batcher`]; a flushed batch goes to every registered
//!   gateway (a gateway without members of the room ignores it, as goim's comets do).
//! - PUSH messages (keys on one gateway, resolved by the logic role) go to that gateway only.
//! - BROADCAST messages go to every gateway, `speed` split over them in proportion to their
//!   connection counts (evenly when none has reported any; never a division by zero).
//!
//! - Room batches are numbered as they are flushed (each message's frame gets the room's next
//!   offset as its `seq`) and kept in the room [`History`](crate::history::History); a
//!   gateway's recover request is answered here, between room batches, so the answer covers
//!   exactly the batches queued to that gateway before it.
//!
//! Each push holds the message's completion token until its gateway acknowledges it, so the
//! queue learns a message is finished only once every gateway concerned has it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::frame;
use protocol::link::{RecoverRequest, history_status};
use protocol::push::{PushMsg, PushType};
use tokio::sync::mpsc;

use crate::App;
use crate::batcher::{Batcher, Flush};
use crate::history::Since;
use crate::metrics::inc;
use crate::outbox::Outgoing;
use crate::queue::{Delivery, Done};

/// Runs until the queue closes.
pub(crate) async fn run(
    mut rx: mpsc::Receiver<Delivery>,
    mut recover: mpsc::Receiver<(String, RecoverRequest)>,
    app: Arc<App>,
) {
    let cfg = &app.config.job;
    let linger = Duration::from_millis(cfg.room_linger_ms);
    let mut batcher = Batcher::new(cfg.room_batch, cfg.room_batch_bytes, linger);
    let mut assignment = 0;
    loop {
        follow_assignment(&app, &mut assignment);
        let deadline = batcher.next_deadline();
        let next = tokio::select! {
            d = rx.recv() => match d {
                Some(d) => Some(d),
                None => break,
            },
            Some((gateway, req)) = recover.recv() => {
                follow_assignment(&app, &mut assignment);
                answer_recover(&app, &gateway, req).await;
                None
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => None,
        };
        if let Some(d) = next {
            handle(&app, &mut batcher, d).await;
            // Take whatever else is already queued before flushing on time.
            while let Ok(d) = rx.try_recv() {
                handle(&app, &mut batcher, d).await;
                if batcher.active() > 4096 {
                    break;
                }
            }
        }
        let flushes = if linger.is_zero() {
            batcher.all()
        } else {
            batcher.due(Instant::now())
        };
        for f in flushes {
            send_room(&app, f).await;
        }
    }
    for f in batcher.all() {
        send_room(&app, f).await;
    }
}

fn inner_frame(op: i32, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(frame::HEADER_LEN + body.len());
    frame::encode(&mut out, frame::PUSH_VER, op, 0, body);
    Bytes::from(out)
}

async fn handle(app: &Arc<App>, batcher: &mut Batcher, d: Delivery) {
    inc(&app.metrics.queue_consumed);
    let Delivery { msg, done } = d;
    let kind = match msg.kind() {
        Ok(k) => k,
        Err(e) => {
            inc(&app.metrics.queue_bad_messages);
            tracing::warn!("queue message skipped: {e}");
            return;
        }
    };
    match kind {
        PushType::Room => {
            if let Some(f) = batcher.add(&msg.room, msg.operation, &msg.msg, done, Instant::now()) {
                send_room(app, f).await;
            }
        }
        PushType::Push => send_keys(app, msg, done).await,
        PushType::Broadcast => send_broadcast(app, msg, done).await,
    }
}

/// Forgets the room history when the queue's partitions moved since the last look.
fn follow_assignment(app: &App, seen: &mut u64) {
    let now = app
        .metrics
        .queue_assignment_changes
        .load(std::sync::atomic::Ordering::Relaxed);
    if now != *seen {
        *seen = now;
        app.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Answers a gateway's recover request from the history. It goes into the gateway's queue
/// behind every room batch sent so far, all of whose offsets the answer covers.
async fn answer_recover(app: &Arc<App>, gateway: &str, req: RecoverRequest) {
    let since = app
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .since(&req.room, req.since);
    // What the gateway takes for the connection, and what one link message carries.
    let link = protocol::link::MAX_LINK_MESSAGE / 2;
    let limit = match req.max_bytes as usize {
        0 => link,
        n => n.min(link),
    };
    let (status, frames, newest, detail) = match since {
        Since::Found { frames, newest } => {
            let bytes: usize = frames.iter().map(|f| f.len()).sum();
            if bytes > limit {
                let detail = format!(
                    "the {} missed messages of room {} are {bytes} bytes, more than the {limit} the gateway takes for one connection (half its limits.outbound_cap_bytes); GET /goim/room/history serves them",
                    frames.len(),
                    req.room
                );
                (history_status::TOO_OLD, Vec::new(), newest, detail)
            } else {
                (history_status::FOUND, frames, newest, String::new())
            }
        }
        Since::TooOld { detail, newest } => (history_status::TOO_OLD, Vec::new(), newest, detail),
        Since::Unknown => (history_status::UNKNOWN, Vec::new(), 0, String::new()),
    };
    app.metrics.recover(status);
    let out = Outgoing::History {
        conn_id: req.conn_id,
        room: req.room,
        status,
        frames,
        newest,
        detail,
    };
    app.cluster.send(gateway, out, Done::none()).await;
}

async fn send_room(app: &Arc<App>, f: Flush) {
    // Number the messages with the room's offsets and keep them in its history.
    let numbered = app
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record(&f.room, f.frames, Instant::now());
    let frames = match numbered {
        Ok(frames) => frames,
        Err(e) => {
            // The batcher encoded these frames itself: this is a bug, not bad input.
            tracing::error!("room {} batch not numbered, dropped: {e}", f.room);
            return;
        }
    };
    let dones = f.dones;
    // One token for the whole batch: it releases the messages' tokens when every gateway
    // has acknowledged the batch.
    let done = Done::on_complete(move || drop(dones));
    app.metrics
        .room_messages
        .fetch_add(f.count as u64, std::sync::atomic::Ordering::Relaxed);
    app.metrics.room_batch_messages.observe(f.count as u64);
    for (gateway, _) in app.cluster.targets() {
        let out = Outgoing::Room {
            room: f.room.clone(),
            frames: frames.clone(),
        };
        if app.cluster.send(&gateway, out, done.clone()).await {
            inc(&app.metrics.room_batches);
        }
    }
}

async fn send_keys(app: &Arc<App>, msg: PushMsg, done: Done) {
    let out = Outgoing::Keys {
        frames: inner_frame(msg.operation, &msg.msg),
        keys: msg.keys,
        op: msg.operation,
    };
    if app.cluster.send(&msg.server, out, done).await {
        inc(&app.metrics.key_pushes);
    } else {
        let n = app
            .metrics
            .pushes_no_gateway
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                "key push for gateway {:?} dropped: no such gateway is registered ({n} so far)",
                msg.server
            );
        }
    }
}

/// Splits `speed` (connections per second over the cluster) over gateways in proportion to
/// their connection counts; every gateway gets at least 1 when `speed` > 0. 0 means unpaced.
pub fn split_speed(speed: i32, conns: &[u64]) -> Vec<i32> {
    if speed <= 0 || conns.is_empty() {
        return vec![0; conns.len()];
    }
    let total: u128 = conns.iter().map(|&c| u128::from(c)).sum();
    conns
        .iter()
        .map(|&c| {
            let share = (u128::from(speed.unsigned_abs()) * u128::from(c))
                .checked_div(total)
                .map_or(i64::from(speed) / conns.len() as i64, |v| v as i64);
            share.clamp(1, i64::from(speed)) as i32
        })
        .collect()
}

async fn send_broadcast(app: &Arc<App>, msg: PushMsg, done: Done) {
    let targets = app.cluster.targets();
    if targets.is_empty() {
        let n = app
            .metrics
            .broadcasts_no_gateway
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                "broadcast (op {}) reached no gateway: none is registered ({n} so far)",
                msg.operation
            );
        }
        return;
    }
    let conns: Vec<u64> = targets.iter().map(|(_, c)| *c).collect();
    let speeds = split_speed(msg.speed, &conns);
    let frames = inner_frame(msg.operation, &msg.msg);
    for ((gateway, _), speed) in targets.iter().zip(speeds) {
        let out = Outgoing::Broadcast {
            op: msg.operation,
            speed,
            frames: frames.clone(),
        };
        if app.cluster.send(gateway, out, done.clone()).await {
            inc(&app.metrics.broadcasts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_follows_connection_counts() {
        assert_eq!(split_speed(100, &[300, 100]), vec![75, 25]);
        assert_eq!(split_speed(100, &[0, 0]), vec![50, 50]);
        assert_eq!(split_speed(1, &[5, 5, 5]), vec![1, 1, 1]);
        assert_eq!(split_speed(0, &[5, 5]), vec![0, 0]);
        assert_eq!(split_speed(-3, &[5]), vec![0]);
        assert!(split_speed(100, &[]).is_empty());
        assert_eq!(split_speed(i32::MAX, &[u64::MAX, 1]), vec![i32::MAX - 1, 1]);
    }
}
