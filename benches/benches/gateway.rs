//! Micro-benchmarks of the gateway's per-message path, without sockets: the ingress → shard
//! hand-off through an [`Inbox`], a shard's room fan-out (a pointer push per member, then the
//! write completion that drains it), the per-batch fixed cost (encode once, wrap twice), and
//! what the metrics add: the write-latency histogram per completion, the histograms' publish per
//! loop turn, and the clock read per batch of completions.
//!
//! Only public APIs of `gateway` and `protocol` are used. The per-member work is the gateway's
//! own (`Conn::enqueue`, `Conn::advance`); the loops around it that live in the shard's
//! private code (`fan_out_room`, `flush_dirty`, `on_send`, the ring/slot table) are restated
//! on the same public types, and say so where they are.

use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use gateway::conn::{Conn, Enqueued, State, Transport};
use gateway::inbox::{Inbox, ShardMsg};
use gateway::rooms::{OnlineTable, Rooms};
use protocol::batch::{Batch, BatchBuilder};
use protocol::frame;

/// The body goim's benchmark client pushes.
const TEST_BODY: &[u8] = br#"{"test":1}"#;
const ROOM: &str = "live://1000";
/// Messages the producer thread sends per cross-thread measurement.
const HANDOFF_MESSAGES: u64 = 100_000;

/// `n` inner frames (op 1000, ver 1, seq 0) with the `{"test":1}` body, back to back: what a
/// dispatcher sends in a room batch.
fn inner_frames(n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(n * (frame::HEADER_LEN + TEST_BODY.len()));
    for _ in 0..n {
        b.push(1000, TEST_BODY);
    }
    b.inner_frames().to_vec()
}

fn batch_of(n: usize) -> Batch {
    Batch::from_inner_frames(&inner_frames(n)).expect("valid inner frames")
}

fn room_msg(room: &Arc<str>, batch: &Batch) -> ShardMsg {
    ShardMsg::Room {
        room: room.clone(),
        batch: batch.clone(),
        last: 0,
    }
}

/// What the shard does with a popped message before fanning out: look at it, then drop it
/// (dropping releases the `Arc<str>` and the batch's `Bytes`).
fn consume(msg: ShardMsg) -> u32 {
    match msg {
        ShardMsg::Room { room, batch, .. } => {
            black_box(&room);
            batch.messages()
        }
        _ => 0,
    }
}

/// The ingress → shard hand-off. `Inbox::push` writes the eventfd only when the shard's
/// `sleeping` flag is set; the bench never sets it, so these numbers are the no-wake fast path
/// (a busy shard), not the cost of waking a sleeping one (an eventfd write per push).
fn ring_handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_handoff");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    let room: Arc<str> = Arc::from(ROOM);
    let batch = batch_of(20);

    // (a) Push and pop on one thread: the queue operations plus the Arc/Bytes clones and drops.
    let inbox = Inbox::new(4096).expect("eventfd");
    g.throughput(Throughput::Elements(1));
    g.bench_function("same_thread_push_pop", |b| {
        b.iter(|| {
            if inbox.push(room_msg(&room, &batch)).is_err() {
                unreachable!("the inbox is emptied every iteration");
            }
            consume(inbox.pop().expect("just pushed"))
        })
    });

    // (b) A producer thread (the ingress) pushes 100,000 messages while this thread (the
    // shard) pops them. The producer waits on a full ring as the ingress does (yield); the
    // consumer spins on an empty one. Each measurement spawns the producer (~tens of µs, well
    // under 1% of a 100k-message run).
    g.throughput(Throughput::Elements(HANDOFF_MESSAGES));
    g.sample_size(20);
    g.sampling_mode(SamplingMode::Flat);
    let (mut pushed, mut full_total) = (0u64, 0u64);
    g.bench_function("cross_thread_100k", |b| {
        b.iter_custom(|iters| {
            let inbox = Arc::new(Inbox::new(4096).expect("eventfd"));
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let producer_inbox = inbox.clone();
                let (room, batch) = (room.clone(), batch.clone());
                let start = Instant::now();
                let producer = std::thread::spawn(move || {
                    let mut full = 0u64;
                    for _ in 0..HANDOFF_MESSAGES {
                        let mut msg = room_msg(&room, &batch);
                        while let Err(m) = producer_inbox.push(msg) {
                            msg = m;
                            full += 1;
                            std::thread::yield_now();
                        }
                    }
                    full
                });
                let mut got = 0u64;
                let mut idle = 0u32;
                while got < HANDOFF_MESSAGES {
                    match inbox.pop() {
                        Some(msg) => {
                            black_box(consume(msg));
                            got += 1;
                            idle = 0;
                        }
                        None => {
                            idle += 1;
                            if idle < 64 {
                                std::hint::spin_loop();
                            } else {
                                std::thread::yield_now();
                            }
                        }
                    }
                }
                total += start.elapsed();
                full_total += producer.join().expect("producer thread");
                pushed += HANDOFF_MESSAGES;
            }
            total
        })
    });
    g.finish();
    eprintln!(
        "ring_handoff/cross_thread_100k: the producer found the inbox full on {full_total} of \
         {pushed} pushes"
    );
}

