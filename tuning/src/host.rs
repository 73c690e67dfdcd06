//! Reading the host under a root directory ("/" on a real host, a fake tree in tests): cores,
//! NUMA nodes, isolated cores, NIC queues and their interrupts, resource limits, sysctls,
//! io_uring and the kernel version. Reading never fails: whatever is missing or unreadable is
//! `None` (printed as "unknown").

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::limits::{self, Limits};
use crate::{cpulist, interrupts, sysctl};

/// What was read from one host.
#[derive(Clone, Debug)]
pub struct Host {
    /// The root it was read under.
    pub root: PathBuf,
    /// Online cores (/sys/devices/system/cpu/online).
    pub online: Option<Vec<usize>>,
    /// NUMA nodes and their cores (/sys/devices/system/node/node*/cpulist), by node number.
    pub nodes: Option<Vec<Node>>,
    /// Cores isolated from the scheduler (isolcpus; /sys/devices/system/cpu/isolated).
    pub isolated: Option<Vec<usize>>,
    /// Network interfaces with a device behind them (lo and virtual interfaces are skipped).
    pub nics: Vec<Nic>,
    /// This process's limits (ROOT/proc/self/limits).
    pub limits: Option<Limits>,
    /// Every key of [`sysctl::KEYS`] with its fields, `None` when unreadable.
    pub sysctls: BTreeMap<&'static str, Option<Vec<u64>>>,
    /// Whether the conntrack module is loaded (/proc/sys/net/netfilter or
    /// /sys/module/nf_conntrack exists).
    pub conntrack_loaded: bool,
    /// kernel.io_uring_disabled (0 allowed, 1 only for the io_uring group, 2 disabled); the
    /// file exists from kernel 6.6 on.
    pub io_uring_disabled: Option<u64>,
    /// Creating a ring with the flags corecast uses, only when the root is "/" (a fake root's
    /// kernel cannot be probed): `Ok` or what failed.
    pub io_uring_probe: Option<Result<(), String>>,
    /// The kernel release (/proc/sys/kernel/osrelease).
    pub kernel: Option<String>,
}

/// A NUMA node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: usize,
    pub cores: Vec<usize>,
}

/// A network interface backed by a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    /// The device's name (the target of /sys/class/net/IF/device: `virtio2`, `0000:3b:00.0`).
    pub device: Option<String>,
    pub rx_queues: usize,
    pub tx_queues: usize,
    /// Interrupts naming the interface or its device in /proc/interrupts.
    pub irqs: Vec<Irq>,
}

/// One interrupt and the cores it may land on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Irq {
    pub irq: u32,
    /// /proc/irq/N/smp_affinity_list.
    pub affinity: Option<Vec<usize>>,
}

impl Host {
    /// Reads the host under `root`.
    pub fn read(root: &Path) -> Host {
        let text = |rel: &str| read(&root.join(rel));
        let sysctls = sysctl::KEYS
            .iter()
            .map(|&key| {
                let value = read(&sysctl::path(root, key)).and_then(|t| sysctl::parse(&t));
                (key, value)
            })
            .collect();
        let real = root == Path::new("/");
        Host {
            root: root.to_path_buf(),
            online: text("sys/devices/system/cpu/online").and_then(|t| cpulist::parse(&t).ok()),
            nodes: nodes(root),
            isolated: text("sys/devices/system/cpu/isolated").and_then(|t| cpulist::parse(&t).ok()),
            nics: nics(root),
            limits: text("proc/self/limits").map(|t| limits::parse(&t)),
            sysctls,
            conntrack_loaded: root.join("proc/sys/net/netfilter").is_dir()
                || root.join("sys/module/nf_conntrack").exists(),
            io_uring_disabled: text("proc/sys/kernel/io_uring_disabled")
                .and_then(|t| t.trim().parse().ok()),
            io_uring_probe: real.then(probe_io_uring),
            kernel: text("proc/sys/kernel/osrelease")
                .map(|t| t.trim().to_string())
                .filter(|k| !k.is_empty()),
        }
    }

    /// A sysctl's fields, when read.
    pub fn sysctl(&self, key: &str) -> Option<&[u64]> {
        self.sysctls.get(key).and_then(|v| v.as_deref())
    }

