//! A plausible host tree written under a directory, for tests (the crate's own, and the
//! binary's): a one-socket 16-core host with an eth0 of 4 queue pairs whose interrupts sit on
//! core 0, shard cores 2-15 isolated, limits, every sysctl the check reads, conntrack loaded,
//! io_uring enabled. Every row of `corecast tune check --profile 16core` is ok on it.

use std::fs;
use std::io;
use std::path::Path;

/// The sysctls written, at or above the 16core profile (file-max as modern kernels set it).
pub const SYSCTLS: &[(&str, &str)] = &[
    ("fs.file-max", "9223372036854775807"),
    ("fs.nr_open", "1048576"),
    ("net.core.somaxconn", "65535"),
    ("net.ipv4.tcp_max_syn_backlog", "65535"),
    ("net.ipv4.ip_local_port_range", "32768\t60999"),
    ("net.ipv4.tcp_rmem", "4096\t131072\t33554432"),
    ("net.ipv4.tcp_wmem", "4096\t16384\t4194304"),
    ("net.ipv4.tcp_mem", "1048576\t1572864\t2097152"),
    ("net.netfilter.nf_conntrack_max", "2097152"),
    ("net.core.netdev_max_backlog", "16384"),
];

/// Writes the 16-core host under `root` (which must exist).
pub fn sixteen_core(root: &Path) -> io::Result<()> {
    write(root, "sys/devices/system/cpu/online", "0-15\n")?;
    write(root, "sys/devices/system/cpu/isolated", "2-15\n")?;
    write(root, "sys/devices/system/node/node0/cpulist", "0-15\n")?;
    write(root, "sys/devices/system/node/online", "0\n")?;
    // eth0: a PCI NIC with 4 rx and 4 tx queues; lo has queues but no device.
    let eth0 = root.join("sys/class/net/eth0");
    for q in 0..4 {
        fs::create_dir_all(eth0.join(format!("queues/rx-{q}")))?;
        fs::create_dir_all(eth0.join(format!("queues/tx-{q}")))?;
    }
    let link = eth0.join("device");
    if fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("../../../0000:3b:00.0", &link)?;
    }
    fs::create_dir_all(root.join("sys/class/net/lo/queues/rx-0"))?;
    let header: String = (0..16)
        .map(|c| format!("{:>11}", format!("CPU{c}")))
        .collect();
    let mut interrupts = format!("{header}\n");
    let counts = |n: u64| {
        (0..16)
            .map(|c| format!("{:>11}", n * c))
            .collect::<String>()
    };
    interrupts.push_str(&format!("  4:{}  IO-APIC   4-edge      ttyS0\n", counts(1)));
    for q in 0..4u32 {
        let irq = 120 + q;
        interrupts.push_str(&format!(
            "{irq:>4}:{}  IR-PCI-MSI 5242{q}-edge      eth0-TxRx-{q}\n",
            counts(100)
        ));
        write(root, &format!("proc/irq/{irq}/smp_affinity_list"), "0\n")?;
    }
    interrupts.push_str(&format!(" LOC:{}   Local timer interrupts\n", counts(7)));
    write(root, "proc/interrupts", &interrupts)?;
    write(
        root,
        "proc/self/limits",
        "Limit                     Soft Limit           Hard Limit           Units     \n\
         Max open files            1048576              1048576              files     \n\
         Max locked memory         8388608              8388608              bytes     \n",
    )?;
    for (key, value) in SYSCTLS {
        set_sysctl(root, key, value)?;
    }
    write(root, "proc/sys/kernel/io_uring_disabled", "0\n")?;
    write(root, "proc/sys/kernel/osrelease", "6.8.0-fake\n")?;
    Ok(())
}

/// Writes one sysctl's file under `root`.
pub fn set_sysctl(root: &Path, key: &str, value: &str) -> io::Result<()> {
    let path = crate::sysctl::path(root, key);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, format!("{value}\n"))
}

/// Writes `text` to ROOT/rel, creating the directories.
pub fn write(root: &Path, rel: &str, text: &str) -> io::Result<()> {
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, text)
}
