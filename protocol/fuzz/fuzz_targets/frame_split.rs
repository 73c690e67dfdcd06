//! Client goim frames: `frame::split` looped over the input as over a TCP stream (every frame
//! re-encodes to the bytes it came from; a shorter prefix asks for more), the input as one
//! WebSocket message (`decode_ws_message`, re-encoded likewise) and as an op-9 body
//! (`count_inner_frames`, which must agree with walking the frames one by one).
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
                let mut again = Vec::new();
                frame::encode(&mut again, header.ver, header.op, header.seq, body);
                assert_eq!(again, &rest[..used]);
                for cut in [0, HEADER_LEN - 1, used - 1] {
                    if cut < used {
                        assert_eq!(frame::split(&rest[..cut], MAX_CLIENT_FRAME), Ok(None));
                    }
                }
                rest = &rest[used..];
            }
            Ok(None) => {
                assert!(rest.len() < MAX_CLIENT_FRAME);
                break;
            }
            Err(_) => {
                // A bad header is an error as soon as its 16 bytes are in.
                assert!(rest.len() >= HEADER_LEN);
                break;
            }
        }
    }

    if let Ok((header, body)) = frame::decode_ws_message(data, MAX_CLIENT_FRAME) {
        assert_eq!(header.pack_len, data.len());
        assert_eq!(body.len(), data.len() - HEADER_LEN);
        let mut again = Vec::new();
        frame::encode(&mut again, header.ver, header.op, header.seq, body);
        assert_eq!(again, data);
    }

    let walked = {
        let mut rest = data;
        let mut n = 0;
        while let Ok(Some((_, _, used))) = frame::split(rest, i32::MAX as usize) {
            rest = &rest[used..];
            n += 1;
        }
        rest.is_empty().then_some(n)
    };
    match frame::count_inner_frames(data) {
        Ok(n) => {
            assert!(n * HEADER_LEN <= data.len());
            assert_eq!(Some(n), walked);
        }
        Err(_) => assert_eq!(walked, None),
    }
});
