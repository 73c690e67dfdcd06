//! What every gateway integration test needs: a gateway on ephemeral loopback ports, real
//! goim clients over TCP and WebSocket, and pushes through the gateway's ingress.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use gateway::{Config, Gateway};
use protocol::batch::BatchBuilder;
use protocol::frame::{self, HEADER_LEN};
use protocol::link::{Body, Broadcast, PushKeys, RoomBatch};
use protocol::op;
use tungstenite::{Message, WebSocket};

pub const JS_TOKEN: &str =
    r#"{"mid":123, "room_id":"live://1000", "platform":"web", "accepts":[1000,1001,1002]}"#;

/// A config on ephemeral loopback ports with short deadlines.
pub fn config() -> Config {
    Config::loopback_ephemeral()
}

pub fn start(c: Config) -> Gateway {
    let _ = tracing_init();
    Gateway::start(c).expect("gateway starts")
}

fn tracing_init() -> Option<()> {
    std::env::var("RUST_LOG").ok()?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init()
        .ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Ws,
}

pub const BOTH: [Transport; 2] = [Transport::Tcp, Transport::Ws];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub ver: i16,
    pub op: i32,
    pub seq: i32,
    pub body: Vec<u8>,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The server closed; the reason it gave (op 6 body on TCP, Close frame text on WS, HTTP
    /// error body before the upgrade), if any.
    Closed(Option<String>),
    Timeout,
}

#[allow(clippy::large_enum_variant)]
pub enum Client {
    Tcp { stream: TcpStream, buf: Vec<u8> },
    Ws { ws: WebSocket<TcpStream> },
}

pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

impl Client {
    pub fn connect(gw: &Gateway, t: Transport) -> Client {
        match t {
            Transport::Tcp => Client::Tcp {
                stream: tcp_connect(gw.tcp_addr()),
                buf: Vec::new(),
            },
            Transport::Ws => {
                let stream = tcp_connect(gw.ws_addr());
                let url = format!("ws://{}/sub", gw.ws_addr());
                let (ws, _) = tungstenite::client(url, stream).expect("ws handshake");
                Client::Ws { ws }
            }
        }
    }

    /// Connects and authenticates with `token`; panics unless op 8 comes back.
    pub fn auth(gw: &Gateway, t: Transport, token: &str) -> Client {
        let mut c = Client::connect(gw, t);
        c.send(1, op::AUTH, 1, token.as_bytes());
        let f = c.recv().expect("auth reply");
        assert_eq!(
            (f.op, f.seq, f.body.len()),
            (op::AUTH_REPLY, 1, 0),
            "auth reply"
        );
        c
    }

    pub fn transport(&self) -> Transport {
        match self {
            Client::Tcp { .. } => Transport::Tcp,
            Client::Ws { .. } => Transport::Ws,
        }
    }

    pub fn send(&mut self, ver: i16, op: i32, seq: i32, body: &[u8]) {
        let mut out = Vec::new();
        frame::encode(&mut out, ver, op, seq, body);
        self.send_raw(out);
    }

    /// Sends bytes as they are (TCP) or as one binary message (WS).
    pub fn send_raw(&mut self, bytes: Vec<u8>) {
        match self {
            Client::Tcp { stream, .. } => stream.write_all(&bytes).expect("write"),
            Client::Ws { ws } => ws.send(Message::binary(bytes)).expect("ws send"),
        }
    }

    /// The raw TCP stream under the client (for malformed WebSocket frames).
    pub fn stream(&mut self) -> &mut TcpStream {
        match self {
            Client::Tcp { stream, .. } => stream,
            Client::Ws { ws } => ws.get_mut(),
        }
    }

    pub fn set_timeout(&mut self, d: Duration) {
        self.stream().set_read_timeout(Some(d)).unwrap();
    }

