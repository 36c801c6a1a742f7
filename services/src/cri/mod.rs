//! Kubernetes CRI (`runtime.v1`) on hulld's socket: the kubelet's (and
//! crictl's) RuntimeService and ImageService.
//!
//! A client of hulld's own services and stores, like any other: image
//! records through [`ImagesService`], pulls through the distribution
//! module's [`Puller`], containers, snapshots and tasks through their
//! services (called in process with the namespace header). Its objects
//! live in the `k8s.io` namespace, as containerd's CRI keeps them, so that
//! `ctr -n k8s.io containers ls` shows them.
//!
//! One file per group of calls: [`images`] (ImageService), [`runtime`]
//! (the RuntimeService trait, dispatching), [`sandbox`] (pods),
//! [`container`] (containers), [`exec`] (ExecSync and the streaming
//! calls' URLs), [`stats`]; beside them [`store`] (the records and what
//! they persist), [`names`] (name reservations), [`spec`] (OCI specs),
//! [`pause`] (the built-in pause's root) and [`stream`] (the server the
//! streaming URLs point at, and the protocols it speaks).

pub mod container;
pub mod exec;
pub mod images;
pub mod names;
mod ops;
pub mod pause;
pub mod runtime;
pub mod sandbox;
pub mod spec;
pub mod stats;
pub mod store;
pub mod stream;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hull_proto::errdefs::Kind;
use tonic::Status;

use crate::api::containers::ContainersService;
use crate::api::images::ImagesService;
use crate::api::snapshots::SnapshotsService;
use crate::api::tasks::TasksService;
use crate::config::CriConfig;
use crate::distribution::pull::Puller;
use crate::events::Exchange;
use crate::metadata::MetaDb;

/// The namespace CRI's objects live in.
pub const NAMESPACE: &str = "k8s.io";

/// The runtime CRI's containers run with.
pub const RUNTIME: &str = "io.containerd.runc.v2";

/// The snapshotter CRI's containers use.
pub const SNAPSHOTTER: &str = "overlayfs";

/// What CRI is built from.
#[derive(Debug)]
pub struct Parts {
    /// The metadata DB (image records' content).
    pub db: Arc<MetaDb>,
    /// Image records.
    pub images: Arc<ImagesService>,
    /// Pulls.
    pub puller: Arc<Puller>,
    /// Container records.
    pub containers: Arc<ContainersService>,
    /// Tasks.
    pub tasks: Arc<TasksService>,
    /// Snapshots.
    pub snapshots: Arc<SnapshotsService>,
    /// Events (task exits).
    pub events: Exchange,
    /// `[cri]`.
    pub config: CriConfig,
    /// hulld's root (`<root>/cri` holds pod files).
    pub root: PathBuf,
    /// hulld's state dir (`<state>/cri` holds namespaces and shm).
    pub state: PathBuf,
    /// The hull-shim binary (the built-in pause).
    pub shim_binary: Option<PathBuf>,
}

/// What every CRI call shares.
#[derive(Debug)]
pub struct Cri {
    db: Arc<MetaDb>,
    images: Arc<ImagesService>,
    puller: Arc<Puller>,
    containers: Arc<ContainersService>,
    tasks: Arc<TasksService>,
    snapshots: Arc<SnapshotsService>,
    events: Exchange,
    config: CriConfig,
    /// Where the default snapshotter keeps its layers (ImageFsInfo).
    snapshots_root: PathBuf,
    /// Per-pod files (hostname, hosts, resolv.conf): `<root>/cri/sandboxes`.
    pods_root: PathBuf,
    /// Per-pod runtime state (netns, shm): `<state>/cri`.
    pods_state: PathBuf,
    /// CNI for pods: configs from `[cri] cni_conf_dir`.
    cni: hull_cni::Cni,
    shim_binary: Option<PathBuf>,
    /// The pod CIDR the kubelet last set.
    pod_cidr: Mutex<String>,
    ns: hull_proto::identifiers::Namespace,
    store: store::Store,
    names: names::Names,
    streams: stream::Server,
    /// What the built-in pause needs from the host, found once.
    pause_libraries: std::sync::OnceLock<Result<Vec<PathBuf>, String>>,
    /// The lowest oom_score_adj hulld may give (its own).
    oom_floor: i32,
    /// Containers the kernel OOM-killed, until their exit is recorded.
    ooms: Mutex<std::collections::HashSet<String>>,
    /// The last CPU sample of each container and pod (rates).
    cpu_samples: Mutex<std::collections::HashMap<String, (i64, u64)>>,
    /// A writer held on the stdin FIFO of each container attached to with
    /// stdin that is not `stdin_once`, so that a client leaving does not
    /// close the container's stdin.
    stdin_keepers: Mutex<std::collections::HashMap<String, std::fs::File>>,
}

