//! Op-9 batches: `Batch::from_inner_frames` on the input; a batch that builds must give back the
//! input as its TCP bytes and one WebSocket binary frame holding an op-9 goim frame around it;
//! joined to itself (`Batch::concat`), the same for the input twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::batch::Batch;
use protocol::ws::{self, Kind};
use protocol::{frame, op};

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = Batch::from_inner_frames(data) else {
        return;
    };
    check(&batch, data);
    let twice = [data, data].concat();
    check(&Batch::concat(&[batch.clone(), batch]), &twice);
});

fn check(batch: &Batch, data: &[u8]) {
    assert_eq!(&batch.tcp()[..], data);
    assert_eq!(batch.tcp_len(), data.len());
    assert_eq!(
        batch.messages() as usize,
        frame::count_inner_frames(data).unwrap()
    );

    let mut ws_bytes = batch.ws().to_vec();
    let f = ws::parse_frame(&mut ws_bytes, usize::MAX)
        .expect("the batch's WebSocket header parses")
        .expect("the batch's WebSocket frame is complete");
    assert!(f.fin);
    assert_eq!(
        f.kind,
        Kind::Data {
            continuation: false
        }
    );
    assert_eq!(f.len, ws_bytes.len());
    let (header, inner) = frame::decode_ws_message(&ws_bytes[f.payload], i32::MAX as usize)
        .expect("the batch's WebSocket payload is one goim frame");
    assert_eq!(header.op, op::RAW);
    assert_eq!(header.ver, frame::PUSH_VER);
    assert_eq!(header.seq, 0);
    assert_eq!(inner, data);
}
