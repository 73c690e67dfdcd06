//! The host check: compares what [`Host`] read with a profile and says, row by row, what is
//! fine, what is advice and what blocks corecast from running as the profile intends.

use std::fmt;
use std::path::PathBuf;

use crate::host::Host;
use crate::layout::Layout;
use crate::limits::Value;
use crate::profile::Profile;
use crate::{Result, cpulist, sysctl};

/// How a row stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    /// Below what the profile recommends, or not as it would lay things out; runs anyway.
    Advice,
    /// corecast cannot run as the profile intends until this is fixed.
    Blocker,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Advice => "advice",
            Status::Blocker => "BLOCKER",
        })
    }
}

/// One checked item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub item: String,
    /// What the host has ("unknown" when it could not be read).
    pub current: String,
    pub recommended: String,
    pub why: String,
    pub status: Status,
    /// A sysctl `--apply` can raise: its file, and the value that raises every field below the
    /// recommendation while keeping higher ones.
    pub raise: Option<Raise>,
    /// What an operator must do by hand (limits, IRQ affinity, kernel command line).
    pub by_hand: Option<String>,
}

/// A sysctl write that `--apply` makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raise {
    pub key: String,
    pub path: PathBuf,
    pub from: Vec<u64>,
    pub to: Vec<u64>,
}

/// The check of one host against one profile.
#[derive(Clone, Debug)]
pub struct Report {
    pub profile: &'static str,
    pub rows: Vec<Row>,
}

impl Report {
    /// The number of rows with this status.
    pub fn count(&self, status: Status) -> usize {
        self.rows.iter().filter(|r| r.status == status).count()
    }

    /// The row of this item.
    pub fn row(&self, item: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.item == item)
    }

    /// The table, one row per line, columns padded (the last, why, is not).
    pub fn table(&self) -> String {
        let header = ["item", "current", "recommended", "status", "why"];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.item.clone(),
                    r.current.clone(),
                    r.recommended.clone(),
                    r.status.to_string(),
                    r.why.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |row: &[String]| {
            let mut out = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                }
            }
            out.trim_end().to_string() + "\n"
        };
        let mut out = line(&header.map(String::from));
        let mut rule = widths.map(|w| "-".repeat(w));
        rule[4] = "---".to_string();
        out.push_str(&line(&rule));
        for row in &cells {
            out.push_str(&line(row));
        }
        out
    }
}

/// Checks the host against the profile.
pub fn check(host: &Host, profile: &'static Profile) -> Result<Report> {
    let gateway = profile.gateway()?;
    let layout = Layout::of(profile, host);
    let mut rows = vec![
        kernel(host),
        io_uring(host),
        cores(host, profile, &layout)?,
        numa(host, profile),
        isolated(host, profile, &layout),
    ];
    rows.extend(nics(host, profile, &layout));
    rows.push(nofile(host, &gateway));
    rows.push(memlock(
        host,
        &gateway,
        layout.as_ref().map_or(0, |l| l.shards().len()),
    ));
    for entry in profile.sysctls()? {
        rows.push(sysctl_row(host, &entry));
    }
    Ok(Report {
        profile: profile.name,
        rows,
    })
}

fn row(item: &str, current: impl Into<String>, recommended: impl Into<String>) -> Row {
    Row {
        item: item.to_string(),
        current: current.into(),
        recommended: recommended.into(),
        why: String::new(),
        status: Status::Ok,
        raise: None,
        by_hand: None,
    }
}

impl Row {
    fn is(mut self, status: Status, why: impl Into<String>) -> Row {
        self.status = status;
        self.why = why.into();
        self
    }

    fn by_hand(mut self, what: impl Into<String>) -> Row {
        self.by_hand = Some(what.into());
        self
    }
}

const UNKNOWN: &str = "unknown";

fn kernel(host: &Host) -> Row {
    let r = row(
        "kernel",
        host.kernel.as_deref().unwrap_or(UNKNOWN),
        "6.1 or later",
    );
    match host.kernel_version() {
        None => r.is(Status::Advice, "could not read proc/sys/kernel/osrelease"),
        Some(v) if v < (6, 1) => r.is(
            Status::Blocker,
            "rings use SINGLE_ISSUER + DEFER_TASKRUN (6.1), multishot accept and recv (6.0)",
        ),
        Some(_) => r.is(Status::Ok, "rings use SINGLE_ISSUER + DEFER_TASKRUN (6.1)"),
    }
}

