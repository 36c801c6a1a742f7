//! The metadata DB: what containerd's bolt DB keeps, on sled.
//!
//! [`MetaDb`] owns the sled tree and the content store and offers typed,
//! namespaced operations (namespaces, content, images, leases) and garbage
//! collection. Every mutation runs under one writer lock, checks what it
//! needs, and applies all its records as one atomic batch; callers then
//! [`MetaDb::flush`] before acknowledging (concurrent callers share a flush).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use prost::Message;
use thiserror::Error;

use hull_proto::digest::{Digest, DigestError};
use hull_proto::errdefs::{Classify, Kind};
use hull_proto::identifiers::IdentifierError;
use hull_proto::labels::LabelError;

use crate::content::{ContentError, LocalContentStore};
use crate::filters::FilterError;

pub mod containers;
pub mod content;
pub mod gc;
pub mod images;
pub mod leases;
pub mod migrations;
pub mod namespaces;
pub mod schema;

use schema::key;

/// Errors of the metadata layer.
#[derive(Debug, Error)]
pub enum MetadataError {
    /// sled failed.
    #[error("metadata db")]
    Db(#[from] sled::Error),
    /// A record did not decode.
    #[error("corrupt record {key}")]
    Corrupt {
        /// Which record.
        key: String,
    },
    /// The DB was written by a newer hulld.
    #[error("metadata schema version {found} is newer than supported version {supported}")]
    SchemaTooNew {
        /// Version on disk.
        found: u32,
        /// Version this binary knows.
        supported: u32,
    },
    /// The object does not exist.
    #[error("{what} {id:?}: not found")]
    NotFound {
        /// Object type.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The object exists already.
    #[error("{what} {id:?}: already exists")]
    AlreadyExists {
        /// Object type.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// Namespace deletion while objects remain.
    #[error("namespace {namespace:?} must be empty, but it still has {remaining}")]
    NamespaceNotEmpty {
        /// The namespace.
        namespace: String,
        /// Object types left, comma separated.
        remaining: String,
    },
    /// A field mask names a field that cannot change.
    #[error("cannot update {field:?} field on {what} {id:?}")]
    Field {
        /// Object type.
        what: &'static str,
        /// The field path.
        field: String,
        /// Its id.
        id: String,
    },
    /// A required field is empty.
    #[error("{0} must be set")]
    Missing(&'static str),
    /// A descriptor size that cannot be right.
    #[error("{0} must be greater than zero")]
    NotPositive(&'static str),
    /// A lease resource type that hull does not know.
    #[error("resource type {0} not supported yet")]
    ResourceType(String),
    /// A lease resource that is malformed.
    #[error("invalid resource {kind} {id:?}")]
    Resource {
        /// Resource type.
        kind: String,
        /// Resource id.
        id: String,
    },
    /// A label broke the size rule.
    #[error(transparent)]
    Label(#[from] LabelError),
    /// An identifier broke the naming rule.
    #[error(transparent)]
    Identifier(#[from] IdentifierError),
    /// A digest did not parse.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// A filter did not parse.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The content store failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// A blocking task died.
    #[error(transparent)]
    Join(#[from] crate::JoinError),
}

impl Classify for MetadataError {
    fn kind(&self) -> Kind {
        use MetadataError as E;
        match self {
            E::Db(_) | E::Corrupt { .. } | E::Join(_) => Kind::Unknown,
            E::SchemaTooNew { .. } | E::NamespaceNotEmpty { .. } => Kind::FailedPrecondition,
            E::NotFound { .. } => Kind::NotFound,
            E::AlreadyExists { .. } => Kind::AlreadyExists,
            E::Field { .. }
            | E::Missing(_)
            | E::NotPositive(_)
            | E::Resource { .. }
            | E::Label(_)
            | E::Identifier(_)
            | E::Digest(_)
            | E::Filter(_) => Kind::InvalidArgument,
            E::ResourceType(_) => Kind::NotImplemented,
            E::Content(e) => e.kind(),
        }
    }
}

/// Result of the metadata layer.
pub type Result<T, E = MetadataError> = std::result::Result<T, E>;

/// An OCI descriptor with a validated digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: i64,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// State guarded by the writer lock.
#[derive(Debug, Default)]
pub(crate) struct WriteState {
    /// Blobs being moved into place whose record is not committed yet; GC
    /// must not remove their files.
    committing: HashMap<Digest, usize>,
}

/// The metadata DB and the content store it indexes.
pub struct MetaDb {
    db: sled::Db,
    tree: sled::Tree,
    writes: Mutex<WriteState>,
    flush_leader: tokio::sync::Mutex<()>,
    flush_requested: std::sync::atomic::AtomicU64,
    flush_completed: std::sync::atomic::AtomicU64,
    content: Arc<LocalContentStore>,
    gc_signal: gc::scheduler::GcSignal,
    /// A blob record went since the last file sweep (set at open: a crash
    /// may have left files without records).
    content_dirty: std::sync::atomic::AtomicBool,
    /// Images by namespace and name, for namespaces listed since start.
    image_cache: std::sync::RwLock<HashMap<String, BTreeMap<String, images::Image>>>,
}

impl std::fmt::Debug for MetaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaDb").finish_non_exhaustive()
    }
}

impl MetaDb {
    /// Opens (creating) the DB at `path`, over `content`.
    ///
    /// # Errors
    /// Unknown when sled cannot open the DB; FailedPrecondition when it was
    /// written by a newer hulld.
    pub fn open(path: &Path, content: Arc<LocalContentStore>) -> Result<Arc<MetaDb>> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            // Every acknowledged change is flushed explicitly (group
            // commit); sled's own 500 ms flusher would only add fsyncs to
            // an idle daemon.
            .flush_every_ms(None)
            .open()?;
        let tree = db.open_tree(schema::TREE)?;
        migrations::migrate(&tree)?;
        db.flush()?;
        Ok(Arc::new(MetaDb {
            db,
            tree,
            writes: Mutex::new(WriteState::default()),
            flush_leader: tokio::sync::Mutex::new(()),
            flush_requested: 0.into(),
            flush_completed: 0.into(),
            content,
            gc_signal: Default::default(),
            content_dirty: true.into(),
            image_cache: Default::default(),
        }))
    }

    /// The content store behind the blob records.
    pub fn content_store(&self) -> &Arc<LocalContentStore> {
        &self.content
    }

    /// The server's UUID, created on first use and kept across restarts.
    ///
    /// # Errors
    /// Unknown when the DB fails.
    pub fn server_uuid(&self) -> Result<String> {
        let k = key(&["meta", "uuid"]);
        let _w = self.lock();
        if let Some(v) = self.tree.get(&k)? {
            return Ok(String::from_utf8_lossy(&v).into_owned());
        }
        let uuid = random_uuid();
        self.tree.insert(k, uuid.as_bytes())?;
        self.db.flush()?;
        Ok(uuid)
    }

    /// Makes every change applied so far durable. Concurrent callers share
    /// one sled flush: whoever finds a flush running waits for the next one,
    /// which covers them all.
    ///
    /// Cancel-safe: dropping the future only gives up waiting.
    ///
    /// # Errors
    /// Unknown when sled cannot write.
    pub async fn flush(self: &Arc<Self>) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let mine = self.flush_requested.fetch_add(1, SeqCst) + 1;
        let _leader = self.flush_leader.lock().await;
        if self.flush_completed.load(SeqCst) >= mine {
            return Ok(());
        }
        let target = self.flush_requested.load(SeqCst);
        let db = self.db.clone();
        crate::blocking(move || db.flush().map_err(MetadataError::from)).await?;
        self.flush_completed.fetch_max(target, SeqCst);
        Ok(())
    }

    /// Records that a change removed something (an image, blob, container,
    /// lease, namespace or snapshot), so that the GC scheduler collects
    /// what it may have left unreferenced.
    pub fn note_deletion(&self) {
        self.gc_signal.deletion();
    }

    /// Marks blob files as possibly unreferenced, for the next collection.
    pub(crate) fn mark_content_dirty(&self) {
        self.content_dirty
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether blob files may be unreferenced; clears the mark.
    pub(crate) fn take_content_dirty(&self) -> bool {
        self.content_dirty
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Records a change outside this DB's records (a snapshot), which
    /// counts towards the scheduler's mutation threshold.
    pub fn note_mutation(&self) {
        self.gc_signal.mutation();
    }

    /// The GC scheduler's view of changes.
    pub fn gc_signal(&self) -> &gc::scheduler::GcSignal {
        &self.gc_signal
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, WriteState> {
        // A panic under the lock leaves no half-applied batch (batches are
        // applied whole), so the state is still consistent.
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` under the writer lock and applies what it staged atomically.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<T>) -> Result<T> {
        self.update_then(f, |_| {})
    }

    /// As [`MetaDb::update`], then runs `then` on the result once the batch
    /// is applied, still under the writer lock (for in-memory copies that
    /// must change in commit order).
    pub(crate) fn update_then<T>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T>,
        then: impl FnOnce(&T),
    ) -> Result<T> {
        let mut state = self.lock();
        let mut txn = Txn {
            tree: &self.tree,
            staged: BTreeMap::new(),
            state: &mut state,
        };
        let out = f(&mut txn)?;
        let staged = std::mem::take(&mut txn.staged);
        apply(&self.tree, staged)?;
        then(&out);
        self.gc_signal.mutation();
        Ok(out)
    }

    /// Reads one record.
    pub(crate) fn get<M: Message + Default>(&self, k: &[u8]) -> Result<Option<M>> {
        get_record(&self.tree, k)
    }

    /// Reads every record under a prefix, with its key tail.
    pub(crate) fn scan<M: Message + Default>(&self, prefix: &[u8]) -> Result<Vec<(String, M)>> {
        scan_records(&self.tree, prefix)
    }
}

fn get_record<M: Message + Default>(tree: &sled::Tree, k: &[u8]) -> Result<Option<M>> {
    match tree.get(k)? {
        None => Ok(None),
        Some(v) => M::decode(v.as_ref())
            .map(Some)
            .map_err(|_| MetadataError::Corrupt {
                key: String::from_utf8_lossy(k).replace('\0', "/"),
            }),
    }
}

fn scan_records<M: Message + Default>(
    tree: &sled::Tree,
    prefix: &[u8],
) -> Result<Vec<(String, M)>> {
    let mut out = Vec::new();
    for item in tree.scan_prefix(prefix) {
        let (k, v) = item?;
        let rec = M::decode(v.as_ref()).map_err(|_| MetadataError::Corrupt {
            key: String::from_utf8_lossy(&k).replace('\0', "/"),
        })?;
        out.push((schema::tail(&k, prefix.len()), rec));
    }
    Ok(out)
}

/// Writes a transaction's final value of each key it touched: one key
/// alone is atomic as a plain insert or remove, which costs sled one log
/// write where a batch costs it three; more go as one batch.
fn apply(tree: &sled::Tree, staged: BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Result<()> {
    if staged.len() <= 1 {
        for (k, v) in staged {
            match v {
                Some(v) => tree.insert(k, v)?,
                None => tree.remove(k)?,
            };
        }
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for (k, v) in staged {
        match v {
            Some(v) => batch.insert(k, v),
            None => batch.remove(k),
        }
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// A set of changes staged under the writer lock.
pub(crate) struct Txn<'a> {
    tree: &'a sled::Tree,
    /// What this transaction writes, the last value of each key (None:
    /// removed): its own reads see it, and it is applied as a whole.
    staged: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pub(crate) state: &'a mut WriteState,
}

impl Txn<'_> {
    pub(crate) fn get<M: Message + Default>(&self, k: &[u8]) -> Result<Option<M>> {
        match self.staged.get(k) {
            Some(None) => Ok(None),
            Some(Some(v)) => {
                M::decode(v.as_slice())
                    .map(Some)
                    .map_err(|_| MetadataError::Corrupt {
                        key: String::from_utf8_lossy(k).into_owned(),
                    })
            }
            None => get_record(self.tree, k),
        }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> Result<bool> {
        match self.staged.get(k) {
            Some(v) => Ok(v.is_some()),
            None => Ok(self.tree.contains_key(k)?),
        }
    }

    pub(crate) fn put<M: Message>(&mut self, k: Vec<u8>, rec: &M) {
        self.staged.insert(k, Some(rec.encode_to_vec()));
    }

    pub(crate) fn put_raw(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.staged.insert(k, Some(v));
    }

    pub(crate) fn remove(&mut self, k: Vec<u8>) {
        self.staged.insert(k, None);
    }

    /// Keys under a prefix as committed before this transaction.
    pub(crate) fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix).keys() {
            out.push(item?.to_vec());
        }
        Ok(out)
    }

    /// Whether anything is stored under a prefix.
    pub(crate) fn any(&self, prefix: &[u8]) -> Result<bool> {
        Ok(self.tree.scan_prefix(prefix).next().transpose()?.is_some())
    }
}

fn random_uuid() -> String {
    let mut b = [0u8; 16];
    if let Err(e) = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
    {
        // Fall back to time-derived bytes: the UUID only needs to differ
        // between roots, not to be secret.
        tracing::warn!(cause = %e, "read /dev/urandom");
        b = crate::now_nanos()
            .to_le_bytes()
            .repeat(2)
            .try_into()
            .unwrap_or([7; 16]);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// Random lowercase alphanumerics, for generated ids.
pub(crate) fn random_suffix(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    b.iter()
        .map(|x| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(*x) % 36]))
        .collect()
}

/// Applies a field-mask update to a label map: `labels` replaces the map,
/// `labels.<key>` sets (or, with no value, removes) one key.
pub(crate) fn update_labels(
    current: &mut BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    path: &str,
) -> bool {
    if path == "labels" {
        *current = new.clone();
        return true;
    }
    let Some(k) = path.strip_prefix("labels.") else {
        return false;
    };
    match new.get(k) {
        Some(v) if !v.is_empty() => {
            current.insert(k.to_owned(), v.clone());
        }
        _ => {
            current.remove(k);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn label_masks() {
        let mut cur: BTreeMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let new: BTreeMap<String, String> = [("a".into(), "9".into())].into();
        assert!(update_labels(&mut cur, &new, "labels.a"));
        assert!(update_labels(&mut cur, &new, "labels.b"));
        assert_eq!(cur, new);
        assert!(!update_labels(&mut cur, &new, "name"));
    }
}
