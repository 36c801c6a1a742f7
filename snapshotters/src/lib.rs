//! Snapshotters: layered root filesystems addressed by key.
//!
//! - [`Snapshotter`]: the contract every snapshotter keeps, ported from
//!   containerd's `snapshots/snapshotter.go` in our own words.
//! - [`local::LocalSnapshotter`]: the built-in `overlayfs` and `native`
//!   snapshotters, which keep their records in a sled DB of their own under
//!   their root, like containerd's.
//! - [`mount`]: [`Mount`] and the mount(2) helpers.
//! - [`server`]: serves one snapshotter alone over containerd's snapshots
//!   API, so that containerd can load it as a proxy plugin.
//! - [`proxy`]: a snapshotter in another process, reached over that API.
//!
//! Backends know nothing of namespaces, leases or GC: hulld wraps them.
//! This crate depends only on `hull-proto`.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use thiserror::Error;

use hull_proto::containerd::services::snapshots::v1 as api;
use hull_proto::errdefs::{Classify, Kind as ErrKind};

mod keeper;
pub mod local;
pub mod mount;
pub mod proxy;
pub mod server;
mod storage;

pub use mount::Mount;

/// Labels of a snapshot.
pub type Labels = BTreeMap<String, String>;

/// What a snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read-only snapshot of a parent, never committed.
    View,
    /// A writable snapshot that can be committed.
    Active,
    /// A read-only snapshot that can be a parent.
    Committed,
}

impl Kind {
    /// The name containerd's filters and `ctr` print.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

impl From<Kind> for api::Kind {
    fn from(kind: Kind) -> api::Kind {
        match kind {
            Kind::View => api::Kind::View,
            Kind::Active => api::Kind::Active,
            Kind::Committed => api::Kind::Committed,
        }
    }
}

/// What a snapshotter knows of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Key of an active or view snapshot, name of a committed one.
    pub name: String,
    /// Name of the committed parent, empty for none.
    pub parent: String,
    /// Kind.
    pub kind: Kind,
    /// Labels.
    pub labels: Labels,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// Nanoseconds since the epoch.
    pub updated_at: i64,
}

/// Disk used by a snapshot's own layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes.
    pub size: i64,
    /// Inodes.
    pub inodes: i64,
}

/// Errors of snapshotters.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// No snapshot with this key or name.
    #[error("snapshot {0}: not found")]
    NotFound(String),
    /// The key or name is taken.
    #[error("snapshot {0}: already exists")]
    AlreadyExists(String),
    /// The parent is not a committed snapshot.
    #[error("parent {0} is not a committed snapshot")]
    ParentNotCommitted(String),
    /// Only active snapshots can be committed.
    #[error("snapshot {0} is not active, only active snapshots can be committed")]
    NotActive(String),
    /// A snapshot with children cannot be removed.
    #[error("cannot remove snapshot {0} with child")]
    HasChildren(String),
    /// An empty or malformed key.
    #[error("invalid snapshot key {0:?}")]
    InvalidKey(String),
    /// A field mask naming something that cannot change.
    #[error("cannot update {field:?} field on snapshot {key:?}")]
    Field {
        /// The path.
        field: String,
        /// The snapshot.
        key: String,
    },
    /// A label over the size limit.
    #[error(transparent)]
    Label(#[from] hull_proto::labels::LabelError),
    /// A filesystem or mount operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command (cp) failed.
    #[error("{command} failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
    /// The record store failed.
    #[error("snapshot metadata")]
    Db(#[from] sled::Error),
    /// A record did not decode.
    #[error("corrupt snapshot record {0}")]
    Corrupt(String),
    /// The snapshotter is not available (proxy unreachable, not configured).
    #[error("snapshotter {name}")]
    Unavailable {
        /// Which snapshotter.
        name: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A blocking task died.
    #[error("blocking task failed: {0}")]
    Join(String),
    /// A proxied snapshotter refused, with its own class and message.
    #[error("{message}")]
    Remote {
        /// The remote's class.
        kind: ErrKind,
        /// The remote's message.
        message: String,
    },
}

impl Classify for SnapshotError {
    fn kind(&self) -> ErrKind {
        match self {
            SnapshotError::NotFound(_) => ErrKind::NotFound,
            SnapshotError::AlreadyExists(_) => ErrKind::AlreadyExists,
            SnapshotError::ParentNotCommitted(_)
            | SnapshotError::InvalidKey(_)
            | SnapshotError::Field { .. }
            | SnapshotError::Label(_) => ErrKind::InvalidArgument,
            SnapshotError::NotActive(_) | SnapshotError::HasChildren(_) => {
                ErrKind::FailedPrecondition
            }
            SnapshotError::Unavailable { .. } => ErrKind::Unavailable,
            SnapshotError::Remote { kind, .. } => *kind,
            SnapshotError::Io { .. }
            | SnapshotError::Command { .. }
            | SnapshotError::Db(_)
            | SnapshotError::Corrupt(_)
            | SnapshotError::Join(_) => ErrKind::Unknown,
        }
    }
}

/// Result of snapshot operations.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// A snapshotter, with containerd's semantics.
///
/// Snapshots form a tree: a committed snapshot may be the parent of active
/// and view snapshots; an active one becomes committed under a new name.
///
/// - `prepare` and `view` with a key that exists: AlreadyExists; with a
///   parent that does not exist: NotFound; with a parent that is not
///   committed: InvalidArgument.
/// - `commit` of a view or committed snapshot: FailedPrecondition; to a
///   name that exists: AlreadyExists. The active key is gone afterwards.
/// - `remove` of a snapshot with children: FailedPrecondition. Removing an
///   active snapshot removes its directories.
/// - `update` changes labels only (`labels`, `labels.<key>`; no paths
///   replaces them); other paths: InvalidArgument.
/// - `mounts` of an unknown key: NotFound.
/// - `walk` lists every snapshot; callers filter.
/// - `cleanup` removes what a crash left behind without a record.
#[tonic::async_trait]
pub trait Snapshotter: Send + Sync + 'static {
    /// Info of one snapshot.
    async fn stat(&self, key: &str) -> Result<Info>;
    /// Changes labels.
    async fn update(&self, info: Info, paths: Vec<String>) -> Result<Info>;
    /// Disk used by the snapshot's own layer.
    async fn usage(&self, key: &str) -> Result<Usage>;
    /// How to mount an active or view snapshot.
    async fn mounts(&self, key: &str) -> Result<Vec<Mount>>;
    /// A new writable snapshot on `parent` (empty: none).
    async fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>>;
    /// A new read-only snapshot of `parent`.
    async fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>>;
    /// Turns active `key` into committed `name`.
    async fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()>;
    /// Removes a snapshot.
    async fn remove(&self, key: &str) -> Result<()>;
    /// Every snapshot.
    async fn walk(&self) -> Result<Vec<Info>>;
    /// Removes leftovers of interrupted operations.
    async fn cleanup(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_containerd_wire_numbers() {
        assert_eq!(api::Kind::from(Kind::View) as i32, 1);
        assert_eq!(api::Kind::from(Kind::Active) as i32, 2);
        assert_eq!(api::Kind::from(Kind::Committed) as i32, 3);
    }

    #[test]
    fn error_kinds() {
        assert_eq!(
            SnapshotError::HasChildren("a".into()).kind(),
            ErrKind::FailedPrecondition
        );
        assert_eq!(
            SnapshotError::ParentNotCommitted("a".into()).kind(),
            ErrKind::InvalidArgument
        );
        assert_eq!(
            SnapshotError::NotActive("a".into()).kind(),
            ErrKind::FailedPrecondition
        );
    }
}
