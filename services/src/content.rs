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
//!     data                  bytes written so far; its length is the offset
//!     status                JSON: the full ref (namespace-qualified by the
//!                           caller), expected total (0 if unknown),
//!                           expected digest (if named), start and last
//!                           update times in nanoseconds since the epoch
//!     status.new            a status being replaced (renamed over status)
//! ingest/.tmp-*             an ingest being created; removed at startup
//! ```
//!
//! An ingest directory appears whole (built under `.tmp-*`, then renamed),
//! and a blob appears only by renaming a fully fsynced `data` file. The
//! status is written at creation and again when its writer closes; a
//! writer that died without closing leaves the data file's mtime (coarser)
//! as the update time. Ingests of earlier versions (separate `ref`,
//! `total`, `startedat` files) are still read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use thiserror::Error;

use hull_proto::digest::Digest;
use hull_proto::errdefs::{Classify, Kind};

pub mod local;
pub mod proxy;
#[cfg(test)]
pub mod testsuite;

pub use local::{IngestStatus, LocalContentStore, PendingWrite, Writer};

/// A committed blob as a store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: i64,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// Nanoseconds since the epoch.
    pub updated_at: i64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A content store as clients see it: containerd's `content.Store`
/// (`content/content.go`), in one namespace.
///
/// The contract, which `testsuite` checks for every implementation:
/// - A blob is addressed by its digest and visible only once committed;
///   `info` of anything else is NotFound.
/// - A write goes to a *ref*. One writer holds a ref at a time; a second
///   gets Unavailable (a writer that is just closing is waited for, up to
///   about a second). What a closed writer wrote stays, and the next
///   writer of the ref resumes at its offset, with the ingest's start and
///   update times.
/// - `commit` checks the size (when not 0) and the digest (when given)
///   against what was written: a mismatch is FailedPrecondition and keeps
///   the ingest; a blob the store has already is AlreadyExists and ends
///   the ingest.
/// - `update` with no paths replaces the labels; `labels` and
///   `labels.KEY` replace all or one (an empty value removes it); any
///   other path is InvalidArgument.
/// - Times are nanoseconds: an ingest's `updated_at` is never earlier than
///   the write that changed it was sent, a blob's `updated_at` never
///   earlier than its commit or label update.
#[tonic::async_trait]
pub trait ContentStore: Send + Sync + 'static {
    /// A committed blob.
    ///
    /// # Errors
    /// NotFound.
    async fn info(&self, digest: &Digest) -> Result<Info>;

    /// Changes a blob's labels (see the trait's contract for `paths`).
    ///
    /// # Errors
    /// NotFound; InvalidArgument for other paths or labels too large.
    async fn update(&self, info: Info, paths: Vec<String>) -> Result<Info>;

    /// Blobs matching containerd's filters (none: all).
    ///
    /// # Errors
    /// InvalidArgument for a filter that does not parse.
    async fn list(&self, filters: Vec<String>) -> Result<Vec<Info>>;

    /// Removes a blob.
    ///
    /// # Errors
    /// NotFound.
    async fn delete(&self, digest: &Digest) -> Result<()>;

    /// Up to `len` bytes of a blob from `offset`: fewer at its end, none
    /// past it.
    ///
    /// # Errors
    /// NotFound.
    async fn read_at(&self, digest: &Digest, offset: u64, len: usize) -> Result<Vec<u8>>;

    /// Progress of one ingest.
    ///
    /// # Errors
    /// NotFound.
    async fn status(&self, r: &str) -> Result<IngestStatus>;

    /// Ingests matching containerd's filters (`ref`).
    ///
    /// # Errors
    /// InvalidArgument for a filter that does not parse.
    async fn list_statuses(&self, filters: Vec<String>) -> Result<Vec<IngestStatus>>;

    /// Drops an ingest and what was written to it.
    ///
    /// # Errors
    /// NotFound.
    async fn abort(&self, r: &str) -> Result<()>;

    /// A writer for ref `r`, resuming what it holds; `total` and
    /// `expected` describe the blob when the client knows them.
    ///
    /// # Errors
    /// Unavailable while another writer holds `r`; AlreadyExists when
    /// `expected` names a blob the store has.
    async fn writer(
        &self,
        r: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn ContentWriter>>;
}

