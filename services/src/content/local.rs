//! [`LocalContentStore`]: blobs and ingests on the local filesystem.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use hull_proto::digest::{Algorithm, Digest};
use hull_proto::errdefs;

use super::{io_err, ContentError};

type Result<T> = std::result::Result<T, ContentError>;

/// Writes at least this large hash in parallel with the file write.
const PARALLEL_HASH_MIN: usize = 256 << 10;

/// A new ingest stays in memory until it holds more than this, is left
/// uncommitted, or fails its commit: a small blob written and committed on
/// one stream (a manifest, a config) then costs one file, created in the
/// blob directory at commit, instead of an ingest directory with two files
/// made and removed around it. Nothing of an ingest is durable before its
/// commit in any case; a WRITE reply promises no more.
const MEMORY_INGEST_MAX: usize = 256 << 10;

/// How long a writer waits for a ref whose writer is about to close: a
/// client that closes its stream and at once reopens the ref must not be
/// refused (containerd retries for up to about a second likewise).
const LOCK_PATIENCE: Duration = Duration::from_secs(1);
/// How long a status waits for writes already acknowledged to land.
const LANDING_PATIENCE: Duration = Duration::from_secs(10);

/// Progress of one ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    /// The full ref.
    pub ref_key: String,
    /// Bytes written so far.
    pub offset: u64,
    /// Expected total, 0 when unknown.
    pub total: i64,
    /// The digest the client said it writes, if it said.
    pub expected: Option<Digest>,
    /// Nanoseconds since the epoch.
    pub started_at: i64,
    /// Nanoseconds since the epoch.
    pub updated_at: i64,
}

/// The status of an ingest with a live writer, which the writer keeps up
/// to date, so that a status taken while it writes is exact to the
/// nanosecond rather than a file's coarse mtime.
#[derive(Debug)]
struct Live {
    state: Mutex<LiveState>,
    landed: Condvar,
}

#[derive(Debug)]
struct LiveState {
    status: IngestStatus,
    /// Writes acknowledged to the client that have not landed yet.
    pending: u32,
    /// The ingest exists only in its writer's memory so far.
    in_memory: bool,
    /// Aborted while only in memory: it never reaches the disk.
    aborted: bool,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, LiveState> {
        // Every critical section leaves the status whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An ingest that exists only in its writer's memory (not aborted).
    fn in_memory(&self) -> bool {
        let st = self.lock();
        st.in_memory && !st.aborted && st.status.started_at != 0
    }

    /// The status once every acknowledged write has landed (or the wait
    /// ran out, when a write is stuck: then what has landed).
    fn settled(&self) -> IngestStatus {
        let guard = self.lock();
        let (guard, _) = self
            .landed
            .wait_timeout_while(guard, LANDING_PATIENCE, |s| s.pending > 0)
            .unwrap_or_else(|p| p.into_inner());
        guard.status.clone()
    }
}

/// A write acknowledged to the client before it lands: a status waits for
/// it. Dropping it (the write done, failed or abandoned) ends the wait.
#[derive(Debug)]
pub struct PendingWrite(Arc<Live>);

impl Drop for PendingWrite {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.pending = s.pending.saturating_sub(1);
        drop(s);
        self.0.landed.notify_all();
    }
}

/// Blobs and ingests under one directory. Shared as `Arc`.
#[derive(Debug)]
pub struct LocalContentStore {
    root: PathBuf,
    /// Refs with a live writer (one writer per ref), with its status.
    locks: Mutex<HashMap<String, Arc<Live>>>,
}

