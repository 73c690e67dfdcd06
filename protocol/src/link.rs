//! Internal link messages between gateways and dispatchers (prost), and their framing on a TCP
//! stream: a 4-byte big-endian length, then one encoded [`LinkMessage`].
//!
//! Direction: a gateway dials a dispatcher and sends `Register`, then `Renew` periodically,
//! `Session` events, `Upstream` client messages and `RoomCounts`. The dispatcher sends `PushKeys`,
//! `RoomBatch`, `Broadcast` and `RoomCounts` (cluster totals) down; the gateway answers each push
//! that carries an `id` with an `Ack` once every shard has it queued.
//!
//! Push payloads (`frames`) are goim inner frames, concatenated (the body of an op-9 frame).
//!
//! **Link secret.** A dispatcher with `link_secrets` accepts only a `Register` that proves the
//! gateway knows one of them, without the secret crossing the wire: the gateway puts its clock
//! (`auth_unix_ms`), a fresh random `auth_nonce` and `auth_proof` = HMAC-SHA256(secret,
//! [`proof_input`]) in the `Register` ([`Register::prove`]); the dispatcher recomputes it for
//! each of its secrets in constant time ([`Register::proof_matches`]), then checks the clock is
//! within its window and the nonce was not seen before (a replayed `Register`). A refusal is
//! sent back as [`Refused`] with the reason before the link closes. The fields have new tags,
//! so peers without them still decode each other's messages (a dispatcher without secrets
//! ignores them).

use bytes::{Buf, BufMut, BytesMut};
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;

use crate::{Error, Result};

/// Largest link message accepted by default (16 MiB, goim's gRPC limit).
pub const MAX_LINK_MESSAGE: usize = 16 << 20;

#[derive(Clone, PartialEq, Message)]
pub struct LinkMessage {
    #[prost(oneof = "Body", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12")]
    pub body: Option<Body>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    #[prost(message, tag = "1")]
    Register(Register),
    #[prost(message, tag = "2")]
    Renew(Renew),
    #[prost(message, tag = "3")]
    Session(Session),
    #[prost(message, tag = "4")]
    PushKeys(PushKeys),
    #[prost(message, tag = "5")]
    RoomBatch(RoomBatch),
    #[prost(message, tag = "6")]
    Broadcast(Broadcast),
    #[prost(message, tag = "7")]
    Upstream(Upstream),
    #[prost(message, tag = "8")]
    RoomCounts(RoomCounts),
    #[prost(message, tag = "9")]
    Ack(Ack),
    #[prost(message, tag = "10")]
    Refused(Refused),
    #[prost(message, tag = "11")]
    RecoverRequest(RecoverRequest),
    #[prost(message, tag = "12")]
    RoomHistory(RoomHistory),
}

/// Gateway → dispatcher, first message on a link.
#[derive(Clone, PartialEq, Message)]
pub struct Register {
    #[prost(string, tag = "1")]
    pub gateway_id: String,
    /// Public addresses clients use (`nodes/weighted`).
    #[prost(string, repeated, tag = "2")]
    pub addrs: Vec<String>,
    #[prost(int32, tag = "3")]
    pub weight: i32,
    #[prost(uint64, tag = "4")]
    pub conn_count: u64,
    #[prost(uint64, tag = "5")]
    pub ip_count: u64,
    #[prost(bool, tag = "6")]
    pub offline: bool,
    /// Link secret: the gateway's clock when it signed, unix milliseconds (0: no proof).
    #[prost(uint64, tag = "7")]
    pub auth_unix_ms: u64,
    /// Link secret: 16 random bytes, fresh for every Register.
    #[prost(bytes = "vec", tag = "8")]
    pub auth_nonce: Vec<u8>,
    /// Link secret: HMAC-SHA256(secret, [`proof_input`]); empty: the gateway has no secret.
    #[prost(bytes = "vec", tag = "9")]
    pub auth_proof: Vec<u8>,
    /// How often the gateway renews, in milliseconds (0: not said; older gateways). The
    /// dispatcher shows a gateway that misses renewals offline from this.
    #[prost(uint64, tag = "10")]
    pub renew_ms: u64,
}

/// Dispatcher → gateway, then the link closes: why a `Register` was refused (a missing or
/// wrong link proof).
#[derive(Clone, PartialEq, Message)]
pub struct Refused {
    #[prost(string, tag = "1")]
    pub reason: String,
}

type HmacSha256 = Hmac<Sha256>;

