//! hull-shim: one process per container that serves containerd's shim v2
//! task API (`containerd.task.v2.Task`) over ttrpc and runs the OCI runtime.
//!
//! - [`start`]: command line, `start` (daemonise) and `delete` (clean up).
//! - [`cgroup`]: joining the cgroup the runtime options name.
//! - [`service`]: the task service, one [`service::TaskService`] per shim.
//! - [`runc`]: the OCI runtime's command lines.
//! - [`reaper`]: the only `waitpid` caller; broadcasts exits.
//! - [`process`]: init and exec processes and their states.
//! - [`io`]: FIFOs, `file://`, `binary://`, container logs and terminals.
//! - [`pause`]: the built-in pause process of a pod sandbox.
//! - [`native`]: the built-in pause started by the shim itself, without
//!   the OCI runtime.
//! - [`events`]: task events forwarded to the daemon.
//! - [`stats`]: cgroup statistics in containerd's metrics message.
//!
//! Depends on `hull-proto`, `hull-ttrpc` and, for mounting the rootfs,
//! `hull-snapshots`' mount helpers. Nothing depends on this crate.

#![warn(missing_docs)]

pub mod cgroup;
pub mod events;
pub mod io;
pub mod native;
pub mod oom;
pub mod pause;
pub mod process;
pub mod reaper;
pub mod runc;
pub mod service;
pub mod start;
pub mod stats;
