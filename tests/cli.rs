//! The `corecast` binary as a user runs it: `gateway --print-config`, `gateway` serving goim
//! clients and draining on SIGTERM, and `token` minting a token the gateway accepts.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::free_port;

fn corecast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corecast"))
}

fn frame(op: i32, seq: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    protocol::frame::encode(&mut out, 1, op, seq, body);
    out
}

#[test]
fn print_config_shows_the_effective_values() {
    let out = corecast()
        .args(["gateway", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed = gateway::Config::from_toml(&text).unwrap();
    assert_eq!(parsed, gateway::Config::default());
    let bad = std::env::temp_dir().join(format!("corecast-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, "[auth]\nmode = \"jwt\"\n").unwrap();
    let out = corecast()
        .args(["gateway", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.mode \"jwt\""), "{err}");
    std::fs::remove_file(bad).ok();
}

#[test]
fn gateway_serves_signed_clients_and_drains_on_sigterm() {
    let (tcp, ws) = (free_port(), free_port());
    let cfg = std::env::temp_dir().join(format!("corecast-cli-{}.toml", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "tcp_bind = \"127.0.0.1:{tcp}\"\nws_bind = \"127.0.0.1:{ws}\"\nmetrics_bind = \"127.0.0.1:0\"\n[auth]\nmode = \"hmac\"\nsecrets = [\"cli-secret\"]\n[drain]\ninterval_ms = 100\n"
        ),
    )
    .unwrap();
    let token = corecast()
        .args([
            "token",
            "--secret",
            "cli-secret",
            "--mid",
            "9",
            "--room",
            "live://cli",
            "--accepts",
            "1000,1001",
        ])
        .output()
        .unwrap();
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap();
    let parsed: protocol::token::Token = serde_json::from_str(token.trim()).unwrap();
    assert_eq!(
        (parsed.mid, parsed.accepts.as_slice()),
        (9, &[1000, 1001][..])
    );

    let mut child = corecast()
        .args(["gateway", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", tcp)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("gateway did not start: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame(protocol::op::AUTH, 1, token.trim().as_bytes()))
        .unwrap();
    let mut reply = [0u8; 16];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[8..12], &protocol::op::AUTH_REPLY.to_be_bytes());

    // SIGTERM: the connection is closed with a reason and the process exits cleanly.
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("server draining"), "{text}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    std::fs::remove_file(cfg).ok();
}

#[test]
fn dispatcher_and_up_print_their_effective_configs() {
    let out = corecast()
        .args(["dispatcher", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        dispatcher::Config::from_toml(&text).unwrap(),
        dispatcher::Config::default()
    );
    let dir = std::env::temp_dir().join(format!("corecast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.join("dispatcher.toml");
    std::fs::write(&d, "[queue]\nkind = \"rabbitmq\"\n").unwrap();
    let out = corecast()
        .args(["dispatcher", "--config"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queue.kind \"rabbitmq\""), "{err}");
    // A durable queue whose broker does not answer stops the start, naming it.
    let port = free_port();
    for (kind, url, needle) in [
        (
            "nats",
            format!("servers = [\"nats://127.0.0.1:{port}\"]"),
            "cannot reach NATS",
        ),
        (
            "redis",
            format!("url = \"redis://127.0.0.1:{port}\""),
            "cannot reach Redis",
        ),
    ] {
        std::fs::write(
            &d,
            format!("http_bind = \"127.0.0.1:0\"\nlink_bind = \"127.0.0.1:0\"\n[queue]\nkind = \"{kind}\"\n[queue.{kind}]\n{url}\n"),
        )
        .unwrap();
        let out = corecast()
            .args(["dispatcher", "--config"])
            .arg(&d)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle) && err.contains(&port.to_string()),
            "{kind}: {err}"
        );
    }
    // `up` prints both roles' configs, each under a comment naming its flag.
    std::fs::write(&d, "[job]\nroom_linger_ms = 7\n").unwrap();
    let out = corecast()
        .args(["up", "--print-config", "--dispatcher-config"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (g, d_text) = text
        .split_once("# dispatcher (--dispatcher-config)")
        .unwrap();
    assert_eq!(
        gateway::Config::from_toml(g).unwrap(),
        gateway::Config::default()
    );
    assert_eq!(
        dispatcher::Config::from_toml(d_text)
            .unwrap()
            .job
            .room_linger_ms,
        7
    );
    std::fs::remove_dir_all(dir).ok();
}