/// What a link proof signs: a fixed label, the gateway id, the gateway's clock and its nonce,
/// so a proof is good for one gateway, one moment and one link only.
pub fn proof_input(gateway_id: &str, unix_ms: u64, nonce: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + gateway_id.len() + nonce.len());
    v.extend_from_slice(b"corecast-link-v1\0");
    v.extend_from_slice(gateway_id.as_bytes());
    v.push(0);
    v.extend_from_slice(&unix_ms.to_be_bytes());
    v.extend_from_slice(nonce);
    v
}

fn mac(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length")
}

impl Register {
    /// Signs this registration with the link secret (see the module comment). `nonce` must
    /// be fresh random bytes; `unix_ms` the gateway's clock.
    pub fn prove(&mut self, secret: &[u8], unix_ms: u64, nonce: [u8; 16]) {
        self.auth_unix_ms = unix_ms;
        self.auth_nonce = nonce.to_vec();
        let mut m = mac(secret);
        m.update(&proof_input(&self.gateway_id, unix_ms, &self.auth_nonce));
        self.auth_proof = m.finalize().into_bytes().to_vec();
    }

    /// Whether the proof was made with one of `secrets`. Every secret is tried (no early
    /// exit) and each comparison is constant-time.
    pub fn proof_matches<S: AsRef<[u8]>>(&self, secrets: &[S]) -> bool {
        let input = proof_input(&self.gateway_id, self.auth_unix_ms, &self.auth_nonce);
        let mut ok = false;
        for secret in secrets {
            let mut m = mac(secret.as_ref());
            m.update(&input);
            ok |= m.verify_slice(&self.auth_proof).is_ok();
        }
        ok
    }
}

/// Gateway → dispatcher, periodically: the registration is still alive.
#[derive(Clone, PartialEq, Message)]
pub struct Renew {
    #[prost(uint64, tag = "1")]
    pub conn_count: u64,
    #[prost(uint64, tag = "2")]
    pub ip_count: u64,
    #[prost(bool, tag = "3")]
    pub offline: bool,
}

/// Gateway → dispatcher: a connection authenticated (online) or went away (offline).
#[derive(Clone, PartialEq, Message)]
pub struct Session {
    #[prost(bool, tag = "1")]
    pub online: bool,
    #[prost(int64, tag = "2")]
    pub mid: i64,
    #[prost(string, tag = "3")]
    pub key: String,
    #[prost(string, repeated, tag = "4")]
    pub rooms: Vec<String>,
    #[prost(string, tag = "5")]
    pub platform: String,
    /// Identifies the connection on its gateway (shard, slot, generation), so that the offline
    /// event of a connection evicted by a newer one with the same key can be told apart from
    /// the newer one's online event.
    #[prost(uint64, tag = "6")]
    pub conn_id: u64,
}

/// Dispatcher → gateway: deliver to these keys, if `op` is in each connection's watch set.
#[derive(Clone, PartialEq, Message)]
pub struct PushKeys {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, repeated, tag = "2")]
    pub keys: Vec<String>,
    #[prost(int32, tag = "3")]
    pub op: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub frames: Vec<u8>,
}

/// Dispatcher → gateway: deliver to every member of the room (no op filter, as in goim).
#[derive(Clone, PartialEq, Message)]
pub struct RoomBatch {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub room: String,
    #[prost(bytes = "vec", tag = "3")]
    pub frames: Vec<u8>,
}

/// Dispatcher → gateway: deliver to every connection whose watch set holds `op`, at `speed`
/// connections per second on this gateway (0: as fast as possible).
#[derive(Clone, PartialEq, Message)]
pub struct Broadcast {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int32, tag = "2")]
    pub op: i32,
    #[prost(int32, tag = "3")]
    pub speed: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub frames: Vec<u8>,
}

/// Gateway → dispatcher: a client frame with an op the gateway does not handle itself.
#[derive(Clone, PartialEq, Message)]
pub struct Upstream {
    #[prost(int64, tag = "1")]
    pub mid: i64,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(int32, tag = "3")]
    pub ver: i32,
    #[prost(int32, tag = "4")]
    pub op: i32,
    #[prost(int32, tag = "5")]
    pub seq: i32,
    #[prost(bytes = "vec", tag = "6")]
    pub body: Vec<u8>,
}

/// Room online counts: gateway → dispatcher (this gateway's), dispatcher → gateway (cluster
/// totals, used in heartbeat replies).
#[derive(Clone, PartialEq, Message)]
pub struct RoomCounts {
    #[prost(map = "string, int32", tag = "1")]
    pub counts: std::collections::HashMap<String, i32>,
}

