//! Mark-and-sweep garbage collection.
//!
//! Roots, per namespace: every image's target; every resource of a lease
//! that has not expired; every blob labelled `containerd.io/gc.root`.
//! From a blob, `containerd.io/gc.ref.content*` labels lead to more blobs
//! (a flat lease's resources are kept but not followed). Swept: blob records
//! nothing reaches, expired leases, then blob files no namespace records.
//!
//! The whole run holds the writer lock, and records are deleted and flushed
//! before any file is removed, so a crash never leaves a record pointing at
//! a missing blob.

use std::collections::HashSet;

use hull_proto::digest::Digest;
use hull_proto::identifiers::Namespace;
use hull_proto::labels::{GC_EXPIRE, GC_FLAT, GC_REF_CONTENT, GC_ROOT};

use super::leases::{parse_expiry, CONTENT};
use super::schema::{
    key, kinds, prefix, split, tail, BlobRecord, ImageRecord, LeaseRecord, NamespaceRecord,
};
use super::{MetaDb, Result};

/// `[gc]`: when collections run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Delay between a delete and the collection it triggers, so that a
    /// burst of deletes is collected once.
    pub schedule_delay_ms: u64,
    /// A collection also runs this often, to end expired leases.
    pub interval_s: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            schedule_delay_ms: 100,
            interval_s: 60,
        }
    }
}

/// What one GC run removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcStats {
    /// Blob records removed from namespaces.
    pub records: usize,
    /// Blob files removed from disk.
    pub blobs: usize,
    /// Expired leases removed.
    pub leases: usize,
}

impl MetaDb {
    /// Runs one collection at time `now` (nanoseconds since the epoch).
    ///
    /// # Errors
    /// Unknown when the DB or the content store fails; whatever was removed
    /// before the failure stays removed, and nothing referenced is touched.
    pub fn collect_garbage(&self, now: i64) -> Result<GcStats> {
        let mut stats = GcStats::default();
        let state = self.lock();
        let mut batch = sled::Batch::default();
        let mut live: HashSet<Digest> = HashSet::new();

        for (ns, _) in self.scan::<NamespaceRecord>(&prefix(&["ns"]))? {
            let Ok(ns) = Namespace::new(ns) else { continue };
            let n = ns.as_str();
            let mut marked: HashSet<String> = HashSet::new();
            // (digest, follow references)
            let mut stack: Vec<(String, bool)> = Vec::new();

            for (_, img) in self.scan::<ImageRecord>(&prefix(&["o", n, kinds::IMAGE]))? {
                if let Some(t) = img.target {
                    stack.push((t.digest, true));
                }
            }
            for (id, lease) in self.scan::<LeaseRecord>(&prefix(&["o", n, kinds::LEASE]))? {
                let expired = lease
                    .labels
                    .get(GC_EXPIRE)
                    .and_then(|e| parse_expiry(e))
                    .is_some_and(|t| t <= now);
                let res_prefix = prefix(&["o", n, kinds::LEASE_RESOURCE, &id]);
                if expired {
                    stats.leases += 1;
                    batch.remove(key(&["o", n, kinds::LEASE, &id]));
                    for k in self.tree.scan_prefix(&res_prefix).keys() {
                        batch.remove(k?);
                    }
                    continue;
                }
                let flat = lease.labels.contains_key(GC_FLAT);
                for k in self.tree.scan_prefix(&res_prefix).keys() {
                    let k = k?;
                    let t = tail(&k, res_prefix.len());
                    if let [CONTENT, digest] = split(&t)[..] {
                        stack.push((digest.to_owned(), !flat));
                    }
                }
            }
            let blobs = self.scan::<BlobRecord>(&prefix(&["o", n, kinds::BLOB]))?;
            for (d, rec) in &blobs {
                if rec.labels.contains_key(GC_ROOT) {
                    stack.push((d.clone(), true));
                }
            }
            while let Some((d, follow)) = stack.pop() {
                if !marked.insert(d.clone()) || !follow {
                    continue;
                }
                let Some(rec) = self.get::<BlobRecord>(&key(&["o", n, kinds::BLOB, &d]))? else {
                    continue;
                };
                for (k, v) in &rec.labels {
                    if k.starts_with(GC_REF_CONTENT) {
                        stack.push((v.clone(), true));
                    }
                }
            }
            for (d, _) in blobs {
                if marked.contains(&d) {
                    if let Ok(d) = d.parse() {
                        live.insert(d);
                    }
                } else {
                    stats.records += 1;
                    batch.remove(key(&["o", n, kinds::BLOB, &d]));
                }
            }
        }

        self.tree.apply_batch(batch)?;
        self.db.flush()?;

        for d in self.content.blobs()? {
            if !live.contains(&d) && !state.committing.contains_key(&d) {
                self.content.delete_blob(&d)?;
                stats.blobs += 1;
            }
        }
        // The writer lock is held until the files are gone.
        drop(state);
        Ok(stats)
    }
}
