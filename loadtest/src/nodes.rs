//! `--nodes`: clients that find their gateways the way goim clients do, through the
//! dispatcher's `GET /goim/nodes/weighted`, and move between gateways when one goes away.
//!
//! - At the start, [`fetch`] reads the list once: the nodes (ranked by the dispatcher's weights,
//!   best first), the advertised ports and the reconnect backoff hints. The run's connections
//!   are spread over the nodes in that order (`cli`).
//! - During the run, a [`Nodes`] keeps the latest list. A worker that schedules a reconnect
//!   asks for a fresh one ([`Nodes::want_fresh`]); one refresher thread fetches it at most once
//!   per second and swaps it in, so a storm of reconnects costs one request a second, not one
//!   per client. Reconnects take their node from the current list, round-robin per worker (a
//!   failed attempt moves on to the next node), and, unless `--backoff-base`/`--backoff-max`
//!   were given, wait as the hints say ([`Hints::delay_ms`], goim's formula).
//!
//! A node is `host:port` (its TCP address; WebSocket clients use the host with `ws_port`), or
//! a bare host, which gets `tcp_port` / `ws_port` from the reply, as in goim.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::options::Transport;
use crate::publish::HttpClient;

/// The least time between two fetches of the list.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// goim's reconnect backoff hints (`backoff` in `/goim/nodes/weighted`; delays in seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Hints {
    pub max_delay: f64,
    pub base_delay: f64,
    pub factor: f64,
    pub jitter: f64,
}

impl Hints {
    /// goim's formula: attempt `n` (0 for the first after a drop) waits
    /// `min(max_delay, base_delay × factor^n) × (1 + jitter × (2u - 1))`, never below 0, where
    /// `u` is uniform in [0, 1) (from `r`, any u64). All-zero hints: reconnect at once.
    pub fn delay_ms(&self, attempt: u8, r: u64) -> u64 {
        let factor = if self.factor > 0.0 { self.factor } else { 1.0 };
        let grown = self.base_delay * factor.powi(i32::from(attempt.min(60)));
        let capped = if self.max_delay > 0.0 {
            grown.min(self.max_delay)
        } else {
            grown
        };
        let u = (r >> 11) as f64 / (1u64 << 53) as f64;
        let secs = capped * (1.0 + self.jitter * (2.0 * u - 1.0));
        (secs.max(0.0) * 1000.0) as u64
    }
}

/// One read of `/goim/nodes/weighted`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeList {
    /// TCP and WebSocket addresses of the nodes, in the dispatcher's order.
    pub tcp: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    /// The backoff hints; `None` when the reply has no `backoff` at all.
    pub hints: Option<Hints>,
}

impl NodeList {
    pub fn addrs(&self, t: Transport) -> &[SocketAddr] {
        match t {
            Transport::Tcp => &self.tcp,
            Transport::Ws => &self.ws,
        }
    }
}

/// Parses `http://host:port` (or `host:port`) into the dispatcher's address.
pub fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    if url.starts_with("https://") {
        return Err(format!(
            "--nodes {url}: https is not supported; use http://"
        ));
    }
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("--nodes {url}: not an http://HOST:PORT address"))
}

/// Turns the `data` of a `/goim/nodes/weighted` answer into a list.
pub fn parse(data: &serde_json::Value) -> Result<NodeList, String> {
    let port = |k: &str| data[k].as_u64().filter(|&p| p > 0 && p < 65_536);
    let (tcp_port, ws_port) = (port("tcp_port"), port("ws_port"));
    let mut list = NodeList::default();
    for node in data["nodes"].as_array().into_iter().flatten() {
        let Some(node) = node.as_str() else { continue };
        if let Ok(addr) = node.parse::<SocketAddr>() {
            list.tcp.push(addr);
            if let Some(p) = ws_port {
                list.ws.push(SocketAddr::new(addr.ip(), p as u16));
            }
            continue;
        }
        let resolve = |p: u64| {
            (node, p as u16)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
        };
        if let Some(a) = tcp_port.and_then(resolve) {
            list.tcp.push(a);
        }
        if let Some(a) = ws_port.and_then(resolve) {
            list.ws.push(a);
        }
    }
    if let Some(b) = data.get("backoff").filter(|b| b.is_object()) {
        let f = |k: &str| b[k].as_f64().unwrap_or(0.0);
        list.hints = Some(Hints {
            max_delay: f("max_delay"),
            base_delay: f("base_delay"),
            factor: f("factor"),
            jitter: f("jitter"),
        });
    }
    Ok(list)
}

/// Reads the list from the dispatcher at `http`.
pub fn fetch(http: SocketAddr, bearer: Option<&str>) -> Result<NodeList, String> {
    let what = format!("GET http://{http}/goim/nodes/weighted");
    let mut c = HttpClient::connect(http)
        .map_err(|e| format!("{what}: {e}"))?
        .with_bearer(bearer.map(str::to_string));
    let (status, body) = c
        .get("/goim/nodes/weighted")
        .map_err(|e| format!("{what}: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{what}: HTTP {status}, not JSON: {e}"))?;
    if status != 200 || v["code"] != 0 {
        return Err(format!(
            "{what}: HTTP {status}, code {}: {}",
            v["code"],
            v["message"].as_str().unwrap_or_default()
        ));
    }
    parse(&v["data"]).map_err(|e| format!("{what}: {e}"))
}

