//! The dispatcher over Redis Streams (Debian's `redis-server`, started by `benches::broker` on
//! an ephemeral port): the tests every durable queue passes (`support::queues`): per-room order
//! across two dispatchers sharing the partition streams by lease, a dispatcher killed
//! mid-stream losing no acknowledged push (its pending entries claimed by the new reader),
//! a Redis outage (restarted empty) giving -500 naming Redis and pushes flowing after it, room
//! history from the partition's reader and cleared when partitions move.

mod support;

use support::queues::{self, Kind};

#[test]
fn heavy_redis_queue_recovery_comes_from_the_dispatcher_that_owns_the_room() {
    queues::recovery_comes_from_the_dispatcher_that_owns_the_room(Kind::Redis);
}

#[test]
fn heavy_redis_queue_a_rebalance_clears_the_history() {
    queues::a_rebalance_clears_the_history(Kind::Redis);
}

#[test]
fn heavy_redis_queue_room_pushes_keep_order_at_every_member() {
    queues::room_pushes_keep_order_at_every_member(Kind::Redis);
}

#[test]
fn heavy_redis_queue_a_killed_dispatcher_loses_no_acknowledged_push() {
    queues::a_killed_dispatcher_loses_no_acknowledged_push(Kind::Redis);
}

#[test]
fn heavy_redis_queue_unfinished_messages_of_a_killed_dispatcher_are_delivered_by_the_next_reader() {
    queues::unfinished_messages_of_a_killed_dispatcher_are_delivered_by_the_next_reader(
        Kind::Redis,
    );
}

#[test]
fn heavy_redis_queue_broker_outage_is_a_clear_error_and_pushes_flow_after_it() {
    queues::broker_outage_is_a_clear_error_and_pushes_flow_after_it(Kind::Redis);
}

#[test]
fn heavy_redis_queue_a_malformed_queue_message_is_counted_and_skipped() {
    queues::a_malformed_queue_message_is_counted_and_skipped(Kind::Redis);
}

#[test]
fn heavy_redis_queue_a_frozen_dispatcher_stops_reading_when_its_lease_runs_out() {
    queues::a_frozen_dispatcher_stops_reading_when_its_lease_runs_out(Kind::Redis);
}

#[test]
fn heavy_redis_queue_a_stopped_dispatcher_hands_its_partitions_over() {
    queues::a_stopped_dispatcher_hands_its_partitions_over(Kind::Redis);
}
