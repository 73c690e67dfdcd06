//! The check, --apply and generate on a fake 16-core host tree (tuning::fake_host): all fine,
//! then one value at a time broken on purpose.

use std::path::{Path, PathBuf};

use tuning::check::{Status, check};
use tuning::cli::{Args, Tool, run};
use tuning::host::Host;
use tuning::{fake_host, profile};

/// A fresh directory under the system temp dir, removed on drop (the workspace's tests use
/// the same std-only pattern; no temp-dir crate is a dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(1);
        let p = std::env::temp_dir().join(format!(
            "corecast-tune-{tag}-{}-{:x}",
            std::process::id(),
            h.finish()
        ));
        std::fs::create_dir_all(&p).unwrap();
        fake_host::sixteen_core(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sixteen() -> &'static tuning::profile::Profile {
    profile::named("16core").unwrap()
}

fn check_cli(root: &Path, apply: bool) -> (bool, String) {
    let args = Args {
        command: Tool::Check {
            profile: None,
            apply,
        },
        root: root.to_path_buf(),
    };
    let mut out = Vec::new();
    let fine = run(&args, &mut out).unwrap();
    (fine, String::from_utf8(out).unwrap())
}

fn sysctl_text(root: &Path, key: &str) -> String {
    std::fs::read_to_string(tuning::sysctl::path(root, key))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_well_tuned_host_passes() {
    let dir = TempDir::new("ok");
    let host = Host::read(&dir.0);
    assert_eq!(
        host.online.as_deref(),
        Some(&(0..16).collect::<Vec<_>>()[..])
    );
    assert_eq!(host.nics.len(), 1, "lo is skipped: {:?}", host.nics);
    let eth0 = &host.nics[0];
    assert_eq!((eth0.rx_queues, eth0.tx_queues), (4, 4));
    assert_eq!(eth0.device.as_deref(), Some("0000:3b:00.0"));
    assert_eq!(
        eth0.irqs.iter().map(|i| i.irq).collect::<Vec<_>>(),
        [120, 121, 122, 123]
    );
    assert!(host.io_uring_probe.is_none(), "a fake root is never probed");
    let report = check(&host, sixteen()).unwrap();
    let not_ok: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.status != Status::Ok)
        .collect();
    assert!(not_ok.is_empty(), "{not_ok:#?}\n{}", report.table());
    assert_eq!(
        report.row("nic eth0").unwrap().current,
        "4 rx/4 tx queues, 4 IRQs on cores 0"
    );
    assert_eq!(report.row("net.core.somaxconn").unwrap().current, "65535");
    assert_eq!(
        report.row("net.ipv4.tcp_rmem").unwrap().current,
        "4096 131072 33554432"
    );
    // Through the command line: 16 online cores choose the 16core profile.
    let (fine, out) = check_cli(&dir.0, false);
    assert!(fine, "{out}");
    assert!(out.starts_with("profile 16core:"), "{out}");
    assert!(out.contains("0 blockers, 0 advice"), "{out}");
}

#[test]
fn a_short_accept_queue_is_a_blocker() {
    let dir = TempDir::new("somaxconn");
    fake_host::set_sysctl(&dir.0, "net.core.somaxconn", "128").unwrap();
    let report = check(&Host::read(&dir.0), sixteen()).unwrap();
    let row = report.row("net.core.somaxconn").unwrap();
    assert_eq!(row.status, Status::Blocker, "{row:?}");
    assert_eq!(row.current, "128");
    assert_eq!(report.count(Status::Blocker), 1, "{}", report.table());
    let (fine, out) = check_cli(&dir.0, false);
    assert!(!fine);
    assert!(
        out.lines()
            .any(|l| l.starts_with("net.core.somaxconn") && l.contains("BLOCKER")),
        "{out}"
    );
    assert!(out.contains("1 blocker,"), "{out}");
}

#[test]
fn disabled_io_uring_is_a_blocker() {
    let dir = TempDir::new("io-uring");
    fake_host::write(&dir.0, "proc/sys/kernel/io_uring_disabled", "2\n").unwrap();
    let report = check(&Host::read(&dir.0), sixteen()).unwrap();
    let row = report.row("io_uring").unwrap();
    assert_eq!(row.status, Status::Blocker, "{row:?}");
    assert_eq!(row.current, "io_uring_disabled=2");
    assert!(!check_cli(&dir.0, false).0);
    // 1 (root and the io_uring group only) is advice, not a blocker.
    fake_host::write(&dir.0, "proc/sys/kernel/io_uring_disabled", "1\n").unwrap();
    let report = check(&Host::read(&dir.0), sixteen()).unwrap();
    assert_eq!(report.row("io_uring").unwrap().status, Status::Advice);
}

