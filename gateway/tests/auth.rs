//! Auth (op 7 → op 8) in open and hmac modes, over TCP and WebSocket.

mod support;

use std::time::Duration;

use protocol::op;
use protocol::token::Token;
use support::*;

#[test]
fn auth_reply_is_goim_bytes_exactly() {
    let gw = start(config());
    // TCP: the raw bytes of the reply, as goim writes them (reference §11.2 item 1).
    let mut s = tcp_connect(gw.tcp_addr());
    let mut req = Vec::new();
    protocol::frame::encode(&mut req, 1, op::AUTH, 1, JS_TOKEN.as_bytes());
    std::io::Write::write_all(&mut s, &req).unwrap();
    let mut reply = [0u8; 16];
    std::io::Read::read_exact(&mut s, &mut reply).unwrap();
    assert_eq!(
        reply,
        [0, 0, 0, 16, 0, 16, 0, 1, 0, 0, 0, 8, 0, 0, 0, 1],
        "packLen 16, headerLen 16, ver 1, op 8, seq 1"
    );
    // WS: the same frame in one binary message; ver and seq are echoed.
    let mut c = Client::connect(&gw, Transport::Ws);
    c.send(3, op::AUTH, 77, JS_TOKEN.as_bytes());
    let f = c.recv().unwrap();
    assert_eq!(
        (f.ver, f.op, f.seq, f.body.len()),
        (3, op::AUTH_REPLY, 77, 0)
    );
}

#[test]
fn non_json_token_closes_with_a_reason() {
    let gw = start(config());
    let mut ok = Client::auth(&gw, Transport::Tcp, JS_TOKEN);
    for t in BOTH {
        let mut c = Client::connect(&gw, t);
        c.send(1, op::AUTH, 1, b"not a token");
        let reason = c.expect_closed().expect("a reason");
        assert!(
            reason.contains("auth: auth token is not valid JSON"),
            "{reason}"
        );
    }
    // The other connection is unaffected.
    ok.send(1, op::HEARTBEAT, 5, b"");
    assert_eq!(ok.recv().unwrap().op, op::HEARTBEAT_REPLY);
    eventually(5, "2 auth failures counted", || gw.total().auth_failed == 2);
    assert_eq!(gw.total().auth_failed_not_json, 2);
}

fn hmac_config(secrets: &[&str]) -> gateway::Config {
    let mut c = config();
    c.auth.mode = "hmac".into();
    c.auth.secrets = secrets.iter().map(|s| s.to_string()).collect();
    c
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signed(secret: &str, exp: i64) -> String {
    Token {
        mid: 5,
        key: "signed-key".into(),
        room_id: "live://1".into(),
        accepts: vec![1000],
        ..Default::default()
    }
    .sign(secret.as_bytes(), exp)
    .to_json()
}

#[test]
fn hmac_mode_accepts_signed_tokens_from_either_active_secret() {
    let gw = start(hmac_config(&["new-secret", "old-secret"]));
    for t in BOTH {
        Client::auth(&gw, t, &signed("new-secret", now() + 60));
        Client::auth(&gw, t, &signed("old-secret", now() + 60));
    }
}

#[test]
fn hmac_mode_rejects_bad_signatures_expired_and_unsigned_tokens() {
    let gw = start(hmac_config(&["s3cret"]));
    let mut bystander = Client::auth(&gw, Transport::Ws, &signed("s3cret", now() + 60));
    let cases = [
        (signed("wrong", now() + 60), "signature does not match"),
        (signed("s3cret", now() - 1), "expired"),
        (JS_TOKEN.to_string(), "has no signature"),
    ];
    for t in BOTH {
        for (token, expect) in &cases {
            let mut c = Client::connect(&gw, t);
            c.send(1, op::AUTH, 1, token.as_bytes());
            let reason = c.expect_closed().expect("a reason");
            assert!(
                reason.contains(expect),
                "{t:?}: {reason} should say {expect}"
            );
        }
    }
    eventually(5, "6 auth failures counted", || gw.total().auth_failed == 6);
    // Counted by reason.
    let t = gw.total();
    assert_eq!(
        (
            t.auth_failed_bad_signature,
            t.auth_failed_expired,
            t.auth_failed_unsigned,
            t.auth_failed_no_expiry
        ),
        (2, 2, 2, 0)
    );
    bystander.send(1, op::HEARTBEAT, 1, b"");
    assert_eq!(bystander.recv().unwrap().op, op::HEARTBEAT_REPLY);
}

#[test]
fn empty_key_gets_a_generated_uuid_reported_upstream() {
    let mut gw = start(config());
    let up = gw.take_uplink().unwrap();
    let _c = Client::auth(&gw, Transport::Tcp, JS_TOKEN);
    let ev = up.recv_timeout(Duration::from_secs(5)).unwrap();
    let protocol::link::Body::Session(s) = ev else {
        panic!("{ev:?}")
    };
    assert!(s.online);
    assert_eq!(s.mid, 123);
    assert_eq!(s.key.len(), 36, "uuid v4: {}", s.key);
    assert_eq!(s.rooms, vec!["live://1000".to_string()]);
}

#[test]
fn no_auth_within_the_handshake_timeout_closes() {
    let mut c = config();
    c.limits.handshake_timeout_ms = 300;
    let gw = start(c);
    for t in BOTH {
        let mut c = Client::connect(&gw, t);
        // Handshake op 0 before auth is ignored, as in goim; the deadline still applies.
        c.send(1, op::HANDSHAKE, 1, b"");
        let reason = c.expect_closed().expect("a reason");
        assert!(reason.contains("handshake timeout"), "{reason}");
    }
    eventually(5, "2 timeouts counted", || gw.total().timeouts == 2);
}

#[test]
fn a_newline_in_a_signed_field_is_refused_and_counted() {
    let gw = start(hmac_config(&["s3cret"]));
    // Signed for key "k\nlive://vip" in live://1: the same signed text as key "k" in
    // live://vip, so hmac mode refuses any newline in the signed fields.
    let token = Token {
        mid: 5,
        key: "k\nlive://vip".into(),
        room_id: "live://1".into(),
        ..Default::default()
    }
    .sign(b"s3cret", now() + 60)
    .to_json();
    let mut c = Client::connect(&gw, Transport::Tcp);
    c.send(1, op::AUTH, 1, token.as_bytes());
    let reason = c.expect_closed().expect("a reason");
    assert!(reason.contains("newline"), "{reason}");
    eventually(5, "counted as newline", || {
        gw.total().auth_failed_newline == 1
    });
}
