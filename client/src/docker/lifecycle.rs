//! start, stop, kill, restart, wait, rm and rename.

use std::time::{Duration, SystemTime};

use hull_proto::containerd::services::containers::v1::{
    Container, DeleteContainerRequest, UpdateContainerRequest,
};
use hull_proto::containerd::services::snapshots::v1::{MountsRequest, RemoveSnapshotRequest};
use hull_proto::containerd::services::tasks::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetRequest, KillRequest, StartRequest, WaitRequest,
};
use hull_proto::containerd::v1::types::Status as TaskStatus;
use hull_proto::errdefs::Kind;
use tonic::Status;

use super::spec::MountType;
use super::volumes::mounts_of;
use super::{invalid, labels, local, names, Docker};
use crate::{from_status, Error};

/// Docker's default `stop` timeout.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A signal by name (`TERM`, `SIGKILL`) or number.
///
/// # Errors
/// InvalidArgument for an unknown one.
pub fn parse_signal(text: &str) -> Result<u32, Error> {
    if let Ok(n) = text.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as u32)
        .map_err(|_| invalid(format!("invalid signal: {text}")))
}

impl Docker {
    /// Sets (Some) or removes (None) labels of container `id`.
    pub(crate) async fn set_labels(
        &self,
        id: &str,
        changes: &[(&str, Option<String>)],
    ) -> Result<Container, Error> {
        let mut c = Container {
            id: id.to_owned(),
            ..Default::default()
        };
        let mut paths = Vec::new();
        for (k, v) in changes {
            if let Some(v) = v {
                c.labels.insert((*k).to_owned(), v.clone());
            }
            paths.push(format!("labels.{k}"));
        }
        Ok(self
            .client
            .containers()
            .update(UpdateContainerRequest {
                container: Some(c),
                update_mask: Some(prost_types::FieldMask { paths }),
            })
            .await?
            .into_inner()
            .container
            .unwrap_or_default())
    }

