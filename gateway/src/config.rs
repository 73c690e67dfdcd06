//! The gateway's configuration: one TOML file (`gateway/gateway.toml` documents every knob and
//! holds the defaults), read with serde. Every field has a default that works on a laptop.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The whole gateway config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This gateway's id in the cluster (goim's serverID). Empty: the host name.
    pub id: String,
    /// Cores to run shards on, one shard per entry. Empty: every core.
    pub cores: Vec<usize>,
    /// goim TCP clients.
    pub tcp_bind: String,
    /// goim WebSocket clients (path `/sub`).
    pub ws_bind: String,
    /// goim WebSocket clients over TLS (WSS, path `/sub`; goim: :3103). Empty: off. Needs
    /// `[tls] cert` and `key`.
    pub wss_bind: String,
    /// Prometheus metrics (`GET /metrics`, per-shard series). Empty: no endpoint.
    pub metrics_bind: String,
    /// Dispatchers to dial (internal link). Empty: none.
    pub dispatchers: Vec<String>,
    /// Public addresses advertised to dispatchers for `nodes/weighted`.
    pub public_addrs: Vec<String>,
    /// Weight advertised for `nodes/weighted`.
    pub weight: i32,
    /// How often the registration is renewed on each dispatcher link, with this gateway's
    /// room online counts (goim: RenewOnline every 10 s).
    pub renew_ms: u64,
    /// Shared secret proving this gateway to dispatchers that set `link_secrets` (an HMAC in
    /// its Register; the secret never crosses the wire). Empty: no proof.
    pub link_secret: String,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub engine: EngineConfig,
    pub drain: DrainConfig,
}

/// How auth tokens (op 7 bodies) are checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `open` (goim's unsigned JSON) or `hmac` (signed, with expiry).
    pub mode: String,
    /// hmac mode: active secrets; the first signs (`corecast token`), any verifies.
    pub secrets: Vec<String>,
    /// WebSocket `Origin` values allowed to connect (exact, or `*.` host wildcards such as
    /// `https://*.example.com`). Empty: any. A request without `Origin` (not a browser) is
    /// always let through.
    pub allowed_origins: Vec<String>,
}

/// The WSS listener's certificate (read at start and on `Gateway::reload_tls`, i.e. SIGHUP).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: String,
    /// PEM file with the private key (PKCS#8, RSA/PKCS#1 or SEC1 EC).
    pub key: String,
}

/// Per-connection limits and deadlines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Time from accept to a successful auth (goim: 5 s).
    pub handshake_timeout_ms: u64,
    /// Idle deadline after auth, re-armed by every client heartbeat (goim: 4 min x 2).
    pub heartbeat_timeout_ms: u64,
    /// Rooms one connection may be in at once (JoinRoom op 22, Recover op 26).
    pub max_rooms_per_conn: usize,
    /// How long a recovery (op 26) waits for the dispatchers' history before it answers that
    /// none came and joins the room live.
    pub recover_timeout_ms: u64,
    /// Bytes queued for one connection and not yet written before the policy acts.
    pub outbound_cap_bytes: usize,
    /// `disconnect` (default) or `drop-oldest`: what happens past the outbound cap.
    pub slow_consumer: String,
    /// Connections this gateway holds at most (0: no limit but its rings).
    pub max_connections: u64,
    /// Connections one source address may hold at most (0: no limit).
    pub max_connections_per_ip: u32,
    /// New connections per second one source address may open (0: no limit), with bursts of
    /// `connect_burst_per_ip`.
    pub connect_rate_per_ip: u32,
    pub connect_burst_per_ip: u32,
    /// Resident memory (MiB) past which the gateway refuses new connections and reports itself
    /// offline, until it is back under 90 % of it (0: no ceiling).
    pub max_memory_mb: u64,
}

