//! Micro-benchmarks of `corecast-protocol`'s hot paths: what a gateway does per client frame
//! (split, WebSocket parse, token verify) and per push (batch build, link decode).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use protocol::batch::{self, Batch, BatchBuilder};
use protocol::frame::{self, MAX_CLIENT_FRAME};
use protocol::link::{self, Body, LinkMessage, MAX_LINK_MESSAGE, RoomBatch};
use protocol::token::{AuthMode, Token};
use protocol::{op, token, ws};

/// The body goim's benchmark client pushes.
const TEST_BODY: &[u8] = br#"{"test":1}"#;
/// The token goim's JavaScript demo sends.
const JS_DEMO_TOKEN: &[u8] =
    br#"{"mid":123, "room_id":"live://1000", "platform":"web", "accepts":[1000,1001,1002]}"#;
const NOW: i64 = 1_700_000_000;

/// `n` inner frames (op 1000, ver 1, seq 0) with the `{"test":1}` body, back to back.
fn inner_frames(n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(n * (frame::HEADER_LEN + TEST_BODY.len()));
    for _ in 0..n {
        b.push(1000, TEST_BODY);
    }
    b.inner_frames().to_vec()
}

/// A client WebSocket frame, masked as browsers send them.
fn masked_binary(payload: &[u8]) -> Vec<u8> {
    ws::client_frame(0x82, payload, [0x37, 0xfa, 0x21, 0x3d])
}

fn frame_split(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_split");
    let mut heartbeats = Vec::new();
    let mut pushes = Vec::new();
    for seq in 0..1000 {
        frame::encode(&mut heartbeats, 1, op::HEARTBEAT, seq, b"");
        frame::encode(&mut pushes, 1, op::SEND_MSG, seq, TEST_BODY);
    }
    g.throughput(Throughput::Elements(1000));
    for (name, buf) in [
        ("1000_heartbeats", &heartbeats),
        ("1000_test_frames", &pushes),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut rest = black_box(&buf[..]);
                let mut frames = 0u32;
                while let Ok(Some((_, _, used))) = frame::split(rest, MAX_CLIENT_FRAME) {
                    rest = &rest[used..];
                    frames += 1;
                }
                frames
            })
        });
    }
    g.finish();
}

fn frame_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_encode");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(64);
    g.bench_function("heartbeat_reply", |b| {
        b.iter(|| {
            out.clear();
            frame::encode(
                &mut out,
                1,
                op::HEARTBEAT_REPLY,
                black_box(1),
                &5i32.to_be_bytes(),
            );
            out.len()
        })
    });
    g.bench_function("test_push", |b| {
        b.iter(|| {
            out.clear();
            frame::encode(&mut out, 1, 1000, 0, black_box(TEST_BODY));
            out.len()
        })
    });
    g.finish();
}

fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| {
        b.iter(|| Batch::single(black_box(1000), black_box(TEST_BODY)))
    });
    for n in [1usize, 20, 100] {
        let inner = inner_frames(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("from_inner_frames", n),
            &inner,
            |b, inner| b.iter(|| Batch::from_inner_frames(black_box(inner)).unwrap()),
        );
        g.bench_with_input(BenchmarkId::new("builder", n), &n, |b, &n| {
            b.iter(|| {
                let mut bb = BatchBuilder::with_capacity(n * (frame::HEADER_LEN + TEST_BODY.len()));
                for _ in 0..n {
                    bb.push(1000, black_box(TEST_BODY));
                }
                bb.finish()
            })
        });
    }
    g.finish();
}

fn ws_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_binary_header");
    g.throughput(Throughput::Elements(1));
    for len in [34u64, 1_000, 100_000] {
        g.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, &len| {
            let mut head = [0u8; 10];
            b.iter(|| batch::ws_binary_header(black_box(len), &mut head))
        });
    }
    g.finish();
}

fn ws_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_parse_frame");
    g.throughput(Throughput::Elements(1));
    let mut heartbeat = Vec::new();
    frame::encode(&mut heartbeat, 1, op::HEARTBEAT, 1, b"");
    let mut auth = Vec::new();
    frame::encode(&mut auth, 1, op::AUTH, 1, JS_DEMO_TOKEN);
    let mut max = Vec::new();
    frame::encode(&mut max, 1, op::SEND_MSG, 1, &[b'x'; frame::MAX_BODY]);
    for (name, payload) in [
        ("heartbeat_16B", heartbeat),
        ("auth_98B", auth),
        ("max_4112B", max),
    ] {
        // parse_frame unmasks in place, so each iteration flips the payload between masked and
        // unmasked: the work is the same either way.
        let mut buf = masked_binary(&payload);
        g.bench_function(name, |b| {
            b.iter(|| {
                ws::parse_frame(black_box(&mut buf[..]), MAX_CLIENT_FRAME)
                    .unwrap()
                    .unwrap()
                    .len
            })
        });
    }
    g.finish();
}

fn token_verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("token_verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("open_js_demo", |b| {
        b.iter(|| token::verify(black_box(JS_DEMO_TOKEN), &AuthMode::Open, NOW).unwrap())
    });
    let hmac = AuthMode::Hmac {
        secrets: vec![b"current-secret".to_vec(), b"previous-secret".to_vec()],
    };
    let unsigned = Token {
        mid: 123,
        key: "5f8e0c1a-2b3c-4d5e-8f90-123456789abc".into(),
        room_id: "live://1000".into(),
        platform: "web".into(),
        accepts: vec![1000, 1001, 1002],
        ..Token::default()
    };
    for (name, secret) in [
        ("hmac_first_secret", &b"current-secret"[..]),
        ("hmac_second_secret", &b"previous-secret"[..]),
    ] {
        let body = unsigned.clone().sign(secret, NOW + 3600).to_json();
        g.bench_function(name, |b| {
            b.iter(|| token::verify(black_box(body.as_bytes()), &hmac, NOW).unwrap())
        });
    }
    g.finish();
}

fn link_room_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("link_room_batch");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 20, 100] {
        let msg = LinkMessage::from(Body::RoomBatch(RoomBatch {
            id: 42,
            room: "live://1000".into(),
            frames: inner_frames(n),
        }));
        let mut encoded = BytesMut::new();
        link::encode(&msg, &mut encoded);
        let mut out = BytesMut::with_capacity(encoded.len());
        g.bench_with_input(BenchmarkId::new("encode", n), &msg, |b, msg| {
            b.iter(|| {
                out.clear();
                link::encode(black_box(msg), &mut out);
                out.len()
            })
        });
        g.bench_with_input(BenchmarkId::new("decode", n), &encoded, |b, encoded| {
            b.iter_batched(
                || encoded.clone(),
                |mut buf| link::decode(&mut buf, MAX_LINK_MESSAGE).unwrap().unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    frame_split,
    frame_encode,
    batches,
    ws_header,
    ws_parse,
    token_verify,
    link_room_batch
);
criterion_main!(benches);