    /// The next goim frame: on TCP the next frame of the stream; on WS the frame of the next
    /// binary message (an op-9 wrapper is returned as it is).
    pub fn recv(&mut self) -> Result<Frame, End> {
        match self {
            Client::Tcp { stream, buf } => loop {
                if let Ok(Some((h, body, used))) = frame::split(buf, usize::MAX >> 1) {
                    let f = Frame {
                        ver: h.ver,
                        op: h.op,
                        seq: h.seq,
                        body: body.to_vec(),
                    };
                    buf.drain(..used);
                    return Ok(f);
                }
                let mut chunk = [0u8; 65536];
                match stream.read(&mut chunk) {
                    Ok(0) => return Err(End::Closed(None)),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return Err(End::Timeout);
                    }
                    Err(_) => return Err(End::Closed(None)),
                }
            },
            Client::Ws { ws } => loop {
                match ws.read() {
                    Ok(Message::Binary(b)) => {
                        let (h, body) = frame::decode_ws_message(&b, usize::MAX >> 1)
                            .expect("server sends well-formed frames");
                        return Ok(Frame {
                            ver: h.ver,
                            op: h.op,
                            seq: h.seq,
                            body: body.to_vec(),
                        });
                    }
                    Ok(Message::Close(c)) => {
                        return Err(End::Closed(c.map(|c| c.reason.to_string())));
                    }
                    Ok(_) => continue,
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                    {
                        return Err(End::Timeout);
                    }
                    Err(_) => return Err(End::Closed(None)),
                }
            },
        }
    }

    /// The next pushed messages as a goim client sees them: on TCP one bare frame; on WS the
    /// inner frames of one op-9 message (asserting the wrapper).
    pub fn recv_push(&mut self) -> Result<Vec<Frame>, End> {
        let f = self.recv()?;
        match self.transport() {
            Transport::Tcp => {
                assert_ne!(f.op, op::RAW, "a TCP client never sees op 9");
                Ok(vec![f])
            }
            Transport::Ws => {
                assert_eq!(
                    (f.op, f.ver, f.seq),
                    (op::RAW, 1, 0),
                    "WS pushes are op-9 wrappers"
                );
                Ok(inner_frames(&f.body))
            }
        }
    }

    /// Reads until the server closes; returns the reason it gave. Panics on a timeout.
    pub fn expect_closed(&mut self) -> Option<String> {
        let mut reason = None;
        loop {
            match self.recv() {
                Ok(f) if f.op == op::DISCONNECT_REPLY => {
                    reason = Some(String::from_utf8_lossy(&f.body).into_owned());
                }
                Ok(_) => {}
                Err(End::Closed(r)) => return r.or(reason),
                Err(End::Timeout) => panic!("the server did not close the connection"),
            }
        }
    }

    /// Asserts nothing arrives within `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        self.set_timeout(d);
        match self.recv() {
            Err(End::Timeout) => {}
            other => panic!("expected nothing, got {other:?}"),
        }
        self.set_timeout(Duration::from_secs(10));
    }
}

pub fn inner_frames(mut body: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (h, b, used) = frame::split(body, usize::MAX >> 1)
            .expect("inner frame")
            .expect("whole inner frame");
        out.push(Frame {
            ver: h.ver,
            op: h.op,
            seq: h.seq,
            body: b.to_vec(),
        });
        body = &body[used..];
    }
    out
}

pub fn token(mid: i64, key: &str, room: &str, accepts: &[i32]) -> String {
    protocol::token::Token {
        mid,
        key: key.into(),
        room_id: room.into(),
        platform: "test".into(),
        accepts: accepts.to_vec(),
        ..Default::default()
    }
    .to_json()
}

fn frames(op: i32, bodies: &[&[u8]]) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for body in bodies {
        b.push(op, body);
    }
    b.inner_frames().to_vec()
}

pub fn push_room(gw: &Gateway, room: &str, op: i32, bodies: &[&[u8]]) {
    gw.ingress()
        .deliver(Body::RoomBatch(RoomBatch {
            id: 0,
            room: room.into(),
            frames: frames(op, bodies),
        }))
        .expect("room batch accepted");
}

pub fn push_keys(gw: &Gateway, keys: &[&str], op: i32, body: &[u8]) {
    gw.ingress()
        .deliver(Body::PushKeys(PushKeys {
            id: 0,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            op,
            frames: frames(op, &[body]),
        }))
        .expect("key push accepted");
}

pub fn broadcast(gw: &Gateway, op: i32, speed: i32, body: &[u8]) {
    gw.ingress()
        .deliver(Body::Broadcast(Broadcast {
            id: 0,
            op,
            speed,
            frames: frames(op, &[body]),
        }))
        .expect("broadcast accepted");
}

/// Polls `f` until it holds or `secs` pass.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for: {what}");
}

/// Waits until the gateway counts `n` authenticated connections.
pub fn wait_authenticated(gw: &Gateway, n: u64) {
    eventually(30, &format!("{n} authenticated connections"), || {
        gw.total().authenticated == n
    });
}

pub const HEADER: usize = HEADER_LEN;

/// A masked client WebSocket frame with the given first byte (FIN, RSV, opcode) and payload.
pub fn ws_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    protocol::ws::client_frame(first, payload, [0x11, 0x22, 0x33, 0x44])
}

/// A goim frame's bytes.
pub fn goim(ver: i16, op: i32, seq: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(&mut out, ver, op, seq, body);
    out
}

/// Asserts a bystander connection still answers a heartbeat.
pub fn assert_alive(c: &mut Client) {
    c.send(1, op::HEARTBEAT, 99, b"");
    loop {
        let f = c.recv().expect("bystander still connected");
        if f.op == op::HEARTBEAT_REPLY && f.seq == 99 {
            return;
        }
    }
}
