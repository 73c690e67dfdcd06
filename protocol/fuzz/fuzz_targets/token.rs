//! Auth tokens (op-7 bodies): `token::verify` in open mode and in hmac mode with two secrets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::token::{self, AuthMode};

const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let open = token::verify(data, &AuthMode::Open, NOW);
    let hmac = AuthMode::Hmac {
        secrets: vec![b"fuzz-secret-1".to_vec(), b"fuzz-secret-2".to_vec()],
    };
    let signed = token::verify(data, &hmac, NOW);
    // Anything hmac mode accepts, open mode accepts as the same token.
    if let Ok(t) = signed {
        assert_eq!(open.as_ref().ok(), Some(&t));
    }
});
