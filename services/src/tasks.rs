//! The shim manager: starts a shim per task, keeps a connection to each,
//! finds them again after a restart, and cleans up after shims that die.
//!
//! hulld keeps no task state of its own beyond the shims' bundles under
//! `<state>/shims/<namespace>/<id>/`:
//!
//! ```text
//! config.json   OCI spec, written before the shim starts
//! rootfs/       mounted by the shim on Create, unmounted on Delete
//! address       the shim's ttrpc address (unix://...)
//! shim-binary   the shim binary that owns the bundle, for `delete`
//! shim.pid      written by hull-shim
//! shim.log      hull-shim's own log
//! ```

pub mod shim;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use hull_proto::containerd::events::{TaskDelete, TaskExit};
use hull_proto::containerd::task::v2 as api;
use hull_proto::containerd::types::Mount as ProtoMount;
use hull_proto::errdefs::{Classify, Kind};
use hull_proto::identifiers::Namespace;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::Exchange;
use shim::{Invocation, Shim};

/// `[shim]`: which shim binary runs each runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShimConfig {
    /// Runtime name -> shim binary (a path, or a name looked up next to
    /// hulld and then on PATH). Runtimes not listed follow containerd's
    /// rule: `io.containerd.NAME.VERSION` runs `containerd-shim-NAME-VERSION`.
    pub runtimes: BTreeMap<String, String>,
    /// Size at which a container's json-file log is rotated when the
    /// client set none (`10m`, `1g`; empty: never).
    pub log_max_size: String,
    /// Log files kept when the client set none.
    pub log_max_file: u32,
}

impl Default for ShimConfig {
    fn default() -> Self {
        // hull-shim also serves the v1 Linux runtime's name, whose
        // options it reads (containerd runs its v1 shim for it).
        let runtimes = [
            "io.containerd.runc.v2",
            "io.containerd.runc.v1",
            "io.containerd.runtime.v1.linux",
        ]
        .into_iter()
        .map(|r| (r.to_owned(), "hull-shim".to_owned()))
        .collect();
        // Unlike Docker's json-file default (never rotated), a log does not
        // fill the disk unless asked: 10 MiB times 3, as kubelet keeps.
        ShimConfig {
            runtimes,
            log_max_size: "10m".into(),
            log_max_file: 3,
        }
    }
}

/// Why a task operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No task for that container.
    #[error("task {0}: not found")]
    NotFound(String),
    /// The container has a task already.
    #[error("task {0}: already exists")]
    AlreadyExists(String),
    /// The container cannot get a task as it is.
    #[error("container {id}: {reason}")]
    Container {
        /// Container id.
        id: String,
        /// What is missing.
        reason: &'static str,
    },
    /// The runtime name maps to no binary.
    #[error("runtime {0:?}: no shim binary found")]
    Runtime(String),
    /// The shim binary failed to start.
    #[error("start shim {}: {message}", binary.display())]
    ShimStart {
        /// The binary.
        binary: PathBuf,
        /// Its error output.
        message: String,
    },
    /// A call to the shim failed.
    #[error("shim for {id}")]
    Shim {
        /// Container id.
        id: String,
        /// The ttrpc error (carries the shim's status).
        #[source]
        source: hull_ttrpc::Error,
    },
    /// Bundle files could not be written or removed.
    #[error("bundle {}", path.display())]
    Bundle {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot's mounts could not be read.
    #[error("rootfs of {id}: {message}")]
    Rootfs {
        /// Container id.
        id: String,
        /// The snapshotter's error.
        message: String,
    },
    /// A blocking task died.
    #[error(transparent)]
    Join(#[from] crate::JoinError),
}

impl Classify for TaskError {
    fn kind(&self) -> Kind {
        match self {
            TaskError::NotFound(_) => Kind::NotFound,
            TaskError::AlreadyExists(_) => Kind::AlreadyExists,
            TaskError::Container { .. } => Kind::FailedPrecondition,
            TaskError::Runtime(_) => Kind::NotFound,
            TaskError::Shim { source, .. } => source.kind(),
            TaskError::ShimStart { .. } | TaskError::Bundle { .. } | TaskError::Join(_) => {
                Kind::Unknown
            }
            TaskError::Rootfs { .. } => Kind::Unknown,
        }
    }
}

type Key = (String, String);

/// What a new task needs besides the container record.
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    /// Container id.
    pub id: String,
    /// Rootfs mounts (empty: none, or the container's snapshot).
    pub rootfs: Vec<ProtoMount>,
    /// Stdin FIFO or empty.
    pub stdin: String,
    /// Stdout FIFO or URI.
    pub stdout: String,
    /// Stderr FIFO or URI.
    pub stderr: String,
    /// Terminal.
    pub terminal: bool,
    /// Runtime options for the task (else the container's).
    pub options: Option<prost_types::Any>,
    /// Shim binary path overriding the runtime name.
    pub runtime_path: String,
    /// Start the task with its create, in one runtime call (see
    /// [`hull_proto::headers::START_AT_CREATE`]).
    pub start_at_create: bool,
}

