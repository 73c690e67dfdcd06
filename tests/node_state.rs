//! A gateway that stops taking connections says so to the dispatchers at once (not at its next
//! renewal): over its memory ceiling, or draining, it is offline in `/goim/nodes/instances` and
//! left out of `/goim/nodes/weighted`, so clients are sent to the other gateways.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{http, wait_until};

fn gateway(id: &str, link: SocketAddr, max_memory_mb: u64) -> gateway::Gateway {
    let mut cfg = gateway::Config::loopback_ephemeral();
    cfg.id = id.into();
    cfg.dispatchers = vec![link.to_string()];
    cfg.public_addrs = vec![format!("{id}.example")];
    // Long renewals: the state change must travel on its own.
    cfg.renew_ms = 60_000;
    cfg.limits.max_memory_mb = max_memory_mb;
    cfg.drain.batch = 1;
    cfg.drain.interval_ms = 60_000;
    gateway::Gateway::start(cfg).unwrap()
}

fn weighted(d: &dispatcher::Dispatcher) -> Vec<String> {
    let (status, v) = http(d.http_addr(), "GET", "/goim/nodes/weighted", b"");
    assert_eq!(status, 200, "{v}");
    v["data"]["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn offline(d: &dispatcher::Dispatcher, id: &str) -> Option<bool> {
    d.gateways().iter().find(|g| g.id == id).map(|g| g.offline)
}

#[test]
fn a_gateway_over_its_memory_ceiling_or_draining_leaves_the_weighted_node_list() {
    let d = dispatcher::Dispatcher::start(dispatcher::Config::loopback_ephemeral()).unwrap();
    let ok = gateway("g-ok", d.link_addr(), 0);
    // Any process is over 1 MiB: this one trips its ceiling within a second of starting.
    let heavy = gateway("g-heavy", d.link_addr(), 1);
    wait_until("both gateways registered", || d.gateways().len() == 2);
    wait_until("the heavy gateway reported offline", || {
        offline(&d, "g-heavy") == Some(true)
    });
    assert_eq!(offline(&d, "g-ok"), Some(false));
    let nodes = weighted(&d);
    assert!(nodes.contains(&"g-ok.example".to_string()), "{nodes:?}");
    assert!(!nodes.contains(&"g-heavy.example".to_string()), "{nodes:?}");
    let (_, inst) = http(d.http_addr(), "GET", "/goim/nodes/instances", b"");
    let heavy_meta = inst["data"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["hostname"] == "g-heavy"))
        .map(|i| i["metadata"]["offline"].clone());
    assert_eq!(heavy_meta, Some(serde_json::json!("true")), "{inst}");

    // Draining: offline at once, though the next renewal is a minute away.
    ok.drain();
    wait_until("the draining gateway reported offline", || {
        offline(&d, "g-ok") == Some(true)
    });
    assert!(weighted(&d).is_empty(), "{:?}", weighted(&d));
    std::thread::sleep(Duration::from_millis(50));
    heavy.stop();
    d.stop();
}
