//! Builds every component from the config and serves them on one socket.
//! Plain code with concrete types: reading it top to bottom is the startup
//! sequence.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use hull_proto::containerd::services::containers::v1::containers_server::ContainersServer;
use hull_proto::containerd::services::content::v1::content_server::ContentServer;
use hull_proto::containerd::services::diff::v1::diff_server::DiffServer;
use hull_proto::containerd::services::events::v1::events_server::EventsServer;
use hull_proto::containerd::services::images::v1::images_server::ImagesServer;
use hull_proto::containerd::services::introspection::v1::introspection_server::IntrospectionServer;
use hull_proto::containerd::services::leases::v1::leases_server::LeasesServer;
use hull_proto::containerd::services::namespaces::v1::namespaces_server::NamespacesServer;
use hull_proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;
use hull_proto::containerd::services::streaming::v1::streaming_server::StreamingServer;
use hull_proto::containerd::services::tasks::v1::tasks_server::TasksServer;
use hull_proto::containerd::services::transfer::v1::transfer_server::TransferServer;
use hull_proto::containerd::services::version::v1::version_server::VersionServer;
use hull_proto::grpc::health::v1::health_server::HealthServer;

use crate::api::containers::ContainersService;
use crate::api::content::ContentService;
use crate::api::diff::DiffService;
use crate::api::events::EventsService;
use crate::api::health::HealthService;
use crate::api::images::ImagesService;
use crate::api::introspection::{IntrospectionService, PluginInfo};
use crate::api::leases::LeasesService;
use crate::api::namespaces::NamespacesService;
use crate::api::snapshots::SnapshotsService;
use crate::api::streaming::{StreamingService, Streams};
use crate::api::tasks::TasksService;
use crate::api::transfer::TransferService;
use crate::api::ttrpc_events::TtrpcEvents;
use crate::api::version::VersionService;
use crate::api::MAX_MESSAGE_SIZE;
use crate::config::Config;
use crate::content::{ContentError, LocalContentStore};
use crate::distribution::pull::{Puller, Stores};
use crate::distribution::registry::Registries;
use crate::events::Exchange;
use crate::metadata::gc::{Collector, GcConfig};
use crate::metadata::{MetaDb, MetadataError};
use crate::snapshots::Snapshotters;
use crate::tasks::shim::Invocation;
use crate::tasks::TaskManager;
use hull_proto::runtime::v1::image_service_server::ImageServiceServer;
use hull_proto::runtime::v1::runtime_service_server::RuntimeServiceServer;
use hull_snapshots::local::{Driver, LocalSnapshotter};
use hull_snapshots::proxy::ProxySnapshotter;
use hull_snapshots::server::{SnapshotService, SnapshotsServer as StandaloneSnapshotsServer};
use hull_snapshots::{SnapshotError, Snapshotter};

/// HTTP/2 flow-control window per stream.
const STREAM_WINDOW: u32 = 8 << 20;

/// The runtime clients ask for when they name none (ctr's default).
const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";

/// How long shutdown waits for connected clients to hang up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// `[grpc]`: the socket clients dial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Unix socket path.
    pub address: PathBuf,
    /// Owner uid of the socket; 0 keeps root.
    pub uid: u32,
    /// Owner gid of the socket; 0 keeps root's group.
    pub gid: u32,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            address: PathBuf::from("/run/hull/hull.sock"),
            uid: 0,
            gid: 0,
        }
    }
}

