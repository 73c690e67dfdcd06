//! WSS: WebSocket over TLS, terminated in the shard with rustls (ring provider).
//!
//! A WSS connection is a [`Transport::Ws`](crate::conn::Transport) connection accepted on the
//! `wss_bind` listener, whose [`Conn`](crate::conn::Conn) carries a boxed
//! [`rustls::ServerConnection`] (plain connections carry a `None`: 8 bytes). Everything above
//! the bytes (the upgrade, goim frames, rooms, pushes) is the WS path, unchanged. Bytes flow:
//!
//! - **in**: the ciphertext a receive completion holds goes into rustls ([`Shard::tls_input`]:
//!   `read_tls`, `process_new_packets`); the plaintext it yields goes to `Shard::on_input`
//!   as a WS connection's bytes would, and whatever rustls wants to send back (handshake
//!   messages, session tickets, key updates, alerts) is queued as records, in order, before
//!   the replies that plaintext causes.
//! - **out**: every chunk that enters a TLS connection's queue through `Shard::enqueue` (pushes,
//!   replies, the upgrade response) is sealed there into a new buffer of TLS records ([`seal`],
//!   one record set per enqueue), so the queue holds ciphertext and the writes are issued from
//!   it exactly as for plain connections. The close reason written at teardown is sealed the
//!   same way, followed by a close_notify ([`seal_last`]). rustls' own send buffer is emptied
//!   at every step, so records leave in the order they were made.
//!
//! Consequences: a room batch is still encoded once, but sealed once per WSS member; and the
//! drop-oldest slow-consumer policy cannot drop sealed records (the peer would see a gap in
//! the record sequence and fail), so a WSS connection past the outbound cap is disconnected.
//!
//! A TLS error (not TLS at all, a bad record, a failed handshake, an alert from the client)
//! closes that connection only, after the alert rustls made (if any), and is counted in
//! `tls_errors`. The handshake deadline covers the TLS handshake (the connection stays in the
//! upgrade state until its HTTP request arrives). The certificate is chosen per handshake by
//! [`CertResolver`], whose current key is swapped by [`Tls::reload`] (SIGHUP): new handshakes
//! use the new certificate; open connections keep the session they have.

use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;
use crate::shard::{Reason, Shard};
use crate::{Error, Result};

/// The WSS listener's TLS state, shared by the shards: the rustls config (read when a
/// connection is accepted) and the certificate behind it (read once per handshake).
pub struct Tls {
    config: Arc<ServerConfig>,
    resolver: Arc<CertResolver>,
    files: TlsConfig,
    provider: Arc<CryptoProvider>,
    reloads: AtomicU64,
    reload_errors: AtomicU64,
}

/// Picks the certificate for a handshake: the current one, whatever the client asked for.
/// The lock is taken once per handshake (and by a reload), never per message.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().clone())
    }
}

impl CertResolver {
    fn current(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a whole Arc (the writer only swaps it).
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl Tls {
    /// Reads the certificate and key files and builds the server config. Every failure names
    /// the file and what is wrong with it.
    pub fn load(files: &TlsConfig) -> Result<Tls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified_key(files, &provider)?;
        let resolver = Arc::new(CertResolver {
            current: RwLock::new(Arc::new(key)),
        });
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(format!("building the TLS config: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // WebSocket upgrades are HTTP/1.1; a client offering h2 only gets an alert.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            resolver,
            files: files.clone(),
            provider,
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
        })
    }

    /// Re-reads the files. On success new handshakes use the new certificate (open connections
    /// are not touched); on failure the current certificate stays, and the error is logged,
    /// counted and returned.
    pub fn reload(&self) -> Result<()> {
        match certified_key(&self.files, &self.provider) {
            Ok(key) => {
                self.resolver.set(Arc::new(key));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %self.files.cert, "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                self.reload_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("TLS reload failed, the current certificate stays: {e}");
                Err(e)
            }
        }
    }

    /// Successful reloads.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Failed reloads.
    pub fn reload_errors(&self) -> u64 {
        self.reload_errors.load(Ordering::Relaxed)
    }

    /// The TLS state of a new connection.
    pub(crate) fn session(&self) -> std::result::Result<Box<ServerConnection>, rustls::Error> {
        let mut conn = ServerConnection::new(self.config.clone())?;
        // The shard empties rustls' buffers at every step and applies its own outbound cap;
        // rustls' limit would make a large push fail half-written.
        conn.set_buffer_limit(None);
        Ok(Box::new(conn))
    }
}

/// Reads and checks the configured chain and key.
fn certified_key(files: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let read = |what: &str, path: &str| {
        std::fs::read(path).map_err(|e| Error::Tls(format!("tls.{what} {path:?}: {e}")))
    };
    let (cert_path, key_path) = (&files.cert, &files.key);
    let pem = read("cert", cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("tls.cert {cert_path:?}: not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls(format!(
            "tls.cert {cert_path:?}: no CERTIFICATE section found (expected a PEM chain, leaf first)"
        )));
    }
    let pem = read("key", key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        Error::Tls(match e {
            rustls_pki_types::pem::Error::NoItemsFound => format!(
                "tls.key {key_path:?}: no PRIVATE KEY section found (expected PEM PKCS#8, RSA or EC)"
            ),
            e => format!("tls.key {key_path:?}: not valid PEM: {e}"),
        })
    })?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Tls(format!("tls.key {key_path:?}: unusable private key: {e}")))?;
    let key = CertifiedKey::new(chain, signer);
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(key),
        Err(e) => Err(Error::Tls(format!(
            "tls.key {key_path:?} does not go with tls.cert {cert_path:?}: {e}"
        ))),
    }
}

