//! Client WebSocket frames: `ws::parse_frame` over a mutable copy of the input, frame after
//! frame, with a small payload limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::ws::{self, Kind};

const MAX_PAYLOAD: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let mut offset = 0;
    while offset < buf.len() {
        match ws::parse_frame(&mut buf[offset..], MAX_PAYLOAD) {
            Ok(Some(frame)) => {
                assert!(frame.len >= 2 && frame.len <= buf.len() - offset);
                assert_eq!(frame.payload.end, frame.len);
                assert!(frame.payload.len() <= MAX_PAYLOAD);
                if matches!(frame.kind, Kind::Ping | Kind::Pong | Kind::Close) {
                    assert!(frame.fin && frame.payload.len() <= 125);
                }
                offset += frame.len;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
