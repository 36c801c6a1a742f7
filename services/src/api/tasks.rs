//! `containerd.services.tasks.v1.Tasks`: forwards each call to the task's
//! shim.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use hull_proto::containerd::services::tasks::v1::{
    tasks_server::Tasks, CheckpointTaskRequest, CheckpointTaskResponse, CloseIoRequest,
    CreateTaskRequest, CreateTaskResponse, DeleteProcessRequest, DeleteResponse, DeleteTaskRequest,
    ExecProcessRequest, GetRequest, GetResponse, KillRequest, ListPidsRequest, ListPidsResponse,
    ListTasksRequest, ListTasksResponse, MetricsRequest, MetricsResponse, PauseTaskRequest,
    ResizePtyRequest, ResumeTaskRequest, StartRequest, StartResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use hull_proto::containerd::task::v2 as shim;
use hull_proto::containerd::types::Metric;
use hull_proto::containerd::v1::types::Process;
use hull_proto::errdefs::{self, Kind};
use hull_proto::identifiers::Namespace;

use super::{namespace, run, status};
use crate::filters::{Adaptor, Filter};
use crate::metadata::MetaDb;
use crate::snapshots::Snapshotters;
use crate::tasks::shim::Shim;
use crate::tasks::{ContainerSpec, NewTask, TaskError, TaskManager};

/// Tasks over the shim manager.
#[derive(Debug)]
pub struct TasksService {
    db: Arc<MetaDb>,
    snapshotters: Arc<Snapshotters>,
    manager: Arc<TaskManager>,
}

impl TasksService {
    /// Serves tasks of `db`'s containers through `manager`.
    pub fn new(
        db: Arc<MetaDb>,
        snapshotters: Arc<Snapshotters>,
        manager: Arc<TaskManager>,
    ) -> Self {
        TasksService {
            db,
            snapshotters,
            manager,
        }
    }

    fn shim(&self, ns: &Namespace, id: &str) -> Result<Arc<Shim>, Status> {
        self.manager.get(ns, id).map_err(status)
    }
}

struct TaskView<'a>(&'a str);

impl Adaptor for TaskView<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "id" | "container_id" => Some(self.0.to_owned()),
            _ => None,
        }
    }
}

fn process_from_state(container_id: &str, s: shim::StateResponse) -> Process {
    Process {
        container_id: container_id.to_owned(),
        id: s.id,
        pid: s.pid,
        status: s.status,
        stdin: s.stdin,
        stdout: s.stdout,
        stderr: s.stderr,
        terminal: s.terminal,
        exit_status: s.exit_status,
        exited_at: s.exited_at,
    }
}