/// An upper bound of what sealing `len` plaintext bytes takes (TLS 1.2/1.3 AEAD records of at
/// most 16 KiB, each with a header, a tag and, in 1.3, a content-type byte).
pub(crate) fn sealed_len(len: usize) -> usize {
    len + len.div_ceil(16 * 1024).max(1) * 40
}

/// Drains what rustls has to send into `out`.
fn drain(tls: &mut ServerConnection, out: &mut Vec<u8>) {
    while tls.wants_write() {
        // Writing into a Vec cannot fail.
        if tls.write_tls(out).is_err() {
            break;
        }
    }
}

/// Encrypts `plain` into TLS records (with anything rustls had pending before it). Before the
/// handshake completes rustls holds the plaintext back, and this returns only what is pending
/// (the plaintext follows the handshake's last flight).
pub(crate) fn seal(tls: &mut ServerConnection, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed_len(plain.len()));
    // With no buffer limit the writer takes everything.
    let _ = tls.writer().write_all(plain);
    drain(tls, &mut out);
    out
}

/// The last records of a connection: `plain` (a close reason) and a close_notify once the
/// handshake is done; only what is pending (an alert) when `plain` is None or the handshake
/// never completed.
pub(crate) fn seal_last(tls: &mut ServerConnection, plain: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(plain) = plain
        && !tls.is_handshaking()
    {
        out = seal(tls, plain);
        tls.send_close_notify();
    }
    drain(tls, &mut out);
    out
}

/// What one receive did to a connection's TLS state.
struct Received {
    /// Records rustls wants to send (handshake, tickets, alerts).
    records: Vec<u8>,
    handshake_done: bool,
    peer_closed: bool,
    error: Option<String>,
}

fn receive(tls: &mut ServerConnection, mut data: &[u8], plain: &mut Vec<u8>) -> Received {
    let was_handshaking = tls.is_handshaking();
    let mut r = Received {
        records: Vec::new(),
        handshake_done: false,
        peer_closed: false,
        error: None,
    };
    while !data.is_empty() && r.error.is_none() {
        match tls.read_tls(&mut data) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                r.error = Some(e.to_string());
                break;
            }
        }
        match tls.process_new_packets() {
            Ok(state) => {
                let n = state.plaintext_bytes_to_read();
                if n > 0 {
                    let start = plain.len();
                    plain.resize(start + n, 0);
                    if let Err(e) = tls.reader().read_exact(&mut plain[start..]) {
                        plain.truncate(start);
                        r.error = Some(format!("reading decrypted bytes: {e}"));
                    }
                }
                r.peer_closed |= state.peer_has_closed();
            }
            Err(e) => r.error = Some(e.to_string()),
        }
    }
    // After an error this is the alert rustls made for it.
    drain(tls, &mut r.records);
    r.handshake_done = was_handshaking && !tls.is_handshaking();
    r
}

/// Decrypted input kept between receives, so a receive allocates nothing in the steady state;
/// trimmed back past this after a big one.
const PLAIN_SCRATCH_MAX: usize = 64 * 1024;

impl Shard {
    /// Ciphertext received on a WSS connection (`data` is a provided buffer, valid for this
    /// call only).
    pub(crate) fn tls_input(&mut self, h: u32, data: &[u8]) {
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        let Some(tls) = self.conn(h).and_then(|c| c.tls.as_deref_mut()) else {
            self.tls_plain = plain;
            return;
        };
        let r = receive(tls, data, &mut plain);
        if r.handshake_done {
            self.stats.tls_handshakes += 1;
        }
        if !r.records.is_empty() {
            self.enqueue_records(h, Rc::new(Bytes::from(r.records)));
        }
        if let Some(e) = r.error {
            // What was decrypted before the error is dropped with the connection.
            self.stats.tls_errors += 1;
            tracing::debug!(shard = self.id, handle = h, "TLS error: {e}");
            let mut reason = Reason::new(format!("TLS: {e}"), protocol::ws::close_code::PROTOCOL);
            reason.tls_alert_only = true;
            self.teardown(h, Some(reason));
        } else {
            if !plain.is_empty() {
                self.on_input(h, &mut plain);
            }
            if r.peer_closed {
                self.teardown(h, None);
            }
        }
        if plain.capacity() > PLAIN_SCRATCH_MAX {
            plain = Vec::new();
        }
        self.tls_plain = plain;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_connection_pays_one_pointer_for_tls() {
        assert_eq!(std::mem::size_of::<Option<Box<ServerConnection>>>(), 8);
    }

    #[test]
    fn sealed_len_bounds_what_sealing_makes() {
        assert!(sealed_len(0) >= 40);
        assert_eq!(sealed_len(16 * 1024), 16 * 1024 + 40);
        assert_eq!(sealed_len(16 * 1024 + 1), 16 * 1024 + 1 + 80);
    }
}
