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
use std::collections::BTreeMap;
use std::sync::Arc;

use hull_proto::labels::{GC_EXPIRE, GC_FLAT, GC_REF_CONTENT, GC_REF_SNAPSHOT, GC_ROOT};
use hull_snapshots::{SnapshotError, Snapshotter};

use crate::snapshots::Snapshotters;

use super::leases::{parse_expiry, CONTENT};
use super::schema::{
    key, kinds, prefix, split, tail, BlobRecord, ContainerRecord, ImageRecord, LeaseRecord,
    NamespaceRecord,
};
use super::{MetaDb, Result};

pub mod scheduler;

pub use scheduler::GcConfig;

/// What one GC run removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcStats {
    /// Blob records removed from namespaces.
    pub records: usize,
    /// Blob files removed from disk.
    pub blobs: usize,
    /// Expired leases removed.
    pub leases: usize,
    /// Snapshots removed.
    pub snapshots: usize,
}

impl MetaDb {
    /// Runs one collection at time `now` (nanoseconds since the epoch).
    ///
    /// # Errors
    /// Unknown when the DB or the content store fails; whatever was removed
    /// before the failure stays removed, and nothing referenced is touched.
    pub fn collect_garbage(&self, now: i64) -> Result<GcStats> {
        Ok(self.collect_garbage_with_roots(now)?.0)
    }

    /// As [`MetaDb::collect_garbage`], also returning the snapshots that
    /// live content and leases hold, by snapshotter, as backend keys
    /// (`ns/key`): the roots of the snapshot sweep.
    ///
    /// # Errors
    /// As [`MetaDb::collect_garbage`].
    pub fn collect_garbage_with_roots(&self, now: i64) -> Result<(GcStats, SnapshotRoots)> {
        let mut stats = GcStats::default();
        let mut snapshot_roots = SnapshotRoots::new();
        let state = self.lock();
        // Blob files can only have lost their last record through a
        // deletion since the last sweep (or a crash before this start):
        // otherwise the file sweep, which reads the whole blob directory,
        // has nothing to find.
        let content_dirty = self.take_content_dirty();
        let mut batch = sled::Batch::default();
        let mut removals = 0usize;
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
            // A container holds its root snapshot and what its labels name.
            for (_, c) in self.scan::<ContainerRecord>(&prefix(&["o", n, kinds::CONTAINER]))? {
                if !c.snapshotter.is_empty() && !c.snapshot_key.is_empty() {
                    snapshot_roots
                        .entry(c.snapshotter.clone())
                        .or_default()
                        .insert(format!("{n}/{}", c.snapshot_key));
                }
                follow_labels(&c.labels, n, &mut stack, &mut snapshot_roots);
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
                    removals += 1;
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
                    match split(&t)[..] {
                        [CONTENT, digest] => stack.push((digest.to_owned(), !flat)),
                        [kind, snapshot] => {
                            if let Some(sn) = kind.strip_prefix("snapshots/") {
                                snapshot_roots
                                    .entry(sn.to_owned())
                                    .or_default()
                                    .insert(format!("{n}/{snapshot}"));
                            }
                        }
                        _ => {}
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
                follow_labels(&rec.labels, n, &mut stack, &mut snapshot_roots);
            }
            for (d, _) in blobs {
                if marked.contains(&d) {
                    if let Ok(d) = d.parse() {
                        live.insert(d);
                    }
                } else {
                    stats.records += 1;
                    removals += 1;
                    batch.remove(key(&["o", n, kinds::BLOB, &d]));
                }
            }
        }

        // Records go (durably) before any file does; a run that removes
        // no record writes nothing.
        if removals > 0 {
            self.tree.apply_batch(batch)?;
            self.db.flush()?;
        }

        if content_dirty || stats.records > 0 {
            for d in self.content.blobs()? {
                if !live.contains(&d) && !state.committing.contains_key(&d) {
                    self.content.delete_blob(&d)?;
                    stats.blobs += 1;
                }
            }
        }
        // The writer lock is held until the files are gone.
        drop(state);
        Ok((stats, snapshot_roots))
    }
}

/// Follows an object's GC reference labels: content to mark (with its own
/// references) and snapshots to keep, in namespace `ns`.
fn follow_labels(
    labels: &std::collections::BTreeMap<String, String>,
    ns: &str,
    stack: &mut Vec<(String, bool)>,
    snapshot_roots: &mut SnapshotRoots,
) {
    for (k, v) in labels {
        if k.starts_with(GC_REF_CONTENT) {
            stack.push((v.clone(), true));
        } else if let Some(sn) = k.strip_prefix(GC_REF_SNAPSHOT) {
            snapshot_roots
                .entry(sn.to_owned())
                .or_default()
                .insert(format!("{ns}/{v}"));
        }
    }
}

