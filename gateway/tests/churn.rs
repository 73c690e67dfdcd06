//! Connections opened and closed in quick succession on both transports: every slot reuse must
//! leave the next connection intact.

mod support;

use protocol::op;
use support::*;

#[test]
fn rapid_connect_auth_close_cycles_never_break_a_new_connection() {
    let gw = start(config());
    for i in 0..1500 {
        let t = if i % 3 == 0 {
            Transport::Tcp
        } else {
            Transport::Ws
        };
        let mut c = Client::auth(&gw, t, &token(i, "", "live://churn", &[]));
        c.send(1, op::HEARTBEAT, 1, b"");
        assert_eq!(c.recv().unwrap().op, op::HEARTBEAT_REPLY, "cycle {i}");
    }
    eventually(10, "every connection closed", || {
        gw.total().connections == 0
    });
}
