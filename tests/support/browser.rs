//! A headless Chromium for the demo page's tests, driven over the DevTools protocol (CDP) with
//! tungstenite: Debian's `chromium` is started with `--remote-debugging-port=0` and a profile
//! in a temporary directory; the `ws://` address it prints on stderr is dialled, the page target
//! is attached in flat mode (one socket, commands carry a `sessionId`), and pages are driven
//! with `Page.navigate` and `Runtime.evaluate`. Console messages, uncaught exceptions and log
//! entries (a refused WebSocket, a failed load) are kept for failure messages.
//!
//! Chromium runs in a process group of its own; dropping the [`Browser`] kills that group (the
//! browser and the renderer, GPU and utility processes it started) by its id, reaps the
//! browser, and removes the profile directory.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use super::TempDir;

/// What every wait allows by default.
pub const WAIT: Duration = Duration::from_secs(20);

/// The longest a single DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of Chromium's stderr and page events kept for failure messages.
const KEEP: usize = 200;

/// A JavaScript expression whose value describes the page when a wait fails.
const DEFAULT_DUMP: &str =
    "document.body ? document.body.innerText.slice(0, 4000) : '(no document body)'";

pub struct Browser {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// The attached page's flat session.
    session: String,
    /// Console messages, exceptions and log entries of the page, oldest first.
    events: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Evaluated for failure messages (a test may name the elements it cares about).
    pub dump: String,
    // Dropped in this order: the processes end, then their profile directory goes.
    _group: Group,
    _profile: TempDir,
}

/// Chromium's process group, killed (by its id) when dropped: the browser and every renderer,
/// GPU and utility process it started.
struct Group {
    child: Child,
}