    /// The task's status, pid and exit, or None without a task.
    pub(crate) async fn task_of(
        &self,
        id: &str,
    ) -> Result<Option<hull_proto::containerd::v1::types::Process>, Error> {
        match self
            .client
            .tasks()
            .get(GetRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            })
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if from_status(&s) == Kind::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// Deletes container `id`'s task if it has one that is not running,
    /// keeping its exit code and time in the container's labels.
    pub(crate) async fn reap(&self, id: &str) -> Result<(), Error> {
        let Some(p) = self.task_of(id).await? else {
            return Ok(());
        };
        if p.status == TaskStatus::Running as i32 || p.status == TaskStatus::Paused as i32 {
            return Ok(());
        }
        let deleted = match self
            .client
            .tasks()
            .delete(DeleteTaskRequest {
                container_id: id.to_owned(),
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if from_status(&s) == Kind::NotFound => return Ok(()),
            Err(s) => return Err(s.into()),
        };
        if p.status == TaskStatus::Stopped as i32 {
            let at = deleted
                .exited_at
                .and_then(|t| SystemTime::try_from(t).ok())
                .unwrap_or_else(SystemTime::now);
            self.set_labels(
                id,
                &[
                    (labels::EXIT_CODE, Some(deleted.exit_status.to_string())),
                    (
                        labels::FINISHED_AT,
                        Some(humantime::format_rfc3339_nanos(at).to_string()),
                    ),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Starts container `key` (a no-op when it runs).
    ///
    /// # Errors
    /// NotFound; the runtime's error when the process cannot start.
    pub async fn start(&self, key: &str) -> Result<(), Error> {
        let c = self.find(key).await?;
        if let Some(p) = self.task_of(&c.id).await? {
            if p.status == TaskStatus::Running as i32 {
                return Ok(());
            }
        }
        self.reap(&c.id).await?;
        self.create_task(&c).await?;
        self.client
            .tasks()
            .start(StartRequest {
                container_id: c.id.clone(),
                exec_id: String::new(),
            })
            .await?;
        if c.labels.contains_key(labels::RESTART_POLICY) {
            self.set_labels(
                &c.id,
                &[
                    (labels::RESTART_STATUS, Some("running".into())),
                    (labels::RESTART_EXPLICITLY_STOPPED, None),
                    // A person's start begins the count again, as in Docker.
                    (labels::RESTART_COUNT, None),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Creates (not starts) the task of container `c`.
    pub(crate) async fn create_task(&self, c: &Container) -> Result<(), Error> {
        let rootfs = self
            .client
            .snapshots()
            .mounts(MountsRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            })
            .await?
            .into_inner()
            .mounts;
        let log = c.labels.get(labels::LOG_URI).cloned().unwrap_or_default();
        let stdin = if c.labels.get(labels::STDIN).is_some_and(|v| v == "true") {
            let p = self.container_dir(&c.id).join("stdin");
            if !p.exists() {
                nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| local("create the stdin FIFO")(e.into()))?;
            }
            p.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        self.client
            .tasks()
            .create(CreateTaskRequest {
                container_id: c.id.clone(),
                rootfs,
                stdin,
                stdout: log.clone(),
                stderr: if c.labels.get(labels::TTY).is_some_and(|v| v == "true") {
                    String::new()
                } else {
                    log
                },
                terminal: c.labels.get(labels::TTY).is_some_and(|v| v == "true"),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Marks the container as stopped by a person, so that no restart
    /// policy undoes it.
    async fn mark_stopped(&self, c: &Container) -> Result<(), Error> {
        if c.labels.contains_key(labels::RESTART_POLICY) {
            self.set_labels(
                &c.id,
                &[
                    (labels::RESTART_STATUS, Some("stopped".into())),
                    (labels::RESTART_EXPLICITLY_STOPPED, Some("true".into())),
                ],
            )
            .await?;
        }
        Ok(())
    }

    async fn signal(&self, id: &str, signal: u32) -> Result<(), Error> {
        match self
            .client
            .tasks()
            .kill(KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal,
                all: false,
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if matches!(from_status(&s), Kind::NotFound | Kind::FailedPrecondition) => {
                Ok(())
            }
            Err(s) => Err(s.into()),
        }
    }

    async fn wait_task(&self, id: &str) -> Result<u32, Error> {
        Ok(self
            .client
            .tasks()
            .wait(WaitRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            })
            .await?
            .into_inner()
            .exit_status)
    }

    /// Stops container `key` as `docker stop` does: its stop signal
    /// (the image's StopSignal, else SIGTERM), then SIGKILL after
    /// `timeout`; a container that is not running is left as it is.
    ///
    /// # Errors
    /// NotFound.
    pub async fn stop(&self, key: &str, timeout: Option<Duration>) -> Result<(), Error> {
        let c = self.find(key).await?;
        self.stop_container(&c, timeout).await?;
        self.remove_if_auto(&c).await
    }

    async fn stop_container(&self, c: &Container, timeout: Option<Duration>) -> Result<(), Error> {
        self.mark_stopped(c).await?;
        if let Some(p) = self.task_of(&c.id).await? {
            if p.status == TaskStatus::Running as i32 || p.status == TaskStatus::Paused as i32 {
                let sig = match c.labels.get(labels::STOP_SIGNAL) {
                    Some(s) => parse_signal(s).unwrap_or(15),
                    None => 15,
                };
                self.signal(&c.id, sig).await?;
                let timeout = timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
                if tokio::time::timeout(timeout, self.wait_task(&c.id))
                    .await
                    .is_err()
                {
                    self.signal(&c.id, 9).await?;
                    self.wait_task(&c.id).await?;
                }
            }
        }
        self.reap(&c.id).await
    }

    /// Sends `signal` to container `key`'s process.
    ///
    /// # Errors
    /// NotFound; FailedPrecondition when it is not running.
    pub async fn kill(&self, key: &str, signal: u32) -> Result<(), Error> {
        let c = self.find(key).await?;
        let running = self.task_of(&c.id).await?.is_some_and(|p| {
            p.status == TaskStatus::Running as i32 || p.status == TaskStatus::Paused as i32
        });
        if !running {
            return Err(Error::Status(Status::failed_precondition(format!(
                "Cannot kill container: {key}: Container {} is not running",
                c.id
            ))));
        }
        self.mark_stopped(&c).await?;
        self.client
            .tasks()
            .kill(KillRequest {
                container_id: c.id.clone(),
                exec_id: String::new(),
                signal,
                all: false,
            })
            .await?;
        Ok(())
    }

    /// Stops then starts container `key`.
    ///
    /// # Errors
    /// As stop and start.
    pub async fn restart(&self, key: &str, timeout: Option<Duration>) -> Result<(), Error> {
        let c = self.find(key).await?;
        // Not removed on the way, even with --rm.
        self.stop_container(&c, timeout).await?;
        self.start(&c.id).await
    }

    /// Waits for container `key` to exit; returns its exit code.
    ///
    /// # Errors
    /// NotFound.
    pub async fn wait(&self, key: &str) -> Result<u32, Error> {
        let c = self.find(key).await?;
        match self.task_of(&c.id).await? {
            Some(_) => self.wait_task(&c.id).await,
            None => Ok(c
                .labels
                .get(labels::EXIT_CODE)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)),
        }
    }

    async fn remove_if_auto(&self, c: &Container) -> Result<(), Error> {
        if c.labels
            .get(labels::AUTO_REMOVE)
            .is_some_and(|v| v == "true")
        {
            self.remove(&c.id, true, true).await?;
        }
        Ok(())
    }

    /// Removes container `key`: its task (killed first with `force`),
    /// record, snapshot, network, log and files; with `volumes`, its
    /// anonymous volumes too.
    ///
    /// # Errors
    /// NotFound; FailedPrecondition for a running container without
    /// `force`.
    pub async fn remove(&self, key: &str, force: bool, volumes: bool) -> Result<(), Error> {
        let c = self.find(key).await?;
        if let Some(p) = self.task_of(&c.id).await? {
            let live =
                p.status == TaskStatus::Running as i32 || p.status == TaskStatus::Paused as i32;
            if live && !force {
                return Err(Error::Status(Status::failed_precondition(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    c.id
                ))));
            }
            if live {
                self.mark_stopped(&c).await?;
                self.signal(&c.id, 9).await?;
                self.wait_task(&c.id).await?;
            }
            match self
                .client
                .tasks()
                .delete(DeleteTaskRequest {
                    container_id: c.id.clone(),
                })
                .await
            {
                Ok(_) => {}
                Err(s) if from_status(&s) == Kind::NotFound => {}
                Err(s) => return Err(s.into()),
            }
        }
        match self
            .client
            .snapshots()
            .remove(RemoveSnapshotRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            })
            .await
        {
            Ok(_) => {}
            Err(s) if from_status(&s) == Kind::NotFound => {}
            Err(s) => return Err(s.into()),
        }
        self.teardown_network(&c.id).await?;
        let dir = self.container_dir(&c.id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(local(format!("remove {}", dir.display()))(e)),
        }
        // The record goes last: until everything else is gone the
        // container is still listed, and a removal cut short can be run
        // again from what the record holds.
        match self
            .client
            .containers()
            .delete(DeleteContainerRequest { id: c.id.clone() })
            .await
        {
            Ok(_) => {}
            Err(s) if from_status(&s) == Kind::NotFound => {}
            Err(s) => return Err(s.into()),
        }
        if let Some(name) = c.labels.get(labels::NAME) {
            self.release_name(name);
        }
        if volumes {
            // Anonymous volumes are named by a 64-hex id.
            for m in mounts_of(&c.labels) {
                if m.kind == MountType::Volume && m.name.len() == 64 {
                    let _ = self.volume_remove(&m.name).await;
                }
            }
        }
        Ok(())
    }

    /// Renames container `key` to `new`.
    ///
    /// # Errors
    /// NotFound; InvalidArgument for a bad name; AlreadyExists when taken.
    pub async fn rename(&self, key: &str, new: &str) -> Result<(), Error> {
        let new = new.strip_prefix('/').unwrap_or(new);
        if !names::valid_name(new) {
            return Err(invalid(format!(
                "Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        let c = self.find(key).await?;
        let old = c.labels.get(labels::NAME).cloned().unwrap_or_default();
        if old == new {
            return Err(invalid(
                "Renaming a container with the same name as its current name",
            ));
        }
        if let Ok(other) = self.find(new).await {
            if other.labels.get(labels::NAME).map(String::as_str) == Some(new) {
                return Err(super::run::name_in_use(new, &other.id));
            }
        }
        let guard = self.reserve_name(new, &c.id)?;
        self.set_labels(&c.id, &[(labels::NAME, Some(new.to_owned()))])
            .await?;
        guard.keep();
        if !old.is_empty() {
            self.release_name(&old);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("hup").unwrap(), 1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }
}
