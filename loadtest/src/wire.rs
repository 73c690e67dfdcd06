//! What a client sends, byte for byte: goim frames (auth, heartbeat), the WebSocket upgrade
//! request, masked client frames, and the check of the server's `101` answer.

use protocol::frame;
use protocol::op;

/// `ver` the client writes (goim's clients use 1).
const VER: i16 = 1;
/// A heartbeat frame: 16 bytes, no body.
pub const HEARTBEAT_LEN: usize = frame::HEADER_LEN;
/// A masked WebSocket frame carrying one heartbeat: 2 header + 4 mask + 16 payload bytes.
pub const WS_HEARTBEAT_LEN: usize = 2 + 4 + HEARTBEAT_LEN;
/// Largest HTTP answer to an upgrade the client reads.
pub const MAX_UPGRADE_RESPONSE: usize = 8192;

/// A small non-cryptographic generator (xorshift64*) for WebSocket keys and masks: RFC 6455
/// asks for masks a proxy cannot predict, not for secrets.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// A seed that differs between threads and runs.
    pub fn seeded(thread: usize) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(t ^ (thread as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

/// The op-7 frame carrying `token`.
pub fn auth(token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame::HEADER_LEN + token.len());
    frame::encode(&mut out, VER, op::AUTH, 1, token.as_bytes());
    out
}

/// The op-2 frame.
pub fn heartbeat() -> [u8; HEARTBEAT_LEN] {
    frame::header_bytes(0, VER, op::HEARTBEAT, 1)
}

/// One masked, unfragmented binary WebSocket frame holding `payload`.
pub fn ws_masked(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    protocol::ws::client_frame(0x82, payload, mask)
}

/// A heartbeat as one masked WebSocket frame.
pub fn ws_heartbeat(mask: [u8; 4]) -> [u8; WS_HEARTBEAT_LEN] {
    let v = ws_masked(&heartbeat(), mask);
    let mut out = [0u8; WS_HEARTBEAT_LEN];
    out.copy_from_slice(&v);
    out
}

/// A `Sec-WebSocket-Key`: 16 random bytes in base64 (24 characters).
pub fn ws_key(rng: &mut Rng) -> [u8; 24] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
    raw[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
    base64_16(&raw)
}

fn base64_16(raw: &[u8; 16]) -> [u8; 24] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = [b'='; 24];
    for (i, chunk) in raw.chunks(3).enumerate() {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let chars = chunk.len() + 1;
        for k in 0..chars {
            out[i * 4 + k] = ALPHABET[(n >> (18 - 6 * k) & 63) as usize];
        }
    }
    out
}

/// The upgrade request for `ws://host/sub`.
pub fn ws_upgrade(host: &str, key: &[u8; 24]) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        protocol::ws::PATH,
        String::from_utf8_lossy(key)
    )
    .into_bytes()
}

/// Checks the server's answer to an upgrade. `Ok(None)`: incomplete, read more;
/// `Ok(Some(n))`: upgraded, and the answer took `n` bytes (what follows is WebSocket frames);
/// `Err`: why the upgrade failed.
pub fn ws_upgrade_response(buf: &[u8], key: &[u8; 24]) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_UPGRADE_RESPONSE => {
            return Err(format!("answer longer than {MAX_UPGRADE_RESPONSE} bytes"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed HTTP answer: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(format!("status {code} {}", resp.reason.unwrap_or("")));
    }
    let expected = tungstenite::handshake::derive_accept_key(key);
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Accept"))
        .map(|h| h.value);
    if accept != Some(expected.as_bytes()) {
        return Err("wrong Sec-WebSocket-Accept".into());
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_frames_parse_back() {
        let mut rng = Rng::new(7);
        for len in [0usize, 16, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut f = ws_masked(&payload, rng.mask());
            let parsed = protocol::ws::parse_frame(&mut f, 1 << 20).unwrap().unwrap();
            assert!(parsed.fin);
            assert_eq!(parsed.len, f.len());
            assert_eq!(&f[parsed.payload], &payload[..], "len {len}");
        }
        let mut hb = ws_heartbeat([1, 2, 3, 4]).to_vec();
        let parsed = protocol::ws::parse_frame(&mut hb, 4112).unwrap().unwrap();
        let (h, body) = protocol::frame::decode_ws_message(&hb[parsed.payload], 4112).unwrap();
        assert_eq!((h.op, body.len()), (op::HEARTBEAT, 0));
    }

    #[test]
    fn base64_matches_rfc_4648() {
        // RFC 6455's sample nonce: "the sample nonce" -> dGhlIHNhbXBsZSBub25jZQ==
        assert_eq!(&base64_16(b"the sample nonce"), b"dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn upgrade_round_trips_through_the_gateway_parser() {
        let key = ws_key(&mut Rng::new(3));
        let req = ws_upgrade("127.0.0.1:3102", &key);
        let (up, n) = protocol::ws::parse_upgrade(&req).unwrap().unwrap();
        assert_eq!(n, req.len());
        let mut resp = protocol::ws::accept_response(&up);
        let len = resp.len();
        resp.extend_from_slice(b"\x82\x00");
        assert_eq!(ws_upgrade_response(&resp, &key), Ok(Some(len)));
        assert_eq!(ws_upgrade_response(&resp[..len - 1], &key), Ok(None));
        let other = ws_key(&mut Rng::new(4));
        assert_eq!(
            ws_upgrade_response(&resp, &other),
            Err("wrong Sec-WebSocket-Accept".into())
        );
        let refused = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(
            ws_upgrade_response(refused, &key)
                .unwrap_err()
                .contains("404")
        );
    }
}
