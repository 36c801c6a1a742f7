//! Snapshot records of one local snapshotter, in its own sled DB.
//!
//! ```text
//! i <id, 8 bytes big-endian>   SnapshotRecord, with its key or name
//! ```
//!
//! Backing directories are named by `id`, a number sled generates, never by
//! a key. Every change (prepare, commit's rename, label update, remove)
//! writes or removes exactly one sled key, so it is atomic without a sled
//! batch, which would cost sled two extra log writes; it is flushed before
//! it is acknowledged. Lookups by name and the children of each parent are
//! indexes in memory, rebuilt from the records on open.
//!
//! Roots of the earlier layout (`s <key>` records and a `c <parent> <key>`
//! children index) are converted on open, in one batch.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard};

use prost::Message;

use crate::{Info, Kind, Result, SnapshotError};

/// One snapshot.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SnapshotRecord {
    /// Backing directory number.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Parent name, empty for none.
    #[prost(string, tag = "2")]
    pub parent: String,
    /// 1 view, 2 active, 3 committed (the wire numbers).
    #[prost(int32, tag = "3")]
    pub kind: i32,
    /// Labels.
    #[prost(btree_map = "string, string", tag = "4")]
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    #[prost(int64, tag = "5")]
    pub created_at: i64,
    /// Nanoseconds since the epoch.
    #[prost(int64, tag = "6")]
    pub updated_at: i64,
    /// The key (active, view) or name (committed) it is found by; the
    /// store sets it on every write.
    #[prost(string, tag = "7")]
    pub name: String,
}

impl SnapshotRecord {
    pub(crate) fn kind(&self) -> Kind {
        match self.kind {
            1 => Kind::View,
            3 => Kind::Committed,
            _ => Kind::Active,
        }
    }

