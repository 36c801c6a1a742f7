//! Containers: CreateContainer, StartContainer, StopContainer,
//! RemoveContainer, ContainerStatus, ListContainers,
//! UpdateContainerResources, ReopenContainerLog; and following task exits,
//! and loading the records of a previous run.
//!
//! A container's root is a snapshot prepared over its image's layers; its
//! task runs in its pod's shim; its output goes, in the CRI log format,
//! to the kubelet's log path, written by the shim itself (so logs go on
//! while hulld restarts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hull_proto::containerd::events::{TaskExit, TaskOom};
use hull_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use hull_proto::containerd::services::tasks::v1::UpdateTaskRequest;
use hull_proto::errdefs::Kind;
use hull_proto::runtime::v1::{
    Container as CriContainer, ContainerConfig, ContainerFilter, ContainerResources,
    ContainerState as CriState, ContainerStatus, ImageSpec, LinuxContainerResources,
    PodSandboxConfig, Signal,
};
use prost::Message;
use tonic::Status;

use super::names::Abandoned;
use super::spec::{self, ContainerInput};
use super::store::{self, Container, ContainerState, Sandbox, SandboxState};
use super::{blocking, ops, status_of, Cri};

/// The exit code of a container whose task vanished (its shim died).
const UNKNOWN_EXIT: i32 = 255;

fn invalid(msg: impl Into<String>) -> Status {
    status_of(Kind::InvalidArgument, msg)
}

fn not_found(id: &str) -> Status {
    status_of(
        Kind::NotFound,
        format!("an error occurred when try to find container {id:?}: not found"),
    )
}

/// The CRI state of a container from its record.
pub fn cri_state(s: &ContainerState) -> CriState {
    if s.finished_at > 0 {
        CriState::ContainerExited
    } else if s.started_at > 0 {
        CriState::ContainerRunning
    } else if s.created_at > 0 {
        CriState::ContainerCreated
    } else {
        CriState::ContainerUnknown
    }
}

/// Why a container exited, as the kubelet reads it.
fn exit_reason(code: i32, oom: bool) -> &'static str {
    if oom {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// The signal StopContainer sends first: the config's, else the image's,
/// else SIGTERM.
fn stop_signal(config: &ContainerConfig, image: &str) -> u32 {
    if let Ok(s) = Signal::try_from(config.stop_signal) {
        if s != Signal::RuntimeDefault {
            return s as u32;
        }
    }
    parse_signal(image).unwrap_or(libc::SIGTERM as u32)
}

/// A signal by name (`SIGTERM`, `TERM`) or number.
pub fn parse_signal(text: &str) -> Option<u32> {
    if text.is_empty() {
        return None;
    }
    if let Ok(n) = text.parse::<u32>() {
        return Some(n);
    }
    let up = text.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as u32)
}

impl Cri {
    /// The container `prefix` names.
    pub(super) fn find_container(&self, prefix: &str) -> Result<Container, Status> {
        self.store
            .container_id(prefix)
            .and_then(|id| self.store.container(&id))
            .ok_or_else(|| not_found(prefix))
    }

    async fn save_container(&self, id: &str, state: &ContainerState) -> Result<(), Status> {
        self.update_extension(id, store::STATE_EXT, store::state_any(state))
            .await
    }

