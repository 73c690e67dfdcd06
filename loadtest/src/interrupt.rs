//! Ctrl-C (SIGINT) and SIGTERM end a command-line run early, with its report: the signal
//! handler sets a flag, and a watcher thread copies it into the run's stop flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
}

/// Forwards SIGINT/SIGTERM to `stop` until [`Forward::finish`].
pub struct Forward {
    done: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

impl Forward {
    pub fn install(stop: Arc<AtomicBool>) -> Forward {
        SIGNALLED.store(false, Ordering::Relaxed);
        let handler = on_signal as extern "C" fn(libc::c_int);
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
            libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        }
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let watcher = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                if SIGNALLED.load(Ordering::Relaxed) {
                    stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Forward {
            done,
            watcher: Some(watcher),
        }
    }

    /// Stops forwarding and restores the default handlers.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        // SAFETY: restoring the default disposition.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
        }
    }
}
