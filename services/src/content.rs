//! The local content store: immutable blobs addressed by digest, and
//! resumable ingests addressed by ref.
//!
//! It knows nothing of namespaces, leases or GC: the metadata layer
//! ([`crate::metadata`]) decides which blobs a namespace sees and when one
//! may go. On-disk layout under `<root>/content`:
//!
//! ```text
//! blobs/sha256/<hex>        committed blob, read-only, never rewritten
//! ingest/<sha256(ref)>/     one in-progress write
//!     ref                   the full ref (namespace-qualified by the caller)
//!     data                  bytes written so far; its length is the offset
//!     total                 expected total size, decimal, 0 if unknown
//!     startedat             start time, nanoseconds since the epoch
//! ingest/.tmp-*             an ingest being created; removed at startup
//! ```
//!
//! An ingest directory appears whole (built under `.tmp-*`, then renamed),
//! and a blob appears only by renaming a fully fsynced `data` file.

use std::path::PathBuf;

use thiserror::Error;

use hull_proto::digest::Digest;
use hull_proto::errdefs::{Classify, Kind};

pub mod local;

pub use local::{IngestStatus, LocalContentStore, Writer};

/// Errors of the content store.
#[derive(Debug, Error)]
pub enum ContentError {
    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No blob with this digest.
    #[error("content digest {0}: not found")]
    BlobNotFound(Digest),
    /// No ingest with this ref.
    #[error("ref {0}: not found")]
    IngestNotFound(String),
    /// Another writer holds the ref.
    #[error("ref {0} locked")]
    Locked(String),
    /// The blob exists already.
    #[error("content {0}: already exists")]
    AlreadyExists(Digest),
    /// Commit with a size other than what was written.
    #[error("unexpected commit size {size}, expected {expected}")]
    SizeMismatch {
        /// Bytes written.
        size: u64,
        /// Size the client expected.
        expected: i64,
    },
    /// Commit with a digest other than what was written.
    #[error("unexpected commit digest {digest}, expected {expected}")]
    DigestMismatch {
        /// Digest of the bytes written.
        digest: Digest,
        /// Digest the client expected.
        expected: Digest,
    },
    /// A write at an offset other than the current one.
    #[error("write @{offset} must occur at current offset {current}")]
    OffsetMismatch {
        /// Offset asked for.
        offset: i64,
        /// Offset of the ingest.
        current: u64,
    },
    /// Only sha256 can be written.
    #[error("unsupported digest algorithm for commit: {0}")]
    Algorithm(Digest),
    /// A ref must not be empty.
    #[error("ref must not be empty")]
    EmptyRef,
    /// The blocking task died.
    #[error(transparent)]
    Join(#[from] crate::JoinError),
}

impl Classify for ContentError {
    fn kind(&self) -> Kind {
        match self {
            ContentError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Kind::NotFound
            }
            ContentError::Io { .. } | ContentError::Join(_) => Kind::Unknown,
            ContentError::BlobNotFound(_) | ContentError::IngestNotFound(_) => Kind::NotFound,
            ContentError::Locked(_) => Kind::Unavailable,
            ContentError::AlreadyExists(_) => Kind::AlreadyExists,
            ContentError::SizeMismatch { .. } | ContentError::DigestMismatch { .. } => {
                Kind::FailedPrecondition
            }
            ContentError::OffsetMismatch { .. } => Kind::OutOfRange,
            ContentError::Algorithm(_) | ContentError::EmptyRef => Kind::InvalidArgument,
        }
    }
}

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ContentError {
    let path = path.into();
    move |source| ContentError::Io { op, path, source }
}
