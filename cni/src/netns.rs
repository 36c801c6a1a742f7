//! Network namespaces kept alive by a bind mount on a file, as
//! `ip netns add` does, so that they outlive the processes in them.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::{io_err, CniError};

/// Creates a new network namespace held at `path` (a new file).
///
/// # Errors
/// When the file, the namespace or the mount cannot be made.
pub fn create(path: &Path) -> Result<(), CniError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create", path))?;
    let target = path.to_owned();
    // A thread of its own enters the new namespace, so that no other
    // thread of this process changes network namespace.
    let made = std::thread::spawn(move || -> Result<(), std::io::Error> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")));
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(io_err("create network namespace at", path)(e));
    }
    Ok(())
}

/// Unmounts and removes the namespace file at `path`; a path that is
/// already gone is not an error.
///
/// # Errors
/// When the file cannot be removed.
pub fn remove(path: &Path) -> Result<(), CniError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(io_err("unmount", path)(e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Whether a namespace is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = path.to_string_lossy();
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(p.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_made_and_removed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ns");
        create(&p).unwrap();
        assert!(is_mounted(&p));
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        drop(f);
        assert!(create(&p).is_err(), "an existing file is not replaced");
        remove(&p).unwrap();
        assert!(!p.exists() && !is_mounted(&p));
        remove(&p).unwrap();
        assert_eq!(std::fs::read_link("/proc/self/ns/net").unwrap(), own);
    }
}
