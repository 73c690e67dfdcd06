//! WebSocket upgrade requests: `ws::parse_upgrade` on the input. An accepted request is at most
//! `MAX_HANDSHAKE` bytes, parses the same on its own (what follows it is already frames), every
//! shorter prefix of it asks for more, and its 101 response carries a 28-character accept key.
//! A refusal gets a 4xx response whose Content-Length is its body's length and whose body names
//! the error. Incomplete input is never past `MAX_HANDSHAKE`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::ws;

fuzz_target!(|data: &[u8]| {
    match ws::parse_upgrade(data) {
        Ok(Some((up, len))) => {
            assert!(len <= data.len() && len <= ws::MAX_HANDSHAKE);
            assert_eq!(ws::parse_upgrade(&data[..len]), Ok(Some((up.clone(), len))));
            for cut in [0, len / 2, len - 1] {
                assert_eq!(ws::parse_upgrade(&data[..cut]), Ok(None), "cut {cut}");
            }
            assert_eq!(up.accept.len(), 28);
            let resp = String::from_utf8(ws::accept_response(&up)).unwrap();
            assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(resp.ends_with(&format!("Sec-WebSocket-Accept: {}\r\n\r\n", up.accept)));
        }
        Ok(None) => assert!(data.len() < ws::MAX_HANDSHAKE),
        Err(err) => {
            let resp = ws::reject_response(&err);
            assert!(resp.starts_with(b"HTTP/1.1 4"));
            let resp = String::from_utf8(resp).expect("responses are UTF-8");
            let (head, body) = resp.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
            assert_eq!(body, format!("{err}\n"));
            assert!(!head.contains('\0'));
        }
    }
});