    /// The kernel's major and minor version ("6.18.44-fc-v669" → (6, 18)).
    pub fn kernel_version(&self) -> Option<(u32, u32)> {
        let release = self.kernel.as_deref()?;
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    }

    /// The cores to lay shards out on, grouped by NUMA node: the nodes' cores that are online,
    /// or, without NUMA information, all online cores as node 0.
    pub fn node_cores(&self) -> Option<Vec<Node>> {
        let online = self.online.as_ref()?;
        let nodes = match &self.nodes {
            Some(nodes) if !nodes.is_empty() => nodes
                .iter()
                .map(|n| Node {
                    id: n.id,
                    cores: n
                        .cores
                        .iter()
                        .copied()
                        .filter(|c| online.contains(c))
                        .collect(),
                })
                .filter(|n| !n.cores.is_empty())
                .collect(),
            _ => vec![Node {
                id: 0,
                cores: online.clone(),
            }],
        };
        Some(nodes)
    }
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn nodes(root: &Path) -> Option<Vec<Node>> {
    let dir = root.join("sys/devices/system/node");
    let mut nodes: Vec<Node> = fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_prefix("node")?.parse().ok()?;
            let cores = cpulist::parse(&read(&e.path().join("cpulist"))?).ok()?;
            Some(Node { id, cores })
        })
        .collect();
    nodes.sort_by_key(|n| n.id);
    Some(nodes)
}

fn nics(root: &Path) -> Vec<Nic> {
    let Ok(entries) = fs::read_dir(root.join("sys/class/net")) else {
        return Vec::new();
    };
    let lines = read(&root.join("proc/interrupts"))
        .map(|t| interrupts::parse(&t))
        .unwrap_or_default();
    let mut nics: Vec<Nic> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let dir = e.path();
            let device_link = dir.join("device");
            // lo, bridges, veths, ifbs, tunnels: no device, no queues of their own to pin.
            if name == "lo" || fs::symlink_metadata(&device_link).is_err() {
                return None;
            }
            let device = fs::read_link(&device_link)
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
            let queues: Vec<String> = fs::read_dir(dir.join("queues"))
                .map(|q| {
                    q.filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default();
            let count = |prefix: &str| queues.iter().filter(|q| q.starts_with(prefix)).count();
            let irqs = lines
                .iter()
                .filter(|l| interrupts::names(l, &name, device.as_deref()))
                .map(|l| Irq {
                    irq: l.irq,
                    affinity: read(&root.join(format!("proc/irq/{}/smp_affinity_list", l.irq)))
                        .and_then(|t| cpulist::parse(&t).ok()),
                })
                .collect();
            Some(Nic {
                rx_queues: count("rx-"),
                tx_queues: count("tx-"),
                name,
                device,
                irqs,
            })
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

/// Creates a small ring with the setup flags corecast's rings use (`SINGLE_ISSUER` +
/// `DEFER_TASKRUN`, kernel 6.1), and says what failed when it cannot.
fn probe_io_uring() -> Result<(), String> {
    let full = io_uring::IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8);
    match full {
        Ok(_) => Ok(()),
        Err(e) => match io_uring::IoUring::<io_uring::squeue::Entry>::new(8) {
            Ok(_) => Err(format!(
                "a plain ring works but SINGLE_ISSUER + DEFER_TASKRUN do not (kernel 6.1+ needed): {e}"
            )),
            Err(plain) => Err(format!("io_uring_setup: {plain}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_root_reads_as_unknown() {
        let h = Host::read(Path::new("/nonexistent/corecast-tuning-root"));
        assert!(h.online.is_none() && h.nodes.is_none() && h.kernel.is_none());
        assert!(h.nics.is_empty() && h.limits.is_none() && h.io_uring_probe.is_none());
        assert!(h.sysctls.values().all(Option::is_none));
        assert!(!h.conntrack_loaded);
    }

    #[test]
    fn kernel_versions() {
        let mut h = Host::read(Path::new("/nonexistent"));
        for (release, want) in [
            ("6.18.44-fc-v669", Some((6, 18))),
            ("5.4.0-150-generic", Some((5, 4))),
            ("weird", None),
        ] {
            h.kernel = Some(release.into());
            assert_eq!(h.kernel_version(), want, "{release}");
        }
    }
}
