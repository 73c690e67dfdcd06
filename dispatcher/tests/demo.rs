//! The demo page over HTTP: `/` and its assets answer 200 with their content types (and are
//! public even with a bearer secret set, while `/goim/*` still asks for it); an unknown asset
//! is a 404. What the page does in a browser is tested by the binary's `tests/demo.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use dispatcher::{Config, Dispatcher};

struct Answer {
    status: u16,
    /// Header lines, names lowercased.
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
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
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn start(bearer: &[&str]) -> Dispatcher {
    let mut cfg = Config::loopback_ephemeral();
    cfg.http.bearer_secrets = bearer.iter().map(|s| s.to_string()).collect();
    Dispatcher::start(cfg).expect("dispatcher starts")
}

#[test]
fn page_and_assets_answer_with_their_content_types() {
    let d = start(&[]);
    for (path, ctype, needle) in [
        (
            "/",
            "text/html; charset=utf-8",
            "<script src=\"demo/demo.js\">",
        ),
        (
            "/demo/demo.js",
            "text/javascript; charset=utf-8",
            "encodeFrame",
        ),
        (
            "/demo/demo.css",
            "text/css; charset=utf-8",
            "@keyframes fly",
        ),
    ] {
        let a = get(d.http_addr(), path);
        assert_eq!(a.status, 200, "{path}: {}", a.head);
        assert_eq!(a.header("content-type"), Some(ctype), "{path}: {}", a.head);
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert!(a.body.contains(needle), "{path} lacks {needle:?}");
    }
    // The page names the elements its tests and users read.
    let page = get(d.http_addr(), "/").body;
    for id in [
        "messages",
        "online",
        "state",
        "error",
        "danmaku",
        "push-form",
        "ws",
    ] {
        assert!(
            page.contains(&format!("id=\"{id}\"")),
            "no #{id} in the page"
        );
    }
    // The assets are all the page loads: nothing from another host.
    assert!(!page.contains("http://") && !page.contains("https://"));
    for path in ["/demo/nope.js", "/demo/", "/demo.js", "/index.html"] {
        let a = get(d.http_addr(), path);
        assert_eq!(a.status, 404, "{path}: {}", a.head);
        assert_eq!(a.body, "404 page not found", "{path}");
    }
}

#[test]
fn the_page_is_public_behind_a_bearer_secret() {
    let d = start(&["s1"]);
    for path in ["/", "/demo/demo.js", "/demo/demo.css"] {
        assert_eq!(get(d.http_addr(), path).status, 200, "{path}");
    }
    // What the page asks of the API still needs the secret.
    let a = get(d.http_addr(), "/goim/nodes/weighted");
    assert_eq!(a.status, 401, "{}", a.head);
}
