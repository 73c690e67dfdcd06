//! The live-room demo page (`GET /` on the dispatcher) in a real headless Chromium, against
//! `corecast up` as a real process: the page finds its gateway through `/goim/nodes/weighted`,
//! joins the room over WebSocket with goim's binary protocol in plain JavaScript, shows pushes
//! in its list and as danmaku, follows the room's online count, pushes from its form (with a
//! bearer secret), and says clearly when the gateway address is wrong or a token is refused.
//!
//! Chromium comes from Debian's `chromium` package (scripts/test.sh installs it); without it
//! these tests fail and say so. Every wait is bounded and a failure prints what the page held.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::browser::Browser;
use support::{DISPATCHER_TOML, TempDir, free_port};

/// `corecast up` for the page: ephemeral ports, except the gateway's WebSocket port, which the
/// dispatcher advertises as `[node] ws_port` in `/goim/nodes/weighted`, so the page finds it
/// as it would on goim's fixed ports.
struct Stack {
    up: benches::up::UpProcess,
    ws_port: u16,
    bearer: Option<String>,
    _dir: TempDir,
}

impl Stack {
    fn start(gateway_extra: &str, bearer: Option<&str>) -> Stack {
        let ws_port = free_port();
        let gateway = format!(
            "id = \"gw-demo\"\ntcp_bind = \"127.0.0.1:0\"\nws_bind = \"127.0.0.1:{ws_port}\"\n\
             metrics_bind = \"\"\nrenew_ms = 200\n{gateway_extra}"
        );
        let mut dispatcher = DISPATCHER_TOML.to_string();
        if let Some(b) = bearer {
            dispatcher += &format!("[http]\nbearer_secrets = [\"{b}\"]\n");
        }
        dispatcher += &format!("[node]\nws_port = {ws_port}\n");
        let dir = TempDir::new("demo");
        let up = benches::up::UpProcess::start(
            Path::new(env!("CARGO_BIN_EXE_corecast")),
            &dir.0,
            &gateway,
            &dispatcher,
            "info",
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(up.ws.port(), ws_port, "the gateway's WebSocket port");
        let s = Stack {
            up,
            ws_port,
            bearer: bearer.map(str::to_string),
            _dir: dir,
        };
        let t = std::time::Instant::now();
        while s.get("/goim/nodes/instances")["data"]
            .as_array()
            .is_none_or(|a| a.is_empty())
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the gateway did not register; log:\n{}",
                s.up.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// One HTTP request to the dispatcher (with the bearer secret, if set); the JSON answer.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> Value {
        let auth = self
            .bearer
            .as_ref()
            .map(|b| format!("Authorization: Bearer {b}\r\n"))
            .unwrap_or_default();
        let (_, text) = support::http_with(self.up.http, method, path, &auth, body);
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn get(&self, path: &str) -> Value {
        self.request("GET", path, b"")
    }

    /// Pushes `text` to live://`room` with op 1000 through the HTTP API, as a business server.
    fn push(&self, room: &str, text: &str) {
        let path = format!("/goim/push/room?operation=1000&type=live&room={room}");
        let v = self.request("POST", &path, text.as_bytes());
        assert_eq!(v["code"], 0, "{path}: {v}");
    }

    /// The page's address with this query (`?...`, or "").
    fn page(&self, query: &str) -> String {
        format!("http://{}/{query}", self.up.http)
    }
}

/// What a failed wait prints: the elements the tests read.
const DUMP: &str = r#"(() => {
  const el = (id) => document.getElementById(id);
  const t = (id) => (el(id) || {textContent: '(missing)'}).textContent;
  const all = (sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent);
  if (!el('state')) return document.body ? document.body.innerText.slice(0, 3000) : '(no body)';
  return JSON.stringify({
    url: location.href,
    state: el('state').dataset.state,
    error: t('error'),
    ws: el('ws').value,
    ws_source: t('ws-source'),
    online: t('online'), online_hb: t('online-hb'), online_http: t('online-http'),
    online_source: t('online-source'),
    push_result: t('push-result'),
    messages: all('#messages li').slice(0, 10),
    danmaku: all('#danmaku .danmaku'),
    log: all('#log li').slice(0, 20),
  }, null, 1);
})()"#;

/// A browser showing the page at `url`.
fn open(url: &str) -> Browser {
    let mut b = Browser::start();
    b.dump = DUMP.into();
    b.goto(url);
    b
}

fn js(v: &str) -> String {
    json!(v).to_string()
}

fn state_is(state: &str) -> String {
    format!(
        "document.getElementById('state').dataset.state === {}",
        js(state)
    )
}

/// True once `text` is in the message list (op 1000) and flying in the danmaku layer.
fn shown(text: &str) -> String {
    format!(
        "(() => {{
          const want = {};
          const li = [...document.querySelectorAll('#messages li')]
            .find((l) => l.querySelector('.msg-body').textContent === want);
          const flying = [...document.querySelectorAll('#danmaku .danmaku')]
            .some((d) => d.textContent === want);
          return !!li && li.dataset.op === '1000' && flying;
        }})()",
        js(text)
    )
}