impl Drop for Group {
    fn drop(&mut self) {
        let group = self.child.id() as i32;
        // SAFETY: signalling the process group this test created for the browser it spawned.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
        // The others die with the group; wait (briefly) until none is left, so the profile
        // directory is removed after them.
        let t = Instant::now();
        // SAFETY: signal 0 only asks whether the group still has a process.
        while unsafe { libc::kill(-group, 0) } == 0 && t.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Where Debian's `chromium` is: `CORECAST_CHROMIUM`, or `chromium` on the PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CORECAST_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium is not installed: the demo page tests need a real browser. Run \
                 scripts/test.sh (it installs Debian's chromium package when missing), or \
                 `apt-get install chromium`"
            )
        })
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and attaches to its first page.
    pub fn start() -> Browser {
        let exe = chromium();
        let profile = TempDir::new("chromium");
        let child = Command::new(&exe)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-extensions",
                "--disable-component-update",
                "--disable-sync",
                "--disable-background-networking",
                // A page that is not in front must keep its timers (heartbeats, polls).
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // A group of its own, so that dropping the Browser ends every process it started.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {}: {e} (run scripts/test.sh, which installs chromium)",
                    exe.display()
                )
            });
        let mut group = Group { child };
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = group.child.stderr.take().unwrap();
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(at) = line.find("DevTools listening on ") {
                    let _ = tx.send(
                        line[at + "DevTools listening on ".len()..]
                            .trim()
                            .to_string(),
                    );
                }
                let mut l = lines.lock().unwrap();
                if l.len() >= KEEP {
                    l.remove(0);
                }
                l.push(line);
            }
        });
        // A panic from here on drops `group` (killing chromium), then `profile`.
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "chromium did not print its DevTools address within 30 s; stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                )
            });
        let hostport = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools address {url:?}"))
            .to_string();
        let stream = TcpStream::connect(&hostport).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("DevTools handshake with {url}: {e}"));
        // Short reads from here on, so every wait checks its own deadline.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = Browser {
            ws,
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
            stderr,
            dump: DEFAULT_DUMP.into(),
            _group: group,
            _profile: profile,
        };
        let targets = b.call(None, "Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .map(|t| t["targetId"].as_str().unwrap().to_string());
        let target = match page {
            Some(t) => t,
            None => b.call(None, "Target.createTarget", json!({"url": "about:blank"}))["targetId"]
                .as_str()
                .unwrap()
                .to_string(),
        };
        let attached = b.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.page_call(domain, json!({}));
        }
        b
    }

    /// Sends one command (to the page's session, or to the browser) and returns its result.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "DevTools {method}: no answer within {COMMAND_TIMEOUT:?}{}",
                self.context()
            );
            let text = match self.ws.read() {
                Ok(Message::Text(t)) => t.as_str().to_string(),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue;
                }
                Err(e) => panic!("DevTools {method}: {e}{}", self.context()),
            };
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if v["id"] == id {
                if let Some(err) = v.get("error") {
                    panic!("DevTools {method} failed: {err}{}", self.context());
                }
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    fn page_call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// Keeps what the page said: console calls, exceptions, log entries.
    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        let line = match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| match &a["value"] {
                        Value::String(s) => s.clone(),
                        Value::Null => a["description"].as_str().unwrap_or("").to_string(),
                        other => other.to_string(),
                    })
                    .collect();
                format!(
                    "console.{}: {}",
                    p["type"].as_str().unwrap_or("?"),
                    args.join(" ")
                )
            }
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("?");
                format!("uncaught exception: {text}")
            }
            Some("Log.entryAdded") => {
                let e = &p["entry"];
                format!(
                    "log {} ({}): {} {}",
                    e["level"].as_str().unwrap_or("?"),
                    e["source"].as_str().unwrap_or("?"),
                    e["text"].as_str().unwrap_or(""),
                    e["url"].as_str().unwrap_or("")
                )
            }
            _ => return,
        };
        if self.events.len() >= KEEP {
            self.events.remove(0);
        }
        self.events.push(line);
    }

    /// Opens `url` in the page and waits until it has loaded.
    pub fn goto(&mut self, url: &str) {
        let r = self.page_call("Page.navigate", json!({"url": url}));
        if let Some(e) = r["errorText"].as_str() {
            panic!("loading {url}: {e}{}", self.context());
        }
        let expr = format!(
            "location.href === {} && document.readyState === 'complete'",
            json!(url)
        );
        self.wait_for(&format!("{url} to load"), &expr);
    }

    /// Evaluates `expr` in the page (promises awaited) and returns its value as JSON.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.page_call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(d) = r.get("exceptionDetails") {
            let text = d["exception"]["description"]
                .as_str()
                .or(d["text"].as_str())
                .unwrap_or("?")
                .to_string();
            panic!("evaluating {expr:?} threw: {text}{}", self.context());
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` every 100 ms until it is `true`, for up to [`WAIT`]; on timeout, fails
    /// saying what the page held.
    pub fn wait_for(&mut self, what: &str, expr: &str) {
        self.wait_for_within(what, expr, WAIT);
    }

    pub fn wait_for_within(&mut self, what: &str, expr: &str, within: Duration) {
        let t = Instant::now();
        loop {
            if self.eval(expr) == Value::Bool(true) {
                return;
            }
            if t.elapsed() > within {
                panic!(
                    "timed out after {within:?} waiting for {what} ({expr}){}",
                    self.context()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The text of the element with this id ("" when there is none).
    pub fn text(&mut self, id: &str) -> String {
        let expr = format!(
            "(document.getElementById({}) || {{textContent: ''}}).textContent",
            json!(id)
        );
        self.eval(&expr).as_str().unwrap_or_default().to_string()
    }

    /// What the page, its console and the browser said, for a failure message.
    pub fn context(&mut self) -> String {
        // The dump runs without going through `eval`, so a failing dump cannot recurse.
        let dump = self.try_dump();
        format!(
            "\n--- the page:\n{dump}\n--- its console and log:\n{}\n--- chromium's stderr (last lines):\n{}",
            self.events.join("\n"),
            {
                let l = self.stderr.lock().unwrap();
                let from = l.len().saturating_sub(20);
                l[from..].join("\n")
            }
        )
    }

    fn try_dump(&mut self) -> String {
        if self.session.is_empty() {
            return "(no page attached)".into();
        }
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({
            "id": id,
            "sessionId": self.session,
            "method": "Runtime.evaluate",
            "params": {"expression": self.dump, "returnByValue": true},
        });
        if self.ws.send(Message::text(msg.to_string())).is_err() {
            return "(the DevTools socket is gone)".into();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["id"] == id {
                        let value = &v["result"]["result"]["value"];
                        return match value {
                            Value::String(s) => s.clone(),
                            other => serde_json::to_string_pretty(other).unwrap_or_default(),
                        };
                    }
                    self.event(&v);
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return format!("(no dump: {e})"),
            }
        }
        "(no dump within 5 s)".into()
    }
}