impl TasksService {
    /// Tasks/Create; with `start_at_create` (for a caller that starts the
    /// task right after) the shim starts it in the same runtime call, and
    /// the Start that follows only reports its pid.
    ///
    /// # Errors
    /// The codes of Tasks/Create.
    pub async fn create_task(
        &self,
        ns: Namespace,
        req: CreateTaskRequest,
        start_at_create: bool,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        if req.checkpoint.is_some() {
            return Err(errdefs::status(
                Kind::NotImplemented,
                "restoring from a checkpoint is not supported",
            ));
        }
        let db = self.db.clone();
        let (n, id) = (ns.clone(), req.container_id.clone());
        let container = run(move || db.get_container(&n, &id)).await?;
        let mut rootfs = req.rootfs;
        if rootfs.is_empty() && !container.snapshot_key.is_empty() {
            // A client that sent no mounts gets the container's snapshot.
            let (_, sn) = self.snapshotters.get(&container.snapshotter)?;
            let key = format!("{}/{}", ns.as_str(), container.snapshot_key);
            let mounts = sn.mounts(&key).await.map_err(|e| {
                status(TaskError::Rootfs {
                    id: container.id.clone(),
                    message: errdefs::message(&e),
                })
            })?;
            rootfs = mounts.into_iter().map(Into::into).collect();
        }
        let spec = ContainerSpec {
            runtime_name: container.runtime_name.clone(),
            runtime_options: container.runtime_options.clone(),
            spec: container
                .spec
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default(),
            has_snapshot: !container.snapshot_key.is_empty(),
        };
        let new = NewTask {
            id: req.container_id.clone(),
            rootfs,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
            options: req.options,
            runtime_path: req.runtime_path,
            start_at_create,
        };
        let pid = self.manager.create(&ns, spec, new).await.map_err(status)?;
        Ok(Response::new(CreateTaskResponse {
            container_id: req.container_id,
            pid,
        }))
    }
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create(
        &self,
        req: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        let ns = namespace(&req)?;
        self.create_task(ns, req.into_inner(), false).await
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        let r: shim::StartResponse = shim
            .call(
                "Start",
                &shim::StartRequest {
                    id: req.container_id,
                    exec_id: req.exec_id,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(StartResponse { pid: r.pid }))
    }

    async fn delete(
        &self,
        req: Request<DeleteTaskRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let r = self.manager.delete(&ns, &id).await.map_err(status)?;
        Ok(Response::new(DeleteResponse {
            id,
            pid: r.pid,
            exit_status: r.exit_status,
            exited_at: r.exited_at,
        }))
    }

    async fn delete_process(
        &self,
        req: Request<DeleteProcessRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        if req.exec_id.is_empty() {
            return Err(errdefs::status(
                Kind::InvalidArgument,
                "exec id must be set; delete the task instead",
            ));
        }
        let shim = self.shim(&ns, &req.container_id)?;
        let r: shim::DeleteResponse = shim
            .call(
                "Delete",
                &shim::DeleteRequest {
                    id: req.container_id,
                    exec_id: req.exec_id.clone(),
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(DeleteResponse {
            id: req.exec_id,
            pid: r.pid,
            exit_status: r.exit_status,
            exited_at: r.exited_at,
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        let s: shim::StateResponse = shim
            .call(
                "State",
                &shim::StateRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id,
                },
            )
            .await
            .map_err(|e| {
                // The task was deleted and its shim let go while this call
                // was on its way: it is gone, not broken.
                if shim.deleting.load(std::sync::atomic::Ordering::SeqCst) {
                    status(TaskError::NotFound(req.container_id.clone()))
                } else {
                    status(e)
                }
            })?;
        Ok(Response::new(GetResponse {
            process: Some(process_from_state(&req.container_id, s)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = req.into_inner().filter;
        let filter = if filter.is_empty() {
            Filter::default()
        } else {
            Filter::parse(&[filter]).map_err(status)?
        };
        // Ask every shim at once: a list of many tasks costs one round trip.
        let mut asks = tokio::task::JoinSet::new();
        for shim in self.manager.list(&ns) {
            if !filter.matches(&TaskView(&shim.id)) {
                continue;
            }
            asks.spawn(async move {
                let state = shim
                    .call::<_, shim::StateResponse>(
                        "State",
                        &shim::StateRequest {
                            id: shim.id.clone(),
                            exec_id: String::new(),
                        },
                    )
                    .await;
                (shim.id.clone(), state)
            });
        }
        let mut tasks = Vec::new();
        while let Some(done) = asks.join_next().await {
            let Ok((id, state)) = done else { continue };
            match state {
                Ok(s) => tasks.push(process_from_state(&id, s)),
                // A shim that just died is being cleaned up; skip it.
                Err(e) => tracing::debug!(%id, cause = %errdefs::message(&e), "task state"),
            }
        }
        tasks.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        shim.call::<_, ()>(
            "Kill",
            &shim::KillRequest {
                id: req.container_id,
                exec_id: req.exec_id,
                signal: req.signal,
                all: req.all,
            },
        )
        .await
        .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        if req.exec_id.is_empty() {
            return Err(errdefs::status(
                Kind::InvalidArgument,
                "exec id must not be empty",
            ));
        }
        let shim = self.shim(&ns, &req.container_id)?;
        shim.call::<_, ()>(
            "Exec",
            &shim::ExecProcessRequest {
                id: req.container_id,
                exec_id: req.exec_id,
                terminal: req.terminal,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                spec: req.spec,
            },
        )
        .await
        .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        shim.call::<_, ()>(
            "ResizePty",
            &shim::ResizePtyRequest {
                id: req.container_id,
                exec_id: req.exec_id,
                width: req.width,
                height: req.height,
            },
        )
        .await
        .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        shim.call::<_, ()>(
            "CloseIO",
            &shim::CloseIoRequest {
                id: req.container_id,
                exec_id: req.exec_id,
                stdin: req.stdin,
            },
        )
        .await
        .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let shim = self.shim(&ns, &id)?;
        shim.call::<_, ()>("Pause", &shim::PauseRequest { id })
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let shim = self.shim(&ns, &id)?;
        shim.call::<_, ()>("Resume", &shim::ResumeRequest { id })
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        req: Request<ListPidsRequest>,
    ) -> Result<Response<ListPidsResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let shim = self.shim(&ns, &id)?;
        let r: shim::PidsResponse = shim
            .call("Pids", &shim::PidsRequest { id })
            .await
            .map_err(status)?;
        Ok(Response::new(ListPidsResponse {
            processes: r.processes,
        }))
    }

    async fn checkpoint(
        &self,
        _req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        Err(errdefs::status(
            Kind::NotImplemented,
            "checkpoint is not supported",
        ))
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        shim.call::<_, ()>(
            "Update",
            &shim::UpdateTaskRequest {
                id: req.container_id,
                resources: req.resources,
                annotations: req.annotations,
            },
        )
        .await
        .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_err(status)?;
        let mut metrics = Vec::new();
        for shim in self.manager.list(&ns) {
            if !filter.matches(&TaskView(&shim.id)) {
                continue;
            }
            let stats = shim
                .call::<_, shim::StatsResponse>(
                    "Stats",
                    &shim::StatsRequest {
                        id: shim.id.clone(),
                    },
                )
                .await;
            match stats {
                Ok(s) => metrics.push(Metric {
                    timestamp: Some(crate::timestamp(crate::now_nanos())),
                    id: shim.id.clone(),
                    data: s.stats,
                }),
                Err(e) => {
                    tracing::debug!(id = %shim.id, cause = %errdefs::message(&e), "task stats")
                }
            }
        }
        Ok(Response::new(MetricsResponse { metrics }))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        let waited = shim
            .call::<_, shim::WaitResponse>(
                "Wait",
                &shim::WaitRequest {
                    id: req.container_id,
                    exec_id: req.exec_id,
                },
            )
            .await;
        let r = match waited {
            Ok(r) => r,
            Err(e) => {
                // The shim died under the wait: report what containerd
                // reports for a dead shim once the cleanup has run.
                let mut dead = shim.dead.subscribe();
                let cleaned = tokio::time::timeout(
                    std::time::Duration::from_secs(15),
                    dead.wait_for(|d| d.is_some()),
                )
                .await
                .ok()
                .and_then(|r| r.ok().map(|d| *d))
                .flatten();
                match cleaned {
                    Some(d) => d,
                    None => return Err(status(e)),
                }
            }
        };
        Ok(Response::new(WaitResponse {
            exit_status: r.exit_status,
            exited_at: r.exited_at,
        }))
    }
}
