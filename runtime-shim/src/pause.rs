//! The built-in pause process of a pod sandbox: holds the pod's
//! namespaces, reaps the orphans given to it when it is the pod's PID 1,
//! and exits cleanly on SIGTERM or SIGINT. Run as `hull-shim pause` or
//! through a link named `pause` (the sandbox's root bind-mounts the static
//! hull-shim there), so that no pause image must be pulled or kept from
//! garbage collection.

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// Whether this invocation asks for the pause process.
pub fn wanted(argv0: &str, args: &[String]) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "pause")
        || args.first().is_some_and(|a| a == "pause")
}

/// Never runs: the signals are blocked and taken with sigwait (a blocked
/// signal is queued even for a PID namespace's init, which would drop it
/// at the default disposition); the handler keeps them from being dropped
/// should they ever be unblocked.
extern "C" fn noop(_: libc::c_int) {}

/// Runs until SIGTERM or SIGINT; returns the exit code.
pub fn run() -> i32 {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set.add(s);
        let action = SigAction::new(SigHandler::Handler(noop), SaFlags::empty(), SigSet::empty());
        // SAFETY: the handler does nothing, so it is async-signal-safe, and
        // no other thread exists to race on the disposition.
        if unsafe { sigaction(s, &action) }.is_err() {
            return 1;
        }
    }
    // Blocked, then taken one at a time: nothing runs between signals.
    if set.thread_block().is_err() {
        return 1;
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Ok(_) => return 0,
            Err(_) => return 1,
        }
    }
}
