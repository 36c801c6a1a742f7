//! The Docker workflow over the containerd API, as nerdctl builds it on
//! containerd's client: named containers, run/ps/logs/exec/stop/rm,
//! published ports, volumes, restart policies, commit and prune.
//!
//! State lives where every containerd client can see it: containers,
//! tasks, images and snapshots in the daemon, and what Docker adds
//! (name, mounts, ports, log path, restart policy) in container labels
//! under [`labels`]. Files that belong to a container (its log, its
//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`) live in
//! `<daemon root>/containers/<namespace>/<id>/`, and named volumes in
//! `<daemon root>/volumes/<name>/_data`, as Docker keeps them under
//! `/var/lib/docker`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hull_client::Error> {
//! use hull_client::docker::{Docker, RunOptions};
//! let client = hull_client::Client::connect("/run/hull/hull.sock").await?;
//! let docker = Docker::new(client, "default").await?;
//! let opts = RunOptions {
//!     image: "docker.io/library/busybox:latest".into(),
//!     cmd: vec!["sleep".into(), "60".into()],
//!     name: Some("nap".into()),
//!     ..Default::default()
//! };
//! let created = docker.create(&opts).await?;
//! docker.start(&created.id).await?;
//! for c in docker.list(true).await? {
//!     println!("{} {} {}", c.short_id(), c.name, c.status.describe());
//! }
//! docker.remove(&created.id, true, false).await?;
//! # Ok(()) }
//! ```

pub mod labels;

mod commit;
mod cp;
mod exec;
mod fsutil;
mod image;
mod images;
mod inspect;
mod lifecycle;
mod list;
mod logdriver;
mod logs;
mod names;
mod network;
mod prune;
mod run;
mod spec;
mod top;
mod volumes;

pub use commit::CommitOptions;
pub use exec::ExecOptions;
pub use image::{chain_id, normalize, LocalImage};
pub use images::{human_size, repo_tag, short, HistoryEntry, ImageSummary};
pub use inspect::{render_template, InspectFormat};
pub use lifecycle::{parse_signal, DEFAULT_STOP_TIMEOUT};
pub use list::human_duration;
pub use list::{ContainerSummary, State};
pub use logdriver::{is_log_driver, run_log_driver};
pub use logs::LogOptions;
pub use logs::{AttachEnd, DETACH_KEYS};
pub use network::NetworkMode;
pub use prune::{DiskUsage, PruneReport};
pub use run::{Created, RunOptions};
pub use spec::{parse_env_file, MountSpec, PortSpec, RestartPolicy};
pub use top::TOP_TITLES;
pub use volumes::Volume;

use std::path::PathBuf;

use hull_proto::containerd::services::containers::v1::{Container, ListContainersRequest};
use hull_proto::containerd::services::introspection::v1::PluginsRequest;
use tonic::Status;

use crate::{Client, Error};

/// The Docker workflow in one namespace of one daemon.
#[derive(Debug, Clone)]
pub struct Docker {
    client: Client,
    namespace: String,
    root: PathBuf,
    /// Whether the daemon is hulld (its shim writes json-file logs).
    hull: bool,
    snapshotter: String,
    runtime: String,
    bridge_subnet: Option<String>,
    bridge_device: Option<String>,
    /// The logging binary containerd's shim runs (hullctl).
    logger: PathBuf,
}

/// Where containerd keeps its data when its content plugin says nothing.
const CONTAINERD_ROOT: &str = "/var/lib/containerd";

