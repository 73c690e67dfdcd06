//! Signals for the binary: block them in every thread, then wait for one in a dedicated
//! thread. SIGTERM/SIGINT drain the gateway; SIGHUP (where the caller asks for it) reloads the
//! WSS certificate.

fn set(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: building a signal set in a zeroed, then emptied, sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn block(signals: &[i32]) {
    let set = set(signals);
    // SAFETY: applying a valid signal mask to the current thread.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn wait(signals: &[i32]) -> i32 {
    let set = set(signals);
    let mut sig = 0;
    // SAFETY: sigwait on a valid, initialised set.
    unsafe {
        libc::sigwait(&set, &mut sig);
    }
    sig
}

/// Blocks SIGTERM and SIGINT in the calling thread and in every thread it spawns afterwards.
/// Call before starting the gateway.
pub fn block_termination_signals() {
    block(&[libc::SIGTERM, libc::SIGINT]);
}

/// Waits until SIGTERM or SIGINT arrives; returns its number.
pub fn wait_for_termination() -> i32 {
    wait(&[libc::SIGTERM, libc::SIGINT])
}

/// What [`wait_for_signal`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT (its number): drain and exit.
    Terminate(i32),
    /// SIGHUP: reload the certificate and carry on.
    Reload,
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and in every thread it spawns
/// afterwards (for [`wait_for_signal`]). Call before starting the gateway.
pub fn block_gateway_signals() {
    block(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
}

/// Waits until SIGTERM, SIGINT or SIGHUP arrives.
pub fn wait_for_signal() -> Signal {
    match wait(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]) {
        libc::SIGHUP => Signal::Reload,
        sig => Signal::Terminate(sig),
    }
}

/// Waits for signals until SIGTERM or SIGINT (returned), reloading `gateway`'s WSS certificate
/// on each SIGHUP (a failed reload is logged by the gateway and the old certificate stays).
pub fn serve_until_terminated(gateway: &crate::Gateway) -> i32 {
    loop {
        match wait_for_signal() {
            Signal::Terminate(sig) => return sig,
            Signal::Reload => {
                if gateway.wss_addr().is_none() {
                    tracing::info!("SIGHUP: WSS is off, nothing to reload");
                } else if gateway.reload_tls().is_ok() {
                    tracing::info!("SIGHUP: the WSS certificate was reloaded");
                }
            }
        }
    }
}
