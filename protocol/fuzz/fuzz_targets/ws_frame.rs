//! Client WebSocket frames: `ws::parse_frame` over a mutable copy of the input, frame after
//! frame, under a payload limit picked by the first byte (0 to usize::MAX). For every frame:
//! the payload is the input's XOR the header's mask (or the input, unmasked); every shorter
//! prefix of the frame asks for more bytes; the frame re-encoded (`client_frame`) parses back
//! to the same frame, byte for byte when the input was masked with minimal length encoding.
//! Fragments are reassembled as the gateway does (continuation only inside a message, no data
//! frame inside one, control frames anywhere) and each whole message goes through
//! `frame::decode_ws_message`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::frame::{self, MAX_CLIENT_FRAME};
use protocol::ws::{self, Kind};

const LIMITS: [usize; 6] = [0, 125, 256, MAX_CLIENT_FRAME, 1 << 20, usize::MAX];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let max = LIMITS[pick as usize % LIMITS.len()];
    let mut buf = input.to_vec();
    let mut offset = 0;
    let mut message: Option<Vec<u8>> = None;
    while offset < buf.len() {
        let f = match ws::parse_frame(&mut buf[offset..], max) {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => break,
        };
        let raw = &input[offset..offset + f.len];
        let payload = &buf[offset..][f.payload.clone()];
        let head_len = f.payload.start;
        assert!(f.len >= 2 && f.len <= input.len() - offset);
        assert_eq!(f.payload.end, f.len);
        assert!(payload.len() <= max);
        if matches!(f.kind, Kind::Ping | Kind::Pong | Kind::Close) {
            assert!(f.fin && payload.len() <= 125);
        }
        assert_eq!(raw[0] & 0x70, 0, "reserved bits pass");

        // Unmasking is the XOR with the header's mask.
        let masked = raw[1] & 0x80 != 0;
        let mask = if masked {
            raw[head_len - 4..head_len].try_into().unwrap()
        } else {
            [0; 4]
        };
        for (i, (&p, &r)) in payload.iter().zip(&raw[head_len..]).enumerate() {
            assert_eq!(p, r ^ mask[i & 3]);
        }

        // Every shorter prefix asks for more.
        for cut in [0, 1, head_len - 1, head_len, f.len - 1] {
            if cut < f.len {
                let mut part = raw[..cut].to_vec();
                assert_eq!(ws::parse_frame(&mut part, max), Ok(None), "cut {cut}");
            }
        }

        // Re-encoded, it parses back to the same frame.
        let mut again = ws::client_frame(raw[0], payload, mask);
        let minimal = 2
            + if masked { 4 } else { 0 }
            + match payload.len() {
                0..126 => 0,
                126..=0xffff => 2,
                _ => 8,
            };
        if masked && head_len == minimal {
            assert_eq!(again, raw);
        }
        let g = ws::parse_frame(&mut again, max).unwrap().unwrap();
        assert_eq!((g.fin, g.kind), (f.fin, f.kind));
        assert_eq!(&again[g.payload], payload);

        // Fragments, as the gateway reassembles them.
        match f.kind {
            Kind::Data { continuation } => {
                if continuation != message.is_some() {
                    break; // stray continuation, or a data frame inside a message
                }
                let mut m = message.take().unwrap_or_default();
                m.extend_from_slice(payload);
                if f.fin {
                    if let Ok((header, body)) = frame::decode_ws_message(&m, MAX_CLIENT_FRAME) {
                        assert_eq!(header.pack_len, m.len());
                        assert_eq!(body, &m[frame::HEADER_LEN..]);
                    }
                } else {
                    message = Some(m);
                }
            }
            Kind::Ping | Kind::Pong | Kind::Close => {}
        }
        offset += f.len;
    }
});
