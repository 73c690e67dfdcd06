//! The queue between the logic role (HTTP API) and the job role: a [`Queue`] takes goim
//! `PushMsg`s from the API and the job receives them as [`Delivery`]s, in order per room.
//!
//! Each delivery carries a [`Done`] token. The job clones it into every push it makes for the
//! message; when the last clone drops (every gateway acknowledged, or the push was given up and
//! counted), the backend learns the message is finished. Kafka commits offsets from that, NATS
//! and Redis acknowledge the message (at-least-once); the embedded channel has nothing to
//! commit.
//!
//! Backends: [`embedded`] (one process), [`kafka`] (goim's topic and consumer group), [`nats`]
//! (JetStream) and [`redis`] (Streams). The last two keep one room on one reader through
//! partitions held by lease ([`ownership`]); [`timed`] wraps any of them to time produces.

pub mod embedded;
pub mod kafka;
pub mod nats;
pub mod ownership;
pub mod redis;
pub mod timed;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use protocol::push::PushMsg;

use crate::Result;

/// A boxed future, for object-safe async traits.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The producing side, used by the HTTP API.
pub trait Queue: Send + Sync {
    /// `embedded`, `kafka`, `nats`, `redis`.
    fn backend(&self) -> &'static str;
    /// Resolves once the queue holds the message (Kafka: acknowledged by all in-sync
    /// replicas), or with the reason it could not.
    fn produce<'a>(&'a self, msg: PushMsg) -> BoxFut<'a, Result<()>>;
    /// Messages accepted and not yet finished, for a queue that loses them when the process
    /// stops (embedded); `None` for a durable queue (Kafka, NATS and Redis re-deliver what was
    /// not finished).
    fn pending(&self) -> Option<u64>;
    /// Consumer lag per partition this dispatcher consumes: messages in the queue its job has
    /// not finished (for `/metrics`; may block on the broker, so call it off the runtime).
    fn lag(&self) -> Vec<(i32, u64)> {
        Vec::new()
    }
    /// The dispatcher is stopping: stop taking messages off the queue, and hand what this
    /// dispatcher reads over to the others (NATS and Redis release their partition leases once
    /// what is in flight finished, so another dispatcher takes over at once rather than when the
    /// leases expire). Nothing to do for the embedded queue and Kafka.
    fn close(&self) -> BoxFut<'_, ()> {
        Box::pin(async {})
    }
}

/// One message for the job, with its completion token.
pub struct Delivery {
    pub msg: PushMsg,
    pub done: Done,
}

/// A completion token: the hook runs when the last clone is dropped.
#[derive(Clone, Default)]
pub struct Done {
    _hook: Option<Arc<Hook>>,
}

struct Hook(Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl Drop for Hook {
    fn drop(&mut self) {
        let f = self.0.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(f) = f {
            f();
        }
    }
}

impl Done {
    /// A token with nothing to do on completion.
    pub fn none() -> Done {
        Done { _hook: None }
    }

    /// A token that runs `f` once every clone is dropped.
    pub fn on_complete(f: impl FnOnce() + Send + 'static) -> Done {
        Done {
            _hook: Some(Arc::new(Hook(Mutex::new(Some(Box::new(f)))))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn done_runs_once_after_the_last_clone() {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        let d = Done::on_complete(move || {
            m.fetch_add(1, Ordering::SeqCst);
        });
        let clones: Vec<Done> = (0..3).map(|_| d.clone()).collect();
        drop(d);
        assert_eq!(n.load(Ordering::SeqCst), 0);
        drop(clones);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
