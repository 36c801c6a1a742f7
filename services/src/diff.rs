//! Layers: applying a layer blob onto a snapshot's mounts.
//!
//! [`apply::apply_layer`] streams a blob through decompression (sniffed
//! from the data, as containerd does: gzip, zstd or none) into a tar reader
//! that writes onto a directory, and returns the diff ID (sha256 of the
//! uncompressed tar) computed in the same pass.
//!
//! A layer never writes outside its root: names are cleaned, `..` that
//! would climb above the root is refused, symlinks met on the way are
//! resolved as if the root were `/` (so an absolute link such as
//! `var/run -> /run` stays inside), and hard links must name a file inside
//! the root. Whiteouts become overlay whiteouts (0/0 character devices,
//! `trusted.overlay.opaque`) when writing an overlay upper directory, and
//! deletions otherwise.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use hull_proto::errdefs::{Classify, Kind};

pub mod apply;
pub mod compare;

/// `[diff]`: limits on what a layer may expand to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffConfig {
    /// Largest uncompressed layer, in bytes; 0 for no limit.
    pub max_uncompressed_bytes: u64,
    /// Largest ratio of uncompressed to compressed bytes, checked once a
    /// layer has expanded past 16 MiB; 0 for no limit.
    pub max_compression_ratio: u64,
}

/// Errors of applying a layer.
#[derive(Debug, Error)]
pub enum DiffError {
    /// A media type that is not a layer.
    #[error("unsupported diff media type: {0}")]
    MediaType(String),
    /// The compressed stream is broken.
    #[error("decompress layer")]
    Decompress(#[source] std::io::Error),
    /// The tar stream is broken or ends early.
    #[error("read layer tar")]
    Tar(#[source] std::io::Error),
    /// An entry name climbs out of the root.
    #[error("path {0:?} escapes the layer root")]
    Escape(String),
    /// A hard link to something that is not a file inside the root.
    #[error("hard link {name:?} to {target:?} does not name a file inside the layer root")]
    HardLink {
        /// The link.
        name: String,
        /// What it names.
        target: String,
    },
    /// Symlinks that never end.
    #[error("too many levels of symbolic links resolving {0:?}")]
    SymlinkLoop(String),
    /// The layer expands past the configured size.
    #[error("layer expands past the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The layer expands past the configured ratio.
    #[error("layer expands more than {limit} times its compressed size")]
    Ratio {
        /// The limit.
        limit: u64,
    },
    /// Writing an entry failed.
    #[error("{op} {path}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Mounts that cannot be applied to.
    #[error("cannot apply to mounts: {0}")]
    Mounts(String),
    /// Mounting for apply failed.
    #[error(transparent)]
    Snapshot(#[from] hull_snapshots::SnapshotError),
}

impl Classify for DiffError {
    fn kind(&self) -> Kind {
        match self {
            DiffError::MediaType(_) => Kind::NotImplemented,
            DiffError::Escape(_)
            | DiffError::HardLink { .. }
            | DiffError::SymlinkLoop(_)
            | DiffError::TooLarge { .. }
            | DiffError::Ratio { .. }
            | DiffError::Decompress(_)
            | DiffError::Tar(_)
            | DiffError::Mounts(_) => Kind::InvalidArgument,
            DiffError::Io { source, .. } if crate::out_of_space(source) => Kind::ResourceExhausted,
            DiffError::Io { .. } => Kind::Unknown,
            DiffError::Snapshot(e) => e.kind(),
        }
    }
}

/// Whether `media_type` names a layer hull can apply.
pub fn is_layer(media_type: &str) -> bool {
    hull_oci::media::classify(media_type).is_layer()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types() {
        assert!(is_layer("application/vnd.oci.image.layer.v1.tar+gzip"));
        assert!(is_layer("application/vnd.oci.image.layer.v1.tar+zstd"));
        assert!(is_layer(
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        ));
        assert!(is_layer("application/vnd.oci.image.layer.v1.tar"));
        assert!(!is_layer("application/vnd.oci.image.config.v1+json"));
        assert!(!is_layer("application/x-bogus"));
    }
}
