//! The calls CRI makes to hulld's own services: container records,
//! snapshots and tasks, each in the `k8s.io` namespace.

use std::collections::BTreeMap;
use std::time::Duration;

use hull_proto::containerd::services::containers::v1::containers_server::Containers;
use hull_proto::containerd::services::containers::v1::{
    container::Runtime, Container as Record, CreateContainerRequest, DeleteContainerRequest,
    UpdateContainerRequest,
};
use hull_proto::containerd::services::snapshots::v1::snapshots_server::Snapshots;
use hull_proto::containerd::services::snapshots::v1::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, UsageRequest,
};
use hull_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use hull_proto::containerd::services::tasks::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetRequest, KillRequest, ListTasksRequest, StartRequest,
    WaitRequest,
};
use hull_proto::containerd::types::Mount;
use hull_proto::containerd::v1::types::{Process, Status as TaskStatus};
use hull_proto::errdefs::Kind;
use tonic::Status;

use super::{blocking, kind_of, request, status_of, Cri, RUNTIME, SNAPSHOTTER};

/// A task's process as the tasks service reports it.
pub type TaskProcess = Process;

/// Whether a process runs (or is paused: still alive).
pub fn is_running(p: &Process) -> bool {
    p.status == TaskStatus::Running as i32 || p.status == TaskStatus::Paused as i32
}

/// Whether a process has exited.
pub fn is_stopped(p: &Process) -> bool {
    p.status == TaskStatus::Stopped as i32
}

fn ok_if_missing(r: Result<(), Status>) -> Result<(), Status> {
    match r {
        Err(s) if kind_of(&s) == Kind::NotFound => Ok(()),
        other => other,
    }
}

impl Cri {
    /// Creates the container record `id`.
    pub(super) async fn create_record(
        &self,
        id: &str,
        labels: BTreeMap<String, String>,
        image: &str,
        spec: Vec<u8>,
        snapshot: bool,
        extensions: BTreeMap<String, prost_types::Any>,
    ) -> Result<(), Status> {
        let record = Record {
            id: id.to_owned(),
            labels,
            image: image.to_owned(),
            runtime: Some(Runtime {
                name: RUNTIME.to_owned(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: hull_proto::typeurl::RUNTIME_SPEC.to_owned(),
                value: spec,
            }),
            snapshotter: if snapshot {
                SNAPSHOTTER.to_owned()
            } else {
                String::new()
            },
            snapshot_key: if snapshot {
                id.to_owned()
            } else {
                String::new()
            },
            created_at: None,
            updated_at: None,
            extensions,
        };
        self.containers
            .create(request(CreateContainerRequest {
                container: Some(record),
            }))
            .await?;
        Ok(())
    }

    /// Rewrites one extension of record `id`.
    pub(super) async fn update_extension(
        &self,
        id: &str,
        key: &str,
        value: prost_types::Any,
    ) -> Result<(), Status> {
        let mut extensions = BTreeMap::new();
        extensions.insert(key.to_owned(), value);
        self.containers
            .update(request(UpdateContainerRequest {
                container: Some(Record {
                    id: id.to_owned(),
                    extensions,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("extensions.{key}")],
                }),
            }))
            .await?;
        Ok(())
    }

    /// Deletes record `id`; gone already is fine.
    pub(super) async fn delete_record(&self, id: &str) -> Result<(), Status> {
        ok_if_missing(
            self.containers
                .delete(request(DeleteContainerRequest { id: id.to_owned() }))
                .await
                .map(|_| ()),
        )
    }

    /// Every record in CRI's namespace.
    pub(super) async fn records(&self) -> Result<Vec<Record>, Status> {
        use hull_proto::containerd::services::containers::v1::ListContainersRequest;
        Ok(self
            .containers
            .list(request(ListContainersRequest::default()))
            .await?
            .into_inner()
            .containers)
    }

