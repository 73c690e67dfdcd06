//! Internal link messages between gateways and dispatchers (prost), and their framing on a TCP
//! stream: a 4-byte big-endian length, then one encoded [`LinkMessage`].
//!
//! Direction: a gateway dials a dispatcher and sends `Register`, then `Renew` periodically,
//! `Session` events, `Upstream` client messages and `RoomCounts`. The dispatcher sends `PushKeys`,
//! `RoomBatch`, `Broadcast` and `RoomCounts` (cluster totals) down; the gateway answers each push
//! that carries an `id` with an `Ack` once every shard has it queued.
//!
//! Push payloads (`frames`) are goim inner frames, concatenated (the body of an op-9 frame).

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;

use crate::{Error, Result};

/// Largest link message accepted by default (16 MiB, goim's gRPC limit).
pub const MAX_LINK_MESSAGE: usize = 16 << 20;

#[derive(Clone, PartialEq, Message)]
pub struct LinkMessage {
    #[prost(oneof = "Body", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9")]
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