/// Startup or serving failed.
#[derive(Debug, Error)]
pub enum WiringError {
    /// A directory or socket operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CRI service could not be set up.
    #[error("cri: {0}")]
    Cri(String),
    /// Another hulld owns the root.
    #[error("root {0} is in use by another hulld")]
    RootLocked(PathBuf),
    /// Something answers on the socket already.
    #[error("address {0} is in use by a running server")]
    AddressInUse(PathBuf),
    /// The metadata DB failed to open.
    #[error("open metadata")]
    Metadata(#[from] MetadataError),
    /// The content store failed to open.
    #[error("open content store")]
    Content(#[from] ContentError),
    /// `snapshotter-serve` names a snapshotter hull does not have.
    #[error("unknown snapshotter {0:?}: overlayfs or native")]
    UnknownSnapshotter(String),
    /// A snapshotter failed to open.
    #[error("open snapshotter")]
    Snapshotter(#[from] SnapshotError),
    /// The gRPC server failed.
    #[error("grpc server")]
    Transport(#[from] tonic::transport::Error),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WiringError {
    let path = path.to_owned();
    move |source| WiringError::Io { op, path, source }
}

/// Holds an exclusive `flock` on the root for the daemon's lifetime, so two
/// daemons never share one root.
#[derive(Debug)]
pub struct RootLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl RootLock {
    /// Locks `root/hulld.lock`.
    ///
    /// # Errors
    /// RootLocked when another process holds it.
    pub fn acquire(root: &Path) -> Result<RootLock, WiringError> {
        let path = root.join("hulld.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| WiringError::RootLocked(root.to_owned()))?;
        Ok(RootLock { _lock: lock })
    }
}

/// What hulld serves, as introspection lists it; the content plugin
/// exports its directory under `root` as `root`, as containerd's does, so
/// that clients find the daemon's root (logs and volumes live beside it).
pub fn plugins(root: &Path) -> Vec<PluginInfo> {
    const GRPC: &str = "io.containerd.grpc.v1";
    const SERVICE: &str = "io.containerd.service.v1";
    const METADATA: &str = "io.containerd.metadata.v1";
    let mut content = PluginInfo::new("io.containerd.content.v1", "content", &[]);
    content.exports.insert(
        "root".to_owned(),
        root.join("content").to_string_lossy().into_owned(),
    );
    let mut out = vec![
        content,
        PluginInfo::new("io.containerd.event.v1", "exchange", &[]),
        PluginInfo::new(METADATA, "sled", &["io.containerd.content.v1"]),
        PluginInfo::new("io.containerd.gc.v1", "scheduler", &[METADATA]),
        PluginInfo::new("io.containerd.lease.v1", "manager", &[METADATA]),
        PluginInfo::new("io.containerd.transfer.v1", "local", &[METADATA]),
    ];
    for svc in [
        "content-service",
        "images-service",
        "leases-service",
        "namespaces-service",
        "introspection-service",
        "containers-service",
        "tasks-service",
    ] {
        out.push(PluginInfo::new(SERVICE, svc, &[METADATA]));
    }
    for svc in [
        "content",
        "events",
        "healthcheck",
        "images",
        "introspection",
        "leases",
        "namespaces",
        "version",
        "containers",
        "tasks",
        "transfer",
        "streaming",
    ] {
        out.push(PluginInfo::new(GRPC, svc, &[SERVICE]));
    }
    out.push(PluginInfo::new(
        "io.containerd.runtime.v2",
        "task",
        &["io.containerd.event.v1"],
    ));
    out
}

fn prepare_socket(path: &Path) -> Result<UnixListener, WiringError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(WiringError::AddressInUse(path.to_owned()));
        }
        // Nobody answers: a socket left by a daemon that died.
        std::fs::remove_file(path).map_err(io("remove stale socket", path))?;
    }
    let listener = UnixListener::bind(path).map_err(io("bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io("chmod", path))?;
    Ok(listener)
}

/// One collection, logged; whether it succeeded.
async fn collect(gc: &Collector) -> bool {
    match gc.run().await {
        Ok(stats) if stats != Default::default() => {
            tracing::info!(
                records = stats.records,
                blobs = stats.blobs,
                leases = stats.leases,
                snapshots = stats.snapshots,
                "garbage collected"
            );
            true
        }
        Ok(_) => {
            tracing::debug!("garbage collected: nothing");
            true
        }
        Err(e) => {
            tracing::warn!(cause = %hull_proto::errdefs::message(&e), "garbage collection failed");
            false
        }
    }
}

async fn gc_loop(
    gc: Arc<Collector>,
    cfg: GcConfig,
    startup: Option<crate::metadata::gc::scheduler::Collected>,
    shutdown: CancellationToken,
) {
    let db = gc.db().clone();
    crate::metadata::gc::scheduler::run(db.gc_signal(), cfg, startup, shutdown, || collect(&gc))
        .await;
}

/// Opens everything under the config's root and serves until `shutdown`.
///
/// # Errors
/// When the root is locked, the socket is in use, or the stores cannot open.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), WiringError> {
    for dir in [&config.root, &config.state] {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .map_err(io("chmod", dir))?;
    }
    let _lock = RootLock::acquire(&config.root)?;
    let root = config.root.clone();
    let (db, snapshotters) = crate::blocking(move || -> Result<_, WiringError> {
        let content = LocalContentStore::open(root.join("content"))?;
        let db = MetaDb::open(&root.join("meta.sled"), content)?;
        let mut by_name: std::collections::BTreeMap<String, Arc<dyn Snapshotter>> =
            Default::default();
        for (name, driver) in [("overlayfs", Driver::Overlay), ("native", Driver::Native)] {
            let s = LocalSnapshotter::open(root.join("snapshots").join(name), driver)?;
            by_name.insert(name.to_owned(), Arc::new(s));
        }
        Ok((db, by_name))
    })
    .await?;
    let mut by_name = snapshotters;
    for (name, plugin) in &config.proxy_plugins {
        tracing::info!(%name, address = %plugin.address.display(), "proxy snapshotter");
        by_name.insert(
            name.clone(),
            Arc::new(ProxySnapshotter::new(name, &plugin.address)?),
        );
    }
    let snapshotters = Arc::new(Snapshotters::new(by_name, "overlayfs"));
    let listener = prepare_socket(&config.grpc.address)?;
    let events = Exchange::new();
    let tasks = TaskTracker::new();
    let gc = Arc::new(Collector::new(db.clone(), snapshotters.clone()));
    // Before the socket serves: it cannot race a client's first writes.
    let last_gc =
        crate::metadata::gc::scheduler::startup(db.gc_signal(), &config.gc, || collect(&gc)).await;
    tasks.spawn(gc_loop(
        gc.clone(),
        config.gc.clone(),
        last_gc,
        shutdown.clone(),
    ));

    // Shims forward their events to `<address>.ttrpc`, as to containerd's.
    let ttrpc_address = PathBuf::from(format!("{}.ttrpc", config.grpc.address.display()));
    let ttrpc_listener = prepare_socket(&ttrpc_address)?;
    let ttrpc = hull_ttrpc::Server::new().register(TtrpcEvents::new(events.clone()));
    tasks.spawn(ttrpc.serve(ttrpc_listener, shutdown.clone().cancelled_owned()));
    let publish_binary = std::env::current_exe().map_err(io("locate", Path::new("hulld")))?;
    let manager = TaskManager::new(
        config.shim.clone(),
        &config.state,
        Invocation {
            address: config.grpc.address.clone(),
            ttrpc_address: ttrpc_address.clone(),
            publish_binary,
            log_defaults: config.log_defaults(),
            debug: matches!(config.debug.level.as_str(), "debug" | "trace"),
        },
        events.clone(),
        tasks.clone(),
        shutdown.clone(),
    );
    for problem in manager.missing_for(DEFAULT_RUNTIME) {
        tracing::warn!(%problem, "containers cannot run until this is installed");
    }
    crate::tasks::become_subreaper();
    let restored = manager.restore().await;
    if restored > 0 {
        tracing::info!(shims = restored, "reconnected to running shims");
    }

    let uuid = {
        let d = db.clone();
        crate::blocking(move || d.server_uuid()).await?
    };
    tracing::info!(address = %config.grpc.address.display(), root = %config.root.display(), %uuid, "serving");

    // The stores a pull writes through are the services clients call.
    let images = Arc::new(ImagesService::new(db.clone(), events.clone(), gc.clone()));
    let leases = Arc::new(LeasesService::new(db.clone(), gc.clone()));
    let snapshots = Arc::new(SnapshotsService::new(
        snapshotters.clone(),
        db.clone(),
        events.clone(),
    ));
    let diff = Arc::new(DiffService::new(
        db.clone(),
        config.diff.clone(),
        config.state.join("diff"),
    ));
    let streams = Streams::new();
    let puller = Puller::new(
        Registries::new(config.registry.clone()),
        Stores {
            db: db.clone(),
            images: images.clone(),
            leases: leases.clone(),
            snapshots: snapshots.clone(),
            diff: diff.clone(),
            default_snapshotter: "overlayfs".to_owned(),
        },
    );

    let containers_svc = Arc::new(ContainersService::new(db.clone(), events.clone()));
    let tasks_svc = Arc::new(TasksService::new(
        db.clone(),
        snapshotters.clone(),
        manager.clone(),
    ));
    let cri = crate::cri::Cri::new(crate::cri::Parts {
        db: db.clone(),
        images: images.clone(),
        puller: puller.clone(),
        containers: containers_svc.clone(),
        tasks: tasks_svc.clone(),
        snapshots: snapshots.clone(),
        events: events.clone(),
        config: config.cri.clone(),
        root: config.root.clone(),
        state: config.state.clone(),
        shim_binary: manager.shim_binary(crate::cri::RUNTIME, "").ok(),
    })
    .await
    .map_err(WiringError::Cri)?;
    tasks.spawn(cri.clone().run(shutdown.clone()));
    // After restore: containers whose shims died while hulld was down are
    // restarted on the first sweep.
    tasks.spawn(
        crate::restart::RestartMonitor::new(
            db.clone(),
            tasks_svc.clone(),
            containers_svc.clone(),
            events.clone(),
        )
        .run(shutdown.clone()),
    );

    macro_rules! limits {
        ($svc:expr) => {
            $svc.max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE)
        };
    }
    let router = tonic::transport::Server::builder()
        // Blob writes arrive as 1 MiB messages: a window of several keeps
        // the stream from stalling on window updates.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(2 * STREAM_WINDOW))
        .trace_fn(|req| tracing::debug_span!("rpc", method = %req.uri().path()))
        .add_service(limits!(VersionServer::new(VersionService)))
        .add_service(HealthServer::new(HealthService::new(
            shutdown.clone(),
            tasks.clone(),
        )))
        .add_service(limits!(IntrospectionServer::new(
            IntrospectionService::new(db.clone(), plugins(&config.root))
        )))
        .add_service(limits!(NamespacesServer::new(NamespacesService::new(
            db.clone(),
            events.clone()
        ))))
        .add_service(limits!(ContentServer::new(ContentService::new(
            db.clone(),
            events.clone(),
            tasks.clone()
        ))))
        .add_service(limits!(ImagesServer::from_arc(images.clone())))
        .add_service(limits!(LeasesServer::from_arc(leases)))
        .add_service(limits!(SnapshotsServer::from_arc(snapshots.clone())))
        .add_service(limits!(DiffServer::from_arc(diff)))
        .add_service(limits!(ContainersServer::from_arc(containers_svc)))
        .add_service(limits!(TasksServer::from_arc(tasks_svc)))
        .add_service(limits!(RuntimeServiceServer::new(
            crate::cri::runtime::CriRuntime(cri.clone())
        )))
        .add_service(limits!(ImageServiceServer::new(
            crate::cri::images::CriImages(cri)
        )))
        .add_service(limits!(EventsServer::new(EventsService::new(
            events.clone(),
            shutdown.clone(),
            tasks.clone()
        ))))
        .add_service(limits!(StreamingServer::new(StreamingService::new(
            streams.clone()
        ))))
        .add_service(limits!(TransferServer::new(TransferService::new(
            puller, images, streams
        ))));
    let serving = router.serve_with_incoming_shutdown(
        crate::listener::incoming(listener),
        shutdown.clone().cancelled_owned(),
    );
    // Graceful shutdown waits for clients to hang up; one that never does
    // (a stuck client, an open event subscription elsewhere) must not keep
    // the daemon alive.
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        r = serving => r,
        _ = grace => {
            tracing::warn!("clients still connected after the grace period; closing");
            Ok(())
        }
    };
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks still running at shutdown");
    }
    if let Err(e) = db.flush().await {
        tracing::error!(cause = %hull_proto::errdefs::message(&e), "final flush");
    }
    let _ = std::fs::remove_file(&config.grpc.address);
    let _ = std::fs::remove_file(&ttrpc_address);
    tracing::info!("stopped");
    result.map_err(WiringError::from)
}

