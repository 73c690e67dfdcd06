//! Client goim frames: `frame::split` looped over the input as over a TCP stream, and the input
//! as one WebSocket message (`decode_ws_message`) and as an op-9 body (`count_inner_frames`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::frame::{self, HEADER_LEN, MAX_CLIENT_FRAME};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match frame::split(rest, MAX_CLIENT_FRAME) {
            Ok(Some((header, body, used))) => {
                assert!(used >= HEADER_LEN && used <= rest.len());
                assert_eq!(used, header.pack_len);
                assert!(header.pack_len <= MAX_CLIENT_FRAME);
                assert_eq!(body.len(), header.body_len());
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(_) => break,
        }
    }

    if let Ok((header, body)) = frame::decode_ws_message(data, MAX_CLIENT_FRAME) {
        assert_eq!(header.pack_len, data.len());
        assert_eq!(body.len(), data.len() - HEADER_LEN);
    }

    if let Ok(n) = frame::count_inner_frames(data) {
        assert!(n * HEADER_LEN <= data.len());
    }
});
