//! CPU time from `getrusage(2)`: the process's (what the brief of a run reports) and one
//! thread's (what the tester's own workers used, which excludes a gateway sharing the process).

fn usage(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// User + system seconds of the whole process so far.
pub fn process_secs() -> f64 {
    usage(libc::RUSAGE_SELF)
}

/// User + system seconds of the calling thread so far.
pub fn thread_secs() -> f64 {
    usage(libc::RUSAGE_THREAD)
}

/// The process's resident set size now and at its peak, in KiB (`/proc/self/status`).
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn clocks_move_forward() {
        let a = super::thread_secs();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(super::thread_secs() >= a);
        assert!(super::process_secs() >= super::thread_secs());
        assert!(super::rss_kib().0 > 0);
    }
}
