//! [`LocalSnapshotter`]: the built-in `overlayfs` and `native` snapshotters.
//!
//! Layout under the snapshotter's root:
//!
//! ```text
//! metadata.sled/          records (see storage.rs)
//! snapshots/<id>/fs       the snapshot's own layer (overlay upperdir, or a
//!                         full copy of the parent for native)
//! snapshots/<id>/work     overlay workdir (overlayfs only)
//! snapshots/new-<id>      a snapshot being created; never has a record
//! snapshots/spare-<n>     an empty snapshot made ahead (see keeper.rs)
//! snapshots/rm-<id>       a snapshot being removed; its record is gone
//! ```
//!
//! Directories appear whole (built under `new-` or taken from the spares,
//! renamed into place) before their record is committed, and records go
//! before directories on removal, so a crash leaves only directories
//! without records, which `cleanup` removes.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hull_proto::labels;

use crate::keeper::{Keeper, KeeperHandle, SPARE_PREFIX};
use crate::storage::{kind_number, SnapshotRecord, Store};
use crate::{Info, Kind, Labels, Mount, Result, SnapshotError, Snapshotter, Usage};

/// Which layout and mounts a local snapshotter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Layers stacked with overlayfs; each snapshot stores only its changes.
    Overlay,
    /// Each snapshot is a full copy of its parent (reflinked where the
    /// filesystem can); mounts are binds. Works on any filesystem.
    Native,
}

/// A snapshotter whose snapshots are directories on the local filesystem.
pub struct LocalSnapshotter {
    root: PathBuf,
    driver: Driver,
    store: Store,
    keeper: KeeperHandle,
}

impl std::fmt::Debug for LocalSnapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSnapshotter")
            .field("root", &self.root)
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io { op, path, source }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.contains('\0') {
        return Err(SnapshotError::InvalidKey(key.to_owned()));
    }
    Ok(())
}

impl LocalSnapshotter {
    /// Opens (creating) a snapshotter at `root` and cleans up after crashes.
    ///
    /// # Errors
    /// Unknown when the root or its DB cannot be opened.
    pub fn open(root: impl Into<PathBuf>, driver: Driver) -> Result<Arc<LocalSnapshotter>> {
        let root = root.into();
        let snaps = root.join("snapshots");
        std::fs::create_dir_all(&snaps).map_err(io("create", &snaps))?;
        let store = Store::open(&root.join("metadata.sled"))?;
        // Nothing else uses the directory yet: every record-less entry,
        // spares of the last run included, is left from before.
        cleanup(&store, &snaps, true)?;
        let keeper = KeeperHandle::start(snaps.clone(), driver == Driver::Overlay)
            .map_err(io("start thread for", &snaps))?;
        Ok(Arc::new(LocalSnapshotter {
            root,
            driver,
            store,
            keeper,
        }))
    }

