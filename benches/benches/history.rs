//! Micro-benchmarks of room history (`dispatcher::history`), the job's added work per flushed
//! room batch: numbering a 20-message batch (goim's batch size, `{"test":1}` bodies) with the
//! room's offsets and keeping its messages, against numbering alone (`history.messages = 0`);
//! and answering a recovery 500 messages behind.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dispatcher::config::HistoryConfig;
use dispatcher::history::{History, Since};
use protocol::batch::BatchBuilder;

const TEST_BODY: &[u8] = br#"{"test":1}"#;
const BATCH: usize = 20;
const ROOMS: usize = 1000;

fn batch() -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for _ in 0..BATCH {
        b.push(1000, TEST_BODY);
    }
    b.inner_frames().to_vec()
}

fn cfg(messages: usize) -> HistoryConfig {
    HistoryConfig {
        messages,
        max_age_ms: 300_000,
        max_bytes: 64 << 20,
    }
}

/// A history already full: every room holds `messages`.
fn full(messages: usize, now: Instant) -> History {
    let mut h = History::new(&cfg(messages));
    let frames = batch();
    for r in 0..ROOMS {
        for _ in 0..messages.div_ceil(BATCH).max(1) {
            h.record(&format!("live://{r}"), frames.clone(), now)
                .unwrap();
        }
    }
    h
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("history_record");
    g.throughput(Throughput::Elements(BATCH as u64));
    let now = Instant::now();
    let frames = batch();
    let rooms: Vec<String> = (0..ROOMS).map(|r| format!("live://{r}")).collect();
    for messages in [0usize, 1000] {
        let mut h = full(messages, now);
        let mut i = 0usize;
        g.bench_function(format!("messages_{messages}"), |b| {
            b.iter_batched(
                || frames.clone(),
                |f| {
                    i = (i + 1) % ROOMS;
                    black_box(
                        h.record(&rooms[i], f, now + Duration::from_millis(1))
                            .unwrap(),
                    )
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn since(c: &mut Criterion) {
    let mut g = c.benchmark_group("history_since");
    g.throughput(Throughput::Elements(500));
    let now = Instant::now();
    let h = full(1000, now);
    let Some((msgs, newest)) = h.all("live://7") else {
        panic!("room held")
    };
    assert_eq!(msgs.len(), 1000);
    let since_offset = newest.wrapping_sub(500);
    g.bench_function("behind_500", |b| {
        b.iter(|| match h.since(black_box("live://7"), since_offset) {
            Since::Found { frames, .. } => black_box(frames.len()),
            _ => unreachable!(),
        })
    });
    g.finish();
}

criterion_group!(benches, record, since);
criterion_main!(benches);
