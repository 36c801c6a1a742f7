//! Streaming a layer onto a directory. See [`crate::diff`] for the rules.

use std::collections::{HashSet, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use nix::fcntl::{AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmodat, makedev, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};
use sha2::{Digest as _, Sha256};

use hull_proto::digest::Digest;

use super::{DiffConfig, DiffError};

/// How whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Into an overlay upper directory: 0/0 character devices and the
    /// opaque xattr, which overlayfs reads.
    Overlay,
    /// Onto a full filesystem: delete what the whiteout names.
    Delete,
}

/// What an applied layer was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Uncompressed size.
    pub size: u64,
}

/// Most symlinks followed while resolving one name (Linux's own limit is 40).
const MAX_LINKS: usize = 255;
/// A ratio limit only applies past this much output, so that tiny layers
/// of zeros are not refused.
const RATIO_GRACE: u64 = 16 << 20;
/// Overlayfs marks opaque directories with this xattr.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DiffError {
    let path = path.to_owned();
    move |source| DiffError::Io { op, path, source }
}

/// Counts bytes read from the blob.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

/// Which limit stopped the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeded {
    Size(u64),
    Ratio(u64),
}

/// Hashes and counts the uncompressed stream and enforces the limits.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    compressed: Arc<AtomicU64>,
    limits: DiffConfig,
    exceeded: Arc<Mutex<Option<Exceeded>>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        let max = self.limits.max_uncompressed_bytes;
        let ratio = self.limits.max_compression_ratio;
        let over = if max > 0 && self.size > max {
            Some(Exceeded::Size(max))
        } else if ratio > 0
            && self.size > RATIO_GRACE
            && self.size / self.compressed.load(Relaxed).max(1) > ratio
        {
            Some(Exceeded::Ratio(ratio))
        } else {
            None
        };
        if let Some(over) = over {
            *self.exceeded.lock().unwrap_or_else(|p| p.into_inner()) = Some(over);
            return Err(std::io::Error::other("layer size limit"));
        }
        Ok(n)
    }
}

/// Applies the layer in `blob` onto `root`.
///
/// # Errors
/// InvalidArgument for broken or hostile layers and exceeded limits;
/// Unknown for I/O failures. What was written before the error stays: the
/// caller discards the snapshot.
pub fn apply_layer(
    blob: File,
    root: &Path,
    lowers: &[PathBuf],
    mode: Whiteouts,
    limits: &DiffConfig,
) -> Result<Applied, DiffError> {
    let compressed = Arc::new(AtomicU64::new(0));
    let exceeded = Arc::new(Mutex::new(None));
    let mut input = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: blob,
            count: compressed.clone(),
        },
    );
    let magic = input.fill_buf().map_err(DiffError::Decompress)?.to_vec();
    let decompressed: Box<dyn Read + Send> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| DiffError::Decompress(std::io::Error::other(e.to_string())))?,
        )
    } else {
        Box::new(input)
    };
    let mut hashing = Hashing {
        inner: decompressed,
        hasher: Sha256::new(),
        size: 0,
        compressed,
        limits: limits.clone(),
        exceeded: exceeded.clone(),
    };
    let limit_error = |e: std::io::Error| match *exceeded.lock().unwrap_or_else(|p| p.into_inner())
    {
        Some(Exceeded::Size(limit)) => DiffError::TooLarge { limit },
        Some(Exceeded::Ratio(limit)) => DiffError::Ratio { limit },
        None => DiffError::Tar(e),
    };
    let mut writer = LayerWriter {
        root: root.to_owned(),
        lowers: lowers.to_vec(),
        mode,
        created: HashSet::new(),
        dir_times: Vec::new(),
    };
    // Decompression and hashing run on a second thread, a few chunks ahead
    // of the one writing files, so that a layer uses two cores.
    let stop = AtomicBool::new(false);
    let (tx, rx) = sync_channel::<std::io::Result<Vec<u8>>>(PIPELINE_DEPTH);
    let (applied, produced) = std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            // Owned here, so that the reader sees the end of the stream
            // when this thread is done.
            let tx = tx;
            let mut receiver_gone = false;
            loop {
                if stop.load(Relaxed) {
                    return;
                }
                let mut buf = vec![0u8; PIPELINE_CHUNK];
                match hashing.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        // The rest of the stream still counts for the diff
                        // ID once the tar reader has seen the end marker.
                        if !receiver_gone && tx.send(Ok(buf)).is_err() {
                            receiver_gone = true;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let applied = (|| -> Result<(), DiffError> {
            let data_end = Arc::new(AtomicU64::new(u64::MAX));
            let mut archive = tar::Archive::new(ChannelReader {
                rx,
                chunk: Vec::new(),
                pos: 0,
                delivered: 0,
                data_end: data_end.clone(),
                padding: 0,
            });
            for entry in archive.entries().map_err(limit_error)? {
                let entry = entry.map_err(limit_error)?;
                data_end.store(
                    entry
                        .raw_file_position()
                        .saturating_add(entry.header().entry_size().unwrap_or(0)),
                    Relaxed,
                );
                writer
                    .entry(entry)
                    .map_err(|e| match limit_error(std::io::Error::other("")) {
                        DiffError::Tar(_) => e,
                        limit => limit,
                    })?;
            }
            Ok(())
        })();
        if applied.is_err() {
            stop.store(true, Relaxed);
        }
        // The receiver is gone here; the producer drains to the end.
        let produced = producer.join();
        (applied, produced)
    });
    applied?;
    if produced.is_err() {
        return Err(DiffError::Decompress(std::io::Error::other(
            "decompression thread panicked",
        )));
    }
    if let Some(e) = exceeded.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(match e {
            Exceeded::Size(limit) => DiffError::TooLarge { limit },
            Exceeded::Ratio(limit) => DiffError::Ratio { limit },
        });
    }
    writer.finish();
    Ok(Applied {
        diff_id: Digest::sha256(&hashing.hasher.finalize().into()),
        size: hashing.size,
    })
}

