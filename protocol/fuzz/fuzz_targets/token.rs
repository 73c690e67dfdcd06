//! Auth tokens (op-7 bodies), two ways per input:
//! - the input itself as a body (garbage, almost always): `token::verify` in open mode and in
//!   hmac mode with two secrets; whatever open mode decodes re-encodes to the same token;
//! - a token built from the input's bytes (mid, key, room, platform, accepts, exp, which of the
//!   two secrets signs), signed and verified in hmac mode against the expiry: it verifies back
//!   to itself while unexpired, is `TokenExpired` after, `TokenNewline` with a newline in a
//!   string field, and `TokenBadSignature` under the other secret alone and with one field or the
//!   signature changed (which one, the input picks: one forgery per run keeps the target fast).
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use protocol::Error;
use protocol::token::{self, AuthMode, Token};

const NOW: i64 = 1_700_000_000;
const S1: &[u8] = b"fuzz-secret-1";
const S2: &[u8] = b"fuzz-secret-2";

fn hmac(secrets: &[&[u8]]) -> AuthMode {
    AuthMode::Hmac {
        secrets: secrets.iter().map(|s| s.to_vec()).collect(),
    }
}

fn built(data: &[u8]) -> Result<(Token, i64, bool, u8)> {
    let mut u = Unstructured::new(data);
    let token = Token {
        mid: u.arbitrary()?,
        key: u.arbitrary()?,
        room_id: u.arbitrary()?,
        platform: u.arbitrary()?,
        accepts: u.arbitrary()?,
        ..Token::default()
    };
    // Near NOW half the time, so both sides of the expiry get exercised.
    let exp = if u.arbitrary()? {
        NOW + i64::from(u.arbitrary::<i8>()?)
    } else {
        u.arbitrary()?
    };
    Ok((token, exp, u.arbitrary()?, u.arbitrary()?))
}

fuzz_target!(|data: &[u8]| {
    let both = hmac(&[S1, S2]);

    // The input as a body.
    let open = token::verify(data, &AuthMode::Open, NOW);
    let signed = token::verify(data, &both, NOW);
    if let Ok(t) = &signed {
        assert_eq!(open.as_ref().ok(), Some(t));
        assert!(t.exp.is_some_and(|exp| exp > NOW));
    }
    if let Ok(t) = &open {
        assert_eq!(
            token::verify(t.to_json().as_bytes(), &AuthMode::Open, NOW).as_ref(),
            Ok(t)
        );
    }

    // A token built from the input, signed by one of the two secrets.
    let Ok((unsigned, exp, second, forgery)) = built(data) else {
        return;
    };
    let t = unsigned.clone().sign(if second { S2 } else { S1 }, exp);
    let body = t.to_json();
    assert_eq!(
        token::verify(body.as_bytes(), &AuthMode::Open, NOW).as_ref(),
        Ok(&t)
    );
    let newline = [&t.key, &t.room_id, &t.platform]
        .iter()
        .any(|s| s.contains('\n'));
    let got = token::verify(body.as_bytes(), &both, NOW);
    if newline {
        assert!(matches!(got, Err(Error::TokenNewline { .. })), "{got:?}");
        return;
    }
    if exp > NOW {
        assert_eq!(got.as_ref(), Ok(&t));
    } else {
        assert_eq!(got, Err(Error::TokenExpired { exp, now: NOW }));
    }
    // Only the secret that signed it verifies it (one at a time, or neither).
    let own = hmac(&[if second { S2 } else { S1 }]);
    let other = hmac(&[if second { S1 } else { S2 }]);
    assert_eq!(token::verify(body.as_bytes(), &own, NOW).is_ok(), exp > NOW);
    assert_eq!(
        token::verify(body.as_bytes(), &other, NOW),
        Err(Error::TokenBadSignature)
    );

    // Any change to a signed field, or to the signature, breaks it.
    let mut forged = t.clone();
    match forgery % 6 {
        0 => forged.mid = t.mid.wrapping_add(1),
        1 => forged.key.push('x'),
        2 => forged.room_id.insert(0, 'x'),
        3 => forged.accepts.push(1),
        4 => forged.exp = Some(exp.wrapping_add(1)),
        _ => {
            let sig = forged.sig.as_mut().unwrap();
            let flipped = if sig.starts_with('0') { "1" } else { "0" };
            sig.replace_range(0..1, flipped);
        }
    }
    assert_eq!(
        token::verify(forged.to_json().as_bytes(), &own, NOW),
        Err(Error::TokenBadSignature),
        "{forged:?}"
    );
});
