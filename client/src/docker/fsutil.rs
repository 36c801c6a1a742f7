//! Local file work the client does as root beside the daemon: mounting a
//! container's root for a moment, copying trees with owners and modes.

use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hull_proto::containerd::types::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A container root mounted on a private temporary directory; unmounted
/// and removed on drop.
#[derive(Debug)]
pub struct MountedRoot {
    dir: PathBuf,
    mounted: bool,
}

impl MountedRoot {
    /// Mounts `mounts` (as the snapshotter returned them) under `parent`.
    ///
    /// # Errors
    /// When the directory cannot be made or the mount fails.
    pub fn mount(mounts: &[Mount], parent: &Path) -> std::io::Result<MountedRoot> {
        std::fs::create_dir_all(parent)?;
        let dir = tempfile::Builder::new()
            .prefix(".rootfs-")
            .tempdir_in(parent)?
            .keep();
        let mut root = MountedRoot {
            dir,
            mounted: false,
        };
        for m in mounts {
            let (flags, data) = flags_and_data(&m.options);
            let kind = if m.r#type == "bind" {
                None
            } else {
                Some(m.r#type.as_str())
            };
            let flags = if m.r#type == "bind" {
                flags | MsFlags::MS_BIND
            } else {
                flags
            };
            mount(
                Some(m.source.as_str()),
                &root.dir,
                kind,
                flags,
                (!data.is_empty()).then_some(data.as_str()),
            )
            .map_err(std::io::Error::from)?;
            root.mounted = true;
        }
        Ok(root)
    }

    /// Where the root is.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for MountedRoot {
    fn drop(&mut self) {
        if self.mounted {
            let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Mount options split into flags and the data string.
fn flags_and_data(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "bind" => flags |= MsFlags::MS_BIND,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Resolves `path` (absolute, as the container sees it) inside `root`
/// without following symlinks out of it: each link is resolved against
/// `root`, as a chroot would.
pub fn resolve_in(root: &Path, path: &str) -> PathBuf {
    let mut out = root.to_path_buf();
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(str::to_owned)
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                if out != root {
                    out.pop();
                }
                continue;
            }
            _ => {}
        }
        let next = out.join(&part);
        match std::fs::read_link(&next) {
            Ok(target) if hops < 40 => {
                hops += 1;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    out = root.to_path_buf();
                }
                pending.extend(
                    t.split('/')
                        .filter(|p| !p.is_empty())
                        .rev()
                        .map(str::to_owned),
                );
            }
            _ => out = next,
        }
    }
    out
}

/// Copies the tree at `src` into the directory `dst` (which exists),
/// keeping owners, modes, symlinks and times' order; what `dst` already
/// has is overwritten.
///
/// # Errors
/// The first file that cannot be copied.
pub fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        copy_entry(&entry.path(), &dst.join(entry.file_name()))?;
    }
    let meta = std::fs::symlink_metadata(src)?;
    lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    Ok(())
}

/// Copies one file, link or directory (recursively) from `src` to `dst`.
///
/// # Errors
/// When it cannot be read or written.
pub fn copy_entry(src: &Path, dst: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        match std::fs::create_dir(dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dst.is_dir() => {}
            Err(e) => return Err(e),
        }
        copy_tree(src, dst)?;
        return Ok(());
    }
    if std::fs::symlink_metadata(dst).is_ok() && !dst.is_dir() {
        std::fs::remove_file(dst)?;
    }
    if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if ft.is_file() {
        std::fs::copy(src, dst)?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else {
        // Devices, FIFOs and sockets are not copied.
        return Ok(());
    }
    lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("etc/up")).unwrap();
        assert_eq!(resolve_in(root, "/link/passwd"), root.join("etc/passwd"));
        assert_eq!(resolve_in(root, "/../../x"), root.join("x"));
        assert_eq!(resolve_in(root, "/etc/up/y"), root.join("y"));
    }

    #[test]
    fn trees_copy_with_modes_and_links() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("s");
        let dst = d.path().join("d");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("l")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        copy_tree(&src, &dst).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("l")).unwrap(), "x");
        let m = std::fs::metadata(dst.join("sub/f")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
    }
}