impl Docker {
    /// The workflow over `client` in namespace `namespace`; asks the
    /// daemon where its root is (the content plugin's exported `root`).
    ///
    /// # Errors
    /// Unavailable when the daemon does not answer.
    pub async fn new(client: Client, namespace: &str) -> Result<Docker, Error> {
        let client = client.with_namespace(namespace);
        let plugins = client
            .introspection()
            .plugins(PluginsRequest {
                filters: vec!["type==io.containerd.content.v1".into()],
            })
            .await?
            .into_inner()
            .plugins;
        let content_root = plugins
            .iter()
            .find_map(|p| p.exports.get("root").cloned())
            .map(PathBuf::from);
        let root = content_root
            .as_deref()
            .and_then(|p| p.parent())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CONTAINERD_ROOT));
        // hulld keeps content in `<root>/content`; containerd in
        // `<root>/io.containerd.content.v1.content`.
        let hull = content_root
            .as_deref()
            .is_some_and(|p| p.file_name().is_some_and(|n| n == "content"));
        Ok(Docker {
            client,
            namespace: namespace.to_owned(),
            root,
            hull,
            snapshotter: "overlayfs".into(),
            runtime: "io.containerd.runc.v2".into(),
            bridge_subnet: None,
            bridge_device: None,
            logger: logdriver::default_logger(),
        })
    }

    /// Makes the default `bridge` network, when it is first needed, with
    /// this subnet and bridge device instead of a free private /16 on
    /// `hull0`.
    pub fn with_default_bridge(mut self, subnet: Option<String>, device: Option<String>) -> Docker {
        self.bridge_subnet = subnet;
        self.bridge_device = device;
        self
    }

    /// Uses `hullctl` at `path` as the logger containerd's shim starts
    /// (hulld's shim writes logs itself).
    pub fn with_logger(mut self, path: PathBuf) -> Docker {
        self.logger = path;
        self
    }

    /// The client this works through (in this namespace).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The daemon's root directory.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Whether the daemon is hulld rather than containerd.
    pub fn is_hull(&self) -> bool {
        self.hull
    }

    /// The directory of a container's own files.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(&self.namespace).join(id)
    }

    /// Finds a container by full id, name, or unique id prefix, as Docker
    /// resolves them.
    ///
    /// # Errors
    /// NotFound ("No such container") or InvalidArgument for an ambiguous
    /// prefix.
    pub async fn find(&self, name_or_id: &str) -> Result<Container, Error> {
        let all = self.all_containers().await?;
        pick(all, name_or_id)
    }

    async fn all_containers(&self) -> Result<Vec<Container>, Error> {
        Ok(self
            .client
            .containers()
            .list(ListContainersRequest::default())
            .await?
            .into_inner()
            .containers)
    }
}

/// Docker's lookup order: full id, then name (with or without the leading
/// `/`), then an id prefix that only one container has.
fn pick(all: Vec<Container>, key: &str) -> Result<Container, Error> {
    let name = key.strip_prefix('/').unwrap_or(key);
    let not_found = || Error::Status(Status::not_found(format!("No such container: {key}")));
    if key.is_empty() {
        return Err(not_found());
    }
    if let Some(c) = all.iter().find(|c| c.id == key) {
        return Ok(c.clone());
    }
    if let Some(c) = all
        .iter()
        .find(|c| c.labels.get(labels::NAME).map(String::as_str) == Some(name))
    {
        return Ok(c.clone());
    }
    let mut matches = all.into_iter().filter(|c| c.id.starts_with(key));
    match (matches.next(), matches.next()) {
        (Some(c), None) => Ok(c),
        (Some(_), Some(_)) => Err(Error::Status(Status::invalid_argument(format!(
            "multiple containers found with provided prefix: {key}"
        )))),
        _ => Err(not_found()),
    }
}

/// A status for a request that cannot be carried out as given.
pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::Status(Status::invalid_argument(msg.into()))
}

/// A local file operation failed.
pub(crate) fn local(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.to_string();
    move |e| Error::Status(Status::internal(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, name: &str) -> Container {
        let mut c = Container {
            id: id.into(),
            ..Default::default()
        };
        c.labels.insert(labels::NAME.into(), name.into());
        c
    }

    #[test]
    fn lookup_goes_id_then_name_then_unique_prefix() {
        let all = vec![
            c("abc123", "web"),
            c("abd456", "abc123x"),
            c("web", "other"),
        ];
        assert_eq!(pick(all.clone(), "abc123").unwrap().id, "abc123");
        assert_eq!(pick(all.clone(), "/abc123x").unwrap().id, "abd456");
        assert_eq!(pick(all.clone(), "web").unwrap().id, "web");
        assert_eq!(pick(all.clone(), "abd").unwrap().id, "abd456");
        assert_eq!(
            pick(all.clone(), "ab").unwrap_err().kind(),
            hull_proto::errdefs::Kind::InvalidArgument
        );
        assert_eq!(
            pick(all, "zzz").unwrap_err().kind(),
            hull_proto::errdefs::Kind::NotFound
        );
    }
}