    pub(crate) fn info(&self, name: &str) -> Info {
        Info {
            name: name.to_owned(),
            parent: self.parent.clone(),
            kind: self.kind(),
            labels: self.labels.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

pub(crate) fn kind_number(kind: Kind) -> i32 {
    match kind {
        Kind::View => 1,
        Kind::Active => 2,
        Kind::Committed => 3,
    }
}

fn ikey(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'i';
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Prefixes of the earlier layout's records and children index.
const OLD_RECORD: &[u8] = b"s\0";
const OLD_CHILD: &[u8] = b"c\0";

/// Names and parents of the stored records.
#[derive(Default)]
struct Index {
    by_name: HashMap<String, u64>,
    /// Parent name to the number of snapshots whose parent it is.
    children: HashMap<String, usize>,
}

impl Index {
    fn add(&mut self, rec: &SnapshotRecord) {
        self.by_name.insert(rec.name.clone(), rec.id);
        if !rec.parent.is_empty() {
            *self.children.entry(rec.parent.clone()).or_default() += 1;
        }
    }

    fn drop_record(&mut self, rec: &SnapshotRecord) {
        self.by_name.remove(&rec.name);
        if let Some(n) = self.children.get_mut(&rec.parent) {
            *n -= 1;
            if *n == 0 {
                self.children.remove(&rec.parent);
            }
        }
    }
}

/// The record store.
pub(crate) struct Store {
    db: sled::Db,
    /// Serialises changes: a caller checks, then writes, under it.
    lock: Mutex<()>,
    /// Held only for a lookup or while a write and its index change are
    /// made together, so readers never see one without the other.
    index: Mutex<Index>,
    /// Group commit: callers that asked for a flush while one ran are
    /// covered by the next one, so concurrent operations share fsyncs.
    flush_lock: Mutex<()>,
    flush_requested: AtomicU64,
    flush_completed: AtomicU64,
}

fn decode(name: &str, v: &[u8]) -> Result<SnapshotRecord> {
    SnapshotRecord::decode(v).map_err(|_| SnapshotError::Corrupt(name.to_owned()))
}

impl Store {
    pub(crate) fn open(path: &Path) -> Result<Store> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(8 << 20)
            // Changes are flushed explicitly before they are acknowledged;
            // no periodic fsyncs while idle.
            .flush_every_ms(None)
            .open()?;
        convert_earlier_layout(&db)?;
        let mut index = Index::default();
        for item in db.scan_prefix(b"i") {
            let (k, v) = item?;
            let rec = decode(&format!("record {:?}", &k[..]), &v)?;
            index.add(&rec);
        }
        Ok(Store {
            db,
            lock: Mutex::new(()),
            index: Mutex::new(index),
            flush_lock: Mutex::new(()),
            flush_requested: AtomicU64::new(0),
            flush_completed: AtomicU64::new(0),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<SnapshotRecord>> {
        let index = self.index();
        let Some(id) = index.by_name.get(key).copied() else {
            return Ok(None);
        };
        match self.db.get(ikey(id))? {
            None => Err(SnapshotError::Corrupt(key.to_owned())),
            Some(v) => decode(key, &v).map(Some),
        }
    }

    pub(crate) fn require(&self, key: &str) -> Result<SnapshotRecord> {
        self.get(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_owned()))
    }

    pub(crate) fn has_children(&self, key: &str) -> Result<bool> {
        Ok(self.index().children.contains_key(key))
    }

    /// Makes every applied change durable; see `flush_lock`. Call it after
    /// releasing [`Store::lock`], so that other operations proceed while
    /// the disk syncs.
    pub(crate) fn flush(&self) -> Result<()> {
        let mine = self.flush_requested.fetch_add(1, SeqCst) + 1;
        let _g = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.flush_completed.load(SeqCst) >= mine {
            return Ok(());
        }
        let target = self.flush_requested.load(SeqCst);
        self.db.flush()?;
        self.flush_completed.fetch_max(target, SeqCst);
        Ok(())
    }

    /// Writes `rec` under `key`; with `replaces`, the same snapshot (same
    /// id) was known by that key until now. One sled key changes, so the
    /// change is atomic; [`Store::flush`] makes it durable.
    pub(crate) fn put(
        &self,
        key: &str,
        rec: &SnapshotRecord,
        replaces: Option<&str>,
    ) -> Result<()> {
        let rec = SnapshotRecord {
            name: key.to_owned(),
            ..rec.clone()
        };
        let mut index = self.index();
        let old = match replaces.or(index.by_name.contains_key(key).then_some(key)) {
            Some(k) => match index.by_name.get(k).copied() {
                Some(id) => self.db.get(ikey(id))?.map(|v| decode(k, &v)).transpose()?,
                None => None,
            },
            None => None,
        };
        if let Some(old) = &old {
            if old.id != rec.id {
                // The caller checked under the lock; a different snapshot
                // under this name is a bug, not something to overwrite.
                return Err(SnapshotError::AlreadyExists(key.to_owned()));
            }
        }
        self.db.insert(ikey(rec.id), rec.encode_to_vec())?;
        if let Some(old) = &old {
            index.drop_record(old);
        }
        index.add(&rec);
        Ok(())
    }

    pub(crate) fn delete(&self, key: &str, rec: &SnapshotRecord) -> Result<()> {
        let mut index = self.index();
        self.db.remove(ikey(rec.id))?;
        index.drop_record(&SnapshotRecord {
            name: key.to_owned(),
            ..rec.clone()
        });
        Ok(())
    }

    pub(crate) fn all(&self) -> Result<Vec<(String, SnapshotRecord)>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"i") {
            let (k, v) = item?;
            let rec = decode(&format!("record {:?}", &k[..]), &v)?;
            out.push((rec.name.clone(), rec));
        }
        Ok(out)
    }
}

/// Rewrites records of the earlier layout (by key, with a children index
/// on disk) as records by id, in one batch, flushed before the store is
/// used.
fn convert_earlier_layout(db: &sled::Db) -> Result<()> {
    let mut batch = sled::Batch::default();
    let mut any = false;
    for item in db.scan_prefix(OLD_RECORD) {
        let (k, v) = item?;
        let name = String::from_utf8_lossy(&k[OLD_RECORD.len()..]).into_owned();
        let mut rec = decode(&name, &v)?;
        rec.name = name;
        batch.insert(&ikey(rec.id)[..], rec.encode_to_vec());
        batch.remove(k);
        any = true;
    }
    for item in db.scan_prefix(OLD_CHILD) {
        let (k, _) = item?;
        batch.remove(k);
        any = true;
    }
    if any {
        db.apply_batch(batch)?;
        db.flush()?;
    }
    Ok(())
}
