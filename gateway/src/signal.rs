//! SIGTERM/SIGINT for the binary: block them in every thread, then wait for one in a
//! dedicated thread and drain the gateway.

/// Blocks SIGTERM and SIGINT in the calling thread and in every thread it spawns afterwards.
/// Call before starting the gateway.
pub fn block_termination_signals() {
    // SAFETY: building and applying a signal mask on the current thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits until SIGTERM or SIGINT arrives; returns its number.
pub fn wait_for_termination() -> i32 {
    // SAFETY: sigwait on a valid, initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
        sig
    }
}
