//! Operation codes: goim v2's 0-17 (reference §1.2) and corecast's additions.
//!
//! goim-demo (a goim fork) uses 18-21, so corecast's own ops start at 22. Application ops
//! (pushes) are by convention 1000 and above; nothing here reserves them.

pub const HANDSHAKE: i32 = 0;
pub const HANDSHAKE_REPLY: i32 = 1;
pub const HEARTBEAT: i32 = 2;
pub const HEARTBEAT_REPLY: i32 = 3;
pub const SEND_MSG: i32 = 4;
pub const SEND_MSG_REPLY: i32 = 5;
/// goim defines it (server → client) and never sends it. corecast sends it, with a UTF-8 reason
/// as body, just before the server closes a TCP connection on purpose (bad token, limits,
/// eviction by a newer connection with the same key, drain).
pub const DISCONNECT_REPLY: i32 = 6;
pub const AUTH: i32 = 7;
pub const AUTH_REPLY: i32 = 8;
pub const RAW: i32 = 9;
pub const PROTO_READY: i32 = 10;
pub const PROTO_FINISH: i32 = 11;
pub const CHANGE_ROOM: i32 = 12;
pub const CHANGE_ROOM_REPLY: i32 = 13;
pub const SUB: i32 = 14;
pub const SUB_REPLY: i32 = 15;
pub const UNSUB: i32 = 16;
pub const UNSUB_REPLY: i32 = 17;

/// goim-demo's ops, reserved so corecast never clashes with them.
pub const GOIM_DEMO_SYNC: i32 = 18;
pub const GOIM_DEMO_SYNC_REPLY: i32 = 19;
pub const GOIM_DEMO_MESSAGE_ACK: i32 = 20;
pub const GOIM_DEMO_MESSAGE_ACK_REPLY: i32 = 21;

/// corecast: join one more room, keeping the others. Body: the room key (`type://id`).
pub const JOIN_ROOM: i32 = 22;
/// Reply to [`JOIN_ROOM`]. Body: the room key echoed on success, or `error: <reason>` when the
/// join was refused (room cap reached, empty room key).
pub const JOIN_ROOM_REPLY: i32 = 23;
/// corecast: leave one room, keeping the others. Body: the room key.
pub const LEAVE_ROOM: i32 = 24;
/// Reply to [`LEAVE_ROOM`]. Body: the room key echoed, or `error: <reason>` when the connection
/// was not in that room.
pub const LEAVE_ROOM_REPLY: i32 = 25;

/// corecast: join a room and get what was pushed to it after an offset (the `seq` of the last
/// room message the client received), then its live stream. Body: `"<offset> <room>"`.
pub const RECOVER: i32 = 26;
/// Reply to [`RECOVER`]. Body: `"ok <count> <newest offset> <room>"`, followed by the `count`
/// missed messages in order; or `error: <reason>` (the offset is too old for the room's history,
/// no history is held, the body is malformed, the room cap is reached).
pub const RECOVER_REPLY: i32 = 27;

/// Prefix of a refusal in a [`JOIN_ROOM_REPLY`] / [`LEAVE_ROOM_REPLY`] body.
pub const REPLY_ERROR_PREFIX: &[u8] = b"error: ";

/// A human-readable name for logs.
pub fn name(op: i32) -> &'static str {
    match op {
        HANDSHAKE => "handshake",
        HANDSHAKE_REPLY => "handshake_reply",
        HEARTBEAT => "heartbeat",
        HEARTBEAT_REPLY => "heartbeat_reply",
        SEND_MSG => "send_msg",
        SEND_MSG_REPLY => "send_msg_reply",
        DISCONNECT_REPLY => "disconnect_reply",
        AUTH => "auth",
        AUTH_REPLY => "auth_reply",
        RAW => "raw",
        PROTO_READY => "proto_ready",
        PROTO_FINISH => "proto_finish",
        CHANGE_ROOM => "change_room",
        CHANGE_ROOM_REPLY => "change_room_reply",
        SUB => "sub",
        SUB_REPLY => "sub_reply",
        UNSUB => "unsub",
        UNSUB_REPLY => "unsub_reply",
        GOIM_DEMO_SYNC => "goim_demo_sync",
        GOIM_DEMO_SYNC_REPLY => "goim_demo_sync_reply",
        GOIM_DEMO_MESSAGE_ACK => "goim_demo_message_ack",
        GOIM_DEMO_MESSAGE_ACK_REPLY => "goim_demo_message_ack_reply",
        JOIN_ROOM => "join_room",
        JOIN_ROOM_REPLY => "join_room_reply",
        LEAVE_ROOM => "leave_room",
        LEAVE_ROOM_REPLY => "leave_room_reply",
        RECOVER => "recover",
        RECOVER_REPLY => "recover_reply",
        _ => "application",
    }
}

/// Parses a Sub/Unsub body: comma-separated decimal ops. Like goim, an unparsable body yields
/// `None` and the caller ignores it (the reply still echoes the body).
pub fn parse_op_list(body: &[u8]) -> Option<Vec<i32>> {
    let text = std::str::from_utf8(body).ok()?;
    if text.trim().is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|s| s.trim().parse::<i32>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corecast_ops_clash_with_nothing_goim_defines() {
        for op in [
            JOIN_ROOM,
            JOIN_ROOM_REPLY,
            LEAVE_ROOM,
            LEAVE_ROOM_REPLY,
            RECOVER,
            RECOVER_REPLY,
        ] {
            assert!(
                op > GOIM_DEMO_MESSAGE_ACK_REPLY,
                "op {op} clashes with goim or goim-demo"
            );
            assert!(op < 1000, "op {op} clashes with application ops");
        }
    }

    #[test]
    fn every_goim_op_has_its_v2_number() {
        let expected = [
            (HANDSHAKE, 0),
            (HANDSHAKE_REPLY, 1),
            (HEARTBEAT, 2),
            (HEARTBEAT_REPLY, 3),
            (SEND_MSG, 4),
            (SEND_MSG_REPLY, 5),
            (DISCONNECT_REPLY, 6),
            (AUTH, 7),
            (AUTH_REPLY, 8),
            (RAW, 9),
            (PROTO_READY, 10),
            (PROTO_FINISH, 11),
            (CHANGE_ROOM, 12),
            (CHANGE_ROOM_REPLY, 13),
            (SUB, 14),
            (SUB_REPLY, 15),
            (UNSUB, 16),
            (UNSUB_REPLY, 17),
        ];
        for (op, n) in expected {
            assert_eq!(op, n);
            assert_ne!(name(op), "application");
        }
        assert_eq!(name(1000), "application");
    }

    #[test]
    fn op_lists_parse_like_goim() {
        assert_eq!(parse_op_list(b"1000,1001"), Some(vec![1000, 1001]));
        assert_eq!(parse_op_list(b"2000"), Some(vec![2000]));
        assert_eq!(parse_op_list(b" 1 , 2 "), Some(vec![1, 2]));
        assert_eq!(parse_op_list(b""), Some(vec![]));
        assert_eq!(parse_op_list(b"1,x"), None);
        assert_eq!(parse_op_list(b"99999999999"), None);
        assert_eq!(parse_op_list(&[0xff, 0xfe]), None);
    }
}
