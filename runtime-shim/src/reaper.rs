//! The reaper: the only caller of `waitpid` in the shim.
//!
//! The shim is a child subreaper, so container processes and everything
//! they leave behind are reparented to it. On every SIGCHLD the reaper
//! collects all exited children and broadcasts each [`Exit`]. Code that
//! starts a process subscribes before spawning it, then waits for its pid on
//! the subscription; nothing else waits on children.

use std::time::SystemTime;

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
        let monitor = Monitor { tx };
        let reaper = monitor.clone();
        tokio::spawn(async move {
            loop {
                reaper.reap();
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

    /// Collects every child that has exited.
    fn reap(&self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG only writes the status integer we
            // pass it.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
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
