//! The check on the real host (root "/"): each row's "current" against the same value read
//! another way (sysctl, nproc/getconf, the shell's ulimit, ls of /sys, uname). What the host
//! lacks is skipped with the reason printed.

use std::path::Path;
use std::process::Command;

use tuning::check::{Report, check};
use tuning::host::Host;

fn real() -> (Host, Report) {
    let host = Host::read(Path::new("/"));
    let profile = tuning::cli::choose(None, &host).unwrap();
    let report = check(&host, profile).unwrap();
    (host, report)
}

/// A command's trimmed stdout, or None (printed) when it cannot run or fails.
fn output(program: &str, args: &[&str]) -> Option<String> {
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(o) => {
            println!(
                "skip: {program} {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            println!("skip: cannot run {program}: {e}");
            None
        }
    }
}

fn current<'a>(report: &'a Report, item: &str) -> &'a str {
    &report
        .row(item)
        .unwrap_or_else(|| panic!("no row {item}\n{}", report.table()))
        .current
}

#[test]
fn sysctl_rows_match_sysctl() {
    let (host, report) = real();
    let mut compared = 0;
    for key in tuning::sysctl::KEYS {
        let Some(row) = report.row(key) else {
            continue;
        };
        if key.starts_with("net.netfilter.") && !host.conntrack_loaded {
            assert_eq!(row.current, "not loaded");
            println!("skip: {key}: conntrack is not loaded here");
            continue;
        }
        let Some(want) = output("sysctl", &["-n", key]) else {
            continue;
        };
        let want = want.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(row.current, want, "{key}");
        compared += 1;
    }
    println!("compared {compared} sysctls");
    assert!(compared > 0 || output("sysctl", &["-n", "kernel.ostype"]).is_none());
}

#[test]
fn cores_and_numa_match_nproc_and_sys() {
    let (_, report) = real();
    let cores = current(&report, "cores");
    let count = cores.split_whitespace().next().unwrap();
    match output("getconf", &["_NPROCESSORS_ONLN"]) {
        Some(n) => assert_eq!(count, n, "{cores}"),
        None => {
            if let Some(n) = output("nproc", &["--all"]) {
                assert_eq!(count, n, "{cores}");
            }
        }
    }
    // NUMA nodes: the node<N> directories, counted by ls.
    match output("ls", &["/sys/devices/system/node"]) {
        Some(list) => {
            let nodes = list
                .split_whitespace()
                .filter(|n| {
                    n.strip_prefix("node")
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                })
                .count();
            let row = current(&report, "numa nodes");
            assert!(row.starts_with(&format!("{nodes} (")), "{row} vs {nodes}");
        }
        None => assert_eq!(current(&report, "numa nodes"), "unknown"),
    }
}

#[test]
fn limits_match_ulimit() {
    let (_, report) = real();
    // The shell inherits this process's limits.
    if let Some(n) = output("sh", &["-c", "ulimit -n"]) {
        assert_eq!(current(&report, "nofile"), n);
    }
    if let Some(l) = output("sh", &["-c", "ulimit -l"]) {
        let want = if l == "unlimited" {
            l
        } else {
            format!("{l} KiB")
        };
        assert_eq!(current(&report, "memlock"), want);
    }
}

#[test]
fn kernel_and_io_uring_match_the_host() {
    let (host, report) = real();
    if let Some(release) = output("uname", &["-r"]) {
        assert_eq!(current(&report, "kernel"), release);
    }
    // On "/" the ring probe always runs; its verdict is in the row.
    let probe = host
        .io_uring_probe
        .clone()
        .expect("the real root is probed");
    let row = current(&report, "io_uring");
    match probe {
        Ok(()) => assert!(row.ends_with("ring probe ok"), "{row}"),
        Err(e) => {
            println!("io_uring probe failed here: {e}");
            assert!(row.ends_with("ring probe failed"), "{row}");
        }
    }
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(v) => assert!(
            row.starts_with(&format!("io_uring_disabled={}", v.trim())),
            "{row}"
        ),
        Err(e) => println!("skip: no io_uring_disabled here ({e})"),
    }
}

#[test]
fn nic_rows_match_sys_class_net() {
    let (_, report) = real();
    let Some(list) = output("ls", &["/sys/class/net"]) else {
        return;
    };
    for nic in list.split_whitespace().filter(|n| *n != "lo") {
        let item = format!("nic {nic}");
        let has_device = Path::new("/sys/class/net")
            .join(nic)
            .join("device")
            .exists();
        let Some(row) = report.row(&item) else {
            assert!(!has_device, "{nic} has a device but no row");
            println!("skip: {nic} is virtual (no device)");
            continue;
        };
        let queues = output("ls", &[&format!("/sys/class/net/{nic}/queues")]).unwrap_or_default();
        let rx = queues
            .split_whitespace()
            .filter(|q| q.starts_with("rx-"))
            .count();
        let tx = queues
            .split_whitespace()
            .filter(|q| q.starts_with("tx-"))
            .count();
        assert!(
            row.current.starts_with(&format!("{rx} rx/{tx} tx queues")),
            "{}",
            row.current
        );
    }
}
