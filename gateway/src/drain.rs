//! Graceful drain on a shard: stop accepting (cancel the accepts in flight), then close
//! connections with reason "server draining" in batches, so clients move to other gateways
//! without a reconnect storm. The shard's loop exits when its last connection is gone.

use crate::conn::State;
use crate::shard::{ACCEPT_OPS, Reason, Shard, handle};

impl Shard {
    pub(crate) fn start_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.drain_next_ms = self.now;
        for ctx in &mut self.rings {
            for (which, op) in ACCEPT_OPS.into_iter().enumerate() {
                if ctx.accepts[which] > 0 {
                    ctx.ring.cancel_accepts(op);
                }
            }
        }
        tracing::info!(shard = self.id, connections = self.live(), "draining");
    }

    pub(crate) fn step_drain(&mut self) {
        if self.now < self.drain_next_ms {
            return;
        }
        let cfg = &self.shared.config.drain;
        let shards = self.shared.inboxes.len();
        let per_shard = cfg.batch.div_ceil(shards).max(1);
        self.drain_next_ms = self.now + cfg.interval_ms;
        let mut victims = Vec::new();
        'outer: for (r, ctx) in self.rings.iter().enumerate() {
            for (s, c) in ctx.conns.iter().enumerate() {
                if let Some(c) = c
                    && matches!(c.state, State::Upgrade | State::Auth | State::Open)
                {
                    victims.push(handle(r, s as u32));
                    if victims.len() >= per_shard {
                        break 'outer;
                    }
                }
            }
        }
        for h in victims {
            self.teardown(
                h,
                Some(Reason::new(
                    "server draining: reconnect to another gateway",
                    protocol::ws::close_code::GOING_AWAY,
                )),
            );
        }
    }
}