/// The io_uring engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Submission queue entries per ring (completion queue: 4x).
    pub ring_entries: u32,
    /// Direct descriptors per ring (at most the process's RLIMIT_NOFILE, here 20,000). A shard
    /// opens another ring when one is full.
    pub slots_per_ring: u32,
    /// Rings per shard at most (connections per shard = rings x slots).
    pub max_rings_per_shard: usize,
    /// Provided receive buffers per ring, and their size: shared by the ring's connections, so
    /// an idle connection holds no read buffer.
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    /// Messages the ingress may queue for one shard before it waits.
    pub inbox_capacity: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// SO_SNDBUF / SO_RCVBUF for client sockets (0: the kernel's default and autotuning).
    pub sndbuf: usize,
    pub rcvbuf: usize,
    /// Timing-wheel tick.
    pub tick_ms: u64,
}

/// Graceful drain on SIGTERM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// Connections closed per interval (over all shards).
    pub batch: usize,
    pub interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: String::new(),
            cores: Vec::new(),
            tcp_bind: "127.0.0.1:3101".into(),
            ws_bind: "127.0.0.1:3102".into(),
            wss_bind: String::new(),
            metrics_bind: "127.0.0.1:3120".into(),
            dispatchers: Vec::new(),
            public_addrs: Vec::new(),
            weight: 10,
            renew_ms: 5_000,
            link_secret: String::new(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            engine: EngineConfig::default(),
            drain: DrainConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: "open".into(),
            secrets: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            handshake_timeout_ms: 5_000,
            heartbeat_timeout_ms: 480_000,
            recover_timeout_ms: 3_000,
            max_rooms_per_conn: 16,
            outbound_cap_bytes: 256 * 1024,
            slow_consumer: "disconnect".into(),
            max_connections: 0,
            max_connections_per_ip: 0,
            connect_rate_per_ip: 0,
            connect_burst_per_ip: 20,
            max_memory_mb: 0,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ring_entries: 2048,
            slots_per_ring: 16_384,
            max_rings_per_shard: 64,
            recv_buffers: 256,
            recv_buffer_size: 4096,
            inbox_capacity: 4096,
            backlog: 65_535,
            sndbuf: 0,
            rcvbuf: 0,
            tick_ms: 100,
        }
    }
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            batch: 10_000,
            interval_ms: 2_000,
        }
    }
}

/// What to do past the outbound cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumer {
    Disconnect,
    DropOldest,
}

impl Config {
    /// The defaults with every listener on 127.0.0.1 and an ephemeral port (tests, benchmarks,
    /// several gateways on one host); the gateway reports the ports it got.
    pub fn loopback_ephemeral() -> Config {
        Config {
            tcp_bind: "127.0.0.1:0".into(),
            ws_bind: "127.0.0.1:0".into(),
            metrics_bind: "127.0.0.1:0".into(),
            ..Config::default()
        }
    }

