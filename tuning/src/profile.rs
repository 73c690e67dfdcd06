//! The three tuning profiles: each is a directory tuning/profiles/NAME/ holding gateway.toml,
//! dispatcher.toml and sysctl.conf (compiled in), plus the layout rules that say which cores a
//! profile keeps free of shards.

use crate::{Error, Result, sysctl};

/// One profile: its files and its rules.
#[derive(Debug)]
pub struct Profile {
    pub name: &'static str,
    /// One line: the host it is for.
    pub summary: &'static str,
    /// Client connections the profile is sized for (fs.file-max, conntrack).
    pub connections: u64,
    /// Sockets per connection on this host: 2 when the load tester shares it.
    pub sockets_per_connection: u64,
    /// Cores kept free of shards on each NUMA node for the NIC's interrupts (the first cores of
    /// the node).
    pub irq_cores_per_node: usize,
    /// Cores kept free of shards on each NUMA node for the dispatcher (after the IRQ cores).
    pub dispatcher_cores_per_node: usize,
    /// NUMA nodes the profile is laid out for.
    pub numa_nodes: usize,
    /// tuning/profiles/NAME/gateway.toml.
    pub gateway_toml: &'static str,
    /// tuning/profiles/NAME/dispatcher.toml.
    pub dispatcher_toml: &'static str,
    /// tuning/profiles/NAME/sysctl.conf.
    pub sysctl_conf: &'static str,
}

/// Every profile, smallest host first.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "laptop",
        summary: "2-core laptop or CI box: gateway, dispatcher and load tester together",
        connections: 1_000_000,
        sockets_per_connection: 2,
        irq_cores_per_node: 0,
        dispatcher_cores_per_node: 0,
        numa_nodes: 1,
        gateway_toml: include_str!("../profiles/laptop/gateway.toml"),
        dispatcher_toml: include_str!("../profiles/laptop/dispatcher.toml"),
        sysctl_conf: include_str!("../profiles/laptop/sysctl.conf"),
    },
    Profile {
        name: "16core",
        summary: "one-socket 16-core host: gateway only, or gateway + dispatcher",
        connections: 1_000_000,
        sockets_per_connection: 1,
        irq_cores_per_node: 1,
        dispatcher_cores_per_node: 1,
        numa_nodes: 1,
        gateway_toml: include_str!("../profiles/16core/gateway.toml"),
        dispatcher_toml: include_str!("../profiles/16core/dispatcher.toml"),
        sysctl_conf: include_str!("../profiles/16core/sysctl.conf"),
    },
    Profile {
        name: "64core-2socket",
        summary: "two-socket 64-core host (two NUMA nodes): gateway + dispatcher",
        connections: 4_000_000,
        sockets_per_connection: 1,
        irq_cores_per_node: 1,
        dispatcher_cores_per_node: 1,
        numa_nodes: 2,
        gateway_toml: include_str!("../profiles/64core-2socket/gateway.toml"),
        dispatcher_toml: include_str!("../profiles/64core-2socket/dispatcher.toml"),
        sysctl_conf: include_str!("../profiles/64core-2socket/sysctl.conf"),
    },
];

/// One sysctl of a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlEntry {
    pub key: String,
    /// The recommended value.
    pub value: Vec<u64>,
    /// Below this the check reports a blocker; `None`: a lower value is only advice.
    pub minimum: Option<Vec<u64>>,
    /// The short reason the check prints.
    pub why: String,
}

/// The profile with this name.
pub fn named(name: &str) -> Result<&'static Profile> {
    PROFILES
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| Error::UnknownProfile {
            name: name.to_string(),
            known: PROFILES
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The profile for a host with this many online cores: up to 4 laptop, up to 32 16core,
/// else 64core-2socket.
pub fn for_cores(cores: usize) -> &'static Profile {
    let name = match cores {
        0..=4 => "laptop",
        5..=32 => "16core",
        _ => "64core-2socket",
    };
    &PROFILES[PROFILES.iter().position(|p| p.name == name).unwrap_or(0)]
}

impl Profile {
    /// The gateway profile, loaded by the gateway's own loader (unknown keys are rejected).
    pub fn gateway(&self) -> Result<gateway::Config> {
        gateway::Config::from_toml(self.gateway_toml).map_err(|e| self.error("gateway.toml", e))
    }

    /// The dispatcher profile, loaded by the dispatcher's own loader.
    pub fn dispatcher(&self) -> Result<dispatcher::Config> {
        dispatcher::Config::from_toml(self.dispatcher_toml)
            .map_err(|e| self.error("dispatcher.toml", e))
    }

    /// Cores kept free of shards on each node.
    pub fn reserved_per_node(&self) -> usize {
        self.irq_cores_per_node + self.dispatcher_cores_per_node
    }

    /// The cores the profile is laid out for: its shards plus the reserved cores.
    pub fn total_cores(&self) -> Result<usize> {
        Ok(self.gateway()?.cores.len() + self.reserved_per_node() * self.numa_nodes)
    }

    /// The sockets (kernel files) the profile's connections take on this host.
    pub fn sockets(&self) -> u64 {
        self.connections * self.sockets_per_connection
    }

    /// The sysctl profile's entries. Each `key = value` line must follow a `# check:` line:
    /// `# check: minimum VALUE; WHY` or `# check: WHY`.
    pub fn sysctls(&self) -> Result<Vec<SysctlEntry>> {
        let mut entries = Vec::new();
        let mut check: Option<(Option<Vec<u64>>, String)> = None;
        for (n, line) in self.sysctl_conf.lines().enumerate() {
            let line = line.trim();
            let bad = |m: String| self.error("sysctl.conf", format!("line {}: {m}", n + 1));
            if let Some(rest) = line.strip_prefix("# check:") {
                let rest = rest.trim();
                check = Some(match rest.strip_prefix("minimum ") {
                    Some(m) => {
                        let (value, why) = m.split_once(';').unwrap_or((m, ""));
                        let value = sysctl::parse(value)
                            .ok_or_else(|| bad(format!("minimum {value:?} is not a number")))?;
                        (Some(value), why.trim().to_string())
                    }
                    None => (None, rest.to_string()),
                });
            } else if !line.is_empty() && !line.starts_with('#') {
                let Some((key, value)) = line.split_once('=') else {
                    return Err(bad(format!("{line:?} is not `key = value`")));
                };
                let key = key.trim();
                if !sysctl::KEYS.contains(&key) {
                    return Err(bad(format!("{key} is not a sysctl the check reads")));
                }
                let value = sysctl::parse(value)
                    .ok_or_else(|| bad(format!("{key}: {:?} is not a number", value.trim())))?;
                let Some((minimum, why)) = check.take() else {
                    return Err(bad(format!("{key} has no `# check:` line above it")));
                };
                if let Some(m) = &minimum
                    && !sysctl::meets(sysctl::kind(key), &value, m)
                {
                    return Err(bad(format!(
                        "{key}: the recommended value is below the minimum"
                    )));
                }
                entries.push(SysctlEntry {
                    key: key.to_string(),
                    value,
                    minimum,
                    why,
                });
            }
        }
        Ok(entries)
    }

    fn error(&self, file: &str, e: impl std::fmt::Display) -> Error {
        Error::Profile {
            profile: self.name.to_string(),
            file: file.to_string(),
            message: e.to_string(),
        }
    }
}
