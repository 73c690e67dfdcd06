//! The dispatcher's configuration: one TOML file (`dispatcher/dispatcher.toml` documents every
//! knob and holds the defaults), read with serde. Every field has a default that works on a
//! laptop.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The whole dispatcher config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Name in logs. Empty: the host name.
    pub id: String,
    /// goim's HTTP API and `/metrics`.
    pub http_bind: String,
    /// Where gateways dial in.
    pub link_bind: String,
    /// Gateways must prove one of these in their Register (their `link_secret`); two while
    /// rotating. Empty: any gateway may link.
    pub link_secrets: Vec<String>,
    /// Runtime worker threads (0: one per core).
    pub threads: usize,
    pub http: HttpConfig,
    pub node: NodeConfig,
    pub backoff: BackoffConfig,
    pub links: LinksConfig,
    pub registry: RegistryConfig,
    pub queue: QueueConfig,
    pub job: JobConfig,
    pub history: HistoryConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    /// `/goim/*` requires `Authorization: Bearer <one of these>`; two while rotating. Empty:
    /// open.
    pub bearer_secrets: Vec<String>,
}

/// goim's `[node]`: what `/goim/nodes/weighted` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub default_domain: String,
    pub host_domain: String,
    pub tcp_port: i32,
    pub ws_port: i32,
    pub wss_port: i32,
    pub heartbeat_secs: i32,
    pub heartbeat_max: i32,
    pub region_weight: f64,
}

/// goim's `[backoff]`: reconnect hints for clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    pub max_delay: i32,
    pub base_delay: i32,
    pub factor: f32,
    pub jitter: f32,
}

/// Gateway links.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinksConfig {
    pub register_timeout_ms: u64,
    pub renew_timeout_ms: u64,
    pub relink_grace_ms: u64,
    pub buffer_messages: usize,
    pub buffer_bytes: usize,
    pub max_message_bytes: usize,
    /// With `link_secrets`: how far a gateway's clock in its proof may be from this one's, and
    /// how long a proof's nonce is remembered (a replay inside the window is refused).
    pub auth_window_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// `memory` or `redis`.
    pub kind: String,
    pub redis: RedisConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    pub ttl_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// `embedded`, `kafka`, `nats` or `redis`.
    pub kind: String,
    pub embedded: EmbeddedConfig,
    pub kafka: KafkaConfig,
    pub nats: NatsConfig,
    pub redis: RedisQueueConfig,
}

/// The NATS JetStream queue (`queue.kind = "nats"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    pub servers: Vec<String>,
    pub stream: String,
    pub subject: String,
    pub consumer: String,
    pub partitions: u32,
    pub max_messages: i64,
    pub storage: String,
    pub timeout_ms: u64,
    pub lease_ms: u64,
}

/// The Redis Streams queue (`queue.kind = "redis"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisQueueConfig {
    pub url: String,
    pub stream: String,
    pub group: String,
    pub partitions: u32,
    pub max_len: u64,
    pub timeout_ms: u64,
    pub lease_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    pub capacity: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: Vec<String>,
    pub topic: String,
    pub group: String,
    pub message_timeout_ms: u64,
    pub create_partitions: i32,
}

/// The job role: room batching.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobConfig {
    pub room_batch: usize,
    pub room_batch_bytes: usize,
    pub room_linger_ms: u64,
}

/// Room history (recovery on reconnect, `GET /goim/room/history`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Messages kept per room (0: none kept; offsets are still given).
    pub messages: usize,
    /// Messages older than this are dropped.
    pub max_age_ms: u64,
    /// Bytes of messages kept over all rooms; past it the oldest of any room go first.
    pub max_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            messages: 1000,
            max_age_ms: 300_000,
            max_bytes: 64 << 20,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: String::new(),
            http_bind: "127.0.0.1:3111".into(),
            link_bind: "127.0.0.1:3119".into(),
            link_secrets: Vec::new(),
            threads: 0,
            http: HttpConfig::default(),
            node: NodeConfig::default(),
            backoff: BackoffConfig::default(),
            links: LinksConfig::default(),
            registry: RegistryConfig::default(),
            queue: QueueConfig::default(),
            job: JobConfig::default(),
            history: HistoryConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 3_000,
            bearer_secrets: Vec::new(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            default_domain: "127.0.0.1".into(),
            host_domain: String::new(),
            tcp_port: 3101,
            ws_port: 3102,
            wss_port: 0,
            heartbeat_secs: 240,
            heartbeat_max: 2,
            region_weight: 1.6,
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            max_delay: 300,
            base_delay: 3,
            factor: 1.8,
            jitter: 0.3,
        }
    }
}