/// Chunks handed from the decompressing thread to the tar reader.
const PIPELINE_CHUNK: usize = 1 << 20;
/// Chunks the decompressing thread may run ahead.
const PIPELINE_DEPTH: usize = 4;

/// Tar's record size: entries and their data are padded to it.
const TAR_BLOCK: u64 = 512;

/// The tar reader's end of the pipeline.
///
/// Some tools (umoci among them) end a layer right after its last entry's
/// data, with neither the padding to the next block nor the end-of-archive
/// blocks. Go's tar reader, and so containerd, takes EOF at that point as
/// the end of the archive; the tar crate wants the padding. So when the
/// stream ends exactly where the current entry's data ends, this reader
/// supplies the missing padding (never part of the diff ID, which hashes
/// the bytes as they came). An end anywhere else, inside an entry's data or
/// header, still reaches the tar reader as a short stream and fails.
struct ChannelReader {
    rx: Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    /// Bytes of the stream handed to the tar reader so far.
    delivered: u64,
    /// Stream offset where the current entry's data ends.
    data_end: Arc<AtomicU64>,
    /// Zero bytes of padding still to hand out after the end.
    padding: u64,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.padding > 0 {
                let n = usize::try_from(self.padding)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                buf[..n].fill(0);
                self.padding -= n as u64;
                return Ok(n);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    let end = self.data_end.swap(u64::MAX, Relaxed);
                    if end == self.delivered && !end.is_multiple_of(TAR_BLOCK) {
                        self.padding = TAR_BLOCK - end % TAR_BLOCK;
                        continue;
                    }
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        self.delivered += n as u64;
        Ok(n)
    }
}

/// Splits a tar name into clean components.
///
/// # Errors
/// Escape when `..` climbs above the root.
fn clean(raw: &[u8]) -> Result<Vec<OsString>, DiffError> {
    let mut out: Vec<OsString> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(DiffError::Escape(String::from_utf8_lossy(raw).into_owned()));
                }
            }
            p => out.push(OsStr::from_bytes(p).to_owned()),
        }
    }
    Ok(out)
}

