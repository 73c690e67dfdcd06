//! Readings from /proc: CPU time of this process's threads by name, resident memory, and the
//! kernel's socket and slab memory.

use std::fs;

/// Clock ticks per second for /proc stat fields.
fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// CPU seconds (user + system) in a /proc `stat` line: utime and stime are the 12th and 13th
/// fields after the ")" that ends the command name.
fn stat_cpu_secs(stat: &str) -> f64 {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / ticks()
}

/// CPU seconds used so far by this process's threads whose name starts with
/// `prefix`.
pub fn thread_cpu_secs(prefix: &str) -> f64 {
    threads_cpu_secs("self", prefix)
}

/// CPU seconds a task (`/proc/<pid>/task/<tid>`) ran: the nanoseconds of its `schedstat`
/// (exact), else the clock ticks of its `stat`.
fn task_cpu_secs(task: &std::path::Path) -> f64 {
    let ns = fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    match ns {
        Some(ns) => ns / 1e9,
        None => stat_cpu_secs(&fs::read_to_string(task.join("stat")).unwrap_or_default()),
    }
}

/// CPU seconds used so far by the threads of process `pid` (a number, or "self") whose name
/// starts with `prefix` ("" for all).
pub fn threads_cpu_secs(pid: &str, prefix: &str) -> f64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut total = 0.0;
    for t in tasks.flatten() {
        let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            total += task_cpu_secs(&t.path());
        }
    }
    total
}

/// CPU seconds (user + system) a process used so far, from /proc/<pid>/stat.
pub fn pid_cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// Resident set size of process `pid`, bytes.
pub fn pid_rss_bytes(pid: u32) -> u64 {
    status_kib(&format!("/proc/{pid}/status"), "VmRSS:") * 1024
}

/// Resident set size of this process, bytes.
pub fn rss_bytes() -> u64 {
    status_kib("/proc/self/status", "VmRSS:") * 1024
}

/// (anonymous, file-backed, shared) resident bytes of this process: heap and stacks; mapped
/// files; shared mappings such as io_uring's queues and provided-buffer memory.
pub fn rss_split() -> (u64, u64, u64) {
    let f = |k| status_kib("/proc/self/status", k) * 1024;
    (f("RssAnon:"), f("RssFile:"), f("RssShmem:"))
}

fn status_kib(path: &str, key: &str) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Kernel memory that grows with sockets: slab (socket structs, dentries, ...) plus the TCP
/// buffer pages of /proc/net/sockstat, bytes.
pub fn kernel_socket_bytes() -> u64 {
    let slab = status_kib("/proc/meminfo", "Slab:") * 1024;
    let tcp_pages: u64 = fs::read_to_string("/proc/net/sockstat")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.iter()
                .position(|w| *w == "mem")
                .and_then(|i| f.get(i + 1)?.parse().ok())
        })
        .unwrap_or(0);
    slab + tcp_pages * 4096
}

/// The machine, for result files: CPU model, cores, memory, kernel.
pub fn machine() -> serde_json::Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // `hostname -s`: the name up to its first dot.
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim().split('.').next().unwrap_or_default();
    serde_json::json!({
        "host": host,
        "cpu": model,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memory_gib": status_kib("/proc/meminfo", "MemTotal:") / (1024 * 1024),
        "kernel": kernel.trim(),
    })
}

/// Today's date in UTC, `YYYY-MM-DD` (from `date -u`).
pub fn today() -> std::io::Result<String> {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