fn listed(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#messages .msg-body')].some((b) => b.textContent === {})",
        js(text)
    )
}

/// Sets an input's value as typing would.
fn fill(b: &mut Browser, id: &str, value: &str) {
    b.eval(&format!(
        "(() => {{ const e = document.getElementById({}); e.value = {}; \
         e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
        js(id),
        js(value)
    ));
}

fn click(b: &mut Browser, id: &str) {
    b.eval(&format!(
        "(() => {{ document.getElementById({}).click(); return true; }})()",
        js(id)
    ));
}

/// A message no other run or test sends.
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}-{}-{nanos:x}", std::process::id())
}

/// One goim frame: the 16-byte big-endian header and the body.
fn frame(op: u32, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(16 + body.len());
    f.extend_from_slice(&(16 + body.len() as u32).to_be_bytes());
    f.extend_from_slice(&16u16.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// A raw goim TCP client, authenticated in `room`; it leaves when dropped.
fn goim_client(tcp: SocketAddr, room: &str, mid: i64) -> TcpStream {
    let mut s = TcpStream::connect(tcp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let token = json!({
        "mid": mid, "key": format!("demo-extra-{mid}"), "room_id": room,
        "platform": "test", "accepts": [1000],
    });
    s.write_all(&frame(7, 1, token.to_string().as_bytes()))
        .unwrap();
    let mut head = [0u8; 16];
    s.read_exact(&mut head).unwrap();
    let op = u32::from_be_bytes(head[8..12].try_into().unwrap());
    assert_eq!(op, 8, "auth reply for the client in {room}");
    s
}

#[test]
fn a_pushed_message_shows_in_the_list_and_as_danmaku() {
    let s = Stack::start("", None);
    let mut b = open(&s.page("?hb=1"));
    b.wait_for("the page to join live://1000", &state_is("connected"));
    // The page found the gateway through the dispatcher's node list.
    let ws = b.eval("document.getElementById('ws').value");
    assert_eq!(ws, json!(format!("ws://127.0.0.1:{}/sub", s.ws_port)));
    let source = b.text("ws-source");
    assert!(source.contains("/goim/nodes/weighted"), "{source:?}");
    assert_eq!(b.text("error"), "");

    let first = unique("hello");
    s.push("1000", &first);
    b.wait_for(
        &format!("{first:?} in the list and the danmaku"),
        &shown(&first),
    );
    // UTF-8 bodies arrive whole.
    let second = format!("弹幕 ✓ {}", unique("second"));
    s.push("1000", &second);
    b.wait_for(&format!("{second:?} on the page"), &shown(&second));
    // Newest first, each with its time and op.
    let rows = b.eval(
        "[...document.querySelectorAll('#messages li')].slice(0, 2).map((l) => \
         ['.msg-time', '.msg-op', '.msg-body'].map((c) => l.querySelector(c).textContent))",
    );
    assert_eq!(rows[0][2], json!(second), "{rows}");
    assert_eq!(rows[1][2], json!(first), "{rows}");
    assert_eq!(rows[0][1], "op 1000", "{rows}");
    let time = rows[0][0].as_str().unwrap();
    assert!(
        time.len() == 12 && time.as_bytes()[2] == b':' && time.as_bytes()[8] == b'.',
        "time {time:?}"
    );
    // A push to another room does not reach this page.
    let elsewhere = unique("elsewhere");
    s.push("1001", &elsewhere);
    let after = unique("after");
    s.push("1000", &after);
    b.wait_for("the next message", &listed(&after));
    assert_eq!(b.eval(&listed(&elsewhere)), json!(false));
    assert_eq!(b.text("msg-count"), "3");
}

#[test]
fn the_online_count_follows_the_room() {
    let s = Stack::start("", None);
    let mut b = open(&s.page("?hb=1"));
    b.wait_for("the page to join", &state_is("connected"));
    let online = |n: u32| {
        format!(
            "['online', 'online-hb', 'online-http'].every((id) => \
             document.getElementById(id).textContent === '{n}')"
        )
    };
    b.wait_for(
        "the page alone in the room (heartbeat and HTTP)",
        &online(1),
    );
    // Three more clients join live://1000, one joins another room.
    let mut clients: Vec<TcpStream> = (1..=3)
        .map(|mid| goim_client(s.up.tcp, "live://1000", mid))
        .collect();
    clients.push(goim_client(s.up.tcp, "live://2000", 4));
    b.wait_for("4 in the room by both counts", &online(4));
    let source = b.text("online-source");
    assert!(
        source.contains("heartbeat reply") || source.contains("/goim/online/room"),
        "{source:?}"
    );
    // They leave.
    drop(clients);
    b.wait_for("the page alone again", &online(1));
}

#[test]
fn the_push_form_sends_through_the_api_with_the_bearer_secret() {
    let s = Stack::start("", Some("demo-secret"));
    let mut b = open(&s.page("?connect=0&hb=1"));
    assert_eq!(b.eval(&state_is("idle")), json!(true));
    // Without the secret, the form shows goim's envelope: code and message.
    let refused = unique("refused");
    fill(&mut b, "push-body", &refused);
    click(&mut b, "push-send");
    b.wait_for(
        "the push refused without the secret",
        "document.getElementById('push-result').dataset.code === '-401'",
    );
    let result = b.text("push-result");
    assert!(
        result.contains("code -401") && result.contains("Authorization"),
        "{result:?}"
    );
    // With it, the page finds its gateway (the node list needs the secret too) and joins.
    fill(&mut b, "bearer", "demo-secret");
    click(&mut b, "connect");
    b.wait_for("the page to join", &state_is("connected"));
    let sent = unique("from-the-form");
    fill(&mut b, "push-body", &sent);
    click(&mut b, "push-send");
    b.wait_for(
        "the form's push accepted",
        "document.getElementById('push-result').dataset.code === '0'",
    );
    b.wait_for(&format!("{sent:?} back on the page"), &shown(&sent));
    assert_eq!(b.eval(&listed(&refused)), json!(false));
    // The form clears its message once accepted.
    assert_eq!(
        b.eval("document.getElementById('push-body').value"),
        json!("")
    );
}

#[test]
fn a_wrong_gateway_address_is_a_clear_error() {
    let s = Stack::start("", None);
    let dead = free_port();
    let url = format!("ws://127.0.0.1:{dead}/sub");
    let mut b = open(&s.page(&format!("?ws={url}")));
    b.wait_for("the error state", &state_is("error"));
    let error = b.text("error");
    assert!(
        error.contains(&format!("could not open a WebSocket to {url}")),
        "{error:?}"
    );
    // It stays there (no silent retry loop) until asked again.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(b.eval(&state_is("error")), json!(true));
    // Pointed at the real gateway, the same page joins.
    fill(&mut b, "ws", &format!("ws://127.0.0.1:{}/sub", s.ws_port));
    click(&mut b, "connect");
    b.wait_for("the page to join", &state_is("connected"));
    assert_eq!(b.text("error"), "");
}

#[test]
fn a_refused_token_is_a_clear_error_and_a_signed_one_joins() {
    let s = Stack::start("[auth]\nmode = \"hmac\"\nsecrets = [\"demo-hmac\"]\n", None);
    // The page's own token is goim's unsigned JSON: this gateway refuses it and says why.
    let mut b = open(&s.page("?hb=1"));
    b.wait_for("the error state", &state_is("error"));
    let error = b.text("error");
    assert!(
        error.contains("auth refused by the gateway") && error.contains("no signature"),
        "{error:?}"
    );
    // A token minted by `corecast token` and pasted in joins.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corecast"))
        .args([
            "token",
            "--secret",
            "demo-hmac",
            "--room",
            "live://1000",
            "--platform",
            "web",
            "--accepts",
            "1000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    fill(&mut b, "token", token.trim());
    click(&mut b, "connect");
    b.wait_for(
        "the page to join with the signed token",
        &state_is("connected"),
    );
    assert_eq!(b.text("error"), "");
    let text = unique("signed");
    s.push("1000", &text);
    b.wait_for(&format!("{text:?} on the page"), &shown(&text));
}

/// A network cut (the page's Drop button closes its socket as a tunnel would): while the page
/// is away five messages are pushed; it reconnects with the dispatcher's backoff hints, asks
/// for what it missed after the last offset it showed (op 26), and shows all five once, in
/// order, with consecutive offsets, then the live stream.
#[test]
fn after_a_network_cut_the_page_recovers_what_it_missed() {
    let s = Stack::start("", None);
    let mut b = open(&s.page("?room=live://cut"));
    b.wait_for("the page to join", &state_is("connected"));
    let before = unique("before");
    s.push("cut", &before);
    b.wait_for("the first message", &listed(&before));
    click(&mut b, "drop");
    b.wait_for("the page to be away", &state_is("reconnecting"));
    let missed: Vec<String> = (0..5).map(|i| unique(&format!("missed{i}"))).collect();
    for m in &missed {
        s.push("cut", m);
    }
    b.wait_for_within(
        "the page back and recovered",
        "document.getElementById('recovery').dataset.outcome === 'ok'",
        Duration::from_secs(30),
    );
    let recovery = b.text("recovery");
    assert!(
        recovery.starts_with("recovered 5 missed messages (up to offset "),
        "{recovery:?}"
    );
    let live = unique("live");
    s.push("cut", &live);
    b.wait_for("the live message", &listed(&live));
    // Newest first: live, the five missed (last to first), the one before; offsets
    // consecutive, each message once.
    let rows = b.eval(
        "[...document.querySelectorAll('#messages li')].map((l) => \
         [l.querySelector('.msg-body').textContent, Number(l.dataset.offset)])",
    );
    let rows = rows.as_array().unwrap();
    let mut want: Vec<&String> = vec![&live];
    want.extend(missed.iter().rev());
    want.push(&before);
    let got: Vec<&str> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(got, want.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let offsets: Vec<u64> = rows.iter().map(|r| r[1].as_u64().unwrap()).collect();
    for w in offsets.windows(2) {
        assert_eq!(
            w[0],
            (w[1] + 1) % (1 << 32),
            "consecutive offsets: {offsets:?}"
        );
    }
}