impl LocalContentStore {
    /// Opens (creating) the store at `root` and removes half-created ingests.
    ///
    /// # Errors
    /// Unknown when the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Arc<LocalContentStore>> {
        let root = root.into();
        for dir in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        let ingest = root.join("ingest");
        for entry in fs::read_dir(&ingest).map_err(io_err("read", &ingest))? {
            let entry = entry.map_err(io_err("read", &ingest))?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                    _ => fs::remove_file(&path),
                }
                .map_err(io_err("remove", &path))?;
            }
        }
        Ok(Arc::new(LocalContentStore {
            root,
            locks: Mutex::new(HashMap::new()),
        }))
    }

    /// Where the blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Whether the blob is committed.
    pub fn exists(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a committed blob.
    ///
    /// # Errors
    /// NotFound when there is no such blob.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        File::open(self.blob_path(digest)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ContentError::BlobNotFound(digest.clone()),
            _ => ContentError::Io {
                op: "open",
                path: self.blob_path(digest),
                source: e,
            },
        })
    }

    /// Removes a committed blob; absent blobs are not an error.
    ///
    /// # Errors
    /// Unknown when the file cannot be removed.
    pub fn delete_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
            _ => Ok(()),
        }
    }

    /// Every committed blob.
    ///
    /// # Errors
    /// Unknown when the blob directories cannot be read.
    pub fn blobs(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let dir = self.root.join("blobs");
        for alg in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let alg = alg.map_err(io_err("read", &dir))?;
            let alg_name = alg.file_name().to_string_lossy().into_owned();
            for blob in fs::read_dir(alg.path()).map_err(io_err("read", alg.path()))? {
                let blob = blob.map_err(io_err("read", alg.path()))?;
                let name = format!("{alg_name}:{}", blob.file_name().to_string_lossy());
                // Anything that is not a digest is not ours to judge.
                if let Ok(d) = name.parse() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    fn ingest_dir(&self, ref_key: &str) -> PathBuf {
        let hash = Digest::sha256(&Sha256::digest(ref_key.as_bytes()).into());
        self.root.join("ingest").join(hash.hex())
    }

    /// Opens a writer for `ref_key`, resuming what was written before.
    /// `expected`, when given, is recorded as the digest the client says
    /// it writes.
    ///
    /// A ref whose writer is closing is waited for, up to about a second.
    ///
    /// # Errors
    /// Unavailable when another writer holds the ref.
    pub fn writer(
        self: &Arc<Self>,
        ref_key: &str,
        total: i64,
        expected: Option<&Digest>,
    ) -> Result<Writer> {
        if ref_key.is_empty() {
            return Err(ContentError::EmptyRef);
        }
        let lock = RefLock::acquire(self, ref_key)?;
        let dir = self.ingest_dir(ref_key);
        let data = dir.join("data");
        // A resumed ingest takes the total and digest given now; they are
        // recorded when the writer closes.
        if !has_ingest(&dir) {
            let now = crate::now_nanos();
            let mut live = lock.live.lock();
            live.status = IngestStatus {
                ref_key: ref_key.to_owned(),
                offset: 0,
                total,
                expected: expected.cloned(),
                started_at: now,
                updated_at: now,
            };
            live.in_memory = true;
            drop(live);
            return Ok(Writer {
                dir,
                file: None,
                buf: Vec::new(),
                hasher: Sha256::new(),
                published: false,
                _lock: lock,
            });
        }
        let (file, mut status) = {
            let mut status = read_status(&dir)?;
            if total > 0 {
                status.total = total;
            }
            if expected.is_some() {
                status.expected = expected.cloned();
            }
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&data)
                .map_err(io_err("open", &data))?;
            (file, status)
        };
        // Resuming: the hash state died with the last writer, so rebuild it.
        let mut file = file;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_err("read", &data))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        status.offset = offset;
        lock.live.lock().status = status;
        Ok(Writer {
            dir,
            file: Some(file),
            buf: Vec::new(),
            hasher,
            published: false,
            _lock: lock,
        })
    }

    /// Builds a new ingest under `.tmp-*` and renames it into place;
    /// returns its data file, open for reading and appending.
    fn create_ingest(&self, dir: &Path, status: &IngestStatus) -> Result<File> {
        let parent = self.root.join("ingest");
        let tmp = parent.join(format!(
            ".tmp-{}",
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        write_file(&tmp.join("status"), &encode_status(status))?;
        let data = tmp.join("data");
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&data)
            .map_err(io_err("create", &data))?;
        fs::rename(&tmp, dir).map_err(io_err("rename", dir))?;
        Ok(file)
    }

    /// Status of one ingest.
    ///
    /// # Errors
    /// NotFound when there is no such ingest.
    pub fn status(&self, ref_key: &str) -> Result<IngestStatus> {
        let dir = self.ingest_dir(ref_key);
        // An aborted ingest is gone even while its writer lives on.
        if !has_ingest(&dir) {
            return match self.live(ref_key) {
                Some(l) if l.in_memory() => Ok(l.settled()),
                _ => Err(ContentError::IngestNotFound(ref_key.to_owned())),
            };
        }
        // A writer that is still opening has no status yet: its files do.
        if let Some(st) = self.live(ref_key).map(|l| l.settled()) {
            if st.started_at != 0 {
                return Ok(st);
            }
        }
        read_status(&dir)
    }

    /// The live status of a ref being written, if it is.
    fn live(&self, ref_key: &str) -> Option<Arc<Live>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ref_key)
            .cloned()
    }

    /// Every ingest whose ref starts with `prefix`.
    ///
    /// # Errors
    /// Unknown when the ingest directory cannot be read.
    pub fn list_statuses(&self, prefix: &str) -> Result<Vec<IngestStatus>> {
        let parent = self.root.join("ingest");
        let mut out = Vec::new();
        for entry in fs::read_dir(&parent).map_err(io_err("read", &parent))? {
            let entry = entry.map_err(io_err("read", &parent))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            // An ingest committed or aborted while we looked is simply gone.
            let Ok(st) = read_status(&entry.path()) else {
                continue;
            };
            if !st.ref_key.starts_with(prefix) {
                continue;
            }
            match self.live(&st.ref_key).map(|l| l.settled()) {
                Some(live) if live.started_at != 0 => out.push(live),
                _ => out.push(st),
            }
        }
        let lives: Vec<Arc<Live>> = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for l in lives {
            if l.in_memory() {
                let st = l.settled();
                if st.ref_key.starts_with(prefix) {
                    out.push(st);
                }
            }
        }
        // One that reached the disk while we looked is listed once.
        out.sort_by(|a, b| a.ref_key.cmp(&b.ref_key));
        out.dedup_by(|a, b| a.ref_key == b.ref_key);
        Ok(out)
    }

    /// Removes an ingest and what was written to it.
    ///
    /// # Errors
    /// NotFound when there is no such ingest.
    pub fn abort(&self, ref_key: &str) -> Result<()> {
        if let Some(l) = self.live(ref_key) {
            let mut st = l.lock();
            if st.in_memory {
                if st.aborted {
                    return Err(ContentError::IngestNotFound(ref_key.to_owned()));
                }
                st.aborted = true;
                return Ok(());
            }
        }
        let dir = self.ingest_dir(ref_key);
        if !has_ingest(&dir) {
            return Err(ContentError::IngestNotFound(ref_key.to_owned()));
        }
        // Moved aside first, in one step: a writer closing meanwhile (its
        // status file renamed into the directory) can no longer put a file
        // into what is being removed. Leftovers under `.tmp-` go at the
        // next open.
        let aside = hidden_beside(&dir, "abort", &file_name(&dir));
        match fs::rename(&dir, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContentError::IngestNotFound(ref_key.to_owned()))
            }
            Err(e) => return Err(io_err("move aside", &dir)(e)),
        }
        fs::remove_dir_all(&aside).map_err(io_err("remove", &aside))
    }
}

