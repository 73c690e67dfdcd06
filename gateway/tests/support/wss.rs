//! WSS test helpers, shared by gateway/tests/tls.rs and the root crate's tests/wss.rs (each
//! includes this file with `#[path]`): a test CA issuing `localhost` certificates into PEM
//! files (rcgen), and a goim client over rustls + tungstenite.
#![allow(dead_code)]

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::{Message, WebSocket};

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Default for Ca {
    fn default() -> Self {
        Ca::new()
    }
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "corecast test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// Issues a certificate for `localhost` and writes the chain (leaf, then the CA) and the
    /// PKCS#8 key as PEM files; returns the leaf's DER.
    pub fn issue(&self, cert: &Path, key: &Path) -> Vec<u8> {
        let key_pair = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let leaf = params.signed_by(&key_pair, &self.issuer).unwrap();
        std::fs::write(cert, format!("{}{}", leaf.pem(), self.issuer.pem())).unwrap();
        std::fs::write(key, key_pair.serialize_pem()).unwrap();
        leaf.der().to_vec()
    }

    /// A client config trusting this CA only.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.issuer.der().to_vec()))
            .unwrap();
        client_config(roots)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A client config that trusts nothing (so no server certificate passes).
pub fn untrusting_client_config() -> Arc<ClientConfig> {
    client_config(RootCertStore::empty())
}

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr` as `localhost`, handshake done; Err with rustls' reason when the
/// handshake fails.
pub fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<TlsStream, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_nodelay(true).unwrap();
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
        .map_err(|e| e.to_string())?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// A goim client over WSS.
pub struct WssClient {
    pub ws: WebSocket<TlsStream>,
}

/// One goim frame as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WssFrame {
    pub ver: i16,
    pub op: i32,
    pub seq: i32,
    pub body: Vec<u8>,
}

/// How a read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum WssEnd {
    /// Close frame (with its reason) or EOF (None).
    Closed(Option<String>),
    Timeout,
}

impl WssClient {
    /// Connects to `wss://localhost:<port>/sub` and upgrades.
    pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<WssClient, String> {
        let stream = tls_connect(addr, config)?;
        let url = format!("wss://localhost:{}/sub", addr.port());
        let (ws, _) = tungstenite::client(url, stream).map_err(|e| e.to_string())?;
        Ok(WssClient { ws })
    }

    /// Connects and authenticates (op 7 with `token`); panics unless op 8 comes back.
    pub fn auth(addr: SocketAddr, config: Arc<ClientConfig>, token: &str) -> WssClient {
        let mut c = WssClient::connect(addr, config).expect("wss connect");
        c.send(1, protocol::op::AUTH, 1, token.as_bytes());
        let f = c.recv().expect("auth reply");
        assert_eq!((f.op, f.seq), (protocol::op::AUTH_REPLY, 1), "auth reply");
        c
    }

    /// The server's leaf certificate, DER.
    pub fn peer_cert(&self) -> Vec<u8> {
        self.ws
            .get_ref()
            .conn
            .peer_certificates()
            .expect("a peer certificate")[0]
            .to_vec()
    }

    pub fn send(&mut self, ver: i16, op: i32, seq: i32, body: &[u8]) {
        let mut out = Vec::new();
        protocol::frame::encode(&mut out, ver, op, seq, body);
        self.ws.send(Message::binary(out)).expect("wss send");
    }

    pub fn set_timeout(&mut self, d: Duration) {
        self.ws.get_ref().sock.set_read_timeout(Some(d)).unwrap();
    }

    /// The frame of the next binary message (an op-9 wrapper as it is).
    pub fn recv(&mut self) -> Result<WssFrame, WssEnd> {
        loop {
            match self.ws.read() {
                Ok(Message::Binary(b)) => {
                    let (h, body) = protocol::frame::decode_ws_message(&b, usize::MAX >> 1)
                        .expect("server sends well-formed frames");
                    return Ok(WssFrame {
                        ver: h.ver,
                        op: h.op,
                        seq: h.seq,
                        body: body.to_vec(),
                    });
                }
                Ok(Message::Close(c)) => {
                    return Err(WssEnd::Closed(c.map(|c| c.reason.to_string())));
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Err(WssEnd::Timeout);
                }
                Err(_) => return Err(WssEnd::Closed(None)),
            }
        }
    }

    /// The inner frames of the next op-9 push message.
    pub fn recv_push(&mut self) -> Result<Vec<WssFrame>, WssEnd> {
        let f = self.recv()?;
        assert_eq!(
            (f.op, f.ver, f.seq),
            (protocol::op::RAW, 1, 0),
            "op-9 wrapper"
        );
        let mut body = &f.body[..];
        let mut out = Vec::new();
        while !body.is_empty() {
            let (h, b, used) = protocol::frame::split(body, usize::MAX >> 1)
                .expect("inner frame")
                .expect("whole inner frame");
            out.push(WssFrame {
                ver: h.ver,
                op: h.op,
                seq: h.seq,
                body: b.to_vec(),
            });
            body = &body[used..];
        }
        Ok(out)
    }

    /// Sends a heartbeat and waits for its reply (skipping pushes).
    pub fn heartbeat(&mut self, seq: i32) -> WssFrame {
        self.send(1, protocol::op::HEARTBEAT, seq, b"");
        loop {
            let f = self.recv().expect("heartbeat reply");
            if f.op == protocol::op::HEARTBEAT_REPLY && f.seq == seq {
                return f;
            }
        }
    }
}