impl Default for LinksConfig {
    fn default() -> Self {
        LinksConfig {
            register_timeout_ms: 5_000,
            renew_timeout_ms: 15_000,
            relink_grace_ms: 5_000,
            buffer_messages: 65_536,
            buffer_bytes: 64 << 20,
            max_message_bytes: protocol::link::MAX_LINK_MESSAGE,
            auth_window_ms: 300_000,
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            kind: "memory".into(),
            redis: RedisConfig::default(),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            ttl_secs: 1_800,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            kind: "embedded".into(),
            embedded: EmbeddedConfig::default(),
            kafka: KafkaConfig::default(),
            nats: NatsConfig::default(),
            redis: RedisQueueConfig::default(),
        }
    }
}

/// Partitions, lease and timeout, shared by the leased queues.
fn validate_leased(kind: &str, partitions: u32, lease_ms: u64, timeout_ms: u64) -> Result<()> {
    let bad = |m: String| Err(Error::Config(m));
    if !(1..=1024).contains(&partitions) {
        return bad(format!(
            "queue.{kind}.partitions must be between 1 and 1024, not {partitions}"
        ));
    }
    if !(500..=600_000).contains(&lease_ms) {
        return bad(format!(
            "queue.{kind}.lease_ms must be between 500 and 600000, not {lease_ms}"
        ));
    }
    if !(1..=600_000).contains(&timeout_ms) {
        return bad(format!(
            "queue.{kind}.timeout_ms must be between 1 and 600000, not {timeout_ms}"
        ));
    }
    Ok(())
}

impl NatsConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.servers.is_empty() {
            return bad("queue.kind = \"nats\" needs at least one queue.nats.servers entry".into());
        }
        validate_leased("nats", self.partitions, self.lease_ms, self.timeout_ms)?;
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(&self.stream) || !name_ok(&self.consumer) {
            return bad(format!(
                "queue.nats.stream {:?} and queue.nats.consumer {:?} must be non-empty and made of letters, digits, '-' and '_'",
                self.stream, self.consumer
            ));
        }
        let subject_ok = !self.subject.is_empty()
            && self
                .subject
                .split('.')
                .all(|t| !t.is_empty() && t != "*" && t != ">" && !t.contains(char::is_whitespace));
        if !subject_ok {
            return bad(format!(
                "queue.nats.subject {:?} must be dot-separated tokens without wildcards or spaces",
                self.subject
            ));
        }
        if !matches!(self.storage.as_str(), "file" | "memory") {
            return bad(format!(
                "queue.nats.storage {:?} is neither \"file\" nor \"memory\"",
                self.storage
            ));
        }
        if self.max_messages < 1 {
            return bad("queue.nats.max_messages must be at least 1".into());
        }
        Ok(())
    }
}

impl RedisQueueConfig {
    fn validate(&self) -> Result<()> {
        validate_leased("redis", self.partitions, self.lease_ms, self.timeout_ms)?;
        if self.stream.is_empty() || self.group.is_empty() {
            return Err(Error::Config(
                "queue.redis.stream and queue.redis.group must not be empty".into(),
            ));
        }
        if self.max_len == 0 {
            return Err(Error::Config(
                "queue.redis.max_len must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            stream: "goim-push".into(),
            subject: "goim.push".into(),
            consumer: "goim-push-group-job".into(),
            partitions: 4,
            max_messages: 1_000_000,
            storage: "file".into(),
            timeout_ms: 3_000,
            lease_ms: 5_000,
        }
    }
}

impl Default for RedisQueueConfig {
    fn default() -> Self {
        RedisQueueConfig {
            url: "redis://127.0.0.1:6379".into(),
            stream: "goim-push-topic".into(),
            group: "goim-push-group-job".into(),
            partitions: 4,
            max_len: 1_000_000,
            timeout_ms: 3_000,
            lease_ms: 5_000,
        }
    }
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig { capacity: 65_536 }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: "goim-push-topic".into(),
            group: "goim-push-group-job".into(),
            message_timeout_ms: 3_000,
            create_partitions: 0,
        }
    }
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            room_batch: 20,
            room_batch_bytes: 64 * 1024,
            room_linger_ms: 2,
        }
    }
}

