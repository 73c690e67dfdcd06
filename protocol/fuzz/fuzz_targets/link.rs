//! Internal link messages: `link::decode` looped over the input as over a TCP stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use protocol::link;

const MAX: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match link::decode(&mut buf, MAX) {
            Ok(Some(body)) => {
                assert!(buf.len() < before);
                // What decodes re-encodes and decodes to the same message.
                let mut again = BytesMut::new();
                link::encode(&link::LinkMessage::from(body.clone()), &mut again);
                assert_eq!(link::decode(&mut again, usize::MAX).unwrap(), Some(body));
                assert!(again.is_empty());
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                break;
            }
            Err(_) => break,
        }
    }
});
