//! [`Mount`]: a mount(2) call described as data, and the helpers that
//! perform it.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use hull_proto::containerd::types::Mount as ProtoMount;

use crate::{Result, SnapshotError};

/// One mount, as snapshotters return them and clients perform them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Filesystem type: `bind`, `overlay`, ...
    pub kind: String,
    /// Source device or directory.
    pub source: String,
    /// Mount options, mount(8) style.
    pub options: Vec<String>,
}

impl From<Mount> for ProtoMount {
    fn from(m: Mount) -> ProtoMount {
        ProtoMount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        }
    }
}

impl From<ProtoMount> for Mount {
    fn from(m: ProtoMount) -> Mount {
        Mount {
            kind: m.r#type,
            source: m.source,
            options: m.options,
        }
    }
}

/// Longest option string mount(2) takes: one page.
const PAGE: usize = 4096;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io { op, path, source }
}

/// The OS error of a failed call, kept whole as the error's source.
fn os(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> SnapshotError {
    let f = io(op, path);
    move |e| f(std::io::Error::from(e))
}

impl Mount {
    /// Mounts this onto `target`.
    ///
    /// # Errors
    /// Unknown with the OS error when mount(2) fails.
    pub fn mount(&self, target: &Path) -> Result<()> {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        let mut bind = self.kind == "bind";
        for o in &self.options {
            match o.as_str() {
                "ro" => flags |= MsFlags::MS_RDONLY,
                "rw" => {}
                "bind" => bind = true,
                "rbind" => {
                    bind = true;
                    flags |= MsFlags::MS_REC;
                }
                "nosuid" => flags |= MsFlags::MS_NOSUID,
                "nodev" => flags |= MsFlags::MS_NODEV,
                "noexec" => flags |= MsFlags::MS_NOEXEC,
                other => data.push(other.to_owned()),
            }
        }
        if bind {
            flags |= MsFlags::MS_BIND;
        }
        let data = data.join(",");
        if data.len() >= PAGE && self.kind == "overlay" {
            return self.mount_compact(target, flags, &data);
        }
        // A bind mount is made writable first and remounted below.
        let first = if bind {
            flags & !MsFlags::MS_RDONLY
        } else {
            flags
        };
        nix::mount::mount(
            Some(self.source.as_str()),
            target,
            Some(self.kind.as_str()),
            first,
            Some(data.as_str()),
        )
        .map_err(os("mount", target))?;
        // A bind mount ignores MS_RDONLY until remounted.
        if bind && flags.contains(MsFlags::MS_RDONLY) {
            let remount = MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | (flags & MsFlags::MS_REC);
            if let Err(e) =
                nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>)
            {
                let _ = unmount(target);
                return Err(os("remount read-only", target)(e));
            }
        }
        Ok(())
    }

    /// Overlay options longer than a page: rewrite lowerdir entries relative
    /// to their common parent and mount from there, in a child process so
    /// that this process's working directory never changes (containerd does
    /// the same).
    fn mount_compact(&self, target: &Path, flags: MsFlags, data: &str) -> Result<()> {
        let lower: Vec<&str> = data
            .split(',')
            .find_map(|o| o.strip_prefix("lowerdir="))
            .map(|l| l.split(':').collect())
            .unwrap_or_default();
        let common = common_dir(&lower);
        let rel = |p: &str| -> String {
            Path::new(p)
                .strip_prefix(&common)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_else(|_| p.to_owned())
        };
        let options: Vec<String> = data
            .split(',')
            .map(|o| match o.strip_prefix("lowerdir=") {
                Some(l) => format!(
                    "lowerdir={}",
                    l.split(':').map(rel).collect::<Vec<_>>().join(":")
                ),
                None => o.to_owned(),
            })
            .collect();
        let mut opts = options.join(",");
        if flags.contains(MsFlags::MS_RDONLY) {
            opts.push_str(",ro");
        }
        let out = std::process::Command::new("mount")
            .current_dir(&common)
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(target)
            .output()
            .map_err(io("run mount", target))?;
        if !out.status.success() {
            return Err(SnapshotError::Command {
                command: format!("mount -t overlay ... {}", target.display()),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }
}

fn common_dir(paths: &[&str]) -> PathBuf {
    let mut common: Option<PathBuf> = None;
    for p in paths {
        let parent = Path::new(p)
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        common = Some(match common {
            None => parent,
            Some(c) => {
                let mut out = PathBuf::new();
                for (a, b) in c.components().zip(parent.components()) {
                    if a != b {
                        break;
                    }
                    out.push(a);
                }
                out
            }
        });
    }
    common.unwrap_or_else(|| PathBuf::from("/"))
}

/// Mounts every mount onto `target`, in order.
///
/// # Errors
/// The first failure; mounts made before it are undone.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = m.mount(target) {
            for _ in 0..i {
                let _ = unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts `target`.
///
/// # Errors
/// Unknown with the OS error.
pub fn unmount(target: &Path) -> Result<()> {
    nix::mount::umount2(target, MntFlags::empty()).map_err(os("unmount", target))
}

/// Detaches `target` now and unmounts it once it is no longer busy.
///
/// # Errors
/// Unknown with the OS error.
pub fn unmount_lazy(target: &Path) -> Result<()> {
    nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(os("unmount", target))
}

/// A temporary mount that is unmounted (lazily, if busy) on drop.
#[derive(Debug)]
pub struct TempMount {
    target: PathBuf,
}

impl TempMount {
    /// Mounts `mounts` on `target`.
    ///
    /// # Errors
    /// As [`mount_all`].
    pub fn new(mounts: &[Mount], target: &Path) -> Result<TempMount> {
        mount_all(mounts, target)?;
        Ok(TempMount {
            target: target.to_owned(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if unmount(&self.target).is_err() {
            // Busy: detach it, to be unmounted when it no longer is.
            let _ = unmount_lazy(&self.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_parent_of_layer_dirs() {
        let c = common_dir(&["/a/snapshots/1/fs", "/a/snapshots/22/fs"]);
        assert_eq!(c, PathBuf::from("/a/snapshots"));
    }
}