/// The container record fields a task is made from.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// Runtime name.
    pub runtime_name: String,
    /// Runtime options.
    pub runtime_options: Option<prost_types::Any>,
    /// OCI spec JSON.
    pub spec: Vec<u8>,
    /// Whether the container has a root snapshot.
    pub has_snapshot: bool,
}

/// Every shim hulld knows, by namespace and container id.
#[derive(Debug)]
pub struct TaskManager {
    config: ShimConfig,
    dir: PathBuf,
    inv: Invocation,
    events: Exchange,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    shims: Mutex<HashMap<Key, Arc<Shim>>>,
    /// Creates in flight, so a second create for the same id fails fast.
    creating: Mutex<HashSet<Key>>,
}

fn bundle_err(path: &Path) -> impl FnOnce(std::io::Error) -> TaskError {
    let path = path.to_owned();
    move |source| TaskError::Bundle { path, source }
}

/// The pid hull-shim (or containerd's shims) recorded in the bundle.
fn read_shim_pid(bundle: &Path) -> Option<i32> {
    std::fs::read_to_string(bundle.join("shim.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
}

/// The shim binary hulld recorded in the bundle when it started the shim.
fn read_shim_binary(bundle: &Path) -> Option<PathBuf> {
    std::fs::read(bundle.join("shim-binary"))
        .ok()
        .map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned()))
}

/// The first file called `name` in a PATH directory.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Removes a bundle after unmounting its rootfs if still mounted.
fn remove_bundle(bundle: &Path) -> Result<(), TaskError> {
    let rootfs = bundle.join("rootfs");
    // EINVAL (not a mount point) and ENOENT are the normal cases.
    while hull_snapshots::mount::unmount(&rootfs).is_ok() {}
    match std::fs::remove_dir_all(bundle) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(bundle_err(bundle)(e)),
    }
}

