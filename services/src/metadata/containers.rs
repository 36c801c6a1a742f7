//! Containers: the metadata of what to run (spec, runtime, root snapshot).
//! A container holds its snapshot against GC until it is deleted.

use std::collections::BTreeMap;

use hull_proto::identifiers::{ContainerId, Namespace};
use hull_proto::labels;
use prost_types::Any;

use super::schema::{key, kinds, prefix, ContainerRecord};
use super::{update_labels, MetaDb, MetadataError, Result};
use crate::filters::{label_field, Adaptor, Filter};

/// A container record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Container {
    /// Id, a valid identifier.
    pub id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Image it was made from.
    pub image: String,
    /// Runtime name.
    pub runtime_name: String,
    /// Runtime options.
    pub runtime_options: Option<Any>,
    /// OCI spec.
    pub spec: Option<Any>,
    /// Snapshotter of the root filesystem.
    pub snapshotter: String,
    /// Active snapshot key.
    pub snapshot_key: String,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// Last update, nanoseconds since the epoch.
    pub updated_at: i64,
    /// Extensions by name.
    pub extensions: BTreeMap<String, Any>,
}

impl Adaptor for Container {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "id" => Some(self.id.clone()),
            "image" => Some(self.image.clone()),
            "runtime" => match path.get(1).map(String::as_str)? {
                "name" => Some(self.runtime_name.clone()),
                _ => None,
            },
            "snapshotter" => Some(self.snapshotter.clone()),
            "snapshotkey" => Some(self.snapshot_key.clone()),
            "labels" => label_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

/// containerd's rules for a container record.
fn validate(c: &Container) -> Result<()> {
    ContainerId::new(&c.id)?;
    if c.extensions.keys().any(String::is_empty) {
        return Err(MetadataError::Missing("container.Extensions key"));
    }
    labels::validate_all(&c.labels)?;
    if c.runtime_name.is_empty() {
        return Err(MetadataError::Missing("container.Runtime.Name"));
    }
    if c.spec.is_none() {
        return Err(MetadataError::Missing("container.Spec"));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(MetadataError::Missing(
            "container.Snapshotter (with a snapshot key)",
        ));
    }
    Ok(())
}

fn to_record(c: &Container) -> ContainerRecord {
    ContainerRecord {
        labels: c.labels.clone(),
        image: c.image.clone(),
        runtime_name: c.runtime_name.clone(),
        runtime_options: c.runtime_options.clone(),
        spec: c.spec.clone(),
        snapshotter: c.snapshotter.clone(),
        snapshot_key: c.snapshot_key.clone(),
        created_at: c.created_at,
        updated_at: c.updated_at,
        extensions: c.extensions.clone(),
    }
}

fn from_record(id: String, r: ContainerRecord) -> Container {
    Container {
        id,
        labels: r.labels,
        image: r.image,
        runtime_name: r.runtime_name,
        runtime_options: r.runtime_options,
        spec: r.spec,
        snapshotter: r.snapshotter,
        snapshot_key: r.snapshot_key,
        created_at: r.created_at,
        updated_at: r.updated_at,
        extensions: r.extensions,
    }
}

fn container_key(ns: &Namespace, id: &str) -> Vec<u8> {
    key(&["o", ns.as_str(), kinds::CONTAINER, id])
}

fn not_found(id: &str) -> MetadataError {
    MetadataError::NotFound {
        what: "container",
        id: id.to_owned(),
    }
}

impl MetaDb {
    /// Reads a container.
    ///
    /// # Errors
    /// NotFound.
    pub fn get_container(&self, ns: &Namespace, id: &str) -> Result<Container> {
        let rec = self
            .get(&container_key(ns, id))?
            .ok_or_else(|| not_found(id))?;
        Ok(from_record(id.to_owned(), rec))
    }