/// The latest list, refreshed on demand by one thread (see the module comment).
#[derive(Debug)]
pub struct Nodes {
    http: SocketAddr,
    bearer: Option<String>,
    current: Mutex<Arc<NodeList>>,
    want: AtomicBool,
    /// Fetches that failed (the previous list stays in use).
    pub failures: std::sync::atomic::AtomicU64,
    pub fetches: std::sync::atomic::AtomicU64,
}

impl Nodes {
    pub fn new(http: SocketAddr, bearer: Option<String>, first: NodeList) -> Arc<Nodes> {
        Arc::new(Nodes {
            http,
            bearer,
            current: Mutex::new(Arc::new(first)),
            want: AtomicBool::new(false),
            failures: Default::default(),
            fetches: Default::default(),
        })
    }

    /// The list in use now.
    pub fn current(&self) -> Arc<NodeList> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks for a fresh list (fetched within a second).
    pub fn want_fresh(&self) {
        if !self.want.load(Ordering::Relaxed) {
            self.want.store(true, Ordering::Relaxed);
        }
    }

    /// Runs the refresher until `halt`: fetches when asked, at most once per
    /// [`REFRESH_EVERY`].
    pub fn spawn_refresher(
        self: &Arc<Nodes>,
        halt: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("loadtest-nodes".into())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                while !halt.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    if !me.want.load(Ordering::Relaxed)
                        || last.is_some_and(|t| t.elapsed() < REFRESH_EVERY)
                    {
                        continue;
                    }
                    me.want.store(false, Ordering::Relaxed);
                    last = Some(Instant::now());
                    me.fetches.fetch_add(1, Ordering::Relaxed);
                    match fetch(me.http, me.bearer.as_deref()) {
                        // An empty list (no gateway online) keeps the last one: retrying a
                        // known node beats having none.
                        Ok(list) if !list.tcp.is_empty() || !list.ws.is_empty() => {
                            *me.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(list);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            me.failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!("refreshing the node list: {e}");
                        }
                    }
                }
            })
            .expect("spawning a thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_with_and_without_ports() {
        let l = parse(&json!({
            "tcp_port": 3101, "ws_port": 3102,
            "nodes": ["127.0.0.1:4000", "127.0.0.2"],
            "backoff": {"max_delay": 4, "base_delay": 1, "factor": 1.8, "jitter": 0.3}
        }))
        .unwrap();
        assert_eq!(
            l.tcp,
            [
                "127.0.0.1:4000".parse::<SocketAddr>().unwrap(),
                "127.0.0.2:3101".parse().unwrap()
            ]
        );
        assert_eq!(
            l.ws,
            [
                "127.0.0.1:3102".parse::<SocketAddr>().unwrap(),
                "127.0.0.2:3102".parse().unwrap()
            ]
        );
        let h = l.hints.unwrap();
        assert_eq!((h.max_delay, h.base_delay, h.jitter), (4.0, 1.0, 0.3));
        // goim omits zero values: `{}` is all-zero hints, no key at all is no hints.
        assert_eq!(
            parse(&json!({"nodes": [], "backoff": {}})).unwrap().hints,
            Some(Hints::default())
        );
        assert_eq!(parse(&json!({"nodes": []})).unwrap().hints, None);
    }

    #[test]
    fn goims_backoff_formula() {
        let h = Hints {
            max_delay: 4.0,
            base_delay: 1.0,
            factor: 2.0,
            jitter: 0.0,
        };
        assert_eq!(h.delay_ms(0, 0), 1_000);
        assert_eq!(h.delay_ms(1, 0), 2_000);
        assert_eq!(h.delay_ms(2, 0), 4_000);
        assert_eq!(h.delay_ms(9, 0), 4_000, "capped at max_delay");
        let j = Hints { jitter: 0.5, ..h };
        let (lo, hi) = (j.delay_ms(0, 0), j.delay_ms(0, u64::MAX));
        assert!(
            (499..=501).contains(&lo) && (1_499..=1_500).contains(&hi),
            "{lo} {hi}"
        );
        // A jitter over 1 (goim's code default is 1.3) clamps at zero.
        let big = Hints { jitter: 1.3, ..h };
        assert_eq!(big.delay_ms(0, 0), 0);
        assert_eq!(
            Hints::default().delay_ms(5, 12345),
            0,
            "zero hints: at once"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:3111/").unwrap(),
            "127.0.0.1:3111".parse().unwrap()
        );
        assert_eq!(
            parse_url("127.0.0.1:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(parse_url("https://x:1").unwrap_err().contains("https"));
        assert!(parse_url("http://nowhere").is_err());
    }
}
