//! Network namespaces kept alive by a bind mount on a file, as
//! `ip netns add` does, so that they outlive the processes in them.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::{io_err, CniError};

/// Creates a new network namespace held at `path` (a new file), with its
/// loopback interface up, as every container network (and Docker's
/// `none`) wants it; this spares running CNI's `loopback` plugin.
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
        loopback_up()?;
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

/// Sets `lo` of the calling thread's network namespace up.
fn loopback_up() -> Result<(), std::io::Error> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket takes no pointers; a negative result is an error.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the request reads the name and writes the flags of `req`,
    // which lives across both calls.
    let got = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; this request reads the name and the flags.
    let set = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    if set < 0 {
        return Err(std::io::Error::last_os_error());
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
        // Its loopback is up, as `ip` inside it shows.
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", p.display()))
            .args(["ip", "-o", "link", "show", "lo"])
            .output()
            .unwrap();
        let lo = String::from_utf8_lossy(&out.stdout);
        assert!(lo.contains("LOOPBACK,UP"), "{lo}");
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
