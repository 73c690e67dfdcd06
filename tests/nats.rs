//! The dispatcher over NATS JetStream (Debian's `nats-server -js`, started by `benches::broker`
//! on an ephemeral port; `scripts/test.sh` installs it): the tests every durable queue passes
//! (`support::queues`): per-room order across two dispatchers sharing the partitions by lease,
//! a dispatcher killed mid-stream losing no acknowledged push (its partitions taken over, what
//! it had not finished delivered again first), a server outage giving -500 naming NATS and
//! pushes flowing after it, room history from the partition's reader and cleared when
//! partitions move.

mod support;

use support::queues::{self, Kind};

#[test]
fn heavy_nats_recovery_comes_from_the_dispatcher_that_owns_the_room() {
    queues::recovery_comes_from_the_dispatcher_that_owns_the_room(Kind::Nats);
}

#[test]
fn heavy_nats_a_rebalance_clears_the_history() {
    queues::a_rebalance_clears_the_history(Kind::Nats);
}

#[test]
fn heavy_nats_room_pushes_keep_order_at_every_member() {
    queues::room_pushes_keep_order_at_every_member(Kind::Nats);
}

#[test]
fn heavy_nats_a_killed_dispatcher_loses_no_acknowledged_push() {
    queues::a_killed_dispatcher_loses_no_acknowledged_push(Kind::Nats);
}

#[test]
fn heavy_nats_unfinished_messages_of_a_killed_dispatcher_are_delivered_by_the_next_reader() {
    queues::unfinished_messages_of_a_killed_dispatcher_are_delivered_by_the_next_reader(Kind::Nats);
}

#[test]
fn heavy_nats_broker_outage_is_a_clear_error_and_pushes_flow_after_it() {
    queues::broker_outage_is_a_clear_error_and_pushes_flow_after_it(Kind::Nats);
}

#[test]
fn heavy_nats_a_malformed_queue_message_is_counted_and_skipped() {
    queues::a_malformed_queue_message_is_counted_and_skipped(Kind::Nats);
}

#[test]
fn heavy_nats_a_frozen_dispatcher_stops_reading_when_its_lease_runs_out() {
    queues::a_frozen_dispatcher_stops_reading_when_its_lease_runs_out(Kind::Nats);
}

#[test]
fn heavy_nats_a_stopped_dispatcher_hands_its_partitions_over() {
    queues::a_stopped_dispatcher_hands_its_partitions_over(Kind::Nats);
}