fn io_uring(host: &Host) -> Row {
    let knob = match (host.io_uring_disabled, host.kernel_version()) {
        (Some(v), _) => format!("io_uring_disabled={v}"),
        (None, Some(v)) if v < (6, 6) => "no io_uring_disabled (kernel < 6.6)".to_string(),
        (None, _) => format!("io_uring_disabled {UNKNOWN}"),
    };
    let current = match &host.io_uring_probe {
        Some(Ok(())) => format!("{knob}, ring probe ok"),
        Some(Err(_)) => format!("{knob}, ring probe failed"),
        None => knob.clone(),
    };
    let r = row("io_uring", current, "enabled (io_uring_disabled=0)");
    let fix = "sysctl -w kernel.io_uring_disabled=0";
    match (&host.io_uring_probe, host.io_uring_disabled) {
        (Some(Err(e)), _) => r.is(Status::Blocker, e.clone()).by_hand(fix),
        (_, Some(2)) => r
            .is(Status::Blocker, "io_uring is disabled for every process")
            .by_hand(fix),
        (Some(Ok(())), _) => r.is(Status::Ok, "the gateway and the tester are io_uring only"),
        (None, Some(1)) => r
            .is(
                Status::Advice,
                "only root and kernel.io_uring_group may create rings",
            )
            .by_hand(fix),
        (None, Some(0)) => r.is(Status::Ok, "the gateway and the tester are io_uring only"),
        (None, None) if knob.starts_with("no ") => {
            r.is(Status::Ok, "the gateway and the tester are io_uring only")
        }
        (None, _) => r.is(
            Status::Advice,
            "could not tell whether io_uring is allowed (proc/sys/kernel/io_uring_disabled)",
        ),
    }
}

fn cores(host: &Host, profile: &Profile, layout: &Result<Layout>) -> Result<Row> {
    let total = profile.total_cores()?;
    let reserved = profile.reserved_per_node() * profile.numa_nodes;
    let recommended = if reserved == 0 {
        format!("{total} (all run shards)")
    } else {
        format!("{total} ({reserved} kept, {} shards)", total - reserved)
    };
    let current = match &host.online {
        Some(c) => format!("{} ({})", c.len(), cpulist::format(c)),
        None => UNKNOWN.to_string(),
    };
    let r = row("cores", current, recommended);
    Ok(match (&host.online, layout) {
        (None, _) => r.is(
            Status::Advice,
            "could not read sys/devices/system/cpu/online",
        ),
        (Some(_), Err(e)) => r.is(Status::Blocker, e.to_string()),
        (Some(c), Ok(l)) if c.len() < total => r.is(
            Status::Advice,
            format!(
                "fewer cores than the profile's gateway.toml names: `corecast tune generate` \
                 lays out {} shards here",
                l.shards().len()
            ),
        ),
        (Some(_), Ok(l)) => r.is(
            Status::Ok,
            format!("shards on {}", cpulist::format(&l.shards())),
        ),
    })
}