    /// The driver.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn fs(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    /// Ids of `parent` and its ancestors, nearest first.
    fn parent_ids(&self, parent: &str) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let mut next = parent.to_owned();
        while !next.is_empty() {
            let rec = self.store.require(&next)?;
            out.push(rec.id);
            next = rec.parent;
        }
        Ok(out)
    }

    fn mounts_for(&self, rec: &SnapshotRecord) -> Result<Vec<Mount>> {
        let ro = if rec.kind() == Kind::View { "ro" } else { "rw" };
        let parents = self.parent_ids(&rec.parent)?;
        let bind = |dir: PathBuf, ro: &str| Mount {
            kind: "bind".into(),
            source: dir.to_string_lossy().into_owned(),
            options: vec![ro.to_owned(), "rbind".into()],
        };
        if self.driver == Driver::Native || parents.is_empty() {
            return Ok(vec![bind(self.fs(rec.id), ro)]);
        }
        if rec.kind() != Kind::Active && parents.len() == 1 {
            return Ok(vec![bind(self.fs(parents[0]), "ro")]);
        }
        let mut options = vec!["index=off".to_owned()];
        if rec.kind() == Kind::Active {
            options.push(format!(
                "workdir={}",
                self.dir(rec.id).join("work").display()
            ));
            options.push(format!("upperdir={}", self.fs(rec.id).display()));
        }
        let lower: Vec<String> = parents
            .iter()
            .map(|id| self.fs(*id).to_string_lossy().into_owned())
            .collect();
        options.push(format!("lowerdir={}", lower.join(":")));
        Ok(vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options,
        }])
    }

    fn create_sync(
        &self,
        key: &str,
        parent: &str,
        labels: Labels,
        kind: Kind,
    ) -> Result<Vec<Mount>> {
        check_key(key)?;
        labels::validate_all(&labels)?;
        let _g = self.store.lock();
        if self.store.get(key)?.is_some() {
            return Err(SnapshotError::AlreadyExists(key.to_owned()));
        }
        if !parent.is_empty() {
            let p = self.store.require(parent)?;
            if p.kind() != Kind::Committed {
                return Err(SnapshotError::ParentNotCommitted(parent.to_owned()));
            }
        }
        let id = self.store.next_id()?;
        let dir = self.dir(id);
        let spare = match parent.is_empty() {
            true => self.keeper.take_spare(),
            false => None,
        };
        let placed = spare.is_some_and(|spare| std::fs::rename(&spare, &dir).is_ok());
        if !placed {
            let tmp = self.root.join("snapshots").join(format!("new-{id}"));
            let built = self.build_dir(&tmp, parent);
            if let Err(e) = built {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &dir).map_err(io("rename", &dir))?;
        }
        let t = now();
        let rec = SnapshotRecord {
            id,
            parent: parent.to_owned(),
            kind: kind_number(kind),
            labels,
            created_at: t,
            updated_at: t,
            name: key.to_owned(),
        };
        if let Err(e) = self.store.put(key, &rec, None) {
            // Nothing points at the directory yet: remove it.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let mounts = self.mounts_for(&rec);
        drop(_g);
        self.store.flush()?;
        mounts
    }

    fn build_dir(&self, tmp: &Path, parent: &str) -> Result<()> {
        let fs = tmp.join("fs");
        // The root of a container's filesystem is 0755, like the image's.
        Keeper::build_empty(tmp, self.driver == Driver::Overlay).map_err(io("create", &fs))?;
        if self.driver == Driver::Native && !parent.is_empty() {
            let src = self.fs(self.store.require(parent)?.id);
            copy_tree(&src, &fs)?;
        }
        Ok(())
    }

    fn commit_sync(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        check_key(name)?;
        labels::validate_all(&labels)?;
        let _g = self.store.lock();
        let rec = self.store.require(key)?;
        if rec.kind() != Kind::Active {
            return Err(SnapshotError::NotActive(key.to_owned()));
        }
        if self.store.get(name)?.is_some() {
            return Err(SnapshotError::AlreadyExists(name.to_owned()));
        }
        let t = now();
        let committed = SnapshotRecord {
            kind: kind_number(Kind::Committed),
            labels,
            created_at: t,
            updated_at: t,
            ..rec
        };
        self.store.put(name, &committed, Some(key))?;
        drop(_g);
        self.store.flush()
    }

    fn remove_sync(&self, key: &str) -> Result<()> {
        let id = {
            let _g = self.store.lock();
            let rec = self.store.require(key)?;
            if self.store.has_children(key)? {
                return Err(SnapshotError::HasChildren(key.to_owned()));
            }
            self.store.delete(key, &rec)?;
            rec.id
        };
        // Durable before the data goes: a record never outlives its
        // directory. Ids are never reused, so nothing else touches it.
        self.store.flush()?;
        let dir = self.dir(id);
        let doomed = self.root.join("snapshots").join(format!("rm-{id}"));
        let dir = match std::fs::rename(&dir, &doomed) {
            Ok(()) => doomed,
            Err(_) => dir,
        };
        self.keeper.remove_later(dir);
        Ok(())
    }

    fn update_sync(&self, info: Info, paths: Vec<String>) -> Result<Info> {
        let _g = self.store.lock();
        let mut rec = self.store.require(&info.name)?;
        if paths.is_empty() {
            rec.labels = info.labels.clone();
        }
        for p in &paths {
            if p == "labels" {
                rec.labels = info.labels.clone();
            } else if let Some(k) = p.strip_prefix("labels.") {
                match info.labels.get(k) {
                    Some(v) if !v.is_empty() => rec.labels.insert(k.to_owned(), v.clone()),
                    _ => rec.labels.remove(k),
                };
            } else {
                return Err(SnapshotError::Field {
                    field: p.clone(),
                    key: info.name.clone(),
                });
            }
        }
        labels::validate_all(&rec.labels)?;
        rec.updated_at = now();
        self.store.put(&info.name, &rec, None)?;
        drop(_g);
        self.store.flush()?;
        Ok(rec.info(&info.name))
    }

    fn usage_sync(&self, key: &str) -> Result<Usage> {
        let rec = self.store.require(key)?;
        let mut usage = Usage::default();
        let mut seen = HashSet::new();
        du(&self.fs(rec.id), &mut usage, &mut seen)?;
        Ok(usage)
    }

    /// Removes directories that have no record, except those the keeper
    /// thread owns.
    fn cleanup_sync(&self) -> Result<()> {
        cleanup(&self.store, &self.root.join("snapshots"), false)
    }

    /// Waits (at most `limit`) until removed snapshots' directories are
    /// gone and spare directories are ready: what a test checks on disk.
    pub fn settle(&self, limit: std::time::Duration) {
        self.keeper.settle(limit);
    }
}