/// One open writer of a [`ContentStore`]. Dropping it closes it.
#[tonic::async_trait]
pub trait ContentWriter: Send {
    /// Appends `data`.
    ///
    /// # Errors
    /// Unknown when it cannot be written.
    async fn write(&mut self, data: Vec<u8>) -> Result<()>;

    /// Digest of what was written so far.
    ///
    /// # Errors
    /// Unknown when the store cannot say.
    async fn digest(&mut self) -> Result<Digest>;

    /// Progress so far.
    ///
    /// # Errors
    /// Unknown when the store cannot say.
    async fn status(&mut self) -> Result<IngestStatus>;

    /// Starts over from offset zero.
    ///
    /// # Errors
    /// Unknown when the ingest cannot be truncated.
    async fn truncate(&mut self) -> Result<()>;

    /// Commits what was written as a blob with `labels`; `size` (when not
    /// 0) and `expected` (when given) must match. The writer is done after
    /// a commit, whatever its outcome.
    ///
    /// # Errors
    /// FailedPrecondition on a mismatch; AlreadyExists.
    async fn commit(
        &mut self,
        size: i64,
        expected: Option<Digest>,
        labels: BTreeMap<String, String>,
    ) -> Result<Digest>;

    /// Closes the writer, keeping what it wrote for a resume.
    ///
    /// # Errors
    /// Unknown when closing fails.
    async fn close(self: Box<Self>) -> Result<()>;
}

/// Result of the content store.
pub type Result<T, E = ContentError> = std::result::Result<T, E>;

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
    /// An ingest's status file does not parse.
    #[error("ingest status {path}")]
    CorruptIngest {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
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
    /// The namespaced store over the metadata DB failed.
    #[error(transparent)]
    Metadata(Box<crate::metadata::MetadataError>),
    /// A content service in another process refused or failed.
    #[error("{message}")]
    Remote {
        /// The kind it reported.
        kind: Kind,
        /// Its message.
        message: String,
    },
    /// A content service in another process could not be reached.
    #[error("content service unavailable")]
    Unreachable(#[source] tonic::Status),
    /// A writer was used after its commit.
    #[error("writer is closed")]
    Closed,
}

impl From<crate::metadata::MetadataError> for ContentError {
    fn from(e: crate::metadata::MetadataError) -> Self {
        match e {
            crate::metadata::MetadataError::Content(inner) => inner,
            other => ContentError::Metadata(Box::new(other)),
        }
    }
}

impl Classify for ContentError {
    fn kind(&self) -> Kind {
        match self {
            ContentError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Kind::NotFound
            }
            // Disk full, or over quota: a limit, not a fault.
            ContentError::Io { source, .. } if crate::out_of_space(source) => {
                Kind::ResourceExhausted
            }
            ContentError::Io { .. }
            | ContentError::Join(_)
            | ContentError::CorruptIngest { .. } => Kind::Unknown,
            ContentError::BlobNotFound(_) | ContentError::IngestNotFound(_) => Kind::NotFound,
            ContentError::Locked(_) => Kind::Unavailable,
            ContentError::AlreadyExists(_) => Kind::AlreadyExists,
            ContentError::SizeMismatch { .. } | ContentError::DigestMismatch { .. } => {
                Kind::FailedPrecondition
            }
            ContentError::OffsetMismatch { .. } => Kind::OutOfRange,
            ContentError::Algorithm(_) | ContentError::EmptyRef => Kind::InvalidArgument,
            ContentError::Metadata(e) => e.kind(),
            ContentError::Remote { kind, .. } => *kind,
            ContentError::Unreachable(_) => Kind::Unavailable,
            ContentError::Closed => Kind::FailedPrecondition,
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