#[test]
fn other_blockers_and_advice() {
    let dir = TempDir::new("more");
    let r = &dir.0;
    // conntrack full before the profile's connections: blocker; not loaded: fine.
    fake_host::set_sysctl(r, "net.netfilter.nf_conntrack_max", "262144").unwrap();
    let report = check(&Host::read(r), sixteen()).unwrap();
    assert_eq!(
        report.row("net.netfilter.nf_conntrack_max").unwrap().status,
        Status::Blocker
    );
    std::fs::remove_dir_all(r.join("proc/sys/net/netfilter")).unwrap();
    let report = check(&Host::read(r), sixteen()).unwrap();
    let row = report.row("net.netfilter.nf_conntrack_max").unwrap();
    assert_eq!(
        (row.status, row.current.as_str()),
        (Status::Ok, "not loaded")
    );
    // A narrow port range is a blocker; a tcp_mem field below the profile is advice.
    fake_host::set_sysctl(r, "net.ipv4.ip_local_port_range", "60000 60999").unwrap();
    fake_host::set_sysctl(r, "net.ipv4.tcp_mem", "1048576 1000000 2097152").unwrap();
    // NIC interrupts on shard cores, no isolated cores, a low nofile: advice.
    fake_host::write(r, "proc/irq/121/smp_affinity_list", "0-15\n").unwrap();
    fake_host::write(r, "sys/devices/system/cpu/isolated", "\n").unwrap();
    fake_host::write(
        r,
        "proc/self/limits",
        "Max open files            1024                 4096                 files     \n\
         Max locked memory         65536                65536                bytes     \n",
    )
    .unwrap();
    let report = check(&Host::read(r), sixteen()).unwrap();
    let status = |item: &str| report.row(item).unwrap().status;
    assert_eq!(status("net.ipv4.ip_local_port_range"), Status::Blocker);
    assert_eq!(status("net.ipv4.tcp_mem"), Status::Advice);
    assert_eq!(status("nic eth0"), Status::Advice);
    let by_hand = report.row("nic eth0").unwrap().by_hand.clone().unwrap();
    assert!(
        by_hand.contains("echo 0 > /proc/irq/121/smp_affinity_list"),
        "{by_hand}"
    );
    assert!(!by_hand.contains("/proc/irq/120/"), "{by_hand}");
    assert_eq!(status("isolated cores"), Status::Advice);
    assert_eq!(
        status("nofile"),
        Status::Advice,
        "nofile is never a blocker"
    );
    // memlock matters only before 5.12, and there it is a blocker when too small (the kernel
    // row is a blocker too: corecast's rings need 6.1).
    assert_eq!(status("memlock"), Status::Ok);
    fake_host::write(r, "proc/sys/kernel/osrelease", "5.10.0-old\n").unwrap();
    let report = check(&Host::read(r), sixteen()).unwrap();
    assert_eq!(report.row("memlock").unwrap().status, Status::Blocker);
    assert_eq!(report.row("kernel").unwrap().status, Status::Blocker);
    // Fewer cores than the profile's reserved cores plus one shard: blocker; fewer than the
    // profile's 16 but enough for a shard: advice.
    fake_host::write(r, "sys/devices/system/cpu/online", "0-1\n").unwrap();
    let report = check(&Host::read(r), sixteen()).unwrap();
    assert_eq!(report.row("cores").unwrap().status, Status::Blocker);
    fake_host::write(r, "sys/devices/system/cpu/online", "0-7\n").unwrap();
    let report = check(&Host::read(r), sixteen()).unwrap();
    assert_eq!(report.row("cores").unwrap().status, Status::Advice);
    // Unreadable values are unknown, not errors.
    std::fs::remove_file(tuning::sysctl::path(r, "net.core.somaxconn")).unwrap();
    let report = check(&Host::read(r), sixteen()).unwrap();
    let row = report.row("net.core.somaxconn").unwrap();
    assert_eq!(
        (row.current.as_str(), row.status),
        ("unknown", Status::Advice)
    );
}

