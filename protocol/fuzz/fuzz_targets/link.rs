//! Internal link messages: `link::decode` looped over the input as over a TCP stream, first
//! whole, then fed in chunks (size from the first byte) the way reads arrive: both must yield
//! the same messages and stop at the same place. Every message re-encodes (`link::encode`) to
//! bytes that decode to the same message, and re-encoding that gives the same bytes (prost's
//! encoding of a decoded message is canonical).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use protocol::{Error, link};

const MAX: usize = 1 << 16;

/// What decoding yields: the messages, then how it stopped (`None`: needs more bytes).
fn decode_all(chunks: &mut dyn Iterator<Item = &[u8]>) -> (Vec<link::Body>, Option<Error>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match link::decode(&mut buf, MAX) {
                Ok(Some(body)) => {
                    assert!(buf.len() < before);
                    out.push(body);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before);
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let (whole, stop) = decode_all(&mut std::iter::once(input));
    let chunk = 1 + pick as usize % 16;
    assert_eq!(
        decode_all(&mut input.chunks(chunk)),
        (whole.clone(), stop.clone())
    );
    if let Some(Error::LinkTooLong { len, max }) = stop {
        assert!(len > max);
    }

    for body in whole {
        let mut again = BytesMut::new();
        link::encode(&link::LinkMessage::from(body.clone()), &mut again);
        let bytes = again.clone();
        assert_eq!(
            link::decode(&mut again, usize::MAX).unwrap(),
            Some(body.clone())
        );
        assert!(again.is_empty());
        let mut twice = BytesMut::new();
        link::encode(&link::LinkMessage::from(body), &mut twice);
        assert_eq!(twice, bytes);
    }
});
