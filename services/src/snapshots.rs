//! The snapshotters hulld serves, by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::Status;

use hull_proto::errdefs::{self, Kind};
use hull_snapshots::Snapshotter;

/// The snapshotters hulld serves, by name.
pub struct Snapshotters {
    by_name: BTreeMap<String, Arc<dyn Snapshotter>>,
    default: String,
    /// Creating a snapshot (recording what holds it, then creating it)
    /// shares this; a collection takes it alone while it decides what to
    /// remove, so that it never sees a snapshot whose holder it missed.
    gate: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for Snapshotters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotters")
            .field("names", &self.by_name.keys().collect::<Vec<_>>())
            .field("default", &self.default)
            .finish()
    }
}

impl Snapshotters {
    /// Serves `by_name`; an empty name in a request means `default`.
    pub fn new(by_name: BTreeMap<String, Arc<dyn Snapshotter>>, default: &str) -> Self {
        Snapshotters {
            by_name,
            default: default.to_owned(),
            gate: tokio::sync::RwLock::new(()),
        }
    }

    /// Held while a snapshot is created, from recording its lease to the
    /// snapshotter's create or commit. Cancel-safe.
    pub async fn creating(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Held by a collection from marking to deciding what to remove; no
    /// snapshot is created meanwhile. Cancel-safe.
    pub async fn collecting(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// Every snapshotter with its name.
    pub fn all(&self) -> impl Iterator<Item = (&String, &Arc<dyn Snapshotter>)> {
        self.by_name.iter()
    }

    /// The snapshotter a request names, with its canonical name.
    ///
    /// # Errors
    /// InvalidArgument for a snapshotter that is not loaded, as containerd.
    pub fn get(&self, name: &str) -> Result<(String, Arc<dyn Snapshotter>), Status> {
        let name = match name {
            "" => self.default.as_str(),
            // Docker's name for the same driver.
            "overlay2" => "overlayfs",
            n => n,
        };
        self.by_name
            .get(name)
            .map(|s| (name.to_owned(), s.clone()))
            .ok_or_else(|| {
                errdefs::status(
                    Kind::InvalidArgument,
                    format!("snapshotter not loaded: {name}"),
                )
            })
    }
}
