//! The embedded queue: a bounded in-process channel from the HTTP API to the job (one
//! dispatcher, no external service). A full channel makes producers wait; the API bounds that
//! wait and answers -500 past it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::{BoxFut, Delivery, Done, Queue};
use crate::{Error, Result};
use protocol::push::PushMsg;

/// The producing half.
pub struct Embedded {
    tx: mpsc::Sender<Delivery>,
    /// Accepted and not yet finished (queued, batching, or waiting for a gateway's ack).
    pending: Arc<AtomicU64>,
}

impl Embedded {
    /// A queue holding at most `capacity` messages, and the job's receiving half.
    pub fn new(capacity: usize) -> (Embedded, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Embedded {
                tx,
                pending: Arc::default(),
            },
            rx,
        )
    }
}

impl Queue for Embedded {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn produce<'a>(&'a self, msg: PushMsg) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            self.pending.fetch_add(1, Ordering::Relaxed);
            let pending = self.pending.clone();
            let done = Done::on_complete(move || {
                pending.fetch_sub(1, Ordering::Relaxed);
            });
            // On failure the delivery (and its token) is dropped, which undoes the count.
            self.tx
                .send(Delivery { msg, done })
                .await
                .map_err(|_| Error::Queue {
                    backend: "embedded",
                    reason: "the job has stopped".into(),
                })
        })
    }

    fn pending(&self) -> Option<u64> {
        Some(self.pending.load(Ordering::Relaxed))
    }

    /// One partition: the messages waiting in the channel for the job.
    fn lag(&self) -> Vec<(i32, u64)> {
        vec![(0, (self.tx.max_capacity() - self.tx.capacity()) as u64)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lag_is_the_channel_depth() {
        let (q, mut rx) = Embedded::new(8);
        assert_eq!(q.lag(), vec![(0, 0)]);
        for _ in 0..3 {
            q.produce(PushMsg::default()).await.unwrap();
        }
        assert_eq!(q.lag(), vec![(0, 3)]);
        let taken = rx.recv().await.unwrap();
        assert_eq!(q.lag(), vec![(0, 2)]);
        assert_eq!(q.pending(), Some(3), "taken is not finished");
        drop(taken);
        assert_eq!(q.pending(), Some(2));
    }
}