    /// Parses a TOML document and checks it.
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The effective config as TOML (`--print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config always serializes")
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !matches!(self.auth.mode.as_str(), "open" | "hmac") {
            return bad(format!(
                "auth.mode {:?} is neither \"open\" nor \"hmac\"",
                self.auth.mode
            ));
        }
        if self.auth.mode == "hmac" && self.auth.secrets.iter().all(|s| s.is_empty()) {
            return bad(
                "auth.mode = \"hmac\" needs at least one non-empty auth.secrets entry".into(),
            );
        }
        self.slow_consumer()?;
        for o in &self.auth.allowed_origins {
            if o.is_empty() || o.contains(char::is_whitespace) || o.ends_with('/') {
                return bad(format!(
                    "auth.allowed_origins entry {o:?} is not an origin (scheme://host[:port], no path, no trailing slash)"
                ));
            }
        }
        if !(1..=600_000).contains(&self.limits.recover_timeout_ms) {
            return bad(format!(
                "limits.recover_timeout_ms = {} must be from 1 to 600000 (10 minutes)",
                self.limits.recover_timeout_ms
            ));
        }
        if self.limits.connect_rate_per_ip > 0 && self.limits.connect_burst_per_ip == 0 {
            return bad("limits.connect_burst_per_ip must be at least 1 when limits.connect_rate_per_ip is set".into());
        }
        if !self.wss_bind.is_empty() {
            if self.tls.cert.is_empty() {
                return bad(format!(
                    "wss_bind = {:?} needs [tls] cert (a PEM certificate chain file)",
                    self.wss_bind
                ));
            }
            if self.tls.key.is_empty() {
                return bad(format!(
                    "wss_bind = {:?} needs [tls] key (a PEM private key file)",
                    self.wss_bind
                ));
            }
        }
        let e = &self.engine;
        if e.slots_per_ring == 0 || e.slots_per_ring > 1 << 20 {
            return bad(format!(
                "engine.slots_per_ring {} is not in 1..=1048576",
                e.slots_per_ring
            ));
        }
        if !(1..=255).contains(&e.max_rings_per_shard) {
            return bad(format!(
                "engine.max_rings_per_shard {} is not in 1..=255",
                e.max_rings_per_shard
            ));
        }
        if !e.recv_buffers.is_power_of_two() || e.recv_buffers > 32_768 {
            return bad(format!(
                "engine.recv_buffers {} must be a power of two up to 32768",
                e.recv_buffers
            ));
        }
        if e.recv_buffer_size < 256 {
            return bad(format!(
                "engine.recv_buffer_size {} is below 256",
                e.recv_buffer_size
            ));
        }
        if e.ring_entries < 8 || e.inbox_capacity == 0 || e.tick_ms == 0 {
            return bad(
                "engine.ring_entries >= 8, inbox_capacity > 0 and tick_ms > 0 are required".into(),
            );
        }
        if self.limits.max_rooms_per_conn == 0 {
            return bad("limits.max_rooms_per_conn must be at least 1".into());
        }
        if self.renew_ms == 0 {
            return bad("renew_ms must be at least 1".into());
        }
        if self.drain.batch == 0 {
            return bad("drain.batch must be at least 1".into());
        }
        Ok(())
    }

    pub fn slow_consumer(&self) -> Result<SlowConsumer> {
        match self.limits.slow_consumer.as_str() {
            "disconnect" => Ok(SlowConsumer::Disconnect),
            "drop-oldest" => Ok(SlowConsumer::DropOldest),
            other => Err(Error::Config(format!(
                "limits.slow_consumer {other:?} is neither \"disconnect\" nor \"drop-oldest\""
            ))),
        }
    }

    /// The token checker for the configured mode.
    pub fn auth_mode(&self) -> protocol::token::AuthMode {
        match self.auth.mode.as_str() {
            "hmac" => protocol::token::AuthMode::Hmac {
                secrets: self
                    .auth
                    .secrets
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.as_bytes().to_vec())
                    .collect(),
            },
            _ => protocol::token::AuthMode::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_file_is_the_default() {
        let doc = Config::from_toml(include_str!("../gateway.toml")).unwrap();
        assert_eq!(doc, Config::default());
        assert_eq!(
            Config::from_toml(&Config::default().to_toml()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::from_toml("[auth]\nmode = \"jwt\"").unwrap_err();
        assert!(e.to_string().contains("auth.mode \"jwt\""), "{e}");
        let e = Config::from_toml("[auth]\nmode = \"hmac\"").unwrap_err();
        assert!(e.to_string().contains("auth.secrets"), "{e}");
        let e = Config::from_toml("[limits]\nrecover_timeout_ms = 0").unwrap_err();
        assert!(
            e.to_string().contains("limits.recover_timeout_ms = 0"),
            "{e}"
        );
        let e = Config::from_toml("[limits]\nslow_consumer = \"ignore\"").unwrap_err();
        assert!(e.to_string().contains("limits.slow_consumer"), "{e}");
        let e = Config::from_toml("[engine]\nrecv_buffers = 1000").unwrap_err();
        assert!(e.to_string().contains("recv_buffers"), "{e}");
        let e = Config::from_toml("wss_bind = \"127.0.0.1:3103\"").unwrap_err();
        assert!(e.to_string().contains("[tls] cert"), "{e}");
        let e = Config::from_toml("wss_bind = \"127.0.0.1:3103\"\n[tls]\ncert = \"c.pem\"")
            .unwrap_err();
        assert!(e.to_string().contains("[tls] key"), "{e}");
        let e = Config::from_toml("colour = 1").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
