//! The link secret with real gateways (in-process libraries, real sockets): a gateway whose
//! `link_secret` is one of the dispatcher's `link_secrets` links and pushes reach its clients;
//! a gateway with a wrong or no secret is refused (counted in `links_refused`, absent from
//! `/goim/nodes/instances`) and keeps redialling with its backoff (the count keeps growing);
//! a dispatcher without secrets accepts gateways with and without one. With processes: the
//! refused gateway's log names the reason, and so does the dispatcher's.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use support::procs::{DispatcherProc, GatewayProc, wait_for};
use support::{bodies, http, listen, post_ok, wait_until};

fn dispatcher(secrets: &[&str]) -> dispatcher::Dispatcher {
    let mut cfg = dispatcher::Config::loopback_ephemeral();
    cfg.link_secrets = secrets.iter().map(|s| s.to_string()).collect();
    dispatcher::Dispatcher::start(cfg).unwrap()
}

fn gateway(id: &str, link: SocketAddr, secret: &str) -> gateway::Gateway {
    let mut cfg = gateway::Config::loopback_ephemeral();
    cfg.id = id.into();
    cfg.metrics_bind = String::new();
    cfg.dispatchers = vec![link.to_string()];
    cfg.renew_ms = 200;
    cfg.link_secret = secret.into();
    gateway::Gateway::start(cfg).unwrap()
}

fn instance_ids(d: &dispatcher::Dispatcher) -> Vec<String> {
    let (_, v) = http(d.http_addr(), "GET", "/goim/nodes/instances", b"");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["hostname"].as_str().unwrap().to_string())
        .collect()
}

/// One client of `gw` in room live://1 expecting one message.
fn client_of(gw: &gateway::Gateway, key: &str) -> std::thread::JoinHandle<Vec<serde_json::Value>> {
    listen(support::tcp_client(
        gw.tcp_addr(),
        "live://1",
        0,
        key,
        Some(1),
        15,
    ))
}

#[test]
fn only_gateways_with_a_right_secret_link_and_refused_ones_keep_redialling() {
    let d = dispatcher(&["s1"]);
    let good = gateway("g-good", d.link_addr(), "s1");
    let wrong = gateway("g-wrong", d.link_addr(), "s2");
    let none = gateway("g-none", d.link_addr(), "");
    let c = client_of(&good, "k-good");
    wait_until("the good gateway reports its client", || {
        d.gateways()
            .iter()
            .any(|g| g.id == "g-good" && g.conn_count == 1)
    });
    post_ok(
        &d,
        "/goim/push/room?operation=1000&type=live&room=1",
        b"hello",
    );
    assert_eq!(bodies(&c.join().unwrap()), ["hello"]);
    // Both refused gateways dial again with backoff (100, 200, 400 ms, ...): refusals grow.
    wait_until("each refused gateway has redialled", || {
        d.metrics().links_refused.load(Relaxed) >= 6
    });
    let ids: Vec<String> = d.gateways().into_iter().map(|g| g.id).collect();
    assert_eq!(ids, ["g-good"]);
    assert_eq!(instance_ids(&d), ["g-good"]);
    assert_eq!(d.metrics().links_rejected.load(Relaxed), 0);
    for g in [good, wrong, none] {
        g.stop();
    }
    d.stop_within(std::time::Duration::ZERO);
}

#[test]
fn a_dispatcher_without_secrets_accepts_gateways_with_and_without_one() {
    let d = dispatcher(&[]);
    let with = gateway("g-with", d.link_addr(), "some-secret");
    let without = gateway("g-without", d.link_addr(), "");
    let (a, b) = (client_of(&with, "k-a"), client_of(&without, "k-b"));
    wait_until("both gateways report their client", || {
        d.gateways().len() == 2 && d.gateways().iter().all(|g| g.conn_count == 1)
    });
    post_ok(
        &d,
        "/goim/push/room?operation=1000&type=live&room=1",
        b"both",
    );
    assert_eq!(bodies(&a.join().unwrap()), ["both"]);
    assert_eq!(bodies(&b.join().unwrap()), ["both"]);
    assert_eq!(d.metrics().links_refused.load(Relaxed), 0);
    with.stop();
    without.stop();
    d.stop_within(std::time::Duration::ZERO);
}

#[test]
fn a_refused_gateway_process_logs_the_reason_and_keeps_redialling() {
    let d = DispatcherProc::start(
        "dispatcher",
        "http_bind = \"127.0.0.1:0\"\nlink_bind = \"127.0.0.1:0\"\nthreads = 1\nlink_secrets = [\"l1\"]\n",
    );
    let g = GatewayProc::start("gw-wrong", 0, &[d.link], 200, "link_secret = \"l2\"\n");
    let reason = "the dispatcher refused this gateway: wrong link proof";
    wait_for(
        "the gateway logged two refusals",
        10,
        std::time::Duration::from_millis(20),
        || g.p.logged(reason) >= 2,
    );
    assert!(g.p.logged("dialling again") >= 2, "{}", g.p.log());
    assert!(
        d.p.logged("gateway gw-wrong from 127.0.0.1:") >= 2,
        "{}",
        d.p.log()
    );
    assert!(d.metric("corecast_dispatcher_links_refused_total") >= 2);
    assert!(d.instances().is_empty());
}
