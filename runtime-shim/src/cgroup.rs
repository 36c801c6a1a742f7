//! Moving the shim into the cgroup its runtime options name
//! (`shim_cgroup`), as containerd's runc shim does at start.
//!
//! On a v1 or hybrid host the shim joins that path in every v1 hierarchy
//! where it exists (containerd loads the cgroup over all v1 subsystems and
//! skips the missing ones); on a unified host, the one v2 hierarchy. A path
//! that exists nowhere is an error, as in containerd: the cgroup was meant
//! to be prepared by whoever named it.

use std::path::{Path, PathBuf};

/// Why the shim could not join its cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The path exists in no hierarchy.
    #[error("cgroup {0}: not found in any hierarchy")]
    NotFound(String),
    /// Reading the mount table or writing `cgroup.procs` failed.
    #[error("join cgroup {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Mount points of the cgroup hierarchies: (v1 mounts, v2 mounts).
fn hierarchies(mountinfo: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut v1, mut v2) = (Vec::new(), Vec::new());
    for line in mountinfo.lines() {
        // `... mountpoint options [optional fields] - fstype source opts`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mountpoint) = left.split(' ').nth(4) else {
            continue;
        };
        match right.split(' ').next() {
            Some("cgroup") => v1.push(PathBuf::from(mountpoint)),
            Some("cgroup2") => v2.push(PathBuf::from(mountpoint)),
            _ => {}
        }
    }
    (v1, v2)
}

/// The hierarchies cgroups are driven through: the v1 ones on a v1 or
/// hybrid host (as containerd 1.6 does), else the unified one.
fn driven(mountinfo: &str) -> Vec<PathBuf> {
    let (v1, v2) = hierarchies(mountinfo);
    if v1.is_empty() {
        v2
    } else {
        v1
    }
}

/// The mount points of the hierarchies cgroups are driven through on this
/// host: the v1 ones on a v1 or hybrid host, else the unified one (none when
/// the mount table cannot be read).
pub fn roots() -> Vec<PathBuf> {
    driven(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Moves `pid` into the cgroup `path` (absolute within each hierarchy).
///
/// # Errors
/// NotFound when the path exists in no hierarchy; Io when joining fails.
pub fn join(pid: u32, path: &str) -> Result<(), CgroupError> {
    let table = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(table).map_err(|source| CgroupError::Io {
        path: table.to_owned(),
        source,
    })?;
    let roots = driven(&text);
    let rel = path.trim_start_matches('/');
    let mut joined = false;
    for root in roots {
        let dir = root.join(rel);
        if !dir.is_dir() {
            continue;
        }
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|source| CgroupError::Io {
            path: procs,
            source,
        })?;
        joined = true;
    }
    if joined {
        Ok(())
    } else {
        Err(CgroupError::NotFound(path.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_both_kinds_of_hierarchy() {
        let table = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
";
        let (v1, v2) = hierarchies(table);
        assert_eq!(
            v1,
            [
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
            ]
        );
        assert_eq!(v2, [PathBuf::from("/sys/fs/cgroup/unified")]);
    }
}
