//! The auth token (body of op 7), in goim's JSON shape (reference §2.2), verified in one of two
//! modes:
//!
//! - **open**: goim's unsigned JSON. Any JSON object is accepted; unknown fields are ignored.
//! - **hmac**: the same JSON plus `exp` (unix seconds) and `sig`, the lowercase hex
//!   HMAC-SHA256 of [`Token::signing_input`] under one of the configured secrets (two may be
//!   active at once, for rotation). The comparison is constant-time.
//!
//! The signing input is a fixed text form of the fields, not the JSON itself, so any JSON
//! encoder (field order, spacing, escapes) produces a valid token:
//! `mid \n key \n room_id \n platform \n accepts (comma-joined) \n exp`.
//! In hmac mode `key`, `room_id` and `platform` must not contain a newline: with one, text could
//! move from one field to the next under the same signature (a token signed for key
//! `"k\nlive://vip"` and room `"live://1"` would also verify as key `"k"`, room `"live://vip"`,
//! platform `"live://1\n"`).
//!
//! The verifier takes the current time as an argument: this crate reads no clock.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// The fields of a token. Missing fields take their zero value, as in goim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    #[serde(default)]
    pub mid: i64,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub room_id: String,
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub accepts: Vec<i32>,
    /// Expiry, unix seconds (hmac mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Hex HMAC-SHA256 signature (hmac mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// How tokens are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// goim's unsigned JSON (compatibility; the gateway warns at start-up).
    Open,
    /// Signed tokens; any of the secrets verifies (the first one signs).
    Hmac { secrets: Vec<Vec<u8>> },
}

impl Token {
    /// The text that `sig` signs.
    pub fn signing_input(&self) -> String {
        let accepts: Vec<String> = self.accepts.iter().map(|a| a.to_string()).collect();
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.mid,
            self.key,
            self.room_id,
            self.platform,
            accepts.join(","),
            self.exp.unwrap_or(0)
        )
    }

    /// Sets `exp` and signs the token with `secret`.
    pub fn sign(mut self, secret: &[u8], exp: i64) -> Token {
        self.exp = Some(exp);
        self.sig = None;
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
        mac.update(self.signing_input().as_bytes());
        self.sig = Some(hex::encode(mac.finalize().into_bytes()));
        self
    }

    /// The JSON body a client sends in op 7.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a token always serializes")
    }
}

