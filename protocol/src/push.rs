//! goim's queue message, `goim.logic.PushMsg` (the Kafka value between logic and job), with its
//! field numbers unchanged so a goim logic and a corecast dispatcher can share a topic, and the
//! message-key rule that keeps one room in one partition.

use prost::Message;

use crate::{Error, Result};

/// goim's `PushMsg.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PushType {
    /// To keys on one gateway (`server`).
    Push = 0,
    /// To every member of `room`.
    Room = 1,
    /// To every connection whose watch set holds `operation`, paced by `speed`.
    Broadcast = 2,
}

/// `goim.logic.PushMsg`: field numbers as goim's `api/logic/logic.proto`.
#[derive(Clone, PartialEq, Message)]
pub struct PushMsg {
    #[prost(enumeration = "PushType", tag = "1")]
    pub r#type: i32,
    #[prost(int32, tag = "2")]
    pub operation: i32,
    #[prost(int32, tag = "3")]
    pub speed: i32,
    #[prost(string, tag = "4")]
    pub server: String,
    #[prost(string, tag = "5")]
    pub room: String,
    #[prost(string, repeated, tag = "6")]
    pub keys: Vec<String>,
    #[prost(bytes = "vec", tag = "7")]
    pub msg: Vec<u8>,
}

impl PushMsg {
    /// The routing mode; an unknown value is an error naming it.
    pub fn kind(&self) -> Result<PushType> {
        PushType::try_from(self.r#type)
            .map_err(|_| Error::PushDecode(format!("unknown type {}", self.r#type)))
    }

    /// goim's message key: PUSH → the first key, ROOM → the room key, BROADCAST → the
    /// operation in decimal. One room (or one first key) therefore stays in one partition.
    pub fn queue_key(&self) -> String {
        match self.kind() {
            Ok(PushType::Push) => self.keys.first().cloned().unwrap_or_default(),
            Ok(PushType::Room) => self.room.clone(),
            Ok(PushType::Broadcast) | Err(_) => self.operation.to_string(),
        }
    }

    /// Protobuf bytes (the Kafka value).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes a Kafka value; malformed bytes or an unknown type are an error.
    pub fn from_bytes(buf: &[u8]) -> Result<PushMsg> {
        let msg = PushMsg::decode(buf).map_err(|e| Error::PushDecode(e.to_string()))?;
        msg.kind()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keys_follow_goim() {
        let room = PushMsg {
            r#type: PushType::Room as i32,
            operation: 1000,
            room: "live://1".into(),
            msg: b"{\"test\":1}".to_vec(),
            ..Default::default()
        };
        assert_eq!(PushMsg::from_bytes(&room.to_bytes()).unwrap(), room);
        assert_eq!(room.queue_key(), "live://1");
        let push = PushMsg {
            r#type: PushType::Push as i32,
            server: "g1".into(),
            keys: vec!["k2".into(), "k1".into()],
            ..Default::default()
        };
        assert_eq!(push.queue_key(), "k2");
        let all = PushMsg {
            r#type: PushType::Broadcast as i32,
            operation: 1001,
            speed: 10,
            ..Default::default()
        };
        assert_eq!(all.queue_key(), "1001");
    }

    #[test]
    fn goim_bytes_decode() {
        // Hand-encoded as goim's Go code would: type=1 (field 1 varint), operation=1000
        // (field 2), room="a://b" (field 5), msg="x" (field 7).
        let bytes = [
            0x08, 0x01, 0x10, 0xe8, 0x07, 0x2a, 0x05, b'a', b':', b'/', b'/', b'b', 0x3a, 0x01,
            b'x',
        ];
        let m = PushMsg::from_bytes(&bytes).unwrap();
        assert_eq!(m.kind().unwrap(), PushType::Room);
        assert_eq!(
            (m.operation, m.room.as_str(), m.msg.as_slice()),
            (1000, "a://b", &b"x"[..])
        );
    }

    #[test]
    fn bad_bytes_and_unknown_type_are_errors() {
        assert!(PushMsg::from_bytes(&[0xff, 0xff, 0xff]).is_err());
        let err = PushMsg::from_bytes(&[0x08, 0x07]).unwrap_err();
        assert!(err.to_string().contains("unknown type 7"), "{err}");
    }
}
