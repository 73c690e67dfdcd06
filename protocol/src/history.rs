//! Room history offsets and the recovery ops' bodies.
//!
//! Every room message gets a per-room offset from the dispatcher that batches the room, carried
//! in the `seq` field of its goim frame (goim leaves `seq` 0 in pushes and its clients ignore
//! it, so nothing changes for them). Offsets are `u32` and compared with serial-number
//! arithmetic (RFC 1982), so they may wrap; a room's first offset is random each time a
//! dispatcher starts numbering it (a start, a room forgotten after idling, a Kafka partition
//! moving), so an offset remembered from before falls outside the new history (but for a
//! 2^-32-ish chance) and is answered "not in the history" instead of naming other messages.
//!
//! A client that comes back sends [`op::RECOVER`](crate::op::RECOVER) with
//! `"<last offset> <room>"`; the server answers [`op::RECOVER_REPLY`](crate::op::RECOVER_REPLY)
//! with `"ok <count> <newest> <room>"` followed by the `count` messages it missed, in order, then
//! the room's live stream; or with `"error: <reason>"` (too old, no history, bad request), after
//! which the live stream still follows when the room was joined.

use crate::frame::{self, HEADER_LEN};
use crate::{Error, Result};

/// Whether offset `a` comes after offset `b` (serial-number arithmetic: within 2^31).
pub fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Parses a Recover body: `"<offset> <room>"` (decimal `u32`, one space, the room key).
pub fn parse_recover(body: &[u8]) -> Result<(u32, &str)> {
    let text =
        std::str::from_utf8(body).map_err(|_| Error::BadRecover("the body is not UTF-8".into()))?;
    let Some((offset, room)) = text.split_once(' ') else {
        return Err(Error::BadRecover(format!(
            "{text:?} is not \"<offset> <room>\""
        )));
    };
    let offset = offset.parse::<u32>().map_err(|_| {
        Error::BadRecover(format!(
            "offset {offset:?} is not a decimal number from 0 to 4294967295"
        ))
    })?;
    if room.is_empty() {
        return Err(Error::BadRecover("empty room key".into()));
    }
    Ok((offset, room))
}

/// A Recover body.
pub fn recover_body(offset: u32, room: &str) -> Vec<u8> {
    format!("{offset} {room}").into_bytes()
}

/// A successful RecoverReply: `count` missed messages follow; `newest` is the room's newest
/// offset when the history was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub count: u32,
    pub newest: u32,
    pub room: String,
}

/// The body of a successful RecoverReply.
pub fn recovered_body(count: u32, newest: u32, room: &str) -> Vec<u8> {
    format!("ok {count} {newest} {room}").into_bytes()
}

/// Parses a RecoverReply body (for clients): `Ok` on `ok ...`, `Err(reason)` on `error: ...`.
pub fn parse_recover_reply(body: &[u8]) -> std::result::Result<Recovered, String> {
    let text = String::from_utf8_lossy(body);
    if let Some(reason) = text.strip_prefix("error: ") {
        return Err(reason.to_string());
    }
    let mut parts = text.splitn(4, ' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ok"), Some(count), Some(newest), Some(room)) => {
            match (count.parse(), newest.parse()) {
                (Ok(count), Ok(newest)) => Ok(Recovered {
                    count,
                    newest,
                    room: room.to_string(),
                }),
                _ => Err(format!("unreadable reply {text:?}")),
            }
        }
        _ => Err(format!("unreadable reply {text:?}")),
    }
}

/// Sets the `seq` of each inner frame in `frames` to consecutive offsets from `first`; returns
/// how many frames there were. `frames` must be well formed (see [`frame::count_inner_frames`]).
pub fn number_frames(frames: &mut [u8], first: u32) -> Result<u32> {
    let mut at = 0;
    let mut n = 0u32;
    while at < frames.len() {
        let len = inner_len(frames, at)?;
        frames[at + 12..at + 16].copy_from_slice(&first.wrapping_add(n).to_be_bytes());
        at += len;
        n += 1;
    }
    Ok(n)
}

/// The (offset, byte range) of each inner frame in `frames`, in order.
pub fn offsets(frames: &[u8]) -> Result<Vec<(u32, std::ops::Range<usize>)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < frames.len() {
        let len = inner_len(frames, at)?;
        let mut seq = [0u8; 4];
        seq.copy_from_slice(&frames[at + 12..at + 16]);
        out.push((u32::from_be_bytes(seq), at..at + len));
        at += len;
    }
    Ok(out)
}