/// Slots per io_uring ring in the shard (`engine.slots_per_ring`): a handle is (ring, slot).
fn slots_per_ring() -> usize {
    gateway::Config::default().engine.slots_per_ring as usize
}

/// A shard's connection table and room state, as `Shard` keeps them (`RingCtx::conns` is
/// `Vec<Option<Box<Conn>>>` per ring; the shard's fields are private, so this mirrors them).
struct FanoutShard {
    rings: Vec<Vec<Option<Box<Conn>>>>,
    rooms: Rooms,
    dirty: Vec<u32>,
    cap: usize,
    messages_out: u64,
    batches_out: u64,
    over_cap: u64,
}

impl FanoutShard {
    /// `members` open TCP connections, all in one room.
    fn new(members: usize) -> FanoutShard {
        let per_ring = slots_per_ring();
        let mut rings: Vec<Vec<Option<Box<Conn>>>> = Vec::new();
        let mut rooms = Rooms::new(Arc::new(OnlineTable::default()));
        for i in 0..members {
            let (r, s) = (i / per_ring, i % per_ring);
            if r == rings.len() {
                rings.push(Vec::with_capacity(per_ring));
            }
            let mut conn = Box::new(Conn::new(1, Transport::Tcp, 0));
            conn.state = State::Open;
            let h = gateway::shard::handle(r, s as u32);
            let (idx, pos) = rooms.join(ROOM, h);
            conn.rooms.push((idx, pos, 0));
            rings[r].push(Some(conn));
        }
        FanoutShard {
            rings,
            rooms,
            dirty: Vec::with_capacity(members),
            cap: gateway::Config::default().limits.outbound_cap_bytes,
            messages_out: 0,
            batches_out: 0,
            over_cap: 0,
        }
    }

    fn conn(&mut self, h: u32) -> Option<&mut Conn> {
        let (r, s) = gateway::shard::split(h);
        self.rings.get_mut(r)?.get_mut(s)?.as_deref_mut()
    }

    /// `Shard::enqueue` for a push: the real per-connection rule (`Conn::enqueue`: cap check,
    /// chunk push, byte count, dirty mark) plus the shard's bookkeeping of its outcome. An
    /// outcome other than `Queued` never happens here; it is only counted.
    fn enqueue(&mut self, h: u32, buf: &Rc<Bytes>, msgs: u32) {
        let cap = self.cap;
        let Some(conn) = self.conn(h) else {
            return;
        };
        match conn.enqueue(buf, msgs, cap, false) {
            Enqueued::Queued { newly_dirty, .. } => {
                if newly_dirty {
                    self.dirty.push(h);
                }
                self.messages_out += msgs as u64;
                self.batches_out += 1;
            }
            _ => self.over_cap += 1,
        }
    }

    /// `Shard::fan_out_room`: find the room, wrap both transports' bytes once, enqueue for
    /// every member (the member list is re-read each step, as the shard does, since enqueue
    /// borrows the whole shard).
    fn fan_out_room(&mut self, room: &str, batch: &Batch) {
        let Some(idx) = self.rooms.find(room) else {
            return;
        };
        let tcp = Rc::new(batch.tcp());
        let ws = Rc::new(batch.ws());
        let msgs = batch.messages();
        let mut i = 0;
        while let Some(&h) = self.rooms.get(idx).and_then(|r| r.members.get(i)) {
            i += 1;
            let Some(conn) = self.conn(h) else { continue };
            let buf = if conn.transport == Transport::Tcp {
                &tcp
            } else {
                &ws
            };
            self.enqueue(h, buf, msgs);
        }
    }

