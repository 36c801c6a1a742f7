//! The processes a shim owns: each container's init and its execs.

use std::path::PathBuf;
use std::sync::Arc;

use hull_proto::containerd::v1::types::Status;
use tokio::sync::watch;

use crate::io::{ProcessIo, StdioPaths};
use crate::reaper::Exit;
use crate::runc::Runc;

/// One process: a container's init (empty `exec_id`) or an exec.
#[derive(Debug)]
pub struct Process {
    /// Exec id; empty for init.
    pub exec_id: String,
    /// Pid once started (init: once created); 0 before.
    pub pid: u32,
    /// Lifecycle state.
    pub status: Status,
    /// The stdio the client asked for.
    pub stdio: StdioPaths,
    /// Copy threads and terminal.
    pub io: Option<Arc<ProcessIo>>,
    /// The exit, once reaped; Wait subscribes here.
    pub exited: watch::Sender<Option<Exit>>,
    /// Exec only: the JSON process spec.
    pub spec: Vec<u8>,
}

impl Process {
    /// A process not yet started.
    pub fn new(exec_id: String, stdio: StdioPaths, spec: Vec<u8>) -> Process {
        Process {
            exec_id,
            pid: 0,
            status: Status::Created,
            stdio,
            io: None,
            exited: watch::channel(None).0,
            spec,
        }
    }

    /// The exit, if reaped.
    pub fn exit(&self) -> Option<Exit> {
        *self.exited.borrow()
    }

    /// Records the exit and wakes every waiter.
    pub fn set_exited(&mut self, exit: Exit) {
        self.status = Status::Stopped;
        self.exited.send_replace(Some(exit));
    }
}

/// One container in this shim.
#[derive(Debug)]
pub struct Container {
    /// Container id.
    pub id: String,
    /// The OCI bundle.
    pub bundle: PathBuf,
    /// Whether the shim mounted `bundle/rootfs` and must unmount it.
    pub mounted: bool,
    /// Whether the container has no PID namespace of its own, so that its
    /// remaining processes are killed when init exits.
    pub kill_all_on_exit: bool,
    /// The runtime driving it.
    pub runc: Runc,
    /// Its init when the shim started it itself (the built-in pause): the
    /// task operations go there rather than to the runtime.
    pub native: Option<std::sync::Arc<crate::native::Pause>>,
    /// Its init process.
    pub init: Process,
    /// Its execs by id.
    pub execs: std::collections::BTreeMap<String, Process>,
    /// Created and started by one runtime call (the caller asked for it):
    /// the Start that follows only reports the pid.
    pub started_by_create: bool,
    /// Its start may skip the runtime process (see [`Runc::start`]).
    pub direct_start: bool,
    /// A delete is under way: a second one (two clients racing) finds
    /// nothing to delete instead of undoing the first one's work twice.
    pub deleting: bool,
}

impl Container {
    /// The process `exec_id` names (empty: init).
    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    /// Mutable form of [`Container::process`].
    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// The rootfs directory in the bundle.
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }
}