impl TaskManager {
    /// A manager keeping bundles under `<state>/shims`.
    pub fn new(
        config: ShimConfig,
        state: &Path,
        inv: Invocation,
        events: Exchange,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<TaskManager> {
        Arc::new(TaskManager {
            config,
            dir: state.join("shims"),
            inv,
            events,
            tasks,
            shutdown,
            shims: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Arc<Shim>>> {
        // Every critical section is one map operation.
        self.shims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shim binary for a runtime name.
    ///
    /// # Errors
    /// NotFound when no binary exists for it.
    pub fn shim_binary(&self, runtime: &str, runtime_path: &str) -> Result<PathBuf, TaskError> {
        if !runtime_path.is_empty() {
            return Ok(PathBuf::from(runtime_path));
        }
        let name = match self.config.runtimes.get(runtime) {
            Some(b) => b.clone(),
            None => {
                // containerd's BinaryName: the last two dotted parts.
                let parts: Vec<&str> = runtime.split('.').collect();
                if parts.len() < 2 || runtime.contains('/') {
                    return Err(TaskError::Runtime(runtime.to_owned()));
                }
                format!(
                    "containerd-shim-{}-{}",
                    parts[parts.len() - 2],
                    parts[parts.len() - 1]
                )
            }
        };
        if name.contains('/') {
            return Ok(PathBuf::from(name));
        }
        let beside = self.inv.publish_binary.parent().map(|d| d.join(&name));
        if let Some(p) = beside.filter(|p| p.is_file()) {
            return Ok(p);
        }
        find_on_path(&name).ok_or_else(|| TaskError::Runtime(runtime.to_owned()))
    }

    /// What is missing to run containers of `runtime`, in words an
    /// operator can act on: its shim binary, or the OCI runtime binary
    /// (`runc`) that hull-shim runs by default. Empty when both are found.
    pub fn missing_for(&self, runtime: &str) -> Vec<String> {
        let mut missing = Vec::new();
        match self.shim_binary(runtime, "") {
            Err(_) => missing.push(format!("no shim binary for runtime {runtime:?}")),
            Ok(shim) => {
                let is_hull_shim = shim.file_name().is_some_and(|n| n == "hull-shim");
                if is_hull_shim && find_on_path("runc").is_none() {
                    missing.push(format!(
                        "runtime {runtime:?} runs \"runc\", which is not on PATH (Debian package runc)"
                    ));
                }
            }
        }
        missing
    }

    /// The shim of a task.
    ///
    /// # Errors
    /// NotFound.
    pub fn get(&self, ns: &Namespace, id: &str) -> Result<Arc<Shim>, TaskError> {
        self.lock()
            .get(&(ns.to_string(), id.to_owned()))
            .cloned()
            .ok_or_else(|| TaskError::NotFound(id.to_owned()))
    }

    /// Every task in a namespace, by id.
    pub fn list(&self, ns: &Namespace) -> Vec<Arc<Shim>> {
        let mut v: Vec<Arc<Shim>> = self
            .lock()
            .iter()
            .filter(|((n, _), _)| n == ns.as_str())
            .map(|(_, s)| s.clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Creates a task: writes the bundle, starts a shim, asks it to create.
    ///
    /// # Errors
    /// AlreadyExists when the container has a task; FailedPrecondition
    /// when it has no root filesystem; the shim's error otherwise.
    pub async fn create(
        self: &Arc<Self>,
        ns: &Namespace,
        container: ContainerSpec,
        req: NewTask,
    ) -> Result<u32, TaskError> {
        let key = (ns.to_string(), req.id.clone());
        if self.lock().contains_key(&key)
            || !self
                .creating
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone())
        {
            return Err(TaskError::AlreadyExists(req.id));
        }
        let _creating = CreatingGuard {
            mgr: self,
            key: key.clone(),
        };
        if req.rootfs.is_empty() && !container.has_snapshot && spec_root_is_bundle(&container.spec)
        {
            return Err(TaskError::Container {
                id: req.id,
                reason: "no root filesystem: no snapshot and no rootfs mounts",
            });
        }
        let binary = self.shim_binary(&container.runtime_name, &req.runtime_path)?;
        let bundle = self.dir.join(ns.as_str()).join(&req.id);
        if let Some(shim) = self.live_shim_in(ns, &req.id, &bundle).await {
            // A shim hulld had lost track of still serves this task: take
            // it back rather than wipe its bundle.
            self.lock().insert(key, shim.clone());
            self.watch(shim);
            return Err(TaskError::AlreadyExists(req.id));
        }
        {
            let (bundle, spec, binary) = (bundle.clone(), container.spec.clone(), binary.clone());
            crate::blocking(move || -> Result<(), TaskError> {
                remove_bundle(&bundle)?;
                std::fs::create_dir_all(&bundle).map_err(bundle_err(&bundle))?;
                let config = bundle.join("config.json");
                std::fs::write(&config, &spec).map_err(bundle_err(&config))?;
                let b = bundle.join("shim-binary");
                std::fs::write(&b, binary.as_os_str().as_encoded_bytes()).map_err(bundle_err(&b))
            })
            .await?;
        }
        let options = hull_proto::runtime_options::for_task(
            req.options.as_ref(),
            container.runtime_options.as_ref(),
        );
        let log_stop = self.shutdown.child_token();
        shim::forward_log(&bundle, &req.id, &self.tasks, log_stop.clone())
            .map_err(bundle_err(&bundle))?;
        let result = self
            .start_and_create(ns, &req, &binary, &bundle, options)
            .await;
        match result {
            Ok((mut shim, pid)) => {
                shim.log_stop = log_stop;
                let shim = Arc::new(shim);
                self.lock().insert(key, shim.clone());
                self.watch(shim);
                Ok(pid)
            }
            Err(e @ TaskError::AlreadyExists(_)) => {
                log_stop.cancel();
                Err(e)
            }
            Err(e) => {
                log_stop.cancel();
                let b = bundle.clone();
                if let Err(clean) = crate::blocking(move || remove_bundle(&b)).await {
                    tracing::warn!(cause = %hull_proto::errdefs::message(&clean), "remove bundle after failed create");
                }
                Err(e)
            }
        }
    }

    /// The address of the live shim of the pod sandbox the bundle's spec
    /// names (`io.kubernetes.cri.sandbox-id`), when hulld holds one that
    /// runs `binary`.
    async fn group_shim(&self, ns: &Namespace, bundle: &Path, binary: &Path) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Spec {
            #[serde(default)]
            annotations: HashMap<String, String>,
        }
        let config = bundle.join("config.json");
        let spec: Spec = crate::blocking(move || {
            let bytes = std::fs::read(&config).map_err(bundle_err(&config))?;
            Ok::<_, TaskError>(serde_json::from_slice(&bytes).ok())
        })
        .await
        .ok()
        .flatten()?;
        let group = spec.annotations.get(crate::cri::spec::SANDBOX_ID)?;
        let shims = self.lock();
        let shim = shims.get(&(ns.to_string(), group.clone()))?;
        let live = !shim.deleting.load(std::sync::atomic::Ordering::SeqCst)
            && shim.dead.borrow().is_none()
            && shim.binary == binary;
        live.then(|| shim.address.clone())
    }

    async fn start_and_create(
        &self,
        ns: &Namespace,
        req: &NewTask,
        binary: &Path,
        bundle: &Path,
        options: Option<prost_types::Any>,
    ) -> Result<(Shim, u32), TaskError> {
        let began = std::time::Instant::now();
        // A pod's container goes to the shim its sandbox already has,
        // without running `start` only to be told its address.
        let address = match self.group_shim(ns, bundle, binary).await {
            Some(address) => address,
            None => {
                shim::start(
                    &self.inv,
                    binary,
                    ns.as_str(),
                    &req.id,
                    bundle,
                    options.as_ref(),
                )
                .await?
            }
        };
        let started = began.elapsed();
        let a = bundle.join("address");
        let addr = address.clone();
        crate::blocking(move || std::fs::write(&a, addr).map_err(bundle_err(&a))).await?;
        let client = match shim::connect(&address, &req.id).await {
            Ok(c) => c,
            Err(e) => {
                // A shim that started but cannot be reached would serve
                // nobody: end it.
                self.kill_started_shim(bundle);
                return Err(e);
            }
        };
        let shim = Shim::new(
            ns.to_string(),
            req.id.clone(),
            bundle.to_owned(),
            binary.to_owned(),
            address,
            client,
        );
        let create = api::CreateTaskRequest {
            id: req.id.clone(),
            bundle: bundle.display().to_string(),
            rootfs: req.rootfs.clone(),
            terminal: req.terminal,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            checkpoint: String::new(),
            parent_checkpoint: String::new(),
            options,
        };
        let connected = began.elapsed();
        let created = shim.call_create(&create, req.start_at_create).await;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        tracing::debug!(
            namespace = %ns,
            id = %req.id,
            shim_ms = ms(started),
            connect_ms = ms(connected - started),
            create_ms = ms(began.elapsed() - connected),
            "task create stages"
        );
        match created {
            Ok(resp) => Ok((shim, resp.pid)),
            Err(e) if e.kind() == Kind::AlreadyExists => {
                // A shim already serving this id (one hulld lost track of):
                // leave it and its container alone.
                tracing::warn!(namespace = %ns, id = %req.id, "a shim already serves this task");
                Err(TaskError::AlreadyExists(req.id.clone()))
            }
            Err(e) => {
                // Not `now`: the shim may be a pod's, serving its others.
                shim.shutdown(false).await;
                Err(e)
            }
        }
    }

    /// Deletes a task: the shim deletes the container and exits, the bundle
    /// goes.
    ///
    /// # Errors
    /// NotFound; the shim's error (e.g. FailedPrecondition while running).
    pub async fn delete(&self, ns: &Namespace, id: &str) -> Result<api::DeleteResponse, TaskError> {
        let shim = self.get(ns, id)?;
        let dead_response = |shim: &Shim| {
            let dead = *shim.dead.borrow();
            dead.map(|dead| api::DeleteResponse {
                pid: 0,
                exit_status: dead.exit_status,
                exited_at: dead.exited_at,
            })
        };
        if let Some(resp) = dead_response(&shim) {
            return Ok(resp);
        }
        // A second delete of the task waits for the first, then finds the
        // task gone, as containerd answers it.
        let _one = shim.delete_lock.lock().await;
        if let Some(resp) = dead_response(&shim) {
            return Ok(resp);
        }
        let current = self
            .lock()
            .get(&(ns.to_string(), id.to_owned()))
            .is_some_and(|s| Arc::ptr_eq(s, &shim));
        if !current {
            return Err(TaskError::NotFound(id.to_owned()));
        }
        let resp: api::DeleteResponse = shim
            .call(
                "Delete",
                &api::DeleteRequest {
                    id: id.to_owned(),
                    exec_id: String::new(),
                },
            )
            .await?;
        shim.shutdown(false).await;
        let shared = self
            .lock()
            .iter()
            .any(|(k, s)| k.1 != id && s.address == shim.address);
        if !shared {
            // A task created for the same container right after this
            // returns must get a new shim, not this one on its way out. (A
            // pod's shim serving other containers stays.)
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), shim.closed()).await;
        }
        self.lock().remove(&(ns.to_string(), id.to_owned()));
        shim.log_stop.cancel();
        self.reap_shim(&shim.bundle);
        let bundle = shim.bundle.clone();
        crate::blocking(move || remove_bundle(&bundle)).await?;
        Ok(resp)
    }

    /// The shim serving the bundle at `bundle`, if one answers there.
    async fn live_shim_in(&self, ns: &Namespace, id: &str, bundle: &Path) -> Option<Arc<Shim>> {
        let address = std::fs::read_to_string(bundle.join("address")).ok()?;
        let client = shim::connect(address.trim(), id).await.ok()?;
        let binary = read_shim_binary(bundle).unwrap_or_else(|| PathBuf::from("hull-shim"));
        let mut shim = Shim::new(
            ns.to_string(),
            id.to_owned(),
            bundle.to_owned(),
            binary,
            address.trim().to_owned(),
            client,
        );
        shim.call::<_, api::ConnectResponse>("Connect", &api::ConnectRequest { id: id.to_owned() })
            .await
            .ok()?;
        shim.log_stop = self.shutdown.child_token();
        if bundle.join("log").exists() {
            if let Err(e) = shim::forward_log(bundle, id, &self.tasks, shim.log_stop.clone()) {
                tracing::warn!(%id, cause = %e, "reopen shim log");
            }
        }
        Some(Arc::new(shim))
    }

    /// Kills the shim whose pid file is in `bundle` and reaps it.
    fn kill_started_shim(&self, bundle: &Path) {
        if let Some(pid) = read_shim_pid(bundle) {
            // The shim this call started (its pid file was written by its
            // own `start`); gone already is fine.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            self.reap_shim(bundle);
        }
    }

    /// Reaps a shim that exits (or exited) after being reparented to hulld,
    /// the subreaper of the shims it starts. Only that pid is waited for:
    /// tokio reaps the children it spawned itself.
    fn reap_shim(&self, bundle: &Path) {
        let Some(pid) = read_shim_pid(bundle) else {
            return;
        };
        self.tasks.spawn(async move {
            for _ in 0..200 {
                // Reaped, or not our child (another parent reaps it).
                if !matches!(
                    waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
                    Ok(WaitStatus::StillAlive)
                ) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        });
    }

    /// Watches a shim's connection; a close that is not a delete is a crash.
    fn watch(self: &Arc<Self>, shim: Arc<Shim>) {
        let mgr = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            // Shims outlive hulld: stopping only stops watching them.
            tokio::select! {
                _ = shim.closed() => {}
                _ = shutdown.cancelled() => return,
            }
            if shim.deleting.load(Ordering::SeqCst) {
                return;
            }
            if let Some(mgr) = mgr.upgrade() {
                mgr.cleanup_dead(&shim).await;
            }
        });
    }

    /// After a shim died: let its binary clean up, unmount, remove the
    /// bundle, and report the task exited with 255, as containerd does.
    async fn cleanup_dead(&self, shim: &Shim) {
        tracing::warn!(namespace = %shim.namespace, id = %shim.id, "shim died; cleaning up");
        let resp = shim::delete_dead(
            &self.inv,
            &shim.binary,
            &shim.namespace,
            &shim.id,
            &shim.bundle,
        )
        .await;
        self.reap_shim(&shim.bundle);
        shim.log_stop.cancel();
        let bundle = shim.bundle.clone();
        if let Err(e) = crate::blocking(move || remove_bundle(&bundle)).await {
            tracing::warn!(cause = %hull_proto::errdefs::message(&e), "remove bundle of dead shim");
        }
        self.lock()
            .remove(&(shim.namespace.clone(), shim.id.clone()));
        let exited_at = Some(crate::timestamp(crate::now_nanos()));
        shim.dead.send_replace(Some(api::WaitResponse {
            exit_status: shim::DEAD_SHIM_STATUS,
            exited_at,
        }));
        self.publish_dead_exit(&shim.namespace, &shim.id, resp.pid, exited_at, true);
    }

    /// Reports a task whose shim died as exited with 255 (and, when its
    /// task record goes too, deleted), as containerd does.
    fn publish_dead_exit(
        &self,
        ns: &str,
        id: &str,
        pid: u32,
        exited_at: Option<prost_types::Timestamp>,
        deleted: bool,
    ) {
        let Ok(ns) = Namespace::new(ns) else { return };
        let exit = TaskExit {
            container_id: id.to_owned(),
            id: id.to_owned(),
            pid,
            exit_status: shim::DEAD_SHIM_STATUS,
            exited_at,
        };
        self.events.publish(&ns, "/tasks/exit", &exit);
        if deleted {
            let delete = TaskDelete {
                container_id: id.to_owned(),
                pid,
                exit_status: shim::DEAD_SHIM_STATUS,
                exited_at,
                id: id.to_owned(),
            };
            self.events.publish(&ns, "/tasks/delete", &delete);
        }
    }

    /// Finds the shims of a previous run: reconnects to live ones and
    /// cleans up after dead ones. Returns how many were reconnected.
    pub async fn restore(self: &Arc<Self>) -> usize {
        let dir = self.dir.clone();
        let found = crate::blocking(
            move || -> Result<Vec<(String, String, PathBuf)>, TaskError> {
                let mut out = Vec::new();
                let Ok(namespaces) = std::fs::read_dir(&dir) else {
                    return Ok(out);
                };
                for ns in namespaces.flatten() {
                    let Ok(ids) = std::fs::read_dir(ns.path()) else {
                        continue;
                    };
                    for id in ids.flatten() {
                        out.push((
                            ns.file_name().to_string_lossy().into_owned(),
                            id.file_name().to_string_lossy().into_owned(),
                            id.path(),
                        ));
                    }
                }
                Ok(out)
            },
        )
        .await
        .unwrap_or_default();
        let mut live = 0;
        for (ns, id, bundle) in found {
            // hulld names these directories after valid namespaces only.
            let Ok(namespace) = Namespace::new(&ns) else {
                continue;
            };
            let Some(shim) = self.live_shim_in(&namespace, &id, &bundle).await else {
                // Nothing answers: clean up as after a crash, reporting the
                // exit only if a shim had been started.
                let had_shim = bundle.join("address").exists();
                self.cleanup_unreachable(&ns, &id, &bundle, had_shim).await;
                continue;
            };
            // A shim whose task was deleted just before hulld went down has
            // nothing left to serve: finish the delete.
            let state = shim
                .call::<_, api::StateResponse>(
                    "State",
                    &api::StateRequest {
                        id: id.clone(),
                        exec_id: String::new(),
                    },
                )
                .await;
            if matches!(&state, Err(e) if e.kind() == Kind::NotFound) {
                tracing::info!(namespace = %ns, %id, "shim without a task; shutting it down");
                // Not `now`: a pod's shim still serves its other containers.
                shim.shutdown(false).await;
                shim.log_stop.cancel();
                let b = bundle.clone();
                if let Err(e) = crate::blocking(move || remove_bundle(&b)).await {
                    tracing::warn!(cause = %hull_proto::errdefs::message(&e), "remove bundle");
                }
                continue;
            }
            tracing::info!(namespace = %ns, %id, "reconnected to shim");
            self.lock().insert((ns, id), shim.clone());
            self.watch(shim);
            live += 1;
        }
        live
    }

    async fn cleanup_unreachable(&self, ns: &str, id: &str, bundle: &Path, had_shim: bool) {
        let mut pid = 0;
        if let Some(binary) = read_shim_binary(bundle).filter(|_| had_shim) {
            pid = shim::delete_dead(&self.inv, &binary, ns, id, bundle)
                .await
                .pid;
        }
        let b = bundle.to_owned();
        if let Err(e) = crate::blocking(move || remove_bundle(&b)).await {
            tracing::warn!(cause = %hull_proto::errdefs::message(&e), "remove stale bundle");
        }
        if had_shim {
            tracing::warn!(namespace = %ns, %id, "shim gone while hulld was down; task reported exited");
            let exited_at = Some(crate::timestamp(crate::now_nanos()));
            self.publish_dead_exit(ns, id, pid, exited_at, false);
        }
    }
}

struct CreatingGuard<'a> {
    mgr: &'a TaskManager,
    key: Key,
}

impl Drop for CreatingGuard<'_> {
    fn drop(&mut self) {
        self.mgr
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Makes hulld the subreaper of the shims it starts, so that a shim that
/// exits is reaped by hulld even where init does not reap orphans.
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(cause = %e, "cannot become a subreaper; exited shims may linger as zombies");
    }
}

/// Whether the spec's root is the bundle's own `rootfs` (relative), which
/// only exists when something is mounted there.
fn spec_root_is_bundle(spec: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Root {
        #[serde(default)]
        path: String,
    }
    // The client's document: read the one field, loosely.
    let root = hull_oci::document::Object::parse(spec)
        .ok()
        .and_then(|doc| doc.get::<Root>("root").ok().flatten());
    root.is_none_or(|r| !r.path.starts_with('/'))
}
