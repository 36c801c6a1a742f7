//! Writing a log: lines in, encoded lines out, rotated at the size limit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::{io_err, rotated, Format, LogError, LogUri, Rotation, Stream};

/// Longest line kept whole; a longer one is written in pieces of this size
/// (as Docker's 16 KiB log buffer splits them).
pub const MAX_LINE: usize = 16 * 1024;

/// One log file being written. Not shared between threads by itself:
/// wrap it in a mutex when both streams write to it.
#[derive(Debug)]
pub struct LogWriter {
    format: Format,
    path: PathBuf,
    rotation: Rotation,
    file: File,
    size: u64,
    /// Reused buffer for one encoded line.
    line: Vec<u8>,
    /// The open file's (device, inode), and when the path was last looked
    /// at: a CRI log is reopened when its path names another file (the
    /// kubelet renamed it to rotate, then asked for a reopen).
    identity: (u64, u64),
    checked: std::time::Instant,
}

/// How often a CRI log's path is checked for a new file.
const FOLLOW_PATH: std::time::Duration = std::time::Duration::from_millis(200);

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[derive(Serialize)]
struct JsonLine<'a> {
    log: &'a str,
    stream: &'a str,
    time: String,
}

impl LogWriter {
    /// Opens (appending to) the log `uri` names, creating its directory.
    ///
    /// # Errors
    /// When the directory or file cannot be created.
    pub fn open(uri: &LogUri) -> Result<LogWriter, LogError> {
        if let Some(dir) = uri.path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        let file = open_append(&uri.path)?;
        let meta = file.metadata().map_err(io_err("stat", &uri.path))?;
        Ok(LogWriter {
            format: uri.format,
            path: uri.path.clone(),
            rotation: uri.rotation,
            file,
            size: meta.len(),
            line: Vec::with_capacity(256),
            identity: identity(&meta),
            checked: std::time::Instant::now(),
        })
    }

    /// Reopens a CRI log whose path was moved away (or replaced by a new
    /// file), at most every [`FOLLOW_PATH`].
    fn follow_path(&mut self) -> Result<(), LogError> {
        if self.format != Format::Cri || self.checked.elapsed() < FOLLOW_PATH {
            return Ok(());
        }
        self.checked = std::time::Instant::now();
        let same = std::fs::metadata(&self.path).is_ok_and(|m| identity(&m) == self.identity);
        if !same {
            let file = open_append(&self.path)?;
            let meta = file.metadata().map_err(io_err("stat", &self.path))?;
            self.identity = identity(&meta);
            self.size = meta.len();
            self.file = file;
        }
        Ok(())
    }

    /// Reopens the log at its path now (CRI's ReopenContainerLog).
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn reopen(&mut self) -> Result<(), LogError> {
        self.checked = std::time::Instant::now() - FOLLOW_PATH;
        self.identity = (u64::MAX, u64::MAX);
        self.follow_path()
    }

    /// Writes one line (its trailing newline included, if it had one) read
    /// from `stream` at `time`, rotating first if it would pass the limit.
    ///
    /// # Errors
    /// When writing or rotating fails; the writer stays usable.
    pub fn write(&mut self, stream: Stream, text: &[u8], time: SystemTime) -> Result<(), LogError> {
        self.write_piece(stream, text, false, time)
    }

    /// As [`LogWriter::write`], for a piece of a line that goes on in the
    /// next piece when `partial` (the CRI format tags it `P`; json-file
    /// writes pieces as they are).
    ///
    /// # Errors
    /// As [`LogWriter::write`].
    pub fn write_piece(
        &mut self,
        stream: Stream,
        text: &[u8],
        partial: bool,
        time: SystemTime,
    ) -> Result<(), LogError> {
        self.line.clear();
        match self.format {
            Format::Cri => {
                // `TIMESTAMP STREAM P|F CONTENT`, the newline not part of
                // the content.
                let content = text.strip_suffix(b"\n").unwrap_or(text);
                let tag = if partial { "P" } else { "F" };
                let head = format!(
                    "{} {} {tag} ",
                    humantime::format_rfc3339_nanos(time),
                    stream.as_str()
                );
                self.line.extend_from_slice(head.as_bytes());
                self.line.extend_from_slice(content);
                self.line.push(b'\n');
            }
            Format::JsonFile => {
                let log = String::from_utf8_lossy(text);
                let rec = JsonLine {
                    log: &log,
                    stream: stream.as_str(),
                    time: humantime::format_rfc3339_nanos(time).to_string(),
                };
                // Serialising strings into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut self.line, &rec);
                self.line.push(b'\n');
            }
        }
        self.follow_path()?;
        let max = self.rotation.max_size;
        if max > 0 && self.size > 0 && self.size + self.line.len() as u64 > max {
            self.rotate()?;
        }
        self.file
            .write_all(&self.line)
            .map_err(io_err("write", &self.path))?;
        self.size += self.line.len() as u64;
        Ok(())
    }

    /// Moves `PATH` to `PATH.1` (and each older file one further, dropping
    /// the oldest), or truncates it when only one file is kept.
    fn rotate(&mut self) -> Result<(), LogError> {
        let keep = self.rotation.max_file.max(1);
        if keep > 1 {
            let oldest = rotated(&self.path, keep - 1);
            match std::fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &oldest)(e)),
            }
            for n in (0..keep - 1).rev() {
                let from = rotated(&self.path, n);
                let to = rotated(&self.path, n + 1);
                match std::fs::rename(&from, &to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("rename", &from)(e)),
                }
            }
            self.file = open_append(&self.path)?;
            if let Ok(m) = self.file.metadata() {
                self.identity = identity(&m);
            }
        } else {
            self.file
                .set_len(0)
                .map_err(io_err("truncate", &self.path))?;
        }
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("open", path))
}

/// Cuts one stream's output into lines, holding a partial line until its
/// newline arrives, it grows to [`MAX_LINE`], or the stream ends.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `data`, calling `line` for each complete line.
    pub fn feed(&mut self, data: &[u8], mut line: impl FnMut(&[u8])) {
        self.feed_pieces(data, |l, _| line(l));
    }

    /// Feeds `data`, calling `piece` for each complete line (`false`) and
    /// for each [`MAX_LINE`] piece of a longer one that goes on (`true`).
    pub fn feed_pieces(&mut self, mut data: &[u8], mut piece: impl FnMut(&[u8], bool)) {
        // A line longer than MAX_LINE goes out in MAX_LINE pieces.
        let mut line = |l: &[u8]| {
            let mut rest = l;
            while rest.len() > MAX_LINE {
                let (head, tail) = rest.split_at(MAX_LINE);
                piece(head, true);
                rest = tail;
            }
            piece(rest, !rest.ends_with(b"\n"));
        };
        while let Some(i) = data.iter().position(|b| *b == b'\n') {
            let (head, rest) = data.split_at(i + 1);
            if self.pending.is_empty() {
                line(head);
            } else {
                self.pending.extend_from_slice(head);
                line(&self.pending);
                self.pending.clear();
            }
            data = rest;
        }
        self.pending.extend_from_slice(data);
        while self.pending.len() >= MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            line(&self.pending);
            self.pending = rest;
        }
    }

    /// The stream ended: a last partial line, if any.
    pub fn finish(&mut self, mut line: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            line(&self.pending);
            self.pending.clear();
        }
    }
}
