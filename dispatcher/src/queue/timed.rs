//! A [`Queue`] wrapper that times every produce into `corecast_dispatcher_queue_produce_seconds`
//! (both backends): from the call to the queue's answer, or to the moment the caller gave up
//! waiting (the API's request timeout drops the future).

use std::sync::Arc;
use std::time::Instant;

use protocol::push::PushMsg;

use super::{BoxFut, Queue};
use crate::Result;
use crate::metrics::Metrics;

pub struct Timed {
    inner: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
}

impl Timed {
    pub fn new(inner: Arc<dyn Queue>, metrics: Arc<Metrics>) -> Timed {
        Timed { inner, metrics }
    }
}

/// Observes the time since `start` when dropped (answered or abandoned).
struct Clock<'a> {
    start: Instant,
    metrics: &'a Metrics,
}

impl Drop for Clock<'_> {
    fn drop(&mut self) {
        self.metrics
            .produce_seconds
            .observe_duration(self.start.elapsed());
    }
}

impl Queue for Timed {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn produce<'a>(&'a self, msg: PushMsg) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let _clock = Clock {
                start: Instant::now(),
                metrics: &self.metrics,
            };
            self.inner.produce(msg).await
        })
    }

    fn pending(&self) -> Option<u64> {
        self.inner.pending()
    }

    fn lag(&self) -> Vec<(i32, u64)> {
        self.inner.lag()
    }

    fn close(&self) -> BoxFut<'_, ()> {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::embedded::Embedded;

    #[tokio::test]
    async fn every_produce_is_timed_even_an_abandoned_one() {
        let metrics = Arc::new(Metrics::default());
        let (q, _rx) = Embedded::new(1);
        let q = Timed::new(Arc::new(q), metrics.clone());
        q.produce(PushMsg::default()).await.unwrap();
        assert_eq!(metrics.produce_seconds.count(), 1);
        // The channel is full: the caller gives up after 20 ms, and that wait is observed.
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            q.produce(PushMsg::default()),
        )
        .await;
        assert!(gave_up.is_err());
        assert_eq!(metrics.produce_seconds.count(), 2);
        assert_eq!(
            (q.backend(), q.pending(), q.lag()),
            ("embedded", Some(1), vec![(0, 1)])
        );
    }
}
