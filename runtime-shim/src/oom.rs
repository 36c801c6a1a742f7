//! OOM notification for a container's memory cgroup (cgroup v1): an eventfd
//! registered through `cgroup.event_control` on `memory.oom_control`, read
//! by a small thread that calls back on every OOM.
//!
//! On the unified hierarchy (cgroup v2) there is no such control file and
//! nothing is watched.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::eventfd::{EfdFlags, EventFd};

/// Where the memory controller of cgroup v1 is mounted.
const MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";

/// The memory cgroup of `pid`, if it is on a v1 memory hierarchy.
fn memory_cgroup(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_owned())
    })?;
    let dir = Path::new(MEMORY_ROOT).join(rel.trim_start_matches('/'));
    dir.join("memory.oom_control").exists().then_some(dir)
}

/// Watches the memory cgroup of `pid` and calls `on_oom` each time the
/// kernel reports an OOM there, until the cgroup is removed.
///
/// # Errors
/// When the eventfd cannot be set up; `Ok(false)` when there is no v1
/// memory cgroup to watch.
pub fn watch(pid: u32, on_oom: impl Fn() + Send + 'static) -> std::io::Result<bool> {
    let Some(dir) = memory_cgroup(pid) else {
        return Ok(false);
    };
    let control = File::open(dir.join("memory.oom_control"))?;
    let efd = OwnedFd::from(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?);
    let mut reg = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.event_control"))?;
    reg.write_all(format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()).as_bytes())?;
    std::thread::Builder::new()
        .name("oom".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut efd = File::from(efd);
            let mut buf = [0u8; 8];
            loop {
                if efd.read_exact(&mut buf).is_err() {
                    return;
                }
                // The eventfd also fires when the cgroup goes away.
                if !dir.exists() {
                    return;
                }
                on_oom();
            }
        })?;
    // The registration holds `control` until the cgroup is removed.
    drop(control);
    Ok(true)
}