#[test]
fn apply_raises_what_is_low_and_leaves_higher_values_alone() {
    let dir = TempDir::new("apply");
    let r = &dir.0;
    fake_host::set_sysctl(r, "net.core.somaxconn", "128").unwrap();
    // tcp_rmem: the middle field is low, the last one above the profile.
    fake_host::set_sysctl(r, "net.ipv4.tcp_rmem", "4096\t65536\t33554432").unwrap();
    // A port range narrower than recommended but with a higher top.
    fake_host::set_sysctl(r, "net.ipv4.ip_local_port_range", "40000\t64000").unwrap();
    let (fine, out) = check_cli(r, true);
    assert!(fine, "the only blocker was raised:\n{out}");
    assert_eq!(sysctl_text(r, "net.core.somaxconn"), "65535");
    assert_eq!(sysctl_text(r, "net.ipv4.tcp_rmem"), "4096 131072 33554432");
    assert_eq!(
        sysctl_text(r, "net.ipv4.ip_local_port_range"),
        "32768 64000"
    );
    // Higher values untouched, byte for byte.
    assert_eq!(sysctl_text(r, "fs.file-max"), "9223372036854775807");
    assert_eq!(sysctl_text(r, "net.core.netdev_max_backlog"), "16384");
    for line in [
        "applied: net.core.somaxconn 128 -> 65535",
        "applied: net.ipv4.tcp_rmem 4096 65536 33554432 -> 4096 131072 33554432",
        "applied: net.ipv4.ip_local_port_range 40000 64000 -> 32768 64000",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    assert_eq!(out.matches("applied:").count(), 3, "{out}");
    // The table shows the state after the changes; a second run has nothing to do.
    assert!(out.contains("0 blockers, 0 advice"), "{out}");
    let (fine, out) = check_cli(r, true);
    assert!(fine && out.contains("applied: nothing to raise"), "{out}");
}

#[test]
fn generate_lays_shards_out_on_this_host() {
    let dir = TempDir::new("generate");
    let out_dir = dir.0.join("out");
    let args = Args {
        command: Tool::Generate {
            profile: None,
            out: Some(out_dir.clone()),
        },
        root: dir.0.clone(),
    };
    let mut out = Vec::new();
    assert!(run(&args, &mut out).unwrap());
    let said = String::from_utf8(out).unwrap();
    assert!(said.contains("shards on cores 2-15"), "{said}");
    let text = std::fs::read_to_string(out_dir.join("gateway.toml")).unwrap();
    let g = gateway::Config::from_toml(&text).unwrap();
    assert_eq!(g.cores, (2..16).collect::<Vec<_>>());
    assert!(
        text.contains(
            "# NUMA node 0: shards on cores 2-15; kept: 0 for NIC interrupts, 1 for the dispatcher."
        ),
        "{text}"
    );
    // The profile's other knobs and their comments are kept.
    assert_eq!(g.engine, sixteen().gateway().unwrap().engine);
    assert!(text.contains("# Rings per shard"));
    let d = std::fs::read_to_string(out_dir.join("dispatcher.toml")).unwrap();
    let d = dispatcher::Config::from_toml(&d).unwrap();
    assert_eq!(d.threads, 1);

    // Two NUMA nodes of 8 cores: one IRQ core and one dispatcher core on each.
    fake_host::write(&dir.0, "sys/devices/system/node/node0/cpulist", "0-7\n").unwrap();
    fake_host::write(&dir.0, "sys/devices/system/node/node1/cpulist", "8-15\n").unwrap();
    let host = Host::read(&dir.0);
    let g = tuning::generate::generate(&host, profile::named("64core-2socket").unwrap()).unwrap();
    assert_eq!(
        g.layout.shards(),
        [2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15]
    );
    assert!(g.gateway_toml.contains(
        "# NUMA node 1: shards on cores 10-15; kept: 8 for NIC interrupts, 9 for the dispatcher."
    ));
    let d = dispatcher::Config::from_toml(&g.dispatcher_toml).unwrap();
    assert_eq!(d.threads, 2);

    // The laptop profile on two cores: both run shards, nothing kept.
    fake_host::write(&dir.0, "sys/devices/system/cpu/online", "0-1\n").unwrap();
    std::fs::remove_dir_all(dir.0.join("sys/devices/system/node")).unwrap();
    let host = Host::read(&dir.0);
    let g = tuning::generate::generate(&host, profile::named("laptop").unwrap()).unwrap();
    assert_eq!(
        gateway::Config::from_toml(&g.gateway_toml).unwrap().cores,
        [0, 1]
    );
    // ...and 16core there has no core left for a shard: a clear error.
    let err = tuning::generate::generate(&host, sixteen())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("16core") && err.contains("no core for a shard"),
        "{err}"
    );
}
