//! `cp`: files between the host and a container's root — the running
//! process's root (`/proc/PID/root`, volumes included), or the container's
//! snapshot mounted for the copy when it is stopped.

use std::path::{Path, PathBuf};

use hull_proto::containerd::services::snapshots::v1::MountsRequest;
use tonic::Status;

use super::fsutil::{self, MountedRoot};
use super::{invalid, local, Docker};
use crate::Error;

/// Where a copy lands: into `dest` when it is a directory, else `dest`.
fn target(dest: &Path, src: &Path) -> PathBuf {
    if dest.is_dir() {
        match src.file_name() {
            Some(n) => dest.join(n),
            None => dest.to_owned(),
        }
    } else {
        dest.to_owned()
    }
}

impl Docker {
    /// The container's root as a host path, and the mount that holds it
    /// while it is stopped.
    async fn root_of(&self, key: &str) -> Result<(PathBuf, Option<MountedRoot>, String), Error> {
        let c = self.find(key).await?;
        if let Some(pid) = self.summary_of(&c.id).await?.status.pid() {
            return Ok((PathBuf::from(format!("/proc/{pid}/root")), None, c.id));
        }
        let mounts = self
            .client
            .snapshots()
            .mounts(MountsRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            })
            .await?
            .into_inner()
            .mounts;
        let m = MountedRoot::mount(&mounts, &self.container_dir(&c.id))
            .map_err(local("mount the container's root"))?;
        Ok((m.path().to_owned(), Some(m), c.id))
    }

    /// Copies `src` (a path in container `key`) to `dest` on the host.
    ///
    /// # Errors
    /// NotFound for a missing container or file.
    pub async fn copy_from(&self, key: &str, src: &str, dest: &Path) -> Result<(), Error> {
        if !src.starts_with('/') {
            return Err(invalid(format!(
                "the path in the container must be absolute: {src}"
            )));
        }
        let (root, mounted, id) = self.root_of(key).await?;
        let from = fsutil::resolve_in(&root, src);
        if std::fs::symlink_metadata(&from).is_err() {
            return Err(Error::Status(Status::not_found(format!(
                "Could not find the file {src} in container {key}"
            ))));
        }
        let to = target(dest, Path::new(src));
        let res = tokio::task::spawn_blocking(move || fsutil::copy_entry(&from, &to))
            .await
            .map_err(|e| Error::Status(Status::internal(e.to_string())))?;
        drop(mounted);
        res.map_err(local(format!("copy {src} from {}", &id[..12])))
    }

    /// Copies `src` on the host to `dest` (a path in container `key`).
    ///
    /// # Errors
    /// NotFound for a missing container, source, or destination directory.
    pub async fn copy_to(&self, key: &str, src: &Path, dest: &str) -> Result<(), Error> {
        if !dest.starts_with('/') {
            return Err(invalid(format!(
                "the path in the container must be absolute: {dest}"
            )));
        }
        if std::fs::symlink_metadata(src).is_err() {
            return Err(Error::Status(Status::not_found(format!(
                "no such file or directory: {}",
                src.display()
            ))));
        }
        let (root, mounted, id) = self.root_of(key).await?;
        let inside = fsutil::resolve_in(&root, dest);
        let to = target(&inside, src);
        if !to.parent().is_some_and(Path::is_dir) {
            drop(mounted);
            return Err(Error::Status(Status::not_found(format!(
                "Could not find the directory of {dest} in container {key}"
            ))));
        }
        let from = src.to_owned();
        let res = tokio::task::spawn_blocking(move || fsutil::copy_entry(&from, &to))
            .await
            .map_err(|e| Error::Status(Status::internal(e.to_string())))?;
        drop(mounted);
        res.map_err(local(format!("copy into {}", &id[..12])))
    }
}
