//! goim's HTTP API query parameters: `query::Params::parse` on the input as a query string
//! (invalid UTF-8 replaced, as nothing else reaches it: axum hands the dispatcher a `&str`), then
//! every accessor the dispatcher's routes call, on every parameter name they read. No accessor
//! panics; every error starts with the parameter's name; the accessors agree with each other;
//! a list re-encoded with `form_urlencoded` parses back to the same list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::query::Params;

/// Every parameter the dispatcher reads (`/goim/push/{keys,mids,room,all}`,
/// `/goim/online/{top,room}`, `/goim/nodes/weighted`), and one no route uses.
const NAMES: [&str; 10] = [
    "operation",
    "keys",
    "mids",
    "type",
    "room",
    "speed",
    "limit",
    "rooms",
    "platform",
    "",
];

fn names_it(err: &str, name: &str) {
    assert!(
        err.starts_with(&format!("{name}: ")),
        "error {err:?} does not name {name:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let p = Params::parse(Some(&raw));
    if raw.is_empty() {
        assert!(NAMES.iter().all(|n| Params::parse(None).list(n).is_empty()));
    }

    for name in NAMES {
        let list = p.list(name);
        assert!(list.iter().all(|v| !v.is_empty()));

        // A list goes back through the encoder and parses to itself.
        let mut enc = form_urlencoded::Serializer::new(String::new());
        for v in &list {
            enc.append_pair(name, v);
        }
        assert_eq!(Params::parse(Some(&enc.finish())).list(name), list);

        let required = p.required(name);
        match &required {
            // The first value is non-empty, so it leads the list.
            Ok(v) => assert_eq!(Some(v), list.first()),
            Err(e) => assert_eq!(e, &format!("{name}: required")),
        }

        for default in [0, -1, i32::MAX] {
            match p.i32_or(name, default) {
                Ok(v) => match &required {
                    Ok(s) => assert_eq!(s.parse::<i32>(), Ok(v)),
                    Err(_) => assert_eq!(v, default),
                },
                Err(e) => {
                    names_it(&e, name);
                    assert!(required.as_ref().is_ok_and(|s| s.parse::<i32>().is_err()));
                }
            }
        }

        match p.i32_nonzero(name) {
            Ok(v) => {
                assert_ne!(v, 0);
                assert_eq!(p.i32_or(name, 0), Ok(v));
            }
            Err(e) => names_it(&e, name),
        }

        match p.list_i64(name) {
            Ok(ints) => {
                assert_eq!(ints.len(), list.len());
                for (i, v) in ints.iter().zip(&list) {
                    assert_eq!(v.parse::<i64>().as_ref(), Ok(i));
                }
            }
            Err(e) => {
                names_it(&e, name);
                assert!(list.iter().any(|v| v.parse::<i64>().is_err()));
            }
        }
    }
});