/// Removes the directories under `snaps` that have no record; with
/// `everything`, the keeper's spares and pending removals too.
fn cleanup(store: &Store, snaps: &Path, everything: bool) -> Result<()> {
    let _g = store.lock();
    let live: HashSet<u64> = store.all()?.into_iter().map(|(_, r)| r.id).collect();
    for entry in std::fs::read_dir(snaps).map_err(io("read", snaps))? {
        let entry = entry.map_err(io("read", snaps))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let orphan = match name.parse::<u64>() {
            Ok(id) => !live.contains(&id),
            Err(_) if everything => {
                name.starts_with("new-")
                    || name.starts_with("rm-")
                    || name.starts_with(SPARE_PREFIX)
            }
            // A new- directory is only ever seen under the store's lock.
            Err(_) => name.starts_with("new-"),
        };
        if orphan {
            tracing::info!(dir = %entry.path().display(), "removing orphaned snapshot directory");
            match std::fs::remove_dir_all(entry.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove", &entry.path())(e));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Bytes and inodes under `dir`, counting hard-linked files once.
fn du(dir: &Path, usage: &mut Usage, seen: &mut HashSet<(u64, u64)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io("read", dir))? {
        let entry = entry.map_err(io("read", dir))?;
        let meta = entry.metadata().map_err(io("stat", &entry.path()))?;
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.size += i64::try_from(meta.blocks() * 512).unwrap_or(i64::MAX);
        if meta.is_dir() {
            du(&entry.path(), usage, seen)?;
        }
    }
    Ok(())
}

/// Copies a tree with owners, modes, times, xattrs, devices and hard links,
/// reflinking file data where the filesystem can.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(src.join("."))
        .arg(dst)
        .output()
        .map_err(io("run cp", dst))?;
    if !out.status.success() {
        return Err(SnapshotError::Command {
            command: format!("cp -a {} {}", src.display(), dst.display()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(SnapshotError::Join(e.to_string())))
}

#[tonic::async_trait]
impl Snapshotter for Arc<LocalSnapshotter> {
    async fn stat(&self, key: &str) -> Result<Info> {
        let (s, key) = (self.clone(), key.to_owned());
        blocking(move || Ok(s.store.require(&key)?.info(&key))).await
    }

    async fn update(&self, info: Info, paths: Vec<String>) -> Result<Info> {
        let s = self.clone();
        blocking(move || s.update_sync(info, paths)).await
    }

    async fn usage(&self, key: &str) -> Result<Usage> {
        let (s, key) = (self.clone(), key.to_owned());
        blocking(move || s.usage_sync(&key)).await
    }

    async fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let (s, key) = (self.clone(), key.to_owned());
        blocking(move || {
            let rec = s.store.require(&key)?;
            s.mounts_for(&rec)
        })
        .await
    }

    async fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        let (s, key, parent) = (self.clone(), key.to_owned(), parent.to_owned());
        blocking(move || s.create_sync(&key, &parent, labels, Kind::Active)).await
    }

    async fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        let (s, key, parent) = (self.clone(), key.to_owned(), parent.to_owned());
        blocking(move || s.create_sync(&key, &parent, labels, Kind::View)).await
    }

    async fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        let (s, name, key) = (self.clone(), name.to_owned(), key.to_owned());
        blocking(move || s.commit_sync(&name, &key, labels)).await
    }

    async fn remove(&self, key: &str) -> Result<()> {
        let (s, key) = (self.clone(), key.to_owned());
        blocking(move || s.remove_sync(&key)).await
    }

    async fn walk(&self) -> Result<Vec<Info>> {
        let s = self.clone();
        blocking(move || {
            Ok(s.store
                .all()?
                .into_iter()
                .map(|(k, r)| r.info(&k))
                .collect())
        })
        .await
    }

    async fn cleanup(&self) -> Result<()> {
        let s = self.clone();
        blocking(move || s.cleanup_sync()).await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use hull_proto::errdefs::{Classify, Kind as ErrKind};

    use super::*;
    use crate::mount::TempMount;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    async fn semantics(driver: Driver) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalSnapshotter::open(dir.path(), driver).unwrap();
        s.prepare("a", "", Labels::new()).await.unwrap();
        assert_eq!(
            s.prepare("a", "", Labels::new()).await.unwrap_err().kind(),
            ErrKind::AlreadyExists
        );
        assert_eq!(
            s.prepare("b", "a", Labels::new()).await.unwrap_err().kind(),
            ErrKind::InvalidArgument
        );
        assert_eq!(
            s.prepare("b", "nope", Labels::new())
                .await
                .unwrap_err()
                .kind(),
            ErrKind::NotFound
        );
        s.commit("A", "a", Labels::new()).await.unwrap();
        assert_eq!(s.stat("a").await.unwrap_err().kind(), ErrKind::NotFound);
        assert_eq!(s.stat("A").await.unwrap().kind, Kind::Committed);
        assert_eq!(
            s.commit("A2", "A", Labels::new()).await.unwrap_err().kind(),
            ErrKind::FailedPrecondition
        );
        s.view("v", "A", Labels::new()).await.unwrap();
        assert_eq!(
            s.commit("V", "v", Labels::new()).await.unwrap_err().kind(),
            ErrKind::FailedPrecondition
        );
        s.prepare("b", "A", Labels::new()).await.unwrap();
        assert_eq!(
            s.commit("A", "b", Labels::new()).await.unwrap_err().kind(),
            ErrKind::AlreadyExists
        );
        assert_eq!(
            s.remove("A").await.unwrap_err().kind(),
            ErrKind::FailedPrecondition
        );
        let info = s.stat("b").await.unwrap();
        assert_eq!((info.parent.as_str(), info.kind), ("A", Kind::Active));
        let mut walked: Vec<String> = s
            .walk()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        walked.sort();
        assert_eq!(walked, ["A", "b", "v"]);
        // Labels by field mask.
        let mut i = s.stat("b").await.unwrap();
        i.labels.insert("x".into(), "1".into());
        let i = s.update(i, vec!["labels.x".into()]).await.unwrap();
        assert_eq!(i.labels.get("x").map(String::as_str), Some("1"));
        assert_eq!(
            s.update(i, vec!["parent".into()]).await.unwrap_err().kind(),
            ErrKind::InvalidArgument
        );
        s.remove("b").await.unwrap();
        s.remove("v").await.unwrap();
        s.remove("A").await.unwrap();
        assert!(s.walk().await.unwrap().is_empty());
        // Every directory went with its record, once the keeper is done;
        // what is left is its empty spares.
        s.settle(std::time::Duration::from_secs(10));
        let left = entries(dir.path());
        assert!(
            left.iter().all(|n| n.starts_with(SPARE_PREFIX)) && !left.is_empty(),
            "{left:?}"
        );
    }

    fn entries(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_prepare_takes_a_spare_directory_and_a_remove_finishes_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalSnapshotter::open(dir.path(), Driver::Overlay).unwrap();
        s.settle(std::time::Duration::from_secs(10));
        let spares = entries(dir.path());
        assert_eq!(spares.len(), crate::keeper::SPARES, "{spares:?}");
        let mounts = s.prepare("a", "", Labels::new()).await.unwrap();
        // One spare became the snapshot, with the layout of a new one.
        let rec = s.store.require("a").unwrap();
        assert!(!entries(dir.path()).contains(&spares[spares.len() - 1]));
        let fs = s.fs(rec.id);
        assert_eq!(
            std::fs::metadata(&fs).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert_eq!(std::fs::read_dir(&fs).unwrap().count(), 0);
        assert!(s.dir(rec.id).join("work").is_dir());
        assert_eq!(mounts[0].source, fs.to_string_lossy());
        // A view of a parent is built, not taken.
        s.commit("c", "a", Labels::new()).await.unwrap();
        s.prepare("child", "c", Labels::new()).await.unwrap();
        s.remove("child").await.unwrap();
        s.remove("c").await.unwrap();
        s.settle(std::time::Duration::from_secs(10));
        let left = entries(dir.path());
        assert!(left.iter().all(|n| n.starts_with(SPARE_PREFIX)), "{left:?}");
        assert_eq!(left.len(), crate::keeper::SPARES, "{left:?}");
        assert!(!s.dir(rec.id).exists());
    }

    #[tokio::test]
    async fn records_of_the_earlier_layout_are_converted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("snapshots/5/fs")).unwrap();
        std::fs::create_dir_all(dir.path().join("snapshots/6/fs")).unwrap();
        {
            // The earlier layout: records by key, and a children index.
            let db = sled::open(dir.path().join("metadata.sled")).unwrap();
            let base = SnapshotRecord {
                id: 5,
                kind: 3,
                labels: [("l".to_string(), "v".to_string())].into(),
                ..Default::default()
            };
            let child = SnapshotRecord {
                id: 6,
                parent: "base".into(),
                kind: 2,
                ..Default::default()
            };
            use prost::Message;
            db.insert(b"s\0base", base.encode_to_vec()).unwrap();
            db.insert(b"s\0child", child.encode_to_vec()).unwrap();
            db.insert(b"c\0base\0child", Vec::<u8>::new()).unwrap();
            db.flush().unwrap();
        }
        let s = reopen(dir.path());
        let base = s.stat("base").await.unwrap();
        assert_eq!(base.kind, Kind::Committed);
        assert_eq!(base.labels.get("l").map(String::as_str), Some("v"));
        assert_eq!(s.stat("child").await.unwrap().parent, "base");
        // The children index came along: the parent cannot go first.
        assert_eq!(
            s.remove("base").await.unwrap_err().kind(),
            ErrKind::FailedPrecondition
        );
        s.remove("child").await.unwrap();
        s.remove("base").await.unwrap();
        assert!(s.walk().await.unwrap().is_empty());
    }

    /// Opens `root` again after an earlier handle was dropped.
    fn reopen(root: &Path) -> Arc<LocalSnapshotter> {
        // sled releases its file lock from a background thread after the
        // last handle drops: retry briefly, as a restarted daemon would not
        // need to (it is a new process).
        let mut tries = 0;
        loop {
            match LocalSnapshotter::open(root, Driver::Overlay) {
                Ok(s) => break s,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn overlay_semantics() {
        semantics(Driver::Overlay).await;
    }

    #[tokio::test]
    async fn native_semantics() {
        semantics(Driver::Native).await;
    }

    async fn layers_through_mounts(driver: Driver) {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let s = LocalSnapshotter::open(dir.path().join("sn"), driver).unwrap();
        let m = s.prepare("a", "", Labels::new()).await.unwrap();
        {
            let t = TempMount::new(&m, mnt.path()).unwrap();
            std::fs::create_dir(t.path().join("d")).unwrap();
            std::fs::set_permissions(t.path().join("d"), std::fs::Permissions::from_mode(0o700))
                .unwrap();
            std::fs::write(t.path().join("d/keep"), "keep").unwrap();
            std::fs::write(t.path().join("gone"), "gone").unwrap();
            std::fs::write(t.path().join("moved"), "moved").unwrap();
        }
        s.commit("A", "a", Labels::new()).await.unwrap();
        let m = s.prepare("b", "A", Labels::new()).await.unwrap();
        {
            let t = TempMount::new(&m, mnt.path()).unwrap();
            assert_eq!(
                std::fs::read_to_string(t.path().join("d/keep")).unwrap(),
                "keep"
            );
            std::fs::remove_file(t.path().join("gone")).unwrap();
            std::fs::rename(t.path().join("moved"), t.path().join("d/moved")).unwrap();
            std::fs::set_permissions(
                t.path().join("d/keep"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        s.commit("B", "b", Labels::new()).await.unwrap();
        let m = s.view("v", "B", Labels::new()).await.unwrap();
        {
            let t = TempMount::new(&m, mnt.path()).unwrap();
            assert!(!t.path().join("gone").exists());
            assert!(!t.path().join("moved").exists());
            assert_eq!(
                std::fs::read_to_string(t.path().join("d/moved")).unwrap(),
                "moved"
            );
            let mode = std::fs::metadata(t.path().join("d/keep"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
            let dmode = std::fs::metadata(t.path().join("d"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(dmode, 0o700, "directory permissions survive commit");
            assert!(
                std::fs::write(t.path().join("new"), "x").is_err(),
                "a view is read-only"
            );
        }
        let u = s.usage("B").await.unwrap();
        assert!(u.inodes >= 1, "{u:?}");
    }

    #[tokio::test]
    async fn overlay_layers_through_mounts() {
        layers_through_mounts(Driver::Overlay).await;
    }

    #[tokio::test]
    async fn native_layers_through_mounts() {
        layers_through_mounts(Driver::Native).await;
    }

    #[tokio::test]
    async fn cleanup_removes_orphans_left_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LocalSnapshotter::open(dir.path(), Driver::Overlay).unwrap();
            s.prepare("kept", "", Labels::new()).await.unwrap();
        }
        for orphan in ["new-77", "rm-78", "79", "spare-1000"] {
            std::fs::create_dir_all(dir.path().join("snapshots").join(orphan).join("fs")).unwrap();
        }
        let s = reopen(dir.path());
        s.settle(std::time::Duration::from_secs(10));
        let left = entries(dir.path());
        let kept: Vec<&String> = left
            .iter()
            .filter(|n| !n.starts_with(SPARE_PREFIX))
            .collect();
        assert_eq!(kept.len(), 1, "{left:?}");
        assert!(!left.contains(&"spare-1000".to_string()), "{left:?}");
        s.stat("kept").await.unwrap();
    }

    #[tokio::test]
    async fn many_layers_still_mount() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let s = LocalSnapshotter::open(
            dir.path()
                .join("a-fairly-long-directory-name-for-the-snapshotter-root"),
            Driver::Overlay,
        )
        .unwrap();
        let mut parent = String::new();
        for i in 0..128 {
            let m = s
                .prepare(&format!("k{i}"), &parent, Labels::new())
                .await
                .unwrap();
            if i % 32 == 0 || i == 127 {
                let t = TempMount::new(&m, mnt.path()).unwrap();
                std::fs::write(t.path().join(format!("f{i}")), "x").unwrap();
            }
            let name = format!("layer-{i}");
            s.commit(&name, &format!("k{i}"), Labels::new())
                .await
                .unwrap();
            parent = name;
        }
        let m = s.prepare("top", &parent, Labels::new()).await.unwrap();
        let opts = m[0].options.join(",");
        assert!(opts.len() > 4096, "test must exceed a page: {}", opts.len());
        let t = TempMount::new(&m, mnt.path()).unwrap();
        for i in [0, 32, 64, 96, 127] {
            assert!(t.path().join(format!("f{i}")).exists(), "f{i}");
        }
    }
}
