//! `containerd.task.v2.Task` served over ttrpc: the shim's task service.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use hull_oci::document::Object;
use hull_proto::containerd::events::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIo, TaskOom, TaskPaused,
    TaskResumed, TaskStart,
};
use hull_proto::containerd::runc::v1::ProcessDetails;
use hull_proto::containerd::task::v2 as api;
use hull_proto::containerd::v1::types::{ProcessInfo, Status};
use hull_proto::errdefs::{self, Classify, Kind};
use hull_proto::headers::START_AT_CREATE;
use hull_snapshots::mount::{self, Mount};
use hull_ttrpc::server::{unary, unimplemented, BoxFuture};
use hull_ttrpc::{Context, Service};
use prost::Name;
use tokio::sync::watch;

use crate::events::{timestamp, Publisher};
use crate::io::{ConsoleSocket, Owner, ProcessIo, StdioPaths};
use crate::process::{Container, Process};
use crate::reaper::{Exit, Monitor};
use crate::runc::{CallIo, Runc, RuncError, Spawn};
use crate::stats;

/// How long an exit waits for the process's output to be copied out.
const OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a task request failed.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// No container or process by that id.
    #[error("{what} {id} not found")]
    NotFound {
        /// "container" or "process".
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The id is taken.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// "container" or "exec".
        what: &'static str,
        /// The id.
        id: String,
    },
    /// The process is in the wrong state.
    #[error("process {id} is {state}: cannot {op}")]
    State {
        /// Container or exec id.
        id: String,
        /// Its state.
        state: &'static str,
        /// What was asked.
        op: &'static str,
    },
    /// A process that already exited.
    #[error("process {id} already finished")]
    Finished {
        /// Container or exec id.
        id: String,
    },
    /// A request field is invalid.
    #[error("invalid {field}")]
    Invalid {
        /// The field.
        field: &'static str,
    },
    /// The OCI runtime failed.
    #[error(transparent)]
    Runc(#[from] RuncError),
    /// Mounting or unmounting the rootfs failed.
    #[error("rootfs of {id}")]
    Mount {
        /// Container id.
        id: String,
        /// The mount error.
        #[source]
        source: hull_snapshots::SnapshotError,
    },
    /// A file or pipe operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The operation is not supported.
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    /// An operation on a pause the shim started itself failed.
    #[error(transparent)]
    Pause(#[from] crate::native::PauseError),
}

impl Classify for ShimError {
    fn kind(&self) -> Kind {
        match self {
            ShimError::NotFound { .. } | ShimError::Finished { .. } => Kind::NotFound,
            ShimError::AlreadyExists { .. } => Kind::AlreadyExists,
            ShimError::State { .. } => Kind::FailedPrecondition,
            ShimError::Invalid { .. } => Kind::InvalidArgument,
            ShimError::Runc(e) => e.kind(),
            ShimError::Mount { source, .. } => source.kind(),
            ShimError::Io { .. } => Kind::Unknown,
            ShimError::Unsupported(_) => Kind::NotImplemented,
            ShimError::Pause(e) => e.kind(),
        }
    }
}

type Result<T, E = ShimError> = std::result::Result<T, E>;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ShimError {
    let path = path.to_owned();
    move |source| ShimError::Io { op, path, source }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Created => "created",
        Status::Running => "running",
        Status::Stopped => "stopped",
        Status::Paused => "paused",
        Status::Pausing => "pausing",
        Status::Unknown => "unknown",
    }
}

/// Where the shim keeps its state and how it reaches the daemon.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    /// Namespace of every container in this shim.
    pub namespace: String,
    /// Default runtime state root (`--root` of runc).
    pub runc_root: PathBuf,
}

struct State {
    containers: HashMap<String, Container>,
    /// Exits of pids no process claimed yet: a process can exit before the
    /// runtime call that started it returns its pid.
    unclaimed: VecDeque<Exit>,
}

/// How many unclaimed exits to remember.
const UNCLAIMED: usize = 256;

/// The task service of one shim.
pub struct TaskService {
    config: ShimConfig,
    monitor: Monitor,
    publisher: Publisher,
    state: Mutex<State>,
    /// Set when Shutdown lets the shim exit.
    shutdown: watch::Sender<bool>,
}

