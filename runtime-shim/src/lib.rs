//! hull-shim: one process per container that serves containerd's shim v2
//! task API (`containerd.task.v2.Task`) over ttrpc and runs the OCI runtime.
//!
//! This crate depends only on `hull-proto`. The shim start protocol lives in
//! [`start`].

#![warn(missing_docs)]

pub mod start;
