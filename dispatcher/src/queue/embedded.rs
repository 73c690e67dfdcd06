//! The embedded queue: a bounded in-process channel from the HTTP API to the job (one
//! dispatcher, no external service). A full channel makes producers wait; the API bounds that
//! wait and answers -500 past it.

use tokio::sync::mpsc;

use super::{BoxFut, Delivery, Done, Queue};
use crate::{Error, Result};
use protocol::push::PushMsg;

/// The producing half.
pub struct Embedded {
    tx: mpsc::Sender<Delivery>,
}

impl Embedded {
    /// A queue holding at most `capacity` messages, and the job's receiving half.
    pub fn new(capacity: usize) -> (Embedded, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Embedded { tx }, rx)
    }
}

impl Queue for Embedded {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn produce<'a>(&'a self, msg: PushMsg) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            self.tx
                .send(Delivery {
                    msg,
                    done: Done::none(),
                })
                .await
                .map_err(|_| Error::Queue {
                    backend: "embedded",
                    reason: "the job has stopped".into(),
                })
        })
    }
}