    /// Containers matching `filter`, by id.
    ///
    /// # Errors
    /// Unknown when the DB fails.
    pub fn list_containers(&self, ns: &Namespace, filter: &Filter) -> Result<Vec<Container>> {
        Ok(self
            .scan::<ContainerRecord>(&prefix(&["o", ns.as_str(), kinds::CONTAINER]))?
            .into_iter()
            .map(|(id, rec)| from_record(id, rec))
            .filter(|c| filter.matches(c))
            .collect())
    }

    /// Creates a container; times are set here.
    ///
    /// # Errors
    /// AlreadyExists; InvalidArgument when containerd's rules fail.
    pub fn create_container(&self, ns: &Namespace, mut c: Container) -> Result<Container> {
        validate(&c)?;
        c.created_at = crate::now_nanos();
        c.updated_at = c.created_at;
        self.update(|txn| {
            let k = container_key(ns, &c.id);
            if txn.contains(&k)? {
                return Err(MetadataError::AlreadyExists {
                    what: "container",
                    id: c.id.clone(),
                });
            }
            txn.ensure_namespace(ns)?;
            txn.put(k, &to_record(&c));
            Ok(c)
        })
    }

    /// Updates a container by field mask: `labels`, `labels.<key>`, `spec`,
    /// `extensions`, `extensions.<key>`, `image`, `snapshotkey`. No mask
    /// replaces those fields and requires the snapshotter and runtime name
    /// to be unchanged.
    ///
    /// # Errors
    /// NotFound; InvalidArgument for other paths, an immutable field
    /// changed, or an invalid result.
    pub fn update_container(
        &self,
        ns: &Namespace,
        new: &Container,
        paths: &[String],
    ) -> Result<Container> {
        if new.id.is_empty() {
            return Err(MetadataError::Missing("container id"));
        }
        self.update(|txn| {
            let k = container_key(ns, &new.id);
            let rec = txn.get(&k)?.ok_or_else(|| not_found(&new.id))?;
            let mut updated = from_record(new.id.clone(), rec);
            let created_at = updated.created_at;
            let default_paths;
            let paths = if paths.is_empty() {
                let immutable = |field: &str| MetadataError::Field {
                    what: "container",
                    field: field.to_owned(),
                    id: new.id.clone(),
                };
                if updated.snapshotter != new.snapshotter {
                    return Err(immutable("snapshotter"));
                }
                if updated.runtime_name != new.runtime_name {
                    return Err(immutable("runtime.name"));
                }
                default_paths =
                    ["labels", "spec", "extensions", "image", "snapshotkey"].map(String::from);
                &default_paths[..]
            } else {
                paths
            };
            for p in paths {
                if update_labels(&mut updated.labels, &new.labels, p) {
                    continue;
                }
                if let Some(name) = p.strip_prefix("extensions.") {
                    match new.extensions.get(name) {
                        Some(v) => updated.extensions.insert(name.to_owned(), v.clone()),
                        None => updated.extensions.remove(name),
                    };
                    continue;
                }
                match p.as_str() {
                    "spec" => updated.spec = new.spec.clone(),
                    "extensions" => updated.extensions = new.extensions.clone(),
                    "image" => updated.image = new.image.clone(),
                    "snapshotkey" => updated.snapshot_key = new.snapshot_key.clone(),
                    _ => {
                        return Err(MetadataError::Field {
                            what: "container",
                            field: p.clone(),
                            id: new.id.clone(),
                        })
                    }
                }
            }
            validate(&updated)?;
            updated.created_at = created_at;
            updated.updated_at = crate::now_nanos();
            txn.put(k, &to_record(&updated));
            Ok(updated)
        })
    }

    /// Deletes a container; its snapshot goes at the next GC.
    ///
    /// # Errors
    /// NotFound.
    pub fn delete_container(&self, ns: &Namespace, id: &str) -> Result<()> {
        self.update(|txn| {
            let k = container_key(ns, id);
            if !txn.contains(&k)? {
                return Err(not_found(id));
            }
            txn.remove(k);
            Ok(())
        })
    }
}