    /// The user a container runs as: the security context's uid or
    /// username, else the image's user, resolved in the image's
    /// `/etc/passwd` and `/etc/group` when a name (or a uid's group) must
    /// be looked up.
    async fn container_user(
        &self,
        config: &ContainerConfig,
        image: &hull_oci::oci_spec::image::ImageConfiguration,
        mounts: &[hull_proto::containerd::types::Mount],
        id: &str,
    ) -> Result<hull_oci::spec::ResolvedUser, Status> {
        let sc = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let image_user = image
            .config()
            .as_ref()
            .and_then(|c| c.user().clone())
            .unwrap_or_default();
        let text = if let Some(uid) = &sc.run_as_user {
            if uid.value < 0 {
                return Err(invalid("run_as_user must not be negative"));
            }
            // The image's group goes with a uid of the config only when
            // the image names one for itself; else the passwd entry's.
            uid.value.to_string()
        } else if !sc.run_as_username.is_empty() {
            sc.run_as_username.clone()
        } else {
            image_user
        };
        if text.is_empty() {
            return Ok(hull_oci::spec::ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: Vec::new(),
            });
        }
        let mounts: Vec<hull_snapshots::mount::Mount> =
            mounts.iter().cloned().map(Into::into).collect();
        let dir = self.pods_state.join("mnt").join(id);
        let t = text.clone();
        let user = blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| status_of(Kind::Unknown, format!("create {}: {e}", dir.display())))?;
            let result = (|| {
                let root = hull_snapshots::mount::TempMount::new(&mounts, &dir).map_err(|e| {
                    status_of(
                        Kind::Unknown,
                        format!(
                            "mount the container's root: {}",
                            hull_proto::errdefs::message(&e)
                        ),
                    )
                })?;
                let read = |p: &str| read_in_root(root.path(), p);
                hull_oci::spec::resolve_user(
                    &t,
                    read("etc/passwd").as_deref(),
                    read("etc/group").as_deref(),
                )
                .map_err(|e| invalid(format!("unable to find user {t}: {e}")))
            })();
            let _ = std::fs::remove_dir(&dir);
            result
        })
        .await?;
        Ok(user)
    }

    /// CreateContainer: the root prepared, the spec written, the record
    /// made; nothing runs until StartContainer.
    pub(super) async fn create_container(
        self: &Arc<Self>,
        pod: &str,
        config: ContainerConfig,
        sandbox_config: Option<PodSandboxConfig>,
        abandoned: Abandoned,
    ) -> Result<String, Status> {
        let sandbox = self.find_sandbox(pod)?;
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| invalid("container config must include metadata"))?;
        if meta.name.is_empty() {
            return Err(invalid("container metadata must include a name"));
        }
        let image_spec = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| invalid("container config must name an image"))?;
        let task = self.task(&sandbox.id).await?;
        if !Self::sandbox_ready(&sandbox, task.as_ref()) {
            return Err(status_of(
                Kind::FailedPrecondition,
                format!("sandbox {:?} is not ready", sandbox.id),
            ));
        }
        let pod_meta = sandbox.config.metadata.clone().unwrap_or_default();
        let _ = sandbox_config;
        let id = super::new_id();
        let name = format!(
            "{}_{}_{}_{}_{}",
            meta.name, pod_meta.name, pod_meta.namespace, pod_meta.uid, meta.attempt
        );
        self.names.reserve(&name, &id).await?;
        let made = self
            .make_container(&id, &name, &sandbox, &config, &image_spec)
            .await;
        match made {
            Ok(c) => {
                self.store.put_container(c);
                self.names.hold(&name, &id);
            }
            Err(e) => {
                let _ = self.delete_record(&id).await;
                let _ = self.remove_snapshot(&id).await;
                self.names.release(&name, &id);
                return Err(e);
            }
        }
        if abandoned.is_set() {
            tracing::info!(%id, %name, "container created after its client left; removing it");
            let _ = self.remove_container(&id).await;
        }
        Ok(id)
    }

    /// The container's root and record, made under a lease that keeps the
    /// root from the garbage collector until the record holds it.
    async fn make_container(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        sandbox: &Sandbox,
        config: &ContainerConfig,
        image_spec: &str,
    ) -> Result<Container, Status> {
        let lease = self.creation_lease().await?;
        let made = self
            .make_container_leased(id, name, sandbox, config, image_spec, &lease)
            .await;
        self.end_lease(lease).await;
        made
    }

    async fn make_container_leased(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        sandbox: &Sandbox,
        config: &ContainerConfig,
        image_spec: &str,
        lease: &str,
    ) -> Result<Container, Status> {
        let image = super::images::CriImages(self.clone())
            .for_container(image_spec)
            .await?;
        let mounts = self.prepare_snapshot(id, &image.chain_id, lease).await?;
        let user = self
            .container_user(config, &image.config, &mounts, id)
            .await?;
        let uid = user.uid;
        let target_pid = match config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
        {
            Some(n) if n.pid == hull_proto::runtime::v1::NamespaceMode::Target as i32 => self
                .store
                .container(&n.target_id)
                .filter(|c| cri_state(&c.state) == CriState::ContainerRunning)
                .map(|c| c.state.pid),
            _ => None,
        };
        let files = self.pod_files(sandbox);
        let spec_bytes = spec::container(&ContainerInput {
            id,
            config,
            sandbox_id: &sandbox.id,
            sandbox: &sandbox.config,
            sandbox_pid: sandbox.state.pid,
            netns: sandbox.state.netns.as_deref(),
            files: &files,
            image: &image.config,
            image_name: &image.name,
            user,
            target_pid,
            oom_floor: self.oom_floor,
        })?;
        let log_path = if sandbox.config.log_directory.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            Path::new(&sandbox.config.log_directory)
                .join(&config.log_path)
                .display()
                .to_string()
        };
        let image_stop = image
            .config
            .config()
            .as_ref()
            .and_then(|c| c.stop_signal().clone())
            .unwrap_or_default();
        let state = ContainerState {
            name: name.to_owned(),
            sandbox_id: sandbox.id.clone(),
            created_at: crate::now_nanos(),
            image_id: image.id.clone(),
            image_ref: image.image_ref.clone(),
            log_path,
            stop_signal: stop_signal(config, &image_stop).to_string(),
            cgroup: spec::cgroup_path(&sandbox.config, id),
            uid,
            ..Default::default()
        };
        let mut labels = config.labels.clone();
        labels.insert(
            store::KIND_LABEL.to_owned(),
            store::KIND_CONTAINER.to_owned(),
        );
        self.create_record(
            id,
            labels,
            &image.name,
            spec_bytes,
            true,
            store::extensions("runtime.v1.ContainerConfig", config, &state),
        )
        .await?;
        Ok(Container {
            id: id.to_owned(),
            config: config.clone(),
            state,
        })
    }

    /// StartContainer: its task in the pod's shim, output to its log.
    pub(super) async fn start_container(&self, prefix: &str) -> Result<(), Status> {
        let c = self.find_container(prefix)?;
        let state = cri_state(&c.state);
        if state != CriState::ContainerCreated {
            return Err(status_of(
                Kind::FailedPrecondition,
                format!("container {:?} is in {} state", c.id, state.as_str_name()),
            ));
        }
        let sandbox = self.find_sandbox(&c.state.sandbox_id)?;
        let task = self.task(&sandbox.id).await?;
        if !Self::sandbox_ready(&sandbox, task.as_ref()) {
            return Err(status_of(
                Kind::FailedPrecondition,
                format!("sandbox container {:?} is not running", sandbox.id),
            ));
        }
        let log = if c.state.log_path.is_empty() {
            String::new()
        } else {
            let p = PathBuf::from(&c.state.log_path);
            blocking(move || {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        status_of(
                            Kind::Unknown,
                            format!("create log dir {}: {e}", dir.display()),
                        )
                    })?;
                }
                Ok(())
            })
            .await?;
            format!("cri-log://{}", c.state.log_path)
        };
        let stderr = if c.config.tty { "" } else { log.as_str() };
        let stdin = self.stdin_fifo(&c).await?;
        let handler = self
            .find_sandbox(&c.state.sandbox_id)
            .map(|s| s.state.runtime_handler)
            .unwrap_or_default();
        let binary = self.runtime_binary(&handler).unwrap_or("runc").to_owned();
        match self
            .run_task(&c.id, (&stdin, &log, stderr, c.config.tty), &binary)
            .await
        {
            Ok(pid) => {
                let now = crate::now_nanos();
                if let Some(s) = self.store.update_container(&c.id, |s| {
                    // Its exit may have been recorded already: it started
                    // no later than it ended.
                    s.started_at = if s.finished_at > 0 {
                        now.min(s.finished_at)
                    } else {
                        now
                    };
                    s.pid = pid;
                }) {
                    self.save_container(&c.id, &s).await?;
                }
                Ok(())
            }
            Err(e) => {
                let now = crate::now_nanos();
                let msg = e.message().to_owned();
                if let Some(s) = self.store.update_container(&c.id, |s| {
                    s.started_at = now;
                    s.finished_at = now;
                    s.exit_code = 128;
                    s.reason = "StartError".to_owned();
                    s.message = msg;
                }) {
                    let _ = self.save_container(&c.id, &s).await;
                }
                Err(e)
            }
        }
    }

    /// Records that container `id` exited, once. The exit of a process that
    /// ends at once can arrive before StartContainer has recorded the
    /// start; it is kept all the same (only a started task exits).
    pub(super) async fn record_exit(&self, id: &str, code: u32, at: i64) {
        let oom = self.oom_seen(id);
        let code = i32::try_from(code).unwrap_or(UNKNOWN_EXIT);
        let changed = self.store.update_container(id, |s| {
            if s.finished_at == 0 {
                s.finished_at = at.max(s.started_at);
                s.exit_code = code;
                s.reason = exit_reason(code, oom).to_owned();
            }
        });
        if let Some(s) = changed {
            if let Err(e) = self.save_container(id, &s).await {
                tracing::warn!(%id, error = %e.message(), "record container exit");
            }
        }
    }

    /// Kills a container at once (SIGKILL), records its exit, deletes its
    /// task.
    pub(super) async fn stop_container_now(&self, id: &str) -> Result<(), Status> {
        if let Some((code, at)) = self.kill_and_delete(id).await? {
            self.record_exit(id, code, at).await;
        }
        Ok(())
    }

    /// StopContainer: the stop signal, `timeout` seconds, then SIGKILL.
    pub(super) async fn stop_container(&self, prefix: &str, timeout: i64) -> Result<(), Status> {
        let c = self.find_container(prefix)?;
        if cri_state(&c.state) != CriState::ContainerRunning {
            // Never started or already exited: its task may linger.
            self.delete_task(&c.id).await?;
            return Ok(());
        }
        if timeout > 0 {
            let signal = c.state.stop_signal.parse().unwrap_or(libc::SIGTERM as u32);
            self.kill(&c.id, "", signal).await?;
            let limit = Duration::from_secs(u64::try_from(timeout).unwrap_or(0));
            if let Some((code, at)) = self.wait(&c.id, "", limit).await? {
                self.record_exit(&c.id, code, at).await;
                self.delete_task(&c.id).await?;
                return Ok(());
            }
        }
        self.stop_container_now(&c.id).await
    }

    /// RemoveContainer: killed if running, then its task, record and root
    /// go. An unknown id is fine, as in containerd.
    pub(super) async fn remove_container(&self, prefix: &str) -> Result<(), Status> {
        let Ok(c) = self.find_container(prefix) else {
            return Ok(());
        };
        self.stop_container_now(&c.id).await?;
        self.delete_record(&c.id).await?;
        self.remove_snapshot(&c.id).await?;
        let fifo = self.stdin_path(&c.id);
        let _ = blocking(move || {
            let _ = std::fs::remove_file(&fifo);
            Ok(())
        })
        .await;
        self.store.remove_container(&c.id);
        self.names.release(&c.state.name, &c.id);
        self.stdin_keepers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&c.id);
        Ok(())
    }

    /// The CRI view of a container.
    pub(super) fn cri_container(c: &Container) -> CriContainer {
        CriContainer {
            id: c.id.clone(),
            pod_sandbox_id: c.state.sandbox_id.clone(),
            metadata: c.config.metadata.clone(),
            image: c.config.image.clone(),
            image_ref: c.state.image_ref.clone(),
            state: cri_state(&c.state) as i32,
            created_at: c.state.created_at,
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            image_id: c.state.image_id.clone(),
        }
    }

    /// Brings a running container's record up to date with its task: one
    /// whose task stopped (or vanished) is recorded as exited.
    async fn refresh(&self, c: &Container) -> Result<Container, Status> {
        if cri_state(&c.state) != CriState::ContainerRunning {
            return Ok(c.clone());
        }
        match self.task(&c.id).await? {
            Some(p) if ops::is_running(&p) => return Ok(c.clone()),
            Some(p) => {
                let at = p
                    .exited_at
                    .map(|t| super::nanos(&t))
                    .unwrap_or_else(crate::now_nanos);
                self.record_exit(&c.id, p.exit_status, at).await;
            }
            None => {
                self.record_exit(&c.id, UNKNOWN_EXIT as u32, crate::now_nanos())
                    .await
            }
        }
        Ok(self.store.container(&c.id).unwrap_or_else(|| c.clone()))
    }

    /// ContainerStatus.
    pub(super) async fn container_status(
        &self,
        prefix: &str,
        verbose: bool,
    ) -> Result<(ContainerStatus, BTreeMap<String, String>), Status> {
        let c = self.find_container(prefix)?;
        let c = self.refresh(&c).await?;
        let s = &c.state;
        let status = ContainerStatus {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            state: cri_state(s) as i32,
            created_at: s.created_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            exit_code: s.exit_code,
            image: Some(ImageSpec {
                image: c
                    .config
                    .image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            image_ref: s.image_ref.clone(),
            reason: s.reason.clone(),
            message: s.message.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            mounts: c.config.mounts.clone(),
            log_path: s.log_path.clone(),
            resources: c
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| ContainerResources {
                    linux: Some(r),
                    windows: None,
                }),
            image_id: s.image_id.clone(),
            user: None,
            stop_signal: c.config.stop_signal,
        };
        let mut info = BTreeMap::new();
        if verbose {
            let v = serde_json::json!({
                "sandboxID": s.sandbox_id,
                "pid": s.pid,
                "name": s.name,
                "cgroup": s.cgroup,
            });
            info.insert("info".to_owned(), v.to_string());
        }
        Ok((status, info))
    }

    /// ListContainers with its filter.
    pub(super) async fn list_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> Result<Vec<CriContainer>, Status> {
        let f = filter.unwrap_or_default();
        let mut out: Vec<CriContainer> = self
            .store
            .containers()
            .iter()
            .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
            .filter(|c| {
                f.pod_sandbox_id.is_empty() || c.state.sandbox_id.starts_with(&f.pod_sandbox_id)
            })
            .map(Self::cri_container)
            .filter(|c| f.state.as_ref().is_none_or(|want| want.state == c.state))
            .filter(|c| {
                f.label_selector
                    .iter()
                    .all(|(k, v)| c.labels.get(k) == Some(v))
            })
            .collect();
        out.sort_by_key(|x| std::cmp::Reverse(x.created_at));
        Ok(out)
    }

    /// UpdateContainerResources: applied to the running task, and kept for
    /// its next status.
    pub(super) async fn update_container_resources(
        &self,
        prefix: &str,
        resources: Option<LinuxContainerResources>,
    ) -> Result<(), Status> {
        let c = self.find_container(prefix)?;
        let Some(r) = resources else {
            return Ok(());
        };
        if cri_state(&c.state) == CriState::ContainerRunning {
            self.tasks
                .update(super::request(UpdateTaskRequest {
                    container_id: c.id.clone(),
                    resources: Some(prost_types::Any {
                        type_url: hull_proto::typeurl::LINUX_RESOURCES.to_owned(),
                        value: spec::update_resources(&r),
                    }),
                    annotations: Default::default(),
                }))
                .await?;
        }
        let mut config = c.config.clone();
        config.linux.get_or_insert_with(Default::default).resources = Some(r);
        self.update_extension(
            &c.id,
            store::CONFIG_EXT,
            prost_types::Any {
                type_url: "type.googleapis.com/runtime.v1.ContainerConfig".to_owned(),
                value: config.encode_to_vec(),
            },
        )
        .await?;
        self.store.put_container(Container { config, ..c });
        Ok(())
    }

    /// ReopenContainerLog: a new file at the log path (the kubelet moved
    /// the old one away); the shim writes there from its next line.
    pub(super) async fn reopen_container_log(&self, prefix: &str) -> Result<(), Status> {
        let c = self.find_container(prefix)?;
        if cri_state(&c.state) != CriState::ContainerRunning {
            return Err(status_of(
                Kind::FailedPrecondition,
                format!("container {:?} is not running", c.id),
            ));
        }
        if c.state.log_path.is_empty() {
            return Ok(());
        }
        let p = PathBuf::from(&c.state.log_path);
        blocking(move || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map(|_| ())
                .map_err(|e| status_of(Kind::Unknown, format!("reopen {}: {e}", p.display())))
        })
        .await
    }

    fn oom_seen(&self, id: &str) -> bool {
        self.ooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// Follows task exits (recording them and deleting the task, as
    /// containerd's CRI does) and OOM kills, until `shutdown`.
    pub(super) async fn follow_exits(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut events = self.events.subscribe();
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.recv() => ev,
            };
            let ev = match ev {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.sweep().await;
                    continue;
                }
                Err(_) => return,
            };
            if ev.namespace != super::NAMESPACE {
                continue;
            }
            match ev.topic.as_str() {
                "/tasks/oom" => {
                    if let Ok(oom) = TaskOom::decode(ev.event.value.as_slice()) {
                        self.ooms
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(oom.container_id);
                    }
                }
                "/tasks/exit" => {
                    let Ok(exit) = TaskExit::decode(ev.event.value.as_slice()) else {
                        continue;
                    };
                    if exit.id != exit.container_id {
                        continue; // An exec's.
                    }
                    let cri = self.clone();
                    tokio::spawn(async move { cri.handle_exit(exit).await });
                }
                _ => {}
            }
        }
    }

    async fn handle_exit(&self, exit: TaskExit) {
        let id = exit.container_id.clone();
        let at = exit
            .exited_at
            .map(|t| super::nanos(&t))
            .unwrap_or_else(crate::now_nanos);
        if self.store.container(&id).is_some() {
            self.record_exit(&id, exit.exit_status, at).await;
        } else if self.store.sandbox(&id).is_none() {
            return;
        }
        if let Err(e) = self.delete_task(&id).await {
            tracing::debug!(%id, error = %e.message(), "delete exited task");
        }
    }

    /// Looks at every running container's task (after missed events).
    async fn sweep(&self) {
        for c in self.store.containers() {
            if let Err(e) = self.refresh(&c).await {
                tracing::debug!(id = %c.id, error = %e.message(), "refresh container");
            }
        }
    }

    /// Loads CRI's records from the metadata DB and brings them up to date
    /// with the tasks that survived (a container that exited while hulld
    /// was down gets its exit code; one whose shim died, 255).
    pub(super) async fn restore(&self) -> Result<(), Status> {
        let records = self.records().await?;
        for r in records {
            match r.labels.get(store::KIND_LABEL).map(String::as_str) {
                Some(store::KIND_SANDBOX) => {
                    let Some((config, state)) =
                        store::decode::<PodSandboxConfig, SandboxState>(&r.extensions)
                    else {
                        continue;
                    };
                    self.names.hold(&state.name, &r.id);
                    self.store.put_sandbox(Sandbox {
                        id: r.id,
                        config,
                        state,
                    });
                }
                Some(store::KIND_CONTAINER) => {
                    let Some((config, state)) =
                        store::decode::<ContainerConfig, ContainerState>(&r.extensions)
                    else {
                        continue;
                    };
                    self.names.hold(&state.name, &r.id);
                    self.store.put_container(Container {
                        id: r.id,
                        config,
                        state,
                    });
                }
                _ => {}
            }
        }
        self.sweep().await;
        // Exited tasks still held by their shims are done with.
        for (id, p) in self.all_tasks().await.unwrap_or_default() {
            if ops::is_stopped(&p) {
                let _ = self.delete_task(&id).await;
            }
        }
        Ok(())
    }

    /// Where the stdin FIFO of a container that keeps stdin open is.
    pub(super) fn stdin_path(&self, id: &str) -> PathBuf {
        self.pods_state.join("stdin").join(id)
    }

    /// A FIFO for the stdin of a container configured with `stdin`.
    async fn stdin_fifo(&self, c: &Container) -> Result<String, Status> {
        if !c.config.stdin {
            return Ok(String::new());
        }
        let p = self.stdin_path(&c.id);
        blocking(move || {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).map_err(|e| status_of(Kind::Unknown, e.to_string()))?;
            }
            match nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
                Ok(()) | Err(nix::Error::EEXIST) => Ok(p.display().to_string()),
                Err(e) => Err(status_of(Kind::Unknown, format!("stdin fifo: {e}"))),
            }
        })
        .await
    }
}

