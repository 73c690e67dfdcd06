//! One gateway process holds 50,000 authenticated connections, past the 20,000-descriptor cap
//! a process has here (connections are io_uring direct descriptors), and a room push reaches
//! every one of them.
//!
//! The clients need ordinary descriptors, so they live in child processes (this test binary
//! run again as `child_holder`), 12,500 each, spread over source addresses 127.0.x.y with at
//! most 2,000 connections per address.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use protocol::frame;
use protocol::op;
use support::*;

const CHILDREN: usize = 4;
const PER_CHILD: usize = 12_500;

#[test]
fn heavy_50k_connections_in_one_process_all_receive_a_room_push() {
    let gw = start(config());
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..CHILDREN)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "child_holder",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("CORECAST_CHILD", format!("{i}:{}", gw.tcp_addr()))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut lines: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()).lines())
        .collect();
    let mut expect = |what: &str| {
        for l in lines.iter_mut() {
            loop {
                // libtest prints "test child_holder ... " before the child's own output, on the
                // same line.
                let line = l.next().expect("child alive").unwrap();
                if let Some(at) = line.find(what) {
                    assert_eq!(&line[at..], format!("{what} {PER_CHILD}"));
                    break;
                }
            }
        }
    };
    expect("READY");
    let total = (CHILDREN * PER_CHILD) as u64;
    wait_authenticated(&gw, total);
    let counts = gw.room_counts();
    assert_eq!(counts, vec![("test://1".to_string(), total as i32)]);
    push_room(&gw, "test://1", 1000, &[b"{\"test\":1}"]);
    for c in children.iter_mut() {
        c.stdin.as_mut().unwrap().write_all(b"GO\n").unwrap();
    }
    expect("GOT");
    eventually(10, "every message counted", || {
        gw.total().messages_out == total
    });
    for mut c in children {
        let _ = c.stdin.take();
        assert!(c.wait().unwrap().success());
    }
}

/// Child: holds PER_CHILD authenticated connections and reports what they receive.
#[test]
#[ignore = "run as a child process by heavy_50k_connections_in_one_process_all_receive_a_room_push"]
fn child_holder() {
    let Ok(spec) = std::env::var("CORECAST_CHILD") else {
        return;
    };
    let (idx, addr) = spec.split_once(':').unwrap();
    let idx: usize = idx.parse().unwrap();
    let target: SocketAddr = addr.parse().unwrap();
    let mut conns = Vec::with_capacity(PER_CHILD);
    for i in 0..PER_CHILD {
        let src = Ipv4Addr::new(127, 1 + idx as u8, (i / 2000) as u8, 1);
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())
            .unwrap();
        sock.connect(&target.into()).unwrap();
        let mut s: TcpStream = sock.into();
        let mid = (idx * PER_CHILD + i) as i64;
        let token = format!("{{\"mid\":{mid},\"room_id\":\"test://1\",\"accepts\":[1000]}}");
        let mut out = Vec::new();
        frame::encode(&mut out, 1, op::AUTH, 1, token.as_bytes());
        s.write_all(&out).unwrap();
        conns.push(s);
    }
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut reply = [0u8; 16];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(
            i32::from_be_bytes(reply[8..12].try_into().unwrap()),
            op::AUTH_REPLY
        );
    }
    println!("READY {PER_CHILD}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let mut got = 0;
    for s in &mut conns {
        let mut f = [0u8; 26];
        s.read_exact(&mut f).unwrap();
        let (h, body, _) = frame::split(&f, 4112).unwrap().unwrap();
        assert_eq!((h.op, body), (1000, &b"{\"test\":1}"[..]));
        got += 1;
    }
    println!("GOT {got}");
    std::io::stdin().read_line(&mut line).unwrap();
}

/// With every ring full (and no more allowed) the shard stops accepting: waiting clients stay
/// in the listen queue, none is reset, and accepting resumes as soon as connections close.
/// (Accepts in flight reserve their slots, so the last ring admits up to 2 x 16 fewer
/// connections than it has slots.)
#[test]
fn full_rings_pause_accepting_without_resetting_anyone() {
    let mut c = config();
    c.cores = vec![0];
    c.engine.slots_per_ring = 64;
    c.engine.max_rings_per_shard = 1;
    let gw = start(c);
    let mut clients: Vec<Client> = (0..72)
        .map(|_| {
            let mut c = Client::connect(&gw, Transport::Tcp);
            c.send(1, op::AUTH, 1, JS_TOKEN.as_bytes());
            c
        })
        .collect();
    let mut accepted = Vec::new();
    let mut waiting = Vec::new();
    for mut c in clients.drain(..) {
        c.set_timeout(Duration::from_millis(150));
        match c.recv() {
            Ok(f) => {
                assert_eq!(f.op, op::AUTH_REPLY);
                accepted.push(c);
            }
            Err(End::Timeout) => waiting.push(c),
            Err(e) => panic!("a waiting client was dropped: {e:?}"),
        }
    }
    assert!(
        (32..=64).contains(&accepted.len()),
        "{} accepted",
        accepted.len()
    );
    assert!(!waiting.is_empty());
    for c in &mut accepted {
        assert_alive(c);
    }
    drop(accepted);
    for c in &mut waiting {
        c.set_timeout(Duration::from_secs(10));
        assert_eq!(
            c.recv().unwrap().op,
            op::AUTH_REPLY,
            "accepted once slots freed"
        );
    }
    assert_eq!(gw.total().accept_errors, 0);
}