/// A unique hidden name beside the ingest `dir`, for something on its way
/// out (`what`: abort, done) or on its way in (blob). Hidden names are not
/// ingests, and the next open removes any that are left.
fn hidden_beside(dir: &Path, what: &str, name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.with_file_name(format!(".tmp-{what}-{name}-{n}"))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).map_err(io_err("write", path))
}

/// An ingest's `status` file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StatusFile {
    #[serde(rename = "ref")]
    ref_key: String,
    #[serde(default)]
    total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected: Option<String>,
    #[serde(default)]
    started_at: i64,
    #[serde(default)]
    updated_at: i64,
}

fn encode_status(st: &IngestStatus) -> Vec<u8> {
    // A struct of strings and integers always serializes.
    serde_json::to_vec(&StatusFile {
        ref_key: st.ref_key.clone(),
        total: st.total,
        expected: st.expected.as_ref().map(|d| d.to_string()),
        started_at: st.started_at,
        updated_at: st.updated_at,
    })
    .unwrap_or_default()
}

/// Whether `dir` holds an ingest (this version's or an earlier one's).
fn has_ingest(dir: &Path) -> bool {
    dir.join("status").is_file() || dir.join("ref").is_file()
}

/// Reads an ingest's status from its files. The times are the
/// nanosecond stamps the writer kept; the data file's mtime (coarse, but
/// moved by every write) only counts when it is later, after a writer that
/// died before it could record its last stamp.
fn read_status(dir: &Path) -> Result<IngestStatus> {
    let read =
        |name: &str| fs::read_to_string(dir.join(name)).map_err(io_err("read", dir.join(name)));
    let file = match fs::read(dir.join("status")) {
        Ok(bytes) => serde_json::from_slice::<StatusFile>(&bytes).map_err(|source| {
            ContentError::CorruptIngest {
                path: dir.join("status"),
                source,
            }
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // An ingest of an earlier version: one file per field.
            let started_at = read("startedat")?.trim().parse().unwrap_or(0);
            StatusFile {
                ref_key: read("ref")?,
                total: read("total")?.trim().parse().unwrap_or(0),
                expected: None,
                started_at,
                updated_at: started_at,
            }
        }
        Err(e) => return Err(io_err("read", dir.join("status"))(e)),
    };
    let data = dir.join("data");
    let meta = fs::metadata(&data).map_err(io_err("stat", &data))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Ok(IngestStatus {
        ref_key: file.ref_key,
        offset: meta.len(),
        total: file.total,
        expected: file.expected.and_then(|d| d.parse().ok()),
        started_at: file.started_at,
        updated_at: file.updated_at.max(modified),
    })
}

/// Replaces an ingest's status file whole (written aside, then renamed).
fn rewrite_status(dir: &Path, st: &IngestStatus) -> Result<()> {
    let new = dir.join("status.new");
    write_file(&new, &encode_status(st))?;
    let target = dir.join("status");
    fs::rename(&new, &target).map_err(io_err("rename", &target))
}

/// Holds a ref for one writer; released on drop.
#[derive(Debug)]
struct RefLock {
    store: Arc<LocalContentStore>,
    ref_key: String,
    live: Arc<Live>,
}

impl RefLock {
    fn acquire(store: &Arc<LocalContentStore>, ref_key: &str) -> Result<RefLock> {
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        let mut wait = Duration::from_millis(1);
        loop {
            {
                let mut locks = store.locks.lock().unwrap_or_else(|p| p.into_inner());
                if !locks.contains_key(ref_key) {
                    let live = Arc::new(Live {
                        state: Mutex::new(LiveState {
                            status: IngestStatus {
                                ref_key: ref_key.to_owned(),
                                offset: 0,
                                total: 0,
                                expected: None,
                                started_at: 0,
                                updated_at: 0,
                            },
                            pending: 0,
                            in_memory: false,
                            aborted: false,
                        }),
                        landed: Condvar::new(),
                    });
                    locks.insert(ref_key.to_owned(), live.clone());
                    return Ok(RefLock {
                        store: Arc::clone(store),
                        ref_key: ref_key.to_owned(),
                        live,
                    });
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(ContentError::Locked(ref_key.to_owned()));
            }
            std::thread::sleep(wait.min(deadline - now));
            wait = (wait * 2).min(Duration::from_millis(100));
        }
    }
}

impl Drop for RefLock {
    fn drop(&mut self) {
        let mut locks = self.store.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.remove(&self.ref_key);
    }
}

/// One open ingest. Dropping it keeps what was written, for a later resume,
/// with its last update time recorded.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    /// None while the ingest is only in memory.
    file: Option<File>,
    /// The data of an ingest only in memory.
    buf: Vec<u8>,
    hasher: Sha256,
    /// Moved into place: nothing of the ingest is left to record.
    published: bool,
    // Last: the ref is released only after the drop recorded the times.
    _lock: RefLock,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        if self.file.is_none() {
            // Left uncommitted (or its commit failed): it goes to disk now,
            // for a resume or a look, unless it was aborted.
            if let Err(e) = self.file() {
                if !matches!(e, ContentError::IngestNotFound(_)) {
                    tracing::debug!(dir = %self.dir.display(), cause = %errdefs::message(&e), "keep ingest");
                }
            }
            return;
        }
        // Nothing to record when aborted meanwhile.
        if !has_ingest(&self.dir) {
            return;
        }
        let st = self._lock.live.lock().status.clone();
        // Best effort: without it a resumed status falls back to the data
        // file's mtime, which is only coarser, and to the total and digest
        // the ingest was created with.
        if let Err(e) = rewrite_status(&self.dir, &st) {
            tracing::debug!(dir = %self.dir.display(), cause = %errdefs::message(&e), "record ingest status");
        }
    }
}

