//! WebSocket upgrade requests: `ws::parse_upgrade`, and the HTTP error response for a refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::ws;

fuzz_target!(|data: &[u8]| {
    match ws::parse_upgrade(data) {
        Ok(Some((up, len))) => {
            assert!(len <= data.len() && len <= ws::MAX_HANDSHAKE);
            let _ = ws::accept_response(&up);
        }
        Ok(None) => {}
        Err(err) => {
            let resp = ws::reject_response(&err);
            assert!(resp.starts_with(b"HTTP/1.1 4"));
        }
    }
});