    /// What `flush_dirty` and then the send completion (`on_send`) do to each dirty
    /// connection, minus the io_uring submission itself: clear dirty, mark the write in
    /// flight over the queued chunks, then consume the written bytes with `Conn::advance`.
    fn complete_writes(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &h in &dirty {
            let Some(conn) = self.conn(h) else { continue };
            conn.dirty = false;
            if conn.sending || conn.out.is_empty() {
                continue;
            }
            let n = conn.out.len().min(64);
            let written: usize = conn.out.iter().take(n).map(|c| c.remaining().len()).sum();
            conn.sending = true;
            conn.inflight = n as u16;
            // The completion, with the whole write done.
            conn.sending = false;
            conn.inflight = 0;
            conn.advance(written);
        }
        dirty.clear();
        self.dirty = dirty;
    }
}

/// The per-member cost of a room fan-out inside one shard: per iteration, one batch goes to
/// every member (enqueue) and every member's write then completes (drain), so the queues stay
/// empty between iterations. Throughput is deliveries (members); time / M is ns per member.
fn room_fanout_in_memory(c: &mut Criterion) {
    let mut g = c.benchmark_group("room_fanout_in_memory");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for members in [1_000usize, 10_000, 100_000] {
        if members >= 100_000 {
            g.sample_size(20);
            g.sampling_mode(SamplingMode::Flat);
        }
        let mut shard = FanoutShard::new(members);
        g.throughput(Throughput::Elements(members as u64));
        for frames in [1usize, 20] {
            let batch = batch_of(frames);
            g.bench_with_input(
                BenchmarkId::new(format!("{frames}_frames"), members),
                &batch,
                |b, batch| {
                    b.iter(|| {
                        shard.fan_out_room(black_box(ROOM), batch);
                        shard.complete_writes();
                    })
                },
            );
        }
        assert_eq!(shard.over_cap, 0, "no member should reach the outbound cap");
        let rings = &shard.rings;
        let drained = rings.iter().flatten().flatten().all(|c| c.out.is_empty());
        assert!(drained, "every queue is drained each iteration");
        black_box((shard.messages_out, shard.batches_out));
    }
    g.finish();
}

/// The per-batch fixed cost: the ingress encodes a 20-frame batch once (validate + one copy),
/// and a shard wraps its TCP and WS bytes in `Rc` once per fan-out.
fn batch_encode_per_shard(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_encode_per_shard");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    let frames = inner_frames(20);
    g.throughput(Throughput::Elements(1));
    g.bench_function("20_frames", |b| {
        b.iter(|| {
            let batch = Batch::from_inner_frames(black_box(&frames)).expect("valid");
            let tcp = Rc::new(batch.tcp());
            let ws = Rc::new(batch.ws());
            black_box((&tcp, &ws));
            (tcp.len(), ws.len())
        })
    });
    g.finish();
}

/// What the shard's metrics cost: per write completion, `Latency::written` (the stamp's age
/// into the write histogram, and the look for an unwritten auth reply); per loop turn, the
/// three histograms published; per batch of completions, one clock read.
fn metrics_cost(c: &mut Criterion) {
    use gateway::latency::{Latency, SharedLatency};
    let mut g = c.benchmark_group("metrics_cost");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    const WRITES: u32 = 1000;
    g.throughput(Throughput::Elements(u64::from(WRITES)));
    let mut lat = Latency::default();
    g.bench_function("write_completion", |b| {
        b.iter(|| {
            let stamp = lat.stamp();
            // Completions reaped a few hundred µs after their submission, spread over buckets.
            lat.now_us += 137;
            for h in 0..WRITES {
                lat.written(black_box(h), 1, stamp.wrapping_sub(h % 64));
            }
            lat.write.count
        })
    });
    g.throughput(Throughput::Elements(1));
    let shared = SharedLatency::default();
    let mut lat = Latency::default();
    g.bench_function("publish_per_turn", |b| {
        b.iter(|| {
            lat.now_us += 50;
            lat.written(1, 1, 0);
            shared.publish(black_box(&lat));
        })
    });
    let epoch = Instant::now();
    g.bench_function("clock_read_per_batch", |b| {
        b.iter(|| epoch.elapsed().as_micros() as u64)
    });
    g.finish();
}

criterion::criterion_group!(
    benches,
    ring_handoff,
    room_fanout_in_memory,
    batch_encode_per_shard,
    metrics_cost
);
criterion::criterion_main!(benches);
