//! The ingress: turns push messages from dispatchers (link [`Body`]s) into shard messages and
//! hands each to the shards that need it through their bounded lock-free inboxes.
//!
//! A room batch is encoded once ([`Batch`]: TCP and WS bytes in one buffer) and the same
//! reference-counted buffer goes to every shard. Key pushes go only to the shard holding each
//! key (one lookup in the key table). A full inbox makes the ingress wait (backpressure to the
//! link), counted per shard in its inbox (`corecast_gateway_ring_full_total`).

use std::collections::HashMap;
use std::sync::Arc;

use protocol::batch::Batch;
use protocol::link::Body;

use crate::inbox::ShardMsg;
use crate::shard::Shared;

/// A handle to a gateway's ingress; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Ingress {
    pub(crate) shared: Arc<Shared>,
}

impl Ingress {
    /// Routes one message from a dispatcher. Returns the push id to acknowledge (0: none), or
    /// an error naming what was wrong with the message (the caller closes the link).
    pub fn deliver(&self, body: Body) -> protocol::Result<u64> {
        match body {
            Body::RoomBatch(rb) => {
                let batch = Batch::from_inner_frames(&rb.frames)?;
                let last = protocol::history::last_offset(&rb.frames).unwrap_or(0);
                let room: Arc<str> = Arc::from(rb.room);
                for shard in 0..self.shared.inboxes.len() {
                    self.push(
                        shard,
                        ShardMsg::Room {
                            room: room.clone(),
                            batch: batch.clone(),
                            last,
                        },
                    );
                }
                Ok(rb.id)
            }
            // The answer to a recover request goes to the shard of the connection that asked,
            // behind the room batches this link delivered before it.
            Body::RoomHistory(history) => {
                protocol::frame::count_inner_frames(&history.frames)?;
                let id = history.id;
                let (shard, handle, gen_) = crate::shard::split_conn_id(history.conn_id);
                if shard < self.shared.inboxes.len() {
                    self.push(
                        shard,
                        ShardMsg::Recovered {
                            handle,
                            gen_,
                            history,
                        },
                    );
                }
                Ok(id)
            }
            Body::PushKeys(pk) => {
                let batch = Batch::from_inner_frames(&pk.frames)?;
                let mut per_shard: HashMap<u16, Vec<(u32, u16)>> = HashMap::new();
                for key in &pk.keys {
                    if let Some(owner) = self.shared.keys.get(key) {
                        per_shard
                            .entry(owner.shard)
                            .or_default()
                            .push((owner.handle, owner.gen_));
                    }
                }
                for (shard, targets) in per_shard {
                    self.push(
                        shard as usize,
                        ShardMsg::Keys {
                            targets,
                            op: pk.op,
                            batch: batch.clone(),
                        },
                    );
                }
                Ok(pk.id)
            }
            Body::Broadcast(b) => {
                let batch = Batch::from_inner_frames(&b.frames)?;
                let shards = self.shared.inboxes.len() as u32;
                let per_second = if b.speed <= 0 {
                    0
                } else {
                    (b.speed as u32).div_ceil(shards)
                };
                for shard in 0..shards as usize {
                    self.push(
                        shard,
                        ShardMsg::Broadcast {
                            op: b.op,
                            per_second,
                            batch: batch.clone(),
                        },
                    );
                }
                Ok(b.id)
            }
            // Cluster-wide room counts (goim's RenewOnline answer): heartbeat replies use them.
            Body::RoomCounts(rc) => {
                self.shared.online.set_cluster(&rc.counts);
                Ok(0)
            }
            other => Err(protocol::Error::LinkDecode(format!(
                "a dispatcher sent {} which only gateways send",
                other.name()
            ))),
        }
    }

    fn push(&self, shard: usize, mut msg: ShardMsg) {
        let inbox = &self.shared.inboxes[shard];
        let mut spins = 0u32;
        loop {
            match inbox.push(msg) {
                Ok(()) => return,
                Err(m) => {
                    msg = m;
                    if spins == 0 {
                        inbox.count_full();
                        inbox.wake();
                    }
                    spins += 1;
                    if spins < 64 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(std::time::Duration::from_micros(50));
                    }
                }
            }
        }
    }

    /// Times an inbox was found full, over all shards.
    pub fn ring_full(&self) -> u64 {
        self.shared.inboxes.iter().map(|i| i.full_count()).sum()
    }
}
