//! Namespaces: created explicitly, or implicitly by the first object put in
//! them; deletable only when empty.

use std::collections::BTreeMap;

use hull_proto::identifiers::Namespace;
use hull_proto::labels;

use super::schema::{key, kinds, prefix, NamespaceRecord};
use super::{update_labels, MetaDb, MetadataError, Result, Txn};

/// A namespace and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Name.
    pub name: Namespace,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl Txn<'_> {
    /// Records the namespace if it is new, as containerd does when the first
    /// object lands in it.
    pub(crate) fn ensure_namespace(&mut self, ns: &Namespace) -> Result<()> {
        let k = key(&["ns", ns.as_str()]);
        if !self.contains(&k)? {
            self.put(k, &NamespaceRecord::default());
        }
        Ok(())
    }
}

impl MetaDb {
    /// Creates a namespace.
    ///
    /// # Errors
    /// AlreadyExists; InvalidArgument for bad labels.
    pub fn create_namespace(&self, info: &NamespaceInfo) -> Result<()> {
        labels::validate_all(&info.labels)?;
        self.update(|txn| {
            let k = key(&["ns", info.name.as_str()]);
            if txn.contains(&k)? {
                return Err(MetadataError::AlreadyExists {
                    what: "namespace",
                    id: info.name.to_string(),
                });
            }
            txn.put(
                k,
                &NamespaceRecord {
                    labels: info.labels.clone(),
                },
            );
            Ok(())
        })
    }

    /// Reads a namespace.
    ///
    /// # Errors
    /// NotFound.
    pub fn get_namespace(&self, ns: &Namespace) -> Result<NamespaceInfo> {
        let rec: NamespaceRecord =
            self.get(&key(&["ns", ns.as_str()]))?
                .ok_or_else(|| MetadataError::NotFound {
                    what: "namespace",
                    id: ns.to_string(),
                })?;
        Ok(NamespaceInfo {
            name: ns.clone(),
            labels: rec.labels,
        })
    }

    /// Every namespace, by name.
    ///
    /// # Errors
    /// Unknown when the DB fails.
    pub fn list_namespaces(&self) -> Result<Vec<NamespaceInfo>> {
        self.scan::<NamespaceRecord>(&prefix(&["ns"]))?
            .into_iter()
            .map(|(name, rec)| {
                Ok(NamespaceInfo {
                    name: Namespace::new(name)?,
                    labels: rec.labels,
                })
            })
            .collect()
    }

    /// Updates labels; `paths` as in containerd (`labels`, `labels.<key>`;
    /// none replaces all labels).
    ///
    /// As in containerd's namespace store, setting a label creates the
    /// namespace if it does not exist yet: clients label a namespace (e.g.
    /// `containerd.io/defaults/snapshotter`) before they put anything in it.
    /// An update that sets nothing on a missing namespace creates nothing.
    ///
    /// # Errors
    /// InvalidArgument for other paths or bad labels.
    pub fn update_namespace(
        &self,
        info: &NamespaceInfo,
        paths: &[String],
    ) -> Result<NamespaceInfo> {
        self.update(|txn| {
            let k = key(&["ns", info.name.as_str()]);
            let existing: Option<NamespaceRecord> = txn.get(&k)?;
            let sets_labels = !paths.is_empty() || !info.labels.is_empty();
            if existing.is_none() && !sets_labels {
                return Ok(NamespaceInfo {
                    name: info.name.clone(),
                    labels: BTreeMap::new(),
                });
            }
            let mut rec = existing.unwrap_or_default();
            if paths.is_empty() {
                rec.labels = info.labels.clone();
            }
            for p in paths {
                if !update_labels(&mut rec.labels, &info.labels, p) {
                    return Err(MetadataError::Field {
                        what: "namespace",
                        field: p.clone(),
                        id: info.name.to_string(),
                    });
                }
            }
            labels::validate_all(&rec.labels)?;
            txn.put(k, &rec);
            Ok(NamespaceInfo {
                name: info.name.clone(),
                labels: rec.labels,
            })
        })
    }

    /// Deletes an empty namespace, with its leases.
    ///
    /// # Errors
    /// NotFound; FailedPrecondition while images or blobs remain.
    pub fn delete_namespace(&self, ns: &Namespace) -> Result<()> {
        self.update(|txn| {
            let k = key(&["ns", ns.as_str()]);
            if !txn.contains(&k)? {
                return Err(MetadataError::NotFound {
                    what: "namespace",
                    id: ns.to_string(),
                });
            }
            let mut remaining = Vec::new();
            for (kind, name) in [
                (kinds::IMAGE, "images"),
                (kinds::BLOB, "blobs"),
                (kinds::CONTAINER, "containers"),
            ] {
                if txn.any(&prefix(&["o", ns.as_str(), kind]))? {
                    remaining.push(name);
                }
            }
            if !remaining.is_empty() {
                return Err(MetadataError::NamespaceNotEmpty {
                    namespace: ns.to_string(),
                    remaining: remaining.join(", "),
                });
            }
            for k in txn.keys(&prefix(&["o", ns.as_str()]))? {
                txn.remove(k);
            }
            txn.remove(k);
            self.mark_content_dirty();
            Ok(())
        })
    }
}
