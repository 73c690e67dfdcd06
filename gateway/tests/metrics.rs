//! The Prometheus endpoint: per-shard series that move with the traffic, and a clear 404.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use support::*;

fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The sum over shards of one series.
fn total(text: &str, metric: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{shard=")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn metrics_have_a_series_per_shard_and_move_with_traffic() {
    let gw = start(config());
    let addr = gw.metrics_addr().expect("metrics served");
    let before = get(addr, "/metrics");
    assert!(before.starts_with("HTTP/1.0 200"), "{before}");
    assert!(before.contains("# TYPE corecast_gateway_messages_out_total counter"));
    for shard in 0..gw.shards() {
        assert!(before.contains(&format!(
            "corecast_gateway_connections{{shard=\"{shard}\"}}"
        )));
    }
    let mut clients: Vec<Client> = (0..4)
        .map(|i| Client::auth(&gw, BOTH[i % 2], &token(i as i64, "", "live://m", &[])))
        .collect();
    push_room(&gw, "live://m", 1000, &[b"hello"]);
    for c in &mut clients {
        c.recv_push().unwrap();
    }
    eventually(5, "metrics to show the traffic", || {
        let now = get(addr, "/metrics");
        total(&now, "corecast_gateway_authenticated") == 4
            && total(&now, "corecast_gateway_messages_out_total") == 4
            && total(&now, "corecast_gateway_auth_ok_total") == 4
            && now.contains("corecast_gateway_room_keys 1")
    });
    let missing = get(addr, "/nope");
    assert!(
        missing.starts_with("HTTP/1.0 404") && missing.contains("try /metrics"),
        "{missing}"
    );
}

#[test]
fn a_metrics_port_in_use_is_a_clear_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config();
    c.metrics_bind = taken.local_addr().unwrap().to_string();
    let err = gateway::Gateway::start(c).err().expect("start refused");
    assert!(err.to_string().contains("listening on"), "{err}");
}