impl From<crate::JoinError> for WiringError {
    fn from(e: crate::JoinError) -> Self {
        WiringError::Metadata(MetadataError::Join(e))
    }
}

/// Serves one built-in snapshotter alone on `address`, so that containerd
/// (or another hulld) can use it as a proxy plugin, until `shutdown`.
///
/// # Errors
/// When the snapshotter cannot open or the socket cannot be served.
pub async fn serve_snapshotter(
    name: &str,
    root: PathBuf,
    address: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), WiringError> {
    let driver = match name {
        "overlayfs" | "overlay2" => Driver::Overlay,
        "native" => Driver::Native,
        other => {
            return Err(WiringError::UnknownSnapshotter(other.to_owned()));
        }
    };
    std::fs::create_dir_all(&root).map_err(io("create", &root))?;
    let _lock = RootLock::acquire(&root)?;
    let r = root.clone();
    let sn = crate::blocking(move || LocalSnapshotter::open(r, driver).map_err(WiringError::from))
        .await?;
    let listener = prepare_socket(&address)?;
    tracing::info!(snapshotter = %name, address = %address.display(), root = %root.display(), "serving snapshotter");
    let service = SnapshotService::new(Arc::new(sn));
    let result = tonic::transport::Server::builder()
        .add_service(StandaloneSnapshotsServer::new(service))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await;
    let _ = std::fs::remove_file(&address);
    result.map_err(WiringError::from)
}
