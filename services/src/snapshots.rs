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
        }
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
