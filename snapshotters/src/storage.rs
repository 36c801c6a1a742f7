//! Snapshot records of one local snapshotter, in its own sled DB.
//!
//! ```text
//! s <key>           SnapshotRecord (key is the active key or committed name)
//! c <parent> <key>  empty: children index, for remove and walk
//! ```
//!
//! Backing directories are named by `id`, a number sled generates, never by
//! a key. Each change is one atomic batch under the store's lock, flushed
//! before it is acknowledged.

use std::collections::BTreeMap;
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

fn skey(key: &str) -> Vec<u8> {
    let mut k = b"s\0".to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

fn ckey(parent: &str, key: &str) -> Vec<u8> {
    let mut k = b"c\0".to_vec();
    k.extend_from_slice(parent.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The record store.
pub(crate) struct Store {
    db: sled::Db,
    lock: Mutex<()>,
    /// Group commit: callers that asked for a flush while one ran are
    /// covered by the next one, so concurrent operations share fsyncs.
    flush_lock: Mutex<()>,
    flush_requested: AtomicU64,
    flush_completed: AtomicU64,
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
        Ok(Store {
            db,
            lock: Mutex::new(()),
            flush_lock: Mutex::new(()),
            flush_requested: AtomicU64::new(0),
            flush_completed: AtomicU64::new(0),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<SnapshotRecord>> {
        match self.db.get(skey(key))? {
            None => Ok(None),
            Some(v) => SnapshotRecord::decode(v.as_ref())
                .map(Some)
                .map_err(|_| SnapshotError::Corrupt(key.to_owned())),
        }
    }

    pub(crate) fn require(&self, key: &str) -> Result<SnapshotRecord> {
        self.get(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_owned()))
    }

    pub(crate) fn has_children(&self, key: &str) -> Result<bool> {
        Ok(self
            .db
            .scan_prefix(ckey(key, ""))
            .next()
            .transpose()?
            .is_some())
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

    /// Writes `key` (and its place in the children index) and removes
    /// `replaces`, atomically; [`Store::flush`] makes it durable.
    pub(crate) fn put(
        &self,
        key: &str,
        rec: &SnapshotRecord,
        replaces: Option<&str>,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        if let Some(old) = replaces {
            batch.remove(skey(old));
            if !rec.parent.is_empty() {
                batch.remove(ckey(&rec.parent, old));
            }
        }
        batch.insert(skey(key), rec.encode_to_vec());
        if !rec.parent.is_empty() {
            batch.insert(ckey(&rec.parent, key), Vec::new());
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    pub(crate) fn delete(&self, key: &str, rec: &SnapshotRecord) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.remove(skey(key));
        if !rec.parent.is_empty() {
            batch.remove(ckey(&rec.parent, key));
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    pub(crate) fn all(&self) -> Result<Vec<(String, SnapshotRecord)>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"s\0") {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k[2..]).into_owned();
            let rec = SnapshotRecord::decode(v.as_ref())
                .map_err(|_| SnapshotError::Corrupt(key.clone()))?;
            out.push((key, rec));
        }
        Ok(out)
    }
}