impl TaskService {
    /// A service publishing through `publisher`; starts consuming exits.
    pub fn new(config: ShimConfig, monitor: Monitor, publisher: Publisher) -> Arc<TaskService> {
        let svc = Arc::new(TaskService {
            config,
            monitor: monitor.clone(),
            publisher,
            state: Mutex::new(State {
                containers: HashMap::new(),
                unclaimed: VecDeque::new(),
            }),
            shutdown: watch::channel(false).0,
        });
        let mut rx = monitor.subscribe();
        let weak = Arc::downgrade(&svc);
        tokio::spawn(async move {
            loop {
                let exit = match rx.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(n, "exit monitor fell behind");
                        continue;
                    }
                    Err(_) => return,
                };
                let Some(svc) = weak.upgrade() else { return };
                svc.on_exit(exit);
            }
        });
        svc
    }

    /// Resolves when Shutdown allowed the shim to exit.
    pub async fn wait_shutdown(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish<M: Name>(&self, topic: &str, event: &M) {
        self.publisher.publish(&self.config.namespace, topic, event);
    }

    /// Marks the process with this pid exited and publishes its exit.
    /// (Once its output is copied out, for at most [`OUTPUT_DRAIN`].)
    ///
    /// When the init of a container without a PID namespace of its own
    /// exits, its other processes would live on (no namespace dies with
    /// it), so they are killed first, as containerd's shim does; the exit
    /// is recorded once that is done.
    fn on_exit(self: &Arc<Self>, exit: Exit) {
        let kill_all = {
            let state = self.lock();
            state.containers.values().find_map(|c| {
                (c.kill_all_on_exit && c.init.pid == exit.pid && c.init.exit().is_none())
                    .then(|| (c.id.clone(), c.runc.clone(), c.native.clone()))
            })
        };
        // Its output still in the pipes is copied out (to a log file, or
        // the client's FIFOs) before the exit is known: whoever waits for
        // it then finds all of it written. A process whose output another
        // process keeps open is waited for only so long.
        let io = {
            let state = self.lock();
            state.containers.values().find_map(|c| {
                std::iter::once(&c.init)
                    .chain(c.execs.values())
                    .find(|p| p.pid == exit.pid && p.exit().is_none())
                    .and_then(|p| p.io.clone())
            })
        };
        let pending = io.filter(|io| !io.finished());
        if kill_all.is_none() && pending.is_none() {
            self.record_exit(exit);
            return;
        }
        let svc = self.clone();
        tokio::spawn(async move {
            if let Some((id, runc, native)) = kill_all {
                let killed = match native {
                    Some(n) => n
                        .kill(libc::SIGKILL as u32, true, false)
                        .map_err(ShimError::from),
                    None => runc
                        .kill(&id, libc::SIGKILL as u32, true)
                        .await
                        .map_err(ShimError::from),
                };
                if let Err(e) = killed {
                    tracing::warn!(container_id = %id, cause = %errdefs::message(&e), "kill the processes left after init exited");
                }
            }
            if let Some(io) = pending {
                let deadline = tokio::time::Instant::now() + OUTPUT_DRAIN;
                while !io.finished() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
            svc.record_exit(exit);
        });
    }

    fn record_exit(&self, exit: Exit) {
        let mut state = self.lock();
        let owner = state.containers.values_mut().find_map(|c| {
            let id = c.id.clone();
            std::iter::once(&mut c.init)
                .chain(c.execs.values_mut())
                .find(|p| p.pid == exit.pid && p.exit().is_none())
                .map(|p| {
                    p.set_exited(exit);
                    (id, p.exec_id.clone())
                })
        });
        match owner {
            Some((id, exec_id)) => {
                drop(state);
                tracing::info!(container_id = %id, pid = exit.pid, status = exit.status, "process exited");
                self.publish_exit(&id, &exec_id, exit);
            }
            None => {
                if state.unclaimed.len() >= UNCLAIMED {
                    state.unclaimed.pop_front();
                }
                state.unclaimed.push_back(exit);
            }
        }
    }

    /// Records the pid of a started process, and its exit if the reaper got
    /// there first.
    fn set_pid(&self, id: &str, exec_id: &str, pid: u32, status: Status) -> Option<Exit> {
        let mut state = self.lock();
        let early = state
            .unclaimed
            .iter()
            .position(|e| e.pid == pid)
            .and_then(|i| state.unclaimed.remove(i));
        let p = state.containers.get_mut(id)?.process_mut(exec_id)?;
        p.pid = pid;
        // A process can exit while the runtime call that started it is
        // still returning; its recorded exit wins over the new state.
        if p.exit().is_none() {
            p.status = status;
        }
        if let Some(exit) = early {
            p.set_exited(exit);
        }
        early
    }

    fn publish_exit(&self, id: &str, exec_id: &str, exit: Exit) {
        self.publish(
            "/tasks/exit",
            &TaskExit {
                container_id: id.to_owned(),
                id: if exec_id.is_empty() {
                    id.to_owned()
                } else {
                    exec_id.to_owned()
                },
                pid: exit.pid,
                exit_status: exit.status,
                exited_at: Some(timestamp(exit.at)),
            },
        );
    }

    fn owner(&self, id: &str) -> Owner {
        Owner {
            namespace: self.config.namespace.clone(),
            id: id.to_owned(),
        }
    }

    fn runc_for(
        &self,
        id: &str,
        bundle: &Path,
        options: Option<&prost_types::Any>,
    ) -> Result<Runc> {
        let mut runc = Runc {
            binary: "runc".to_owned(),
            root: self.config.runc_root.clone(),
            log: bundle.join("log.json"),
            systemd_cgroup: false,
            no_pivot: false,
            monitor: self.monitor.clone(),
        };
        let opts = match options {
            Some(any) => hull_proto::runtime_options::runc_options(any)
                .map_err(|_| ShimError::Invalid { field: "options" })?,
            None => None,
        };
        if let Some(opts) = opts {
            if !opts.binary_name.is_empty() {
                runc.binary = opts.binary_name;
            }
            if !opts.root.is_empty() {
                runc.root = PathBuf::from(opts.root).join(&self.config.namespace);
            }
            runc.systemd_cgroup = opts.systemd_cgroup;
            runc.no_pivot = opts.no_pivot_root;
        }
        tracing::debug!(container_id = %id, binary = %runc.binary, "runtime chosen");
        Ok(runc)
    }

    /// Create; with `and_start` (the caller's [`START_AT_CREATE`]) the init
    /// process is started too, by the same runtime call.
    async fn create(
        &self,
        req: api::CreateTaskRequest,
        and_start: bool,
    ) -> Result<api::CreateTaskResponse> {
        let id = req.id.clone();
        if hull_proto::identifiers::ContainerId::new(&id).is_err() {
            return Err(ShimError::Invalid { field: "id" });
        }
        if self.lock().containers.contains_key(&id) {
            return Err(ShimError::AlreadyExists {
                what: "container",
                id,
            });
        }
        let began = std::time::Instant::now();
        let bundle = PathBuf::from(&req.bundle);
        let runc = self.runc_for(&id, &bundle, req.options.as_ref())?;
        let rootfs = bundle.join("rootfs");
        let mounts: Vec<Mount> = req.rootfs.iter().cloned().map(Mount::from).collect();
        let mounted = !mounts.is_empty();
        {
            let (rootfs, id, bundle) = (rootfs.clone(), id.clone(), bundle.clone());
            let monitor = self.monitor.clone();
            blocking(move || -> Result<()> {
                std::fs::create_dir_all(&rootfs).map_err(io_err("create", &rootfs))?;
                if !mounts.is_empty() {
                    // Long overlay options are mounted by a `mount` child
                    // that std waits for itself.
                    monitor
                        .without_reaping(|| mount::mount_all(&mounts, &rootfs))
                        .map_err(|source| ShimError::Mount { id, source })?;
                }
                adjust_spec(&bundle.join("config.json"), "process", None)
            })
            .await?;
        }
        // The built-in pause, started with its create and without stdio,
        // is started by the shim itself (see crate::native).
        let native_wanted = and_start
            && !req.terminal
            && req.stdin.is_empty()
            && req.stdout.is_empty()
            && req.stderr.is_empty();
        let (kill_all_on_exit, native_cgroup, direct_start) = {
            let config = bundle.join("config.json");
            blocking(move || {
                // One read of the spec for all three questions.
                let Ok(text) = std::fs::read(&config) else {
                    return Ok((true, None, false));
                };
                let native = native_wanted
                    .then(|| crate::native::plan(&text))
                    .flatten()
                    .map(|p| p.cgroup);
                Ok((
                    shares_pid_namespace(&text),
                    native,
                    !crate::runc::has_poststart_hooks(&text),
                ))
            })
            .await?
        };
        // Undo the mount if anything below fails.
        let guard = UnmountGuard(mounted.then(|| rootfs.clone()));
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let pid_file = bundle.join("init.pid");
        let prepared = began.elapsed();
        let (io, native) = match native_cgroup {
            Some(cgroup) => {
                let pause = crate::native::Pause::start(&self.monitor, &bundle, &cgroup).await?;
                (None, Some(Arc::new(pause)))
            }
            None => {
                let io = self
                    .spawn_process(&runc, &id, &stdio, &pid_file, |runc, spawn| {
                        let (id, bundle) = (id.clone(), bundle.clone());
                        async move {
                            if and_start {
                                runc.run_detached(&id, &bundle, spawn).await
                            } else {
                                runc.create(&id, &bundle, spawn).await
                            }
                        }
                    })
                    .await?;
                (Some(io), None)
            }
        };
        let pid = match &native {
            Some(pause) => pause.pid,
            None => {
                blocking({
                    let pid_file = pid_file.clone();
                    move || crate::runc::read_pid(&pid_file).map_err(io_err("read", &pid_file))
                })
                .await?
            }
        };
        std::mem::forget(guard);
        tracing::debug!(
            container_id = %id,
            prepare_ms = prepared.as_secs_f64() * 1e3,
            runtime_ms = (began.elapsed() - prepared).as_secs_f64() * 1e3,
            and_start,
            native = native.is_some(),
            "create stages"
        );
        let mut init = Process::new(String::new(), stdio.clone(), Vec::new());
        init.io = io.map(Arc::new);
        let container = Container {
            id: id.clone(),
            bundle: bundle.clone(),
            mounted,
            kill_all_on_exit,
            runc,
            native,
            init,
            execs: Default::default(),
            started_by_create: and_start,
            direct_start,
            deleting: false,
        };
        self.lock().containers.insert(id.clone(), container);
        let status = if and_start {
            Status::Running
        } else {
            Status::Created
        };
        let early = self.set_pid(&id, "", pid, status);
        tracing::info!(container_id = %id, pid, "task created");
        let (publisher, ns, cid) = (
            self.publisher.clone(),
            self.config.namespace.clone(),
            id.clone(),
        );
        let watched = crate::oom::watch(pid, move || {
            tracing::info!(container_id = %cid, "out of memory");
            publisher.publish(
                &ns,
                "/tasks/oom",
                &TaskOom {
                    container_id: cid.clone(),
                },
            );
        });
        if let Err(e) = watched {
            tracing::warn!(container_id = %id, cause = %e, "cannot watch for OOM");
        }
        self.publish(
            "/tasks/create",
            &TaskCreate {
                container_id: id.clone(),
                bundle: req.bundle,
                rootfs: req.rootfs,
                io: Some(TaskIo {
                    stdin: stdio.stdin,
                    stdout: stdio.stdout,
                    stderr: stdio.stderr,
                    terminal: stdio.terminal,
                }),
                checkpoint: String::new(),
                pid,
            },
        );
        if and_start {
            // Events in the order clients know: create, start, exit.
            self.publish(
                "/tasks/start",
                &TaskStart {
                    container_id: id.clone(),
                    pid,
                },
            );
            tracing::info!(container_id = %id, pid, "task started");
        }
        if let Some(exit) = early {
            self.publish_exit(&id, "", exit);
        }
        Ok(api::CreateTaskResponse { pid })
    }

    /// Runs `call` (runc create or exec) with the process's stdio wired up.
    async fn spawn_process<F, Fut>(
        &self,
        runc: &Runc,
        id: &str,
        stdio: &StdioPaths,
        pid_file: &Path,
        call: F,
    ) -> Result<ProcessIo>
    where
        F: FnOnce(Runc, Spawn) -> Fut,
        Fut: std::future::Future<Output = Result<(), RuncError>>,
    {
        if stdio.terminal {
            let socket =
                ConsoleSocket::new().map_err(io_err("listen", Path::new("console socket")))?;
            let spawn = Spawn {
                pid_file: pid_file.to_owned(),
                console_socket: Some(socket.path().to_owned()),
                io: CallIo::Inherit {
                    stdin: std::process::Stdio::null(),
                    stdout: std::process::Stdio::null(),
                    stderr: std::process::Stdio::null(),
                },
            };
            call(runc.clone(), spawn).await?;
            let master = socket
                .receive()
                .map_err(io_err("receive console", socket.path()))?;
            ProcessIo::with_console(stdio, master).map_err(io_err("open", Path::new(&stdio.stdout)))
        } else {
            let (io, child) = ProcessIo::open(stdio, &self.owner(id))
                .map_err(io_err("open stdio", Path::new(&stdio.stdout)))?;
            let spawn = Spawn {
                pid_file: pid_file.to_owned(),
                console_socket: None,
                io: CallIo::Inherit {
                    stdin: child.stdin,
                    stdout: child.stdout,
                    stderr: child.stderr,
                },
            };
            call(runc.clone(), spawn).await?;
            Ok(io)
        }
    }
}

impl TaskService {
    /// The runtime of container `id`, and its pause when the shim started
    /// that itself.
    fn container_runc(&self, id: &str) -> Result<(Runc, Option<Arc<crate::native::Pause>>)> {
        let state = self.lock();
        let c = state
            .containers
            .get(id)
            .ok_or_else(|| not_found("container", id))?;
        Ok((c.runc.clone(), c.native.clone()))
    }

    async fn start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let (runc, bundle, status, spec, stdio, direct) = {
            let mut state = self.lock();
            let c = state
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found("container", &req.id))?;
            if req.exec_id.is_empty() && std::mem::take(&mut c.started_by_create) {
                // Started already, maybe even ended: it did start.
                return Ok(api::StartResponse { pid: c.init.pid });
            }
            let p = c
                .process(&req.exec_id)
                .ok_or_else(|| not_found("process", &req.exec_id))?;
            if !req.exec_id.is_empty() && c.init.status != Status::Running {
                return Err(ShimError::State {
                    id: req.id.clone(),
                    state: status_name(c.init.status),
                    op: "exec",
                });
            }
            (
                c.runc.clone(),
                c.bundle.clone(),
                p.status,
                p.spec.clone(),
                p.stdio.clone(),
                c.direct_start,
            )
        };
        let who = if req.exec_id.is_empty() {
            &req.id
        } else {
            &req.exec_id
        };
        if status != Status::Created
            || (!req.exec_id.is_empty() && self.pid_of(&req.id, &req.exec_id) != 0)
        {
            return Err(ShimError::State {
                id: who.clone(),
                state: status_name(status),
                op: "start",
            });
        }
        if req.exec_id.is_empty() {
            let pid = self.pid_of(&req.id, "");
            runc.start(&req.id, pid, direct).await?;
            let early = self.set_pid(&req.id, "", pid, Status::Running);
            self.publish(
                "/tasks/start",
                &TaskStart {
                    container_id: req.id.clone(),
                    pid,
                },
            );
            if let Some(exit) = early {
                self.publish_exit(&req.id, "", exit);
            }
            tracing::info!(container_id = %req.id, pid, "task started");
            return Ok(api::StartResponse { pid });
        }
        // An exec runs only now, as in containerd: Exec just records it.
        let terminal = stdio.terminal;
        let spec_path = bundle.join(format!("{}.json", req.exec_id));
        let pid_file = bundle.join(format!("{}.pid", req.exec_id));
        blocking({
            let spec_path = spec_path.clone();
            move || {
                std::fs::write(&spec_path, &spec).map_err(io_err("write", &spec_path))?;
                adjust_spec(&spec_path, "", Some(terminal))
            }
        })
        .await?;
        let id = req.id.clone();
        let spawned = self
            .spawn_process(&runc, &req.id, &stdio, &pid_file, |runc, spawn| {
                let (id, spec_path) = (id.clone(), spec_path.clone());
                async move { runc.exec(&id, &spec_path, spawn).await }
            })
            .await;
        let pid = match spawned {
            Ok(io) => {
                let pid = blocking({
                    let pid_file = pid_file.clone();
                    move || crate::runc::read_pid(&pid_file).map_err(io_err("read", &pid_file))
                })
                .await?;
                if let Some(p) = self
                    .lock()
                    .containers
                    .get_mut(&req.id)
                    .and_then(|c| c.execs.get_mut(&req.exec_id))
                {
                    p.io = Some(Arc::new(io));
                }
                pid
            }
            Err(e) => {
                // A failed exec is gone; its id may be reused.
                if let Some(c) = self.lock().containers.get_mut(&req.id) {
                    c.execs.remove(&req.exec_id);
                }
                return Err(e);
            }
        };
        let _ = std::fs::remove_file(&spec_path);
        let _ = std::fs::remove_file(&pid_file);
        let early = self.set_pid(&req.id, &req.exec_id, pid, Status::Running);
        self.publish(
            "/tasks/exec-started",
            &TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid,
            },
        );
        if let Some(exit) = early {
            self.publish_exit(&req.id, &req.exec_id, exit);
        }
        Ok(api::StartResponse { pid })
    }

    fn pid_of(&self, id: &str, exec_id: &str) -> u32 {
        self.lock()
            .containers
            .get(id)
            .and_then(|c| c.process(exec_id))
            .map_or(0, |p| p.pid)
    }

    fn exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        if hull_proto::identifiers::ContainerId::new(&req.exec_id).is_err() {
            return Err(ShimError::Invalid { field: "exec_id" });
        }
        let spec = req
            .spec
            .map(|a| a.value)
            .ok_or(ShimError::Invalid { field: "spec" })?;
        {
            let mut state = self.lock();
            let c = state
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found("container", &req.id))?;
            if c.init.status != Status::Running && c.init.status != Status::Created {
                return Err(ShimError::State {
                    id: req.id.clone(),
                    state: status_name(c.init.status),
                    op: "exec",
                });
            }
            if c.native.is_some() {
                return Err(ShimError::Unsupported("exec in the built-in pause"));
            }
            if c.execs.contains_key(&req.exec_id) {
                return Err(ShimError::AlreadyExists {
                    what: "exec",
                    id: req.exec_id,
                });
            }
            let stdio = StdioPaths {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
            };
            c.execs.insert(
                req.exec_id.clone(),
                Process::new(req.exec_id.clone(), stdio, spec),
            );
        }
        self.publish(
            "/tasks/exec-added",
            &TaskExecAdded {
                container_id: req.id,
                exec_id: req.exec_id,
            },
        );
        Ok(())
    }

    async fn delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let mut state = self.lock();
            let c = state
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found("container", &req.id))?;
            let p = c
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| not_found("process", &req.exec_id))?;
            if p.pid != 0 && p.exit().is_none() {
                return Err(ShimError::State {
                    id: req.exec_id.clone(),
                    state: status_name(p.status),
                    op: "delete",
                });
            }
            let p = c
                .execs
                .remove(&req.exec_id)
                .ok_or_else(|| not_found("process", &req.exec_id))?;
            let exit = p.exit();
            return Ok(api::DeleteResponse {
                pid: p.pid,
                exit_status: exit.map_or(0, |e| e.status),
                exited_at: exit.map(|e| timestamp(e.at)),
            });
        }
        let (runc, native, status, rootfs, mounted) = {
            let mut state = self.lock();
            let c = state
                .containers
                .get_mut(&req.id)
                .filter(|c| !c.deleting)
                .ok_or_else(|| not_found("container", &req.id))?;
            match c.init.status {
                Status::Running | Status::Paused | Status::Pausing => {
                    return Err(ShimError::State {
                        id: req.id.clone(),
                        state: status_name(c.init.status),
                        op: "delete",
                    })
                }
                _ => {}
            }
            c.deleting = true;
            (
                c.runc.clone(),
                c.native.clone(),
                c.init.status,
                c.rootfs(),
                c.mounted,
            )
        };
        let result = self
            .delete_init(&req, (runc, native), status, rootfs, mounted)
            .await;
        if result.is_err() {
            if let Some(c) = self.lock().containers.get_mut(&req.id) {
                c.deleting = false;
            }
        }
        result
    }

    /// The rest of an init process's delete, once it is marked deleting.
    async fn delete_init(
        &self,
        req: &api::DeleteRequest,
        (runc, native): (Runc, Option<Arc<crate::native::Pause>>),
        status: Status,
        rootfs: PathBuf,
        mounted: bool,
    ) -> Result<api::DeleteResponse> {
        let created = status == Status::Created;
        if let Some(pause) = native {
            blocking(move || {
                pause.delete();
                Ok(())
            })
            .await?;
        } else if let Err(e) = runc.delete(&req.id, created).await {
            // The runtime may have lost the container already (its state is
            // under /run); what matters is that it is gone.
            if e.kind() != Kind::NotFound {
                return Err(e.into());
            }
        }
        if created {
            // The init process was killed by the forced delete; give the
            // reaper a moment so the exit status is the real one.
            let mut rx = self
                .lock()
                .containers
                .get(&req.id)
                .map(|c| c.init.exited.subscribe());
            if let Some(rx) = rx.as_mut() {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    rx.wait_for(|e| e.is_some()),
                )
                .await;
            }
        }
        if mounted {
            blocking(move || {
                mount::unmount(&rootfs).map_err(|source| ShimError::Mount {
                    id: String::new(),
                    source,
                })
            })
            .await?;
        }
        let c = self
            .lock()
            .containers
            .remove(&req.id)
            .ok_or_else(|| not_found("container", &req.id))?;
        let exit = c.init.exit();
        let resp = api::DeleteResponse {
            pid: c.init.pid,
            exit_status: exit.map_or(0, |e| e.status),
            exited_at: Some(timestamp(exit.map_or_else(SystemTime::now, |e| e.at))),
        };
        self.publish(
            "/tasks/delete",
            &TaskDelete {
                container_id: req.id.clone(),
                pid: resp.pid,
                exit_status: resp.exit_status,
                exited_at: resp.exited_at,
                id: req.id.clone(),
            },
        );
        tracing::info!(container_id = %req.id, "task deleted");
        Ok(resp)
    }

    async fn kill(&self, req: api::KillRequest) -> Result<()> {
        let (runc, native, pid, exited, status) = {
            let state = self.lock();
            let c = state
                .containers
                .get(&req.id)
                .ok_or_else(|| not_found("container", &req.id))?;
            let p = c
                .process(&req.exec_id)
                .ok_or_else(|| not_found("process", &req.exec_id))?;
            (
                c.runc.clone(),
                c.native.clone(),
                p.pid,
                p.exit().is_some(),
                p.status,
            )
        };
        let who = if req.exec_id.is_empty() {
            &req.id
        } else {
            &req.exec_id
        };
        if exited && !(req.all && req.exec_id.is_empty()) {
            return Err(ShimError::Finished { id: who.clone() });
        }
        if req.exec_id.is_empty() {
            match native {
                // An exited pause's pid is no longer its own: only the
                // rest of its cgroup is signalled then.
                Some(pause) => pause.kill(req.signal, req.all, !exited)?,
                None => runc.kill(&req.id, req.signal, req.all).await?,
            }
            return Ok(());
        }
        if pid == 0 || status == Status::Created {
            return Err(ShimError::State {
                id: who.clone(),
                state: "created",
                op: "kill",
            });
        }
        // The exec's pid is our unreaped child (it has no exit recorded),
        // so the pid cannot have been reused.
        let target = nix::unistd::Pid::from_raw(pid as i32);
        let sent = match nix::sys::signal::Signal::try_from(req.signal as i32) {
            Ok(sig) => nix::sys::signal::kill(target, sig).map_err(std::io::Error::from),
            Err(_) => {
                // SAFETY: kill(2) on that same pid. nix's Signal has no
                // real-time signals, which clients may send (SIGRTMIN+n).
                if unsafe { libc::kill(pid as i32, req.signal as i32) } == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        };
        sent.map_err(|source| ShimError::Io {
            op: "kill",
            path: PathBuf::from(format!("/proc/{pid}")),
            source,
        })
    }

    async fn wait(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let mut rx = {
            let state = self.lock();
            let c = state
                .containers
                .get(&req.id)
                .ok_or_else(|| not_found("container", &req.id))?;
            let p = c
                .process(&req.exec_id)
                .ok_or_else(|| not_found("process", &req.exec_id))?;
            p.exited.subscribe()
        };
        // The sender lives in the process; if it is deleted first the wait
        // reports what was last seen.
        let waited = rx.wait_for(|e| e.is_some()).await.map(|e| *e);
        let exit = match waited {
            Ok(e) => e,
            Err(_) => *rx.borrow(),
        };
        let Some(exit) = exit else {
            return Err(not_found("process", &req.exec_id));
        };
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)),
        })
    }

    fn state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let state = self.lock();
        let c = state
            .containers
            .get(&req.id)
            .ok_or_else(|| not_found("container", &req.id))?;
        let p = c
            .process(&req.exec_id)
            .ok_or_else(|| not_found("process", &req.exec_id))?;
        let exit = p.exit();
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() {
                c.id.clone()
            } else {
                p.exec_id.clone()
            },
            bundle: c.bundle.display().to_string(),
            pid: p.pid,
            status: p.status as i32,
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.map_or(0, |e| e.status),
            exited_at: exit.map(|e| timestamp(e.at)),
            exec_id: p.exec_id.clone(),
        })
    }

    async fn pids(&self, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let pids = match self.container_runc(&req.id)? {
            (_, Some(pause)) => pause.pids(),
            (runc, None) => runc.ps(&req.id).await?,
        };
        let execs: HashMap<u32, String> = {
            let state = self.lock();
            state
                .containers
                .get(&req.id)
                .map(|c| {
                    c.execs
                        .values()
                        .map(|p| (p.pid, p.exec_id.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let processes = pids
            .into_iter()
            .map(|pid| ProcessInfo {
                pid,
                info: execs.get(&pid).map(|exec_id| {
                    hull_proto::typeurl::pack(&ProcessDetails {
                        exec_id: exec_id.clone(),
                    })
                }),
            })
            .collect();
        Ok(api::PidsResponse { processes })
    }

    async fn pause(&self, id: &str, pause: bool) -> Result<()> {
        let (runc, native, status) = {
            let state = self.lock();
            let c = state
                .containers
                .get(id)
                .ok_or_else(|| not_found("container", id))?;
            (c.runc.clone(), c.native.clone(), c.init.status)
        };
        let want = if pause {
            Status::Running
        } else {
            Status::Paused
        };
        if status != want {
            return Err(ShimError::State {
                id: id.to_owned(),
                state: status_name(status),
                op: if pause { "pause" } else { "resume" },
            });
        }
        match native {
            Some(native) => blocking(move || Ok(native.freeze(pause)?)).await?,
            None if pause => runc.pause(id).await?,
            None => runc.resume(id).await?,
        }
        if let Some(c) = self.lock().containers.get_mut(id) {
            if c.init.exit().is_none() {
                c.init.status = if pause {
                    Status::Paused
                } else {
                    Status::Running
                };
            }
        }
        if pause {
            self.publish(
                "/tasks/paused",
                &TaskPaused {
                    container_id: id.to_owned(),
                },
            );
        } else {
            self.publish(
                "/tasks/resumed",
                &TaskResumed {
                    container_id: id.to_owned(),
                },
            );
        }
        Ok(())
    }

    fn process_io(&self, id: &str, exec_id: &str) -> Result<Option<Arc<ProcessIo>>> {
        let state = self.lock();
        let c = state
            .containers
            .get(id)
            .ok_or_else(|| not_found("container", id))?;
        let p = c
            .process(exec_id)
            .ok_or_else(|| not_found("process", exec_id))?;
        Ok(p.io.clone())
    }

    async fn update(&self, req: api::UpdateTaskRequest) -> Result<()> {
        let (runc, bundle) = {
            let state = self.lock();
            let c = state
                .containers
                .get(&req.id)
                .ok_or_else(|| not_found("container", &req.id))?;
            if c.native.is_some() {
                return Err(ShimError::Unsupported("updating the built-in pause"));
            }
            (c.runc.clone(), c.bundle.clone())
        };
        let resources = req
            .resources
            .ok_or(ShimError::Invalid { field: "resources" })?;
        let path = bundle.join("resources.json");
        blocking({
            let path = path.clone();
            move || std::fs::write(&path, &resources.value).map_err(io_err("write", &path))
        })
        .await?;
        let result = runc.update(&req.id, &path).await;
        let _ = std::fs::remove_file(&path);
        Ok(result?)
    }

    async fn stats(&self, req: api::StatsRequest) -> Result<api::StatsResponse> {
        let data = match self.container_runc(&req.id)? {
            (_, Some(pause)) => blocking(move || Ok(pause.stats())).await?,
            (runc, None) => runc.stats(&req.id).await?,
        };
        Ok(api::StatsResponse {
            stats: Some(hull_proto::typeurl::pack(&stats::metrics(&data))),
        })
    }

    fn connect(&self, req: api::ConnectRequest) -> api::ConnectResponse {
        let state = self.lock();
        api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: state.containers.get(&req.id).map_or(0, |c| c.init.pid),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    fn shutdown(&self, req: api::ShutdownRequest) {
        let empty = self.lock().containers.is_empty();
        if empty || req.now {
            tracing::info!("shutting down");
            self.shutdown.send_replace(true);
        }
    }
}

fn not_found(what: &'static str, id: &str) -> ShimError {
    ShimError::NotFound {
        what,
        id: id.to_owned(),
    }
}

/// Unmounts a rootfs when a create fails after mounting it.
struct UnmountGuard(Option<PathBuf>);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = mount::unmount(&path) {
                tracing::warn!(cause = %errdefs::message(&e), path = %path.display(), "unmount after failed create");
            }
        }
    }
}

/// Runs filesystem work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ShimError::Io {
            op: "join blocking task",
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// Adjusts a spec file before the runtime reads it, changing only the
/// fields named here and keeping every other byte's meaning:
/// - an `oomScoreAdj` below the shim's own is raised to the shim's own:
///   lowering the score needs CAP_SYS_RESOURCE, which a daemon may not
///   have; containerd's `restrict_oom_score_adj` clamps the same way;
/// - with `terminal` given (an exec), the process's `terminal` is set to
///   whether the client asked for one: runc reads only the spec once it
///   is given a process file, and refuses a console socket for a process
///   whose spec says no terminal.
///
/// `at` is the JSON object holding the process fields ("process" in a
/// spec, "" for a process spec).
fn adjust_spec(path: &Path, at: &str, terminal: Option<bool>) -> Result<()> {
    let Ok(text) = std::fs::read(path) else {
        return Ok(());
    };
    // Not an object: the runtime will say what is wrong with it.
    let Ok(mut doc) = Object::parse(&text) else {
        return Ok(());
    };
    let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut process = if at.is_empty() {
        doc.clone()
    } else {
        match doc.object(at) {
            Ok(Some(p)) => p,
            _ => return Ok(()),
        }
    };
    let mut changed = false;
    if let Ok(Some(score)) = process.get::<i64>("oomScoreAdj") {
        if score < own {
            tracing::debug!(score, own, "raising oomScoreAdj to the shim's own");
            process.set("oomScoreAdj", &own);
            changed = true;
        }
    }
    if let Some(terminal) = terminal {
        if process
            .get::<bool>("terminal")
            .ok()
            .flatten()
            .unwrap_or(false)
            != terminal
        {
            process.set("terminal", &terminal);
            changed = true;
        }
    }
    if !changed {
        return Ok(());
    }
    if at.is_empty() {
        doc = process;
    } else {
        doc.set(at, &process);
    }
    std::fs::write(path, doc.to_vec()).map_err(io_err("write", path))
}

/// One entry of `linux.namespaces`, read loosely: a type runc knows and
/// oci-spec may not is still a namespace.
#[derive(serde::Deserialize)]
struct NamespaceEntry {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    path: Option<String>,
}

/// Whether the container at `path` has no PID namespace of its own: none
/// in `linux.namespaces`, or one joined by path (another container's, the
/// host's). Its processes then outlive init unless killed. As containerd's
/// `ShouldKillAllOnExit`, a spec that cannot be read counts as sharing.
fn shares_pid_namespace(text: &[u8]) -> bool {
    let Ok(doc) = Object::parse(text) else {
        return true;
    };
    let namespaces: Vec<NamespaceEntry> = match doc.object("linux") {
        Ok(Some(linux)) => match linux.get("namespaces") {
            Ok(n) => n.unwrap_or_default(),
            Err(_) => return true,
        },
        Ok(None) => Vec::new(),
        Err(_) => return true,
    };
    !namespaces
        .iter()
        .any(|n| n.kind == "pid" && n.path.as_deref().unwrap_or("").is_empty())
}

fn to_status(e: ShimError) -> hull_ttrpc::Status {
    if e.kind() == Kind::Unknown {
        tracing::warn!(cause = %errdefs::message(&e), "task request failed");
    }
    errdefs::to_ttrpc(&e)
}

impl Service for TaskService {
    fn name(&self) -> &'static str {
        "containerd.task.v2.Task"
    }

    fn call(
        self: Arc<Self>,
        ctx: Context,
        method: String,
        payload: Vec<u8>,
    ) -> BoxFuture<Result<Vec<u8>, hull_ttrpc::Status>> {
        Box::pin(async move {
            let s = &self;
            // Decode, run the async method of the same name, encode.
            macro_rules! call {
                ($m:ident) => {
                    unary(payload, |r| async move { s.$m(r).await.map_err(to_status) }).await
                };
            }
            match method.as_str() {
                "State" => unary(payload, |r| async move { s.state(r).map_err(to_status) }).await,
                "Create" => {
                    let and_start = ctx.get(START_AT_CREATE) == Some("true");
                    unary(payload, |r| async move {
                        s.create(r, and_start).await.map_err(to_status)
                    })
                    .await
                }
                "Start" => call!(start),
                "Delete" => call!(delete),
                "Pids" => call!(pids),
                "Pause" => {
                    unary(payload, |r: api::PauseRequest| async move {
                        s.pause(&r.id, true).await.map_err(to_status)
                    })
                    .await
                }
                "Resume" => {
                    unary(payload, |r: api::ResumeRequest| async move {
                        s.pause(&r.id, false).await.map_err(to_status)
                    })
                    .await
                }
                "Checkpoint" => {
                    unary(payload, |_: api::CheckpointTaskRequest| async move {
                        Err::<(), _>(to_status(ShimError::Unsupported("checkpoint")))
                    })
                    .await
                }
                "Kill" => call!(kill),
                "Exec" => unary(payload, |r| async move { s.exec(r).map_err(to_status) }).await,
                "ResizePty" => {
                    unary(payload, |r: api::ResizePtyRequest| async move {
                        let io = s.process_io(&r.id, &r.exec_id).map_err(to_status)?;
                        // A process without a terminal has nothing to
                        // resize: a no-op, as in containerd.
                        match io {
                            Some(io) => io
                                .resize(r.width, r.height)
                                .map_err(io_err("resize", Path::new("console")))
                                .map_err(to_status),
                            None => Ok(()),
                        }
                    })
                    .await
                }
                "CloseIO" => {
                    unary(payload, |r: api::CloseIoRequest| async move {
                        if let Some(io) = s.process_io(&r.id, &r.exec_id).map_err(to_status)? {
                            if r.stdin {
                                io.close_stdin();
                            }
                        }
                        Ok(())
                    })
                    .await
                }
                "Update" => call!(update),
                "Wait" => call!(wait),
                "Stats" => call!(stats),
                "Connect" => unary(payload, |r| async move { Ok(s.connect(r)) }).await,
                "Shutdown" => {
                    unary(payload, |r| async move {
                        s.shutdown(r);
                        Ok(())
                    })
                    .await
                }
                _ => Err(unimplemented(self.name(), &method)),
            }
        })
    }
}