/// Reads `rel` inside `root` without following a link out of it.
fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    let p = root.join(rel);
    let real = std::fs::canonicalize(&p).ok()?;
    let root = std::fs::canonicalize(root).ok()?;
    if !real.starts_with(&root) {
        return None;
    }
    std::fs::read_to_string(real).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_reasons() {
        let mut s = ContainerState {
            created_at: 1,
            ..Default::default()
        };
        assert_eq!(cri_state(&s), CriState::ContainerCreated);
        s.started_at = 2;
        assert_eq!(cri_state(&s), CriState::ContainerRunning);
        s.finished_at = 3;
        assert_eq!(cri_state(&s), CriState::ContainerExited);
        assert_eq!(exit_reason(0, false), "Completed");
        assert_eq!(exit_reason(137, true), "OOMKilled");
        assert_eq!(exit_reason(1, false), "Error");
    }

    #[test]
    fn stop_signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGQUIT"), Some(libc::SIGQUIT as u32));
        assert_eq!(parse_signal("int"), Some(libc::SIGINT as u32));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("bogus"), None);
        let c = ContainerConfig::default();
        assert_eq!(stop_signal(&c, ""), libc::SIGTERM as u32);
        assert_eq!(stop_signal(&c, "SIGUSR1"), libc::SIGUSR1 as u32);
    }
}