/// Gateway → dispatcher: a client asked for what `room` got after offset `since` (op 26). Every
/// linked dispatcher gets it; each answers with a [`RoomHistory`].
#[derive(Clone, PartialEq, Message)]
pub struct RecoverRequest {
    /// The asking connection ([`conn_id`](RoomHistory::conn_id) comes back in the answer).
    #[prost(uint64, tag = "1")]
    pub conn_id: u64,
    #[prost(string, tag = "2")]
    pub room: String,
    #[prost(uint32, tag = "3")]
    pub since: u32,
    /// The most bytes of missed frames the gateway takes for this connection (half its
    /// outbound cap); a larger answer is TOO_OLD (it must also fit one link message).
    #[prost(uint64, tag = "4")]
    pub max_bytes: u64,
}

/// What a [`RoomHistory`] says.
pub mod history_status {
    /// `frames` holds every message after `since`, in order (maybe none).
    pub const FOUND: i32 = 0;
    /// Messages after `since` were dropped from the history (too many or too old), or `since`
    /// is not an offset of this history (from before a restart); `detail` says which.
    pub const TOO_OLD: i32 = 1;
    /// This dispatcher holds no history for the room (another may).
    pub const UNKNOWN: i32 = 2;
}

/// Dispatcher → gateway: the answer to a [`RecoverRequest`]. It travels in the same ordered
/// queue as the room batches (and is acknowledged like them), so every batch sent before it
/// holds offsets up to `newest` and every batch after it holds later ones.
#[derive(Clone, PartialEq, Message)]
pub struct RoomHistory {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub conn_id: u64,
    #[prost(string, tag = "3")]
    pub room: String,
    /// One of [`history_status`].
    #[prost(int32, tag = "4")]
    pub status: i32,
    /// The missed messages as goim inner frames, `seq` = offset.
    #[prost(bytes = "vec", tag = "5")]
    pub frames: Vec<u8>,
    /// The room's newest offset (0 with no message held).
    #[prost(uint32, tag = "6")]
    pub newest: u32,
    /// For `TOO_OLD`: why, in words for the client.
    #[prost(string, tag = "7")]
    pub detail: String,
}

/// Gateway → dispatcher: the push with this id is queued on every shard concerned.
#[derive(Clone, PartialEq, Message)]
pub struct Ack {
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

impl Body {
    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Register(_) => "Register",
            Body::Renew(_) => "Renew",
            Body::Session(_) => "Session",
            Body::PushKeys(_) => "PushKeys",
            Body::RoomBatch(_) => "RoomBatch",
            Body::Broadcast(_) => "Broadcast",
            Body::Upstream(_) => "Upstream",
            Body::RoomCounts(_) => "RoomCounts",
            Body::Ack(_) => "Ack",
            Body::Refused(_) => "Refused",
            Body::RecoverRequest(_) => "RecoverRequest",
            Body::RoomHistory(_) => "RoomHistory",
        }
    }
}

impl From<Body> for LinkMessage {
    fn from(body: Body) -> Self {
        LinkMessage { body: Some(body) }
    }
}

/// Appends one length-prefixed message to `out`.
pub fn encode(msg: &LinkMessage, out: &mut BytesMut) {
    let len = msg.encoded_len();
    out.reserve(4 + len);
    out.put_u32(len as u32);
    msg.encode(out).expect("reserved enough room");
}

