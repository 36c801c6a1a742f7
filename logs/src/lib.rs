//! Container log files.
//!
//! A container's stdout and stderr are written, line by line, into one file
//! in a [`Format`] (today Docker's json-file: one JSON object per line with
//! `log`, `stream` and `time`), rotated when it reaches a size limit: the
//! current file is `PATH`, older ones `PATH.1` (newest) to `PATH.N-1`, as
//! Docker keeps them. [`LogUri`] is how a client asks the shim for this on
//! task creation; [`LogWriter`] is what the shim writes with, and
//! [`read`] / [`Follower`] are how clients read it back.

#![warn(missing_docs)]

mod reader;
mod uri;
mod writer;

pub use reader::{read, Follower};
pub use uri::{parse_size, LogUri};
pub use writer::{LineSplitter, LogWriter, MAX_LINE};

use std::time::SystemTime;

/// Which of the process's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (and a terminal's output).
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The name the formats use.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// How lines are encoded in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Docker's json-file driver: `{"log":"…\n","stream":"stdout","time":"…"}`.
    JsonFile,
    /// The kubelet's CRI format: `2016-10-06T00:17:09.669794202Z stdout F text`
    /// (`P` for a piece of a longer line that goes on).
    Cri,
}

impl Format {
    /// The URI scheme that selects this format.
    pub fn scheme(self) -> &'static str {
        match self {
            Format::JsonFile => "json-file",
            Format::Cri => "cri-log",
        }
    }
}

/// When the current file is rotated, and how many files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Size in bytes at which the file is rotated; 0 never rotates.
    pub max_size: u64,
    /// Files kept, the current one included (at least 1).
    pub max_file: u32,
}

impl Default for Rotation {
    /// Docker's json-file defaults: no limit, one file.
    fn default() -> Self {
        Rotation {
            max_size: 0,
            max_file: 1,
        }
    }
}

/// One line read back from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream it came from.
    pub stream: Stream,
    /// When the shim read it.
    pub time: SystemTime,
    /// The bytes, with the newline that ended them (none for a last
    /// partial line).
    pub log: String,
}

/// A log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On which file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A log URI or option could not be understood.
    #[error("{0}")]
    Invalid(String),
}

fn io_err(op: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.display().to_string();
    move |source| LogError::Io { op, path, source }
}

/// The path of the `n`th file of a log (0 is the current file).
pub fn rotated(path: &std::path::Path, n: u32) -> std::path::PathBuf {
    if n == 0 {
        return path.to_owned();
    }
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    s.into()
}