/// Resolves `comps` under `root` as if `root` were `/`: absolute symlinks
/// restart at the root; a relative symlink that climbs above the root is
/// refused. The last component is followed only when `follow_last` is set.
///
/// With `create`, every missing component is created as a directory (this
/// resolves the parent of an entry). When writing an overlay upper
/// directory, `lowers` (newest first) stand behind it: a component missing
/// from the upper directory is looked up there, so that a symlink from a
/// lower layer is followed and a directory is created with the lower
/// directory's owner, mode and times, as the merged view shows it.
fn resolve(
    root: &Path,
    lowers: &[PathBuf],
    comps: &[OsString],
    follow_last: bool,
    create: bool,
) -> Result<PathBuf, DiffError> {
    let name = || {
        comps
            .iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut done: Vec<OsString> = Vec::new();
    let mut todo: VecDeque<OsString> = comps.iter().cloned().collect();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            if done.pop().is_none() {
                return Err(DiffError::Escape(name()));
            }
            continue;
        }
        if c.is_empty() || c == "." {
            continue;
        }
        let mut rel = PathBuf::new();
        rel.extend(&done);
        rel.push(&c);
        let cur = root.join(&rel);
        let last = todo.is_empty();
        let found = match std::fs::symlink_metadata(&cur) {
            Ok(m) => Some((cur.clone(), m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => lowers.iter().find_map(|l| {
                std::fs::symlink_metadata(l.join(&rel))
                    .ok()
                    .map(|m| (l.join(&rel), m))
            }),
            Err(e) => return Err(io("stat", &cur)(e)),
        };
        match found {
            Some((at, m)) if m.file_type().is_symlink() && (!last || follow_last) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(DiffError::SymlinkLoop(name()));
                }
                let target = std::fs::read_link(&at).map_err(io("readlink", &at))?;
                let bytes = target.as_os_str().as_bytes();
                if bytes.starts_with(b"/") {
                    done.clear();
                }
                for part in bytes.split(|b| *b == b'/').rev() {
                    todo.push_front(OsStr::from_bytes(part).to_owned());
                }
            }
            Some((at, m)) => {
                if create && at != cur && m.is_dir() {
                    make_dir_like(&cur, Some((&at, &m)))?;
                }
                done.push(c);
            }
            None => {
                if create {
                    make_dir_like(&cur, None)?;
                }
                done.push(c);
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&done);
    Ok(out)
}

/// Creates directory `path`, with the owner, mode and times of `like` (a
/// lower layer's directory) when given, 0755 root otherwise.
fn make_dir_like(path: &Path, like: Option<(&Path, &std::fs::Metadata)>) -> Result<(), DiffError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::create_dir(path).map_err(io("create directory", path))?;
    if let Some((_, m)) = like {
        lchown(path, m.uid(), m.gid())?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(io("chmod", path))?;
        set_times(path, u64::try_from(m.mtime()).unwrap_or(0))?;
    }
    Ok(())
}

/// Removes whatever is at `path`, following no symlink.
fn remove_any(path: &Path) -> Result<(), DiffError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(io("remove", path)),
        Ok(_) => std::fs::remove_file(path).map_err(io("remove", path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("stat", path)(e)),
    }
}

