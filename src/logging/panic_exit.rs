//! A panic anywhere ends the process.
//!
//! The daemon's work is split over threads (the netlink reader, the
//! runtime's workers): a panic unwinds only its own thread, and the process
//! would live on with nothing syncing while supervisord or systemd see it
//! running. The hook installed here lets the default hook print the panic
//! to stderr, puts it in the log (syslog on a switch), and exits with 101,
//! Rust's exit code for a panic, so the supervisor sees the failure and
//! restarts the daemon (upstream portsyncd, which ends on any error, is
//! restarted the same way).

use std::panic::{self, PanicHookInfo};

/// The exit code after a panic in any thread (what a panic of the main
/// thread gives too).
pub const PANIC_EXIT_CODE: i32 = 101;

/// Installs the hook for the life of the process. Call once, early.
pub fn install() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        default(info);
        log_panic(info);
        std::process::exit(PANIC_EXIT_CODE);
    }));
}

fn log_panic(info: &PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    tracing::error!(
        thread,
        panic = %info,
        "a thread panicked; exiting with {PANIC_EXIT_CODE} so that the supervisor restarts portsyncd"
    );
}
