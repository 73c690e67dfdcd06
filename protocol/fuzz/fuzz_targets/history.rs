//! Room history: `history::parse_recover` on the input (what parses must format back to the same
//! offset and room), `parse_recover_reply` (never panics), and, when the input is well-formed
//! inner frames, `number_frames` from an offset taken from the input: every frame gets the next
//! offset (across the wrap), read back by `offsets` and `last_offset`, and nothing but the `seq`
//! fields changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{frame, history};

fuzz_target!(|data: &[u8]| {
    if let Ok((offset, room)) = history::parse_recover(data) {
        let body = history::recover_body(offset, room);
        assert_eq!(history::parse_recover(&body), Ok((offset, room)));
    }
    let _ = history::parse_recover_reply(data);
    let Ok(count) = frame::count_inner_frames(data) else {
        return;
    };
    let first = data
        .first_chunk::<4>()
        .map_or(0, |b| u32::from_be_bytes(*b))
        .wrapping_add(data.len() as u32);
    let mut numbered = data.to_vec();
    assert_eq!(history::number_frames(&mut numbered, first), Ok(count as u32));
    let offsets = history::offsets(&numbered).expect("numbered frames still parse");
    assert_eq!(offsets.len(), count);
    for (i, (o, range)) in offsets.iter().enumerate() {
        assert_eq!(*o, first.wrapping_add(i as u32));
        assert!(i == 0 || history::after(*o, offsets[i - 1].0));
        let s = range.start;
        assert_eq!(numbered[s..s + 12], data[s..s + 12]);
        assert_eq!(numbered[s + 16..range.end], data[s + 16..range.end]);
    }
    assert_eq!(history::last_offset(&numbered), offsets.last().map(|(o, _)| *o));
});
