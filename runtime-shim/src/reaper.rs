//! The reaper: the only caller of `waitpid` in the shim.
//!
//! The shim is a child subreaper, so container processes and everything
//! they leave behind are reparented to it. On every SIGCHLD the reaper
//! collects all exited children and broadcasts each [`Exit`]. Code that
//! starts a process subscribes before spawning it, then waits for its pid on
//! the subscription; nothing else waits on children.

use std::time::SystemTime;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

/// One reaped child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The child's pid.
    pub pid: u32,
    /// Exit code, or 128 + signal number when a signal ended it.
    pub status: u32,
    /// When it was reaped.
    pub at: SystemTime,
}

/// Broadcasts exits of reaped children.
#[derive(Clone, Debug)]
pub struct Monitor {
    tx: broadcast::Sender<Exit>,
    /// Held for writing while code that waits for its own child runs (std's
    /// `Command::output`, e.g. `mount` for long overlay options), so that
    /// the reaper does not take that child's exit status away from it.
    hold: Arc<RwLock<()>>,
}

/// How many exits a slow subscriber may fall behind by.
const BACKLOG: usize = 4096;

impl Monitor {
    /// Starts reaping on the current runtime.
    ///
    /// # Errors
    /// When the SIGCHLD handler cannot be installed.
    pub fn start() -> std::io::Result<Monitor> {
        let mut sigchld = signal(SignalKind::child())?;
        let (tx, _) = broadcast::channel(BACKLOG);
        let monitor = Monitor {
            tx,
            hold: Arc::new(RwLock::new(())),
        };
        let reaper = monitor.clone();
        tokio::spawn(async move {
            loop {
                // While reaping is held off, keep retrying: the SIGCHLD
                // that woke us will not come again.
                while !reaper.reap() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(monitor)
    }

    /// A receiver of every exit from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Exit> {
        self.tx.subscribe()
    }

    /// Runs `f`, which waits for children of its own, with reaping held
    /// off. Blocking: call it from a blocking thread.
    pub fn without_reaping<T>(&self, f: impl FnOnce() -> T) -> T {
        let _held = self.hold.write().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Collects every child that has exited; false when reaping is held off.
    fn reap(&self) -> bool {
        let Ok(_reaping) = self.hold.try_read() else {
            return false;
        };
        loop {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG only writes the status integer we
            // pass it. Not nix's waitpid: it decodes the status into its
            // Signal enum and fails on a real-time signal after the child
            // is reaped, which would lose that exit for good.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return true;
            }
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status) as u32
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status) as u32
            } else {
                continue;
            };
            // No subscriber is fine: nobody is waiting for that child.
            let _ = self.tx.send(Exit {
                pid: pid as u32,
                status: code,
                at: SystemTime::now(),
            });
        }
    }
}

/// Waits on `rx` for the exit of `pid`.
///
/// Cancel-safe.
///
/// # Errors
/// When the monitor stops, or this subscriber fell so far behind that the
/// exit was dropped.
pub async fn wait_for(
    rx: &mut broadcast::Receiver<Exit>,
    pid: u32,
) -> Result<Exit, broadcast::error::RecvError> {
    loop {
        let exit = rx.recv().await?;
        if exit.pid == pid {
            return Ok(exit);
        }
    }
}