/// The offset of the last inner frame, if any (a shard notes what it delivered last).
pub fn last_offset(frames: &[u8]) -> Option<u32> {
    let mut at = 0;
    let mut last = None;
    while at < frames.len() {
        let len = inner_len(frames, at).ok()?;
        let mut seq = [0u8; 4];
        seq.copy_from_slice(&frames[at + 12..at + 16]);
        last = Some(u32::from_be_bytes(seq));
        at += len;
    }
    last
}

fn inner_len(frames: &[u8], at: usize) -> Result<usize> {
    let head = frames[at..]
        .first_chunk::<HEADER_LEN>()
        .ok_or(Error::BadInnerFrame {
            offset: at,
            reason: "truncated header",
        })?;
    let header =
        frame::decode_header(head, i32::MAX as usize).map_err(|_| Error::BadInnerFrame {
            offset: at,
            reason: "bad packLen or headerLen",
        })?;
    if frames.len() - at < header.pack_len {
        return Err(Error::BadInnerFrame {
            offset: at,
            reason: "packLen runs past the end",
        });
    }
    Ok(header.pack_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_compare_across_the_wrap() {
        assert!(after(2, 1));
        assert!(!after(1, 1));
        assert!(!after(1, 2));
        assert!(after(0, u32::MAX));
        assert!(after(5, u32::MAX - 5));
        assert!(!after(u32::MAX - 5, 5));
    }

    #[test]
    fn recover_bodies_parse_and_name_what_is_wrong() {
        assert_eq!(parse_recover(b"17 live://1000"), Ok((17, "live://1000")));
        assert_eq!(parse_recover(b"0 a b"), Ok((0, "a b")));
        assert_eq!(
            parse_recover(&recover_body(u32::MAX, "live://x")),
            Ok((u32::MAX, "live://x"))
        );
        for (body, needle) in [
            (&b"17"[..], "is not \"<offset> <room>\""),
            (b"x live://1", "offset \"x\""),
            (b"-1 live://1", "offset \"-1\""),
            (b"4294967296 live://1", "offset \"4294967296\""),
            (b"5 ", "empty room key"),
            (b"\xff\xfe", "not UTF-8"),
            (b"", "is not"),
        ] {
            let e = parse_recover(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{body:?}: {e}");
            assert!(e.starts_with("bad Recover body"), "{e}");
        }
    }

    #[test]
    fn replies_round_trip() {
        let body = recovered_body(500, 4_000_000_000, "live://a b");
        assert_eq!(
            parse_recover_reply(&body),
            Ok(Recovered {
                count: 500,
                newest: 4_000_000_000,
                room: "live://a b".into()
            })
        );
        assert_eq!(
            parse_recover_reply(b"error: too old"),
            Err("too old".to_string())
        );
        assert!(parse_recover_reply(b"ok x 1 r").is_err());
        assert!(parse_recover_reply(b"what").is_err());
    }

    #[test]
    fn frames_are_numbered_in_place_and_read_back() {
        let mut frames = Vec::new();
        for body in [&b"a"[..], b"bb", b""] {
            frame::encode(&mut frames, 1, 1000, 0, body);
        }
        assert_eq!(number_frames(&mut frames, u32::MAX), Ok(3));
        let got = offsets(&frames).unwrap();
        assert_eq!(
            got.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![u32::MAX, 0, 1]
        );
        assert_eq!(got[1].1, 17..35);
        assert_eq!(&frames[got[1].1.clone()][HEADER_LEN..], b"bb");
        assert_eq!(last_offset(&frames), Some(1));
        assert_eq!(last_offset(&[]), None);
        // The rest of each header is untouched.
        let mut plain = Vec::new();
        frame::encode(&mut plain, 1, 1000, 7, b"a");
        assert_eq!(
            (&frames[..12], &frames[16..17]),
            (&plain[..12], &plain[16..])
        );
        assert_eq!(&frames[12..16], &u32::MAX.to_be_bytes());
    }

    #[test]
    fn malformed_frames_are_refused_not_numbered() {
        let mut frames = Vec::new();
        frame::encode(&mut frames, 1, 1000, 0, b"abc");
        let mut cut = frames[..frames.len() - 1].to_vec();
        assert!(number_frames(&mut cut, 1).is_err());
        assert!(offsets(&frames[..10]).is_err());
        assert_eq!(last_offset(&frames[..10]), None);
    }
}
