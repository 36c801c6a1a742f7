//! Computing a layer from two directory trees: what `right` adds, changes
//! and removes relative to `left`, as an OCI layer tar (removals as
//! `.wh.` whiteouts).

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::DiffError;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DiffError {
    let path = path.to_owned();
    move |source| DiffError::Io { op, path, source }
}

/// Every entry under `root` by relative path, without following symlinks.
fn scan(root: &Path) -> Result<BTreeMap<PathBuf, Metadata>, DiffError> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<PathBuf, Metadata>,
    ) -> Result<(), DiffError> {
        for e in std::fs::read_dir(dir).map_err(io("read", dir))? {
            let e = e.map_err(io("read", dir))?;
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).map_err(io("stat", &p))?;
            let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
            let is_dir = m.is_dir();
            out.insert(rel, m);
            if is_dir {
                walk(root, &p, out)?;
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let na = fa.read(&mut ba)?;
        let nb = fb.read_exact(&mut bb[..na]).map(|_| na)?;
        if na == 0 {
            return Ok(true);
        }
        if ba[..na] != bb[..nb] {
            return Ok(false);
        }
    }
}

/// Whether `right`'s entry differs from `left`'s.
fn changed(left: &Path, right: &Path, l: &Metadata, r: &Metadata) -> Result<bool, DiffError> {
    if l.file_type() != r.file_type()
        || l.mode() != r.mode()
        || l.uid() != r.uid()
        || l.gid() != r.gid()
        || l.rdev() != r.rdev()
    {
        return Ok(true);
    }
    if r.is_dir() {
        return Ok(false);
    }
    if r.file_type().is_symlink() {
        return Ok(std::fs::read_link(left).ok() != std::fs::read_link(right).ok());
    }
    if l.size() != r.size() {
        return Ok(true);
    }
    if (l.mtime(), l.mtime_nsec()) == (r.mtime(), r.mtime_nsec()) && l.mtime_nsec() != 0 {
        return Ok(false);
    }
    // Same size, and times that cannot tell: compare the bytes.
    Ok(!same_content(left, right).map_err(io("compare", right))?)
}

/// Hashes what passes through, for the diff ID.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The uncompressed layer written by [`write_diff`].
#[derive(Debug)]
pub struct Written<W> {
    /// sha256 of the tar.
    pub diff_id: hull_proto::digest::Digest,
    /// The sink, with the compressed stream flushed into it.
    pub sink: W,
}

/// Writes the layer turning `left` into `right` to `sink`, gzip-compressed
/// when `gzip` is set.
///
/// # Errors
/// Unknown when a tree cannot be read or the sink fails.
pub fn write_diff<W: Write>(
    left: &Path,
    right: &Path,
    sink: W,
    gzip: bool,
) -> Result<Written<W>, DiffError> {
    let lhs = scan(left)?;
    let rhs = scan(right)?;
    let wr = |e: std::io::Error| DiffError::Io {
        op: "write layer",
        path: right.to_owned(),
        source: e,
    };
    enum Sink<W: Write> {
        Plain(W),
        Gzip(Box<flate2::write::GzEncoder<W>>),
    }
    impl<W: Write> Write for Sink<W> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            match self {
                Sink::Plain(w) => w.write(b),
                Sink::Gzip(w) => w.write(b),
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            match self {
                Sink::Plain(w) => w.flush(),
                Sink::Gzip(w) => w.flush(),
            }
        }
    }
    let sink = if gzip {
        Sink::Gzip(Box::new(flate2::write::GzEncoder::new(
            sink,
            flate2::Compression::default(),
        )))
    } else {
        Sink::Plain(sink)
    };
    let mut tar = tar::Builder::new(Hashing {
        inner: sink,
        hasher: Sha256::new(),
        size: 0,
    });
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);

    // Removals: only the topmost removed path gets a whiteout.
    let mut removed: Vec<&PathBuf> = Vec::new();
    for p in lhs.keys() {
        if !rhs.contains_key(p) && !removed.iter().any(|r| p.starts_with(r)) {
            removed.push(p);
        }
    }
    // Additions and changes, each with its parents so that the tar is
    // self-contained in order.
    let mut emit: BTreeMap<&PathBuf, ()> = BTreeMap::new();
    for (p, r) in &rhs {
        let differs = match lhs.get(p) {
            None => true,
            Some(l) => changed(&left.join(p), &right.join(p), l, r)?,
        };
        if differs {
            emit.insert(p, ());
        }
    }
    let mut entries: BTreeMap<PathBuf, Option<&PathBuf>> = BTreeMap::new();
    for p in emit.keys() {
        for anc in p.ancestors().skip(1) {
            if !anc.as_os_str().is_empty() {
                entries.entry(anc.to_path_buf()).or_insert(None);
            }
        }
        entries.insert((*p).clone(), Some(*p));
    }
    for r in &removed {
        let name = r
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let wh = r.with_file_name(format!(".wh.{name}"));
        for anc in wh.ancestors().skip(1) {
            if !anc.as_os_str().is_empty() && rhs.contains_key(anc) {
                entries.entry(anc.to_path_buf()).or_insert(None);
            }
        }
        entries.insert(wh, None);
    }
    for (p, _) in entries {
        let full = right.join(&p);
        if rhs.contains_key(&p) {
            tar.append_path_with_name(&full, &p).map_err(wr)?;
        } else {
            // A whiteout: an empty regular file.
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            h.set_mtime(0);
            tar.append_data(&mut h, &p, std::io::empty()).map_err(wr)?;
        }
    }
    let hashing = tar.into_inner().map_err(wr)?;
    let diff_id = hull_proto::digest::Digest::sha256(&hashing.hasher.finalize().into());
    let sink = match hashing.inner {
        Sink::Plain(w) => w,
        Sink::Gzip(g) => g.finish().map_err(wr)?,
    };
    Ok(Written { diff_id, sink })
}