/// Snapshots held by live objects, by snapshotter, as backend keys.
pub type SnapshotRoots = BTreeMap<String, HashSet<String>>;

/// Runs whole collections: metadata and content, then snapshots.
#[derive(Debug)]
pub struct Collector {
    db: Arc<MetaDb>,
    snapshotters: Arc<Snapshotters>,
}

impl Collector {
    /// Collects over `db` and `snapshotters`.
    pub fn new(db: Arc<MetaDb>, snapshotters: Arc<Snapshotters>) -> Self {
        Collector { db, snapshotters }
    }

    /// The metadata DB.
    pub fn db(&self) -> &Arc<MetaDb> {
        &self.db
    }

    /// One collection now.
    ///
    /// Snapshots are kept when held by live content (`gc.ref.snapshot`
    /// labels), a lease, or a `containerd.io/gc.root` label, with their
    /// parents; the rest are removed, children first.
    ///
    /// # Errors
    /// As [`MetaDb::collect_garbage`]; a snapshot that cannot be removed is
    /// logged and left for the next run.
    pub async fn run(&self) -> Result<GcStats> {
        // No snapshot is created from the mark until the removals are
        // decided: one created meanwhile would look unheld.
        let gate = self.snapshotters.collecting().await;
        let db = self.db.clone();
        let (mut stats, roots) =
            crate::blocking(move || db.collect_garbage_with_roots(crate::now_nanos())).await?;
        let mut plans = Vec::new();
        for (name, sn) in self.snapshotters.all() {
            let held = roots.get(name).cloned().unwrap_or_default();
            match plan_sweep(sn.as_ref(), held).await {
                Ok(doomed) => plans.push((name, sn, doomed)),
                Err(e) => {
                    tracing::warn!(snapshotter = %name, cause = %hull_proto::errdefs::message(&e), "snapshot sweep")
                }
            }
        }
        drop(gate);
        for (name, sn, doomed) in plans {
            for k in doomed {
                match sn.remove(&k).await {
                    Ok(()) => stats.snapshots += 1,
                    // Gone or given a child meanwhile: not ours to worry
                    // about.
                    Err(e) => {
                        tracing::debug!(snapshotter = %name, key = %k, cause = %e, "snapshot not collected")
                    }
                }
            }
        }
        Ok(stats)
    }
}