impl Writer {
    fn live(&self) -> MutexGuard<'_, LiveState> {
        self._lock.live.lock()
    }

    /// The data file, creating the ingest on disk first when it was only
    /// in memory. NotFound when it was aborted meanwhile.
    fn file(&mut self) -> Result<&mut File> {
        if self.file.is_none() {
            let live = self._lock.live.clone();
            // Under the live lock: an abort sees it in memory or on disk,
            // never between.
            let mut st = live.lock();
            if st.aborted {
                return Err(ContentError::IngestNotFound(st.status.ref_key.clone()));
            }
            let mut file = self._lock.store.create_ingest(&self.dir, &st.status)?;
            let data = self.dir.join("data");
            file.write_all(&self.buf).map_err(io_err("write", &data))?;
            // A status read from the files takes the later of the recorded
            // update time and the data's mtime: the data was last written
            // when it was acknowledged, not now.
            let at =
                UNIX_EPOCH + Duration::from_nanos(u64::try_from(st.status.updated_at).unwrap_or(0));
            file.set_modified(at)
                .map_err(io_err("set time of", &data))?;
            self.buf = Vec::new();
            st.in_memory = false;
            drop(st);
            self.file = Some(file);
        }
        match self.file.as_mut() {
            Some(f) => Ok(f),
            None => Err(ContentError::IngestNotFound(self.dir.display().to_string())),
        }
    }

    /// Progress so far.
    pub fn status(&self) -> IngestStatus {
        self.live().status.clone()
    }

    /// Digest of what was written so far.
    pub fn digest(&self) -> Digest {
        Digest::sha256(&self.hasher.clone().finalize().into())
    }

    /// Marks a write acknowledged before it lands: statuses taken meanwhile
    /// wait for it. Hand the guard to the code that does the write.
    pub fn begin_write(&self) -> PendingWrite {
        self.live().pending += 1;
        PendingWrite(self._lock.live.clone())
    }

    /// Records the expected total size (written to the ingest when the
    /// writer closes).
    ///
    /// # Errors
    /// Never today; kept for stores that write at once.
    pub fn set_total(&mut self, total: i64) -> Result<()> {
        self.live().status.total = total;
        Ok(())
    }

    /// Records the digest the client says it writes (written to the
    /// ingest when the writer closes).
    ///
    /// # Errors
    /// Never today; kept for stores that write at once.
    pub fn set_expected(&mut self, expected: &Digest) -> Result<()> {
        self.live().status.expected = Some(expected.clone());
        Ok(())
    }

    /// Appends `data` at the current offset, now.
    ///
    /// # Errors
    /// Unknown when the data cannot be written.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.write_stamped(data, crate::now_nanos())
    }

    /// Appends `data`, recording `at` (nanoseconds since the epoch) as the
    /// update time: the moment the write was acknowledged to the client,
    /// when that came before the write landed.
    ///
    /// # Errors
    /// Unknown when the data cannot be written.
    pub fn write_stamped(&mut self, data: &[u8], at: i64) -> Result<()> {
        if self.file.is_none() && self.buf.len() + data.len() <= MEMORY_INGEST_MAX {
            let mut live = self.live();
            if live.aborted {
                return Err(ContentError::IngestNotFound(live.status.ref_key.clone()));
            }
            live.status.offset += data.len() as u64;
            live.status.updated_at = at;
            drop(live);
            self.hasher.update(data);
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        self.file()?;
        let (Some(file), hasher) = (self.file.as_mut(), &mut self.hasher) else {
            return Err(ContentError::IngestNotFound(self.dir.display().to_string()));
        };
        let written = if data.len() >= PARALLEL_HASH_MIN {
            // Hash on a second thread while this one waits on the disk:
            // large writes are bound by writeback, and hashing is not free.
            std::thread::scope(|s| {
                s.spawn(|| hasher.update(data));
                file.write_all(data)
            })
        } else {
            hasher.update(data);
            file.write_all(data)
        };
        written.map_err(io_err("write", self.dir.join("data")))?;
        let mut live = self.live();
        live.status.offset += data.len() as u64;
        live.status.updated_at = at;
        Ok(())
    }

    /// Starts over from offset zero.
    ///
    /// # Errors
    /// Unknown when the data file cannot be truncated.
    pub fn truncate(&mut self) -> Result<()> {
        match self.file.as_mut() {
            Some(f) => f
                .set_len(0)
                .map_err(io_err("truncate", self.dir.join("data")))?,
            None => self.buf.clear(),
        }
        self.hasher = Sha256::new();
        let mut live = self.live();
        live.status.offset = 0;
        live.status.updated_at = crate::now_nanos();
        Ok(())
    }

    /// Makes the data durable and checks it against what the client
    /// expects (`size` 0 and no digest check nothing), returning its digest.
    ///
    /// # Errors
    /// FailedPrecondition on a size or digest mismatch; the ingest is kept so
    /// that the client can inspect or abort it.
    pub fn verify(&mut self, size: i64, expected: Option<&Digest>) -> Result<Digest> {
        let offset = self.live().status.offset;
        if size > 0 && u64::try_from(size).ok() != Some(offset) {
            return Err(ContentError::SizeMismatch {
                size: offset,
                expected: size,
            });
        }
        let digest = self.digest();
        if let Some(expected) = expected {
            if expected.algorithm() != Algorithm::Sha256 {
                return Err(ContentError::Algorithm(expected.clone()));
            }
            if *expected != digest {
                return Err(ContentError::DigestMismatch {
                    digest,
                    expected: expected.clone(),
                });
            }
        }
        // An ingest only in memory is made durable as it is published.
        if let Some(f) = &self.file {
            f.sync_all()
                .map_err(io_err("fsync", self.dir.join("data")))?;
        }
        Ok(digest)
    }

    /// [`Writer::publish`] of an ingest only in memory: its data goes to a
    /// new file beside the ingests, made durable, then renamed into place.
    fn publish_from_memory(mut self, store: &LocalContentStore, digest: &Digest) -> Result<()> {
        if self.live().aborted {
            self.published = true;
            return Err(ContentError::IngestNotFound(
                self.live().status.ref_key.clone(),
            ));
        }
        let target = store.blob_path(digest);
        if target.exists() {
            self.published = true;
            return Err(ContentError::AlreadyExists(digest.clone()));
        }
        // A leftover of a crash here is removed on the next open.
        let tmp = hidden_beside(&self.dir, "blob", digest.hex());
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&tmp)?;
            f.write_all(&self.buf)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &tmp)(e));
        }
        if let Err(e) = fs::rename(&tmp, &target) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("rename", &target)(e));
        }
        self.published = true;
        let parent = target.parent().map(Path::to_path_buf).unwrap_or_default();
        File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &parent))
    }

    /// Moves the verified data into place as blob `digest` and removes the
    /// ingest. The rename is made durable before returning.
    ///
    /// # Errors
    /// AlreadyExists when the blob was there already (the ingest is removed
    /// all the same); Unknown on I/O failure.
    pub fn publish(mut self, store: &LocalContentStore, digest: &Digest) -> Result<()> {
        if self.file.is_none() {
            return self.publish_from_memory(store, digest);
        }
        let target = store.blob_path(digest);
        let result = if target.exists() {
            Err(ContentError::AlreadyExists(digest.clone()))
        } else {
            let data = self.dir.join("data");
            fs::set_permissions(&data, fs::Permissions::from_mode(0o444))
                .map_err(io_err("chmod", &data))?;
            fs::rename(&data, &target).map_err(io_err("rename", &target))?;
            let parent = target.parent().map(Path::to_path_buf).unwrap_or_default();
            File::open(&parent)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync", &parent))?;
            Ok(())
        };
        self.published = true;
        // Past the point of no return: the blob is in place (or was already),
        // so a leftover ingest directory is only clutter. It leaves the
        // listing at once, in one rename (hidden names are not ingests, and
        // the next open removes any left); what it holds goes after the
        // reply, when a runtime is there to do it.
        let aside = hidden_beside(&self.dir, "done", &file_name(&self.dir));
        let doomed = match fs::rename(&self.dir, &aside) {
            Ok(()) => aside,
            Err(_) => self.dir.clone(),
        };
        let remove = move || {
            if let Err(e) = fs::remove_dir_all(&doomed) {
                tracing::warn!(dir = %doomed.display(), cause = %e, "remove committed ingest");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_proto::errdefs::{Classify, Kind};

    fn sha(data: &[u8]) -> Digest {
        Digest::sha256(&Sha256::digest(data).into())
    }

    /// A full disk is ResourceExhausted, naming the file: on a 1 MiB tmpfs
    /// (needs root to mount; skipped otherwise).
    #[test]
    fn full_disk_is_resource_exhausted() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = tmp.path().join("fs");
        std::fs::create_dir(&fs).unwrap();
        if nix::mount::mount(
            Some("tmpfs"),
            &fs,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .is_err()
        {
            eprintln!("skipped: cannot mount a tmpfs here");
            return;
        }
        let result = (|| {
            let store = LocalContentStore::open(&fs)?;
            let mut w = store.writer("ns/big", 0, None)?;
            for _ in 0..4 {
                w.write(&vec![7u8; 512 << 10])?;
            }
            Ok::<_, ContentError>(())
        })();
        let _ = nix::mount::umount2(&fs, nix::mount::MntFlags::MNT_DETACH);
        let e = result.expect_err("4 MiB fitted into 1 MiB");
        assert_eq!(e.kind(), Kind::ResourceExhausted, "{e}");
        assert!(
            hull_proto::errdefs::message(&e).contains("No space left"),
            "{e}"
        );
    }

    #[test]
    fn write_resume_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalContentStore::open(tmp.path()).unwrap();
        let mut w = store.writer("ns/a", 6, None).unwrap();
        w.write(b"abc").unwrap();
        assert_eq!(
            store.writer("ns/a", 0, None).unwrap_err().kind(),
            Kind::Unavailable
        );
        drop(w);
        let st = store.status("ns/a").unwrap();
        assert_eq!((st.offset, st.total), (3, 6));
        let mut w = store.writer("ns/a", 0, None).unwrap();
        assert_eq!(w.status().offset, 3);
        w.write(b"def").unwrap();
        assert_eq!(
            w.verify(7, None).unwrap_err().kind(),
            Kind::FailedPrecondition
        );
        assert_eq!(
            w.verify(6, Some(&sha(b"x"))).unwrap_err().kind(),
            Kind::FailedPrecondition
        );
        let d = w.verify(6, Some(&sha(b"abcdef"))).unwrap();
        w.publish(&store, &d).unwrap();
        let mut got = String::new();
        store
            .open_blob(&d)
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "abcdef");
        assert_eq!(store.status("ns/a").unwrap_err().kind(), Kind::NotFound);
        assert_eq!(store.blobs().unwrap(), vec![d]);
    }

    #[test]
    fn list_and_abort() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalContentStore::open(tmp.path()).unwrap();
        drop(store.writer("x/1", 0, None).unwrap());
        drop(store.writer("y/1", 0, None).unwrap());
        let refs: Vec<_> = store
            .list_statuses("x/")
            .unwrap()
            .into_iter()
            .map(|s| s.ref_key)
            .collect();
        assert_eq!(refs, ["x/1"]);
        store.abort("x/1").unwrap();
        assert_eq!(store.abort("x/1").unwrap_err().kind(), Kind::NotFound);
        assert!(store.list_statuses("x/").unwrap().is_empty());
    }

    #[test]
    fn a_small_ingest_stays_in_memory_until_committed_or_left() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalContentStore::open(tmp.path()).unwrap();
        let ingests = || {
            std::fs::read_dir(tmp.path().join("ingest"))
                .unwrap()
                .count()
        };
        // Written and committed on one writer: no ingest on disk at any
        // point, yet it is listed while open, and the blob is whole.
        let mut w = store.writer("ns/small", 3, None).unwrap();
        w.write(b"abc").unwrap();
        assert_eq!(ingests(), 0);
        let st = store.status("ns/small").unwrap();
        assert_eq!((st.offset, st.total), (3, 3));
        let listed: Vec<String> = store
            .list_statuses("ns/")
            .unwrap()
            .into_iter()
            .map(|s| s.ref_key)
            .collect();
        assert_eq!(listed, vec!["ns/small".to_string()]);
        let d = w.verify(3, Some(&sha(b"abc"))).unwrap();
        w.publish(&store, &d).unwrap();
        assert_eq!(ingests(), 0);
        assert_eq!(store.status("ns/small").unwrap_err().kind(), Kind::NotFound);
        let mut got = String::new();
        store
            .open_blob(&d)
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "abc");
        let mode = std::fs::metadata(store.blob_path(&d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);

        // Left uncommitted: it reaches the disk, and a new writer resumes.
        let mut w = store.writer("ns/left", 0, None).unwrap();
        w.write(b"de").unwrap();
        let written = crate::now_nanos();
        // Its update time stays the write's, not the moment it reached
        // the disk.
        std::thread::sleep(std::time::Duration::from_millis(30));
        drop(w);
        assert_eq!(ingests(), 1);
        let updated = store.status("ns/left").unwrap().updated_at;
        assert!(updated <= written, "updated {updated}, written {written}");
        let mut w = store.writer("ns/left", 0, None).unwrap();
        assert_eq!(w.status().offset, 2);
        w.write(b"f").unwrap();
        let d = w.verify(3, Some(&sha(b"def"))).unwrap();
        w.publish(&store, &d).unwrap();

        // A failed commit keeps it too, for the client to look at.
        let mut w = store.writer("ns/bad", 0, None).unwrap();
        w.write(b"xyz").unwrap();
        assert!(w.verify(3, Some(&sha(b"other"))).is_err());
        drop(w);
        assert_eq!(store.status("ns/bad").unwrap().offset, 3);

        // Past the memory bound it goes to disk while it is written.
        let mut w = store.writer("ns/big", 0, None).unwrap();
        let big = vec![7u8; MEMORY_INGEST_MAX + 1];
        w.write(&big[..10]).unwrap();
        w.write(&big[10..]).unwrap();
        assert!(store.ingest_dir("ns/big").join("data").is_file());
        assert_eq!(store.status("ns/big").unwrap().offset, big.len() as u64);
        let d = w.verify(0, Some(&sha(&big))).unwrap();
        w.publish(&store, &d).unwrap();
        assert_eq!(std::fs::read(store.blob_path(&d)).unwrap(), big);
    }

    #[test]
    fn an_ingest_aborted_while_in_memory_never_reaches_the_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalContentStore::open(tmp.path()).unwrap();
        let mut w = store.writer("ns/gone", 0, None).unwrap();
        w.write(b"abc").unwrap();
        store.abort("ns/gone").unwrap();
        assert_eq!(store.abort("ns/gone").unwrap_err().kind(), Kind::NotFound);
        assert_eq!(store.status("ns/gone").unwrap_err().kind(), Kind::NotFound);
        assert_eq!(w.write(b"d").unwrap_err().kind(), Kind::NotFound);
        let d = w.verify(0, None).unwrap();
        assert_eq!(w.publish(&store, &d).unwrap_err().kind(), Kind::NotFound);
        assert!(store.blobs().unwrap().is_empty());
        assert!(store.list_statuses("").unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn abort_under_a_live_writer_ends_the_ingest() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalContentStore::open(tmp.path()).unwrap();
        let mut w = store.writer("ns/live", 0, None).unwrap();
        w.write(b"abc").unwrap();
        store.abort("ns/live").unwrap();
        assert_eq!(store.status("ns/live").unwrap_err().kind(), Kind::NotFound);
        drop(w);
        assert_eq!(store.status("ns/live").unwrap_err().kind(), Kind::NotFound);
        assert!(store.list_statuses("ns/").unwrap().is_empty());
    }

    #[test]
    fn ingests_of_the_earlier_layout_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalContentStore::open(tmp.path()).unwrap();
        let dir = store.ingest_dir("ns/old");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ref"), "ns/old").unwrap();
        std::fs::write(dir.join("total"), "6").unwrap();
        std::fs::write(dir.join("startedat"), "1700000000000000000").unwrap();
        std::fs::write(dir.join("data"), "abc").unwrap();
        let st = store.status("ns/old").unwrap();
        assert_eq!(
            (st.offset, st.total, st.started_at),
            (3, 6, 1_700_000_000_000_000_000)
        );
        let mut w = store.writer("ns/old", 0, None).unwrap();
        w.write(b"def").unwrap();
        drop(w);
        // Closing wrote this version's status, with the times kept.
        let st = store.status("ns/old").unwrap();
        assert_eq!((st.offset, st.started_at), (6, 1_700_000_000_000_000_000));
        assert!(dir.join("status").is_file());
        let mut w = store.writer("ns/old", 0, None).unwrap();
        let d = w.verify(6, Some(&sha(b"abcdef"))).unwrap();
        w.publish(&store, &d).unwrap();
    }
}