/// Takes one message off the front of `buf` when it is whole. `Ok(None)`: read more.
/// A length over `max` is an error before the body arrives.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Body>> {
    let Some(head) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*head) as usize;
    if len > max {
        return Err(Error::LinkTooLong { len, max });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len);
    let msg = LinkMessage::decode(body.freeze()).map_err(|e| Error::LinkDecode(e.to_string()))?;
    msg.body.map(Some).ok_or(Error::LinkEmpty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let bodies = vec![
            Body::Register(Register {
                gateway_id: "g1".into(),
                addrs: vec!["127.0.0.1".into()],
                weight: 10,
                conn_count: 5,
                ip_count: 2,
                offline: false,
                auth_unix_ms: 1_700_000_000_000,
                auth_nonce: vec![7; 16],
                auth_proof: vec![1; 32],
                renew_ms: 500,
            }),
            Body::Renew(Renew {
                conn_count: 1,
                ip_count: 1,
                offline: true,
            }),
            Body::Session(Session {
                online: true,
                mid: 9,
                key: "k".into(),
                rooms: vec!["live://1".into()],
                platform: "web".into(),
                conn_id: 7,
            }),
            Body::PushKeys(PushKeys {
                id: 1,
                keys: vec!["a".into(), "b".into()],
                op: 1000,
                frames: vec![1, 2, 3],
            }),
            Body::RoomBatch(RoomBatch {
                id: 2,
                room: "live://1".into(),
                frames: vec![4; 100],
            }),
            Body::Broadcast(Broadcast {
                id: 3,
                op: 1000,
                speed: 50,
                frames: vec![5],
            }),
            Body::Upstream(Upstream {
                mid: 1,
                key: "k".into(),
                ver: 1,
                op: 4,
                seq: 3,
                body: b"x".to_vec(),
            }),
            Body::RoomCounts(RoomCounts {
                counts: [("live://1".to_string(), 3)].into_iter().collect(),
            }),
            Body::Ack(Ack { id: 4 }),
            Body::Refused(Refused {
                reason: "wrong link proof".into(),
            }),
            Body::RecoverRequest(RecoverRequest {
                conn_id: 11,
                room: "live://1".into(),
                since: u32::MAX,
                max_bytes: 1 << 17,
            }),
            Body::RoomHistory(RoomHistory {
                id: 5,
                conn_id: 11,
                room: "live://1".into(),
                status: history_status::TOO_OLD,
                frames: vec![6; 20],
                newest: 9,
                detail: "too old".into(),
            }),
        ];
        let mut buf = BytesMut::new();
        for b in &bodies {
            encode(&LinkMessage::from(b.clone()), &mut buf);
        }
        for b in bodies {
            assert_eq!(decode(&mut buf, MAX_LINK_MESSAGE).unwrap(), Some(b));
        }
        assert!(buf.is_empty());
        assert_eq!(decode(&mut buf, MAX_LINK_MESSAGE).unwrap(), None);
    }

    #[test]
    fn link_proofs_verify_with_the_right_secret_only() {
        let mut reg = Register {
            gateway_id: "g1".into(),
            ..Default::default()
        };
        assert!(!reg.proof_matches(&["s1"]), "no proof");
        reg.prove(b"s1", 1_000, [9; 16]);
        assert_eq!(reg.auth_proof.len(), 32);
        assert!(reg.proof_matches(&["s1"]));
        assert!(
            reg.proof_matches(&["old", "s1"]),
            "either of two (rotation)"
        );
        assert!(!reg.proof_matches(&["s2"]));
        assert!(!reg.proof_matches::<&str>(&[]));
        // The proof binds the id, the clock and the nonce.
        for tamper in [
            |r: &mut Register| r.gateway_id = "g2".into(),
            |r: &mut Register| r.auth_unix_ms += 1,
            |r: &mut Register| r.auth_nonce[0] ^= 1,
        ] {
            let mut r = reg.clone();
            tamper(&mut r);
            assert!(!r.proof_matches(&["s1"]));
        }
    }

    #[test]
    fn a_register_with_new_fields_decodes_as_an_old_one() {
        // An older peer's Register has none of tags 7-10; a newer one's extra fields are
        // skipped by an older decoder (prost ignores unknown tags).
        let mut full = Register {
            gateway_id: "g".into(),
            weight: 3,
            renew_ms: 500,
            ..Default::default()
        };
        full.prove(b"s", 5, [1; 16]);
        #[derive(Clone, PartialEq, Message)]
        struct OldRegister {
            #[prost(string, tag = "1")]
            gateway_id: String,
            #[prost(int32, tag = "3")]
            weight: i32,
        }
        let old = OldRegister::decode(full.encode_to_vec().as_slice()).unwrap();
        assert_eq!((old.gateway_id.as_str(), old.weight), ("g", 3));
        let back = Register::decode(old.encode_to_vec().as_slice()).unwrap();
        assert!(back.auth_proof.is_empty() && back.renew_ms == 0);
    }

    #[test]
    fn partial_messages_wait_and_bad_ones_fail() {
        let mut full = BytesMut::new();
        encode(&Body::Ack(Ack { id: 77 }).into(), &mut full);
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut part, MAX_LINK_MESSAGE).unwrap(), None);
        }
        let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            decode(&mut huge, 1024),
            Err(Error::LinkTooLong { .. })
        ));
        let mut garbage = BytesMut::from(&[0, 0, 0, 3, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode(&mut garbage, 1024),
            Err(Error::LinkDecode(_))
        ));
        let mut empty = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(decode(&mut empty, 1024), Err(Error::LinkEmpty));
    }
}