/// Parses and checks an op-7 body. `now` is the current unix time in seconds.
pub fn verify(body: &[u8], mode: &AuthMode, now: i64) -> Result<Token> {
    let token: Token =
        serde_json::from_slice(body).map_err(|e| Error::TokenNotJson(e.to_string()))?;
    let AuthMode::Hmac { secrets } = mode else {
        return Ok(token);
    };
    let sig = token.sig.as_deref().ok_or(Error::TokenUnsigned)?;
    let exp = token.exp.ok_or(Error::TokenNoExpiry)?;
    for (field, value) in [
        ("key", &token.key),
        ("room_id", &token.room_id),
        ("platform", &token.platform),
    ] {
        if value.contains('\n') {
            return Err(Error::TokenNewline { field });
        }
    }
    let sig = hex::decode(sig).map_err(|_| Error::TokenBadSignature)?;
    let input = token.signing_input();
    let valid = secrets.iter().any(|secret| {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
        mac.update(input.as_bytes());
        mac.verify_slice(&sig).is_ok()
    });
    if !valid {
        return Err(Error::TokenBadSignature);
    }
    if exp <= now {
        return Err(Error::TokenExpired { exp, now });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JS_DEMO: &str =
        r#"{"mid":123, "room_id":"live://1000", "platform":"web", "accepts":[1000,1001,1002]}"#;

    #[test]
    fn open_mode_reads_goim_tokens() {
        let t = verify(JS_DEMO.as_bytes(), &AuthMode::Open, 0).unwrap();
        assert_eq!(t.mid, 123);
        assert_eq!(t.key, "");
        assert_eq!(t.room_id, "live://1000");
        assert_eq!(t.accepts, vec![1000, 1001, 1002]);
        let t = verify(br#"{"unknown":1}"#, &AuthMode::Open, 0).unwrap();
        assert_eq!(t, Token::default());
    }

    #[test]
    fn non_json_is_rejected() {
        for body in [
            &b"not json"[..],
            b"",
            b"[1,2]",
            b"{\"mid\":\"x\"}",
            &[0xff, 0xfe],
        ] {
            let e = verify(body, &AuthMode::Open, 0).unwrap_err();
            assert_eq!(e.kind(), "token_not_json", "{body:?}");
        }
    }

    fn hmac(secrets: &[&[u8]]) -> AuthMode {
        AuthMode::Hmac {
            secrets: secrets.iter().map(|s| s.to_vec()).collect(),
        }
    }

    #[test]
    fn signed_tokens_verify_until_expiry() {
        let t = Token {
            mid: 7,
            key: "k".into(),
            room_id: "live://1".into(),
            accepts: vec![1000],
            ..Token::default()
        }
        .sign(b"s1", 1000);
        let body = t.to_json();
        assert_eq!(
            verify(body.as_bytes(), &hmac(&[b"s1"]), 999).unwrap().mid,
            7
        );
        assert_eq!(
            verify(body.as_bytes(), &hmac(&[b"s1"]), 1000),
            Err(Error::TokenExpired {
                exp: 1000,
                now: 1000
            })
        );
        // rotation: either active secret verifies
        assert!(verify(body.as_bytes(), &hmac(&[b"s2", b"s1"]), 0).is_ok());
        assert_eq!(
            verify(body.as_bytes(), &hmac(&[b"s2"]), 0),
            Err(Error::TokenBadSignature)
        );
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let t = Token {
            mid: 7,
            ..Token::default()
        }
        .sign(b"s", 1000);
        let mut forged = t.clone();
        forged.mid = 8;
        assert_eq!(
            verify(forged.to_json().as_bytes(), &hmac(&[b"s"]), 0),
            Err(Error::TokenBadSignature)
        );
        let mut later = t.clone();
        later.exp = Some(5000);
        assert_eq!(
            verify(later.to_json().as_bytes(), &hmac(&[b"s"]), 0),
            Err(Error::TokenBadSignature)
        );
        let mut garbage = t.clone();
        garbage.sig = Some("zz".into());
        assert_eq!(
            verify(garbage.to_json().as_bytes(), &hmac(&[b"s"]), 0),
            Err(Error::TokenBadSignature)
        );
    }

    #[test]
    fn a_newline_cannot_move_text_between_signed_fields() {
        // Signed for key "k\nlive://vip" in room "live://1"; the same signing input reads as key
        // "k" in room "live://vip" with platform "live://1\n".
        let signed = Token {
            mid: 7,
            key: "k\nlive://vip".into(),
            room_id: "live://1".into(),
            ..Token::default()
        }
        .sign(b"s", 1000);
        let shifted = Token {
            key: "k".into(),
            room_id: "live://vip".into(),
            platform: "live://1\n".into(),
            ..signed.clone()
        };
        assert_eq!(shifted.signing_input(), signed.signing_input());
        assert_eq!(
            verify(shifted.to_json().as_bytes(), &hmac(&[b"s"]), 0),
            Err(Error::TokenNewline { field: "platform" })
        );
        assert_eq!(
            verify(signed.to_json().as_bytes(), &hmac(&[b"s"]), 0),
            Err(Error::TokenNewline { field: "key" })
        );
        // Open mode signs nothing and keeps goim's behaviour.
        assert!(verify(shifted.to_json().as_bytes(), &AuthMode::Open, 0).is_ok());
    }

    #[test]
    fn unsigned_or_unexpiring_tokens_fail_in_hmac_mode() {
        assert_eq!(
            verify(JS_DEMO.as_bytes(), &hmac(&[b"s"]), 0),
            Err(Error::TokenUnsigned)
        );
        assert_eq!(
            verify(br#"{"sig":"00"}"#, &hmac(&[b"s"]), 0),
            Err(Error::TokenNoExpiry)
        );
    }
}