    /// Prepares snapshot `key` over `parent` under lease `lease` (from
    /// [`Cri::creation_lease`]), so that no collection takes it before the
    /// record that references it exists.
    pub(super) async fn prepare_snapshot(
        &self,
        key: &str,
        parent: &str,
        lease: &str,
    ) -> Result<Vec<Mount>, Status> {
        let mut req = request(PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_owned(),
            key: key.to_owned(),
            parent: parent.to_owned(),
            labels: Default::default(),
        });
        let value = lease
            .parse()
            .map_err(|_| status_of(Kind::Unknown, format!("lease id {lease:?}")))?;
        req.metadata_mut().insert(hull_proto::headers::LEASE, value);
        Ok(self.snapshots.prepare(req).await?.into_inner().mounts)
    }

    /// A lease that holds what a create makes (the container's root) from
    /// its prepare until its record references it, as containerd's clients
    /// create under a lease. Not flushed: after a crash the record does not
    /// exist either, and what the lease held is garbage. It expires by
    /// itself a day later should it outlive its create.
    pub(super) async fn creation_lease(&self) -> Result<String, Status> {
        let expire = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + Duration::from_secs(24 * 3600),
        )
        .to_string();
        let labels = BTreeMap::from([(hull_proto::labels::GC_EXPIRE.to_owned(), expire)]);
        let (db, ns) = (self.db.clone(), self.ns.clone());
        blocking(move || {
            db.create_lease(&ns, "", labels)
                .map(|l| l.id)
                .map_err(|e| hull_proto::errdefs::to_status(&e))
        })
        .await
    }

    /// Ends a lease from [`Cri::creation_lease`].
    pub(super) async fn end_lease(&self, id: String) {
        let (db, ns) = (self.db.clone(), self.ns.clone());
        let ended = blocking(move || {
            db.delete_lease(&ns, &id)
                .map_err(|e| hull_proto::errdefs::to_status(&e))
        })
        .await;
        if let Err(e) = ended {
            tracing::warn!(error = %e.message(), "end a create's lease");
        }
    }

    /// Removes snapshot `key`; gone already is fine.
    pub(super) async fn remove_snapshot(&self, key: &str) -> Result<(), Status> {
        ok_if_missing(
            self.snapshots
                .remove(request(RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_owned(),
                    key: key.to_owned(),
                }))
                .await
                .map(|_| ()),
        )
    }

    /// Bytes and inodes snapshot `key` uses.
    pub(super) async fn snapshot_usage(&self, key: &str) -> Option<(u64, u64)> {
        let u = self
            .snapshots
            .usage(request(UsageRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                key: key.to_owned(),
            }))
            .await
            .ok()?
            .into_inner();
        Some((u.size.max(0) as u64, u.inodes.max(0) as u64))
    }

    /// Creates and starts the task of `id`; returns its pid.
    pub(super) async fn run_task(
        &self,
        id: &str,
        io: (&str, &str, &str, bool),
        runtime_binary: &str,
    ) -> Result<u32, Status> {
        let (stdin, stdout, stderr, terminal) = io;
        let options = (runtime_binary != "runc").then(|| {
            hull_proto::typeurl::pack(&hull_proto::containerd::runc::v1::Options {
                binary_name: runtime_binary.to_owned(),
                ..Default::default()
            })
        });
        // Started by the create's own runtime call (one runc process, not
        // two); the Start below then reports the pid and, should the shim
        // not know the hint, starts it.
        self.tasks
            .create_task(
                self.ns.clone(),
                CreateTaskRequest {
                    container_id: id.to_owned(),
                    stdin: stdin.to_owned(),
                    stdout: stdout.to_owned(),
                    stderr: stderr.to_owned(),
                    terminal,
                    options,
                    ..Default::default()
                },
                true,
            )
            .await?;
        match self
            .tasks
            .start(request(StartRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().pid),
            Err(e) => {
                let _ = self.delete_task(id).await;
                Err(e)
            }
        }
    }

    /// The task of `id`, if it has one.
    pub(super) async fn task(&self, id: &str) -> Result<Option<Process>, Status> {
        match self
            .tasks
            .get(request(GetRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if kind_of(&s) == Kind::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }

    /// Every task in CRI's namespace, by container id.
    pub(super) async fn all_tasks(&self) -> Result<BTreeMap<String, Process>, Status> {
        Ok(self
            .tasks
            .list(request(ListTasksRequest::default()))
            .await?
            .into_inner()
            .tasks
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect())
    }

    /// Signals the task of `id` (or one of its execs); no task is fine.
    pub(super) async fn kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<(), Status> {
        ok_if_missing(
            self.tasks
                .kill(request(KillRequest {
                    container_id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                    signal,
                    all: false,
                }))
                .await
                .map(|_| ()),
        )
    }

    /// Waits up to `limit` for the task of `id` (or exec) to exit; returns
    /// its exit status, None when it did not exit in time.
    pub(super) async fn wait(
        &self,
        id: &str,
        exec_id: &str,
        limit: Duration,
    ) -> Result<Option<(u32, i64)>, Status> {
        let call = self.tasks.wait(request(WaitRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        }));
        match tokio::time::timeout(limit, call).await {
            Err(_) => Ok(None),
            Ok(Ok(r)) => {
                let r = r.into_inner();
                let at = r
                    .exited_at
                    .map(|t| super::nanos(&t))
                    .unwrap_or_else(crate::now_nanos);
                Ok(Some((r.exit_status, at)))
            }
            Ok(Err(s)) if kind_of(&s) == Kind::NotFound => Ok(Some((255, crate::now_nanos()))),
            Ok(Err(s)) => Err(s),
        }
    }

    /// Kills the task of `id` with SIGKILL if it runs, waits for it, and
    /// deletes it; returns its exit (None when it had no task).
    pub(super) async fn kill_and_delete(&self, id: &str) -> Result<Option<(u32, i64)>, Status> {
        let Some(p) = self.task(id).await? else {
            return Ok(None);
        };
        let mut exit = None;
        if !is_stopped(&p) {
            self.kill(id, "", libc::SIGKILL as u32).await?;
            exit = self.wait(id, "", Duration::from_secs(10)).await?;
        } else {
            let at = p
                .exited_at
                .map(|t| super::nanos(&t))
                .unwrap_or_else(crate::now_nanos);
            exit = exit.or(Some((p.exit_status, at)));
        }
        self.delete_task(id).await?;
        Ok(exit)
    }

    /// Deletes the task of `id`; none is fine.
    pub(super) async fn delete_task(&self, id: &str) -> Result<(), Status> {
        ok_if_missing(
            self.tasks
                .delete(request(DeleteTaskRequest {
                    container_id: id.to_owned(),
                }))
                .await
                .map(|_| ()),
        )
    }
}
