//! The bearer secret on the HTTP API (`[http] bearer_secrets`): with it set, every `/goim/*`
//! route needs `Authorization: Bearer <secret>`; a missing or wrong one gets HTTP 401, goim's
//! envelope with code -401 and a message naming what is missing, a `WWW-Authenticate: Bearer`
//! header, and is counted per route in `/metrics` (which stays open). Two secrets are accepted
//! at once (rotation). Unset, the API is open, as goim's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use dispatcher::{Config, Dispatcher};
use serde_json::Value;

fn start(secrets: &[&str]) -> Dispatcher {
    let mut cfg = Config::loopback_ephemeral();
    cfg.http.bearer_secrets = secrets.iter().map(|s| s.to_string()).collect();
    Dispatcher::start(cfg).expect("dispatcher starts")
}

struct Answer {
    status: u16,
    head: String,
    body: Value,
}

/// One request with an optional Authorization header value.
fn request(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let body = if method == "POST" { "hi" } else { "" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Answer {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        head: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

const PUSH: &str = "/goim/push/room?operation=1000&type=live&room=1";

/// A counter from `/metrics`, fetched without any Authorization header (it stays open).
fn metric(d: &Dispatcher, line: &str) -> u64 {
    let mut s = TcpStream::connect(d.http_addr()).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "/metrics is open: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in /metrics"))
}

fn assert_refused(a: &Answer, needle: &str) {
    assert_eq!(a.status, 401, "{:?}", a.body);
    assert_eq!(a.body["code"], -401, "{:?}", a.body);
    let msg = a.body["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} should name {needle:?}");
    assert!(
        a.head.contains("www-authenticate: bearer"),
        "no challenge header: {}",
        a.head
    );
}

#[test]
fn no_header_is_refused_with_401_naming_what_is_missing() {
    let d = start(&["s3cret"]);
    let a = request(d.http_addr(), "POST", PUSH, None);
    assert_refused(&a, "Authorization");
    let a = request(d.http_addr(), "GET", "/goim/nodes/weighted", None);
    assert_refused(&a, "Authorization");
    let a = request(
        d.http_addr(),
        "GET",
        "/goim/online/total",
        Some("Basic czNjcmV0"),
    );
    assert_refused(&a, "Bearer");
    assert_eq!(
        metric(
            &d,
            "corecast_dispatcher_http_requests_total{route=\"push_room\",code=\"-401\"} "
        ),
        1
    );
    assert_eq!(
        metric(
            &d,
            "corecast_dispatcher_http_requests_total{route=\"nodes_weighted\",code=\"-401\"} "
        ),
        1
    );
    // Nothing refused reached the queue.
    assert_eq!(metric(&d, "corecast_dispatcher_queue_produced_total "), 0);
    d.stop_within(Duration::ZERO);
}

#[test]
fn a_wrong_secret_is_refused() {
    let d = start(&["s3cret"]);
    for wrong in ["Bearer s3cre", "Bearer s3cret2", "Bearer S3CRET", "Bearer "] {
        let a = request(d.http_addr(), "POST", PUSH, Some(wrong));
        assert_eq!(a.status, 401, "{wrong}");
        assert_eq!(a.body["code"], -401, "{wrong}");
    }
    let a = request(d.http_addr(), "POST", PUSH, Some("Bearer nope"));
    assert_refused(&a, "wrong bearer secret");
    assert!(a.head.contains("invalid_token"), "{}", a.head);
    assert_eq!(
        metric(
            &d,
            "corecast_dispatcher_http_requests_total{route=\"push_room\",code=\"-401\"} "
        ),
        5
    );
    d.stop_within(Duration::ZERO);
}

#[test]
fn old_and_new_secrets_both_work_during_rotation() {
    let d = start(&["old-secret", "new-secret"]);
    for secret in ["old-secret", "new-secret"] {
        let a = request(
            d.http_addr(),
            "POST",
            PUSH,
            Some(&format!("Bearer {secret}")),
        );
        assert_eq!(
            (a.status, &a.body["code"]),
            (200, &Value::from(0)),
            "{secret}"
        );
        let a = request(
            d.http_addr(),
            "GET",
            "/goim/online/total",
            Some(&format!("bearer {secret}")),
        );
        assert_eq!(
            (a.status, &a.body["code"]),
            (200, &Value::from(0)),
            "{secret}"
        );
    }
    let a = request(d.http_addr(), "POST", PUSH, Some("Bearer older-secret"));
    assert_eq!(a.status, 401);
    assert_eq!(
        metric(
            &d,
            "corecast_dispatcher_http_requests_total{route=\"push_room\",code=\"0\"} "
        ),
        2
    );
    d.stop_within(Duration::ZERO);
}

#[test]
fn the_api_is_open_when_no_secret_is_set() {
    let d = start(&[]);
    let a = request(d.http_addr(), "POST", PUSH, None);
    assert_eq!((a.status, &a.body["code"]), (200, &Value::from(0)));
    // A header is ignored, not checked.
    let a = request(d.http_addr(), "POST", PUSH, Some("Bearer anything"));
    assert_eq!((a.status, &a.body["code"]), (200, &Value::from(0)));
    d.stop_within(Duration::ZERO);
}