impl Config {
    /// The defaults with both listeners on 127.0.0.1 and an ephemeral port (tests, several
    /// dispatchers on one host); the dispatcher reports the ports it got.
    pub fn loopback_ephemeral() -> Config {
        Config {
            http_bind: "127.0.0.1:0".into(),
            link_bind: "127.0.0.1:0".into(),
            threads: 2,
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
        for (name, addr) in [
            ("http_bind", &self.http_bind),
            ("link_bind", &self.link_bind),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return bad(format!("{name} {addr:?} is not an ip:port address"));
            }
        }
        if !matches!(self.registry.kind.as_str(), "memory" | "redis") {
            return bad(format!(
                "registry.kind {:?} is neither \"memory\" nor \"redis\"",
                self.registry.kind
            ));
        }
        if !matches!(
            self.queue.kind.as_str(),
            "embedded" | "kafka" | "nats" | "redis"
        ) {
            return bad(format!(
                "queue.kind {:?} is none of \"embedded\", \"kafka\", \"nats\", \"redis\"",
                self.queue.kind
            ));
        }
        if self.queue.kind == "nats" {
            self.queue.nats.validate()?;
        }
        if self.queue.kind == "redis" {
            self.queue.redis.validate()?;
        }
        if self.queue.kind == "kafka" && self.queue.kafka.brokers.is_empty() {
            return bad(
                "queue.kind = \"kafka\" needs at least one queue.kafka.brokers entry".into(),
            );
        }
        if self.queue.embedded.capacity == 0 {
            return bad("queue.embedded.capacity must be at least 1".into());
        }
        if self.history.messages > 0 && self.history.max_age_ms == 0 {
            return bad(
                "history.max_age_ms must be at least 1 when history.messages is set".into(),
            );
        }
        if self.job.room_batch == 0 {
            return bad("job.room_batch must be at least 1".into());
        }
        if self.http.request_timeout_ms == 0 {
            return bad("http.request_timeout_ms must be at least 1".into());
        }
        if self.http.bearer_secrets.iter().any(|s| s.is_empty()) {
            return bad(
                "http.bearer_secrets: an entry is empty (an empty secret would match a bare \"Bearer \" header)"
                    .into(),
            );
        }
        if self.link_secrets.iter().any(|s| s.is_empty()) {
            return bad("link_secrets: an entry is empty".into());
        }
        if !self.link_secrets.is_empty() && self.links.auth_window_ms == 0 {
            return bad("links.auth_window_ms must be at least 1 with link_secrets".into());
        }
        if self.links.buffer_messages == 0 || self.links.buffer_bytes == 0 {
            return bad("links.buffer_messages and links.buffer_bytes must be at least 1".into());
        }
        Ok(())
    }

    /// The name used in logs.
    pub fn name(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "dispatcher".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_file_holds_the_defaults() {
        let doc = Config::from_toml(include_str!("../dispatcher.toml")).unwrap();
        assert_eq!(doc, Config::default());
    }

    #[test]
    fn print_config_round_trips() {
        let c = Config::loopback_ephemeral();
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn bad_values_are_named() {
        for (text, needle) in [
            ("http_bind = \"nowhere\"", "http_bind"),
            ("[registry]\nkind = \"etcd\"", "registry.kind"),
            ("[queue]\nkind = \"rabbitmq\"", "queue.kind"),
            (
                "[queue]\nkind = \"nats\"\n[queue.nats]\npartitions = 0",
                "queue.nats.partitions",
            ),
            (
                "[queue]\nkind = \"nats\"\n[queue.nats]\nsubject = \"goim.*\"",
                "queue.nats.subject",
            ),
            (
                "[queue]\nkind = \"nats\"\n[queue.nats]\nstorage = \"disk\"",
                "queue.nats.storage",
            ),
            (
                "[queue]\nkind = \"redis\"\n[queue.redis]\nlease_ms = 10",
                "queue.redis.lease_ms",
            ),
            (
                "[queue]\nkind = \"redis\"\n[queue.redis]\nmax_len = 0",
                "queue.redis.max_len",
            ),
            ("[job]\nroom_batch = 0", "job.room_batch"),
            (
                "[http]\nbearer_secrets = [\"a\", \"\"]",
                "http.bearer_secrets",
            ),
            ("link_secrets = [\"\"]", "link_secrets"),
            ("bogus = 1", "bogus"),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