fn numa(host: &Host, profile: &Profile) -> Row {
    let current = match &host.nodes {
        Some(nodes) if !nodes.is_empty() => format!(
            "{} ({})",
            nodes.len(),
            nodes
                .iter()
                .map(|n| format!("node{}: {}", n.id, cpulist::format(&n.cores)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => UNKNOWN.to_string(),
    };
    let r = row("numa nodes", current, profile.numa_nodes.to_string());
    match &host.nodes {
        Some(nodes) if !nodes.is_empty() => {
            if nodes.len() > profile.numa_nodes {
                r.is(
                    Status::Advice,
                    "more nodes than the profile plans for: shards' memory may be remote \
                     (use 64core-2socket)",
                )
            } else if nodes.len() < profile.numa_nodes {
                r.is(
                    Status::Advice,
                    "fewer nodes than the profile plans for: generate lays out what is here",
                )
            } else {
                r.is(
                    Status::Ok,
                    "each shard's rings and buffers stay on its node",
                )
            }
        }
        // Without node directories the kernel has no NUMA support: one node.
        _ => r.is(Status::Advice, "could not read sys/devices/system/node"),
    }
}

fn isolated(host: &Host, profile: &Profile, layout: &Result<Layout>) -> Row {
    let current = match &host.isolated {
        Some(c) if c.is_empty() => "none".to_string(),
        Some(c) => cpulist::format(c),
        None => UNKNOWN.to_string(),
    };
    if profile.reserved_per_node() == 0 {
        return row("isolated cores", current, "none needed").is(
            Status::Ok,
            "every core runs shards and shares with the rest of the box",
        );
    }
    let shards = layout.as_ref().map(Layout::shards).unwrap_or_default();
    let list = cpulist::format(&shards);
    let r = row("isolated cores", current, format!("{list} (the shards)"));
    match &host.isolated {
        None => r.is(
            Status::Advice,
            "could not read sys/devices/system/cpu/isolated",
        ),
        Some(iso) if shards.iter().all(|c| iso.contains(c)) => {
            r.is(Status::Ok, "the scheduler keeps other work off the shards")
        }
        Some(_) => r
            .is(
                Status::Advice,
                "isolating the shard cores keeps kernel housekeeping and other work off them",
            )
            .by_hand(format!(
                "kernel command line: isolcpus=managed_irq,domain,{list} nohz_full={list}"
            )),
    }
}

fn nics(host: &Host, profile: &Profile, layout: &Result<Layout>) -> Vec<Row> {
    let (shards, irq_cores) = match layout {
        Ok(l) => (l.shards(), l.irq()),
        Err(_) => (Vec::new(), Vec::new()),
    };
    host.nics
        .iter()
        .map(|nic| {
            let mut cores: Vec<usize> = nic
                .irqs
                .iter()
                .flat_map(|i| i.affinity.clone().unwrap_or_default())
                .collect();
            cores.sort_unstable();
            cores.dedup();
            let irqs = if nic.irqs.is_empty() {
                "no IRQs found".to_string()
            } else {
                format!("{} IRQs on cores {}", nic.irqs.len(), cpulist::format(&cores))
            };
            let current = format!("{} rx/{} tx queues, {irqs}", nic.rx_queues, nic.tx_queues);
            let item = format!("nic {}", nic.name);
            if profile.irq_cores_per_node == 0 {
                return row(&item, current, "any core").is(
                    Status::Ok,
                    "every core runs shards; interrupts share them",
                );
            }
            let want = cpulist::format(&irq_cores);
            let r = row(&item, current, format!("IRQs on cores {want}"));
            let unknown = nic.irqs.iter().any(|i| i.affinity.is_none());
            let on_shards: Vec<u32> = nic
                .irqs
                .iter()
                .filter(|i| {
                    i.affinity
                        .as_ref()
                        .is_some_and(|a| a.iter().any(|c| shards.contains(c)))
                })
                .map(|i| i.irq)
                .collect();
            if !on_shards.is_empty() && !irq_cores.is_empty() {
                let cmds = on_shards
                    .iter()
                    .map(|n| format!("echo {want} > /proc/irq/{n}/smp_affinity_list"))
                    .collect::<Vec<_>>()
                    .join("; ");
                r.is(
                    Status::Advice,
                    "NIC interrupts land on shard cores and steal their time in bursts",
                )
                .by_hand(format!(
                    "{cmds} (and keep irqbalance off the shard cores: IRQBALANCE_BANNED_CPULIST={})",
                    cpulist::format(&shards)
                ))
            } else if unknown {
                r.is(Status::Advice, "could not read every proc/irq/N/smp_affinity_list")
            } else {
                r.is(Status::Ok, "interrupts stay off the shard cores")
            }
        })
        .collect()
}

fn nofile(host: &Host, gateway: &gateway::Config) -> Row {
    let limit = host.limits.and_then(|l| l.nofile);
    let want = u64::from(gateway.engine.slots_per_ring);
    let current = match limit.map(|l| l.soft) {
        Some(Value::Of(n)) => n.to_string(),
        Some(Value::Unlimited) => "unlimited".to_string(),
        None => UNKNOWN.to_string(),
    };
    let r = row("nofile", current, format!("{want} or more"));
    let why = "advisory: sockets are io_uring direct descriptors; nofile only caps a ring's \
               table (engine.slots_per_ring)";
    match limit {
        None => r.is(Status::Advice, "could not read proc/self/limits"),
        Some(l) if l.soft.at_least(want) => r.is(Status::Ok, why),
        Some(_) => r.is(Status::Advice, why).by_hand(format!(
            "raise the gateway's nofile to {want} (systemd LimitNOFILE={want}, or `* - nofile {want}` \
             in /etc/security/limits.conf), or lower engine.slots_per_ring"
        )),
    }
}

/// Bytes of locked memory the gateway's rings may take: per ring, the submission queue
/// (64 B entries), the completion queue (4x, 16 B entries) and the provided receive buffers
/// with their ring; every ring a shard may open, on every shard.
pub fn memlock_need(gateway: &gateway::Config, shards: usize) -> u64 {
    let e = &gateway.engine;
    let per_ring = u64::from(e.ring_entries) * 64
        + u64::from(e.ring_entries) * 4 * 16
        + u64::from(e.recv_buffers) * (u64::from(e.recv_buffer_size) + 16);
    per_ring * e.max_rings_per_shard as u64 * shards.max(1) as u64
}

fn memlock(host: &Host, gateway: &gateway::Config, shards: usize) -> Row {
    let limit = host.limits.and_then(|l| l.memlock);
    let current = match limit.map(|l| l.soft) {
        Some(Value::Of(n)) => format!("{} KiB", n / 1024),
        Some(Value::Unlimited) => "unlimited".to_string(),
        None => UNKNOWN.to_string(),
    };
    let need = memlock_need(gateway, shards);
    match host.kernel_version() {
        Some(v) if v >= (5, 12) => row("memlock", current, "any (kernel ≥ 5.12)").is(
            Status::Ok,
            "io_uring memory is charged to the memory cgroup since 5.12, not to memlock",
        ),
        version => {
            let r = row(
                "memlock",
                current,
                format!("{} KiB or more", need.div_ceil(1024)),
            );
            let why = "kernels before 5.12 charge every ring and its buffers to memlock";
            match (limit, version) {
                (None, _) => r.is(Status::Advice, "could not read proc/self/limits"),
                (Some(_), None) => r.is(
                    Status::Advice,
                    "kernel version unknown; before 5.12 rings are charged to memlock",
                ),
                (Some(l), Some(_)) if l.soft.at_least(need) => r.is(Status::Ok, why),
                (Some(_), Some(_)) => r
                    .is(Status::Blocker, why)
                    .by_hand("systemd LimitMEMLOCK=infinity, or `* - memlock unlimited` in /etc/security/limits.conf"),
            }
        }
    }
}

fn sysctl_row(host: &Host, entry: &crate::profile::SysctlEntry) -> Row {
    let kind = sysctl::kind(&entry.key);
    let recommended = sysctl::format(&entry.value);
    let why = match &entry.minimum {
        Some(m) if kind == sysctl::Kind::Range => {
            format!("{} (minimum {} ports)", entry.why, sysctl::range_width(m))
        }
        Some(m) => format!("{} (minimum {})", entry.why, sysctl::format(m)),
        None => entry.why.clone(),
    };
    let conntrack = entry.key.starts_with("net.netfilter.nf_conntrack");
    if conntrack && !host.conntrack_loaded {
        return row(&entry.key, "not loaded", recommended)
            .is(Status::Ok, "conntrack is not loaded: no table to fill");
    }
    let Some(current) = host.sysctl(&entry.key) else {
        let path = sysctl::path(std::path::Path::new(""), &entry.key);
        return row(&entry.key, UNKNOWN, recommended)
            .is(Status::Advice, format!("could not read {}", path.display()));
    };
    let mut r = row(&entry.key, sysctl::format(current), recommended);
    let status = if entry
        .minimum
        .as_ref()
        .is_some_and(|m| !sysctl::meets(kind, current, m))
    {
        Status::Blocker
    } else if !sysctl::meets(kind, current, &entry.value) {
        Status::Advice
    } else {
        Status::Ok
    };
    if status != Status::Ok {
        r.raise = Some(Raise {
            key: entry.key.clone(),
            path: sysctl::path(&host.root, &entry.key),
            from: current.to_vec(),
            to: sysctl::raised(kind, current, &entry.value),
        });
    }
    r.is(status, why)
}