impl Cri {
    /// CRI over hulld's stores and services.
    ///
    /// # Errors
    /// When the streaming server cannot listen.
    pub async fn new(parts: Parts) -> Result<Arc<Cri>, String> {
        let ns = hull_proto::identifiers::Namespace::new(NAMESPACE).map_err(|e| e.to_string())?;
        let cni = hull_cni::Cni {
            plugin_dirs: parts.config.cni_bin_dirs.clone(),
            conf_dir: parts.config.cni_conf_dir.clone(),
            state_dir: parts.state.join("cri").join("cni"),
        };
        let streams = stream::Server::bind(&parts.config)
            .await
            .map_err(|e| format!("streaming server: {e}"))?;
        Ok(Arc::new(Cri {
            db: parts.db,
            images: parts.images,
            puller: parts.puller,
            containers: parts.containers,
            tasks: parts.tasks,
            snapshots: parts.snapshots,
            events: parts.events,
            snapshots_root: parts.root.join("snapshots").join(SNAPSHOTTER),
            pods_root: parts.root.join("cri").join("sandboxes"),
            pods_state: parts.state.join("cri"),
            cni,
            shim_binary: parts.shim_binary,
            config: parts.config,
            pod_cidr: Mutex::new(String::new()),
            ns,
            store: store::Store::default(),
            names: names::Names::default(),
            streams,
            pause_libraries: std::sync::OnceLock::new(),
            oom_floor: spec::own_oom_score(),
            ooms: Mutex::new(Default::default()),
            cpu_samples: Mutex::new(Default::default()),
            stdin_keepers: Mutex::new(Default::default()),
        }))
    }

    /// Loads the records of a previous run, then follows task exits and
    /// serves the streaming URLs until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        if let Err(e) = self.restore().await {
            tracing::warn!(error = %e.message(), "CRI could not load its records");
        }
        let exits = tokio::spawn(self.clone().follow_exits(shutdown.clone()));
        self.streams.serve(self.clone(), shutdown).await;
        let _ = exits.await;
    }
}

/// A request to one of hulld's services in CRI's namespace.
pub(crate) fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = NAMESPACE.parse() {
        r.metadata_mut().insert(hull_proto::headers::NAMESPACE, v);
    }
    r
}

/// A status of `kind`.
pub(crate) fn status_of(kind: Kind, msg: impl Into<String>) -> Status {
    hull_proto::errdefs::status(kind, msg.into())
}

/// The kind of a service's status.
pub(crate) fn kind_of(s: &Status) -> Kind {
    Kind::from_code(s.code() as i32)
}

/// Runs blocking work (files, mounts, CNI plugins) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(status_of(
            Kind::Unknown,
            format!("blocking task failed: {e}"),
        ))
    })
}

/// A new 64-hex id, as containerd's CRI makes them.
pub(crate) fn new_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        // Unreachable on Linux; still unique enough within one daemon.
        use sha2::Digest;
        let seed = format!("{}-{:?}", crate::now_nanos(), std::thread::current().id());
        b.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes()));
    }
    hex_string(&b)
}

fn hex_string(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// A protobuf timestamp as nanoseconds since the epoch (CRI's times).
pub(crate) fn nanos(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(t.nanos))
}