/// The snapshots of `sn` that nothing holds, children before parents.
async fn plan_sweep(
    sn: &dyn Snapshotter,
    held: HashSet<String>,
) -> std::result::Result<Vec<String>, SnapshotError> {
    let all = sn.walk().await?;
    let parents: BTreeMap<String, String> = all
        .iter()
        .map(|i| (i.name.clone(), i.parent.clone()))
        .collect();
    let mut stack: Vec<String> = held.into_iter().collect();
    stack.extend(
        all.iter()
            .filter(|i| i.labels.contains_key(GC_ROOT))
            .map(|i| i.name.clone()),
    );
    let mut marked = HashSet::new();
    while let Some(k) = stack.pop() {
        if !marked.insert(k.clone()) {
            continue;
        }
        if let Some(p) = parents.get(&k).filter(|p| !p.is_empty()) {
            stack.push(p.clone());
        }
    }
    let mut doomed: HashSet<String> = parents
        .keys()
        .filter(|k| !marked.contains(*k))
        .cloned()
        .collect();
    let mut order = Vec::new();
    // Children before parents: what no remaining snapshot names as its
    // parent, round after round, until nothing more can go.
    loop {
        let busy: HashSet<&String> = parents
            .iter()
            .filter(|(k, _)| doomed.contains(*k) || marked.contains(*k))
            .map(|(_, p)| p)
            .collect();
        let leaves: Vec<String> = doomed
            .iter()
            .filter(|k| !busy.contains(k))
            .cloned()
            .collect();
        if leaves.is_empty() {
            break;
        }
        for k in leaves {
            doomed.remove(&k);
            order.push(k);
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use hull_proto::identifiers::LeaseId;

    use super::*;
    use crate::content::LocalContentStore;
    use crate::filters::Filter;
    use crate::metadata::images::Image;
    use crate::metadata::Descriptor;

    struct Fixture {
        _dir: tempfile::TempDir,
        db: Arc<MetaDb>,
        ns: Namespace,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let content = LocalContentStore::open(dir.path().join("content")).unwrap();
        let db = MetaDb::open(&dir.path().join("meta"), content).unwrap();
        Fixture {
            _dir: dir,
            db,
            ns: Namespace::new("gc").unwrap(),
        }
    }

    impl Fixture {
        fn blob(&self, data: &str, labels: &[(&str, &str)], lease: Option<&LeaseId>) -> Digest {
            let mut w = self.db.open_writer(&self.ns, data, 0, None, lease).unwrap();
            w.write(data.as_bytes()).unwrap();
            let labels = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            self.db.commit(&self.ns, w, 0, None, labels, lease).unwrap()
        }

        fn present(&self, d: &Digest) -> bool {
            self.db.blob_info(&self.ns, d).is_ok() && self.db.content_store().exists(d)
        }
    }

    #[test]
    fn references_roots_leases_and_expiry() {
        let f = fixture();
        let layer = f.blob("layer", &[], None);
        let config = f.blob("config", &[], None);
        let manifest = f.blob(
            "manifest",
            &[
                ("containerd.io/gc.ref.content.l.0", &layer.to_string()),
                ("containerd.io/gc.ref.content.config", &config.to_string()),
            ],
            None,
        );
        let rooted = f.blob("rooted", &[(GC_ROOT, "x")], None);
        let loose = f.blob("loose", &[], None);
        f.db.create_image(
            &f.ns,
            Image {
                name: "img".into(),
                labels: BTreeMap::new(),
                target: Descriptor {
                    media_type: "m".into(),
                    digest: manifest.clone(),
                    size: 8,
                    annotations: BTreeMap::new(),
                },
                created_at: 0,
                updated_at: 0,
            },
        )
        .unwrap();
        let expiring =
            f.db.create_lease(
                &f.ns,
                "soon",
                [(GC_EXPIRE.to_owned(), "2001-01-01T00:00:10Z".to_owned())].into(),
            )
            .unwrap();
        let lease = LeaseId::new(expiring.id).unwrap();
        let leased = f.blob("leased", &[], Some(&lease));
        let before_expiry = parse_expiry("2001-01-01T00:00:00Z").unwrap();

        let stats = f.db.collect_garbage(before_expiry).unwrap();
        assert_eq!(
            stats,
            GcStats {
                records: 1,
                blobs: 1,
                leases: 0,
                snapshots: 0
            }
        );
        assert!(!f.present(&loose));
        for d in [&layer, &config, &manifest, &rooted, &leased] {
            assert!(f.present(d), "{d} collected");
        }

        let stats =
            f.db.collect_garbage(before_expiry + 20_000_000_000)
                .unwrap();
        assert_eq!(
            stats,
            GcStats {
                records: 1,
                blobs: 1,
                leases: 1,
                snapshots: 0
            }
        );
        assert!(!f.present(&leased));
        assert!(f
            .db
            .list_leases(&f.ns, &Filter::default())
            .unwrap()
            .is_empty());

        f.db.delete_image(&f.ns, "img").unwrap();
        f.db.collect_garbage(0).unwrap();
        for d in [&layer, &config, &manifest] {
            assert!(!f.present(d), "{d} survived its image");
        }
        assert!(f.present(&rooted));
    }

    #[test]
    fn flat_leases_keep_only_what_they_name() {
        let f = fixture();
        let child = f.blob("child", &[], None);
        let lease =
            f.db.create_lease(&f.ns, "flat", [(GC_FLAT.to_owned(), "1".to_owned())].into())
                .unwrap();
        let lease = LeaseId::new(lease.id).unwrap();
        let parent = f.blob(
            "parent",
            &[("containerd.io/gc.ref.content.c", &child.to_string())],
            Some(&lease),
        );
        f.db.collect_garbage(0).unwrap();
        assert!(f.present(&parent));
        assert!(
            !f.present(&child),
            "a flat lease must not follow references"
        );
    }

    #[test]
    fn blobs_shared_by_namespaces_stay_until_the_last_goes() {
        let f = fixture();
        let other = Namespace::new("other").unwrap();
        let d = f.blob("shared", &[(GC_ROOT, "1")], None);
        let mut w = f.db.open_writer(&other, "r", 0, None, None).unwrap();
        w.write(b"shared").unwrap();
        f.db.commit(
            &other,
            w,
            0,
            None,
            [(GC_ROOT.to_owned(), "1".to_owned())].into(),
            None,
        )
        .unwrap();
        f.db.delete_blob(&f.ns, &d).unwrap();
        f.db.collect_garbage(0).unwrap();
        assert!(
            f.db.content_store().exists(&d),
            "file removed while another namespace has it"
        );
        f.db.delete_blob(&other, &d).unwrap();
        f.db.collect_garbage(0).unwrap();
        assert!(!f.db.content_store().exists(&d));
    }
}
