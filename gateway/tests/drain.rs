//! Graceful drain: stop accepting, close connections in batches over the drain window with a
//! reason, then the shards exit.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn drain_closes_connections_in_batches_and_then_exits() {
    let mut c = config();
    c.drain.batch = 4;
    c.drain.interval_ms = 300;
    let gw = start(c);
    let mut clients: Vec<Client> = (0..16)
        .map(|i| {
            let t = if i % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Ws
            };
            Client::auth(&gw, t, &token(i, "", "live://d", &[]))
        })
        .collect();
    let started = Instant::now();
    gw.drain();
    // Each client watches for its own close, so every close time is observed as it happens.
    let mut closed_at: Vec<Duration> = std::thread::scope(|s| {
        let watchers: Vec<_> = clients
            .iter_mut()
            .map(|c| {
                s.spawn(move || {
                    c.set_timeout(Duration::from_secs(20));
                    let reason = c.expect_closed().unwrap_or_default();
                    assert!(reason.contains("server draining"), "{reason}");
                    started.elapsed()
                })
            })
            .collect();
        watchers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    closed_at.sort();
    // 16 connections, 4 per 300 ms over the gateway: the last goes at least 3 intervals later.
    assert!(closed_at[15] >= Duration::from_millis(800), "{closed_at:?}");
    assert!(closed_at[0] < Duration::from_millis(600), "{closed_at:?}");
    // No longer accepting.
    match std::net::TcpStream::connect(gw.tcp_addr()) {
        Err(_) => {}
        Ok(mut s) => {
            use std::io::Read;
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut b = [0u8; 1];
            assert!(
                matches!(s.read(&mut b), Ok(0) | Err(_)),
                "nothing accepts it"
            );
        }
    }
    let t = Instant::now();
    gw.wait();
    assert!(t.elapsed() < Duration::from_secs(5));
}