/// The OS error of a failed call, kept whole as the error's source.
fn os(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> DiffError {
    let f = io(op, path);
    move |e| f(std::io::Error::from(e))
}

/// Sets the owner of `path` itself, not of what a symlink names.
fn lchown(path: &Path, uid: u32, gid: u32) -> Result<(), DiffError> {
    fchownat(
        AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(os("chown", path))
}

/// Sets the mode (permission and set-id bits) of `path`.
fn chmod(path: &Path, mode: u32) -> Result<(), DiffError> {
    fchmodat(
        AT_FDCWD,
        path,
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(os("chmod", path))
}

fn mknod(path: &Path, kind: SFlag, perm: u32, dev: u64) -> Result<(), DiffError> {
    nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(perm), dev)
        .map_err(os("mknod", path))
}

fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let n = CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: NUL-terminated strings and a value buffer alive for the call.
    // nix has no extended-attribute calls, so this one stays on libc.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_times(path: &Path, mtime: u64) -> Result<(), DiffError> {
    let t = TimeSpec::new(i64::try_from(mtime).unwrap_or(0), 0);
    utimensat(AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(os("set times", path))
}

struct LayerWriter {
    root: PathBuf,
    /// Lower layers behind an overlay upper directory, newest first.
    lowers: Vec<PathBuf>,
    mode: Whiteouts,
    /// Paths this layer wrote, for opaque whiteouts in delete mode.
    created: HashSet<PathBuf>,
    /// Directory times, set last: writing children changes them.
    dir_times: Vec<(PathBuf, u64)>,
}

impl LayerWriter {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), DiffError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let comps = clean(&raw)?;
        let (name, parent_comps) = match comps.split_last() {
            Some((n, p)) => (Some(n.clone()), p.to_vec()),
            None => (None, Vec::new()),
        };
        let parent = resolve(&self.root, &self.lowers, &parent_comps, true, true)?;
        let Some(name) = name else {
            // The root itself ("./"): only its metadata applies.
            return self.metadata(&mut entry, &self.root.clone(), true);
        };
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_WHITEOUT.as_bytes() {
            return self.opaque(&parent, &parent_comps);
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let target = parent.join(OsStr::from_bytes(hidden));
            remove_any(&target)?;
            if self.mode == Whiteouts::Overlay {
                mknod(&target, SFlag::S_IFCHR, 0, 0)?;
            }
            return Ok(());
        }
        let path = parent.join(&name);
        let header = entry.header().clone();
        let perm = header.mode().map_err(DiffError::Tar)? & 0o7777;
        match kind {
            tar::EntryType::Directory => match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_any(&path)?;
                    std::fs::create_dir(&path).map_err(io("create directory", &path))?;
                }
                Err(_) => std::fs::create_dir(&path).map_err(io("create directory", &path))?,
            },
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_any(&path)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(OFlag::O_NOFOLLOW.bits())
                    .open(&path)
                    .map_err(io("create", &path))?;
                std::io::copy(&mut entry, &mut f).map_err(DiffError::Tar)?;
            }
            tar::EntryType::Symlink => {
                let target = header
                    .link_name_bytes()
                    .map(|b| OsStr::from_bytes(&b).to_owned())
                    .unwrap_or_default();
                remove_any(&path)?;
                symlink(&target, &path).map_err(io("symlink", &path))?;
            }
            tar::EntryType::Link => {
                let raw_target = header
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                let bad = || DiffError::HardLink {
                    name: String::from_utf8_lossy(&raw).into_owned(),
                    target: String::from_utf8_lossy(&raw_target).into_owned(),
                };
                let target_comps = clean(&raw_target).map_err(|_| bad())?;
                if target_comps.is_empty() {
                    return Err(bad());
                }
                let target = resolve(&self.root, &self.lowers, &target_comps, false, false)?;
                match std::fs::symlink_metadata(&target) {
                    Ok(m) if !m.is_dir() => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        // A link to a file of a lower layer: copy it up, as
                        // overlayfs would when linking through the mount.
                        self.copy_up(&target).ok_or_else(bad)??;
                    }
                    _ => return Err(bad()),
                }
                if target != path {
                    remove_any(&path)?;
                    std::fs::hard_link(&target, &path).map_err(io("link", &path))?;
                }
                self.created.insert(path);
                // A hard link shares its target's inode and metadata.
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                remove_any(&path)?;
                let ty = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                mknod(&path, ty, perm, makedev(major.into(), minor.into()))?;
            }
            other => {
                tracing::debug!(kind = ?other, path = %path.display(), "skipping tar entry of unsupported type");
                return Ok(());
            }
        }
        self.created.insert(path.clone());
        self.metadata(&mut entry, &path, kind == tar::EntryType::Directory)
    }

    /// Owner, mode, xattrs and times of a written entry.
    fn metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        is_dir: bool,
    ) -> Result<(), DiffError> {
        let h = entry.header().clone();
        let uid = u32::try_from(h.uid().unwrap_or(0)).unwrap_or(0);
        let gid = u32::try_from(h.gid().unwrap_or(0)).unwrap_or(0);
        lchown(path, uid, gid)?;
        let symlink = h.entry_type() == tar::EntryType::Symlink;
        if !symlink {
            // After chown, which clears set-id bits.
            chmod(path, h.mode().unwrap_or(0o644) & 0o7777)?;
        }
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let Ok(key) = ext.key() else { continue };
                if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                    if let Err(e) = lsetxattr(path, attr, ext.value_bytes()) {
                        // Filesystems without xattr support, or a namespace
                        // we may not write: the file is still usable.
                        tracing::debug!(path = %path.display(), attr, cause = %e, "xattr not kept");
                    }
                }
            }
        }
        let mtime = h.mtime().unwrap_or(0);
        if is_dir {
            self.dir_times.push((path.to_owned(), mtime));
        } else {
            set_times(path, mtime)?;
        }
        Ok(())
    }

    fn opaque(&mut self, dir: &Path, _comps: &[OsString]) -> Result<(), DiffError> {
        match self.mode {
            Whiteouts::Overlay => lsetxattr(dir, OPAQUE_XATTR, b"y").map_err(io("set opaque", dir)),
            Whiteouts::Delete => {
                for child in std::fs::read_dir(dir).map_err(io("read", dir))? {
                    let child = child.map_err(io("read", dir))?.path();
                    if !self.created.contains(&child) {
                        remove_any(&child)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Copies the lower layers' file at `upper_path` into the upper
    /// directory; None when no lower layer has a file there.
    fn copy_up(&self, upper_path: &Path) -> Option<Result<(), DiffError>> {
        use std::os::unix::fs::MetadataExt;
        let rel = upper_path.strip_prefix(&self.root).ok()?;
        let (src, m) = self.lowers.iter().find_map(|l| {
            std::fs::symlink_metadata(l.join(rel))
                .ok()
                .map(|m| (l.join(rel), m))
        })?;
        if !m.is_file() {
            return None;
        }
        Some((|| {
            std::fs::copy(&src, upper_path).map_err(io("copy up", upper_path))?;
            lchown(upper_path, m.uid(), m.gid())?;
            chmod(upper_path, m.mode() & 0o7777)?;
            set_times(upper_path, u64::try_from(m.mtime()).unwrap_or(0))
        })())
    }

    fn finish(&mut self) {
        for (dir, mtime) in self.dir_times.drain(..).rev() {
            if let Err(e) = set_times(&dir, mtime) {
                // Times are cosmetic; the layer's content is in place.
                tracing::debug!(dir = %dir.display(), cause = %e, "directory times not kept");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_refuses_climbing_out() {
        assert_eq!(
            clean(b"./a/b/../c").unwrap(),
            vec![OsString::from("a"), OsString::from("c")]
        );
        assert_eq!(
            clean(b"/etc/passwd").unwrap(),
            vec![OsString::from("etc"), OsString::from("passwd")]
        );
        assert!(matches!(clean(b"../x"), Err(DiffError::Escape(_))));
        assert!(matches!(clean(b"a/../../x"), Err(DiffError::Escape(_))));
    }

    #[test]
    fn resolve_keeps_absolute_links_inside() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("run")).unwrap();
        std::fs::create_dir(root.path().join("var")).unwrap();
        symlink("/run", root.path().join("var/run")).unwrap();
        symlink("../../..", root.path().join("var/up")).unwrap();
        symlink("loop2", root.path().join("loop1")).unwrap();
        symlink("loop1", root.path().join("loop2")).unwrap();
        let r = resolve(
            root.path(),
            &[],
            &[OsString::from("var"), OsString::from("run")],
            true,
            false,
        )
        .unwrap();
        assert_eq!(r, root.path().join("run"));
        assert!(matches!(
            resolve(
                root.path(),
                &[],
                &[OsString::from("var"), OsString::from("up")],
                true,
                false
            ),
            Err(DiffError::Escape(_))
        ));
        assert!(matches!(
            resolve(
                root.path(),
                &[],
                &[OsString::from("loop1"), OsString::from("x")],
                true,
                false
            ),
            Err(DiffError::SymlinkLoop(_))
        ));
    }

    /// A tar of two files whose second one ends `cut` bytes before the
    /// archive's end blocks, with the byte offset where its data ends.
    fn two_files() -> (Vec<u8>, usize) {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [("a", &b"first file"[..]), ("dir/b", &[7u8; 700][..])] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        // a: header 512 + data padded to 512; dir/b: header 512 + 700.
        (tar, 512 + 512 + 512 + 700)
    }

    fn apply(bytes: &[u8]) -> (tempfile::TempDir, Result<Applied, DiffError>) {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, bytes).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let r = apply_layer(
            File::open(&blob).unwrap(),
            &root,
            &[],
            Whiteouts::Delete,
            &DiffConfig::default(),
        );
        (dir, r)
    }

    fn sha(data: &[u8]) -> Digest {
        Digest::sha256(&Sha256::digest(data).into())
    }

    #[test]
    fn layer_ending_right_after_its_last_data_applies() {
        let (tar, end) = two_files();
        let cut = &tar[..end];
        let (dir, r) = apply(cut);
        let applied = r.unwrap();
        assert_eq!(
            applied.diff_id,
            sha(cut),
            "diff ID is of the bytes as given"
        );
        assert_eq!(applied.size, end as u64);
        let b = std::fs::read(dir.path().join("root/dir/b")).unwrap();
        assert_eq!(b, vec![7u8; 700]);
        // Padded but without end-of-archive blocks: also the end.
        let padded = &tar[..end + (512 - 700 % 512)];
        assert!(apply(padded).1.is_ok());
    }

    #[test]
    fn layer_cut_inside_an_entry_fails() {
        let (tar, end) = two_files();
        // Inside the last entry's data, inside its header, inside the
        // first entry's padding.
        for cut in [end - 1, end - 700 - 100, 512 + 100] {
            let (_dir, r) = apply(&tar[..cut]);
            assert!(matches!(r, Err(DiffError::Tar(_))), "cut at {cut}: {r:?}");
        }
    }
}
